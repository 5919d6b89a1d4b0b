#!/usr/bin/env bash
# The demo: `bash test/demo.sh` as root on a fresh Debian 12, from any directory.
#
# Installs what is missing (Rust through rustup when cargo is absent, then test/setup.sh),
# builds pg_backrest, then in a throwaway directory under /tmp creates a PostgreSQL 15
# cluster that archives its WAL with pg_backrest, runs stanza-create and check, puts a
# pgbench load on it, waits until PostgreSQL reports every segment archived, fetches every
# archived segment back with archive-get and compares it with the original; then takes a full
# and an incremental backup, shows info, runs verify and a restore drill, and finally restores
# the latest backup into a new directory, starts it and compares its data with the original.
#
# Idempotent: every run uses a new directory. The cluster is stopped (pg_ctl -m immediate) and
# the directory removed at exit, also on failure; KEEP=1 keeps the directory for inspection.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: must run as root (installs packages, runs PostgreSQL as postgres via runuser)" >&2
    exit 1
fi

say() { printf '\n==> %s\n' "$*"; }
die() { echo "demo.sh: FAILED: $*" >&2; exit 1; }

# Rust: test/setup.sh only checks for cargo. On a fresh machine, install it with rustup (minimal
# profile) and link cargo into /usr/local/bin so that later shells and test/run.sh find it.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    say "setup: Rust (rustup, minimal profile)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
    for tool in cargo rustc; do
        [ -e "/usr/local/bin/$tool" ] || ln -s "$HOME/.cargo/bin/$tool" "/usr/local/bin/$tool"
    done
fi

say "setup: packages (test/setup.sh)"
bash test/setup.sh

say "build: cargo build --release"
locked=()
if [ -f Cargo.lock ]; then
    locked=(--locked)
fi
# The binary is wherever cargo put it (CARGO_TARGET_DIR, build.target-dir in a cargo config,
# ...): ask cargo, from the build's own artifact messages, rather than assume target/.
BIN=$(cargo build --release "${locked[@]}" --message-format=json-render-diagnostics |
    grep -o '"executable":"[^"]*/pg_backrest"' | tail -n 1 | sed 's/^"executable":"//; s/"$//')
[ -n "$BIN" ] || die "cargo build did not report a pg_backrest executable"
[ -x "$BIN" ] || die "$BIN was not built"

PGBIN=/usr/lib/postgresql/15/bin
STANZA=demo
WORK=$(mktemp -d /tmp/pg_backrest-demo.XXXXXX)
chown postgres:postgres "$WORK"
chmod 0750 "$WORK"
PGDATA="$WORK/pgdata"
SOCKET="$WORK/socket"
REPO="$WORK/repo"
CONF="$WORK/pg_backrest.conf"
FETCH="$WORK/fetched"
STARTED=no

