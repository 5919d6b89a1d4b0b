//! restore [--set=LABEL]: rebuilds a data directory from a backup, refusing to touch
//! anything that is not empty or a running cluster.
//!
//! Every file streams from the backup that holds its data (the manifest's reference)
//! through the copy pipeline's restore direction (gunzip, SHA-1 check) into a temp file that
//! is fsynced and renamed: a checksum mismatch stops the restore naming the file, and a
//! crash leaves no half-written file under a real name. Modes, owners (when run as root),
//! mtimes and tablespace links are restored; restore_command and recovery.signal make
//! `pg_ctl start` recover to the end of the archive.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::archive_push::missing_info;
mod blocks;
pub mod target;

use target::RecoveryTarget;

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::backup::BackupInfo;
use crate::manifest::{FileEntry, Manifest, Owner};
use crate::pipeline::{self, Compress, Ends};
use crate::repo::RepoLayout;
use crate::storage::posix::{
    create_dir_durable, sync_dir, DropBehindReader, PosixWriter, DIR_MODE,
};
use crate::storage::{AtomicWrite, Storage};

pub fn run(cfg: &Config) -> Result<()> {
    let pg_path = cfg.required_path("pg1-path")?;
    let target = RecoveryTarget::from_config(cfg)?;
    let restored = restore(cfg, &pg_path, &target, cfg.bool("delta"), None)?;
    // INFO as pgBackRest: nothing on stdout at the default log-level-console (warn).
    crate::info!(
        "restore of backup {} into '{}' complete",
        restored.label,
        pg_path.display()
    );
    Ok(())
}

/// What a restore restored.
pub struct Restored {
    pub label: String,
    pub version: String,
    pub files: usize,
}

/// Restores the chosen backup into `pg_path` with `target`'s recovery settings. The restore
/// command and the drill both come here.
/// `relocate`: put tablespaces and a linked pg_wal under this directory instead of their
/// recorded locations (the drill: a throwaway copy must not write where production lives).
pub fn restore(
    cfg: &Config,
    pg_path: &Path,
    target: &RecoveryTarget,
    delta: bool,
    relocate: Option<&Path>,
) -> Result<Restored> {
    let stanza = cfg.stanza_required()?;
    let pg_path = pg_path.to_path_buf();
    // Built (and refused if it cannot be written safely) before anything is restored.
    let restore_command = restore_command(cfg, stanza)?;
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let info = BackupInfo::load(repo.as_ref(), &layout)?
        // pgBackRest's restore: a stanza without backup.info has no backup set to restore.
        .ok_or_else(|| {
            missing_info(stanza, repo.as_ref(), &layout.backup_info())
                .with_kind(Kind::BackupSetInvalid)
        })?;
    let label = match cfg.str("set").unwrap_or("latest") {
        "latest" => target.choose_backup(&info.backups)?.ok_or_else(|| {
            Error::new(
                Kind::BackupSetInvalid,
                format!("stanza '{stanza}' has no backup to restore"),
            )
            .with_hint("take a backup first; 'pg_backrest info' lists the backups")
        })?,
        set => match info.backups.get(set) {
            Some(summary) => {
                target.reachable_from(summary)?;
                set.to_string()
            }
            None => {
                return Err(Error::new(
                    Kind::BackupSetInvalid,
                    format!("backup set '{set}' is not in the repository of stanza '{stanza}'"),
                )
                .with_hint("'pg_backrest info' lists the backups"))
            }
        },
    };
    let mut manifest =
        Manifest::load(repo.as_ref(), &layout.manifest(&label))?.ok_or_else(|| {
            Error::new(
                Kind::FileMissing,
                format!("backup '{label}' has no manifest"),
            )
        })?;
    match relocate {
        Some(dir) => relocate_outside_paths(&mut manifest, dir),
        None => apply_mappings(&mut manifest, &Mappings::from_config(cfg))?,
    }
    // Checked before anything is written.
    let zeroed = excluded_databases(&manifest, &cfg.list("db-include"))?;
    set_owner_policy(&manifest)?;
    info.db
        .check_cluster(
            manifest.db.system_id,
            &manifest.db.version,
            &format!("backup '{label}'"),
        )
        .map_err(|e| e.with_kind(Kind::BackupMismatch))?;

    if delta {
        check_delta_destination(&pg_path, &manifest, cfg.bool("force"))?;
    } else {
        check_destination(&pg_path, "pg1-path")?;
        for (key, target) in manifest
            .targets
            .iter()
            .filter(|(k, _)| k.starts_with("pg_tblspc/"))
        {
            check_destination(Path::new(&target.path), &format!("tablespace '{key}'"))?;
        }
    }

    // Which compression each holding backup used.
    let mut compress_of: BTreeMap<String, Compress> = BTreeMap::new();
    compress_of.insert(label.clone(), stored_as(&label, &manifest)?);
    for r in manifest.references() {
        let m = Manifest::load(repo.as_ref(), &layout.manifest(&r))?.ok_or_else(|| {
            Error::new(
                Kind::FileMissing,
                format!("backup '{r}', which '{label}' references, has no manifest"),
            )
        })?;
        compress_of.insert(r.clone(), stored_as(&r, &m)?);
    }

    crate::info!("restore backup {label} into '{}'", pg_path.display());
    create_dir_durable(&pg_path)?;
    set_mode(&pg_path, 0o700)?;
    if delta {
        // Until the restore is complete, the directory must not start as a cluster.
        remove_control_file(&pg_path)?;
    }
    let removed = if delta {
        remove_unlisted(&manifest, &pg_path)?
    } else {
        0
    };
    for (key, owner) in manifest.paths.iter().filter(|(k, _)| is_directory(k)) {
        let local = local_path(&manifest, &pg_path, key)?;
        if manifest.links.contains_key(key) {
            continue;
        }
        if fs::symlink_metadata(&local).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&local).map_err(|e| Error::io("remove", &local, e))?;
        }
        create_dir_durable(&local)?;
        set_mode(&local, parse_mode(&owner.mode).unwrap_or(DIR_MODE))?;
        chown(&local, &owner.user, &owner.group)?;
    }
    for (key, link) in &manifest.links {
        let local = local_path(&manifest, &pg_path, key)?;
        let dest = PathBuf::from(&link.destination);
        create_dir_durable(&dest)?;
        match fs::symlink_metadata(&local) {
            Ok(m)
                if m.file_type().is_symlink()
                    && fs::read_link(&local).ok().as_ref() == Some(&dest) =>
            {
                continue
            }
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&local).map_err(|e| Error::io("remove", &local, e))?
            }
            Ok(_) => fs::remove_file(&local).map_err(|e| Error::io("remove", &local, e))?,
            Err(_) => {}
        }
        if let Some(parent) = local.parent() {
            create_dir_durable(parent)?;
        }
        std::os::unix::fs::symlink(&dest, &local)
            .map_err(|e| Error::io("create link", &local, e))?;
        if let Some(parent) = local.parent() {
            sync_dir(parent)?;
        }
    }

    // pg_control comes back last, once everything else is durable, so that a restore stopped
    // at any instant leaves a directory PostgreSQL refuses to start rather than a cluster
    // with files missing. PG_VERSION comes first, so that such a directory still looks like
    // a data directory to the delta restore that finishes the job.
    let (control, files): (Vec<_>, Vec<_>) = manifest
        .files
        .iter()
        .partition(|(key, _)| key.as_str() == CONTROL_FILE);
    let (version, files): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|(key, _)| key.as_str() == VERSION_FILE);
    let progress =
        crate::progress::Progress::new("restore", manifest.files.values().map(|e| e.size).sum());
    let job = FileJob {
        repo: repo.as_ref(),
        layout: &layout,
        manifest: &manifest,
        label: &label,
        compress_of: &compress_of,
        pg_path: &pg_path,
        delta,
        zeroed: &zeroed,
        progress: &progress,
    };
    let workers = crate::repo::workers(cfg)?;
    let mut counts = restore_files(&workers, &job, version)?;
    sync_dir(&pg_path)?;
    counts.add(restore_files(&workers, &job, files)?);
    sync_restored_dirs(&manifest, &pg_path)?;
    write_recovery_settings(
        target,
        &restore_command,
        &pg_path,
        manifest.paths.get("pg_data"),
    )?;
    counts.add(restore_files(&workers, &job, control)?);
    drop(progress);
    sync_dir(&pg_path.join("global"))?;
    sync_dir(&pg_path)?;
    if !zeroed.is_empty() {
        crate::info!(
            "db-include: {} files of {} excluded databases restored as sparse zeroed files; drop those databases",
            counts.zeroed,
            zeroed.len()
        );
    }
    if delta {
        crate::info!(
            "delta restore: {} files kept, {} restored ({} bytes), {} unlisted entries removed",
            counts.kept,
            counts.restored,
            counts.restored_bytes,
            removed
        );
    }
    crate::info!(
        "restore of backup {label} complete: {} files",
        manifest.files.len()
    );
    Ok(Restored {
        label,
        version: manifest.db.version.clone(),
        files: manifest.files.len(),
    })
}

