//! stanza-create: binds a stanza's repository to one cluster by writing archive.info and
//! backup.info with the cluster's system identifier and version.
//!
//! Idempotent: when both files exist and describe this cluster, nothing changes (a file
//! recovered from its copy is rewritten). A repository describing another cluster is
//! refused: adopting it would mix two clusters' WAL under one name.

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::info::{DbEntry, DbInfo};
use crate::pg::db::{self, Db};
use crate::repo::RepoLayout;

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let pg_path = cfg.required_path("pg1-path")?;
    let facts = Db::connect(cfg)?.cluster_facts()?;
    db::check_data_directory(&facts, &pg_path)?;

    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let archive = ArchiveInfo::load(repo.as_ref(), &layout)?;
    let backup = BackupInfo::load(repo.as_ref(), &layout)?;
    let what = format!("cluster at '{}'", pg_path.display());
    for db in [
        archive.as_ref().map(|a| &a.db),
        backup.as_ref().map(|b| &b.db),
    ]
    .into_iter()
    .flatten()
    {
        db.check_cluster(facts.system_id, &facts.version, &what)
            .map_err(|e| Error {
                kind: Kind::FileInvalid,
                message: format!(
                    "stanza '{stanza}' already exists for another cluster: {}",
                    e.message
                ),
                ..e
            })?;
    }

    let entry = |with_catalog: bool| DbEntry {
        id: 1,
        system_id: facts.system_id,
        version: facts.version.clone(),
        catalog_version: with_catalog.then_some(facts.catalog_version),
        control_version: with_catalog.then_some(facts.control_version),
    };
    // Write what is missing, and rewrite what was recovered from its copy.
    let mut changed = false;
    if archive.as_ref().is_none_or(|a| a.from_copy) {
        let db = archive.map_or_else(|| DbInfo::new(entry(false)), |a| a.db);
        ArchiveInfo {
            db,
            from_copy: false,
        }
        .save(repo.as_ref(), &layout)?;
        changed = true;
    }
    if backup.as_ref().is_none_or(|b| b.from_copy) {
        let info = backup.unwrap_or_else(|| BackupInfo {
            db: DbInfo::new(entry(true)),
            backups: Default::default(),
            from_copy: false,
        });
        info.save(repo.as_ref(), &layout)?;
        changed = true;
    }
    if changed {
        crate::info!(
            "stanza '{stanza}' created for PostgreSQL {} system-id {} ('{}')",
            facts.version,
            facts.system_id,
            repo.describe(&layout.archive_info())
        );
    } else {
        crate::info!("stanza '{stanza}' already exists and matches the cluster; nothing to do");
    }
    Ok(())
}
