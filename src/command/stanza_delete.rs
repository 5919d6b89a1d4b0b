//! stanza-delete: removes the stanza's archive and backup directories from the repository,
//! with pgBackRest's rules: the stanza's stop file must exist (even with --force), and
//! PostgreSQL must not be running in pg1-path unless --force.
//!
//! Order, as pgBackRest's: the info files (and their copies) first, then the two directory
//! trees, then the stop file. A delete stopped midway leaves a stanza without info files,
//! which every command refuses to use (no backup or restore of half a stanza) and which
//! running stanza-delete again (by either tool) finishes.

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::repo::{RepoLayout, COPY_SUFFIX};

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let lock_path = cfg.required_path("lock-path")?;
    let pg_path = cfg.required_path("pg1-path")?;
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let archive_root = format!("archive/{stanza}");
    let backup_root = layout.backup_root();
    let archive_has = !repo.list(&archive_root)?.is_empty();
    let backup_has = !repo.list(&backup_root)?.is_empty();
    let stop_file = super::stop::stop_file(&lock_path, Some(stanza));

    if archive_has || backup_has {
        if !stop_file.exists() {
            return Err(Error::new(
                Kind::RepoMissing,
                format!("stop file does not exist for stanza '{stanza}'"),
            )
            .with_hint(format!(
                "run '{} stop --stanza={stanza}' on this host first (required even \
                 with --force)",
                cfg.identity.program()
            )));
        }
        if !cfg.bool("force") && pg_path.join("postmaster.pid").exists() {
            return Err(Error::new(
                Kind::PgRunning,
                format!(
                    "postmaster.pid exists in '{}' - looks like PostgreSQL is running; to \
                     delete stanza '{stanza}' on repo1, shut down PostgreSQL for stanza \
                     '{stanza}' and try again, or use --force",
                    pg_path.display()
                ),
            )
            .with_hint("stanza-delete removes every backup and WAL file of the stanza"));
        }
        for info in [layout.archive_info(), layout.backup_info()] {
            repo.remove(&info)?;
            repo.remove(&format!("{info}{COPY_SUFFIX}"))?;
        }
    }
    repo.remove_tree(&archive_root)?;
    repo.remove_tree(&backup_root)?;
    match std::fs::remove_file(&stop_file) {
        Ok(()) => crate::storage::posix::sync_dir(&lock_path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stop file", &stop_file, e)),
    }
    crate::info!(
        "stanza '{stanza}' deleted from '{}'",
        repo.describe(&backup_root)
    );
    Ok(())
}
