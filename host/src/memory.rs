//! Handing memory freed by a burst of short-lived allocations back to the OS: parsing a
//! whole List allocates several times its size, compiling policies far more, and glibc
//! keeps what they freed in its per-thread arenas, where it would count against the
//! server for good.

/// Returns the allocator's free pages to the OS (a pass over its heaps: call it after a
/// burst, not per request).
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}
