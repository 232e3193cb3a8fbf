#!/usr/bin/env python3
"""ab.py: two bertd builds side by side, for a change's "before and after in the same conditions".
`make bench` compares bertd with a baseline relay; its per-case ratio moves by up to 0.4 on a shared
VM from run to run, far more than the few per cent a refactor must stay within. This compares two
bertd binaries instead: the same config, the same C++ echo workers, the same loadgen on loopback,
their runs interleaved round by round (the order rotating), so that whatever else the machine does
falls on both alike. Besides throughput and p99 latency it reports the CPU time the server's own
processes (master and acceptors, not the workers) spent per request, read from /proc: the cost of a
request even where the load generator or the workers bound the throughput. Run it on a quiet
machine: there the same binary against itself reads within about 5% in throughput and 11% in CPU
per request; beside other busy processes neither figure is that close.

Usage: tests/bench/ab.py --before REV|PATH [--after PATH] [--rounds N] [--duration S] [--cases LIST]
                         [--acceptors-before N|auto] [--acceptors-after N|auto]
--before: a git revision (built once into build/ab/bertd-SHA from a temporary worktree) or the
          path of a bertd binary. --after: a bertd binary (default: this build's bertd).
--acceptors-*: each side's `acceptors:` (default 2, as make bench); the same binary on both sides
          with other counts compares the settings.
--cases: comma-separated MODE/CLIENTS[/PAYLOAD] (default: persistent and connect at 1, 8 and 64
         clients, and 1 MiB persistent at 1 and 8).
Prints one line per case and writes build/ab/results.json (--out). It never leaves a process behind.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import common
from common import BUILD, MIB, ROOT, Failed, Server, free_port, median

WORKERS = 2
DEFAULT_CASES = "persistent/1,persistent/8,persistent/64,connect/1,connect/8,connect/64,persistent/1/1MiB," \
                "persistent/8/1MiB"
TICK = os.sysconf("SC_CLK_TCK")


def build_revision(rev):
    """bertd as of `rev`, built once from a temporary worktree; the binary's path."""
    p = subprocess.run(["git", "rev-parse", "--verify", "--quiet", rev + "^{commit}"], cwd=ROOT, text=True,
                       stdout=subprocess.PIPE)
    if p.returncode != 0:
        raise SystemExit(f"ab: '{rev}' is neither a bertd binary nor a git revision")
    sha = p.stdout.strip()
    out = os.path.join(ROOT, "build", "ab", f"bertd-{sha[:12]}")
    if os.access(out, os.X_OK):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    src = tempfile.mkdtemp(prefix="bertd-ab-src-")
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "-f", src, sha], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["./configure"], cwd=src, check=True, stdout=subprocess.DEVNULL)
        jobs = str(max(1, len(os.sched_getaffinity(0))))
        subprocess.run(["make", "-j" + jobs, "build/rel/bertd"], cwd=src, check=True, stdout=subprocess.DEVNULL)
        shutil.copy2(os.path.join(src, "build/rel/bertd"), out)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", src], cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(src, ignore_errors=True)
    return out


