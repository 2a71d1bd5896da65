//! The shared wasmtime engine: compilation settings, the pooling allocator, and the
//! epoch ticker that enforces evaluation time limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig,
};

use super::artifacts::{ArtifactKind, ArtifactStore, SourceDigest, source_digest};

/// How often the epoch advances. Time limits are enforced with this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Memory of a finished instance kept mapped for the next instance of the same slot,
/// when only written pages need resetting (see `Runtime::new`).
const KEEP_RESIDENT_BYTES: usize = 16 << 20;

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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 256 << 20,
            max_wasm_stack_bytes: 512 << 10,
            max_concurrent_instances: 64,
            compile_cache_dir: None,
        }
    }
}

/// The engine plus what keeps its epoch moving. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
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

        let mut wasm_config = Config::new();
        wasm_config
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack_bytes)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm_config)
            .map_err(anyhow::Error::from)
            .context("cannot configure the wasm engine")?;
        let compile_cache = match &config.compile_cache_dir {
            Some(dir) => Some(
                ArtifactStore::open(dir, artifact_salt(&engine, &config)).with_context(|| {
                    format!("cannot use {} as the compile cache", dir.display())
                })?,
            ),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            config,
            compile_cache,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a core module, or loads what an earlier run compiled from the same bytes.
    pub(crate) fn compile_module(&self, wasm: &[u8]) -> anyhow::Result<Module> {
        self.compile_cached(
            wasm,
            |engine, wasm| Module::new(engine, wasm),
            // SAFETY: the bytes come from a file in a directory only this user can write
            // (checked when the cache opened, and the file's own owner and mode when it
            // was read), whose header says `Module::serialize` made it from this module
            // for an engine with these settings; wasmtime checks the engine again.
            |engine, code| unsafe { Module::deserialize(engine, code) },
            |module| module.serialize(),
        )
    }

    /// Compiles a component, or loads what an earlier run compiled from the same bytes.
    pub(crate) fn compile_component(&self, wasm: &[u8]) -> anyhow::Result<Component> {
        self.compile_cached(
            wasm,
            |engine, wasm| Component::new(engine, wasm),
            // SAFETY: as in `compile_module`.
            |engine, code| unsafe { Component::deserialize(engine, code) },
            |component| component.serialize(),
        )
    }

    fn compile_cached<T>(
        &self,
        wasm: &[u8],
        compile: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
        load: impl Fn(&Engine, &[u8]) -> wasmtime::Result<T>,
        save: impl Fn(&T) -> wasmtime::Result<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let Some(cache) = &self.compile_cache else {
            return compile(&self.engine, wasm).map_err(anyhow::Error::from);
        };
        let source = source_digest(wasm);
        if let Some(code) = cache.load(ArtifactKind::Compiled, &source) {
            match load(&self.engine, &code) {
                Ok(compiled) => return Ok(compiled),
                Err(e) => tracing::warn!("ignoring cached machine code: {e:#}"),
            }
        }
        let compiled = compile(&self.engine, wasm).map_err(anyhow::Error::from)?;
        match save(&compiled)
            .map_err(anyhow::Error::from)
            .and_then(|code| cache.store(ArtifactKind::Compiled, &source, &code))
        {
            Ok(()) => {}
            Err(e) => tracing::warn!("cannot keep the compiled policy for the next start: {e:#}"),
        }
        Ok(compiled)
    }

    /// The pre-initialized module an earlier run made from `original`, if any.
    pub(crate) fn load_pre_initialized(&self, original: &[u8]) -> Option<Vec<u8>> {
        let cache = self.compile_cache.as_ref()?;
        cache.load(ArtifactKind::PreInitialized, &source_digest(original))
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

    /// Epoch ticks that make up `timeout`, rounded up, plus one because the current tick
    /// may be about to end.
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
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

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, so a guest
/// stuck in a loop is interrupted even when every runtime worker is busy.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
