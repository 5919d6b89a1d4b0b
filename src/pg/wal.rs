//! WAL file names and the long page header at the start of every WAL segment.
//!
//! The header is parsed from a byte slice with explicit offsets (XLogLongPageHeaderData,
//! stable since PostgreSQL 9.x); the magic number identifies the major version, so a
//! segment from a different version or cluster (system identifier) is refused before a byte
//! of it reaches the repository.

use crate::error::{Error, Kind, Result};

/// The kinds of file archive_command hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    /// `000000010000000100000023`
    Segment,
    /// `000000010000000100000023.partial`: the last, incomplete segment of a timeline.
    Partial,
    /// `000000010000000100000023.00000028.backup`: a backup history file.
    Backup,
    /// `00000002.history`: a timeline history file.
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalName {
    pub name: String,
    pub kind: WalKind,
}

/// Whether `s` is exactly `len` upper-case hex digits, as PostgreSQL names WAL files.
pub(crate) fn is_upper_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalName {
    pub fn parse(name: &str) -> Result<WalName> {
        // Names come from PostgreSQL and from repository listings; only ASCII ones can be
        // WAL names, and checking that first keeps the slicing below on char boundaries.
        let kind = if !name.is_ascii() {
            None
        } else if is_upper_hex(name, 24) {
            Some(WalKind::Segment)
        } else if name.len() == 32 && name.ends_with(".partial") && is_upper_hex(&name[..24], 24) {
            Some(WalKind::Partial)
        } else if name.len() == 40
            && name.ends_with(".backup")
            && is_upper_hex(&name[..24], 24)
            && name.as_bytes()[24] == b'.'
            && is_upper_hex(&name[25..33], 8)
        {
            Some(WalKind::Backup)
        } else if name.len() == 16 && name.ends_with(".history") && is_upper_hex(&name[..8], 8) {
            Some(WalKind::History)
        } else {
            None
        };
        match kind {
            Some(kind) => Ok(WalName {
                name: name.to_string(),
                kind,
            }),
            None => Err(Error::new(
                Kind::Format,
                format!("'{name}' is not a WAL segment, partial, backup or history file name"),
            )
            .with_hint("archive-push takes %p and archive-get takes %f from PostgreSQL")),
        }
    }

    /// The archive subdirectory of segment-like files: timeline and log number, the first 16
    /// hex digits. History files live directly in the archive id directory.
    pub fn archive_subdir(&self) -> Option<&str> {
        match self.kind {
            WalKind::History => None,
            _ => Some(&self.name[..16]),
        }
    }

    /// The timeline the name gives (history files: the timeline they start).
    pub fn timeline(&self) -> u32 {
        u32::from_str_radix(&self.name[..8], 16).unwrap_or(0)
    }

    /// Whether the file starts with a WAL page header that can be checked.
    pub fn has_page_header(&self) -> bool {
        matches!(self.kind, WalKind::Segment | WalKind::Partial)
    }
}

/// The segment names from `start` to `stop` inclusive, on `start`'s timeline.
pub fn segment_range(start: &str, stop: &str, segment_size: u64) -> Result<Vec<String>> {
    let bad = || {
        Error::new(
            Kind::Format,
            format!("invalid WAL range '{start}' to '{stop}'"),
        )
    };
    let number = |n: &str| (n.len() == 24).then(|| segment_number(n, segment_size))?;
    let first = number(start).ok_or_else(bad)?;
    let last = number(stop).ok_or_else(bad)?;
    if last < first || last - first > 1_000_000 {
        return Err(bad());
    }
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    let tli = &start[..8];
    Ok((first..=last)
        .map(|n| format!("{tli}{:08X}{:08X}", n / per_log, n % per_log))
        .collect())
}

/// A segment's place in the WAL stream with `segment_size`-byte segments, whatever its
/// timeline: from the log and segment numbers of its name (the first 24 hex digits).
pub fn segment_number(name: &str, segment_size: u64) -> Option<u64> {
    let (_, log, seg) = segment_parts(name)?;
    Some(u64::from(log) * (0x1_0000_0000 / segment_size.max(1)) + u64::from(seg))
}

