#!/usr/bin/env python3
"""Helper of test/bench/archive.sh (not meant to be run by hand).

  archive_bench.py measure PLAN.json RESULTS.json
      Runs as the postgres OS user. One process invocation per WAL segment and
      per variant, the way PostgreSQL's archive_command / restore_command call
      the tools: first a warm-up push (and later a warm-up get) of the first
      segment, reported separately, then every other segment, interleaved
      across variants with the order reversed on every other segment. Wall
      time is taken with time.perf_counter_ns() around the process (the
      process is started through `/usr/bin/time -f %M`, which also gives its
      peak RSS). Every fetched segment is compared byte for byte with the
      original; any failure aborts the benchmark.

  archive_bench.py report PLAN.json RESULTS.json [OUT.md]
      Prints the statistics as a markdown report (and writes it to OUT.md).
"""
import datetime
import filecmp
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def die(msg):
    print(f"\nBENCHMARK FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_timed(cmd, work, tag):
    """Runs cmd (list) once; returns (wall ms, peak RSS kB, user+sys CPU ms of the process and
    the children it waited for). Dies on a non-zero exit."""
    rss_file = os.path.join(work, "rss.out")
    out_file = os.path.join(work, "cmd.stdout")
    err_file = os.path.join(work, "cmd.stderr")
    # stdout/stderr go to files, not pipes: a persistent SSH master forked by a
    # tool may legitimately keep inherited descriptors open past the tool's exit.
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        t0 = time.perf_counter_ns()
        rc = subprocess.call(["/usr/bin/time", "-f", "%M %U %S", "-o", rss_file] + cmd,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        t1 = time.perf_counter_ns()
    if rc != 0:
        with open(err_file, "rb") as f:
            err_text = f.read().decode(errors="replace")
        with open(out_file, "rb") as f:
            out_text = f.read().decode(errors="replace")
        die(f"{tag}: exit code {rc}\n  command: {' '.join(cmd)}\n"
            f"  stdout: {out_text.strip()}\n  stderr: {err_text.strip()}")
    with open(rss_file) as f:
        last = [l for l in f.read().splitlines() if l.strip()][-1].split()
    return (t1 - t0) / 1e6, int(last[0]), (float(last[1]) + float(last[2])) * 1000


def measure(plan_path, results_path):
    with open(plan_path) as f:
        plan = json.load(f)
    work = plan["scratch"]
    segments = plan["segments"]  # absolute paths; [0] is the warm-up segment
    variants = plan["variants"]  # [{name, tool, variant, cmd: [...]}]
    res = {v["name"]: {"push": [], "get": [], "rss_push": [], "rss_get": [],
                       "cpu_push": [], "cpu_get": [],
                       "first_push": None, "first_get": None} for v in variants}

    def order(i):
        return variants if i % 2 == 0 else list(reversed(variants))

    def push(v, seg):
        return run_timed(v["cmd"] + ["archive-push", seg], work,
                         f"{v['name']} archive-push {seg}")

    def get(v, seg):
        name = os.path.basename(seg)
        dest_dir = os.path.join(work, "get", v["name"])
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, name)
        if os.path.exists(dest):
            os.unlink(dest)
        ms, rss, cpu = run_timed(v["cmd"] + ["archive-get", name, dest], work,
                                 f"{v['name']} archive-get {name}")
        if not os.path.exists(dest):
            die(f"{v['name']} archive-get {name}: exit 0 but {dest} does not exist")
        if not filecmp.cmp(seg, dest, shallow=False):
            die(f"{v['name']} archive-get {name}: fetched file differs from the original "
                f"(kept: {dest} vs {seg})")
        os.unlink(dest)
        return ms, rss, cpu

    n = len(segments) - 1
    load_start = os.getloadavg()[0]
    t_start = time.time()
    print(f"warm-up archive-push of {os.path.basename(segments[0])} (not counted)", flush=True)
    for v in order(0):
        ms, rss, _ = push(v, segments[0])
        res[v["name"]]["first_push"] = ms
        res[v["name"]]["rss_push"].append(rss)
    print(f"archive-push of {n} segments x {len(variants)} variants", flush=True)
    for i, seg in enumerate(segments[1:]):
        for v in order(i):
            ms, rss, cpu = push(v, seg)
            res[v["name"]]["push"].append(ms)
            res[v["name"]]["cpu_push"].append(cpu)
            res[v["name"]]["rss_push"].append(rss)
        print(f"  [{i + 1}/{n}] {os.path.basename(seg)}: " +
              ", ".join(f"{v['name']} {res[v['name']]['push'][-1]:.0f}" for v in variants) +
              " ms", flush=True)

    print(f"warm-up archive-get of {os.path.basename(segments[0])} (not counted)", flush=True)
    for v in order(1):
        ms, rss, _ = get(v, segments[0])
        res[v["name"]]["first_get"] = ms
        res[v["name"]]["rss_get"].append(rss)
    print(f"archive-get of {n} segments x {len(variants)} variants (each compared with cmp)",
          flush=True)
    for i, seg in enumerate(segments[1:]):
        for v in order(i + 1):
            ms, rss, cpu = get(v, seg)
            res[v["name"]]["get"].append(ms)
            res[v["name"]]["cpu_get"].append(cpu)
            res[v["name"]]["rss_get"].append(rss)
        print(f"  [{i + 1}/{n}] {os.path.basename(seg)}: " +
              ", ".join(f"{v['name']} {res[v['name']]['get'][-1]:.0f}" for v in variants) +
              " ms", flush=True)

    res["_meta"] = {"load_start": load_start, "load_end": os.getloadavg()[0],
                    "seconds": time.time() - t_start}
    with open(results_path, "w") as f:
        json.dump(res, f, indent=1)


def p95(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=20, method="inclusive")[18]


def stored_sizes(repo):
    """{segment name: stored bytes} under REPO/archive/bench/*/<16 hex>/."""
    out = {}
    base = os.path.join(repo, "archive", "bench")
    for arch_id in sorted(os.listdir(base)):
        d = os.path.join(base, arch_id)
        if not os.path.isdir(d):
            continue
        for sub in os.listdir(d):
            sd = os.path.join(d, sub)
            if len(sub) != 16 or not os.path.isdir(sd):
                continue
            for f in os.listdir(sd):
                out[f[:24]] = (os.path.getsize(os.path.join(sd, f)), f)
    return out


def report(plan_path, results_path, out_md=None):
    with open(plan_path) as f:
        plan = json.load(f)
    with open(results_path) as f:
        res = json.load(f)
    variants = plan["variants"]
    seg_size = plan["segment_size"]
    names = [os.path.basename(s) for s in plan["segments"]]
    lines = []
    w = lines.append
    w(f"### Results — {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")
    w("")
    w(f"Machine: {plan['machine']}. PostgreSQL {plan['pg_version']}, "
      f"{plan['pgbackrest_version']}, pg_backrest {plan['ours_version']}; "
      f"gz level 6; {len(names) - 1} measured segments of {seg_size // 1048576} MiB "
      f"(+1 warm-up), system identifier {plan['system_id']}. "
      f"pg_backrest logs to its file at info; pgBackRest "
      + ("does too (--log-level-file=info on its command line)."
         if plan.get("theirs_file_log") else
         "writes no log file (its synchronous archive-push/get log to a file only when "
         "log-level-file is given on the command line)."))
    meta = res.get("_meta", {})
    if meta:
        w("")
        w(f"Measurement phase: {meta['seconds']:.0f} s; 1-minute load average "
          f"{meta['load_start']:.2f} at its start, {meta['load_end']:.2f} at its end "
          f"(the benchmark itself keeps about one core busy; more means other work on the machine).")
    w("")
    w("| tool | repository | push median ms | push p95 ms | get median ms | get p95 ms "
      "| peak RSS MB | push ratio ours/pgBR | get ratio ours/pgBR | first push ms | first get ms "
      "| push CPU ms | get CPU ms |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for v in variants:
        r = res[v["name"]]
        med[v["name"]] = (statistics.median(r["push"]), statistics.median(r["get"]))
    for v in variants:
        r = res[v["name"]]
        pm, gm = med[v["name"]]
        ref = v.get("compare_with")
        if ref:
            pr = f"{pm / med[ref][0]:.2f}"
            gr = f"{gm / med[ref][1]:.2f}"
        else:
            pr = gr = "—"
        rss = max(r["rss_push"] + r["rss_get"]) / 1024
        w(f"| {v['tool']} | {v['variant']} | {pm:.0f} | {p95(r['push']):.0f} | {gm:.0f} "
          f"| {p95(r['get']):.0f} | {rss:.1f} | {pr} | {gr} | {r['first_push']:.0f} "
          f"| {r['first_get']:.0f} | {statistics.median(r['cpu_push']):.0f} "
          f"| {statistics.median(r['cpu_get']):.0f} |")
    w("")
    w("Medians and p95 over the measured segments; peak RSS is the maximum over all runs "
      "(GNU time %M: the process and the children it waits for, e.g. pgBackRest's ssh); "
      "CPU = median user+sys of the same. The first push/get is the warm-up on a fresh "
      "repository: over SSH it includes the connection setup that ssh-persist then saves.")
    w("")
    w("Targets (reported, not asserted): push ≤ 0.6× pgBackRest locally and ≤ 0.4× over SSH; "
      "get over SSH ≤ 0.4×; peak RSS < 20 MB.")
    w("")

    # Storage.
    repos = [(v["tool"], v["variant"], v["repo"]) for v in variants if v.get("repo")]
    sizes = {(t, var): stored_sizes(p) for t, var, p in repos}
    w("#### Stored size per segment (gz level 6)")
    w("")
    cols = [(t, var) for t, var, _ in repos]
    w("| segment | `gzip -6` bytes | " + " | ".join(f"{t} {var} bytes" for t, var in cols) + " |")
    w("|---|---:|" + "---:|" * len(cols))
    gz = plan["gzip_sizes"]
    for n in names:
        cells = []
        for c in cols:
            s = sizes[c].get(n)
            cells.append(f"{s[0]}" if s else "missing")
        w(f"| {n} | {gz.get(n, '')} | " + " | ".join(cells) + " |")
    w("")
    w("| tool | repository | segments stored | mean stored bytes | compression ratio |")
    w("|---|---|---:|---:|---:|")
    gz_vals = [gz[n] for n in names if n in gz]
    if gz_vals:
        m = statistics.mean(gz_vals)
        w(f"| `gzip -6` (reference) | — | {len(gz_vals)} | {m:.0f} | {seg_size / m:.2f} |")
    for c in cols:
        vals = [sizes[c][n][0] for n in names if n in sizes[c]]
        if vals:
            m = statistics.mean(vals)
            w(f"| {c[0]} | {c[1]} | {len(vals)} | {m:.0f} | {seg_size / m:.2f} |")
    w("")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if out_md:
        with open(out_md, "w") as f:
            f.write(text)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "measure":
        measure(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
