//! S3 repositories (issue 16) end to end against the harness's real S3 server (s3s-fs behind
//! stunnel, so HTTPS with a certificate checked against the test CA, and the fault proxy in
//! between): every command on S3 with the data checked after restore, async archiving, multipart
//! uploads and a SIGKILL in the middle of one, the server dying mid-backup and coming back,
//! injected 500 / 503 SlowDown / 403 answers, archive-get's exit codes, the key secret kept out
//! of logs, output, objects and `ps`, both directions of compatibility with pgBackRest 2.45's
//! `repo1-type=s3` (one way virtual-hosted, `repo1-s3-uri-style=host` through
//! `repo1-storage-host`, with the requests' Host headers checked), TLS verification (no CA, a
//! CA directory, verification off), and a repository host on S3 serving a database host over
//! SSH.
//!
//! Each test has its own server, bucket, key prefix, cluster and ports. What the repository
//! holds is read the way a user would check it: ListObjectsV2 through curl ([`list_keys`]), never
//! by trusting the tool under test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::backup::Restored;
use crate::fixture::{label_of, wait_until_archived, Options, S3Repo, Site, STANZA};
use crate::harness::{
    self, kill_tree, pgbr, run, wait_until, write_postgres, Fault, FaultKind, Out, PgBackrest,
    PgBackrestPaths, S3Server, TestDir,
};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A site whose repository is on its own S3 server. Fields drop in order: the cluster stops
/// before the server, and the server before its directory goes.
struct S3Site {
    site: Site,
    s3: S3Server,
    bucket: String,
    /// repo1-path, with its leading `/`.
    path: String,
    _dir: TestDir,
}

impl std::ops::Deref for S3Site {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

impl S3Site {
    /// Starts a server, creates `bucket`, and builds a site on it with `repo1-path=path`
    /// (stanza-create included unless `opts` says otherwise).
    fn new(bucket: &str, path: &str, opts: Options<'_>) -> S3Site {
        harness::require_root();
        let dir = TestDir::new();
        let s3 = S3Server::start(dir.path());
        s3.create_bucket(bucket);
        let site = Site::new(Options {
            s3: Some(S3Repo {
                server: &s3,
                bucket,
                path,
            }),
            ..opts
        });
        S3Site {
            site,
            s3,
            bucket: bucket.to_owned(),
            path: path.to_owned(),
            _dir: dir,
        }
    }

    /// As [`S3Site::new`], addressing the bucket virtual-hosted (`repo1-s3-uri-style=host`,
    /// `repo1-storage-host=127.0.0.1`: [`S3Server::repo_options_host_style`]); stanza-create
    /// runs with those settings, its requests the first in the proxy's log.
    fn new_host_style(bucket: &str, path: &str, opts: Options<'_>) -> S3Site {
        let site = S3Site::new(
            bucket,
            path,
            Options {
                no_stanza_create: true,
                ..opts
            },
        );
        let conf = fs::read_to_string(&site.conf).expect("site config");
        let path_style = site.s3.repo_options(1, bucket);
        assert!(conf.contains(&path_style), "{conf}");
        let host_style = site.s3.repo_options_host_style(1, bucket);
        write_postgres(&site.conf, &conf.replace(&path_style, &host_style), 0o640);
        site.s3.faults().clear_requests();
        site.pgbr(&["stanza-create"])
            .expect_ok("stanza-create with repo1-s3-uri-style=host");
        site
    }

    /// The key prefix of the repository inside the bucket, with a trailing `/`.
    fn prefix(&self) -> String {
        format!("{}/", self.path.trim_matches('/'))
    }

    /// Keys (and sizes) under `rel` of the repository (`backup/main/`), listed by the server.
    fn keys(&self, rel: &str) -> Vec<(String, u64)> {
        list_keys(&self.s3, &self.bucket, &format!("{}{rel}", self.prefix()))
    }

    /// Key names under `rel`, relative to the repository.
    fn key_names(&self, rel: &str) -> Vec<String> {
        let prefix = self.prefix();
        self.keys(rel)
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_owned())
            .collect()
    }

    /// WAL segment names stored in archive id 15-1, as listed by the server.
    fn stored_segments_s3(&self) -> Vec<String> {
        let mut segs: Vec<String> = self
            .key_names(&format!("archive/{STANZA}/15-1/"))
            .iter()
            .filter_map(|k| {
                let name = k.rsplit('/').next()?;
                let (seg, _) = name.split_once('-')?;
                (seg.len() == 24).then(|| seg.to_owned())
            })
            .collect();
        segs.sort();
        segs.dedup();
        segs
    }

    /// Every log file of the site, concatenated (for panic messages and secret checks).
    fn all_logs(&self) -> String {
        all_files_text(&self.dir.join("log"))
    }

    /// `pg_backrest --config=conf --stanza=main args` with `env` set.
    fn pgbr_with(&self, conf: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
        let config = format!("--config={}", p(conf));
        let stanza = format!("--stanza={STANZA}");
        let mut all = vec![config.as_str(), stanza.as_str()];
        all.extend_from_slice(args);
        let mut cmd = pgbr(&all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// Starts `pg_backrest args` with the site's config in the background (output piped).
    fn spawn(&self, args: &[&str]) -> Child {
        let config = format!("--config={}", p(&self.conf));
        let stanza = format!("--stanza={STANZA}");
        let mut all = vec![config.as_str(), stanza.as_str()];
        all.extend_from_slice(args);
        pgbr(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning pg_backrest")
    }

    /// A copy of the site's config with `edit` applied to its text, written as `name`.
    fn config_variant(&self, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
        let text = fs::read_to_string(&self.conf).expect("site config");
        let path = self.dir.join(name);
        write_postgres(&path, &edit(&text), 0o640);
        path
    }

    /// Labels of the backups `info` lists, oldest first.
    fn labels(&self) -> Vec<String> {
        self.backup_labels()
    }
}

/// Waits for a spawned command and captures what it printed.
fn finish(child: Child) -> Out {
    let out = child.wait_with_output().expect("waiting for pg_backrest");
    use std::os::unix::process::ExitStatusExt;
    Out {
        status: out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Percent-encodes a query value the way SigV4 canonicalizes it (curl signs it as written).
fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text of every `<tag>...</tag>` in `xml`.
fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

/// Every key (and its size) under `prefix` in `bucket`, through ListObjectsV2 (paged with
/// start-after), sorted.
fn list_keys(s3: &S3Server, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
    let mut keys: Vec<(String, u64)> = Vec::new();
    loop {
        // Query parameters in SigV4's canonical (sorted) order.
        let mut query = "list-type=2".to_owned();
        query.push_str(&format!("&prefix={}", query_encode(prefix)));
        if let Some((last, _)) = keys.last() {
            query.push_str(&format!("&start-after={}", query_encode(last)));
        }
        let url = s3.url(&format!("/{bucket}?{query}"));
        let (status, body, out) = harness::curl_status(s3, &[&url]);
        assert_eq!(status, 200, "ListObjectsV2 {url}:\n{out}\n{body}");
        for content in xml_values(&body, "Contents") {
            let key = xml_values(content, "Key")[0]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">");
            let size = xml_values(content, "Size")[0].parse().unwrap_or(0);
            keys.push((key, size));
        }
        if xml_values(&body, "IsTruncated").first() != Some(&"true") {
            break;
        }
    }
    keys.sort();
    keys
}

/// Every regular file under `dir`, concatenated lossily (logs, objects).
fn all_files_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                out.push_str(&format!("\n=== {} ===\n", path.display()));
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                hits.push(path);
            }
        }
    }
    hits
}