/// Where the user asked tablespaces and links to go instead of their recorded places.
#[derive(Debug, Default)]
pub struct Mappings {
    /// Tablespace name or OID → path.
    pub tablespaces: Vec<(String, String)>,
    pub tablespaces_all: Option<String>,
    /// Link path inside the data directory (e.g. `pg_wal`) → destination.
    pub links: Vec<(String, String)>,
    pub links_all: bool,
}

impl Mappings {
    fn from_config(cfg: &Config) -> Mappings {
        let owned = |v: Vec<(&str, &str)>| {
            v.into_iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect()
        };
        Mappings {
            tablespaces: owned(cfg.path_map("tablespace-map")),
            tablespaces_all: cfg.str("tablespace-map-all").map(String::from),
            links: owned(cfg.path_map("link-map")),
            links_all: cfg.bool("link-all"),
        }
    }
}

/// Applies the user's mappings. Links other than tablespaces (a pg_wal on another disk, say)
/// come back as plain directories unless mapped or `--link-all`: restoring them to their
/// recorded destination could write into another cluster's files on this host.
pub fn apply_mappings(manifest: &mut Manifest, m: &Mappings) -> Result<()> {
    for (wanted, path) in &m.tablespaces {
        let found = manifest.targets.iter_mut().find(|(k, t)| {
            k.starts_with("pg_tblspc/")
                && (t.tablespace_id.as_deref() == Some(wanted.as_str())
                    || t.tablespace_name.as_deref() == Some(wanted.as_str()))
        });
        let Some((key, target)) = found else {
            return Err(Error::new(
                Kind::TablespaceMap,
                format!("tablespace '{wanted}' of --tablespace-map is not in the backup"),
            ));
        };
        target.path = path.clone();
        let link_key = format!("pg_data/{key}");
        if let Some(link) = manifest.links.get_mut(&link_key) {
            link.destination = path.clone();
        }
    }
    if let Some(all) = &m.tablespaces_all {
        let mapped: Vec<&String> = m.tablespaces.iter().map(|(k, _)| k).collect();
        for (key, target) in manifest
            .targets
            .iter_mut()
            .filter(|(k, _)| k.starts_with("pg_tblspc/"))
        {
            let named = |v: &Option<String>| v.as_ref().is_some_and(|n| mapped.contains(&n));
            if named(&target.tablespace_id) || named(&target.tablespace_name) {
                continue;
            }
            let name = target
                .tablespace_name
                .clone()
                .unwrap_or_else(|| key.replace('/', "-"));
            target.path = format!("{all}/{name}");
            if let Some(link) = manifest.links.get_mut(&format!("pg_data/{key}")) {
                link.destination = target.path.clone();
            }
        }
    }
    for (wanted, path) in &m.links {
        let key = format!("pg_data/{wanted}");
        match manifest.links.get_mut(&key) {
            Some(link) if !wanted.starts_with("pg_tblspc/") => link.destination = path.clone(),
            _ => {
                let known: Vec<&str> = manifest
                    .links
                    .keys()
                    .filter(|k| !k.starts_with("pg_data/pg_tblspc/"))
                    .map(|k| k.trim_start_matches("pg_data/"))
                    .collect();
                return Err(Error::new(
                    Kind::LinkMap,
                    format!(
                        "link '{wanted}' of --link-map is not in the backup (its links: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
                .with_hint("map tablespaces with --tablespace-map"));
            }
        }
    }
    if !m.links_all {
        let mapped: Vec<String> = m
            .links
            .iter()
            .map(|(k, _)| format!("pg_data/{k}"))
            .collect();
        manifest
            .links
            .retain(|k, _| k.starts_with("pg_data/pg_tblspc/") || mapped.contains(k));
    }
    Ok(())
}

/// Points every tablespace and link of the manifest into `dir`, keyed by the link's name.
fn relocate_outside_paths(manifest: &mut Manifest, dir: &Path) {
    for (key, target) in manifest
        .targets
        .iter_mut()
        .filter(|(k, _)| k.starts_with("pg_tblspc/"))
    {
        target.path = dir.join(key.replace('/', "-")).display().to_string();
    }
    for (key, link) in manifest.links.iter_mut() {
        let tablespace = key.strip_prefix("pg_data/");
        link.destination = dir
            .join(tablespace.unwrap_or(key).replace('/', "-"))
            .display()
            .to_string();
    }
}

/// Refuses a non-empty directory and a running cluster.
fn check_destination(path: &Path, what: &str) -> Result<()> {
    if path.join("postmaster.pid").exists() {
        return Err(Error::new(
            Kind::PgRunning,
            format!(
                "{what} '{}' holds a running cluster (postmaster.pid exists)",
                path.display()
            ),
        )
        .with_hint("stop PostgreSQL first; restore never writes into a running cluster"));
    }
    match fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::new(
                    Kind::PathNotEmpty,
                    format!("{what} '{}' is not empty", path.display()),
                )
                .with_hint(
                    "restore into an empty or absent directory; move the old one aside first",
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Whether a path key of the manifest is a directory of its own: pgBackRest also lists
/// `pg_tblspc`, the parent of the tablespace targets, which is none.
fn is_directory(key: &str) -> bool {
    key != "pg_tblspc"
}

/// Where a manifest key lives on this host.
fn local_path(manifest: &Manifest, pg_path: &Path, key: &str) -> Result<PathBuf> {
    if key == "pg_data" {
        return Ok(pg_path.to_path_buf());
    }
    if let Some(rest) = key.strip_prefix("pg_data/") {
        return Ok(pg_path.join(rest));
    }
    let mut parts = key.splitn(3, '/');
    let (Some("pg_tblspc"), Some(oid)) = (parts.next(), parts.next()) else {
        return Err(Error::integrity(format!(
            "manifest key '{key}' has no target"
        )));
    };
    let target = manifest
        .targets
        .get(&format!("pg_tblspc/{oid}"))
        .ok_or_else(|| Error::integrity(format!("manifest has no target for '{key}'")))?;
    let base = PathBuf::from(&target.path);
    Ok(match parts.next() {
        Some(rest) => base.join(rest),
        None => base,
    })
}

/// A recorded mode, without what PostgreSQL never sets and a tampered manifest could use:
/// setuid, setgid and sticky bits, and write access for group or others.
fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok().map(|mode| mode & 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set mode of", path, e))
}

/// Gives `path` the cluster's owner when running as root (see [`OwnerPolicy`]); otherwise
/// files belong to the user running restore, which is what a DBA restoring as postgres wants.
fn chown(path: &Path, user: &str, group: &str) -> Result<()> {
    let Some((uid, gid)) = owner_ids(user, group) else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| Error::io("change owner of", path, e))
}

/// As [`chown`], on a file still open under its temp name.
fn fchown(file: &fs::File, temp: &Path, user: &str, group: &str) -> Result<()> {
    let Some((uid, gid)) = owner_ids(user, group) else {
        return Ok(());
    };
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
        .map_err(|e| Error::io("change owner of", temp, e))
}

/// Whom a restore run as root makes the owner of what it writes. The policy: everything
/// belongs to the owner recorded for `pg_data`, the cluster's owner, as PostgreSQL requires;
/// that user must exist here and must not be root. Owners recorded for single files are
/// never applied as they are: a tampered manifest could otherwise hand a file to any user.
struct OwnerPolicy {
    user: String,
    group: String,
    uid: u32,
    gid: u32,
}

static OWNER_POLICY: std::sync::Mutex<Option<OwnerPolicy>> = std::sync::Mutex::new(None);

/// Sets the [`OwnerPolicy`] of this restore; a no-op unless running as root.
fn set_owner_policy(manifest: &Manifest) -> Result<()> {
    let mut policy = OWNER_POLICY.lock().unwrap_or_else(|e| e.into_inner());
    *policy = None;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let owner = manifest.paths.get("pg_data").ok_or_else(|| {
        Error::integrity("the backup's manifest has no entry for pg_data".to_string())
    })?;
    let user = nix::unistd::User::from_name(&owner.user)
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::new(
                Kind::UserMissing,
                format!(
                    "restore as root: the cluster's owner '{}', recorded in the backup, is not a \
                 user of this host",
                    owner.user
                ),
            )
            .with_hint("create that user, or run restore as the user who will run PostgreSQL")
        })?;
    if user.uid.is_root() {
        return Err(Error::integrity(format!(
            "restore as root: the backup records root ('{}') as the cluster's owner, which \
             PostgreSQL never runs as",
            owner.user
        ))
        .with_hint("the manifest may have been tampered with; run 'pg_backrest verify'"));
    }
    let gid = nix::unistd::Group::from_name(&owner.group)
        .ok()
        .flatten()
        .map_or(user.gid, |g| g.gid);
    *policy = Some(OwnerPolicy {
        user: owner.user.clone(),
        group: owner.group.clone(),
        uid: user.uid.as_raw(),
        gid: gid.as_raw(),
    });
    Ok(())
}

/// The ids [`chown`] applies, or `None` when not running as root. An entry recorded with
/// another owner than the cluster's gets the cluster's, with one warning per such owner.
fn owner_ids(user: &str, group: &str) -> Option<(u32, u32)> {
    use std::collections::BTreeSet;
    static WARNED: std::sync::Mutex<BTreeSet<(String, String)>> =
        std::sync::Mutex::new(BTreeSet::new());
    let policy = OWNER_POLICY.lock().unwrap_or_else(|e| e.into_inner());
    let policy = policy.as_ref()?;
    if (user, group) != (policy.user.as_str(), policy.group.as_str()) {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert((user.to_string(), group.to_string())) {
            crate::warn!(
                "the backup records owner '{user}:{group}' for some files; restore gives them \
                 the cluster's owner '{}:{}'",
                policy.user,
                policy.group
            );
        }
    }
    Some((policy.uid, policy.gid))
}

#[derive(Debug, Default)]
struct Counts {
    kept: u64,
    restored: u64,
    restored_bytes: u64,
    zeroed: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.kept += other.kept;
        self.restored += other.restored;
        self.restored_bytes += other.restored_bytes;
        self.zeroed += other.zeroed;
    }
}

