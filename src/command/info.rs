//! info [--stanza=NAME] [--set=LABEL] [--output=text|json]: what the repository holds, per
//! stanza, in pgBackRest's `info` layout (docs/info-json.md): its status and lock, the cluster
//! history, the archived WAL range of each cluster, and every complete backup. A stanza that
//! cannot be read (a damaged info file, an unreachable repository) is reported in its own
//! entry with status 99, as pgBackRest does, and the command still exits 0, so one broken
//! stanza never hides the others from monitoring.
//!
//! Beyond pgBackRest's fields it adds what this project records: `running` (who holds the
//! backup lock), `in-progress` (backup directories not in backup.info), `last-backup`, and
//! `archive[].dropped`: the gaps archive-push left (archive-push-queue-max exceeded), which
//! the text form names in the status line and on a `WAL DROPPED:` line each until a backup
//! covers them. pgBackRest's status codes stay as they are: monitoring reads them.

use serde_json::{json, Map, Value};

use crate::config::{Config, LockType};
use crate::error::{Error, Result};
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::info::DbEntry;
use crate::manifest::{BackupType, Manifest};
use crate::repo::dropped::{self, Gap};
use crate::repo::{ArchiveIdListing, RepoLayout, StoredWal, WalDirListing};
use crate::storage::Storage;

/// pgBackRest's stanza status codes (its `info` command; the same numbers in JSON).
const OK: i64 = 0;
const MISSING_STANZA_PATH: i64 = 1;
const NO_BACKUP: i64 = 2;
const MISSING_STANZA_DATA: i64 = 3;
const BACKUP_MISSING: i64 = 6;
const OTHER: i64 = 99;

/// The only repository this build reads; its key in `repo[]` and `database.repo-key`.
const REPO_KEY: u32 = 1;
/// Stanza name pgBackRest reports a repository-level failure under when none was requested.
const INVALID_STANZA: &str = "[invalid]";

fn status_message(code: i64) -> &'static str {
    match code {
        OK => "ok",
        MISSING_STANZA_PATH => "missing stanza path",
        NO_BACKUP => "no valid backups",
        MISSING_STANZA_DATA => "missing stanza data",
        BACKUP_MISSING => "requested backup not found",
        _ => "other",
    }
}

pub fn run(cfg: &Config) -> Result<()> {
    let set = cfg.str("set").filter(|s| *s != "latest");
    if set.is_some() && cfg.stanza().is_none() {
        return Err(
            Error::config("option 'set' not valid without option 'stanza'")
                .with_hint("add --stanza=NAME, the stanza the backup belongs to"),
        );
    }
    let type_filter = cfg.str("type").and_then(BackupType::parse);
    let report = report(cfg, set, type_filter);
    if cfg.str("output") == Some("json") {
        println!("{}", Value::Array(report));
    } else {
        print!("{}", render_text(&report, set.is_some()));
    }
    Ok(())
}

/// One entry per stanza, sorted by name; a repository that cannot be listed gives one entry
/// (the requested stanza, or `[invalid]`) carrying the error.
fn report(cfg: &Config, set: Option<&str>, type_filter: Option<BackupType>) -> Vec<Value> {
    let listed = crate::repo::open(cfg).and_then(|repo| {
        let names = repo.list("backup")?;
        Ok((repo, names))
    });
    let (repo, mut names) = match listed {
        Ok(r) => r,
        Err(e) => {
            let name = cfg.stanza().unwrap_or(INVALID_STANZA);
            return vec![Stanza::failed(name, Some(&e)).render(cfg, name)];
        }
    };
    names.sort();
    let wanted: Vec<(String, bool)> = match cfg.stanza() {
        Some(s) => vec![(s.to_string(), names.iter().any(|n| n == s))],
        None => names.into_iter().map(|n| (n, true)).collect(),
    };
    wanted
        .iter()
        .map(|(name, exists)| {
            let stanza = if *exists {
                Stanza::load(repo.as_ref(), name, set, type_filter)
            } else {
                Stanza {
                    code: MISSING_STANZA_PATH,
                    ..Stanza::failed(name, None)
                }
            };
            stanza.render(cfg, name)
        })
        .collect()
}

