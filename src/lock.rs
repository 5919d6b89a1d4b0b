//! Per-stanza lock files in lock-path, taken with `flock` so that a killed holder never
//! leaves a lock behind: the kernel releases it with the holder's last file descriptor, and
//! the file itself is simply reused by the next process.
//!
//! The files are pgBackRest's (`STANZA-archive.lock`, `STANZA-backup.lock`, both for the
//! commands that rewrite both info files), so the two tools lock each other out. The holder
//! writes its record as pgBackRest's JSON with sorted keys: `execId` and `pid`, which
//! pgBackRest reads (its `stop --force` signals that pid), and our `command` and `start`,
//! which it skips; so that the lock-held error can name who holds it. pgBackRest removes its
//! lock file when it releases it, so a lock taken on a file that is no longer the one at
//! the path is retaken on the new file. Which lock a command takes is declared in the
//! command table and acquired by the dispatcher, never by hand inside a command.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::LockType;
use crate::error::{Error, Kind, Result};
use crate::storage::posix::check_owner;

/// A held lock (one file, or two for [`LockType::All`]); released when dropped (or when the
/// process dies).
#[derive(Debug)]
pub struct Lock {
    _files: Vec<File>,
    pub path: PathBuf,
}

/// The lock files of a lock type, in the order they are taken (pgBackRest's: archive first).
pub fn lock_file_paths(lock_path: &Path, stanza: &str, lock: LockType) -> Vec<PathBuf> {
    let one = |suffix: &str| lock_path.join(format!("{stanza}-{suffix}.lock"));
    match lock {
        LockType::None => vec![],
        LockType::Archive => vec![one("archive")],
        LockType::Backup => vec![one("backup")],
        LockType::All => vec![one("archive"), one("backup")],
    }
}

pub fn lock_file_path(lock_path: &Path, stanza: &str, lock: LockType) -> Option<PathBuf> {
    match lock {
        LockType::None | LockType::All => None,
        _ => lock_file_paths(lock_path, stanza, lock).pop(),
    }
}

/// Takes the lock, waiting up to `timeout` (zero: fail at once) while another process holds it.
pub fn acquire(
    lock_path: &Path,
    stanza: &str,
    lock: LockType,
    command: &str,
    timeout: Duration,
) -> Result<Option<Lock>> {
    let paths = lock_file_paths(lock_path, stanza, lock);
    let Some(last) = paths.last().cloned() else {
        return Ok(None);
    };
    check_owner(lock_path, "lock path")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o770)
        .create(lock_path)
        .map_err(|e| Error::io("create lock path", lock_path, e))?;
    let deadline = Instant::now() + timeout;
    let exec_id = exec_id();
    let mut files = Vec::new();
    for path in &paths {
        files.push(acquire_file(path, command, &exec_id, deadline, timeout)?);
    }
    Ok(Some(Lock {
        _files: files,
        path: last,
    }))
}

/// pgBackRest's exec id, `PID-RANDOM`: a process that finds a lock held under its own exec
/// id takes it as its own, so ours must never equal one of pgBackRest's.
fn exec_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-pgbr{nanos:08x}", std::process::id())
}

fn acquire_file(
    path: &Path,
    command: &str,
    exec_id: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<File> {
    check_owner(path, "lock file")?;
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o660)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    crate::signal::check()?;
                    if Instant::now() >= deadline {
                        return Err(held_error(&mut file, path, timeout));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io("lock", path, e));
                }
            }
        }
        // A holder that removed the file as it released it (pgBackRest does) leaves this
        // process locking a name no one else opens: take the file now at the path instead.
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            _ => false,
        };
        if !same {
            continue;
        }
        let record = serde_json::json!({
            "command": command,
            "execId": exec_id,
            "pid": std::process::id(),
            "start": chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        });
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(record.to_string().as_bytes()))
            .map_err(|e| Error::io("write lock file", path, e))?;
        return Ok(file);
    }
}

/// Who holds a lock, as its holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    pub start: String,
}

