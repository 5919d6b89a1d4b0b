#!/usr/bin/env python3
"""Helper of test/bench/backup.sh (not meant to be run by hand). Runs as root.

  backup_bench.py run RESULTS.jsonl TAG SSHD_PID USER -- CMD...
      Runs CMD once as USER (runuser), through `/usr/bin/time -f '%e %U %S %M'`, with
      time.perf_counter_ns() around it for the wall time. While it runs, a sampler (every
      0.2 s) sums the resident memory of (a) the client process tree (the tool and its
      children: pgBackRest's local workers, its ssh client) plus any daemonized ssh master of
      USER (pg_backrest's persistent ControlMaster runs detached and is not counted by
      `time`), and (b) the non-sshd processes under the private sshd (the remote side of an
      SSH backup). CPU:
        - cpu_client: user+sys of the tool and every child it waited for (GNU time);
        - cpu_master: user+sys consumed meanwhile by daemonized ssh masters of USER;
        - cpu_remote: growth of utime+stime+cutime+cstime summed over the live processes
          under the private sshd (every process that exits is counted in the cutime/cstime
          of the ancestor that reaps it), i.e. the remote tool plus sshd's own crypto.
      Appends one JSON object to RESULTS.jsonl. A non-zero exit prints the command, its
      stdout and stderr and exits 2.

  backup_bench.py reaper CMD...
      Runs CMD (the private sshd) as a child subreaper (prctl PR_SET_CHILD_SUBREAPER) that
      waits for every process orphaned below it, so that the CPU time of short-lived
      per-connection processes always ends up in some live ancestor's cutime/cstime (without
      it, pgBackRest's remote processes were lost from the count). Exits when CMD exits.

  backup_bench.py note RESULTS.jsonl TAG KEY VALUE
      Appends {"tag": TAG, KEY: VALUE} (VALUE parsed as JSON when possible).

  backup_bench.py report RESULTS.jsonl META.json [OUT.md]
      Prints the markdown tables (and writes them to OUT.md).
"""
import json
import os
import subprocess
import sys
import threading
import time

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def die(msg):
    print(f"\nBENCHMARK FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def snapshot():
    """{pid: (ppid, comm, uid, starttime, cpu ticks own, cpu ticks reaped children, rss bytes)}"""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            uid = os.stat(f"/proc/{d}").st_uid
        except OSError:
            continue
        lp, rp = s.index("("), s.rindex(")")
        comm = s[lp + 1:rp]
        fields = s[rp + 2:].split()
        # fields[0] is state (field 3); field n is fields[n - 3]
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
        start = int(fields[19])
        rss = int(fields[21]) * PAGE
        procs[int(d)] = (ppid, comm, uid, start, utime + stime, cutime + cstime, rss)
    return procs


def descendants(procs, root):
    children = {}
    for pid, p in procs.items():
        children.setdefault(p[0], []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        for c in children.get(pid, []):
            out.append(c)
            stack.append(c)
    return out


def tree_cpu(procs, root):
    if root not in procs:
        return 0
    pids = [root] + descendants(procs, root)
    return sum(procs[p][4] + procs[p][5] for p in pids if p in procs)


def masters(procs, uid, exclude):
    """Detached ssh processes of uid (not under the measured tree): {(pid, start): ticks}."""
    return {(pid, p[3]): p[4] for pid, p in procs.items()
            if p[1] == "ssh" and p[2] == uid and pid not in exclude}


def cmd_run(results, tag, sshd_pid, user, cmd):
    import pwd
    pw = pwd.getpwnam(user)
    scratch = os.path.dirname(os.path.abspath(results))
    tfile = os.path.join(scratch, "time.out")
    ofile = os.path.join(scratch, "cmd.stdout")
    efile = os.path.join(scratch, "cmd.stderr")
    for f in (tfile, ofile, efile):
        if os.path.exists(f):
            os.unlink(f)
    with open(tfile, "w"):
        pass
    os.chown(tfile, pw.pw_uid, pw.pw_gid)
    full = ["runuser", "-u", user, "--", "env", f"HOME={pw.pw_dir}",
            "/usr/bin/time", "-f", "%e %U %S %M", "-o", tfile] + cmd

    before = snapshot()
    remote0 = tree_cpu(before, sshd_pid)
    masters0 = masters(before, pw.pw_uid, set())
    state = {"client_rss": 0, "remote_rss": 0, "masters": dict(masters0), "samples": 0}
    stop = threading.Event()

    def sample(root):
        procs = snapshot()
        client = descendants(procs, root)
        tool = [p for p in client if procs[p][1] not in ("runuser", "env", "time")]
        m = masters(procs, pw.pw_uid, set(client))
        state["masters"].update(m)
        mpids = {pid for pid, _ in m}
        rss = sum(procs[p][6] for p in tool) + sum(procs[p][6] for p in mpids)
        state["client_rss"] = max(state["client_rss"], rss)
        if sshd_pid in procs:
            remote = [p for p in descendants(procs, sshd_pid) if procs[p][1] != "sshd"]
            state["remote_rss"] = max(state["remote_rss"], sum(procs[p][6] for p in remote))
        state["samples"] += 1

    with open(ofile, "wb") as out, open(efile, "wb") as err:
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

        def sampler():
            while not stop.wait(0.2):
                sample(proc.pid)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        rc = proc.wait()
        t1 = time.perf_counter_ns()
        stop.set()
        th.join()
    # let the remote side and the ssh master settle (processes exiting, being reaped)
    time.sleep(0.5)
    after = snapshot()
    remote1 = tree_cpu(after, sshd_pid)
    state["masters"].update(masters(after, pw.pw_uid, set()))
    master_ticks = sum(t - masters0.get(k, 0) for k, t in state["masters"].items())

    def text(path):
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip()

    if rc != 0:
        die(f"{tag}: exit code {rc}\n  command: {' '.join(cmd)}\n"
            f"  stdout: {text(ofile)}\n  stderr: {text(efile)}\n  time: {text(tfile)}")
    lines = [l for l in text(tfile).splitlines() if l.strip()]
    e, u, s, m = lines[-1].split()
    rec = {
        "tag": tag,
        "wall": (t1 - t0) / 1e9,
        "cpu_client": float(u) + float(s),
        "cpu_master": master_ticks / TCK,
        "cpu_remote": (remote1 - remote0) / TCK,
        "rss_max_proc": int(m) * 1024,
        "rss_client_sum": state["client_rss"],
        "rss_remote_sum": state["remote_rss"],
        "samples": state["samples"],
        "stdout": text(ofile)[-2000:],
    }
    with open(results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"  {tag}: {rec['wall']:.1f} s wall, {rec['cpu_client']:.1f} s CPU"
          + (f" + {rec['cpu_master']:.1f} s ssh master" if rec["cpu_master"] >= 0.05 else "")
          + (f" + {rec['cpu_remote']:.1f} s remote" if rec["cpu_remote"] >= 0.05 else "")
          + f", max RSS {rec['rss_max_proc'] / 1048576:.0f} MiB", flush=True)


def cmd_reaper(cmd):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        die("prctl(PR_SET_CHILD_SUBREAPER) failed")
    main = subprocess.Popen(cmd).pid
    while True:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            return
        if pid == main:
            return


def cmd_note(results, tag, key, value):
    try:
        value = json.loads(value)
    except ValueError:
        pass
    with open(results, "a") as f:
        f.write(json.dumps({"tag": tag, key: value}) + "\n")


VARIANTS = [
    ("full-p1-local", "full backup, process-max 1, local repository", None),
    ("full-p2-local", "full backup, process-max 2, local repository", "≤ 0.6× pgBackRest"),
    ("full-p1-ssh", "full backup, process-max 1, over SSH (pg1-host)", None),
    ("full-p2-ssh", "full backup, process-max 2, over SSH (pg1-host)", "≤ 0.6× pgBackRest"),
    ("incr-p2-local", "incr backup, no changes, process-max 2, local", "< 3 s"),
    ("restore-p2-local", "restore of the process-max 2 local full, process-max 2, cold",
     "≤ 0.5× pgBackRest"),
    ("restore-warm-p2-local", "the same restore, warm (repository cached)", "≤ 0.5× pgBackRest"),
    ("delta-same-p2-local", "delta restore of the same full onto its unchanged restored copy, "
     "process-max 2, cold", "≤ 0.6× pgBackRest"),
    ("delta-same-warm-p2-local", "the same delta restore, warm (repository and copy cached)",
     "≤ 0.6× pgBackRest"),
    ("incr-1pct-p2-local", "incr backup after updating 1 % of pgbench_accounts rows, "
     "process-max 2, local", None),
    ("delta-1pct-p2-local", "delta restore of that incr onto a copy restored from the full, "
     "process-max 2, cold", "≤ 0.5× pgBackRest"),
    ("delta-1pct-warm-p2-local", "the same delta restore, warm (repository and copy cached)",
     "≤ 0.5× pgBackRest"),
]
# what each verified copy is compared with (key of the "db" record)
VERIFIED = [("restore-p2-local", "restore", "expected"),
            ("delta-same-p2-local", "delta restore onto the unchanged copy", "expected"),
            ("delta-1pct-p2-local", "delta restore of the incr after the update", "expected2")]
TOOLS = ["pg_backrest", "pgBackRest", "pg_basebackup", "write only", "read+SHA-1 only",
         "read only"]
# the floors (test/bench/write_floor.py, read_hash.py): what each is
FLOORS = {"write only": "floor: writing the data directory's bytes durably, nothing else",
          "read+SHA-1 only": "floor: reading and hashing the copy (SHA-1), nothing else",
          "read only": "floor: reading the copy, nothing else"}
# pgBackRest 2.45 at scale 100 measured earlier on this kind of machine (from the issue)
REFERENCE = {
    "full-p1-local": "39.1 s", "full-p2-local": "21.2 s", "full-p1-ssh": "40.9 s",
    "full-p2-ssh": "23.2 s", "restore-p2-local": "6.3 s (p1) / 3.8 s (p2)",
}


def cmd_report(results, meta_path, out_path=None):
    with open(meta_path) as f:
        meta = json.load(f)
    # A tag measured several times (ROUNDS) is reported by its median run by wall time, with
    # the range; notes (no "wall") apply to the tag whatever the run.
    runs, notes = {}, {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            if "wall" in r:
                runs.setdefault(r["tag"], []).append(r)
            else:
                notes.setdefault(r["tag"], {}).update(r)
    recs = {}
    for tag in set(runs) | set(notes):
        rs = sorted(runs.get(tag, []), key=lambda r: r["wall"])
        rec = dict(rs[len(rs) // 2]) if rs else {}
        if len(rs) > 1:
            rec["walls"] = [r["wall"] for r in rs]
        rec.update(notes.get(tag, {}))
        recs[tag] = rec
    mib = 1048576
    lines = []
    w = lines.append
    w(f"Measured {meta['date']} on {meta['machine']}; PostgreSQL {meta['pg_version']}, "
      f"pgBackRest {meta['pgbackrest_version']}, pg_backrest {meta['ours_version']} "
      f"(commit {meta['commit']}); "
      + ("gz level 6" if meta.get("compress", "gz") == "gz"
         else f"compress-type={meta['compress']} at its default level")
      + f"; total run time {meta.get('total', '?')} s; "
      + ("PREFAULT=1 (6 GiB of memory written and freed before each measurement)."
         if meta.get("prefault") else "page cache dropped before each measurement, no prefault")
      + ("; warm variants: nothing dropped, the repository (and the delta's copy) read into "
         "the cache just before." if meta.get("warm") else ".")
      + (" RESTORE_ONLY=1: only the backups the restores need." if meta.get("restore_only")
         else "")
      + (f" RESTORE_ON={meta['restore_on']}: the restored copies (and the write floor) live "
         "there, not on the work directory's disk; a \"cold\" restore reads a cold "
         "repository, but a copy in memory is never cold." if meta.get("restore_on") else ""))
    w("")
    w("CPU = user+sys of the command and the children it waited for, plus (pg_backrest over "
      "SSH) its detached ssh master; **remote CPU** = everything run under the sshd (remote "
      "tool, sshd). RSS: **max** = largest single process (GNU time `%M`), **sum** = peak of "
      "the summed RSS of the client process tree (sampled every 0.2 s; pgBackRest runs one "
      "process per worker, pg_backrest threads), remote sum = the tool's processes under the "
      "sshd. Ratio = pg_backrest / pgBackRest (wall time; repository size for the size line).")
    scales = sorted({int(t.split("/")[0][1:]) for t in recs})
    for scale in scales:
        db = recs.get(f"s{scale}/db", {})
        w("")
        w(f"### Scale {scale} (data directory {db.get('pgdata_bytes', 0) / mib:.0f} MiB without "
          f"pg_wal, pgbench_accounts {db.get('accounts', '?')} rows)")
        w("")
        w("| variant | tool | wall s | CPU s | remote CPU s | repo MiB | RSS max MiB | "
          "RSS sum MiB | remote RSS MiB | ours/pgBackRest | target |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for key, title, target in VARIANTS:
            ours = recs.get(f"s{scale}/{key}/pg_backrest")
            theirs = recs.get(f"s{scale}/{key}/pgBackRest")
            for tool in TOOLS:
                r = recs.get(f"s{scale}/{key}/{tool}")
                if not r:
                    continue
                ssh = key.endswith("ssh")
                cpu = r["cpu_client"] + r.get("cpu_master", 0)
                remote = f"{r['cpu_remote']:.1f}" if ssh else ""
                repo = f"{r['repo_bytes'] / mib:.1f}" if "repo_bytes" in r else ""
                rrss = f"{r['rss_remote_sum'] / mib:.0f}" if ssh else ""
                # a command shorter than the 0.2 s sampling interval has no sampled sum
                csum = f"{r['rss_client_sum'] / mib:.0f}" if r["samples"] else "–"
                ratio, tgt = "", ""
                if tool == "pg_backrest":
                    if theirs:
                        ratio = f"{r['wall'] / theirs['wall']:.2f}"
                    tgt = target or ""
                    if key.startswith("full") and "repo_bytes" in r and theirs and "repo_bytes" in theirs:
                        ratio += f" (size {r['repo_bytes'] / theirs['repo_bytes']:.3f})"
                        tgt = (tgt + "; " if tgt else "") + "size ≤ 1.02×"
                    if key == "full-p2-local":
                        tgt += "; RSS < 100 MB, flat 50→100"
                if tool == "pgBackRest" and scale == 100 and key in REFERENCE:
                    tgt = f"earlier: {REFERENCE[key]}"
                if tool == "pg_basebackup" and scale == 100:
                    tgt = "earlier: 29.6 s"
                if tool in FLOORS:
                    # what each tool takes compared with the floor
                    ratio = "; ".join(f"{name} {t['wall'] / r['wall']:.2f}×" for name, t in
                                      (("ours", ours), ("pgBackRest", theirs)) if t)
                    tgt = FLOORS[tool]
                wall = f"{r['wall']:.1f}"
                if "walls" in r:
                    wall += (f" (median of {len(r['walls'])}: {min(r['walls']):.1f}–"
                             f"{max(r['walls']):.1f})")
                w(f"| {title} | {tool} | {wall} | {cpu:.1f} | {remote} | {repo} | "
                  f"{r['rss_max_proc'] / mib:.0f} | {csum} | {rrss} | "
                  f"{ratio} | {tgt} |")
        for key, what, exp in VERIFIED:
            ver = [f"{t}: {recs[f's{scale}/{key}/{t}'].get('verify', '?')}"
                   for t in ("pg_backrest", "pgBackRest") if f"s{scale}/{key}/{t}" in recs]
            if ver:
                w("")
                w(f"Verified, {what} (started on another port, promoted, `sum(abalance), "
                  f"count(*)` equal to the original's `{db.get(exp, '?')}`): "
                  + "; ".join(ver) + ".")
        drill = recs.get(f"s{scale}/drill-p2-local/pg_backrest")
        if drill:
            w("")
            w(f"Drill of the process-max 2 local full, process-max 2 (pg_backrest only; "
              f"pgBackRest has no drill): {drill['wall']:.1f} s wall, "
              f"{drill['cpu_client']:.1f} s CPU (not counting the copy's server), "
              f"max RSS {drill['rss_max_proc'] / mib:.0f} MiB. Its report (restore, then "
              f"start and recovery, then its own checks and stop):")
            w("")
            for line in drill.get("stdout", "").splitlines():
                w(f"    {line}")
    text = "\n".join(lines) + "\n"
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)


def main():
    a = sys.argv[1:]
    if a and a[0] == "run" and len(a) >= 7 and a[5] == "--":
        cmd_run(a[1], a[2], int(a[3]) if a[3] else -1, a[4], a[6:])
    elif a and a[0] == "reaper" and len(a) >= 2:
        cmd_reaper(a[1:])
    elif a and a[0] == "note" and len(a) == 5:
        cmd_note(*a[1:])
    elif a and a[0] == "report" and len(a) in (3, 4):
        cmd_report(*a[1:])
    else:
        die(__doc__)


if __name__ == "__main__":
    main()