/// What was read of one stanza, before rendering.
struct Stanza {
    code: i64,
    /// `[ErrorType] message` for status 99.
    error: Option<String>,
    /// Both info files loaded: the stanza's data is readable.
    readable: bool,
    db: Vec<Value>,
    archive: Vec<Value>,
    backup: Vec<Value>,
    in_progress: Vec<Value>,
    last_backup: Value,
}

impl Stanza {
    fn failed(_name: &str, e: Option<&Error>) -> Stanza {
        Stanza {
            code: if e.is_some() {
                OTHER
            } else {
                MISSING_STANZA_DATA
            },
            error: e.map(describe_error),
            readable: false,
            db: Vec::new(),
            archive: Vec::new(),
            backup: Vec::new(),
            in_progress: Vec::new(),
            last_backup: json!({"full": null, "diff": null, "incr": null}),
        }
    }

    fn load(
        repo: &dyn Storage,
        name: &str,
        set: Option<&str>,
        type_filter: Option<BackupType>,
    ) -> Stanza {
        match Stanza::try_load(repo, name, set, type_filter) {
            Ok(s) => s,
            Err(e) => Stanza::failed(name, Some(&e)),
        }
    }

    fn try_load(
        repo: &dyn Storage,
        name: &str,
        set: Option<&str>,
        type_filter: Option<BackupType>,
    ) -> Result<Stanza> {
        let layout = RepoLayout::new(name);
        let Some(backup) = BackupInfo::load(repo, &layout)? else {
            return Ok(Stanza::failed(name, None));
        };
        // pgBackRest requires archive.info once backup.info exists: its absence is an error
        // of the stanza, not "missing stanza data".
        let archive = ArchiveInfo::load(repo, &layout)?.ok_or_else(|| {
            Error::new(
                crate::error::Kind::RepoMissing,
                format!(
                    "unable to load info file '{}' or '{}.copy': file is missing",
                    repo.describe(&layout.archive_info()),
                    repo.describe(&layout.archive_info())
                ),
            )
        })?;
        // --set: the backup is "found" when its manifest exists, as in pgBackRest.
        let manifest = match set {
            Some(label) if crate::info::backup::is_label(label) => {
                Manifest::load(repo, &layout.manifest(label))?
            }
            _ => None,
        };
        if set.is_some() && manifest.is_none() {
            return Ok(Stanza {
                code: BACKUP_MISSING,
                ..Stanza::failed(name, None)
            });
        }

        let mut db = Vec::new();
        let mut archive_section = Vec::new();
        let newest = backup.db.history.len().saturating_sub(1);
        for (i, pg) in backup.db.history.iter().enumerate() {
            db.push(json!({
                "id": pg.id,
                "repo-key": REPO_KEY,
                "system-id": pg.system_id,
                "version": pg.version,
            }));
            let archive_id = archive_id_for(&archive.db.history, pg)?;
            let (min, max) = wal_range(repo, &layout.archive_id_path(&archive_id))?;
            let gaps = dropped::gaps(repo, &layout, &archive_id, None)?;
            if i == newest || min.is_some() || !gaps.is_empty() {
                let dropped: Vec<Value> = gaps.iter().map(|g| gap_entry(g, &backup)).collect();
                archive_section.push(json!({
                    "database": {"id": pg.id, "repo-key": REPO_KEY},
                    "id": archive_id,
                    "min": min,
                    "max": max,
                    "dropped": dropped,
                }));
            }
        }

        let mut backups = Vec::new();
        // backup.info is sorted by label; pgBackRest lists by stop time, which is the same
        // order for backups one repository wrote one after another.
        let mut ordered: Vec<_> = backup.backups.iter().collect();
        ordered.sort_by_key(|(label, b)| (b.backup_timestamp_stop, label.as_str()));
        for (label, summary) in ordered {
            if set.is_some_and(|s| s != label) {
                continue;
            }
            if type_filter.is_some_and(|t| t != summary.backup_type) {
                continue;
            }
            let raw = serde_json::to_value(summary)
                .map_err(|e| Error::internal(format!("backup.info entry {label}: {e}")))?;
            backups.push(backup_entry(label, &raw, manifest.as_ref()));
        }

        let last = |t: BackupType| {
            backup
                .backups
                .iter()
                .rev()
                .find(|(_, b)| b.backup_type == t)
                .map(|(label, b)| json!({"label": label, "stop": b.backup_timestamp_stop}))
        };
        Ok(Stanza {
            code: if backup.backups.is_empty() {
                NO_BACKUP
            } else {
                OK
            },
            error: None,
            readable: true,
            db,
            archive: archive_section,
            backup: backups,
            in_progress: unfinished(repo, &layout, &backup)?,
            last_backup: json!({
                "full": last(BackupType::Full),
                "diff": last(BackupType::Diff),
                "incr": last(BackupType::Incr),
            }),
        })
    }

