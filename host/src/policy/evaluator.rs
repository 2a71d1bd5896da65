//! Runs evaluations off the async runtime, a bounded number at a time.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use super::{GuestVerdict, Policy};
use crate::runtime::{EvalError, Runtime};

/// Owns the loaded policies and the workers that run them. Guest code is synchronous and
/// may spin until its deadline, so it runs on blocking threads; the semaphore keeps the
/// number of live instances within what the instance pool was sized for.
pub struct Evaluator {
    runtime: Arc<Runtime>,
    policies: HashMap<String, Arc<Policy>>,
    workers: Arc<Semaphore>,
}

impl Evaluator {
    pub fn new(
        runtime: Arc<Runtime>,
        policies: HashMap<String, Arc<Policy>>,
        workers: usize,
    ) -> Self {
        Self {
            runtime,
            policies,
            workers: Arc::new(Semaphore::new(workers)),
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
    ) -> Result<GuestVerdict, EvalError> {
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .expect("the worker semaphore is never closed");
        tracing::debug!(policy = %policy.id, "evaluating");
        let (runtime, policy) = (self.runtime.clone(), policy.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            policy.validate(&runtime, &request)
        });
        task.await
            .unwrap_or_else(|e| Err(EvalError::Trap(format!("the evaluation task failed: {e}"))))
    }
}
