//! The monitoring plugin check_pgbackrest 2.3 (Dalibo's Nagios plugin for pgBackRest, Debian's
//! `check-pgbackrest`, installed by test/setup.sh) against a repository written by pg_backrest,
//! with pg_backrest installed under the name `pgbackrest`, beside the same checks against a
//! repository written by the real pgBackRest 2.45: each situation must give the same status
//! and the same message (backup labels, WAL names, ages and counts set aside) both ways.
//!
//! One PostgreSQL 15 cluster archives into both repositories (its archive_command pushes with
//! each tool in turn) and each tool takes its own backups of it, so the two repositories go
//! through the same situations: a stanza with no backup, full backups, WAL between backups,
//! differential backups, a backup directory gone, a WAL segment gone before and after the
//! latest backup's start, a timeline switch (the plugin then reads `00000002.history`
//! through `repo-get`) and a backup that found a page with a bad checksum. The plugin calls `pgbackrest version`, `info --output=json`,
//! `repo-ls --output=json [--recurse]` and `repo-get`; its services are `retention`, `archives`
//! (2.3 reads the repository only through repo-ls; the local-directory mode of its 1.x
//! releases is gone) and `check_pgb_version` (the script's own version, no pgBackRest call).
//! The plugin finds `pgbackrest` on PATH (a private directory holding a symlink named
//! `pgbackrest`: to our binary, or to /usr/bin/pgbackrest), as on a host where pg_backrest
//! replaced pgBackRest; one run goes through its `--command` option instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::fixture::{Site, STANZA};
use crate::harness::{
    self, postgres_command, run, wait_until, Out, PgBackrest, PgBackrestPaths, PG_BIN,
};

/// Debian's check-pgbackrest 2.3.
const PLUGIN: &str = "/usr/bin/check_pgbackrest";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// One tool as the plugin sees it: the directory holding the `pgbackrest` it finds on PATH,
/// the config file it passes with `--config`, and the repository.
struct Tool {
    name: &'static str,
    bin_dir: PathBuf,
    conf: PathBuf,
    repo: PathBuf,
}

/// What one plugin run said: exit status and the fields of its `--output=json` report.
struct Report {
    out: Out,
    json: Value,
}

impl Report {
    fn code(&self) -> i64 {
        self.json["status"]["code"].as_i64().unwrap_or(-1)
    }

    fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }

    fn long(&self, key: &str) -> &str {
        self.json["long_message"][key].as_str().unwrap_or_default()
    }

    fn long_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.json["long_message"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }
}

impl Tool {
    fn new(site: &Site, name: &'static str, program: &Path, conf: PathBuf, repo: PathBuf) -> Tool {
        let bin_dir = site.dir.mkdir(format!("bin-{name}"));
        std::os::unix::fs::symlink(program, bin_dir.join("pgbackrest")).expect("symlink");
        Tool {
            name,
            bin_dir,
            conf,
            repo,
        }
    }

    /// The plugin as postgres with `args`, finding `pgbackrest` on PATH, not yet run.
    fn plugin_command(&self, args: &[&str]) -> std::process::Command {
        let path = format!("PATH={}:/usr/bin:/bin", p(&self.bin_dir));
        let config = format!("--config={}", p(&self.conf));
        let mut all = vec![path.as_str(), PLUGIN, config.as_str()];
        all.extend_from_slice(args);
        let mut cmd = postgres_command("env", &all);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("PG_BACKREST_") || key_text.starts_with("PGBACKREST_") {
                cmd.env_remove(&key);
            }
        }
        cmd
    }

    /// Runs `check_pgbackrest --stanza=main --output=json args...`; panics unless it printed
    /// one JSON report on stdout, nothing on stderr, and exited with the report's status.
    fn check(&self, args: &[&str]) -> Report {
        let stanza = format!("--stanza={STANZA}");
        let mut all = vec![stanza.as_str(), "--output=json"];
        all.extend_from_slice(args);
        self.report(run(self.plugin_command(&all)), args)
    }

    fn report(&self, out: Out, args: &[&str]) -> Report {
        let what = format!("check_pgbackrest {args:?} on {}'s repository", self.name);
        assert!(out.stderr.is_empty(), "{what}: stderr not empty:\n{out}");
        let json: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON report ({e}):\n{out}"));
        let json = json[0].clone();
        let report = Report { out, json };
        assert_eq!(
            i64::from(report.out.status),
            report.code(),
            "{what}: exit status is not the report's status:\n{}",
            report.out
        );
        report
    }

    /// Moves `file` of the repository aside until the returned guard is dropped.
    fn hide(&self, file: &Path) -> Hidden {
        let aside = file.with_file_name(format!(
            "hidden-{}",
            file.file_name().unwrap().to_string_lossy()
        ));
        fs::rename(file, &aside).unwrap_or_else(|e| panic!("hide {}: {e}", file.display()));
        Hidden {
            from: aside,
            to: file.to_path_buf(),
        }
    }

    /// The stored file of WAL segment `segment` (archive id 15-1).
    fn stored_segment(&self, segment: &str) -> PathBuf {
        let dir = self
            .repo
            .join(format!("archive/{STANZA}/15-1/{}", &segment[..16]));
        fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{segment}-"))
            })
            .unwrap_or_else(|| panic!("{segment} not in {}'s repository", self.name))
    }

    /// The backups in the repository's backup.info, oldest first (the tool's `info`).
    fn backups(&self) -> Vec<Value> {
        let out = run(postgres_command(
            self.bin_dir.join("pgbackrest"),
            &[
                &format!("--config={}", p(&self.conf)),
                &format!("--stanza={STANZA}"),
                "info",
                "--output=json",
            ],
        ))
        .expect_ok("info");
        let v: Value = serde_json::from_str(&out.stdout).expect("info json");
        v[0]["backup"].as_array().cloned().unwrap_or_default()
    }
}

