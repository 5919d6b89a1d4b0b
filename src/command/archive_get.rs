//! archive-get WAL_NAME DEST_PATH: PostgreSQL's restore_command.
//!
//! Exit 1 means exactly one thing: no archive id of the stanza holds the file. Everything
//! else that goes wrong (no archive.info, SSH down, a checksum mismatch, a truncated stored
//! file, an unwritable destination) is a hard error, because PostgreSQL takes exit 1 as the
//! end of the archive and would stop recovery early, silently. The destination appears only
//! complete and verified: temp file in its directory, fsync, rename, fsync.
//!
//! With archive-async=y the command first looks for a segment prefetched into the spool by
//! the `archive-get:async` worker ([`foreground`], [`worker`], [`prefetch`] for the spool's
//! layout and what makes a prefetched file valid); a miss there is always answered by the
//! lookup below, never by the spool.
//!
//! A segment archive-push dropped (its `.dropped` record, see [`crate::repo::dropped`]) is
//! not in the archive either, with a WARN that says so.

use std::collections::HashMap;
use std::path::Path;

use super::archive_push::archive_info_for_wal;
use super::Outcome;
use crate::config::{Config, Role};
use crate::error::{Error, Kind, Result};
use crate::pg::wal::WalName;
use crate::pipeline::{self, CompressType, Ends};
use crate::repo::{dropped, RepoLayout, StoredWal};
use crate::storage::posix::PosixStorage;
use crate::storage::Storage;

pub mod foreground;
pub mod prefetch;
pub mod worker;

pub fn run(cfg: &Config) -> Result<Outcome> {
    if cfg.role == Role::Async {
        return worker::run(cfg).map(|_| Outcome::Done);
    }
    if cfg.bool("archive-async") {
        return foreground::run(cfg);
    }
    fetch(cfg)
}

/// The synchronous lookup and copy, as with archive-async=n.
pub fn fetch(cfg: &Config) -> Result<Outcome> {
    let stanza = cfg.stanza_required()?;
    let wal = WalName::parse(&cfg.args[0])?;
    let dest = super::pg_relative_path(&cfg.args[1]);
    let (dest_dir, dest_name) = split_dest(&dest)?;
    let archive = Archive::open(cfg, stanza)?;
    let mut listings = Listings::default();
    match archive.find(archive.repo.as_ref(), &wal, &mut listings)? {
        Some(found) => {
            copy_out(
                archive.repo.as_ref(),
                &found.path(),
                &found.stored,
                dest_dir,
                dest_name,
            )?;
            crate::info!(
                "found WAL file '{}' in the archive ({})",
                wal.name,
                found.archive_id
            );
            Ok(Outcome::Done)
        }
        None => {
            // Still "not in the archive" (exit 1: PostgreSQL ends recovery or waits, as for
            // any missing segment), but the log says why it never will be.
            match archive.dropped_from(&wal, &listings) {
                Some(archive_id) => crate::warn!(
                    "WAL file '{}' is not in the archive: archive-push dropped it \
                     (archive-push-queue-max exceeded; recorded in archive '{archive_id}'); \
                     recovery cannot go past it, restore a backup taken after it to get further",
                    wal.name
                ),
                None => crate::info!("WAL file '{}' is not in the archive", wal.name),
            }
            Ok(Outcome::NotFound)
        }
    }
}

/// The stanza's archive, as archive-get reads it: the repository and archive.info.
pub struct Archive {
    pub repo: Box<dyn Storage>,
    layout: RepoLayout,
    archive_ids: Vec<String>,
}

/// Where a WAL file is stored.
pub struct Found {
    pub archive_id: String,
    pub dir: String,
    pub stored: StoredWal,
}

impl Found {
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir, self.stored.file_name)
    }
}

/// Repository directory listings, kept for one pass of the worker (a directory of 256
/// segments is listed once, not once per segment: over SSH each listing is a round trip).
#[derive(Default)]
pub struct Listings {
    dirs: HashMap<String, Vec<String>>,
}

impl Archive {
    pub fn open(cfg: &Config, stanza: &str) -> Result<Archive> {
        Archive::with_repo(crate::repo::open(cfg)?, stanza)
    }

    pub fn with_repo(repo: Box<dyn Storage>, stanza: &str) -> Result<Archive> {
        let layout = RepoLayout::new(stanza);
        let info = archive_info_for_wal(repo.as_ref(), &layout, stanza)?;
        Ok(Archive {
            repo,
            layout,
            archive_ids: info.archive_ids_newest_first(),
        })
    }

    /// The newest archive id holding a record that archive-push dropped `wal`, from the
    /// listings a [`Self::find`] that found nothing has just made.
    pub fn dropped_from(&self, wal: &WalName, listings: &Listings) -> Option<String> {
        self.archive_ids.iter().find_map(|archive_id| {
            let entries = listings.dirs.get(&self.layout.wal_dir(archive_id, wal))?;
            entries
                .iter()
                .any(|e| dropped::classify(e).as_ref() == Some(wal))
                .then(|| archive_id.clone())
        })
    }

    /// Where `wal` is stored, newest archive id first; `None` when no archive id holds it.
    /// A file stored twice with different contents, or in a compression this build cannot
    /// read, is a hard error: never "not found".
    pub fn find(
        &self,
        repo: &dyn Storage,
        wal: &WalName,
        listings: &mut Listings,
    ) -> Result<Option<Found>> {
        for archive_id in &self.archive_ids {
            let dir = self.layout.wal_dir(archive_id, wal);
            if !listings.dirs.contains_key(&dir) {
                let entries = repo.list(&dir)?;
                listings.dirs.insert(dir.clone(), entries);
            }
            let found = StoredWal::find(wal, &listings.dirs[&dir]);
            let stored = match found.as_slice() {
                [] => continue,
                [one] => one.clone(),
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
            return Ok(Some(Found {
                archive_id: archive_id.clone(),
                dir,
                stored,
            }));
        }
        Ok(None)
    }
}

pub fn split_dest(dest: &Path) -> Result<(&Path, &str)> {
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

pub fn copy_out(
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