/// The live holder of a stanza's lock, for `info`. Read from the holder's record and checked
/// against `/proc` (the pid is alive and runs that command) rather than by probing the lock
/// with `flock`: a probe would hold the lock for an instant and could make a backup starting
/// at that very moment fail with lock-held. A record left by a finished or killed holder
/// names a dead pid and reads as "not running".
pub fn holder(lock_path: &Path, stanza: &str, lock: LockType) -> Option<Holder> {
    let path = lock_file_path(lock_path, stanza, lock)?;
    let text = std::fs::read_to_string(path).ok()?;
    let field = record_field(&text);
    let pid: u32 = field("pid")?.parse().ok()?;
    let command = field("command")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let runs_it = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .any(|arg| arg == command.as_bytes());
    runs_it.then(|| Holder {
        pid,
        command,
        start: field("start").unwrap_or_default(),
    })
}

/// Whether any process holds the `flock` on a stanza's lock file (ours or pgBackRest's, which
/// use the same file name and the same kind of lock), the question pgBackRest's `info` answers
/// for `status.lock.backup.held`. Answered from the kernel's table of held locks
/// (`/proc/locks`) rather than by trying the lock, so that `info` never holds it, even for an
/// instant in which a starting backup would fail with lock-held.
pub fn is_held(lock_path: &Path, stanza: &str, lock: LockType) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = lock_file_path(lock_path, stanza, lock) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let file = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    table
        .lines()
        // `->` lines are processes waiting for the lock, not holding it.
        .filter(|l| !l.contains("->"))
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&"FLOCK") && fields.contains(&file.as_str())
        })
}

/// Reads a field of a lock record: pgBackRest's JSON (ours carries `command` and `start`
/// too), or the `key=value` lines earlier versions wrote.
fn record_field(text: &str) -> impl Fn(&str) -> Option<String> + '_ {
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    move |k: &str| match &json {
        Some(v) => v.get(k).and_then(|f| match f {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }),
        None => text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string)),
    }
}

/// The pid recorded in a lock file, for `stop --force`.
pub fn recorded_pid(text: &str) -> Option<i32> {
    record_field(text)("pid")?.parse().ok().filter(|p| *p > 0)
}

fn held_error(file: &mut File, path: &Path, waited: Duration) -> Error {
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text));
    let waited = if waited.is_zero() {
        String::new()
    } else {
        format!(" after waiting {}", crate::config::fmt_seconds(waited))
    };
    Error::new(
        Kind::LockAcquire,
        format!(
            "unable to acquire lock '{}'{waited}: held by {}",
            path.display(),
            describe_holder(&text)
        ),
    )
    .with_hint("wait for that command to finish, or set lock-timeout to wait for it")
}

