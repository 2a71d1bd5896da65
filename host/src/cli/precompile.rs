//! `policy-server precompile`: fills a compile cache with the optimized code of every
//! policy (pre-initialized where its start-up allows) and exits, so a container image or
//! an init container can ship compiled policies. A server started on the same cache, with
//! the same policies, memory limit and compilers, compiles nothing.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use guest_adapter::NoCluster;

use super::{CodeArgs, LogArgs};
use crate::config::PoliciesFile;
use crate::policy::{LoadedPolicies, load_policies};
use crate::runtime::{Compilers, Runtime};

#[derive(Debug, Args)]
pub(super) struct PrecompileArgs {
    #[command(flatten)]
    pub(super) code: CodeArgs,
    #[command(flatten)]
    pub(super) log: LogArgs,
    /// The compile cache to fill: the directory `serve --compile-cache-dir` will read.
    #[arg(long, env = "POLICY_SERVER_COMPILE_CACHE_DIR")]
    compile_cache_dir: PathBuf,
}

pub(super) fn run(args: PrecompileArgs) -> anyhow::Result<()> {
    crate::config::check_timeout("--policy-timeout", args.code.policy_timeout)?;
    let file = PoliciesFile::load(&args.code.policies, false)?;
    let mut config = args
        .code
        .runtime_config(2, Some(args.compile_cache_dir.clone()));
    // Only optimized code is kept: a baseline compile would be made and thrown away.
    if config.compilers == Compilers::Tiered {
        config.compilers = Compilers::Cranelift;
    }
    let runtime = Runtime::new(config)?;
    // Remote modules are pulled into the download directory, which an image can ship; a
    // registry that cannot be reached fails the build (no copy fetched before stands in).
    let fetcher = args.code.fetcher()?.without_stale_copies();
    let paths = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fetcher.fetch(&file));
    // Settings are validated as at start-up (a broken policy fails the build of an
    // image, not its first start); no cluster is read.
    let LoadedPolicies { policies, upgrades } = load_policies(
        &file,
        &paths,
        &runtime,
        Arc::new(NoCluster),
        None,
        &args.code.load_options(false),
    )
    .context("cannot precompile")?;
    for upgrade in upgrades {
        upgrade.run(&runtime);
    }
    // The download directory an image ships holds these modules and nothing else.
    fetcher.commit(&paths);
    fetcher.keep_only(&file);
    runtime.log_compile_cache();
    tracing::info!(
        policies = policies.len(),
        compile_cache = %args.compile_cache_dir.display(),
        "precompiled"
    );
    Ok(())
}
