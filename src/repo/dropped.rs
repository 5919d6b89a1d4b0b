//! Records of WAL that archive-push dropped (archive-push-queue-max exceeded): one small
//! file per segment in the WAL directory where the segment would have been stored, named
//! `TTTTTTTT.LLLLLLLL.SSSSSSSS.dropped` (the segment's timeline, log and segment numbers).
//!
//! pgBackRest drops WAL silently; this record is what makes the gap visible to `info`,
//! `verify` and `check` until a backup starts after it. The name holds no run of 24
//! upper-case hex digits, on purpose: monitoring that lists the archive takes any such name
//! for a stored segment (check_pgbackrest 2.3 matches `[0-9A-F]{24}.*` unanchored), and would
//! then see no hole where the WAL is missing. pgBackRest's info, verify and archive-get
//! (`^[0-F]{24}-[0-f]{40}...`) pass it by; its expire removes it with a WAL directory it
//! removes whole, and leaves it in the directory of its archive retention boundary (its
//! pattern there is `^[0-F]{24}.*$`): such a record lies before every backup, which no
//! recovery crosses, so verify ignores it (see [`Gap::matters`]) and our expire removes it.
//! Our expire removes every record with the WAL around it (see [`crate::command::expire`]).
//!
//! Readers get the records grouped into [`Gap`]s: runs of consecutive dropped segments. A
//! gap is *covered* once a backup of the same archive id starts after its last segment:
//! that backup restores without the dropped WAL, and point-in-time recovery works again from
//! it on. Only recovery from an older backup across the gap stays impossible, which verify
//! keeps reporting until expire removes the gap with the WAL around it.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{ArchiveIdListing, RepoLayout, WalDirListing};
use crate::error::Result;
use crate::info::backup::BackupInfo;
use crate::pg::wal::{WalKind, WalName, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::storage::{self, Storage};

pub const SUFFIX: &str = ".dropped";

/// A record is a line of JSON; anything longer was not written by pg_backrest.
const RECORD_MAX: u64 = 4096;

/// Why and when a segment was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropFacts {
    /// Unix seconds.
    pub time: i64,
    /// Bytes waiting to be pushed when the queue was dropped.
    pub queue_bytes: u64,
    pub queue_max: u64,
}

/// The record's file name for segment `wal`: `TTTTTTTT.LLLLLLLL.SSSSSSSS.dropped`.
pub fn file_name(wal: &WalName) -> String {
    let n = &wal.name;
    format!("{}.{}.{}{SUFFIX}", &n[..8], &n[8..16], &n[16..24])
}

/// The record's path for `wal` in archive id `archive_id`.
pub fn path(layout: &RepoLayout, archive_id: &str, wal: &WalName) -> String {
    format!("{}/{}", layout.wal_dir(archive_id, wal), file_name(wal))
}

/// The segment a WAL directory entry records as dropped (see [`file_name`]).
pub fn classify(entry: &str) -> Option<WalName> {
    let parts: Vec<&str> = entry.strip_suffix(SUFFIX)?.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.len() != 8) {
        return None;
    }
    let wal = WalName::parse(&parts.concat()).ok()?;
    (wal.kind == WalKind::Segment).then_some(wal)
}

/// Records that `wal` was dropped (atomically; recording it again replaces the record).
pub fn record(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive_id: &str,
    wal: &WalName,
    facts: &DropFacts,
) -> Result<()> {
    let mut bytes = serde_json::to_vec(facts).unwrap_or_default();
    bytes.push(b'\n');
    storage::write_small(repo, &path(layout, archive_id, wal), &bytes)
}

/// A run of consecutive dropped segments of one archive id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub archive_id: String,
    /// First and last dropped segment (24 hex digits).
    pub first: String,
    pub last: String,
    /// How many segments were dropped.
    pub segments: u64,
    /// The first segment's record; `None` when it cannot be read (the gap is still there).
    pub facts: Option<DropFacts>,
}

impl Gap {
    /// `FIRST...LAST (N segments, archive-push-queue-max exceeded at TIME)`: how every
    /// command names a gap.
    pub fn describe(&self) -> String {
        let when = self
            .facts
            .as_ref()
            .and_then(|f| chrono::DateTime::from_timestamp(f.time, 0))
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format(" at %Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        format!(
            "{}...{} ({} segment{}, archive-push-queue-max exceeded{when})",
            self.first,
            self.last,
            self.segments,
            if self.segments == 1 { "" } else { "s" }
        )
    }