def cpu_ticks(pids):
    """utime + stime of these processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_side(server, mode, clients, payload, duration, warmup, cpu):
    """One loadgen run against `server`: requests/s, p99 latency, server CPU µs per request, errors."""
    pids = server.pids()
    before = cpu_ticks(pids)
    r = common.run_loadgen(server.port, clients, mode, duration, warmup, cpu, payload=payload)
    spent_us = (cpu_ticks(pids) - before) * 1e6 / TICK
    # The warm-up's requests are not in r["requests"] but its CPU is in spent_us: scale it out.
    in_window = duration / (duration + warmup)
    per_request = spent_us * in_window / r["requests"] if r["requests"] else None
    return {"rps": r["rps"], "p99_us": r["p99_us"], "cpu_us": per_request, "errors": r["errors"]}


def start(name, binary, acceptors, tmp):
    cfg = os.path.join(tmp, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1\nacceptors: {acceptors}\nmodules:\n  - name: echo\n"
                f"    command: {os.path.join(BUILD, 'tests/handlers/echo')}\n    count: {WORKERS}\n")
    port = free_port()
    s = Server(name, [binary, "-c", cfg, "-p", str(port)], port, tmp)
    s.start()
    return s


def parse_case(text):
    parts = text.split("/")
    if len(parts) not in (2, 3) or parts[0] not in ("persistent", "connect") or not parts[1].isdigit():
        raise SystemExit(f"ab: bad case '{text}': MODE/CLIENTS[/1MiB], MODE persistent or connect")
    if len(parts) == 3 and parts[2] != "1MiB":
        raise SystemExit(f"ab: bad payload in '{text}': only 1MiB")
    return parts[0], int(parts[1]), MIB if len(parts) == 3 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", default=os.path.join(BUILD, "bertd"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--acceptors-before", default="2")
    ap.add_argument("--acceptors-after", default="2")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "ab", "results.json"))
    args = ap.parse_args()
    cases = [parse_case(c) for c in args.cases.split(",") if c]
    for a in (args.acceptors_before, args.acceptors_after):  # written into the config as they are
        if a != "auto" and not (a.isdigit() and 1 <= int(a) <= 256):
            raise SystemExit(f"ab: acceptors must be 1 to 256 or auto, not '{a}'")
    if os.path.isfile(args.before):  # a binary; anything else names a git revision
        if not os.access(args.before, os.X_OK):
            raise SystemExit(f"ab: {args.before} is not executable")
        before = args.before
    else:
        before = build_revision(args.before)
    sides = {"before": (before, args.acceptors_before), "after": (args.after, args.acceptors_after)}
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if len(allowed) > 1 else None
    print(f"ab: before {before}, {args.acceptors_before} acceptors\nab: after  {args.after}, "
          f"{args.acceptors_after} acceptors\nab: {args.rounds} rounds of {args.duration:g}s per "
          f"case and side, loadgen {'on CPU %d' % cpu if cpu is not None else 'unpinned'}, load {common.loadavg()}",
          flush=True)
    results = {"before": before, "after": args.after, "acceptors": [args.acceptors_before, args.acceptors_after],
               "rounds": args.rounds, "duration_s": args.duration,
               "load_before": common.loadavg(), "cases": []}
    with tempfile.TemporaryDirectory(prefix="bertd-ab-") as tmp:
        servers = {}
        try:
            for name, (binary, acceptors) in sides.items():
                servers[name] = start(name, binary, acceptors, tmp)
            for i, (mode, clients, payload) in enumerate(cases):
                runs, notes = common.alternate(
                    {n: (lambda s=s: run_side(s, mode, clients, payload, args.duration, args.warmup, cpu))
                     for n, s in servers.items()}, args.rounds, i)
                row = {"case": f"{mode}/{clients}{'/1MiB' if payload else ''}", "notes": notes}
                for n, rs in runs.items():
                    row[n] = {"rps": median([r["rps"] for r in rs]), "p99_us": median([r["p99_us"] for r in rs]),
                              "cpu_us": median([r["cpu_us"] for r in rs]),
                              "errors": sum(r["errors"] for r in rs), "runs": rs}
                b, a = row["before"], row["after"]
                row["rps_ratio"] = a["rps"] / b["rps"] if a["rps"] and b["rps"] else None
                row["cpu_ratio"] = a["cpu_us"] / b["cpu_us"] if a["cpu_us"] and b["cpu_us"] else None
                results["cases"].append(row)
                print(f"  {row['case']:<20} req/s {b['rps']:>9,.0f} -> {a['rps']:>9,.0f} ({row['rps_ratio']:.3f})   "
                      f"server CPU/request {b['cpu_us']:6.1f} -> {a['cpu_us']:6.1f} us ({row['cpu_ratio']:.3f})   "
                      f"p99 {common.us(b['p99_us'])} -> {common.us(a['p99_us'])}"
                      f"{'   errors ' + str(b['errors'] + a['errors']) if b['errors'] + a['errors'] else ''}"
                      f"{'   ' + '; '.join(notes) if notes else ''}", flush=True)
        finally:
            for s in servers.values():
                s.stop()
    results["load_after"] = common.loadavg()
    out = args.out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"ab: load {results['load_after']}; raw figures in {os.path.relpath(out, ROOT)}")
    return 0


def on_term(signum, frame):
    raise KeyboardInterrupt  # unwinds through the finally that stops both servers


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("ab: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
    except (Failed, subprocess.CalledProcessError) as e:
        print(f"ab: {e}", file=sys.stderr)
        sys.exit(1)
