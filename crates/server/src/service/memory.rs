//! Giving the memory a large request freed back to the system before it waits.
//!
//! The binary's allocator is mimalloc (`main.rs`). It hands freed pages back to the system only
//! a second after they were freed, and then only when it next allocates or frees in the same
//! part of its arena. A request of tens of MiB frees two copies of its bytes (the body as read,
//! then the parsed request once it is serialised for Gemini) and then waits on the upstream,
//! seconds for a long prompt, during which the gateway may allocate nothing more: without a
//! word from us, mimalloc would keep both freed copies resident all that time and after, so the
//! process held about twice the bodies it sends (bench S12: 1.5–1.6× at 4 × 32 MiB, 0.98–1.01×
//! with this). Setting mimalloc's purge delay to zero for the whole process does the same but turns
//! page reuse on the hot path into `madvise` calls (40 times as many under load), so only
//! requests this large ask for it.

/// The body size from which a request gives back freed memory before it waits (see the module).
pub const GIVE_BACK_FROM: usize = 1 << 20;

/// Has mimalloc return every freed page now. It works on this thread's heap (the pages a
/// request's task allocated on this worker; called from another thread, it does not see them), so
/// it runs in the request's own task, as part of the request's own work. Measured outside the
/// gateway: a few µs to 0.4 ms when little was freed, and about 70 µs per MiB given back (the
/// system's work of taking the pages), so 2 ms for 32 MiB, against the tens of milliseconds
/// such a body takes to read, parse and translate.
#[allow(unsafe_code)]
pub fn give_back_freed() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time; in
    // a process whose global allocator is not mimalloc (the test binaries) it has nothing to do.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