    fn render(self, cfg: &Config, name: &str) -> Value {
        let lock_path = cfg.path("lock-path");
        // As pgBackRest, the lock is looked at only for a stanza whose data could be read.
        let held = self.readable
            && lock_path
                .as_deref()
                .is_some_and(|p| crate::lock::is_held(p, name, LockType::Backup));
        let running = lock_path
            .and_then(|p| crate::lock::holder(&p, name, LockType::Backup))
            .map(|h| json!({"command": h.command, "pid": h.pid, "start": h.start}));
        let repo_message = match (&self.error, self.code) {
            (Some(e), OTHER) => e.clone(),
            (_, code) => status_message(code).to_string(),
        };
        json!({
            "name": name,
            "cipher": "none",
            "status": {
                "code": self.code,
                "message": status_message(self.code),
                "lock": {"backup": {"held": held}},
            },
            "repo": [{
                "key": REPO_KEY,
                "cipher": "none",
                "status": {"code": self.code, "message": repo_message},
            }],
            "db": self.db,
            "archive": self.archive,
            "backup": self.backup,
            "in-progress": self.in_progress,
            "last-backup": self.last_backup,
            "running": running,
        })
    }
}

/// The archive id of backup.info's cluster `pg` in archive.info's history: the entry with the
/// same id, version and system-id, else the newest with the same version and system-id.
fn archive_id_for(archive_history: &[DbEntry], pg: &DbEntry) -> Result<String> {
    let same = |a: &&DbEntry| a.version == pg.version && a.system_id == pg.system_id;
    archive_history
        .iter()
        .rev()
        .find(|a| a.id == pg.id && same(a))
        .or_else(|| archive_history.iter().rev().find(same))
        .map(DbEntry::archive_id)
        .ok_or_else(|| {
            Error::integrity(format!(
                "unable to retrieve the archive id for database version '{}' and system-id '{}'",
                pg.version, pg.system_id
            ))
        })
}

/// `[ErrorType] message`, as pgBackRest reports a stanza it could not read. The type is the
/// name pgBackRest gives the error code this error exits with.
fn describe_error(e: &Error) -> String {
    format!("[{}] {}", error_type_name(e.kind), e.message)
}

/// pgBackRest's name of an error type (`FormatError`), from the kind's name in its error table.
fn error_type_name(kind: crate::error::Kind) -> String {
    let kebab = kind.wire_name();
    let mut out: String = kebab
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    out.push_str("Error");
    out
}

