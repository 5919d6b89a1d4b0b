//! Which files of a data directory belong in a backup, following PostgreSQL's own rules for
//! base backups (basebackup.c): directory contents that are rebuilt or meaningless after a
//! restore are left out, and so are temporary files and relations and the data forks of
//! unlogged relations (their init fork is kept, so they come back empty). Tablespaces are
//! followed through the links in pg_tblspc, taking only this cluster's version directory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{LinkEntry, Owner, Target};
use crate::pg::page::relation_first_block;

/// Directories whose contents are left out (the directory itself is kept).
const EMPTY_DIRS: &[&str] = &[
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_wal",
];

/// Files of the data directory's top level that are left out.
const TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "recovery.signal",
    "standby.signal",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
];

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceFile {
    /// Path inside the backup: `pg_data/...` or `pg_tblspc/OID/...`.
    pub key: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime: i64,
    pub owner: Owner,
    /// For relation files, the block number of the file's first page.
    pub first_block: Option<u32>,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Tree {
    pub targets: BTreeMap<String, Target>,
    pub paths: BTreeMap<String, Owner>,
    pub files: Vec<SourceFile>,
    pub links: BTreeMap<String, LinkEntry>,
}

/// A user tablespace: oid, name, location.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Tablespace {
    pub oid: String,
    pub name: String,
    pub location: String,
}

struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn owner(&mut self, meta: &fs::Metadata) -> Owner {
        let user = self.users.entry(meta.uid()).or_insert_with(|| {
            nix::unistd::User::from_uid(meta.uid().into())
                .ok()
                .flatten()
                .map_or_else(|| meta.uid().to_string(), |u| u.name)
        });
        let user = user.clone();
        let group = self.groups.entry(meta.gid()).or_insert_with(|| {
            nix::unistd::Group::from_gid(meta.gid().into())
                .ok()
                .flatten()
                .map_or_else(|| meta.gid().to_string(), |g| g.name)
        });
        Owner {
            mode: format!("{:04o}", meta.mode() & 0o7777),
            user,
            group: group.clone(),
        }
    }
}

/// Walks the data directory and the tablespaces. `version_dir` is this cluster's directory
/// inside a tablespace (`PG_15_202209061`).
pub fn walk(pg_path: &Path, tablespaces: &[Tablespace], version_dir: &str) -> Result<Tree> {
    let mut tree = Tree::default();
    let mut names = Names {
        users: HashMap::new(),
        groups: HashMap::new(),
    };
    tree.targets.insert(
        "pg_data".into(),
        Target {
            path: pg_path.display().to_string(),
            kind: "path".into(),
            tablespace_id: None,
            tablespace_name: None,
        },
    );
    walk_dir(pg_path, "pg_data", Place::Top, &mut tree, &mut names)?;
    // pgBackRest lists `pg_tblspc`, the parent of the tablespace targets, as a path with the
    // data directory's owner and mode when there are tablespaces.
    if let (false, Some(base)) = (tablespaces.is_empty(), tree.paths.get("pg_data")) {
        tree.paths.insert("pg_tblspc".into(), base.clone());
    }

    for ts in tablespaces {
        let key = format!("pg_tblspc/{}", ts.oid);
        let link_key = format!("pg_data/{key}");
        let location = PathBuf::from(&ts.location);
        let meta = fs::symlink_metadata(pg_path.join(&key))
            .map_err(|e| Error::io("stat tablespace link", &pg_path.join(&key), e))?;
        let owner = names.owner(&meta);
        tree.links.insert(
            link_key,
            LinkEntry {
                destination: ts.location.clone(),
                user: owner.user.clone(),
                group: owner.group.clone(),
            },
        );
        tree.targets.insert(
            key.clone(),
            Target {
                path: ts.location.clone(),
                kind: "link".into(),
                tablespace_id: Some(ts.oid.clone()),
                tablespace_name: Some(ts.name.clone()),
            },
        );
        let top =
            fs::metadata(&location).map_err(|e| Error::io("stat tablespace", &location, e))?;
        tree.paths.insert(key.clone(), names.owner(&top));
        let version = location.join(version_dir);
        if version.is_dir() {
            walk_dir(
                &version,
                &format!("{key}/{version_dir}"),
                Place::Tablespace,
                &mut tree,
                &mut names,
            )?;
        }
    }
    Ok(tree)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The data directory's top level.
    Top,
    /// `base` or a tablespace version directory: children are database directories.
    DatabaseParent,
    /// A database directory (or `global`): relation files live here.
    Database,
    Tablespace,
    Other,
}

