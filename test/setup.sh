#!/usr/bin/env bash
# Idempotent test-machine setup for a fresh Debian 12, run as root: installs (only when
# missing) PostgreSQL 15, the OpenSSH server and client, python3, pgBackRest (Debian's
# pgbackrest 2.45, which the compatibility tests run against) and the monitoring plugin
# check_pgbackrest (Debian's check-pgbackrest 2.3, which test/monitoring.rs runs against both
# tools), stunnel4 and openssl (the TLS front of the S3 test server), checks for cargo, and
# builds the S3 test server s3s-fs 0.14.1 with `cargo install` (about 3-5 minutes, once per
# machine; test/harness/s3.rs runs it).
# Starts no system services: the tests run their own PostgreSQL clusters, sshd and S3 servers.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (installs packages; tests use runuser and sshd)" >&2
    exit 1
fi

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# A real (not purely virtual) package in the apt lists? On Debian 12, postgresql-contrib-15 is
# only a name provided by postgresql-15.
real_package() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | grep -q "^Package: $1\$"
}

# stunnel4 is the TLS terminator in front of s3s-fs (plain HTTP): it only relays bytes, so the
# S3 requests reach the server (and the harness's fault proxy) exactly as the client sent them,
# and it needs a five-line config; haproxy or nginx would parse and rewrite HTTP on the way.
# gcc builds test/harness/nodelay.c, preloaded into s3s-fs (see that file).
wanted=(postgresql-15 openssh-server openssh-client python3 pgbackrest check-pgbackrest stunnel4
    openssl gcc libc6-dev)
missing=()
for pkg in "${wanted[@]}"; do
    if installed "$pkg"; then
        echo "setup.sh: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

updated=no
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: apt-get update"
    apt-get update -q
    updated=yes
fi
if ! installed postgresql-contrib-15; then
    if real_package postgresql-contrib-15; then
        missing+=(postgresql-contrib-15)
    else
        echo "setup.sh: postgresql-contrib-15 is not a separate package here (contrib is in postgresql-15)"
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$updated" = no ]; then
        echo "setup.sh: apt-get update"
        apt-get update -q
    fi
    # Keep package scripts from starting postgresql/sshd services during the install.
    policy=/usr/sbin/policy-rc.d
    own_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 0755 "$policy"
        own_policy=yes
        trap 'rm -f "$policy"' EXIT
    fi
    echo "setup.sh: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ "$own_policy" = yes ]; then
        rm -f "$policy"
        trap - EXIT
    fi
fi

for tool in /usr/bin/pgbackrest /usr/bin/check_pgbackrest /usr/lib/postgresql/15/bin/initdb \
    /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen /usr/bin/stunnel /usr/bin/openssl; do
    if [ ! -x "$tool" ]; then
        echo "setup.sh: $tool is missing after installation" >&2
        exit 1
    fi
done
if ! id postgres >/dev/null 2>&1; then
    echo "setup.sh: OS user postgres is missing (normally created by postgresql-common)" >&2
    exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found. Install Rust with rustup (https://rustup.rs):" >&2
    echo "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" >&2
    exit 1
fi
echo "setup.sh: cargo found: $(cargo --version)"

# The S3 test server, from crates.io (Apache-2.0), built once per machine into ~/.cargo/bin.
s3s_version=0.14.1
s3s_fs=$(command -v s3s-fs || true)
if [ -z "$s3s_fs" ] && [ -x "$HOME/.cargo/bin/s3s-fs" ]; then
    s3s_fs=$HOME/.cargo/bin/s3s-fs
fi
if [ -n "$s3s_fs" ] && [ "$("$s3s_fs" --version 2>/dev/null)" = "s3s-fs $s3s_version" ]; then
    echo "setup.sh: s3s-fs $s3s_version already installed ($s3s_fs)"
else
    echo "setup.sh: building s3s-fs $s3s_version with cargo install (about 3-5 minutes)"
    nice -n 10 cargo install "s3s-fs@$s3s_version" --locked --features binary --quiet
    if ! "$HOME/.cargo/bin/s3s-fs" --version >/dev/null 2>&1; then
        echo "setup.sh: s3s-fs is missing from $HOME/.cargo/bin after cargo install" >&2
        exit 1
    fi
fi
echo "setup.sh: done"