/// One entry of `backup[]` from backup.info's record of it (read by pgBackRest's key names,
/// so keys a newer writer adds, such as `backup-error` or `backup-annotation`, show when
/// present), plus the manifest's details for `--set`.
fn backup_entry(label: &str, raw: &Value, manifest: Option<&Manifest>) -> Value {
    let text = |k: &str| raw[k].as_str().filter(|s| !s.is_empty()).map(String::from);
    let num = |k: &str| raw[k].as_u64().unwrap_or(0);
    let reference = raw["backup-reference"]
        .as_array()
        .filter(|r| !r.is_empty())
        .map(|r| Value::Array(r.clone()));
    let mut b = json!({
        "label": label,
        "type": raw["backup-type"],
        "prior": text("backup-prior"),
        "reference": reference,
        "archive": {"start": text("backup-archive-start"), "stop": text("backup-archive-stop")},
        "backrest": {
            "format": raw["backrest-format"].as_u64().unwrap_or(crate::codec::FORMAT),
            "version": text("backrest-version"),
        },
        "database": {"id": num("db-id"), "repo-key": REPO_KEY},
        "info": {
            "size": num("backup-info-size"),
            "delta": num("backup-info-size-delta"),
            "repository": {
                "size": num("backup-info-repo-size"),
                "delta": num("backup-info-repo-size-delta"),
            },
        },
        "timestamp": {
            "start": num("backup-timestamp-start"),
            "stop": num("backup-timestamp-stop"),
        },
    });
    let obj = b.as_object_mut().expect("built as an object");
    if let Some(e) = raw["backup-error"].as_bool() {
        obj.insert("error".into(), Value::Bool(e));
    }
    if let (Some(start), Some(stop)) = (text("backup-lsn-start"), text("backup-lsn-stop")) {
        obj.insert("lsn".into(), json!({"start": start, "stop": stop}));
    }
    if let Some(a) = raw.get("backup-annotation").filter(|a| a.is_object()) {
        obj.insert("annotation".into(), a.clone());
    }
    if let Some(m) = manifest {
        set_details(obj, m);
    }
    b
}

/// `--set` details from the backup's manifest: its databases (templates left out), links,
/// tablespaces, and the files whose page checksums failed.
fn set_details(obj: &mut Map<String, Value>, m: &Manifest) {
    let databases: Vec<Value> = m
        .databases
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "template0" | "template1"))
        .map(|(name, oid)| json!({"name": name, "oid": oid.id}))
        .collect();
    obj.insert("database-ref".into(), Value::Array(databases));
    let mut links = Vec::new();
    let mut tablespaces = Vec::new();
    for (name, t) in &m.targets {
        if t.kind != "link" {
            continue;
        }
        match &t.tablespace_name {
            Some(ts) => tablespaces.push(json!({
                "name": ts,
                "destination": t.path,
                "oid": t.tablespace_id.as_deref().and_then(|i| i.parse::<u64>().ok()),
            })),
            None => links.push(json!({
                "name": name.strip_prefix("pg_data/").unwrap_or(name),
                "destination": t.path,
            })),
        }
    }
    let list_or_null = |v: Vec<Value>| (!v.is_empty()).then_some(Value::Array(v));
    obj.insert("link".into(), list_or_null(links).into());
    obj.insert("tablespace".into(), list_or_null(tablespaces).into());
    let errors: Vec<Value> = m
        .files
        .iter()
        .filter(|(_, f)| !f.checksum_page_error.is_empty() || f.checksum_page == Some(false))
        .map(|(name, _)| Value::from(name.strip_prefix("pg_data/").unwrap_or(name)))
        .collect();
    if !errors.is_empty() {
        obj.insert("error-list".into(), Value::Array(errors));
        obj.insert("error".into(), Value::Bool(true));
    }
}