/// A table whose row count tells which step a backup or restore holds.
fn add_rows(site: &Site, n: u32) -> String {
    site.cluster.psql(&format!(
        "create table if not exists rows(id serial, pad text); \
         insert into rows(pad) select md5(g::text) from generate_series(1, {n}) g"
    ));
    site.cluster
        .psql("select count(*) || '/' || sum(length(pad)) from rows")
}

const ROWS: &str = "select count(*) || '/' || sum(length(pad)) from rows";

/// Restores with `conf` (pg_backrest), recovery stopping where the backup became consistent
/// (`set`: a label, or latest), into `<site dir>/<name>`, and starts the copy.
fn restore_with(
    site: &S3Site,
    conf: &Path,
    name: &str,
    set: Option<&str>,
    extra: &[&str],
) -> Restored {
    let r = Restored::at(site, name);
    let pg1 = format!("--pg1-path={}", p(&r.data));
    let mut args = vec![
        "restore",
        pg1.as_str(),
        "--type=immediate",
        "--target-action=promote",
    ];
    let set_arg = set.map(|s| format!("--set={s}"));
    if let Some(s) = &set_arg {
        args.push(s);
    }
    args.extend_from_slice(extra);
    let out = site.pgbr_with(conf, &[], &args);
    assert!(
        out.success(),
        "restore {set:?} from S3 failed:\n{out}\n--- restore log ---\n{}",
        harness::tail(&site.log("restore"), 40)
    );
    r.start_and_wait_promoted();
    r
}

/// Asserts a failed command's ERROR line (wherever it stands on stderr) contains every one of
/// `parts`; returns the line.
fn error_line_with<'a>(out: &'a Out, parts: &[&str]) -> &'a str {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("ERROR:"))
        .unwrap_or_else(|| panic!("no ERROR line:\n{out}"));
    for part in parts {
        assert!(line.contains(part), "ERROR line lacks {part:?}:\n{out}");
    }
    line
}

/// Processes whose command line names `conf` (the command, its workers, runuser).
fn processes_of(conf: &Path) -> Vec<(u32, String)> {
    let conf = conf.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&conf) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Waits until the fault proxy has seen a request matching `pred`; on timeout, panics with
