//! expire against real backups: retention by count and by time over fulls, diffs and incrs,
//! checking exactly which backups and which WAL segments remain and that the remaining
//! backups restore and start; `--set` and its guards; `--dry-run`; and an expire SIGKILLed
//! between each of its steps, after which the repository still verifies and the next run
//! finishes the job.

use std::path::Path;
use std::time::Duration;

use crate::backup::Restored;
use crate::fixture::{assert_error, label_of, Site, STANZA};
use crate::harness::{self, chown_postgres, wait_until};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Records `n` in table `marks`, then takes a backup of `backup_type`: a restore of the
/// backup with `--type=immediate` holds marks 1..=n.
fn marked_backup(site: &Site, n: u32, backup_type: &str) -> String {
    site.cluster.psql(&format!(
        "create table if not exists marks(n int); insert into marks values ({n})"
    ));
    // A segment of its own between backups, so that each gap can be seen to go or stay.
    site.one_segment();
    site.backup(backup_type, &[])
}

/// Restores `label` (to its consistency point, or to the end of the archive), starts it and
/// checks it holds exactly marks 1..=`marks`.
fn restores_with_marks(site: &Site, label: &str, marks: u32, to_end: bool) {
    let name = format!("restore-{label}");
    let extra: &[&str] = if to_end {
        &[]
    } else {
        &["--type=immediate", "--target-action=promote"]
    };
    let r = Restored::restore(site, &name, Some(label), extra);
    r.start_and_wait_promoted();
    assert_eq!(
        r.psql("select count(*) || ':' || coalesce(max(n), 0) from marks"),
        format!("{marks}:{marks}"),
        "restored {label}"
    );
    r.stop();
    drop(r);
    let _ = std::fs::remove_dir_all(site.dir.join(&name));
}

/// Segments of `originals` that expire must have kept: from `from` on, plus the ranges.
fn expected_wal(site: &Site, from: &str, ranges: &[(String, String)]) -> Vec<String> {
    site.original_segments()
        .into_iter()
        .filter(|s| {
            s.as_str() >= from
                || ranges
                    .iter()
                    .any(|(a, b)| a.as_str() <= s.as_str() && s.as_str() <= b.as_str())
        })
        .collect()
}

/// The backup directory's entries: the labels kept, the info file and its copy, and
/// `backup.history`, which expire keeps (as pgBackRest does) with the manifests of every
/// backup taken, expired ones included.
fn entries(labels: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    v.extend(["backup.history", "backup.info", "backup.info.copy"].map(String::from));
    v.sort();
    v
}