/// Backup directories not (yet) in backup.info: a backup running now, or one interrupted
/// that the next backup of its type will resume. Their progress is what the in-progress
/// manifest recorded.
fn unfinished(repo: &dyn Storage, layout: &RepoLayout, info: &BackupInfo) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for entry in repo.list(&layout.backup_root())? {
        if !crate::info::backup::is_label(&entry) || info.backups.contains_key(&entry) {
            continue;
        }
        let Some(m) = Manifest::load_copy(repo, &layout.manifest(&entry))? else {
            continue;
        };
        let copied: u64 = m
            .files
            .values()
            .filter(|f| f.reference.is_none())
            .map(|f| f.size)
            .sum();
        // A finished manifest outside backup.info is a backup an interrupted expire was
        // removing (it takes the backup out of backup.info before its directory).
        let state = if m.backup.timestamp_stop.is_some() {
            "expiring"
        } else {
            "running-or-interrupted"
        };
        out.push(json!({
            "label": entry,
            "type": m.backup.backup_type.name(),
            "state": state,
            "files-copied": m.files.values().filter(|f| f.reference.is_none()).count(),
            "bytes-copied": copied,
        }));
    }
    Ok(out)
}

/// One entry of `archive[].dropped`: a gap archive-push left (archive-push-queue-max
/// exceeded), and whether a backup starting after it covers it.
fn gap_entry(g: &Gap, backups: &BackupInfo) -> Value {
    json!({
        "first": g.first,
        "last": g.last,
        "segments": g.segments,
        "time": g.facts.as_ref().map(|f| f.time),
        "queue-bytes": g.facts.as_ref().map(|f| f.queue_bytes),
        "queue-max": g.facts.as_ref().map(|f| f.queue_max),
        "covered": g.covered(backups),
    })
}

/// The gaps of `archive[].dropped` no backup covers yet: what the text status points at.
fn uncovered_gaps(st: &Value) -> Vec<&Value> {
    st["archive"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["dropped"].as_array().into_iter().flatten())
        .filter(|g| g["covered"] == false)
        .collect()
}

/// Oldest and newest WAL segment of an archive id directory, across its timelines. History
/// files, `.partial` and `.backup` files and unknown entries are not segments.
fn wal_range(repo: &dyn Storage, dir: &str) -> Result<(Option<String>, Option<String>)> {
    let listing = ArchiveIdListing::read(repo, dir)?;
    let segments = |d: &String| -> Result<Vec<String>> {
        Ok(WalDirListing::read(repo, &format!("{dir}/{d}"))?
            .segments()
            .filter_map(StoredWal::segment)
            .map(String::from)
            .collect())
    };
    // A WAL directory may hold no segment (only a .partial, say): look further in.
    let mut min = None;
    for d in &listing.wal_dirs {
        if let Some(first) = segments(d)?.into_iter().min() {
            min = Some(first);
            break;
        }
    }
    let mut max = None;
    for d in listing.wal_dirs.iter().rev() {
        if let Some(last) = segments(d)?.into_iter().max() {
            max = Some(last);
            break;
        }
    }
    Ok((min, max))
}

/// Local time as pgBackRest prints it.
fn time(ts: &Value) -> String {
    ts.as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// A size as pgBackRest prints it: whole units, or one decimal when the tenth is not zero.
fn size(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0);
    if b < 1024 {
        return format!("{b}B");
    }
    let (unit, name) = match b {
        b if b < 1 << 20 => (1u64 << 10, "KB"),
        b if b < 1 << 30 => (1 << 20, "MB"),
        _ => (1 << 30, "GB"),
    };
    if !((b as f64 / (unit as f64 / 10.0)) as u64).is_multiple_of(10) {
        format!("{:.1}{name}", b as f64 / unit as f64)
    } else {
        format!("{}{name}", b / unit)
    }
}

fn render_text(report: &[Value], set: bool) -> String {
    if report.is_empty() {
        return "No stanzas exist in the repository.\n".into();
    }
    let mut out = String::new();
    for (i, st) in report.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_stanza(&mut out, st, set);
    }
    out
}

