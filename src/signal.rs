//! Termination signals for commands that must clean up after themselves. By default a
//! signal ends pg_backrest at once, which is right for most commands: every write is atomic,
//! so nothing is left half-written. drill instead owns a running PostgreSQL and a restored
//! copy that must not outlive it, so it asks for [`catch`]: SIGINT, SIGTERM and SIGHUP then
//! only raise a flag, and the long loops (the restore's files, the waits) call [`check`] and
//! return a [`Kind::Terminated`] error, whose unwinding stops and removes the copy. A second
//! signal of the same kind ends the process at once, for when cleaning up itself hangs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Kind, Result};

static CAUGHT: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

const SIGNALS: [(i32, &str); 3] = [
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGTERM, "SIGTERM"),
    (signal_hook::consts::SIGHUP, "SIGHUP"),
];

/// From now on, the signals above set a flag instead of ending the process.
pub fn catch() -> Result<()> {
    let flag = CAUGHT.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for (signal, name) in SIGNALS {
        // Registered first, so a second signal (flag already set) exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(flag)))
            .map_err(|e| Error::internal(format!("unable to catch {name}: {e}")))?;
    }
    Ok(())
}

/// An error once a caught signal has arrived; always Ok when [`catch`] was not called.
pub fn check() -> Result<()> {
    match CAUGHT.get() {
        Some(flag) if flag.load(Ordering::Relaxed) => Err(Error::new(
            Kind::Terminated,
            "terminated by a signal (SIGINT, SIGTERM or SIGHUP)",
        )
        .with_hint("the command cleaned up after itself; run it again when wanted")),
        _ => Ok(()),
    }
}
