#!/usr/bin/env bash
# Benchmark (not a test): pg_backrest vs pgBackRest archive-push / archive-get, one process per
# WAL segment as PostgreSQL's archive_command / restore_command run them, to a local repository
# and to a repository reached over SSH (a private sshd on 127.0.0.1).
#
#   bash test/bench/archive.sh            run as root on Debian 12 (installs what is missing)
#
# Environment:
#   SEGMENTS=20    measured WAL segments (one more is pushed/fetched first as a warm-up)
#   OUT=file.md    also write the markdown report there
#   KEEP=1         keep the work directory (/tmp/pgbr-bench.XXXX) for inspection
#   SCALE=10       pgbench -i scale
#   PGBIN=...      PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   THEIRS_FILE_LOG=1  pass --log-level-file=info to pgBackRest on the command line: its
#                  synchronous archive-push/archive-get write no log file otherwise (the level
#                  in the config file is ignored for them), while pg_backrest logs at info
#
# See docs/benchmarks.md for what is measured and how.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SEGMENTS=${SEGMENTS:-20}
SCALE=${SCALE:-10}
KEEP=${KEEP:-0}
OUT=${OUT:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPER=$ROOT/test/bench/archive_bench.py
BIN=$ROOT/target/release/pg_backrest
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '\nBENCHMARK FAILED: %s\n' "$*" >&2; exit 1; }
as_pg() { runuser -u postgres -- env HOME=/var/lib/postgresql "$@"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts sshd, uses runuser)"
[[ "$SEGMENTS" =~ ^[0-9]+$ ]] && [ "$SEGMENTS" -ge 2 ] || die "SEGMENTS must be an integer >= 2"
if [ -n "$OUT" ]; then
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
fi

# ---------------------------------------------------------------------------------------------
# 0. Packages, build.
install_bench_packages
for t in "$PGBIN/initdb" "$PGBIN/pgbench" /usr/sbin/sshd /usr/bin/ssh /usr/bin/time /usr/bin/pgbackrest; do
    [ -x "$t" ] || die "$t is missing"
done

log "cargo build --release"
(cd "$ROOT" && cargo build --release -q) || die "cargo build --release failed"
[ -x "$BIN" ] || die "$BIN was not built"
as_pg "$BIN" version >/dev/null || die "postgres cannot run $BIN (directory permissions?)"

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
W=$(mktemp -d /tmp/pgbr-bench.XXXX)
chown postgres:postgres "$W"
chmod 0755 "$W"
PGDATA=$W/pg
SSHD_PID=

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
    fi
    finish_cleanup "$rc" "$W/ssh/ssh_config"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W"/{sock,staging,conf,lock,log,repo,scratch,ssh}
chown postgres:postgres "$W"/{sock,staging,conf,lock,log,repo,scratch,ssh}

# ---------------------------------------------------------------------------------------------
# 1. Cluster and WAL.
PGPORT=$(free_port)
log "initdb + start PostgreSQL on port $PGPORT (socket $W/sock)"
as_pg "$PGBIN/initdb" -D "$PGDATA" --data-checksums -A trust -U postgres >"$W/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -5 "$W/initdb.log")"
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$W/sock'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $W/staging/%f.part && mv $W/staging/%f.part $W/staging/%f'
archive_timeout = 0
max_wal_size = 1GB
synchronous_commit = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$W/postgres.log" -w start >/dev/null ||
    die "PostgreSQL did not start: $(tail -5 "$W/postgres.log")"
PSQL=("$PGBIN/psql" -X -q -At -h "$W/sock" -p "$PGPORT" -U postgres -d postgres)
SYSID=$("$PGBIN/pg_controldata" "$PGDATA" | awk -F': *' '/Database system identifier/ {print $2}')
log "system identifier $SYSID"

log "pgbench -i -s $SCALE"
as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$W/sock" -p "$PGPORT" -U postgres postgres \
    >"$W/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$W/pgbench-init.log")"
# Only segments begun after initialization are used: the pgbench load (updates, inserts,
# full-page images after checkpoints) is what a busy OLTP server archives.
as_pg "${PSQL[@]}" -c 'CHECKPOINT'
FIRST_SEG=$(as_pg "${PSQL[@]}" -c 'SELECT pg_walfile_name(pg_current_wal_lsn())')
log "using segments after $FIRST_SEG"

