//! archive-push with archive-async=y, as PostgreSQL's archive_command runs it: returns 0 only
//! when the worker has acknowledged this very file as stored, never for "queued".
//!
//! The fast path is a stat and a page-header read: the acknowledgment names the file's
//! identity (device, inode, size, times) and the cluster, so a segment the worker already
//! pushed is answered without reading it again. Anything less certain costs more, never
//! correctness: an acknowledgment for another file of that name (a copied data directory or
//! spool) is believed only if the content's SHA-1 matches; a worker that dies or stays silent
//! is restarted; and when the spool cannot be used at all, the segment is pushed right here,
//! synchronously.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{wal_name_of, Target};
use crate::config::{Cmd, Config, LockType};
use crate::error::{Error, Kind, Result};
use crate::lock;
use crate::pg::wal::{WalHeader, WalKind, WalName, LONG_HEADER_SIZE};
use crate::pipeline;
use crate::spool::{self, FileIdentity, PushAck, Spool, Vouch};

/// How many times one archive_command starts a worker that then ends without answering for
/// its segment, before it pushes the segment itself.
const WORKER_STARTS: u32 = 3;

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let wal_path = crate::command::pg_relative_path(&cfg.args[0]);
    let wal = wal_name_of(&wal_path)?;
    let pg_wal = wal_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let spool = Spool::new(cfg, stanza)?;
    let repo = spool::repo_fingerprint(cfg, stanza);
    let mut file = File::open(&wal_path).map_err(|e| Error::io("open WAL file", &wal_path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("stat", &wal_path, e))?;
    let identity = FileIdentity::of(&meta);
    let system_id = header_system_id(&wal, &mut file, &wal_path)?;
    let source = wal_path.display().to_string();

    let answer = |file: &mut File| -> Result<Option<Result<()>>> {
        if let Some(done) = acknowledged(&spool, &wal, system_id, &repo, &identity, file, &source)?
        {
            return Ok(Some(Ok(done)));
        }
        if let Some(bytes) = spool::read_file(&spool.err_path(&wal.name))? {
            // Reported once: the next call of PostgreSQL's retry starts a new attempt.
            spool::remove_file(&spool.err_path(&wal.name))?;
            let e = spool::parse_error(&bytes);
            return Ok(Some(Err(e)));
        }
        Ok(None)
    };

    // Already pushed (PostgreSQL retrying, or the worker ran ahead of it).
    match answer(&mut file) {
        Ok(Some(r)) => return r,
        Ok(None) => {}
        Err(e) => return push_here(cfg, stanza, &wal, &wal_path, &e),
    }
    if let Err(e) = Spool::ensure(&spool.out_dir()) {
        return push_here(cfg, stanza, &wal, &wal_path, &e);
    }

    let lock_path = cfg.required_path("lock-path")?;
    let timeout = cfg.seconds("archive-timeout");
    let begin = Instant::now();
    let mut starts = 0;
    let mut pause = Duration::from_millis(2);
    let mut next_liveness = Instant::now();
    loop {
        if Instant::now() >= next_liveness {
            next_liveness = Instant::now() + Duration::from_millis(50);
            if !lock::is_held(&lock_path, stanza, LockType::Archive) {
                // No worker (the first call, or the last one ended or was killed): start one.
                // One that ends again without an answer for this segment could not push it
                // or could not tell (a full spool): after a few, push it here.
                if starts == WORKER_STARTS {
                    let e = Error::new(
                        Kind::ArchiveTimeout,
                        format!(
                            "the archive-push:async worker ended {WORKER_STARTS} times without \
                             answering for WAL file '{}'",
                            wal.name
                        ),
                    );
                    return push_here(cfg, stanza, &wal, &wal_path, &e);
                }
                starts += 1;
                if let Err(e) =
                    spool::spawn_worker(cfg, Cmd::ArchivePush, &[pg_wal.display().to_string()])
                {
                    return push_here(cfg, stanza, &wal, &wal_path, &e);
                }
                // Time to start and take the lock, even on a loaded host, before it counts
                // as gone.
                next_liveness = Instant::now() + Duration::from_secs(1);
            } else if let Some(other) = serving_elsewhere(&spool, &pg_wal) {
                // Another cluster's worker holds the stanza's lock (a copy of this data
                // directory using the same spool and stanza): it will never push our WAL.
                let e = Error::new(
                    Kind::LockAcquire,
                    format!(
                        "the archive-push:async worker of stanza '{stanza}' serves '{}', not '{}'",
                        other.display(),
                        pg_wal.display()
                    ),
                );
                return push_here(cfg, stanza, &wal, &wal_path, &e);
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
        crate::signal::check()?;
        match answer(&mut file) {
            Ok(Some(r)) => return r,
            Ok(None) => {}
            Err(e) => return push_here(cfg, stanza, &wal, &wal_path, &e),
        }
        if begin.elapsed() >= timeout {
            return Err(Error::new(
                Kind::ArchiveTimeout,
                format!(
                    "unable to push WAL file '{}' to the archive asynchronously after {} second(s)",
                    wal.name,
                    crate::config::options::format_millis(timeout.as_millis() as i64)
                ),
            )
            .with_hint(format!(
                "check the worker's log ({stanza}-archive-push-async.log in log-path); \
                 PostgreSQL will call archive_command again"
            )));
        }
    }
}

/// The system identifier in a segment's page header (`None` for history and backup
/// history files, which have none).
fn header_system_id(wal: &WalName, file: &mut File, path: &Path) -> Result<Option<u64>> {
    if !matches!(wal.kind, WalKind::Segment | WalKind::Partial) {
        return Ok(None);
    }
    let mut page = [0u8; LONG_HEADER_SIZE];
    file.read_exact(&mut page)
        .map_err(|e| Error::io("read WAL header of", path, e))?;
    let header = WalHeader::parse(&page, &path.display().to_string())?;
    Ok(Some(header.system_id))
}

/// Whether the spool holds an acknowledgment that vouches for this file. A stale or
/// foreign acknowledgment is removed, so that the worker pushes the file again.
fn acknowledged(
    spool: &Spool,
    wal: &WalName,
    system_id: Option<u64>,
    repo: &str,
    identity: &FileIdentity,
    file: &mut File,
    source: &str,
) -> Result<Option<()>> {
    let path = spool.ack_path(&wal.name);
    let Some(bytes) = spool::read_file(&path)? else {
        return Ok(None);
    };
    let ack = PushAck::parse(&bytes);
    let vouch = ack
        .as_ref()
        .map(|a| a.vouches_for(&wal.name, system_id, repo, identity))
        .unwrap_or(Vouch::No);
    let believed = match vouch {
        Vouch::Yes => true,
        Vouch::IfContentMatches => {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("seek", Path::new(source), e))?;
            let local = pipeline::digest(file, source)?.sha1;
            ack.as_ref().is_some_and(|a| a.sha1 == local)
        }
        Vouch::No => false,
    };
    let Some(ack) = ack.filter(|_| believed) else {
        crate::info!(
            "acknowledgment '{}' is not for this file (another cluster, repository or content): pushing again",
            path.display()
        );
        spool::remove_file(&path)?;
        return Ok(None);
    };
    if ack.dropped {
        crate::error!(
            "WAL file '{}' was dropped, not archived: the queue exceeded archive-push-queue-max; \
             point-in-time recovery across it is impossible until the next backup",
            wal.name
        );
    } else {
        crate::info!(
            "pushed WAL file '{}' to the archive asynchronously (stored as '{}')",
            wal.name,
            ack.stored
        );
    }
    Ok(Some(()))
}

/// Which pg_wal the running worker serves, when it is not ours.
fn serving_elsewhere(spool: &Spool, pg_wal: &Path) -> Option<PathBuf> {
    let bytes = spool::read_file(&spool.out_dir().join(super::worker::SERVING_FILE)).ok()??;
    let serving = PathBuf::from(String::from_utf8_lossy(&bytes).trim_end());
    (serving != pg_wal).then_some(serving)
}

/// The spool or the worker cannot answer: push the segment here, synchronously, as with
/// archive-async=n, and say why.
fn push_here(
    cfg: &Config,
    stanza: &str,
    wal: &WalName,
    wal_path: &Path,
    why: &Error,
) -> Result<()> {
    crate::warn!(
        "pushing WAL file '{}' synchronously: {}",
        wal.name,
        why.message
    );
    let target = Target::open(cfg, stanza)?;
    target.push(wal, wal_path).map(|_| ())
}
