//! The policy set being served, replaced whole on reload.
//!
//! A request takes the current set once and keeps it to its answer, so an evaluation
//! that began on the old set finishes on it; the old set (its workers, its compiled
//! modules) goes when its last request does.

use std::sync::{Arc, RwLock, Weak};

use super::Evaluator;

pub struct ServedPolicies {
    current: RwLock<Arc<Evaluator>>,
}

impl ServedPolicies {
    pub fn new(evaluator: Evaluator) -> Self {
        Self {
            current: RwLock::new(Arc::new(evaluator)),
        }
    }

    /// The set a request is evaluated on, start to end.
    pub fn current(&self) -> Arc<Evaluator> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `evaluator` from the next request on. The old set lives on while requests
    /// hold it: the answer tells when it is gone.
    pub fn replace(&self, evaluator: Evaluator) -> Weak<Evaluator> {
        let previous = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(evaluator),
        );
        // Outside the lock: if no request holds it, dropping it stops its workers.
        Arc::downgrade(&previous)
    }
}
