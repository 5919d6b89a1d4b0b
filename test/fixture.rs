//! `Site`: one stanza ready for archiving tests: a running PostgreSQL 15 cluster whose
//! archive_command is the built binary, a pg_backrest config, and a repository that is either
//! a local directory or on "another host" reached through the harness's real sshd.
//!
//! archive_command also copies each segment it archived to `originals/`, so tests can compare
//! what archive-get returns with exactly what PostgreSQL handed over. The copy is made under a
//! `.part` name and renamed, so a test that sees a segment there sees all of it. The lifecycle
//! tests (expire, locks, hooks) add helpers to take a backup and to read what the repository
//! holds: labels, backup directories, stored WAL segments, a command's log.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use crate::harness::{
    self, bin, pgbr, run, write_postgres, Out, PgCluster, S3Server, Sshd, TestDir,
};

pub const STANZA: &str = "main";

pub struct Site {
    pub cluster: PgCluster,
    pub sshd: Option<Sshd>,
    /// The config the database side uses (archive_command, tests).
    pub conf: PathBuf,
    /// The repository host's own config (remote sites only).
    pub repo_conf: PathBuf,
    pub repo: PathBuf,
    pub originals: PathBuf,
    // Last: removed after the servers above are stopped.
    pub dir: TestDir,
}

#[derive(Default)]
pub struct Options<'a> {
    pub remote: bool,
    /// Extra lines for the database side's `[global]`.
    pub global: &'a str,
    /// Extra postgresql.conf settings.
    pub pg_settings: &'a [(&'a str, &'a str)],
    /// With `remote`: the repository host's config also reaches the database through
    /// pg1-host, so backups run there (the two-host layout).
    pub pg_host: bool,
    /// Leave stanza-create to the test (another tool creates the stanza).
    pub no_stanza_create: bool,
    /// archive-async=y with a spool of the site's own (`spool/`), process-max 2.
    pub async_archiving: bool,
    /// The repository is on this S3 server instead of a directory. With `remote`, the
    /// repository host's config holds the S3 options and the database host's none.
    pub s3: Option<S3Repo<'a>>,
}

/// An S3 repository for a site: `repo_options(1, bucket)` and `repo1-path=path` in its
/// `[global]`. The site's `repo` is where the server keeps those objects as files
/// (`data_dir()/bucket/path`), so the helpers that read the repository keep working.
#[derive(Clone, Copy)]
pub struct S3Repo<'a> {
    pub server: &'a S3Server,
    pub bucket: &'a str,
    /// The key prefix, starting with `/` (`/pgbr/every`).
    pub path: &'a str,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

impl Site {
    pub fn local() -> Site {
        Site::new(Options::default())
    }

    pub fn remote() -> Site {
        Site::new(Options {
            remote: true,
            ..Options::default()
        })
    }

    /// Builds the site and runs stanza-create.
    pub fn new(opts: Options<'_>) -> Site {
        harness::require_root();
        let dir = TestDir::new();
        let conf = dir.join("pg_backrest.conf");
        let repo_conf = dir.join("repo-host.conf");
        let repo = match &opts.s3 {
            None => dir.join("repo"),
            Some(s3) => s3
                .server
                .data_dir()
                .join(s3.bucket)
                .join(s3.path.trim_start_matches('/')),
        };
        let originals = dir.mkdir("originals");
        let archive_command = format!(
            "{} --config={} --stanza={STANZA} archive-push %p && cp %p {o}/%f.part && mv {o}/%f.part {o}/%f",
            p(&bin()),
            p(&conf),
            o = p(&originals)
        );
        let mut settings = vec![
            ("archive_mode", "on"),
            ("archive_command", archive_command.as_str()),
        ];
        settings.extend_from_slice(opts.pg_settings);
        let cluster = PgCluster::init(&dir.join("pg"), &settings);

        let sshd = opts.remote.then(|| Sshd::start(dir.path()));
        let mut common = format!(
            "lock-path={}\nlog-path={}\n",
            p(&dir.join("lock")),
            p(&dir.join("log"))
        );
        if opts.async_archiving {
            common.push_str(&format!(
                "archive-async=y\nspool-path={}\nprocess-max=2\n",
                p(&dir.join("spool"))
            ));
        }
        let global = match (&sshd, &opts.s3) {
            (None, Some(s3)) => format!(
                "{}repo1-path={}\n{common}",
                s3.server.repo_options(1, s3.bucket),
                s3.path
            ),
            (None, None) => format!("repo1-path={}\n{common}", p(&repo)),
            (Some(s), s3) => {
                // The repository host's own repository: a directory, or the bucket (then the
                // database host's config has no S3 option at all: only the repository host
                // talks to S3).
                let repo_lines = match s3 {
                    None => format!("repo1-path={}\n", p(&repo)),
                    Some(s3) => format!(
                        "{}repo1-path={}\n",
                        s3.server.repo_options(1, s3.bucket),
                        s3.path
                    ),
                };
                let mut repo_side = format!(
                    "[global]\n{repo_lines}lock-path={}\nlog-path={}\nssh-config={}\n",
                    p(&dir.join("repo-lock")),
                    p(&dir.join("repo-log")),
                    p(&s.ssh_config_path())
                );
                if opts.pg_host {
                    repo_side.push_str(&format!(
                        "\n[{STANZA}]\npg1-host=127.0.0.1\npg1-host-port={}\npg1-host-user=postgres\n\
                         pg1-host-config={}\npg1-host-cmd={}\npg1-path={}\n",
                        s.port(),
                        p(&conf),
                        p(&bin()),
                        p(&cluster.data_dir())
                    ));
                }
                repo_side.push_str(CONSOLE_INFO);
                write_postgres(&repo_conf, &repo_side, 0o640);
                format!(
                    "repo1-host=127.0.0.1\nrepo1-host-port={}\nrepo1-host-user=postgres\n\
                     repo1-host-config={}\nrepo1-host-cmd={}\nssh-config={}\n{common}",
                    s.port(),
                    p(&repo_conf),
                    p(&bin()),
                    p(&s.ssh_config_path())
                )
            }
        };
        let text = format!(
            "[global]\n{global}{}\n\n[{STANZA}]\npg1-path={}\npg1-socket-path={}\npg1-port={}\n{CONSOLE_INFO}",
            opts.global,
            p(&cluster.data_dir()),
            p(&cluster.socket_dir()),
            cluster.port()
        );
        write_postgres(&conf, &text, 0o640);
        cluster.start();
        let site = Site {
            cluster,
            sshd,
            conf,
            repo_conf,
            repo,
            originals,
            dir,
        };
        if !opts.no_stanza_create {
            site.pgbr(&["stanza-create"]).expect_ok("stanza-create");
        }
        site
    }

