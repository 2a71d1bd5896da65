//! `policy-server serve`: the admission webhook, with its flags.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use guest_adapter::{ClusterCache, NoCluster};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{CodeArgs, LogArgs, bounds, cluster, reload};
use crate::config::PoliciesFile;
use crate::metrics::cluster::ClusterCollector;
use crate::metrics::metrics;
use crate::policy::{Evaluator, LoadedPolicies, ServedPolicies, load_policies};
use crate::runtime::{Runtime, upgrade_in_background};
use crate::webhook::{AppState, Listener, Readiness, serve};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    pub(super) code: CodeArgs,
    #[command(flatten)]
    pub(super) log: LogArgs,
    /// Address to listen on.
    #[arg(long, env = "KUBEWARDEN_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub(super) addr: IpAddr,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "KUBEWARDEN_PORT", default_value_t = 3000)]
    pub(super) port: u16,
    /// Also answer /readiness and /livez over plain HTTP on this port.
    #[arg(long, env = "KUBEWARDEN_READINESS_PROBE_PORT")]
    pub(super) readiness_probe_port: Option<u16>,
    /// Serve Prometheus metrics (OpenMetrics text) at /metrics over plain HTTP on this
    /// port (0 picks a free one; the log says which).
    #[arg(long, env = "POLICY_SERVER_METRICS_PORT")]
    pub(super) metrics_port: Option<u16>,
    /// PEM certificate chain for TLS. Without it the server speaks plain HTTP.
    #[arg(long, env = "KUBEWARDEN_CERT_FILE", requires = "key_file")]
    pub(super) cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "KUBEWARDEN_KEY_FILE", requires = "cert_file")]
    pub(super) key_file: Option<PathBuf>,
    /// Start with a policies.yml that has no policies (refused otherwise: nothing would
    /// be served, and that is usually a mistake).
    #[arg(long, env = "POLICY_SERVER_ALLOW_EMPTY_POLICIES")]
    pub(super) allow_empty_policies: bool,
    /// Start even if some policies fail to load; those reject every request with the reason.
    #[arg(long, env = "KUBEWARDEN_CONTINUE_ON_ERRORS")]
    pub(super) continue_on_errors: bool,
    /// Evaluations that may run at once (default: one per CPU, at least two).
    #[arg(long, env = "KUBEWARDEN_WORKERS")]
    pub(super) workers: Option<usize>,
    /// Evaluations that may wait for a worker; beyond that, requests get 503 so the API
    /// server applies the webhook's failurePolicy (default: 128 per worker).
    #[arg(long, env = "POLICY_SERVER_MAX_QUEUED_EVALUATIONS")]
    pub(super) max_queued_evaluations: Option<usize>,
    /// Workers one policy may hold at once, so a policy that runs to its timeout leaves
    /// the others a worker (default: all but one).
    #[arg(long, env = "POLICY_SERVER_MAX_WORKERS_PER_POLICY")]
    pub(super) max_workers_per_policy: Option<usize>,
    /// Largest request body accepted, in bytes (kube-apiserver's own limit is 3 MiB).
    #[arg(long, env = "POLICY_SERVER_MAX_REQUEST_BODY_BYTES", default_value_t = 3 << 20)]
    pub(super) max_request_body_bytes: usize,
    /// Bytes that request bodies being read or evaluated may hold, all clients together;
    /// beyond that a request gets 503 at once.
    #[arg(long, env = "POLICY_SERVER_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 64 << 20)]
    pub(super) max_body_bytes_in_flight: usize,
    /// Connections open at once; beyond that a new one is closed as it is accepted.
    #[arg(long, env = "POLICY_SERVER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub(super) max_connections: usize,
    /// Seconds a new connection has to finish its TLS handshake and send a request's
    /// headers (and a kept-alive one, a request's headers once they begin).
    #[arg(
        long,
        env = "POLICY_SERVER_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub(super) header_timeout_seconds: u64,
    /// Seconds a request's body has to arrive once its headers have.
    #[arg(long, env = "POLICY_SERVER_BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub(super) body_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request; more than the API server's
    /// client keeps idle connections (90 s), so it is the client that closes them.
    #[arg(
        long,
        env = "POLICY_SERVER_IDLE_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub(super) idle_timeout_seconds: u64,
    /// On SIGTERM, seconds to keep serving (not ready) while Kubernetes updates endpoints.
    #[arg(
        long,
        env = "POLICY_SERVER_SHUTDOWN_DRAIN_SECONDS",
        default_value_t = 5
    )]
    pub(super) shutdown_drain_seconds: u64,
    /// On SIGTERM, seconds within which the server has exited, drain included: below the
    /// pod's terminationGracePeriodSeconds (30 by default).
    #[arg(
        long,
        env = "POLICY_SERVER_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25
    )]
    pub(super) shutdown_grace_seconds: u64,
    /// Serve cluster context from this file (YAML documents or JSON; objects or Lists)
    /// instead of the Kubernetes API.
    #[arg(long, env = "POLICY_SERVER_CLUSTER_SNAPSHOT")]
    pub(super) cluster_snapshot: Option<PathBuf>,
    /// Kubeconfig to reach the Kubernetes API (default: in-cluster or the usual kubeconfig).
    #[arg(long)]
    pub(super) kubeconfig: Option<PathBuf>,
    /// Also serve `POST /noop`, which parses a review and allows it without running any
    /// policy: the floor the benchmarks compare policies against. Never point Kubernetes
    /// at it.
    #[arg(long, env = "POLICY_SERVER_ENABLE_NOOP_ROUTE")]
    pub(super) enable_noop_route: bool,
    /// Keep compiled policies (and pre-initialized modules) in this directory, so a
    /// restart with the same policies skips compilation and start-up. Only point it at a
    /// directory this server alone can write: its files are loaded as machine code.
    #[arg(long, env = "POLICY_SERVER_COMPILE_CACHE_DIR")]
    pub(super) compile_cache_dir: Option<PathBuf>,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up is not fatal.
    let shutdown = shutdown_signal()?;
    crate::config::check_timeout("--policy-timeout", args.code.policy_timeout)?;
    let worker_limits = bounds::worker_limits(&args)?;
    let (server_limits, shutdown_timing) = bounds::server_limits(&args)?;
    // Certificates are read before anything compiles: a bad one fails the start at once.
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => {
            let (config, certificate) = crate::tls::server_config(cert, key)?;
            certificate.watch();
            Some(TlsAcceptor::from(config))
        }
        _ => {
            tracing::warn!(
                "no --cert-file/--key-file given: serving plain HTTP, which Kubernetes will not call"
            );
            None
        }
    };
    let file = PoliciesFile::load(&args.code.policies, args.allow_empty_policies)?;
    let fetcher = Arc::new(args.code.fetcher()?);
    let paths = Arc::new(fetcher.fetch(&file).await);
    // Evaluations in flight, twice over (after a reload the old set's workers finish its
    // queue beside the new set's), plus one each for settings checks and upgrades.
    let instances = 2 * worker_limits.workers as u32 + 2;
    let runtime = Arc::new(Runtime::new(
        args.code
            .runtime_config(instances, args.compile_cache_dir.clone()),
    )?);
    let options = args.code.load_options(args.continue_on_errors);
    let cluster = cluster::start_cluster_cache(&file, &args).await?;
    let cache = cluster.as_ref().map(|cluster| cluster.state.clone());
    let reviewer = cluster
        .as_ref()
        .and_then(|cluster| cluster.reviewer.clone());
    let reading = cluster::granted(&file).kinds;
    let LoadedPolicies { policies, upgrades } = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        let reviewer = reviewer.clone();
        let options = options.clone();
        let cache: Arc<dyn ClusterCache> = match &cache {
            Some(state) => state.clone(),
            None => Arc::new(NoCluster),
        };
        let (file, paths) = (file.clone(), paths.clone());
        move || load_policies(&file, &paths, &runtime, cache, reviewer, &options)
    })
    .await
    .context("policy loading panicked")??;
    fetcher.commit(&paths);
    fetcher.keep_only(&file);
    // What the upgrades compile makes a new compiling engine when they start.
    runtime.release_compiler();
    crate::memory::release_freed_memory();

    let socket = TcpListener::bind((args.addr, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.addr, args.port))?;
    let probes = match args.readiness_probe_port {
        Some(port) => Some(
            TcpListener::bind((args.addr, port))
                .await
                .with_context(|| format!("cannot listen on {}:{port}", args.addr))?,
        ),
        None => None,
    };

    if let Some(port) = args.metrics_port {
        let socket = TcpListener::bind((args.addr, port))
            .await
            .with_context(|| format!("cannot listen on {}:{port} for metrics", args.addr))?;
        tracing::info!(address = %socket.local_addr()?, "serving metrics at /metrics");
        if let Some(cache) = &cache {
            metrics().register_collector(ClusterCollector(cache.clone()));
        }
        tokio::spawn(crate::metrics::endpoint::serve(socket));
    }
    let readiness = Readiness::new(cache.clone());
    let policy_count = policies.len();
    // Ready on the first compile of every module; what makes them faster runs meanwhile.
    if upgrades.is_empty() {
        runtime.log_compile_cache();
    } else {
        upgrade_in_background(runtime.clone(), upgrades)
            .context("cannot start the thread that upgrades compiled policies")?;
    }
    let served = Arc::new(ServedPolicies::new(Evaluator::new(
        runtime.clone(),
        policies,
        worker_limits,
    )));
    let reloader = reload::Reloader {
        path: args.code.policies.clone(),
        allow_empty: args.allow_empty_policies,
        served: served.clone(),
        runtime,
        fetcher,
        cluster,
        source: cluster::source(&args),
        reading,
        options,
        worker_limits,
    };
    reloader.start()?;
    let state = Arc::new(AppState::new(
        served,
        server_limits,
        readiness.clone(),
        args.enable_noop_route,
    ));
    tracing::info!(
        address = %socket.local_addr()?,
        tls = tls.is_some(),
        policies = policy_count,
        workers = worker_limits.workers,
        workers_per_policy = worker_limits.workers_per_policy,
        "listening"
    );
    readiness.set_serving();
    serve(
        Listener { socket, tls },
        probes,
        state,
        shutdown_timing,
        shutdown,
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    })
}
