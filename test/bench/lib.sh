# Shared pieces of the benchmark scripts (sourced by archive.sh, archive_async.sh and backup.sh).
# They expect the caller's as_pg and, for the cleanup pieces, W (the work directory), KEEP
# and SSHD_PID.

# install_bench_packages: installs what the benchmarks need and is missing, without letting
# package scripts start services. Uses the caller's log and die.
install_bench_packages() {
    local p policy=/usr/sbin/policy-rc.d own_policy=no ok=yes missing=()
    installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
    for p in pgbackrest openssh-server openssh-client postgresql-15 time python3; do
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

# finish_cleanup RC SSH_CONFIG: the end of every benchmark's EXIT trap, once its clusters are
# stopped: SSH masters closed, the private sshd killed, $W kept (KEEP=1) or removed, exit RC.
finish_cleanup() {
    close_ssh_masters "$2"
    if [ -n "$SSHD_PID" ]; then
        kill_tree "$SSHD_PID"
        wait "$SSHD_PID" 2>/dev/null
    fi
    if [ "$KEEP" = 1 ]; then
        echo "work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
    exit "$1"
}
