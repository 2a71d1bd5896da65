//! Per-instance resource limits that remember why a guest was stopped.

use wasmtime::ResourceLimiter;

/// Caps linear memory and tables of one instance. Refusing growth makes a guest's
/// allocator fail (usually with a bare `unreachable` trap), so the limiter records that
/// it refused: the evaluation error can then say "memory limit" instead of "unreachable".
pub(crate) struct MemoryCap {
    max_bytes: usize,
    max_table_elements: usize,
    exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            max_table_elements: 100_000,
            exceeded: false,
        }
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes && maximum.is_none_or(|max| desired <= max);
        if !allowed {
            self.exceeded = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements && maximum.is_none_or(|max| desired <= max))
    }
}
