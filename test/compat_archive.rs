//! pg_backrest and the real pgBackRest 2.45 on one repository (issue 14, deliverable 1):
//! each tool uses the stanza the other created; archive_command switches between them
//! mid-stream without a gap and each fetches every segment the other stored; a segment
//! pushed again by the other tool is accepted; a damaged info file is recovered from its
//! `.copy` by both.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::harness::{
    self, pgbr, run, wait_until, write_postgres, Out, PgBackrest, PgBackrestPaths, PgCluster,
    TestDir,
};

const STANZA: &str = "main";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    /// pg_backrest, this build.
    Ours,
    /// pgBackRest 2.45.
    Theirs,
}

use Tool::{Ours, Theirs};

impl Tool {
    fn tag(self) -> &'static str {
        match self {
            Ours => "pg_backrest",
            Theirs => "pgbackrest",
        }
    }
}

/// One running cluster, one repository, both tools configured for it (each with its own
/// lock and log paths).
struct Both {
    cluster: PgCluster,
    theirs: PgBackrest,
    /// pg_backrest's config.
    conf: PathBuf,
    repo: PathBuf,
    /// archive_command copies each segment it archived here, with `<name>.by` naming the tool.
    originals: PathBuf,
    dir: TestDir,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

impl Both {
    /// A running cluster archiving with `archiver`, and a stanza created by `creator`.
    fn new(creator: Tool, archiver: Tool) -> Both {
        harness::require_root();
        let dir = TestDir::new();
        let repo = dir.join("repo");
        let originals = dir.mkdir("originals");
        let cluster = PgCluster::init(&dir.join("pg"), &[("archive_mode", "on")]);
        let theirs = PgBackrest::new(
            PgBackrestPaths {
                dir: dir.path(),
                repo: &repo,
                stanza: STANZA,
                global: "",
            },
            &cluster,
        );
        dir.mkdir("bin");
        std::os::unix::fs::symlink(harness::bin(), dir.join("bin/pgbackrest")).unwrap();
        let conf = dir.join("pg_backrest.conf");
        write_postgres(
            &conf,
            &format!(
                "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\n\n[{STANZA}]\npg1-path={}\n\
                 pg1-socket-path={}\npg1-port={}\n",
                p(&repo),
                p(&dir.join("lock")),
                p(&dir.join("log")),
                p(&cluster.data_dir()),
                p(&cluster.socket_dir()),
                cluster.port()
            ),
            0o640,
        );
        let both = Both {
            cluster,
            theirs,
            conf,
            repo,
            originals,
            dir,
        };
        both.cluster
            .set_archive_command_in_file(&both.archive_command(archiver));
        both.cluster.start();
        both.run(creator, &["stanza-create"])
            .expect_ok("stanza-create");
        both
    }

    fn run(&self, tool: Tool, args: &[&str]) -> Out {
        match tool {
            Ours => {
                let config = format!("--config={}", p(&self.conf));
                let stanza = format!("--stanza={STANZA}");
                let mut all = vec![config.as_str(), stanza.as_str()];
                all.extend_from_slice(args);
                run(pgbr(&all))
            }
            Theirs => self.theirs.run(args),
        }
    }

    fn archive_command(&self, tool: Tool) -> String {
        let push = match tool {
            // Under the name pgbackrest, as a pgBackRest user installs it: pgBackRest's check
            // refuses an archive_command that does not contain "pgbackrest".
            Ours => format!(
                "{} --config={} --stanza={STANZA} archive-push %p",
                p(&self.dir.join("bin/pgbackrest")),
                p(&self.conf)
            ),
            Theirs => self.theirs.archive_command(),
        };
        format!(
            "{push} && cp %p {o}/%f.part && echo {} > {o}/%f.by && mv {o}/%f.part {o}/%f",
            tool.tag(),
            o = p(&self.originals)
        )
    }

    /// Points archive_command at `tool` and waits until the server has the new value.
    fn archive_with(&self, tool: Tool) {
        let command = self.archive_command(tool);
        self.cluster
            .set_settings(&[("archive_command", command.as_str())]);
        self.cluster.reload();
        wait_until("archive_command reloaded", Duration::from_secs(30), || {
            self.cluster.psql("show archive_command") == command
        });
    }

