//! What one client may make the server hold: connections, time, and request body bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds on connections and requests, fixed at start-up.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections open at once; beyond that a new connection is closed as it is accepted.
    pub max_connections: usize,
    /// From the moment a connection opens, the TLS handshake and the first request's
    /// headers must be done within this.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this of its headers.
    pub body_timeout: Duration,
    /// A connection with no request in progress is closed after this. Longer than the
    /// idle timeout of the API server's own client (90 s), so the client closes first and
    /// never sends a request on a connection the server is closing.
    pub idle_timeout: Duration,
    /// Largest request body; kube-apiserver's own limit is 3 MiB.
    pub max_body_bytes: usize,
    /// Bytes that request bodies in flight may hold, all connections together.
    pub body_bytes_in_flight: usize,
    /// Longest an answer is worth waiting for: the API server waits at most 30 s for a
    /// webhook, and says how long in the `timeout` query parameter.
    pub max_request_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_body_bytes: 3 << 20,
            body_bytes_in_flight: 64 << 20,
            max_request_deadline: Duration::from_secs(30),
        }
    }
}

/// The bytes request bodies in flight may hold. A body reserves what it holds as it
/// arrives and gives it back when its evaluation ends (or its queued job is withdrawn).
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Bytes given back since the allocator last returned free memory to the OS.
    returned_since_trim: AtomicUsize,
}

/// Bytes held for one request body; given back when dropped.
pub struct BodyReservation {
    budget: Arc<BodyBudget>,
    permit: Option<OwnedSemaphorePermit>,
}

/// The budget is spent: the request must wait for others to finish.
#[derive(Debug, thiserror::Error)]
#[error("request bodies in flight already hold the server's budget of {total} bytes; try again")]
pub struct BudgetSpent {
    pub total: usize,
}

/// Returning free memory to the OS costs a pass over the heap: only once enough was given
/// back to be worth it, and at most every [`TRIM_CHECK_INTERVAL`].
const TRIM_EVERY_BYTES: usize = 16 << 20;
pub const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(2);

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            returned_since_trim: AtomicUsize::new(0),
        }
    }

    /// An empty reservation, to grow as the body arrives.
    pub fn reservation(self: &Arc<Self>) -> BodyReservation {
        BodyReservation {
            budget: self.clone(),
            permit: None,
        }
    }

    /// Bytes held by request bodies now.
    pub fn held(&self) -> usize {
        self.total.min(Semaphore::MAX_PERMITS) - self.bytes.available_permits()
    }

    fn given_back(&self, bytes: usize) {
        self.returned_since_trim.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Returns freed memory to the OS once enough body bytes were given back and none
    /// are held. Large bodies land in the allocator's arenas, which keep freed pages:
    /// without this, memory held by a burst of big bodies would never go back.
    pub fn trim_if_due(&self) {
        if self.returned_since_trim.load(Ordering::Relaxed) < TRIM_EVERY_BYTES || self.held() > 0 {
            return;
        }
        self.returned_since_trim.store(0, Ordering::Relaxed);
        crate::memory::release_freed_memory();
    }
}

impl BodyReservation {
    /// Reserves `bytes` more, or says the budget is spent (what was reserved stays).
    pub fn grow(&mut self, bytes: usize) -> Result<(), BudgetSpent> {
        if bytes == 0 {
            return Ok(());
        }
        let spent = || BudgetSpent {
            total: self.budget.total,
        };
        let bytes = u32::try_from(bytes).map_err(|_| spent())?;
        let more = self
            .budget
            .bytes
            .clone()
            .try_acquire_many_owned(bytes)
            .map_err(|_| spent())?;
        match &mut self.permit {
            Some(permit) => permit.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            let bytes = permit.num_permits();
            drop(permit);
            self.budget.given_back(bytes);
        }
    }
}

/// When the caller stops waiting for an answer: what the API server's `timeout` query
/// parameter says (a Go duration such as `10s`), capped at `max`; `max` without one.
pub fn request_deadline(received: Instant, query: Option<&str>, max: Duration) -> Instant {
    let asked = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(parse_go_duration);
    received + asked.map_or(max, |asked| asked.min(max))
}

/// Parses a Go `time.Duration` string of the forms the API server writes (`10s`, `1m30s`,
/// `1.5s`, `500ms`). `None` for anything else.
fn parse_go_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, f64); 6] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let mut rest = text;
    let mut seconds = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        // Longest unit first: `ms` before `m`.
        let (unit, scale) = UNITS
            .iter()
            .filter(|(unit, _)| rest.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        rest = &rest[unit.len()..];
        seconds += value * scale;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_the_api_server_writes_them() {
        let cases = [
            ("10s", Some(Duration::from_secs(10))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("", None),
            ("10", None),
            ("s", None),
            ("10x", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), expected, "{text:?}");
        }
    }

    #[test]
    fn the_deadline_is_the_callers_timeout_capped() {
        let now = Instant::now();
        let max = Duration::from_secs(30);
        let deadline = |query| request_deadline(now, query, max) - now;
        assert_eq!(deadline(Some("timeout=10s")), Duration::from_secs(10));
        assert_eq!(deadline(Some("a=b&timeout=5s")), Duration::from_secs(5));
        assert_eq!(deadline(Some("timeout=1h")), max);
        assert_eq!(deadline(Some("timeout=soon")), max);
        assert_eq!(deadline(None), max);
    }

    #[tokio::test]
    async fn a_body_reservation_is_bounded_and_given_back() {
        let budget = Arc::new(BodyBudget::new(100));
        let mut first = budget.reservation();
        first.grow(60).unwrap();
        let mut second = budget.reservation();
        assert!(second.grow(41).is_err());
        second.grow(40).unwrap();
        assert_eq!(budget.held(), 100);
        drop(first);
        assert_eq!(budget.held(), 40);
        drop(second);
        assert_eq!(budget.held(), 0);
        assert!(budget.reservation().grow(usize::MAX).is_err());
    }
}