/// The manifest keys of the file restored last and of the one restored first.
const CONTROL_FILE: &str = "pg_data/global/pg_control";
const VERSION_FILE: &str = "pg_data/PG_VERSION";

/// Delta: removes the old pg_control (durably) before any file changes.
fn remove_control_file(pg_path: &Path) -> Result<()> {
    let control = pg_path.join("global/pg_control");
    match fs::remove_file(&control) {
        Ok(()) => sync_dir(&pg_path.join("global")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &control, e)),
    }
}

/// Files are renamed into place without a directory fsync each; this makes every directory
/// of the restore durable at once, before the restore goes on to pg_control.
fn sync_restored_dirs(manifest: &Manifest, pg_path: &Path) -> Result<()> {
    use rayon::prelude::*;
    let dirs = manifest
        .paths
        .keys()
        .filter(|key| is_directory(key) && !manifest.links.contains_key(*key))
        .map(|key| local_path(manifest, pg_path, key))
        .collect::<Result<Vec<_>>>()?;
    dirs.par_iter().try_for_each(|dir| sync_dir(dir))
}

/// What every file of one restore shares.
struct FileJob<'a> {
    repo: &'a dyn Storage,
    layout: &'a RepoLayout,
    manifest: &'a Manifest,
    label: &'a str,
    compress_of: &'a BTreeMap<String, Compress>,
    pg_path: &'a Path,
    delta: bool,
    zeroed: &'a std::collections::BTreeSet<u32>,
    progress: &'a crate::progress::Progress,
}

