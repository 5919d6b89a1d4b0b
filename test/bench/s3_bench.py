#!/usr/bin/env python3
"""Report of test/bench/s3.sh (not meant to be run by hand).

  s3_bench.py report RESULTS.jsonl META.json CAPACITY_DIR [OUT.md]
      Prints the markdown report (and writes it to OUT.md): a summary against the targets,
      then per scale the backups and restores, then the capacity part's own tables.

RESULTS.jsonl holds what backup_bench.py `run` and `note` wrote for the backup part (tags
sSCALE/VARIANT/TOOL, VARIANT full-p2-TYPE or restore-p2-TYPE, and sSCALE/db notes); its
"remote" figures are the S3 server's (s3.sh passes the server's process tree where
backup.sh passes its sshd). CAPACITY_DIR holds archive_async_bench.py's plan.json and
results.json when the capacity part ran.
"""
import contextlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import archive_async_bench  # noqa: E402  (the capacity part's own report)

MIB = 1048576
TOOLS = ["pg_backrest", "pgBackRest"]
TARGETS = {"full": "≤ 0.6×", "restore": "≤ 0.7×"}


def load(results):
    """{tag: record}: a tag measured several times is its median run by wall time, with
    "walls" listing every run; notes (no "wall") apply to the tag whatever the run."""
    runs, notes = {}, {}
    if os.path.exists(results):
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
    return recs


def wall(r):
    s = f"{r['wall']:.1f}"
    if "walls" in r:
        s += f" (median of {len(r['walls'])}: {min(r['walls']):.1f}–{max(r['walls']):.1f})"
    return s


def secs(r):
    return f"{r['wall']:.1f} s" if "wall" in r else "—"


