#!/usr/bin/env python3
"""bench.py: what `make bench` runs. Measures bertd against the baseline relay (same hops,
no protocol logic), each with 2 echo workers, with tests/bench/loadgen on loopback only,
and prints a table (and build/bench/results.json). It never leaves a process behind.

Usage: tests/bench/bench.py [--duration S] [--warmup S] [--case NAME ...]
BERTD_BUILD names the build directory (default build/rel).
"""
import argparse
import datetime
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"))
WORKERS = 2

# name, loadgen mode, connections
CASES = [
    ("persistent", "persistent", 32),
    ("connect-per-request", "connect", 16),
]

# {call, echo, echo, [<<"hello">>]} as term_to_binary/1 writes it, and the start of {reply, _}.
PROBE = bytes([131, 104, 4, 100, 0, 4]) + b"call" + bytes([100, 0, 4]) + b"echo" + bytes([100, 0, 4]) + b"echo" + \
    bytes([108, 0, 0, 0, 1, 109, 0, 0, 0, 5]) + b"hello" + bytes([106])
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

    def __init__(self, name, argv, port, logdir):
        self.name, self.argv, self.port = name, argv, port
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
        self.probe()

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
                s.sendall(struct.pack(">I", len(PROBE)) + PROBE)
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


def run_loadgen(port, mode, connections, duration, warmup, cpu):
    argv = [os.path.join(BUILD, "tests/bench/loadgen"), "--host", "127.0.0.1", "--port", str(port),
            "--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup),
            "--mode", mode]

    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin,
                       timeout=duration + warmup + 30)
    if p.returncode != 0:
        raise Failed(f"loadgen exited with status {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fmt_rps(r):
    return f"{r['rps']:.0f}" if r else "-"


def fmt_lat(r):
    return f"{r['p50_us']:.0f}/{r['p99_us']:.0f}" if r else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5)))
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--case", action="append", choices=[c[0] for c in CASES])
    ap.add_argument("--out", default=os.path.join(ROOT, "build/bench/results.json"))
    args = ap.parse_args()
    cases = [c for c in CASES if not args.case or c[0] in args.case]

    echo = os.path.join(BUILD, "tests/handlers/echo")
    for exe in (echo, os.path.join(BUILD, "tests/bench/relay"), os.path.join(BUILD, "tests/bench/loadgen")):
        if not os.access(exe, os.X_OK):
            print(f"bench: {exe} is missing; run `make` first", file=sys.stderr)
            return 1

    # Two cores: loadgen (one thread) is pinned to the last CPU; the server and its workers may
    # run anywhere, so they get one CPU to themselves and share the other with loadgen.
    ncpu = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if len(allowed) > 1 else None
    print(f"bench: {ncpu} CPUs; loadgen shares the machine with the servers "
          f"({'pinned to CPU %d, servers unpinned' % cpu if cpu is not None else 'no pinning'}); "
          f"{args.duration:g}s per measurement after {args.warmup:g}s warm-up; {WORKERS} echo workers each",
          flush=True)

    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpus": ncpu,
               "loadgen_cpu": cpu, "workers": WORKERS, "duration_s": args.duration, "warmup_s": args.warmup,
               "cases": [], "notes": []}
    servers = {}
    with tempfile.TemporaryDirectory(prefix="bertd-bench-") as tmp:
        cfg = os.path.join(tmp, "echo.cfg")
        with open(cfg, "w") as f:
            f.write(f'[{{module, echo}}, {{type, external}}, {{command, "{echo}"}}, {{count, {WORKERS}}}].\n')
        relay_port, bertd_port = free_port(), free_port()
        candidates = [
            Server("baseline", [os.path.join(BUILD, "tests/bench/relay"), "--port", str(relay_port),
                                "--workers", str(WORKERS), "--handler", echo], relay_port, tmp),
            Server("bertd", [os.path.join(BUILD, "bertd"), "-c", cfg, "-p", str(bertd_port)], bertd_port, tmp),
        ]
        try:
            for s in candidates:
                try:
                    s.start()
                    servers[s.name] = s
                except Failed as e:
                    msg = f"{s.name} unavailable: {e}"
                    print(f"bench: {msg}; continuing without it", flush=True)
                    results["notes"].append(msg)
                    s.stop()
            for name, mode, conns in cases:
                row = {"case": name, "mode": mode, "connections": conns}
                for sname in ("baseline", "bertd"):
                    if sname not in servers:
                        row[sname] = None
                        continue
                    try:
                        r = run_loadgen(servers[sname].port, mode, conns, args.duration, args.warmup, cpu)
                    except (Failed, subprocess.TimeoutExpired, ValueError) as e:
                        print(f"bench: {name} against {sname} failed: {e}", flush=True)
                        results["notes"].append(f"{name}/{sname}: {e}")
                        r = None
                    if r and r["errors"]:
                        note = f"{name}/{sname}: {r['errors']} errors in {r['requests']} requests"
                        print(f"bench: {note}", flush=True)
                        results["notes"].append(note)
                    row[sname] = r
                b, base = row["bertd"], row["baseline"]
                row["ratio"] = b["rps"] / base["rps"] if b and base and base["rps"] else None
                results["cases"].append(row)
        finally:
            for s in candidates:
                s.stop()

    hdr = f"{'case':<22} {'conns':>5} {'bertd rps':>10} {'p50/p99 us':>12} {'base rps':>10} " \
          f"{'p50/p99 us':>12} {'bertd/base':>10}"
    print(hdr)
    print("-" * len(hdr))
    for row in results["cases"]:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        print(f"{row['case']:<22} {row['connections']:>5} {fmt_rps(row['bertd']):>10} {fmt_lat(row['bertd']):>12} "
              f"{fmt_rps(row['baseline']):>10} {fmt_lat(row['baseline']):>12} {ratio:>10}")
    print("note: loadgen runs on the same 2-CPU machine as the servers (and whatever else is running), "
          "so figures are relative: compare bertd with the baseline of the same run.")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(f"bench: results written to {os.path.relpath(args.out, ROOT)}")
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
