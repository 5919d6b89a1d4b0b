//! The spool of asynchronous archiving (`spool-path`): what the background workers tell the
//! commands PostgreSQL runs, and how a worker is started.
//!
//! ```text
//! SPOOL/archive/STANZA/out/SEGMENT.ack    archive-push: the segment is in the repository
//! SPOOL/archive/STANZA/out/SEGMENT.err    archive-push: the worker failed to push it
//! SPOOL/archive/STANZA/in/RUN/...         archive-get: prefetched segments (command/archive_get/prefetch.rs)
//! ```
//!
//! Nothing here is trusted because it exists. The spool outlives the processes that wrote
//! it, can be deleted, can fill up, and can be copied along with a data directory to a
//! cluster that then writes other WAL under the same names. So an acknowledgment names the
//! cluster, the repository and the content it vouches for, and is believed only when all of
//! them match the file PostgreSQL hands over ([`PushAck::vouches_for`]). pgBackRest's own
//! `.ok`/`.error` files, which carry none of this, are never read.
//!
//! Every file is written as the repository's are: temp file, fsync, rename, fsync of the
//! directory, so a worker killed at any instant leaves either the whole file or none.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::config::{Cmd, Config};
use crate::error::{Error, Kind, Result};
use crate::storage::posix::{create_dir_durable, sync_dir, PosixWriter};
use crate::storage::AtomicWrite;

/// The spool directories of one stanza.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    pub fn new(cfg: &Config, stanza: &str) -> Result<Spool> {
        Ok(Spool {
            root: cfg
                .required_path("spool-path")?
                .join("archive")
                .join(stanza),
        })
    }

    /// Where archive-push's worker reports.
    pub fn out_dir(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Where archive-get's worker prefetches.
    pub fn in_dir(&self) -> PathBuf {
        self.root.join("in")
    }

    pub fn ack_path(&self, wal_name: &str) -> PathBuf {
        self.out_dir().join(format!("{wal_name}.ack"))
    }

    pub fn err_path(&self, wal_name: &str) -> PathBuf {
        self.out_dir().join(format!("{wal_name}.err"))
    }

    /// Creates `dir` (and the spool above it) if missing.
    pub fn ensure(dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        create_dir_durable(dir)
    }
}

/// Writes `bytes` as `dir/name`, atomically and durably.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    Spool::ensure(dir)?;
    let mut w = PosixWriter::create(dir.to_path_buf())?;
    w.write_all(bytes)
        .map_err(|e| Error::io("write", &dir.join(name), e))?;
    Box::new(w).commit(name)
}

/// Removes a spool file; a file already gone is fine.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Reads a small spool file; `None` when it does not exist.
pub fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut buf = Vec::new();
    // An acknowledgment is a few hundred bytes; a larger file is not one of ours.
    Read::by_ref(&mut f)
        .take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(Some(buf))
}

/// Which file of pg_wal a worker read: enough to tell, without reading it again, that the
/// file PostgreSQL hands over now is that same file, unchanged. A copy (a restored data
/// directory) has another inode; a recycled segment another name and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileIdentity {
    pub fn of(meta: &Metadata) -> FileIdentity {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The repository a spool entry is about: an entry written for one repository says nothing
/// about another one configured later with the same spool.
pub fn repo_fingerprint(cfg: &Config, stanza: &str) -> String {
    let host = cfg.str("repo1-host").unwrap_or("");
    let port = cfg.str("repo1-host-port").unwrap_or("");
    let path = cfg.str("repo1-path").unwrap_or("");
    let kind = cfg.str("repo1-type").unwrap_or("posix");
    if kind == "s3" {
        let endpoint = cfg.str("repo1-s3-endpoint").unwrap_or("");
        let bucket = cfg.str("repo1-s3-bucket").unwrap_or("");
        return format!("s3:{endpoint}:{bucket}:{path}:{stanza}");
    }
    format!("{kind}:{host}:{port}:{path}:{stanza}")
}

/// archive-push's acknowledgment: the worker stored `wal` (or found it stored with the same
/// content) in repository `repo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushAck {
    pub wal: String,
    /// From the segment's page header; `None` for history and backup history files.
    pub system_id: Option<u64>,
    /// SHA-1 of the content PostgreSQL wrote.
    pub sha1: String,
    /// The stored file's name in the archive.
    pub stored: String,
    pub repo: String,
    pub file: FileIdentity,
    /// Not stored: dropped because the queue exceeded archive-push-queue-max.
    #[serde(default)]
    pub dropped: bool,
}

/// What an acknowledgment says about the file at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vouch {
    /// Same cluster, repository and file: done.
    Yes,
    /// Same cluster and repository, but maybe not the same file (another inode, other
    /// times): believed only if the content's SHA-1 matches.
    IfContentMatches,
    /// About something else.
    No,
}

impl PushAck {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// `None` for anything that does not parse as an acknowledgment (a truncated or foreign
    /// file): such a file vouches for nothing.
    pub fn parse(bytes: &[u8]) -> Option<PushAck> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn vouches_for(
        &self,
        wal: &str,
        system_id: Option<u64>,
        repo: &str,
        file: &FileIdentity,
    ) -> Vouch {
        if self.wal != wal || self.system_id != system_id || self.repo != repo {
            return Vouch::No;
        }
        if self.file == *file {
            Vouch::Yes
        } else if self.file.size == file.size {
            Vouch::IfContentMatches
        } else {
            Vouch::No
        }
    }
}

