"""scrapes.py: make bench's /metrics row (issue 17: scraping costs BERT-RPC traffic at most 5%).
loadgen's throughput (64 persistent clients, small echo, C++ handler) on one bertd with a metrics
listener, with no scraping, while one scraper sends PACED_RATE scrapes a second, and while one
scraper scrapes as fast as it can, in rounds that rotate the three; the unscraped run is the
baseline, and each scrape's latency (connect to its last byte) is kept. bench.py calls run() and
report(). Loopback only; the scraper is a thread, stopped at the end of every run.
"""
import socket
import time

import common
from common import Failed, free_port, us

PACED_RATE = 10  # scrapes a second: below bertd's cap (20 a second per acceptor), so none waits
CLIENTS = 64
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
CASES = {
    # case: (scrapes a second, None: one after another with no pause; title)
    "paced": (PACED_RATE, f"one scraper, {PACED_RATE} scrapes a second"),
    "flood": (None, "one scraper, each scrape as soon as the last ended (a flood)"),
}


def scrape(port, timeout=10):
    """One GET /metrics on a new connection, read to bertd's close: (HTTP status, 0 when the answer
    is no HTTP; seconds from connect to the last byte; the body)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(REQUEST)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    took = time.monotonic() - t0
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if head.startswith(b"HTTP/1.") and len(parts) > 1 and parts[1].isdigit() else 0
    return status, took, body


class Scraper(common.Sampling):
    """One scraper: GET /metrics again and again, one connection each, `rate` a second (None: each
    as soon as the last ended; behind its schedule it goes on at once until it caught up). Keeps the
    latency of each full exposition (200 with bertd_requests_total in it) and counts every answer
    by its status ("error" for a failed connection)."""

    def __init__(self, port, rate=None):
        super().__init__()
        self.port, self.rate = port, rate
        self.latencies, self.counts, self.first_error = [], {}, None
        self.seconds = 0.0

    def _count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def _run(self):
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            try:
                status, took, body = scrape(self.port)
                if status == 200 and b"bertd_requests_total" in body:
                    self.latencies.append(took)
                    self._count("200")
                else:
                    self._count(str(status) if status else "not HTTP")
                    self.first_error = self.first_error or f"status {status}: {body[:80]!r}"
            except OSError as e:
                self._count("error")
                self.first_error = self.first_error or repr(e)
            n += 1
            if self.rate and self._stop.wait(max(0.0, t0 + n / self.rate - time.monotonic())):
                break
        self.seconds = time.monotonic() - t0

    def summary(self):
        return {"scrapes": sum(self.counts.values()), "seconds": self.seconds, "counts": dict(self.counts),
                "latencies": self.latencies, "first_error": self.first_error}


def _percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else None


def _run_one(server, mport, case, run_s, warmup, cpu):
    """One loadgen run with `case`'s scraper (None: none) going on through it, its warm-up included."""
    if case is None:
        return common.run_loadgen(server.port, CLIENTS, "persistent", run_s, warmup, cpu)
    with Scraper(mport, CASES[case][0]) as scraper:
        time.sleep(0.2)  # its first scrapes under way
        r = common.run_loadgen(server.port, CLIENTS, "persistent", run_s, warmup, cpu)
    r["scraper"] = scraper.summary()
    return r


def _scrapes_of(runs):
    """What the scraper did over every round of a case: scrapes a second, latency p50/p99 (µs)."""
    lat = [x for r in runs for x in r["scraper"]["latencies"]]
    counts = {}
    for r in runs:
        for k, v in r["scraper"]["counts"].items():
            counts[k] = counts.get(k, 0) + v
    seconds = sum(r["scraper"]["seconds"] for r in runs)
    return {"scrapes": sum(counts.values()), "per_s": sum(counts.values()) / seconds if seconds else None,
            "counts": counts, "p50_us": _percentile(lat, 0.5) * 1e6 if lat else None,
            "p99_us": _percentile(lat, 0.99) * 1e6 if lat else None,
            "first_error": next((r["scraper"]["first_error"] for r in runs if r["scraper"]["first_error"]), None)}


