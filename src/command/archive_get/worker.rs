//! `archive-get:async`: the background worker that fetches the segments after the one
//! recovery asked for into the spool, process-max at a time, so that the next
//! restore_command calls find them on local disk.
//!
//! One runs per stanza (the archive lock, as pgBackRest's). It prefetches on the requested
//! segment's timeline only (history files are never prefetched: they are how PostgreSQL
//! finds a new timeline, and must come from the repository as it is now), up to
//! archive-get-queue-max bytes, and ends when the queue is full or at the first segment the
//! archive does not hold (noted for archive-missing-retry=n). Each segment goes through the
//! same pipeline as a synchronous archive-get: decompressed, checked against the SHA-1 of
//! its stored name, written to a temp file that is fsynced and renamed. Killing it at any
//! instant leaves whole files or none, and the foreground checks each file again anyway.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::prefetch::{self, Run};
use super::{copy_out, Archive, Found, Listings};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::pg::wal::{WalKind, WalName};
use crate::spool::{self, Spool};

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let first = WalName::parse(&cfg.args[0])?;
    if first.kind != WalKind::Segment {
        return Err(Error::new(
            Kind::ParamInvalid,
            format!(
                "archive-get:async prefetches segments, not '{}'",
                first.name
            ),
        ));
    }
    let data_dir = PathBuf::from(&cfg.args[1]);
    let Some(run) = Run::of(&data_dir, &spool::repo_fingerprint(cfg, stanza)) else {
        return Err(Error::new(
            Kind::PathMissing,
            format!(
                "'{}' holds no running cluster (postmaster.pid, global/pg_control): nothing to prefetch for",
                data_dir.display()
            ),
        ));
    };
    let spool = Spool::new(cfg, stanza)?;
    prefetch::remove_other_runs(&spool.in_dir(), &run.name)?;
    let dir = spool.in_dir().join(&run.name);
    Spool::ensure(&dir)?;
    remove_passed(&dir, &first)?;
    let queue_max = cfg.bytes("archive-get-queue-max").unwrap_or(128 << 20);
    let process_max = cfg.int("process-max").unwrap_or(1).max(1) as usize;
    let archive = Archive::open(cfg, stanza)?;
    let workers = crate::repo::workers(cfg)?;

    let mut segment_size = prefetch::list(&dir)?
        .iter()
        .find_map(|p| prefetch::segment_size_of(&p.path));
    let mut cursor = first.name.clone();
    loop {
        crate::signal::check()?;
        let present = prefetch::list(&dir)?;
        let queued: u64 = present.iter().map(|p| p.size).sum();
        let have: BTreeSet<&str> = present.iter().map(|p| p.wal.as_str()).collect();
        let slots = match segment_size {
            None => 1,
            Some(s) => (queue_max.saturating_sub(queued) / s) as usize,
        };
        // Always at least one segment ahead, even with a queue smaller than a segment.
        let slots = if present.is_empty() {
            slots.max(1)
        } else {
            slots
        };
        if slots == 0 {
            crate::info!(
                "the spool holds {queued} bytes of prefetched WAL, archive-get-queue-max is {queue_max}: done for now"
            );
            break;
        }
        // Names to fetch: from the cursor on, skipping those already here. Without the
        // segment size (nothing fetched yet) only the cursor itself is known.
        let mut names = Vec::new();
        let mut c = cursor.clone();
        for _ in 0..(slots.min(process_max * 2) + have.len()) {
            if names.len() == slots.min(process_max * 2) {
                break;
            }
            if !have.contains(c.as_str()) {
                names.push(c.clone());
            }
            match segment_size.and_then(|s| prefetch::next_segment(&c, s)) {
                Some(n) => c = n,
                None => break,
            }
        }
        if names.is_empty() {
            break;
        }
        // A fresh listing per batch: the archive grows while a standby replays.
        let mut listings = Listings::default();
        let mut found: Vec<(WalName, Found)> = Vec::new();
        let mut missing = None;
        for n in &names {
            let wal = WalName::parse(n)?;
            match archive.find(archive.repo.as_ref(), &wal, &mut listings)? {
                Some(f) if f.stored.sha1.is_some() => found.push((wal, f)),
                _ => {
                    missing = Some(wal);
                    break;
                }
            }
        }
        if !found.is_empty() {
            let note: String = found.iter().map(|(w, _)| format!("{}\n", w.name)).collect();
            spool::write_file(&dir, prefetch::FETCHING, note.as_bytes())?;
            let fetched = workers.try_each_in_order(&found, |(wal, f)| {
                let repo = workers.repo(archive.repo.as_ref());
                let sha1 = f.stored.sha1.as_deref().unwrap_or_default();
                copy_out(
                    repo,
                    &f.path(),
                    &f.stored,
                    &dir,
                    &prefetch::file_name(&wal.name, sha1),
                )?;
                crate::info!(
                    "prefetched WAL file '{}' from the archive ({})",
                    wal.name,
                    f.archive_id
                );
                Ok(())
            });
            spool::remove_file(&dir.join(prefetch::FETCHING))?;
            fetched?;
            if segment_size.is_none() {
                let (wal, f) = &found[0];
                let sha1 = f.stored.sha1.as_deref().unwrap_or_default();
                segment_size =
                    prefetch::segment_size_of(&dir.join(prefetch::file_name(&wal.name, sha1)));
            }
        }
        if let Some(wal) = missing {
            // Noted for archive-missing-retry=n; by default the foreground looks again.
            spool::write_file(&dir, &format!("{}.missing", wal.name), b"")?;
            crate::info!(
                "WAL file '{}' is not in the archive: prefetching ends there",
                wal.name
            );
            break;
        }
        let Some(next) = names
            .last()
            .and_then(|l| segment_size.and_then(|s| prefetch::next_segment(l, s)))
        else {
            break;
        };
        cursor = next;
    }
    Ok(())
}

/// Removes prefetched files recovery has passed (before `first`, the segment after the one
/// it asked for) or that are on another timeline (it never goes back to one), and notes of
/// missing segments from before.
fn remove_passed(dir: &std::path::Path, first: &WalName) -> Result<()> {
    // The segment size does not matter for ordering within a timeline: names sort as
    // positions do.
    let tli = &first.name[..8];
    let mut removed = false;
    for p in prefetch::list(dir)? {
        if &p.wal[..8] != tli || p.wal.as_str() < first.name.as_str() {
            spool::remove_file(&p.path)?;
            removed = true;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".missing") {
            spool::remove_file(&entry.path())?;
            removed = true;
        }
    }
    if removed {
        spool::sync(dir)?;
    }
    Ok(())
}
