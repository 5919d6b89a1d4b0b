#!/usr/bin/env bash
# Benchmark (not a test): pg_backrest vs pgBackRest backup and restore, side by side on the same
# pgbench cluster: full backups at process-max 1 and 2 to a local repository and from a
# repository host reaching the database over SSH (pg1-host, a private sshd on 127.0.0.1), a
# no-change incr, a restore, a delta restore of the same full onto its unchanged restored copy,
# an incr after updating 1 % of the rows and a delta restore of it onto a copy restored from the
# full (every restored copy started and checked), each restore cold (page cache dropped) and
# warm (repository and target files cached), and pg_basebackup as a third reference for the
# full backup; then a pg_backrest drill of the full, whose own report shows its overhead.
#
#   bash test/bench/backup.sh             run as root on Debian 12 (installs what is missing)
#
# Environment:
#   SCALES="50 100"  pgbench -i scales, one fresh cluster and fresh repositories each
#   COMPRESS=gz      compress-type of both tools' repositories (gz at level 6, others at default)
#   OUT=file.md      also write the markdown report there
#   ROUNDS=5         how often each restore variant is measured (interleaved, tool order
#                    alternating); the report gives the median and the range
#   FULL_ROUNDS=1    how often each full backup variant is measured, the same way (a single
#                    full backup of a scale-100 cluster varied from 2.7 to 5.6 s between runs
#                    on the benchmark VM, so one run decides nothing)
#   KEEP=1           keep the work directory (/tmp/pgbr-bbench.XXXX) for inspection
#   WARM=0           measure the restores cold only (default 1: each also warm, right after
#                    its files were read into the page cache)
#   RESTORE_ONLY=1   back up only what the restores need (the process-max 2 local fulls and
#                    the incr after the update): no process-max 1 or SSH fulls, no
#                    pg_basebackup, no no-change incr, no drill
#   PREFAULT=1       before each measurement, write to (and free) 6 GiB of memory, so that
#                    every free page the tools get is backed by the host (see "Measures" in
#                    docs/benchmarks.md: on a VM with free page reporting, a page the guest
#                    freed a while ago faults on the host when used again)
#   RESTORE_ON=DIR   restore (and run the write floor) under a fresh directory in DIR instead
#                    of the work directory; RESTORE_ON=/dev/shm restores into memory, where
#                    writing and fsync cost no disk time, to show what each tool costs where
#                    the disk is not the bound (the restored copies are then never "cold":
#                    only the repository is read from disk)
#   PGBIN=...        PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#
# See docs/benchmarks.md ("Backup and restore") for what is measured and how.
set -euo pipefail
# shellcheck source=test/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

