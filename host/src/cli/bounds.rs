//! The bounds the serve flags set (workers, queue, connections, bodies, timeouts,
//! shutdown), checked before anything starts.

use std::time::Duration;

use super::serve::ServeArgs;
use crate::policy::{DEFAULT_QUEUED_PER_WORKER, WorkerLimits};
use crate::webhook::{ServerLimits, ShutdownTiming};

/// Workers, the queue in front of them and one policy's share, as the flags ask.
pub(super) fn worker_limits(args: &ServeArgs) -> anyhow::Result<WorkerLimits> {
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2)
    });
    anyhow::ensure!(workers > 0, "--workers must be at least 1");
    let queued = args
        .max_queued_evaluations
        .unwrap_or(workers * DEFAULT_QUEUED_PER_WORKER);
    anyhow::ensure!(
        (1..=MAX_QUEUED_EVALUATIONS).contains(&queued),
        "--max-queued-evaluations must be between 1 and {MAX_QUEUED_EVALUATIONS}"
    );
    let workers_per_policy = args
        .max_workers_per_policy
        .unwrap_or_else(|| WorkerLimits::default_workers_per_policy(workers));
    anyhow::ensure!(
        (1..=workers).contains(&workers_per_policy),
        "--max-workers-per-policy must be between 1 and the number of workers ({workers})"
    );
    Ok(WorkerLimits {
        workers,
        queued,
        workers_per_policy,
    })
}

/// The most evaluations that may wait for a worker: the queue's slots are allocated up
/// front, and beyond this the wait itself would outlast any webhook timeout.
const MAX_QUEUED_EVALUATIONS: usize = 1 << 16;

/// The connection, body and shutdown bounds the flags ask for, checked.
pub(super) fn server_limits(args: &ServeArgs) -> anyhow::Result<(ServerLimits, ShutdownTiming)> {
    let seconds = Duration::from_secs;
    let limits = ServerLimits {
        max_connections: args.max_connections,
        header_timeout: seconds(args.header_timeout_seconds),
        body_timeout: seconds(args.body_timeout_seconds),
        idle_timeout: seconds(args.idle_timeout_seconds),
        max_body_bytes: args.max_request_body_bytes,
        body_bytes_in_flight: args.max_body_bytes_in_flight,
        ..ServerLimits::default()
    };
    for (flag, value) in [
        ("--header-timeout-seconds", args.header_timeout_seconds),
        ("--body-timeout-seconds", args.body_timeout_seconds),
        ("--idle-timeout-seconds", args.idle_timeout_seconds),
        ("--shutdown-grace-seconds", args.shutdown_grace_seconds),
    ] {
        anyhow::ensure!(
            (1..=MAX_TIMEOUT_SECONDS).contains(&value),
            "{flag} must be between 1 and {MAX_TIMEOUT_SECONDS}"
        );
    }
    anyhow::ensure!(
        args.shutdown_drain_seconds <= MAX_TIMEOUT_SECONDS,
        "--shutdown-drain-seconds must be at most {MAX_TIMEOUT_SECONDS}"
    );
    anyhow::ensure!(
        limits.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        limits.body_bytes_in_flight >= limits.max_body_bytes,
        "--max-body-bytes-in-flight ({}) must hold at least one body of --max-request-body-bytes ({})",
        limits.body_bytes_in_flight,
        limits.max_body_bytes
    );
    let timing = ShutdownTiming {
        drain_delay: seconds(args.shutdown_drain_seconds),
        grace_period: seconds(args.shutdown_grace_seconds),
    };
    anyhow::ensure!(
        timing.drain_delay < timing.grace_period,
        "--shutdown-drain-seconds must be less than --shutdown-grace-seconds"
    );
    raise_open_file_limit(limits.max_connections);
    Ok((limits, timing))
}

/// Longest any of the connection and shutdown timeouts may be: an hour is already far
/// past anything a webhook needs.
const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// Each connection is a file descriptor: the soft limit is raised to the hard one (as
/// Go and nginx do), and a cap the process cannot honour is reported.
fn raise_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    // Policies, the cache's connections and the listeners need descriptors too.
    let reserved = 64;
    if (max_connections as u64).saturating_add(reserved) > soft {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "--max-connections is above what the open-file limit allows; clients beyond it fail to connect"
        );
    }
}