#[test]
fn retention_by_count_removes_whole_chains_and_the_wal_no_kept_backup_needs() {
    let site = Site::local();
    let f1 = marked_backup(&site, 1, "full");
    let d1 = marked_backup(&site, 2, "diff");
    let i1 = marked_backup(&site, 3, "incr");
    let f2 = marked_backup(&site, 4, "full");
    let d2a = marked_backup(&site, 5, "diff");
    let i2 = marked_backup(&site, 6, "incr");
    let d2b = marked_backup(&site, 7, "diff");
    let f3 = marked_backup(&site, 8, "full");
    site.one_segment();
    assert!(i2.starts_with(&f2) && d2b.starts_with(&f2) && i1.starts_with(&f1));
    // Without retention every backup ended with a warning and nothing was expired.
    assert!(
        site.log("backup")
            .contains("option 'repo1-retention-full' is not set: no backup is expired"),
        "{}",
        harness::tail(&site.log("backup"), 20)
    );
    let all = [&f1, &d1, &i1, &f2, &d2a, &i2, &d2b, &f3].map(|s| s.as_str());
    assert_eq!(site.backup_dir_entries(), entries(&all));
    let wal_before = site.stored_segments();
    assert_eq!(wal_before, site.original_segments());

    let retention = ["--repo1-retention-full=2", "--repo1-retention-diff=1"];
    let mut args = vec!["expire", "--dry-run"];
    args.extend(retention);
    let dry = site.pgbr(&args).expect_ok("expire --dry-run");
    let mut listed: Vec<&str> = dry
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("INFO: [dry-run] expire "))
        .filter_map(|l| l.split_once(" backup "))
        .map(|(_, label)| label)
        .collect();
    listed.sort();
    let mut want = vec![
        f1.as_str(),
        d1.as_str(),
        i1.as_str(),
        d2a.as_str(),
        i2.as_str(),
    ];
    want.sort();
    assert_eq!(listed, want, "{dry}");
    assert!(
        dry.stdout
            .contains("expire dry-run: would remove 5 backup(s)"),
        "{dry}"
    );
    assert_eq!(
        site.backup_dir_entries(),
        entries(&all),
        "dry run changed nothing"
    );
    assert_eq!(site.stored_segments(), wal_before);

    let mut args = vec!["expire"];
    args.extend(retention);
    let out = site.pgbr(&args).expect_ok("expire");
    assert!(
        out.stdout.contains("expire complete: removed 5 backup(s)"),
        "{out}"
    );
    assert_eq!(
        site.backup_labels(),
        vec![f2.clone(), d2b.clone(), f3.clone()]
    );
    assert_eq!(site.backup_dir_entries(), entries(&[&f2, &d2b, &f3]));
    // info's last backup of each type follows.
    let last = &site.info_json()["last-backup"];
    assert_eq!(last["full"]["label"], f3.as_str(), "{last}");
    assert_eq!(last["diff"]["label"], d2b.as_str(), "{last}");
    assert!(last["incr"].is_null(), "every incr was expired: {last}");
    assert!(last["full"]["stop"].as_i64().unwrap_or(0) > 0, "{last}");
    let text = site.pgbr(&["info"]).expect_ok("info");
    assert!(
        text.stdout
            .contains(&format!("last full backup: {f3}, finished "))
            && text
                .stdout
                .contains(&format!("last diff backup: {d2b}, finished "))
            && !text.stdout.contains("last incr backup")
            && text.stdout.contains("running now: no backup or expire"),
        "{text}"
    );
    // Archive retention follows retention-full: WAL from the older kept full on stays.
    let (f2_start, _) = site.backup_wal_range(&f2);
    let kept = site.stored_segments();
    assert_eq!(kept, expected_wal(&site, &f2_start, &[]));
    assert!(kept.len() < wal_before.len(), "some WAL went");
    // Running it again changes nothing.
    let again = site.pgbr(&args).expect_ok("expire again");
    assert!(
        again.stdout.contains("removed 0 backup(s) and 0 WAL"),
        "{again}"
    );

    // Only the newest full keeps all its WAL; the older ones keep what makes them consistent.
    let out = site
        .pgbr(&[
            "expire",
            "--repo1-retention-full=2",
            "--repo1-retention-archive=1",
        ])
        .expect_ok("expire archive");
    assert!(out.stdout.contains("removed 0 backup(s)"), "{out}");
    let (f3_start, _) = site.backup_wal_range(&f3);
    let ranges = [site.backup_wal_range(&f2), site.backup_wal_range(&d2b)];
    let kept_now = site.stored_segments();
    assert_eq!(kept_now, expected_wal(&site, &f3_start, &ranges));
    assert!(kept_now.len() < kept.len(), "the WAL between backups went");
    site.pgbr(&["verify"]).expect_ok("verify after expire");

    restores_with_marks(&site, &f2, 4, false);
    restores_with_marks(&site, &d2b, 7, false);
    restores_with_marks(&site, &f3, 8, true);
}

