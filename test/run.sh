#!/usr/bin/env bash
# THE test command: `bash test/run.sh [test-name-filter...]` as root, from any directory.
# Sets up the machine (test/setup.sh), then runs every unit and integration test in release
# mode. Exits with cargo's exit code. Extra arguments go to the test binaries (e.g. a filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: must run as root (tests run PostgreSQL and pg_backrest via runuser, and start sshd)" >&2
    exit 1
fi

bash test/setup.sh

locked=()
if [ -f Cargo.lock ]; then
    locked=(--locked)
fi
# 2 test threads: the machine has 2 cores; every test has its own directories and ports.
# test-pause: the expire crash tests stop expire between its steps (a feature, so that a
# release build never reads the variable).
exec cargo test --release "${locked[@]}" --features test-pause -- --test-threads=2 "$@"
