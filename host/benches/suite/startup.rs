//! Start-up, for two shapes of policies.yml: 20 policies, each its own module (copies of
//! the examples made distinct by a custom section, so nothing is shared between them),
//! and one large component (componentize-py, 17.6 MiB, CPython inside). For each, with
//! tiered compilation and with Cranelift only:
//!
//! - cold to ready: an empty compile cache;
//! - cold to optimized: until the background upgrades are done (pre-initialized modules,
//!   Cranelift code), which is also when the compile cache is full;
//! - warm to ready: with the cache the cold start filled.
//!
//! Beside them, one plain Cranelift compile of the same modules, one after another: about
//! what a server that compiles each policy once pays before it is ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use policy_server_e2e::ServerBuilder;
use serde_json::{Value, json};
use wasmtime::Strategy;

use crate::report::{Report, Table, num, text};
use crate::{Scale, async_runtime, policies_yml, server_binary};

const POLICIES: usize = 20;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    policy_server_e2e::wasm();
    let dir = tempfile::tempdir()?;
    let examples = policy_server_e2e::build::repo_root().join("examples");
    let snapshot = examples.join("cluster-snapshot.yaml");

    let (many, many_modules) = twenty_distinct_policies(&examples, dir.path())?;
    let python = policy_server_e2e::build::python_component().to_path_buf();
    let large = policies_yml(&[(
        "service-limit-py",
        json!({"module": python, "settings": {"max": 1},
               "contextAwareResources": [{"apiVersion": "v1", "kind": "Service"}]}),
    )]);
    let cases = [
        (format!("{POLICIES} policies"), many, many_modules),
        ("componentize-py component".to_owned(), large, vec![python]),
    ];
    let mut table = Table::new(
        "startup",
        "Start-up: seconds to ready (cold, warm) and to optimized code (cold)",
        &[
            "policies",
            "MiB",
            "compilers",
            "cold: ready",
            "cold: optimized",
            "warm: ready",
            "one Cranelift pass",
            "cold ready / pass",
        ],
    );
    for (name, yml, modules) in cases {
        let bytes: u64 = modules
            .iter()
            .map(|module| std::fs::metadata(module).map(|m| m.len()))
            .sum::<std::io::Result<_>>()?;
        let pass = cranelift_pass(&modules)?;
        let mut cold_ready_by = Vec::new();
        for compilers in ["tiered", "cranelift"] {
            let cache = dir
                .path()
                .join(format!("cache-{}-{compilers}", table_key(&name)));
            let start = || Start {
                yml: &yml,
                cache: &cache,
                snapshot: &snapshot,
                compilers,
            };
            let (cold_ready, cold_optimized) = start().cold()?;
            let warm: Vec<f64> = (0..scale.warm_starts)
                .map(|_| start().warm())
                .collect::<anyhow::Result<_>>()?;
            let warm = crate::stats::Stats::of(warm).p50;
            cold_ready_by.push(cold_ready);
            table.row(vec![
                text(name.clone()),
                num(bytes as f64 / (1 << 20) as f64, 1),
                text(compilers),
                num(cold_ready, 2),
                num(cold_optimized, 2),
                num(warm, 2),
                num(pass, 2),
                num(cold_ready / pass, 2),
            ]);
        }
        let (tiered, cranelift) = (cold_ready_by[0], cold_ready_by[1]);
        report.at_most(
            format!("{name}: tiered cold start / one Cranelift pass"),
            tiered / pass,
            1.0 / 3.0,
        );
        report.at_most(
            format!("{name}: Cranelift-only cold start / one Cranelift pass"),
            cranelift / pass,
            1.0,
        );
        report.at_most(
            format!("{name}: tiered cold start / Cranelift-only cold start"),
            tiered / cranelift,
            1.0 / 3.0,
        );
    }
    report.add(table);
    Ok(())
}

fn table_key(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// The examples' policies.yml entries, 20 of them, each on its own copy of its module.
pub fn twenty_distinct_policies(
    examples: &Path,
    dir: &Path,
) -> anyhow::Result<(String, Vec<PathBuf>)> {
    let examples_yml: serde_json::Map<String, Value> =
        serde_saphyr::from_str(&std::fs::read_to_string(examples.join("policies.yml"))?)?;
    let originals: Vec<(&String, &Value)> = examples_yml.iter().collect();
    let mut policies = Vec::new();
    let mut modules = Vec::new();
    for i in 0..POLICIES {
        let (name, original) = originals[i % originals.len()];
        let module = original["module"].as_str().expect("module path");
        let wasm = std::fs::read(examples.join(module.trim_start_matches("file://")))?;
        let copy = dir.join(format!("policy-{i:02}.wasm"));
        std::fs::write(
            &copy,
            with_custom_section(wasm, "policy-server-bench", &i.to_le_bytes()),
        )?;
        let mut policy = original.clone();
        policy["module"] = Value::String(copy.display().to_string());
        policies.push((format!("{name}-{i:02}"), policy));
        modules.push(copy);
    }
    let policies: Vec<(&str, Value)> = policies
        .iter()
        .map(|(id, p)| (id.as_str(), p.clone()))
        .collect();
    Ok((policies_yml(&policies), modules))
}

/// Seconds to compile every module once with Cranelift, one after another.
fn cranelift_pass(modules: &[PathBuf]) -> anyhow::Result<f64> {
    let engine = crate::compile::engine(Strategy::Cranelift)?;
    let started = Instant::now();
    for module in modules {
        crate::compile::compile(&engine, &std::fs::read(module)?)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

struct Start<'a> {
    yml: &'a str,
    cache: &'a Path,
    snapshot: &'a Path,
    compilers: &'a str,
}

impl Start<'_> {
    fn server(&self) -> ServerBuilder {
        ServerBuilder::new(server_binary(), self.yml)
            .arg("--compile-cache-dir")
            .arg(self.cache.display().to_string())
            .arg("--cluster-snapshot")
            .arg(self.snapshot.display().to_string())
            .args(["--compilers", self.compilers])
    }

    /// Seconds to ready, and to the end of the background upgrades, from an empty cache.
    fn cold(&self) -> anyhow::Result<(f64, f64)> {
        let _ = std::fs::remove_dir_all(self.cache);
        let started = Instant::now();
        let server = self.server().start();
        async_runtime().block_on(async {
            server.wait_ready(Duration::from_secs(300)).await;
            let ready = started.elapsed().as_secs_f64();
            // Logged once the upgrades are done (at once when there are none).
            server
                .wait_for_log_within(Duration::from_secs(300), |event| {
                    event["message"] == "compile cache"
                })
                .await;
            Ok((ready, started.elapsed().as_secs_f64()))
        })
    }

    /// Seconds to ready with the cache a cold start filled.
    fn warm(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let server = self.server().start();
        async_runtime().block_on(server.wait_ready(Duration::from_secs(300)));
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Appends a custom section: valid at the end of a core module or a component.
pub fn with_custom_section(mut wasm: Vec<u8>, name: &str, data: &[u8]) -> Vec<u8> {
    use wasm_encoder::Section;
    wasm_encoder::CustomSection {
        name: name.into(),
        data: data.into(),
    }
    .append_to(&mut wasm);
    wasm
}