cleanup() {
    local rc=$?
    set +e
    if [ "$STARTED" = yes ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ -f "$WORK/restored/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/restored" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        echo "demo.sh: KEEP=1: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "demo.sh: exit status $rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT

as_pg() { runuser -u postgres -- "$@"; }
# pg_backrest as PostgreSQL would run it: as postgres, with the demo's config and stanza.
pgbr() { as_pg "$BIN" --config="$CONF" --stanza="$STANZA" "$@"; }
sql() { as_pg "$PGBIN/psql" -X -q -At -h "$SOCKET" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -c "$1"; }

# PostgreSQL runs archive_command as postgres: it must be able to execute the binary. When
# the checkout is not readable by postgres, use a copy inside the work directory.
if ! as_pg test -x "$BIN"; then
    install -o postgres -g postgres -m 0755 -D "$BIN" "$WORK/bin/pg_backrest"
    BIN="$WORK/bin/pg_backrest"
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

say "cluster: initdb in $PGDATA (port $PORT, socket in $SOCKET)"
as_pg mkdir -p "$SOCKET"
as_pg install -d -m 0750 "$REPO"
as_pg "$PGBIN/initdb" --data-checksums -A trust -U postgres -E UTF8 --locale=C -D "$PGDATA" >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF

# --- added by pg_backrest test/demo.sh ---
port = $PORT
unix_socket_directories = '$SOCKET'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$BIN --config=$CONF --stanza=$STANZA archive-push %p'
EOF

say "config: $CONF"
as_pg tee "$CONF" >/dev/null <<EOF
[global]
repo1-path=$REPO
lock-path=$WORK/lock
log-path=$WORK/log
log-level-console=info

[$STANZA]
pg1-path=$PGDATA
pg1-socket-path=$SOCKET
pg1-port=$PORT
EOF
cat "$CONF"

say "cluster: start"
STARTED=yes
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgresql.log" -w start >/dev/null \
    || { cat "$WORK/postgresql.log" >&2; die "PostgreSQL did not start"; }
echo "archive_command = $(sql 'show archive_command')"

say "pg_backrest stanza-create"
pgbr stanza-create

say "pg_backrest check"
pgbr check

say "load: pgbench -i -s 5, a 10 second run, and WAL switches"
as_pg "$PGBIN/pgbench" -h "$SOCKET" -p "$PORT" -i -s 5 -q postgres >"$WORK/pgbench-init.log" 2>&1 \
    || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
tail -n 1 "$WORK/pgbench-init.log"
sql 'select pg_switch_wal()' >/dev/null
as_pg "$PGBIN/pgbench" -h "$SOCKET" -p "$PORT" -c 2 -T 10 postgres >"$WORK/pgbench.log" 2>&1 \
    || { cat "$WORK/pgbench.log" >&2; die "pgbench run failed"; }
grep -E '^(number of transactions actually processed|tps)' "$WORK/pgbench.log" || true
sql 'select pg_switch_wal()' >/dev/null
sql 'create table demo_marker as select now() as at' >/dev/null
# The segment the last switch completes: every segment up to it must reach the archive.
LAST=$(sql 'select pg_walfile_name(pg_switch_wal())')
echo "last completed segment: $LAST"

say "waiting for PostgreSQL to archive everything up to $LAST (pg_stat_archiver)"
deadline=$((SECONDS + 180))
while :; do
    row=$(sql "select archived_count, failed_count, coalesce(last_archived_wal, ''),
                      coalesce(last_failed_wal, '') from pg_stat_archiver")
    IFS='|' read -r archived failed last_archived last_failed <<<"$row"
    if [ "$failed" -ne 0 ]; then
        echo "pg_stat_archiver: failed_count=$failed, last_failed_wal=$last_failed" >&2
        tail -n 20 "$WORK/postgresql.log" >&2
        die "archive_command failed"
    fi
    if [[ -n "$last_archived" && ! "$last_archived" < "$LAST" ]]; then
        break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        die "archiving did not reach $LAST within 180s (last archived: ${last_archived:-none})"
    fi
    sleep 0.5
done
echo "pg_stat_archiver: archived_count=$archived failed_count=$failed last_archived_wal=$last_archived"

say "restore drill: archive-get every archived segment and compare"
ARCHIVE_DIR="$REPO/archive/$STANZA"
as_pg mkdir -p "$FETCH"
mapfile -t stored < <(find "$ARCHIVE_DIR" -type f -regextype posix-extended \
    -regex '.*/[0-9A-F]{24}-[0-9a-f]{40}(\.gz)?' | sort)
[ "${#stored[@]}" -gt 0 ] || die "no segments found in $ARCHIVE_DIR"
fetched=0 identical=0 sha_ok=0 compared=0 raw_bytes=0
for path in "${stored[@]}"; do
    file=$(basename "$path")
    seg=${file:0:24}
    sha=${file:25:40}
    # Quiet console: the drill prints one summary instead of a line per segment.
    pgbr --log-level-console=warn archive-get "$seg" "$FETCH/$seg" \
        || die "archive-get $seg failed"
    fetched=$((fetched + 1))
    raw_bytes=$((raw_bytes + $(stat -c %s "$FETCH/$seg")))
    [ "$(sha1sum "$FETCH/$seg" | cut -d' ' -f1)" = "$sha" ] \
        || die "$seg: SHA-1 of the fetched file differs from the one in its stored name"
    sha_ok=$((sha_ok + 1))
    if [ -f "$PGDATA/pg_wal/$seg" ]; then
        compared=$((compared + 1))
        cmp -s "$FETCH/$seg" "$PGDATA/pg_wal/$seg" || die "$seg differs from pg_wal/$seg"
        identical=$((identical + 1))
    fi
    rm -f "$FETCH/$seg"
done
repo_bytes=$(du -sb "$ARCHIVE_DIR" | cut -f1)

say "archive-get of a segment that is not in the archive (PostgreSQL's end of archive: exit 1)"
MISSING=0000000100000099000000FF
set +e
pgbr archive-get "$MISSING" "$FETCH/$MISSING"
rc=$?
set -e
echo "archive-get $MISSING: exit status $rc"
[ "$rc" -eq 1 ] || die "archive-get of a missing segment exited $rc, expected 1"
[ ! -e "$FETCH/$MISSING" ] || die "archive-get of a missing segment created $FETCH/$MISSING"

say "full backup of the running cluster (pg_backup_start, parallel copy, WAL check)"
pgbr --log-level-console=warn --type=full --start-fast --process-max=2 backup
as_pg "$PGBIN/pgbench" -h "$SOCKET" -p "$PORT" -c 2 -T 3 postgres >>"$WORK/pgbench.log" 2>&1 \
    || die "pgbench after the full backup failed (see $WORK/pgbench.log)"
say "incremental backup (only files changed since the full)"
pgbr --log-level-console=warn --type=incr --start-fast backup
expected=$(sql "select count(*) || '|' || sum(abalance) from pgbench_accounts")
sql "select pg_switch_wal()" >/dev/null

say "info"
pgbr --log-level-console=warn info

say "verify: every backup file and archived segment against its SHA-1"
pgbr --log-level-console=warn --process-max=2 verify

say "restore drill: restore the latest backup into a throwaway copy, recover, check, remove"
as_pg mkdir -p "$WORK/drill"
pgbr --log-level-console=warn --drill-path="$WORK/drill" --process-max=2 drill

say "restore into a new directory, start it, and compare its data with the original"
RESTORED="$WORK/restored"
RSOCKET="$WORK/restored-socket"
as_pg mkdir -p "$RSOCKET"
# At log-level-console=warn restore prints nothing (as pgBackRest); its INFO line says what it did.
pgbr --log-level-console=info --pg1-path="$RESTORED" --process-max=2 restore \
    | grep -F "INFO: restore of backup "
RPORT=$((PORT + 1))
printf "port = %s\nunix_socket_directories = '%s'\narchive_mode = off\n" "$RPORT" "$RSOCKET" \
    | as_pg tee -a "$RESTORED/postgresql.auto.conf" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$RESTORED" -l "$WORK/restored.log" -w -t 120 start >/dev/null \
    || die "the restored copy did not start (see $WORK/restored.log)"
state=""
for _ in $(seq 1 600); do
    state=$(as_pg "$PGBIN/psql" -X -q -At -h "$RSOCKET" -p "$RPORT" -d postgres -c "select pg_is_in_recovery()" 2>/dev/null || true)
    [ "$state" = "f" ] && break
    sleep 0.2
done
[ "$state" = "f" ] || die "the restored copy never finished recovery (see $WORK/restored.log)"
got=$(as_pg "$PGBIN/psql" -X -q -At -h "$RSOCKET" -p "$RPORT" -d postgres -c "select count(*) || '|' || sum(abalance) from pgbench_accounts")
as_pg "$PGBIN/pg_ctl" -D "$RESTORED" -m fast -w stop >/dev/null
[ "$got" = "$expected" ] || die "restored data $got differs from the original's $expected"
echo "restored copy holds the original's data: pgbench_accounts count|sum = $got"

say "summary"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
printf '  segments archived (pg_stat_archiver): %s, failed: %s\n' "$archived" "$failed"
printf '  segments in the repository:           %s\n' "${#stored[@]}"
printf '  fetched back with archive-get:        %s (SHA-1 verified: %s)\n' "$fetched" "$sha_ok"
printf '  byte-identical with pg_wal:           %s of %s still in pg_wal\n' "$identical" "$compared"
printf '  repository size (WAL):                %s (archive/%s, with info files)\n' "$(mib "$repo_bytes")" "$STANZA"
printf '  raw WAL size:                         %s\n' "$(mib "$raw_bytes")"
printf '  missing segment:                      archive-get exit 1, as PostgreSQL expects\n'
printf '  backups:                              full + incr, verified, drilled, restored and compared\n'
echo "demo.sh: OK"
