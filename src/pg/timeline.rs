//! Timeline history files (`0000000N.history`): what PostgreSQL writes when a timeline is
//! born, one line per ancestor timeline with the LSN where it was left. This module owns
//! reading them; archive-push (validating what it stores) and verify (checking what is
//! stored) both use [`parse_history`].

/// One line of a history file: timeline `parent_tli` was left at `switch_lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent_tli: u32,
    pub switch_lsn: u64,
    pub reason: String,
}

/// Parses the history file of timeline `own_tli`. Lines are `TLI<tab>LSN<tab>reason` as
/// PostgreSQL writes them (the reason may be absent, as PostgreSQL's own reader allows);
/// blank lines and `#` comments are skipped. Parent timelines must ascend and lie below
/// `own_tli`, or recovery along this timeline would follow a history that cannot be.
/// The error names the line.
pub fn parse_history(text: &str, own_tli: u32) -> Result<Vec<HistoryEntry>, String> {
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |why: String| format!("line {}: {why}", n + 1);
        let mut fields = line.splitn(3, ['\t', ' ']);
        let tli_text = fields.next().unwrap_or("");
        let parent_tli: u32 = tli_text
            .parse()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| at(format!("'{tli_text}' is not a timeline id")))?;
        let lsn_text = fields.next().unwrap_or("").trim();
        let switch_lsn = parse_lsn(lsn_text)
            .ok_or_else(|| at(format!("'{lsn_text}' is not an LSN (X/X in hex)")))?;
        if parent_tli >= own_tli {
            return Err(at(format!(
                "timeline {parent_tli} is not below timeline {own_tli} whose history this is"
            )));
        }
        if let Some(prev) = entries.last() {
            if parent_tli <= prev.parent_tli {
                return Err(at(format!(
                    "timeline {parent_tli} does not ascend from timeline {}",
                    prev.parent_tli
                )));
            }
        }
        entries.push(HistoryEntry {
            parent_tli,
            switch_lsn,
            reason: fields.next().unwrap_or("").trim().to_string(),
        });
    }
    if entries.is_empty() && own_tli > 1 {
        return Err(format!(
            "no timeline switch in the history of timeline {own_tli} (empty or truncated)"
        ));
    }
    Ok(entries)
}

/// `X/X` with one to eight hex digits on each side, as PostgreSQL prints an LSN.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(p, 16).ok())
            .flatten()
    };
    Some((part(hi)? << 32) | part(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_postgresql_writes() {
        let text = "1\t0/3000060\tno recovery target specified\n\n# a comment\n2\t0/50000A0\tbefore 2000-01-01 00:00:00+00\n";
        let h = parse_history(text, 3).unwrap();
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    parent_tli: 1,
                    switch_lsn: 0x300_0060,
                    reason: "no recovery target specified".into()
                },
                HistoryEntry {
                    parent_tli: 2,
                    switch_lsn: 0x500_00A0,
                    reason: "before 2000-01-01 00:00:00+00".into()
                },
            ]
        );
        // PostgreSQL's reader needs no reason.
        assert_eq!(parse_history("1\t1/0\n", 2).unwrap()[0].switch_lsn, 1 << 32);
    }

    #[test]
    fn refuses_what_recovery_could_not_follow() {
        let cases: &[(&str, u32, &str)] = &[
            ("", 2, "empty or truncated"),
            ("# only a comment\n", 2, "empty or truncated"),
            ("x\t0/1\treason\n", 2, "line 1: 'x' is not a timeline id"),
            ("0\t0/1\treason\n", 2, "'0' is not a timeline id"),
            ("1\tnot-an-lsn\tr\n", 2, "'not-an-lsn' is not an LSN"),
            ("1\n", 2, "'' is not an LSN"),
            ("1\t0/1G\tr\n", 2, "is not an LSN"),
            ("1\t123456789/0\tr\n", 2, "is not an LSN"),
            ("2\t0/1\tr\n", 2, "timeline 2 is not below timeline 2"),
            (
                "1\t0/1\tr\n3\t0/2\tr\n",
                3,
                "line 2: timeline 3 is not below",
            ),
            (
                "2\t0/1\tr\n1\t0/2\tr\n",
                3,
                "line 2: timeline 1 does not ascend",
            ),
            ("1\t0/1\tr\n1\t0/2\tr\n", 3, "timeline 1 does not ascend"),
        ];
        for (text, tli, want) in cases {
            let err = parse_history(text, *tli).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert_eq!(parse_history("", 1).unwrap(), vec![]);
    }
}
