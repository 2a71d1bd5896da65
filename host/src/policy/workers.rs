//! The evaluation worker threads, and the CPU they may take from each other.
//!
//! A guest that loops until its timeout burns a core for the whole timeout, and epoch
//! interruption cannot make it yield. On a machine with few cores that core is missing
//! for everything else: the HTTP side and the short evaluations of other policies. So a
//! worker whose evaluation has run longer than [`DEMOTE_AFTER`] is moved to Linux's
//! `SCHED_IDLE` class: it keeps running, but only on CPU time nothing else wants, and any
//! other thread that wakes takes the CPU from it at once. (A raised nice value does not do
//! this: with nice 10 or 19 the fast policy beside a looping one still lost half its
//! throughput, 15,000 against 27,800 req/s, waiting out the looping thread's slices.) A
//! thread cannot leave `SCHED_IDLE` without privilege, so a demoted worker retires when
//! its evaluation ends and the supervisor (an ordinary thread) starts a fresh one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::scheduler::FairQueue;

/// Evaluations that run longer than this give their CPU to everything else first.
/// Policies answer in microseconds to a few tens of milliseconds (the slowest of
/// Kubewarden's catalogue measured here, trusted-repos, in about 35 ms); one that takes
/// this long is heading for its timeout, or is expensive enough to wait its turn. (At
/// 20 ms the fast policy's p99 beside a looping one was no better: 3.1 against 3.3 ms.)
pub const DEMOTE_AFTER: Duration = Duration::from_millis(100);

/// How often the supervisor looks at the workers.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// What the supervisor knows of one worker.
#[derive(Default)]
struct WorkerSlot {
    /// The worker thread's Linux thread id.
    tid: AtomicI32,
    /// When its evaluation began (milliseconds after the pool started), 0 when idle.
    busy_since_ms: AtomicU64,
    /// Demoted already (the supervisor's own record, so it asks the kernel once).
    demoted: AtomicBool,
}

/// Starts `count` workers taking jobs from `queue`, and their supervisor. Everything
/// stops once the queue is closed (the supervisor within [`WATCH_INTERVAL`]).
pub(crate) fn start(queue: Arc<FairQueue>, count: usize) {
    let started = Instant::now();
    let slots: Vec<Arc<WorkerSlot>> = (0..count).map(|_| Arc::default()).collect();
    let (retired, retirements) = mpsc::channel::<usize>();
    for (index, slot) in slots.iter().enumerate() {
        spawn_worker(index, slot.clone(), queue.clone(), started, retired.clone())
            .expect("spawning an evaluation worker");
    }
    std::thread::Builder::new()
        .name("policy-worker-supervisor".into())
        .spawn(move || {
            let mut slots = slots;
            // Workers to replace; kept until a thread can be had (a pids limit may refuse).
            let mut to_replace: Vec<usize> = Vec::new();
            loop {
                if let Ok(index) = retirements.recv_timeout(WATCH_INTERVAL) {
                    to_replace.push(index);
                }
                to_replace.retain(|&index| {
                    let slot = Arc::new(WorkerSlot::default());
                    match spawn_worker(index, slot.clone(), queue.clone(), started, retired.clone()) {
                        Ok(()) => {
                            slots[index] = slot;
                            false
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot start an evaluation worker; retrying");
                            true
                        }
                    }
                });
                if queue.is_closed() {
                    return;
                }
                let now_ms = started.elapsed().as_millis() as u64;
                for slot in &slots {
                    demote_if_long(slot, now_ms);
                }
            }
        })
        .expect("spawning the evaluation supervisor");
}

fn spawn_worker(
    index: usize,
    slot: Arc<WorkerSlot>,
    queue: Arc<FairQueue>,
    started: Instant,
    retired: mpsc::Sender<usize>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("policy-worker-{index}"))
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            slot.tid.store(unsafe { libc::gettid() }, Ordering::Release);
            while let Some((lane, job)) = queue.next() {
                let since = (started.elapsed().as_millis() as u64).max(1);
                slot.busy_since_ms.store(since, Ordering::Release);
                job();
                slot.busy_since_ms.store(0, Ordering::Release);
                queue.finished(lane);
                // Asked of the thread itself, not of the flag: the supervisor may have
                // demoted it just as one job ended and the next began.
                if is_demoted() {
                    let _ = retired.send(index);
                    return;
                }
            }
        })
        .map(drop)
}

fn is_demoted() -> bool {
    // SAFETY: sched_getscheduler(0) only reads the calling thread's class.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

fn demote_if_long(slot: &WorkerSlot, now_ms: u64) {
    let since = slot.busy_since_ms.load(Ordering::Acquire);
    if since == 0
        || now_ms.saturating_sub(since) < DEMOTE_AFTER.as_millis() as u64
        || slot.demoted.load(Ordering::Acquire)
    {
        return;
    }
    let param = libc::sched_param { sched_priority: 0 };
    let tid = slot.tid.load(Ordering::Acquire);
    // SAFETY: sched_setscheduler reads `param` and changes only the scheduling class of
    // thread `tid`, one of this process's workers.
    let changed = unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } == 0;
    if changed {
        slot.demoted.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::scheduler::QueueLimits;

    /// Runs `job` on the pool and returns what it reports.
    fn run<T: Send + 'static>(queue: &FairQueue, job: impl FnOnce() -> T + Send + 'static) -> T {
        let (answer, answered) = mpsc::channel();
        queue
            .push(0, Box::new(move || answer.send(job()).unwrap()))
            .unwrap();
        answered.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    fn scheduling_class() -> i32 {
        // SAFETY: sched_getscheduler(0) only reads the calling thread's class.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_long_evaluation_yields_its_cpu_and_the_next_one_gets_a_fresh_worker() {
        let queue = Arc::new(FairQueue::new(QueueLimits {
            lanes: 1,
            capacity: 4,
            lane_capacity: 4,
            lane_workers: 1,
        }));
        start(queue.clone(), 1);
        let (class_at_start, class_at_end, long_tid) = run(&queue, || {
            let at_start = scheduling_class();
            let until = Instant::now() + DEMOTE_AFTER * 5;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            // SAFETY: gettid has no preconditions.
            (at_start, scheduling_class(), unsafe { libc::gettid() })
        });
        assert_eq!(class_at_start, libc::SCHED_OTHER);
        assert_eq!(class_at_end, libc::SCHED_IDLE);
        // SAFETY: as above.
        let (class, tid) = run(&queue, || (scheduling_class(), unsafe { libc::gettid() }));
        assert_eq!(class, libc::SCHED_OTHER, "the next evaluation ran demoted");
        assert_ne!(tid, long_tid);
        queue.close();
    }
}
