//! `archive-push:async`: the background worker that pushes the segments PostgreSQL marked
//! ready (`pg_wal/archive_status/*.ready`) ahead of its archive_command, process-max at a
//! time, and acknowledges each one in the spool once it is durably in the repository.
//!
//! One runs per stanza (the archive lock); it ends when a pass finds nothing left to push.
//! It never acknowledges before the repository's commit returned, so killing it at any
//! instant loses nothing: a segment is either acknowledged and stored, or pushed again by
//! the next worker (the repository keeps identical content once). A segment it cannot push
//! gets an error file instead, which the waiting archive_command reports to PostgreSQL.
//! When more than archive-push-queue-max waits, reachable repository or not, the queue is
//! dropped and the drop recorded (see [`drop_queue`] and [`crate::repo::dropped`]).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{wal_name_of, Pushed, Target};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::hook::{self, Point, RunFacts};
use crate::pg::wal::{WalHeader, WalKind, WalName, LONG_HEADER_SIZE};
use crate::repo::dropped::{self, DropFacts};
use crate::spool::{self, FileIdentity, PushAck, Spool, Vouch};

/// In the spool's `out` directory: the pg_wal directory the running worker serves.
pub const SERVING_FILE: &str = "serving";
/// In the spool's `out` directory: dropped segments not yet recorded in the repository
/// (it was unreachable), one name per line.
const PENDING_DROPS: &str = "dropped.pending";
/// How long a worker with nothing to push waits for more before it exits.
const LINGER: Duration = Duration::from_millis(500);

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let pg_wal = PathBuf::from(&cfg.args[0]);
    let status_dir = pg_wal.join("archive_status");
    let spool = Spool::new(cfg, stanza)?;
    let out = spool.out_dir();
    Spool::ensure(&out)?;
    spool::write_file(
        &out,
        SERVING_FILE,
        format!("{}\n", pg_wal.display()).as_bytes(),
    )?;
    let served = Served {
        cfg,
        pg_wal,
        spool,
        repo_id: spool::repo_fingerprint(cfg, stanza),
        queue_max: cfg.bytes("archive-push-queue-max"),
    };
    let (pg_wal, spool, repo_id) = (&served.pg_wal, &served.spool, &served.repo_id);

    // The repository, once per run; when it cannot be reached, every waiting
    // archive_command hears why at once instead of waiting for its timeout.
    let opened = Target::open(cfg, stanza).and_then(|t| crate::repo::workers(cfg).map(|w| (t, w)));
    let (target, workers) = match opened {
        Ok(tw) => tw,
        Err(e) => {
            // The queue grows fastest exactly while the repository is unreachable: that is
            // when archive-push-queue-max must still drop (as pgBackRest's check comes before
            // it opens the repository); the records wait in the spool until it is back.
            let queue = served.queue(None)?;
            let dropped = served.drop_if_over(None, &queue)?;
            for wal in ready(&status_dir)? {
                // A dropped file's answer is its acknowledgment.
                if !dropped || !queue.todo.contains(&wal) {
                    report_error(spool, &wal.name, &e);
                }
            }
            return Err(e);
        }
    };
    flush_pending_drops(&target, &out);

    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut idle_since: Option<Instant> = None;
    loop {
        crate::signal::check()?;
        let queue = served.queue(Some(&failed))?;
        if queue.todo.is_empty() {
            // A busy primary closes the next segment moments later: waiting a little for it
            // saves the archive_command that would otherwise start a new worker.
            let idle = *idle_since.get_or_insert_with(Instant::now);
            if idle.elapsed() >= LINGER {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        idle_since = None;
        if served.drop_if_over(Some(&target), &queue)? {
            continue;
        }
        let newly_failed = Mutex::new(Vec::new());
        workers.try_each_in_order(&queue.todo, |wal| {
            let path = pg_wal.join(&wal.name);
            let repo = workers.repo(target.repo.as_ref());
            match push_one(&target, repo, wal, &path) {
                Ok((pushed, identity)) => {
                    let ack = PushAck {
                        wal: wal.name.clone(),
                        system_id: pushed.system_id,
                        sha1: pushed.sha1,
                        stored: pushed.stored,
                        repo: repo_id.clone(),
                        file: identity,
                        dropped: false,
                    };
                    // Without its acknowledgment the segment is pushed again later, which is
                    // harmless; the error stops this run so that the foreground falls back.
                    spool::write_file(&out, &format!("{}.ack", wal.name), &ack.to_bytes())?;
                    spool::remove_file(&spool.err_path(&wal.name))?;
                }
                Err(e) if e.kind == Kind::Term => return Err(e),
                Err(e) => {
                    crate::error!("unable to push WAL file '{}': {}", wal.name, e.message);
                    report_error(spool, &wal.name, &e);
                    if let Ok(mut f) = newly_failed.lock() {
                        f.push(wal.name.clone());
                    }
                }
            }
            Ok(())
        })?;
        // A segment that failed is not tried again in this run: the archive_command that
        // reports the failure starts the next run, at PostgreSQL's retry pace.
        failed.extend(newly_failed.into_inner().unwrap_or_default());
    }
    Ok(())
}

/// What one worker serves: a pg_wal directory, through a spool, for one repository.
struct Served<'a> {
    cfg: &'a Config,
    pg_wal: PathBuf,
    spool: Spool,
    repo_id: String,
    queue_max: Option<u64>,
}