/// A repository file moved aside; put back on drop.
struct Hidden {
    from: PathBuf,
    to: PathBuf,
}

impl Drop for Hidden {
    fn drop(&mut self) {
        let _ = fs::rename(&self.from, &self.to);
    }
}

/// The message with what differs between two repositories of the same situation (WAL names,
/// backup labels, ages, counts) replaced by placeholders.
fn normalized(message: &str) -> String {
    let seg = Regex::new(r"\b[0-9A-F]{24}\b").unwrap();
    let label = Regex::new(r"\b\d{8}-\d{6}F(_\d{8}-\d{6}[DI])?\b").unwrap();
    let age = Regex::new(r"\b(\d+[wdhms] ?)+\b").unwrap();
    let number = Regex::new(r"\d+").unwrap();
    let m = seg.replace_all(message, "SEG");
    let m = label.replace_all(&m, "LABEL");
    let m = age.replace_all(&m, "AGE");
    number.replace_all(&m, "N").into_owned()
}

/// Runs the plugin with `args` on both repositories; asserts both exit `code`, say the same
/// message (normalized), report the same fields and agree on the `same` fields. Returns
/// (pg_backrest's report, pgBackRest's report).
fn both(ours: &Tool, theirs: &Tool, args: &[&str], code: i64, same: &[&str]) -> (Report, Report) {
    let a = ours.check(args);
    let b = theirs.check(args);
    let show = || format!("pg_backrest:\n{}\npgBackRest:\n{}", a.out, b.out);
    assert_eq!(b.code(), code, "pgBackRest's {args:?}: {}", show());
    assert_eq!(a.code(), code, "pg_backrest's {args:?}: {}", show());
    assert_eq!(
        normalized(a.message()),
        normalized(b.message()),
        "{args:?}: {}",
        show()
    );
    assert_eq!(a.long_keys(), b.long_keys(), "{args:?}: {}", show());
    for key in same {
        assert_eq!(a.long(key), b.long(key), "{args:?} {key}: {}", show());
    }
    (a, b)
}

/// pgBackRest's full or diff backup; pg_backrest's with the same type.
fn backup_both(site: &Site, pgbackrest: &PgBackrest, kind: &str) {
    site.backup(kind, &[]);
    pgbackrest
        .run(&["backup", &format!("--type={kind}")])
        .expect_ok(&format!("pgbackrest backup --type={kind}"));
}

/// Promotes the cluster onto timeline 2 (restarted as a standby with nothing to replay, then
/// promoted) and waits until both repositories hold `00000002.history`.
fn switch_timeline(site: &Site, tools: &[&Tool]) {
    site.cluster.stop();
    let signal = site.cluster.data_dir().join("standby.signal");
    fs::write(&signal, "").expect("standby.signal");
    harness::chown_postgres(&signal);
    site.cluster.start();
    let mut promote = postgres_command(format!("{PG_BIN}/pg_ctl"), &["-D"]);
    promote.arg(site.cluster.data_dir()).args(["-w", "promote"]);
    run(promote).expect_ok("pg_ctl promote");
    for tool in tools {
        let history = tool
            .repo
            .join(format!("archive/{STANZA}/15-1/00000002.history"));
        wait_until(
            &format!("00000002.history in {}'s repository", tool.name),
            Duration::from_secs(60),
            || history.exists(),
        );
    }
}

