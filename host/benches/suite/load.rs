//! Drives a server with wrk, the load generator (Debian's `wrk`; `host/benches/suite.sh`
//! installs it), and reads its figures back through a Lua `done` hook.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// POSTs one JSON body again and again: the script sets the method, body and header,
/// and prints wrk's summary as JSON on a line of its own.
const SCRIPT: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"status_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"#;

pub struct Wrk {
    script: PathBuf,
    dir: tempfile::TempDir,
}

impl Wrk {
    pub fn new() -> anyhow::Result<Self> {
        Command::new("wrk").arg("--version").output().context(
            "wrk is not installed: run the suite with host/benches/suite.sh, which installs it",
        )?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("post.lua");
        std::fs::write(&script, SCRIPT)?;
        Ok(Self { script, dir })
    }

    /// `concurrency` connections POST `body` to `url` for `duration`.
    pub fn run(
        &self,
        url: &str,
        body: &[u8],
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<Load> {
        let body_file = self.dir.path().join("body.json");
        std::fs::write(&body_file, body)?;
        let output = Command::new("wrk")
            .env("BENCH_BODY", &body_file)
            .args(["--threads", &concurrency.clamp(1, 2).to_string()])
            .args(["--connections", &concurrency.to_string()])
            .args(["--duration", &format!("{}s", duration.as_secs().max(1))])
            .args(["--timeout", "30s"])
            .arg("--script")
            .arg(&self.script)
            .arg(url)
            .output()
            .context("running wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("BENCH-RESULT "))
            .with_context(|| format!("wrk printed no result: {stdout}"))?;
        let result: Value = serde_json::from_str(line)?;
        let field = |name: &str| result[name].as_f64().unwrap_or(0.0);
        anyhow::ensure!(
            field("socket_errors") == 0.0 && field("status_errors") == 0.0,
            "{url} at c={concurrency}: {} socket errors, {} non-2xx answers",
            field("socket_errors"),
            field("status_errors")
        );
        Ok(Load {
            requests: field("requests") as u64,
            requests_per_second: field("requests") / (field("duration_us") / 1e6),
            p50_ms: field("p50_us") / 1e3,
            p99_ms: field("p99_us") / 1e3,
        })
    }
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Resident {
    /// VmRSS: everything resident, the binary's text pages included.
    pub total: u64,
    /// RssAnon: resident anonymous memory, i.e. the heap, stacks and wasm memories; not
    /// the pages of the executable, which come and go with the code paths a run takes.
    pub anonymous: u64,
}

pub fn resident(pid: u32) -> anyhow::Result<Resident> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kib * 1024)
    };
    Ok(Resident {
        total: field("VmRSS:")?,
        anonymous: field("RssAnon:")?,
    })
}
