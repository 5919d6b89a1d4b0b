//! Records of WAL that archive-push dropped (archive-push-queue-max exceeded): one small
//! file per segment, `<segment>.dropped`, beside where the segment would have been stored.
//!
//! pgBackRest drops WAL silently; this record is what makes the gap visible to `info`,
//! `verify` and `check` until a backup starts after it. The name matches none of
//! pgBackRest's WAL patterns (`^[0-F]{24}-[0-f]{40}...`), so its archive-get, info and
//! verify pass it by, and its expire (`^[0-F]{24}.*$`) removes it with the WAL around it.

use serde::{Deserialize, Serialize};

use super::RepoLayout;
use crate::error::Result;
use crate::pg::wal::WalName;
use crate::storage::{self, Storage};

pub const SUFFIX: &str = ".dropped";

/// Why and when a segment was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropFacts {
    /// Unix seconds.
    pub time: i64,
    /// Bytes waiting to be pushed when the queue was dropped.
    pub queue_bytes: u64,
    pub queue_max: u64,
}

/// The record's path for `wal` in archive id `archive_id`.
pub fn path(layout: &RepoLayout, archive_id: &str, wal: &WalName) -> String {
    format!("{}/{}{SUFFIX}", layout.wal_dir(archive_id, wal), wal.name)
}

/// Records that `wal` was dropped (atomically; recording it again replaces the record).
pub fn record(
    repo: &dyn Storage,
    layout: &RepoLayout,
    archive_id: &str,
    wal: &WalName,
    facts: &DropFacts,
) -> Result<()> {
    let mut bytes = serde_json::to_vec(facts).unwrap_or_default();
    bytes.push(b'\n');
    storage::write_small(repo, &path(layout, archive_id, wal), &bytes)
}
