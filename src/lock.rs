//! Per-stanza lock files in lock-path, taken with `flock` so that a killed holder never
//! leaves a lock behind: the kernel releases it with the holder's last file descriptor, and
//! the file itself is simply reused by the next process.
//!
//! The holder writes its pid, command and start time into the file so that the lock-held
//! error can name who holds it. Which lock a command takes is declared in the command table
//! and acquired by the dispatcher, never by hand inside a command.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::LockType;
use crate::error::{Error, Kind, Result};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

pub fn lock_file_path(lock_path: &Path, stanza: &str, lock: LockType) -> Option<PathBuf> {
    let suffix = match lock {
        LockType::None => return None,
        LockType::Archive => "archive",
        LockType::Backup => "backup",
    };
    Some(lock_path.join(format!("{stanza}-{suffix}.lock")))
}

/// Takes the lock, waiting up to `timeout` (zero: fail at once) while another process holds it.
pub fn acquire(
    lock_path: &Path,
    stanza: &str,
    lock: LockType,
    command: &str,
    timeout: Duration,
) -> Result<Option<Lock>> {
    let Some(path) = lock_file_path(lock_path, stanza, lock) else {
        return Ok(None);
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o770)
        .create(lock_path)
        .map_err(|e| Error::io("create lock path", lock_path, e))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o660)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;

    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(held_error(&mut file, &path, timeout));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock", &path, e));
            }
        }
    }

    let record = format!(
        "pid={}\ncommand={command}\nstart={}\n",
        std::process::id(),
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
    );
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(record.as_bytes()))
        .map_err(|e| Error::io("write lock file", &path, e))?;
    Ok(Some(Lock { _file: file, path }))
}

fn held_error(file: &mut File, path: &Path, waited: Duration) -> Error {
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text));
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| "unknown".into())
    };
    let waited = if waited.is_zero() {
        String::new()
    } else {
        format!(" after waiting {}s", waited.as_secs())
    };
    Error::new(
        Kind::LockHeld,
        format!(
            "unable to acquire lock '{}'{waited}: held by pid {} ({}, started {})",
            path.display(),
            field("pid"),
            field("command"),
            field("start")
        ),
    )
    .with_hint("wait for that command to finish, or set lock-timeout to wait for it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_identity_and_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(
            dir.path(),
            "main",
            LockType::Backup,
            "backup",
            Duration::ZERO,
        )
        .unwrap()
        .unwrap();
        let e = acquire(
            dir.path(),
            "main",
            LockType::Backup,
            "expire",
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::LockHeld);
        assert!(e.message.contains(&format!(
            "held by pid {} (backup, started ",
            std::process::id()
        )));
        // Archiving has its own lock.
        assert!(acquire(
            dir.path(),
            "main",
            LockType::Archive,
            "archive-push",
            Duration::ZERO
        )
        .is_ok());
        drop(first);
        assert!(acquire(
            dir.path(),
            "main",
            LockType::Backup,
            "expire",
            Duration::ZERO
        )
        .is_ok());
    }

    #[test]
    fn waits_up_to_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "s", LockType::Backup, "backup", Duration::ZERO).unwrap();
        let path = dir.path().to_path_buf();
        let t = std::thread::spawn(move || {
            acquire(
                &path,
                "s",
                LockType::Backup,
                "expire",
                Duration::from_secs(10),
            )
            .map(|l| l.is_some())
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        assert_eq!(t.join().unwrap(), Ok(true));
    }
}
