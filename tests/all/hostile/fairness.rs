//! One slow policy, hammered, cannot take admission down for the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{deny_latest_tag, misbehaving, pinned_pod, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_runs_to_its_timeout_leaves_the_others_a_worker() {
    let slow = misbehaving("loop").timeout_seconds(2);
    let server = Arc::new(
        server([("slow", slow), ("fast", deny_latest_tag())])
            .arg("--workers")
            .arg("2")
            .start(),
    );
    let object = pinned_pod();
    let hammering = Arc::new(AtomicBool::new(true));
    let slow_answers = Arc::new(AtomicUsize::new(0));
    // Twenty clients loop on the slow policy, as the API server would with
    // `?timeout=3s`: more than the workers, so without isolation every worker would spin.
    let hammers: Vec<_> = (0..20)
        .map(|_| {
            let (server, object) = (server.clone(), object.clone());
            let (hammering, slow_answers) = (hammering.clone(), slow_answers.clone());
            tokio::spawn(async move {
                while hammering.load(Ordering::Relaxed) {
                    let (status, _) = server.post_json("/validate/slow?timeout=3s", &object).await;
                    assert!(
                        status == 200 || status == 503,
                        "slow policy answered {status}"
                    );
                    slow_answers.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let the slow policy's evaluations fill what they may.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(5);
    let mut answered = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let (status, body) = server.post_json("/validate/fast", &object).await;
        assert_eq!(status, 200, "the fast policy was refused: {body}");
        assert_eq!(body["response"]["allowed"], true, "{body}");
        slowest = slowest.max(started.elapsed());
        answered += 1;
    }
    hammering.store(false, Ordering::Relaxed);
    // The fast policy never waited behind an evaluation of the slow one (2 s each).
    assert!(
        slowest < Duration::from_secs(1),
        "the fast policy once took {slowest:?} while the slow one was hammered ({answered} answers)"
    );
    for hammer in hammers {
        hammer.await.unwrap();
    }
    assert!(slow_answers.load(Ordering::Relaxed) > 0);

    // Work queued for callers who have gone (their 3 s passed) is dropped, not run:
    // the slow policy answers its next caller within one evaluation.
    let started = Instant::now();
    let (status, body) = server.post_json("/validate/slow", &object).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first request after the load took {:?}",
        started.elapsed()
    );
}
