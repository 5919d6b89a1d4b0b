//! check: proves the whole archiving path works for this stanza: the configuration, the
//! database connection, the repository's info files against the cluster, PostgreSQL's
//! archive settings, a real WAL switch whose segment must reach the repository within
//! archive-timeout, and finally that archive-push dropped no WAL (archive-push-queue-max)
//! since the last backup: a gap no backup covers fails check until one does.

use std::time::{Duration, Instant};

use super::archive_push::missing_info;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::pg::db::{self, Db};
use crate::pg::wal::WalName;
use crate::repo::{dropped, RepoLayout, StoredWal};
use crate::storage::Storage;

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let pg_path = cfg.required_path("pg1-path")?;
    let db = Db::connect(cfg)?;
    let facts = db.cluster_facts()?;
    db::check_data_directory(&facts, &pg_path)?;
    if db.in_recovery()? {
        return Err(Error::new(
            Kind::Config,
            format!(
                "the cluster at '{}' is a standby; check runs against the primary",
                pg_path.display()
            ),
        ));
    }

    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let archive = ArchiveInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.archive_info()))?;
    let what = format!("the cluster at '{}'", pg_path.display());
    archive
        .db
        .check_cluster(facts.system_id, &facts.version, &what)
        .map_err(|e| e.with_kind(Kind::FileInvalid))?;
    let backup = BackupInfo::load(repo.as_ref(), &layout)?;
    if let Some(backup) = &backup {
        backup
            .db
            .check_cluster(facts.system_id, &facts.version, &what)
            .map_err(|e| e.with_kind(Kind::FileInvalid))?;
    }

    let mode = db.setting("archive_mode")?;
    if mode == "off" {
        return Err(
            Error::new(Kind::ArchiveDisabled, "archive_mode is off in PostgreSQL")
                .with_hint("set archive_mode = on in postgresql.conf and restart PostgreSQL"),
        );
    }
    let command = db.setting("archive_command")?;
    if !archive_command_ok(&command, stanza) {
        return Err(Error::new(Kind::ArchiveCommandInvalid, format!(
            "archive_command '{command}' does not call pg_backrest archive-push for stanza '{stanza}'"
        ))
        .with_hint(format!("set archive_command = 'pg_backrest --stanza={stanza} archive-push %p'")));
    }

    let segment = db.switch_wal()?;
    let wal = WalName::parse(&segment)?;
    let dir = layout.wal_dir(&archive.db.current.archive_id(), &wal);
    let timeout = cfg.seconds("archive-timeout");
    let start = Instant::now();
    loop {
        crate::signal::check()?;
        if !StoredWal::find(&wal, &repo.list(&dir)?).is_empty() {
            break;
        }
        if start.elapsed() >= timeout {
            return Err(Error::new(
                Kind::ArchiveTimeout,

                format!(
                    "WAL segment '{segment}' did not reach the archive at '{}' within archive-timeout ({})",
                    repo.describe(&dir),
                    crate::config::fmt_seconds(timeout)
                ),
            )
            .with_hint("check PostgreSQL's log for archive_command failures"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // An INFO line as pgBackRest's: at the default log-level-console (warn) a successful
    // check prints nothing, so a cron job or script sees output only when something is wrong.
    crate::info!(
        "WAL segment '{segment}' successfully archived to '{}'",
        repo.describe(&dir)
    );
    check_dropped(repo.as_ref(), &layout, &archive, backup.as_ref())
}

/// Archiving works, but WAL it dropped (archive-push-queue-max exceeded) leaves the archive
/// unable to recover across the gap: check fails until a backup starting after every gap
/// covers it (see [`crate::repo::dropped`]). Only the current cluster's archive matters; a
/// new backup cannot cover a gap in an older one, which verify reports instead.
fn check_dropped(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive: &ArchiveInfo,
    backup: Option<&BackupInfo>,
) -> Result<()> {
    let archive_id = archive.db.current.archive_id();
    let uncovered: Vec<String> = dropped::gaps(repo, layout, &archive_id, None)?
        .into_iter()
        .filter(|g| !backup.is_some_and(|b| g.covered(b)))
        .map(|g| g.describe())
        .collect();
    if uncovered.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Kind::ArchiveTimeout,
        format!(
            "archive-push dropped WAL of archive '{archive_id}' without archiving it: {}; \
             point-in-time recovery across the gap is impossible",
            uncovered.join(", ")
        ),
    )
    .with_hint("take a backup: once a backup starts after the gap, check passes again"))
}

/// Whether archive_command runs pg_backrest's archive-push for this stanza. Under the name
/// `pgbackrest` (pg_backrest installed as pgBackRest's drop-in, or pgBackRest itself, which
/// writes the same repository) it does too.
fn archive_command_ok(command: &str, stanza: &str) -> bool {
    let words: Vec<&str> = command
        .split_whitespace()
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
        .collect();
    // pgBackRest itself writes the same archive on the same repository, and pg_backrest may
    // be installed under its name.
    let calls_us = words
        .iter()
        .any(|w| w.ends_with("pg_backrest") || w.ends_with("pgbackrest"));
    let pushes = words.contains(&"archive-push");
    let names_stanza = words
        .windows(2)
        .any(|w| w[0] == format!("--stanza={stanza}") || (w[0] == "--stanza" && w[1] == stanza))
        || words.last() == Some(&format!("--stanza={stanza}").as_str());
    calls_us && pushes && names_stanza
}

#[cfg(test)]
mod tests {
    use super::archive_command_ok;

    #[test]
    fn recognizes_archive_commands() {
        assert!(archive_command_ok(
            "pg_backrest --stanza=main archive-push %p",
            "main"
        ));
        assert!(archive_command_ok(
            "/usr/bin/pgbackrest --config=/x --stanza=main archive-push %p",
            "main"
        ));
        assert!(archive_command_ok(
            "/usr/bin/pg_backrest --config=/x --stanza main archive-push \"%p\"",
            "main"
        ));
        assert!(!archive_command_ok(
            "pg_backrest --stanza=other archive-push %p",
            "main"
        ));
        assert!(archive_command_ok(
            "pgbackrest --stanza=main archive-push %p",
            "main"
        ));
        assert!(!archive_command_ok("cp %p /archive/%f", "main"));
        assert!(!archive_command_ok(
            "pg_backrest --stanza=main archive-get %f %p",
            "main"
        ));
    }
}
