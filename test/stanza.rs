//! stanza-create and check against real clusters: idempotence, refusal of another cluster,
//! recovery of damaged info files from their copies, PostgreSQL settings, and the lock.

use std::fs;

use crate::fixture::{assert_error, Site};
use crate::harness::{self, run, PgCluster};

#[test]
fn stanza_create_is_idempotent_refuses_another_cluster_and_repairs_from_copy() {
    let site = Site::local();
    let info = site.repo.join("archive/main/archive.info");
    let before = fs::read(&info).unwrap();
    site.pgbr(&["stanza-create"])
        .expect_ok("second stanza-create");
    assert_eq!(fs::read(&info).unwrap(), before, "rerun changes nothing");

    // Damaged main file: recovered from the copy, and rewritten by stanza-create.
    fs::write(&info, "[db]\ndb-id=1\n").unwrap();
    let check_dest = site.dir.join("x");
    let out = site.pgbr(&[
        "archive-get",
        "000000010000000000000001",
        check_dest.to_str().unwrap(),
    ]);
    assert_eq!(out.status, 1, "still usable from the copy:\n{out}");
    site.pgbr(&["stanza-create"]).expect_ok("repair");
    assert_eq!(fs::read(&info).unwrap(), before, "main file repaired");

    // Both damaged: no valid repository (pgBackRest's 103), not "segment missing".
    fs::write(&info, "garbage").unwrap();
    fs::write(site.repo.join("archive/main/archive.info.copy"), "garbage").unwrap();
    let out = site.pgbr(&[
        "archive-get",
        "000000010000000000000001",
        check_dest.to_str().unwrap(),
    ]);
    assert_error(&out, 103, "and so is");
    fs::write(&info, &before).unwrap();

    // Another cluster pointed at the same stanza and repository is refused.
    let other = PgCluster::init(&site.dir.join("other"), &[]);
    other.start();
    let out = site.pgbr(&[
        &format!("--pg1-path={}", other.data_dir().display()),
        &format!("--pg1-socket-path={}", other.socket_dir().display()),
        &format!("--pg1-port={}", other.port()),
        "stanza-create",
    ]);
    assert_error(&out, 28, "already exists for another cluster");
    assert_eq!(fs::read(&info).unwrap(), before);

    // pg1-path that is not the connected cluster's data directory.
    let out = site.pgbr(&[
        &format!("--pg1-path={}", other.data_dir().display()),
        "stanza-create",
    ]);
    assert_error(&out, 58, "is not the data directory of the running cluster");
}

#[test]
fn check_proves_archiving_and_reports_each_misconfiguration() {
    let site = Site::local();
    let out = site.pgbr(&["--log-level-console=info", "check"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stdout.contains("INFO: WAL segment '"), "{out}");
    assert!(out.stdout.contains("successfully archived to"), "{out}");

    site.cluster
        .set_settings(&[("archive_command", "/bin/true")]);
    site.cluster.reload();
    harness::wait_until(
        "archive_command reloaded",
        std::time::Duration::from_secs(10),
        || site.cluster.psql("show archive_command") == "/bin/true",
    );
    assert_error(
        &site.pgbr(&["check"]),
        68,
        "does not call pg_backrest archive-push for stanza 'main'",
    );

    // archive_command that "succeeds" without archiving: check times out waiting for the WAL.
    let fake = format!(
        "{} --stanza=main archive-push %p || true",
        "/bin/echo pg_backrest"
    );
    site.cluster.set_settings(&[("archive_command", &fake)]);
    site.cluster.reload();
    harness::wait_until(
        "archive_command reloaded",
        std::time::Duration::from_secs(10),
        || site.cluster.psql("show archive_command") == fake,
    );
    assert_error(
        &site.pgbr(&["--archive-timeout=2", "check"]),
        82,
        "did not reach the archive",
    );

    site.cluster.stop();
    assert_error(&site.pgbr(&["check"]), 56, "unable to connect to database");
}

#[test]
fn a_held_lock_refuses_stanza_create_with_the_lock_code_but_never_blocks_archive_get() {
    let site = Site::local();
    let lock = site.dir.join("lock/main-backup.lock");
    let mut holder = harness::postgres_command("flock", &[lock.to_str().unwrap(), "sleep", "30"])
        .spawn()
        .unwrap();
    harness::wait_until("lock file held", std::time::Duration::from_secs(10), || {
        run(harness::postgres_command(
            "flock",
            &["-n", lock.to_str().unwrap(), "true"],
        ))
        .status
            != 0
    });
    assert_error(&site.pgbr(&["stanza-create"]), 50, "unable to acquire lock");
    let out = site.pgbr(&[
        "archive-get",
        "000000010000000000000001",
        site.dir.join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status, 1, "{out}");
    let mut tree = harness::descendants(holder.id());
    tree.push(holder.id());
    harness::signal(&tree, "KILL");
    let _ = holder.wait();
    site.pgbr(&["stanza-create"])
        .expect_ok("lock released with its holder");
}

/// A label in backup.info is a directory name in the repository: one that backup could not
/// have written, even under a recomputed checksum, is a format error (29) naming
/// backup.info for every command that reads it (info reports the stanza as unreadable, status
/// 99); info does not show it, expire removes nothing.
#[test]
fn a_tampered_label_in_backup_info_is_refused_by_info_and_expire() {
    let site = Site::local();
    let label = site.backup("full", &[]);
    let info = site.repo.join("backup/main/backup.info");
    let text = fs::read_to_string(&info).unwrap();
    assert!(text.contains(&format!("\n{label}=")), "{text}");
    let tampered =
        crate::restore_delta::rechecksum(&text.replace(&format!("\n{label}="), "\n../../x="));
    for path in [info.clone(), site.repo.join("backup/main/backup.info.copy")] {
        fs::write(&path, &tampered).unwrap();
    }
    let expect = format!(
        "'{}' names an invalid backup label '../../x' (a backup)",
        info.display()
    );
    // info reports the stanza as unreadable (status 99, the error in its repo entry) and
    // exits 0, as pgBackRest does, so monitoring sees the stanza's state.
    let info = site.pgbr(&["info", "--output=json"]).expect_ok("info json");
    let json: serde_json::Value = serde_json::from_str(&info.stdout).expect("info json");
    assert_eq!(json[0]["status"]["code"], 99, "{info}");
    assert_eq!(json[0]["backup"], serde_json::json!([]), "{info}");
    let message = json[0]["repo"][0]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with('[') && message.contains(&expect),
        "{message}"
    );
    let text = site.pgbr(&["info"]).expect_ok("info");
    assert!(
        text.stdout
            .contains("    status: error (other)\n            ["),
        "{text}"
    );
    assert!(!text.stdout.contains(&label), "{text}");
    assert_error(
        &site.pgbr(&["expire", "--repo1-retention-full=1"]),
        29,
        &expect,
    );
    assert!(site.repo.join(format!("backup/main/{label}")).is_dir());
}
