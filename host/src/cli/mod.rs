//! The `policy-server` command line. Flags keep the names and environment variables of
//! Kubewarden's policy-server, so existing deployments can switch without edits.

mod author;
mod bounds;
mod cluster;
mod manifests;
mod precompile;
mod reload;

use crate::metrics::cluster::ClusterCollector;
use crate::metrics::metrics;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use guest_adapter::{ClusterCache, NoCluster};

use crate::config::PoliciesFile;
use crate::fetch::Fetcher;
use crate::policy::{Evaluator, LoadOptions, LoadedPolicies, ServedPolicies, load_policies};
use crate::runtime::{Compilers, Runtime, RuntimeConfig, upgrade_in_background};
use crate::webhook::{AppState, Listener, Readiness, serve};

/// Time limit of a policy that sets no `timeoutEvalSeconds`.
pub(crate) const DEFAULT_POLICY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(name = "policy-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the policies of a policies.yml as a Kubernetes admission webhook.
    Serve(Box<ServeArgs>),
    /// Compile (and pre-initialize) the policies of a policies.yml into a compile cache,
    /// without serving: a server started on that cache compiles nothing. For container
    /// images and init containers.
    Precompile(precompile::PrecompileArgs),
    /// Print the Kubernetes objects that run this server for a policies.yml: RBAC for
    /// exactly the kinds its policies read, Deployment, Service, PodDisruptionBudget, the
    /// policies as a ConfigMap, and one webhook entry per policy.
    Manifests(manifests::ManifestArgs),
    /// Evaluate one request with one policy, as the server would, and print the answer.
    /// Exit code: 0 allowed, 1 rejected, 2 the evaluation failed.
    Run(author::run::RunArgs),
    /// Run files of test cases (policy, settings, request, cluster, expected answer):
    /// PASS/FAIL per case, a summary, JUnit XML with --junit.
    Test(author::test::TestArgs),
    /// Record the cluster state some policies may read, from the live cluster, as a
    /// snapshot file for serve, run and test.
    Snapshot(author::snapshot::SnapshotArgs),
    /// Measure one policy on one request: evaluations per second, latency, host calls.
    Bench(author::bench::BenchArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Which compilers make policy code (see `runtime::Compilers`).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompilerChoice {
    /// Winch to be ready soon, then Cranelift in the background.
    Tiered,
    /// Cranelift only.
    Cranelift,
    /// Winch only: the fastest start, slower evaluations.
    Winch,
}

impl From<CompilerChoice> for Compilers {
    fn from(choice: CompilerChoice) -> Self {
        match choice {
            CompilerChoice::Tiered => Self::Tiered,
            CompilerChoice::Cranelift => Self::Cranelift,
            CompilerChoice::Winch => Self::Winch,
        }
    }
}

/// How the server logs.
#[derive(Debug, Args)]
struct LogArgs {
    /// Log filter: a level (`info`) or tracing directives (`info,policy_server=debug`).
    #[arg(long, env = "KUBEWARDEN_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "KUBEWARDEN_LOG_FMT", value_enum, default_value = "text")]
    log_fmt: LogFormat,
}

/// The policies and how their code is made: the same for `serve` and `precompile`, so
/// what one stores in the compile cache is what the other looks for.
#[derive(Debug, Args)]
struct CodeArgs {
    /// The policies (policies.yml).
    #[arg(long, env = "KUBEWARDEN_POLICIES", default_value = "policies.yml")]
    policies: PathBuf,
    /// Seconds one evaluation may run, unless the policy sets `timeoutEvalSeconds`.
    #[arg(long, env = "KUBEWARDEN_POLICY_TIMEOUT", default_value_t = DEFAULT_POLICY_TIMEOUT.as_secs())]
    policy_timeout: u64,
    /// Largest linear memory of one policy instance, in MiB.
    #[arg(
        long,
        env = "POLICY_SERVER_POLICY_MEMORY_LIMIT_MIB",
        default_value_t = 256
    )]
    policy_memory_limit_mib: usize,
    /// Compilers of policy code: `tiered` serves from a fast baseline compile (Winch)
    /// within moments of starting and swaps in optimized code (Cranelift) as it is ready.
    #[arg(
        long,
        env = "POLICY_SERVER_COMPILERS",
        value_enum,
        default_value = "tiered"
    )]
    compilers: CompilerChoice,
    /// Where modules pulled from registries and URLs are kept, by digest: a restart
    /// finds them there (and uses them if their source cannot be reached).
    #[arg(
        long,
        env = "KUBEWARDEN_POLICIES_DOWNLOAD_DIR",
        default_value = "policy-store"
    )]
    policies_download_dir: PathBuf,
    /// Kubewarden's sources.yml: `insecure_sources` (hosts reached without TLS checks, or
    /// over plain HTTP) and `source_authorities` (CAs trusted per host).
    #[arg(long, env = "KUBEWARDEN_SOURCES_PATH")]
    sources_path: Option<PathBuf>,
    /// Docker config.json with registry credentials (a dockerconfigjson Secret); by
    /// default Docker's own, if there is one.
    #[arg(long, env = "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH")]
    docker_config_json_path: Option<PathBuf>,
}

