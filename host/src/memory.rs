//! Handing memory freed by a burst of short-lived allocations back to the OS: parsing a
//! whole List allocates several times its size, compiling policies far more, and glibc
//! keeps what they freed in its per-thread arenas, where it would count against the
//! server for good.

/// Arenas glibc may make (it would make up to 8 per core, one per thread that contends).
/// Each arena is a heap of its own that `malloc_trim` can only shrink around what still
/// lives in it: with compile threads, tokio's and the workers' each in its own, the
/// examples' server (9 modules) held 93-106 MiB after start, 133 MiB with one 1 MB SDK
/// policy. With one arena: 40 MiB, +1 MiB after 250,000 requests, and the same
/// throughput within the noise of runs (24,700-28,200 req/s against 26,400-27,200;
/// per-thread caches serve most allocations without the arena's lock). Capped at 2 by
/// `mallopt`, the server held 71-73 MiB. The price is paid in compiles, whose threads
/// share the one lock: a 17.6 MiB component took 8.8 s with Cranelift against 7.4 s with
/// 8 arenas (`MALLOC_ARENA_MAX=8`, for a faster Cranelift-only start).
const MAX_ARENAS: i32 = 1;

/// Caps glibc's arenas at [`MAX_ARENAS`], unless `MALLOC_ARENA_MAX` (or the
/// `glibc.malloc.arena_max` tunable) says otherwise. Call
/// it first in `main`, before any thread starts.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tunables.contains("arena_max") {
            // SAFETY: mallopt only changes the allocator's tuning; no thread allocates yet.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
            }
        }
    }
}

/// Returns the allocator's free pages to the OS (a pass over its heaps: call it after a
/// burst, not per request).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}