/// The WAL waiting to be pushed, in order, and its size in bytes.
struct Queue {
    todo: Vec<WalName>,
    bytes: u64,
}

impl Served<'_> {
    /// What is left to push: the ready files not acknowledged yet (nor `failed` in this
    /// run). Acknowledgments and error files of files no longer ready go.
    fn queue(&self, failed: Option<&BTreeSet<String>>) -> Result<Queue> {
        let (pg_wal, spool, repo_id) = (&self.pg_wal, &self.spool, self.repo_id.as_str());
        let status_dir = pg_wal.join("archive_status");
        let ready = ready(&status_dir)?;
        clean(&spool.out_dir(), &ready)?;
        let mut todo = Vec::new();
        let mut queue_bytes = 0u64;
        for wal in ready {
            if failed.is_some_and(|f| f.contains(&wal.name)) {
                continue;
            }
            let path = pg_wal.join(&wal.name);
            let Ok(meta) = fs::metadata(&path) else {
                // Archived and removed meanwhile, or never there (a stray .ready).
                continue;
            };
            if is_acknowledged(spool, &wal.name, repo_id, &FileIdentity::of(&meta)) {
                continue;
            }
            queue_bytes += meta.len();
            todo.push(wal);
        }
        Ok(Queue {
            todo,
            bytes: queue_bytes,
        })
    }

    /// Drops `queue` when it is over archive-push-queue-max; whether it did.
    fn drop_if_over(&self, target: Option<&Target>, queue: &Queue) -> Result<bool> {
        match self.queue_max.filter(|max| queue.bytes > *max) {
            Some(max) => self.drop_queue(target, queue, max).map(|_| true),
            None => Ok(false),
        }
    }
}

