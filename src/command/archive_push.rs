//! archive-push WAL_PATH: PostgreSQL's archive_command.
//!
//! Order matters for crash safety and honesty: the file's identity is checked before a byte
//! is stored (name; for segments the page header against the name and archive.info and the
//! full segment size; history and backup history files parsed); the content goes
//! through the copy pipeline into a temp file that becomes visible under its final,
//! checksum-bearing name only when complete and durable. An already archived segment is
//! compared by checksum: same content is success, different content is refused and nothing
//! is overwritten.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::config::{Config, Role};
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::pg::timeline::parse_history;
use crate::pg::wal::{check_backup_history, WalHeader, WalKind, WalName, LONG_HEADER_SIZE};
use crate::pipeline::{self, Compress, Ends};
use crate::repo::{RepoLayout, StoredWal};
use crate::storage::Storage;

pub mod foreground;
pub mod worker;

pub fn run(cfg: &Config) -> Result<()> {
    if cfg.role == Role::Async {
        return worker::run(cfg);
    }
    if cfg.bool("archive-async") {
        return foreground::run(cfg);
    }
    let stanza = cfg.stanza_required()?;
    let wal_path = super::pg_relative_path(&cfg.args[0]);
    let wal = wal_name_of(&wal_path)?;
    // Opened before the repository: a missing file is PostgreSQL's mistake (or the
    // caller's) and is named as such even when the repository is also wrong.
    let mut file = File::open(&wal_path).map_err(|e| Error::io("open WAL file", &wal_path, e))?;
    let target = Target::open(cfg, stanza)?;
    target
        .push_open(target.repo.as_ref(), &wal, &wal_path, &mut file)
        .map(|_| ())
}

/// The WAL file name of a path PostgreSQL handed over, checked.
pub fn wal_name_of(wal_path: &Path) -> Result<WalName> {
    let file_name = wal_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    WalName::parse(&file_name)
}

/// Where and how WAL is pushed: the repository, its archive.info, the compression. Loaded
/// once by a command (archive.info is read once per archive_command, once per worker run).
pub struct Target {
    pub repo: Box<dyn Storage>,
    pub layout: RepoLayout,
    pub info: ArchiveInfo,
    configured: Compress,
    stanza: String,
}

/// What pushing one file did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// SHA-1 of the content PostgreSQL wrote.
    pub sha1: String,
    /// The file's name in the archive.
    pub stored: String,
    /// From the page header (segments and .partial files).
    pub system_id: Option<u64>,
}

impl Target {
    pub fn open(cfg: &Config, stanza: &str) -> Result<Target> {
        // Checked first: a level out of its type's range is a config error on every push, not
        // only on those that store something.
        let configured =
            pipeline::configured_compress(cfg.str("compress-type"), cfg.int("compress-level"))?;
        let repo = crate::repo::open(cfg)?;
        Target::with_repo(repo, stanza, configured)
    }

    pub fn with_repo(repo: Box<dyn Storage>, stanza: &str, configured: Compress) -> Result<Target> {
        let layout = RepoLayout::new(stanza);
        let info = archive_info_for_wal(repo.as_ref(), &layout, stanza)?;
        Ok(Target {
            repo,
            layout,
            info,
            configured,
            stanza: stanza.to_string(),
        })
    }

    /// Pushes the file at `wal_path` into the repository.
    pub fn push(&self, wal: &WalName, wal_path: &Path) -> Result<Pushed> {
        let mut file = File::open(wal_path).map_err(|e| Error::io("open WAL file", wal_path, e))?;
        self.push_open(self.repo.as_ref(), wal, wal_path, &mut file)
    }

