//! Owns how long one run of the product may take (G8: no hook stage runs unbounded).
//!
//! Every hook stage, gc and the wrapper's spec edit run against one process-wide deadline,
//! `hook_timeout_secs` from the start. Lock waits give up at it ([`remaining`]), walks over
//! container-controlled trees stop at it ([`expired`]), and a guard thread ends the process at
//! it with the SPEC's one-line error whatever the main thread is blocked in ([`arm`]): the
//! ledger is written intent-first, so what the run left half done is gc's to finish (G6). The
//! injected OCI hooks carry the same bound as their `timeout` (plus a margin), so the runtime
//! kills a hook that even the guard could not end.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static DEADLINE: OnceLock<Instant> = OnceLock::new();
/// What the run is about, once known (`container <id>`), for the guard's message.
static SUBJECT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Names what this run is about in the guard's message (`of container <id>`).
pub fn about(subject: String) {
    if let Ok(mut s) = SUBJECT.lock() {
        *s = subject;
    }
}

/// The default bound, seconds (`hook_timeout_secs`).
pub const DEFAULT_SECS: u64 = 10;

/// Seconds added to the bound for the OCI `timeout` of the hooks the product injects or
/// configures: our guard answers first with its message; the runtime's kill is the backstop.
pub const OCI_MARGIN_SECS: u64 = 2;

/// The OCI hook `timeout` (seconds) for a bound of `secs`.
pub fn oci_timeout(secs: u64) -> u64 {
    secs.saturating_add(OCI_MARGIN_SECS)
}

/// Starts the clock for this process (the first call wins) without a guard thread.
pub fn start(bound: Duration) -> Instant {
    *DEADLINE.get_or_init(|| Instant::now() + bound)
}

/// Starts the clock and a guard thread that ends the process at the deadline: it prints
/// `dataplane-hook: <what> did not finish within <n>s: ... ` on stderr (and to the log) and exits
/// with status 1. `what` names the stage and, when known, the container.
pub fn arm(bound: Duration, what: String) {
    let at = start(bound);
    let secs = bound.as_secs();
    let spawned = std::thread::Builder::new().name("deadline".into()).spawn(move || {
        loop {
            let now = Instant::now();
            if now >= at {
                break;
            }
            std::thread::sleep(at - now);
        }
        let subject = SUBJECT.lock().map(|s| s.clone()).unwrap_or_default();
        let what = if subject.is_empty() { what } else { format!("{what} of {subject}") };
        let msg = format!(
            "{what} did not finish within {secs}s: something it waits on is stuck (see the log; gc releases what it left; raise hook_timeout_secs only if the node is merely slow)"
        );
        tracing::error!("{msg}");
        eprintln!("dataplane-hook: {msg}");
        // SAFETY: _exit ends the process without running destructors or atexit handlers, which
        // may be what is stuck; the kernel releases our locks and fds.
        unsafe { libc::_exit(1) }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the deadline guard: {e}");
    }
}

/// Time left before the deadline (a long time when no clock was started: unit tests, tools).
pub fn remaining() -> Duration {
    match DEADLINE.get() {
        Some(at) => at.saturating_duration_since(Instant::now()),
        None => Duration::from_secs(DEFAULT_SECS),
    }
}

/// Whether the deadline has passed.
pub fn expired() -> bool {
    DEADLINE.get().is_some_and(|at| Instant::now() >= *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oci_timeout_leaves_our_guard_the_first_word() {
        assert_eq!(oci_timeout(10), 12);
        assert_eq!(oci_timeout(u64::MAX), u64::MAX);
    }
}
