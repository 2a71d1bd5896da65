//! Fair queuing of evaluations across policies.
//!
//! Every policy has a lane: a queue of its own and a cap on the workers it may hold at
//! once. Workers take lanes in turn (round robin), so a policy with a long queue gets no
//! more turns than one with a single request waiting, and a policy whose evaluations run
//! to their timeout can hold at most its cap of workers: the others keep serving the rest.
//! Waiting slots are bounded in total and per lane, so one policy's backlog cannot fill
//! the queue for everyone.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::metrics::metrics;

/// What a worker runs.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Sizes of the queue, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// One lane per policy.
    pub lanes: usize,
    /// Evaluations that may wait, across all lanes.
    pub capacity: usize,
    /// Evaluations that may wait in one lane.
    pub lane_capacity: usize,
    /// Workers one lane may hold at once.
    pub lane_workers: usize,
}

/// Why an evaluation was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueFull {
    #[error("{0} evaluations are already waiting for a worker")]
    Total(usize),
    #[error("{0} evaluations of this policy are already waiting for a worker")]
    Lane(usize),
}

pub(crate) struct FairQueue {
    limits: QueueLimits,
    state: Mutex<State>,
    work: Condvar,
}

/// Names a queued job, so its caller can withdraw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

#[derive(Default)]
struct State {
    lanes: Vec<Lane>,
    next_ticket: u64,
    /// Lanes with work waiting and a worker to spare, in the order they get their turn.
    turns: VecDeque<usize>,
    waiting: usize,
    closed: bool,
}

#[derive(Default)]
struct Lane {
    /// Waiting jobs with their tickets, oldest first.
    jobs: VecDeque<(Ticket, Job)>,
    running: usize,
    /// Whether the lane is in `turns`.
    has_turn: bool,
}

impl FairQueue {
    pub(crate) fn new(limits: QueueLimits) -> Self {
        assert!(limits.lane_workers > 0 && limits.lane_capacity > 0);
        let state = State {
            lanes: (0..limits.lanes).map(|_| Lane::default()).collect(),
            ..State::default()
        };
        Self {
            limits,
            state: Mutex::new(state),
            work: Condvar::new(),
        }
    }

    /// Queues `job` in `lane`, or says which bound it would exceed.
    pub(crate) fn push(&self, lane: usize, job: Job) -> Result<Ticket, QueueFull> {
        let mut state = self.lock();
        if state.waiting >= self.limits.capacity {
            return Err(QueueFull::Total(state.waiting));
        }
        let queued = state.lanes[lane].jobs.len();
        if queued >= self.limits.lane_capacity {
            return Err(QueueFull::Lane(queued));
        }
        let ticket = Ticket(state.next_ticket);
        state.next_ticket += 1;
        state.lanes[lane].jobs.push_back((ticket, job));
        state.waiting += 1;
        metrics().queue_depth_changed(1);
        self.give_turn(&mut state, lane);
        // Every job may be one an idle worker can take now, even in a lane already in line.
        if !state.turns.is_empty() {
            self.work.notify_one();
        }
        Ok(ticket)
    }

    /// Takes back a job that no worker has taken yet (its caller stopped waiting), so it
    /// neither holds a slot nor what it captured. False if it was taken or is unknown.
    pub(crate) fn withdraw(&self, lane: usize, ticket: Ticket) -> bool {
        let mut state = self.lock();
        let jobs = &mut state.lanes[lane].jobs;
        let Some(position) = jobs.iter().position(|(queued, _)| *queued == ticket) else {
            return false;
        };
        let withdrawn = jobs.remove(position);
        state.waiting -= 1;
        metrics().queue_depth_changed(-1);
        if state.lanes[lane].jobs.is_empty() && state.lanes[lane].has_turn {
            state.lanes[lane].has_turn = false;
            state.turns.retain(|&queued| queued != lane);
        }
        drop(state);
        // Dropped outside the lock: it may free a large request.
        drop(withdrawn);
        true
    }

    /// The next job, in turn across lanes; blocks while there is none. `None` once the
    /// queue is closed. The caller reports [`FairQueue::finished`] when the job is done.
    pub(crate) fn next(&self) -> Option<(usize, Job)> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(lane) = state.turns.pop_front() {
                state.lanes[lane].has_turn = false;
                let (_, job) = state.lanes[lane]
                    .jobs
                    .pop_front()
                    .expect("a lane with a turn has work");
                state.waiting -= 1;
                metrics().queue_depth_changed(-1);
                state.lanes[lane].running += 1;
                // Back of the line: the other lanes go first.
                self.give_turn(&mut state, lane);
                // More work for another idle worker: pass the wake-up on.
                if !state.turns.is_empty() {
                    self.work.notify_one();
                }
                return Some((lane, job));
            }
            state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A job of `lane` taken with [`FairQueue::next`] has finished: its worker is free.
    pub(crate) fn finished(&self, lane: usize) {
        let mut state = self.lock();
        state.lanes[lane].running -= 1;
        if self.give_turn(&mut state, lane) {
            self.work.notify_one();
        }
    }