/// Who holds the lock, from as much of the record as there is: the holder writes it just
/// after taking the lock, so a competitor can find it empty or half-written, and an
/// "unknown" placeholder would read as if the record said so.
fn describe_holder(text: &str) -> String {
    let record = record_field(text);
    let pid = record("pid").filter(|p| p.parse::<u32>().is_ok());
    let command = record("command").filter(|c| !c.is_empty());
    let start = record("start").filter(|s| !s.is_empty());
    match (pid, command, start) {
        (Some(pid), Some(command), Some(start)) => {
            format!("pid {pid} ({command}, started {start})")
        }
        (Some(pid), Some(command), None) => format!("pid {pid} ({command})"),
        (Some(pid), None, _) => format!("another process (pid {pid})"),
        (None, _, _) => "another process".to_string(),
    }
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
        assert_eq!(e.kind, Kind::LockAcquire);
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
    fn holder_is_reported_only_while_its_process_runs_the_recorded_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_file_path(dir.path(), "main", LockType::Backup).unwrap();
        let me = std::process::id();
        // This process's argv does not hold that word: a record naming it is stale.
        std::fs::write(&path, format!("pid={me}\ncommand=no-such-word\nstart=x\n")).unwrap();
        assert_eq!(holder(dir.path(), "main", LockType::Backup), None);
        // (The live case, a running backup, is covered by the integration tests: spawning a
        // child here would share the other test's lock descriptor until it execs.)
        // A dead pid (beyond pid_max) is not running either.
        std::fs::write(&path, "pid=99999999\ncommand=backup\nstart=x\n").unwrap();
        assert_eq!(holder(dir.path(), "main", LockType::Backup), None);
        assert_eq!(holder(dir.path(), "other", LockType::Backup), None);
    }

    #[test]
    fn is_held_follows_the_flock_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_held(dir.path(), "main", LockType::Backup), "no file");
        let first = acquire(
            dir.path(),
            "main",
            LockType::Backup,
            "backup",
            Duration::ZERO,
        )
        .unwrap()
        .unwrap();
        assert!(is_held(dir.path(), "main", LockType::Backup));
        assert!(!is_held(dir.path(), "other", LockType::Backup));
        // Asking did not take it: the holder still has it, and nobody else can get it.
        assert!(is_held(dir.path(), "main", LockType::Backup));
        drop(first);
        assert!(!is_held(dir.path(), "main", LockType::Backup), "released");
    }

    /// Whether some descriptor of this process other than the holder's has `path` open, i.e. a
    /// second acquire has opened the lock file and is polling it.
    fn waiting_on(path: &Path) -> bool {
        let opened = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target == path)
            .count();
        opened >= 2
    }

    #[test]
    fn a_holder_record_that_is_missing_or_half_written_never_reads_unknown() {
        assert_eq!(
            describe_holder("pid=42\ncommand=backup\nstart=2026-11-22 04:05:31\n"),
            "pid 42 (backup, started 2026-11-22 04:05:31)"
        );
        assert_eq!(describe_holder(""), "another process");
        assert_eq!(describe_holder("pi"), "another process");
        assert_eq!(describe_holder("pid=42\n"), "another process (pid 42)");
        assert_eq!(
            describe_holder("pid=42\ncommand=backup\n"),
            "pid 42 (backup)"
        );
        assert_eq!(
            describe_holder("pid=4x\ncommand=backup\n"),
            "another process"
        );

        // Through acquire: a holder that has not written its record yet.
        let dir = tempfile::tempdir().unwrap();
        let path = lock_file_path(dir.path(), "main", LockType::Backup).unwrap();
        let holder = File::create(&path).unwrap();
        holder.lock().unwrap();
        let e = acquire(
            dir.path(),
            "main",
            LockType::Backup,
            "expire",
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::LockAcquire);
        assert!(e.message.ends_with(": held by another process"), "{e:?}");
        assert!(!e.message.contains("unknown"), "{e:?}");
    }

    #[test]
    fn a_lock_file_its_holder_removed_is_retaken_at_the_path_and_the_record_is_pgbackrests() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_file_path(dir.path(), "s", LockType::Backup).unwrap();
        let first = acquire(dir.path(), "s", LockType::Backup, "backup", Duration::ZERO).unwrap();
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(record["pid"], std::process::id());
        assert_eq!(record["command"], "backup");
        assert!(record["execId"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{}-", std::process::id()))));
        // pgBackRest reads its keys in sorted order and skips the others.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"command\":") && text.find("\"execId\"") < text.find("\"pid\"")
        );
        assert_eq!(recorded_pid(&text), Some(std::process::id() as i32));

        let waiter_dir = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            acquire(
                &waiter_dir,
                "s",
                LockType::Backup,
                "expire",
                Duration::from_secs(10),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiting_on(&path) {
            assert!(
                Instant::now() < deadline,
                "the second acquire never opened the lock file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Released as pgBackRest releases: the file removed, then closed.
        std::fs::remove_file(&path).unwrap();
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        assert!(path.exists(), "the waiter holds the file now at the path");
        let e = acquire(dir.path(), "s", LockType::Backup, "backup", Duration::ZERO).unwrap_err();
        assert_eq!(e.kind, Kind::LockHeld, "{e:?}");
        assert!(e.message.contains("(expire, started "), "{e:?}");
        drop(second);
        // Both files for the commands that rewrite both info files.
        let all = acquire(
            dir.path(),
            "s",
            LockType::All,
            "stanza-upgrade",
            Duration::ZERO,
        )
        .unwrap();
        for t in [LockType::Archive, LockType::Backup] {
            let e = acquire(dir.path(), "s", t, "x", Duration::ZERO).unwrap_err();
            assert_eq!(e.kind, Kind::LockHeld);
        }
        drop(all);
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
        // Release only once the waiter is really waiting: until then, an acquire that gives
        // up at once would pass as well.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.is_finished()
            && !waiting_on(&lock_file_path(dir.path(), "s", LockType::Backup).unwrap())
        {
            assert!(
                Instant::now() < deadline,
                "the second acquire never opened the lock file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!t.is_finished(), "acquire returned while the lock was held");
        drop(first);
        assert_eq!(t.join().unwrap(), Ok(true));
    }
}