def run(tmp, duration, warmup, rounds, cpu, quick):
    from rows import ECHO, WORKERS, _bertd, _row
    run_s = max(1.0, duration / rounds)
    result = {"run_s": run_s, "rounds": rounds, "clients": CLIENTS, "notes": [], "cases": {}}
    server = None
    try:
        mport = free_port()
        server = _bertd("bertd-metrics", tmp, (
            f"listen: 127.0.0.1\nacceptors: 2\nmetrics: {{listen: \"127.0.0.1:{mport}\"}}\nmodules:\n"
            f"  - {{name: echo, command: {ECHO}, count: {WORKERS}}}\n"))
        status, _, body = scrape(mport)
        if status != 200 or b"bertd_requests_total" not in body:
            raise Failed(f"GET /metrics answered {status}: {body[:120]!r}")
        sides = {k: (lambda k=k: _run_one(server, mport, None if k == "unscraped" else k, run_s, warmup, cpu))
                 for k in ["unscraped", *CASES]}
        runs, notes = common.alternate(sides, rounds)
        result["notes"] += [f"metrics {n}" for n in notes]
        base = _row("metrics/unscraped", runs["unscraped"], result["notes"])
        result["unscraped"] = base
        for case in CASES:
            r = _row(f"metrics/{case}", runs[case], result["notes"])
            if r:
                r["scrapes"] = _scrapes_of(runs[case])
                r["ratio"] = r["rps"] / base["rps"] if base and base["rps"] else None
                r["p99_ratio"] = r["p99_us"] / base["p99_us"] if base and base["p99_us"] else None
                if r["scrapes"]["first_error"]:
                    result["notes"].append(f"metrics/{case}: a scrape failed: {r['scrapes']['counts']}; first: "
                                           f"{r['scrapes']['first_error']}")
            result["cases"][case] = r
            s = (r or {}).get("scrapes") or {}
            print(f"  {f'metrics/{case}/{CLIENTS}':<28} scraped {r['rps'] if r else 0:>9,.0f} req/s p99 "
                  f"{us(r['p99_us']) if r else '-':>9}   unscraped {base['rps'] if base else 0:>9,.0f} req/s p99 "
                  f"{us(base['p99_us']) if base else '-':>9}   ratio {(r or {}).get('ratio') or 0:.2f}   "
                  f"{s.get('per_s') or 0:.1f} scrapes/s, p50 {us(s.get('p50_us'))} p99 {us(s.get('p99_us'))}",
                  flush=True)
    except Failed as e:
        result["note"] = f"the /metrics rows could not run: {e}"
    finally:
        if server:
            server.stop()
    return result


def _ratio(x):
    return f"{x:.2f}" if x else "-"


def report(result):
    if not result:
        return []
    L = ["## /metrics scrapes against BERT-RPC traffic", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    L += [f"loadgen with {result['clients']} persistent clients (small echo, C++ handler, 2 workers) on a bertd "
          "with 2 acceptors and `metrics: {listen: ...}`, while a scraper (tests/bench/scrapes.py, one "
          "connection a scrape, each read to its close) scrapes `GET /metrics`, and with no scraping, in "
          f"{result['rounds']} rounds of {result['run_s']:g} s that rotate the three runs; the medians count. "
          "bertd accepts at most 20 scrapes a second per acceptor in bursts of 8, so a flood waits in the "
          "backlog (its scrape latency includes that wait), and each run's flood starts with a burst of up "
          "to 16 (a short run's rate is above 40 a second). Scrape latency: from connect to the last byte "
          "of a full exposition, over every round. Goal (issue 17): scraping costs BERT-RPC at most 5% "
          "(ratio ≥ 0.95).", "",
          "| scraping | scrapes/s | scrape p50 | scrape p99 | req/s | p50 | p99 | failed requests | "
          "req/s / unscraped (goal ≥ 0.95) | p99 / unscraped p99 |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    b = result.get("unscraped")
    if b:
        L.append(f"| none | - | - | - | {b['rps']:,.0f} | {us(b['p50_us'])} | {us(b['p99_us'])} | {b['errors']} | "
                 "1.00 | 1.00 |")
    for case, r in result["cases"].items():
        if not r:
            L.append(f"| {CASES[case][1]} | - | - | - | - | - | - | - | - | - |")
            continue
        s = r["scrapes"]
        bad = sum(v for k, v in s["counts"].items() if k != "200")
        cells = [CASES[case][1], f"{s['per_s'] or 0:.1f}" + (f" ({bad} not 200)" if bad else ""), us(s["p50_us"]),
                 us(s["p99_us"]), f"{r['rps']:,.0f}", us(r["p50_us"]), us(r["p99_us"]), str(r["errors"]),
                 _ratio(r.get("ratio")), _ratio(r.get("p99_ratio"))]
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]