SCALES=${SCALES:-"50 100"}
# compress-type of every repository of both tools (none, gz, bz2, lz4, zst); gz runs at level 6,
# the others at each tool's default level for the type (lz4 1, zst 3, bz2 9).
COMPRESS=${COMPRESS:-gz}
KEEP=${KEEP:-0}
ROUNDS=${ROUNDS:-5}
WARM=${WARM:-1}
RESTORE_ONLY=${RESTORE_ONLY:-0}
FULL_ROUNDS=${FULL_ROUNDS:-1}
PREFAULT=${PREFAULT:-0}
RESTORE_ON=${RESTORE_ON:-}
OUT=${OUT:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPER=$ROOT/test/bench/backup_bench.py
BIN=$ROOT/target/release/pg_backrest
T0=$(date +%s)

log() { printf '[%4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf '\nBENCHMARK FAILED: %s\n' "$*" >&2; exit 1; }
as_pg() { runuser -u postgres -- env HOME=/var/lib/postgresql "$@"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, starts sshd, uses runuser)"
for s in $SCALES; do [[ "$s" =~ ^[1-9][0-9]*$ ]] || die "SCALES must be positive integers"; done
case $COMPRESS in none | gz | bz2 | lz4 | zst) ;; *) die "COMPRESS must be none, gz, bz2, lz4 or zst" ;; esac
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$FULL_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "FULL_ROUNDS must be a positive integer"
case $WARM$RESTORE_ONLY in [01][01]) ;; *) die "WARM and RESTORE_ONLY must be 0 or 1" ;; esac
case $RESTORE_ON in "" | /*) ;; *) die "RESTORE_ON must be an absolute path" ;; esac
[ -z "$RESTORE_ON" ] || [ -d "$RESTORE_ON" ] || die "RESTORE_ON=$RESTORE_ON is not a directory"
if [ -n "$OUT" ]; then
    case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
fi

# ---------------------------------------------------------------------------------------------
# 0. Packages, build.
install_bench_packages
for t in "$PGBIN/initdb" "$PGBIN/pgbench" "$PGBIN/pg_basebackup" /usr/sbin/sshd /usr/bin/ssh /usr/bin/time /usr/bin/pgbackrest; do
    [ -x "$t" ] || die "$t is missing"
done

log "cargo build --release"
(cd "$ROOT" && cargo build --release -q) || die "cargo build --release failed"
[ -x "$BIN" ] || die "$BIN was not built"
as_pg "$BIN" version >/dev/null || die "postgres cannot run $BIN (directory permissions?)"

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup.
W=$(mktemp -d /tmp/pgbr-bbench.XXXX)
chown postgres:postgres "$W"
chmod 0755 "$W"
# Where the restored data directories live: RT/s<scale>/... (the work directory by default);
# WORK_DIRS: every directory the clean-up stops clusters in and removes
RT=$W
WORK_DIRS=("$W")
if [ -n "$RESTORE_ON" ]; then
    RT=$(mktemp -d "$RESTORE_ON/pgbr-bbench-restores.XXXX")
    chown postgres:postgres "$RT"
    chmod 0755 "$RT"
    WORK_DIRS+=("$RT")
fi
SSHD_PID=
S=$W/ssh

close_masters() { close_ssh_masters "$S/ssh_config"; }

cleanup() {
    local rc=$? pidfile
    set +e
    trap - EXIT INT TERM
    for pidfile in $(find "${WORK_DIRS[@]}" -maxdepth 3 -name postmaster.pid 2>/dev/null); do
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$pidfile")" -m immediate -w stop >/dev/null 2>&1
    done
    finish_cleanup "$rc" "$S/ssh_config" "${WORK_DIRS[@]:1}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pgdir() { mkdir -p "$@" && chown postgres:postgres "$@"; }
write_conf() { # FILE, then content on stdin
    cat >"$1"
    chown postgres:postgres "$1"
}

pgdir "$W/scratch" "$S"
RES=$W/scratch/results.jsonl
: >"$RES"

# ---------------------------------------------------------------------------------------------
# 1. Private sshd on 127.0.0.1 (as in archive.sh).
SSHPORT=$(free_port)

write_ssh_fixture "$S" "$SSHPORT"
log "sshd on 127.0.0.1:$SSHPORT"
# Under a subreaper: see "reaper" in backup_bench.py (remote CPU accounting).
python3 "$HELPER" reaper /usr/sbin/sshd -D -e -f "$S/sshd_config" </dev/null >>"$S/sshd.log" 2>&1 &
SSHD_PID=$!
for _ in $(seq 100); do
    as_pg ssh -F "$S/ssh_config" -o ConnectTimeout=2 127.0.0.1 true >/dev/null 2>&1 && break
    kill -0 "$SSHD_PID" 2>/dev/null || die "sshd exited: $(cat "$S/sshd.log")"
    sleep 0.1
done
as_pg ssh -F "$S/ssh_config" 127.0.0.1 true || die "ssh as postgres to 127.0.0.1:$SSHPORT fails: $(cat "$S/sshd.log")"

# ---------------------------------------------------------------------------------------------
# 2. Per scale: cluster, repositories, measurements.
WARM_NOW=0
measure() { # TAG CMD... (runs as postgres; dies on error)
    local tag=$1
    shift
    # Every measurement starts alike: no dirty pages left by the previous step (a restored
    # copy, cp -a, rm -rf) to be written back during it and charged to whichever tool runs
    # next, and a cold page cache, so that the repository and the data directory are read
    # from disk as after a night of other work (root only; skipped otherwise) — unless the
    # measurement is a warm one (WARM_NOW=1, after warm_up).
    [ "$PREFAULT" != 1 ] || python3 -c "b = b'\x01' * (6 << 30)"
    sync
    [ "$WARM_NOW" = 1 ] || echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    python3 "$HELPER" run "$RES" "$tag" "$SSHD_PID" postgres -- "$@" || die "$tag failed (see above)"
    close_masters
}
note() { python3 "$HELPER" note "$RES" "$@"; }

# warm_up DIR...: every file under DIR read once, so that it is in the page cache (what a
# drill on a machine that just wrote the backup, or a restore right after another, finds)
warm_up() {
    sync
    find "$@" -type f -print0 | xargs -0 -r cat >/dev/null
}

# warm TAG-PREFIX... : runs restore_into with the page cache left as warm_up made it
warm_restore_into() {
    WARM_NOW=1
    restore_into "$@"
    WARM_NOW=0
}

common() { # NAME -> [global] lines shared by every config of both tools
    cat <<EOF
lock-path=$SD/lock/$1
log-path=$SD/log/$1
log-level-console=off
log-level-file=info
compress-type=$COMPRESS
$([ "$COMPRESS" != gz ] || echo compress-level=6)
EOF
    pgdir "$SD/lock/$1" "$SD/log/$1"
}

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

labels() { ls "$1/backup/bench" 2>/dev/null | grep -E '^[0-9]{8}-[0-9]{6}F' | sort || true; }
new_label() { # REPO BEFORE-LIST -> the one new backup label
    local l
    l=$(comm -13 <(echo "$2") <(labels "$1") | grep . || true)
    [ "$(echo "$l" | grep -c .)" = 1 ] || die "expected one new backup in $1, found: '$l'"
    echo "$l"
}

# backup NAME(ours-local...) TOOL KEY CONF ARGS...: measured backup, repository size noted
backup() {
    local name=$1 tool=$2 key=$3 conf=$4 before label
    shift 4
    local repo=$SD/repo/$name
    before=$(labels "$repo")
    archive_to "$name"
    if [ "$tool" = pg_backrest ]; then
        measure "s$SCALE/$key/$tool" "$BIN" --config="$conf" --stanza=bench "$@" backup
    else
        measure "s$SCALE/$key/$tool" /usr/bin/pgbackrest --config="$conf" --stanza=bench "$@" backup
    fi
    label=$(new_label "$repo" "$before")
    note "s$SCALE/$key/$tool" label "\"$label\""
    note "s$SCALE/$key/$tool" repo_bytes "$(du -sb "$repo/backup/bench/$label" | cut -f1)"
    LAST_LABEL=$label
}

basebackup() {
    local dir=$SD/basebackup
    rm -rf "$dir"
    archive_to ""
    measure "s$SCALE/full-p1-local/pg_basebackup" "$PGBIN/pg_basebackup" -h "$SD/sock" -p "$PGPORT" \
        -U postgres -Ft -D "$dir" --compress=client-gzip:6 -X fetch --checkpoint=fast
    note "s$SCALE/full-p1-local/pg_basebackup" repo_bytes "$(du -sb "$dir" | cut -f1)"
    rm -rf "$dir"
}

# restore_into TOOL CONF LABEL DIR TAG [ARGS...]: measured restore (process-max 2) into DIR
# (plain: DIR empty; --delta: DIR holds a restored copy), checked for the recovery settings
restore_into() {
    local tool=$1 conf=$2 label=$3 dir=$4 tag=$5 exe=/usr/bin/pgbackrest
    shift 5
    [ "$tool" = pg_backrest ] && exe=$BIN
    measure "s$SCALE/$tag/$tool" "$exe" --config="$conf" --stanza=bench --set="$label" \
        --pg1-path="$dir" --process-max=2 "$@" restore
    [ -f "$dir/recovery.signal" ] || die "$tool restore ($tag) wrote no recovery.signal"
    grep -q '^restore_command' "$dir/postgresql.auto.conf" || die "$tool restore ($tag) wrote no restore_command"
}

# restore_plain TOOL CONF LABEL DIR: unmeasured plain restore (process-max 2) into an empty DIR
restore_plain() {
    local tool=$1 conf=$2 label=$3 dir=$4 exe=/usr/bin/pgbackrest
    [ "$tool" = pg_backrest ] && exe=$BIN
    rm -rf "$dir"
    pgdir "$dir"
    chmod 0700 "$dir"
    as_pg "$exe" --config="$conf" --stanza=bench --set="$label" --pg1-path="$dir" --process-max=2 \
        restore >"$W/scratch/restore.out" 2>&1 || die "$tool restore of $label into $dir failed: $(
        cat "$W/scratch/restore.out")"
    close_masters
}

# verify_copy TOOL DIR TAG EXPECTED: start the restored copy on another port, wait until it is
# promoted, compare CHECK_SQL with EXPECTED, stop it, note the result under TAG, remove DIR
verify_copy() {
    local tool=$1 dir=$2 tag=$3 expected=$4 port got t
    local logf=$SD/$tool-$tag-restored.log
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
    [ "$got" = "$expected" ] || die "$tool ($tag): got '$got', expected '$expected' (kept? KEEP=1)"
    log "$tool $tag verified: $got (start + recovery + promotion $t s)"
    note "s$SCALE/$tag/$tool" verify "\"ok, promoted after $t s\""
    [ "$KEEP" = 1 ] || rm -rf "$dir"
}

# verify_or_remove ROUND TOOL DIR TAG EXPECTED: the first round's copies are started and
# checked (verify_copy); later rounds' are only removed
verify_or_remove() {
    local round=$1
    shift
    if [ "$round" = 1 ]; then verify_copy "$@"; else rm -rf "$2"; fi
}

# restore_and_delta ROUND TOOL NAME CONF LABEL: plain restore of LABEL into an empty directory
# (measured), a copy of it taken before it is started, the restore verified; then a delta
# restore of the same LABEL onto the unchanged, never started copy (measured), verified too.
# Floors, measured just before pg_backrest's measurement in the same conditions, each with 2
# processes and nothing else: before the restore, writing the data directory's bytes durably
# (test/bench/write_floor.py); before the delta, reading the copy and hashing it with SHA-1
# (test/bench/read_hash.py), and reading it only (read_hash.py none).
# With WARM=1, the same restore again into another empty directory and the same delta restore
# onto a second copy, each right after its repository (and copy) were read into the cache.
restore_and_delta() {
    local round=$1 tool=$2 name=$3 conf=$4 label=$5 dir=$RD/restore-$3 copy=$RD/delta-same-$3
    local wdir=$RD/restore-warm-$3 wcopy=$RD/delta-same-warm-$3 repo=$SD/repo/$3/backup/bench
    rm -rf "$dir" "$copy" "$wdir" "$wcopy"
    pgdir "$dir"
    chmod 0700 "$dir"
    if [ "$tool" = pg_backrest ]; then
        measure "s$SCALE/restore-p2-local/write only" python3 "$ROOT/test/bench/write_floor.py" 2 "$PGDATA" "$RD/write-floor"
        rm -rf "$RD/write-floor"
    fi
    restore_into "$tool" "$conf" "$label" "$dir" restore-p2-local
    cp -a "$dir" "$copy"
    [ "$WARM" != 1 ] || cp -a "$dir" "$wcopy"
    verify_or_remove "$round" "$tool" "$dir" restore-p2-local "$EXPECTED"
    if [ "$WARM" = 1 ]; then
        pgdir "$wdir"
        chmod 0700 "$wdir"
        warm_up "$repo/$label"
        warm_restore_into "$tool" "$conf" "$label" "$wdir" restore-warm-p2-local
        rm -rf "$wdir"
    fi
    if [ "$tool" = pg_backrest ]; then
        measure "s$SCALE/delta-same-p2-local/read+SHA-1 only" python3 "$ROOT/test/bench/read_hash.py" 2 "$copy"
        measure "s$SCALE/delta-same-p2-local/read only" python3 "$ROOT/test/bench/read_hash.py" 2 "$copy" none
    fi
    restore_into "$tool" "$conf" "$label" "$copy" delta-same-p2-local --delta
    verify_or_remove "$round" "$tool" "$copy" delta-same-p2-local "$EXPECTED"
    if [ "$WARM" = 1 ]; then
        warm_up "$repo/$label" "$wcopy"
        warm_restore_into "$tool" "$conf" "$label" "$wcopy" delta-same-warm-p2-local --delta
        rm -rf "$wcopy"
    fi
}

# delta_incr ROUND TOOL NAME CONF FULL INCR: plain restore of FULL (not measured), then a delta
# restore of INCR onto it (measured), verified against the original after the update
delta_incr() {
    local round=$1 tool=$2 name=$3 conf=$4 full=$5 incr=$6 dir=$RD/delta-1pct-$3
    restore_plain "$tool" "$conf" "$full" "$dir"
    restore_into "$tool" "$conf" "$incr" "$dir" delta-1pct-p2-local --delta
    verify_or_remove "$round" "$tool" "$dir" delta-1pct-p2-local "$EXPECTED2"
    if [ "$WARM" = 1 ]; then
        restore_plain "$tool" "$conf" "$full" "$dir"
        warm_up "$SD/repo/$3/backup/bench/$full" "$SD/repo/$3/backup/bench/$incr" "$dir"
        warm_restore_into "$tool" "$conf" "$incr" "$dir" delta-1pct-warm-p2-local --delta
        rm -rf "$dir"
    fi
}

CHECK_SQL='select sum(abalance), count(*) from pgbench_accounts'

run_scale() { # SCALE INDEX
    SCALE=$1
    local idx=$2
    SD=$W/s$SCALE
    RD=$RT/s$SCALE
    PGDATA=$SD/pg
    pgdir "$SD" "$SD/sock" "$SD/conf" "$SD/repo" "$SD/lock" "$SD/log" "$RD"
    : >"$SD/archive-to"
    chmod 0644 "$SD/archive-to"

    # The archive_command: archive-push %p with each tool/repository named in archive-to (one
    # during a measured backup: the tool being measured). Its name contains "pgbackrest"
    # because pgBackRest's backup insists on it.
    local push=$SD/pg_backrest-and-pgbackrest-archive-push
    cat >"$push" <<EOF
#!/bin/sh
set -e
for t in \$(cat $SD/archive-to); do
    case \$t in
    ours-local) $BIN --config=$SD/conf/ours-local.conf --stanza=bench archive-push "\$1" ;;
    ours-ssh) $BIN --config=$SD/conf/ours-ssh-db.conf --stanza=bench archive-push "\$1" ;;
    theirs-local) /usr/bin/pgbackrest --config=$SD/conf/theirs-local.conf --stanza=bench archive-push "\$1" ;;
    theirs-ssh) /usr/bin/pgbackrest --config=$SD/conf/theirs-ssh-db.conf --stanza=bench archive-push "\$1" ;;
    *) echo "unknown archive target \$t" >&2; exit 1 ;;
    esac
done
EOF
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

    log "scale $SCALE: pgbench -i -s $SCALE, a pgbench load (abalance non-zero), VACUUM, CHECKPOINT"
    as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h "$SD/sock" -p "$PGPORT" -U postgres postgres \
        >"$SD/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$SD/pgbench-init.log")"
    as_pg "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -t 5000 -h "$SD/sock" -p "$PGPORT" -U postgres postgres \
        >"$SD/pgbench-run.log" 2>&1 || die "pgbench failed: $(tail -5 "$SD/pgbench-run.log")"
    as_pg "${PSQL[@]}" -c 'VACUUM' -c 'CHECKPOINT'
    note "s$SCALE/db" pgdata_bytes "$(du -sb --exclude=pg_wal "$PGDATA" | cut -f1)"

    # Configurations. Local: one file per tool. SSH: the repository host's file (pg1-host*)
    # and the database host's file (what the remote tool reads; archive-push from the database
    # side writes straight into the same repository directory, as both are on this machine).
    local pgsec="[bench]
pg1-path=$PGDATA
pg1-socket-path=$SD/sock
pg1-port=$PGPORT"
    local name
    for name in ours-local theirs-local ours-ssh theirs-ssh; do pgdir "$SD/repo/$name"; done
    for name in ours-local theirs-local; do
        write_conf "$SD/conf/$name.conf" <<EOF
[global]
repo1-path=$SD/repo/$name
$(common "$name")

$pgsec
EOF
    done
    for name in ours-ssh theirs-ssh; do
        write_conf "$SD/conf/$name-db.conf" <<EOF
[global]
repo1-path=$SD/repo/$name
$(common "$name-db")

$pgsec
EOF
    done
    write_conf "$SD/conf/ours-ssh.conf" <<EOF
[global]
repo1-path=$SD/repo/ours-ssh
ssh-config=$S/ssh_config
$(common ours-ssh)

[bench]
pg1-host=127.0.0.1
pg1-host-port=$SSHPORT
pg1-host-user=postgres
pg1-host-config=$SD/conf/ours-ssh-db.conf
pg1-host-cmd=$BIN
pg1-path=$PGDATA
EOF
    write_conf "$SD/conf/theirs-ssh.conf" <<EOF
[global]
repo1-path=$SD/repo/theirs-ssh
cmd-ssh=$S/ssh-wrap
$(common theirs-ssh)

[bench]
pg1-host=127.0.0.1
pg1-host-port=$SSHPORT
pg1-host-user=postgres
pg1-host-config=$SD/conf/theirs-ssh-db.conf
pg1-host-cmd=/usr/bin/pgbackrest
pg1-path=$PGDATA
EOF

    log "scale $SCALE: stanza-create (4 repositories; SSH ones from the repository host)"
    for name in ours-local ours-ssh; do
        as_pg "$BIN" --config="$SD/conf/$name.conf" --stanza=bench stanza-create >"$W/scratch/sc.out" 2>&1 ||
            die "pg_backrest stanza-create ($name) failed: $(cat "$W/scratch/sc.out")"
    done
    for name in theirs-local theirs-ssh; do
        as_pg pgbackrest --config="$SD/conf/$name.conf" --stanza=bench stanza-create >"$W/scratch/sc.out" 2>&1 ||
            die "pgbackrest stanza-create ($name) failed: $(cat "$W/scratch/sc.out")"
    done
    close_masters
    # Archiving check (and warm-up): one segment into all four repositories.
    archive_to ours-local theirs-local ours-ssh theirs-ssh
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle

    # Full backups, interleaved: the tool that goes first alternates per scale and variant.
    local j=0 p where first round
    for round in $(seq "$FULL_ROUNDS"); do
        for p in 1 2; do
            for where in local ssh; do
                local key="full-p$p-$where" order=(ours theirs)
                if [ "$RESTORE_ONLY" = 1 ] && [ "$key" != full-p2-local ]; then continue; fi
                [ $(((idx + j) % 2)) = 0 ] || order=(theirs ours)
                log "scale $SCALE: $key, round $round (${order[*]})"
                if [ "$key" = full-p1-local ] && [ "$round" = 1 ] && [ "${order[0]}" = theirs ]; then basebackup; fi
                for first in "${order[@]}"; do
                    if [ "$first" = ours ]; then
                        backup "ours-$where" pg_backrest "$key" "$SD/conf/ours-$where.conf" \
                            --type=full --start-fast --process-max="$p"
                    else
                        backup "theirs-$where" pgBackRest "$key" "$SD/conf/theirs-$where.conf" \
                            --type=full --start-fast --process-max="$p"
                    fi
                    [ "$key" != full-p2-local ] || eval "FULL_${first^^}=\$LAST_LABEL"
                done
                if [ "$key" = full-p1-local ] && [ "$round" = 1 ] && [ "${order[0]}" = ours ]; then basebackup; fi
                j=$((j + 1))
            done
        done
    done

    local order=(ours theirs)
    [ $((idx % 2)) = 0 ] || order=(theirs ours)
    [ "$RESTORE_ONLY" = 1 ] || log "scale $SCALE: incr with no changes (${order[*]})"
    for first in "${order[@]}"; do
        [ "$RESTORE_ONLY" != 1 ] || break
        if [ "$first" = ours ]; then
            backup ours-local pg_backrest incr-p2-local "$SD/conf/ours-local.conf" --type=incr --start-fast --process-max=2
        else
            backup theirs-local pgBackRest incr-p2-local "$SD/conf/theirs-local.conf" --type=incr --start-fast --process-max=2
        fi
    done

    # The original's contents, no load running; the switch sends the last WAL to the archive.
    archive_to ours-local theirs-local
    EXPECTED=$(as_pg "${PSQL[@]}" -c "$CHECK_SQL")
    note "s$SCALE/db" expected "\"$EXPECTED\""
    note "s$SCALE/db" accounts "\"${EXPECTED#*|}\""
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle

    local round
    for round in $(seq "$ROUNDS"); do
        order=(theirs ours)
        [ $(((idx + round) % 2)) = 1 ] || order=(ours theirs)
        log "scale $SCALE: restore of the process-max 2 local full, delta restore onto its copy, round $round (${order[*]})"
        for first in "${order[@]}"; do
            if [ "$first" = ours ]; then
                restore_and_delta "$round" pg_backrest ours-local "$SD/conf/ours-local.conf" "$FULL_OURS"
            else
                restore_and_delta "$round" pgBackRest theirs-local "$SD/conf/theirs-local.conf" "$FULL_THEIRS"
            fi
        done
    done

    # A drill of the same full (pg_backrest only: pgBackRest has none). Its report splits
    # restore, recovery and the checks, so what a drill costs beyond a restore shows apart.
    if [ "$RESTORE_ONLY" != 1 ]; then
        log "scale $SCALE: drill of the process-max 2 local full"
        pgdir "$SD/drill"
        measure "s$SCALE/drill-p2-local/pg_backrest" "$BIN" --config="$SD/conf/ours-local.conf" \
            --stanza=bench --set="$FULL_OURS" --process-max=2 --drill-path="$SD/drill" drill
    fi

    # About 1 % of the rows change (every 100th account), then an incr of each tool (its prior:
    # the no-change incr above). The update's WAL goes to both local archives first.
    log "scale $SCALE: update 1 % of pgbench_accounts, CHECKPOINT, incr (${order[*]})"
    archive_to ours-local theirs-local
    as_pg "${PSQL[@]}" -c 'update pgbench_accounts set abalance = abalance + 1 where aid % 100 = 0' \
        -c 'CHECKPOINT'
    EXPECTED2=$(as_pg "${PSQL[@]}" -c "$CHECK_SQL")
    note "s$SCALE/db" expected2 "\"$EXPECTED2\""
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle
    for first in "${order[@]}"; do
        if [ "$first" = ours ]; then
            backup ours-local pg_backrest incr-1pct-p2-local "$SD/conf/ours-local.conf" --type=incr --start-fast --process-max=2
            INCR_OURS=$LAST_LABEL
        else
            backup theirs-local pgBackRest incr-1pct-p2-local "$SD/conf/theirs-local.conf" --type=incr --start-fast --process-max=2
            INCR_THEIRS=$LAST_LABEL
        fi
    done
    archive_to ours-local theirs-local
    as_pg "${PSQL[@]}" -c 'select pg_switch_wal()' >/dev/null
    archive_idle

    for round in $(seq "$ROUNDS"); do
        order=(theirs ours)
        [ $(((idx + round) % 2)) = 1 ] || order=(ours theirs)
        log "scale $SCALE: delta restore of the 1 % incr onto a copy restored from the full, round $round (${order[*]})"
        for first in "${order[@]}"; do
            if [ "$first" = ours ]; then
                delta_incr "$round" pg_backrest ours-local "$SD/conf/ours-local.conf" "$FULL_OURS" "$INCR_OURS"
            else
                delta_incr "$round" pgBackRest theirs-local "$SD/conf/theirs-local.conf" "$FULL_THEIRS" "$INCR_THEIRS"
            fi
        done
    done

    log "scale $SCALE: done, stopping the cluster"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null
    if [ "$KEEP" != 1 ]; then # free the disk; keep logs
        rm -rf "$PGDATA" "$SD/repo"
    fi
}

i=0
for scale in $SCALES; do
    run_scale "$scale" "$i"
    i=$((i + 1))
done

# ---------------------------------------------------------------------------------------------
# 3. Report.
MACHINE="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(
    awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME")"
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
(cd "$ROOT" && [ -z "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]) || COMMIT="$COMMIT+local changes"
python3 - "$W/scratch/meta.json" <<EOF
import json, sys
json.dump({"date": "$(date -u '+%Y-%m-%d %H:%M UTC')", "machine": "$MACHINE",
           "pg_version": "$("$PGBIN/postgres" --version | awk '{print $3}')",
           "pgbackrest_version": "$(pgbackrest version | awk '{print $2}')",
           "ours_version": "$("$BIN" version | awk '{print $2}')", "commit": "$COMMIT",
           "total": $(($(date +%s) - T0)), "prefault": "$PREFAULT" == "1",
           "compress": "$COMPRESS", "warm": "$WARM" == "1",
           "restore_only": "$RESTORE_ONLY" == "1", "restore_on": "$RESTORE_ON"}, open(sys.argv[1], "w"))
EOF
log "done; report:"
echo
python3 "$HELPER" report "$RES" "$W/scratch/meta.json" ${OUT:+"$OUT"}
