//! The benchmark suite: how fast the server is, measured against its own floors.
//!
//! `host/benches/suite.sh` (which installs wrk) runs it on a release build; it prints a
//! table per section and the targets, and writes them all to `target/bench-report.json`
//! (or `$BENCH_REPORT`). Sections can be picked by name:
//! `host/benches/suite.sh evaluation host_call`. `--quick` shortens every run, for
//! trying the suite out; its figures are not the ones to report.

mod cluster;
mod compile;
mod e2e;
mod evaluation;
mod freshness;
mod host_call;
mod load;
mod memory;
mod metrics;
mod pull;
mod reload;
mod report;
mod startup;
mod stats;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long and how often each section measures.
pub struct Scale {
    pub warmup: usize,
    pub samples: usize,
    pub host_call_rounds: usize,
    pub load_duration: Duration,
    pub soak_requests: u64,
    pub freshness_changes: usize,
    pub warm_starts: usize,
}

impl Scale {
    fn full() -> Self {
        Self {
            warmup: 300,
            samples: 5_000,
            host_call_rounds: 100,
            load_duration: Duration::from_secs(5),
            soak_requests: 1_000_000,
            freshness_changes: 200,
            warm_starts: 3,
        }
    }

    fn quick() -> Self {
        Self {
            warmup: 20,
            samples: 300,
            host_call_rounds: 10,
            load_duration: Duration::from_secs(1),
            soak_requests: 20_000,
            freshness_changes: 20,
            warm_starts: 1,
        }
    }
}

type Section = fn(&mut report::Report, &Scale) -> anyhow::Result<()>;

const SECTIONS: [(&str, Section); 10] = [
    ("evaluation", evaluation::run),
    ("host_call", host_call::run),
    ("e2e", e2e::run),
    ("startup", startup::run),
    ("compile", compile::run),
    ("memory", memory::run),
    ("freshness", freshness::run),
    ("metrics", metrics::run),
    ("reload", reload::run),
    ("pull", pull::run),
];

fn main() -> anyhow::Result<()> {
    // cargo bench passes `--bench`; everything else that is not a flag names a section.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = if args.iter().any(|a| a == "--quick") {
        Scale::quick()
    } else {
        Scale::full()
    };
    let picked: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    if let Some(unknown) = picked
        .iter()
        .find(|name| !SECTIONS.iter().any(|(s, _)| s == *name))
    {
        anyhow::bail!(
            "no section '{unknown}'; the sections are {}",
            SECTIONS.map(|(name, _)| name).join(", ")
        );
    }
    // Build the wasm before any clock starts.
    policy_server_e2e::wasm();

    let started = Instant::now();
    let mut report = report::Report::default();
    for (name, section) in SECTIONS {
        if picked.is_empty() || picked.contains(&name) {
            let section_started = Instant::now();
            section(&mut report, &scale).map_err(|e| e.context(format!("section {name}")))?;
            eprintln!("[{name}: {:.0} s]", section_started.elapsed().as_secs_f64());
        }
    }
    let path = std::env::var_os("BENCH_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| policy_server_e2e::build::repo_root().join("target/bench-report.json"));
    report.finish(&path, machine(started.elapsed()))?;
    Ok(())
}

/// What the figures were taken on.
fn machine(elapsed: Duration) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        });
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "suite_seconds": elapsed.as_secs_f64(),
    })
}

/// The release server binary that cargo built for this bench.
fn server_binary() -> &'static str {
    env!("CARGO_BIN_EXE_policy-server")
}

/// A policies.yml from `(id, policy)` pairs, written as JSON (which is YAML too).
fn policies_yml(policies: &[(&str, Value)]) -> String {
    let map: serde_json::Map<String, Value> = policies
        .iter()
        .map(|(id, policy)| ((*id).to_owned(), policy.clone()))
        .collect();
    serde_json::to_string_pretty(&map).expect("policies serialize")
}

/// An async runtime for the clients and the fake API server of a section.
fn async_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
