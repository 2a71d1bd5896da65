//! Hot reload: how long a reload of 20 policies takes with a warm compile cache (SIGHUP
//! to the swap, as the server logs it), and whether any request fails while 10 reloads
//! happen under load (wrk at c=16 on one of the policies, over HTTPS).

use std::process::Command;
use std::time::Duration;

use policy_server_e2e::ServerBuilder;
use policy_server_e2e::requests::{pod, review};
use serde_json::json;

use crate::load::Wrk;
use crate::report::{Report, Table, num, text};
use crate::startup::twenty_distinct_policies;
use crate::{Scale, async_runtime, server_binary};

const RELOADS: usize = 10;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    policy_server_e2e::wasm();
    let dir = tempfile::tempdir()?;
    let examples = policy_server_e2e::build::repo_root().join("examples");
    let (yml, _) = twenty_distinct_policies(&examples, dir.path())?;
    let cache = dir.path().join("cache");
    let server = || {
        ServerBuilder::new(server_binary(), &yml)
            .arg("--compile-cache-dir")
            .arg(cache.display().to_string())
            .arg("--cluster-snapshot")
            .arg(examples.join("cluster-snapshot.yaml").display().to_string())
    };
    let client = async_runtime();
    // A first server fills the compile cache.
    {
        let filling = server().start();
        client.block_on(filling.wait_for_log_within(Duration::from_secs(300), |e| {
            e["message"] == "compile cache"
        }));
    }
    let server = server().start();
    client.block_on(server.wait_ready(Duration::from_secs(60)));
    let pid = server.pid().to_string();
    let reloads_logged = || {
        server
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|event| event["message"] == "policies reloaded")
            .filter_map(|event| event["elapsed"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };

    let body = serde_json::to_vec(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))?;
    let ids: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&yml)?;
    let id = ids
        .keys()
        .find(|id| id.starts_with("required-labels-") && !id.contains("monitor"))
        .ok_or_else(|| anyhow::anyhow!("no required-labels policy among {:?}", ids.keys()))?;
    let url = server.url(&format!("/validate/{id}"));
    let wrk = Wrk::new()?;
    let duration = scale
        .load_duration
        .max(Duration::from_secs(RELOADS as u64 + 2));
    let hangups = std::thread::spawn({
        let pid = pid.clone();
        move || {
            for _ in 0..RELOADS {
                std::thread::sleep(Duration::from_secs(1));
                let _ = Command::new("kill").args(["-HUP", &pid]).status();
            }
        }
    });
    // Fails the section if any request fails (a socket error or a non-2xx answer).
    let load = wrk.run(&url, &body, 16, duration)?;
    hangups.join().expect("the SIGHUP thread");
    client.block_on(async {
        for _ in 0..200 {
            if reloads_logged().len() >= RELOADS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let elapsed: Vec<f64> = reloads_logged()
        .iter()
        .filter_map(|text| humantime_seconds(text))
        .collect();
    anyhow::ensure!(
        elapsed.len() >= RELOADS,
        "{} reloads logged of {RELOADS}",
        elapsed.len()
    );
    let mut sorted = elapsed.clone();
    sorted.sort_by(f64::total_cmp);
    let mut table = Table::new(
        "reload",
        "Reload of 20 policies with a warm compile cache, 10 times under load (c=16, HTTPS)",
        &["what", "figure"],
    );
    table.row(vec![
        text("reload, median (ms)"),
        num(sorted[sorted.len() / 2] * 1e3, 0),
    ]);
    table.row(vec![
        text("reload, slowest (ms)"),
        num(sorted[sorted.len() - 1] * 1e3, 0),
    ]);
    table.row(vec![
        text("requests answered during the reloads"),
        num(load.requests as f64, 0),
    ]);
    table.row(vec![text("requests failed"), num(0.0, 0)]);
    table.row(vec![
        text("req/s meanwhile"),
        num(load.requests_per_second, 0),
    ]);
    report.add(table);
    Ok(())
}

/// Seconds of a `Debug`-printed `Duration` ("12.3ms", "1.2s", "850µs").
fn humantime_seconds(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(number * scale)
}
