# Shared pieces of the benchmark scripts (sourced by archive.sh, archive_async.sh, backup.sh and
# s3.sh). They expect the caller's as_pg and, for the cleanup pieces, W (the work directory),
# KEEP and SSHD_PID.

# install_bench_packages [PACKAGE...]: installs what the benchmarks need (and the packages
# named) and is missing, without letting package scripts start services. Uses the caller's
# log and die.
install_bench_packages() {
    local p policy=/usr/sbin/policy-rc.d own_policy=no ok=yes missing=()
    installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
    for p in pgbackrest openssh-server openssh-client postgresql-15 time python3 "$@"; do
        installed "$p" || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log "installing ${missing[*]}"
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=yes
    fi
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}" || ok=no
    [ "$own_policy" = no ] || rm -f "$policy"
    [ "$ok" = yes ] || die "apt-get install ${missing[*]} failed"
}

# write_ssh_fixture DIR PORT: keys, sshd_config and client ssh_config for a private sshd on
# 127.0.0.1:PORT that the postgres user logs into with its own key, and an ssh wrapper for
# pgBackRest's cmd-ssh (it has no ssh-config option). Starting sshd is left to the caller.
write_ssh_fixture() {
    local S=$1 SSHPORT=$2
    ssh-keygen -q -N '' -t ed25519 -C pgbr-bench-host -f "$S/host_ed25519"
    ssh-keygen -q -N '' -t ed25519 -C pgbr-bench-client -f "$S/client_ed25519"
    chown postgres:postgres "$S/client_ed25519" "$S/client_ed25519.pub"
    chmod 0600 "$S/client_ed25519"
    cp "$S/client_ed25519.pub" "$S/authorized_keys"
    echo "[127.0.0.1]:$SSHPORT $(cut -d' ' -f1,2 "$S/host_ed25519.pub")" >"$S/known_hosts"
    chmod 0644 "$S/authorized_keys" "$S/known_hosts"
    cat >"$S/sshd_config" <<EOF
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $S/host_ed25519
AuthorizedKeysFile $S/authorized_keys
PidFile $S/sshd.pid
UsePAM yes
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PrintMotd no
MaxSessions 64
MaxStartups 100:30:200
LogLevel ERROR
EOF
    cat >"$S/ssh_config" <<EOF
Host 127.0.0.1
  Port $SSHPORT
  User postgres
  IdentityFile $S/client_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $S/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
EOF
    chmod 0644 "$S/ssh_config"
    # pgBackRest has no ssh-config option; cmd-ssh points at this wrapper instead.
    printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$S/ssh_config" >"$S/ssh-wrap"
    chmod 0755 "$S/ssh-wrap"
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
}