def report(results, meta_path, cap_dir, out_path=None):
    with open(meta_path) as f:
        meta = json.load(f)
    recs = load(results)
    cap_plan, cap_res = f"{cap_dir}/plan.json", f"{cap_dir}/results.json"
    cap = {}
    if os.path.exists(cap_res):
        with open(cap_res) as f:
            cap = json.load(f).get("capacity", {})
    compress = meta["compress"].split()
    scales = sorted({int(t.split("/")[0][1:]) for t in recs})
    lines = []
    w = lines.append
    w(f"Measured {meta['date']} on {meta['machine']}; PostgreSQL {meta['pg_version']}, "
      f"pgBackRest {meta['pgbackrest_version']}, pg_backrest {meta['ours_version']} "
      f"(commit {meta['commit']}); both tools with `repo1-type=s3` on the same server: "
      f"s3s-fs {meta['s3s_fs_version']} "
      + ("(with TCP_NODELAY: test/bench/nodelay.c) " if meta.get("nodelay")
         else "(as the tests run it, no TCP_NODELAY) ")
      + "behind stunnel (TLS, CA made for the run) on "
      f"127.0.0.1, path-style URIs, one bucket per tool and compress type. gz at level 6 "
      f"(pgBackRest's default), other types at their default level; page cache dropped "
      f"before each backup and restore. Total run time {meta['total']} s; load average at "
      f"the end {'/'.join(meta.get('loadavg', []))}.")
    w("")

    # -- summary ---------------------------------------------------------------------------
    w("| measure | scale | pg_backrest | pgBackRest | ours/pgBackRest | target |")
    w("|---|---:|---:|---:|---:|---|")
    for scale in scales:
        for kind, what in (("full", "full backup, process-max 2"),
                           ("restore", "restore, process-max 2")):
            for c in compress:
                o = recs.get(f"s{scale}/{kind}-p2-{c}/pg_backrest", {})
                t = recs.get(f"s{scale}/{kind}-p2-{c}/pgBackRest", {})
                if "wall" not in o and "wall" not in t:
                    continue
                ratio = f"{o['wall'] / t['wall']:.2f}" if "wall" in o and "wall" in t else "—"
                w(f"| {what}, {c} | {scale} | {secs(o)} | {secs(t)} | {ratio} "
                  f"| {TARGETS[kind]} |")
    for mode in ("async", "sync"):
        o, t = cap.get(f"ours-{mode}-s3"), cap.get(f"theirs-{mode}-s3")
        if not o and not t:
            continue

        def rate(r):
            return r["segments"] / r["seconds"] if r else None
        ro, rt = rate(o), rate(t)
        w(f"| archive-push capacity, {mode}, process-max 2 | — | "
          + (f"{ro:.2f} segments/s" if ro else "—") + " | "
          + (f"{rt:.2f} segments/s" if rt else "—") + " | "
          + (f"{ro / rt:.2f} (rate)" if ro and rt else "—") + " | "
          + ("≥ 2×" if mode == "async" else "") + " |")
    for c in compress[:1]:
        row = []
        for tool in TOOLS:
            vals = [(s, recs.get(f"s{s}/full-p2-{c}/{tool}")) for s in scales]
            vals = [(s, r) for s, r in vals if r and "wall" in r]
            row.append(" → ".join(f"{r['rss_max_proc'] / MIB:.0f}" for _, r in vals) or "—")
            if tool == "pgBackRest" and vals:
                row[-1] += " (all processes: " + " → ".join(
                    f"{r['rss_client_sum'] / MIB:.0f}" if r["samples"] else "–"
                    for _, r in vals) + ")"
        if len(scales) > 1 or row[0] != "—":
            w(f"| peak RSS of the full backup, {c}, MiB | {' → '.join(map(str, scales))} "
              f"| {row[0]} | {row[1]} | | flat as the cluster grows |")
    w("")

    # -- per scale ---------------------------------------------------------------------------
    w("Per scale: CPU = user+sys of the command and the children it waited for (pgBackRest's "
      "local worker processes); **server CPU** = s3s-fs and stunnel meanwhile. RSS **max** = "
      "largest single process (GNU time `%M`), **sum** = peak of the summed RSS of the "
      "command's process tree (sampled every 0.2 s; \"–\" when it ended before the first "
      "sample), server = s3s-fs + stunnel. Repository MiB = the backup's objects "
      "(`backup/bench/LABEL`, without WAL). Ratio = pg_backrest / pgBackRest wall time.")
    for scale in scales:
        db = recs.get(f"s{scale}/db", {})
        w("")
        w(f"#### Scale {scale} (data directory {db.get('pgdata_bytes', 0) / MIB:.0f} MiB "
          f"without pg_wal, pgbench_accounts {db.get('accounts', '?')} rows)")
        w("")
        w("| variant | tool | wall s | CPU s | server CPU s | repo MiB | RSS max MiB "
          "| RSS sum MiB | server RSS MiB | ours/pgBackRest |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, what in (("full", "full backup, process-max 2"),
                           ("restore", "restore, process-max 2")):
            for c in compress:
                theirs = recs.get(f"s{scale}/{kind}-p2-{c}/pgBackRest")
                for tool in TOOLS:
                    r = recs.get(f"s{scale}/{kind}-p2-{c}/{tool}")
                    if not r or "wall" not in r:
                        continue
                    ratio = ""
                    if tool == "pg_backrest" and theirs and "wall" in theirs:
                        ratio = f"{r['wall'] / theirs['wall']:.2f}"
                        if "repo_bytes" in r and "repo_bytes" in theirs:
                            ratio += f" (size {r['repo_bytes'] / theirs['repo_bytes']:.3f})"
                    repo = f"{r['repo_bytes'] / MIB:.1f}" if "repo_bytes" in r else ""
                    csum = f"{r['rss_client_sum'] / MIB:.0f}" if r["samples"] else "–"
                    srss = f"{r['rss_remote_sum'] / MIB:.0f}" if r["samples"] else "–"
                    w(f"| {what}, {c} | {tool} | {wall(r)} | {r['cpu_client']:.1f} "
                      f"| {r['cpu_remote']:.1f} | {repo} | {r['rss_max_proc'] / MIB:.0f} "
                      f"| {csum} | {srss} | {ratio} |")
        ver = []
        for c in compress:
            for tool in TOOLS:
                v = recs.get(f"s{scale}/restore-p2-{c}/{tool}", {}).get("verify")
                if v:
                    ver.append(f"{tool} {c}: {v}")
        if ver:
            w("")
            w(f"Verified (first round's copy started on another port, recovered through "
              f"archive-get from the S3 archive, promoted, `sum(abalance), count(*)` equal "
              f"to the original's `{db.get('expected', '?')}`): " + "; ".join(ver) + ".")

    # -- capacity ----------------------------------------------------------------------------
    if cap:
        w("")
        w("#### Async archive-push capacity (archive_async_bench.py, repository on S3)")
        w("")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            archive_async_bench.report(cap_plan, cap_res)
        # its first line is its own "### Results" heading: the machine line follows
        body = [l for l in buf.getvalue().splitlines() if not l.startswith("### Results")]
        while body and not body[0].strip():
            body.pop(0)
        lines.extend(body)
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)


def main():
    a = sys.argv[1:]
    if a and a[0] == "report" and len(a) in (4, 5):
        report(*a[1:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
