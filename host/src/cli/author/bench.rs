//! `policy-server bench POLICY --request FILE`: how fast one policy answers one request,
//! in process, on optimized code (Cranelift, what the server serves), with a fresh
//! instance per evaluation as the server runs it. The time its host calls take is
//! measured apart, so an author sees what the guest costs and what its cluster reads do.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use guest_adapter::{HostCallRecord, HostCallRecorder};

use super::session::{LoadHow, Session};
use super::{PolicyArgs, async_runtime, request};
use crate::admission::IncomingReview;
use crate::runtime::Compilers;

#[derive(Debug, Args)]
pub(in crate::cli) struct BenchArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The request: an AdmissionReview, an AdmissionRequest, or a Kubernetes object.
    #[arg(long)]
    request: PathBuf,
    /// Seconds to measure (at most 60: every evaluation's time is kept), after a
    /// warm-up of a tenth of that.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Host calls counted and timed.
#[derive(Default)]
struct HostCallClock {
    calls: AtomicU64,
    nanos: AtomicU64,
}

impl HostCallRecorder for HostCallClock {
    fn record(&self, call: &HostCallRecord<'_>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(call.elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl HostCallClock {
    fn reset(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.nanos.store(0, Ordering::Relaxed);
    }
}

pub(in crate::cli) fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        bail!("--seconds must be more than 0 and at most 60");
    }
    let review = request::review_from_file(&args.request)?;
    let entry = args.policy.entry()?;
    let clock = Arc::new(HostCallClock::default());
    let how = LoadHow {
        compilers: Compilers::Cranelift,
        host_call_recorder: Some(clock.clone()),
        ..args.policy.how()
    };
    let id = args.policy.id();
    let session = async_runtime()?.block_on(Session::load(
        vec![(id.clone(), entry)],
        &args.policy.cluster.choice(),
        how,
    ))?;
    // The request must be one the policy answers: a bench of a failure measures nothing.
    let answer = session.evaluate(&id, &review)?;
    if answer.failed {
        bail!(
            "the policy fails on this request: {}",
            answer.review["response"]["status"]["message"]
        );
    }
    let policy = session.policies[&id].clone();
    let bytes = serde_json::to_vec(&review)?;
    let request = IncomingReview::parse(&bytes)
        .context("the request is not an AdmissionReview")?
        .request;
    let evaluate = || {
        policy
            .validate(&session.runtime, &request)
            .map_err(|err| anyhow::anyhow!("an evaluation failed: {err}"))
    };

    let measure = Duration::from_secs_f64(args.seconds);
    let warm_up = Instant::now();
    while warm_up.elapsed() < measure / 10 {
        evaluate()?;
    }
    clock.reset();
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < measure {
        let one = Instant::now();
        evaluate()?;
        samples.push(one.elapsed());
    }
    let total = started.elapsed();
    print!(
        "{}",
        Report {
            policy: &args.policy.policy,
            samples,
            total,
            host_calls: clock.calls.load(Ordering::Relaxed),
            host_time: Duration::from_nanos(clock.nanos.load(Ordering::Relaxed)),
        }
    );
    Ok(())
}

struct Report<'a> {
    policy: &'a str,
    samples: Vec<Duration>,
    total: Duration,
    host_calls: u64,
    host_time: Duration,
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let count = sorted.len();
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let mean = self.total / count as u32;
        let host_mean = self.host_time / count as u32;
        writeln!(
            f,
            "{}: one thread, optimized code, a fresh instance per evaluation",
            self.policy
        )?;
        writeln!(
            f,
            "  evaluations  {} in {:.1?} ({:.0}/s)",
            sorted.len(),
            self.total,
            sorted.len() as f64 / self.total.as_secs_f64()
        )?;
        writeln!(
            f,
            "  latency      p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  max {:.1?}",
            at(0.5),
            at(0.9),
            at(0.99),
            sorted[sorted.len() - 1]
        )?;
        writeln!(
            f,
            "  host calls   {:.1} per evaluation, {:.1?} of the mean {:.1?} ({:.0}%)",
            self.host_calls as f64 / count as f64,
            host_mean,
            mean,
            100.0 * host_mean.as_secs_f64() / mean.as_secs_f64()
        )?;
        writeln!(
            f,
            "  without them {:.1?} mean (the guest, its instance and the host's framing)",
            mean.saturating_sub(host_mean)
        )
    }
}