    /// Writes a little, switches WAL and waits until the segment is archived; returns its
    /// name and which tool archived it.
    fn segment(&self) -> (String, String) {
        self.cluster.psql(
            "create table if not exists t(x int); insert into t select generate_series(1, 100)",
        );
        let seg = self.cluster.psql("select pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&seg);
        let by = fs::read_to_string(self.originals.join(format!("{seg}.by"))).unwrap();
        (seg, by.trim().to_string())
    }

    fn wait_archived(&self, name: &str) {
        wait_until(&format!("{name} archived"), Duration::from_secs(60), || {
            self.originals.join(name).exists()
        });
        self.cluster.assert_archiving_never_failed();
    }

    /// `archive-get` by `tool` into a scratch directory; the bytes it wrote.
    fn get(&self, tool: Tool, name: &str) -> Vec<u8> {
        let dest_dir = self.dir.mkdir(format!("get-{}", tool.tag()));
        let dest = dest_dir.join(name);
        let _ = fs::remove_file(&dest);
        let out = self.run(tool, &["archive-get", name, p(&dest)]);
        assert_eq!(out.status, 0, "{tool:?} archive-get {name}:\n{out}");
        fs::read(&dest).unwrap()
    }

    fn original(&self, name: &str) -> Vec<u8> {
        fs::read(self.originals.join(name)).unwrap()
    }

    /// Files in the repository's WAL directory of `name` that store it (any suffix).
    fn stored(&self, name: &str) -> Vec<String> {
        let dir = self
            .repo
            .join(format!("archive/{STANZA}/15-1/{}", &name[..16]));
        let mut found: Vec<String> = fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| *n == name || n.starts_with(&format!("{name}-")))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    fn info_path(&self, file: &str) -> PathBuf {
        let sub = if file.starts_with("archive") {
            "archive"
        } else {
            "backup"
        };
        self.repo.join(format!("{sub}/{STANZA}/{file}"))
    }
}

impl PgCluster {
    /// archive_command in postgresql.conf, before the first start (ALTER SYSTEM needs a
    /// running server).
    fn set_archive_command_in_file(&self, command: &str) {
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "archive_command = '{}'\n",
            command.replace('\'', "''")
        ));
        fs::write(&conf, text).unwrap();
    }
}

fn sha1_hex(data: &[u8]) -> String {
    hex_string(&Sha1::digest(data))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Both tools fetch `name` back identical to what PostgreSQL archived.
fn both_fetch(both: &Both, name: &str) {
    let original = both.original(name);
    for tool in [Ours, Theirs] {
        assert!(
            both.get(tool, name) == original,
            "{tool:?} fetched {name} with other content"
        );
    }
}

#[test]
fn pg_backrest_archives_to_and_checks_a_stanza_pgbackrest_created() {
    let both = Both::new(Theirs, Ours);
    let mut segments = Vec::new();
    for _ in 0..2 {
        let (seg, by) = both.segment();
        assert_eq!(by, "pg_backrest");
        segments.push(seg);
    }
    for seg in &segments {
        let stored = both.stored(seg);
        assert_eq!(
            stored,
            vec![format!("{seg}-{}.gz", sha1_hex(&both.original(seg)))],
            "stored under pgBackRest's name"
        );
        both_fetch(&both, seg);
    }
    let out = both.run(Ours, &["check"]);
    assert_eq!(out.status, 0, "pg_backrest check:\n{out}");
    let out = both.run(Ours, &["info"]);
    assert_eq!(out.status, 0, "pg_backrest info:\n{out}");
    let last = segments.last().unwrap();
    let range = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("wal archive min/max (15): "));
    // check switched WAL once more, so the range reaches past the segments pushed here.
    let (min, max) = range.and_then(|r| r.split_once('/')).expect("wal range");
    assert!(min <= segments[0].as_str() && max >= last.as_str(), "{out}");
    // pg_backrest wrote no info file: pgBackRest still accepts the stanza as it left it.
    let out = both.run(Theirs, &["check"]);
    assert_eq!(out.status, 0, "pgbackrest check:\n{out}");
}