fn walk_dir(dir: &Path, key: &str, place: Place, tree: &mut Tree, names: &mut Names) -> Result<()> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        // Dropped while we walk (DROP DATABASE): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", dir, e)),
    };
    tree.paths.insert(key.to_string(), names.owner(&meta));
    let read_dir = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in read_dir {
        // A directory entry that cannot be read may be a file the backup needs: a backup
        // that silently misses it would restore a broken cluster.
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            // The manifest is UTF-8 text: a lossy name would restore under another name.
            return Err(Error::new(
                crate::error::Kind::FileInvalid,
                format!(
                    "unable to back up '{}': its name is not valid UTF-8",
                    entry.path().display()
                ),
            )
            .with_hint("PostgreSQL never creates such names: rename or remove the file"));
        };
        entries.push((name, entry.path()));
    }
    entries.sort();

    // Unlogged relations: every relfilenode with an init fork here.
    let unlogged: HashSet<String> = if place == Place::Database {
        entries
            .iter()
            .filter_map(|(n, _)| n.strip_suffix("_init").map(String::from))
            .collect()
    } else {
        HashSet::new()
    };

    for (name, path) in entries {
        if name == "pg_internal.init" || name.starts_with("pgsql_tmp") {
            continue;
        }
        if place == Place::Top && TOP_FILES.contains(&name.as_str()) {
            continue;
        }
        let child_key = format!("{key}/{name}");
        let link = fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if place == Place::Top && name == "pg_tblspc" {
            // Tablespace links are followed separately; keep the directory itself.
            if let Ok(m) = fs::metadata(&path) {
                tree.paths.insert(child_key, names.owner(&m));
            }
            continue;
        }
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if meta.is_dir() {
            if place == Place::Top && EMPTY_DIRS.contains(&name.as_str()) {
                if link {
                    let dest =
                        fs::read_link(&path).map_err(|e| Error::io("read link", &path, e))?;
                    let owner = names.owner(&meta);
                    tree.links.insert(
                        child_key.clone(),
                        LinkEntry {
                            destination: dest.display().to_string(),
                            user: owner.user,
                            group: owner.group,
                        },
                    );
                }
                // pgBackRest keeps pg_wal/archive_status (without its contents) in a backup.
                let status = path.join("archive_status");
                if name == "pg_wal" {
                    if let Some(m) = fs::metadata(&status).ok().filter(|m| m.is_dir()) {
                        tree.paths
                            .insert(format!("{child_key}/archive_status"), names.owner(&m));
                    }
                }
                tree.paths.insert(child_key, names.owner(&meta));
                continue;
            }
            let child_place = match place {
                Place::Top if name == "base" => Place::DatabaseParent,
                Place::Top if name == "global" => Place::Database,
                // A tablespace's version directory holds database directories.
                Place::DatabaseParent | Place::Tablespace => Place::Database,
                _ => Place::Other,
            };
            walk_dir(&path, &child_key, child_place, tree, names)?;
        } else if meta.is_file() {
            let first_block = if place == Place::Database {
                relation_first_block(&name)
            } else {
                None
            };
            if place == Place::Database {
                if is_temp_relation(&name) {
                    continue;
                }
                if let Some(node) = unlogged_node(&name) {
                    if unlogged.contains(node) && !name.contains("_init") {
                        continue;
                    }
                }
            }
            tree.files.push(SourceFile {
                key: child_key,
                path,
                size: meta.len(),
                mtime: meta.mtime(),
                owner: names.owner(&meta),
                first_block,
            });
        }
        // Sockets, fifos and devices have no place in a backup.
    }
    Ok(())
}

/// `t3_16384`, `t3_16384_fsm`, `t3_16384.1`: temporary relations.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, node)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && node.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// The relfilenode a relation file belongs to.
fn unlogged_node(name: &str) -> Option<&str> {
    let base = name.split('.').next()?;
    Some(base.split('_').next().unwrap_or(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_postgres_exclusion_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let pg = tmp.path();
        let mk = |rel: &str, data: &[u8]| {
            let p = pg.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "backup_label",
            "global/pg_control",
            "global/1262",
            "base/5/16384",
            "base/5/16384_fsm",
            "base/5/16384.1",
            "base/5/16390",
            "base/5/16390_init",
            "base/5/16390_fsm",
            "base/5/t3_16400",
            "base/5/pg_internal.init",
            "base/pgsql_tmp/pgsql_tmp1.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/x.ready",
            "pg_stat_tmp/global.stat",
            "pg_replslot/s/state",
            "postgresql.conf",
        ] {
            mk(f, b"x");
        }
        fs::create_dir_all(pg.join("pg_tblspc")).unwrap();
        let tree = walk(pg, &[], "PG_15_1").unwrap();
        let keys: Vec<&str> = tree.files.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "pg_data/PG_VERSION",
                "pg_data/base/5/16384",
                "pg_data/base/5/16384.1",
                "pg_data/base/5/16384_fsm",
                "pg_data/base/5/16390_init",
                "pg_data/global/1262",
                "pg_data/global/pg_control",
                "pg_data/postgresql.conf",
            ]
        );
        assert!(tree.paths.contains_key("pg_data/pg_wal"));
        assert!(tree.paths.contains_key("pg_data/pg_tblspc"));
        assert!(tree.paths.contains_key("pg_data/pg_wal/archive_status"));
        assert!(!tree.paths.contains_key("pg_tblspc"));
        let rel = tree
            .files
            .iter()
            .find(|f| f.key == "pg_data/base/5/16384.1")
            .unwrap();
        assert_eq!(rel.first_block, Some(crate::pg::page::RELSEG_BLOCKS));
        let ver = tree
            .files
            .iter()
            .find(|f| f.key == "pg_data/PG_VERSION")
            .unwrap();
        assert_eq!(ver.first_block, None);
    }
}
