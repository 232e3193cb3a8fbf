#!/usr/bin/env python3
"""hostile.py: make bench's hostile-client row (issue 12). Other clients' latency (loadgen, 64
persistent clients, small echo) while hostile connections send (a) 16 MiB frames of a list of 16M
NILs that are not requests, (b) zlib-compressed bombs of the same list (tag 80, about 16 KB),
(c) slow-loris requests, one byte every 100 ms, against the same loadgen run with no hostile
traffic, on the same bertd, in rounds that rotate the four. bench.py calls run() and report().

Run as a script it is the hostile side of one run (bounded in connections, rate and time, loopback
only), printing one JSON line of what it sent and got:
  hostile.py --port P --kind nil|zlib|slowloris --seconds S
"""
import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import common

NILS = 16 << 20
SMALL_CALL = (bytes([131, 104, 4, 100, 0, 4]) + b"call" + bytes([100, 0, 4]) + b"echo" + bytes([100, 0, 4]) +
              b"echo" + bytes([108, 0, 0, 0, 1, 109, 0, 0, 0, 5]) + b"hello" + bytes([106]))
KINDS = {
    # kind: (connections, seconds between two frames on one connection, title)
    "nil": (2, 0.25, "16 MiB frames of a list of 16M NILs, not requests (2 connections, one frame each 250 ms)"),
    "zlib": (4, 0.01, "zlib bombs: the same list compressed (tag 80), 16 KB each (4 connections, one each 10 ms)"),
    "slowloris": (100, 0.1, "slow-loris: 100 connections each sending an echo request one byte every 100 ms"),
}


def frame(body):
    return struct.pack(">I", len(body)) + body


def nil_list():
    """[[], [], ... 16M times] after the version byte: 108, its length, the NILs, the tail."""
    return bytes([108]) + struct.pack(">I", NILS) + b"\x6a" * NILS + b"\x6a"


def hostile_frame(kind):
    inner = nil_list()
    if kind == "nil":
        return frame(b"\x83" + inner)
    return frame(b"\x83\x50" + struct.pack(">I", len(inner)) + zlib.compress(inner, 9))