    /// Whether a backup of this gap's archive id starts after it (see the module docs).
    pub fn covered(&self, backups: &BackupInfo) -> bool {
        self.backup_starts(backups)
            .any(|start| later(start, &self.last))
    }

    /// Whether a recovery could have to cross the gap: a backup of its archive id starts
    /// before its end. A gap before every backup is history no restore reaches.
    pub fn matters(&self, backups: &BackupInfo) -> bool {
        self.backup_starts(backups)
            .any(|start| !later(start, &self.last))
    }

    /// The archive start segments of the backups of this gap's archive id.
    fn backup_starts<'a>(&'a self, backups: &'a BackupInfo) -> impl Iterator<Item = &'a str> {
        backups.backups.values().filter_map(move |b| {
            let same_archive = backups
                .db
                .history
                .iter()
                .any(|d| d.id == b.db_id && d.archive_id() == self.archive_id);
            b.backup_archive_start.as_deref().filter(|_| same_archive)
        })
    }
}

/// Whether segment `a` comes after segment `b` in the WAL stream: by log and segment number
/// first (a later timeline continues from its switch point), then by timeline.
fn later(a: &str, b: &str) -> bool {
    match (a.get(8..24), b.get(8..24)) {
        (Some(pa), Some(pb)) if pa != pb => pa > pb,
        _ => a.get(..8) > b.get(..8),
    }
}

/// Whether `b` directly follows `a` on the same timeline. With the segment size known, by
/// segment number. Without it (info reads no WAL), `b` follows `a` in the same log file when
/// its number is one more, and across log files when it is the next log's first segment and
/// `a` the last segment a log file holds at some segment size (`a + 1` is a power of two
/// that PostgreSQL's segment sizes give: 4 to 4096 segments per log file).
fn follows(a: &str, b: &str, seg_size: Option<u64>) -> bool {
    if a.get(..8) != b.get(..8) {
        return false;
    }
    if let Some(size) = seg_size {
        use crate::pg::wal::segment_number;
        return matches!(
            (segment_number(a, size), segment_number(b, size)),
            (Some(x), Some(y)) if x + 1 == y
        );
    }
    let part =
        |s: &str, r: std::ops::Range<usize>| s.get(r).and_then(|h| u32::from_str_radix(h, 16).ok());
    let (Some(la), Some(sa), Some(lb), Some(sb)) = (
        part(a, 8..16),
        part(a, 16..24),
        part(b, 8..16),
        part(b, 16..24),
    ) else {
        return false;
    };
    let per_log_range =
        (1u64 << 32) / u64::from(MAX_SEGMENT_SIZE)..=(1u64 << 32) / u64::from(MIN_SEGMENT_SIZE);
    (la == lb && sa.checked_add(1) == Some(sb))
        || (la.checked_add(1) == Some(lb)
            && sb == 0
            && (u64::from(sa) + 1).is_power_of_two()
            && per_log_range.contains(&(u64::from(sa) + 1)))
}

/// Groups sorted segment names into runs of consecutive segments: `(first, last, count)`.
pub fn group(segments: &[String], seg_size: Option<u64>) -> Vec<(String, String, u64)> {
    let mut out: Vec<(String, String, u64)> = Vec::new();
    for s in segments {
        match out.last_mut() {
            Some(run) if follows(&run.1, s, seg_size) => {
                run.1 = s.clone();
                run.2 += 1;
            }
            _ => out.push((s.clone(), s.clone(), 1)),
        }
    }
    out
}

/// Every gap recorded in archive id `archive_id`, oldest first. `seg_size` when known makes
/// the grouping exact (see [`follows`]). Reads one record per gap, for its facts.
pub fn gaps(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive_id: &str,
    seg_size: Option<u64>,
) -> Result<Vec<Gap>> {
    let dir = layout.archive_id_path(archive_id);
    let mut segments = Vec::new();
    for sub in ArchiveIdListing::read(repo, &dir)?.wal_dirs {
        let listing = WalDirListing::read(repo, &format!("{dir}/{sub}"))?;
        segments.extend(listing.dropped.into_iter().map(|w| w.name));
    }
    Ok(gaps_of(repo, layout, archive_id, segments, seg_size))
}

