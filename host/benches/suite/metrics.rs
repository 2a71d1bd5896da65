//! What the Prometheus metrics cost, and where a request's latency goes.
//!
//! - recording: what one evaluation adds (its outcome counter, its latency, the queue
//!   wait), in process;
//! - a scrape: encoding every metric of 20 policies that have all been evaluated;
//! - throughput of a trivial policy over HTTPS at c=16 while a scraper polls ten times a
//!   second, against none, in alternating pairs;
//! - the latency breakdown at c=16: wrk's end-to-end percentiles beside the server's own
//!   histograms of queue wait and evaluation (read from two scrapes around the run), so
//!   the rest is HTTP, TLS and the hand-offs between the tokio side and the workers. The
//!   no-op route (the review parsed and allowed, no policy, no worker) run just after sets
//!   the floor: the tail that HTTP, TLS and wrk sharing the machine's cores make alone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use policy_server::config::PolicyMode;
use policy_server::metrics::metrics;
use policy_server::runtime::{EvalError, GuestVerdict};
use policy_server_e2e::ServerBuilder;
use policy_server_e2e::requests::{pod, review};
use serde_json::json;

use crate::load::Wrk;
use crate::report::{Report, Table, num, text};
use crate::stats::Stats;
use crate::{Scale, async_runtime, policies_yml, server_binary};

const PAIRS: usize = 3;
const CONCURRENCY: usize = 16;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    in_process(report, scale);
    over_http(report, scale)
}

