//! `info --output=json` against the real pgBackRest 2.45: both tools run the same scenario
//! (stanza-create, full, WAL, incr) on clusters and repositories of their own, and every JSON
//! key path pgBackRest emits, with its value type, must be in ours; the status codes and
//! messages must match for a stanza with no backups, a missing stanza, a stanza without info
//! files, a damaged backup.info, a held backup lock, and a repository listing several stanzas
//! one of which is broken (reported in its own entry, exit 0). The text form's status line is
//! compared too. Then pg_backrest's info on pgBackRest's own repository (and lock path) must
//! print every value pgBackRest prints, and every line of pgBackRest's text, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{Site, STANZA};
use crate::harness::{
    self, postgres_command, run, wait_until, write_postgres, Out, PgBackrest, PgBackrestPaths,
    PgCluster, PGBACKREST,
};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Real pgBackRest on a cluster and repository of its own, with its own config file and
/// paths (never its defaults).
struct Theirs {
    cluster: PgCluster,
    tool: PgBackrest,
    repo: PathBuf,
    lock: PathBuf,
}

impl Theirs {
    fn new(site: &Site) -> Theirs {
        let dir = site.dir.mkdir("pgbackrest");
        let repo = dir.join("repo");
        let lock = dir.join("pgbackrest-lock");
        for d in [&repo, &lock] {
            harness::mkdir_postgres(d);
        }
        // The config file PgBackrest::new writes there.
        let archive_command = format!(
            "{PGBACKREST} --config={} --stanza={STANZA} archive-push %p",
            p(&dir.join("pgbackrest.conf"))
        );
        let cluster = PgCluster::init(
            &dir.join("pg"),
            &[
                ("archive_mode", "on"),
                ("archive_command", archive_command.as_str()),
            ],
        );
        let tool = PgBackrest::new(
            PgBackrestPaths {
                dir: &dir,
                repo: &repo,
                stanza: STANZA,
                global: "",
            },
            &cluster,
        );
        assert_eq!(tool.archive_command(), archive_command);
        cluster.start();
        Theirs {
            cluster,
            tool,
            repo,
            lock,
        }
    }

    /// pgbackrest with its config and no --stanza.
    fn run(&self, args: &[&str]) -> Out {
        let config = format!("--config={}", p(&self.tool.conf));
        let mut all = vec![config.as_str()];
        all.extend_from_slice(args);
        run(postgres_command(PGBACKREST, &all))
    }

    fn stanza(&self, args: &[&str]) -> Out {
        self.tool.run(args)
    }

    fn one_segment(&self) {
        self.cluster.psql(
            "create table if not exists t(x int); insert into t select generate_series(1, 1000)",
        );
        let before: u64 = self
            .cluster
            .psql("select archived_count from pg_stat_archiver")
            .parse()
            .unwrap();
        self.cluster.psql("select pg_switch_wal()");
        wait_until(
            "pgbackrest archived a segment",
            Duration::from_secs(60),
            || {
                self.cluster
                    .psql("select archived_count from pg_stat_archiver")
                    .parse::<u64>()
                    .unwrap()
                    > before
            },
        );
    }

    /// pg_backrest's info on pgBackRest's repository and lock path.
    fn ours(&self, site: &Site, args: &[&str]) -> Out {
        let conf = site.dir.join("on-theirs.conf");
        write_postgres(
            &conf,
            &format!(
                "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\n",
                p(&self.repo),
                p(&self.lock),
                p(&site.dir.join("log"))
            ),
            0o640,
        );
        let config = format!("--config={}", p(&conf));
        let mut all = vec![config.as_str(), "info"];
        all.extend_from_slice(args);
        run(harness::pgbr(&all))
    }
}