/// Smallest and largest WAL segment sizes PostgreSQL allows (initdb --wal-segsize, a power
/// of two).
pub const MIN_SEGMENT_SIZE: u32 = 1 << 20;
pub const MAX_SEGMENT_SIZE: u32 = 1 << 30;

/// An LSN exactly as PostgreSQL prints it, `X/X` with 1 to 8 hex digits on each side.
pub fn parse_lsn_exact(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let half = |s: &str| {
        (!s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
    };
    Some((half(hi)? << 32) | half(lo)?)
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn is_valid_segment_size(size: u32) -> bool {
    size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size)
}

/// The timeline, log and segment numbers of a 24-hex-digit segment name.
fn segment_parts(name: &str) -> Option<(u32, u32, u32)> {
    if !is_upper_hex(name.get(..24)?, 24) {
        return None;
    }
    let part = |r: std::ops::Range<usize>| u32::from_str_radix(&name[r], 16).ok();
    Some((part(0..8)?, part(8..16)?, part(16..24)?))
}

/// The start LSN of segment `log`/`seg` with `segment_size`-byte segments; None when `seg`
/// is past the last segment of a log file (a name PostgreSQL never gives such segments).
fn segment_start(log: u32, seg: u32, segment_size: u32) -> Option<u64> {
    let per_log = (1u64 << 32) / u64::from(segment_size);
    (u64::from(seg) < per_log)
        .then(|| (u64::from(log) << 32) + u64::from(seg) * u64::from(segment_size))
}

/// Size of the long page header we read; also the smallest WAL block size.
pub const LONG_HEADER_SIZE: usize = 40;
const XLP_LONG_HEADER: u16 = 0x0002;

/// WAL page magic numbers by PostgreSQL major version (XLOG_PAGE_MAGIC in xlog_internal.h).
const MAGIC: &[(u16, &str)] = &[
    (0xD101, "12"),
    (0xD106, "13"),
    (0xD10D, "14"),
    (0xD110, "15"),
    (0xD113, "16"),
    (0xD116, "17"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalHeader {
    pub version: String,
    pub timeline: u32,
    pub page_addr: u64,
    pub system_id: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl WalHeader {
    /// Parses the long header of a segment's first page.
    pub fn parse(page: &[u8], file: &str) -> Result<WalHeader> {
        let bad = |why: &str| {
            Error::new(
                Kind::Format,
                format!("'{file}' is not a valid WAL segment: {why}"),
            )
        };
        if page.len() < LONG_HEADER_SIZE {
            return Err(bad("shorter than a WAL page header"));
        }
        let u16_at = |o: usize| u16::from_le_bytes([page[o], page[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([page[o], page[o + 1], page[o + 2], page[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let magic = u16_at(0);
        let info = u16_at(2);
        let version = MAGIC
            .iter()
            .find(|(m, _)| *m == magic)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| bad(&format!("unknown page magic 0x{magic:04X}")))?;
        if info & XLP_LONG_HEADER == 0 {
            return Err(bad("first page has no long header"));
        }
        Ok(WalHeader {
            version,
            timeline: u32_at(4),
            page_addr: u64_at(8),
            system_id: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        })
    }

    /// Checks that the file holding this header is the one its name says (segments and
    /// .partial files): a valid segment size equal to the file size, the name's timeline, and
    /// the name's start position as the first page's address. A real segment archived under
    /// another name would be fetched by recovery as the wrong WAL, and since a different file
    /// under an archived name is refused forever, the right one could never follow.
    pub fn check_matches_name(&self, wal: &WalName, file_size: u64, file: &str) -> Result<()> {
        let bad = |message: String, hint: &str| {
            Err(Error::new(Kind::Format, message).with_hint(hint.to_string()))
        };
        if !is_valid_segment_size(self.segment_size) {
            return bad(
                format!(
                    "'{file}' is not a valid WAL segment: its header gives a segment size of {} bytes, not a power of two from 1 MB to 1 GB",
                    self.segment_size
                ),
                "the file is damaged or is not WAL; archive only what PostgreSQL hands to archive_command",
            );
        }
        if file_size != u64::from(self.segment_size) {
            return bad(
                format!(
                    "WAL {} '{file}' is {file_size} bytes, but its header says segments are {} bytes",
                    if wal.kind == WalKind::Partial { "partial segment" } else { "segment" },
                    self.segment_size
                ),
                "PostgreSQL archives only complete, full-size segments (a .partial too); this file was truncated or altered",
            );
        }
        let Some((tli, log, seg)) = segment_parts(&wal.name) else {
            return Err(Error::internal(format!(
                "'{}' has no segment number",
                wal.name
            )));
        };
        // Not `!=`: the first segment of a new timeline starts as a copy of the old
        // timeline's segment up to the switch point, so its first page carries the parent's
        // timeline. A later timeline than the name's is never right.
        if self.timeline > tli {
            return bad(
                format!(
                    "'{file}' is named for timeline {tli}, but its page header says timeline {}",
                    self.timeline
                ),
                "the file was renamed or copied from another timeline; archive each segment under the name PostgreSQL gave it",
            );
        }
        let Some(start) = segment_start(log, seg, self.segment_size) else {
            return bad(
                format!(
                    "'{file}' names segment {seg:08X} of log {log:08X}, which does not exist with {}-byte segments",
                    self.segment_size
                ),
                "the file was renamed; archive each segment under the name PostgreSQL gave it",
            );
        };
        if self.page_addr != start {
            let per_log = (1u64 << 32) / u64::from(self.segment_size);
            let segno = self.page_addr / u64::from(self.segment_size);
            return bad(
                format!(
                    "'{file}' is named for WAL position {}, but its page header says it starts at {} (the segment named {:08X}{:08X}{:08X})",
                    format_lsn(start),
                    format_lsn(self.page_addr),
                    self.timeline,
                    segno / per_log,
                    segno % per_log
                ),
                "the file was renamed or copied over another segment; archive each segment under the name PostgreSQL gave it",
            );
        }
        Ok(())
    }
}

/// Checks a backup history file (`<start segment>.<offset>.backup`, written by
/// pg_backup_stop): it must say where the backup started, matching its name, and where it
/// stopped, on the name's timeline. `text` is the file's content; `file` names it in errors.
pub fn check_backup_history(wal: &WalName, text: &str, file: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::new(
            Kind::Format,
            format!("'{file}' is not a valid backup history file: {why}"),
        )
        .with_hint("archive only the .backup files PostgreSQL hands to archive_command"))
    };
    // "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"
    let location = |key: &str| -> Option<std::result::Result<(u64, String), String>> {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        let parsed = line
            .strip_suffix(')')
            .and_then(|l| l.split_once(" (file "))
            .and_then(|(lsn, seg)| {
                let lsn = parse_lsn_exact(lsn)?;
                segment_parts(seg).filter(|_| seg.len() == 24)?;
                Some((lsn, seg.to_string()))
            });
        Some(parsed.ok_or_else(|| {
            format!(
                "'{}{}' is not 'X/X (file SEGMENT)'",
                key,
                line.escape_debug()
            )
        }))
    };
    let (start, start_file) = match location("START WAL LOCATION: ") {
        None => return bad("it has no START WAL LOCATION line".into()),
        Some(Err(e)) => return bad(e),
        Some(Ok(l)) => l,
    };
    let (stop, stop_file) = match location("STOP WAL LOCATION: ") {
        None => return bad("it has no STOP WAL LOCATION line".into()),
        Some(Err(e)) => return bad(e),
        Some(Ok(l)) => l,
    };
    let offset = u32::from_str_radix(&wal.name[25..33], 16).unwrap_or(u32::MAX);
    // The segment size is not in the file: some valid size must put the start position in
    // the named segment at the named offset.
    let (_, log, seg) = segment_parts(&start_file).unwrap_or_default();
    let matches_name = start_file[8..24] == wal.name[8..24]
        && (MIN_SEGMENT_SIZE.trailing_zeros()..=MAX_SEGMENT_SIZE.trailing_zeros()).any(|shift| {
            let size = 1u32 << shift;
            segment_start(log, seg, size)
                .is_some_and(|s| start >= s && start - s == u64::from(offset) && offset < size)
        });
    if !matches_name {
        return bad(format!(
            "its START WAL LOCATION {} (file {start_file}) is not offset {offset:08X} of segment {}",
            format_lsn(start),
            &wal.name[8..24]
        ));
    }
    if stop < start {
        return bad(format!(
            "its STOP WAL LOCATION {} is before its START WAL LOCATION {}",
            format_lsn(stop),
            format_lsn(start)
        ));
    }
    if stop_file[..8] != wal.name[..8] {
        return bad(format!(
            "it stopped on timeline {} (file {stop_file}), but is named for timeline {}",
            &stop_file[..8],
            &wal.name[..8]
        ));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A first page as PostgreSQL 15 writes it, for tests elsewhere too.
    pub fn page(system_id: u64, magic: u16) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..2].copy_from_slice(&magic.to_le_bytes());
        p[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        p[24..32].copy_from_slice(&system_id.to_le_bytes());
        p[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        p[36..40].copy_from_slice(&8192u32.to_le_bytes());
        p
    }

    #[test]
    fn names() {
        assert_eq!(
            WalName::parse("000000010000000100000023").unwrap().kind,
            WalKind::Segment
        );
        assert_eq!(
            WalName::parse("000000010000000100000023.partial")
                .unwrap()
                .kind,
            WalKind::Partial
        );
        assert_eq!(
            WalName::parse("000000010000000100000023.00000028.backup")
                .unwrap()
                .kind,
            WalKind::Backup
        );
        assert_eq!(
            WalName::parse("0000000A.history").unwrap().kind,
            WalKind::History
        );
        for bad in [
            "00000001000000010000002",
            "000000010000000100000023x",
            "0000000a.history",
            "RECOVERYXLOG",
            "../000000010000000100000023",
            "000000010000000100000023.0000002.backup",
            // Multi-byte characters where the checks slice: refused, never a panic.
            "00000001000000010000002é.partial",
            "0000000é.history",
            "000000010000000100000023é0000028.backup",
        ] {
            assert_eq!(WalName::parse(bad).unwrap_err().kind, Kind::Format, "{bad}");
        }
        let n = WalName::parse("000000010000000100000023").unwrap();
        assert_eq!(n.archive_subdir(), Some("0000000100000001"));
        assert_eq!(n.timeline(), 1);
        assert_eq!(WalName::parse("0000001A.history").unwrap().timeline(), 26);
        assert_eq!(
            WalName::parse("00000002.history").unwrap().archive_subdir(),
            None
        );
    }

    #[test]
    fn ranges_cross_log_boundaries() {
        let r = segment_range(
            "0000000100000001000000FE",
            "000000010000000200000001",
            16 << 20,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                "0000000100000001000000FE",
                "0000000100000001000000FF",
                "000000010000000200000000",
                "000000010000000200000001"
            ]
        );
        assert!(segment_range(
            "000000010000000100000005",
            "000000010000000100000004",
            16 << 20
        )
        .is_err());
    }

    #[test]
    fn header() {
        let h = WalHeader::parse(&page(7_000_000_000_000_000_001, 0xD110), "f").unwrap();
        assert_eq!(h.version, "15");
        assert_eq!(h.system_id, 7_000_000_000_000_000_001);
        assert_eq!(h.segment_size, 16 << 20);
        assert_eq!(h.timeline, 1);
        assert!(WalHeader::parse(&page(1, 0x1234), "f")
            .unwrap_err()
            .message
            .contains("magic 0x1234"));
        assert!(WalHeader::parse(&[0u8; 10], "f").is_err());
    }

    #[test]
    fn lsns_parse_exactly() {
        assert_eq!(parse_lsn_exact("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn_exact("1A/FFFFFFFF"), Some(0x1A_FFFF_FFFF));
        for bad in ["", "0", "/1", "1/", "+1/0", "123456789/0", "0/x", "0/1 "] {
            assert_eq!(parse_lsn_exact(bad), None, "{bad:?}");
        }
    }

    fn with_header(tli: u32, page_addr: u64, segment_size: u32) -> WalHeader {
        let mut p = page(7, 0xD110);
        p[4..8].copy_from_slice(&tli.to_le_bytes());
        p[8..16].copy_from_slice(&page_addr.to_le_bytes());
        p[32..36].copy_from_slice(&segment_size.to_le_bytes());
        WalHeader::parse(&p, "f").unwrap()
    }

    #[test]
    fn a_segment_header_must_match_its_name() {
        let mb16 = 16u32 << 20;
        let name = |n: &str| WalName::parse(n).unwrap();
        let check = |h: &WalHeader, n: &str, size: u64| h.check_matches_name(&name(n), size, n);
        let h = with_header(2, 0x1_2300_0000, mb16);
        check(&h, "000000020000000100000023", mb16.into()).unwrap();
        check(&h, "000000020000000100000023.partial", mb16.into()).unwrap();
        let err = |n: &str, size: u64, h: &WalHeader| {
            let e = check(h, n, size).unwrap_err();
            assert_eq!(e.kind, Kind::Format, "{n}");
            assert!(e.hint.is_some(), "{n}");
            e.message
        };
        let m = err("000000020000000100000024", mb16.into(), &h);
        assert!(
            m.contains("is named for WAL position 1/24000000, but its page header says it starts at 1/23000000 (the segment named 000000020000000100000023)"),
            "{m}"
        );
        let m = err("000000010000000100000023", mb16.into(), &h);
        assert!(
            m.contains("named for timeline 1, but its page header says timeline 2"),
            "{m}"
        );
        // The first segment of timeline 3 begins with timeline 2's pages (PostgreSQL copies
        // them up to the switch point when it promotes in mid-segment).
        check(&h, "000000030000000100000023", mb16.into()).unwrap();
        let m = err("000000020000000100000023.partial", 100, &h);
        assert!(
            m.contains("partial segment") && m.contains("is 100 bytes"),
            "{m}"
        );
        let m = err("000000020000000100000023", 0, &h);
        assert!(m.contains("is 0 bytes"), "{m}");
        for bad_size in [0, 3 << 20, 1 << 19, 1 << 31] {
            let h = with_header(2, 0, bad_size);
            let m = err("000000020000000000000000", bad_size.into(), &h);
            assert!(m.contains("not a power of two from 1 MB to 1 GB"), "{m}");
        }
        // 256 MB segments: 16 per log file, so segment 0x10 of a log does not exist.
        let h = with_header(1, 0x1000_0000, 256 << 20);
        check(&h, "000000010000000000000001", 256 << 20).unwrap();
        let m = err("000000010000000000000010", 256 << 20, &h);
        assert!(
            m.contains("does not exist with 268435456-byte segments"),
            "{m}"
        );
    }

    #[test]
    fn backup_history_files_must_match_their_name() {
        let real = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\nSTART TIME: 2026-11-22 10:00:00 UTC\n\
                    LABEL: it's \u{fffd}\nSTART TIMELINE: 1\n\
                    STOP TIME: 2026-11-22 10:00:01 UTC\nSTOP TIMELINE: 1\n";
        let name = "000000010000000000000002.00000028.backup";
        let wal = WalName::parse(name).unwrap();
        check_backup_history(&wal, real, name).unwrap();
        // 1 MB segments: 0/2000028 is offset 0x28 of segment 0x20.
        let one_mb = real.replace(
            "(file 000000010000000000000002)",
            "(file 000000010000000000000020)",
        );
        let n1 = "000000010000000000000020.00000028.backup";
        check_backup_history(&WalName::parse(n1).unwrap(), &one_mb, n1).unwrap();
        for (text, n, why) in [
            ("", name, "no START WAL LOCATION line"),
            ("\u{fffd}\u{1}random", name, "no START WAL LOCATION line"),
            (&real[..63], name, "no STOP WAL LOCATION line"),
            (
                real,
                "000000010000000000000003.00000028.backup",
                "is not offset 00000028 of segment 0000000000000003",
            ),
            (
                real,
                "000000010000000000000002.00000030.backup",
                "is not offset 00000030",
            ),
            (
                real,
                "000000020000000000000002.00000028.backup",
                "named for timeline 00000002",
            ),
            (
                &real.replace("0/2000100", "0/2000000"),
                name,
                "is before its START WAL LOCATION",
            ),
            (
                &real.replace("0/2000028 (file", "0/2000028(file"),
                name,
                "is not 'X/X (file SEGMENT)'",
            ),
        ] {
            let e = check_backup_history(&WalName::parse(n).unwrap(), text, n).unwrap_err();
            assert_eq!(e.kind, Kind::Format);
            assert!(e.message.contains(why), "{why}: {}", e.message);
            assert!(e
                .message
                .starts_with(&format!("'{n}' is not a valid backup history file: ")));
        }
    }
}
