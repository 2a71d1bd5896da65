//! Start-up to readiness with 20 policies, each its own module (copies of the examples
//! made distinct by a custom section, so nothing is shared between them): cold, with an
//! empty compile cache, then warm, with the cache the cold start filled.

use std::path::Path;
use std::time::{Duration, Instant};

use policy_server_e2e::ServerBuilder;
use serde_json::Value;

use crate::report::{Report, Table, num, text};
use crate::{Scale, async_runtime, policies_yml, server_binary};

const POLICIES: usize = 20;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    policy_server_e2e::wasm();
    let examples = policy_server_e2e::build::repo_root().join("examples");
    let dir = tempfile::tempdir()?;
    let examples_yml: serde_json::Map<String, Value> =
        serde_saphyr::from_str(&std::fs::read_to_string(examples.join("policies.yml"))?)?;
    let originals: Vec<(&String, &Value)> = examples_yml.iter().collect();
    let mut policies = Vec::new();
    let mut module_bytes = 0;
    for i in 0..POLICIES {
        let (name, original) = originals[i % originals.len()];
        let module = original["module"].as_str().expect("module path");
        let wasm = std::fs::read(examples.join(module.trim_start_matches("file://")))?;
        let copy = dir.path().join(format!("policy-{i:02}.wasm"));
        let distinct = with_custom_section(wasm, "policy-server-bench", &i.to_le_bytes());
        module_bytes += distinct.len();
        std::fs::write(&copy, distinct)?;
        let mut policy = original.clone();
        policy["module"] = Value::String(copy.display().to_string());
        policies.push((format!("{name}-{i:02}"), policy));
    }
    let policies: Vec<(&str, Value)> = policies
        .iter()
        .map(|(id, p)| (id.as_str(), p.clone()))
        .collect();
    let yml = policies_yml(&policies);
    let cache = dir.path().join("compile-cache");
    let snapshot = examples.join("cluster-snapshot.yaml");
    let start = || -> anyhow::Result<f64> { time_to_ready(&yml, &cache, &snapshot) };

    let cold = start()?;
    let warm: Vec<f64> = (0..scale.warm_starts)
        .map(|_| start())
        .collect::<anyhow::Result<_>>()?;
    let warm = crate::stats::Stats::of(warm).p50;
    let mut table = Table::new(
        "startup",
        format!(
            "Start-up to readiness, {POLICIES} policies ({:.1} MiB of wasm)",
            module_bytes as f64 / (1 << 20) as f64
        ),
        &["compile cache", "seconds"],
    );
    table.row(vec![text("cold (empty)"), num(cold, 2)]);
    table.row(vec![
        text(format!("warm (median of {})", scale.warm_starts)),
        num(warm, 2),
    ]);
    table.row(vec![text("cold / warm"), num(cold / warm, 1)]);
    report.add(table);
    Ok(())
}

/// Seconds from starting the server to its first ready answer.
fn time_to_ready(yml: &str, cache: &Path, snapshot: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let server = ServerBuilder::new(server_binary(), yml)
        .arg("--compile-cache-dir")
        .arg(cache.display().to_string())
        .arg("--cluster-snapshot")
        .arg(snapshot.display().to_string())
        .start();
    async_runtime().block_on(server.wait_ready(Duration::from_secs(300)));
    Ok(started.elapsed().as_secs_f64())
}

/// Appends a custom section: valid at the end of a core module or a component.
fn with_custom_section(mut wasm: Vec<u8>, name: &str, data: &[u8]) -> Vec<u8> {
    use wasm_encoder::Section;
    wasm_encoder::CustomSection {
        name: name.into(),
        data: data.into(),
    }
    .append_to(&mut wasm);
    wasm
}