fn render_stanza(out: &mut String, st: &Value, set: bool) {
    let s = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| "-".into());
    let code = st["status"]["code"].as_i64().unwrap_or(OTHER);
    let held = st["status"]["lock"]["backup"]["held"] == true;
    let gaps = uncovered_gaps(st);
    // Dropped WAL is named in the status line itself, so that even a glance (or a script
    // that reads only that line) sees it; the gaps follow under the stanza.
    let dropped_note = (!gaps.is_empty()).then_some("WAL DROPPED, see below");
    let notes = |first: Option<&str>| -> String {
        let all: Vec<&str> = first
            .into_iter()
            .chain(held.then_some("backup/expire running"))
            .chain(dropped_note)
            .collect();
        all.join(", ")
    };
    out.push_str(&format!("stanza: {}\n    status: ", s(&st["name"])));
    match code {
        OK if held || dropped_note.is_some() => out.push_str(&format!("ok ({})\n", notes(None))),
        OK => out.push_str("ok\n"),
        OTHER => {
            out.push_str("error (other)");
            if held || dropped_note.is_some() {
                out.push_str(&format!(" ({})", notes(None)));
            }
            out.push('\n');
            for repo in st["repo"].as_array().into_iter().flatten() {
                for line in s(&repo["status"]["message"]).lines() {
                    out.push_str(&format!("            {line}\n"));
                }
            }
        }
        _ => {
            let message = s(&st["status"]["message"]);
            out.push_str(&format!("error ({})\n", notes(Some(&message))));
        }
    }
    if code != MISSING_STANZA_PATH {
        out.push_str(&format!("    cipher: {}\n", s(&st["cipher"])));
    }
    for g in &gaps {
        let gap = Gap {
            archive_id: String::new(),
            first: s(&g["first"]),
            last: s(&g["last"]),
            segments: g["segments"].as_u64().unwrap_or(0),
            facts: g["time"].as_i64().map(|time| dropped::DropFacts {
                time,
                queue_bytes: g["queue-bytes"].as_u64().unwrap_or(0),
                queue_max: g["queue-max"].as_u64().unwrap_or(0),
            }),
        };
        out.push_str(&format!(
            "    WAL DROPPED: {}: point-in-time recovery across them is impossible until the \
             next backup\n",
            gap.describe()
        ));
    }

    // This project's additions: who runs now, unfinished backups, the last of each type.
    if let Some(r) = st["running"].as_object() {
        out.push_str(&format!(
            "    running now: {} (pid {}, started {})\n",
            s(&r["command"]),
            r["pid"],
            s(&r["start"])
        ));
    } else if st["db"].as_array().is_some_and(|d| !d.is_empty()) {
        out.push_str("    running now: no backup or expire\n");
    }
    for b in st["in-progress"].as_array().into_iter().flatten() {
        out.push_str(&if b["state"] == "expiring" {
            format!(
                "    {} backup {}: expired, being removed (an interrupted expire; the next \
                 expire or backup finishes it)\n",
                s(&b["type"]),
                s(&b["label"]),
            )
        } else {
            format!(
                "    {} backup {}: running or interrupted, {} files ({}) copied so far\n",
                s(&b["type"]),
                s(&b["label"]),
                b["files-copied"],
                size(&b["bytes-copied"])
            )
        });
    }
    for t in ["full", "diff", "incr"] {
        if let Some(b) = st["last-backup"][t].as_object() {
            out.push_str(&format!(
                "    last {t} backup: {}, finished {}\n",
                s(&b["label"]),
                time(&b["stop"])
            ));
        }
    }

    render_db_groups(out, st, set);
}

