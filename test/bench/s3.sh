#!/usr/bin/env bash
# Benchmark (not a test): pg_backrest vs pgBackRest 2.45, both with repo1-type=s3 against the
# same S3 server (s3s-fs 0.14.1 behind stunnel's TLS, a CA made per run; see lib.sh), on the
# same pgbench cluster: full backup at process-max 2 and restore of it at process-max 2 (every
# first-round restored copy started, recovered through archive-get from S3 and checked), per
# compress type (gz at pgBackRest's default level 6, then lz4 at level 1), with the peak memory
# of each backup at every scale; then async archive-push capacity (a backlog of ready segments
# drained by PostgreSQL's archiver, archive-async=y, process-max 2) through
# archive_async_bench.py on an S3 repository.
#
#   bash test/bench/s3.sh                 run as root on Debian 12 (installs what is missing)
#
# Environment:
#   SCALES="50 100"   pgbench -i scales, one fresh cluster and fresh buckets each
#   COMPRESS="gz lz4" compress types, one repository (bucket) per tool and type; gz runs at
#                     level 6 (pgBackRest's default), the others at each tool's default level
#   TOOLS=ours,theirs which tools run (TOOLS=theirs: pgBackRest only)
#   PARTS=backup,capacity   which parts run
#   ROUNDS=3          how often each restore is measured (interleaved, tool order alternating);
#                     the report gives the median and the range
#   FULL_ROUNDS=1     how often each full backup is measured, the same way
#   SEGMENTS=64       backlog segments of the capacity part
#   CAP_MODES=async   archive-push modes of the capacity part (async, sync)
#   CAP_COMPRESS=gz:6 compress-type:level of the capacity part
#   S3_NODELAY=1      s3s-fs with TCP_NODELAY (test/harness/nodelay.c preloaded, built with gcc);
#                     0: s3s-fs as the tests run it, where a GET often stalls ~40 ms
#   OUT=file.md       also write the markdown report there
#   KEEP=1            keep the work directory (/tmp/pgbr-s3bench.XXXX) for inspection
#   NO_BUILD=1        skip cargo build --release (use target/release/pg_backrest as it is)
#   PGBIN=...         PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# See docs/benchmarks.md ("S3 repository") for what is measured and how.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SCALES=${SCALES:-"50 100"}
COMPRESS=${COMPRESS:-"gz lz4"}
TOOLS=${TOOLS:-ours,theirs}
PARTS=${PARTS:-backup,capacity}
ROUNDS=${ROUNDS:-3}
FULL_ROUNDS=${FULL_ROUNDS:-1}
SEGMENTS=${SEGMENTS:-64}
CAP_MODES=${CAP_MODES:-async}
CAP_COMPRESS=${CAP_COMPRESS:-gz:6}
S3_NODELAY=${S3_NODELAY:-1}
KEEP=${KEEP:-0}
OUT=${OUT:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPER=$ROOT/test/bench/backup_bench.py
ASYNC_HELPER=$ROOT/test/bench/archive_async_bench.py
REPORT=$ROOT/test/bench/s3_bench.py
BIN=$ROOT/target/release/pg_backrest
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '\nBENCHMARK FAILED: %s\n' "$*" >&2; exit 1; }
as_pg() { runuser -u postgres -- env HOME=/var/lib/postgresql "$@"; }
has() { [[ ",$1," == *",$2,"* ]]; } # has LIST ITEM: ITEM is in the comma-separated LIST

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, uses runuser, drops caches)"
for s in $SCALES; do [[ "$s" =~ ^[1-9][0-9]*$ ]] || die "SCALES must be positive integers"; done
for c in $COMPRESS; do
    case $c in none | gz | bz2 | lz4 | zst) ;; *) die "COMPRESS must list none, gz, bz2, lz4 or zst" ;; esac
done
for t in ${TOOLS//,/ }; do
    case $t in ours | theirs) ;; *) die "TOOLS must list ours and/or theirs" ;; esac
done
for p in ${PARTS//,/ }; do
    case $p in backup | capacity) ;; *) die "PARTS must list backup and/or capacity" ;; esac
done
for m in ${CAP_MODES//,/ }; do
    case $m in async | sync) ;; *) die "CAP_MODES must list async and/or sync" ;; esac
