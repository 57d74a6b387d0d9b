//! The long-running roles' use of glibc malloc: few arenas, and freed memory given back.

use std::time::Duration;

/// How often freed heap memory is returned to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), each keeping
/// freed memory; an agent with a thread per busy pod worker pays for that in RSS. Two arenas
/// are plenty for a node agent (what `MALLOC_ARENA_MAX=2` does, without needing the variable).
/// An arena limit the operator set (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`) is left as glibc read it.
pub fn limit_malloc_arenas() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        return;
    }
    // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap pages to the kernel every [`TRIM_EVERY`].
///
/// glibc only gives back memory at the top of a heap by itself: after a burst of pod starts
/// (image pulls, JSON, runc output) the freed chunks in the middle stay resident, about half of
/// the agent's heap with 100 pods. `malloc_trim(0)` releases their whole pages (`MADV_DONTNEED`)
/// The pass is logged at `trace` level with its duration.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only returns free memory to the kernel; it takes the arenas'
        // locks itself and is safe to call from any thread at any time.
        let started = std::time::Instant::now();
        let released = unsafe { libc::malloc_trim(0) };
        tracing::trace!(
            released = released == 1,
            took_us = started.elapsed().as_micros() as u64,
            "malloc_trim"
        );
    }
}
