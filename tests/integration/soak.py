#!/usr/bin/env python3
"""soak.py: a long run of mixed traffic (`make soak`: one million requests; test_soak.py runs a
short one): C++ and Python handlers, three modules, high and low priority, persistent and
connect-per-request clients, the access log on. It compares every bertd process (master,
acceptors, workers) before and after: resident memory must stay flat, descriptors must all come
back, no process may be restarted or left a zombie. Loopback only; it stops everything it starts.

Usage: tests/integration/soak.py [--requests N] [--out build/soak/result.json]
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import py_handler  # noqa: E402
from loadrun import ECHO, Load, MeasuredServer, cmdline, comm, fd_count, rss_kb, session_pids, zombies  # noqa: E402

PERSISTENT_TARGETS = ("echo:echo", "echo:echo:low", "echo2:echo", "echo2:echo:low", "ext:echo", "ext:echo:low")
CONNECT_TARGETS = ("echo:echo", "echo2:echo:low", "ext:echo")

# Growth allowed between the snapshots, per process: the larger of a fixed slack (allocator
# noise) and a fraction of where it started. A leak of a few bytes per request over a million
# requests is several MiB, well past these.
SLACK_KB = {"master": 2048, "acceptor": 2048, "link": 2048, "worker": 2048}
SLACK_FRACTION = 0.10
LONG_RUN = 500_000


def config(access_log):
    return f"""
        listen: 127.0.0.1
        acceptors: 2
        access_log: {access_log}
        modules:
          - name: echo
            command: {ECHO}
            count: 2
          - name: echo2
            command: {ECHO} echo2
            count: 1
          - name: ext
            command: {py_handler()}
            count: 2
        """


def snapshot(server):
    """{pid: {role, rss_kb, fds}} for every process of the server's session."""
    out = {}
    for pid in session_pids(server.proc.pid):
        argv = cmdline(pid)
        role = "worker"
        if argv and os.path.basename(argv[0]) == "bertd":
            role = "master" if pid == server.proc.pid else "link" if comm(pid) == "bertd-link" else "acceptor"
        out[pid] = {"role": role, "command": " ".join(a for a in argv if a)[-60:], "rss_kb": rss_kb(pid),
                    "fds": fd_count(pid)}
    return out