    /// Runs pg_backrest as postgres with the repository host's config (remote sites).
    pub fn pgbr_repo_host(&self, args: &[&str]) -> Out {
        let config = format!("--config={}", p(&self.repo_conf));
        let stanza = format!("--stanza={STANZA}");
        let mut all = vec![config.as_str(), stanza.as_str()];
        all.extend_from_slice(args);
        run(pgbr(&all))
    }

    /// Runs pg_backrest as postgres with this site's config and stanza.
    pub fn pgbr(&self, args: &[&str]) -> Out {
        let config = format!("--config={}", p(&self.conf));
        let stanza = format!("--stanza={STANZA}");
        let mut all = vec![config.as_str(), stanza.as_str()];
        all.extend_from_slice(args);
        run(pgbr(&all))
    }

    /// The spool of an `async_archiving` site (this stanza's part of it).
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool").join("archive").join(STANZA)
    }

    /// The directory of archive id 15-1.
    pub fn archive_id_dir(&self) -> PathBuf {
        self.repo.join("archive").join(STANZA).join("15-1")
    }

    /// Stored files of `segment` (any checksum, any compression), including temp files in
    /// its directory when `temps` is set.
    pub fn stored(&self, segment: &str) -> Vec<PathBuf> {
        let dir = self.archive_id_dir().join(&segment[..16]);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{segment}-")))
        });
        found.sort();
        found
    }

    /// Temp files left anywhere under the archive id directory.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        harness::temp_files_under(&self.archive_id_dir())
    }

    /// Drives WAL with pgbench (plus bulk inserts, so the test takes seconds, not minutes)
    /// until PostgreSQL has archived at least `segments` segments.
    pub fn archive_under_load(&self, segments: u64) {
        self.cluster.pgbench(&["-i", "-q", "-s", "10"]);
        self.cluster.psql("create table filler(id int, pad text)");
        let archived = || -> u64 {
            self.cluster
                .psql("select archived_count from pg_stat_archiver")
                .parse()
                .unwrap_or(0)
        };
        let mut rounds = 0;
        while archived() < segments {
            rounds += 1;
            assert!(
                rounds < 60,
                "no {segments} archived segments after {rounds} rounds:\n{}",
                harness::tail(&self.cluster.log(), 30)
            );
            self.cluster
                .pgbench(&["-n", "-c", "2", "-j", "2", "-T", "2"]);
            self.cluster.psql("insert into filler select g, md5(g::text) || repeat('x', 900) from generate_series(1, 20000) g");
            self.cluster.assert_archiving_never_failed();
        }
        wait_until_archived(self);
    }

    /// The first segment of `table`'s relation (path under the data directory) and its
    /// stored, compressed copy in backup `label`.
    pub fn stored_relation(&self, label: &str, table: &str) -> (String, PathBuf) {
        let relation = self
            .cluster
            .psql(&format!("select pg_relation_filepath('{table}')"));
        let stored = self
            .repo
            .join(format!("backup/{STANZA}/{label}/pg_data/{relation}.gz"));
        (relation, stored)
    }

    /// Writes a little, switches WAL and waits until PostgreSQL archived that segment.
    pub fn one_segment(&self) -> String {
        self.cluster.psql(
            "create table if not exists t(x int); insert into t select generate_series(1, 1000)",
        );
        let seg = self.cluster.psql("select pg_walfile_name(pg_switch_wal())");
        harness::wait_until(
            "segment archived",
            std::time::Duration::from_secs(60),
            || self.originals.join(&seg).exists(),
        );
        seg
    }

    /// Names of the segments archive_command completed (copied to originals/).
    pub fn original_segments(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.originals)
            .expect("originals dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 24)
            .collect();
        names.sort();
        names
    }
}