/// One job of the restore's worker queue: a whole file, or one run of blocks (by number) of a
/// file restored block by block ([`blocks`]). Small, as a large cluster has many.
enum Job<'a> {
    File(&'a String, &'a FileEntry),
    Block(u32, u32),
}

fn restore_files(
    workers: &crate::parallel::Workers,
    job: &FileJob,
    mut files: Vec<(&String, &FileEntry)>,
) -> Result<Counts> {
    let FileJob {
        repo,
        layout,
        manifest,
        label,
        compress_of,
        pg_path,
        delta,
        zeroed,
        progress,
    } = *job;
    // Largest first; a file with a block index gives its blocks in its place, so that
    // process-max workers share it.
    files.sort_by_key(|f| std::cmp::Reverse(f.1.size));
    let stored_of = |key: &str, entry: &FileEntry| {
        let holder = entry.reference.as_deref().unwrap_or(label);
        let compress = compress_of.get(holder).copied().unwrap_or(Compress::None);
        let stored = layout.backup_file(holder, &format!("{key}{}", compress.extension()));
        (stored, compress)
    };
    let mut split = Vec::new();
    let mut jobs = Vec::with_capacity(files.len());
    for (key, entry) in files {
        let (stored, compress) = stored_of(key, entry);
        let by_blocks = if is_zeroed(key, zeroed) {
            None
        } else {
            let local = local_path(manifest, pg_path, key)?;
            blocks::BlockFile::new(entry, local, stored, compress.kind(), delta)
        };
        match by_blocks {
            Some(file) => {
                let n =
                    u32::try_from(split.len()).map_err(|_| Error::internal("too many files"))?;
                jobs.extend((0..file.run_count()).map(|run| Job::Block(n, run)));
                split.push(file);
            }
            None => jobs.push(Job::File(key, entry)),
        }
    }
    let kept = AtomicU64::new(0);
    let restored = AtomicU64::new(0);
    let restored_bytes = AtomicU64::new(0);
    let zeroed_count = AtomicU64::new(0);
    let count = |finished: blocks::Finished| match finished {
        blocks::Finished::Pending => {}
        blocks::Finished::Kept => {
            kept.fetch_add(1, Ordering::Relaxed);
        }
        blocks::Finished::Restored(bytes) => {
            restored.fetch_add(1, Ordering::Relaxed);
            restored_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    };
    // The first error stops the other workers from starting jobs; the temp files of files
    // restored block by block go with `split` when this returns.
    let order: Vec<usize> = (0..jobs.len()).collect();
    workers.try_each_in_order(&order, |&index| -> Result<()> {
        crate::signal::check()?;
        if delta {
            if let Some(Job::File(key, entry)) = jobs.get(index + PREFETCH_AHEAD) {
                // A hint only: a path the manifest should not have is refused by its own job.
                if let (false, Ok(path)) =
                    (is_zeroed(key, zeroed), local_path(manifest, pg_path, key))
                {
                    prefetch_local(&path, entry.size);
                }
            }
        }
        let worker_repo = workers.repo(repo);
        let (key, entry) = match &jobs[index] {
            Job::Block(file, run) => {
                let done = |bytes| progress.add(bytes);
                count(split[*file as usize].run(worker_repo, *run, &done)?);
                return Ok(());
            }
            Job::File(key, entry) => (*key, *entry),
        };
        let (stored_path, compress) = stored_of(key, entry);
        let local = local_path(manifest, pg_path, key)?;
        if is_zeroed(key, zeroed) {
            zeroed_count.fetch_add(1, Ordering::Relaxed);
            progress.add(entry.size);
            return restore_zeroed(&local, entry);
        }
        if delta {
            if let Some(found) =
                matches_manifest(&local, entry, worker_repo, &stored_path, compress)?
            {
                count(blocks::Finished::Kept);
                progress.add(entry.size);
                return correct_attributes(&local, entry, &found);
            }
            remove_outdated(&local)?;
        }
        restore_file(worker_repo, &stored_path, compress, entry, &local)?;
        count(blocks::Finished::Restored(entry.size));
        progress.add(entry.size);
        Ok(())
    })?;
    drop(split);
    Ok(Counts {
        kept: kept.into_inner(),
        restored: restored.into_inner(),
        restored_bytes: restored_bytes.into_inner(),
        zeroed: zeroed_count.into_inner(),
    })
}

/// The OIDs of databases `--db-include` leaves out. The system databases always come back:
/// PostgreSQL cannot start without them.
fn excluded_databases(
    manifest: &Manifest,
    include: &[&str],
) -> Result<std::collections::BTreeSet<u32>> {
    if include.is_empty() {
        return Ok(Default::default());
    }
    if manifest.databases.is_empty() {
        return Err(Error::new(
            Kind::DbMissing,
            format!(
                "backup '{}' has no list of databases, so --db-include cannot be applied",
                manifest.backup.label
            ),
        )
        .with_hint("take a new backup; this pg_backrest records the list in the manifest"));
    }
    for name in include {
        if !manifest.databases.contains_key(*name) {
            let known: Vec<&str> = manifest.databases.keys().map(String::as_str).collect();
            return Err(Error::new(
                Kind::DbMissing,
                format!(
                    "database '{name}' of --db-include is not in the backup (it has: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    const SYSTEM: [&str; 3] = ["postgres", "template0", "template1"];
    Ok(manifest
        .databases
        .iter()
        .filter(|(name, db)| {
            !include.contains(&name.as_str()) && !SYSTEM.contains(&name.as_str()) && db.id >= 16384
        })
        .map(|(_, db)| db.id)
        .collect())
}

/// Whether a file is a relation file of an excluded database (`pg_data/base/OID/...` or
/// `pg_tblspc/TS/PG_.../OID/...`); the database's other files are restored normally.
fn is_zeroed(key: &str, zeroed: &std::collections::BTreeSet<u32>) -> bool {
    if zeroed.is_empty() {
        return false;
    }
    let parts: Vec<&str> = key.split('/').collect();
    let (db, name) = match parts.as_slice() {
        ["pg_data", "base", db, name] => (*db, *name),
        ["pg_tblspc", _, _, db, name] => (*db, *name),
        _ => return false,
    };
    db.parse::<u32>().is_ok_and(|oid| zeroed.contains(&oid))
        && crate::pg::page::relation_first_block(name).is_some()
}

/// A file's directory and name, for an atomic write into that directory.
fn split_path(local: &Path) -> Result<(&Path, &str)> {
    match (local.parent(), local.file_name().and_then(|n| n.to_str())) {
        (Some(d), Some(n)) => Ok((d, n)),
        _ => Err(Error::integrity(format!(
            "invalid restore path '{}'",
            local.display()
        ))),
    }
}

/// A relation file of an excluded database: a sparse file of zeros of the right size, which
/// PostgreSQL accepts (new pages) until the database is dropped.
fn restore_zeroed(local: &Path, entry: &FileEntry) -> Result<()> {
    let (dir, name) = split_path(local)?;
    let mut writer =
        PosixWriter::create_with_mode(dir.to_path_buf(), parse_mode(&entry.mode).unwrap_or(0o600))?;
    writer.set_len(entry.size)?;
    commit_restored(writer, name, entry)
}

/// Gives a written temp file its recorded mtime and owner, then its name. Its directory is
/// synced later, once for all its files (see [`sync_restored_dirs`]).
fn commit_restored(writer: PosixWriter, name: &str, entry: &FileEntry) -> Result<()> {
    let (file, temp) = writer.temp_file()?;
    file.set_modified(recorded_mtime(entry))
        .map_err(|e| Error::io("set mtime of", temp, e))?;
    fchown(file, temp, &entry.user, &entry.group)?;
    writer.commit_leaving_dir_unsynced(name)
}

fn recorded_mtime(entry: &FileEntry) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.timestamp.max(0) as u64)
}

/// Delta: removes the outdated file before its replacement is written, rather than letting
/// the rename replace it. The new file then reuses the old one's page cache instead of
/// needing as much memory again while both exist (measured: the kernel time of a delta
/// restore that rewrites a 1 GiB segment falls from ~2.4 s to ~0.6 s). Nothing is lost: the
/// directory cannot start until the restore ends (pg_control comes last), and an interrupted
/// delta restore writes the file again.
fn remove_outdated(local: &Path) -> Result<()> {
    match fs::symlink_metadata(local) {
        Ok(m) if m.is_file() => fs::remove_file(local).map_err(|e| Error::io("remove", local, e)),
        _ => Ok(()),
    }
}

/// Files at least this large are compared with the start of their stored copy before being
/// hashed whole, over at most [`PREFIX_COMPARED`] bytes.
const PREFIX_CHECK_MIN: u64 = 1 << 20;
const PREFIX_COMPARED: u64 = 8 << 20;

/// Delta: how many jobs ahead of the one it starts a worker asks the kernel to read a small
/// file that the delta will hash. Read as the workers reach them, the hundreds of small files
/// of a cluster are each a disk round trip in turn, which slowed the end of a cold delta;
/// asked for ahead, their reads are in flight together (the scale-100 benchmark cluster's
/// unchanged copy: 1.10–1.22 s instead of 1.13–1.50 s, docs/benchmarks.md "small files read
/// ahead").
const PREFETCH_AHEAD: usize = 32;

/// Asks the kernel to start reading the local file at `path` (`POSIX_FADV_WILLNEED` on its
/// first `size` bytes), without waiting. Purely a hint: a missing or unreadable file is
/// found out by the job that checks it.
fn prefetch_local(path: &Path, size: u64) {
    if let Ok(file) = fs::File::open(path) {
        crate::storage::posix::will_need(&file, 0, size);
    }
}

/// Delta: whether the file already on disk has the manifest's size and SHA-1; if so, what
/// `stat` said of it, for [`correct_attributes`].
///
/// A large file is first compared with the start of its stored copy. Updates spread over a
/// table change its first megabytes, so a changed relation is told apart after a few
/// megabytes instead of after a SHA-1 of the whole of it, which the restore then computes a
/// second time. Only a file whose start matches is hashed, so what is kept is exactly what
/// the SHA-1 says; the prefix can only show that a file differs.
fn matches_manifest(
    local: &Path,
    entry: &FileEntry,
    repo: &dyn Storage,
    stored: &str,
    compress: Compress,
) -> Result<Option<fs::Metadata>> {
    let found = match fs::symlink_metadata(local) {
        Ok(m) if m.is_file() && m.len() == entry.size => m,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", local, e)),
    };
    let mut file = fs::File::open(local).map_err(|e| Error::io("open", local, e))?;
    if entry.size >= PREFIX_CHECK_MIN {
        if !prefix_matches(&mut file, local, repo, stored, compress)? {
            return Ok(None);
        }
        file.rewind().map_err(|e| Error::io("seek", local, e))?;
    }
    let mut reader = DropBehindReader::new(&file);
    let sha1 = pipeline::digest(&mut reader, &local.display().to_string())?.sha1;
    Ok((sha1 == entry.checksum).then_some(found))
}

/// Whether the first [`PREFIX_COMPARED`] bytes of `file` (at `local`) equal those of the stored copy. A
/// stored copy that is missing or does not decompress counts as different: the restore of
/// the file that follows reports it properly.
fn prefix_matches(
    file: &mut fs::File,
    local: &Path,
    repo: &dyn Storage,
    stored: &str,
    compress: Compress,
) -> Result<bool> {
    use std::io::Read;
    let Some(reader) = repo.open_read(stored)? else {
        return Ok(false);
    };
    let Ok(mut stored_bytes) = pipeline::decoder(reader, compress.kind()) else {
        return Ok(false);
    };
    let mut ours = vec![0u8; pipeline::CHUNK];
    let mut theirs = vec![0u8; pipeline::CHUNK];
    let mut compared = 0;
    while compared < PREFIX_COMPARED {
        let n = match stored_bytes.read(&mut theirs) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(_) => return Ok(false),
        };
        match file.read_exact(&mut ours[..n]) {
            Ok(()) => {}
            // The stored copy is longer than the manifest says: restoring reports it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(Error::io("read", local, e)),
        }
        if ours[..n] != theirs[..n] {
            return Ok(false);
        }
        compared += n as u64;
    }
    Ok(true)
}

/// Delta: gives a kept file (`found` is its `stat`) the manifest's mode, mtime and owner
/// where they differ. A file already right is not touched at all: setting them anyway would
/// change its ctime and write its inode, for every file of the cluster.
fn correct_attributes(local: &Path, entry: &FileEntry, found: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode = parse_mode(&entry.mode).unwrap_or(0o600);
    if found.mode() & 0o7777 != mode {
        set_mode(local, mode)?;
    }
    if (found.mtime(), found.mtime_nsec()) != (entry.timestamp.max(0), 0) {
        fs::File::options()
            .write(true)
            .open(local)
            .and_then(|f| f.set_modified(recorded_mtime(entry)))
            .map_err(|e| Error::io("set mtime of", local, e))?;
    }
    match owner_ids(&entry.user, &entry.group) {
        Some((uid, gid)) if uid != found.uid() || gid != found.gid() => {
            chown(local, &entry.user, &entry.group)
        }
        _ => Ok(()),
    }
}

/// Delta: refuses a running cluster, and a directory of another cluster unless forced.
fn check_delta_destination(pg_path: &Path, manifest: &Manifest, force: bool) -> Result<()> {
    if let Ok(text) = fs::read_to_string(pg_path.join("postmaster.pid")) {
        let pid: i32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        let alive = pid > 0
            && !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            );
        if alive {
            return Err(Error::new(
                Kind::PgRunning,
                format!(
                "pg1-path '{}' holds a running cluster (postmaster.pid names live process {pid})",
                pg_path.display()
            ),
            )
            .with_hint("stop PostgreSQL first; restore never writes into a running cluster"));
        }
    }
    let control = pg_path.join("global/pg_control");
    let non_empty = fs::read_dir(pg_path).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !control.exists() && !pg_path.join("PG_VERSION").exists() && !force {
        // Delta removes whatever the backup does not list: a mistyped pg1-path must not be
        // wiped.
        return Err(Error::new(
            Kind::PathNotEmpty,
            format!(
                "pg1-path '{}' is not empty and does not look like a PostgreSQL data directory",
                pg_path.display()
            ),
        )
        .with_hint("check pg1-path; add --force to restore over it anyway"));
    }
    if let Ok(bytes) = fs::read(&control) {
        let system_id = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        if system_id != Some(manifest.db.system_id) && !force {
            return Err(Error::new(
                Kind::DbMismatch,
                format!(
                    "pg1-path '{}' holds another cluster (system-id {}), not the backup's ({})",
                    pg_path.display(),
                    system_id.map_or("unknown".into(), |s| s.to_string()),
                    manifest.db.system_id
                ),
            )
            .with_hint("check pg1-path; add --force to overwrite it anyway"));
        }
    }
    Ok(())
}

/// Delta: removes whatever the manifest does not list, so the result is exactly the backup.
/// In a tablespace location only this cluster's version directory is ours to clean.
fn remove_unlisted(manifest: &Manifest, pg_path: &Path) -> Result<u64> {
    let mut removed = 0;
    remove_unlisted_in(manifest, pg_path, "pg_data", &mut removed)?;
    for key in manifest
        .targets
        .keys()
        .filter(|k| k.starts_with("pg_tblspc/"))
    {
        let version_dirs = manifest
            .paths
            .keys()
            .filter(|p| p.starts_with(&format!("{key}/")) && p.matches('/').count() == 2);
        for dir in version_dirs {
            remove_unlisted_in(
                manifest,
                &local_path(manifest, pg_path, dir)?,
                dir,
                &mut removed,
            )?;
        }
    }
    Ok(removed)
}

fn remove_unlisted_in(manifest: &Manifest, dir: &Path, key: &str, removed: &mut u64) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for entry in entries {
        // An entry that cannot be read could be a file the backup holds: stop, never guess.
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        // A name that is not UTF-8 cannot be a manifest key (backup refuses such names).
        let child_key = entry
            .file_name()
            .to_str()
            .map(|name| format!("{key}/{name}"));
        let listed = child_key.as_ref().is_some_and(|child_key| {
            if meta.file_type().is_symlink() {
                manifest.links.contains_key(child_key)
            } else if meta.is_dir() {
                manifest.paths.contains_key(child_key)
            } else {
                manifest.files.contains_key(child_key)
            }
        });
        if listed {
            if meta.is_dir() {
                let child_key = child_key.expect("listed keys are UTF-8");
                remove_unlisted_in(manifest, &path, &child_key, removed)?;
            }
            continue;
        }
        crate::detail!(
            "delta restore removes '{}': not in the backup",
            path.display()
        );
        let result = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(|e| Error::io("remove", &path, e))?;
        *removed += 1;
    }
    Ok(())
}

/// How the files of backup `label` are stored, or the error naming it when this build cannot
/// read them: found before any file of the data directory is touched.
fn stored_as(label: &str, manifest: &Manifest) -> Result<Compress> {
    manifest.options.compress().map_err(|mut e| {
        e.message = format!("backup '{label}': {}", e.message);
        e
    })
}

/// Restores one file: verified content, its mode, owner and mtime.
fn restore_file(
    repo: &dyn Storage,
    stored: &str,
    compress: Compress,
    entry: &FileEntry,
    local: &Path,
) -> Result<()> {
    let source = repo.describe(stored);
    let mut reader = repo
        .open_read(stored)?
        .ok_or_else(|| missing_stored(&source))?;
    let (dir, name) = split_path(local)?;
    let mode = parse_mode(&entry.mode).unwrap_or(0o600);
    let mut writer = PosixWriter::create_with_mode(dir.to_path_buf(), mode)?;
    let dest = local.display().to_string();
    pipeline::restore(
        &mut reader,
        &mut writer,
        compress.kind(),
        Some(&entry.checksum),
        &Ends {
            source: &source,
            dest: &dest,
        },
    )?;
    drop(reader);
    commit_restored(writer, name, entry)
}

/// The error of a stored file the manifest lists and the repository lacks.
fn missing_stored(source: &str) -> Error {
    Error::new(
        Kind::FileMissing,
        format!("backup file '{source}' is missing from the repository"),
    )
}

/// The restore_command that fetches WAL from this repository: this executable with this
/// config file and stanza. PostgreSQL hands it to `sh -c`, so paths are shell-quoted; the
/// whole is later quoted for postgresql.auto.conf, which cannot carry control characters.
fn restore_command(cfg: &Config, stanza: &str) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("find own executable", Path::new("/proc/self/exe"), e))?;
    // Called as `pgbackrest`, archive-get must answer as pgBackRest too (its default paths), so
    // the command names the name it was called by rather than the executable the link points
    // to: argv[0] when absolute, else a `pgbackrest` beside the executable, else PATH's.
    let exe = match cfg.identity {
        crate::config::Identity::PgBackRest => {
            let link = exe.with_file_name("pgbackrest");
            let found = std::env::args()
                .next()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .or_else(|| link.exists().then_some(link));
            found.unwrap_or(PathBuf::from("pgbackrest"))
        }
        crate::config::Identity::Own => exe,
    };
    let exe = exe.to_string_lossy();
    target::refuse_control_chars("executable path", &exe)?;
    let mut command = shell_quote(&exe);
    if let Some(c) = &cfg.config_file {
        let c = c.to_string_lossy();
        target::refuse_control_chars("--config", &c)?;
        command.push_str(&format!(" --config={}", shell_quote(&c)));
    }
    if let Some(c) = &cfg.config_include_path {
        let c = c.to_string_lossy();
        target::refuse_control_chars("--config-include-path", &c)?;
        command.push_str(&format!(" --config-include-path={}", shell_quote(&c)));
    }
    target::refuse_control_chars("--stanza", stanza)?;
    command.push_str(&format!(
        " --stanza={} archive-get %f \"%p\"",
        shell_quote(stanza)
    ));
    Ok(command)
}

