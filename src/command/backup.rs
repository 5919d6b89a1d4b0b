//! backup --type=full|diff|incr: a consistent, compressed, checksummed copy of a running
//! cluster, resumable, and never visible before it is complete.
//!
//! The order of steps is what makes a crash at any instant harmless:
//! 1. `pg_backup_start` on a connection held open until `pg_backup_stop`;
//! 2. a full backup creates every directory of the manifest and the tablespace links in the
//!    repository (as pgBackRest); files are copied in parallel; `backup.manifest.copy`
//!    records the files copied so far every few seconds, so an interrupted backup can be
//!    resumed;
//! 3. `pg_backup_stop`; its backup_label and tablespace_map are stored in the backup;
//! 4. every WAL segment from start to stop must be in the archive (archive-check);
//! 5. `backup.manifest` is written, and only then the backup is added to `backup.info`.
//!
//! A diff or incr stores only files that changed since its prior: a file with the same size
//! and mtime, last modified before the prior backup started, references the prior's copy.

pub mod file;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::protocol::request::TreeReply;
use file::{backup_file, CopyParams, FileOutcome, FileSource, LocalFiles, RemoteFiles};
use walk::{SourceFile, Tablespace};

use super::archive_push::missing_info;
use crate::config::hosts::{self, Host};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::hook::RunFacts;
use crate::info::archive::ArchiveInfo;
pub(crate) use crate::info::backup::is_label;
use crate::info::backup::BackupInfo;
use crate::manifest::{BackupFacts, BackupOptions, BackupType, DbOid, FileEntry, Manifest};
use crate::pg::db::{self, Db};
use crate::pg::wal::{segment_range, WalName};
use crate::pipeline::{self, Ends};
use crate::repo::{RepoLayout, StoredWal};
use crate::storage::Storage;

/// How often the in-progress manifest is saved for resume.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(3);

