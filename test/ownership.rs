//! Who owns what pg_backrest writes, and names it must carry intact: a command run as root
//! never takes a repository, lock or log path over from its owner; a restore run as root
//! applies owners and modes only by the documented policy, whatever a tampered manifest says;
//! and any file name PostgreSQL allows in a data directory survives the manifest.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixture::{assert_error, label_of, only_error_line, Site, STANZA};
use crate::harness::{bin, chown_postgres, postgres_ids, run, Out};
use crate::restore_delta::rechecksum;

/// pg_backrest run as root (the test process's user), with the site's config.
fn pgbr_as_root(site: &Site, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin());
    cmd.arg(format!("--config={}", site.conf.display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG_BACKREST_") {
            cmd.env_remove(&key);
        }
    }
    run(cmd)
}

/// Every entry below `dir` (itself included) that is not owned by postgres.
fn not_owned_by_postgres(dir: &Path) -> Vec<PathBuf> {
    let (uid, _) = postgres_ids();
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != uid {
            found.push(path.clone());
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    found
}

/// Every file below `dir` with its content, by path relative to `dir`.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        } else if meta.is_file() {
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            out.insert(rel, fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn root_never_takes_a_repository_lock_or_log_path_over() {
    let site = Site::local();
    let label = site.backup("full", &[]);
    let repo_before = contents(&site.repo);
    let segment = site.one_segment();
    let wal = site.cluster.data_dir().join("pg_wal").join(&segment);

    // Every command that writes refuses, naming the owner, before it changes anything.
    for args in [
        vec!["backup", "--type=full", "--start-fast"],
        vec!["expire", "--repo1-retention-full=1"],
        vec!["stanza-create"],
        vec!["archive-push", wal.to_str().unwrap()],
    ] {
        let out = pgbr_as_root(&site, &args);
        // The log file is refused too, with a warning before the error.
        assert_eq!(out.status, 88, "{args:?}: {out}");
        let error = only_error_line(&out);
        for part in [
            "ERROR: [088]: refusing to write into repository",
            "it belongs to user 'postgres'",
            "runs as user 'root' (uid 0)",
            "HINT: run pg_backrest as postgres",
        ] {
            assert!(error.contains(part), "{part}: {out}");
        }
    }
    let mut repo_after = contents(&site.repo);
    // archive_command pushed the segment between the two snapshots; nothing else changed.
    repo_after.retain(|path, _| repo_before.contains_key(path));
    assert!(repo_before == repo_after, "root changed the repository");

    // Read-only commands may run as root; they leave no file of root's behind either.
    let out = pgbr_as_root(&site, &["info"]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&label), "{out}");
    assert!(
        out.stderr.contains("WARN: refusing to write into log path"),
        "the skipped log file is said:\n{out}"
    );
    assert!(pgbr_as_root(&site, &["verify"]).success());

    for dir in [
        site.repo.clone(),
        site.dir.join("lock"),
        site.dir.join("log"),
    ] {
        let foreign = not_owned_by_postgres(&dir);
        assert!(foreign.is_empty(), "root left {foreign:?}");
    }
    // And postgres goes on as before.
    site.backup("incr", &[]);
    site.pgbr(&["verify"]).expect_ok("verify");
}

#[test]
fn a_lock_file_root_left_behind_is_named_not_a_bare_permission_error() {
    let site = Site::local();
    // A lock file of root's, as an older version run as root would leave behind.
    let lock = site.dir.join("lock").join(format!("{STANZA}-backup.lock"));
    fs::create_dir_all(lock.parent().unwrap()).unwrap();
    chown_postgres(lock.parent().unwrap());
    let _ = fs::remove_file(&lock);
    fs::write(&lock, "").unwrap();
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_error(&out, 88, "refusing to write into lock file");
    assert!(out.stderr.contains("belongs to user 'root'"), "{out}");
}

/// The manifest of `label` with `edit` applied to its text, checksummed again, written over
/// the manifest and its copy: what someone with write access to the repository could do.
fn tamper_manifest(site: &Site, label: &str, edit: impl Fn(&str) -> String) {
    let manifest = site
        .repo
        .join(format!("backup/{STANZA}/{label}/backup.manifest"));
    let original = fs::read_to_string(&manifest).unwrap();
    let doctored = rechecksum(&edit(&original));
    for path in [&manifest, &manifest.with_extension("manifest.copy")] {
        fs::write(path, &doctored).unwrap();
        chown_postgres(path);
    }
}

/// Replaces `"key":"old"` by `"key":"new"` in the manifest line of `entry`.
fn set_field(text: &str, entry: &str, key: &str, value: &str) -> String {
    let prefix = format!("{entry}=");
    text.lines()
        .map(|line| match line.strip_prefix(&prefix) {
            Some(json) => {
                let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
                v[key] = value.into();
                format!("{prefix}{v}")
            }
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn restore_as_root_applies_only_the_clusters_owner_and_safe_modes() {
    let site = Site::local();
    let label = site.backup("full", &[]);
    let (uid, gid) = postgres_ids();

    // A file handed to root, setuid, world-writable.
    tamper_manifest(&site, &label, |text| {
        let text = set_field(text, "pg_data/PG_VERSION", "user", "root");
        let text = set_field(&text, "pg_data/PG_VERSION", "group", "root");
        set_field(&text, "pg_data/PG_VERSION", "mode", "4777")
    });
    let dest = site.dir.join("restored");
    let out = pgbr_as_root(
        &site,
        &["restore", &format!("--pg1-path={}", dest.display())],
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stderr
            .contains("WARN: the backup records owner 'root:root' for some files"),
        "{out}"
    );
    let foreign = not_owned_by_postgres(&dest);
    assert!(foreign.is_empty(), "not the cluster's owner: {foreign:?}");
    let meta = fs::metadata(dest.join("PG_VERSION")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o755,
        "special bits dropped"
    );

    // The cluster's owner itself must be a user of this host, and never root.
    for (owner, code, why) in [
        ("root", 29, "records root ('root') as the cluster's owner"),
        ("no-such-user-here", 89, "is not a user of this host"),
    ] {
        tamper_manifest(&site, &label, |text| {
            set_field(text, "pg_data", "user", owner)
        });
        let dest = site.dir.join(format!("restored-{code}"));
        let out = pgbr_as_root(
            &site,
            &["restore", &format!("--pg1-path={}", dest.display())],
        );
        assert_error(&out, code, why);
        assert!(!dest.exists(), "{owner}: restore wrote before refusing");
    }
}

#[test]
fn any_file_name_postgresql_allows_survives_backup_and_restore() {
    let site = Site::local();
    let data = site.cluster.data_dir();
    let names = [
        "postgresql.conf:old",
        "a=b",
        "x={\"y\":1}",
        "[section]",
        " leading space",
        "line\nbreak",
        "#hash;semicolon",
        "ünïcødé",
    ];
    for (i, name) in names.iter().enumerate() {
        let path = data.join(name);
        fs::write(&path, format!("file {i}\n")).unwrap();
        chown_postgres(&path);
    }
    let label = site.backup("full", &[]);
    site.pgbr(&["verify"]).expect_ok("verify");
    let dest = site.dir.join("restored");
    site.pgbr(&["restore", &format!("--pg1-path={}", dest.display())])
        .expect_ok("restore");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            fs::read_to_string(dest.join(name)).unwrap_or_else(|e| panic!("{name:?}: {e}")),
            format!("file {i}\n"),
            "{name:?}"
        );
    }
    assert!(site.pgbr(&["info"]).stdout.contains(&label));

    // A name that is not UTF-8 cannot be written into the manifest as it is: the backup
    // fails naming it instead of storing it under another name.
    let odd = data.join(std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9"));
    fs::write(&odd, "x").unwrap();
    chown_postgres(&odd);
    let out = site.pgbr(&["backup", "--type=incr", "--start-fast"]);
    assert_error(&out, 28, "its name is not valid UTF-8");
    assert!(out.stderr.contains("latin1-"), "{out}");
    fs::remove_file(&odd).unwrap();
    let out = site.pgbr(&["backup", "--type=incr", "--start-fast"]);
    assert!(out.success(), "{out}");
    label_of(&out);
}