#[test]
fn pgbackrest_accepts_a_stanza_pg_backrest_created_byte_for_byte() {
    let both = Both::new(Ours, Ours);
    // pgBackRest creating the same stanza in a repository of its own writes the same bytes.
    let their_repo = both.dir.join("their-repo");
    let repo_arg = format!("--repo1-path={}", p(&their_repo));
    both.run(Theirs, &[&repo_arg, "stanza-create"])
        .expect_ok("pgbackrest stanza-create in its own repository");
    for file in [
        "archive.info",
        "archive.info.copy",
        "backup.info",
        "backup.info.copy",
    ] {
        let ours = fs::read_to_string(both.info_path(file)).unwrap();
        let sub = if file.starts_with("archive") {
            "archive"
        } else {
            "backup"
        };
        let theirs = fs::read_to_string(their_repo.join(format!("{sub}/{STANZA}/{file}"))).unwrap();
        assert_eq!(ours, theirs, "{file} differs from pgBackRest's");
    }

    // pgBackRest's check makes PostgreSQL archive a segment (through pg_backrest) and finds
    // it under the name pg_backrest stored it.
    let out = both.run(Theirs, &["check"]);
    assert_eq!(out.status, 0, "pgbackrest check:\n{out}");
    let (seg, by) = both.segment();
    assert_eq!(by, "pg_backrest");
    both_fetch(&both, &seg);
    let out = both.run(Theirs, &["info", "--output=json"]);
    assert_eq!(out.status, 0, "pgbackrest info:\n{out}");
    let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let stanza = &info[0];
    assert_eq!(stanza["name"], STANZA, "{out}");
    // No backup yet (2), but no error reading the stanza's files.
    assert_eq!(stanza["status"]["code"], 2, "{out}");
    assert_eq!(stanza["archive"][0]["id"], "15-1", "{out}");
    assert!(stanza["archive"][0]["max"].is_string(), "{out}");
}

#[test]
fn archive_command_switched_between_the_tools_mid_stream_leaves_no_gap() {
    let both = Both::new(Theirs, Theirs);
    let mut archived: Vec<(String, String)> = Vec::new();
    for tool in [Theirs, Ours, Theirs, Ours] {
        both.archive_with(tool);
        for _ in 0..2 {
            let (seg, by) = both.segment();
            assert_eq!(by, tool.tag(), "{seg} archived by the tool of this round");
            archived.push((seg, by));
        }
    }
    // A backup history file, archived by pg_backrest: stored as pgBackRest stores it.
    both.cluster
        .psql("select pg_backup_start('compat', true); select lsn from pg_backup_stop(false)");
    let backup_file = {
        let mut found = None;
        wait_until("the .backup file archived", Duration::from_secs(60), || {
            found = fs::read_dir(&both.originals)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.ends_with(".backup"));
            found.is_some()
        });
        found.unwrap()
    };
    assert_eq!(
        both.stored(&backup_file),
        vec![backup_file.clone()],
        "plain name, as pgBackRest stores backup history files"
    );
    let stored_path = both.repo.join(format!(
        "archive/{STANZA}/15-1/{}/{backup_file}",
        &backup_file[..16]
    ));
    assert_eq!(fs::read(&stored_path).unwrap(), both.original(&backup_file));

    // No gap: consecutive segments on timeline 1, each stored once, each fetched by both.
    let numbers: Vec<u64> = archived
        .iter()
        .map(|(s, _)| u64::from_str_radix(&s[8..], 16).unwrap())
        .collect();
    for w in numbers.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap in {archived:?}");
    }
    for (seg, _) in &archived {
        assert_eq!(
            both.stored(seg),
            vec![format!("{seg}-{}.gz", sha1_hex(&both.original(seg)))]
        );
        both_fetch(&both, seg);
    }

    // Pushing again what the other tool stored (same content) succeeds with both tools and
    // stores nothing new.
    let by_theirs = &archived[0].0;
    let by_ours = &archived[2].0;
    for (tool, name) in [
        (Ours, by_theirs),
        (Theirs, by_ours),
        (Ours, by_ours),
        (Theirs, by_theirs),
        (Theirs, &backup_file),
        (Ours, &backup_file),
    ] {
        let before = both.stored(name);
        let path = both.originals.join(name);
        let out = both.run(tool, &["archive-push", p(&path)]);
        assert_eq!(out.status, 0, "{tool:?} archive-push {name} again:\n{out}");
        assert_eq!(both.stored(name), before, "{tool:?} stored {name} again");
    }

    // Timeline history files: each tool's stored under the plain name pgBackRest uses,
    // fetched by both, and pushed again by the other.
    let scratch = both.dir.mkdir("history");
    for (tool, name, text) in [
        (
            Theirs,
            "00000002.history",
            "1\t0/9000000\tno recovery target specified\n",
        ),
        (
            Ours,
            "00000003.history",
            "1\t0/9000000\tno recovery target specified\n\n2\t0/A000000\tno recovery target specified\n",
        ),
    ] {
        let path = scratch.join(name);
        fs::write(&path, text).unwrap();
        harness::chown_postgres(&path);
        let out = both.run(tool, &["archive-push", p(&path)]);
        assert_eq!(out.status, 0, "{tool:?} archive-push {name}:\n{out}");
        let stored = both.repo.join(format!("archive/{STANZA}/15-1/{name}"));
        assert_eq!(fs::read_to_string(&stored).unwrap(), text, "{name} stored plain");
        for getter in [Ours, Theirs] {
            assert_eq!(both.get(getter, name), text.as_bytes(), "{getter:?} gets {name}");
        }
        let other = if tool == Ours { Theirs } else { Ours };
        let out = both.run(other, &["archive-push", p(&path)]);
        assert_eq!(out.status, 0, "{other:?} archive-push {name} again:\n{out}");
    }

    for tool in [Ours, Theirs] {
        let out = both.run(tool, &["check"]);
        assert_eq!(out.status, 0, "{tool:?} check:\n{out}");
    }
}

