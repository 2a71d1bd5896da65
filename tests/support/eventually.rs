//! Waiting for what the server does in the background (a watch event reaching the cache,
//! a re-list) without a fixed sleep.

use std::future::Future;
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it returns `None`; panics with `what` and the last
/// failure if it still returns `Some` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let failure = match check().await {
            None => return,
            Some(failure) => failure,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still not true after {WITHIN:?}: {failure}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
