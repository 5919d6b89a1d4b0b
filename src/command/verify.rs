//! verify: reads back everything the repository holds and checks it against its checksum:
//! every stored backup file against its manifest entry (size and SHA-1 of the original
//! content), every archived WAL segment (and `.partial` and `.backup` file) against the SHA-1
//! in its name, the history file of every timeline met and that it parses, every backup's WAL
//! range from start to stop, gaps in the archived WAL from the oldest backup on along the
//! newest timeline's history (a stretch between two backups that expire emptied entirely is
//! not a gap), files in backup directories that no manifest lists, temp files left in them,
//! archive entries of no kind pg_backrest writes, and WAL that archive-push dropped
//! (archive-push-queue-max exceeded: its `.dropped` records, reported as gaps with the time
//! and reason, whether or not a later backup covers them, unless no backup starts before
//! them). Files stream through the copy pipeline's restore direction, in parallel; nothing
//! is held whole. A file with a block index is read block by block, each block decoded on its
//! own from where the index says it starts, as restore reads it: its block checksums and the
//! whole file's SHA-1 are both checked in that one pass, so an index restore could not use
//! fails verify too. Any problem fails the command with the integrity exit code, after the
//! full report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::Serialize;

use super::archive_push::missing_info;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::manifest::{BlockIndex, Manifest};
use crate::pg::timeline::{parse_history, HistoryEntry};
use crate::pg::wal::{
    segment_number, segment_range, WalHeader, WalKind, WalName, LONG_HEADER_SIZE,
};
use crate::pipeline::{self, CompressType, Ends};
use crate::repo::{self, ArchiveIdListing, RepoLayout, WalDirListing, COPY_SUFFIX};
use crate::storage::{EntryKind, Storage};

#[derive(Debug, Default, Serialize)]
struct BackupReport {
    label: String,
    files: usize,
    checked_bytes: u64,
    missing: Vec<String>,
    corrupt: Vec<String>,
    /// WAL segments from the backup's start to stop that are not in the archive.
    wal_missing: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    stanza: String,
    ok: bool,
    backups: Vec<BackupReport>,
    wal_segments: usize,
    /// Stored `.partial` and `.backup` files found (and checked when their name has a
    /// checksum).
    wal_other: usize,
    wal_corrupt: Vec<String>,
    /// A timeline met without its history file, or a history file that does not parse.
    history_problems: Vec<String>,
    /// Entries of the archive that are neither WAL directories, history files nor stored
    /// WAL files, as `ARCHIVE_ID/[DIR/]NAME`.
    archive_unknown: Vec<String>,
    /// Segments missing between the oldest backup's start and the newest archived segment
    /// (those archive-push dropped are in `wal_dropped` instead).
    wal_gaps: Vec<String>,
    /// Runs of segments archive-push dropped (archive-push-queue-max exceeded), as
    /// `ARCHIVE_ID: FIRST...LAST (N segments, ...)`: recorded holes in the archive.
    wal_dropped: Vec<String>,
    /// Files in backup directories that no manifest lists.
    unreferenced: Vec<String>,
    /// Temp files (`.pgbr-tmp.*`) in backup directories: a write that never finished, left
    /// by a process killed outright.
    temp_files: Vec<String>,
}

