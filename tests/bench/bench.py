#!/usr/bin/env python3
"""bench.py: what `make bench` runs. Measures bertd against the same-run baseline relay (same
hops, no protocol logic), both with the same handler and worker count, with tests/bench/loadgen
on loopback only: persistent and connect-per-request clients, 1 to 512 of them, small and 1 MiB
arguments, the C++ and the Python echo handlers, an Erlang node's messages and rpc:calls into bertd
(erlbench.py); then the memory idle connections cost. Writes
BENCHMARKS.md and BENCHMARKS.png (throughput against concurrency, gnuplot) at the repository
root, and build/bench/results.json. It never leaves a process behind.

Usage: tests/bench/bench.py [--duration S] [--warmup S] [--quick] [--only KIND] [--report PATH]
                            [--from-results JSON]
--quick: one second per case and fewer cases, report in build/bench/ (a smoke run).
--only: just one kind of case (cpp, python, erlang, nodes: the Erlang node rows), no idle figure.
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
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import erlbench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"))
WORKERS = 2
ROUNDS = 5  # each case alternates bertd and the baseline this many times; the median round counts
IDLE = 10_000  # idle connections for the memory figure
MIB = 1 << 20

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


# {call, echo, echo, [<<"hello">>]} as term_to_binary/1 writes it, and the start of {reply, _}.
def probe_request(module):
    """{call, Module, echo, [<<"hello">>]} as term_to_binary/1 writes it."""
    m = module.encode()
    return bytes([131, 104, 4, 100, 0, 4]) + b"call" + bytes([100, 0, len(m)]) + m + bytes([100, 0, 4]) + b"echo" + \
        bytes([108, 0, 0, 0, 1, 109, 0, 0, 0, 5]) + b"hello" + bytes([106])


PROBE = probe_request("echo")
REPLY_ATOMS = (bytes([100, 0, 5]) + b"reply", bytes([118, 0, 5]) + b"reply",
               bytes([115, 5]) + b"reply", bytes([119, 5]) + b"reply")


class Failed(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group, so stopping it stops its workers too."""

    def __init__(self, name, argv, port, logdir, module="echo"):
        self.name, self.argv, self.port, self.module = name, argv, port, module
        self.log_path = os.path.join(logdir, name + ".log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        except OSError as e:
            raise Failed(f"cannot start {self.argv[0]}: {e}")
        finally:
            log.close()
        self.wait_listening(10)
        deadline = time.monotonic() + 20
        while True:  # the Python workers and the companion Erlang VM take a moment to start
            try:
                self.probe()
                return
            except Failed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, lines=5):
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.read().strip().splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(tail)

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"exited with status {self.proc.returncode} before listening: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise Failed(f"not accepting connections on 127.0.0.1:{self.port} after {timeout}s")

    def probe(self):
        """One echo call before the load, so a server that accepts but cannot answer is named as such."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                req = probe_request(self.module)
                s.sendall(struct.pack(">I", len(req)) + req)
                data = b""
                while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise Failed(f"closed the connection without answering: {self.log_tail()}")
                    data += chunk
        except OSError as e:
            raise Failed(f"did not answer an echo call: {e}")
        answer = data[4:]
        if answer[:3] != bytes([131, 104, 2]) or not any(answer[3:].startswith(a) for a in REPLY_ATOMS):
            raise Failed(f"answered an echo call with something other than {{reply, _}}: {answer[:64]!r}")

    def pids(self):
        """The server's own processes, not its workers: bertd's master and acceptors, or the relay."""
        own = os.path.realpath(self.argv[0])
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if os.getpgid(int(name)) == self.proc.pid and os.readlink(f"/proc/{name}/exe") == own:
                    out.append(int(name))
            except OSError:
                pass
        return out

    def rss_kb(self):
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total

    def stop(self):
        if self.proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
                # The leader is gone; make sure no worker of its group outlived it.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            except subprocess.TimeoutExpired:
                continue


def start_pair(handler, tmp):
    """The baseline relay and bertd, both with WORKERS copies of `handler`; either may be missing
    (with a note) when it cannot start."""
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
    argv = [os.path.join(BUILD, "tests/bench/loadgen"), "--host", "127.0.0.1", "--port", str(port),
            "--module", module,
            "--connections", str(case.clients), "--duration", str(duration), "--warmup", str(warmup),
            "--mode", case.mode, "--timeout", "10", "--log-failures", "3"]
    if PAYLOADS[case.payload] is not None:
        argv += ["--payload", str(PAYLOADS[case.payload])]

    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin,
                       timeout=duration + warmup + 60)
    if p.returncode != 0:
        raise Failed(f"loadgen exited with status {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def median_of(runs):
    """One figure from several rounds of a case: the median of each rate and percentile (so a burst
    of other work on the machine during one round does not decide it), the sums of the counts."""
    def med(key):
        v = sorted(r[key] for r in runs)
        return v[len(v) // 2]
    out = {k: med(k) for k in ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us")}
    out.update({k: sum(r[k] for r in runs) for k in ("requests", "errors")})
    out["failures"] = {k: sum(r["failures"][k] for r in runs) for k in runs[0]["failures"]}
    out["failure_log"] = [f for r in runs for f in r["failure_log"]][:3]
    out["rounds_rps"] = [r["rps"] for r in runs]
    return out


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
    """KiB of resident memory the server's own processes gain per 1,000 idle connections."""
    before = server.rss_kb()
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        time.sleep(1.0)  # every connection accepted and registered
        server.probe()  # and still serving
        after = server.rss_kb()
    finally:
        for s in socks:
            s.close()
    return {"connections": n, "rss_before_kb": before, "rss_after_kb": after,
            "per_1000_kb": round((after - before) / (n / 1000), 1)}