#[test]
fn check_pgbackrest_reads_a_pg_backrest_repository_as_a_pgbackrest_one() {
    assert!(
        Path::new(PLUGIN).exists(),
        "check_pgbackrest is not installed; run test/setup.sh"
    );
    let site = Site::local();
    let pgbackrest = PgBackrest::new(
        PgBackrestPaths {
            dir: site.dir.path(),
            repo: &site.dir.join("repo-pgbackrest"),
            stanza: STANZA,
            global: "",
        },
        &site.cluster,
    );
    pgbackrest
        .run(&["stanza-create"])
        .expect_ok("pgbackrest stanza-create");
    // Every segment goes to both repositories (and to originals/, for Site::one_segment).
    let o = p(&site.originals);
    let archive_command = format!(
        "{} --config={} --stanza={STANZA} archive-push %p && {} && cp %p {o}/%f.part && mv {o}/%f.part {o}/%f",
        p(&harness::bin()),
        p(&site.conf),
        pgbackrest.archive_command()
    );
    site.cluster
        .set_settings(&[("archive_command", archive_command.as_str())]);
    site.cluster.reload();

    let ours = Tool::new(
        &site,
        "pg_backrest",
        &harness::bin(),
        site.conf.clone(),
        site.repo.clone(),
    );
    let theirs = Tool::new(
        &site,
        "pgBackRest",
        Path::new(harness::PGBACKREST),
        pgbackrest.conf.clone(),
        site.dir.join("repo-pgbackrest"),
    );
    let retention = "--service=retention";
    let archives = "--service=archives";

    // The plugin's own version: no pgBackRest call, the same both ways.
    both(
        &ours,
        &theirs,
        &["--service=check_pgb_version", "--target-version=2.3"],
        0,
        &[],
    );
    both(
        &ours,
        &theirs,
        &["--service=check_pgb_version", "--target-version=2.2"],
        2,
        &[],
    );

    // A stanza without backups: info's status "no valid backups", per repository.
    site.one_segment();
    let (a, _) = both(&ours, &theirs, &[retention], 2, &[]);
    assert_eq!(a.message(), "repo1: no valid backups", "{}", a.out);
    let (a, _) = both(&ours, &theirs, &[archives], 2, &[]);
    assert_eq!(a.message(), "repo1: no valid backups", "{}", a.out);
    // A stanza the repository does not hold.
    let (a, _) = both(&ours, &theirs, &[retention, "--stanza=nosuch"], 2, &[]);
    assert_eq!(a.message(), "repo1: missing stanza path", "{}", a.out);

    // One full backup each.
    backup_both(&site, &pgbackrest, "full");
    let counts = ["full", "diff", "incr", "latest_bck_type"];
    let (a, _) = both(&ours, &theirs, &[retention], 0, &counts);
    assert_eq!(a.message(), "backups policy checks ok", "{}", a.out);
    assert_eq!(
        (a.long("full"), a.long("latest_bck_type")),
        ("1", "full"),
        "{}",
        a.out
    );
    let (a, _) = both(
        &ours,
        &theirs,
        &[retention, "--retention-full=3"],
        2,
        &counts,
    );
    assert_eq!(
        a.message(),
        "not enough full backups: 3 required",
        "{}",
        a.out
    );
    both(
        &ours,
        &theirs,
        &[retention, "--retention-diff=1"],
        2,
        &counts,
    );
    let (a, _) = both(
        &ours,
        &theirs,
        &[retention, "--retention-age-to-oldest=1d"],
        2,
        &counts,
    );
    assert_eq!(a.message(), "backups are too young", "{}", a.out);
    both(
        &ours,
        &theirs,
        &[
            retention,
            "--retention-age=1d",
            "--retention-age-to-full=1d",
        ],
        0,
        &counts,
    );
    let (a, _) = both(&ours, &theirs, &[archives], 0, &[]);
    assert!(
        a.message()
            .contains(" unique WAL archived, latest archived since "),
        "{}",
        a.out
    );

    // WAL between the full and the differential backups, then WAL after the latter.
    let between: Vec<String> = (0..3).map(|_| site.one_segment()).collect();
    backup_both(&site, &pgbackrest, "diff");
    // Two segments after the diff: a hole in the first is after the latest backup's start
    // and before the newest segment. (Not the backup's first segment: its `.backup` history
    // file, also named after it, counts as that segment for the plugin.)
    let after = &site.one_segment();
    site.one_segment();
    let same = ["full", "diff", "incr", "latest_bck_type", "oldest_bck_type"];
    let (a, _) = both(&ours, &theirs, &[retention, "--retention-diff=1"], 0, &same);
    assert_eq!((a.long("full"), a.long("diff")), ("1", "1"), "{}", a.out);
    both(&ours, &theirs, &[archives], 0, &same);
    // Every archived segment, also those before the oldest backup (the first came before any
    // backup), which the plugin reports.
    let (a, _) = both(
        &ours,
        &theirs,
        &[
            archives,
            "--extended-check",
            "--latest-archive-age-alert=1d",
        ],
        1,
        &same,
    );
    assert_eq!(
        a.message(),
        "min WAL is not the oldest archive",
        "{}",
        a.out
    );
    // The same through the plugin's --command option and its default (Nagios) output.
    let link = ours.bin_dir.join("pgbackrest");
    let command = format!("--command={}", p(&link));
    let stanza = format!("--stanza={STANZA}");
    let out = run(ours.plugin_command(&[archives, &stanza, &command]));
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    assert!(
        out.stdout.starts_with("WAL_ARCHIVES OK - ") && out.stdout.contains("num_unique_archives="),
        "{out}"
    );

    // A backup directory gone from each repository (backup.info still lists it).
    for tool in [&ours, &theirs] {
        let labels = tool.backups();
        let diff = labels[1]["label"].as_str().unwrap().to_string();
        let hidden = tool.hide(&tool.repo.join(format!("backup/{STANZA}/{diff}")));
        let r = tool.check(&[retention]);
        assert_eq!(r.code(), 2, "{}", r.out);
        assert_eq!(
            r.message(),
            format!("{diff} directory missing in repo1"),
            "{}",
            r.out
        );
        drop(hidden);
    }

    // A segment gone between the full and the diff: a hole no backup needs, WARNING. One
    // gone after the latest backup's start: CRITICAL.
    let gap = &between[1];
    let hidden = [
        ours.hide(&ours.stored_segment(gap)),
        theirs.hide(&theirs.stored_segment(gap)),
    ];
    let (a, b) = both(&ours, &theirs, &[archives], 1, &same);
    for r in [&a, &b] {
        assert_eq!(
            r.message(),
            format!("wrong sequence, 1 missing file(s) ({gap} / {gap})"),
            "{}",
            r.out
        );
    }
    drop(hidden);
    let hidden = [
        ours.hide(&ours.stored_segment(after)),
        theirs.hide(&theirs.stored_segment(after)),
    ];
    let (a, _) = both(&ours, &theirs, &[archives], 2, &same);
    assert_eq!(
        a.message(),
        format!("wrong sequence, 1 missing file(s) ({after} / {after})"),
        "{}",
        a.out
    );
    assert_eq!(
        (
            a.long("num_missing_archives"),
            a.long("oldest_missing_archive")
        ),
        ("1", after.as_str()),
        "{}",
        a.out
    );
    drop(hidden);
    both(&ours, &theirs, &[archives], 0, &same);

    // A timeline switch: the needed WAL jumps from timeline 1 to 2 where 00000002.history
    // (read with repo-get) says, and a backup on timeline 2 joins them.
    switch_timeline(&site, &[&ours, &theirs]);
    site.one_segment();
    backup_both(&site, &pgbackrest, "incr");
    let (a, _) = both(&ours, &theirs, &[archives], 0, &same);
    assert!(
        a.long("min_wal").starts_with("00000001") && a.long("max_wal").starts_with("00000002"),
        "{}",
        a.out
    );
    both(
        &ours,
        &theirs,
        &[retention, "--retention-full=1", "--repo=1"],
        0,
        &same,
    );

    // A page whose checksum fails: each tool's next backup records the error in backup.info
    // (`backup-error`, info's `error`), which the plugin reports.
    corrupt_a_page(&site);
    backup_both(&site, &pgbackrest, "incr");
    let (a, _) = both(&ours, &theirs, &[retention], 2, &same);
    let latest = ours.backups().last().cloned().unwrap();
    assert_eq!(
        a.message(),
        format!(
            "error(s) detected during backup {} (repo1)",
            latest["label"].as_str().unwrap()
        ),
        "{}",
        a.out
    );
}

/// Writes over the first page of a new table's file while the cluster is stopped, so its
/// checksum fails.
fn corrupt_a_page(site: &Site) {
    site.cluster.psql(
        "create table damaged(id int, v text) with (autovacuum_enabled = off); \
         insert into damaged select g, md5(g::text) from generate_series(1, 2000) g; checkpoint",
    );
    let rel = site.cluster.psql("select pg_relation_filepath('damaged')");
    site.cluster.stop();
    let file = site.cluster.data_dir().join(rel);
    let mut bytes = fs::read(&file).expect("relation file");
    bytes[4000..4022].copy_from_slice(b"corrupted by the test!");
    fs::write(&file, bytes).expect("relation file");
    site.cluster.start();
}
