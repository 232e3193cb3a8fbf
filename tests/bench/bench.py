#!/usr/bin/env python3
"""bench.py: what `make bench` runs. Measures bertd against the same-run baseline relay (same
hops, no protocol logic), both with the same handler and worker count, with tests/bench/loadgen
on loopback only: persistent and connect-per-request clients, 1 to 512 of them, small and 1 MiB
arguments, the C++ and the Python echo handlers, native calls (beside an Erlang gen_tcp server doing
the least a native call needs), an Erlang node's messages and rpc:calls into bertd (erlbench.py),
bertd behind HAProxy, bertd's cache, 4 GiB streams, other clients' latency under hostile
traffic and throughput while /metrics is scraped (rows.py, hostile.py, scrapes.py); then the memory
idle connections cost. Writes BENCHMARKS.md and BENCHMARKS.png (throughput against concurrency,
gnuplot) at the repository root, and build/bench/results.json. It never leaves a process behind.

Usage: tests/bench/bench.py [--duration S] [--warmup S] [--quick] [--only KIND] [--report PATH]
                            [--from-results JSON]
--quick: one second per case and fewer cases, report in build/bench/ (a smoke run).
--only: just one kind of case, no idle figure: cpp, python, erlang (with the native baseline),
        native-baseline (the erlang rows without the relay), nodes (the Erlang node rows), haproxy,
        cache, stream, hostile, metrics; or idle: the idle figure alone.
A run during which the machine's load from outside the bench averaged over LOAD_LIMIT is discarded:
its report goes to build/bench/BENCHMARKS.discarded.md, never BENCHMARKS.md, and it exits with 3.
--from-results: no measuring; the report and plot from a results.json written earlier.
BERTD_BUILD names the build directory (default build/rel).
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import common
import erlbench
import hostile
import rows
import scrapes
from common import BUILD, MIB, ROOT, Failed, Server, free_port, loadavg, median_of, us

WORKERS = 2
ROUNDS = 5  # each case alternates bertd and the baseline this many times; the median round counts
IDLE = 10_000  # idle connections for the memory figure
STREAM_ROUNDS = 3  # 4 GiB each way and through cat per round
LOAD_LIMIT = 2.5  # a run whose load from outside the bench averaged more is discarded
NATIVE_ECHO = os.path.join(ROOT, "tests/bench/native_echo.escript")
ROWS = ("haproxy", "cache", "stream", "hostile", "metrics")  # the --only kinds of rows.py, hostile.py, scrapes.py

HANDLERS = {
    # name: (title, command: an executable path, as the relay runs it with no arguments)
    "cpp": ("External C++ handler (tests/handlers/echo.cc)", os.path.join(BUILD, "tests/handlers/echo")),
    "python": ("External Python handler (tests/handlers/pyecho.py, modules/python)",
               os.path.join(ROOT, "tests/handlers/pyecho.py")),
    # bertd calls the native module bertd_echo:echo/1 on its companion Erlang VM; the baseline beside
    # it is the relay with the C++ echo, so the ratio is native against the fastest external handler.
    "erlang": ("Native Erlang module (modules/erlang/bertd_echo.erl); baseline: the relay with the C++ echo",
               os.path.join(BUILD, "tests/handlers/echo")),
}
# The module each handler's bertd serves the echo as (the relay always passes frames to its workers).
BERTD_MODULE = {"cpp": "echo", "python": "echo", "erlang": "bertd_echo"}
PAYLOADS = {"small": None, "1MiB": MIB}
PAYLOAD_TITLES = {"small": 'small arguments (`<<"hello">>`)', "1MiB": "1 MiB binary arguments"}


@dataclass
class Case:
    handler: str
    payload: str
    mode: str
    clients: int

    @property
    def name(self):
        return f"{self.handler}/{self.payload}/{self.mode}/{self.clients}"


def cases(quick):
    out = []
    concurrency = (8, 64) if quick else (1, 8, 64, 512)
    for handler in ("cpp", "python", "erlang"):
        for mode in ("persistent", "connect"):
            for clients in concurrency:
                out.append(Case(handler, "small", mode, clients))
    # 1 MiB answers to 512 clients would hold half a GiB in each process: up to 64.
    for mode in ("persistent", "connect"):
        for clients in (1,) if quick else (1, 8, 64):
            out.append(Case("cpp", "1MiB", mode, clients))
    return out


def start_pair(handler, tmp, only=None):
    """The baseline relay and bertd, both with WORKERS copies of `handler`, and for the native
    module the native baseline (tests/bench/native_echo.escript); any may be missing (with a note)
    when it cannot start. With only == "native-baseline": bertd and the native baseline."""
    command = HANDLERS[handler][1]
    cfg = os.path.join(tmp, f"{handler}.yaml")
    if handler == "erlang":
        module = (f"  - name: bertd_echo\n    type: native\n    codepaths: [{os.path.join(BUILD, 'ebin')}]\n")
    else:
        module = f"  - name: echo\n    command: {command}\n    count: {WORKERS}\n"
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1\nacceptors: 2\nlimits: {{max_connections: {IDLE + 1000}}}\n"
                f"modules:\n{module}")
    relay_port, bertd_port = free_port(), free_port()
    pair = {
        "baseline": Server(f"baseline-{handler}", [os.path.join(BUILD, "tests/bench/relay"), "--port",
                                                   str(relay_port), "--workers", str(WORKERS), "--handler", command],
                           relay_port, tmp),
        "bertd": Server(f"bertd-{handler}", [os.path.join(BUILD, "bertd"), "-c", cfg, "-p", str(bertd_port)],
                        bertd_port, tmp, BERTD_MODULE[handler]),
    }
    if handler == "erlang":
        native_port = free_port()
        pair["native"] = Server("native-baseline", ["escript", NATIVE_ECHO, str(native_port),
                                                    os.path.join(BUILD, "ebin")], native_port, tmp, "bertd_echo")
        if only == "native-baseline":
            del pair["baseline"]
    notes = []
    for name, s in list(pair.items()):
        try:
            s.start()
        except Failed as e:
            notes.append(f"{name} with the {handler} handler unavailable: {e}")
            s.stop()
            del pair[name]
    return pair, notes


def run_loadgen(port, case, duration, warmup, cpu, module="echo"):
    return common.run_loadgen(port, case.clients, case.mode, duration, warmup, cpu, module, PAYLOADS[case.payload])


def raise_open_files(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1000
    try:
        if hard != resource.RLIM_INFINITY and hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root only
        elif soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return n if soft == resource.RLIM_INFINITY else min(n, soft - 1000)


def idle_memory(server, n):
    """KiB of resident memory (RSS and PSS) the server's own processes gain per 1,000 idle connections."""
    before, pss_before = server.rss_kb(), server.pss_kb()
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        time.sleep(1.0)  # every connection accepted and registered
        server.probe()  # and still serving
        after, pss_after = server.rss_kb(), server.pss_kb()
    finally:
        for s in socks:
            s.close()
    return {"connections": n, "rss_before_kb": before, "rss_after_kb": after,
            "per_1000_kb": round((after - before) / (n / 1000), 1), "pss_before_kb": pss_before,
            "pss_after_kb": pss_after, "pss_per_1000_kb": round((pss_after - pss_before) / (n / 1000), 1)}


