//! Backup labels and types: the names backups carry in the repository
//! (`YYYYMMDD-HHMMSSF`, `<full>_YYYYMMDD-HHMMSSD|I`), which become directory names, so
//! every module that reads one from a file checks it here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn parse(s: &str) -> Option<BackupType> {
        match s {
            "full" => Some(BackupType::Full),
            "diff" => Some(BackupType::Diff),
            "incr" => Some(BackupType::Incr),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }

    /// The letter that ends a label of this type.
    pub fn letter(self) -> char {
        match self {
            BackupType::Full => 'F',
            BackupType::Diff => 'D',
            BackupType::Incr => 'I',
        }
    }
}

/// `YYYYMMDD-HHMMSS` at the start of `s`, as backup labels carry it.
fn is_stamp(s: &[u8]) -> bool {
    s.len() == 15
        && s.iter().enumerate().all(|(i, b)| match i {
            8 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// The type a backup label names, when it has the only shapes backup ever writes: a full
/// `YYYYMMDD-HHMMSSF`, or a diff or incr `<full label>_YYYYMMDD-HHMMSS` + `D` or `I`. Labels
/// become directory names in the repository, so nothing else is trusted as one.
pub fn label_type(label: &str) -> Option<BackupType> {
    let b = label.as_bytes();
    match b.len() {
        16 if is_stamp(&b[..15]) && b[15] == b'F' => Some(BackupType::Full),
        // Bytes, not `&label[..16]`: a tampered label may have a multi-byte character there.
        33 if is_stamp(&b[..15]) && b[15] == b'F' && b[16] == b'_' && is_stamp(&b[17..32]) => {
            match b[32] {
                b'D' => Some(BackupType::Diff),
                b'I' => Some(BackupType::Incr),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `name` is a backup label (see [`label_type`]).
pub fn is_label(name: &str) -> bool {
    label_type(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_have_only_the_shapes_backup_writes() {
        assert_eq!(label_type("20261122-044646F"), Some(BackupType::Full));
        assert_eq!(
            label_type("20261122-044646F_20261122-050000D"),
            Some(BackupType::Diff)
        );
        assert_eq!(
            label_type("20261122-044646F_20261122-050000I"),
            Some(BackupType::Incr)
        );
        for bad in [
            "",
            "..",
            "../../etc",
            "20261122-044646D",
            "20261122-04464xF",
            "2026112-0446460F",
            "20261122-044646F_20261122-050000F",
            "20261122-044646I_20261122-050000I",
            "20261122-044646F/20261122-050000I",
            "20261122-044646F_20261122-050000Ix",
            "20261122-044646F/../../../../../tmp",
            // 33 bytes with a two-byte character across byte 16: refused, never a panic.
            "20261122-044646\u{e9}20261122-050000I",
        ] {
            assert_eq!(label_type(bad), None, "{bad:?}");
        }
    }
}
