//! Backups shared with the real pgBackRest 2.45 (Debian's `pgbackrest`, installed by
//! test/setup.sh) on one repository, both ways, with a real PostgreSQL 15 under pgbench:
//! what one tool writes (stanza, WAL, full, diff, incr) the other lists, verifies, fetches
//! WAL from, restores (the restored cluster starts and holds the rows of that backup), builds
//! an incr on, and expires; and an expire by either leaves a repository the other accepts.
//! A full backup of either holds the same directories and tablespace links, so a copy of an
//! uncompressed one starts as a cluster.
//!
//! pgBackRest runs as postgres with a config of the test's own (repository, lock and log
//! paths under the test directory), never /etc/pgbackrest.conf or its default paths.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::backup::{check_block_indexes, Restored};
use crate::fixture::{label_of, Options, Site, STANZA};
use crate::harness::{self, Out, PgBackrest, PgBackrestPaths};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// pgBackRest for `site`: the same repository and cluster as pg_backrest's, its own config,
/// lock and log paths in the test directory.
fn pgbackrest_conf(site: &Site) -> PgBackrest {
    PgBackrest::new(
        PgBackrestPaths {
            dir: site.dir.path(),
            repo: &site.repo,
            stanza: STANZA,
            global: "archive-timeout=60",
        },
        &site.cluster,
    )
}

fn ok(out: Out, what: &str) -> Out {
    out.expect_ok(what)
}