# --- the report -------------------------------------------------------------------------------
def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(), "commit": commit or "?"}


def plot(results, png, workdir):
    """Throughput against concurrency, small arguments: one line per handler, mode and server."""
    if not shutil.which("gnuplot"):
        return "gnuplot is not installed: no plot"
    series = []
    for handler in ("cpp", "python"):
        for mode in ("persistent", "connect"):
            for server in ("bertd", "baseline"):
                pts = [(r["clients"], r[server]["rps"]) for r in results["cases"]
                       if r["handler"] == handler and r["payload"] == "small" and r["mode"] == mode and r.get(server)]
                if pts:
                    series.append((handler, mode, server, sorted(pts)))
    if not series:
        return "nothing to plot"
    data = os.path.join(workdir, "plot.dat")
    with open(data, "w") as f:
        for _, _, _, pts in series:
            for x, y in pts:
                f.write(f"{x} {y}\n")
            f.write("\n\n")
    colors = {("cpp", "persistent"): "#1f77b4", ("cpp", "connect"): "#2ca02c",
              ("python", "persistent"): "#d62728", ("python", "connect"): "#9467bd"}
    names = {"cpp": "C++", "python": "Python"}
    plots = []
    for i, (handler, mode, server, _) in enumerate(series):
        dt = 1 if server == "bertd" else 2
        plots.append(f"'{data}' index {i} with linespoints lw 2 dt {dt} pt 7 lc rgb '{colors[(handler, mode)]}' "
                     f"title '{server} {names[handler]} {mode}'")
    script = "\n".join([
        "set terminal pngcairo size 960,560 font 'sans,10'",
        f"set output '{png}'",
        "set title 'bertd and the baseline relay: requests/s against concurrent clients (small arguments)'",
        "set logscale x 2", "set xrange [0.7:720]", "set xtics (1, 8, 64, 512)", "set xlabel 'concurrent clients'",
        "set ylabel 'requests/s'", "set yrange [0:*]", "set grid", "set key outside right top",
        "plot " + ", ".join(plots), ""])
    p = subprocess.run(["gnuplot"], input=script, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return None if p.returncode == 0 else f"gnuplot failed: {p.stderr.strip()[:200]}"


def soak_section():
    path = os.path.join(ROOT, "build", "soak", "result.json")
    try:
        with open(path) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return ["## Soak", "", "No soak result in build/soak/result.json: run `make soak` before `make bench` "
                "to include one.", ""]
    quarters = len(s["processes"][0]["rss_kb"]) - 1 if s["processes"] else 0
    lines = ["## Soak (`make soak`)", "",
             f"{s['answered']:,} requests ({s['date']}) mixed across modules echo and echo2 (C++) and ext "
             f"(Python), high and low priority, persistent and connect-per-request clients, access log on: "
             f"{s['seconds']} s, {s['rps']:,} req/s; by module {s['requests_by_module']}. Resident memory of every "
             f"process of the server after a warm-up, then after each quarter of the run (its connections "
             f"closed), and its descriptors at the start and the end:", "",
             "| pid | process | RSS start | " + " | ".join(f"after {k}/{quarters}" for k in range(1, quarters + 1)) +
             " | descriptors |", "|---:|---|" + "---:|" * (quarters + 2)]
    for r in s["processes"]:
        what = r["role"] if r["role"] != "worker" else "worker: " + os.path.basename(r["command"].split()[-1])
        if r["role"] == "worker" and r["command"].split()[-1] == "echo2":
            what = "worker: echo (as echo2)"
        lines.append(f"| {r['pid']} | {what} | " + " | ".join(f"{k:,} KiB" for k in r["rss_kb"]) +
                     f" | {r['fds_start']} → {r['fds_end']} |")
    lines += ["", f"Zombie processes: {s['zombies']}. Problems found: "
              f"{'none' if not s['problems'] else '; '.join(s['problems'])}.", ""]
    return lines


def load_lines(results):
    """What the report says of the run's length and of the load the rest of the machine added."""
    took = f"{results['elapsed_s'] / 60:.1f} minutes" if results.get("elapsed_s") else "?"
    o = results.get("outside_load") or {}
    L = [f"This run took {took}. Load from outside the bench (tasks runnable or in disk wait that are not "
         "the bench's own processes, sampled every second; about 1% of a CPU): "
         f"mean {o.get('mean', '?')}, peak {o.get('peak', '?')} over {o.get('samples', 0)} samples; a run whose "
         f"mean is over {results.get('load_limit', LOAD_LIMIT)} is discarded and repeated, not published.", ""]
    if results.get("discarded"):
        L = ["**DISCARDED: the machine was busy with other work during this run (outside load "
             f"{o.get('mean')} > {results.get('load_limit', LOAD_LIMIT)}). Its figures are not to be published; "
             "repeat `make bench` on a quiet machine.**", ""] + L
    limit = results.get("load_limit", LOAD_LIMIT)
    busy = [r for r in results["cases"] if (r.get("outside_load") or 0) > limit]
    busy_rows = [k for k in ROWS if ((results.get(k) or {}).get("outside_load") or 0) > limit]
    if busy_rows:
        L += [f"Rows measured while the outside load was over the limit: {', '.join(busy_rows)}.", ""]
    if busy:
        L += [f"Cases measured while the outside load was over the limit: "
              f"{', '.join(Case(r['handler'], r['payload'], r['mode'], r['clients']).name for r in busy)}.", ""]
    return L


def native_external_section(results):
    """bertd's native rows against its own external C++ rows, same run."""
    L = []
    native = {(r["mode"], r["clients"]): r["bertd"]["rps"] for r in results["cases"]
              if r["handler"] == "erlang" and r["payload"] == "small" and r.get("bertd")}
    external = {(r["mode"], r["clients"]): r["bertd"]["rps"] for r in results["cases"]
                if r["handler"] == "cpp" and r["payload"] == "small" and r.get("bertd")}
    both = sorted(k for k in native if k in external)
    if both:
        L += ["## Native calls against external calls", "",
              "bertd's rate for the native Erlang echo divided by its rate for the external C++ echo, same run "
              "(issue 15's goal: at least 0.8 at 8 clients and more):", "",
              "| mode | clients | native req/s | external req/s | native / external (goal ≥ 0.8) |",
              "|---|---:|---:|---:|---:|"]
        for k in both:
            L.append(f"| {k[0]} | {k[1]} | {native[k]:,.0f} | {external[k]:,.0f} | {native[k] / external[k]:.2f} |")
        L.append("")
    return L


def native_baseline_section(results):
    table = [r for r in results["cases"] if r["handler"] == "erlang" and r.get("native")]
    if not table:
        return []
    L = ["## Native calls against the native baseline", "",
         "bertd's native calls (`bertd_echo:echo/1` on its companion VM) beside tests/bench/native_echo.escript, "
         "measured in the same rounds: an Erlang `gen_tcp` `{packet, 4}` server on loopback that does only "
         "`binary_to_term(Bin, [safe])`, `apply/3` and `term_to_binary/1` for each request (a process per "
         "connection, default VM flags like bertd's companion VM): the least a native call needs. Issue 15's "
         "goal: bertd at least 0.7 of it.", "",
         "| mode | clients | bertd req/s | p50 | p99 | native baseline req/s | p50 | p99 | "
         "bertd / native baseline (goal ≥ 0.7) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        cells = [r["mode"], str(r["clients"])]
        for x in (r.get("bertd"), r.get("native")):
            cells += [f"{x['rps']:,.0f}", us(x["p50_us"]), us(x["p99_us"])] if x else ["-"] * 3
        cells.append(f"{r['native_ratio']:.2f}" if r.get("native_ratio") else "-")
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]


def handler_tables(results):
    """One table per handler and payload: bertd beside the relay, case by case."""
    L = []
    hdr = ["| mode | clients | bertd req/s | p50 | p99 | p99.9 | baseline req/s | p50 | p99 | p99.9 | "
           "req/s ratio | p99 ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for handler, (title, _) in HANDLERS.items():
        for payload in PAYLOADS:
            table = [r for r in results["cases"] if r["handler"] == handler and r["payload"] == payload]
            if not table:
                continue
            L += [f"## {title}, {PAYLOAD_TITLES[payload]}", ""] + hdr
            for r in table:
                b, base = r.get("bertd"), r.get("baseline")
                cells = [r["mode"], str(r["clients"])]
                for x in (b, base):
                    cells += [f"{x['rps']:,.0f}", us(x["p50_us"]), us(x["p99_us"]), us(x["p999_us"])] if x \
                        else ["-"] * 4
                cells.append(f"{r['ratio']:.2f}" if r.get("ratio") else "-")
                cells.append(f"{b['p99_us'] / base['p99_us']:.2f}" if b and base and base["p99_us"] else "-")
                L.append("| " + " | ".join(cells) + " |")
            L.append("")
    return L


def write_report(results, path, png_name, plot_note):
    m = results["machine"]
    L = ["# bertd benchmarks", "",
         f"Written by `make bench` (tests/bench/bench.py) on {results['date']}, commit {m['commit']}: "
         f"{m['cpus']} × {m['cpu']}, Linux {m['kernel']}.", "",
         "Every case runs against **bertd** and the **baseline**, tests/bench/relay.cc: the same hops (client → "
         "server → worker over a socketpair on fds 3/4 → back) with no protocol logic at all, so the ratio is "
         "the cost of what bertd does beyond moving bytes (framing, routing, shared-memory slots and queues, "
         "stats). Both run the same handler with the same number of workers "
         f"({results['workers']}); bertd has 2 acceptors. The load is tests/bench/loadgen.cc on loopback: "
         "each client keeps one request in flight; latency is from the request's first byte to the answer's "
         "last (connect mode: from connect()). "
         f"Each case is measured for {results['duration_s']:g} s per server, in {results['rounds']} rounds that "
         f"alternate bertd and the baseline (each after {results['warmup_s']:g} s of warm-up); the tables give "
         "the median round's rate and the median of each percentile.", "",
         f"**Read the ratios, not the absolute figures.** loadgen (pinned to CPU {results['loadgen_cpu']}), the "
         "servers and their workers share the machine's CPUs, and other jobs were running on it too (load "
         f"average {results['load_before']} before the run, {results['load_after']} after), so absolute "
         "figures move from run to run; the baseline measured beside each case is the reference.", ""]
    L += load_lines(results)
    ratios = sorted(r["ratio"] for r in results["cases"] if r.get("ratio"))
    if ratios:
        L += [f"Over the {len(ratios)} cases, bertd's throughput is a median {ratios[len(ratios) // 2]:.2f} of the "
              f"baseline's (from {ratios[0]:.2f} to {ratios[-1]:.2f}).", ""]
    if plot_note is None:
        L += [f"![requests/s against concurrent clients]({png_name})", ""]
    else:
        L += [f"(No plot: {plot_note}.)", ""]
    L += handler_tables(results)
    L += native_external_section(results)
    L += native_baseline_section(results)
    L += erlbench.report(results.get("nodes"))
    L += rows.report_haproxy(results.get("haproxy"))
    L += rows.report_cache(results.get("cache"))
    L += rows.report_stream(results.get("stream"))
    L += hostile.report(results.get("hostile"))
    L += scrapes.report(results.get("metrics"))
    # The fuzzing figures are kept by hand in tests/fuzz/RESULTS.md: long runs are not part of make bench.
    try:
        with open(os.path.join(ROOT, "tests", "fuzz", "RESULTS.md")) as f:
            L += [f.read().rstrip(), ""]
    except OSError:
        pass
    idle = results.get("idle", {})
    if idle:
        L += ["## Idle connections", "",
              f"Resident memory of the server's own processes (bertd: master and acceptors; baseline: the relay) "
              f"before and after opening {next(iter(idle.values()))['connections']:,} idle connections, "
              "and what 1,000 of them cost (RSS, and PSS: pages the processes share counted once):", "",
              "| server | RSS before | RSS with the idle connections | per 1,000 idle connections | PSS per 1,000 |",
              "|---|---:|---:|---:|---:|"]
        for name, v in idle.items():
            pss = f"{v['pss_per_1000_kb']:,} KiB" if "pss_per_1000_kb" in v else "-"
            L.append(f"| {name} | {v['rss_before_kb']:,} KiB | {v['rss_after_kb']:,} KiB | {v['per_1000_kb']:,} KiB "
                     f"| {pss} |")
        L.append("")
    L += soak_section()
    if results["notes"]:
        L += ["## Notes from this run", ""] + [f"- {n}" for n in results["notes"]] + [""]
    took = f"this run took {results['elapsed_s'] / 60:.0f} minutes" if results.get("elapsed_s") else \
        "about 10 minutes"
    L += ["## Rerun", "", f"`make bench` ({took}; `make bench-quick` for a one-second smoke run into "
          "build/bench/), `make soak` (about a minute), and the fault and bad-input tests under load with "
          "`python3 tests/run.py -k 'test_faults|test_bad_input|test_soak'`.", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def measure_case(case, i, pair, rounds, duration, warmup, cpu, results):
    """One case against every server of the pair, in rounds that rotate them; its row."""
    row = {"handler": case.handler, "payload": case.payload, "mode": case.mode, "clients": case.clients,
           "bertd": None, "baseline": None}
    t0 = time.monotonic()
    runs, notes = common.alternate({sname: (lambda s=s: run_loadgen(s.port, case, duration / rounds, warmup, cpu,
                                                                    s.module)) for sname, s in pair.items()},
                                   rounds, i)
    for n in notes:
        results["notes"].append(f"{case.name} against {n}")
        print(f"bench: {case.name} against {n}", flush=True)
    for sname, rs in runs.items():
        if not rs:
            continue
        r = median_of(rs)
        if r["errors"]:
            note = f"{case.name}/{sname}: {r['errors']} failed requests in {r['requests']} " \
                   f"({r['failures']}; first: {r['failure_log'][:1]})"
            results["notes"].append(note)
            print(f"bench: {note}", flush=True)
        row[sname] = r
    b, base, native = row["bertd"], row["baseline"], row.get("native")
    row["ratio"] = b["rps"] / base["rps"] if b and base and base["rps"] else None
    if "native" in pair:
        row["native_ratio"] = b["rps"] / native["rps"] if b and native and native["rps"] else None
    row["outside_load"] = results["sampler"].mean(t0)
    results["cases"].append(row)
    line = (f"  {case.name:<28} bertd {b['rps'] if b else 0:>9,.0f} req/s p99 {us(b['p99_us']) if b else '-':>9}   "
            f"baseline {base['rps'] if base else 0:>9,.0f} req/s p99 {us(base['p99_us']) if base else '-':>9}   "
            f"ratio {row['ratio'] or 0:.2f}")
    if "native" in pair:
        line += f"   native baseline {native['rps'] if native else 0:,.0f} req/s ({row['native_ratio'] or 0:.2f})"
    print(line, flush=True)


def measure_idle(tmp, idle_n, results):
    """Idle connections first, on servers that have served nothing yet."""
    pair, notes = start_pair("cpp", tmp)
    results["notes"] += notes
    try:
        for sname in ("baseline", "bertd"):
            if sname in pair:
                try:
                    results["idle"][sname] = idle_memory(pair[sname], idle_n)
                    print(f"  idle {sname}: {results['idle'][sname]}", flush=True)
                except (OSError, Failed) as e:
                    results["notes"].append(f"idle connections against {sname}: {e}")
    finally:
        for s in pair.values():
            s.stop()


def measure(args, tmp, duration, warmup, rounds, cpu, results):
    only = args.only
    idle_n = raise_open_files(IDLE)
    if idle_n >= 1000 and only in (None, "idle"):
        measure_idle(tmp, idle_n, results)
    if only == "idle":
        return
    handler_of = {"native-baseline": "erlang"}
    todo = [c for c in cases(args.quick) if only in (None, c.handler) or handler_of.get(only) == c.handler]
    for handler in HANDLERS:
        mine = [c for c in todo if c.handler == handler]
        if not mine:
            continue
        pair, notes = start_pair(handler, tmp, only)
        results["notes"] += notes
        for n in notes:
            print(f"bench: {n}", flush=True)
        try:
            for i, case in enumerate(mine):
                measure_case(case, i, pair, rounds, duration, warmup, cpu, results)
        finally:
            for s in pair.values():
                s.stop()
    if only in (None, "nodes"):
        results["nodes"] = erlbench.run(tmp, duration, rounds)
        print("\n".join(erlbench.summary(results["nodes"])), flush=True)
        if "note" in results["nodes"]:
            results["notes"].append(results["nodes"]["note"])
    for kind in ROWS:
        if only not in (None, kind):
            continue
        t0 = time.monotonic()
        if kind == "haproxy":
            r = rows.run_haproxy(tmp, duration, warmup, rounds, cpu, args.quick)
        elif kind == "cache":
            r = rows.run_cache(tmp, duration, warmup, rounds, cpu, args.quick)
        elif kind == "stream":
            r = rows.run_stream(tmp, 1 if args.quick else STREAM_ROUNDS, args.quick)
        elif kind == "hostile":
            r = hostile.run(tmp, duration, warmup, rounds, cpu, args.quick)
        else:
            r = scrapes.run(tmp, duration, warmup, rounds, cpu, args.quick)
        r["outside_load"] = results["sampler"].mean(t0)
        results[kind] = r
        for n in r.get("notes", []) + ([r["note"]] if "note" in r else []):
            results["notes"].append(n)
            print(f"bench: {n}", flush=True)


def report_from(path, report):
    """The report and plot from an earlier run's results.json (a discarded run's go to build/bench/)."""
    with open(path) as f:
        results = json.load(f)
    if not report:
        report = os.path.join(ROOT, "build/bench/BENCHMARKS.discarded.md" if results.get("discarded") else
                              "BENCHMARKS.md")
    png = os.path.join(os.path.dirname(os.path.abspath(report)), "BENCHMARKS.png")
    with tempfile.TemporaryDirectory(prefix="bertd-bench-") as tmp:
        plot_note = plot(results, png, tmp)
    write_report(results, report, os.path.basename(png), plot_note)
    print(f"bench: {os.path.relpath(report, ROOT)} written from {path}")
    return 3 if results.get("discarded") else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=list(HANDLERS) + ["native-baseline", "nodes", *ROWS, "idle"])
    ap.add_argument("--report", default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench/results.json"))
    ap.add_argument("--from-results", metavar="JSON", help="write the report and plot from an earlier run's results")
    args = ap.parse_args()
    if args.from_results:
        return report_from(args.from_results, args.report)
    duration = args.duration or float(os.environ.get("BENCH_DURATION", 1 if args.quick else 3))
    warmup = args.warmup if args.warmup is not None else 0.2
    rounds = 1 if args.quick else ROUNDS

    missing = [exe for exe in (HANDLERS["cpp"][1], HANDLERS["python"][1], os.path.join(BUILD, "tests/bench/relay"),
                               os.path.join(BUILD, "tests/bench/loadgen"), os.path.join(BUILD, "bertd"),
                               rows.HANDLER, rows.STREAMER) if not os.access(exe, os.X_OK)]
    if missing:
        print(f"bench: {', '.join(missing)} missing; run `make` first", file=sys.stderr)
        return 1

    # loadgen (one thread) is pinned to the last CPU; the servers and their workers may run anywhere.
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if len(allowed) > 1 else None
    print(f"bench: {duration:g}s per case after {warmup:g}s warm-up, in {rounds} rounds against bertd and the "
          f"baseline; loadgen {'on CPU %d' % cpu if cpu is not None else 'unpinned'}", flush=True)
    t_start = time.monotonic()
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "loadgen_cpu": cpu, "workers": WORKERS, "duration_s": duration, "warmup_s": warmup,
               "rounds": rounds, "only": args.only, "quick": args.quick, "load_limit": LOAD_LIMIT,
               "load_before": loadavg(), "cases": [], "idle": {}, "notes": []}
    os.makedirs(os.path.join(ROOT, "build/bench"), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertd-bench-") as tmp, common.OutsideLoad() as sampler:
        results["sampler"] = sampler
        try:
            measure(args, tmp, duration, warmup, rounds, cpu, results)
        finally:
            del results["sampler"]
        results["load_after"] = loadavg()
        results["elapsed_s"] = round(time.monotonic() - t_start)
        results["outside_load"] = {"mean": sampler.mean(), "peak": sampler.peak(), "samples": len(sampler.samples)}
        outside = results["outside_load"]["mean"]
        results["discarded"] = bool(outside is not None and outside > LOAD_LIMIT)
        report = args.report or os.path.join(ROOT, "build/bench/BENCHMARKS.md" if args.quick else "BENCHMARKS.md")
        if results["discarded"] and not args.report and not args.quick:
            report = os.path.join(ROOT, "build/bench/BENCHMARKS.discarded.md")
        png = os.path.join(os.path.dirname(os.path.abspath(report)), "BENCHMARKS.png")
        plot_note = plot(results, png, tmp)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    write_report(results, report, os.path.basename(png), plot_note)
    print(f"bench: {os.path.relpath(report, ROOT)}"
          f"{'' if plot_note else ' and ' + os.path.relpath(png, ROOT)} written; raw figures in "
          f"{os.path.relpath(args.out, ROOT)}")
    if results["discarded"]:
        print(f"bench: DISCARDED: the load from outside the bench averaged {outside} (over {LOAD_LIMIT}); "
              "repeat the run on a quiet machine", file=sys.stderr)
        return 0 if args.quick else 3
    return 0


def on_term(signum, frame):
    raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