/// the last requests it saw.
fn wait_for_request(s3: &S3Server, what: &str, pred: impl Fn(&str, &str) -> bool) {
    let start = Instant::now();
    while !s3
        .faults()
        .requests()
        .iter()
        .any(|r| pred(&r.method, &r.target))
    {
        if start.elapsed() > Duration::from_secs(120) {
            let seen = s3.faults().requests();
            // Multipart requests (uploads, uploadId) first, then the last few.
            let multipart = seen.iter().filter(|r| r.target.contains("upload"));
            let last: Vec<String> = multipart
                .take(20)
                .chain(&seen[seen.len().saturating_sub(10)..])
                .map(|r| format!("{} {} {:?}", r.method, r.target, r.fault))
                .collect();
            panic!(
                "no {what} after 120 s; {} requests seen; multipart ones and the last:\n{}",
                seen.len(),
                last.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that every request the proxy logged since its last `clear_requests` was
/// virtual-hosted for the site's bucket: Host `bucket.localhost` (with `:PORT` from
/// pg_backrest, without from pgBackRest 2.45) and a path that is the key alone
/// (`/<repo1-path>/...`, or `/` for a listing), never `/bucket/...`. Returns the distinct
/// Host headers seen, sorted.
fn assert_virtual_hosted(site: &S3Site) -> Vec<String> {
    let requests = site.s3.faults().requests();
    assert!(!requests.is_empty(), "no request reached the server");
    let with_port = format!("{}.localhost:{}", site.bucket, site.s3.port());
    let without = format!("{}.localhost", site.bucket);
    let key_prefix = format!("/{}", site.prefix());
    let mut hosts: Vec<String> = Vec::new();
    for r in &requests {
        let path = r.target.split('?').next().unwrap_or_default();
        assert!(
            (r.host == with_port || r.host == without)
                && (path == "/" || path.starts_with(&key_prefix)),
            "a request that is not virtual-hosted for {}: {} {} (Host: {})",
            site.bucket,
            r.method,
            r.target,
            r.host
        );
        if !hosts.contains(&r.host) {
            hosts.push(r.host.clone());
        }
    }
    hosts.sort();
    hosts
}

/// The keys under `backup/main/` that belong to no backup `info` lists (nor are the info
/// files or the manifest history): what an interrupted backup would have left behind.
fn stray_backup_keys(site: &S3Site) -> Vec<String> {
    let labels = site.labels();
    site.key_names(&format!("backup/{STANZA}/"))
        .into_iter()
        .filter(|k| {
            let rest = &k[format!("backup/{STANZA}/").len()..];
            !(rest == "backup.info"
                || rest == "backup.info.copy"
                || rest.starts_with("backup.history/")
                || labels.iter().any(|l| rest.starts_with(&format!("{l}/"))))
        })
        .collect()
}

/// (1) Every command on S3: stanza-create (by the fixture), check, archive-push through
/// archive_command and archive-get through restore_command, backup full, diff and incr at
/// process-max 2, info text and JSON, verify, restore of the latest backup and a delta restore
/// over the changed copy (the rows each must hold), repo-ls and repo-get, expire with
/// retention-full=1 (the older full, its diff and incr and its WAL really gone from the
/// bucket), drill, stanza-upgrade as a no-op and stanza-delete (nothing left under the prefix).
#[test]
fn s3_every_command_works_on_an_s3_repository() {
    let site = S3Site::new(
        "every",
        "/pgbr/every",
        Options {
            global: "process-max=2\n",
            ..Options::default()
        },
    );
    site.pgbr(&["check"]).expect_ok("check on S3");
    assert!(
        !site.stored_segments_s3().is_empty(),
        "check's segment is in the bucket"
    );

    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    add_rows(&site, 1000);
    let full = site.backup("full", &[]);
    let diff_rows = add_rows(&site, 500);
    let diff = site.backup("diff", &[]);
    let incr_rows = add_rows(&site, 250);
    let incr = site.backup("incr", &[]);
    assert!(
        diff.starts_with(&format!("{full}_")) && diff.ends_with('D'),
        "{diff}"
    );
    assert!(
        incr.starts_with(&format!("{full}_")) && incr.ends_with('I'),
        "{incr}"
    );
    assert_eq!(
        site.labels(),
        vec![full.clone(), diff.clone(), incr.clone()]
    );
    for label in [&full, &diff, &incr] {
        let manifest = format!("backup/{STANZA}/{label}/backup.manifest");
        assert!(
            site.key_names(&format!("backup/{STANZA}/{label}/"))
                .contains(&manifest),
            "{manifest} in the bucket"
        );
    }

    // WAL archive_command pushed comes back byte for byte.
    let seg = site.one_segment();
    assert!(
        site.stored_segments_s3().contains(&seg),
        "{seg} in the bucket"
    );
    let fetched = site.dir.join("fetched");
    site.pgbr(&["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get");
    assert!(
        fs::read(&fetched).unwrap() == fs::read(site.originals.join(&seg)).unwrap(),
        "archive-get of {seg} returns what PostgreSQL archived"
    );

    // info: text and JSON.
    let info = site.pgbr(&["info"]).expect_ok("info");
    for label in [&full, &diff, &incr] {
        assert!(
            info.stdout.contains(label.as_str()),
            "info lists {label}:\n{info}"
        );
    }
    assert!(info.stdout.contains("status: ok"), "{info}");
    let json = site.info_json();
    let types: Vec<&str> = json["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["full", "diff", "incr"], "{json}");
    assert_eq!(json["status"]["code"], 0, "{json}");

    site.pgbr(&["verify"]).expect_ok("verify on S3");

    // repo-ls and repo-get.
    let ls = site
        .pgbr(&["repo-ls", &format!("backup/{STANZA}")])
        .expect_ok("repo-ls");
    for name in [
        full.as_str(),
        diff.as_str(),
        incr.as_str(),
        "backup.info",
        "backup.info.copy",
    ] {
        assert!(
            ls.stdout.lines().any(|l| l == name),
            "repo-ls lists {name}:\n{ls}"
        );
    }
    let ls = site
        .pgbr(&["repo-ls", "--recurse", &format!("archive/{STANZA}")])
        .expect_ok("repo-ls --recurse");
    assert!(ls.stdout.lines().any(|l| l == "archive.info"), "{ls}");
    assert!(
        ls.stdout.contains(&format!("15-1/{}/{seg}-", &seg[..16])),
        "{ls}"
    );
    let got = site
        .pgbr(&[
            "repo-get",
            &format!("backup/{STANZA}/{incr}/backup.manifest"),
        ])
        .expect_ok("repo-get");
    assert!(
        got.stdout.starts_with("[backrest]")
            && got.stdout.contains(&format!("backup-label=\"{incr}\"")),
        "repo-get of the manifest:\n{}",
        harness::tail(&got.stdout, 5)
    );

    // Restore of the latest (the incr; its WAL comes through restore_command = archive-get).
    let r = restore_with(&site, &site.conf, "latest", None, &[]);
    assert_eq!(r.psql(ROWS), incr_rows, "the restored incr holds its rows");
    // Change the copy, then a delta restore brings the backup back.
    r.psql("insert into rows(pad) select 'changed' from generate_series(1, 77); checkpoint");
    r.stop();
    let out = site.pgbr(&[
        "restore",
        "--delta",
        &format!("--pg1-path={}", p(&r.data)),
        &format!("--set={diff}"),
        "--type=immediate",
        "--target-action=promote",
    ]);
    assert!(
        out.success(),
        "delta restore from S3:\n{out}\n{}",
        harness::tail(&site.log("restore"), 30)
    );
    r.start_and_wait_promoted();
    assert_eq!(
        r.psql(ROWS),
        diff_rows,
        "the delta-restored diff holds its rows"
    );
    r.stop();
    drop(r);

    // expire: a new full, then retention-full=1 removes the old full, its diff and incr and
    // the WAL before the new full.
    add_rows(&site, 10);
    let full2 = site.backup("full", &[]);
    let (full2_start, _) = site.backup_wal_range(&full2);
    let old_segments: Vec<String> = site
        .stored_segments_s3()
        .into_iter()
        .filter(|s| s.as_str() < full2_start.as_str())
        .collect();
    assert!(!old_segments.is_empty(), "WAL older than {full2}");
    site.pgbr(&["expire", "--repo1-retention-full=1"])
        .expect_ok("expire");
    assert_eq!(site.labels(), vec![full2.clone()]);
    for label in [&full, &diff, &incr] {
        let left = site.key_names(&format!("backup/{STANZA}/{label}"));
        assert!(left.is_empty(), "objects of expired {label} left: {left:?}");
    }
    let kept = site.stored_segments_s3();
    for s in &old_segments {
        assert!(
            !kept.contains(s),
            "expired WAL {s} left in the bucket: {kept:?}"
        );
    }
    assert!(kept.contains(&full2_start), "{full2}'s WAL kept: {kept:?}");
    assert!(
        stray_backup_keys(&site).is_empty(),
        "{:?}",
        stray_backup_keys(&site)
    );

    // drill restores the latest backup somewhere else, recovers, checks and cleans up.
    let drill_dir = site.dir.mkdir("drill");
    let out = site.pgbr(&["drill", &format!("--drill-path={}", p(&drill_dir))]);
    assert!(
        out.success(),
        "drill on S3:\n{out}\n{}",
        harness::tail(&site.log("drill"), 30)
    );

    // stanza-upgrade with nothing to upgrade; stanza-delete removes everything.
    let out = site
        .pgbr(&["stanza-upgrade", "--log-level-console=info"])
        .expect_ok("stanza-upgrade");
    assert!(out.stdout.contains("is already up to date"), "{out}");
    site.pgbr(&["stop"]).expect_ok("stop");
    site.pgbr(&["stanza-delete", "--force"])
        .expect_ok("stanza-delete");
    for rel in [format!("archive/{STANZA}/"), format!("backup/{STANZA}/")] {
        let left = site.key_names(&rel);
        assert!(
            left.is_empty(),
            "stanza-delete left {} objects under {rel}: {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
}

/// (2) Archive-push and archive-get asynchronous on S3: PostgreSQL archives a burst of
/// segments through the async push (every one lands in the bucket, none fails), and a restored
/// copy replays WAL written after the backup through the async get.
#[test]
fn s3_async_archive_push_and_get() {
    let site = S3Site::new(
        "async",
        "/pgbr/async",
        Options {
            async_archiving: true,
            ..Options::default()
        },
    );
    add_rows(&site, 100);
    let label = site.backup("full", &[]);
    for _ in 0..6 {
        add_rows(&site, 2000);
        site.cluster.psql("select pg_switch_wal()");
    }
    let rows = add_rows(&site, 1);
    let last = site.cluster.psql("select pg_walfile_name(pg_switch_wal())");
    wait_until("the burst archived", Duration::from_secs(120), || {
        site.originals.join(&last).exists()
    });
    wait_until_archived(&site);
    site.cluster.assert_archiving_never_failed();
    let stored = site.stored_segments_s3();
    for seg in site.original_segments() {
        assert!(stored.contains(&seg), "{seg} not in the bucket: {stored:?}");
    }
    assert!(
        site.log("archive-push-async").contains("command begin"),
        "the async push worker ran"
    );

    // Default recovery: to the end of the archive, through the async archive-get.
    let r = Restored::restore(&site, "replayed", Some(&label), &[]);
    r.start_and_wait_promoted();
    assert_eq!(
        r.psql(ROWS),
        rows,
        "the copy replayed every archived segment"
    );
    let get_log = site.log("archive-get-async");
    assert!(
        get_log.contains("command begin"),
        "the async get worker ran:\n{}",
        harness::tail(&site.all_logs(), 40)
    );
    r.stop();
}

/// (3) Multipart: with upload-chunk-size at 64KiB (pgBackRest's minimum; the driver sends
/// parts of S3's minimum, 5 MiB) a table of 20 MB of random bytes goes up in parts and
/// restores byte-identical. A backup killed (SIGKILL, with its
/// workers) in the middle of such an upload leaves no object of that upload and no backup in
/// `info`; the next backup completes (resuming or not), verify is clean, and nothing of the
/// killed run is left outside a listed backup.
#[test]
fn s3_multipart_upload_restores_and_survives_sigkill() {
    let site = S3Site::new(
        "multipart",
        "/pgbr/mp",
        Options {
            global: "repo1-storage-upload-chunk-size=64KiB\nprocess-max=2\n",
            ..Options::default()
        },
    );
    // Random bytes: the gz object stays over 10 MiB, several parts even at 5 MiB, the
    // smallest part S3 accepts (the driver raises the 64KiB setting to that).
    site.cluster.psql(
        "create table big as select g as id, decode(md5(g::text) || md5((g * 3)::text) \
         || md5((g * 5)::text) || md5((g * 7)::text), 'hex') as pad \
         from generate_series(1, 200000) g",
    );
    site.cluster.psql("vacuum freeze big");
    site.cluster.psql("checkpoint");
    let relation = site.cluster.psql("select pg_relation_filepath('big')");
    let size: u64 = site
        .cluster
        .psql("select pg_relation_size('big')")
        .parse()
        .unwrap();
    assert!(size > 16 * 1024 * 1024, "big is {size} bytes");
    let big_sum = site
        .cluster
        .psql("select md5(string_agg(pad, ''::bytea order by id)) from big");

    // A first backup, killed while it uploads the parts of `big` slowly. Only that file is
    // slowed: WAL segments are multipart uploads too, and the archiver must not stall.
    let big_object = format!("/pg_data/{relation}.");
    site.s3.faults().inject(
        Fault::new(FaultKind::Delay(Duration::from_millis(1500)), 100_000)
            .method("PUT")
            .target_contains(&big_object),
    );
    let is_big_part =
        |m: &str, t: &str| m == "PUT" && t.contains(&big_object) && t.contains("uploadId=");
    let child = site.spawn(&["backup", "--type=full", "--start-fast"]);
    wait_for_request(&site.s3, "an UploadPart request of big", is_big_part);
    let pid = child.id();
    let left = kill_tree(pid);
    assert!(left.is_empty(), "processes survived SIGKILL: {left:?}");
    let killed = finish(child);
    assert!(!killed.success(), "the killed backup: {killed}");
    site.s3.faults().clear();
    let in_flight: Vec<String> = site
        .s3
        .faults()
        .requests()
        .iter()
        .filter(|r| is_big_part(&r.method, &r.target))
        .map(|r| {
            let path = r.target.split('?').next().unwrap();
            path[format!("/{}/", site.bucket).len()..].to_owned()
        })
        .collect();
    assert!(!in_flight.is_empty());
    // Let the proxy's delayed parts drain into the server before looking.
    std::thread::sleep(Duration::from_secs(2));
    let listed: Vec<String> = list_keys(&site.s3, &site.bucket, "")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in &in_flight {
        assert!(
            !listed.contains(key),
            "{key}, whose multipart upload was killed, is visible"
        );
    }
    assert!(
        site.labels().is_empty(),
        "a killed backup is listed by info"
    );

    // The next backup completes; verify is clean; nothing of the killed run is stray.
    site.s3.faults().clear_requests();
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert!(
        out.success(),
        "backup after the killed one:\n{out}\n{}",
        harness::tail(&site.log("backup"), 40)
    );
    let label = label_of(&out);
    assert!(
        site.s3
            .faults()
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.target.contains("uploadId=")),
        "no CompleteMultipartUpload: was multipart used at 64KiB chunks?"
    );
    site.pgbr(&["verify"])
        .expect_ok("verify after the killed backup");
    assert_eq!(site.labels(), vec![label.clone()]);
    let stray = stray_backup_keys(&site);
    assert!(stray.is_empty(), "objects outside any backup: {stray:?}");

    // Byte-identical: the restored relation is the source's, before the copy starts.
    let r = Restored::at(&site, "restored");
    site.pgbr(&[
        "restore",
        &format!("--pg1-path={}", p(&r.data)),
        "--type=immediate",
        "--target-action=promote",
    ])
    .expect_ok("restore");
    let restored = fs::read(r.data.join(&relation)).unwrap();
    let source = fs::read(site.cluster.data_dir().join(&relation)).unwrap();
    assert_eq!(restored.len() as u64, size);
    assert!(
        restored == source,
        "the restored {relation} differs from the source"
    );
    r.start_and_wait_promoted();
    assert_eq!(
        r.psql("select md5(string_agg(pad, ''::bytea order by id)) from big"),
        big_sum
    );
    r.stop();
}

/// A site for the failure tests: bucket `bucket`, repo1-path `/pgbr/<bucket>`,
/// io-timeout=`io_timeout` and the `global` lines.
fn failure_site(bucket: &str, io_timeout: u64, global: &str) -> S3Site {
    let global = format!("io-timeout={io_timeout}\n{global}");
    let site = S3Site::new(
        bucket,
        &format!("/pgbr/{bucket}"),
        Options {
            global: &global,
            ..Options::default()
        },
    );
    site
}

/// Stops the server (SIGKILL), then runs `command` (or waits for one started before): it
/// must fail with neither 0 nor 1 (archive-get's "missing"), with an ERROR naming the
/// bucket, within `bound` of the stop. Starts the server again and returns the output.
fn fails_fast_while_stopped(
    site: &mut S3Site,
    what: &str,
    bound: Duration,
    command: impl FnOnce(&S3Site) -> Out,
) -> Out {
    site.s3.stop();
    let stopped = Instant::now();
    let out = command(site);
    let took = stopped.elapsed();
    assert!(
        out.status != 0 && out.status != 1,
        "{what} with the server stopped:\n{out}"
    );
    error_line_with(&out, &[&site.bucket]);
    eprintln!("{what} failed {took:?} after the server stopped");
    assert!(
        took <= bound,
        "{what} took {took:?} to fail after the server stopped (bound {bound:?}):\n{out}"
    );
    site.s3.start_again();
    out
}

/// (4) The server dies mid-backup: the backup fails within about io-timeout with an ERROR
/// naming the bucket; with the server back, the next backup resumes or completes, and its
/// restore holds the rows.
#[test]
fn s3_server_stopped_mid_backup_then_next_backup_completes() {
    let io_timeout = 3;
    let mut site = failure_site("stopped", io_timeout, "process-max=2\n");
    let rows = add_rows(&site, 1000);
    site.s3.faults().inject(
        Fault::new(FaultKind::Delay(Duration::from_millis(300)), 100_000)
            .method("PUT")
            .target_contains("/pg_data/"),
    );
    let child = site.spawn(&["backup", "--type=full", "--start-fast"]);
    wait_until(
        "a few data files uploaded",
        Duration::from_secs(120),
        || {
            site.s3
                .faults()
                .requests()
                .iter()
                .filter(|r| r.target.contains("/pg_data/"))
                .count()
                >= 6
        },
    );
    // The backup has workers and stops PostgreSQL's backup: a looser bound than one command.
    fails_fast_while_stopped(
        &mut site,
        "backup",
        Duration::from_secs(4 * io_timeout + 3),
        |_| finish(child),
    );
    site.s3.faults().clear();
    assert!(site.labels().is_empty(), "the failed backup is listed");
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert!(
        out.success(),
        "backup after the server came back:\n{out}\n{}",
        harness::tail(&site.log("backup"), 40)
    );
    let label = label_of(&out);
    let resumed = site.log("backup").to_lowercase().contains("resum");
    eprintln!("second backup {label}: resumed = {resumed}");
    assert!(
        stray_backup_keys(&site).is_empty(),
        "{:?}",
        stray_backup_keys(&site)
    );
    site.pgbr(&["verify"]).expect_ok("verify");
    let r = restore_with(&site, &site.conf, "after-stop", Some(&label), &[]);
    assert_eq!(r.psql(ROWS), rows);
    r.stop();
}

/// (5) Faults: 500s and 503 SlowDown are retried (info, backup, archive-push, archive-get
/// succeed); a 403 fails the backup with an ERROR naming bucket, key and 403 and changes
/// nothing under backup/; archive-get exits with an error code other than 1 (which means
/// "missing") against a 403, a stopped server or a wrong key secret, and 1 for a really
/// missing segment.
#[test]
fn s3_faults_are_retried_or_reported() {
    let io_timeout = 3;
    let mut site = failure_site("faults", io_timeout, "process-max=2\n");
    let first = site.backup("full", &[]);
    let seg = site.one_segment();
    wait_until_archived(&site);
    let faults = site.s3.faults();

    // 500 twice on whatever comes next.
    faults.fail_next(FaultKind::InternalError, 2);
    site.pgbr(&["info"]).expect_ok("info after two 500s");
    assert_eq!(faults.pending(), 0, "info made no two requests?");

    // 503 SlowDown on the backup's uploads, 500 + 503 on archive-get, 503 on archive-push.
    faults.inject(
        Fault::new(FaultKind::SlowDown, 2)
            .method("PUT")
            .target_contains("/backup/"),
    );
    let second = site.backup("incr", &[]);
    assert_eq!(faults.pending(), 0);
    faults.inject(
        Fault::new(FaultKind::InternalError, 1)
            .method("GET")
            .target_contains("/archive/"),
    );
    faults.inject(
        Fault::new(FaultKind::SlowDown, 1)
            .method("GET")
            .target_contains("/archive/"),
    );
    let fetched = site.dir.join("fetched");
    site.pgbr(&["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get after 500, 503");
    assert_eq!(faults.pending(), 0);
    assert!(fs::read(&fetched).unwrap() == fs::read(site.originals.join(&seg)).unwrap());
    faults.inject(
        Fault::new(FaultKind::SlowDown, 2)
            .method("PUT")
            .target_contains("/archive/"),
    );
    site.one_segment();
    assert_eq!(faults.pending(), 0);
    site.cluster.assert_archiving_never_failed();
    assert_eq!(site.labels(), vec![first.clone(), second.clone()]);

    // 403 on the backup's uploads: one clear error, backup/ unchanged.
    let before = site.keys("backup/");
    faults.inject(
        Fault::new(FaultKind::AccessDenied, 100_000)
            .method("PUT")
            .target_contains("/backup/"),
    );
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    faults.clear();
    assert!(
        out.status != 0 && out.status != 1,
        "backup against 403:\n{out}"
    );
    error_line_with(
        &out,
        &[
            &site.bucket,
            "403",
            &format!("{}backup/{STANZA}/", site.prefix()),
        ],
    );
    assert_eq!(
        site.keys("backup/"),
        before,
        "a refused backup changed backup/"
    );
    assert_eq!(site.labels(), vec![first.clone(), second.clone()]);

    // archive-get: 403 is an error, never "missing".
    faults.inject(Fault::new(FaultKind::AccessDenied, 100_000).method("GET"));
    let out = site.pgbr(&["archive-get", &seg, p(&site.dir.join("f403"))]);
    faults.clear();
    assert!(
        out.status != 0 && out.status != 1,
        "archive-get against 403:\n{out}"
    );
    error_line_with(&out, &["403"]);
    assert!(!site.dir.join("f403").exists());

    // A really missing segment: 1.
    let out = site.pgbr(&[
        "archive-get",
        "00000001000000AA000000FE",
        p(&site.dir.join("fmiss")),
    ]);
    assert_eq!(out.status, 1, "archive-get of a missing segment:\n{out}");

    // A wrong key secret (from the environment, which outranks the file): an error, not 1.
    let wrong = "0123456789ABCDEF0123456789ABCDEF01234567";
    let out = site.pgbr_with(
        &site.conf,
        &[("PGBACKREST_REPO1_S3_KEY_SECRET", wrong)],
        &["archive-get", &seg, p(&site.dir.join("fwrong"))],
    );
    assert!(
        out.status != 0 && out.status != 1,
        "archive-get with a wrong secret:\n{out}"
    );
    error_line_with(&out, &[]);
    assert!(
        !out.stderr.contains(wrong) && !out.stdout.contains(wrong),
        "the secret is echoed:\n{out}"
    );

    // Server stopped: an error within about io-timeout, not 1.
    fails_fast_while_stopped(
        &mut site,
        "archive-get",
        Duration::from_secs(2 * io_timeout + 2),
        |site| site.pgbr(&["archive-get", &seg, p(&site.dir.join("fdown"))]),
    );
    site.pgbr(&["archive-get", &seg, p(&site.dir.join("fback"))])
        .expect_ok("archive-get after restart");
}

/// (6) The key and its secret, from the config file and from PGBACKREST_REPO1_S3_KEY_SECRET,
/// never appear in the log files (log-level-file=debug), in stdout or stderr, in any object
/// of the bucket (manifests included), nor in `ps` while a backup and its workers run.
#[test]
fn s3_secrets_stay_out_of_logs_output_objects_and_ps() {
    let site = S3Site::new(
        "secrets",
        "/pgbr/secrets",
        Options {
            global: "log-level-file=debug\nprocess-max=2\n",
            ..Options::default()
        },
    );
    let secret = site.s3.secret().to_owned();
    let key = site.s3.key().to_owned();
    let mut outputs: Vec<Out> = Vec::new();
    let mut ps_seen = String::new();

    // A backup whose upload is frozen by a paused server, caught in `ps` with its workers.
    let mut catch_running =
        |site: &mut S3Site, conf: &Path, env: &[(&str, &str)], t: &str| -> Out {
            site.s3.faults().clear_requests();
            let config = format!("--config={}", p(conf));
            let stanza = format!("--stanza={STANZA}");
            let kind = format!("--type={t}");
            let mut cmd = pgbr(&[&config, &stanza, "backup", &kind, "--start-fast"]);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_for_request(&site.s3, "a data file upload", |m, t| {
                m == "PUT" && t.contains("/pg_data/")
            });
            site.s3.pause();
            std::thread::sleep(Duration::from_millis(500));
            let procs = processes_of(conf);
            let ps = run(std::process::Command::new("ps").args(["-eo", "pid,args", "ww"]));
            site.s3.resume();
            let out = finish(child);
            assert!(out.success(), "backup --type={t}:\n{out}");
            assert!(
                !procs.is_empty(),
                "no pg_backrest process seen while paused"
            );
            // Only our processes: s3s-fs itself has the key and secret on its command line.
            for line in ps
                .stdout
                .lines()
                .filter(|l| l.contains("pg_backrest") && !l.contains("s3s-fs"))
            {
                ps_seen.push_str(line);
                ps_seen.push('\n');
            }
            for (_, cmdline) in &procs {
                ps_seen.push_str(cmdline);
                ps_seen.push('\n');
            }
            out
        };

    let site_conf = site.conf.clone();
    let mut site = site;
    outputs.push(catch_running(&mut site, &site_conf, &[], "full"));
    // The secret from the environment only.
    let env_conf = site.config_variant("env.conf", |t| {
        t.lines()
            .filter(|l| !l.starts_with("repo1-s3-key-secret="))
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert!(!fs::read_to_string(&env_conf).unwrap().contains(&secret));
    let env = [("PGBACKREST_REPO1_S3_KEY_SECRET", secret.as_str())];
    outputs.push(catch_running(&mut site, &env_conf, &env, "incr"));
    let seg = site.one_segment();
    for args in [
        vec!["info"],
        vec!["info", "--output=json"],
        vec!["check"],
        vec!["verify"],
        vec!["repo-ls", "--recurse"],
    ] {
        outputs.push(
            site.pgbr_with(&env_conf, &env, &args)
                .expect_ok(&args.join(" ")),
        );
    }
    let fetched = site.dir.join("fetched");
    outputs.push(
        site.pgbr_with(&env_conf, &env, &["archive-get", &seg, p(&fetched)])
            .expect_ok("archive-get"),
    );
    for label in site.labels() {
        let manifest = site
            .pgbr_with(
                &env_conf,
                &env,
                &[
                    "repo-get",
                    &format!("backup/{STANZA}/{label}/backup.manifest"),
                ],
            )
            .expect_ok("repo-get manifest");
        assert!(
            !manifest.stdout.contains(&secret),
            "the secret is in {label}'s manifest"
        );
        assert!(
            !manifest.stdout.contains(&key),
            "the key is in {label}'s manifest"
        );
    }
    // A failing command (server down) does not print them either.
    site.s3.stop();
    outputs.push(site.pgbr_with(&env_conf, &env, &["info", "--io-timeout=1"]));
    site.s3.start_again();

    let logs = site.all_logs();
    assert!(
        logs.contains("DEBUG"),
        "log-level-file=debug logged nothing at debug"
    );
    for (what, value) in [("key secret", &secret), ("key", &key)] {
        assert!(
            !logs.contains(value.as_str()),
            "the {what} is in the log files"
        );
        for out in &outputs {
            assert!(
                !out.stdout.contains(value.as_str()) && !out.stderr.contains(value.as_str()),
                "the {what} is in a command's output:\n{out}"
            );
        }
        assert!(
            !ps_seen.contains(value.as_str()),
            "the {what} is in ps:\n{ps_seen}"
        );
        let hits = files_containing(&site.s3.data_dir().join(&site.bucket), value);
        assert!(hits.is_empty(), "the {what} is in objects: {hits:?}");
    }
}

/// pgBackRest 2.45 on the repository `repo_options` (from [`S3Server::repo_options`] or
/// [`S3Server::repo_options_host_style`]) and `path` for `site`'s cluster, config in
/// `<dir>/<name>`.
fn pgbackrest_on(site: &S3Site, name: &str, repo_options: &str, path: &str) -> PgBackrest {
    let dir = site.dir.mkdir(name);
    // process-max 4: pgBackRest sends one request at a time per process, and ~1000 files
    // at its pace over TLS make minutes otherwise.
    let global = format!("{repo_options}archive-timeout=60\nprocess-max=4");
    PgBackrest::new(
        PgBackrestPaths {
            dir: &dir,
            repo: Path::new(path),
            stanza: STANZA,
            global: &global,
        },
        &site.cluster,
    )
}

/// (7) Both ways with pgBackRest 2.45's repo1-type=s3, and virtual-hosted addressing.
/// pg_backrest writes with repo1-s3-uri-style=host through repo1-storage-host=127.0.0.1
/// (endpoint `localhost`, TLS verified): stanza-create, archive-push, a full backup, and
/// archive-get returns the segment byte-identical; pgBackRest, with the same settings, lists,
/// verifies and restores that backup (its restore_command fetching the WAL). The proxy's log
/// shows every one of those requests virtual-hosted from both tools (Host
/// `compat-ours.localhost`, the path without the bucket). Then path style on another bucket:
/// pgBackRest's stanza, WAL and backup are listed, verified, fetched and restored by
/// pg_backrest.
#[test]
fn s3_repositories_are_shared_with_pgbackrest_2_45_both_ways() {
    // process-max 4 on both sides: ~1,000 files, one request each.
    let site = S3Site::new_host_style(
        "compat-ours",
        "/compat",
        Options {
            global: "process-max=4\n",
            ..Options::default()
        },
    );

    // pg_backrest writes, pgBackRest reads: virtual-hosted, both.
    let rows = add_rows(&site, 300);
    let ours = site.backup("full", &[]);
    let seg = site.one_segment();
    let fetched = site.dir.join("fetched-host-style");
    site.pgbr(&["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get with repo1-s3-uri-style=host");
    assert!(
        fs::read(&fetched).unwrap() == fs::read(site.originals.join(&seg)).unwrap(),
        "archive-get of {seg} (virtual-hosted) returns what PostgreSQL archived"
    );
    let host_style = site.s3.repo_options_host_style(1, "compat-ours");
    let theirs_reader = pgbackrest_on(&site, "pgbackrest-ours", &host_style, "/compat");
    let info = theirs_reader.run(&["info"]);
    assert!(
        info.success() && info.stdout.contains(&ours),
        "pgBackRest info of our S3 repository:\n{info}\n{}",
        theirs_reader.log("info")
    );
    let verify = theirs_reader.run(&["verify"]);
    assert!(
        verify.success(),
        "pgBackRest verify of our S3 repository:\n{verify}\n{}",
        theirs_reader.log("verify")
    );
    let r = Restored::at(&site, "by-pgbackrest");
    let out = theirs_reader.run(&[
        "restore",
        &format!("--pg1-path={}", p(&r.data)),
        &format!("--set={ours}"),
        "--type=immediate",
        "--target-action=promote",
    ]);
    assert!(
        out.success(),
        "pgBackRest restore of our S3 backup:\n{out}\n{}",
        harness::tail(&theirs_reader.log("restore"), 30)
    );
    r.start_and_wait_promoted();
    assert_eq!(r.psql(ROWS), rows, "pgBackRest's restore of our backup");
    r.stop();
    drop(r);
    let hosts = assert_virtual_hosted(&site);
    assert_eq!(
        hosts,
        [
            "compat-ours.localhost".to_owned(),
            format!("compat-ours.localhost:{}", site.s3.port())
        ],
        "virtual-hosted requests from pgBackRest (no port) and pg_backrest (port)"
    );

    // pgBackRest writes (stanza-create, archive-push, backup), pg_backrest reads: path style.
    site.s3.create_bucket("compat-theirs");
    let path_style = site.s3.repo_options(1, "compat-theirs");
    let theirs = pgbackrest_on(&site, "pgbackrest-theirs", &path_style, "/compat");
    let out = theirs.run(&["stanza-create"]);
    assert!(out.success(), "pgBackRest stanza-create on S3:\n{out}");
    let o = p(&site.originals);
    let command = format!(
        "{} && cp %p {o}/%f.part && mv {o}/%f.part {o}/%f",
        theirs.archive_command()
    );
    site.cluster
        .set_settings(&[("archive_command", command.as_str())]);
    site.cluster.reload();
    let rows = add_rows(&site, 200);
    let out = theirs.run(&["backup", "--type=full"]);
    assert!(
        out.success(),
        "pgBackRest backup to S3:\n{out}\n{}",
        harness::tail(&theirs.log("backup"), 30)
    );
    let seg = site.one_segment();
    let our_conf = site.config_variant("ours-on-theirs.conf", |t| {
        t.replace(&host_style, &path_style)
    });
    let info = site
        .pgbr_with(&our_conf, &[], &["info", "--output=json"])
        .expect_ok("info");
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    let labels: Vec<&str> = v[0]["backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 1, "{info}");
    let label = labels[0].to_owned();
    site.pgbr_with(&our_conf, &[], &["verify"])
        .expect_ok("verify of pgBackRest's S3 repository");
    let fetched = site.dir.join("fetched");
    site.pgbr_with(&our_conf, &[], &["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get");
    assert!(fs::read(&fetched).unwrap() == fs::read(site.originals.join(&seg)).unwrap());
    let r = restore_with(&site, &our_conf, "by-pg-backrest", Some(&label), &[]);
    assert_eq!(r.psql(ROWS), rows, "our restore of pgBackRest's S3 backup");
    r.stop();
}

/// (8) TLS: verify-tls=y with no CA given fails with a certificate ERROR (the test CA is in no
/// system store), as pgBackRest does; a CA directory (`openssl rehash`) is accepted, and so
/// is verify-tls=n. Checked with `repo-ls` on an empty bucket: no cluster needed.
#[test]
fn s3_tls_verification_ca_path_and_verify_off() {
    harness::require_root();
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket("tls");
    let ca_dir = dir.mkdir("ca-dir");
    fs::copy(s3.ca_file(), ca_dir.join("test-ca.pem")).unwrap();
    let out = run(std::process::Command::new("openssl")
        .arg("rehash")
        .arg(&ca_dir));
    assert!(out.success(), "openssl rehash:\n{out}");
    let options: String = s3
        .repo_options(1, "tls")
        .lines()
        .filter(|l| !l.starts_with("repo1-storage-ca-file="))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = |name: &str, extra: &str| -> PathBuf {
        let path = dir.join(format!("{name}.conf"));
        write_postgres(
            &path,
            &format!(
                "[global]\n{options}{extra}repo1-path=/tls\nlock-path={}\nlog-path={}\nio-timeout=5\n",
                p(&dir.join("lock")),
                p(&dir.join("log"))
            ),
            0o640,
        );
        path
    };
    let ours = |conf: &Path| run(pgbr(&[&format!("--config={}", p(conf)), "repo-ls"]));
    let theirs = |conf: &Path| {
        harness::run_as_postgres(
            harness::PGBACKREST,
            &[&format!("--config={}", p(conf)), "repo-ls"],
        )
    };

    let no_ca = conf("no-ca", "");
    let reference = theirs(&no_ca);
    assert!(
        !reference.success(),
        "pgBackRest without the CA:\n{reference}"
    );
    let out = ours(&no_ca);
    assert!(out.status != 0, "verify-tls=y without the CA:\n{out}");
    let line = error_line_with(&out, &[]).to_lowercase();
    assert!(
        line.contains("certificate"),
        "no certificate in the error:\n{out}\n(pgBackRest: {})",
        reference.stderr
    );
    assert_eq!(
        out.status, reference.status,
        "exit code as pgBackRest's:\n{out}\n{reference}"
    );

    let ca_path = conf(
        "ca-path",
        &format!("repo1-storage-ca-path={}\n", p(&ca_dir)),
    );
    let reference = theirs(&ca_path);
    assert!(reference.success(), "pgBackRest with ca-path:\n{reference}");
    ours(&ca_path).expect_ok("repo-ls with repo1-storage-ca-path");

    let off = conf("off", "repo1-storage-verify-tls=n\n");
    let reference = theirs(&off);
    assert!(
        reference.success(),
        "pgBackRest with verify-tls=n:\n{reference}"
    );
    ours(&off).expect_ok("repo-ls with repo1-storage-verify-tls=n");
}

/// (9) A repository host whose own config has repo1-type=s3 serves the database host over
/// SSH; the database host's config names only repo1-host and has no S3 option. stanza-create
/// runs on the repository host (reaching PostgreSQL through pg1-host); archive_command on the
/// database host pushes a gzip segment and then, with compress-type=none, a 16 MiB one: more
/// than one 5 MiB part, so the repository host must open its writer with the final name (the
/// greeting's `name-at-open`) and upload it in parts. Both are listed in the bucket and
/// archive-get returns each byte-identical. A full backup taken on the repository host through
/// pg1-host lands in the bucket, and the database host restores it through repo1-host
/// (restore_command fetching WAL through the same path) with the rows it held. Both at
/// process-max 4: each of the ~970 files is one S3 request, and one at a time takes 4x longer.
#[test]
fn s3_repository_host_serves_the_database_host_over_ssh() {
    let site = S3Site::new(
        "rhost",
        "/pgbr/rhost",
        Options {
            remote: true,
            pg_host: true,
            no_stanza_create: true,
            ..Options::default()
        },
    );
    let repo_log = || all_files_text(&site.dir.join("repo-log"));
    let db_conf = fs::read_to_string(&site.conf).unwrap();
    assert!(
        db_conf.contains("repo1-host=")
            && !db_conf
                .lines()
                .any(|l| l.contains("-s3-") || l.contains("-type=") || l.contains("storage-")),
        "the database host's config has repo1-host and no S3 option:\n{db_conf}"
    );
    let repo_conf = fs::read_to_string(&site.repo_conf).unwrap();
    assert!(repo_conf.contains("repo1-type=s3"), "{repo_conf}");

    site.pgbr_repo_host(&["stanza-create"])
        .expect_ok("stanza-create on the repository host");
    let keys = site.key_names("");
    for info in [
        format!("archive/{STANZA}/archive.info"),
        format!("backup/{STANZA}/backup.info"),
    ] {
        assert!(keys.contains(&info), "{info} not in the bucket: {keys:?}");
    }
    site.pgbr(&["check"])
        .expect_ok("check on the database host through repo1-host");

    // archive_command on the database host, default compression (gz).
    let gz_seg = site.one_segment();
    let gz_keys = site.key_names(&format!("archive/{STANZA}/15-1/{}/", &gz_seg[..16]));
    assert!(
        gz_keys
            .iter()
            .any(|k| k.contains(&format!("/{gz_seg}-")) && k.ends_with(".gz")),
        "{gz_seg} (gz) not in the bucket: {gz_keys:?}"
    );
    let fetched = site.dir.join("fetched-gz");
    site.pgbr(&["archive-get", &gz_seg, p(&fetched)])
        .expect_ok("archive-get of the gz segment");
    assert!(
        fs::read(&fetched).unwrap() == fs::read(site.originals.join(&gz_seg)).unwrap(),
        "archive-get of {gz_seg} returns what PostgreSQL archived"
    );

    // compress-type=none on the database host: 16 MiB goes up in parts, named at open.
    write_postgres(
        &site.conf,
        &db_conf.replacen(
            &format!("[{STANZA}]\n"),
            &format!("[{STANZA}]\ncompress-type=none\n"),
            1,
        ),
        0o640,
    );
    site.s3.faults().clear_requests();
    let raw_seg = site.one_segment();
    write_postgres(&site.conf, &db_conf, 0o640);
    let prefix = site.prefix();
    let raw: Vec<(String, u64)> = site
        .keys(&format!("archive/{STANZA}/15-1/{}/", &raw_seg[..16]))
        .into_iter()
        .filter(|(k, _)| k.contains(&format!("/{raw_seg}-")))
        .collect();
    assert_eq!(raw.len(), 1, "one object of {raw_seg}: {raw:?}");
    let (raw_key, raw_size) = &raw[0];
    let sha1 = &raw_key[raw_key.rfind('-').unwrap() + 1..];
    assert!(
        sha1.len() == 40 && sha1.bytes().all(|b| b.is_ascii_hexdigit()),
        "{raw_key}: uncompressed, named by its SHA-1 (no extension)"
    );
    assert_eq!(*raw_size, 16 * 1024 * 1024, "{raw_key}");
    let requests = site.s3.faults().requests();
    let to_raw = |method: &str, query: &str| {
        requests.iter().any(|r| {
            r.method == method
                && r.target.contains(&raw_key[prefix.len()..])
                && r.target.contains(query)
        })
    };
    assert!(
        to_raw("POST", "uploads") && to_raw("PUT", "uploadId=") && to_raw("POST", "uploadId="),
        "{raw_key} was not a multipart upload: {:?}",
        requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect::<Vec<_>>()
    );
    let fetched = site.dir.join("fetched-raw");
    site.pgbr(&["archive-get", &raw_seg, p(&fetched)])
        .expect_ok("archive-get of the uncompressed segment");
    assert!(
        fs::read(&fetched).unwrap() == fs::read(site.originals.join(&raw_seg)).unwrap(),
        "archive-get of {raw_seg} (stored uncompressed) returns what PostgreSQL archived"
    );

    // A backup on the repository host through pg1-host; restored on the database host.
    let rows = add_rows(&site, 2000);
    let out = site.pgbr_repo_host(&["backup", "--type=full", "--start-fast", "--process-max=4"]);
    assert!(
        out.success(),
        "backup on the repository host:\n{out}\n{}",
        harness::tail(&repo_log(), 40)
    );
    let label = label_of(&out);
    let backup_keys = site.key_names(&format!("backup/{STANZA}/{label}/"));
    assert!(
        backup_keys.contains(&format!("backup/{STANZA}/{label}/backup.manifest"))
            && backup_keys
                .iter()
                .any(|k| k.contains("/pg_data/PG_VERSION")),
        "backup {label} not in the bucket: {backup_keys:?}"
    );
    assert_eq!(
        site.labels(),
        vec![label.clone()],
        "info on the database host"
    );
    let r = restore_with(
        &site,
        &site.conf,
        "restored",
        Some(&label),
        &["--process-max=4"],
    );
    assert_eq!(
        r.psql(ROWS),
        rows,
        "the restored copy holds the backup's rows"
    );
    r.stop();
    site.cluster.assert_archiving_never_failed();
}
