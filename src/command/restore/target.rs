//! Recovery targets: what `restore --type=... --target=...` asks PostgreSQL to recover to,
//! which backup can reach it, and the settings that tell PostgreSQL so.
//!
//! A backup can only reach targets after its consistency point (its stop LSN and time):
//! recovery cannot go back in time from there. For time and LSN targets this is checked,
//! and without `--set` the newest backup that ends before the target is chosen; xid and
//! restore-point names carry no position we could check, so PostgreSQL judges those.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::info::backup::BackupSummary;
use crate::pg::db::parse_lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    /// Recover to the end of the archive.
    Default,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time,
    Xid,
    Lsn,
    Name,
    /// Start as a standby that follows the archive.
    Standby,
    /// Write no recovery settings: the DBA provides them.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryTarget {
    pub kind: TargetType,
    pub target: Option<String>,
    /// Unix seconds of a time target.
    pub time: Option<i64>,
    pub lsn: Option<u64>,
    pub action: String,
    pub exclusive: bool,
    pub timeline: Option<String>,
}

/// Parses the time formats PostgreSQL accepts most often for recovery_target_time:
/// `YYYY-MM-DD HH:MM:SS[.fraction][+TZ]`; without a zone, the local one.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, fmt) {
            return Some(d.timestamp());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
            return n
                .and_local_timezone(chrono::Local)
                .earliest()
                .map(|d| d.timestamp());
        }
    }
    None
}

/// A value as PostgreSQL's configuration file parser (guc-file.l) reads it back exactly:
/// inside '...' a backslash starts an escape (`\n`, octal, `\'`...), so it is doubled, and a
/// quote is doubled. The value must not hold control characters ([`refuse_control_chars`]):
/// a quoted string cannot span lines, and a newline would end the setting early.
pub fn quote_setting(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Refuses a value bound for postgresql.auto.conf that holds a control character: a newline
/// or carriage return would end the setting and let the rest of the value be read as new
/// settings, and no recovery setting needs any other control character.
pub fn refuse_control_chars(option: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(Error::config(format!(
            "option '{option}' holds the control character U+{:04X}, which a recovery setting cannot carry",
            u32::from(c)
        ))
        .with_hint("remove newlines, tabs and other control characters from the value")),
    }
}

/// `--target-timeline`: `latest`, `current`, or a timeline id (decimal, or hex with 0x).
/// A number is written back in decimal: PostgreSQL reads the value with strtoul(..., 0),
/// which takes a leading 0 as octal and ignores trailing garbage, so anything ambiguous is
/// refused here rather than recovering along a timeline nobody asked for.
pub fn parse_timeline(text: &str) -> Result<String> {
    if text == "latest" || text == "current" {
        return Ok(text.to_string());
    }
    let number = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(hex, 16).ok())
            .flatten()
    } else {
        (!text.starts_with('0') && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u32>().ok())
            .flatten()
    };
    match number {
        Some(n) if n > 0 => Ok(n.to_string()),
        _ => Err(Error::config(format!(
            "invalid value '{}' for option '--target-timeline': must be 'latest', 'current' or a timeline id",
            text.escape_debug()
        ))
        .with_hint("a timeline id is a number from 1, e.g. --target-timeline=2 or --target-timeline=0x2")),
    }
}

impl RecoveryTarget {
    pub fn from_config(cfg: &Config) -> Result<RecoveryTarget> {
        let type_name = cfg.str("type").unwrap_or("default");
        let kind = match type_name {
            "default" => TargetType::Default,
            "immediate" => TargetType::Immediate,
            "time" => TargetType::Time,
            "xid" => TargetType::Xid,
            "lsn" => TargetType::Lsn,
            "name" => TargetType::Name,
            "standby" => TargetType::Standby,
            "none" => TargetType::None,
            other => {
                return Err(Error::config(format!(
                    "invalid value '{other}' for option '--type' of restore: must be one of: \
                     default, immediate, time, xid, lsn, name, standby, none"
                )))
            }
        };
        let target = cfg.str("target").map(String::from);
        let needs_target = matches!(
            kind,
            TargetType::Time | TargetType::Xid | TargetType::Lsn | TargetType::Name
        );
        if needs_target && target.is_none() {
            return Err(
                Error::config(format!("restore --type={type_name} requires --target")).with_hint(
                    "e.g. --target='2026-11-22 10:15:00+00' for time, --target=0/3000000 for lsn",
                ),
            );
        }
        if !needs_target && target.is_some() {
            return Err(Error::config(format!(
                "option '--target' does not apply to restore --type={type_name}"
            )));
        }
        let time = match (kind, &target) {
            (TargetType::Time, Some(t)) => Some(parse_time(t).ok_or_else(|| {
                Error::config(format!(
                    "recovery target time '{t}' is not a time pg_backrest can read"
                ))
                .with_hint("use 'YYYY-MM-DD HH:MM:SS+TZ', e.g. '2026-11-22 10:15:00+00'")
            })?),
            _ => None,
        };
        let lsn = match (kind, &target) {
            (TargetType::Lsn, Some(t)) => Some(parse_lsn(t).ok_or_else(|| {
                Error::config(format!("recovery target LSN '{t}' is not an LSN"))
                    .with_hint("an LSN looks like 0/3000060")
            })?),
            _ => None,
        };
        if kind == TargetType::Xid && target.as_deref().is_some_and(|t| t.parse::<u64>().is_err()) {
            return Err(Error::config(format!(
                "recovery target xid '{}' is not a transaction id",
                target.unwrap_or_default()
            )));
        }
        if let Some(t) = &target {
            refuse_control_chars("--target", t)?;
        }
        let timeline = cfg.str("target-timeline").map(parse_timeline).transpose()?;
        Ok(RecoveryTarget {
            kind,
            target,
            time,
            lsn,
            action: cfg.str("target-action").unwrap_or("pause").to_string(),
            exclusive: cfg.bool("target-exclusive"),
            timeline,
        })
    }

