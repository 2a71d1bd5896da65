//! The shared wasmtime engines: compilation settings, the pooling allocator, and the
//! epoch ticker that enforces evaluation time limits.
//!
//! Two tiers of code (see [`super::tiers`]): Winch, a baseline compiler several times
//! faster than Cranelift, makes the code a policy serves with first; Cranelift the code it
//! serves with for good. Each tier has its own engine (a module runs in stores of the
//! engine that compiled it); with one compiler chosen, both tiers share one engine.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig, Strategy,
};

use super::artifacts::{ArtifactKind, ArtifactStore, SourceDigest, source_digest};
use super::epoch::EpochTicker;

/// Memory of a finished instance kept mapped for the next instance of the same slot,
/// when only written pages need resetting (see `Runtime::new`). It is held for good, per
/// slot used, so it bounds what a policy that touches much memory leaves behind. SDK
/// policies start at 1.1 MiB and fit. One that copies a 4.6 MB List per evaluation left
/// 16 MiB resident when this was 16 MiB, and runs 12% slower at 4 MiB (page faults).
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Which compilers make a policy's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compilers {
    /// Winch first, to be ready soon; Cranelift in the background, to serve fast.
    #[default]
    Tiered,
    /// Cranelift only: a slower start, the same code from the first request on.
    Cranelift,
    /// Winch only: the fastest start, slower evaluations (for tests of that tier, and
    /// machines where start-up time is all that counts).
    Winch,
}

/// Which code a compile makes: what serves at once, or what serves for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Baseline,
    Optimized,
}

/// Limits and sizing of the runtime, fixed at start-up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory one policy instance may have.
    pub memory_limit_bytes: usize,
    /// Largest wasm stack one evaluation may use.
    pub max_wasm_stack_bytes: usize,
    /// Instances that may be alive at once (evaluations in flight plus start-up checks).
    pub max_concurrent_instances: u32,
    /// Where compiled policies are kept between runs (see [`super::artifacts`]); `None`
    /// compiles every policy at start-up.
    pub compile_cache_dir: Option<PathBuf>,
    pub compilers: Compilers,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 256 << 20,
            max_wasm_stack_bytes: 512 << 10,
            max_concurrent_instances: 64,
            compile_cache_dir: None,
            compilers: Compilers::default(),
        }
    }
}