/// Asserts every value pgBackRest printed is in ours at the same place, equal (ours may have
/// more keys). The text of an unreadable stanza's error is ours, not pgBackRest's.
fn assert_same_values(what: &str, theirs: &Value, ours: &Value) {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        for st in v.as_array_mut().into_iter().flatten() {
            for repo in st["repo"].as_array_mut().into_iter().flatten() {
                if repo["status"]["code"] == 99 {
                    repo["status"]["message"] = Value::from("(error text)");
                }
            }
        }
        v
    }
    fn diff(t: &Value, o: &Value, path: String, out: &mut Vec<String>) {
        match (t, o) {
            (Value::Object(tm), Value::Object(om)) => {
                for (k, tv) in tm {
                    match om.get(k) {
                        Some(ov) => diff(tv, ov, format!("{path}.{k}"), out),
                        None => out.push(format!("{path}.{k}: missing")),
                    }
                }
            }
            (Value::Array(ta), Value::Array(oa)) if ta.len() == oa.len() => {
                for (i, (tv, ov)) in ta.iter().zip(oa).enumerate() {
                    diff(tv, ov, format!("{path}[{i}]"), out);
                }
            }
            _ if t == o => {}
            _ => out.push(format!("{path}: pgBackRest {t}, ours {o}")),
        }
    }
    let mut wrong = Vec::new();
    diff(&strip(theirs), &strip(ours), String::new(), &mut wrong);
    assert!(
        wrong.is_empty(),
        "{what}: values differ:\n{}\n--- pgBackRest ---\n{theirs:#}\n--- ours ---\n{ours:#}",
        wrong.join("\n")
    );
}

/// Asserts pgBackRest's text lines appear in ours in the same order (ours adds lines).
fn assert_text_within(what: &str, theirs: &Out, ours: &Out) {
    assert_eq!(ours.status, 0, "{what}:\n{ours}");
    let mut rest = ours.stdout.lines();
    for line in theirs.stdout.lines() {
        assert!(
            rest.any(|l| l == line),
            "{what}: pgBackRest's line {line:?} is not in ours (in order)\n--- pgBackRest ---\n{}\n--- ours ---\n{}",
            theirs.stdout,
            ours.stdout
        );
    }
}

/// Every key path of `v` (`a.b[].c`) with the set of JSON types found there.
fn shape(v: &Value) -> BTreeMap<String, BTreeSet<&'static str>> {
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
        let t = match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(a) => {
                for x in a {
                    walk(x, format!("{path}[]"), out);
                }
                "array"
            }
            Value::Object(m) => {
                for (k, x) in m {
                    walk(x, format!("{path}.{k}"), out);
                }
                "object"
            }
        };
        out.entry(path).or_default().insert(t);
    }
    let mut out = BTreeMap::new();
    walk(v, String::new(), &mut out);
    out
}