    /// Pushes an open file through `repo` (the worker's own connection, or [`Self::repo`]).
    pub fn push_open(
        &self,
        repo: &dyn Storage,
        wal: &WalName,
        wal_path: &Path,
        file: &mut File,
    ) -> Result<Pushed> {
        // History and backup history files are stored plain, as pgBackRest stores them.
        let compress = match wal.kind {
            WalKind::History | WalKind::Backup => Compress::None,
            _ => self.configured,
        };
        let source = wal_path.display().to_string();
        let header = check_content(wal, file, wal_path, &source)?;
        if let Some(h) = &header {
            self.info
                .db
                .check_cluster(h.system_id, &h.version, &format!("WAL file '{source}'"))
                .map_err(|e| e.with_kind(Kind::ArchiveMismatch))?;
        }
        let system_id = header.map(|h| h.system_id);

        let archive_id = self.info.db.current.archive_id();
        let dir = self.layout.wal_dir(&archive_id, wal);
        let existing = StoredWal::find(wal, &repo.list(&dir)?);
        if let Some(stored) = existing.first() {
            let sha1 = compare_with_archived(repo, &dir, stored, file, &source, wal)?;
            return Ok(Pushed {
                sha1,
                stored: stored.file_name.clone(),
                system_id,
            });
        }

        // The stored name carries the content's SHA-1. Object storage must know the name
        // before the first part goes up, so there the file is hashed first (as pgBackRest
        // always does), and the copy must hash the same.
        let named_first = if repo.needs_name_at_open() {
            let sha1 = pipeline::digest(file, &source)?.sha1;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("seek", wal_path, e))?;
            Some(StoredWal::new(wal, &sha1, compress))
        } else {
            None
        };
        let mut writer = match &named_first {
            Some(stored) => repo.open_write_named(&dir, &stored.file_name)?,
            None => repo.open_write(&dir)?,
        };
        let dest = repo.describe(&dir);
        let copied = pipeline::store(
            file,
            &mut writer,
            compress,
            1,
            &Ends {
                source: &source,
                dest: &dest,
            },
        )?;
        let stored = StoredWal::new(wal, &copied.sha1, compress);
        if let Some(named) = &named_first {
            if named.file_name != stored.file_name {
                // The writer is dropped uncommitted: nothing appears in the archive.
                return Err(Error::new(
                    Kind::FileRead,
                    format!("WAL file '{source}' changed while it was being archived"),
                )
                .with_hint("PostgreSQL never rewrites a segment it hands to archive_command: check what else writes to pg_wal"));
            }
        }
        writer.commit(&stored.file_name)?;
        crate::info!(
            "pushed WAL file '{}' to the archive ({} bytes, stored {} bytes, sha1 {})",
            wal.name,
            copied.size,
            copied.stored_size,
            copied.sha1
        );
        Ok(Pushed {
            sha1: copied.sha1,
            stored: stored.file_name,
            system_id,
        })
    }

    pub fn stanza(&self) -> &str {
        &self.stanza
    }
}

/// Largest history or backup history file read into memory: far above what PostgreSQL
/// writes (a line per ancestor timeline; a label of at most 1 KB).
const TEXT_FILE_LIMIT: u64 = 16 << 20;

/// Checks that the file is what its name says before a byte of it is stored, and returns the
/// page header of segments and .partial files (checked against archive.info later). A file
/// stored under a wrong name cannot be replaced by the right one afterwards, so anything
/// PostgreSQL would not have written under this name is refused here. Leaves `file` at its
/// start.
pub fn check_content(
    wal: &WalName,
    file: &mut File,
    path: &Path,
    source: &str,
) -> Result<Option<WalHeader>> {
    let size = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let header = match wal.kind {
        WalKind::Segment | WalKind::Partial => {
            if size < LONG_HEADER_SIZE as u64 {
                return Err(Error::new(
                    Kind::Format,
                    format!("WAL file '{source}' is {size} bytes, too short to be a WAL segment"),
                )
                .with_hint("PostgreSQL archives only complete segments; this file was truncated or altered"));
            }
            // Reading the header first costs nothing: the pipeline reads these bytes again
            // from the page cache.
            let mut page = [0u8; LONG_HEADER_SIZE];
            file.read_exact(&mut page)
                .map_err(|e| Error::io("read WAL header of", path, e))?;
            let header = WalHeader::parse(&page, source)?;
            header.check_matches_name(wal, size, source)?;
            Some(header)
        }
        WalKind::History | WalKind::Backup => {
            if size > TEXT_FILE_LIMIT {
                return Err(Error::new(
                    Kind::Format,
                    format!(
                        "'{source}' is {size} bytes, too large for a {} file",
                        kind_name(wal.kind)
                    ),
                )
                .with_hint("archive only the files PostgreSQL hands to archive_command"));
            }
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::io("read", path, e))?;
            // Reasons and labels are free text in the database's encoding; only the
            // structure around them is checked.
            let text = String::from_utf8_lossy(&bytes);
            if wal.kind == WalKind::History {
                parse_history(&text, wal.timeline()).map_err(|why| {
                    Error::new(
                        Kind::Format,
                        format!(
                            "'{source}' ({size} bytes) is not a valid timeline history file: {why}"
                        ),
                    )
                    .with_hint(
                        "archive only the .history files PostgreSQL hands to archive_command",
                    )
                })?;
            } else {
                check_backup_history(wal, &text, source)?;
            }
            None
        }
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek", path, e))?;
    Ok(header)
}