done
for v in ROUNDS FULL_ROUNDS SEGMENTS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[ "$SEGMENTS" -ge 4 ] || die "SEGMENTS must be >= 4"
case $S3_NODELAY in 0 | 1) ;; *) die "S3_NODELAY must be 0 or 1" ;; esac
[[ "$CAP_COMPRESS" =~ ^[a-z0-9]+:[0-9]+$ ]] || die "CAP_COMPRESS must be TYPE:LEVEL (e.g. gz:6)"
if [ -n "$OUT" ]; then
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
fi

# ---------------------------------------------------------------------------------------------
# 0. Packages, build.
install_bench_packages stunnel4 openssl curl $([ "$S3_NODELAY" = 0 ] || echo gcc libc6-dev)
for t in "$PGBIN/initdb" "$PGBIN/pgbench" /usr/bin/time /usr/bin/pgbackrest /usr/bin/stunnel; do
    [ -x "$t" ] || die "$t is missing"
done
s3s_fs_binary >/dev/null || die "s3s-fs is missing: run 'bash test/setup.sh' as root (builds s3s-fs 0.14.1 with cargo install, about 3 minutes)"
if [ "${NO_BUILD:-0}" != 1 ] && has "$TOOLS" ours; then
    log "cargo build --release"
    (cd "$ROOT" && nice -n 10 cargo build --release -q) || die "cargo build --release failed"
fi
if has "$TOOLS" ours; then
    [ -x "$BIN" ] || die "$BIN was not built"
    as_pg "$BIN" version >/dev/null || die "postgres cannot run $BIN (directory permissions?)"
fi

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
W=$(mktemp -d /tmp/pgbr-s3bench.XXXX)
chown postgres:postgres "$W"
chmod 0755 "$W"
SSHD_PID=
S3_PID=