    /// The newest backup that can reach this target: for time and LSN targets the newest
    /// that ended before it; otherwise the newest.
    pub fn choose_backup(
        &self,
        backups: &BTreeMap<String, BackupSummary>,
    ) -> Result<Option<String>> {
        let reaches = |b: &BackupSummary| self.reachable_from(b).is_ok();
        if backups.is_empty() {
            return Ok(None);
        }
        match backups.iter().rev().find(|(_, b)| reaches(b)) {
            Some((label, _)) => Ok(Some(label.clone())),
            None => Err(Error::config(format!(
                "no backup ends before recovery target '{}'",
                self.target.as_deref().unwrap_or("")
            ))
            .with_hint("recovery cannot go back before a backup's end; choose a later target or restore an older backup copy")),
        }
    }

    /// Refuses a target before the backup's consistency point.
    pub fn reachable_from(&self, b: &BackupSummary) -> Result<()> {
        if let Some(t) = self.time {
            if t < b.backup_timestamp_stop {
                return Err(Error::config(format!(
                    "recovery target time '{}' is before the end of the backup ({}): recovery cannot reach it",
                    self.target.as_deref().unwrap_or(""),
                    chrono::DateTime::from_timestamp(b.backup_timestamp_stop, 0).map(|d| d.to_rfc3339()).unwrap_or_default()
                ))
                .with_hint("choose an older backup with --set, or a later target"));
            }
        }
        if let (Some(lsn), Some(stop)) =
            (self.lsn, b.backup_lsn_stop.as_deref().and_then(parse_lsn))
        {
            if lsn < stop {
                return Err(Error::config(format!(
                    "recovery target LSN '{}' is before the backup's consistent point {}: recovery cannot reach it",
                    self.target.as_deref().unwrap_or(""),
                    b.backup_lsn_stop.as_deref().unwrap_or_default()
                ))
                .with_hint("choose an older backup with --set, or a later target"));
            }
        }
        Ok(())
    }

