//! info [--stanza=NAME] [--output=text|json]: what the repository holds, per stanza: its
//! cluster, the range of archived WAL, and every complete backup with its type, prior and
//! references, times, LSNs, WAL range and sizes; when the last backup of each type finished;
//! and whether a backup, expire or stanza-create holds the stanza's lock on this host right
//! now. The JSON form is documented in docs/info-json.md and is what scripts should read.

use serde_json::{json, Value};

use crate::config::{Config, LockType};
use crate::error::Result;
use crate::info::archive::ArchiveInfo;
use crate::info::backup::BackupInfo;
use crate::manifest::BackupType;
use crate::repo::{ArchiveIdListing, RepoLayout, StoredWal, WalDirListing};
use crate::storage::{self, Storage};

pub fn run(cfg: &Config) -> Result<()> {
    let repo = storage::repo(cfg)?;
    let stanzas = match cfg.stanza() {
        Some(s) => vec![s.to_string()],
        None => repo.list("backup")?,
    };
    // --set narrows the report to one backup.
    let set = cfg.str("set").filter(|s| *s != "latest");
    let mut report: Vec<Value> = stanzas
        .iter()
        .map(|s| stanza_report(cfg, repo.as_ref(), s))
        .collect::<Result<_>>()?;
    if let Some(set) = set {
        for st in &mut report {
            if let Some(Value::Array(backups)) = st.get_mut("backup") {
                backups.retain(|b| b["label"] == set);
            }
        }
        if report
            .iter()
            .all(|st| st["backup"].as_array().is_none_or(Vec::is_empty))
        {
            return Err(crate::error::Error::new(
                crate::error::Kind::BackupSetInvalid,
                format!("backup set '{set}' is not in the repository"),
            )
            .with_hint("'pg_backrest info' without --set lists the backups"));
        }
    }
    if cfg.str("output") == Some("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render_text(&report));
    }
    Ok(())
}

