//! The `policy-server` command line. Flags keep the names and environment variables of
//! Kubewarden's policy-server, so existing deployments can switch without edits.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use guest_adapter::{ClusterCache, NoCluster, ResourceKind};

use crate::cache::{CacheSource, Cluster};
use crate::config::PoliciesFile;
use crate::policy::{DEFAULT_QUEUED_PER_WORKER, Evaluator, LoadOptions, load_policies};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::webhook::{AppState, Listener, Readiness, serve};

#[derive(Debug, Parser)]
#[command(name = "policy-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the policies of a policies.yml as a Kubernetes admission webhook.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KUBEWARDEN_BIND_ADDRESS", default_value = "0.0.0.0")]
    addr: IpAddr,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "KUBEWARDEN_PORT", default_value_t = 3000)]
    port: u16,
    /// Also answer /readiness and /livez over plain HTTP on this port.
    #[arg(long, env = "KUBEWARDEN_READINESS_PROBE_PORT")]
    readiness_probe_port: Option<u16>,
    /// The policies to serve.
    #[arg(long, env = "KUBEWARDEN_POLICIES", default_value = "policies.yml")]
    policies: PathBuf,
    /// PEM certificate chain for TLS. Without it the server speaks plain HTTP.
    #[arg(long, env = "KUBEWARDEN_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "KUBEWARDEN_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Seconds one evaluation may run, unless the policy sets `timeoutEvalSeconds`.
    #[arg(long, env = "KUBEWARDEN_POLICY_TIMEOUT", default_value_t = 2)]
    policy_timeout: u64,
    /// Log filter: a level (`info`) or tracing directives (`info,policy_server=debug`).
    #[arg(long, env = "KUBEWARDEN_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "KUBEWARDEN_LOG_FMT", value_enum, default_value = "text")]
    log_fmt: LogFormat,
    /// Start even if some policies fail to load; those reject every request with the reason.
    #[arg(long, env = "KUBEWARDEN_CONTINUE_ON_ERRORS")]
    continue_on_errors: bool,
    /// Evaluations that may run at once (default: one per CPU, at least two).
    #[arg(long, env = "KUBEWARDEN_WORKERS")]
    workers: Option<usize>,
    /// Evaluations that may wait for a worker; beyond that, requests get 503 so the API
    /// server applies the webhook's failurePolicy (default: 128 per worker).
    #[arg(long, env = "POLICY_SERVER_MAX_QUEUED_EVALUATIONS")]
    max_queued_evaluations: Option<usize>,
    /// Largest request body accepted, in bytes (kube-apiserver's own limit is 3 MiB).
    #[arg(long, env = "POLICY_SERVER_MAX_REQUEST_BODY_BYTES", default_value_t = 3 << 20)]
    max_request_body_bytes: usize,
    /// Serve cluster context from this file (YAML documents or JSON; objects or Lists)
    /// instead of the Kubernetes API.
    #[arg(long, env = "POLICY_SERVER_CLUSTER_SNAPSHOT")]
    cluster_snapshot: Option<PathBuf>,
    /// Kubeconfig to reach the Kubernetes API (default: in-cluster or the usual kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Largest linear memory of one policy instance, in MiB.
    #[arg(
        long,
        env = "POLICY_SERVER_POLICY_MEMORY_LIMIT_MIB",
        default_value_t = 256
    )]
    policy_memory_limit_mib: usize,
    /// Also serve `POST /noop`, which parses a review and allows it without running any
    /// policy: the floor the benchmarks compare policies against. Never point Kubernetes
    /// at it.
    #[arg(long, env = "POLICY_SERVER_ENABLE_NOOP_ROUTE")]
    enable_noop_route: bool,
    /// Keep compiled policies (and pre-initialized modules) in this directory, so a
    /// restart with the same policies skips compilation and start-up. Only point it at a
    /// directory this server alone can write: its files are loaded as machine code.
    #[arg(long, env = "POLICY_SERVER_COMPILE_CACHE_DIR")]
    compile_cache_dir: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    if let Err(err) = init_logging(&args) {
        eprintln!("Error: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level '{}'", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_fmt {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up is not fatal.
    let shutdown = shutdown_signal()?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2)
    });
    anyhow::ensure!(workers > 0, "--workers must be at least 1");
    let queue = args
        .max_queued_evaluations
        .unwrap_or(workers * DEFAULT_QUEUED_PER_WORKER);
    anyhow::ensure!(
        (1..=MAX_QUEUED_EVALUATIONS).contains(&queue),
        "--max-queued-evaluations must be between 1 and {MAX_QUEUED_EVALUATIONS}"
    );
    crate::config::check_timeout("--policy-timeout", args.policy_timeout)?;
    // Certificates are read before anything compiles: a bad one fails the start at once.
    let tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?)),
        _ => {
            tracing::warn!(
                "no --cert-file/--key-file given: serving plain HTTP, which Kubernetes will not call"
            );
            None
        }
    };
    let file = PoliciesFile::load(&args.policies)?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        memory_limit_bytes: args.policy_memory_limit_mib << 20,
        // Evaluations in flight, plus one for start-up checks.
        max_concurrent_instances: workers as u32 + 1,
        compile_cache_dir: args.compile_cache_dir.clone(),
        ..RuntimeConfig::default()
    })?);
    let options = LoadOptions {
        default_timeout: Duration::from_secs(args.policy_timeout),
        continue_on_errors: args.continue_on_errors,
    };
    let cluster = start_cluster_cache(&file, &args).await?;
    let cache = cluster.as_ref().map(|cluster| cluster.state.clone());
    let policies = tokio::task::spawn_blocking({
        let runtime = runtime.clone();
        let reviewer = cluster.and_then(|cluster| cluster.reviewer);
        let cache: Arc<dyn ClusterCache> = match &cache {
            Some(state) => state.clone(),
            None => Arc::new(NoCluster),
        };
        move || load_policies(&file, &runtime, cache, reviewer, &options)
    })
    .await
    .context("policy loading panicked")??;
    crate::cache::release_freed_memory();
    if let Some((hits, misses)) = runtime.compile_cache_hits_and_misses() {
        tracing::info!(hits, misses, "compile cache");
    }

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

    let readiness = Readiness::new(cache);
    let policy_count = policies.len();
    let state = Arc::new(AppState {
        evaluator: Evaluator::new(runtime, policies, workers, queue),
        max_body_bytes: args.max_request_body_bytes,
        readiness: readiness.clone(),
        noop_route: args.enable_noop_route,
    });
    tracing::info!(
        address = %socket.local_addr()?,
        tls = tls.is_some(),
        policies = policy_count,
        workers,
        "listening"
    );
    readiness.set_serving();
    serve(Listener { socket, tls }, probes, state, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the cluster cache for the kinds any policy was granted to read; none if no
/// policy reads the cluster. A kind the cluster does not serve stops the start, naming
/// the policies that read it, unless `--continue-on-errors` (their reads then fail with
/// the reason).
async fn start_cluster_cache(
    file: &PoliciesFile,
    args: &ServeArgs,
) -> anyhow::Result<Option<Cluster>> {
    let grants = || {
        file.policies.iter().flat_map(|(id, policy)| {
            policy
                .context_aware_resources
                .iter()
                // Named as the API server names them, whatever the grant's case.
                .map(move |r| (id, ResourceKind::new(&r.api_version, &r.kind).canonical()))
        })
    };
    let mut kinds: Vec<ResourceKind> = Vec::new();
    for (_, kind) in grants() {
        // `can_i` is a question to the API server, not a kind to cache.
        if !kind.matches(&ResourceKind::subject_access_reviews())
            && !kinds.iter().any(|known| known.matches(&kind))
        {
            kinds.push(kind);
        }
    }
    let asks_access_reviews =
        grants().any(|(_, kind)| kind.matches(&ResourceKind::subject_access_reviews()));
    if kinds.is_empty() && !asks_access_reviews {
        return Ok(None);
    }
    let source = match &args.cluster_snapshot {
        Some(path) => CacheSource::File(path.clone()),
        None => CacheSource::Cluster {
            kubeconfig: args.kubeconfig.clone(),
        },
    };
    let cluster = crate::cache::start(kinds, &source, args.continue_on_errors).await?;
    for (kind, reason) in &cluster.unserved {
        let readers: Vec<String> = grants()
            .filter(|(_, granted)| granted.matches(kind))
            .map(|(id, _)| format!("'{id}'"))
            .collect();
        let message = format!(
            "policy {} reads {kind}, which the cluster does not serve: {reason}",
            readers.join(", ")
        );
        if !args.continue_on_errors {
            anyhow::bail!(message);
        }
        tracing::error!("{message}; its reads will fail with this reason");
    }
    Ok(Some(cluster))
}

/// The most evaluations that may wait for a worker: the queue's slots are allocated up
/// front, and beyond this the wait itself would outlast any webhook timeout.
const MAX_QUEUED_EVALUATIONS: usize = 1 << 16;

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C. The handlers are installed
/// when this is called, not when the future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
