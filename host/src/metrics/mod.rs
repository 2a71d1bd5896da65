//! Prometheus metrics, in the OpenMetrics text format, served on their own port
//! (`--metrics-port`, [`endpoint`]).
//!
//! One registry per process ([`metrics()`]): what is counted on the request path is a
//! handle resolved once (a policy's counters at load, [`PolicyMetrics`]), so an evaluation
//! bumps atomics and takes no lock. What can be read off live state at scrape time (the
//! cluster cache, [`cluster`]) is a collector, not a copy kept up to date.

pub mod cluster;
pub mod endpoint;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use guest_adapter::{HostCallRecord, HostCallRecorder};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::PolicyMode;
use crate::runtime::{EvalError, GuestVerdict};

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    evaluations: Family<EvaluationLabels, Counter>,
    evaluation_seconds: Family<PolicyLabels, Histogram>,
    queue_wait_seconds: Histogram,
    queue_depth: Gauge,
    refused: Family<RefusedLabels, Counter>,
    host_calls: Family<HostCallLabels, Counter>,
    policy_loads: Family<LoadLabels, Counter>,
    policy_reloads: Family<LoadLabels, Counter>,
    module_fetches: Family<FetchLabels, Counter>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// What became of one evaluation: the guest's own verdict (a monitor-mode rejection is
/// still `rejected`, with `mode="monitor"`), or how it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Accepted,
    Rejected,
    Mutated,
    Error,
    Timeout,
}

impl Outcome {
    pub fn of(result: &Result<GuestVerdict, EvalError>) -> Self {
        match result {
            Ok(verdict) if !verdict.accepted => Self::Rejected,
            Ok(verdict) if verdict.mutated_object.is_some() => Self::Mutated,
            Ok(_) => Self::Accepted,
            Err(EvalError::Timeout(_)) => Self::Timeout,
            Err(_) => Self::Error,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Mutated => "mutated",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// Why a request got a 503 instead of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The queue (or the policy's share of it) was full.
    QueueFull,
    /// The caller's deadline passed while the evaluation waited for a worker.
    DeadlinePassed,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::DeadlinePassed => "deadline_passed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoadOutcome {
    Loaded,
    Failed,
}

impl LoadOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Failed => "failed",
        }
    }
}

/// What fetching a remote module came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchOutcome {
    /// New bytes, downloaded and stored.
    Downloaded,
    /// The store's copy, the source unchanged (or pinned by digest, so not asked).
    Stored,
    /// The store's copy, because the source could not be reached: it may be outdated.
    StaleCopy,
    Failed,
}

