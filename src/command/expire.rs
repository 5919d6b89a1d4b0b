//! expire: removes backups beyond the retention settings (with every backup that depends on
//! them) and the WAL no kept backup needs, or one backup chosen with `--set`. Runs as its own
//! command and at the end of every successful backup, always under the stanza's backup lock,
//! so no backup is being written while it runs.
//!
//! Which backups and which WAL go is decided by pure functions ([`retention_expired`],
//! [`with_dependents`], [`archive_boundary`], [`wal_removable`]) tested case by case below;
//! [`run`] only carries the decision out.
//!
//! The order of removal is what keeps the repository valid if expire is killed at any instant:
//! 1. each expired backup's `backup.manifest` is removed, leaving its `.copy`: the backup is
//!    still complete and restorable (manifests load from the copy), but a later backup no
//!    longer mistakes its directory for a finished backup that missed backup.info;
//! 2. `backup.info` (and its copy) is written without them, atomically;
//! 3. each directory goes, newest first, so a dependent never outlives what it references;
//!    its `.copy` first, so a half-removed directory is never taken for a resumable backup;
//! 4. directories that are neither in backup.info nor the interrupted backup the next backup
//!    will resume (left by step 3 or by a crash) are removed, with a log line;
//! 5. WAL is removed oldest first, so what is left is always one unbroken range.
//!
//! The next expire (or backup, which ends with one) repeats whatever a crash left undone, and
//! gives a backup that step 1 had started on but that is kept after all its manifest back.

use std::collections::{BTreeMap, BTreeSet};

use super::archive_push::missing_info;
use super::backup::adopt_complete_backups;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::info::backup::is_label;
use crate::info::backup::{BackupInfo, BackupSummary};
use crate::manifest::{BackupType, Manifest, MANIFEST_FILE};
use crate::repo::{dropped, ArchiveIdListing, RepoLayout, WalDirListing, COPY_SUFFIX};
use crate::storage::Storage;

/// How `repo1-retention-full` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullRetention {
    /// Keep this many full backups.
    Count(u64),
    /// Keep every full backup younger than this many days, and the newest one older than that,
    /// so that any moment of the period can still be restored.
    Days(u64),
}

/// Set in the environment by integration tests only, and read only by a build with the
/// `test-pause` feature: expire stops at this step and waits to be killed, so a crash between
/// two steps can be provoked deterministically.
#[cfg(feature = "test-pause")]
const TEST_PAUSE_ENV: &str = "PGBR_TEST_EXPIRE_PAUSE";

/// The expire command. As pgBackRest's, it reports what it removes at INFO (log file, and
/// stdout with log-level-console=info), so at the default levels it prints nothing.
pub fn run(cfg: &Config) -> Result<()> {
    expire(cfg)
}

/// The expire that ends every successful backup (no --set, --dry-run or --force there).
pub fn after_backup(cfg: &Config) -> Result<()> {
    expire(cfg)
}