/// The stanza `creator` made, with `file` damaged (then missing): both tools use its copy.
fn damaged_info_file_is_recovered_from_its_copy(creator: Tool) {
    let both = Both::new(creator, Ours);
    let mut round = 0;
    let mut archive_and_fetch = |what: &str| {
        for tool in [Ours, Theirs] {
            both.archive_with(tool);
            let (seg, by) = both.segment();
            assert_eq!(by, tool.tag(), "{what}");
            both_fetch(&both, &seg);
            round += 1;
        }
    };
    for file in ["archive.info", "backup.info"] {
        let path = both.info_path(file);
        let text = fs::read_to_string(&path).unwrap();
        let damaged = text.replacen("db-version=\"15\"", "db-version=\"14\"", 1);
        assert_ne!(damaged, text);
        fs::write(&path, damaged).unwrap();
        archive_and_fetch(&format!("{file} damaged"));
        for tool in [Ours, Theirs] {
            let out = both.run(tool, &["check"]);
            assert_eq!(out.status, 0, "{tool:?} check, {file} damaged:\n{out}");
            let out = both.run(tool, &["info"]);
            assert_eq!(out.status, 0, "{tool:?} info, {file} damaged:\n{out}");
        }
        fs::remove_file(&path).unwrap();
        archive_and_fetch(&format!("{file} missing"));
        for tool in [Ours, Theirs] {
            let out = both.run(tool, &["check"]);
            assert_eq!(out.status, 0, "{tool:?} check, {file} missing:\n{out}");
        }
        // Back as it was, for the next file.
        fs::copy(both.info_path(&format!("{file}.copy")), &path).unwrap();
        harness::chown_postgres(&path);
    }
    assert_eq!(round, 8);
}

#[test]
fn damaged_info_files_of_a_pgbackrest_stanza_are_recovered_from_the_copy_by_both_tools() {
    damaged_info_file_is_recovered_from_its_copy(Theirs);
}

#[test]
fn damaged_info_files_of_a_pg_backrest_stanza_are_recovered_from_the_copy_by_both_tools() {
    damaged_info_file_is_recovered_from_its_copy(Ours);
}

/// Each compression type both ways: a segment archived by one tool with compress-type T
/// (set in both config files, as a DBA would) is stored under T's extension and the other
/// tool's archive-get gives back the original bytes; so pgBackRest's zstd, lz4 and bzip2
/// decoders read what pg_backrest's (parallel-capable) encoders write, and the reverse.
#[test]
fn every_compression_type_archived_by_one_tool_is_fetched_by_the_other() {
    let both = Both::new(Theirs, Ours);
    let ours_conf = fs::read_to_string(&both.conf).unwrap();
    let theirs_conf = fs::read_to_string(&both.theirs.conf).unwrap();
    for (kind, ext) in [
        ("bz2", ".bz2"),
        ("lz4", ".lz4"),
        ("zst", ".zst"),
        ("gz", ".gz"),
        ("none", ""),
    ] {
        // Appended to the stanza's section, which both tools read on their next run.
        write_postgres(
            &both.conf,
            &format!("{ours_conf}compress-type={kind}\n"),
            0o640,
        );
        write_postgres(
            &both.theirs.conf,
            &format!("{theirs_conf}compress-type={kind}\n"),
            0o640,
        );
        for (archiver, reader) in [(Ours, Theirs), (Theirs, Ours)] {
            both.archive_with(archiver);
            let (seg, by) = both.segment();
            assert_eq!(by, archiver.tag());
            let stored = both.stored(&seg);
            assert_eq!(stored.len(), 1, "{kind}: {stored:?}");
            assert!(
                stored[0].len() == seg.len() + 41 + ext.len() && stored[0].ends_with(ext),
                "{kind} by {archiver:?}: stored as {}",
                stored[0]
            );
            assert!(
                both.get(reader, &seg) == both.original(&seg),
                "{kind}: {seg} archived by {archiver:?} differs when {reader:?} fetches it"
            );
        }
    }
}