/// One unit of work for the parallel checks.
enum Check {
    BackupFile {
        backup: usize,
        path: String,
        compress: CompressType,
        checksum: String,
        size: u64,
        key: String,
        /// The block index and the stored size it places the blocks in.
        blocks: Option<(BlockIndex, u64)>,
    },
    Wal {
        path: String,
        name: String,
        sha1: String,
        compress: CompressType,
    },
}

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let info = BackupInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.backup_info()))?;
    let archive = ArchiveInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.archive_info()))?;
    let mut report = Report {
        stanza: stanza.to_string(),
        ..Default::default()
    };
    let mut checks = Vec::new();

    // Backups: every file a manifest says this backup holds itself.
    let mut manifests = Vec::new();
    for label in info.backups.keys() {
        let mut b = BackupReport {
            label: label.clone(),
            ..Default::default()
        };
        match Manifest::load(repo.as_ref(), &layout.manifest(label)) {
            Ok(Some(m)) => {
                let compress = match m.options.compress() {
                    Ok(c) => c.kind(),
                    Err(e) => {
                        b.corrupt.push(format!("backup.manifest: {}", e.message));
                        report.backups.push(b);
                        manifests.push(Some(m));
                        continue;
                    }
                };
                for (key, entry) in m.files.iter().filter(|(_, e)| e.reference.is_none()) {
                    b.files += 1;
                    checks.push(Check::BackupFile {
                        backup: report.backups.len(),
                        path: layout.backup_file(label, &m.stored_name(key)),
                        compress,
                        checksum: entry.checksum.clone(),
                        size: entry.size,
                        key: key.clone(),
                        blocks: entry.block_index.clone().map(|b| (b, entry.repo_size)),
                    });
                }
                manifests.push(Some(m));
            }
            Ok(None) => {
                b.missing.push("backup.manifest".into());
                manifests.push(None);
            }
            Err(e) => {
                b.corrupt.push(format!("backup.manifest: {}", e.message));
                manifests.push(None);
            }
        }
        report.backups.push(b);
    }

    // Archived WAL, newest archive id last: every stored file by its kind, the timelines
    // met (in stored WAL and in the backups of that archive id) and their history files.
    let mut archived: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut segment_size = None;
    let mut histories: BTreeMap<String, BTreeMap<u32, Vec<HistoryEntry>>> = BTreeMap::new();
    let mut dropped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for archive_id in archive.archive_ids_newest_first().into_iter().rev() {
        let dir = layout.archive_id_path(&archive_id);
        let listing = ArchiveIdListing::read(repo.as_ref(), &dir)?;
        let unknown = listing.unknown.iter().map(|u| format!("{archive_id}/{u}"));
        report.archive_unknown.extend(unknown);
        let mut timelines: BTreeSet<u32> = info
            .backups
            .values()
            .filter(|b| {
                info.db
                    .history
                    .iter()
                    .any(|d| d.id == b.db_id && d.archive_id() == archive_id)
            })
            .filter_map(|b| WalName::parse(b.backup_archive_start.as_deref()?).ok())
            .map(|w| w.timeline())
            .collect();
        for sub in &listing.wal_dirs {
            let wal_dir = WalDirListing::read(repo.as_ref(), &format!("{dir}/{sub}"))?;
            let unknown = wal_dir
                .unknown
                .iter()
                .map(|u| format!("{archive_id}/{sub}/{u}"));
            report.archive_unknown.extend(unknown);
            let records = wal_dir.dropped.into_iter().map(|w| w.name);
            dropped
                .entry(archive_id.clone())
                .or_default()
                .extend(records);
            for stored in wal_dir.stored {
                timelines.insert(stored.wal.timeline());
                let path = format!("{dir}/{sub}/{}", stored.file_name);
                let Some(compress) = stored.compress else {
                    report.wal_corrupt.push(format!(
                        "{}: stored with compression '{}' that pg_backrest cannot read",
                        stored.file_name, stored.extension
                    ));
                    continue;
                };
                match stored.segment() {
                    Some(segment) if stored.wal.kind == WalKind::Segment => {
                        if segment_size.is_none() {
                            segment_size = read_segment_size(repo.as_ref(), &path, compress);
                        }
                        archived
                            .entry(archive_id.clone())
                            .or_default()
                            .insert(segment.to_string());
                        report.wal_segments += 1;
                    }
                    _ => report.wal_other += 1,
                }
                if let Some(sha1) = stored.sha1 {
                    checks.push(Check::Wal {
                        path,
                        name: stored.file_name,
                        sha1,
                        compress,
                    });
                }
            }
        }
        let parsed = check_history(
            repo.as_ref(),
            &dir,
            &archive_id,
            &listing.history,
            &timelines,
            &mut report.history_problems,
        );
        histories.insert(archive_id.clone(), parsed);
    }

    run_checks(cfg, repo.as_ref(), checks, &mut report)?;

    // Each backup's own WAL range, and gaps from the oldest backup on.
    let seg_size = segment_size.unwrap_or(16 << 20);
    let current: BTreeSet<String> = archived
        .get(&archive.db.current.archive_id())
        .cloned()
        .unwrap_or_default();
    for (b, m) in report
        .backups
        .iter_mut()
        .zip(&manifests)
        .filter_map(|(b, m)| Some((b, m.as_ref()?)))
    {
        if let (start, Some(stop)) = (&m.backup.archive_start, &m.backup.archive_stop) {
            for seg in segment_range(start, stop, seg_size)? {
                if !current.contains(&seg) {
                    b.wal_missing.push(seg);
                }
            }
        }
    }
    let loaded: Vec<&Manifest> = manifests.iter().flatten().collect();
    if let (Some(oldest), Some(newest)) = (loaded.first(), current.iter().next_back()) {
        let start = &oldest.backup.archive_start;
        // The newest timeline's ancestors; a missing or unparsable history file is already
        // a history problem, and without it the check is skipped rather than guessed.
        let history = WalName::parse(newest).ok().and_then(|w| {
            histories
                .get(&archive.db.current.archive_id())?
                .get(&w.timeline())
        });
        let path = expected_segments(history.map_or(&[], Vec::as_slice), start, newest, seg_size)?;
        if let Some(path) = path {
            report.wal_gaps = wal_gaps(&path, &current, &loaded, seg_size);
        }
    }
    // Dropped WAL is a hole whether or not a later backup covers it (an older one cannot
    // recover across it): named once, with why. A gap before every backup of its archive id
    // is history no restore reaches (pgBackRest's expire leaves such records behind).
    for (archive_id, segments) in dropped {
        if archive_id == archive.db.current.archive_id() {
            let recorded: BTreeSet<&String> = segments.iter().collect();
            report.wal_gaps.retain(|g| !recorded.contains(g));
        }
        let gaps = repo::dropped::gaps_of(
            repo.as_ref(),
            &layout,
            &archive_id,
            segments,
            Some(seg_size),
        );
        for g in gaps.into_iter().filter(|g| g.matters(&info)) {
            report
                .wal_dropped
                .push(format!("{archive_id}: {}", g.describe()));
        }
    }

    // Files in backup directories that no manifest lists.
    for m in &loaded {
        let listed: BTreeSet<String> = m
            .files
            .iter()
            .filter(|(_, e)| e.reference.is_none())
            .map(|(k, _)| m.stored_name(k))
            // A full backup links each tablespace into its pg_data, as pgBackRest does.
            .chain(m.targets.iter().filter_map(|(name, t)| {
                let oid = t.tablespace_id.as_ref()?;
                Some(tablespace_link(name, oid))
            }))
            .chain([
                crate::manifest::MANIFEST_FILE.to_string(),
                format!("{}{COPY_SUFFIX}", crate::manifest::MANIFEST_FILE),
            ])
            .collect();
        list_tree(
            repo.as_ref(),
            &layout.backup_path(&m.backup.label),
            "",
            &mut |rel| {
                if !listed.contains(rel) {
                    report
                        .unreferenced
                        .push(format!("{}/{rel}", m.backup.label));
                }
            },
        )?;
        // Listings hide temp files, so they are asked for on their own.
        for rel in repo.temp_files(&layout.backup_path(&m.backup.label))? {
            report.temp_files.push(format!("{}/{rel}", m.backup.label));
        }
    }

    report.ok = report.wal_corrupt.is_empty()
        && report.wal_gaps.is_empty()
        && report.wal_dropped.is_empty()
        && report.history_problems.is_empty()
        && report.archive_unknown.is_empty()
        && report.unreferenced.is_empty()
        && report.temp_files.is_empty()
        && report
            .backups
            .iter()
            .all(|b| b.missing.is_empty() && b.corrupt.is_empty() && b.wal_missing.is_empty());
    if cfg.str("output") == Some("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render_text(&report));
    }
    if report.ok {
        Ok(())
    } else {
        Err(Error::new(
            Kind::VerifyFailed,
            format!(
                "verify found problems
 in the repository of stanza '{stanza}'"
            ),
        )
        .with_hint("see the report above; restore from a backup that verify reports clean"))
    }
}