/// Backup labels in the repository's backup directory, oldest first.
fn labels(site: &Site) -> Vec<String> {
    let dir = site.repo.join("backup").join(STANZA);
    let mut out: Vec<String> = fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .filter(|n| n.len() >= 16 && n.as_bytes()[0].is_ascii_digit())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Takes a backup with pgBackRest and returns its label.
fn pgbackrest_backup(site: &Site, pgbr: &PgBackrest, kind: &str) -> String {
    let before = labels(site);
    ok(
        pgbr.run(&["backup", &format!("--type={kind}")]),
        &format!("pgbackrest backup --type={kind}"),
    );
    let after = labels(site);
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert_eq!(new.len(), 1, "one new backup: {before:?} -> {after:?}");
    new[0].clone()
}

fn pg_backrest_backup(site: &Site, kind: &str) -> String {
    let out = site.pgbr(&["backup", &format!("--type={kind}"), "--start-fast"]);
    assert_eq!(out.status, 0, "pg_backrest backup --type={kind}:\n{out}");
    label_of(&out)
}

/// What a backup of the cluster must bring back: the steps marked so far and pgbench's
/// accounts (count and balance sum, which each step's transactions change).
const STATE: &str = "select (select string_agg(step, ',' order by n) from marker) || ' ' || \
                     (select count(*) || '/' || sum(abalance) from pgbench_accounts)";

/// Changes the data (pgbench transactions touch several relations), marks the step, and
/// returns the state a backup taken now holds.
fn step(site: &Site, name: &str) -> String {
    site.cluster.pgbench(&["-n", "-t", "200"]);
    site.cluster
        .psql(&format!("insert into marker(step) values ('{name}')"));
    site.cluster.psql(STATE)
}

fn start_cluster_with_data(site: &Site) {
    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    site.cluster
        .psql("create table marker(n serial, step text)");
}

/// Restores `label` with pgBackRest into `<site dir>/<name>`, recovery stopping where the
/// backup became consistent, and starts it.
fn pgbackrest_restore(site: &Site, pgbr: &PgBackrest, name: &str, label: &str) -> Restored {
    let r = pgbackrest_restore_unstarted(site, pgbr, name, label);
    r.start_and_wait_promoted();
    r
}

/// [`pgbackrest_restore`] without starting the copy: its files are the backup's.
fn pgbackrest_restore_unstarted(
    site: &Site,
    pgbr: &PgBackrest,
    name: &str,
    label: &str,
) -> Restored {
    let r = Restored::at(site, name);
    harness::mkdir_postgres(&r.data);
    harness::chmod(&r.data, 0o700);
    ok(
        pgbr.run(&[
            "restore",
            &format!("--pg1-path={}", p(&r.data)),
            &format!("--set={label}"),
            "--type=immediate",
            "--target-action=promote",
        ]),
        &format!("pgbackrest restore --set={label}"),
    );
    r
}

/// Restores `label` with pg_backrest (extra args: `--delta`) the same way, and starts it.
fn pg_backrest_restore(site: &Site, name: &str, label: &str, extra: &[&str]) -> Restored {
    let mut args = vec!["--type=immediate", "--target-action=promote"];
    args.extend_from_slice(extra);
    let r = Restored::restore(site, name, Some(label), &args);
    r.start_and_wait_promoted();
    r
}

fn assert_state(r: &Restored, expected: &str, what: &str) {
    assert_eq!(r.psql(STATE), expected, "{what}");
}

/// Points archive_command at pgBackRest's archive-push (still copying each pushed segment
/// to originals/, as the fixture's does).
fn archive_with_pgbackrest(site: &Site, pgbr: &PgBackrest) {
    let o = p(&site.originals);
    let command = format!(
        "{} && cp %p {o}/%f.part && mv {o}/%f.part {o}/%f",
        pgbr.archive_command()
    );
    site.cluster
        .set_settings(&[("archive_command", command.as_str())]);
    site.cluster.reload();
}

/// (a), then (d) one way: pgBackRest writes the stanza, WAL, full, diff and incr;
/// pg_backrest lists, verifies, fetches WAL, restores each backup (plain, and delta onto a
/// changed copy) and adds an incr that pgBackRest restores; pgBackRest takes a new full and
/// pg_backrest's expire leaves a repository pgBackRest lists and restores from.
#[test]
fn a_pgbackrest_repository_is_read_restored_extended_and_expired_by_pg_backrest() {
    let site = Site::new(Options {
        no_stanza_create: true,
        ..Options::default()
    });
    let pgbr = pgbackrest_conf(&site);
    ok(pgbr.run(&["stanza-create"]), "pgbackrest stanza-create");
    archive_with_pgbackrest(&site, &pgbr);
    start_cluster_with_data(&site);

    let full_state = step(&site, "full");
    let full = pgbackrest_backup(&site, &pgbr, "full");
    let diff_state = step(&site, "diff");
    let diff = pgbackrest_backup(&site, &pgbr, "diff");
    let incr_state = step(&site, "incr");
    let incr = pgbackrest_backup(&site, &pgbr, "incr");
    let segment = site.one_segment();

    let info = site.pgbr(&["info"]);
    assert_eq!(info.status, 0, "{info}");
    for label in [&full, &diff, &incr] {
        assert!(
            info.stdout.contains(label.as_str()),
            "info lists {label}:\n{info}"
        );
    }
    let verify = site.pgbr(&["verify"]);
    assert_eq!(
        verify.status, 0,
        "pg_backrest verify of pgBackRest's repository:\n{verify}"
    );

    // WAL pgBackRest pushed comes back byte for byte.
    let fetched = site.dir.join("fetched");
    let out = site.pgbr(&["archive-get", &segment, p(&fetched)]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        fs::read(&fetched).unwrap() == fs::read(site.originals.join(&segment)).unwrap(),
        "archive-get of {segment} returns what PostgreSQL archived"
    );

    let r = pg_backrest_restore(&site, "full", &full, &[]);
    assert_state(
        &r,
        &full_state,
        "pg_backrest's restore of pgBackRest's full",
    );
    drop(r);
    let r = pg_backrest_restore(&site, "diff", &diff, &[]);
    assert_state(
        &r,
        &diff_state,
        "pg_backrest's restore of pgBackRest's diff",
    );
    drop(r);
    let r = pg_backrest_restore(&site, "incr", &incr, &[]);
    assert_state(
        &r,
        &incr_state,
        "pg_backrest's restore of pgBackRest's incr",
    );
    // Delta onto that copy, changed since (promoted, written to), brings back the full.
    r.psql("insert into marker(step) values ('changed'); checkpoint");
    r.stop();
    drop(r);
    let r = pg_backrest_restore(&site, "incr", &full, &["--delta"]);
    assert_state(
        &r,
        &full_state,
        "pg_backrest's delta restore of pgBackRest's full",
    );
    drop(r);

    // An incr of ours on pgBackRest's chain, restored by pgBackRest.
    let ours_state = step(&site, "ours");
    let ours = pg_backrest_backup(&site, "incr");
    assert!(
        ours.starts_with(&format!("{full}_")),
        "{ours} builds on {full}"
    );
    let r = pgbackrest_restore(&site, &pgbr, "ours", &ours);
    assert_state(
        &r,
        &ours_state,
        "pgBackRest's restore of pg_backrest's incr",
    );
    drop(r);

    // (d) Our expire on a repository pgBackRest keeps using.
    let full2_state = step(&site, "full2");
    let full2 = pgbackrest_backup(&site, &pgbr, "full");
    let out = site.pgbr(&["expire", "--repo1-retention-full=1"]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(labels(&site), vec![full2.clone()]);
    let info = ok(pgbr.run(&["info"]), "pgbackrest info after our expire");
    assert!(info.stdout.contains(&full2), "{info}");
    assert!(!info.stdout.contains(&full), "{info}");
    ok(pgbr.run(&["verify"]), "pgbackrest verify after our expire");
    let r = pgbackrest_restore(&site, &pgbr, "full2", &full2);
    assert_state(
        &r,
        &full2_state,
        "pgBackRest's restore after pg_backrest's expire",
    );
}

/// The files `keys` of backup `label` (gz), as restored into `r` before it starts, are the
/// stored files as GNU gzip reads them, byte for byte.
fn assert_restored_as_stored(site: &Site, label: &str, r: &Restored, keys: &[String]) {
    let manifest = fs::read_to_string(
        site.repo
            .join(format!("backup/{STANZA}/{label}/backup.manifest")),
    )
    .unwrap();
    for key in keys {
        let line = manifest
            .lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line[key.len() + 1..]).unwrap();
        let holder = entry["reference"].as_str().unwrap_or(label);
        let stored = site.repo.join(format!("backup/{STANZA}/{holder}/{key}.gz"));
        let out = std::process::Command::new("gzip")
            .args(["-dc", p(&stored)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gzip -dc {}: {out:?}",
            stored.display()
        );
        let restored = fs::read(r.data.join(key.strip_prefix("pg_data/").unwrap())).unwrap();
        assert!(
            restored == out.stdout,
            "{key}: pgBackRest restored {} bytes, not the {} stored",
            restored.len(),
            out.stdout.len()
        );
    }
}

/// Points archive_command at pg_backrest under the name `pgbackrest` (a symlink), as a
/// pgBackRest user who switched has it: pgBackRest's backup refuses an archive_command that
/// does not name pgbackrest.
fn archive_with_pg_backrest_named_pgbackrest(site: &Site) {
    let bin_dir = site.dir.mkdir("bin");
    let link = bin_dir.join("pgbackrest");
    std::os::unix::fs::symlink(harness::bin(), &link).unwrap();
    let o = p(&site.originals);
    let command = format!(
        "{} --config={} --stanza={STANZA} archive-push %p && cp %p {o}/%f.part && mv {o}/%f.part {o}/%f",
        p(&link),
        p(&site.conf)
    );
    site.cluster
        .set_settings(&[("archive_command", command.as_str())]);
    site.cluster.reload();
}

/// (b), then (d) the other way: pg_backrest writes the stanza, WAL, full, diff and incr;
/// pgBackRest lists, verifies and restores each, and adds an incr that pg_backrest restores;
/// pg_backrest takes a new full and pgBackRest's expire leaves a repository pg_backrest
/// lists, verifies and restores from.
#[test]
fn a_pg_backrest_repository_is_read_restored_extended_and_expired_by_pgbackrest() {
    let site = Site::local();
    let pgbr = pgbackrest_conf(&site);
    archive_with_pg_backrest_named_pgbackrest(&site);
    start_cluster_with_data(&site);

    let full_state = step(&site, "full");
    let full = pg_backrest_backup(&site, "full");
    let diff_state = step(&site, "diff");
    let diff = pg_backrest_backup(&site, "diff");
    let incr_state = step(&site, "incr");
    let incr = pg_backrest_backup(&site, "incr");
    site.one_segment();

    let info = ok(pgbr.run(&["info"]), "pgbackrest info");
    for label in [&full, &diff, &incr] {
        assert!(
            info.stdout.contains(label.as_str()),
            "info lists {label}:\n{info}"
        );
    }
    ok(pgbr.run(&["verify"]), "pgbackrest verify");
    for (label, state, name) in [
        (&full, &full_state, "full"),
        (&diff, &diff_state, "diff"),
        (&incr, &incr_state, "incr"),
    ] {
        // pgbench_accounts (13 MB) is stored with a block index (issue 17), which pgBackRest
        // skips: its info and verify above accepted the manifests, and the file it restores
        // is the one backed up, byte for byte.
        let indexed = check_block_indexes(&site, label);
        assert!(!indexed.is_empty(), "{name}: a file with a block index");
        let r = pgbackrest_restore_unstarted(&site, &pgbr, name, label);
        assert_restored_as_stored(&site, label, &r, &indexed);
        r.start_and_wait_promoted();
        assert_state(
            &r,
            state,
            &format!("pgBackRest's restore of pg_backrest's {name}"),
        );
    }

    // pgBackRest's incr on our chain, restored by pg_backrest.
    let theirs_state = step(&site, "theirs");
    let theirs = pgbackrest_backup(&site, &pgbr, "incr");
    assert!(
        theirs.starts_with(&format!("{full}_")),
        "{theirs} builds on {full}"
    );
    let r = pg_backrest_restore(&site, "theirs", &theirs, &[]);
    assert_state(
        &r,
        &theirs_state,
        "pg_backrest's restore of pgBackRest's incr",
    );
    drop(r);

    // (d) pgBackRest's expire on a repository pg_backrest keeps using.
    let full2_state = step(&site, "full2");
    let full2 = pg_backrest_backup(&site, "full");
    ok(
        pgbr.run(&["expire", "--repo1-retention-full=1"]),
        "pgbackrest expire",
    );
    assert_eq!(labels(&site), vec![full2.clone()]);
    let info = site.pgbr(&["info"]);
    assert_eq!(info.status, 0, "{info}");
    assert!(
        info.stdout.contains(&full2) && !info.stdout.contains(&full),
        "{info}"
    );
    let verify = site.pgbr(&["verify"]);
    assert_eq!(
        verify.status, 0,
        "pg_backrest verify after pgBackRest's expire:\n{verify}"
    );
    let r = pg_backrest_restore(&site, "full2", &full2, &[]);
    assert_state(
        &r,
        &full2_state,
        "pg_backrest's restore after pgBackRest's expire",
    );
}

/// The directories (`PATH/`) and symlinks (`PATH -> DESTINATION`) below a backup's
/// directory, relative to it; files are left out (their names differ by compression only
/// where both tools store them).
fn shape(backup: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = p(path.strip_prefix(root).unwrap()).to_string();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let dest = fs::read_link(&path).unwrap();
                out.insert(format!("{rel} -> {}", p(&dest)));
            } else if kind.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(backup, backup, &mut out);
    out
}

/// Issue 14: a full backup creates every directory of the cluster in the repository, empty
/// ones too, and links each tablespace into its pg_data, exactly as pgBackRest 2.45 does for
/// the same cluster; an incr does neither (as pgBackRest). Both tools then list, verify and
/// expire such backups. `site` reaches its repository directly or over SSH.
fn full_backups_have_the_paths_and_links_pgbackrest_makes(site: &Site) {
    let pgbr = pgbackrest_conf(site);
    archive_with_pg_backrest_named_pgbackrest(site);
    let ts = site.dir.mkdir("ts1");
    site.cluster
        .psql(&format!("create tablespace ts1 location '{}'", p(&ts)));
    site.cluster
        .psql("create table in_ts tablespace ts1 as select generate_series(1, 1000) g");
    let oid = site
        .cluster
        .psql("select oid from pg_tablespace where spcname = 'ts1'");
    let backups = site.repo.join("backup").join(STANZA);

    let ours = pg_backrest_backup(site, "full");
    let theirs = pgbackrest_backup(site, &pgbr, "full");
    let (ours_shape, theirs_shape) = (shape(&backups.join(&ours)), shape(&backups.join(&theirs)));
    let link = format!("pg_data/pg_tblspc/{oid} -> ../../pg_tblspc/{oid}");
    for expected in [
        "pg_data/pg_notify/",
        "pg_data/pg_replslot/",
        "pg_data/pg_tblspc/",
        "pg_data/pg_wal/archive_status/",
        link.as_str(),
    ] {
        assert!(
            ours_shape.contains(expected),
            "{expected} in our full {ours}: {ours_shape:#?}"
        );
    }
    assert_eq!(
        ours_shape, theirs_shape,
        "our full {ours} and pgBackRest's {theirs} have the same directories and links"
    );
    let mode = fs::metadata(backups.join(&ours).join("pg_data/pg_notify"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750, "repository directory mode");

    // An incr holds only the directories of the files it stores, and no link.
    site.cluster
        .psql("insert into in_ts select generate_series(1, 10)");
    let ours_incr = pg_backrest_backup(site, "incr");
    let theirs_incr = pgbackrest_backup(site, &pgbr, "incr");
    for label in [&ours_incr, &theirs_incr] {
        let s = shape(&backups.join(label));
        assert!(
            !s.contains("pg_data/pg_notify/") && !s.iter().any(|e| e.contains(" -> ")),
            "incr {label}: {s:#?}"
        );
    }

    // Both tools accept backups holding them: info, verify, and our expire of our full.
    let info = site.pgbr(&["info"]);
    assert_eq!(info.status, 0, "{info}");
    for label in [&ours, &theirs, &ours_incr, &theirs_incr] {
        assert!(info.stdout.contains(label.as_str()), "{label}: {info}");
    }
    ok(pgbr.run(&["verify"]), "pgbackrest verify");
    let verify = site.pgbr(&["verify"]);
    assert_eq!(verify.status, 0, "pg_backrest verify:\n{verify}");
    let out = site.pgbr(&["expire", "--repo1-retention-full=1"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        !labels(site).contains(&ours) && labels(site).contains(&theirs),
        "{:?}",
        labels(site)
    );
    assert_eq!(
        shape(&backups.join(&theirs)),
        theirs_shape,
        "expire removed our full's link, not what it points at"
    );
    let info = ok(pgbr.run(&["info"]), "pgbackrest info after our expire");
    assert!(info.stdout.contains(&theirs_incr), "{info}");
    ok(pgbr.run(&["verify"]), "pgbackrest verify after our expire");
}

#[test]
fn full_backups_have_the_paths_and_links_pgbackrest_makes_locally() {
    let site = Site::local();
    full_backups_have_the_paths_and_links_pgbackrest_makes(&site);

    // What the directories and link are for: `cp -a` of an uncompressed full's pg_data and
    // pg_tblspc is a cluster that starts (recovering from the archive) with the tablespace's
    // rows. Its tablespace_map goes: PostgreSQL would re-point the link at the original
    // location, which the running cluster still uses.
    let expected = site.cluster.psql("select count(*), sum(g) from in_ts");
    let out = site.pgbr(&[
        "backup",
        "--type=full",
        "--start-fast",
        "--compress-type=none",
    ]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    let backup = site.repo.join("backup").join(STANZA).join(&label);
    let copy = Restored::at(&site, "copy");
    let parent = copy.data.parent().unwrap();
    for (from, to) in [("pg_data", "pgdata"), ("pg_tblspc", "pg_tblspc")] {
        let out = harness::run(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(backup.join(from))
                .arg(parent.join(to)),
        );
        assert!(out.success(), "cp -a {from}: {out}");
    }
    fs::remove_file(copy.data.join("tablespace_map")).unwrap();
    harness::write_postgres(&copy.data.join("recovery.signal"), "", 0o640);
    copy.start(&format!(
        "archive_mode = off\nrestore_command = '{} --config={} --stanza={STANZA} archive-get %f \"%p\"'\n\
         recovery_target = 'immediate'\nrecovery_target_action = 'promote'\n",
        p(&harness::bin()),
        p(&site.conf)
    ));
    copy.wait_for("select pg_is_in_recovery()", "f", "promotion");
    assert_eq!(
        copy.psql("select count(*), sum(g) from in_ts"),
        expected,
        "the copy holds the tablespace's rows"
    );
}

#[test]
fn full_backups_have_the_paths_and_links_pgbackrest_makes_over_ssh() {
    full_backups_have_the_paths_and_links_pgbackrest_makes(&Site::remote());
}
