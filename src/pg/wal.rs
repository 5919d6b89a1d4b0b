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
        let kind = if is_upper_hex(name, 24) {
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
                Kind::WalFormat,
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

    /// The timeline the file belongs to: its first 8 hex digits, for every kind.
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
    let parse = |n: &str| -> Option<(String, u64, u64)> {
        if !is_upper_hex(n, 24) {
            return None;
        }
        Some((
            n[..8].to_string(),
            u64::from_str_radix(&n[8..16], 16).ok()?,
            u64::from_str_radix(&n[16..], 16).ok()?,
        ))
    };
    let bad = || {
        Error::new(
            Kind::WalFormat,
            format!("invalid WAL range '{start}' to '{stop}'"),
        )
    };
    let (tli, log0, seg0) = parse(start).ok_or_else(bad)?;
    let (_, log1, seg1) = parse(stop).ok_or_else(bad)?;
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    let (first, last) = (log0 * per_log + seg0, log1 * per_log + seg1);
    if last < first || last - first > 1_000_000 {
        return Err(bad());
    }
    Ok((first..=last)
        .map(|n| format!("{tli}{:08X}{:08X}", n / per_log, n % per_log))
        .collect())
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
                Kind::WalFormat,
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
        ] {
            assert_eq!(
                WalName::parse(bad).unwrap_err().kind,
                Kind::WalFormat,
                "{bad}"
            );
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
}