fn run_checks(
    cfg: &Config,
    repo: &dyn Storage,
    mut checks: Vec<Check>,
    report: &mut Report,
) -> Result<()> {
    let workers = crate::repo::workers(cfg)?;
    let size_of = |c: &Check| {
        if let Check::BackupFile { size, .. } = c {
            *size
        } else {
            16 << 20
        }
    };
    // Largest first, so the largest files start first, each on a worker of its own.
    checks.sort_by_key(|c| std::cmp::Reverse(size_of(c)));
    let total: u64 = checks.iter().map(size_of).sum();
    let progress = crate::progress::Progress::new("verify", total);
    let shared = Mutex::new(std::mem::take(report));
    workers.try_each_in_order(&checks, |check| {
        let worker_repo = workers.repo(repo);
        let outcome = verify_one(worker_repo, check);
        let mut r = shared
            .lock()
            .map_err(|_| Error::internal("verify report lock poisoned"))?;
        match (check, outcome) {
            (Check::BackupFile { backup, size, .. }, Ok(())) => {
                r.backups[*backup].checked_bytes += size;
                progress.add(*size);
            }
            (Check::BackupFile { backup, key, .. }, Err(Problem::Missing)) => {
                r.backups[*backup].missing.push(key.clone())
            }
            (Check::BackupFile { backup, key, .. }, Err(Problem::Bad(why))) => {
                r.backups[*backup].corrupt.push(format!("{key}: {why}"))
            }
            (Check::Wal { .. }, Ok(())) => progress.add(16 << 20),
            (Check::Wal { name, .. }, Err(Problem::Missing)) => {
                r.wal_corrupt.push(format!("{name}: vanished"))
            }
            (Check::Wal { name, .. }, Err(Problem::Bad(why))) => {
                r.wal_corrupt.push(format!("{name}: {why}"))
            }
        }
        Ok(())
    })?;
    *report = shared
        .into_inner()
        .map_err(|_| Error::internal("verify report lock poisoned"))?;
    for b in &mut report.backups {
        b.missing.sort();
        b.corrupt.sort();
    }
    report.wal_corrupt.sort();
    Ok(())
}

