//! verify against a real repository: clean after backups and archiving; a flipped byte in a
//! backup file, a deleted WAL segment, a truncated one, a stray file and a stray symlink are
//! each reported, with the integrity exit code, in text and JSON.

use std::fs;

use crate::fixture::{assert_error, Site};

#[test]
fn verify_is_clean_then_finds_each_kind_of_damage() {
    let site = Site::local();
    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    site.cluster.pgbench(&["-n", "-t", "200"]);
    let out = site.pgbr(&["backup", "--type=incr", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    let a = site.one_segment();
    let b = site.one_segment();
    // A later segment, so that the deleted one is a gap and not merely the end.
    let _later = site.one_segment();

    let out = site.pgbr(&["--process-max=2", "verify"]);
    assert_eq!(out.status, 0, "clean repository:\n{out}");
    assert!(out.stdout.contains("result: ok"), "{out}");

    // A flipped byte in a stored backup file.
    let label = site.pgbr(&["info", "--output=json"]).stdout;
    let json: serde_json::Value = serde_json::from_str(&label).unwrap();
    let full = json[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let stored = site
        .repo
        .join(format!("backup/main/{full}/pg_data/global/pg_control.gz"));
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&stored, bytes).unwrap();
    // A deleted segment, a truncated one, and a stray file.
    fs::remove_file(&site.stored(&a)[0]).unwrap();
    let trunc = site.stored(&b).remove(0);
    let data = fs::read(&trunc).unwrap();
    fs::write(&trunc, &data[..data.len() / 3]).unwrap();
    fs::write(
        site.repo.join(format!("backup/main/{full}/pg_data/stray")),
        b"x",
    )
    .unwrap();
    // A symlink that is no tablespace link: reported with its destination, not followed.
    std::os::unix::fs::symlink(
        "../global",
        site.repo
            .join(format!("backup/main/{full}/pg_data/stray-link")),
    )
    .unwrap();

    let out = site.pgbr(&["verify"]);
    assert_error(&out, 91, "verify found problems");
    assert!(
        out.stdout.contains("corrupt: pg_data/global/pg_control"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("gap: {a} is missing")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "corrupt: {}",
            trunc.file_name().unwrap().to_string_lossy()
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("unreferenced file: {full}/pg_data/stray\n")),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "unreferenced file: {full}/pg_data/stray-link -> ../global\n"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("result: PROBLEMS FOUND"), "{out}");

    let out = site.pgbr(&["verify", "--output=json"]);
    assert_eq!(out.status, 91);
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["ok"], false);
    assert_eq!(report["wal_gaps"], serde_json::json!([a]));
    assert_eq!(report["wal_corrupt"].as_array().unwrap().len(), 1);
    assert_eq!(report["backups"][0]["corrupt"].as_array().unwrap().len(), 1);
}