impl FetchOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Downloaded => "downloaded",
            Self::Stored => "stored",
            Self::StaleCopy => "stale_copy",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FetchLabels {
    /// `registry` or `url`.
    source: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EvaluationLabels {
    policy: String,
    outcome: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostCallLabels {
    policy: String,
    style: &'static str,
    operation: &'static str,
    kind: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoadLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    wasmtime: &'static str,
}

/// Evaluations run from about 10 µs to the longest timeout: 10 µs × 2ⁿ up to ~42 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(10e-6, 2.0, 23)
}

impl Metrics {
    fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("policy_server")),
            evaluations: Family::default(),
            evaluation_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            queue_wait_seconds: Histogram::new(latency_buckets()),
            queue_depth: Gauge::default(),
            refused: Family::default(),
            host_calls: Family::default(),
            policy_loads: Family::default(),
            policy_reloads: Family::default(),
            module_fetches: Family::default(),
        };
        {
            let mut registry = metrics.registry.lock().expect("metrics registry lock");
            registry.register(
                "build",
                "This server's version",
                Info::new(BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                    wasmtime: "48.0.8",
                }),
            );
            registry.register(
                "evaluations",
                "Policy evaluations by policy, outcome and mode",
                metrics.evaluations.clone(),
            );
            registry.register(
                "evaluation_duration_seconds",
                "Time a worker spent on one evaluation (fresh instance, guest, answer)",
                metrics.evaluation_seconds.clone(),
            );
            registry.register(
                "queue_wait_seconds",
                "Time an evaluation waited for a worker",
                metrics.queue_wait_seconds.clone(),
            );
            registry.register(
                "queue_depth",
                "Evaluations waiting for a worker",
                metrics.queue_depth.clone(),
            );
            registry.register(
                "refused_requests",
                "Requests answered 503 instead of evaluated",
                metrics.refused.clone(),
            );
            registry.register(
                "host_calls",
                "Host calls of policies by call style, operation, kind and outcome",
                metrics.host_calls.clone(),
            );
            registry.register(
                "policy_loads",
                "Policies loaded (compiled, settings checked) by outcome",
                metrics.policy_loads.clone(),
            );
            registry.register(
                "policy_reloads",
                "Reloads of policies.yml by outcome (a failed one leaves the old set serving)",
                metrics.policy_reloads.clone(),
            );
            registry.register(
                "module_fetches",
                "Fetches of remote policy modules (registry, url) by outcome",
                metrics.module_fetches.clone(),
            );
        }
        // Every series whose labels are known up front exists from the start, at 0, so a
        // rate or an alert on it has a baseline before the first event.
        for reason in [Refusal::QueueFull, Refusal::DeadlinePassed] {
            let _ = metrics.refused.get_or_create(&RefusedLabels {
                reason: reason.as_str(),
            });
        }
        for outcome in [LoadOutcome::Loaded, LoadOutcome::Failed] {
            let labels = LoadLabels {
                outcome: outcome.as_str(),
            };
            let _ = metrics.policy_loads.get_or_create(&labels);
            let _ = metrics.policy_reloads.get_or_create(&labels);
        }
        for source in ["registry", "url"] {
            for outcome in [
                FetchOutcome::Downloaded,
                FetchOutcome::Stored,
                FetchOutcome::StaleCopy,
                FetchOutcome::Failed,
            ] {
                let _ = metrics.module_fetches.get_or_create(&FetchLabels {
                    source,
                    outcome: outcome.as_str(),
                });
            }
        }
        metrics
    }

    /// The counters of one policy, resolved once so an evaluation takes no lock.
    pub fn policy(&self, id: &str, mode: PolicyMode) -> PolicyMetrics {
        let mode = match mode {
            PolicyMode::Protect => "protect",
            PolicyMode::Monitor => "monitor",
        };
        let outcome = |outcome| {
            self.evaluations
                .get_or_create(&EvaluationLabels {
                    policy: id.to_owned(),
                    outcome: Outcome::as_str(outcome),
                    mode,
                })
                .clone()
        };
        PolicyMetrics {
            accepted: outcome(Outcome::Accepted),
            rejected: outcome(Outcome::Rejected),
            mutated: outcome(Outcome::Mutated),
            error: outcome(Outcome::Error),
            timeout: outcome(Outcome::Timeout),
            duration: self
                .evaluation_seconds
                .get_or_create(&PolicyLabels {
                    policy: id.to_owned(),
                })
                .clone(),
        }
    }

    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait_seconds.observe(waited.as_secs_f64());
    }

    /// Evaluations waiting for a worker, in every served set (a reload's old set may
    /// still have some): each queue adds and takes away its own.
    pub fn queue_depth_changed(&self, by: i64) {
        self.queue_depth.inc_by(by);
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused
            .get_or_create(&RefusedLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn policy_loaded(&self, outcome: LoadOutcome) {
        self.policy_loads
            .get_or_create(&LoadLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn policies_reloaded(&self, outcome: LoadOutcome) {
        self.policy_reloads
            .get_or_create(&LoadLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn module_fetched(&self, source: &'static str, outcome: FetchOutcome) {
        self.module_fetches
            .get_or_create(&FetchLabels {
                source,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Adds what is read at scrape time.
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register_collector(Box::new(collector));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 << 10);
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The process's metrics count host calls too.
pub fn host_call_recorder() -> Arc<dyn HostCallRecorder> {
    struct Recorder;
    impl HostCallRecorder for Recorder {
        fn record(&self, call: &HostCallRecord<'_>) {
            metrics()
                .host_calls
                .get_or_create(&HostCallLabels {
                    policy: call.policy.to_owned(),
                    style: call.style.as_str(),
                    operation: call.operation,
                    kind: call.kind.map(ToString::to_string).unwrap_or_default(),
                    outcome: call.outcome,
                })
                .inc();
        }
    }
    Arc::new(Recorder)
}

/// One policy's evaluation counters and latency histogram.
#[derive(Clone)]
pub struct PolicyMetrics {
    accepted: Counter,
    rejected: Counter,
    mutated: Counter,
    error: Counter,
    timeout: Counter,
    duration: Histogram,
}

impl PolicyMetrics {
    pub fn evaluated(&self, result: &Result<GuestVerdict, EvalError>, took: Duration) {
        let counter = match Outcome::of(result) {
            Outcome::Accepted => &self.accepted,
            Outcome::Rejected => &self.rejected,
            Outcome::Mutated => &self.mutated,
            Outcome::Error => &self.error,
            Outcome::Timeout => &self.timeout,
        };
        counter.inc();
        self.duration.observe(took.as_secs_f64());
    }
}

impl std::fmt::Debug for PolicyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyMetrics")
    }
}