enum Problem {
    Missing,
    Bad(String),
}

/// Streams one stored file through its decompression and SHA-1 and compares.
fn verify_one(repo: &dyn Storage, check: &Check) -> std::result::Result<(), Problem> {
    let (path, compress, checksum, size) = match check {
        Check::BackupFile {
            path,
            compress,
            checksum,
            size,
            blocks: Some((index, repo_size)),
            ..
        } => return verify_blocks(repo, path, *compress, checksum, *size, index, *repo_size),
        Check::BackupFile {
            path,
            compress,
            checksum,
            size,
            ..
        } => (path, *compress, checksum, Some(*size)),
        Check::Wal {
            path,
            compress,
            sha1,
            ..
        } => (path, *compress, sha1, None),
    };
    let mut reader = match repo.open_read(path) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Problem::Missing),
        Err(e) => return Err(Problem::Bad(e.message)),
    };
    let ends = Ends {
        source: path,
        dest: "verification",
    };
    let copied = pipeline::restore(
        &mut reader,
        &mut std::io::sink(),
        compress,
        Some(checksum),
        &ends,
    )
    .map_err(|e| Problem::Bad(e.message))?;
    match size {
        Some(expected) if copied.size != expected => Err(Problem::Bad(format!(
            "size {} instead of {expected}",
            copied.size
        ))),
        _ => Ok(()),
    }
}