fn in_process(report: &mut Report, scale: &Scale) {
    let metrics = metrics();
    let policies: Vec<_> = (0..20)
        .map(|i| metrics.policy(&format!("policy-{i:02}"), PolicyMode::Protect))
        .collect();
    let accepted: Result<GuestVerdict, EvalError> = Ok(GuestVerdict {
        accepted: true,
        ..GuestVerdict::default()
    });
    let rounds = scale.samples * 200;
    let started = Instant::now();
    for round in 0..rounds {
        let took = Duration::from_nanos(20_000 + (round as u64 % 97) * 1_000);
        metrics.queue_waited(took / 4);
        policies[round % policies.len()].evaluated(&accepted, took);
    }
    let record_ns = started.elapsed().as_nanos() as f64 / rounds as f64;

    let mut bytes = 0;
    let encodes = Stats::of(
        (0..scale.samples.min(1_000))
            .map(|_| {
                let started = Instant::now();
                bytes = metrics.encode().len();
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    );
    let mut table = Table::new("metrics_cost", "Metrics, in process", &["what", "figure"]);
    table.row(vec![
        text("recording one evaluation (ns)"),
        num(record_ns, 0),
    ]);
    table.row(vec![
        text("a scrape of 20 policies, p50 (µs)"),
        num(encodes.p50, 0),
    ]);
    table.row(vec![
        text("a scrape of 20 policies, p99 (µs)"),
        num(encodes.p99, 0),
    ]);
    table.row(vec![
        text("a scrape of 20 policies (KiB)"),
        num(bytes as f64 / 1024.0, 0),
    ]);
    report.add(table);
    report.at_most("metrics: recording one evaluation, ns", record_ns, 500.0);
}

fn over_http(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let yml = policies_yml(&[(
        "trivial",
        json!({"module": wasm.deny_latest_tag, "settings": {}}),
    )]);
    let server = ServerBuilder::new(server_binary(), yml)
        .arg("--metrics-port")
        .arg("0")
        .arg("--enable-noop-route")
        .start();
    let client = async_runtime();
    let metrics_port: u16 = client.block_on(async {
        let event = server
            .wait_for_log(|event| event["message"] == "serving metrics at /metrics")
            .await;
        let address = event["address"].as_str().unwrap_or_default().to_owned();
        address.rsplit(':').next().unwrap_or_default().parse()
    })?;
    let body = serde_json::to_vec(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))?;
    let url = server.url("/validate/trivial");
    let noop = server.url("/noop");
    let wrk = Wrk::new()?;
    wrk.run(&url, &body, CONCURRENCY, Duration::from_secs(1))?;

    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut breakdown = None;
    for pair in 0..PAIRS {
        let before = scrape(metrics_port)?;
        let quiet = wrk.run(&url, &body, CONCURRENCY, scale.load_duration)?;
        let after = scrape(metrics_port)?;
        if pair == 0 {
            let floor = wrk.run(&noop, &body, CONCURRENCY, scale.load_duration)?;
            breakdown = Some((quiet, floor, before, after));
        }
        without.push(quiet.requests_per_second);

        let stop = Arc::new(AtomicBool::new(false));
        let scraper = std::thread::spawn({
            let stop = stop.clone();
            move || -> anyhow::Result<usize> {
                let mut scrapes = 0;
                while !stop.load(Ordering::Relaxed) {
                    scrape(metrics_port)?;
                    scrapes += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(scrapes)
            }
        });
        let scraped = wrk.run(&url, &body, CONCURRENCY, scale.load_duration)?;
        stop.store(true, Ordering::Relaxed);
        let scrapes = scraper.join().expect("the scraper thread")?;
        anyhow::ensure!(scrapes > 0, "the scraper never scraped");
        with.push(scraped.requests_per_second);
    }
    let median = |mut figures: Vec<f64>| {
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    };
    let (quiet, scraped) = (median(without), median(with));
    let mut table = Table::new(
        "metrics_scrape",
        "Trivial policy over HTTPS at c=16, with and without a scraper at 10/s (median of 3 pairs)",
        &["scraper", "req/s"],
    );
    table.row(vec![text("none"), num(quiet, 0)]);
    table.row(vec![text("every 100 ms"), num(scraped, 0)]);
    report.add(table);
    report.at_least(
        "metrics: throughput with a scraper at 10/s ÷ without",
        scraped / quiet,
        0.98,
    );

    let (load, floor, before, after) = breakdown.expect("at least one pair");
    let queue = Delta::of(&before, &after, "policy_server_queue_wait_seconds", "");
    let evaluation = Delta::of(
        &before,
        &after,
        "policy_server_evaluation_duration_seconds",
        "policy=\"trivial\"",
    );
    let mut table = Table::new(
        "latency_breakdown",
        "Where the latency of the trivial policy at c=16 goes (ms; server histograms, interpolated in buckets ×2 wide)",
        &["part", "p50", "p99", "p99 ÷ p50"],
    );
    let rows = [
        ("end to end (wrk)", load.p50_ms, load.p99_ms),
        ("floor: no-op route end to end", floor.p50_ms, floor.p99_ms),
        (
            "waiting for a worker",
            queue.quantile(0.5) * 1e3,
            queue.quantile(0.99) * 1e3,
        ),
        (
            "evaluation (instance, guest, answer)",
            evaluation.quantile(0.5) * 1e3,
            evaluation.quantile(0.99) * 1e3,
        ),
    ];
    for (part, p50, p99) in rows {
        table.row(vec![
            text(part),
            num(p50, 3),
            num(p99, 3),
            num(p99 / p50, 1),
        ]);
    }
    report.add(table);
    report.at_most(
        "tail: p99 ÷ p50 of the trivial policy at c=16",
        load.p99_ms / load.p50_ms,
        2.0,
    );
    Ok(())
}

/// `GET /metrics`, over a plain socket.
fn scrape(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200"),
        "scrape: {response:.200}"
    );
    Ok(response)
}

/// One histogram's buckets between two scrapes: `(upper bound, count below it)`.
struct Delta(Vec<(f64, f64)>);

impl Delta {
    fn of(before: &str, after: &str, name: &str, labels: &str) -> Self {
        let buckets = |text: &str| -> Vec<(f64, f64)> {
            let prefix = format!("{name}_bucket{{");
            text.lines()
                .filter(|line| line.starts_with(&prefix) && line.contains(labels))
                .filter_map(|line| {
                    let le = line.split("le=\"").nth(1)?.split('"').next()?;
                    let count = line.rsplit(' ').next()?.parse().ok()?;
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, count))
                })
                .collect()
        };
        let before = buckets(before);
        Self(
            buckets(after)
                .into_iter()
                .map(|(bound, count)| {
                    let earlier = before
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (bound, count - earlier)
                })
                .collect(),
        )
    }

    /// The `q` quantile, interpolated linearly inside its bucket.
    fn quantile(&self, q: f64) -> f64 {
        let total = self.0.last().map_or(0.0, |(_, count)| *count);
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            if count >= rank {
                if !bound.is_finite() {
                    return lower.0;
                }
                let share = (rank - lower.1) / (count - lower.1).max(1.0);
                return lower.0 + (bound - lower.0) * share;
            }
            lower = (bound, count);
        }
        f64::NAN
    }
}