need=$((SEGMENTS + 1))
count_usable() {
    find "$W/staging" -maxdepth 1 -type f -name '[0-9A-F]*' ! -name '*.part' -printf '%f\n' |
        grep -E '^[0-9A-F]{24}$' | awk -v f="$FIRST_SEG" '$0 > f' | wc -l
}
log "pgbench load until $need segments are archived naturally"
deadline=$(($(date +%s) + 420))
while [ "$(count_usable)" -lt "$need" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || die "only $(count_usable) segments after 420 s of pgbench"
    as_pg "$PGBIN/pgbench" -n -M prepared -c 4 -j 2 -T 5 -h "$W/sock" -p "$PGPORT" -U postgres postgres \
        >>"$W/pgbench-run.log" 2>&1 || die "pgbench failed: $(tail -5 "$W/pgbench-run.log")"
done
# No more WAL for the staging directory; the cluster keeps running for stanza-create.
as_pg "${PSQL[@]}" -c "ALTER SYSTEM SET archive_command = '/bin/true'" -c 'SELECT pg_reload_conf()' >/dev/null
SEG_SIZE=$(stat -c %s "$(find "$W/staging" -maxdepth 1 -name '[0-9A-F]*' ! -name '*.part' | head -1)")

# Fully written segments only: a segment closed early (pg_switch_wal, archive_timeout, shutdown)
# is mostly zeros and compresses absurdly well. None is expected here (nothing switches), but
# check: gzip ratio above 50:1 means "mostly zeros" -> discarded.
SEGS=()
declare -A GZ
ratios=()
for f in $(find "$W/staging" -maxdepth 1 -type f -printf '%f\n' | grep -E '^[0-9A-F]{24}$' | sort); do
    [[ "$f" > "$FIRST_SEG" ]] || continue
    [ "${#SEGS[@]}" -lt "$need" ] || break
    gz=$(gzip -6 -c "$W/staging/$f" | wc -c)
    ratio=$(python3 -c "print(f'{$SEG_SIZE/$gz:.2f}')")
    if python3 -c "import sys; sys.exit(0 if $SEG_SIZE/$gz > 50 else 1)"; then
        log "discarding $f: gzip ratio $ratio:1 (mostly zeros, closed early)"
        continue
    fi
    SEGS+=("$W/staging/$f")
    GZ[$f]=$gz
    ratios+=("$ratio")
done
[ "${#SEGS[@]}" -eq "$need" ] || die "only ${#SEGS[@]} usable segments (need $need)"
log "segments ${SEGS[0]##*/} .. ${SEGS[-1]##*/}: average gzip -6 ratio $(
    python3 -c "import statistics,sys; print(f'{statistics.mean(map(float,sys.argv[1:])):.2f}')" "${ratios[@]}"):1"

# ---------------------------------------------------------------------------------------------
# 2. Private sshd on 127.0.0.1.
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
# 3. Configurations: a fresh repository per tool and variant.
PG_SECTION="[bench]
pg1-path=$PGDATA
pg1-socket-path=$W/sock
pg1-port=$PGPORT"

# common NAME -> [global] lines shared by every config of both tools
common() {
    cat <<EOF
lock-path=$W/lock/$1
log-path=$W/log/$1
log-level-console=off
log-level-file=info
compress-type=gz
compress-level=6
EOF
}

write_conf() { # FILE, then content on stdin
    cat >"$1"
    chown postgres:postgres "$1"
}

# Local repositories, and the repository-side configs of the SSH variants (these also carry
# [bench] so stanza-create can run on the repository side, as pgBackRest requires).
for name in ours-local theirs-local ours-ssh theirs-ssh ours-ssh0; do
    mkdir -p "$W/repo/$name" "$W/lock/$name" "$W/log/$name"
    chown postgres:postgres "$W/repo/$name" "$W/lock/$name" "$W/log/$name"
    write_conf "$W/conf/$name.conf" <<EOF
[global]
repo1-path=$W/repo/$name
$(common "$name")

$PG_SECTION
EOF
done
# Database-side configs of the SSH variants.
for name in ours-ssh ours-ssh0; do
    persist=30
    [ "$name" = ours-ssh0 ] && persist=0
    mkdir -p "$W/lock/$name-db" "$W/log/$name-db"
    chown postgres:postgres "$W/lock/$name-db" "$W/log/$name-db"
    write_conf "$W/conf/$name-db.conf" <<EOF
[global]
repo1-host=127.0.0.1
repo1-host-port=$SSHPORT
repo1-host-user=postgres
repo1-host-config=$W/conf/$name.conf
repo1-host-cmd=$BIN
ssh-config=$S/ssh_config
ssh-persist=$persist
$(common "$name-db")