/// Reads a stored file with a block index in one pass, block by block as restore does: the
/// bytes before block 0 (the gzip header), each block decoded alone from its stored range
/// with its SHA-1 checked, nothing after the last block, and the whole file's SHA-1 and size.
fn verify_blocks(
    repo: &dyn Storage,
    path: &str,
    compress: CompressType,
    checksum: &str,
    size: u64,
    index: &BlockIndex,
    repo_size: u64,
) -> std::result::Result<(), Problem> {
    use sha1::{Digest as _, Sha1};
    use std::io::Read;
    let bad = |e: Error| Problem::Bad(e.message);
    let mut reader = match repo.open_read(path) {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Problem::Missing),
        Err(e) => return Err(bad(e)),
    };
    let ends = Ends {
        source: path,
        dest: "verification",
    };
    let read_err = |e: std::io::Error| Problem::Bad(format!("unable to read: {e}"));
    // Only gz has bytes before its first block: our 10-byte header (no name, no extra field).
    let head = match compress {
        CompressType::Gz => 10,
        _ => 0,
    };
    if index.offsets.first() != Some(&head) {
        return Err(Problem::Bad(format!(
            "block-index starts its first block at {:?}, not at {head}",
            index.offsets.first()
        )));
    }
    let mut header = [0u8; 10];
    reader
        .read_exact(&mut header[..head as usize])
        .map_err(read_err)?;
    if head > 0 && header[..3] != [0x1f, 0x8b, 8] {
        return Err(Problem::Bad("does not start with a gzip header".into()));
    }
    let mut whole = Sha1::new();
    for block in index.blocks(size, repo_size) {
        let mut range = (&mut reader).take(block.stored_end - block.stored_start);
        pipeline::block::decode_block(&mut range, compress, &block, size, &ends, &mut |b| {
            whole.update(b);
            Ok(())
        })
        .map_err(bad)?;
    }
    let mut more = [0u8; 1];
    if reader.read(&mut more).map_err(read_err)? > 0 {
        return Err(Problem::Bad(format!(
            "stored file is longer than the {repo_size} bytes its blocks end at"
        )));
    }
    let sha1 = hex::encode(whole.finalize());
    if sha1 != checksum {
        return Err(Problem::Bad(format!(
            "checksum mismatch for '{path}': expected {checksum}, got {sha1}"
        )));
    }
    Ok(())
}

/// The segments recovery reads from `start` to `newest` along the history of `newest`'s
/// timeline (`history`: its ancestors as its history file lists them, empty on a single
/// timeline). Segment number k lies on the first ancestor from `start`'s timeline on that
/// was left at a segment above k, else on `newest`'s timeline: the segment holding a switch
/// point belongs to the new timeline, which begins with its parent's pages up to there.
/// None when `start` is after `newest` or on no ancestor at that point (a timeline the
/// newest one did not branch from): there is no path to check, and guessing one would
/// report false gaps.
fn expected_segments(
    history: &[HistoryEntry],
    start: &str,
    newest: &str,
    seg_size: u64,
) -> Result<Option<Vec<String>>> {
    let bad = || {
        Error::new(
            Kind::Format,
            format!("invalid WAL range '{start}' to '{newest}'"),
        )
    };
    let start_tli = WalName::parse(start).map_err(|_| bad())?.timeline();
    let newest_tli = WalName::parse(newest).map_err(|_| bad())?.timeline();
    let first = segment_number(start, seg_size).ok_or_else(bad)?;
    let last = segment_number(newest, seg_size).ok_or_else(bad)?;
    if first > last {
        return Ok(None);
    }
    if last - first > 1_000_000 {
        return Err(bad());
    }
    // (timeline, first segment number not on it) from start's timeline on.
    let switches: Vec<(u32, u64)> = history
        .iter()
        .filter(|e| e.parent_tli >= start_tli && e.parent_tli < newest_tli)
        .map(|e| (e.parent_tli, e.switch_lsn / seg_size.max(1)))
        .collect();
    let on_path = start_tli == newest_tli
        || switches
            .first()
            .is_some_and(|&(tli, end)| tli == start_tli && first <= end);
    if !on_path {
        return Ok(None);
    }
    let per_log = 0x1_0000_0000u64 / seg_size.max(1);
    Ok(Some(
        (first..=last)
            .map(|k| {
                let tli = switches
                    .iter()
                    .find(|&&(_, end)| k < end)
                    .map_or(newest_tli, |&(tli, _)| tli);
                format!("{tli:08X}{:08X}{:08X}", k / per_log, k % per_log)
            })
            .collect(),
    ))
}