fn stanza_report(cfg: &Config, repo: &dyn Storage, stanza: &str) -> Result<Value> {
    let layout = RepoLayout::new(stanza);
    let running = cfg
        .path("lock-path")
        .and_then(|p| crate::lock::holder(&p, stanza, LockType::Backup))
        .map(|h| json!({"command": h.command, "pid": h.pid, "start": h.start}));
    let backup = BackupInfo::load(repo, &layout)?;
    let archive = ArchiveInfo::load(repo, &layout)?;
    let (Some(backup), Some(archive)) = (backup, archive) else {
        return Ok(
            json!({"name": stanza, "status": {"code": 1, "message": "missing stanza data"}, "backup": [], "archive": [], "running": running}),
        );
    };
    let archive_id = archive.db.current.archive_id();
    let (min, max) = wal_range(repo, &layout.archive_id_path(&archive_id))?;
    let backups: Vec<Value> = backup
        .backups
        .iter()
        .map(|(label, b)| {
            let mut entry = json!({
                "label": label,
                "type": b.backup_type.name(),
                "prior": b.backup_prior,
                "reference": b.backup_reference,
                "timestamp": {"start": b.backup_timestamp_start, "stop": b.backup_timestamp_stop},
                "lsn": {"start": b.backup_lsn_start, "stop": b.backup_lsn_stop},
                "archive": {"start": b.backup_archive_start, "stop": b.backup_archive_stop},
                "info": {
                    "size": b.backup_info_size,
                    "delta": b.backup_info_size_delta,
                    "repository": {"size": b.backup_info_repo_size, "delta": b.backup_info_repo_size_delta},
                },
                "database": {"id": b.db_id},
            });
            // pgBackRest's field, present only when the backup has annotations.
            if let Some(a) = &b.backup_annotation {
                entry["annotation"] = json!(a);
            }
            entry
        })
        .collect();
    let in_progress = unfinished(repo, &layout, &backup)?;
    let last = |t: BackupType| {
        backup
            .backups
            .iter()
            .rev()
            .find(|(_, b)| b.backup_type == t)
            .map(|(label, b)| json!({"label": label, "stop": b.backup_timestamp_stop}))
    };
    let last_backup = json!({
        "full": last(BackupType::Full),
        "diff": last(BackupType::Diff),
        "incr": last(BackupType::Incr),
    });
    let status = if backups.is_empty() {
        json!({"code": 2, "message": "no valid backups"})
    } else {
        json!({"code": 0, "message": "ok"})
    };
    Ok(json!({
        "name": stanza,
        "status": status,
        "db": [{"id": archive.db.current.id, "system-id": archive.db.current.system_id, "version": archive.db.current.version}],
        "archive": [{"id": archive_id, "min": min, "max": max}],
        "backup": backups,
        "in-progress": in_progress,
        "last-backup": last_backup,
        "running": running,
    }))
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
        let Some(m) = crate::manifest::Manifest::load_copy(repo, &layout.manifest(&entry))? else {
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

fn time(ts: &Value) -> String {
    ts.as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn size(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    match b {
        b if b >= 1024.0 * 1024.0 * 1024.0 => format!("{:.1}GB", b / 1024f64.powi(3)),
        b if b >= 1024.0 * 1024.0 => format!("{:.1}MB", b / 1024f64.powi(2)),
        b if b >= 1024.0 => format!("{:.1}KB", b / 1024.0),
        b => format!("{b}B"),
    }
}

fn render_text(report: &[Value]) -> String {
    let s = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    for st in report {
        out.push_str(&format!(
            "stanza: {}\n    status: {}\n",
            s(&st["name"]),
            s(&st["status"]["message"])
        ));
        if let Some(db) = st["db"].get(0) {
            out.push_str(&format!(
                "    db (current): PostgreSQL {}, system-id {}\n",
                s(&db["version"]),
                db["system-id"]
            ));
        }
        if let Some(a) = st["archive"].get(0) {
            out.push_str(&format!(
                "    wal archive min/max ({}): {}/{}\n",
                s(&a["id"]),
                s(&a["min"]),
                s(&a["max"])
            ));
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
        match st["running"].as_object() {
            Some(r) => out.push_str(&format!(
                "    running now: {} (pid {}, started {})\n",
                s(&r["command"]),
                r["pid"],
                s(&r["start"])
            )),
            None => out.push_str("    running now: no backup or expire\n"),
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
        for b in st["backup"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n    {} backup: {}\n",
                s(&b["type"]),
                s(&b["label"])
            ));
            out.push_str(&format!(
                "        timestamp start/stop: {} / {}\n",
                time(&b["timestamp"]["start"]),
                time(&b["timestamp"]["stop"])
            ));
            out.push_str(&format!(
                "        lsn start/stop: {} / {}\n",
                s(&b["lsn"]["start"]),
                s(&b["lsn"]["stop"])
            ));
            out.push_str(&format!(
                "        wal start/stop: {} / {}\n",
                s(&b["archive"]["start"]),
                s(&b["archive"]["stop"])
            ));
            out.push_str(&format!(
                "        database size: {}, database backup size: {}\n        repo1: backup set size: {}, backup size: {}\n",
                size(&b["info"]["size"]),
                size(&b["info"]["delta"]),
                size(&b["info"]["repository"]["size"]),
                size(&b["info"]["repository"]["delta"])
            ));
            if let Some(prior) = b["prior"].as_str() {
                out.push_str(&format!("        prior: {prior}\n"));
            }
            let refs: Vec<String> = b["reference"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            if !refs.is_empty() {
                out.push_str(&format!(
                    "        backup reference list: {}\n",
                    refs.join(", ")
                ));
            }
            if let Some(annotation) = b["annotation"].as_object() {
                out.push_str("        annotation(s)\n");
                for (k, v) in annotation {
                    out.push_str(&format!("            {k}: {}\n", s(v)));
                }
            }
        }
    }
    out
}