# --- the report -------------------------------------------------------------------------------
def us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.1f} ms" if v >= 10_000 else f"{v:.0f} µs"


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
    ratios = sorted(r["ratio"] for r in results["cases"] if r.get("ratio"))
    if ratios:
        L += [f"Over the {len(ratios)} cases, bertd's throughput is a median {ratios[len(ratios) // 2]:.2f} of the "
              f"baseline's (from {ratios[0]:.2f} to {ratios[-1]:.2f}).", ""]
    if plot_note is None:
        L += [f"![requests/s against concurrent clients]({png_name})", ""]
    else:
        L += [f"(No plot: {plot_note}.)", ""]
    hdr = ["| mode | clients | bertd req/s | p50 | p99 | p99.9 | baseline req/s | p50 | p99 | p99.9 | "
           "req/s ratio | p99 ratio |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for handler, (title, _) in HANDLERS.items():
        for payload in PAYLOADS:
            rows = [r for r in results["cases"] if r["handler"] == handler and r["payload"] == payload]
            if not rows:
                continue
            L += [f"## {title}, {PAYLOAD_TITLES[payload]}", ""] + hdr
            for r in rows:
                b, base = r.get("bertd"), r.get("baseline")
                cells = [r["mode"], str(r["clients"])]
                for x in (b, base):
                    cells += [f"{x['rps']:,.0f}", us(x["p50_us"]), us(x["p99_us"]), us(x["p999_us"])] if x \
                        else ["-"] * 4
                cells.append(f"{r['ratio']:.2f}" if r.get("ratio") else "-")
                cells.append(f"{b['p99_us'] / base['p99_us']:.2f}" if b and base and base["p99_us"] else "-")
                L.append("| " + " | ".join(cells) + " |")
            L.append("")
    native = {(r["mode"], r["clients"]): r["bertd"]["rps"] for r in results["cases"]
              if r["handler"] == "erlang" and r["payload"] == "small" and r.get("bertd")}
    external = {(r["mode"], r["clients"]): r["bertd"]["rps"] for r in results["cases"]
                if r["handler"] == "cpp" and r["payload"] == "small" and r.get("bertd")}
    both = sorted(k for k in native if k in external)
    if both:
        L += ["## Native calls against external calls", "",
              "bertd's rate for the native Erlang echo divided by its rate for the external C++ echo, same run "
              "(the goal is at least 0.5):", "", "| mode | clients | native req/s | external req/s | native / external |",
              "|---|---:|---:|---:|---:|"]
        for k in both:
            L.append(f"| {k[0]} | {k[1]} | {native[k]:,.0f} | {external[k]:,.0f} | {native[k] / external[k]:.2f} |")
        L.append("")
    L += erlbench.report(results.get("nodes"))
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
              "and what 1,000 of them cost:", "",
              "| server | RSS before | RSS with the idle connections | per 1,000 idle connections |",
              "|---|---:|---:|---:|"]
        for name, v in idle.items():
            L.append(f"| {name} | {v['rss_before_kb']:,} KiB | {v['rss_after_kb']:,} KiB | {v['per_1000_kb']:,} KiB |")
        L.append("")
    L += soak_section()
    if results["notes"]:
        L += ["## Notes from this run", ""] + [f"- {n}" for n in results["notes"]] + [""]
    took = f"this run took {results['elapsed_s'] / 60:.0f} minutes" if results.get("elapsed_s") else \
        "about a quarter of an hour"
    L += ["## Rerun", "", f"`make bench` ({took}; `make bench-quick` for a one-second smoke run into "
          "build/bench/), `make soak` (about a minute), and the fault and bad-input tests under load with "
          "`python3 tests/run.py -k 'test_faults|test_bad_input|test_soak'`.", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=list(HANDLERS) + ["nodes"])
    ap.add_argument("--report", default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench/results.json"))
    ap.add_argument("--from-results", metavar="JSON", help="write the report and plot from an earlier run's results")
    args = ap.parse_args()
    if args.from_results:
        with open(args.from_results) as f:
            results = json.load(f)
        report = args.report or os.path.join(ROOT, "BENCHMARKS.md")
        png = os.path.join(os.path.dirname(os.path.abspath(report)), "BENCHMARKS.png")
        with tempfile.TemporaryDirectory(prefix="bertd-bench-") as tmp:
            plot_note = plot(results, png, tmp)
        write_report(results, report, os.path.basename(png), plot_note)
        print(f"bench: {os.path.relpath(report, ROOT)} written from {args.from_results}")
        return 0
    duration = args.duration or float(os.environ.get("BENCH_DURATION", 1 if args.quick else 3))
    warmup = args.warmup if args.warmup is not None else 0.2
    rounds = 1 if args.quick else ROUNDS
    report = args.report or os.path.join(ROOT, "build/bench/BENCHMARKS.md" if args.quick else "BENCHMARKS.md")
    png = os.path.join(os.path.dirname(os.path.abspath(report)), "BENCHMARKS.png")

    for exe in (HANDLERS["cpp"][1], HANDLERS["python"][1], os.path.join(BUILD, "tests/bench/relay"),
                os.path.join(BUILD, "tests/bench/loadgen"), os.path.join(BUILD, "bertd")):
        if not os.access(exe, os.X_OK):
            print(f"bench: {exe} is missing; run `make` first", file=sys.stderr)
            return 1

    # loadgen (one thread) is pinned to the last CPU; the servers and their workers may run anywhere.
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if len(allowed) > 1 else None
    todo = [c for c in cases(args.quick) if args.only in (None, c.handler)]
    print(f"bench: {len(todo)} cases, {duration:g}s each after {warmup:g}s warm-up, against bertd and the "
          f"baseline; loadgen {'on CPU %d' % cpu if cpu is not None else 'unpinned'}", flush=True)
    t_start = time.monotonic()
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
               "loadgen_cpu": cpu, "workers": WORKERS, "duration_s": duration, "warmup_s": warmup,
               "rounds": rounds,
               "load_before": loadavg(), "cases": [], "idle": {}, "notes": []}
    idle_n = raise_open_files(IDLE)
    os.makedirs(os.path.join(ROOT, "build/bench"), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertd-bench-") as tmp:
        # Idle connections first, on servers that have served nothing yet.
        if idle_n >= 1000 and not args.only:
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
        for handler in HANDLERS:
            mine = [c for c in todo if c.handler == handler]
            if not mine:
                continue
            pair, notes = start_pair(handler, tmp)
            results["notes"] += notes
            for n in notes:
                print(f"bench: {n}", flush=True)
            try:
                for i, case in enumerate(mine):
                    row = {"handler": case.handler, "payload": case.payload, "mode": case.mode,
                           "clients": case.clients, "bertd": None, "baseline": None}
                    runs = {"bertd": [], "baseline": []}
                    for rnd in range(rounds):
                        order = ("baseline", "bertd") if (i + rnd) % 2 == 0 else ("bertd", "baseline")
                        for sname in order:
                            if sname not in pair:
                                continue
                            try:
                                runs[sname].append(run_loadgen(pair[sname].port, case, duration / rounds, warmup,
                                                               cpu, pair[sname].module))
                            except (Failed, subprocess.TimeoutExpired, ValueError) as e:
                                results["notes"].append(f"{case.name} against {sname} failed: {e}")
                                print(f"bench: {case.name} against {sname} failed: {e}", flush=True)
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
                    b, base = row["bertd"], row["baseline"]
                    row["ratio"] = b["rps"] / base["rps"] if b and base and base["rps"] else None
                    results["cases"].append(row)
                    print(f"  {case.name:<28} bertd {b['rps'] if b else 0:>9,.0f} req/s p99 "
                          f"{us(b['p99_us']) if b else '-':>9}   baseline {base['rps'] if base else 0:>9,.0f} "
                          f"req/s p99 {us(base['p99_us']) if base else '-':>9}   ratio "
                          f"{row['ratio'] or 0:.2f}", flush=True)
            finally:
                for s in pair.values():
                    s.stop()
        if args.only in (None, "nodes"):
            results["nodes"] = erlbench.run(tmp, duration, rounds)
            print("\n".join(erlbench.summary(results["nodes"])), flush=True)
            if "note" in results["nodes"]:
                results["notes"].append(results["nodes"]["note"])
        results["load_after"] = loadavg()
        results["elapsed_s"] = round(time.monotonic() - t_start)
        plot_note = plot(results, png, tmp)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    write_report(results, report, os.path.basename(png), plot_note)
    print(f"bench: {os.path.relpath(report, ROOT)}"
          f"{'' if plot_note else ' and ' + os.path.relpath(png, ROOT)} written; raw figures in "
          f"{os.path.relpath(args.out, ROOT)}")
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
