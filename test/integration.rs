//! Integration tests for pg_backrest: run the real binary as `postgres` against real
//! PostgreSQL 15 clusters and a real OpenSSH server. Must run as root; see `bash test/run.sh`.
//! Fixtures live in `harness`; `harness_smoke` proves the fixtures themselves work.

mod harness;
mod harness_smoke;