/// The segments of `path` (expected_segments()) missing from `archived`. Between two
/// backups whose archive retention expire removed, nothing along the path is left at all:
/// that stretch is expired, not a gap; a gap is a hole among what is kept. Backups are
/// compared by segment number, as they may lie on different timelines.
fn wal_gaps(
    path: &[String],
    archived: &BTreeSet<String>,
    backups: &[&Manifest],
    seg_size: u64,
) -> Vec<String> {
    let Some(first) = path.first().and_then(|s| segment_number(s, seg_size)) else {
        return Vec::new();
    };
    let kept = |k: u64| {
        k.checked_sub(first)
            .and_then(|i| path.get(i as usize))
            .is_some_and(|s| archived.contains(s))
    };
    let mut ranges: Vec<(u64, u64)> = backups
        .iter()
        .filter_map(|m| {
            Some((
                segment_number(&m.backup.archive_start, seg_size)?,
                segment_number(m.backup.archive_stop.as_deref()?, seg_size)?,
            ))
        })
        .collect();
    ranges.sort();
    let expired: Vec<(u64, u64)> = ranges
        .windows(2)
        .map(|w| (w[0].1, w[1].0))
        .filter(|&(stop, next)| !(stop.saturating_add(1)..next).any(kept))
        .collect();
    path.iter()
        .enumerate()
        .filter(|(i, s)| {
            let k = first + *i as u64;
            !archived.contains(*s) && !expired.iter().any(|&(stop, next)| stop < k && k < next)
        })
        .map(|(_, s)| s.clone())
        .collect()
}

/// Largest history file read: one line per ancestor timeline stays far below this.
const HISTORY_MAX: u64 = 1 << 20;

/// Every timeline above 1 met in an archive id needs its history file there (recovery
/// along it asks for that file), and every history file must parse. Problems go to
/// `problems` in timeline order; nothing here fails the walk. Returns the entries of every
/// history file that parsed, by its timeline.
fn check_history(
    repo: &dyn Storage,
    dir: &str,
    archive_id: &str,
    history: &[WalName],
    met: &BTreeSet<u32>,
    problems: &mut Vec<String>,
) -> BTreeMap<u32, Vec<HistoryEntry>> {
    let mut parsed_ok = BTreeMap::new();
    let files: BTreeMap<u32, &WalName> = history.iter().map(|h| (h.timeline(), h)).collect();
    let all: BTreeSet<u32> = met
        .iter()
        .copied()
        .filter(|t| *t > 1)
        .chain(files.keys().copied())
        .collect();
    for tli in all {
        let Some(h) = files.get(&tli) else {
            problems.push(format!(
                "timeline {tli} has no history file {archive_id}/{tli:08X}.history"
            ));
            continue;
        };
        let what = format!("{archive_id}/{}", h.name);
        let mut text = Vec::new();
        let read = match repo.open_read(&format!("{dir}/{}", h.name)) {
            Ok(Some(r)) => {
                use std::io::Read;
                r.take(HISTORY_MAX)
                    .read_to_end(&mut text)
                    .map_err(|e| e.to_string())
            }
            Ok(None) => Err("vanished while verify ran".to_string()),
            Err(e) => Err(e.message),
        };
        let parsed = read.and_then(|_| {
            let text = String::from_utf8(text).map_err(|_| "is not text".to_string())?;
            parse_history(&text, tli)
        });
        match parsed {
            Ok(entries) => {
                parsed_ok.insert(tli, entries);
            }
            Err(why) => problems.push(format!("{what}: {why}")),
        }
    }
    parsed_ok
}

/// The WAL segment size from a stored segment's first page header.
fn read_segment_size(repo: &dyn Storage, path: &str, compress: CompressType) -> Option<u64> {
    let reader = repo.open_read(path).ok()??;
    let mut page = [0u8; LONG_HEADER_SIZE];
    let mut source = pipeline::decoder(reader, compress).ok()?;
    source.read_exact(&mut page).ok()?;
    WalHeader::parse(&page, path)
        .ok()
        .map(|h| u64::from(h.segment_size))
}

/// How a tablespace link of a full backup is listed: its path, `->`, its destination.
fn tablespace_link(target: &str, oid: &str) -> String {
    format!("pg_data/{target} -> ../../pg_tblspc/{oid}")
}

