//! repo-ls: lists a repository path through the Storage interface (so a repository on
//! repo1-host too), with pgBackRest's options and output: one name per line, or a JSON
//! object of name -> {type, size, time} (files), {type, destination} (links) or {type}
//! (paths), with `.` for the listed path itself. Also owns [`repo_path`], the check of a
//! path argument that repo-get shares.

use std::io::Write;

use regex::Regex;

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::storage::{EntryInfo, EntryKind, Storage};

/// A path argument as a storage path relative to the repository: relative as given, or
/// absolute under repo1-path, as pgBackRest accepts it. `..` and `//` are refused.
pub fn repo_path(cfg: &Config, arg: &str) -> Result<String> {
    let invalid = |why: String| {
        Error::new(Kind::ParamInvalid, why).with_hint(
            "give a path relative to the repository, or an absolute one under repo1-path",
        )
    };
    if arg.contains("//") {
        return Err(invalid(format!("path '{arg}' cannot contain //")));
    }
    let trimmed = match arg.trim_end_matches('/') {
        "" if arg.starts_with('/') => "/",
        t => t,
    };
    let rel = if let Some(below_slash) = trimmed.strip_prefix('/') {
        let root = cfg.str("repo1-path").unwrap_or("/");
        if trimmed == root {
            String::new()
        } else if root == "/" {
            below_slash.to_string()
        } else {
            trimmed
                .strip_prefix(&format!("{root}/"))
                .ok_or_else(|| {
                    invalid(format!(
                        "absolute path '{arg}' is not in base path '{root}'"
                    ))
                })?
                .to_string()
        }
    } else {
        trimmed.to_string()
    };
    if rel.split('/').any(|c| c == "..") {
        return Err(invalid(format!("path '{arg}' cannot contain '..'")));
    }
    Ok(rel)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Asc,
    Desc,
    None,
}

pub fn run(cfg: &Config) -> Result<()> {
    let path = match cfg.args.first() {
        Some(arg) => repo_path(cfg, arg)?,
        None => String::new(),
    };
    let filter = cfg
        .str("filter")
        .map(|f| {
            Regex::new(f).map_err(|e| {
                Error::config(format!("invalid value '{f}' for option 'filter': {e}"))
                    .with_hint("give a regular expression, e.g. --filter='(F|D|I)$'")
            })
        })
        .transpose()?;
    let order = match cfg.str("sort") {
        Some("desc") => Order::Desc,
        Some("none") => Order::None,
        _ => Order::Asc,
    };
    let json = cfg.str("output") == Some("json");
    let repo = crate::repo::open(cfg)?;

    let mut found = Vec::new();
    let matches = |name: &str| filter.as_ref().is_none_or(|r| r.is_match(name));
    match repo.info(&path)? {
        Some(info) if info.kind == EntryKind::File => {
            if matches(&path) {
                found.push(EntryInfo {
                    name: ".".into(),
                    ..info
                });
            }
        }
        // A path is reported even when missing, as pgBackRest does (object stores have no
        // directories), so a missing path lists as empty.
        _ => {
            if json && matches(".") {
                found.push(EntryInfo {
                    name: ".".into(),
                    kind: EntryKind::Path,
                    size: 0,
                    mtime: 0,
                    link_destination: None,
                });
            }
            let recurse = cfg.bool("recurse");
            walk(
                repo.as_ref(),
                &path,
                None,
                order,
                recurse,
                &matches,
                &mut found,
            )?;
        }
    }
    print(&found, json)
}

/// Lists `base/sub` into `out` in pgBackRest's order: sorted per directory; with recursion a
/// directory comes before its content, or after it when descending. A name the filter drops
/// still has its content searched.
fn walk(
    repo: &dyn Storage,
    base: &str,
    sub: Option<&str>,
    order: Order,
    recurse: bool,
    matches: &dyn Fn(&str) -> bool,
    out: &mut Vec<EntryInfo>,
) -> Result<()> {
    let dir = match (base, sub) {
        ("", Some(s)) => s.to_string(),
        (b, Some(s)) => format!("{b}/{s}"),
        (b, None) => b.to_string(),
    };
    let mut entries = repo.list_info(&dir)?;
    if order == Order::Desc {
        entries.reverse();
    }
    for mut entry in entries {
        if let Some(s) = sub {
            entry.name = format!("{s}/{}", entry.name);
        }
        let descend = recurse && entry.kind == EntryKind::Path;
        let name = entry.name.clone();
        let shown = matches(&name);
        if descend && order == Order::Desc {
            walk(repo, base, Some(&name), order, recurse, matches, out)?;
        }
        if shown {
            out.push(entry);
        }
        if descend && order != Order::Desc {
            walk(repo, base, Some(&name), order, recurse, matches, out)?;
        }
    }
    Ok(())
}

fn render_json(entries: &[EntryInfo]) -> String {
    let mut text = String::from("{");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::Value::from(e.name.as_str()).to_string());
        text.push_str(&format!(":{{\"type\":\"{}\"", e.kind.name()));
        if e.kind == EntryKind::File {
            text.push_str(&format!(",\"size\":{},\"time\":{}", e.size, e.mtime));
        }
        if e.kind == EntryKind::Link {
            let dest = e.link_destination.as_deref().unwrap_or("");
            text.push_str(&format!(
                ",\"destination\":{}",
                serde_json::Value::from(dest)
            ));
        }
        text.push('}');
    }
    text.push_str("}\n");
    text
}

fn print(entries: &[EntryInfo], json: bool) -> Result<()> {
    let text = if json {
        render_json(entries)
    } else {
        entries.iter().map(|e| format!("{}\n", e.name)).collect()
    };
    write_stdout(text.as_bytes())
}

/// Writes to stdout; a reader that went away (`| head`) is not an error, as in pgBackRest.
pub fn write_stdout(data: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("write", std::path::Path::new("stdout"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_pgbackrests_shape() {
        let e = |name: &str, kind, size, dest: Option<&str>| EntryInfo {
            name: name.into(),
            kind,
            size,
            mtime: 1700000000,
            link_destination: dest.map(String::from),
        };
        let text = render_json(&[
            e(".", EntryKind::Path, 0, None),
            e("backup.info", EntryKind::File, 12, None),
            e("latest", EntryKind::Link, 0, Some("20261122-044646F")),
        ]);
        assert_eq!(
            text,
            "{\".\":{\"type\":\"path\"},\"backup.info\":{\"type\":\"file\",\"size\":12,\
             \"time\":1700000000},\"latest\":{\"type\":\"link\",\"destination\":\
             \"20261122-044646F\"}}\n"
        );
    }
}
