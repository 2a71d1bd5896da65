//! The `policy-server` command line. Flags keep the names and environment variables of
//! Kubewarden's policy-server, so existing deployments can switch without edits.

mod author;
mod bounds;
mod cluster;
mod manifests;
mod precompile;
mod reload;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fetch::Fetcher;
use crate::policy::LoadOptions;
use crate::runtime::{Compilers, RuntimeConfig};

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
    Serve(Box<serve::ServeArgs>),
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
                .and_then(|rt| rt.block_on(serve::run(*args)))
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
