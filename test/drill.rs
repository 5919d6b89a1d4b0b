//! drill end to end: on a good backup it restores, recovers, checks and cleans up, reporting
//! what it recovered; on a backup with a damaged file it fails with the integrity code; on a
//! target it cannot reach it fails; stopped by SIGTERM it cleans up too; it never leaves its
//! copy or a running server behind; hook-drill-success and -failure report each outcome.

use std::fs;
use std::time::Duration;

use crate::fixture::{assert_error, Site, STANZA};
use crate::harness::{self, wait_until};

fn drill_dirs(site: &Site) -> Vec<String> {
    fs::read_dir(site.dir.join("drill"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Processes whose command line names a drill directory of this site (its PostgreSQL), as
/// "pid: cmdline". Other tests run drills at the same time, so only this site's count.
fn drill_processes(site: &Site) -> Vec<String> {
    let ours = format!("{}/pg_backrest-drill-", site.dir.join("drill").display());
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmdline = fs::read_to_string(e.path().join("cmdline")).ok()?;
            cmdline.contains(&ours).then(|| {
                format!(
                    "{}: {}",
                    e.file_name().to_string_lossy(),
                    cmdline.replace('\0', " ")
                )
            })
        })
        .collect()
}

fn no_drill_server_running(site: &Site) -> bool {
    drill_processes(site).is_empty()
}

#[test]
fn drill_passes_on_a_good_backup_and_fails_on_a_damaged_one() {
    let site = Site::local();
    site.dir.mkdir("drill");
    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    // A tablespace: the drill must restore it inside its own directory, never over the
    // production location.
    let ts = site.dir.mkdir("ts");
    site.cluster
        .psql(&format!("create tablespace ts location '{}'", ts.display()));
    site.cluster
        .psql("create table in_ts tablespace ts as select generate_series(1, 1000) g");
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    site.cluster.pgbench(&["-n", "-t", "100"]);
    site.one_segment();
    let drill_path = format!("--drill-path={}", site.dir.join("drill").display());

    // hook-drill-* let a scheduler alert: the success hook runs after a good drill, the
    // failure hook after a failed one, with the exit code.
    let hooked = site.dir.join("hook.out");
    let success_hook = format!(
        "--hook-drill-success=echo $PG_BACKREST_HOOK $PG_BACKREST_COMMAND > {}",
        hooked.display()
    );
    let failure_hook = format!(
        "--hook-drill-failure=echo $PG_BACKREST_HOOK $PG_BACKREST_EXIT_CODE > {}",
        hooked.display()
    );
    let out = site.pgbr(&[
        "drill",
        &drill_path,
        "--process-max=2",
        &success_hook,
        &failure_hook,
    ]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(fs::read_to_string(&hooked).unwrap(), "success drill\n");
    assert!(out.stdout.contains(": ok\n"), "{out}");
    assert!(out.stdout.contains("recovery: promoted at LSN "), "{out}");
    assert!(out.stdout.contains("pg_amcheck: ok in"), "{out}");
    assert!(
        out.stdout
            .contains("databases checked: postgres, template1"),
        "{out}"
    );
    assert!(
        drill_dirs(&site).is_empty(),
        "drill left {:?}",
        drill_dirs(&site)
    );
    assert!(
        no_drill_server_running(&site),
        "{:?}",
        drill_processes(&site)
    );
    let ts_entries: Vec<_> = fs::read_dir(&ts)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        ts_entries.len(),
        1,
        "only the cluster's own version directory: {ts_entries:?}"
    );

    // A target before the backup's end cannot be drilled.
    let out = site.pgbr(&["drill", &drill_path, "--type=lsn", "--target=0/1"]);
    assert_error(&out, 75, "no backup ends before recovery target");

    // Damage a stored file: the drill fails on its checksum and cleans up.
    let info: serde_json::Value =
        serde_json::from_str(&site.pgbr(&["info", "--output=json"]).stdout).unwrap();
    let label = info[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let (relation, stored) = site.stored_relation(&label, "pgbench_accounts");
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&stored, bytes).unwrap();
    let out = site.pgbr(&["drill", &drill_path, &success_hook, &failure_hook]);
    assert_eq!(out.status, 29, "{out}");
    assert_eq!(fs::read_to_string(&hooked).unwrap(), "failure 29\n");
    assert!(
        out.stderr.contains(&relation),
        "the error names the damaged file:\n{out}"
    );
    assert!(
        drill_dirs(&site).is_empty(),
        "drill left {:?}",
        drill_dirs(&site)
    );
    assert!(
        no_drill_server_running(&site),
        "{:?}",
        drill_processes(&site)
    );
}

/// SIGTERM (as a scheduler sends it) while the drill's PostgreSQL is starting: the drill stops
/// that server, removes its copy and exits 63 with one ERROR line.
#[test]
fn drill_stopped_by_sigterm_removes_its_copy_and_server() {
    let site = Site::local();
    let drill = site.dir.mkdir("drill");
    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    site.one_segment();

    let config = format!("--config={}", site.conf.display());
    let stanza = format!("--stanza={STANZA}");
    let drill_path = format!("--drill-path={}", drill.display());
    let hooked = site.dir.join("hook.out");
    let failure_hook = format!(
        "--hook-drill-failure=echo $PG_BACKREST_HOOK $PG_BACKREST_EXIT_CODE > {}",
        hooked.display()
    );
    let child = harness::pgbr(&[&config, &stanza, "drill", &drill_path, &failure_hook])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning drill");
    let server_starting = || {
        drill_dirs(&site)
            .iter()
            .any(|d| drill.join(d).join("pgdata/postmaster.pid").exists())
    };
    wait_until(
        "the drill's PostgreSQL to start",
        Duration::from_secs(60),
        server_starting,
    );
    // runuser's own child; PostgreSQL's restore_command runs other pg_backrest processes.
    let ours = harness::children(child.id());
    assert_eq!(ours.len(), 1, "the drill process: {ours:?}");
    // Frozen while the signal arrives, so the drill cannot finish in between.
    harness::signal(&ours, "STOP");
    harness::signal(&ours, "TERM");
    harness::signal(&ours, "CONT");
    // runuser stops itself when its child stops (as su does) and waits to be continued.
    harness::signal(&[child.id()], "CONT");
    let out = child.wait_with_output().unwrap();
    let out = harness::Out {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_error(&out, 63, "terminated by signal SIGTERM");
    assert_eq!(fs::read_to_string(&hooked).unwrap(), "failure 63\n");
    assert!(
        drill_dirs(&site).is_empty(),
        "drill left {:?}",
        drill_dirs(&site)
    );
    assert!(
        no_drill_server_running(&site),
        "{:?}",
        drill_processes(&site)
    );
}
