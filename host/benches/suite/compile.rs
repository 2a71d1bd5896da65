//! Compile time of the policies this server loads, per compiler: Cranelift (optimizing,
//! what serves) and Winch (baseline, made to compile fast). Each module is compiled by an
//! engine with the server's settings; the figure is the median of a few compiles.

use std::path::PathBuf;
use std::time::Instant;

use wasmtime::{Config, Engine, Strategy};

use crate::Scale;
use crate::report::{Report, Table, num, text};

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let modules: Vec<(&str, PathBuf)> = vec![
        (
            "required-labels (SDK 0.17, waPC)",
            wasm.required_labels.clone(),
        ),
        (
            "tenant-namespace-limit (SDK 0.17, waPC)",
            wasm.tenant_namespace_limit.clone(),
        ),
        (
            "unique-service-selector (SDK 0.17, waPC)",
            wasm.unique_service_selector.clone(),
        ),
        (
            "default-labels-component (Rust)",
            wasm.default_labels_component.clone(),
        ),
        (
            "service-limit-py (componentize-py)",
            policy_server_e2e::build::python_component().to_path_buf(),
        ),
    ];
    let cranelift = engine(Strategy::Cranelift)?;
    let winch = engine(Strategy::Winch)?;
    let runs = if scale.warm_starts > 1 { 3 } else { 1 };
    let mut table = Table::new(
        "compile",
        "Compile time per module: Cranelift (what serves) and Winch (baseline)",
        &[
            "module",
            "MiB",
            "cranelift s",
            "winch s",
            "cranelift / winch",
        ],
    );
    for (name, path) in modules {
        let bytes = std::fs::read(&path)?;
        let cranelift_s = median_seconds(runs, || compile(&cranelift, &bytes))?;
        let winch_s = median_seconds(runs, || compile(&winch, &bytes))?;
        table.row(vec![
            text(name),
            num(bytes.len() as f64 / (1 << 20) as f64, 2),
            num(cranelift_s, 3),
            num(winch_s, 3),
            num(cranelift_s / winch_s, 1),
        ]);
    }
    report.add(table);
    Ok(())
}

pub fn engine(strategy: Strategy) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.strategy(strategy).epoch_interruption(true);
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// Compiles a core module or a component, as the bytes say.
pub fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<()> {
    if wasmparser::Parser::is_component(bytes) {
        engine.precompile_component(bytes)?;
    } else {
        engine.precompile_module(bytes)?;
    }
    Ok(())
}

fn median_seconds(
    runs: usize,
    mut work: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut seconds = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        work()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[seconds.len() / 2])
}