/// Takes the backup; `run_facts` learns its label and type as soon as they are chosen, for the
/// dispatcher's hooks.
pub fn run(cfg: &Config, run_facts: &mut RunFacts) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let pg_path = cfg.required_path("pg1-path")?;
    if cfg.str("pg1-host").is_some() && cfg.str("repo1-host").is_some() {
        return Err(Error::new(
            Kind::Config,
            "pg1-host and repo1-host are both set: backup runs on one of the two hosts",
        )
        .with_hint("on the repository host set pg1-host; on the database host set repo1-host"));
    }
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let mut info = BackupInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.backup_info()))?;
    let archive = ArchiveInfo::load(repo.as_ref(), &layout)?
        .ok_or_else(|| missing_info(stanza, repo.as_ref(), &layout.archive_info()))?;

    let db = Db::connect(cfg)?;
    let facts = db.cluster_facts()?;
    db::check_data_directory(&facts, &pg_path)?;
    let what = format!("the cluster at '{}'", pg_path.display());
    info.db
        .check_cluster(facts.system_id, &facts.version, &what)
        .map_err(|e| e.with_kind(Kind::BackupMismatch))?;
    archive
        .db
        .check_cluster(facts.system_id, &facts.version, &what)
        .map_err(|e| e.with_kind(Kind::ArchiveMismatch))?;
    if db.in_recovery()? {
        return Err(Error::new(
            Kind::DbConnect,
            "backup from a standby is not supported; run it against the primary",
        ));
    }

    adopt_complete_backups(repo.as_ref(), &layout, &mut info)?;
    let (backup_type, prior) = choose_type(cfg, &info)?;
    let prior_manifest = match &prior {
        Some(label) => Some(
            Manifest::load(repo.as_ref(), &layout.manifest(label))?.ok_or_else(|| {
                Error::new(
                    Kind::FileMissing,
                    format!("prior backup '{label}' has no manifest"),
                )
                .with_hint("run verify; the prior backup is damaged")
            })?,
        ),
        None => None,
    };
    let compress =
        pipeline::configured_compress(cfg.str("compress-type"), cfg.int("compress-level"))?;
    let options = BackupOptions {
        archive_check: cfg.bool("archive-check"),
        archive_copy: false,
        backup_standby: false,
        buffer_size: None,
        checksum_page: None,
        compress_type: compress.kind().name().to_string(),
        compress_level: compress.level(),
        compress_level_network: None,
        delta: cfg.bool("delta"),
        hardlink: false,
        online: true,
        process_max: cfg.int("process-max").unwrap_or(1) as u32,
    };
    let resumed = find_resumable(
        repo.as_ref(),
        &layout,
        &info,
        backup_type,
        prior.as_deref(),
        &options,
        cfg.bool("resume"),
    )?;
    let label = match &resumed {
        Some(m) => m.backup.label.clone(),
        None => new_label(backup_type, prior.as_deref(), &info),
    };
    run_facts.backup_label = Some(label.clone());
    run_facts.backup_type = Some(backup_type);

    let timestamp_start = chrono::Utc::now().timestamp();
    let start = db.backup_start(&label, cfg.bool("start-fast"))?;
    let running = RunningBackup {
        db: &db,
        open: true,
    };
    let start_lsn = db::parse_lsn(&start.lsn)
        .ok_or_else(|| Error::internal(format!("bad LSN '{}'", start.lsn)))?;
    crate::info!(
        "backup start: label {label}, type {}, LSN {}, WAL {}",
        backup_type.name(),
        start.lsn,
        start.wal_file
    );

    let verify_pages = db.setting("data_checksums")? == "on";
    let tablespaces: Vec<Tablespace> = db
        .tablespaces()?
        .into_iter()
        .map(|(oid, name, location)| Tablespace {
            oid,
            name,
            location,
        })
        .collect();
    let version_dir = format!("PG_{}_{}", facts.version, facts.catalog_version);
    let tree = match db.remote() {
        None => walk::walk(&pg_path, &tablespaces, &version_dir)?,
        Some(client) => remote_walk(client, &pg_path, &tablespaces, &version_dir)?,
    };

    let mut manifest = Manifest {
        backup: BackupFacts {
            label: label.clone(),
            backup_type,
            prior: prior.clone(),
            // The chain so far, then this backup: what pgBackRest records as backup-reference.
            reference: prior_manifest
                .as_ref()
                .map(|pm| pm.reference_list())
                .unwrap_or_default()
                .into_iter()
                .chain(std::iter::once(label.clone()))
                .collect(),
            timestamp_start,
            timestamp_copy_start: chrono::Utc::now().timestamp(),
            timestamp_stop: None,
            lsn_start: start.lsn.clone(),
            lsn_stop: None,
            archive_start: start.wal_file.clone(),
            archive_stop: None,
        },
        db: info.db.current.clone(),
        options,
        targets: tree.targets,
        paths: tree.paths,
        files: BTreeMap::new(),
        links: tree.links,
        databases: databases(&db)?,
        annotation: super::annotate::from_options(cfg).map(|a| serde_json::json!(a)),
    };
    manifest.options.checksum_page = Some(verify_pages);

    // What each file needs: a reference to the prior's copy, a resumed copy, or a new copy.
    // With delta, size and mtime are not trusted: every file the prior has is copied and
    // compared by checksum, and only kept when it differs.
    let delta = manifest.options.delta;
    let mut to_copy: Vec<(SourceFile, Option<FileEntry>)> = Vec::new();
    let mut counters = Counters::default();
    for src in tree.files {
        let shortcut = if delta {
            None
        } else {
            prior_manifest
                .as_ref()
                .and_then(|pm| unchanged_since_prior(pm, &src))
        };
        if let Some(entry) = shortcut {
            counters.referenced += 1;
            manifest.files.insert(src.key.clone(), entry);
        } else if let Some(entry) = resumed
            .as_ref()
            .and_then(|r| reusable(repo.as_ref(), &layout, r, &src))
        {
            counters.resumed += 1;
            counters.resumed_bytes += entry.size;
            manifest.files.insert(src.key.clone(), entry);
        } else {
            let candidate = if delta {
                prior_manifest.as_ref().and_then(|pm| prior_entry(pm, &src))
            } else {
                None
            };
            to_copy.push((src, candidate));
        }
    }
    manifest.save_progress(repo.as_ref(), &layout.manifest(&label))?;
    if backup_type == BackupType::Full {
        create_paths_and_links(repo.as_ref(), &layout, &manifest)?;
    }

    let params = CopyParams {
        compress: manifest.options.compress()?,
        verify_pages,
        start_lsn,
        compress_threads: cfg.int("process-max").unwrap_or(1).max(1) as u32,
    };
    let source: Box<dyn FileSource> = match db.remote() {
        None => Box::new(LocalFiles),
        Some(_) => {
            let workers = cfg.int("process-max").unwrap_or(1).max(1);
            let target = hosts::ssh_target(cfg, Host::Pg)?;
            let command = hosts::remote_command(cfg, Host::Pg);
            let clients = (0..workers)
                .map(|_| crate::protocol::ssh::spawn_remote(&target, &command))
                .collect::<Result<_>>()?;
            Box::new(RemoteFiles::new(clients))
        }
    };
    copy_all(
        cfg,
        source.as_ref(),
        repo.as_ref(),
        &layout,
        &mut manifest,
        to_copy,
        &params,
        &mut counters,
    )?;

    let stop = running.stop()?;
    crate::info!("backup stop: LSN {}, WAL {}", stop.lsn, stop.wal_file);
    store_generated(
        repo.as_ref(),
        &layout,
        &mut manifest,
        &params,
        "pg_data/backup_label",
        stop.label_file.as_bytes(),
    )?;
    if !stop.tablespace_map.is_empty() {
        store_generated(
            repo.as_ref(),
            &layout,
            &mut manifest,
            &params,
            "pg_data/tablespace_map",
            stop.tablespace_map.as_bytes(),
        )?;
    }
    manifest.backup.lsn_stop = Some(stop.lsn.clone());
    manifest.backup.archive_stop = Some(stop.wal_file.clone());

    if manifest.options.archive_check {
        let segment_size: u64 = db
            // Reported in bytes (unit 'B') since PostgreSQL 11.
            .query_row("select setting from pg_settings where name = 'wal_segment_size'")
            .ok()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| s.parse().ok())
            .unwrap_or(16 << 20);
        let wal = segment_range(&start.wal_file, &stop.wal_file, segment_size)?;
        wait_for_wal(
            repo.as_ref(),
            &layout,
            &archive,
            &wal,
            cfg.seconds("archive-timeout"),
        )?;
    }
    drop(db);

    sync_backup_paths(repo.as_ref(), &layout, &manifest)?;
    manifest.backup.timestamp_stop = Some(chrono::Utc::now().timestamp());
    manifest.save(repo.as_ref(), &layout.manifest(&label))?;
    manifest.save_history(repo.as_ref(), &layout.backup_history(&label))?;
    info.backups.insert(label.clone(), manifest.summary());
    info.save(repo.as_ref(), &layout)?;

    let sizes = manifest.sizes();
    crate::info!(
        "backup {label} complete: {} files copied ({} bytes), {} referenced from the prior backup, \
         {} resumed ({} bytes), {} vanished during the copy; database {} bytes, stored {} bytes",
        counters.copied,
        counters.copied_bytes,
        counters.referenced,
        counters.resumed,
        counters.resumed_bytes,
        counters.vanished,
        sizes.size,
        sizes.repo_size_delta
    );
    Ok(())
}