def run_traffic(port, requests, seconds_cap):
    """Runs `requests` answers' worth of mixed load (nine tenths persistent, one tenth
    connect-per-request), both at once; returns the two loadgen results."""
    persistent = Load(None, port, seconds_cap, connections=12, targets=PERSISTENT_TARGETS, timeout=10,
                      max_requests=max(1, requests * 9 // 10), log_failures=20)
    connect = Load(None, port, seconds_cap, connections=4, targets=CONNECT_TARGETS, mode="connect", timeout=10,
                   max_requests=max(1, requests // 10), log_failures=20)
    try:
        return [persistent.result(), connect.result()]
    finally:
        persistent.kill()
        connect.kill()


def settle(s):
    harness.wait_until(lambda: int(s.stats()["connections.active"]) <= 1, timeout=20,
                       what="the load's connections to close")
    time.sleep(0.2)


def soak(requests, log=print, quarters=4):
    """Runs the soak in `quarters` equal parts, a snapshot of every process after each; returns
    (result dict, list of problems found)."""
    s = MeasuredServer(config("access.log"))
    problems = []
    try:
        s.start()
        # A warm-up first: allocators and caches reach their working size, so the start
        # snapshot is of a server that has seen traffic.
        warm = max(50_000, requests // 20)
        run_traffic(s.port, warm, 120)
        settle(s)
        snaps = [snapshot(s)]
        st0 = s.stats()
        log(f"soak: {len(snaps[0])} processes; {requests} requests after {warm} of warm-up")
        t0 = time.monotonic()
        results = []
        for q in range(quarters):
            part = requests // quarters + (requests % quarters if q == quarters - 1 else 0)
            results += run_traffic(s.port, part, max(120, part / 200))
            settle(s)
            snaps.append(snapshot(s))
        elapsed = time.monotonic() - t0
        st1 = s.stats()
        start, end = snaps[0], snaps[-1]
        answered = sum(r["requests"] for r in results)
        for r in results:
            bad = {k: v for k, v in r["failures"].items() if v}
            if bad:
                problems.append(f"{r['mode']}: failures {bad}: {r['failure_log'][:3]}")
            if not all(t["answered"] for t in r["targets"]):
                problems.append(f"{r['mode']}: a target got no answers: {r['targets']}")
        if answered < requests:
            problems.append(f"only {answered} of {requests} requests were answered")
        if any(set(x) != set(start) for x in snaps):
            problems.append(f"the processes changed: {[sorted(x) for x in snaps]}")
        for key in ("acceptors.restarts", "workers.restarts"):
            if st1[key] != st0[key]:
                problems.append(f"{key} went from {st0[key]} to {st1[key]}")
        rows = []
        half = snaps[len(snaps) // 2]
        for pid in sorted(set(start) & set(end)):
            a, b = start[pid], end[pid]
            what = f"{a['role']} {pid} ({a['command']})"
            allowed = max(SLACK_KB[a["role"]], int(a["rss_kb"] * SLACK_FRACTION))
            if b["rss_kb"] - a["rss_kb"] > allowed:
                problems.append(f"{what} grew from {a['rss_kb']} to {b['rss_kb']} KiB (allowed {allowed})")
            # A leak grows with the requests served; allocator warm-up levels off (the acceptors
            # after some 200,000 requests). In a long run the second half may add only a fraction
            # of what is allowed for the whole.
            if requests >= LONG_RUN and pid in half and b["rss_kb"] - half[pid]["rss_kb"] > allowed // 4:
                problems.append(f"{what} still grew in the second half: {half[pid]['rss_kb']} to {b['rss_kb']} KiB")
            if any(x.get(pid, a)["fds"] != a["fds"] for x in snaps):
                problems.append(f"{what} had {a['fds']} descriptors, then {[x.get(pid, a)['fds'] for x in snaps]}")
            rows.append({"pid": pid, "role": a["role"], "command": a["command"],
                         "rss_kb": [x[pid]["rss_kb"] if pid in x else None for x in snaps],
                         "rss_start_kb": a["rss_kb"], "rss_end_kb": b["rss_kb"], "fds_start": a["fds"],
                         "fds_end": b["fds"]})
        z = zombies(s.proc.pid)
        if z:
            problems.append(f"zombie processes: {z}")
        result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "requests": requests, "answered": answered,
                  "seconds": round(elapsed, 1), "rps": round(answered / elapsed), "snapshots": len(snaps),
                  "processes": rows, "zombies": len(z), "problems": problems,
                  "requests_by_module": {m: int(st1[f"requests.{m}"]) - int(st0[f"requests.{m}"])
                                         for m in ("echo", "echo2", "ext")}}
        return result, problems
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def print_report(result, log=print):
    log(f"soak: {result['answered']} answers in {result['seconds']} s ({result['rps']} req/s); "
        f"by module {result['requests_by_module']}")
    log(f"{'pid':>8} {'role':<8} {'RSS KiB: start, after each quarter':>40} {'fds':>9}  command")
    for r in result["processes"]:
        rss = " ".join(f"{k:>7}" for k in r["rss_kb"])
        log(f"{r['pid']:>8} {r['role']:<8} {rss:>40} {r['fds_start']:>4}/{r['fds_end']:<4}  {r['command']}")
    log(f"zombies: {result['zombies']}; " + ("no problems" if not result["problems"] else
                                             "PROBLEMS:\n  " + "\n  ".join(result["problems"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--out", default=os.path.join(harness.ROOT, "build", "soak", "result.json"))
    args = ap.parse_args()
    result, problems = soak(args.requests)
    print_report(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"soak: written to {os.path.relpath(args.out, harness.ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
