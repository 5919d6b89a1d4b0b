//! annotate, and the annotation a backup records: `--annotation=KEY=VALUE` pairs stored
//! where pgBackRest stores them, the manifest's `[metadata] annotation` (written by backup)
//! and backup.info's `backup-annotation` (written by backup, changed by annotate). As in
//! pgBackRest, annotate changes only backup.info: a KEY with an empty VALUE removes it, and
//! a backup left without any loses the field.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::backup::{is_label, BackupInfo};
use crate::repo::RepoLayout;

use super::archive_push::missing_info;

/// The annotation a new backup records: the non-empty pairs of `--annotation`.
pub fn from_options(cfg: &Config) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = cfg
        .path_map("annotation")
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let label = cfg.str("set").unwrap_or("latest");
    if !is_label(label) {
        return Err(
            Error::config(format!("'{label}' is not a valid backup label format")).with_hint(
                "give --set=LABEL of the backup to annotate; 'pg_backrest info' lists them",
            ),
        );
    }
    let changes = cfg.path_map("annotation");
    if changes.is_empty() {
        return Err(
            Error::config("option 'annotation' is required for command 'annotate'")
                .with_hint("give --annotation=KEY=VALUE (KEY= removes KEY)"),
        );
    }
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let mut info = BackupInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.backup_info()))?;
    let Some(summary) = info.backups.get_mut(label) else {
        return Err(Error::new(
            Kind::BackupSetInvalid,
            format!("no backup set to annotate found: '{label}' is not in stanza '{stanza}'"),
        )
        .with_hint("'pg_backrest info' lists the backups"));
    };
    crate::info!("backup set '{label}' to annotate found in repo1");
    // pgBackRest writes string values; anything else a tampered file holds is dropped.
    let mut annotation: BTreeMap<String, String> = summary
        .backup_annotation
        .take()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
        .collect();
    for (key, value) in changes {
        if value.is_empty() {
            annotation.remove(key);
        } else {
            annotation.insert(key.to_string(), value.to_string());
        }
    }
    summary.backup_annotation = (!annotation.is_empty()).then(|| serde_json::json!(annotation));
    info.save(repo.as_ref(), &layout)
}