/// PostgreSQL's backup between pg_backup_start and pg_backup_stop. Dropped before
/// [`RunningBackup::stop`] (an error, a signal), it stops the backup on the session, so the
/// backup is over in PostgreSQL before the command exits; what was copied stays resumable.
struct RunningBackup<'a> {
    db: &'a Db,
    open: bool,
}

impl RunningBackup<'_> {
    fn stop(mut self) -> Result<db::BackupStop> {
        // Whatever pg_backup_stop answers, it is not to be called again.
        self.open = false;
        self.db.backup_stop()
    }
}

impl Drop for RunningBackup<'_> {
    fn drop(&mut self) {
        if self.open {
            self.db.abort_backup();
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    copied: u64,
    copied_bytes: u64,
    referenced: u64,
    resumed: u64,
    resumed_bytes: u64,
    vanished: u64,
}

/// The requested type and its prior; a diff or incr with no full to build on becomes a full.
fn choose_type(cfg: &Config, info: &BackupInfo) -> Result<(BackupType, Option<String>)> {
    let requested = cfg.str("type").unwrap_or("incr");
    let t = BackupType::parse(requested).ok_or_else(|| {
        Error::invalid_value(format!(
            "invalid value '{requested}' for option '--type': must be one of: full, diff, incr"
        ))
    })?;
    let prior = match t {
        BackupType::Full => None,
        BackupType::Diff => info.latest_full().map(String::from),
        BackupType::Incr => info.latest().map(String::from),
    };
    if t != BackupType::Full && prior.is_none() {
        crate::warn!(
            "no prior backup exists, {} backup has been changed to full",
            t.name()
        );
        return Ok((BackupType::Full, None));
    }
    Ok((t, prior))
}

/// A label later than every existing one: `YYYYMMDD-HHMMSSF`, or `<full>_YYYYMMDD-HHMMSSD|I`.
fn new_label(t: BackupType, prior: Option<&str>, info: &BackupInfo) -> String {
    loop {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let label = match (t, prior) {
            (BackupType::Full, _) | (_, None) => format!("{stamp}F"),
            // Labels are checked where backup.info is read; `get` keeps a bad one from panicking.
            (_, Some(p)) => format!("{}_{stamp}{}", p.get(..16).unwrap_or(p), t.letter()),
        };
        let newest = info.latest().map(|l| {
            let own = l.rsplit('_').next().unwrap_or(l);
            own.get(..15).unwrap_or(own).to_string()
        });
        if newest.as_deref().is_none_or(|n| n < &stamp[..]) {
            return label;
        }
        // Two backups in the same second would share a label: wait for the next second.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a file still is what `e` recorded: same size and mtime, and that mtime earlier
/// than the second in which the recorded copy began reading it. A later modification would
/// carry an mtime at or after that second, so an equal mtime before it proves no change since
/// the read, even one within the same second as an earlier write. Entries without the copy
/// time fall back to the start of the backup that made them.
fn unchanged_since_copy(e: &FileEntry, src: &SourceFile, backup_start: i64) -> bool {
    e.size == src.size
        && e.timestamp == src.mtime
        && src.mtime < e.copied_at.unwrap_or(backup_start)
}

/// The prior's entry for a file unchanged since the prior copied it.
fn unchanged_since_prior(prior: &Manifest, src: &SourceFile) -> Option<FileEntry> {
    let e = prior.files.get(&src.key)?;
    let unchanged = unchanged_since_copy(e, src, prior.backup.timestamp_start);
    if unchanged {
        prior_entry(prior, src)
    } else {
        None
    }
}

/// The prior's entry for a file, as this backup would reference it.
fn prior_entry(prior: &Manifest, src: &SourceFile) -> Option<FileEntry> {
    let e = prior.files.get(&src.key)?;
    Some(FileEntry {
        reference: Some(
            e.reference
                .clone()
                .unwrap_or_else(|| prior.backup.label.clone()),
        ),
        mode: src.owner.mode.clone(),
        user: src.owner.user.clone(),
        group: src.owner.group.clone(),
        ..e.clone()
    })
}

/// A backup whose manifest was written but which a crash kept out of backup.info is
/// complete: add it rather than lose it.
pub(crate) fn adopt_complete_backups(
    repo: &dyn Storage,
    layout: &RepoLayout,
    info: &mut BackupInfo,
) -> Result<()> {
    let mut adopted = false;
    for entry in repo.list(&layout.backup_root())? {
        if !is_label(&entry) || info.backups.contains_key(&entry) {
            continue;
        }
        let Ok(Some(doc)) = crate::metafile::load_one(repo, &layout.manifest(&entry)) else {
            continue;
        };
        let Ok(m) = Manifest::from_doc(&doc, &entry) else {
            continue;
        };
        if m.db == info.db.current && m.backup.timestamp_stop.is_some() && m.backup.label == entry {
            crate::warn!("backup {entry} is complete but was missing from backup.info; adding it");
            info.backups.insert(entry, m.summary());
            adopted = true;
        }
    }
    if adopted {
        info.save(repo, layout)?;
    }
    Ok(())
}

/// An interrupted backup this one may continue: same type and prior, same options that
/// shape stored files. Any other leftover backup directory is removed.
fn find_resumable(
    repo: &dyn Storage,
    layout: &RepoLayout,
    info: &BackupInfo,
    t: BackupType,
    prior: Option<&str>,
    options: &BackupOptions,
    resume: bool,
) -> Result<Option<Manifest>> {
    let mut found = None;
    for entry in repo.list(&layout.backup_root())? {
        if !is_label(&entry) || info.backups.contains_key(&entry) {
            continue;
        }
        let partial = Manifest::load_copy(repo, &layout.manifest(&entry))?;
        let usable = partial.filter(|m| {
            resume
                && found.is_none()
                // A finished manifest here is a backup expire was removing, not one to go on with.
                && m.backup.timestamp_stop.is_none()
                && m.backup.backup_type == t
                && m.backup.prior.as_deref() == prior
                && m.db == info.db.current
                // The level does not matter: any level of a type decodes the same way.
                && m.options.compress_type == options.compress_type
                && repo
                    .list(&layout.backup_path(&entry))
                    .map(|l| !l.contains(&crate::manifest::MANIFEST_FILE.to_string()))
                    .unwrap_or(false)
        });
        match usable {
            Some(m) => {
                crate::info!("resuming interrupted backup {entry}");
                remove_stray_temp_files(repo, &layout.backup_path(&entry))?;
                found = Some(m);
            }
            None => {
                crate::warn!(
                    "removing interrupted backup {entry}: it cannot be resumed by this backup"
                );
                repo.remove_tree(&layout.backup_path(&entry))?;
            }
        }
    }
    Ok(found)
}

/// Temp files the interrupted backup's writers could not remove (its process was killed
/// outright, or by a second signal): nothing refers to them, and left in place they would
/// outlive the resumed backup, which only ever adds files beside them.
fn remove_stray_temp_files(repo: &dyn Storage, dir: &str) -> Result<()> {
    for rel in repo.temp_files(dir)? {
        let path = format!("{dir}/{rel}");
        crate::info!("removing stray temp file '{}'", repo.describe(&path));
        repo.remove(&path)?;
    }
    Ok(())
}

/// A file the interrupted backup already copied, if it is unchanged since before that backup
/// started and its stored copy still verifies.
fn reusable(
    repo: &dyn Storage,
    layout: &RepoLayout,
    partial: &Manifest,
    src: &SourceFile,
) -> Option<FileEntry> {
    let e = partial.files.get(&src.key)?;
    // As for a prior backup: the WAL this backup replays starts later, so a file changed
    // since the interrupted copy read it must be copied again.
    if e.reference.is_some() || !unchanged_since_copy(e, src, partial.backup.timestamp_start) {
        return None;
    }
    let path = layout.backup_file(&partial.backup.label, &partial.stored_name(&src.key));
    let mut reader = repo.open_read(&path).ok()??;
    let ends = Ends {
        source: &path,
        dest: "verification",
    };
    let compress = partial.options.compress().ok()?.kind();
    pipeline::restore(
        &mut reader,
        &mut std::io::sink(),
        compress,
        Some(&e.checksum),
        &ends,
    )
    .ok()?;
    Some(e.clone())
}

/// Every path of a full backup's manifest as a directory in the backup, and for each
/// tablespace a link `pg_data/pg_tblspc/OID` -> `../../pg_tblspc/OID`, as pgBackRest makes
/// them before copying: empty directories (pg_notify, pg_replslot, ...) then exist in the
/// repository, and a copy of the backup directory has the shape of a cluster. A diff or
/// incr gets only the directories its copied files need, as with pgBackRest. A resumed
/// backup makes them again: existing directories are kept, links made anew. Object storage
/// has neither directories nor links: nothing is made there, as with pgBackRest.
fn create_paths_and_links(repo: &dyn Storage, layout: &RepoLayout, m: &Manifest) -> Result<()> {
    let label = &m.backup.label;
    for path in m.paths.keys() {
        repo.create_path(&layout.backup_file(label, path))?;
    }
    if !repo.supports_links() {
        return Ok(());
    }
    for (name, target) in &m.targets {
        if let Some(oid) = &target.tablespace_id {
            repo.create_link(
                &format!("../../pg_tblspc/{oid}"),
                &layout.backup_file(label, &format!("pg_data/{name}")),
            )?;
        }
    }
    Ok(())
}

/// Copies files with process-max workers, saving progress for resume and logging it.
#[allow(clippy::too_many_arguments)]
fn copy_all(
    cfg: &Config,
    source: &dyn FileSource,
    repo: &dyn Storage,
    layout: &RepoLayout,
    manifest: &mut Manifest,
    mut files: Vec<(SourceFile, Option<FileEntry>)>,
    params: &CopyParams,
    counters: &mut Counters,
) -> Result<()> {
    // Largest first, so one big file does not finish last on its own.
    files.sort_by_key(|f| std::cmp::Reverse(f.0.size));
    let total: u64 = files.iter().map(|f| f.0.size).sum();
    let batches = file::batches(files.iter().map(|f| f.0.size));
    let workers = crate::repo::workers(cfg)?;
    let cancel = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(SourceFile, Result<FileOutcome>)>();

    let label = manifest.backup.label.clone();
    let manifest_path = layout.manifest(&label);
    let mut first_error: Option<Error> = None;
    std::thread::scope(|scope| {
        let cancel = &cancel;
        let workers = &workers;
        scope.spawn(move || {
            // Errors travel with the results to the loop below, which owns them; once it
            // sets `cancel`, the hand-out of batches stops. The error returned here only says
            // so. A batch that was started is finished: its files were asked for at once.
            let _ = workers.try_each_in_order(&batches, |batch| {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::internal("backup cancelled"));
                }
                let batch = &files[batch.clone()];
                let srcs: Vec<&SourceFile> = batch.iter().map(|(src, _)| src).collect();
                if let Err(e) = source.announce(&srcs, params) {
                    let _ = tx.send((batch[0].0.clone(), Err(e)));
                    return Err(Error::internal("backup cancelled"));
                }
                let worker_repo = workers.repo(repo);
                for (src, prior) in batch {
                    let result = backup_file(
                        source,
                        worker_repo,
                        layout,
                        &label,
                        src,
                        prior.as_ref(),
                        params,
                    );
                    let _ = tx.send((src.clone(), result));
                }
                Ok(())
            });
        });

        let progress = crate::progress::Progress::new("backup", total);
        let mut last_save = Instant::now();
        for (src, result) in rx {
            match result {
                Ok(FileOutcome::Copied(entry)) => {
                    counters.copied += 1;
                    counters.copied_bytes += entry.size;
                    manifest.files.insert(src.key, entry);
                }
                Ok(FileOutcome::Unchanged(entry)) => {
                    counters.referenced += 1;
                    manifest.files.insert(src.key, entry);
                }
                Ok(FileOutcome::Vanished) => {
                    counters.vanished += 1;
                    crate::detail!(
                        "file '{}' vanished during the backup; it is not part of it",
                        src.path.display()
                    );
                }
                Err(e) => {
                    cancel.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
            progress.add(src.size);
            if first_error.is_none() && last_save.elapsed() >= PROGRESS_SAVE_INTERVAL {
                if let Err(e) = manifest.save_progress(repo, &manifest_path) {
                    cancel.store(true, Ordering::Relaxed);
                    first_error = Some(e);
                }
                last_save = Instant::now();
            }
        }
    });
    match first_error {
        Some(e) => {
            // Keep what was copied so the next run can resume it.
            let _ = manifest.save_progress(repo, &manifest_path);
            Err(e)
        }
        None => manifest.save_progress(repo, &manifest_path),
    }
}

/// Makes every file the backup stored durable under its name: files are committed without
/// syncing their directory (one sync per file was a third of the fsyncs of a backup), so each
/// directory that received files is synced once here, before the manifest that declares the
/// backup complete, as pgBackRest syncs its paths. (Directories themselves were made durable in
/// their parents when created.) A crash before this point leaves at worst a file missing from
/// a backup that is not complete; resume checks every file it keeps against its checksum, so
/// such a file is copied again.
fn sync_backup_paths(repo: &dyn Storage, layout: &RepoLayout, manifest: &Manifest) -> Result<()> {
    let label = &manifest.backup.label;
    let stored: BTreeSet<&str> = manifest
        .files
        .iter()
        .filter(|(_, e)| e.reference.is_none())
        .filter_map(|(key, _)| key.rsplit_once('/').map(|(dir, _)| dir))
        .collect();
    for dir in stored {
        repo.sync_path(&layout.backup_file(label, dir))?;
    }
    repo.sync_path(&layout.backup_file(label, ""))
}

/// Stores a file PostgreSQL handed us (backup_label, tablespace_map) through the pipeline.
fn store_generated(
    repo: &dyn Storage,
    layout: &RepoLayout,
    manifest: &mut Manifest,
    p: &CopyParams,
    key: &str,
    data: &[u8],
) -> Result<()> {
    let stored = format!("{key}{}", p.compress.extension());
    let (dir, name) = stored.rsplit_once('/').unwrap_or(("", stored.as_str()));
    let repo_dir = layout.backup_file(&manifest.backup.label, dir);
    let mut w = repo.open_write_named(&repo_dir, name)?;
    let dest = repo.describe(&repo_dir);
    let copied = pipeline::store(
        &mut &data[..],
        &mut w,
        p.compress,
        1,
        &Ends {
            source: key,
            dest: &dest,
        },
    )?;
    w.commit(name)?;
    let owner = manifest.paths.get("pg_data").cloned();
    manifest.files.insert(
        key.to_string(),
        FileEntry {
            size: copied.size,
            timestamp: chrono::Utc::now().timestamp(),
            checksum: copied.sha1,
            repo_size: copied.stored_size,
            mode: "0600".into(),
            user: owner.as_ref().map(|o| o.user.clone()).unwrap_or_default(),
            group: owner.map(|o| o.group).unwrap_or_default(),
            checksum_repo: None,
            reference: None,
            checksum_page: None,
            checksum_page_error: Vec::new(),
            copied_at: None,
            block_index: None,
        },
    );
    Ok(())
}

/// The cluster's databases with what pgBackRest records for each: the OID, and template0's
/// OID as the last system OID (PostgreSQL 15 dropped datlastsysoid; pgBackRest uses this).
fn databases(db: &Db) -> Result<BTreeMap<String, DbOid>> {
    let rows = db.query_rows(
        "select datname, oid::text, (select oid from pg_catalog.pg_database \
         where datname = 'template0')::text from pg_catalog.pg_database",
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let oid = |i: usize| r.get(i)?.as_deref()?.parse::<u32>().ok();
            let db = DbOid {
                id: oid(1)?,
                last_system_id: oid(2)?,
            };
            Some((r.first()?.clone()?, db))
        })
        .collect())
}

/// The file list of the database host, walked there by the remote that holds our session.
fn remote_walk(
    client: &std::sync::Mutex<crate::protocol::client::Client>,
    pg_path: &std::path::Path,
    tablespaces: &[Tablespace],
    version_dir: &str,
) -> Result<walk::Tree> {
    let mut c = client
        .lock()
        .map_err(|_| Error::internal("pg1-host client lock poisoned"))?;
    let reply: serde_json::Value = c.call(&crate::command::remote::Request::Walk {
        pg_path: pg_path.display().to_string(),
        tablespaces: tablespaces.to_vec(),
        version_dir: version_dir.to_string(),
    })?;
    serde_json::from_value::<TreeReply<walk::Tree>>(reply)
        .map(|r| r.tree)
        .map_err(|e| Error::remote(format!("invalid file list from pg1-host: {e}")))
}

/// Waits until every segment the backup needs to be consistent is in the archive.
fn wait_for_wal(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive: &ArchiveInfo,
    segments: &[String],
    timeout: Duration,
) -> Result<()> {
    let archive_id = archive.db.current.archive_id();
    let deadline = Instant::now() + timeout;
    for seg in segments {
        let wal = WalName::parse(seg)?;
        let dir = layout.wal_dir(&archive_id, &wal);
        loop {
            crate::signal::check()?;
            if !StoredWal::find(&wal, &repo.list(&dir)?).is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    Kind::ArchiveTimeout,

                    format!(
                        "WAL segment '{seg}' that the backup needs did not reach the archive within archive-timeout ({})",
                        crate::config::fmt_seconds(timeout)
                    ),
                )
                .with_hint("check archive_command and PostgreSQL's log; the backup is not usable without this WAL"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    crate::info!(
        "WAL segments {} to {} are in the archive",
        segments.first().map_or("", |s| s),
        segments.last().map_or("", |s| s)
    );
    Ok(())
}
