//! stanza-upgrade: after pg_upgrade (or when pg1-path now holds another cluster), binds the
//! stanza to the running cluster by appending it to the db history of archive.info and
//! backup.info, as pgBackRest does: the new entry's id is the current one's plus one, so WAL
//! goes to a new archive id (`15-2`) and the older backups and WAL stay listed and usable.
//!
//! The two files are not written atomically together, so each is checked and updated on its
//! own: after a crash between the two, running it again updates only the one left behind.
//! A stanza that already matches the cluster is left as it is (an INFO line says so).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::info::{DbEntry, DbInfo};
use crate::pg::db::{self, ClusterFacts, Db};
use crate::repo::RepoLayout;

use super::archive_push::missing_info;

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let pg_path = cfg.required_path("pg1-path")?;
    let facts = Db::connect(cfg)?.cluster_facts()?;
    db::check_data_directory(&facts, &pg_path)?;

    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let mut archive = ArchiveInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.archive_info()))?;
    let mut backup = BackupInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.backup_info()))?;

    let archive_upgrade = upgrade(&mut archive.db, &facts, false);
    let backup_upgrade = upgrade(&mut backup.db, &facts, true);
    let (a, b) = (&archive.db.current, &backup.db.current);
    if a.id != b.id || a.system_id != b.system_id || a.version != b.version {
        return Err(Error::integrity(format!(
            "backup info file and archive info file do not match: archive: id = {}, version = {}, \
             system-id = {}; backup: id = {}, version = {}, system-id = {}",
            a.id, a.version, a.system_id, b.id, b.version, b.system_id
        ))
        .with_hint("this may be a symptom of repository corruption; nothing was written"));
    }
    // archive.info first: a backup of the new cluster needs its archive id to exist.
    if archive_upgrade || archive.from_copy {
        archive.save(repo.as_ref(), &layout)?;
    }
    if backup_upgrade || backup.from_copy {
        backup.save(repo.as_ref(), &layout)?;
    }
    if archive_upgrade || backup_upgrade {
        crate::info!(
            "stanza '{stanza}' upgraded to PostgreSQL {} system-id {}: archive id {}",
            facts.version,
            facts.system_id,
            archive.db.current.archive_id()
        );
    } else {
        crate::info!("stanza '{stanza}' on repo1 is already up to date");
    }
    Ok(())
}

/// Appends the cluster as the new current entry unless it already is the current one.
fn upgrade(db: &mut DbInfo, facts: &ClusterFacts, with_catalog: bool) -> bool {
    let c = &db.current;
    if c.system_id == facts.system_id && c.version == facts.version {
        return false;
    }
    let entry = DbEntry {
        id: db.history.iter().map(|h| h.id).max().unwrap_or(0) + 1,
        system_id: facts.system_id,
        version: facts.version.clone(),
        catalog_version: with_catalog.then_some(facts.catalog_version),
        control_version: with_catalog.then_some(facts.control_version),
    };
    db.history.push(entry.clone());
    db.current = entry;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(system_id: u64, version: &str) -> ClusterFacts {
        ClusterFacts {
            system_id,
            version: version.into(),
            control_version: 1300,
            catalog_version: 202209061,
            data_directory: "/pg".into(),
        }
    }

    #[test]
    fn a_new_cluster_becomes_the_next_entry_and_the_same_one_changes_nothing() {
        let mut db = DbInfo::new(DbEntry {
            id: 1,
            system_id: 7,
            version: "15".into(),
            catalog_version: None,
            control_version: None,
        });
        assert!(!upgrade(&mut db, &facts(7, "15"), false));
        assert_eq!(db.history.len(), 1);
        assert!(upgrade(&mut db, &facts(8, "15"), false));
        assert_eq!(db.current.archive_id(), "15-2");
        assert_eq!(db.history.len(), 2);
        assert!(upgrade(&mut db, &facts(8, "16"), true));
        assert_eq!(db.current.archive_id(), "16-3");
        assert_eq!(db.current.catalog_version, Some(202209061));
        assert!(!upgrade(&mut db, &facts(8, "16"), true));
    }
}