/// A worker's failure to push one segment, for the archive_command that waits for it: the
/// error's kind (pgBackRest's name) on the first line, its message and hint after.
pub fn error_bytes(e: &Error) -> Vec<u8> {
    let mut s = format!("{}\n{}\n", e.kind.wire_name(), e.message);
    if let Some(h) = &e.hint {
        s.push_str(h);
        s.push('\n');
    }
    s.into_bytes()
}

pub fn parse_error(bytes: &[u8]) -> Error {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let kind = Kind::from_wire_name(lines.next().unwrap_or(""));
    let message = lines
        .next()
        .unwrap_or("the asynchronous worker failed")
        .to_string();
    let hint: Vec<&str> = lines.collect();
    let e = Error::new(kind, message);
    if hint.is_empty() {
        e
    } else {
        e.with_hint(hint.join(" "))
    }
}

/// Starts the background worker of `cmd` (`archive-push:async`, `archive-get:async`):
/// this program with this invocation's options, the command word replaced by the worker's and
/// the positional arguments by `args`, in the current directory (PostgreSQL's data
/// directory), in a process group of its own so that no signal to PostgreSQL's archiver
/// reaches it, with no terminal and no inherited output (the
/// archiver reads our stderr; the worker logs to its own file).
pub fn spawn_worker(cfg: &Config, cmd: Cmd, args: &[String]) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("find", Path::new("/proc/self/exe"), e))?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let worker_argv = worker_argv(&argv, cmd.name(), &cfg.args, args);
    let mut command = Command::new(&exe);
    command
        .args(&worker_argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A process group of its own: PostgreSQL signals its archiver's group (at shutdown,
    // when it restarts after a crash), and that must not kill a push half-way.
    command.process_group(0);
    command.spawn().map_err(|e| {
        Error::new(
            Kind::Execute,
            format!(
                "unable to start the {}:async worker '{}': {e}",
                cmd.name(),
                exe.display()
            ),
        )
    })?;
    crate::debug!("started the {}:async worker", cmd.name());
    Ok(())
}

/// The worker's arguments: `argv` with its command word (the first `name`) replaced by
/// `name:async`, the foreground's positional arguments (`old_args`, first occurrence of each
/// after the command word) removed and `new_args` appended.
fn worker_argv(
    argv: &[String],
    name: &str,
    old_args: &[String],
    new_args: &[String],
) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len() + new_args.len());
    let mut seen_command = false;
    let mut pending: Vec<&String> = old_args.iter().collect();
    for a in argv {
        if !seen_command && a == name {
            seen_command = true;
            out.push(format!("{name}:async"));
            continue;
        }
        if seen_command {
            if let Some(i) = pending.iter().position(|p| *p == a) {
                pending.remove(i);
                continue;
            }
        }
        out.push(a.clone());
    }
    out.extend(new_args.iter().cloned());
    out
}

/// Syncs the spool directory `dir` (after removals that must not come back after a crash).
pub fn sync(dir: &Path) -> Result<()> {
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn worker_argv_replaces_the_command_and_its_arguments() {
        assert_eq!(
            worker_argv(
                &s(&[
                    "--stanza=main",
                    "archive-push",
                    "pg_wal/0001",
                    "--log-level-file=debug"
                ]),
                "archive-push",
                &s(&["pg_wal/0001"]),
                &s(&["/data/pg_wal"])
            ),
            s(&[
                "--stanza=main",
                "archive-push:async",
                "--log-level-file=debug",
                "/data/pg_wal"
            ])
        );
        // A space-separated option value equal to the positional argument: one of the two
        // equal words goes, so the worker's command line is the same either way.
        assert_eq!(
            worker_argv(
                &s(&["archive-push", "--stanza", "main", "main"]),
                "archive-push",
                &s(&["main"]),
                &s(&["/d"])
            ),
            s(&["archive-push:async", "--stanza", "main", "/d"])
        );
    }

    fn ident(ino: u64) -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino,
            size: 16 << 20,
            mtime_ns: 5,
            ctime_ns: 6,
        }
    }

    #[test]
    fn an_ack_vouches_only_for_its_cluster_repository_and_file() {
        let ack = PushAck {
            wal: "000000010000000000000003".into(),
            system_id: Some(7),
            sha1: "a".repeat(40),
            stored: "x".into(),
            repo: "posix:::/r:main".into(),
            file: ident(9),
            dropped: false,
        };
        let back = PushAck::parse(&ack.to_bytes()).unwrap();
        assert_eq!(back, ack);
        let w = "000000010000000000000003";
        let r = "posix:::/r:main";
        assert_eq!(ack.vouches_for(w, Some(7), r, &ident(9)), Vouch::Yes);
        assert_eq!(
            ack.vouches_for(w, Some(7), r, &ident(10)),
            Vouch::IfContentMatches
        );
        assert_eq!(ack.vouches_for(w, Some(8), r, &ident(9)), Vouch::No);
        assert_eq!(
            ack.vouches_for("000000020000000000000003", Some(7), r, &ident(9)),
            Vouch::No
        );
        assert_eq!(
            ack.vouches_for(w, Some(7), "posix:::/other:main", &ident(9)),
            Vouch::No
        );
        assert!(PushAck::parse(b"{\"wal\":").is_none());
    }

    #[test]
    fn a_worker_error_keeps_its_kind_and_message() {
        let e = Error::new(
            Kind::ArchiveMismatch,
            "WAL file 'x' is from another cluster",
        )
        .with_hint("check pg1-path");
        let back = parse_error(&error_bytes(&e));
        assert_eq!(back.kind, Kind::ArchiveMismatch);
        assert_eq!(back.message, e.message);
        assert_eq!(back.hint.as_deref(), Some("check pg1-path"));
    }
}
