#!/usr/bin/env bash
# Benchmark (not a test): asynchronous archiving, pg_backrest vs pgBackRest 2.45, both driven by
# a real PostgreSQL 15 (its archiver runs archive_command, its startup process restore_command),
# at the same process-max, to a local repository and to one reached over SSH (a private sshd on
# 127.0.0.1). Parts:
#   capacity  a backlog of SEGMENTS ready segments drained by the archiver (sync and async)
#   latency   archive_command for a segment the async worker already pushed (in capacity)
#   load      a bulk load from its start until all the WAL it wrote is archived
#   recovery  a base backup recovered through restore_command over SEGMENTS segments
# and the peak memory of the async workers wherever they run.
#
#   bash test/bench/archive_async.sh      run as root on Debian 12 (installs what is missing)
#
# Environment:
#   SEGMENTS=64        backlog segments (capacity, recovery)
#   LOAD_SEGMENTS=32   WAL the bulk load writes, in segments (about)
#   PARTS=capacity,load,recovery   which parts run (latency runs inside capacity)
#   TOOLS=ours,theirs  MODES=sync,async  REPOS=local,ssh   which variants run
#   PROCESS_MAX=2      process-max of both tools
#   COMPRESS=gz:6      compress-type:compress-level of both tools
#   LAT_CALLS=50       archive-push calls timed for the latency part, per async variant
#   SCALE=10           pgbench -i scale (the backlog's first segments)
#   PGBENCH_SECONDS=10 pgbench run after it (the next ones); bulk inserts fill the rest
#   OUT=file.md        also write the markdown report there
#   KEEP=1             keep the work directory (/tmp/pgbr-async.XXXX) for inspection
#   NO_BUILD=1         skip cargo build --release (use target/release/pg_backrest as it is)
#   PGBIN=...          PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# See docs/benchmarks.md ("Asynchronous archiving") for what is measured and how.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SEGMENTS=${SEGMENTS:-64}
LOAD_SEGMENTS=${LOAD_SEGMENTS:-32}
PARTS=${PARTS:-capacity,load,recovery}
TOOLS=${TOOLS:-ours,theirs}
MODES=${MODES:-sync,async}
REPOS=${REPOS:-local,ssh}
PROCESS_MAX=${PROCESS_MAX:-2}
COMPRESS=${COMPRESS:-gz:6}
LAT_CALLS=${LAT_CALLS:-50}
SCALE=${SCALE:-10}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-10}
KEEP=${KEEP:-0}
OUT=${OUT:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPER=$ROOT/test/bench/archive_async_bench.py
BIN=$ROOT/target/release/pg_backrest
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '\nBENCHMARK FAILED: %s\n' "$*" >&2; exit 1; }
as_pg() { runuser -u postgres -- env HOME=/var/lib/postgresql "$@"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts sshd, uses runuser)"
for v in SEGMENTS LOAD_SEGMENTS PROCESS_MAX LAT_CALLS SCALE; do
    [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "$v must be a positive integer"
done
[ "$SEGMENTS" -ge 4 ] || die "SEGMENTS must be >= 4"
[[ "$PGBENCH_SECONDS" =~ ^[0-9]+$ ]] || die "PGBENCH_SECONDS must be an integer"
[[ "$COMPRESS" =~ ^[a-z0-9]+:[0-9]+$ ]] || die "COMPRESS must be TYPE:LEVEL (e.g. gz:6, lz4:1)"
if [ -n "$OUT" ]; then
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
fi

# ---------------------------------------------------------------------------------------------
# 0. Packages, build.
install_bench_packages
for t in "$PGBIN/initdb" "$PGBIN/pgbench" "$PGBIN/pg_basebackup" /usr/sbin/sshd /usr/bin/ssh /usr/bin/pgbackrest; do
    [ -x "$t" ] || die "$t is missing"
done
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && nice -n 10 cargo build --release -q) || die "cargo build --release failed"
fi
[ -x "$BIN" ] || die "$BIN was not built"
as_pg "$BIN" version >/dev/null || die "postgres cannot run $BIN (directory permissions?)"

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
W=$(mktemp -d /tmp/pgbr-async.XXXX)
chown postgres:postgres "$W"
chmod 0755 "$W"
SSHD_PID=

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # Every cluster the helper started (primary, recovered copies).
    for pid_file in $(find "$W" -maxdepth 3 -name postmaster.pid 2>/dev/null); do
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pid_file")" -m immediate -w stop >/dev/null 2>&1
    done
    # Detached async workers (their own session): found by the work directory in their
    # command line, ended by pid.
    for pid in $(pgrep -u postgres -f -- "$W" 2>/dev/null); do
        kill "$pid" 2>/dev/null
    done
    finish_cleanup "$rc" "$W/ssh/ssh_config"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W"/ssh
