//! Termination signals. Every command [`catch`]es SIGINT, SIGTERM and SIGHUP (the
//! dispatcher does it before running one), so that a signal only records which one arrived;
//! the places where commands spend their time (the copy pipeline's chunks, the parallel
//! workers' hand-out, waits for WAL or a lock, the remote server's requests) call [`check`]
//! and return a [`Kind::Term`] error. That error unwinds like any other: unfinished
//! writers drop their temp files, a backup stops PostgreSQL's backup, the failure hook runs,
//! the lock is released, and the one ERROR line names the signal.
//!
//! A second signal (of any of the three) ends the process at once with 128 + its number, for
//! when cleaning up itself hangs; only then can a temp file be left behind, which a resumed
//! backup removes and verify reports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Kind, Result};

/// Set by the first signal; a later one finds it set and exits.
static CAUGHT: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
/// The number of the first signal caught (0: none).
static WHICH: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
/// Whether the handlers are registered: registering twice would make the first signal meet
/// the second registration's exit with the flag already set.
static REGISTERED: Mutex<bool> = Mutex::new(false);

const SIGNALS: [(i32, &str); 3] = [
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGTERM, "SIGTERM"),
    (signal_hook::consts::SIGHUP, "SIGHUP"),
];

/// From now on, the signals above set a flag instead of ending the process. Calling it
/// again does nothing.
pub fn catch() -> Result<()> {
    let mut registered = REGISTERED
        .lock()
        .map_err(|_| Error::internal("signal registration lock poisoned"))?;
    if *registered {
        return Ok(());
    }
    let flag = CAUGHT.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let which = WHICH.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    for (signal, name) in SIGNALS {
        // Actions run in registration order: the exit first, so it only fires when an
        // earlier signal already set the flag; the number before the flag, so that a set
        // flag always comes with its signal's number.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(flag))
            .and_then(|_| {
                signal_hook::flag::register_usize(signal, Arc::clone(which), signal as usize)
            })
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(flag)))
            .map_err(|e| Error::internal(format!("unable to catch {name}: {e}")))?;
    }
    *registered = true;
    Ok(())
}

/// The name of the signal caught, if one was.
pub fn caught() -> Option<&'static str> {
    if !CAUGHT.get()?.load(Ordering::SeqCst) {
        return None;
    }
    Some(
        caught_number()
            .and_then(|n| SIGNALS.iter().find(|(s, _)| *s == n))
            .map_or("a termination signal", |(_, name)| name),
    )
}

/// The number of the signal caught, if one was.
pub fn caught_number() -> Option<i32> {
    if !CAUGHT.get()?.load(Ordering::SeqCst) {
        return None;
    }
    WHICH
        .get()
        .map(|w| w.load(Ordering::SeqCst) as i32)
        .filter(|n| *n > 0)
}

/// The error a command ends with once a signal was caught.
pub fn terminated(name: &str) -> Error {
    Error::new(Kind::Term, format!("terminated by signal {name}")).with_hint(
        "the command stopped and removed what it had not finished; run it again when wanted \
         (a backup resumes where it stopped)",
    )
}

/// An error once a caught signal has arrived; always Ok when [`catch`] was not called.
pub fn check() -> Result<()> {
    match caught() {
        Some(name) => Err(terminated(name)),
        None => Ok(()),
    }
}