cleanup() {
    local rc=$? pidfile pid
    set +e
    trap - EXIT INT TERM
    for pidfile in $(find "$W" -maxdepth 3 -name postmaster.pid 2>/dev/null); do
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1
    done
    # Detached async workers (their own session): found by the work directory in their
    # command line, ended by pid.
    for pid in $(pgrep -u postgres -f -- "$W" 2>/dev/null); do
        kill "$pid" 2>/dev/null
    done
    stop_s3_server
    finish_cleanup "$rc" /dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pgdir() { mkdir -p "$@" && chown postgres:postgres "$@"; }
write_conf() { # FILE, then content on stdin
    cat >"$1"
    chown postgres:postgres "$1"
    chmod 0600 "$1" # it holds the S3 secret
}

pgdir "$W/scratch"
RES=$W/scratch/results.jsonl
: >"$RES"

# ---------------------------------------------------------------------------------------------
# 1. The S3 server (lib.sh), shared by both tools and every part.
start_s3_server "$W/s3server"
log "S3 server: https://localhost:$S3_PORT (s3s-fs $("$(s3s_fs_binary)" --version | awk '{print $2}') behind stunnel, S3_NODELAY=$S3_NODELAY), data in $S3_DATA"

# ---------------------------------------------------------------------------------------------
# 2. Per scale: cluster, one bucket per tool and compress type, measurements.
measure() { # TAG CMD... (runs as postgres; dies on error)
    local tag=$1
    shift
    # As backup.sh: no dirty pages of the step before, a cold page cache.
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    # The S3 server's process tree takes the place of backup.sh's sshd: "remote" CPU and RSS
    # are the server's (s3s-fs, stunnel).
    python3 "$HELPER" run "$RES" "$tag" "$S3_PID" postgres -- "$@" || die "$tag failed (see above)"
}
note() { python3 "$HELPER" note "$RES" "$@"; }

exe() { if [ "$1" = ours ]; then echo "$BIN"; else echo /usr/bin/pgbackrest; fi; }
tool_name() { if [ "$1" = ours ]; then echo pg_backrest; else echo pgBackRest; fi; }

archive_idle() { # wait until the archiver has nothing left to archive, check it never failed
    local deadline=$(($(date +%s) + 300))
    while [ -n "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | head -1)" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "WAL still not archived after 300 s: $(
            as_pg "${PSQL[@]}" -c 'select * from pg_stat_archiver')"
        sleep 0.2
    done
    local failed
    failed=$(as_pg "${PSQL[@]}" -c 'select failed_count from pg_stat_archiver')
    [ "$failed" = 0 ] || die "archive_command failed $failed times: $(tail -20 "$SD/postgres.log")"
}
archive_to() { archive_idle; echo "$*" >"$SD/archive-to"; }

# Where a repository's objects are on disk: bucket sSCALE-NAME, key prefix "repo"
# (repo1-path=/repo).
repo_dir() { echo "$S3_DATA/s$SCALE-$1/repo"; }
labels() { ls "$(repo_dir "$1")/backup/bench" 2>/dev/null | grep -E '^[0-9]{8}-[0-9]{6}F' | sort || true; }
new_label() { # NAME BEFORE-LIST -> the one new backup label
    local l
    l=$(comm -13 <(echo "$2") <(labels "$1") | grep . || true)
    [ "$(echo "$l" | grep -c .)" = 1 ] || die "expected one new backup in bucket $1, found: '$l'"
    echo "$l"
}

# backup TOOL COMPRESS: measured full backup, process-max 2; LAST_LABEL is its label
backup() {
    local tool=$1 c=$2 name=$1-$2 before label tag
    tag="s$SCALE/full-p2-$c/$(tool_name "$tool")"
    before=$(labels "$name")
    archive_to "$name"
    measure "$tag" "$(exe "$tool")" --config="$SD/conf/$name.conf" --stanza=bench \
        --type=full --start-fast --process-max=2 backup
    label=$(new_label "$name" "$before")
    note "$tag" label "\"$label\""
    note "$tag" repo_bytes "$(du -sb "$(repo_dir "$name")/backup/bench/$label" | cut -f1)"
    LAST_LABEL=$label
}

# verify_copy TOOL DIR TAG: start the restored copy on another port, wait until it is
# promoted (recovery fetches the WAL from the tool's S3 archive), compare CHECK_SQL with
# EXPECTED, stop it, note the result under TAG
verify_copy() {
    local tool=$1 dir=$2 tag=$3 port got t logf=$SD/$1-$3-restored.log
    port=$(free_port)
    cat >>"$dir/postgresql.auto.conf" <<EOF
# benchmark: the restored copy runs beside the original
port = $port
listen_addresses = ''
unix_socket_directories = '$SD/sock'
archive_mode = off
EOF
    t=$(date +%s.%N)
    as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$logf" -w -t 600 start >/dev/null ||
        die "$tool ($tag): restored cluster did not start: $(tail -20 "$logf")"
    local deadline=$(($(date +%s) + 600))
    until [ "$(as_pg "$PGBIN/psql" -X -At -h "$SD/sock" -p "$port" -U postgres -d postgres \
        -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$tool ($tag): restored cluster not promoted after 600 s: $(
            tail -20 "$logf")"
        sleep 0.2
    done
    t=$(python3 -c "import time; print(f'{time.time() - $t:.1f}')")
    got=$(as_pg "$PGBIN/psql" -X -At -h "$SD/sock" -p "$port" -U postgres -d postgres -c "$CHECK_SQL")
    as_pg "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null
    [ "$got" = "$EXPECTED" ] || die "$tool ($tag): got '$got', expected '$EXPECTED' (kept? KEEP=1)"
    log "$(tool_name "$tool") $tag verified: $got (start + recovery + promotion $t s)"
    note "s$SCALE/$tag/$(tool_name "$tool")" verify "\"ok, promoted after $t s\""
}

# restore ROUND TOOL COMPRESS LABEL: measured restore (process-max 2) of LABEL into an empty
# directory; the first round's copy is started and checked, every copy removed
restore() {
    local round=$1 tool=$2 c=$3 label=$4 dir=$SD/restore-$2-$3 tag=restore-p2-$3
    rm -rf "$dir"
    pgdir "$dir"
    chmod 0700 "$dir"
    measure "s$SCALE/$tag/$(tool_name "$tool")" "$(exe "$tool")" --config="$SD/conf/$tool-$c.conf" \
        --stanza=bench --set="$label" --pg1-path="$dir" --process-max=2 restore
    [ -f "$dir/recovery.signal" ] || die "$tool restore ($tag) wrote no recovery.signal"
    grep -q '^restore_command' "$dir/postgresql.auto.conf" || die "$tool restore ($tag) wrote no restore_command"
    [ "$round" != 1 ] || verify_copy "$tool" "$dir" "$tag"
    [ "$KEEP" = 1 ] && [ "$round" = 1 ] || rm -rf "$dir"
}

CHECK_SQL='select sum(abalance), count(*) from pgbench_accounts'

run_scale() { # SCALE INDEX
    SCALE=$1
    local idx=$2 name tool c round j=0 first
    SD=$W/s$SCALE
    PGDATA=$SD/pg
    pgdir "$SD" "$SD/sock" "$SD/conf" "$SD/lock" "$SD/log"
    : >"$SD/archive-to"
    chmod 0644 "$SD/archive-to"
    local names=()
    for c in $COMPRESS; do
        for tool in ours theirs; do has "$TOOLS" "$tool" && names+=("$tool-$c"); done
    done

    # The archive_command: archive-push %p to each repository named in archive-to (during a
    # measured backup: the one being backed up). Its name contains "pgbackrest" because
    # pgBackRest's backup insists on it.
    local push=$SD/pg_backrest-and-pgbackrest-archive-push
    {
        echo '#!/bin/sh'
        echo 'set -e'
        echo "for t in \$(cat $SD/archive-to); do"
        echo '    case $t in'
        for name in "${names[@]}"; do
            echo "    $name) $(exe "${name%%-*}") --config=$SD/conf/$name.conf --stanza=bench archive-push \"\$1\" ;;"
        done
        echo '    *) echo "unknown archive target $t" >&2; exit 1 ;;'
        echo '    esac'
        echo 'done'
    } >"$push"
    chmod 0755 "$push"

    PGPORT=$(free_port)
    log "scale $SCALE: initdb + start PostgreSQL on port $PGPORT"
    as_pg "$PGBIN/initdb" -D "$PGDATA" --data-checksums -A trust -U postgres >"$SD/initdb.log" 2>&1 ||
        die "initdb failed: $(tail -5 "$SD/initdb.log")"
    cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$SD/sock'
wal_level = replica
archive_mode = on
archive_command = '$push %p'
archive_timeout = 0
max_wal_size = 4GB
autovacuum = off
synchronous_commit = off
EOF
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$SD/postgres.log" -w start >/dev/null ||
        die "PostgreSQL did not start: $(tail -5 "$SD/postgres.log")"
    PSQL=("$PGBIN/psql" -X -q -At -h "$SD/sock" -p "$PGPORT" -U postgres -d postgres)

    # The same cluster as backup.sh's.
    log "scale $SCALE: pgbench -i -s $SCALE, a pgbench load (abalance non-zero), VACUUM, CHECKPOINT"
    as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$SD/sock" -p "$PGPORT" -U postgres postgres \
        >"$SD/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$SD/pgbench-init.log")"
    as_pg "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -t 5000 -h "$SD/sock" -p "$PGPORT" -U postgres postgres \
        >"$SD/pgbench-run.log" 2>&1 || die "pgbench failed: $(tail -5 "$SD/pgbench-run.log")"
    as_pg "${PSQL[@]}" -c 'VACUUM' -c 'CHECKPOINT'
    note "s$SCALE/db" pgdata_bytes "$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)"

    # One bucket per tool and compress type (fresh per scale), the repository at prefix /repo.
    for name in "${names[@]}"; do
        c=${name#*-}
        s3_create_bucket "s$SCALE-$name"
        pgdir "$SD/lock/$name" "$SD/log/$name"
        write_conf "$SD/conf/$name.conf" <<EOF
[global]
$(s3_repo_options "s$SCALE-$name")
repo1-path=/repo
lock-path=$SD/lock/$name
log-path=$SD/log/$name
log-level-console=off
log-level-file=info
compress-type=$c
$([ "$c" != gz ] || echo compress-level=6)

[bench]
pg1-path=$PGDATA
pg1-socket-path=$SD/sock
pg1-port=$PGPORT
EOF
    done

    log "scale $SCALE: stanza-create (${names[*]})"
    for name in "${names[@]}"; do
        as_pg "$(exe "${name%%-*}")" --config="$SD/conf/$name.conf" --stanza=bench stanza-create \
            >"$W/scratch/sc.out" 2>&1 || die "$name stanza-create failed: $(cat "$W/scratch/sc.out")"
    done
    # Archiving check (and warm-up): one segment into every repository.
    archive_to "${names[@]}"
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle

    # Full backups, interleaved: the tool that goes first alternates per scale and variant.
    declare -gA FULL=()
    for round in $(seq "$FULL_ROUNDS"); do
        for c in $COMPRESS; do
            local order=(ours theirs)
            [ $(((idx + j) % 2)) = 0 ] || order=(theirs ours)
            log "scale $SCALE: full backup, process-max 2, $c, round $round (${order[*]})"
            for tool in "${order[@]}"; do
                has "$TOOLS" "$tool" || continue
                backup "$tool" "$c"
                FULL[$tool-$c]=$LAST_LABEL
            done
            j=$((j + 1))
        done
    done

    # The original's contents, no load running; the switch sends the last WAL to every archive.
    archive_to "${names[@]}"
    EXPECTED=$(as_pg "${PSQL[@]}" -c "$CHECK_SQL")
    note "s$SCALE/db" expected "\"$EXPECTED\""
    note "s$SCALE/db" accounts "\"${EXPECTED#*|}\""
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle

    for round in $(seq "$ROUNDS"); do
        for c in $COMPRESS; do
            local order=(theirs ours)
            [ $(((idx + round + j) % 2)) = 1 ] || order=(ours theirs)
            log "scale $SCALE: restore of the last full, process-max 2, $c, round $round (${order[*]})"
            for tool in "${order[@]}"; do
                has "$TOOLS" "$tool" || continue
                restore "$round" "$tool" "$c" "${FULL[$tool-$c]}"
            done
            j=$((j + 1))
        done
    done

    log "scale $SCALE: done, stopping the cluster"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null
    if [ "$KEEP" != 1 ]; then # free the disk; keep logs
        rm -rf "$PGDATA"
        for name in "${names[@]}"; do rm -rf "${S3_DATA:?}/s$SCALE-$name"; done
    fi
}

if has "$PARTS" backup; then
    i=0
    for scale in $SCALES; do
        run_scale "$scale" "$i"
        i=$((i + 1))
    done
fi

# ---------------------------------------------------------------------------------------------
# 3. Async archive-push capacity: archive_async_bench.py's capacity part (a backlog of
# SEGMENTS ready segments, archive_command switched on, timed until all are archived) with
# an S3 repository: bucket "capacity", one key prefix per variant.
MACHINE="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(
    awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME")"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT+changes"
OURS_VERSION=none
! has "$TOOLS" ours || OURS_VERSION=$("$BIN" version | awk '{print $2}')
CAP=$W/capacity
if has "$PARTS" capacity; then
    pgdir "$CAP"
    s3_create_bucket capacity
    list_json() { python3 -c 'import json,sys; print(json.dumps([x for x in sys.argv[1].split(",") if x]))' "$1"; }
    python3 - "$CAP/plan.json" <<EOF
import json, sys
json.dump({
    "work": "$CAP", "bin": "$BIN", "pgbin": "$PGBIN", "segments": $SEGMENTS,
    "load_segments": 1, "parts": ["capacity"], "tools": $(list_json "$TOOLS"),
    "modes": $(list_json "$CAP_MODES"), "repos": ["s3"], "process_max": 2,
    "compress_type": "${CAP_COMPRESS%%:*}", "compress_level": ${CAP_COMPRESS##*:},
    "lat_calls": 20, "scale": 10, "pgbench_seconds": 10,
    "s3": {"options": """$(s3_repo_options capacity)""",
           "data": "$S3_DATA/capacity"},
    "commit": "$COMMIT", "machine": "$MACHINE",
    "pg_version": "$("$PGBIN/postgres" --version | awk '{print $3}')",
    "pgbackrest_version": "$(pgbackrest version)", "ours_version": "$OURS_VERSION",
}, open(sys.argv[1], "w"), indent=1)
EOF
    chown postgres:postgres "$CAP/plan.json"
    chmod 0600 "$CAP/plan.json"
    log "capacity: $SEGMENTS segments, archive-push ${CAP_MODES//,/ and } to S3 (work directory $CAP)"
    if ! as_pg python3 "$ASYNC_HELPER" run "$CAP/plan.json" "$CAP/results.json"; then
        [ ! -s "$CAP/results.json" ] || python3 "$ASYNC_HELPER" report "$CAP/plan.json" "$CAP/results.json" >&2
        die "capacity part failed (see above)"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 4. Report.
python3 - "$W/scratch/meta.json" <<EOF
import json, sys
json.dump({"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "machine": "$MACHINE",
           "pg_version": "$("$PGBIN/postgres" --version | awk '{print $3}')",
           "pgbackrest_version": "$(pgbackrest version | awk '{print $2}')",
           "s3s_fs_version": "$("$(s3s_fs_binary)" --version | awk '{print $2}')",
           "ours_version": "$OURS_VERSION", "commit": "$COMMIT",
           "total": $(($(date +%s) - T0)), "compress": "$COMPRESS", "rounds": $ROUNDS,
           "full_rounds": $FULL_ROUNDS, "nodelay": $S3_NODELAY == 1, "loadavg": open("/proc/loadavg").read().split()[:3]},
          open(sys.argv[1], "w"))
EOF
log "done; report:"
echo
python3 "$REPORT" report "$RES" "$W/scratch/meta.json" "$CAP" ${OUT:+"$OUT"}