/// Asserts every key path pgBackRest's output has is in ours, with the same JSON types.
fn assert_same_shape(what: &str, theirs: &Value, ours: &Value) {
    let (t, o) = (shape(theirs), shape(ours));
    let wrong: Vec<String> = t
        .iter()
        .filter(|(path, types)| o.get(*path) != Some(*types))
        .map(|(path, types)| format!("{path}: pgBackRest {types:?}, ours {:?}", o.get(path)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: key paths differ:\n{}\n--- pgBackRest ---\n{theirs:#}\n--- ours ---\n{ours:#}",
        wrong.join("\n")
    );
}

fn json_of(what: &str, out: &Out) -> Value {
    assert_eq!(out.status, 0, "{what}:\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}\n{out}"))
}

/// The stanza's entry of an info output.
fn entry<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stanza {name} in {v:#}"))
}

/// `status.code`, `status.message` and `repo[0].status.code` of a stanza entry.
fn status(st: &Value) -> (Value, Value, Value) {
    (
        st["status"]["code"].clone(),
        st["status"]["message"].clone(),
        st["repo"][0]["status"]["code"].clone(),
    )
}

/// The `    status: ...` line of a stanza in text output.
fn status_line(out: &Out, name: &str) -> String {
    assert_eq!(out.status, 0, "{out}");
    let mut lines = out.stdout.lines();
    lines
        .find(|l| *l == format!("stanza: {name}"))
        .unwrap_or_else(|| panic!("no stanza {name}:\n{out}"));
    lines.next().unwrap_or_default().to_string()
}

/// Holds the stanza's backup lock in `lock_path` with flock(1), as a running backup does; the
/// record is pgBackRest's (which its `info` insists on reading).
fn hold_lock(lock_path: &Path) -> Child {
    let file = lock_path.join(format!("{STANZA}-backup.lock"));
    write_postgres(&file, "{\"execId\":\"1-test\",\"pid\":1}\n", 0o640);
    postgres_command("flock", &["-n", p(&file), "sleep", "300"])
        .stdin(Stdio::null())
        .spawn()
        .expect("flock")
}

#[test]
fn info_json_has_every_field_and_status_pgbackrest_emits() {
    let site = Site::local();
    let theirs = Theirs::new(&site);
    theirs
        .stanza(&["stanza-create"])
        .expect_ok("pgbackrest stanza-create");
    let ours_info = |args: &[&str]| {
        let mut all = vec!["info", "--output=json"];
        all.extend_from_slice(args);
        site.pgbr(&all)
    };
    let their_info = |args: &[&str]| {
        let mut all = vec!["info", "--output=json"];
        all.extend_from_slice(args);
        theirs.stanza(&all)
    };
    // pg_backrest reading pgBackRest's own repository must print pgBackRest's values.
    let same_repo = |what: &str, args: &[&str]| {
        let mut json = vec!["--output=json"];
        json.extend_from_slice(args);
        let (t, o) = (
            json_of(what, &theirs.run(&[&["info"], &json[..]].concat())),
            json_of(what, &theirs.ours(&site, &json)),
        );
        assert_same_values(what, &t, &o);
        if args.iter().any(|a| a.starts_with("--stanza=")) {
            assert_text_within(
                what,
                &theirs.run(&[&["info"], args].concat()),
                &theirs.ours(&site, args),
            );
        }
    };

    // No backups yet: status 2.
    let (t, o) = (
        json_of("theirs", &their_info(&[])),
        json_of("ours", &ours_info(&[])),
    );
    assert_same_shape("no backups", &t, &o);
    assert_eq!(status(&t[0]), status(&o[0]));
    assert_eq!(o[0]["status"]["code"], 2, "{o:#}");
    assert_eq!(o[0]["status"]["message"], "no valid backups");
    same_repo("no backups, one repository", &["--stanza=main"]);

    // Full, WAL, incr on each side.
    theirs
        .stanza(&["backup", "--type=full"])
        .expect_ok("pgbackrest full");
    theirs.one_segment();
    theirs
        .stanza(&["backup", "--type=incr"])
        .expect_ok("pgbackrest incr");
    let full = site.backup("full", &[]);
    site.one_segment();
    site.backup("incr", &[]);
    let (t, o) = (
        json_of("theirs", &their_info(&[])),
        json_of("ours", &ours_info(&[])),
    );
    assert_same_shape("full + incr", &t, &o);
    assert_eq!(status(&t[0]), status(&o[0]));
    assert_eq!(o[0]["status"]["code"], 0, "{o:#}");
    assert_eq!(o[0]["status"]["lock"]["backup"]["held"], false, "{o:#}");
    // What monitoring reads is there with the meaning pgBackRest gives it.
    let backups = o[0]["backup"].as_array().unwrap();
    assert_eq!(backups.len(), 2);
    assert_eq!(backups[0]["type"], "full");
    assert!(
        backups[0]["reference"].is_null(),
        "a full references nothing"
    );
    assert_eq!(backups[1]["reference"][0], full.as_str());
    assert_eq!(backups[1]["database"]["repo-key"], 1);
    assert_eq!(o[0]["archive"][0]["database"]["id"], o[0]["db"][0]["id"]);
    assert_eq!(o[0]["archive"][0]["id"], "15-1");
    assert!(
        o[0]["archive"][0]["min"].as_str() <= backups[0]["archive"]["start"].as_str(),
        "{o:#}"
    );
    assert!(backups[1]["timestamp"]["stop"].as_u64() >= backups[0]["timestamp"]["stop"].as_u64());
    same_repo("full + incr, one repository", &["--stanza=main"]);

    // --set: the manifest's details.
    let their_full = t[0]["backup"][0]["label"].as_str().unwrap().to_string();
    let (ts, os) = (
        json_of(
            "theirs --set",
            &their_info(&[&format!("--set={their_full}")]),
        ),
        json_of("ours --set", &ours_info(&[&format!("--set={full}")])),
    );
    assert_same_shape("--set", &ts, &os);
    let dbs: Vec<&str> = os[0]["backup"][0]["database-ref"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dbs, ["postgres"], "templates are left out: {os:#}");
    // A backup that is not there: status 6, exit 0, for both.
    let missing = "20200101-000000F";
    let (ts, os) = (
        json_of(
            "theirs --set missing",
            &their_info(&[&format!("--set={missing}")]),
        ),
        json_of(
            "ours --set missing",
            &ours_info(&[&format!("--set={missing}")]),
        ),
    );
    assert_eq!(status(&ts[0]), status(&os[0]));
    assert_eq!(os[0]["status"]["code"], 6, "{os:#}");
    same_repo(
        "--set missing, one repository",
        &["--stanza=main", &format!("--set={missing}")],
    );

    // A stanza that is not in the repository: status 1.
    let (t, o) = (
        json_of(
            "theirs",
            &theirs.run(&["info", "--output=json", "--stanza=nope"]),
        ),
        json_of(
            "ours",
            &run(harness::pgbr(&[
                &format!("--config={}", p(&site.conf)),
                "info",
                "--output=json",
                "--stanza=nope",
            ])),
        ),
    );
    assert_same_shape("missing stanza", &t, &o);
    assert_eq!(status(&t[0]), status(&o[0]));
    assert_eq!(o[0]["status"]["message"], "missing stanza path");
    same_repo("missing stanza, one repository", &["--stanza=nope"]);

    // More stanzas: one without info files (3) and one with a damaged backup.info (99),
    // listed with the good one by an info without --stanza, which exits 0.
    for repo in [&theirs.repo, &site.repo] {
        for d in ["backup/empty", "backup/broken", "archive/broken"] {
            harness::mkdir_postgres(&repo.join(d));
        }
        for f in ["backup.info", "backup.info.copy"] {
            write_postgres(
                &repo.join("backup/broken").join(f),
                "[backrest]\nnot an info file\n",
                0o640,
            );
        }
        std::fs::copy(
            repo.join(format!("archive/{STANZA}/archive.info")),
            repo.join("archive/broken/archive.info"),
        )
        .unwrap();
    }
    let all_ours = || {
        run(harness::pgbr(&[
            &format!("--config={}", p(&site.conf)),
            "info",
            "--output=json",
        ]))
    };
    let (t, o) = (
        json_of("theirs", &theirs.run(&["info", "--output=json"])),
        json_of("ours", &all_ours()),
    );
    assert_same_shape("three stanzas", &t, &o);
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&t), names(&o));
    assert_eq!(names(&o), ["broken", "empty", STANZA]);
    for name in ["broken", "empty", STANZA] {
        assert_eq!(status(entry(&t, name)), status(entry(&o, name)), "{name}");
    }
    let broken = entry(&o, "broken");
    assert_eq!(broken["status"]["code"], 99);
    assert_eq!(broken["status"]["message"], "other");
    let message = broken["repo"][0]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with('[') && message.contains("backup.info"),
        "names the error type and the file: {message}"
    );
    assert_eq!(
        entry(&o, "empty")["status"]["message"],
        "missing stanza data"
    );
    for name in ["broken", "empty", STANZA] {
        let text = |out: Out| status_line(&out, name);
        let their_line = text(theirs.run(&["info"]));
        let our_line = text(run(harness::pgbr(&[
            &format!("--config={}", p(&site.conf)),
            "info",
        ])));
        assert_eq!(their_line, our_line, "text status of {name}");
    }
    same_repo("three stanzas, one repository", &[]);
    same_repo(
        "a stanza without info files, one repository",
        &["--stanza=empty"],
    );

    // The backup lock held: same status and text for both.
    let mut their_holder = hold_lock(&theirs.lock);
    let mut our_holder = hold_lock(&site.dir.join("lock"));
    wait_until("both locks held", Duration::from_secs(30), || {
        json_of("theirs", &their_info(&[]))[0]["status"]["lock"]["backup"]["held"] == true
            && json_of("ours", &ours_info(&[]))[0]["status"]["lock"]["backup"]["held"] == true
    });
    let (t, o) = (
        json_of("theirs", &their_info(&[])),
        json_of("ours", &ours_info(&[])),
    );
    assert_same_shape("lock held", &t, &o);
    assert_eq!(status(&t[0]), status(&o[0]));
    let their_line = status_line(&theirs.stanza(&["info"]), STANZA);
    assert_eq!(their_line, "    status: ok (backup/expire running)");
    assert_eq!(status_line(&site.pgbr(&["info"]), STANZA), their_line);
    same_repo("lock held, one repository", &["--stanza=main"]);
    for holder in [&mut their_holder, &mut our_holder] {
        // runuser, flock and sleep: the lock goes with the last of them.
        harness::kill_tree(holder.id());
        let _ = holder.wait();
    }
    assert_eq!(
        json_of("ours", &ours_info(&[]))[0]["status"]["lock"]["backup"]["held"],
        false
    );
}