    /// postgresql.auto.conf lines (besides restore_command) and the signal file to create.
    pub fn settings(&self) -> (Vec<String>, Option<&'static str>) {
        let quote = quote_setting;
        let mut lines = Vec::new();
        let target_line = match self.kind {
            TargetType::Immediate => Some("recovery_target = 'immediate'".to_string()),
            TargetType::Time => self
                .target
                .as_deref()
                .map(|t| format!("recovery_target_time = {}", quote(t))),
            TargetType::Xid => self
                .target
                .as_deref()
                .map(|t| format!("recovery_target_xid = {}", quote(t))),
            TargetType::Lsn => self
                .target
                .as_deref()
                .map(|t| format!("recovery_target_lsn = {}", quote(t))),
            TargetType::Name => self
                .target
                .as_deref()
                .map(|t| format!("recovery_target_name = {}", quote(t))),
            _ => None,
        };
        if let Some(l) = target_line {
            lines.push(l);
            if self.exclusive && self.kind != TargetType::Immediate {
                lines.push("recovery_target_inclusive = false".into());
            }
            lines.push(format!("recovery_target_action = {}", quote(&self.action)));
        }
        if let Some(tl) = &self.timeline {
            lines.push(format!("recovery_target_timeline = {}", quote(tl)));
        }
        let signal = match self.kind {
            TargetType::None => None,
            TargetType::Standby => Some("standby.signal"),
            _ => Some("recovery.signal"),
        };
        (lines, signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BackupType;

    fn summary(stop: i64, lsn_stop: &str) -> BackupSummary {
        BackupSummary {
            backup_timestamp_start: stop - 10,
            backup_timestamp_stop: stop,
            backup_lsn_start: Some("0/1000000".into()),
            backup_lsn_stop: Some(lsn_stop.into()),
            ..BackupSummary::sample(BackupType::Full)
        }
    }

    fn target(kind: TargetType, text: &str) -> RecoveryTarget {
        RecoveryTarget {
            kind,
            target: Some(text.into()),
            time: parse_time(text),
            lsn: parse_lsn(text),
            action: "promote".into(),
            exclusive: false,
            timeline: None,
        }
    }

    #[test]
    fn times_parse_with_and_without_zones() {
        assert_eq!(parse_time("2026-11-22 10:00:00+00"), Some(1_795_341_600));
        assert_eq!(parse_time("2026-11-22 11:00:00+01:00"), Some(1_795_341_600));
        assert_eq!(
            parse_time("2026-11-22 10:00:00.250+0000"),
            Some(1_795_341_600)
        );
        assert!(parse_time("2026-11-22 10:00:00").is_some());
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn chooses_the_newest_backup_that_ends_before_the_target() {
        let mut backups = BTreeMap::new();
        backups.insert(
            "20261122-090000F".to_string(),
            summary(1_795_338_100, "0/3000000"),
        );
        backups.insert(
            "20261122-100000F".to_string(),
            summary(1_795_341_700, "0/5000000"),
        );
        let t = target(TargetType::Time, "2026-11-22 10:00:00+00");
        assert_eq!(
            t.choose_backup(&backups).unwrap().as_deref(),
            Some("20261122-090000F")
        );
        let t = target(TargetType::Time, "2026-11-22 08:00:00+00");
        assert!(t
            .choose_backup(&backups)
            .unwrap_err()
            .message
            .starts_with("no backup ends before"));
        let t = target(TargetType::Lsn, "0/4000000");
        assert_eq!(
            t.choose_backup(&backups).unwrap().as_deref(),
            Some("20261122-090000F")
        );
        let e = t.reachable_from(&backups["20261122-100000F"]).unwrap_err();
        assert!(
            e.message
                .contains("is before the backup's consistent point 0/5000000"),
            "{e:?}"
        );
        let t = target(TargetType::Name, "before-drop");
        assert_eq!(
            t.choose_backup(&backups).unwrap().as_deref(),
            Some("20261122-100000F")
        );
    }

    #[test]
    fn settings_are_quoted_as_postgresql_reads_them() {
        assert_eq!(quote_setting(r"a\"), r"'a\\'");
        assert_eq!(
            quote_setting("x' restore_command = 'false"),
            "'x'' restore_command = ''false'"
        );
        assert_eq!(quote_setting(r"it''s \\ ok"), r"'it''''s \\\\ ok'");
        assert_eq!(quote_setting(r"\n"), r"'\\n'");
        let t = target(TargetType::Name, r"a\' b");
        assert_eq!(t.settings().0[0], r"recovery_target_name = 'a\\'' b'");
    }

    #[test]
    fn control_characters_are_refused_naming_the_option() {
        assert!(refuse_control_chars("--target", r"it's \ fine").is_ok());
        for bad in ["a\nrestore_command = 'false'", "a\rb", "tab\there", "nul\0"] {
            let e = refuse_control_chars("--target", bad).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Config, "{bad:?}");
            assert!(e
                .message
                .starts_with("option '--target' holds the control character U+"));
        }
    }

    #[test]
    fn target_timeline_is_latest_current_or_a_number() {
        for (text, written) in [
            ("latest", "latest"),
            ("current", "current"),
            ("2", "2"),
            ("0x1A", "26"),
            ("4294967295", "4294967295"),
        ] {
            assert_eq!(parse_timeline(text).unwrap(), written, "{text}");
        }
        for bad in [
            "",
            "0",
            "010",
            "2x",
            "-1",
            "0x",
            "4294967296",
            "Latest",
            "2' x = '1",
        ] {
            let e = parse_timeline(bad).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Config, "{bad:?}");
            assert!(e.message.contains("'--target-timeline'"), "{e:?}");
        }
    }

    #[test]
    fn settings_per_type() {
        let mut t = target(TargetType::Time, "2026-11-22 10:00:00+00");
        t.exclusive = true;
        let (lines, signal) = t.settings();
        assert_eq!(
            lines,
            vec![
                "recovery_target_time = '2026-11-22 10:00:00+00'",
                "recovery_target_inclusive = false",
                "recovery_target_action = 'promote'",
            ]
        );
        assert_eq!(signal, Some("recovery.signal"));
        let s = RecoveryTarget {
            kind: TargetType::Standby,
            target: None,
            time: None,
            lsn: None,
            action: "pause".into(),
            exclusive: false,
            timeline: Some("latest".into()),
        };
        assert_eq!(
            s.settings(),
            (
                vec!["recovery_target_timeline = 'latest'".to_string()],
                Some("standby.signal")
            )
        );
        let n = RecoveryTarget {
            kind: TargetType::None,
            ..s
        };
        assert_eq!(n.settings().1, None);
    }
}