kill_tree() { # kill a process and all its descendants, by pid
    local pid=$1 child
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill_tree "$child"; done
    kill "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# close_ssh_masters SSH_CONFIG: exits pg_backrest's persistent SSH masters, whose control
# sockets (ssh-<hash>/ directories) live under its lock-path, somewhere in $W.
close_ssh_masters() {
    local sock
    for sock in $(find "$W" -path "$W/ssh" -prune -o -type s -path '*/ssh-*' -print 2>/dev/null); do
        as_pg ssh -F "$1" -S "$sock" -O exit 127.0.0.1 >/dev/null 2>&1 || true
    done
}

# finish_cleanup RC SSH_CONFIG [DIR...]: the end of every benchmark's EXIT trap, once its
# clusters are stopped: SSH masters closed, the private sshd killed, $W and every DIR kept
# (KEEP=1) or removed, exit RC.
finish_cleanup() {
    local rc=$1 ssh_config=$2 dir
    shift 2
    close_ssh_masters "$ssh_config"
    if [ -n "$SSHD_PID" ]; then
        kill_tree "$SSHD_PID"
        wait "$SSHD_PID" 2>/dev/null
    fi
    for dir in "$W" "$@"; do
        if [ "$KEEP" = 1 ]; then
            echo "work directory kept: $dir" >&2
        else
            rm -rf "$dir"
        fi
    done
    exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# The S3 server of s3.sh: the shell twin of test/harness/s3.rs without its fault proxy.
#
#   client --HTTPS--> stunnel (127.0.0.1:$S3_PORT) --HTTP--> s3s-fs (127.0.0.1, another port)
#
# s3s-fs 0.14.1 (test/setup.sh builds it) stores bucket b, key k as the file $S3_DATA/b/k and
# checks SigV4 signatures made with a random key and secret; stunnel (Debian's stunnel4)
# terminates TLS with a certificate for DNS:localhost and IP:127.0.0.1 signed by a CA made for
# this run ($S3_CA, readable by postgres). Clients connect to "localhost" (pgBackRest 2.45
# matches only DNS names of the subjectAltName) with path-style URIs (no wildcard name for
# virtual-hosted buckets). Without the harness's proxy, a GET or HEAD of a bare prefix gets
# s3s-fs's 500 instead of S3's 404 (pgBackRest's repo-ls makes one; the benchmarked commands
# do not). With S3_NODELAY=1, s3s-fs runs with test/harness/nodelay.c preloaded (built here
# with gcc): TCP_NODELAY on its connections, which it does not set itself (see nodelay.c).

# s3s_fs_binary: the s3s-fs on PATH or in ~/.cargo/bin (where the harness looks for it too)
s3s_fs_binary() {
    local b
    for b in "$(command -v s3s-fs 2>/dev/null || true)" "$HOME/.cargo/bin/s3s-fs" /root/.cargo/bin/s3s-fs; do
        if [ -n "$b" ] && [ -x "$b" ]; then
            echo "$b"
            return 0
        fi
    done
    return 1
}

# start_s3_server DIR: CA, certificate, credentials and stunnel config under DIR (created),
# then s3s-fs and stunnel on free ports, both children of one `sh` whose pid is S3_PID (so
# that a process-tree sampler rooted there sees the whole server). Sets S3_PORT (HTTPS),
# S3_KEY, S3_SECRET, S3_CA, S3_DATA and S3_PID; waits until HTTPS answers. Reads S3_NODELAY
# (above). Uses the caller's die.
start_s3_server() {
    local d=$1 bin backend t code preload=
    bin=$(s3s_fs_binary) || die "s3s-fs not found on PATH nor in ~/.cargo/bin: run 'bash test/setup.sh' as root (it builds s3s-fs 0.14.1 with cargo install, about 3 minutes, once per machine)"
    for t in stunnel openssl curl; do
        command -v "$t" >/dev/null || die "$t is missing (run 'bash test/setup.sh' as root)"
    done
    mkdir -p "$d/data"
    chmod 0755 "$d" "$d/data"
    S3_DATA=$d/data
    S3_CA=$d/ca.crt
    # P-256 keys: generated at once.
    (
        cd "$d" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout ca.key -out ca.crt -days 3650 -subj '/CN=pg_backrest bench CA' \
                -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout server.key -out server.csr -subj /CN=localhost &&
            printf '%s\n' 'subjectAltName = DNS:localhost, IP:127.0.0.1' \
                'basicConstraints = critical, CA:FALSE' \
                'keyUsage = critical, digitalSignature, keyEncipherment' \
                'extendedKeyUsage = serverAuth' >server.ext &&
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
                -set_serial "0x$(openssl rand -hex 8)" -days 3650 -extfile server.ext \
                -out server.crt
    ) >"$d/openssl.log" 2>&1 || die "making the S3 server's certificates failed: $(cat "$d/openssl.log")"
    chmod 0644 "$d/ca.crt"
    chmod 0600 "$d/ca.key" "$d/server.key"
    if [ "${S3_NODELAY:-0}" = 1 ]; then
        command -v gcc >/dev/null || die "S3_NODELAY=1 needs gcc (apt-get install gcc), or run with S3_NODELAY=0"
        gcc -O2 -Wall -shared -fPIC -o "$d/nodelay.so" "$(dirname "${BASH_SOURCE[0]}")/../harness/nodelay.c" -ldl \
            >"$d/gcc.log" 2>&1 || die "building nodelay.so failed: $(cat "$d/gcc.log")"
        preload=$d/nodelay.so
    fi
    S3_KEY=$(openssl rand -hex 10 | tr a-f A-F)
    S3_SECRET=$(openssl rand -hex 20 | tr a-f A-F)
    backend=$(free_port)
    S3_PORT=$(free_port)
    cat >"$d/stunnel.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = warning
[s3]
accept = 127.0.0.1:$S3_PORT
connect = 127.0.0.1:$backend
cert = $d/server.crt
key = $d/server.key
TIMEOUTclose = 0
EOF
    # The credentials reach sh through its environment (s3s-fs has no other way than argv).
    S3FS=$bin S3DIR=$d S3BACKEND=$backend S3K=$S3_KEY S3S=$S3_SECRET RUST_LOG=warn NO_COLOR=1 \
        S3PRELOAD=$preload sh -c 'LD_PRELOAD=$S3PRELOAD "$S3FS" --host 127.0.0.1 --port "$S3BACKEND" --access-key "$S3K" \
                   --secret-key "$S3S" "$S3DIR/data" >>"$S3DIR/s3s-fs.log" 2>&1 &
               stunnel "$S3DIR/stunnel.conf" >>"$S3DIR/stunnel.log" 2>&1 &
               wait' </dev/null &
    S3_PID=$!
    for _ in $(seq 300); do
        # Any HTTP status (403 for this anonymous request) proves TLS with the CA, stunnel and
        # s3s-fs; curl prints 000 when there is no answer.
        code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$S3_CA" \
            "https://localhost:$S3_PORT/" 2>/dev/null || true)
        if [ -n "$code" ] && [ "$code" != 000 ]; then return 0; fi
        kill -0 "$S3_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "the S3 server does not answer on https://localhost:$S3_PORT/: $(tail -20 "$d/s3s-fs.log" "$d/stunnel.log" 2>&1)"
}

# s3_curl ARGS...: curl signed with the server's credentials (SigV4), trusting its CA.
# s3s-fs requires x-amz-content-sha256, which curl 7.88 does not send by itself (it signs it).
s3_curl() {
    curl -sS --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:$S3_SECRET" --cacert "$S3_CA" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}

# s3_create_bucket NAME: PUT /NAME; dies unless the server answers 200.
s3_create_bucket() {
    local code
    code=$(s3_curl -X PUT -o /dev/null -w '%{http_code}' "https://localhost:$S3_PORT/$1" 2>&1) || true
    [ "$code" = 200 ] || die "creating bucket $1 failed (HTTP $code): $(tail -20 "$S3_DATA/../s3s-fs.log")"
}

# s3_repo_options BUCKET: the repo1-* lines of a repository in BUCKET on this server (the
# caller adds repo1-path, the key prefix)
s3_repo_options() {
    cat <<EOF
repo1-type=s3
repo1-s3-bucket=$1
repo1-s3-endpoint=localhost
repo1-storage-port=$S3_PORT
repo1-storage-ca-file=$S3_CA
repo1-s3-region=us-east-1
repo1-s3-key=$S3_KEY
repo1-s3-key-secret=$S3_SECRET
repo1-s3-uri-style=path
EOF
}

# stop_s3_server: kills s3s-fs, stunnel and their sh (nothing when none was started)
stop_s3_server() {
    if [ -n "${S3_PID:-}" ]; then
        kill_tree "$S3_PID"
        wait "$S3_PID" 2>/dev/null || true
        S3_PID=
    fi
}