fn expire(cfg: &Config) -> Result<()> {
    let stanza = cfg.stanza_required()?;
    let repo = crate::repo::open(cfg)?;
    let layout = RepoLayout::new(stanza);
    let dry_run = cfg.bool("dry-run");
    let mut info = BackupInfo::load(repo.as_ref(), &layout)?
        // pgBackRest's expire reports a repository it cannot expire as a command error.
        .ok_or_else(|| {
            missing_info(stanza, repo.as_ref(), &layout.backup_info()).with_kind(Kind::Command)
        })?;
    // A backup a crash kept out of backup.info counts like any other.
    if !dry_run {
        adopt_complete_backups(repo.as_ref(), &layout, &mut info)?;
    }

    let set = cfg.str("set").filter(|s| *s != "latest");
    let expired = match set {
        Some(label) => chosen_set(&info, label, cfg.bool("force"))?,
        None => match full_retention(cfg) {
            Some(full) => retention_expired(
                &info.backups,
                full,
                cfg.int("repo1-retention-diff").map(|n| n as u64),
                chrono::Utc::now().timestamp(),
            ),
            None => {
                crate::warn!(
                    "option 'repo1-retention-full' is not set: no backup is expired and the \
                     repository keeps growing HINT: set repo1-retention-full to the number of \
                     full backups to keep"
                );
                BTreeSet::new()
            }
        },
    };

    let say = |what: String| {
        if dry_run {
            crate::info!("[dry-run] {what}");
        } else {
            crate::info!("{what}");
        }
    };
    for (label, b) in info.backups.iter().filter(|(l, _)| expired.contains(*l)) {
        say(format!("expire {} backup {label}", b.backup_type.name()));
    }
    if !dry_run {
        remove_backups(repo.as_ref(), &layout, &mut info, &expired)?;
        restore_manifests(repo.as_ref(), &layout, &info)?;
    }
    remove_orphans(repo.as_ref(), &layout, &info, &expired, dry_run)?;

    let kept: BTreeMap<String, BackupSummary> = info
        .backups
        .iter()
        .filter(|(l, _)| !expired.contains(*l))
        .map(|(l, b)| (l.clone(), b.clone()))
        .collect();
    let removed_wal = match archive_retention(cfg, &kept) {
        Some(count) => {
            let archive_type = archive_type(cfg);
            match archive_boundary(&kept, archive_type, count) {
                Some(boundary) => remove_wal(
                    repo.as_ref(),
                    &layout,
                    &info,
                    &kept,
                    boundary,
                    &say,
                    dry_run,
                )?,
                None => 0,
            }
        }
        None => 0,
    };

    let verb = if dry_run { "would remove" } else { "removed" };
    let summary = format!(
        "expire {}: {verb} {} backup(s) and {removed_wal} WAL file(s)",
        if dry_run { "dry-run" } else { "complete" },
        expired.len()
    );
    crate::info!("{summary}");
    Ok(())
}

/// `--set=LABEL`: that backup and its dependents. The newest full is what the next diff or
/// incr builds on, so it takes `--force`.
fn chosen_set(info: &BackupInfo, label: &str, force: bool) -> Result<BTreeSet<String>> {
    if !info.backups.contains_key(label) {
        return Err(Error::new(
            Kind::BackupSetInvalid,
            format!("backup set '{label}' is not in the repository"),
        )
        .with_hint("'pg_backrest info' lists the backups"));
    }
    if info.latest_full() == Some(label) && !force {
        return Err(Error::new(
            Kind::BackupSetInvalid,
            format!(
                "backup set '{label}' is the newest full backup and is not expired without --force"
            ),
        )
        .with_hint("add --force to expire it with every backup that depends on it"));
    }
    Ok(with_dependents(
        &info.backups,
        BTreeSet::from([label.to_string()]),
    ))
}

fn full_retention(cfg: &Config) -> Option<FullRetention> {
    let n = cfg.int("repo1-retention-full")? as u64;
    Some(match cfg.str("repo1-retention-full-type") {
        Some("time") => FullRetention::Days(n),
        _ => FullRetention::Count(n),
    })
}

fn archive_type(cfg: &Config) -> BackupType {
    cfg.str("repo1-retention-archive-type")
        .and_then(BackupType::parse)
        .unwrap_or(BackupType::Full)
}

/// How many backups of the archive type keep their WAL: repo1-retention-archive, or by default
/// the retention of that type (with time-based full retention: every full that is kept).
/// `None`: no WAL is expired.
fn archive_retention(cfg: &Config, kept: &BTreeMap<String, BackupSummary>) -> Option<u64> {
    if let Some(n) = cfg.int("repo1-retention-archive") {
        return Some(n as u64);
    }
    let derived = match (archive_type(cfg), full_retention(cfg)) {
        (BackupType::Full, Some(FullRetention::Count(n))) => Some(n),
        (BackupType::Full, Some(FullRetention::Days(_))) => Some(
            kept.values()
                .filter(|b| b.backup_type == BackupType::Full)
                .count() as u64,
        ),
        (BackupType::Full, None) => None,
        (BackupType::Diff, _) => cfg.int("repo1-retention-diff").map(|n| n as u64),
        (BackupType::Incr, _) => None,
    };
    if derived.is_none() && full_retention(cfg).is_some() {
        crate::warn!(
            "option 'repo1-retention-archive' is not set for repo1-retention-archive-type={}: \
             no WAL is expired",
            archive_type(cfg).name()
        );
    }
    derived
}