/// The engines plus what keeps their epoch moving. Cheap to share behind an `Arc`.
pub struct Runtime {
    /// Makes what serves for good; the compile cache keeps its code.
    optimized: Engine,
    /// Makes what serves first: the same engine as `optimized` unless tiered.
    baseline: Engine,
    tiered: bool,
    /// Optimized code is compiled by an engine of its own and loaded into `optimized`:
    /// Cranelift keeps the working memory of each compile in its engine for good (tens
    /// of MiB after a 1 MB SDK policy), so the compiling engine is dropped after a batch
    /// (see [`Self::release_compiler`]).
    compiler_config: Config,
    compiler: Mutex<Option<Engine>>,
    config: RuntimeConfig,
    /// Compiled and pre-initialized modules from earlier runs.
    compile_cache: Option<ArtifactStore>,
    /// Stops its thread when the runtime is dropped.
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        // A component is several core instances (its own, WASI adapters, shims), each
        // with tables and maybe a memory: size the pool for components, not modules.
        let instances = config.max_concurrent_instances;
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 16)
            .max_memory_size(config.memory_limit_bytes)
            // Large guests (SDK-built policies with many functions) need more than the
            // defaults; these are reservations of address space, not of memory.
            .max_core_instance_size(4 << 20)
            .table_elements(100_000);
        // A fresh instance per evaluation must not pay for page faults on memory the
        // previous one of the same module touched. With PAGEMAP_SCAN (Linux 6.7+) the
        // pool resets only the pages that were written and keeps them mapped; without
        // it, keeping memory resident means a memset of all of it on every reuse, which
        // costs more than the faults it saves, so the pool decommits instead.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pooling
                .pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES);
        }

        let engine_config = |strategy: Strategy| {
            let mut wasm_config = Config::new();
            wasm_config
                .strategy(strategy)
                .epoch_interruption(true)
                .max_wasm_stack(config.max_wasm_stack_bytes)
                .memory_init_cow(true)
                .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling.clone()));
            wasm_config
        };
        let engine = |strategy: Strategy| -> anyhow::Result<Engine> {
            Engine::new(&engine_config(strategy))
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot configure the wasm engine ({strategy:?})"))
        };
        let optimized_strategy = match config.compilers {
            Compilers::Winch => Strategy::Winch,
            Compilers::Tiered | Compilers::Cranelift => Strategy::Cranelift,
        };
        let (optimized, baseline) = match config.compilers {
            Compilers::Cranelift | Compilers::Winch => {
                let engine = engine(optimized_strategy)?;
                (engine.clone(), engine)
            }
            Compilers::Tiered => {
                let optimized = engine(Strategy::Cranelift)?;
                // Winch targets x86-64 (and, in part, aarch64): elsewhere, one tier.
                match engine(Strategy::Winch) {
                    Ok(baseline) => (optimized, baseline),
                    Err(e) => {
                        tracing::warn!("compiling with Cranelift only: {e:#}");
                        (optimized.clone(), optimized)
                    }
                }
            }
        };
        let tiered = !Engine::same(&optimized, &baseline);
        let compile_cache = match &config.compile_cache_dir {
            Some(dir) => Some(
                ArtifactStore::open(dir, artifact_salt(&optimized, &config)).with_context(
                    || format!("cannot use {} as the compile cache", dir.display()),
                )?,
            ),
            None => None,
        };
        // Each engine ticked once per tick: a shared one must not advance twice as fast.
        let mut engines = vec![optimized.clone()];
        if tiered {
            engines.push(baseline.clone());
        }
        let ticker = EpochTicker::start(engines);
        Ok(Self {
            optimized,
            baseline,
            tiered,
            // It only compiles: no pool of instances to reserve.
            compiler_config: {
                let mut config = engine_config(optimized_strategy);
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                config
            },
            compiler: Mutex::new(None),
            config,
            compile_cache,
            _ticker: ticker,
        })
    }

    /// The engine that makes (and runs) code of `tier`.
    pub fn engine(&self, tier: Tier) -> &Engine {
        match tier {
            Tier::Baseline => &self.baseline,
            Tier::Optimized => &self.optimized,
        }
    }

    /// Whether baseline code is upgraded to optimized code (two compilers).
    pub fn is_tiered(&self) -> bool {
        self.tiered
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a core module for `tier`; optimized code is loaded from the compile cache
    /// when an earlier run compiled the same bytes.
    pub(crate) fn compile_module(&self, wasm: &[u8], tier: Tier) -> anyhow::Result<Module> {
        self.compile_cached(
            wasm,
            tier,
            |engine, wasm| Module::new(engine, wasm),
            // SAFETY: the bytes are what `Module::serialize` made a moment ago in the
            // compiling engine (same settings), or come from a file in a directory only
            // this user can write (checked when the cache opened, and the file's own owner
            // and mode when it was read), whose header says `Module::serialize` made it
            // from this module for an engine with these settings; wasmtime checks the
            // engine again.
            |engine, code| unsafe { Module::deserialize(engine, code) },
            |module| module.serialize(),
        )
    }

    /// Compiles a component for `tier`, as [`Self::compile_module`] does a module.
    pub(crate) fn compile_component(&self, wasm: &[u8], tier: Tier) -> anyhow::Result<Component> {
        self.compile_cached(
            wasm,
            tier,
            |engine, wasm| Component::new(engine, wasm),
            // SAFETY: as in `compile_module`.
            |engine, code| unsafe { Component::deserialize(engine, code) },
            |component| component.serialize(),
        )
    }

    fn compile_cached<T>(
        &self,
        wasm: &[u8],
        tier: Tier,
        compile: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
        load: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
        save: impl Fn(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let engine = self.engine(tier);
        if !Engine::same(engine, &self.optimized) {
            // Baseline code lives for seconds: not worth a file, nor a compiling engine.
            return compile(engine, wasm).map_err(anyhow::Error::from);
        }
        if let Some(compiled) = self.load_cached(wasm, &load) {
            return Ok(compiled);
        }
        let compiler = self.compiler()?;
        // Each step timed, for `--log-level policy_server=debug`: where a slow start goes.
        let mut step = std::time::Instant::now();
        let mut lap = || std::mem::replace(&mut step, std::time::Instant::now()).elapsed();
        let scratch = compile(&compiler, wasm).map_err(anyhow::Error::from)?;
        let compile_time = lap();
        let code = save(&scratch).map_err(anyhow::Error::from)?;
        drop(scratch);
        let serialize_time = lap();
        if let Some(cache) = &self.compile_cache
            && let Err(e) = cache.store(ArtifactKind::Compiled, &source_digest(wasm), &code)
        {
            tracing::warn!("cannot keep the compiled policy for the next start: {e:#}");
        }
        let store_time = lap();
        let loaded = load(&self.optimized, &code).map_err(anyhow::Error::from)?;
        tracing::debug!(?compile_time, ?serialize_time, ?store_time, load_time = ?lap(), bytes = code.len(), "optimized code");
        Ok(loaded)
    }

    /// The engine that compiles optimized code, made on first use after a release.
    fn compiler(&self) -> anyhow::Result<Engine> {
        let mut compiler = self.compiler.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = &*compiler {
            return Ok(engine.clone());
        }
        let engine = Engine::new(&self.compiler_config)
            .map_err(anyhow::Error::from)
            .context("cannot configure the compiling engine")?;
        *compiler = Some(engine.clone());
        Ok(engine)
    }

    /// Drops the compiling engine and the working memory it kept; the next compile of
    /// optimized code makes a new one.
    pub fn release_compiler(&self) {
        self.compiler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// The optimized code an earlier run compiled from `wasm`, if the cache has it.
    fn load_cached<T>(
        &self,
        wasm: &[u8],
        load: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
    ) -> Option<T> {
        let code = self
            .compile_cache
            .as_ref()?
            .load(ArtifactKind::Compiled, &source_digest(wasm))?;
        load(&self.optimized, &code)
            .inspect_err(|e| tracing::warn!("ignoring cached machine code: {e:#}"))
            .ok()
    }

    /// Whether the compile cache holds optimized code for `wasm` (a component or a
    /// module), so a tiered start can skip the baseline compile.
    pub(crate) fn has_cached_code(&self, wasm: &[u8]) -> bool {
        self.compile_cache
            .as_ref()
            .is_some_and(|cache| cache.contains(ArtifactKind::Compiled, &source_digest(wasm)))
    }

    /// The pre-initialized module an earlier run made from `original`, if any.
    pub(crate) fn load_pre_initialized(&self, original: &[u8]) -> Option<Vec<u8>> {
        let cache = self.compile_cache.as_ref()?;
        cache.load(ArtifactKind::PreInitialized, &source_digest(original))
    }

    /// Whether an earlier run found that `original`'s start-up cannot be captured.
    pub(crate) fn start_up_stays(&self, original: &[u8]) -> bool {
        self.compile_cache.as_ref().is_some_and(|cache| {
            cache
                .load(ArtifactKind::StartUpStays, &source_digest(original))
                .is_some()
        })
    }

    /// Keeps, for the next start, why `original`'s start-up cannot be captured.
    pub(crate) fn store_start_up_stays(&self, original: &[u8], reason: &str) {
        if let Some(cache) = &self.compile_cache
            && let Err(e) = cache.store(
                ArtifactKind::StartUpStays,
                &source_digest(original),
                reason.as_bytes(),
            )
        {
            tracing::warn!("cannot keep the reason for the next start: {e:#}");
        }
    }

    /// Keeps the pre-initialized module made from `original` for the next start.
    pub(crate) fn store_pre_initialized(&self, original: &[u8], snapshot: &[u8]) {
        let Some(cache) = &self.compile_cache else {
            return;
        };
        let source: SourceDigest = source_digest(original);
        if let Err(e) = cache.store(ArtifactKind::PreInitialized, &source, snapshot) {
            tracing::warn!("cannot keep the snapshot for the next start: {e:#}");
        }
    }

    /// Logs how many compilations the compile cache answered, if there is one.
    pub fn log_compile_cache(&self) {
        if let Some((hits, misses)) = self.compile_cache_hits_and_misses() {
            tracing::info!(hits, misses, "compile cache");
        }
    }

    /// Compilations answered from the compile cache, and those that were not.
    pub fn compile_cache_hits_and_misses(&self) -> Option<(usize, usize)> {
        self.compile_cache
            .as_ref()
            .map(ArtifactStore::hits_and_misses)
    }

    /// Epoch ticks that make up `timeout` (see [`super::epoch`]).
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        super::epoch::deadline_ticks(timeout)
    }
}

/// What decides an artifact besides its module: the engine's code generation settings,
/// the memory limit (start-up may behave differently under another) and this server's
/// version.
fn artifact_salt(engine: &Engine, config: &RuntimeConfig) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same settings give the same salt each run.
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut salt = hasher.finish().to_le_bytes().to_vec();
    salt.extend_from_slice(&config.memory_limit_bytes.to_le_bytes());
    salt.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    salt
}