chown postgres:postgres "$W"/ssh

# ---------------------------------------------------------------------------------------------
# 1. Private sshd on 127.0.0.1 (the repository host of the SSH variants).
SSHPORT=$(free_port)
S=$W/ssh
write_ssh_fixture "$S" "$SSHPORT"
log "sshd on 127.0.0.1:$SSHPORT"
/usr/sbin/sshd -D -e -f "$S/sshd_config" </dev/null >>"$S/sshd.log" 2>&1 &
SSHD_PID=$!
for _ in $(seq 100); do
    as_pg ssh -F "$S/ssh_config" -o ConnectTimeout=2 127.0.0.1 true >/dev/null 2>&1 && break
    kill -0 "$SSHD_PID" 2>/dev/null || die "sshd exited: $(cat "$S/sshd.log")"
    sleep 0.1
done
as_pg ssh -F "$S/ssh_config" 127.0.0.1 true || die "ssh as postgres to 127.0.0.1:$SSHPORT fails: $(cat "$S/sshd.log")"

# ---------------------------------------------------------------------------------------------
# 2. Plan, then everything else as postgres in the helper.
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT+changes"
MACHINE="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(
    awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME")"
list_json() { python3 -c 'import json,sys; print(json.dumps([x for x in sys.argv[1].split(",") if x]))' "$1"; }
cat >"$W/plan.json" <<EOF
{
 "work": "$W",
 "bin": "$BIN",
 "pgbin": "$PGBIN",
 "segments": $SEGMENTS,
 "load_segments": $LOAD_SEGMENTS,
 "parts": $(list_json "$PARTS"),
 "tools": $(list_json "$TOOLS"),
 "modes": $(list_json "$MODES"),
 "repos": $(list_json "$REPOS"),
 "process_max": $PROCESS_MAX,
 "compress_type": "${COMPRESS%%:*}",
 "compress_level": ${COMPRESS##*:},
 "lat_calls": $LAT_CALLS,
 "scale": $SCALE,
 "pgbench_seconds": $PGBENCH_SECONDS,
 "ssh_port": $SSHPORT,
 "ssh_config": "$S/ssh_config",
 "ssh_wrap": "$S/ssh-wrap",
 "commit": "$COMMIT",
 "machine": "$MACHINE",
 "pg_version": "$("$PGBIN/postgres" --version | awk '{print $3}')",
 "pgbackrest_version": "$(pgbackrest version)",
 "ours_version": "$("$BIN" version | awk '{print $2}')"
}
EOF
chown postgres:postgres "$W/plan.json"
log "measuring (work directory $W)"
if ! as_pg python3 "$HELPER" run "$W/plan.json" "$W/results.json"; then
    if [ -s "$W/results.json" ]; then
        echo "partial report (what was measured before the failure):" >&2
        python3 "$HELPER" report "$W/plan.json" "$W/results.json" >&2
    fi
    die "measurement failed (see above)"
fi

log "done; report:"
echo
python3 "$HELPER" report "$W/plan.json" "$W/results.json" ${OUT:+"$OUT"}
log "total run time $(($(date +%s) - T0)) s"
