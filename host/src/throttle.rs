//! At most one log line per interval for events a client can repeat at will (overload,
//! refused connections, a failing policy), with a count of those left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated event is logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct LogThrottle {
    state: Mutex<ThrottleState>,
}

#[derive(Debug, Default)]
struct ThrottleState {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// Counts one event; `Some(n)` if it should be logged, with `n` events left out since
    /// the last line.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .last_logged
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            state.suppressed += 1;
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let throttle = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Some(0));
        for i in 1..=5 {
            assert_eq!(throttle.admit_at(start + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.admit_at(start + LOG_INTERVAL), Some(5));
        assert_eq!(throttle.admit_at(start + LOG_INTERVAL), None);
    }
}