$PG_SECTION
EOF
done
mkdir -p "$W/lock/theirs-ssh-db" "$W/log/theirs-ssh-db"
chown postgres:postgres "$W/lock/theirs-ssh-db" "$W/log/theirs-ssh-db"
write_conf "$W/conf/theirs-ssh-db.conf" <<EOF
[global]
repo1-host=127.0.0.1
repo1-host-port=$SSHPORT
repo1-host-user=postgres
repo1-host-config=$W/conf/theirs-ssh.conf
repo1-host-cmd=/usr/bin/pgbackrest
cmd-ssh=$S/ssh-wrap
$(common theirs-ssh-db)

$PG_SECTION
EOF

log "stanza-create (5 repositories)"
for name in ours-local ours-ssh ours-ssh0; do
    as_pg "$BIN" --config="$W/conf/$name.conf" --stanza=bench stanza-create >"$W/scratch/sc.out" 2>&1 ||
        die "pg_backrest stanza-create ($name) failed: $(cat "$W/scratch/sc.out")"
done
for name in theirs-local theirs-ssh; do
    as_pg pgbackrest --config="$W/conf/$name.conf" --stanza=bench stanza-create >"$W/scratch/sc.out" 2>&1 ||
        die "pgbackrest stanza-create ($name) failed: $(cat "$W/scratch/sc.out")"
done

# ---------------------------------------------------------------------------------------------
# 4. Measure (as postgres).
OURS_VERSION=$("$BIN" version | awk '{print $2}')
THEIRS_VERSION=$(pgbackrest version)
PG_VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')
MACHINE="$(nproc) cores, $(python3 -c 'import platform; print(platform.processor() or platform.machine())'), $(
    awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(
    awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME")"

segs_json=$(printf '%s\n' "${SEGS[@]}" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')
gz_json=$(for f in "${!GZ[@]}"; do echo "$f ${GZ[$f]}"; done |
    python3 -c 'import json,sys; print(json.dumps({l.split()[0]: int(l.split()[1]) for l in sys.stdin if l.strip()}))')
ours() { printf '["%s", "--config=%s", "--stanza=bench"]' "$BIN" "$W/conf/$1.conf"; }
theirs() {
    printf '["/usr/bin/pgbackrest", "--config=%s", "--stanza=bench"%s]' "$W/conf/$1.conf" \
        "$([ "${THEIRS_FILE_LOG:-0}" = 1 ] && echo ', "--log-level-file=info"')"
}
write_conf "$W/plan.json" <<EOF
{
 "scratch": "$W/scratch",
 "segments": $segs_json,
 "segment_size": $SEG_SIZE,
 "gzip_sizes": $gz_json,
 "system_id": "$SYSID",
 "machine": "$MACHINE",
 "pg_version": "$PG_VERSION",
 "pgbackrest_version": "$THEIRS_VERSION",
 "ours_version": "$OURS_VERSION",
 "theirs_file_log": $([ "${THEIRS_FILE_LOG:-0}" = 1 ] && echo true || echo false),
 "variants": [
  {"name": "ours-local", "tool": "pg_backrest", "variant": "local", "compare_with": "theirs-local",
   "repo": "$W/repo/ours-local", "cmd": $(ours ours-local)},
  {"name": "theirs-local", "tool": "pgBackRest", "variant": "local",
   "repo": "$W/repo/theirs-local", "cmd": $(theirs theirs-local)},
  {"name": "ours-ssh", "tool": "pg_backrest", "variant": "ssh (ssh-persist=30)", "compare_with": "theirs-ssh",
   "repo": "$W/repo/ours-ssh", "cmd": $(ours ours-ssh-db)},
  {"name": "theirs-ssh", "tool": "pgBackRest", "variant": "ssh",
   "repo": "$W/repo/theirs-ssh", "cmd": $(theirs theirs-ssh-db)},
  {"name": "ours-ssh0", "tool": "pg_backrest", "variant": "ssh (ssh-persist=0)", "compare_with": "theirs-ssh",
   "repo": "$W/repo/ours-ssh0", "cmd": $(ours ours-ssh0-db)}
 ]
}
EOF
log "measuring"
as_pg python3 "$HELPER" measure "$W/plan.json" "$W/results.json" || die "measurement failed (see above)"

# ---------------------------------------------------------------------------------------------
# 5./6. Report.
log "done; report:"
echo
python3 "$HELPER" report "$W/plan.json" "$W/results.json" ${OUT:+"$OUT"}
log "total run time $(($(date +%s) - T0)) s"
