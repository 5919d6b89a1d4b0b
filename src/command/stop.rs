//! stop: the stop file in lock-path (`STANZA.stop`, or `all.stop` without a stanza) that
//! forbids the commands of [`crate::config::Cmd::honours_stop`], named and placed as pgBackRest's so that a
//! `pgbackrest stop` stops pg_backrest and the reverse. Also owns [`check`], which the
//! dispatcher runs once a command holds its lock, and `--force`, which ends the processes
//! holding the stanza's locks.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Config, LockType};
use crate::error::{Error, Kind, Result};
use crate::storage::posix::{check_owner, sync_dir};

/// The stop file of `stanza`, or the one for all stanzas.
pub fn stop_file(lock_path: &Path, stanza: Option<&str>) -> PathBuf {
    lock_path.join(format!("{}.stop", stanza.unwrap_or("all")))
}

/// Refuses a command that a stop file forbids (pgBackRest's StopError, exit 62).
pub fn check(cfg: &Config) -> Result<()> {
    if !cfg.command.honours_stop() {
        return Ok(());
    }
    let lock_path = cfg.required_path("lock-path")?;
    // The binary as the user called it: under the name pgbackrest the hint says pgbackrest.
    let program = cfg.identity.program();
    let start_hint = |stanza: Option<&str>| {
        format!(
            "run '{program} start{}' when it may run again",
            stanza.map_or(String::new(), |s| format!(" --stanza={s}"))
        )
    };
    if let Some(stanza) = cfg.stanza() {
        if stop_file(&lock_path, Some(stanza)).exists() {
            return Err(
                Error::new(Kind::Stop, format!("stop file exists for stanza {stanza}"))
                    .with_hint(start_hint(Some(stanza))),
            );
        }
    }
    if stop_file(&lock_path, None).exists() {
        return Err(
            Error::new(Kind::Stop, "stop file exists for all stanzas").with_hint(start_hint(None))
        );
    }
    Ok(())
}

pub fn run(cfg: &Config) -> Result<()> {
    let lock_path = cfg.required_path("lock-path")?;
    let stanza = cfg.stanza();
    let file = stop_file(&lock_path, stanza);
    if file.exists() {
        crate::warn!(
            "stop file already exists for {}",
            stanza.map_or("all stanzas".to_string(), |s| format!("stanza {s}"))
        );
        return Ok(());
    }
    check_owner(&lock_path, "lock path")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o770)
        .create(&lock_path)
        .map_err(|e| Error::io("create lock path", &lock_path, e))?;
    // Empty, so there is nothing to write half: fsync the new name into lock-path.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .open(&file)
        .map_err(|e| Error::io("create stop file", &file, e))?;
    sync_dir(&lock_path)?;
    crate::info!("created stop file '{}'", file.display());
    // The file exists before the locks are read: a command that takes its lock after this
    // point sees the file and refuses; one that took it before is found here.
    if cfg.bool("force") {
        terminate_holders(&lock_path, stanza)?;
    }
    Ok(())
}

/// Sends SIGTERM to every process that holds a lock of `stanza` (every stanza's with
/// `None`), by the pid its lock record names, as pgBackRest's `stop --force` does.
fn terminate_holders(lock_path: &Path, stanza: Option<&str>) -> Result<()> {
    let mut files: Vec<PathBuf> = match stanza {
        Some(s) => [LockType::Archive, LockType::Backup]
            .iter()
            .filter_map(|t| crate::lock::lock_file_path(lock_path, s, *t))
            .collect(),
        None => std::fs::read_dir(lock_path)
            .map_err(|e| Error::io("list lock path", lock_path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "lock"))
            .collect(),
    };
    files.sort();
    for path in files {
        let Ok(mut f) = File::open(&path) else {
            continue;
        };
        // A lock file no one holds is what a finished command leaves: nothing runs.
        if f.try_lock().is_ok() {
            continue;
        }
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut f, &mut text);
        let Some(pid) = crate::lock::recorded_pid(&text) else {
            crate::warn!("unable to read lock file {}", path.display());
            continue;
        };
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        ) {
            Ok(()) => crate::info!("sent term signal to process {pid}"),
            Err(e) => crate::warn!("unable to send term signal to process {pid}: {e}"),
        }
    }
    Ok(())
}