// Helpers for the lifecycle tests (expire, locks, hooks).
impl Site {
    /// Runs `backup --start-fast --type=T` with `extra` args; panics unless it exits 0, with
    /// the tail of the backup log. Returns the label.
    pub fn backup(&self, backup_type: &str, extra: &[&str]) -> String {
        let t = format!("--type={backup_type}");
        let mut args = vec!["backup", "--start-fast", t.as_str()];
        args.extend_from_slice(extra);
        let out = self.pgbr(&args);
        if !out.success() {
            panic!(
                "backup {backup_type} failed:\n{out}\n--- log (tail) ---\n{}",
                harness::tail(&self.log("backup"), 40)
            );
        }
        label_of(&out)
    }

    /// The log file of `command` for this stanza.
    pub fn log(&self, command: &str) -> String {
        std::fs::read_to_string(self.dir.join("log").join(format!("{STANZA}-{command}.log")))
            .unwrap_or_default()
    }

    /// `info --output=json` for this stanza, parsed.
    pub fn info_json(&self) -> serde_json::Value {
        let out = self.pgbr(&["info", "--output=json"]).expect_ok("info");
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("info json: {e}\n{out}"));
        v.as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == STANZA).cloned())
            .unwrap_or_else(|| panic!("stanza {STANZA} not in info:\n{out}"))
    }

    /// Labels in backup.info (through `info`), oldest first.
    pub fn backup_labels(&self) -> Vec<String> {
        self.info_json()["backup"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b["label"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A backup's WAL range (`archive.start`, `archive.stop`) from `info`.
    pub fn backup_wal_range(&self, label: &str) -> (String, String) {
        let info = self.info_json();
        let b = info["backup"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["label"] == label).cloned())
            .unwrap_or_else(|| panic!("{label} not in info"));
        let s = |k: &str| b["archive"][k].as_str().unwrap_or_default().to_string();
        (s("start"), s("stop"))
    }

    /// Entries of the stanza's backup directory (labels and info files), sorted.
    pub fn backup_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.repo.join("backup").join(STANZA))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// WAL segment names (24 hex digits) stored in archive id 15-1, sorted.
    pub fn stored_segments(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in std::fs::read_dir(self.archive_id_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some((seg, _)) = name.split_once('-') {
                    if seg.len() == 24 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                        out.push(seg.to_string());
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// The label from a successful backup's stdout (`INFO: backup <LABEL> complete: ...`, there
/// because the sites run backup with log-level-console=info, see [`CONSOLE_INFO`]).
pub fn label_of(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            let (label, _) = l.strip_prefix("INFO: backup ")?.split_once(" complete: ")?;
            (!label.contains(' ')).then(|| label.to_owned())
        })
        .unwrap_or_else(|| panic!("no 'INFO: backup <LABEL> complete:' line:\n{out}"))
}

/// As a pgBackRest user who wants to see what backup and expire did: at the default
/// log-level-console (warn) both print nothing on stdout.
pub const CONSOLE_INFO: &str =
    "\n[global:backup]\nlog-level-console=info\n\n[global:expire]\nlog-level-console=info\n";

/// The one `ERROR:` line of a failed command's stderr, wherever it stands (warnings may
/// come first); panics unless there is exactly one.
pub fn only_error_line(out: &Out) -> &str {
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "one ERROR line:\n{out}");
    errors[0]
}

/// Asserts a failed command exited `code` and printed one `ERROR: [code]:` line on stderr
/// (after any warnings, which are on stderr too).
pub fn assert_error(out: &Out, code: i32, contains: &str) {
    assert_eq!(out.status, code, "expected exit {code}:\n{out}");
    let error = only_error_line(out);
    assert!(
        error.starts_with(&format!("ERROR: [{code:03}]: ")),
        "the error line has not the code:\n{out}"
    );
    assert!(
        error.contains(contains),
        "error line lacks {contains:?}:\n{out}"
    );
}

/// Waits until the archiver has nothing left to do (no .ready files).
pub fn wait_until_archived(site: &Site) {
    let status = site.cluster.data_dir().join("pg_wal/archive_status");
    harness::wait_until(
        "archiver to catch up",
        std::time::Duration::from_secs(120),
        || {
            std::fs::read_dir(&status)
                .map(|rd| {
                    !rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                })
                .unwrap_or(false)
        },
    );
}
