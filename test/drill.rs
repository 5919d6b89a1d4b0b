//! drill end to end: on a good backup it restores, recovers, checks and cleans up, reporting
//! what it recovered; on a backup with a damaged file it fails with the integrity code; on a
//! target it cannot reach it fails; it never leaves its copy or a running server behind.

use std::fs;

use crate::fixture::{assert_error, Site};

fn drill_dirs(site: &Site) -> Vec<String> {
    fs::read_dir(site.dir.join("drill"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn no_drill_server_running() -> bool {
    !fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read_to_string(e.path().join("cmdline"))
            .unwrap_or_default()
            .contains("pg_backrest-drill-")
    })
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

    let out = site.pgbr(&["drill", &drill_path, "--process-max=2"]);
    assert_eq!(out.status, 0, "{out}");
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
    assert!(no_drill_server_running());
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
    assert_error(&out, 31, "no backup ends before recovery target");

    // Damage a stored file: the drill fails on its checksum and cleans up.
    let info: serde_json::Value =
        serde_json::from_str(&site.pgbr(&["info", "--output=json"]).stdout).unwrap();
    let label = info[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let (relation, stored) = site.stored_relation(&label, "pgbench_accounts");
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&stored, bytes).unwrap();
    let out = site.pgbr(&["drill", &drill_path]);
    assert_eq!(out.status, 44, "{out}");
    assert!(
        out.stderr.contains(&relation),
        "the error names the damaged file:\n{out}"
    );
    assert!(
        drill_dirs(&site).is_empty(),
        "drill left {:?}",
        drill_dirs(&site)
    );
    assert!(no_drill_server_running());
}
