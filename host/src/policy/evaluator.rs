//! Runs evaluations on a fixed set of worker threads, off the async runtime.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use std::time::Instant;

use serde_json::value::RawValue;

use super::scheduler::{FairQueue, Job, QueueFull, QueueLimits, Ticket};
use super::{GuestVerdict, Policy};
use crate::metrics::{PolicyMetrics, Refusal, metrics};
use crate::runtime::{EvalError, Runtime};

/// Evaluations that may wait for a worker, per worker, unless configured otherwise.
pub const DEFAULT_QUEUED_PER_WORKER: usize = 128;

/// Owns the loaded policies and the workers that run them. Guest code is synchronous and
/// may spin until its deadline, so it runs on threads of its own, never on the async
/// runtime. The workers are long-lived and take jobs from a fair queue with one lane per
/// policy (see [`super::scheduler`]): under load a worker goes from one evaluation to the
/// next without sleeping, and a slow policy holds at most its share of the workers. The
/// live instances of one set never exceed its workers; after a reload, the old set's
/// workers finish its queue beside the new set's, and the instance pool is sized for both.
pub struct Evaluator {
    runtime: Arc<Runtime>,
    policies: HashMap<String, Arc<Policy>>,
    /// Each policy's lane in the queue, and its counters.
    lanes: HashMap<Arc<str>, (usize, Arc<PolicyMetrics>)>,
    queue: Arc<FairQueue>,
}

/// How many workers there are and how much may wait for them.
#[derive(Debug, Clone, Copy)]
pub struct WorkerLimits {
    pub workers: usize,
    /// Evaluations that may wait for a worker, across all policies.
    pub queued: usize,
    /// Workers one policy may hold at once.
    pub workers_per_policy: usize,
}

impl WorkerLimits {
    /// One policy may hold every worker but one, so a policy that runs to its timeout
    /// always leaves a worker to the others; with a single worker there is nothing to
    /// share.
    pub fn default_workers_per_policy(workers: usize) -> usize {
        workers.saturating_sub(1).max(1)
    }
}

/// No evaluation happened: the caller should try again later.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the server is overloaded: {0}")]
    Overloaded(QueueFull),
    #[error("the caller's deadline passed before a worker was free")]
    DeadlinePassed,
}

impl Evaluator {
    /// Starts the workers.
    pub fn new(
        runtime: Arc<Runtime>,
        policies: HashMap<String, Arc<Policy>>,
        limits: WorkerLimits,
    ) -> Self {
        let lanes: HashMap<Arc<str>, (usize, Arc<PolicyMetrics>)> = policies
            .values()
            .enumerate()
            .map(|(lane, policy)| {
                let counters = Arc::new(metrics().policy(&policy.id, policy.mode));
                (policy.id.clone(), (lane, counters))
            })
            .collect();
        // One policy may fill half the waiting slots when there are others to serve.
        let lane_capacity = if lanes.len() > 1 {
            limits.queued.div_ceil(2)
        } else {
            limits.queued
        };
        let queue = Arc::new(FairQueue::new(QueueLimits {
            lanes: lanes.len(),
            capacity: limits.queued,
            lane_capacity,
            // A policy alone has no one to leave a worker to.
            lane_workers: if lanes.len() > 1 {
                limits.workers_per_policy.clamp(1, limits.workers)
            } else {
                limits.workers
            },
        }));
        super::workers::start(queue.clone(), limits.workers);
        Self {
            runtime,
            policies,
            lanes,
            queue,
        }
    }

    pub fn policy(&self, id: &str) -> Option<&Arc<Policy>> {
        self.policies.get(id)
    }

    /// Evaluates `request` with `policy` on a worker thread, unless no worker is free
    /// before `deadline` (when the caller stops waiting for the answer). `held` (what the
    /// request holds of the server's budgets) is kept until the evaluation ends, or its
    /// job is withdrawn: a queued job counts for as long as it is queued.
    pub async fn validate<H: Send + 'static>(
        &self,
        policy: &Arc<Policy>,
        request: Arc<RawValue>,
        deadline: Instant,
        held: H,
    ) -> Result<Result<GuestVerdict, EvalError>, Unavailable> {
        tracing::debug!(policy = %policy.id, "evaluating");
        let (lane, counters) = self
            .lanes
            .get(&policy.id)
            .expect("every policy served has a lane");
        let (lane, counters) = (*lane, counters.clone());
        let queued_at = Instant::now();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (runtime, policy) = (self.runtime.clone(), policy.clone());
        let job: Job = Box::new(move || {
            let _held = held;
            // The caller gave up while this waited (its deadline passed, the client went
            // away): nobody would read the verdict.
            let started = Instant::now();
            if answer.is_closed() || started >= deadline {
                return;
            }
            metrics().queue_waited(started - queued_at);
            // A panic in the host must cost this evaluation, not the worker.
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| policy.validate(&runtime, &request)))
                    .unwrap_or_else(|_| Err(EvalError::Trap("the evaluation panicked".into())));
            counters.evaluated(&outcome, started.elapsed());
            let _ = answer.send(outcome);
        });
        let ticket = self.queue.push(lane, job).map_err(|full| {
            metrics().refused(Refusal::QueueFull);
            Unavailable::Overloaded(full)
        })?;
        // Withdrawn if the caller stops waiting first, here or by being dropped.
        let mut queued = Queued {
            queue: &self.queue,
            lane,
            ticket: Some(ticket),
        };
        let outcome = tokio::time::timeout_at(deadline.into(), answered).await;
        match outcome {
            Ok(Ok(outcome)) => {
                queued.ticket = None;
                Ok(outcome)
            }
            // Dropped unanswered: the deadline passed before a worker took it.
            Ok(Err(_)) | Err(_) => {
                metrics().refused(Refusal::DeadlinePassed);
                Err(Unavailable::DeadlinePassed)
            }
        }
    }
}

/// A job in the queue that its caller may still withdraw.
struct Queued<'a> {
    queue: &'a FairQueue,
    lane: usize,
    ticket: Option<Ticket>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.queue.withdraw(self.lane, ticket);
        }
    }
}

impl Drop for Evaluator {
    fn drop(&mut self) {
        self.queue.close();
    }
}
