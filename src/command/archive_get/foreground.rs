//! archive-get with archive-async=y, as PostgreSQL's restore_command runs it: hands over a
//! segment the worker prefetched for this run when it is valid, and otherwise fetches the
//! segment itself exactly as archive-async=n does, then makes sure a worker prefetches the
//! segments after it.
//!
//! A miss is never taken from the spool unless archive-missing-retry=n (pgBackRest's
//! meaning: a segment the worker found missing in this run is answered with exit 1 without
//! looking again). By default every miss is a fresh repository lookup, so a "missing" noted
//! before a timeline switch or an archive catching up can never end recovery early. When the
//! spool cannot be used (deleted, unwritable, full), the command still answers from the
//! repository: the spool only ever makes it faster.

use std::path::Path;
use std::time::{Duration, Instant};

use super::prefetch::{self, Prefetched, Run, Verdict};
use super::split_dest;
use crate::command::Outcome;
use crate::config::{Cmd, Config, LockType};
use crate::error::Result;
use crate::lock;
use crate::pg::wal::{WalKind, WalName};
use crate::spool::{self, Spool};

pub fn run(cfg: &Config) -> Result<Outcome> {
    let stanza = cfg.stanza_required()?;
    let wal = WalName::parse(&cfg.args[0])?;
    // History files are asked for to detect new timelines: always a fresh lookup.
    if wal.kind != WalKind::Segment {
        return super::fetch(cfg);
    }
    let dest = crate::command::pg_relative_path(&cfg.args[1]);
    let (dest_dir, dest_name) = split_dest(&dest)?;
    // PostgreSQL runs restore_command in its data directory: the run is read from there.
    let Some((data_dir, run)) = std::env::current_dir()
        .ok()
        .and_then(|d| Run::of(&d, &spool::repo_fingerprint(cfg, stanza)).map(|r| (d, r)))
    else {
        crate::debug!("no running cluster in the working directory: nothing is prefetched");
        return super::fetch(cfg);
    };
    let spool = Spool::new(cfg, stanza)?;
    let dir = spool.in_dir().join(&run.name);
    match from_spool(cfg, stanza, &spool, &dir, &run, &wal, dest_dir, dest_name) {
        Ok(Some(outcome)) => {
            if outcome == Outcome::Done {
                keep_prefetching(cfg, stanza, &dir, &data_dir, &wal, &dest);
            }
            return Ok(outcome);
        }
        Ok(None) => {}
        Err(e) => crate::warn!(
            "the spool cannot be used, fetching WAL file '{}' from the repository: {}",
            wal.name,
            e.message
        ),
    }
    let outcome = super::fetch(cfg)?;
    if outcome == Outcome::Done {
        keep_prefetching(cfg, stanza, &dir, &data_dir, &wal, &dest);
    }
    Ok(outcome)
}

/// The answer the spool gives for `wal`, if any: a valid prefetched copy handed over, or
/// (archive-missing-retry=n) the worker's note that it is missing.
#[allow(clippy::too_many_arguments)]
fn from_spool(
    cfg: &Config,
    stanza: &str,
    spool: &Spool,
    dir: &Path,
    run: &Run,
    wal: &WalName,
    dest_dir: &Path,
    dest_name: &str,
) -> Result<Option<Outcome>> {
    prefetch::remove_other_runs(&spool.in_dir(), &run.name)?;
    let lock_path = cfg.required_path("lock-path")?;
    let deadline = Instant::now() + cfg.seconds("archive-timeout");
    let mut next_liveness = Instant::now();
    let mut worker_alive = true;
    loop {
        let files = prefetch::list(dir)?;
        let mine: Vec<&Prefetched> = files.iter().filter(|p| p.wal == wal.name).collect();
        for p in &mine {
            match prefetch::check(p, wal, run.system_id)? {
                Verdict::Valid => {
                    if !prefetch::hand_over(p, dest_dir, dest_name)? {
                        return Ok(vanished(wal));
                    }
                    crate::info!(
                        "found WAL file '{}' in the spool (prefetched by the archive-get:async worker)",
                        wal.name
                    );
                    return Ok(Some(Outcome::Done));
                }
                Verdict::Vanished => return Ok(vanished(wal)),
                Verdict::Invalid(why) => {
                    crate::warn!(
                        "prefetched file '{}' is not handed over and is removed: {why}",
                        p.path.display()
                    );
                    spool::remove_file(&p.path)?;
                    spool::sync(dir)?;
                }
            }
        }
        if !mine.is_empty() {
            return Ok(None);
        }
        let missing = prefetch::missing_path(dir, &wal.name);
        if missing.exists() {
            spool::remove_file(&missing)?;
            if !cfg.bool("archive-missing-retry") {
                crate::info!(
                    "WAL file '{}' is not in the archive (the archive-get:async worker found it \
                     missing in this run; archive-missing-retry=n)",
                    wal.name
                );
                return Ok(Some(Outcome::NotFound));
            }
            return Ok(None);
        }
        // The worker is fetching it right now: waiting is cheaper than fetching it twice.
        if Instant::now() >= next_liveness {
            next_liveness = Instant::now() + Duration::from_millis(100);
            worker_alive = lock::is_held(&lock_path, stanza, LockType::Archive);
        }
        if !worker_alive || Instant::now() >= deadline || !being_fetched(dir, &wal.name) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
        crate::signal::check()?;
    }
}

/// A prefetched copy of `wal` went away between listing and handing over: the spool was
/// removed under us, which is allowed at any time. The repository answers instead.
fn vanished(wal: &WalName) -> Option<Outcome> {
    crate::info!(
        "WAL file '{}' left the spool before it was handed over (the spool was removed): \
         fetching it from the repository",
        wal.name
    );
    None
}

fn being_fetched(dir: &Path, wal: &str) -> bool {
    spool::read_file(&dir.join(prefetch::FETCHING))
        .ok()
        .flatten()
        .is_some_and(|b| String::from_utf8_lossy(&b).lines().any(|l| l == wal))
}

/// Starts the worker on the segments after `wal` unless one runs or the spool holds half
/// the queue already (the worker left because it was full). A failure to start it costs
/// only speed: it is logged, and the segment handed over stands.
fn keep_prefetching(
    cfg: &Config,
    stanza: &str,
    dir: &Path,
    data_dir: &Path,
    wal: &WalName,
    dest: &Path,
) {
    let Ok(lock_path) = cfg.required_path("lock-path") else {
        return;
    };
    if lock::is_held(&lock_path, stanza, LockType::Archive) {
        return;
    }
    let queue_max = cfg.bytes("archive-get-queue-max").unwrap_or(128 << 20);
    if prefetch::queued_bytes(dir) >= queue_max / 2 {
        return;
    }
    let Some(next) =
        prefetch::segment_size_of(dest).and_then(|s| prefetch::next_segment(&wal.name, s))
    else {
        return;
    };
    if let Err(e) = spool::spawn_worker(
        cfg,
        Cmd::ArchiveGet,
        &[next, data_dir.display().to_string()],
    ) {
        crate::warn!("WAL is not prefetched: {}", e.message);
    }
}