/// The backups the retention settings remove, dependents included.
pub fn retention_expired(
    backups: &BTreeMap<String, BackupSummary>,
    full: FullRetention,
    diff: Option<u64>,
    now: i64,
) -> BTreeSet<String> {
    let of_type = |t: BackupType, skip: &BTreeSet<String>| -> Vec<String> {
        backups
            .iter()
            .filter(|(l, b)| b.backup_type == t && !skip.contains(*l))
            .map(|(l, _)| l.clone())
            .collect()
    };
    let fulls = of_type(BackupType::Full, &BTreeSet::new());
    let roots: BTreeSet<String> = match full {
        FullRetention::Count(n) => {
            let excess = fulls.len().saturating_sub(n as usize);
            fulls[..excess].iter().cloned().collect()
        }
        FullRetention::Days(days) => {
            let cutoff = now.saturating_sub((days as i64).saturating_mul(86_400));
            // The newest full that ended before the period began still covers its start.
            match fulls
                .iter()
                .rposition(|l| backups[l].backup_timestamp_stop <= cutoff)
            {
                Some(i) => fulls[..i].iter().cloned().collect(),
                None => BTreeSet::new(),
            }
        }
    };
    let mut expired = with_dependents(backups, roots);
    if let Some(n) = diff {
        let diffs = of_type(BackupType::Diff, &expired);
        let excess = diffs.len().saturating_sub(n as usize);
        let more: BTreeSet<String> = diffs[..excess].iter().cloned().collect();
        expired.extend(with_dependents(backups, more));
    }
    expired
}

/// `roots` and every backup whose prior or references lead to one of them.
pub fn with_dependents(
    backups: &BTreeMap<String, BackupSummary>,
    roots: BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = roots;
    // Labels sort by time and a backup only depends on earlier ones: one pass suffices.
    for (label, b) in backups {
        let depends = b.backup_prior.iter().any(|p| out.contains(p))
            || b.backup_reference.iter().any(|r| out.contains(r));
        if depends {
            out.insert(label.clone());
        }
    }
    out
}

/// The oldest backup that keeps its WAL: the `count`-th newest backup of the archive type
/// (a diff counts fulls and diffs, an incr every backup), or the oldest kept backup when
/// there are fewer. WAL before its start is only needed by older backups' own ranges.
pub fn archive_boundary(
    kept: &BTreeMap<String, BackupSummary>,
    archive_type: BackupType,
    count: u64,
) -> Option<&BackupSummary> {
    let counts = |t: BackupType| match archive_type {
        BackupType::Full => t == BackupType::Full,
        BackupType::Diff => t != BackupType::Incr,
        BackupType::Incr => true,
    };
    let mut qualifying = kept.values().rev().filter(|b| counts(b.backup_type));
    match count.checked_sub(1) {
        Some(n) => qualifying.nth(n as usize).or_else(|| kept.values().next()),
        None => kept.values().next(),
    }
}

/// Whether the WAL file whose name starts with the 24-hex-digit `segment` may go: older than
/// the boundary backup's first segment and outside every kept backup's start..stop range.
pub fn wal_removable(segment: &str, boundary_start: &str, kept_ranges: &[(&str, &str)]) -> bool {
    segment < boundary_start
        && !kept_ranges
            .iter()
            .any(|(start, stop)| *start <= segment && segment <= *stop)
}

/// Steps 1 to 3 of the module's order.
fn remove_backups(
    repo: &dyn Storage,
    layout: &RepoLayout,
    info: &mut BackupInfo,
    expired: &BTreeSet<String>,
) -> Result<()> {
    if expired.is_empty() {
        return Ok(());
    }
    for label in expired {
        repo.remove(&layout.manifest(label))?;
    }
    test_pause("manifest-removed");
    info.backups.retain(|l, _| !expired.contains(l));
    info.save(repo, layout)?;
    test_pause("backup-info-saved");
    for label in expired.iter().rev() {
        // Every step leaves a valid repository (see the module docs), so a signal may end
        // the command between any two.
        crate::signal::check()?;
        remove_backup_dir(repo, layout, label)?;
        test_pause("backup-dir-removed");
    }
    Ok(())
}

