//! Runs evaluations on a fixed set of worker threads, off the async runtime.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::value::RawValue;

use super::{GuestVerdict, Policy};
use crate::runtime::{EvalError, Runtime};

/// Evaluations that may wait for a worker, per worker, unless configured otherwise.
pub const DEFAULT_QUEUED_PER_WORKER: usize = 128;

type Job = Box<dyn FnOnce() + Send>;

/// Owns the loaded policies and the workers that run them. Guest code is synchronous and
/// may spin until its deadline, so it runs on threads of its own, never on the async
/// runtime. The workers are long-lived and take jobs from one queue: under load a worker
/// goes from one evaluation to the next without sleeping, and the number of live
/// instances never exceeds the number of workers, which the instance pool is sized for.
pub struct Evaluator {
    runtime: Arc<Runtime>,
    policies: HashMap<String, Arc<Policy>>,
    queue: Sender<Job>,
    capacity: usize,
}

/// Every worker is busy and the queue is full: the caller should try again later.
#[derive(Debug, thiserror::Error)]
#[error("the server is overloaded: {waiting} evaluations are already waiting for a worker")]
pub struct Overloaded {
    pub waiting: usize,
}

impl Evaluator {
    /// Starts `workers` threads; at most `capacity` evaluations wait for one of them.
    pub fn new(
        runtime: Arc<Runtime>,
        policies: HashMap<String, Arc<Policy>>,
        workers: usize,
        capacity: usize,
    ) -> Self {
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(capacity);
        for index in 0..workers {
            let jobs = jobs.clone();
            // The threads end when the evaluator (the only sender) is dropped.
            std::thread::Builder::new()
                .name(format!("policy-worker-{index}"))
                .spawn(move || {
                    for job in jobs {
                        job();
                    }
                })
                .expect("spawning an evaluation worker");
        }
        Self {
            runtime,
            policies,
            queue,
            capacity,
        }
    }

    pub fn policy(&self, id: &str) -> Option<&Arc<Policy>> {
        self.policies.get(id)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// Evaluates `request` with `policy` on a worker thread.
    pub async fn validate(
        &self,
        policy: &Arc<Policy>,
        request: Arc<RawValue>,
    ) -> Result<Result<GuestVerdict, EvalError>, Overloaded> {
        tracing::debug!(policy = %policy.id, "evaluating");
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (runtime, policy) = (self.runtime.clone(), policy.clone());
        let job: Job = Box::new(move || {
            // The caller gave up while this waited (the API server timed out, the client
            // went away): nobody would read the verdict.
            if answer.is_closed() {
                return;
            }
            // A panic in the host must cost this evaluation, not the worker.
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| policy.validate(&runtime, &request)))
                    .unwrap_or_else(|_| Err(EvalError::Trap("the evaluation panicked".into())));
            let _ = answer.send(outcome);
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Overloaded {
                    waiting: self.capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                unreachable!("the workers live as long as the evaluator")
            }
        }
        Ok(answered
            .await
            .unwrap_or_else(|_| Err(EvalError::Trap("the evaluation was abandoned".into()))))
    }
}