class Tally:
    def __init__(self):
        self.lock, self.counts = threading.Lock(), {}

    def add(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n


def sender(port, data, gap, until, tally):
    """Sends `data` on one connection every `gap` seconds, reading each answer; reconnects when
    bertd closes the connection."""
    sock = None
    while time.monotonic() < until:
        t0 = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                tally.add("connections")
            sock.sendall(data)
            tally.add("frames")
            body = common.read_frame(sock)
            if body is None:
                tally.add("closed")
                sock.close()
                sock = None
            else:
                tally.add("error answers" if b"error" in body[:16] else "other answers")
        except OSError as e:
            tally.add(f"{type(e).__name__}")
            if sock:
                sock.close()
            sock = None
        time.sleep(max(0.0, gap - (time.monotonic() - t0)))
    if sock:
        sock.close()


def slow_loris(port, n, gap, until, tally):
    """n connections, each sending an echo request one byte every `gap` seconds, again and again."""
    data = frame(SMALL_CALL)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        socks.append([s, 0])
        tally.add("connections")
    while time.monotonic() < until:
        t0 = time.monotonic()
        for entry in socks:
            s, pos = entry
            if s is None:
                continue
            try:
                s.send(data[pos:pos + 1])
                tally.add("bytes")
                entry[1] = (pos + 1) % len(data)
                if entry[1] == 0:
                    tally.add("frames")
                try:
                    if s.recv(65536) == b"":
                        raise ConnectionResetError("closed")
                except BlockingIOError:
                    pass
            except OSError:
                tally.add("closed")
                s.close()
                entry[0] = None
        time.sleep(max(0.0, gap - (time.monotonic() - t0)))
    for s, _ in socks:
        if s:
            s.close()


def drive(port, kind, seconds):
    """Runs `kind` for `seconds` or until SIGTERM; prints READY once its traffic is under way, and
    at the end one JSON line of what it sent and got."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    n, gap, _ = KINDS[kind]
    tally = Tally()
    data = b"" if kind == "slowloris" else hostile_frame(kind)  # built before the clock starts
    until = time.monotonic() + seconds
    if kind == "slowloris":
        threads = [threading.Thread(target=slow_loris, args=(port, n, gap, until, tally), daemon=True)]
    else:
        threads = [threading.Thread(target=sender, args=(port, data, gap, until, tally), daemon=True)
                   for _ in range(n)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    while any(t.is_alive() for t in threads) and not stop.wait(0.05):
        pass
    print(json.dumps({"kind": kind, **tally.counts}), flush=True)


# --- the row (imported by bench.py) -----------------------------------------------------------
def _run_one(server, kind, run_s, warmup, cpu, tmp):
    """One loadgen run with `kind`'s hostile traffic (None: quiet) going on through it."""
    hostile = None
    if kind:
        hostile = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--port", str(server.port), "--kind",
                                    kind, "--seconds", str(run_s + warmup + 10)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        ready = hostile.stdout.readline()  # its frames built and its connections open
        if ready.strip() != "READY":
            hostile.kill()
            hostile.wait()
            raise common.Failed(f"the {kind} hostile client did not start: {hostile.stderr.read()[-300:]}")
        time.sleep(0.3)  # and its traffic under way
    try:
        r = common.run_loadgen(server.port, 64, "persistent", run_s, warmup, cpu, "echo")
    finally:
        if hostile:
            hostile.send_signal(signal.SIGTERM)
            try:
                out, err = hostile.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(hostile.pid, signal.SIGKILL)
                out, err = hostile.communicate()
    if hostile:
        try:
            r["hostile"] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            r["hostile"] = {"failed": (err or "no output").strip()[-200:]}
    return r


def run(tmp, duration, warmup, rounds, cpu, quick):
    from rows import RssPeaks, _bertd, _row
    run_s = max(1.0, duration / rounds)
    result = {"run_s": run_s, "rounds": rounds, "notes": [], "kinds": {}}
    server = None
    try:
        server = _bertd("bertd-hostile", tmp, (
            "listen: 127.0.0.1\nacceptors: 2\nmodules:\n"
            f"  - {{name: echo, command: {os.path.join(common.BUILD, 'tests/handlers/echo')}, count: 2}}\n"))
        sides = {k: (lambda k=k: _run_one(server, None if k == "quiet" else k, run_s, warmup, cpu, tmp))
                 for k in ["quiet", *KINDS]}
        with RssPeaks(server) as peaks:
            runs, notes = common.alternate(sides, rounds)
        result["rss_peak_kb"] = peaks.roles()
        result["notes"] += [f"hostile {n}" for n in notes]
        quiet = _row("hostile/quiet", runs["quiet"], result["notes"])
        result["quiet"] = quiet
        for kind in KINDS:
            r = _row(f"hostile/{kind}", runs[kind], result["notes"])
            if r:
                r["hostile"] = {}
                for one in runs[kind]:
                    for k, v in one.get("hostile", {}).items():
                        if isinstance(v, int):
                            r["hostile"][k] = r["hostile"].get(k, 0) + v
                r["p99_ratio"] = r["p99_us"] / quiet["p99_us"] if quiet and quiet["p99_us"] else None
            result["kinds"][kind] = r
            print(f"  hostile/{kind:<16} p99 {common.us(r['p99_us']) if r else '-':>9} (quiet "
                  f"{common.us(quiet['p99_us']) if quiet else '-'}; ratio {(r or {}).get('p99_ratio') or 0:.2f})   "
                  f"{r['rps'] if r else 0:,.0f} req/s   sent {(r or {}).get('hostile')}", flush=True)
    except common.Failed as e:
        result["note"] = f"the hostile rows could not run: {e}"
    finally:
        if server:
            server.stop()
    return result


def report(result):
    from common import us
    if not result:
        return []
    L = ["## Hostile clients", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    L += ["Other clients' latency while hostile connections hit the same bertd (2 acceptors, C++ echo, default "
          "limits: `max_frame` 32 MiB, `max_inflated` 8 MiB): loadgen with 64 persistent clients and small "
          f"arguments for {result['run_s']:g} s per run, with each kind of hostile traffic (tests/bench/hostile.py, "
          "started just before and stopped just after) and with none, in "
          f"{result['rounds']} rounds that rotate the four runs; the medians count. Goal: p99 within 2× of the "
          "quiet run's, no request of loadgen's lost.", "",
          "| hostile traffic | req/s | p50 | p99 | p99.9 | failed requests | p99 / quiet p99 (goal ≤ 2) | hostile side sent and got |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    q = result.get("quiet")
    if q:
        L.append(f"| none (quiet) | {q['rps']:,.0f} | {us(q['p50_us'])} | {us(q['p99_us'])} | {us(q['p999_us'])} | "
                 f"{q['errors']} | 1.00 | - |")
    for kind, r in result["kinds"].items():
        if not r:
            L.append(f"| {KINDS[kind][2]} | - | - | - | - | - | - | - |")
            continue
        sent = ", ".join(f"{k}: {v:,}" for k, v in r.get("hostile", {}).items()) or "-"
        ratio = f"{r['p99_ratio']:.2f}" if r.get("p99_ratio") else "-"
        L.append(f"| {KINDS[kind][2]} | {r['rps']:,.0f} | {us(r['p50_us'])} | {us(r['p99_us'])} | "
                 f"{us(r['p999_us'])} | {r['errors']} | {ratio} | {sent} |")
    peaks = result.get("rss_peak_kb", {})
    if peaks:
        L += ["", "Peak resident memory of bertd's processes over all these runs: " +
              ", ".join(f"{name} {kb:,} KiB" for name, kb in peaks.items()) + "."]
    return L + [""]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="the hostile side of one run of make bench's hostile row")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=list(KINDS), required=True)
    ap.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    drive(a.port, a.kind, min(a.seconds, 120))