/// The WAL files PostgreSQL marked ready, in the order its archiver takes them: timeline
/// history files first, then by name (oldest first).
fn ready(status_dir: &Path) -> Result<Vec<WalName>> {
    let entries = match fs::read_dir(status_dir) {
        Ok(e) => e,
        Err(e) => return Err(Error::io("list", status_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", status_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(wal) = name
            .strip_suffix(".ready")
            .and_then(|n| WalName::parse(n).ok())
        {
            out.push(wal);
        }
    }
    out.sort_by(|a, b| {
        (a.kind != WalKind::History)
            .cmp(&(b.kind != WalKind::History))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// Whether the spool already holds a valid acknowledgment for this very file.
fn is_acknowledged(spool: &Spool, wal: &str, repo_id: &str, identity: &FileIdentity) -> bool {
    let Ok(Some(bytes)) = spool::read_file(&spool.ack_path(wal)) else {
        return false;
    };
    // The system identifier was checked when the acknowledgment was written, for this same
    // file (same inode and times): comparing the file identity is enough here.
    PushAck::parse(&bytes)
        .is_some_and(|a| a.vouches_for(wal, a.system_id, repo_id, identity) == Vouch::Yes)
}

/// Removes acknowledgments and error files of WAL no longer ready (PostgreSQL archived it
/// and renamed its status file to `.done`).
fn clean(out: &Path, ready: &[WalName]) -> Result<()> {
    let ready: BTreeSet<&str> = ready.iter().map(|w| w.name.as_str()).collect();
    let entries = match fs::read_dir(out) {
        Ok(e) => e,
        Err(e) => return Err(Error::io("list", out, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(wal) = name
            .strip_suffix(".ack")
            .or_else(|| name.strip_suffix(".err"))
        else {
            continue;
        };
        if !ready.contains(wal) {
            spool::remove_file(&entry.path())?;
        }
    }
    Ok(())
}

/// Pushes one ready file, returning what was stored and the identity of the file read.
fn push_one(
    target: &Target,
    repo: &dyn crate::storage::Storage,
    wal: &WalName,
    path: &Path,
) -> Result<(Pushed, FileIdentity)> {
    let mut file = File::open(path).map_err(|e| Error::io("open WAL file", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    let pushed = target.push_open(repo, wal, path, &mut file)?;
    Ok((pushed, FileIdentity::of(&meta)))
}

fn report_error(spool: &Spool, wal: &str, e: &Error) {
    if let Err(w) = spool::write_file(
        &spool.out_dir(),
        &format!("{wal}.err"),
        &spool::error_bytes(e),
    ) {
        crate::warn!(
            "unable to report the failure of WAL file '{wal}': {}",
            w.message
        );
    }
}

impl Served<'_> {
    /// archive-push-queue-max exceeded: what pgBackRest does (acknowledge every waiting segment
    /// without storing it, so that PostgreSQL frees pg_wal), and what it does not: an ERROR, the
    /// failure hook, and a record of each dropped segment in the repository, which info, verify
    /// and check report until a backup starts after the gap.
    fn drop_queue(&self, target: Option<&Target>, queue: &Queue, queue_max: u64) -> Result<()> {
        let (cfg, spool, pg_wal, repo_id) = (self.cfg, &self.spool, &self.pg_wal, &self.repo_id);
        let (todo, queue_bytes) = (&queue.todo, queue.bytes);
        let facts = DropFacts {
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            queue_bytes,
            queue_max,
        };
        let out = spool.out_dir();
        // Recorded first, acknowledged after: a worker killed in between leaves a record of a
        // drop that did not happen (the segments are pushed by the next run), never a drop
        // without a record.
        let names: Vec<&str> = todo.iter().map(|w| w.name.as_str()).collect();
        let mut pending = read_pending(&out);
        pending.extend(names.iter().map(|n| (n.to_string(), facts.clone())));
        write_pending(&out, &pending)?;
        if let Some(target) = target {
            flush_pending_drops(target, &out);
        }

        for wal in todo {
            let path = pg_wal.join(&wal.name);
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let system_id = if matches!(wal.kind, WalKind::Segment | WalKind::Partial) {
                let mut page = [0u8; LONG_HEADER_SIZE];
                use std::io::Read;
                file.read_exact(&mut page)
                    .ok()
                    .and_then(|_| WalHeader::parse(&page, &wal.name).ok())
                    .map(|h| h.system_id)
            } else {
                None
            };
            let ack = PushAck {
                wal: wal.name.clone(),
                system_id,
                sha1: String::new(),
                stored: String::new(),
                repo: repo_id.to_string(),
                file: FileIdentity::of(&meta),
                dropped: true,
            };
            spool::write_file(&out, &format!("{}.ack", wal.name), &ack.to_bytes())?;
            // An earlier failure to push it is no longer the answer.
            spool::remove_file(&spool.err_path(&wal.name))?;
        }
        let first = names.first().copied().unwrap_or("");
        let last = names.last().copied().unwrap_or("");
        let e = Error::new(
            Kind::ArchiveTimeout,
            format!(
            "dropped {} WAL file(s) {first}...{last} without archiving them: {queue_bytes} bytes \
             were waiting, more than archive-push-queue-max ({queue_max} bytes); point-in-time \
             recovery across them is impossible until the next backup",
            names.len()
        ),
        )
        .with_hint("find out why archiving is slow or failing, then take a backup");
        crate::error!("{}", e.message);
        if let Err(w) = hook::run(
            cfg,
            Point::Failure,
            &RunFacts {
                backup_label: None,
                backup_type: None,
            },
            Some(&e),
        ) {
            crate::warn!("{}", w.message);
        }
        Ok(())
    }
}

/// Dropped segments not yet recorded in the repository, with why they were dropped.
fn read_pending(out: &Path) -> Vec<(String, DropFacts)> {
    spool::read_file(&out.join(PENDING_DROPS))
        .ok()
        .flatten()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| {
                    let (name, facts) = l.split_once(' ')?;
                    Some((name.to_string(), serde_json::from_str(facts).ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_pending(out: &Path, pending: &[(String, DropFacts)]) -> Result<()> {
    if pending.is_empty() {
        spool::remove_file(&out.join(PENDING_DROPS))?;
        return spool::sync(out);
    }
    let mut text = String::new();
    for (name, facts) in pending {
        text.push_str(name);
        text.push(' ');
        text.push_str(&serde_json::to_string(facts).unwrap_or_default());
        text.push('\n');
    }
    spool::write_file(out, PENDING_DROPS, text.as_bytes())
}

/// Records the pending drops in the repository; those that fail stay pending.
fn flush_pending_drops(target: &Target, out: &Path) {
    let pending = read_pending(out);
    if pending.is_empty() {
        return;
    }
    let archive_id = target.info.db.current.archive_id();
    let mut left = Vec::new();
    for (name, facts) in pending {
        let recorded = wal_name_of(Path::new(&name)).and_then(|wal| {
            dropped::record(
                target.repo.as_ref(),
                &target.layout,
                &archive_id,
                &wal,
                &facts,
            )
        });
        if let Err(e) = recorded {
            crate::warn!(
                "unable to record dropped WAL file '{name}' in the repository (kept in the spool): {}",
                e.message
            );
            left.push((name, facts));
        }
    }
    if let Err(e) = write_pending(out, &left) {
        crate::warn!("unable to update the spool's pending drops: {}", e.message);
    }
}