/// `word` as one shell word in a restore_command: unchanged when it holds only characters
/// no shell treats specially, else in single quotes; and `%` doubled, since PostgreSQL
/// replaces `%f`, `%p`, `%r` and `%%` before the shell sees the command.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    let quoted = if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    };
    quoted.replace('%', "%%")
}

/// restore_command pointing back at this repository, the recovery target settings, and the
/// signal file, so that `pg_ctl start` recovers as asked. Earlier restore_command and
/// recovery_target* lines are commented out, never silently kept.
fn write_recovery_settings(
    target: &RecoveryTarget,
    restore_command: &str,
    pg_path: &Path,
    owner: Option<&Owner>,
) -> Result<()> {
    let (settings, signal) = target.settings();
    let Some(signal) = signal else {
        crate::info!("restore --type=none: no recovery settings written");
        return Ok(());
    };
    let auto = pg_path.join("postgresql.auto.conf");
    let existing = fs::read_to_string(&auto).unwrap_or_default();
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    let mut text = String::new();
    for line in existing.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        if key == "restore_command" || key.starts_with("recovery_target") {
            text.push_str(&format!(
                "# Removed by pg_backrest restore on {now}: {line}\n"
            ));
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "# Recovery settings generated by pg_backrest restore on {now}\nrestore_command = {}\n",
        target::quote_setting(restore_command)
    ));
    for line in settings {
        text.push_str(&line);
        text.push('\n');
    }
    let mut w = PosixWriter::create_with_mode(pg_path.to_path_buf(), 0o600)?;
    w.write_all(text.as_bytes())
        .map_err(|e| Error::io("write", &auto, e))?;
    Box::new(w).commit("postgresql.auto.conf")?;
    Box::new(PosixWriter::create_with_mode(pg_path.to_path_buf(), 0o600)?).commit(signal)?;
    if let Some(o) = owner {
        chown(&auto, &o.user, &o.group)?;
        chown(&pg_path.join(signal), &o.user, &o.group)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{LinkEntry, Target};

    #[test]
    fn restore_command_words_survive_the_shell_and_percent_substitution() {
        assert_eq!(shell_quote("/usr/bin/pg_backrest"), "/usr/bin/pg_backrest");
        assert_eq!(shell_quote("/etc/my conf/x.conf"), "'/etc/my conf/x.conf'");
        assert_eq!(shell_quote("/a'b"), r"'/a'\''b'");
        assert_eq!(shell_quote("/a%fb"), "'/a%%fb'");
        assert_eq!(shell_quote(""), "''");
    }

    fn manifest() -> Manifest {
        let mut m = crate::manifest::tests::sample();
        let link = |d: &str| LinkEntry {
            destination: d.into(),
            user: "u".into(),
            group: "g".into(),
        };
        m.targets.insert(
            "pg_tblspc/16385".into(),
            Target {
                path: "/srv/ts1".into(),
                kind: "link".into(),
                tablespace_id: Some("16385".into()),
                tablespace_name: Some("ts1".into()),
            },
        );
        m.targets.insert(
            "pg_tblspc/16386".into(),
            Target {
                path: "/srv/ts2".into(),
                kind: "link".into(),
                tablespace_id: Some("16386".into()),
                tablespace_name: Some("ts2".into()),
            },
        );
        m.links
            .insert("pg_data/pg_tblspc/16385".into(), link("/srv/ts1"));
        m.links
            .insert("pg_data/pg_tblspc/16386".into(), link("/srv/ts2"));
        m.links.insert("pg_data/pg_wal".into(), link("/fast/wal"));
        m
    }

    #[test]
    fn tablespaces_map_by_name_or_oid_and_the_rest_under_map_all() {
        let mut m = manifest();
        let maps = Mappings {
            tablespaces: vec![("ts1".into(), "/new/one".into())],
            tablespaces_all: Some("/new/all".into()),
            ..Default::default()
        };
        apply_mappings(&mut m, &maps).unwrap();
        assert_eq!(m.targets["pg_tblspc/16385"].path, "/new/one");
        assert_eq!(m.links["pg_data/pg_tblspc/16385"].destination, "/new/one");
        assert_eq!(m.targets["pg_tblspc/16386"].path, "/new/all/ts2");
        assert_eq!(
            m.links["pg_data/pg_tblspc/16386"].destination,
            "/new/all/ts2"
        );
        let mut m = manifest();
        let maps = Mappings {
            tablespaces: vec![("16386".into(), "/x".into())],
            ..Default::default()
        };
        apply_mappings(&mut m, &maps).unwrap();
        assert_eq!(m.targets["pg_tblspc/16386"].path, "/x");
        let maps = Mappings {
            tablespaces: vec![("nope".into(), "/x".into())],
            ..Default::default()
        };
        assert!(apply_mappings(&mut manifest(), &maps)
            .unwrap_err()
            .message
            .contains("'nope'"));
    }

    #[test]
    fn other_links_become_directories_unless_mapped_or_all() {
        let mut m = manifest();
        apply_mappings(&mut m, &Mappings::default()).unwrap();
        assert!(
            !m.links.contains_key("pg_data/pg_wal"),
            "pg_wal restored as a plain directory"
        );
        assert_eq!(m.links.len(), 2, "tablespace links stay");
        let mut m = manifest();
        apply_mappings(
            &mut m,
            &Mappings {
                links_all: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.links["pg_data/pg_wal"].destination, "/fast/wal");
        let mut m = manifest();
        apply_mappings(
            &mut m,
            &Mappings {
                links: vec![("pg_wal".into(), "/other/wal".into())],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.links["pg_data/pg_wal"].destination, "/other/wal");
        let e = apply_mappings(
            &mut manifest(),
            &Mappings {
                links: vec![("pg_xact".into(), "/x".into())],
                ..Default::default()
            },
        );
        assert!(e.unwrap_err().message.contains("its links: pg_wal"));
    }
}
