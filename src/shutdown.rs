//! The process-wide request to stop, set by `dualwrite run` on SIGTERM/Ctrl-C and read by
//! the loops that move data, each at a point where stopping is clean: a live drain or an
//! initial copy between two batches (the last one committed and its progress saved), a pass
//! before its next map. Never cleared: a process that was asked to stop stays stopping.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every pass in flight to end at its next clean point.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