fn remove_backup_dir(repo: &dyn Storage, layout: &RepoLayout, label: &str) -> Result<()> {
    repo.remove(&format!("{}{COPY_SUFFIX}", layout.manifest(label)))?;
    repo.remove_tree(&layout.backup_path(label))
}

/// A kept backup whose `backup.manifest` an expire killed after step 1 removed (and that the
/// retention now in force keeps after all) gets it back from its copy, so that loading it
/// stops warning.
fn restore_manifests(repo: &dyn Storage, layout: &RepoLayout, info: &BackupInfo) -> Result<()> {
    for label in info.backups.keys() {
        if repo
            .list(&layout.backup_path(label))?
            .iter()
            .any(|f| f == MANIFEST_FILE)
        {
            continue;
        }
        if let Some(m) = Manifest::load_copy(repo, &layout.manifest(label))? {
            crate::warn!("backup {label} lacks its backup.manifest; restoring it from its copy");
            m.save(repo, &layout.manifest(label))?;
        }
    }
    Ok(())
}

/// Step 4: backup directories that are neither in backup.info nor the newest interrupted
/// backup of the current cluster (which the next backup may resume).
fn remove_orphans(
    repo: &dyn Storage,
    layout: &RepoLayout,
    info: &BackupInfo,
    expired: &BTreeSet<String>,
    dry_run: bool,
) -> Result<()> {
    let mut resumable_seen = false;
    for entry in repo.list(&layout.backup_root())?.into_iter().rev() {
        if !is_label(&entry) || info.backups.contains_key(&entry) || expired.contains(&entry) {
            continue;
        }
        let files = repo.list(&layout.backup_path(&entry))?;
        if files.iter().any(|f| f == MANIFEST_FILE) {
            // Complete: a dry run did not adopt it; a real run would have.
            continue;
        }
        let resumable = !resumable_seen
            && Manifest::load_copy(repo, &layout.manifest(&entry))?
                .is_some_and(|m| m.backup.timestamp_stop.is_none() && m.db == info.db.current);
        if resumable {
            resumable_seen = true;
            continue;
        }
        if dry_run {
            crate::info!("[dry-run] remove orphan backup directory {entry}");
        } else {
            crate::warn!(
                "removing orphan backup directory {entry}: it is not in backup.info and is \
                 not a backup the next one can resume"
            );
            remove_backup_dir(repo, layout, &entry)?;
        }
    }
    Ok(())
}