/// The gaps `segments` (dropped segments of `archive_id`, found by a caller that walked the
/// archive already) form, each with its first record's facts.
pub fn gaps_of(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive_id: &str,
    mut segments: Vec<String>,
    seg_size: Option<u64>,
) -> Vec<Gap> {
    segments.sort();
    group(&segments, seg_size)
        .into_iter()
        .map(|(first, last, n)| {
            let facts = WalName::parse(&first)
                .ok()
                .and_then(|w| read_facts(repo, &path(layout, archive_id, &w)));
            Gap {
                archive_id: archive_id.to_string(),
                first,
                last,
                segments: n,
                facts,
            }
        })
        .collect()
}

/// A record's facts; `None` when it is gone, unreadable or not pg_backrest's.
fn read_facts(repo: &dyn Storage, path: &str) -> Option<DropFacts> {
    let reader = repo.open_read(path).ok()??;
    let mut bytes = Vec::new();
    reader.take(RECORD_MAX).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `wal` of archive id `archive_id` is recorded as dropped.
pub fn is_dropped(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive_id: &str,
    wal: &WalName,
) -> Result<Option<DropFacts>> {
    if wal.kind != WalKind::Segment {
        return Ok(None);
    }
    let entries = repo.list(&layout.wal_dir(archive_id, wal))?;
    if !entries.contains(&file_name(wal)) {
        return Ok(None);
    }
    Ok(Some(
        read_facts(repo, &path(layout, archive_id, wal)).unwrap_or(DropFacts {
            time: 0,
            queue_bytes: 0,
            queue_max: 0,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classifies_records() {
        let wal = WalName::parse("00000001000000020000000A").unwrap();
        assert_eq!(file_name(&wal), "00000001.00000002.0000000A.dropped");
        assert_eq!(classify(&file_name(&wal)), Some(wal));
        // No run of 24 upper-case hex digits, which monitoring would take for a segment.
        assert!(
            !file_name(&WalName::parse("000000010000000000000005").unwrap())
                .as_bytes()
                .windows(24)
                .any(|w| w
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)))
        );
        for not in [
            "000000010000000000000005",
            "000000010000000000000005.dropped",
            "00000001.00000000.0000000g.dropped",
            "00000001.00000000.00000005.dropped.tmp",
            "00000001.0000000000000005.dropped",
            "00000002.history.dropped",
        ] {
            assert_eq!(classify(not), None, "{not}");
        }
    }

    #[test]
    fn groups_consecutive_segments_into_gaps() {
        let s = names(&[
            "000000010000000000000005",
            "000000010000000000000006",
            "000000010000000000000007",
            "00000001000000000000000A",
            "0000000100000000000000FF",
            "000000010000000100000000",
            "000000020000000100000001",
        ]);
        let runs = group(&s, None);
        let firsts: Vec<(&str, &str, u64)> =
            runs.iter().map(|(a, b, n)| (&a[..], &b[..], *n)).collect();
        assert_eq!(
            firsts,
            vec![
                ("000000010000000000000005", "000000010000000000000007", 3),
                ("00000001000000000000000A", "00000001000000000000000A", 1),
                // Across a log file: FF is the last 16 MiB segment of log 0.
                ("0000000100000000000000FF", "000000010000000100000000", 2),
                // Another timeline is another gap.
                ("000000020000000100000001", "000000020000000100000001", 1),
            ]
        );
        // With 1 GiB segments a log file holds 4: 03 is its last, FF is no segment at all.
        let s = names(&["000000010000000000000003", "000000010000000100000000"]);
        assert_eq!(group(&s, Some(1 << 30)).len(), 1);
        assert_eq!(group(&s, Some(16 << 20)).len(), 2);
        // Not a power of two: 0x7E + 1 is no log file's length.
        let s = names(&["00000001000000000000007E", "000000010000000100000000"]);
        assert_eq!(group(&s, None).len(), 2);
    }

    #[test]
    fn a_later_start_covers_a_gap() {
        let last = "000000010000000000000008";
        assert!(later("000000010000000000000009", last));
        assert!(later("000000020000000000000009", last));
        assert!(later("000000020000000000000008", last));
        assert!(!later("000000010000000000000008", last));
        assert!(!later("000000020000000000000007", last));
        assert!(later("000000010000000100000000", last));
    }
}
