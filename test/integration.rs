//! Integration tests for pg_backrest: run the real binary as `postgres` against real
//! PostgreSQL 15 clusters and a real OpenSSH server. Must run as root; see `bash test/run.sh`.
//! Fixtures live in `harness` (servers, processes) and `fixture` (a ready stanza);
//! `harness_smoke` proves the fixtures themselves work.

mod admin_commands;
pub mod archive;
mod archive_async;
mod archive_drop;
mod archive_get_async;
mod archive_validate;
pub mod backup;
mod backup_ssh;
mod compat_archive;
mod compat_backup;
mod compress;
mod config_compat;
mod config_errors;
mod conventions;
mod drill;
mod expire;
mod fixture;
mod harness;
mod harness_smoke;
mod hooks;
mod info_json;
mod locks;
mod monitoring;
mod ownership;
mod remote;
mod restore_delta;
mod restore_targets;
mod s3;
mod s3_storage;
mod signals;
mod stanza;
mod timeline;
mod verify;