    /// Wakes every worker and makes [`FairQueue::next`] return `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Evaluations waiting for a worker.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// Puts `lane` in line if it has work and may take another worker. True if it was not
    /// in line before.
    fn give_turn(&self, state: &mut State, lane: usize) -> bool {
        let entry = &mut state.lanes[lane];
        let eligible = !entry.jobs.is_empty() && entry.running < self.limits.lane_workers;
        if !eligible || entry.has_turn {
            return false;
        }
        entry.has_turn = true;
        state.turns.push_back(lane);
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock, so a poisoned lock only means a panic in this
        // module's own bookkeeping, which leaves the state consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FairQueue {
    fn drop(&mut self) {
        // Jobs never taken go with the queue (their callers have gone too).
        metrics().queue_depth_changed(-(self.lock().waiting as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limits(lanes: usize, lane_workers: usize) -> QueueLimits {
        QueueLimits {
            lanes,
            capacity: 8,
            lane_capacity: 4,
            lane_workers,
        }
    }

    fn noop() -> Job {
        Box::new(|| {})
    }

    /// Threads that run the queue's jobs as the evaluator's workers do.
    fn spawn_workers(queue: &Arc<FairQueue>, count: usize) -> Vec<std::thread::JoinHandle<()>> {
        (0..count)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    while let Some((lane, job)) = queue.next() {
                        job();
                        queue.finished(lane);
                    }
                })
            })
            .collect()
    }

    /// Takes `count` jobs without finishing them and says which lanes they came from.
    fn take(queue: &FairQueue, count: usize) -> Vec<usize> {
        (0..count).map(|_| queue.next().unwrap().0).collect()
    }

    #[test]
    fn lanes_take_turns_whatever_their_backlog() {
        let queue = FairQueue::new(limits(3, 8));
        for _ in 0..4 {
            queue.push(0, noop()).unwrap();
        }
        queue.push(1, noop()).unwrap();
        queue.push(2, noop()).unwrap();
        assert_eq!(take(&queue, 6), [0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn a_lane_holds_no_more_workers_than_its_cap() {
        let queue = FairQueue::new(limits(2, 1));
        queue.push(0, noop()).unwrap();
        queue.push(0, noop()).unwrap();
        queue.push(1, noop()).unwrap();
        // Lane 0's second job waits for its first to finish, though lane 1 goes by.
        assert_eq!(take(&queue, 2), [0, 1]);
        assert_eq!(queue.waiting(), 1);
        queue.finished(0);
        assert_eq!(take(&queue, 1), [0]);
    }

    #[test]
    fn a_finished_job_lets_its_lane_back_in_line() {
        let queue = FairQueue::new(limits(2, 1));
        queue.push(0, noop()).unwrap();
        assert_eq!(take(&queue, 1), [0]);
        queue.push(0, noop()).unwrap();
        queue.push(1, noop()).unwrap();
        queue.finished(0);
        // Lane 1 was in line first.
        assert_eq!(take(&queue, 2), [1, 0]);
    }

    #[test]
    fn one_lane_cannot_take_every_waiting_slot() {
        let queue = FairQueue::new(limits(3, 1));
        for _ in 0..4 {
            queue.push(0, noop()).unwrap();
        }
        assert_eq!(queue.push(0, noop()), Err(QueueFull::Lane(4)));
        for _ in 0..4 {
            queue.push(1, noop()).unwrap();
        }
        assert_eq!(queue.push(2, noop()), Err(QueueFull::Total(8)));
    }

    #[test]
    fn a_withdrawn_job_frees_its_slot_and_its_lanes_turn() {
        let queue = FairQueue::new(limits(2, 1));
        let ticket = queue.push(0, noop()).unwrap();
        queue.push(1, noop()).unwrap();
        assert!(queue.withdraw(0, ticket));
        assert!(!queue.withdraw(0, ticket), "withdrawn twice");
        assert_eq!(queue.waiting(), 1);
        assert_eq!(take(&queue, 1), [1]);
        // A taken job cannot be withdrawn.
        let ticket = queue.push(0, noop()).unwrap();
        assert_eq!(take(&queue, 1), [0]);
        assert!(!queue.withdraw(0, ticket));
    }

    #[test]
    fn a_burst_for_one_lane_runs_on_every_worker_it_may_hold() {
        let queue = Arc::new(FairQueue::new(limits(1, 4)));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let workers = spawn_workers(&queue, 4);
        // Let the workers go to sleep before the burst arrives.
        std::thread::sleep(std::time::Duration::from_millis(50));
        for _ in 0..4 {
            let (running, released) = (running.clone(), released.clone());
            queue
                .push(
                    0,
                    Box::new(move || {
                        running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = released.lock().unwrap().recv();
                    }),
                )
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while running.load(std::sync::atomic::Ordering::SeqCst) < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of 4 jobs ran at once",
                running.load(std::sync::atomic::Ordering::SeqCst)
            );
            std::thread::yield_now();
        }
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        queue.close();
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn workers_block_until_work_arrives_and_stop_when_closed() {
        let queue = Arc::new(FairQueue::new(limits(1, 2)));
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let workers = spawn_workers(&queue, 2);
        for _ in 0..3 {
            let ran = ran.clone();
            queue
                .push(
                    0,
                    Box::new(move || {
                        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }),
                )
                .unwrap();
        }
        while ran.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        queue.close();
        for worker in workers {
            worker.join().unwrap();
        }
    }
}