/// Calls `found` for every entry below `dir` other than a directory or a temp file (those
/// are asked for on their own): with its path relative to `dir`, and for a symlink
/// `path -> destination`. Directories are descended, links never followed, so a tablespace
/// link is seen once, as a link, and its files once, under pg_tblspc; an empty directory
/// (a full backup keeps every one, as pgBackRest) shows nothing.
fn list_tree(repo: &dyn Storage, dir: &str, rel: &str, found: &mut dyn FnMut(&str)) -> Result<()> {
    let here = if rel.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{rel}")
    };
    for entry in repo.list_info(&here)? {
        if entry.name.starts_with(crate::storage::TEMP_PREFIX) {
            continue;
        }
        let child = if rel.is_empty() {
            entry.name.clone()
        } else {
            format!("{rel}/{}", entry.name)
        };
        match (entry.kind, &entry.link_destination) {
            (EntryKind::Path, _) => list_tree(repo, dir, &child, found)?,
            (EntryKind::Link, Some(dest)) => found(&format!("{child} -> {dest}")),
            _ => found(&child),
        }
    }
    Ok(())
}

fn render_text(r: &Report) -> String {
    let mut out = format!("stanza: {}\n", r.stanza);
    for b in &r.backups {
        let state = if b.missing.is_empty() && b.corrupt.is_empty() && b.wal_missing.is_empty() {
            "ok"
        } else {
            "PROBLEMS"
        };
        out.push_str(&format!(
            "    backup {}: {state}, {} files ({} bytes) checked\n",
            b.label, b.files, b.checked_bytes
        ));
        for m in &b.missing {
            out.push_str(&format!("        missing: {m}\n"));
        }
        for c in &b.corrupt {
            out.push_str(&format!("        corrupt: {c}\n"));
        }
        for w in &b.wal_missing {
            out.push_str(&format!("        WAL it needs is missing: {w}\n"));
        }
    }
    out.push_str(&format!(
        "    wal: {} segments and {} .partial/.backup files checked\n",
        r.wal_segments, r.wal_other
    ));
    for c in &r.wal_corrupt {
        out.push_str(&format!("        corrupt: {c}\n"));
    }
    for h in &r.history_problems {
        out.push_str(&format!("        history: {h}\n"));
    }
    for u in &r.archive_unknown {
        out.push_str(&format!("    unknown entry: {u}\n"));
    }
    for g in &r.wal_gaps {
        out.push_str(&format!("        gap: {g} is missing\n"));
    }
    for d in &r.wal_dropped {
        out.push_str(&format!(
            "        dropped: {d}: archive-push dropped them unarchived; point-in-time \
             recovery across them is impossible\n"
        ));
    }
    for u in &r.unreferenced {
        out.push_str(&format!("    unreferenced file: {u}\n"));
    }
    for t in &r.temp_files {
        out.push_str(&format!(
            "    stray temp file: {t} (an unfinished write; safe to delete)\n"
        ));
    }
    out.push_str(if r.ok {
        "    result: ok\n"
    } else {
        "    result: PROBLEMS FOUND\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(parent_tli: u32, switch_lsn: u64) -> HistoryEntry {
        HistoryEntry {
            parent_tli,
            switch_lsn,
            reason: String::new(),
        }
    }

    const MB16: u64 = 16 << 20;

    #[test]
    fn expected_segments_follow_the_history_of_the_newest_timeline() {
        let one = expected_segments(
            &[],
            "000000010000000000000002",
            "000000010000000000000004",
            MB16,
        )
        .unwrap();
        assert_eq!(
            one.unwrap(),
            [
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
        // Timeline 1 left inside segment 5, timeline 2 at the start of segment 7: the
        // segment holding each switch point is the new timeline's.
        let history = [entry(1, 0x500_0028), entry(2, 0x700_0000)];
        let path = expected_segments(
            &history,
            "000000010000000000000003",
            "000000030000000000000008",
            MB16,
        )
        .unwrap();
        assert_eq!(
            path.unwrap(),
            [
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000030000000000000007",
                "000000030000000000000008"
            ]
        );
        // From timeline 2 on, timeline 1's entry plays no part.
        let path = expected_segments(
            &history,
            "000000020000000000000006",
            "000000030000000000000007",
            MB16,
        )
        .unwrap();
        assert_eq!(
            path.unwrap(),
            ["000000020000000000000006", "000000030000000000000007"]
        );
        // A start in the segment of the switch point is on the path; the numbers carry
        // over into the next log file (1 GiB segments: 4 a log file).
        let path = expected_segments(
            &[entry(1, 0x1_0000_0010)],
            "000000010000000000000003",
            "000000020000000100000001",
            1 << 30,
        )
        .unwrap();
        assert_eq!(
            path.unwrap(),
            [
                "000000010000000000000003",
                "000000020000000100000000",
                "000000020000000100000001"
            ]
        );
    }

    #[test]
    fn no_expected_segments_off_the_newest_timelines_ancestry() {
        let history = [entry(1, 0x500_0028)];
        for (why, history, start) in [
            // Timeline 3 branched from 1: timeline 2 is a sibling.
            ("sibling", &history[..], "000000020000000000000006"),
            // On timeline 1 after timeline 3 left it: a fork of its own.
            ("past the switch", &history[..], "000000010000000000000006"),
            // No history file (a history problem already): nothing to follow.
            ("no history", &[][..], "000000010000000000000002"),
            // The oldest backup starts after the newest segment.
            ("after newest", &history[..], "000000030000000000000009"),
        ] {
            let path = expected_segments(history, start, "000000030000000000000008", MB16);
            assert_eq!(path.unwrap(), None, "{why}");
        }
        let err = expected_segments(&[], "garbage", "000000010000000000000001", MB16);
        assert_eq!(err.unwrap_err().kind, Kind::Format);
    }

    /// A stored file with a block index is verified block by block: clean when the stored
    /// bytes, the index and the whole-file SHA-1 agree; a problem naming what is wrong when
    /// an offset, a block checksum, the whole checksum or the stored file's length is not.
    #[test]
    fn indexed_files_are_verified_block_by_block() {
        use crate::pipeline::block::tests::stored_with_index;
        use crate::pipeline::test_data::pages;
        use crate::storage::posix::PosixStorage;
        use sha1::{Digest as _, Sha1};

        let dir = tempfile::tempdir().unwrap();
        let repo = PosixStorage::new(dir.path());
        let data = pages(5 * 65536 + 1234, 700);
        let whole = hex::encode(Sha1::digest(&data));
        for kind in [CompressType::Gz, CompressType::Zst, CompressType::None] {
            let (stored, index) = stored_with_index(&data, kind, 65536);
            let check = |bytes: &[u8], index: &BlockIndex, checksum: &str| {
                std::fs::write(dir.path().join("f"), bytes).unwrap();
                let size = data.len() as u64;
                match verify_blocks(&repo, "f", kind, checksum, size, index, stored.len() as u64) {
                    Ok(()) => "clean".to_string(),
                    Err(Problem::Missing) => "missing".to_string(),
                    Err(Problem::Bad(why)) => why,
                }
            };
            assert_eq!(check(&stored, &index, &whole), "clean", "{kind:?}");

            let mut moved = index.clone();
            moved.offsets[2] += 1;
            let why = check(&stored, &moved, &whole);
            assert!(
                why.contains("block 1") || why.contains("block 2"),
                "{kind:?}: {why}"
            );

            let mut wrong_block = index.clone();
            wrong_block.checksums[3] = wrong_block.checksums[3].flipped();
            let why = check(&stored, &wrong_block, &whole);
            assert!(
                why.contains("block 3") && why.contains("checksum"),
                "{kind:?}: {why}"
            );

            let why = check(&stored, &index, &"0".repeat(40));
            assert!(why.contains("checksum mismatch"), "{kind:?}: {why}");

            let why = check(&stored[..stored.len() - 3], &index, &whole);
            assert!(why.contains("block 5"), "{kind:?}: {why}");

            let mut longer = stored.clone();
            longer.push(0);
            let why = check(&longer, &index, &whole);
            assert!(why.contains("longer"), "{kind:?}: {why}");
        }
    }
}
