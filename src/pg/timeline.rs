//! Timeline history files (`0000000N.history`): what PostgreSQL writes when a timeline
//! begins, one line per ancestor timeline with the LSN where it was left. Owns their parsing
//! and the rules PostgreSQL's readTimeLineHistory() applies, so a file that would make
//! recovery fail is never archived.

use super::wal::parse_lsn_exact;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline this line describes.
    pub parent_tli: u32,
    /// Where the ancestor was left for the next timeline.
    pub switch_lsn: u64,
    pub reason: String,
}

/// Parses the history file of timeline `own_tli`: lines `parentTLI<tab>X/X<tab>reason`, with
/// blank lines and `#` comments allowed. At least one entry; parent timelines strictly
/// ascending and below `own_tli`; switch points never going back. The error says which line
/// is wrong and why.
pub fn parse_history(text: &str, own_tli: u32) -> std::result::Result<Vec<HistoryEntry>, String> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let tli = fields.next().unwrap_or("");
        let parent_tli = match tli.parse::<u32>() {
            Ok(n) if tli.bytes().all(|b| b.is_ascii_digit()) && n > 0 => n,
            _ => {
                return Err(format!(
                    "line {line_no}: '{}' is not a timeline id",
                    tli.escape_debug()
                ))
            }
        };
        let lsn = fields.next().unwrap_or("").trim_end();
        let switch_lsn = parse_lsn_exact(lsn).ok_or_else(|| {
            format!(
                "line {line_no}: '{}' is not a switch point LSN (X/X)",
                lsn.escape_debug()
            )
        })?;
        let reason = fields.next().unwrap_or("").trim_end().to_string();
        if let Some(last) = entries.last() {
            if parent_tli <= last.parent_tli {
                return Err(format!(
                    "line {line_no}: timeline {parent_tli} does not follow timeline {} in increasing order",
                    last.parent_tli
                ));
            }
            if switch_lsn < last.switch_lsn {
                return Err(format!(
                    "line {line_no}: switch point {lsn} is before the previous one"
                ));
            }
        }
        if parent_tli >= own_tli {
            return Err(format!(
                "line {line_no}: timeline {parent_tli} is not an ancestor of timeline {own_tli}"
            ));
        }
        entries.push(HistoryEntry {
            parent_tli,
            switch_lsn,
            reason,
        });
    }
    if entries.is_empty() {
        return Err("no timeline entries".to_string());
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_postgresql_writes() {
        let text = "1\t0/3000000\tno recovery target specified\n\n\
                    # comment\n2\t0/5000A28\tat restore point \"x\"\n";
        let h = parse_history(text, 3).unwrap();
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    parent_tli: 1,
                    switch_lsn: 0x300_0000,
                    reason: "no recovery target specified".into()
                },
                HistoryEntry {
                    parent_tli: 2,
                    switch_lsn: 0x500_0A28,
                    reason: "at restore point \"x\"".into()
                },
            ]
        );
        // No reason is what PostgreSQL itself accepts.
        assert_eq!(parse_history("1\t1/0\n", 2).unwrap()[0].switch_lsn, 1 << 32);
    }

    #[test]
    fn refuses_what_recovery_would_refuse() {
        for (text, own, why) in [
            ("", 2, "no timeline entries"),
            ("# only a comment\n\n", 2, "no timeline entries"),
            ("\u{1}\u{fffd}garbage", 2, "is not a timeline id"),
            ("x\t0/3000000\tr\n", 2, "is not a timeline id"),
            ("0\t0/3000000\tr\n", 2, "is not a timeline id"),
            ("1\t03000000\tr\n", 2, "is not a switch point LSN"),
            ("1\n", 2, "is not a switch point LSN"),
            ("1\t0/3000000\tr\n", 1, "is not an ancestor of timeline 1"),
            ("2\t0/3000000\tr\n1\t0/4000000\tr\n", 3, "increasing order"),
            ("1\t0/3000000\tr\n1\t0/4000000\tr\n", 3, "increasing order"),
            (
                "1\t0/4000000\tr\n2\t0/3000000\tr\n",
                3,
                "is before the previous one",
            ),
        ] {
            let e = parse_history(text, own).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