fn kind_name(kind: WalKind) -> &'static str {
    match kind {
        WalKind::Segment => "WAL segment",
        WalKind::Partial => "partial WAL segment",
        WalKind::Backup => "backup history",
        WalKind::History => "timeline history",
    }
}

/// archive.info missing or unusable, as archive-push and archive-get report it: pgBackRest's
/// repo-invalid ("unable to find a valid repository"), whatever the file's own failure was.
/// Failures that are not about the file (a signal, the SSH link) keep their kind.
/// The stanza's archive.info as archive-push and archive-get need it: missing or unreadable
/// is [`repo_invalid`], never "not found".
pub fn archive_info_for_wal(
    repo: &dyn Storage,
    layout: &RepoLayout,
    stanza: &str,
) -> Result<ArchiveInfo> {
    ArchiveInfo::load(repo, layout)
        .map_err(repo_invalid)?
        .ok_or_else(|| repo_invalid(missing_info(stanza, repo, &layout.archive_info())))
}

pub fn repo_invalid(e: Error) -> Error {
    match e.kind {
        Kind::FileMissing | Kind::Checksum | Kind::Format | Kind::FileOpen | Kind::FileRead => {
            e.with_kind(Kind::RepoInvalid)
        }
        _ => e,
    }
}

/// The stanza lacks one of its info files (`info_path`, archive.info or backup.info): named
/// exactly, since the other one may well be there.
pub fn missing_info(stanza: &str, repo: &dyn Storage, info_path: &str) -> Error {
    let file = info_path.rsplit('/').next().unwrap_or(info_path);
    Error::new(
        Kind::FileMissing,
        format!(
            "stanza '{stanza}' has no {file} at '{}'",
            repo.describe(info_path)
        ),
    )
    .with_hint(
        "run 'pg_backrest --stanza=NAME stanza-create' first (it writes only what is missing), \
         and check repo1-path",
    )
}

/// A copy is already archived: same content is success (its SHA-1 returned), different
/// content is refused.
fn compare_with_archived(
    repo: &dyn Storage,
    dir: &str,
    stored: &StoredWal,
    file: &mut File,
    source: &str,
    wal: &WalName,
) -> Result<String> {
    let local = pipeline::digest(file, source)?.sha1;
    let archived = match &stored.sha1 {
        Some(s) => s.clone(),
        // History and backup history files carry no checksum in their name: hash the
        // stored copy.
        None => {
            let path = format!("{dir}/{}", stored.file_name);
            let mut r = repo.open_read(&path)?.ok_or_else(|| {
                Error::new(
                    Kind::FileMissing,
                    format!("'{}' vanished", repo.describe(&path)),
                )
            })?;

            pipeline::digest(&mut r, &repo.describe(&path))?.sha1
        }
    };
    if local == archived {
        crate::warn!(
            "WAL file '{}' already exists in the archive with the same checksum",
            wal.name
        );
        return Ok(local);
    }
    Err(Error::new(Kind::ArchiveDuplicate, format!(
        "WAL file '{}' already exists in the archive with a different checksum ({archived}, this one is {local})",
        wal.name
    ))
    .with_hint("the archive may belong to another cluster with the same stanza name; do not overwrite it"))
}