/// The backups and WAL range per cluster (system-id and version), as pgBackRest groups them:
/// earlier clusters first as `db (prior)` when they have WAL or backups, the current last.
fn render_db_groups(out: &mut String, st: &Value, set: bool) {
    let Some(dbs) = st["db"].as_array().filter(|d| !d.is_empty()) else {
        return;
    };
    struct Group<'a> {
        system_id: &'a Value,
        version: &'a Value,
        min: Option<String>,
        max: Option<String>,
        backups: Vec<&'a Value>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for db in dbs {
        let at = match groups
            .iter()
            .position(|g| *g.system_id == db["system-id"] && *g.version == db["version"])
        {
            Some(at) => at,
            None => {
                groups.push(Group {
                    system_id: &db["system-id"],
                    version: &db["version"],
                    min: None,
                    max: None,
                    backups: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[at];
        for a in st["archive"].as_array().into_iter().flatten() {
            if a["database"]["id"] != db["id"] {
                continue;
            }
            if let (Some(min), Some(max)) = (a["min"].as_str(), a["max"].as_str()) {
                if g.min.as_deref().is_none_or(|m| m > min) {
                    g.min = Some(min.to_string());
                }
                if g.max.as_deref().is_none_or(|m| m < max) {
                    g.max = Some(max.to_string());
                }
            }
        }
        for b in st["backup"].as_array().into_iter().flatten() {
            if b["database"]["id"] == db["id"] {
                g.backups.push(b);
            }
        }
    }
    let current = dbs.last().expect("checked non-empty");
    let mut current_text = None;
    for g in &groups {
        if set && g.backups.is_empty() {
            continue;
        }
        let mut text = String::new();
        let version = g.version.as_str().unwrap_or("-");
        match (&g.min, &g.max) {
            (Some(min), Some(max)) => text.push_str(&format!(
                "\n        wal archive min/max ({version}): {min}/{max}\n"
            )),
            _ => text.push_str(&format!(
                "\n        wal archive min/max ({version}): none present\n"
            )),
        }
        for b in &g.backups {
            render_backup(&mut text, b, set);
        }
        if *g.system_id == current["system-id"] && *g.version == current["version"] {
            current_text = Some(text);
        } else if g.min.is_some() || !g.backups.is_empty() {
            out.push_str("\n    db (prior)");
            out.push_str(&text);
        }
    }
    if let Some(text) = current_text {
        out.push_str("\n    db (current)");
        out.push_str(&text);
    }
}

/// One backup in text; the LSNs only for `--set`, as pgBackRest prints them.
fn render_backup(out: &mut String, b: &Value, set: bool) {
    let s = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "\n        {} backup: {}\n",
        s(&b["type"]),
        s(&b["label"])
    ));
    out.push_str(&format!(
        "            timestamp start/stop: {} / {}\n",
        time(&b["timestamp"]["start"]),
        time(&b["timestamp"]["stop"])
    ));
    match (
        b["archive"]["start"].as_str(),
        b["archive"]["stop"].as_str(),
    ) {
        (Some(start), Some(stop)) => {
            out.push_str(&format!("            wal start/stop: {start} / {stop}\n"))
        }
        _ => out.push_str("            wal start/stop: n/a\n"),
    }
    if let Some(lsn) = b["lsn"].as_object().filter(|_| set) {
        out.push_str(&format!(
            "            lsn start/stop: {} / {}\n",
            s(&lsn["start"]),
            s(&lsn["stop"])
        ));
    }
    out.push_str(&format!(
        "            database size: {}, database backup size: {}\n",
        size(&b["info"]["size"]),
        size(&b["info"]["delta"])
    ));
    out.push_str(&format!(
        "            repo{}: backup set size: {}, backup size: {}\n",
        b["database"]["repo-key"],
        size(&b["info"]["repository"]["size"]),
        size(&b["info"]["repository"]["delta"])
    ));
    if let Some(refs) = b["reference"].as_array() {
        let refs: Vec<String> = refs.iter().map(s).collect();
        out.push_str(&format!(
            "            backup reference list: {}\n",
            refs.join(", ")
        ));
    }
    if let Some(dbs) = b["database-ref"].as_array() {
        out.push_str("            database list:");
        if dbs.is_empty() {
            out.push_str(" none\n");
        } else {
            let list: Vec<String> = dbs
                .iter()
                .map(|d| format!(" {} ({})", s(&d["name"]), d["oid"]))
                .collect();
            out.push_str(&list.join(","));
            out.push('\n');
        }
    }
    if let Some(links) = b["link"].as_array() {
        out.push_str("            symlinks:\n");
        for l in links {
            out.push_str(&format!(
                "                {} => {}\n",
                s(&l["name"]),
                s(&l["destination"])
            ));
        }
    }
    if let Some(ts) = b["tablespace"].as_array() {
        out.push_str("            tablespaces:\n");
        for t in ts {
            out.push_str(&format!(
                "                {} ({}) => {}\n",
                s(&t["name"]),
                t["oid"],
                s(&t["destination"])
            ));
        }
    }
    if b["error"] == true {
        match b["error-list"].as_array() {
            Some(list) => {
                let list: Vec<String> = list.iter().map(s).collect();
                out.push_str(&format!("            error list: {}\n", list.join(", ")));
            }
            None => out.push_str("            error(s) detected during backup\n"),
        }
    }
    if let Some(a) = b["annotation"].as_object() {
        out.push_str("            annotation(s)\n");
        for (k, v) in a {
            out.push_str(&format!("                {k}: {}\n", s(v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_error_names_read_as_pgbackrest_prints_them() {
        assert_eq!(size(&json!(1023)), "1023B");
        assert_eq!(size(&json!(1024)), "1KB");
        assert_eq!(size(&json!(1536)), "1.5KB");
        assert_eq!(size(&json!(22_992_521)), "21.9MB");
        assert_eq!(size(&json!(3u64 << 30)), "3GB");
        use crate::error::Kind;
        assert_eq!(error_type_name(Kind::Format), "FormatError");
        assert_eq!(error_type_name(Kind::FileMissing), "FileMissingError");
        assert_eq!(
            error_type_name(Kind::ArchiveMismatch),
            "ArchiveMismatchError"
        );
        assert_eq!(error_type_name(Kind::RepoInvalid), "RepoInvalidError");
    }

    fn stanza_with_gap(code: i64, covered: bool) -> Value {
        json!({
            "name": "main",
            "cipher": "none",
            "status": {"code": code, "message": status_message(code), "lock": {"backup": {"held": false}}},
            "repo": [],
            "db": [],
            "archive": [{"id": "15-1", "min": null, "max": null, "database": {"id": 1}, "dropped": [{
                "first": "000000010000000000000005", "last": "000000010000000000000008",
                "segments": 4, "time": null, "queue-bytes": 1, "queue-max": 1, "covered": covered,
            }]}],
            "backup": [],
        })
    }

    /// An uncovered gap is in the status line and on a line of its own; a covered one is not.
    #[test]
    fn an_uncovered_gap_is_named_in_the_status_line_and_under_the_stanza() {
        let gap_line = "    WAL DROPPED: 000000010000000000000005...000000010000000000000008 \
                        (4 segments, archive-push-queue-max exceeded): point-in-time recovery \
                        across them is impossible until the next backup\n";
        let text = render_text(&[stanza_with_gap(OK, false)], false);
        assert!(
            text.contains("    status: ok (WAL DROPPED, see below)\n"),
            "{text}"
        );
        assert!(text.contains(gap_line), "{text}");
        let text = render_text(&[stanza_with_gap(NO_BACKUP, false)], false);
        assert!(
            text.contains("    status: error (no valid backups, WAL DROPPED, see below)\n"),
            "{text}"
        );
        let text = render_text(&[stanza_with_gap(OK, true)], false);
        assert!(
            text.contains("    status: ok\n") && !text.contains("DROPPED"),
            "{text}"
        );
    }
}
