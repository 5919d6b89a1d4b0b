#!/usr/bin/env python3
"""Helper of test/bench/archive_async.sh and test/bench/s3.sh (not meant to be run by hand).

  archive_async_bench.py run PLAN.json RESULTS.json
      Runs as the postgres OS user: builds the clusters, configurations and
      repositories under the plan's work directory and measures the parts the
      plan names (capacity with latency, load, recovery), sampling the memory
      of the async workers throughout. Any failure of a tool aborts with the
      PostgreSQL log lines about it and the tail of the tool's own logs.

  archive_async_bench.py report PLAN.json RESULTS.json [OUT.md]
      Prints the markdown report (and writes it to OUT.md).

Everything is timed with time.monotonic() in this process; PostgreSQL's own
log timestamps (log_line_prefix %m, UTC) are compared with time.time() only
for the moment replay ended during recovery.
"""
import datetime
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

SEG = 16 * 1024 * 1024
STANZA = "bench"


def die(msg):
    print(f"\nBENCHMARK FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


T_START = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T_START:6.1f}s] {msg}", flush=True)


def run(cmd, what, cwd=None, timeout=None, check=True):
    """Runs cmd (list); returns stdout. Dies with stdout and stderr on failure."""
    p = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        die(f"{what}: exit code {p.returncode}\n  command: {' '.join(cmd)}\n"
            f"  stdout: {p.stdout.decode(errors='replace').strip()}\n"
            f"  stderr: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode(errors="replace")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tail(path, n=30, grep=None):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return f"({path}: {e})"
    if grep:
        lines = [l for l in lines if any(g in l for g in grep)]
    return "\n".join(f"    {l}" for l in lines[-n:])


# ----------------------------------------------------------------------------------------------
# Memory of the async workers: /usr/bin/time cannot see a detached process, so /proc is sampled.

class Sampler:
    """Samples /proc every PERIOD s in a thread. For every process whose command line has
    ':async' and the work directory (the async workers of both tools: they are started with
    the caller's --config), it keeps the largest VmHWM seen (the kernel's own peak, so a
    sample shortly before exit loses nothing), and the largest sum of VmRSS over the worker
    and its descendants at one instant (pgBackRest's workers run archive-push:local /
    archive-get:local children, and over SSH their ssh clients)."""

    PERIOD = 0.05

    def __init__(self, work):
        self.work = work
        self.cmdlines = {}  # pid -> cmdline (only re-read for the tools' processes)
        self.stop_ev = None
        self.thread = None
        self.reset()

    def reset(self):
        self.hwm_kb = 0
        self.tree_kb = 0
        self.workers = set()
        self.roles = set()
        self.cpu = {}  # worker pid -> largest CPU ticks of its tree seen

    @staticmethod
    def ticks(pid):
        """(utime + stime, cutime + cstime) of a process, in clock ticks."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0, 0
        return int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])

    def cmdline(self, pid):
        c = self.cmdlines.get(pid)
        # A forked child shows its parent's command line until it execs: re-read anything
        # that may still become a worker (the tools' processes).
        if c is None or "pg_backrest" in c or "pgbackrest" in c:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    c = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                c = ""
            self.cmdlines[pid] = c
        return c

    @staticmethod
    def status(pid):
        out = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmHWM:", "VmRSS:", "PPid:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0])
        except OSError:
            pass
        return out

    def sample(self):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        live = set(pids)
        for pid in list(self.cmdlines):
            if pid not in live:
                del self.cmdlines[pid]
        workers = []
        for pid in pids:
            c = self.cmdline(pid)
            if ":async" in c and self.work in c:
                workers.append(pid)
                for role in ("archive-push:async", "archive-get:async"):
                    if role in c:
                        self.roles.add(role)
        if not workers:
            return
        st = {pid: self.status(pid) for pid in pids}
        children = {}
        for pid, s in st.items():
            if "PPid" in s:
                children.setdefault(s["PPid"], []).append(pid)
        for w in workers:
            self.workers.add(w)
            self.hwm_kb = max(self.hwm_kb, st.get(w, {}).get("VmHWM", 0))
            total, cpu, todo = 0, 0, [w]
            while todo:
                p = todo.pop()
                total += st.get(p, {}).get("VmRSS", 0)
                # A child's time moves into its parent's cutime when it is reaped: at one
                # instant it is counted once, live or reaped.
                cpu += sum(self.ticks(p))
                todo.extend(children.get(p, []))
            self.tree_kb = max(self.tree_kb, total)
            self.cpu[w] = max(self.cpu.get(w, 0), cpu)

    def loop(self, ev):
        while not ev.is_set():
            self.sample()
            ev.wait(self.PERIOD)

    def start(self):
        self.reset()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, args=(self.stop_ev,), daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        return {"hwm_kb": self.hwm_kb, "tree_kb": self.tree_kb,
                "workers": len(self.workers), "roles": sorted(self.roles),
                "cpu_s": sum(self.cpu.values()) / os.sysconf("SC_CLK_TCK")}

    def workers_alive(self):
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        c = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if ":async" in c and self.work in c:
                    out.append(int(p))
        return out


# ----------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, plan):
        self.p = plan
        self.W = plan["work"]
        self.bin = plan["bin"]
        self.pgbin = plan["pgbin"]
        self.sock = f"{self.W}/sock"
        self.pgdata = f"{self.W}/pg"
        self.port = None
        self.sampler = Sampler(self.W)
        self.res = {"capacity": {}, "latency": {}, "load": {}, "recovery": {}, "meta": {}}
        for d in ("sock", "conf", "lock", "log", "repo", "spool", "scratch"):
            os.makedirs(f"{self.W}/{d}", exist_ok=True)

    # -- PostgreSQL ---------------------------------------------------------------------------

    def psql(self, *sql, port=None):
        cmd = [f"{self.pgbin}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
               "-p", str(port or self.port), "-U", "postgres", "-d", "postgres"]
        for s in sql:
            cmd += ["-c", s]
        return run(cmd, f"psql {sql}").strip()

    def set_archive_command(self, command):
        q = command.replace("'", "''")
        self.psql(f"ALTER SYSTEM SET archive_command = '{q}'", "SELECT pg_reload_conf()")

    def status_dir(self):
        return f"{self.pgdata}/pg_wal/archive_status"

    def ready(self):
        return sorted(f[:-6] for f in os.listdir(self.status_dir()) if f.endswith(".ready"))

    def mark_done(self, names):
        d = self.status_dir()
        for n in names:
            os.rename(f"{d}/{n}.ready", f"{d}/{n}.done")

    def archiver_cpu(self):
        """CPU seconds of the archive_command processes so far: the archiver waits for each
        (system()), so their time is in its cutime + cstime. Detached async workers are not."""
        pid = self.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'")
        return Sampler.ticks(int(pid))[1] / os.sysconf("SC_CLK_TCK")

    def archiver(self):
        a, f, last = self.psql(
            "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') "
            "FROM pg_stat_archiver").split("|")
        return int(a), int(f), last

    def setup_primary(self):
        self.port = free_port()
        log(f"initdb + start PostgreSQL on port {self.port}")
        run([f"{self.pgbin}/initdb", "-D", self.pgdata, "--data-checksums", "-A", "trust",
             "-U", "postgres"], "initdb")
        with open(f"{self.pgdata}/postgresql.conf", "a") as f:
            f.write(f"""
port = {self.port}
listen_addresses = ''
unix_socket_directories = '{self.sock}'
wal_level = replica
archive_mode = on
archive_command = ''
archive_timeout = 0
max_wal_size = 16GB
checkpoint_timeout = 1d
synchronous_commit = off
autovacuum = off
log_line_prefix = '%m [%p] '
log_timezone = 'UTC'
""")
        run([f"{self.pgbin}/pg_ctl", "-D", self.pgdata, "-l", f"{self.W}/postgres.log", "-w",
             "start"], "pg_ctl start (primary)")
        self.sysid = run([f"{self.pgbin}/pg_controldata", self.pgdata], "pg_controldata")
        self.sysid = [l.split(":", 1)[1].strip() for l in self.sysid.splitlines()
                      if l.startswith("Database system identifier")][0]

    def make_backlog(self):
        """A base backup first, then SEGMENTS full segments of real WAL left .ready (nothing
        archives them: archive_command is empty): pgbench -i, PGBENCH_SECONDS of pgbench,
        then bulk INSERT ... SELECT statements until there are enough."""
        n = self.p["segments"]
        log("pg_basebackup -X stream (the recovery part's base)")
        run([f"{self.pgbin}/pg_basebackup", "-D", f"{self.W}/base", "-X", "stream", "-c", "fast",
             "-h", self.sock, "-p", str(self.port), "-U", "postgres"], "pg_basebackup")
        # The segments up to the backup's end are in the base; the backlog starts after them.
        time.sleep(0.5)
        self.mark_done(self.ready())
        start = time.monotonic()
        mix = {}
        log(f"pgbench -i -s {self.p['scale']}")
        run([f"{self.pgbin}/pgbench", "-i", "-q", "-s", str(self.p["scale"]), "-h", self.sock,
             "-p", str(self.port), "-U", "postgres", "postgres"], "pgbench -i")
        mix["pgbench -i"] = len(self.ready())
        if len(self.ready()) < n and self.p["pgbench_seconds"] > 0:
            log(f"pgbench -T {self.p['pgbench_seconds']}")
            run([f"{self.pgbin}/pgbench", "-n", "-M", "prepared", "-c", "4", "-j", "2", "-T",
                 str(self.p["pgbench_seconds"]), "-h", self.sock, "-p", str(self.port), "-U",
                 "postgres", "postgres"], "pgbench")
            mix["pgbench"] = len(self.ready()) - sum(mix.values())
        if len(self.ready()) < n:
            log(f"bulk inserts until {n} segments are ready")
            self.psql("CREATE TABLE backlog (id bigint, a text, b text, c int)")
            i = 0
            while len(self.ready()) < n:
                self.psql(self.insert_sql("backlog", i * 100000, 100000))
                i += 1
            mix["bulk insert"] = len(self.ready()) - sum(mix.values())
        # synchronous_commit is off: the WAL writer may still complete a segment. Wait until
        # the ready set stays the same for a second.
        ready, since = self.ready(), time.monotonic()
        while time.monotonic() - since < 1.0:
            time.sleep(0.1)
            if self.ready() != ready:
                ready, since = self.ready(), time.monotonic()
        self.backlog = ready[:n]
        # The overshoot is marked archived: the backlog is exactly SEGMENTS segments, all
        # completed naturally (none closed early by a WAL switch).
        self.mark_done(ready[n:])
        # Each variant makes them ready again in turn.
        self.mark_done(self.backlog)
        self.res["meta"]["backlog"] = [self.backlog[0], self.backlog[-1]]
        self.res["meta"]["backlog_mix"] = mix
        log(f"backlog {self.backlog[0]} .. {self.backlog[-1]} "
            f"({time.monotonic() - start:.0f} s; {mix}; {len(ready) - n} more marked done)")

    # -- configurations -----------------------------------------------------------------------

    def variants(self):
        out = []
        for mode in ("async", "sync"):
            if mode not in self.p["modes"]:
                continue
            for repo in ("local", "ssh", "s3"):
                if repo not in self.p["repos"]:
                    continue
                pair = [t for t in ("ours", "theirs") if t in self.p["tools"]]
                # Alternate which tool goes first, so a drift in machine load is shared.
                if len(out) // 2 % 2 == 1:
                    pair.reverse()
                for tool in pair:
                    out.append({"tool": tool, "mode": mode, "repo": repo,
                                "name": f"{tool}-{mode}-{repo}"})
        return out

    def exe(self, tool):
        return self.bin if tool == "ours" else "/usr/bin/pgbackrest"

    def repo_path(self, name, repo):
        """Where a variant's repository is on this machine's disk: a directory of the work
        directory, or with repo "s3" the S3 server's copy of key prefix NAME in the plan's
        bucket (s3s-fs stores key k of that bucket as the file s3.data/k)."""
        if repo == "s3":
            return f"{self.p['s3']['data']}/{name}"
        return f"{self.W}/repo/{name}"

    def write_conf(self, name, tool, mode, repo, repo_path, pgdata):
        """Config(s) of one variant in one part. Returns (config the database side runs
        with, config stanza-create runs with). Repo "s3": the plan's S3 repository options
        (s3.sh), key prefix /NAME."""
        for d in ("lock", "log", "spool"):
            os.makedirs(f"{self.W}/{d}/{name}", exist_ok=True)
        if repo != "s3":
            os.makedirs(repo_path, exist_ok=True)
        common = f"""lock-path={self.W}/lock/{name}
log-path={self.W}/log/{name}
log-level-console=off
log-level-file=info
compress-type={self.p['compress_type']}
compress-level={self.p['compress_level']}
process-max={self.p['process_max']}
archive-async={'y' if mode == 'async' else 'n'}
spool-path={self.W}/spool/{name}
"""
        pg = f"""[{STANZA}]
pg1-path={pgdata}
pg1-socket-path={self.sock}
pg1-port={self.port}
"""
        db_conf = f"{self.W}/conf/{name}.conf"
        if repo == "s3":
            with os.fdopen(os.open(db_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                           "w") as f:
                f.write(f"[global]\n{self.p['s3']['options']}\nrepo1-path=/{name}\n"
                        f"{common}\n{pg}")
            return db_conf, db_conf
        if repo == "local":
            with open(db_conf, "w") as f:
                f.write(f"[global]\nrepo1-path={repo_path}\n{common}\n{pg}")
            return db_conf, db_conf
        repo_conf = f"{self.W}/conf/{name}-repo.conf"
        for d in ("lock", "log"):
            os.makedirs(f"{self.W}/{d}/{name}-repo", exist_ok=True)
        with open(repo_conf, "w") as f:
            f.write(f"""[global]
repo1-path={repo_path}
lock-path={self.W}/lock/{name}-repo
log-path={self.W}/log/{name}-repo
log-level-console=off
log-level-file=info
compress-type={self.p['compress_type']}
compress-level={self.p['compress_level']}

{pg}""")
        if tool == "ours":
            remote = (f"repo1-host-cmd={self.bin}\n"
                      f"ssh-config={self.p['ssh_config']}\n")
        else:
            # pgBackRest has no ssh-config option: cmd-ssh is a wrapper passing -F.
            remote = (f"repo1-host-cmd=/usr/bin/pgbackrest\n"
                      f"cmd-ssh={self.p['ssh_wrap']}\n")
        with open(db_conf, "w") as f:
            f.write(f"""[global]
repo1-host=127.0.0.1
repo1-host-port={self.p['ssh_port']}
repo1-host-user=postgres
repo1-host-config={repo_conf}
{remote}{common}
{pg}""")
        return db_conf, repo_conf

    def tool_cmd(self, tool, conf):
        return [self.exe(tool), f"--config={conf}", f"--stanza={STANZA}"]

    def stanza_create(self, tool, conf, what):
        run(self.tool_cmd(tool, conf) + ["stanza-create"], f"{what}: stanza-create")

    def wait_workers_gone(self, what, timeout=60):
        deadline = time.monotonic() + timeout
        while self.sampler.workers_alive():
            if time.monotonic() > deadline:
                die(f"{what}: async worker(s) {self.sampler.workers_alive()} still running "
                    f"{timeout} s after the work was done")
            time.sleep(0.05)

    def logs_of(self, name):
        out = []
        for path in sorted(glob.glob(f"{self.W}/log/{name}*/*.log")):
            out.append(f"  {path}:\n{tail(path, 15)}")
        return "\n".join(out)

    def wait_archived(self, v, what, done, timeout):
        """Polls until done() is true; dies with the archiver's failures otherwise."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                die(f"{what}: not archived after {timeout} s; {len(self.ready())} .ready left, "
                    f"pg_stat_archiver (archived, failed, last) = {self.archiver()}\n"
                    f"  PostgreSQL log (archive lines):\n"
                    f"{tail(f'{self.W}/postgres.log', 20, grep=['archiv', 'ERROR', 'WARN'])}\n"
                    f"{self.logs_of(v['conf_name'])}")
            time.sleep(0.02)
        return time.monotonic()

    def stored(self, repo_path):
        """{segment name: stored bytes} of the repository's archive."""
        out = {}
        for path in glob.glob(f"{repo_path}/archive/{STANZA}/*/*/*"):
            name = os.path.basename(path)
            if len(name) > 24 and name[:24].isalnum():
                out[name[:24]] = os.path.getsize(path)
        return out

    # -- part 1 (+ latency): capacity with a backlog --------------------------------------------

    def capacity_one(self, v, quiet=False):
        # The previous step's dirty pages (the backlog's 1 GiB, a repository) are written
        # back now, not during the measurement.
        os.sync()
        name = f"cap-{v['name']}"
        v["conf_name"] = name
        repo_path = self.repo_path(name, v["repo"])
        conf, sc_conf = self.write_conf(name, v["tool"], v["mode"], v["repo"], repo_path,
                                        self.pgdata)
        self.stanza_create(v["tool"], sc_conf, name)
        # The backlog becomes ready again (archive_command is empty: nothing runs).
        d = self.status_dir()
        for s in self.backlog:
            os.rename(f"{d}/{s}.done", f"{d}/{s}.ready")
        stray = set(self.ready()) - set(self.backlog)
        if stray:
            die(f"{name}: ready segments outside the backlog: {sorted(stray)}")
        a0, f0, _ = self.archiver()
        c0 = self.archiver_cpu()
        backlog = set(self.backlog)
        self.sampler.start()
        j0 = cpu_times()
        t0 = time.monotonic()
        self.set_archive_command(
            " ".join(self.tool_cmd(v["tool"], conf)) + " archive-push %p")
        t1 = self.wait_archived(
            v, name, lambda: not backlog.intersection(self.ready()),
            timeout=60 + 4 * len(self.backlog))
        idle = idle_pct(j0, cpu_times())
        self.set_archive_command("")
        self.wait_workers_gone(name)
        rss = self.sampler.stop()
        a1, f1, last = self.archiver()
        cpu = self.archiver_cpu() - c0 + rss["cpu_s"]
        if a1 - a0 < len(self.backlog) or last < self.backlog[-1]:
            die(f"{name}: pg_stat_archiver archived {a1 - a0} (of {len(self.backlog)}), "
                f"last {last}")
        stored = self.stored(repo_path)
        missing = [s for s in self.backlog if s not in stored]
        if missing:
            die(f"{name}: archive_command succeeded but {len(missing)} segments are not in the "
                f"repository, e.g. {missing[:3]}")
        secs = t1 - t0
        r = {"seconds": secs, "segments": len(self.backlog), "failed": f1 - f0, "rss": rss,
             "cpu_s": cpu, "idle_pct": idle,
             "stored_mean": statistics.mean(stored[s] for s in self.backlog),
             "repo_path": repo_path, "conf": conf}
        if not quiet:
            log(f"  {name}: {secs:.1f} s, {len(self.backlog) / secs:.2f} segments/s, "
                f"{f1 - f0} failed archive_command, {cpu / len(self.backlog):.2f} CPU s/segment, "
                f"worker peak {rss['hwm_kb'] / 1024:.1f} MB "
                f"({rss['workers']} worker runs {rss['roles']})")
            self.res["capacity"][v["name"]] = r
        if v["mode"] == "async" and not quiet:
            self.latency(v, conf)
        return r

    def latency(self, v, conf):
        """archive_command on a segment the async worker already pushed: the foreground finds
        the worker's acknowledgment (pgBackRest: SEG.ok, ours: SEG.ack) and returns. The
        state PostgreSQL calls it in is recreated with the drain's last segments: .ready
        again, acknowledged in the spool. pgBackRest keeps its .ok files after the drain; ours
        are removed with their .ready, so a first call (not counted) starts the worker, which
        acknowledges the ready segments it finds already stored."""
        out = f"{self.W}/spool/cap-{v['name']}/archive/{STANZA}/out"
        segs = self.backlog[-10:]
        d = self.status_dir()
        for s in segs:
            os.rename(f"{d}/{s}.done", f"{d}/{s}.ready")
        cmd = self.tool_cmd(v["tool"], conf) + ["archive-push"]

        def call(seg):
            t0 = time.perf_counter_ns()
            p = subprocess.run(cmd + [f"pg_wal/{seg}"], cwd=self.pgdata,
                               stdin=subprocess.DEVNULL, capture_output=True)
            t1 = time.perf_counter_ns()
            if p.returncode != 0:
                die(f"{v['name']} archive-push pg_wal/{seg} (already pushed): exit "
                    f"{p.returncode}: {p.stderr.decode(errors='replace').strip()}")
            return (t1 - t0) / 1e6

        first_ms = call(segs[0])
        self.wait_workers_gone(f"{v['name']} latency warm-up")
        acked = [s for s in segs
                 if os.path.exists(f"{out}/{s}.ok") or os.path.exists(f"{out}/{s}.ack")]
        r = {"acked": len(acked), "first_ms": first_ms}
        self.res["latency"][v["name"]] = r
        if not acked:
            log(f"  {v['name']}: no acknowledgment in {out} for {segs[0]}..{segs[-1]}; "
                f"latency not measured (spool: {sorted(os.listdir(out))[:5]})")
        else:
            times, started_worker = [], 0
            for i in range(self.p["lat_calls"]):
                times.append(call(acked[i % len(acked)]))
                if self.sampler.workers_alive():
                    started_worker += 1
                    self.wait_workers_gone(f"{v['name']} latency")
            r.update({"ms": times, "started_worker": started_worker})
            log(f"  {v['name']}: already-pushed archive-push median "
                f"{statistics.median(times):.1f} ms, p95 {p95(times):.1f} ms over {len(times)} "
                f"calls on {len(acked)} acknowledged segments (first call {first_ms:.0f} ms)")
        self.mark_done(segs)

    def capacity(self):
        vs = self.variants()
        log(f"capacity: {len(self.backlog)} ready segments, {len(vs)} variants")
        for v in vs:
            self.capacity_one(v)

    # -- part 2: a bulk load until everything is archived ---------------------------------------

    def load_script(self):
        """A bulk load writing about LOAD_SEGMENTS segments: INSERT ... SELECT statements of
        100000 rows (a bigint, two md5 texts and an int: WAL that gzip reduces about 2:1),
        sized from a calibration insert."""
        self.psql("CREATE TABLE calib (id bigint, a text, b text, c int)")
        l0 = self.psql("SELECT pg_current_wal_insert_lsn()")
        self.psql(self.insert_sql("calib", 0, 100000))
        per_row = float(self.psql(f"SELECT (pg_current_wal_lsn() - '{l0}'::pg_lsn) / 100000.0"))
        self.psql("DROP TABLE calib")
        rows = int(self.p["load_segments"] * SEG / per_row)
        self.load_statements = max(1, round(rows / 100000))
        log(f"load: {per_row:.0f} WAL bytes per row, {self.load_statements} statements of "
            f"100000 rows")

    @staticmethod
    def insert_sql(table, first, rows):
        return (f"INSERT INTO {table} SELECT g, md5(g::text), md5((g * 7)::text) || "
                f"md5((g * 13)::text), (g * 31) % 1000 FROM generate_series({first}, "
                f"{first + rows - 1}) g")

    def load_one(self, v, idx):
        os.sync()
        name = f"load-{v['name']}"
        v["conf_name"] = name
        repo_path = self.repo_path(name, v["repo"])
        conf, sc_conf = self.write_conf(name, v["tool"], v["mode"], v["repo"], repo_path,
                                        self.pgdata)
        self.stanza_create(v["tool"], sc_conf, name)
        table = f"bulk_{idx}"
        script = f"{self.W}/scratch/{table}.sql"
        with open(script, "w") as f:
            f.write(f"CREATE TABLE {table} (id bigint, a text, b text, c int);\n")
            for i in range(self.load_statements):
                f.write(self.insert_sql(table, i * 100000, 100000) + ";\n")
        # A clean start: old segments recycled, a fresh segment, nothing ready.
        self.psql("CHECKPOINT", "SELECT pg_switch_wal()")
        time.sleep(0.2)
        self.mark_done(self.ready())
        a0, f0, _ = self.archiver()
        c0 = self.archiver_cpu()
        self.set_archive_command(
            " ".join(self.tool_cmd(v["tool"], conf)) + " archive-push %p")
        time.sleep(0.5)
        # Not pg_walfile_name(): at a segment boundary (just after the switch) it names the
        # segment before.
        hi, lo = self.psql("SELECT pg_current_wal_insert_lsn()").split("/")
        segno = ((int(hi, 16) << 32) + int(lo, 16)) // SEG
        first = f"00000001{segno >> 8:08X}{segno & 0xFF:08X}"
        self.sampler.start()
        j0 = cpu_times()
        t0 = time.monotonic()
        run([f"{self.pgbin}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p",
             str(self.port), "-U", "postgres", "-d", "postgres", "-f", script], f"{name}: load")
        t1 = time.monotonic()
        last = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        n = int(last[8:16], 16) * 256 + int(last[16:], 16) - \
            (int(first[8:16], 16) * 256 + int(first[16:], 16)) + 1
        t2 = self.wait_archived(
            v, name, lambda: not self.ready() and self.archiver()[2] >= last,
            timeout=60 + 4 * n)
        idle = idle_pct(j0, cpu_times())
        self.set_archive_command("")
        self.wait_workers_gone(name)
        rss = self.sampler.stop()
        a1, f1, _ = self.archiver()
        cpu = self.archiver_cpu() - c0 + rss["cpu_s"]
        stored = self.stored(repo_path)
        segs = [f"{first[:8]}{(k >> 8):08X}{(k & 0xFF):08X}" for k in
                range(int(first[8:16], 16) * 256 + int(first[16:], 16),
                      int(last[8:16], 16) * 256 + int(last[16:], 16) + 1)]
        missing = [s for s in segs if s not in stored]
        if missing:
            die(f"{name}: {len(missing)} of the load's segments are not in the repository, "
                f"e.g. {missing[:3]}")
        self.psql(f"DROP TABLE {table}")
        r = {"segments": n, "load_seconds": t1 - t0, "seconds": t2 - t0,
             "lag_seconds": t2 - t1, "failed": f1 - f0, "rss": rss, "cpu_s": cpu,
             "idle_pct": idle}
        self.res["load"][v["name"]] = r
        log(f"  {name}: {n} segments; load {t1 - t0:.1f} s, all archived at {t2 - t0:.1f} s "
            f"(+{t2 - t1:.1f} s after the load), {f1 - f0} failed archive_command, "
            f"{cpu / n:.2f} CPU s/segment")

    def load(self):
        vs = self.variants()
        self.load_script()
        log(f"load: {len(vs)} variants")
        for i, v in enumerate(vs):
            self.load_one(v, i)

    # -- part 4: recovery through restore_command ----------------------------------------------

    def recovery(self):
        tools = [t for t in ("ours", "theirs") if t in self.p["tools"]]
        modes = [m for m in ("async", "sync") if m in self.p["modes"]]
        # The repositories the capacity part filled (locally); without it, they are filled
        # the same way, unreported.
        repos = {}
        for tool in tools:
            r = self.res["capacity"].get(f"{tool}-async-local") or \
                self.res["capacity"].get(f"{tool}-sync-local")
            if r is None:
                log(f"recovery: filling a repository for {tool} (capacity part not run)")
                r = self.capacity_one({"tool": tool, "mode": "sync", "repo": "local",
                                       "name": f"{tool}-fill"}, quiet=True)
            repos[tool] = r["repo_path"]
        vs = []
        for mode in modes:
            pair = list(tools) if len(vs) // 2 % 2 == 0 else list(reversed(tools))
            vs += [{"tool": t, "mode": mode, "name": f"{t}-{mode}"} for t in pair]
        # The floor: PostgreSQL's own replay, restore_command a plain cp of uncompressed
        # segments from a local directory (no tool, no decompression, no checksum).
        plain = f"{self.W}/plain"
        if not os.path.exists(plain):
            os.mkdir(plain)
            last = self.backlog[-1]
            for f in sorted(os.listdir(f"{self.pgdata}/pg_wal")):
                if len(f) == 24 and f[:8] == last[:8] and f <= last:
                    shutil.copy(f"{self.pgdata}/pg_wal/{f}", plain)
        vs.append({"tool": "cp", "mode": "floor", "name": "cp-floor"})
        repos["cp"] = plain
        log(f"recovery: {len(self.backlog)} segments through restore_command, {len(vs)} variants")
        for v in vs:
            self.recovery_one(v, repos[v["tool"]])

    def recovery_one(self, v, repo_path):
        name = f"rec-{v['name']}"
        v["conf_name"] = name
        data = f"{self.W}/rec"
        if os.path.exists(data):
            shutil.rmtree(data)
        shutil.copytree(f"{self.W}/base", data, symlinks=True)
        os.chmod(data, 0o700)
        spool = f"{self.W}/spool/{name}"
        if os.path.exists(spool):
            shutil.rmtree(spool)
        port = free_port()
        if v["tool"] == "cp":
            restore = f'cp {repo_path}/%f "%p"'
        else:
            conf, _ = self.write_conf(name, v["tool"], v["mode"], "local", repo_path, data)
            restore = " ".join(self.tool_cmd(v["tool"], conf)) + ' archive-get %f "%p"'
        with open(f"{data}/postgresql.auto.conf", "w") as f:
            f.write(f"""port = {port}
archive_mode = off
hot_standby = off
restore_command = '{restore.replace("'", "''")}'
log_line_prefix = '%m [%p] '
log_timezone = 'UTC'
""")
        open(f"{data}/recovery.signal", "w").close()
        os.sync()
        pglog = f"{self.W}/{name}.log"
        self.sampler.start()
        j0 = cpu_times()
        wall0 = time.time()
        t0 = time.monotonic()
        run([f"{self.pgbin}/pg_ctl", "-D", data, "-l", pglog, "start"], f"{name}: pg_ctl start")
        deadline = t0 + 60 + 4 * len(self.backlog)
        while True:
            with open(pglog, errors="replace") as f:
                text = f.read()
            if "database system is ready to accept connections" in text:
                break
            if "database system is shut down" in text or "FATAL" in text or \
                    time.monotonic() > deadline:
                die(f"{name}: recovery did not complete:\n{tail(pglog, 25)}\n"
                    f"{self.logs_of(name)}")
            time.sleep(0.02)
        t1 = time.monotonic()
        idle = idle_pct(j0, cpu_times())
        redo = [l for l in text.splitlines() if "redo done at" in l]
        restored = [l for l in text.splitlines() if "restored log file" in l]
        got = {l.split('"')[1] for l in restored}
        missing = [s for s in self.backlog if s not in got]
        if not redo or missing:
            die(f"{name}: replay ended before the backlog's end ({len(missing)} of "
                f"{len(self.backlog)} segments not restored, e.g. {missing[:3]}):\n"
                f"{tail(pglog, 25)}\n{self.logs_of(name)}")
        stamp = redo[0].split(" [")[0]  # '2026-12-02 23:59:59.123 UTC'
        redo_wall = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f %Z") \
            .replace(tzinfo=datetime.timezone.utc).timestamp()
        run([f"{self.pgbin}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            f"{name}: pg_ctl stop")
        self.wait_workers_gone(name)
        rss = self.sampler.stop()
        r = {"seconds": t1 - t0, "redo_seconds": redo_wall - wall0, "restored": len(got),
             "rss": rss, "idle_pct": idle}
        self.res["recovery"][v["name"]] = r
        log(f"  {name}: replay done at {redo_wall - wall0:.1f} s, ready at {t1 - t0:.1f} s, "
            f"{len(got)} segments restored, worker peak {rss['hwm_kb'] / 1024:.1f} MB "
            f"{rss['roles']}")
        shutil.rmtree(data)

    # -- all ----------------------------------------------------------------------------------

    def run_all(self, results_path):
        parts = self.p["parts"]
        self.res["meta"]["load_start"] = os.getloadavg()
        self.res["meta"]["date"] = datetime.datetime.now(datetime.timezone.utc) \
            .strftime("%Y-%m-%d %H:%M UTC")
        t0 = time.monotonic()
        self.setup_primary()
        if "capacity" in parts or "recovery" in parts:
            self.make_backlog()
        try:
            if "capacity" in parts:
                self.capacity()
            if "recovery" in parts:
                self.recovery()
            if "load" in parts:
                self.load()
        finally:
            self.res["meta"]["load_end"] = os.getloadavg()
            self.res["meta"]["seconds"] = time.monotonic() - t0
            with open(results_path, "w") as f:
                json.dump(self.res, f, indent=1)


def cpu_times():
    """(idle, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v[:8])


def idle_pct(t0, t1):
    return 100.0 * (t1[0] - t0[0]) / max(1, t1[1] - t0[1])


def p95(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


# ----------------------------------------------------------------------------------------------

def report(plan_path, results_path, out_md=None):
    with open(plan_path) as f:
        plan = json.load(f)
    with open(results_path) as f:
        res = json.load(f)
    meta = res["meta"]
    lines = []
    w = lines.append
    label = {"ours": "pg_backrest", "theirs": "pgBackRest"}

    def ratio(a, b, higher_better):
        if a is None or b is None or b == 0 or a == 0:
            return "—"
        return f"{(a / b) if higher_better else (b / a):.2f}"

    def mb(kb):
        return f"{kb / 1024:.1f}" if kb else "—"

    def idle(r):
        return f"{r['idle_pct']:.0f}" if "idle_pct" in r else "—"

    def cpu_seg(r):
        return f"{r['cpu_s'] / r['segments']:.2f}" if "cpu_s" in r else "—"

    def worker_mb(r, mode):
        if mode != "async":
            return "—"
        return mb(r["rss"]["hwm_kb"]) if r["rss"]["workers"] else "no worker ran"

    w(f"### Results — {meta.get('date', '?')}, commit {plan['commit']}")
    w("")
    w(f"Machine: {plan['machine']}. PostgreSQL {plan['pg_version']}, "
      f"{plan['pgbackrest_version']}, pg_backrest {plan['ours_version']}; "
      f"process-max {plan['process_max']}, compress-type {plan['compress_type']} level "
      f"{plan['compress_level']}, backlog {plan['segments']} segments"
      + (f" ({meta['backlog'][0]} .. {meta['backlog'][1]})" if meta.get("backlog") else "")
      + f". Run time {meta.get('seconds', 0):.0f} s; load average (1/5/15 min) "
      f"{'/'.join(f'{x:.2f}' for x in meta.get('load_start', []))} at its start, "
      f"{'/'.join(f'{x:.2f}' for x in meta.get('load_end', []))} at its end.")
    w("")

    cap = res.get("capacity", {})
    if cap:
        w(f"**Capacity**: {plan['segments']} ready segments drained by PostgreSQL's archiver. "
          "Ratio = our segments/s over pgBackRest's in the same mode and repository; "
          "\"vs pgBR async\" compares with pgBackRest's async mode on the same repository. "
          "CPU = user+sys of the archive_command processes and the async worker with its "
          "children, on the database side (over SSH the repository host's processes are not "
          "counted). Machine idle = idle share of both cores while it ran (all processes).")
        w("")
        w("| tool | mode | repository | seconds | segments/s | ratio | vs pgBR async "
          "| failed calls | CPU s/segment | machine idle % | stored MiB/segment "
          "| worker peak RSS MB |")
        w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in cap.items():
            tool, mode, repo = name.split("-")
            rate = r["segments"] / r["seconds"]
            other = cap.get(f"theirs-{mode}-{repo}")
            oa = cap.get(f"theirs-async-{repo}")
            rr = ratio(rate, other["segments"] / other["seconds"], True) \
                if tool == "ours" and other else "—"
            ra = ratio(rate, oa["segments"] / oa["seconds"], True) \
                if tool == "ours" and oa else "—"
            w(f"| {label[tool]} | {mode} | {repo} | {r['seconds']:.1f} | {rate:.2f} | {rr} "
              f"| {ra} | {r['failed']} | {cpu_seg(r)} | {idle(r)} "
              f"| {r['stored_mean'] / 1048576:.2f} "
              f"| {worker_mb(r, mode)} |")
        w("")

    lat = res.get("latency", {})
    if lat:
        w(f"**archive_command for an already-pushed segment** (async; the foreground finds the "
          f"worker's acknowledgment): {plan['lat_calls']} calls, target < 10 ms.")
        w("")
        w("| tool | repository | median ms | p95 ms | max ms | segments acknowledged "
          "| calls that started a worker | first call ms |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for name, r in lat.items():
            tool, _, repo = name.split("-")
            if "ms" in r:
                w(f"| {label[tool]} | {repo} | {statistics.median(r['ms']):.1f} "
                  f"| {p95(r['ms']):.1f} | {max(r['ms']):.1f} | {r['acked']} "
                  f"| {r['started_worker']} | {r['first_ms']:.0f} |")
            else:
                w(f"| {label[tool]} | {repo} | not measured | | | {r['acked']} | "
                  f"| {r['first_ms']:.0f} |")
        w("")

    load = res.get("load", {})
    if load:
        w(f"**Bulk load**: INSERT ... SELECT writing about {plan['load_segments']} segments "
          "while archive_command runs; seconds from the load's start until its last segment "
          "is archived. Ratio = pgBackRest's seconds over ours, same mode and repository.")
        w("")
        w("| tool | mode | repository | segments | load s | all archived s | lag after load s "
          "| segments/s | ratio | vs pgBR async | failed calls | CPU s/segment "
          "| machine idle % | worker peak RSS MB |")
        w("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in load.items():
            tool, mode, repo = name.split("-")
            other = load.get(f"theirs-{mode}-{repo}")
            oa = load.get(f"theirs-async-{repo}")
            rr = ratio(r["seconds"], other["seconds"], False) if tool == "ours" and other else "—"
            ra = ratio(r["seconds"], oa["seconds"], False) if tool == "ours" and oa else "—"
            w(f"| {label[tool]} | {mode} | {repo} | {r['segments']} | {r['load_seconds']:.1f} "
              f"| {r['seconds']:.1f} | {r['lag_seconds']:.1f} "
              f"| {r['segments'] / r['seconds']:.2f} | {rr} | {ra} | {r['failed']} "
              f"| {cpu_seg(r)} | {idle(r)} "
              f"| {worker_mb(r, mode)} |")
        w("")

    rec = res.get("recovery", {})
    if rec:
        w(f"**Recovery**: a base backup recovered through restore_command (local repository) "
          f"over the {plan['segments']} backlog segments, no recovery target. Replay = from "
          "pg_ctl start to PostgreSQL's \"redo done\"; ready = until it accepts connections "
          "(after the end-of-recovery checkpoint). Ratio = pgBackRest's replay time over ours.")
        w("")
        w("| tool | mode | replay s | ready s | segments restored | ratio | vs pgBR async "
          "| machine idle % | worker peak RSS MB |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in rec.items():
            tool, mode = name.split("-")
            if tool == "cp":
                w(f"| floor: `cp` of plain segments | — | {r['redo_seconds']:.1f} "
                  f"| {r['seconds']:.1f} | {r['restored']} | — | — | {idle(r)} | — |")
                continue
            other = rec.get(f"theirs-{mode}")
            oa = rec.get("theirs-async")
            rr = ratio(r["redo_seconds"], other["redo_seconds"], False) \
                if tool == "ours" and other else "—"
            ra = ratio(r["redo_seconds"], oa["redo_seconds"], False) \
                if tool == "ours" and oa else "—"
            w(f"| {label[tool]} | {mode} | {r['redo_seconds']:.1f} | {r['seconds']:.1f} "
              f"| {r['restored']} | {rr} | {ra} | {idle(r)} "
              f"| {worker_mb(r, mode)} |")
        w("")

    # Worker memory, all parts.
    rows = []
    for part, d in (("capacity", cap), ("load", load), ("recovery", rec)):
        for name, r in d.items():
            rs = r.get("rss", {})
            if rs.get("workers"):
                rows.append((part, name, rs))
    if rows:
        w("**Async workers' memory** (/proc sampled every 50 ms: VmHWM of the worker process; "
          "largest VmRSS sum of the worker and its descendants at one sample). Target for "
          "ours: < 64 MB.")
        w("")
        w("| part | variant | worker role | worker runs | peak VmHWM MB "
          "| peak tree RSS MB |")
        w("|---|---|---|---:|---:|---:|")
        for part, name, rs in rows:
            tool = name.split("-")[0]
            w(f"| {part} | {label[tool]} {name.split('-', 1)[1]} | {', '.join(rs['roles'])} "
              f"| {rs['workers']} | {mb(rs['hwm_kb'])} | {mb(rs['tree_kb'])} |")
        w("")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        # Interrupted (the script's INT/TERM): the results so far are still written.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        with open(sys.argv[2]) as f:
            Bench(json.load(f)).run_all(sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
