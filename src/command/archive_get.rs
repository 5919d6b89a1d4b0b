//! archive-get WAL_NAME DEST_PATH: PostgreSQL's restore_command.
//!
//! Exit 1 means exactly one thing: no archive id of the stanza holds the file. Everything
//! else that goes wrong (no archive.info, SSH down, a checksum mismatch, a truncated stored
//! file, an unwritable destination) is a hard error, because PostgreSQL takes exit 1 as the
//! end of the archive and would stop recovery early, silently. The destination appears only
//! complete and verified: temp file in its directory, fsync, rename, fsync. A segment
//! archive-push dropped (its `.dropped` record, see [`crate::repo::dropped`]) is not in the
//! archive either, with a WARN that says so.

use std::path::Path;

use super::archive_push::{missing_info, repo_invalid};
use super::Outcome;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::pg::wal::WalName;
use crate::pipeline::{self, CompressType, Ends};
use crate::repo::{dropped, RepoLayout, StoredWal};
use crate::storage::posix::PosixStorage;
use crate::storage::{self, Storage};

pub fn run(cfg: &Config) -> Result<Outcome> {
    let stanza = cfg.stanza_required()?;
    let wal = WalName::parse(&cfg.args[0])?;
    let dest = super::pg_relative_path(&cfg.args[1]);
    let (dest_dir, dest_name) = split_dest(&dest)?;

    let repo = storage::repo(cfg)?;
    let layout = RepoLayout::new(stanza);
    let info = ArchiveInfo::load(repo.as_ref(), &layout)
        .map_err(repo_invalid)?
        .ok_or_else(|| repo_invalid(missing_info(stanza, repo.as_ref(), &layout.archive_info())))?;

    let mut dropped_from = None;
    for archive_id in info.archive_ids_newest_first() {
        let dir = layout.wal_dir(&archive_id, &wal);
        let entries = repo.list(&dir)?;
        let found = StoredWal::find(&wal, &entries);
        let stored = match found.as_slice() {
            [] => {
                if dropped_from.is_none()
                    && entries
                        .iter()
                        .any(|e| dropped::classify(e).as_ref() == Some(&wal))
                {
                    dropped_from = Some(archive_id);
                }
                continue;
            }
            [one] => one,
            _ => {
                return Err(Error::new(
                    Kind::ArchiveDuplicate,
                    format!(
                        "WAL file '{}' is archived more than once in '{}' with different contents",
                        wal.name,
                        repo.describe(&dir)
                    ),
                )
                .with_hint("find out which copy is right before removing the other"))
            }
        };
        if !stored.readable() {
            return Err(Error::new(
                Kind::FeatureNotSupported,
                format!(
                    "WAL file '{}' is stored as '{}' in '{}', with compression '{}' that pg_backrest cannot read",
                    wal.name,
                    stored.file_name,
                    repo.describe(&dir),
                    stored.extension
                ),
            )
            .with_hint("decompress it with the tool that wrote it, or archive the file again with pg_backrest"));
        }
        copy_out(
            repo.as_ref(),
            &format!("{dir}/{}", stored.file_name),
            stored,
            dest_dir,
            dest_name,
        )?;
        crate::info!(
            "found WAL file '{}' in the archive ({archive_id})",
            wal.name
        );
        return Ok(Outcome::Done);
    }
    // Still "not in the archive" (exit 1: PostgreSQL ends recovery or waits, as for any
    // missing segment), but the log says why it never will be.
    if let Some(archive_id) = dropped_from {
        crate::warn!(
            "WAL file '{}' is not in the archive: archive-push dropped it (archive-push-queue-max \
             exceeded; recorded in archive '{archive_id}'); recovery cannot go past it, restore a \
             backup taken after it to get further",
            wal.name
        );
    } else {
        crate::info!("WAL file '{}' is not in the archive", wal.name);
    }
    Ok(Outcome::NotFound)
}

fn split_dest(dest: &Path) -> Result<(&Path, &str)> {
    let name = dest.file_name().and_then(|n| n.to_str());
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match name {
        Some(n) => Ok((dir, n)),
        None => Err(Error::new(
            Kind::ParamInvalid,
            format!("destination '{}' is not a file path", dest.display()),
        )),
    }
}

fn copy_out(
    repo: &dyn Storage,
    path: &str,
    stored: &StoredWal,
    dest_dir: &Path,
    dest_name: &str,
) -> Result<()> {
    let compress: CompressType = stored.compress.ok_or_else(|| {
        Error::internal(format!(
            "'{path}' reached copy_out though it cannot be read"
        ))
    })?;
    if !dest_dir.is_dir() {
        // PostgreSQL's pg_wal always exists; creating a directory here would hide a typo.
        return Err(Error::new(
            Kind::PathMissing,
            format!(
                "destination directory '{}' does not exist",
                dest_dir.display()
            ),
        ));
    }
    let source = repo.describe(path);
    let mut reader = repo.open_read(path)?.ok_or_else(|| {
        Error::new(
            Kind::FileMissing,
            format!("'{source}' disappeared while being read"),
        )
    })?;

    let target = PosixStorage::new(dest_dir);
    let mut writer = target.open_write("")?;
    let dest = dest_dir.join(dest_name).display().to_string();
    pipeline::restore(
        &mut reader,
        &mut writer,
        compress,
        stored.sha1.as_deref(),
        &Ends {
            source: &source,
            dest: &dest,
        },
    )?;
    drop(reader);
    writer.commit(dest_name)
}