/// Rewrites backup.info so that each listed backup ended `days` days ago (the test cannot
/// wait for days to pass), keeping the file checksummed and owned by postgres.
fn age_backups(site: &Site, ages: &[(&str, i64)]) {
    use pg_backrest::info::backup::BackupInfo;
    use pg_backrest::repo::RepoLayout;
    use pg_backrest::storage::posix::PosixStorage;
    let repo = PosixStorage::new(site.repo.clone());
    let layout = RepoLayout::new(STANZA);
    let mut info = BackupInfo::load(&repo, &layout).unwrap().unwrap();
    // This test runs as root, and pg_backrest never writes into postgres's repository as
    // root: save into a scratch repository of root's own, then copy the files over.
    let scratch_root = site.dir.join(format!("aged-{}", chrono_now()));
    let scratch = PosixStorage::new(scratch_root.clone());
    let now = chrono_now();
    for (label, days) in ages {
        let b = info.backups.get_mut(*label).unwrap();
        b.backup_timestamp_stop = now - days * 86_400;
        b.backup_timestamp_start = b.backup_timestamp_stop - 60;
    }
    info.save(&scratch, &layout).unwrap();
    let dir = site.repo.join("backup").join(STANZA);
    for name in ["backup.info", "backup.info.copy"] {
        let from = scratch_root.join("backup").join(STANZA).join(name);
        std::fs::copy(&from, dir.join(name)).unwrap();
        chown_postgres(&dir.join(name));
    }
    std::fs::remove_dir_all(&scratch_root).unwrap();
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn retention_by_time_keeps_the_newest_full_older_than_the_period() {
    let site = Site::local();
    let f1 = marked_backup(&site, 1, "full");
    let f2 = marked_backup(&site, 2, "full");
    let i2 = marked_backup(&site, 3, "incr");
    let f3 = marked_backup(&site, 4, "full");
    age_backups(&site, &[(&f1, 20), (&f2, 10), (&i2, 9), (&f3, 1)]);
    let time = ["expire", "--repo1-retention-full-type=time"];

    // 30 days: every full is younger, no backup goes; only the WAL from before the oldest
    // backup, which none of them can use.
    let out = site
        .pgbr(&[time[0], time[1], "--repo1-retention-full=30"])
        .expect_ok("expire 30 days");
    assert!(out.stdout.contains("removed 0 backup(s)"), "{out}");
    let (f1_start, _) = site.backup_wal_range(&f1);
    assert_eq!(site.stored_segments(), expected_wal(&site, &f1_start, &[]));
    assert!(site.stored_segments().len() < site.original_segments().len());
    // 5 days: f2 (10 days) is the newest full older than the period and still covers its
    // first day, so it stays with its incr; f1 goes, and the WAL before f2.
    let out = site
        .pgbr(&[time[0], time[1], "--repo1-retention-full=5"])
        .expect_ok("expire 5 days");
    assert!(out.stdout.contains("removed 1 backup(s)"), "{out}");
    assert_eq!(
        site.backup_labels(),
        vec![f2.clone(), i2.clone(), f3.clone()]
    );
    assert_eq!(site.backup_dir_entries(), entries(&[&f2, &i2, &f3]));
    let (f2_start, _) = site.backup_wal_range(&f2);
    assert_eq!(site.stored_segments(), expected_wal(&site, &f2_start, &[]));

    site.pgbr(&["verify"]).expect_ok("verify after expire");
    restores_with_marks(&site, &i2, 3, false);
}

#[test]
fn set_expires_one_backup_with_its_dependents_and_guards_the_newest_full() {
    let site = Site::local();
    let f1 = marked_backup(&site, 1, "full");
    let d1 = marked_backup(&site, 2, "diff");
    let i1 = marked_backup(&site, 3, "incr");
    let f2 = marked_backup(&site, 4, "full");
    let i2 = marked_backup(&site, 5, "incr");
    let wal = site.stored_segments();

    assert_error(
        &site.pgbr(&["expire", "--set=20200101-000000F"]),
        75,
        "backup set '20200101-000000F' is not in the repository",
    );
    assert_error(
        &site.pgbr(&["expire", &format!("--set={f2}")]),
        75,
        &format!("backup set '{f2}' is the newest full backup and is not expired without --force"),
    );
    assert_eq!(site.backup_labels().len(), 5, "refusals changed nothing");

    let out = site
        .pgbr(&["expire", &format!("--set={d1}")])
        .expect_ok("expire --set diff");
    assert!(
        out.stdout.contains("removed 2 backup(s) and 0 WAL"),
        "{out}"
    );
    assert_eq!(
        site.backup_labels(),
        vec![f1.clone(), f2.clone(), i2.clone()]
    );
    assert!(!site.backup_dir_entries().contains(&i1));
    assert_eq!(site.stored_segments(), wal, "no retention set: WAL stays");

    site.pgbr(&["expire", &format!("--set={f2}"), "--force"])
        .expect_ok("expire --set newest full --force");
    assert_eq!(site.backup_labels(), vec![f1.clone()]);
    assert_eq!(site.backup_dir_entries(), entries(&[&f1]));
    restores_with_marks(&site, &f1, 1, false);
}

/// Starts `expire ARGS` with the test pause at `step` and waits until it is there (holding
/// the backup lock). The caller kills it.
pub fn expire_paused_at(site: &Site, step: &str, args: &[&str]) -> std::process::Child {
    let marker = format!("test pause at {step}");
    let seen_before = site.log("expire").matches(&marker).count();
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let mut all = vec![config.as_str(), stanza.as_str(), "expire"];
    all.extend_from_slice(args);
    let mut child = harness::pgbr(&all)
        .env("PGBR_TEST_EXPIRE_PAUSE", step)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning expire");
    wait_until(&marker, Duration::from_secs(60), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "expire ended ({status}) before {step}:\n{}",
                harness::tail(&site.log("expire"), 20)
            );
        }
        site.log("expire").matches(&marker).count() > seen_before
    });
    child
}