/// Step 5: WAL of the boundary backup's archive id older than its start, outside the kept
/// backups' ranges, oldest first, with the `.partial` and `.backup` files of those segments.
/// History files stay: they are small, and recovery along any later timeline needs its own
/// and no kept backup can be told not to. Unknown entries stay, untouched. Returns how many files went (or would go).
fn remove_wal(
    repo: &dyn Storage,
    layout: &RepoLayout,
    info: &BackupInfo,
    kept: &BTreeMap<String, BackupSummary>,
    boundary: &BackupSummary,
    say: &dyn Fn(String),
    dry_run: bool,
) -> Result<u64> {
    let Some(db) = info.db.history.iter().find(|d| d.id == boundary.db_id) else {
        return Ok(0);
    };
    let archive_dir = layout.archive_id_path(&db.archive_id());
    let start = boundary.backup_archive_start.as_deref().unwrap_or_default();
    if start.len() != 24 {
        return Ok(0);
    }
    let ranges: Vec<(&str, &str)> = kept
        .values()
        .filter(|b| b.db_id == boundary.db_id)
        .map(|b| {
            (
                b.backup_archive_start.as_deref().unwrap_or_default(),
                b.backup_archive_stop.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let mut removed = 0u64;
    let (mut first, mut last) = (None::<String>, None::<String>);
    for dir in ArchiveIdListing::read(repo, &archive_dir)?.wal_dirs {
        // Sorted: once a directory's names all come after the boundary, so do the rest.
        if dir.as_str() > &start[..16] {
            break;
        }
        crate::signal::check()?;
        let path = format!("{archive_dir}/{dir}");
        let listing = WalDirListing::read(repo, &path)?;
        // Unknown entries stay, and so does the directory that holds them.
        let mut left = listing.stored.len() + listing.dropped.len() + listing.unknown.len();
        // A record of dropped WAL goes with the WAL around it, in segment order with the
        // stored files, so an interrupted expire leaves the record of every gap that is left.
        // A .partial or .backup file goes with the segment it is named after.
        let mut files: Vec<(&str, String)> = listing
            .stored
            .iter()
            .filter_map(|s| Some((s.segment()?, s.file_name.clone())))
            .chain(
                listing
                    .dropped
                    .iter()
                    .map(|w| (w.name.as_str(), dropped::file_name(w))),
            )
            .collect();
        files.sort();
        files.retain(|(segment, _)| wal_removable(segment, start, &ranges));
        // Object storage removes a directory's files in one request (up to 1000 keys).
        if !dry_run && repo.removes_in_batches() {
            let paths: Vec<String> = files.iter().map(|(_, f)| format!("{path}/{f}")).collect();
            repo.remove_many(&paths)?;
        }
        for (segment, file_name) in files {
            if !dry_run && !repo.removes_in_batches() {
                repo.remove(&format!("{path}/{file_name}"))?;
                test_pause("wal-removed");
            }
            left -= 1;
            removed += 1;
            first.get_or_insert_with(|| segment.to_string());
            last = Some(segment.to_string());
        }
        if left == 0 && !dry_run {
            repo.remove_tree(&path)?;
        }
    }
    if let (Some(first), Some(last)) = (first, last) {
        say(format!(
            "expire WAL {first} to {last} of archive {} ({removed} files), kept from {start} on",
            db.archive_id()
        ));
    }
    Ok(removed)
}

#[cfg(not(feature = "test-pause"))]
fn test_pause(_step: &str) {}

#[cfg(feature = "test-pause")]
fn test_pause(step: &str) {
    if std::env::var(TEST_PAUSE_ENV).as_deref() == Ok(step) {
        crate::info!("test pause at {step}");
        eprintln!("test pause at {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A backup.info entry: `stop` in days before "now", WAL range from the label's number.
    fn b(t: BackupType, prior: Option<&str>, stop_days_ago: i64, wal: (u32, u32)) -> BackupSummary {
        BackupSummary {
            backup_prior: prior.map(String::from),
            backup_reference: prior.map(String::from).into_iter().collect(),
            backup_timestamp_start: 1_000 * DAY - stop_days_ago * DAY - 60,
            backup_timestamp_stop: 1_000 * DAY - stop_days_ago * DAY,
            backup_archive_start: Some(format!("0000000100000000{:08X}", wal.0)),
            backup_archive_stop: Some(format!("0000000100000000{:08X}", wal.1)),
            ..BackupSummary::sample(t)
        }
    }

    const F1: &str = "20250101-000000F";
    const F1D1: &str = "20250101-000000F_20250102-000000D";
    const F1I1: &str = "20250101-000000F_20250103-000000I";
    const F2: &str = "20250110-000000F";
    const F2D1: &str = "20250110-000000F_20250111-000000D";
    const F2D1I1: &str = "20250110-000000F_20250112-000000I";
    const F2D2: &str = "20250110-000000F_20250113-000000D";
    const F3: &str = "20250120-000000F";

    fn sample() -> BTreeMap<String, BackupSummary> {
        use BackupType::*;
        [
            (F1, b(Full, None, 30, (2, 3))),
            (F1D1, b(Diff, Some(F1), 29, (5, 5))),
            (F1I1, b(Incr, Some(F1D1), 28, (7, 7))),
            (F2, b(Full, None, 20, (10, 11))),
            (F2D1, b(Diff, Some(F2), 19, (13, 13))),
            (F2D1I1, b(Incr, Some(F2D1), 18, (15, 15))),
            (F2D2, b(Diff, Some(F2), 17, (17, 17))),
            (F3, b(Full, None, 10, (20, 21))),
        ]
        .into_iter()
        .map(|(l, s)| (l.to_string(), s))
        .collect()
    }

    fn set(labels: &[&str]) -> BTreeSet<String> {
        labels.iter().map(|s| s.to_string()).collect()
    }

    const NOW: i64 = 1_000 * DAY;

    #[test]
    fn full_count_removes_the_oldest_fulls_with_their_dependents() {
        let all = sample();
        let cases: &[(u64, &[&str])] = &[
            (3, &[]),
            (9, &[]),
            (2, &[F1, F1D1, F1I1]),
            (1, &[F1, F1D1, F1I1, F2, F2D1, F2D1I1, F2D2]),
        ];
        for (n, want) in cases {
            assert_eq!(
                retention_expired(&all, FullRetention::Count(*n), None, NOW),
                set(want),
                "retention-full={n}"
            );
        }
    }

    #[test]
    fn full_time_keeps_the_newest_full_older_than_the_period() {
        let all = sample();
        let cases: &[(u64, &[&str])] = &[
            // F3 ended 10 days ago: with 5 days it covers the period; older fulls go.
            (5, &[F1, F1D1, F1I1, F2, F2D1, F2D1I1, F2D2]),
            // 15 days: F3 is younger, F2 (20 days) is the newest older one and stays.
            (15, &[F1, F1D1, F1I1]),
            // 25 days: F1 (30 days) is still needed to cover day 25.
            (25, &[]),
            (40, &[]),
        ];
        for (days, want) in cases {
            assert_eq!(
                retention_expired(&all, FullRetention::Days(*days), None, NOW),
                set(want),
                "{days} days"
            );
        }
    }

    #[test]
    fn diff_retention_removes_older_diffs_and_their_incrs() {
        let all = sample();
        assert_eq!(
            retention_expired(&all, FullRetention::Count(3), Some(2), NOW),
            set(&[F1D1, F1I1])
        );
        assert_eq!(
            retention_expired(&all, FullRetention::Count(3), Some(1), NOW),
            set(&[F1D1, F1I1, F2D1, F2D1I1])
        );
        // Diffs of expired fulls are not counted twice.
        assert_eq!(
            retention_expired(&all, FullRetention::Count(2), Some(1), NOW),
            set(&[F1, F1D1, F1I1, F2D1, F2D1I1])
        );
    }

    #[test]
    fn dependents_follow_prior_and_reference_chains() {
        let all = sample();
        assert_eq!(with_dependents(&all, set(&[F2D1])), set(&[F2D1, F2D1I1]));
        assert_eq!(
            with_dependents(&all, set(&[F2])),
            set(&[F2, F2D1, F2D1I1, F2D2])
        );
        assert_eq!(with_dependents(&all, set(&[F3])), set(&[F3]));
    }

    #[test]
    fn archive_boundary_by_type_and_count() {
        let all = sample();
        let start = |t, n| {
            archive_boundary(&all, t, n)
                .map(|b| b.backup_archive_start.as_deref().unwrap()[16..].to_string())
                .unwrap()
        };
        assert_eq!(start(BackupType::Full, 1), "00000014");
        assert_eq!(start(BackupType::Full, 2), "0000000A");
        assert_eq!(start(BackupType::Full, 3), "00000002");
        // Fewer fulls than the count: the oldest backup is the boundary.
        assert_eq!(start(BackupType::Full, 7), "00000002");
        assert_eq!(start(BackupType::Diff, 2), "00000011");
        assert_eq!(start(BackupType::Incr, 3), "0000000F");
        assert!(archive_boundary(&BTreeMap::new(), BackupType::Full, 1).is_none());
    }

    #[test]
    fn wal_removal_keeps_the_boundary_on_and_every_kept_range() {
        let seg = |n: u32| format!("0000000100000000{n:08X}");
        let (s2, s3, s5) = (seg(2), seg(3), seg(5));
        let ranges = [(s2.as_str(), s3.as_str())];
        let boundary = seg(10);
        let removable: Vec<u32> = (1..=12)
            .filter(|n| wal_removable(&seg(*n), &boundary, &ranges))
            .collect();
        assert_eq!(removable, vec![1, 4, 5, 6, 7, 8, 9]);
        assert!(!wal_removable(&s5, &s5, &[]));
        // A later timeline sorts after every segment of an earlier one.
        assert!(!wal_removable(
            "000000020000000000000001",
            "000000010000000000000009",
            &[]
        ));
    }
}
