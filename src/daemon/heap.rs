//! The daemon's heap policy under glibc: one malloc arena, and free pages given back to
//! the kernel every [`HEAL_INTERVAL`](super::claim::HEAL_INTERVAL).
//!
//! glibc gives a thread that finds the arena busy an arena of its own (up to 8 per core),
//! and every arena keeps the pages its freed chunks leave behind, returning only the top
//! of the heap. With the async workers, the journal and the log worker allocating and
//! freeing each other's buffers, that retained memory was the larger part of the
//! daemon's growth per conversation. Measured with `cargo bench --bench pipeline --
//! --only memory --reps 3` (RSS after 10 000 conversations, median [min-max] MiB, on a
//! shared 2-core machine): neither 28.4 [28.3-29.6]; one arena 21.5-28.8 over three runs;
//! the periodic trim alone 23.4 [21.3-23.8]; both 20.9 [20.9-22.2]. Small allocations are
//! still served by glibc's per-thread caches without the arena lock, and a trim walks
//! only the free chunks. A `MALLOC_ARENA_MAX` set in the environment is left to rule.
//!
//! Why this module keeps `unsafe`: `mallopt` and `malloc_trim` are C functions with no
//! safe wrapper; both only change malloc's own state and are given valid arguments.

/// Limits glibc to one malloc arena (see the module docs); does nothing elsewhere.
/// Call before other threads start.
pub(crate) fn use_one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` takes two integers and changes only malloc's settings;
        // M_ARENA_MAX is a parameter glibc defines and 1 a value it accepts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Returns the heap's free pages to the kernel (glibc); does nothing elsewhere.
pub(crate) fn give_back_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases memory malloc holds free; 0 keeps no pad.
    unsafe {
        libc::malloc_trim(0);
    }
}