/// SIGKILLs `child` and everything it started, and reaps it.
pub fn kill(mut child: std::process::Child) {
    let alive = harness::kill_tree(child.id());
    assert!(alive.is_empty(), "still alive: {alive:?}");
    let _ = child.wait();
}

/// Runs `expire ARGS` up to the test pause at `step`, then SIGKILLs it.
fn expire_killed_at(site: &Site, step: &str, args: &[&str]) {
    kill(expire_paused_at(site, step, args));
}

#[test]
#[cfg_attr(not(feature = "test-pause"), ignore = "needs --features test-pause")]
fn expire_killed_between_steps_leaves_a_valid_repository_and_the_next_run_finishes() {
    let site = Site::local();
    let f1 = marked_backup(&site, 1, "full");
    let i1 = marked_backup(&site, 2, "incr");
    let f2 = marked_backup(&site, 3, "full");
    let f3 = marked_backup(&site, 4, "full");
    site.one_segment();
    let keep_one = ["--repo1-retention-full=1"];

    // 1. Manifests of the expired backups gone, backup.info untouched: still all restorable.
    expire_killed_at(&site, "manifest-removed", &keep_one);
    assert_eq!(site.backup_labels().len(), 4);
    let manifest = |label: &str| {
        site.repo
            .join("backup")
            .join(STANZA)
            .join(label)
            .join("backup.manifest")
    };
    assert!(!manifest(&f1).exists() && manifest(&f3).exists());
    site.pgbr(&["verify"]).expect_ok("verify after kill 1");
    // An expire whose retention keeps them after all gives them their manifests back.
    let out = site
        .pgbr(&["expire", "--repo1-retention-full=9"])
        .expect_ok("expire keeping all");
    assert!(out.stdout.contains("removed 0 backup(s)"), "{out}");
    for label in [&f1, &i1, &f2] {
        assert!(manifest(label).exists(), "{label}");
    }
    // Killed there again, for the next step.
    expire_killed_at(&site, "manifest-removed", &keep_one);

    // 2. backup.info written without them; their directories are still there.
    expire_killed_at(&site, "backup-info-saved", &keep_one);
    assert_eq!(site.backup_labels(), vec![f3.clone()]);
    assert_eq!(site.backup_dir_entries(), entries(&[&f1, &i1, &f2, &f3]));
    site.pgbr(&["verify"]).expect_ok("verify after kill 2");
    // info says what those directories are: expired backups being removed, not backups
    // running or waiting to be resumed.
    let out = site.pgbr(&["info"]).expect_ok("info after kill 2");
    for label in [&f1, &i1, &f2] {
        assert!(
            out.stdout
                .contains(&format!("backup {label}: expired, being removed")),
            "{label}: {out}"
        );
    }
    assert!(!out.stdout.contains("running or interrupted"), "{out}");
    let out = site.pgbr(&["info", "--output=json"]).expect_ok("info json");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("info json");
    let states: Vec<&str> = json[0]["in-progress"]
        .as_array()
        .expect("in-progress")
        .iter()
        .map(|b| b["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["expiring"; 3], "{out}");

    // 3. The next expire removes the orphans with a log line each, then WAL oldest first;
    //    killed after the first WAL file, only the oldest segment is gone.
    let stored = site.stored_segments();
    expire_killed_at(&site, "wal-removed", &keep_one);
    let log = site.log("expire");
    for orphan in [&f1, &i1, &f2] {
        assert!(
            log.contains(&format!("removing orphan backup directory {orphan}")),
            "{orphan}:\n{}",
            harness::tail(&log, 20)
        );
    }
    assert_eq!(site.backup_dir_entries(), entries(&[&f3]));
    assert_eq!(site.stored_segments(), stored[1..].to_vec());
    site.pgbr(&["verify"]).expect_ok("verify after kill 3");

    // 4. Finished by the next run.
    site.pgbr(&["expire", keep_one[0]]).expect_ok("expire");
    let (f3_start, _) = site.backup_wal_range(&f3);
    assert_eq!(site.stored_segments(), expected_wal(&site, &f3_start, &[]));

    // 5. A backup that meets a full expire was removing (its manifest copy is complete) does
    //    not resume it, which would reuse that label.
    let f4 = marked_backup(&site, 5, "full");
    expire_killed_at(
        &site,
        "backup-info-saved",
        &[&format!("--set={f4}"), "--force"],
    );
    assert_eq!(site.backup_labels(), vec![f3.clone()]);
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert!(out.success(), "{out}");
    let f5 = label_of(&out);
    assert_ne!(f5, f4);
    assert_eq!(site.backup_labels(), vec![f3.clone(), f5.clone()]);
    assert_eq!(site.backup_dir_entries(), entries(&[&f3, &f5]));
    site.pgbr(&["verify"]).expect_ok("verify at the end");
    restores_with_marks(&site, &f5, 5, true);
}

#[test]
fn a_backup_ends_with_an_expire_that_works_over_ssh() {
    let site = Site::remote();
    let f1 = site.backup("full", &[]);
    let i1 = site.backup("incr", &[]);
    site.one_segment();
    let f2 = site.backup("full", &["--repo1-retention-full=1"]);
    assert_eq!(site.backup_labels(), vec![f2.clone()]);
    assert_eq!(site.backup_dir_entries(), entries(&[&f2]));
    let (f2_start, _) = site.backup_wal_range(&f2);
    assert_eq!(site.stored_segments(), expected_wal(&site, &f2_start, &[]));
    let log = site.log("backup");
    for gone in [format!("full backup {f1}"), format!("incr backup {i1}")] {
        assert!(log.contains(&format!("expire {gone}")), "{gone}:\n{log}");
    }
    assert!(
        log.contains("expire complete: removed 2 backup(s)"),
        "{log}"
    );
    // As pgBackRest's, the backup's expire reports at INFO within the backup's output: on
    // stdout only with log-level-console=info (as the sites set it for backup).
    let out = site.pgbr(&[
        "backup",
        "--type=incr",
        "--start-fast",
        "--repo1-retention-full=1",
    ]);
    assert!(
        out.success()
            && out
                .stdout
                .contains("INFO: expire complete: removed 0 backup(s) and 0 WAL file(s)"),
        "{out}"
    );
}