impl CodeArgs {
    fn fetcher(&self) -> anyhow::Result<Fetcher> {
        Fetcher::new(
            self.policies_download_dir.clone(),
            self.sources_path.as_deref(),
            self.docker_config_json_path.clone(),
        )
    }

    fn runtime_config(&self, instances: u32, compile_cache_dir: Option<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            memory_limit_bytes: self.policy_memory_limit_mib << 20,
            max_concurrent_instances: instances,
            compile_cache_dir,
            compilers: self.compilers.into(),
            ..RuntimeConfig::default()
        }
    }

    fn load_options(&self, continue_on_errors: bool) -> LoadOptions {
        LoadOptions {
            default_timeout: Duration::from_secs(self.policy_timeout),
            continue_on_errors,
            host_call_recorder: None,
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    code: CodeArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Address to listen on.
    #[arg(long, env = "KUBEWARDEN_BIND_ADDRESS", default_value = "0.0.0.0")]
    addr: IpAddr,
    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "KUBEWARDEN_PORT", default_value_t = 3000)]
    port: u16,
    /// Also answer /readiness and /livez over plain HTTP on this port.
    #[arg(long, env = "KUBEWARDEN_READINESS_PROBE_PORT")]
    readiness_probe_port: Option<u16>,
    /// Serve Prometheus metrics (OpenMetrics text) at /metrics over plain HTTP on this
    /// port (0 picks a free one; the log says which).
    #[arg(long, env = "POLICY_SERVER_METRICS_PORT")]
    metrics_port: Option<u16>,
    /// PEM certificate chain for TLS. Without it the server speaks plain HTTP.
    #[arg(long, env = "KUBEWARDEN_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "KUBEWARDEN_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Start with a policies.yml that has no policies (refused otherwise: nothing would
    /// be served, and that is usually a mistake).
    #[arg(long, env = "POLICY_SERVER_ALLOW_EMPTY_POLICIES")]
    allow_empty_policies: bool,
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
    /// Workers one policy may hold at once, so a policy that runs to its timeout leaves
    /// the others a worker (default: all but one).
    #[arg(long, env = "POLICY_SERVER_MAX_WORKERS_PER_POLICY")]
    max_workers_per_policy: Option<usize>,
    /// Largest request body accepted, in bytes (kube-apiserver's own limit is 3 MiB).
    #[arg(long, env = "POLICY_SERVER_MAX_REQUEST_BODY_BYTES", default_value_t = 3 << 20)]
    max_request_body_bytes: usize,
    /// Bytes that request bodies being read or evaluated may hold, all clients together;
    /// beyond that a request gets 503 at once.
    #[arg(long, env = "POLICY_SERVER_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 64 << 20)]
    max_body_bytes_in_flight: usize,
    /// Connections open at once; beyond that a new one is closed as it is accepted.
    #[arg(long, env = "POLICY_SERVER_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a new connection has to finish its TLS handshake and send a request's
    /// headers (and a kept-alive one, a request's headers once they begin).
    #[arg(
        long,
        env = "POLICY_SERVER_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    header_timeout_seconds: u64,
    /// Seconds a request's body has to arrive once its headers have.
    #[arg(long, env = "POLICY_SERVER_BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    body_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request; more than the API server's
    /// client keeps idle connections (90 s), so it is the client that closes them.
    #[arg(
        long,
        env = "POLICY_SERVER_IDLE_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    idle_timeout_seconds: u64,
    /// On SIGTERM, seconds to keep serving (not ready) while Kubernetes updates endpoints.
    #[arg(
        long,
        env = "POLICY_SERVER_SHUTDOWN_DRAIN_SECONDS",
        default_value_t = 5
    )]
    shutdown_drain_seconds: u64,
    /// On SIGTERM, seconds within which the server has exited, drain included: below the
    /// pod's terminationGracePeriodSeconds (30 by default).
    #[arg(
        long,
        env = "POLICY_SERVER_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 25
    )]
    shutdown_grace_seconds: u64,
    /// Serve cluster context from this file (YAML documents or JSON; objects or Lists)
    /// instead of the Kubernetes API.
    #[arg(long, env = "POLICY_SERVER_CLUSTER_SNAPSHOT")]
    cluster_snapshot: Option<PathBuf>,
    /// Kubeconfig to reach the Kubernetes API (default: in-cluster or the usual kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
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
    // The HTTP clients that fetch policies take the process's TLS provider: ring, as the
    // webhook's own TLS and kube's. Nothing installed one before.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `manifests` writes YAML to stdout and nothing else: no log. An author's command
    // answers on stdout, and logs warnings on stderr.
    let log = match &cli.command {
        Command::Serve(args) => Some(&args.log),
        Command::Precompile(args) => Some(&args.log),
        Command::Manifests(_) => None,
        Command::Run(_) | Command::Test(_) | Command::Snapshot(_) | Command::Bench(_) => {
            author::init_logging();
            None
        }
    };
    if let Some(Err(err)) = log.map(init_logging) {
        eprintln!("Error: {err:#}");
        return ExitCode::FAILURE;
    }
    // An author's command that cannot run exits 2: 1 is a rejection (or a failed case).
    let logs_to_stdout = matches!(cli.command, Command::Serve(_) | Command::Precompile(_));
    let (result, failure) = match cli.command {
        Command::Serve(args) => (
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")
                .and_then(|rt| rt.block_on(run(*args)))
                .map(|()| ExitCode::SUCCESS),
            ExitCode::FAILURE,
        ),
        Command::Precompile(args) => (
            precompile::run(args).map(|()| ExitCode::SUCCESS),
            ExitCode::FAILURE,
        ),
        Command::Manifests(args) => (
            manifests::run(args).map(|()| ExitCode::SUCCESS),
            ExitCode::FAILURE,
        ),
        Command::Run(args) => (author::run::run(args), author_failure()),
        Command::Test(args) => (author::test::run(args), author_failure()),
        Command::Snapshot(args) => (
            author::snapshot::run(args).map(|()| ExitCode::SUCCESS),
            author_failure(),
        ),
        Command::Bench(args) => (
            author::bench::run(args).map(|()| ExitCode::SUCCESS),
            author_failure(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // In the log too, where a server's operator looks.
            if logs_to_stdout {
                tracing::error!("{err:#}");
            }
            eprintln!("Error: {err:#}");
            failure
        }
    }
}

fn author_failure() -> ExitCode {
    ExitCode::from(author::exit::ERROR)
}

fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level '{}'", args.log_level))?;
    // Colours only for a person at a terminal: in a log file they are noise, and a log
    // that never holds an escape sequence is one a forged sequence cannot hide in.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match args.log_fmt {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
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
    let paths = fetcher.fetch(&file).await;
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
        let file = file.clone();
        move || load_policies(&file, &paths, &runtime, cache, reviewer, &options)
    })
    .await
    .context("policy loading panicked")??;
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
