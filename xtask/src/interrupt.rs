//! Ctrl-C and SIGTERM handling for xtask.
//!
//! What: the first SIGINT/SIGTERM/SIGHUP only sets a flag. Why: every wait loop in xtask polls
//! that flag and returns [`Interrupted`], so the error unwinds through the guards that own child
//! processes, and their `Drop` stops the servers and load generators by PID before xtask exits
//! non-zero (130). Children run in their own process groups, so a terminal's Ctrl-C reaches only
//! xtask, which then stops them in order. A second signal forces an immediate exit (130). Try it: `cargo xtask bench`, press Ctrl-C, then
//! `pgrep echo-server` finds nothing.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The error every wait loop returns once a stop signal arrived.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal; children stopped")]
pub struct Interrupted;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Registers the signal handlers (idempotent; later calls do nothing new).
pub fn install() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Registered first, so it runs before the flag is set: the first signal finds the flag
        // clear and only sets it; a second one (the flag already set) exits at once with 130,
        // for when stopping the children hangs.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(flag()))?;
        signal_hook::flag::register(signal, Arc::clone(flag()))?;
    }
    let _ = INSTALLED.set(());
    Ok(())
}

/// True once a stop signal arrived.
pub fn is_set() -> bool {
    flag().load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a stop signal arrived; call it in every wait loop.
pub fn check() -> Result<(), Interrupted> {
    if is_set() { Err(Interrupted) } else { Ok(()) }
}

/// True when `error` (or any error it wraps) is [`Interrupted`].
pub fn caused(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Interrupted>())
}
