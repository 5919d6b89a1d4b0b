//! archive-push WAL_PATH: PostgreSQL's archive_command.
//!
//! Order matters for crash safety and honesty: the file's identity is checked before a byte
//! is stored (name, page header against archive.info, full segment size); the content goes
//! through the copy pipeline into a temp file that becomes visible under its final,
//! checksum-bearing name only when complete and durable. An already archived segment is
//! compared by checksum: same content is success, different content is refused and nothing
//! is overwritten.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::archive::ArchiveInfo;
use crate::pg::wal::{WalHeader, WalKind, WalName, LONG_HEADER_SIZE};
use crate::pipeline::{self, Compress, Ends};
use crate::repo::{RepoLayout, StoredWal};
use crate::storage::{self, Storage};

pub fn run(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let wal_path = super::pg_relative_path(&cfg.args[0]);
    let file_name = wal_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wal = WalName::parse(&file_name)?;
    let source = wal_path.display().to_string();
    let mut file = File::open(&wal_path).map_err(|e| Error::io("open WAL file", &wal_path, e))?;

    // Reading the header first costs nothing: the pipeline reads these bytes again from the
    // page cache after a seek, and a foreign segment never touches the repository.
    let header = if wal.has_page_header() {
        let mut page = [0u8; LONG_HEADER_SIZE];
        file.read_exact(&mut page)
            .map_err(|e| Error::io("read WAL header of", &wal_path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &wal_path, e))?;
        Some(WalHeader::parse(&page, &source)?)
    } else {
        None
    };
    if let (Some(h), WalKind::Segment) = (&header, wal.kind) {
        let size = file
            .metadata()
            .map_err(|e| Error::io("stat", &wal_path, e))?
            .len();
        if size != u64::from(h.segment_size) {
            return Err(Error::new(
                Kind::WalFormat,
                format!("WAL segment '{source}' is {size} bytes, but its header says segments are {} bytes", h.segment_size),
            )
            .with_hint("PostgreSQL archives only complete segments; this file was truncated or altered"));
        }
    }

    let repo = storage::repo(cfg)?;
    let layout = RepoLayout::new(stanza);
    let info = ArchiveInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.archive_info()))?;
    if let Some(h) = &header {
        info.db
            .check_cluster(h.system_id, &h.version, &format!("WAL file '{source}'"))?;
    }

    let archive_id = info.db.current.archive_id();
    let dir = layout.wal_dir(&archive_id, &wal);
    let existing = StoredWal::find(&wal, &repo.list(&dir)?);
    if let Some(stored) = existing.first() {
        return compare_with_archived(repo.as_ref(), &dir, stored, &mut file, &source, &wal);
    }

    let compress = match (wal.kind, cfg.str("compress-type")) {
        (WalKind::History, _) | (_, Some("none")) => Compress::None,
        _ => Compress::Gz(cfg.int("compress-level").unwrap_or(6) as u32),
    };
    let mut writer = repo.open_write(&dir)?;
    let dest = repo.describe(&dir);
    let copied = pipeline::store(
        &mut file,
        &mut writer,
        compress,
        1,
        &Ends {
            source: &source,
            dest: &dest,
        },
    )?;
    let stored = StoredWal::new(&wal, &copied.sha1, compress);
    writer.commit(&stored.file_name)?;
    crate::info!(
        "pushed WAL file '{}' to the archive ({} bytes, stored {} bytes, sha1 {})",
        wal.name,
        copied.size,
        copied.stored_size,
        copied.sha1
    );
    Ok(())
}

/// The stanza lacks one of its info files (`info_path`, archive.info or backup.info): named
/// exactly, since the other one may well be there.
pub fn missing_info(stanza: &str, repo: &dyn Storage, info_path: &str) -> Error {
    let file = info_path.rsplit('/').next().unwrap_or(info_path);
    Error::new(
        Kind::RepoMissing,
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

/// A copy is already archived: same content is success, different content is refused.
fn compare_with_archived(
    repo: &dyn Storage,
    dir: &str,
    stored: &StoredWal,
    file: &mut File,
    source: &str,
    wal: &WalName,
) -> Result<()> {
    let local = pipeline::digest(file, source)?.sha1;
    let archived = match &stored.sha1 {
        Some(s) => s.clone(),
        // History files carry no checksum in their name: hash the stored copy.
        None => {
            let path = format!("{dir}/{}", stored.file_name);
            let mut r = repo
                .open_read(&path)?
                .ok_or_else(|| Error::integrity(format!("'{}' vanished", repo.describe(&path))))?;
            pipeline::digest(&mut r, &repo.describe(&path))?.sha1
        }
    };
    if local == archived {
        crate::warn!(
            "WAL file '{}' already exists in the archive with the same checksum",
            wal.name
        );
        return Ok(());
    }
    Err(Error::integrity(format!(
        "WAL file '{}' already exists in the archive with a different checksum ({archived}, this one is {local})",
        wal.name
    ))
    .with_hint("the archive may belong to another cluster with the same stanza name; do not overwrite it"))
}
