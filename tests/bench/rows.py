"""rows.py: make bench's rows beyond the handler tables (bench.py calls run_* and report_*): bertd
behind HAProxy against the relay behind the same HAProxy (issue 17), bertd's own cache against the
same call uncached (issue 16), and 4 GiB streamed through bertd in each direction against `cat`
between two socketpairs, with the peak resident memory of every bertd process (issue 16). Each
figure is measured beside its baseline in the same run, in rounds that alternate them; the medians
count. Every process started here is stopped, also on failure; loopback only.
"""
import json
import os
import shutil
import subprocess
import sys

import common
from common import BUILD, MIB, ROOT, Failed, Server, alternate, free_port, median, median_of, us

sys.path.insert(0, os.path.join(ROOT, "modules", "python"))
import bertd as bert  # noqa: E402  (modules/python: the client library, for bertd's stats)

HANDLER = os.path.join(BUILD, "tests/bench/bench_handler")
STREAMER = os.path.join(BUILD, "tests/bench/streamer")
RELAY = os.path.join(BUILD, "tests/bench/relay")
ECHO = os.path.join(BUILD, "tests/handlers/echo")
BERTD = os.path.join(BUILD, "bertd")
WORKERS = 2
GIB = 1 << 30
STREAM_CHUNK = 256 << 10


def _stop_all(servers):
    for s in servers:
        s.stop()


def _bertd(name, tmp, config, port=None, module="echo"):
    """A bertd on `config` (YAML text), started and answering an echo call on `module`."""
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config)
    port = port or free_port()
    argv = [BERTD, "-c", path] + ([] if "listen:\n" in config else ["-p", str(port)])
    s = Server(name, argv, port, tmp, module)
    try:
        s.start()
    except BaseException:
        s.stop()  # a bertd that did not come up is not left running
        raise
    return s


def _pairs(quick, concurrency):
    return [(mode, c) for mode in ("persistent", "connect") for c in concurrency[:1 if quick else None]]


def _row(name, runs, note_to):
    """The median of a side's runs, or None (with a note) when none ran; a note for failed requests."""
    if not runs:
        return None
    r = median_of(runs)
    if r["errors"]:
        note_to.append(f"{name}: {r['errors']} failed requests in {r['requests']} ({r['failures']}; first: "
                       f"{r['failure_log'][:1]})")
    return r


# --- behind HAProxy ---------------------------------------------------------------------------
HAPROXY_CFG = """global
    maxconn 8000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend to_bertd
    bind 127.0.0.1:{front_bertd}
    default_backend bertd
frontend to_relay
    bind 127.0.0.1:{front_relay}
    default_backend relay
backend bertd
    server bertd1 127.0.0.1:{bertd_proxy} send-proxy-v2
backend relay
    server relay1 127.0.0.1:{relay}
"""


def run_haproxy(tmp, duration, warmup, rounds, cpu, quick):
    """loadgen -> HAProxy -> bertd (send-proxy-v2, as contrib/haproxy) beside loadgen -> the same
    HAProxy -> relay, C++ echo with WORKERS workers behind each."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        return {"note": "haproxy is not installed (contrib/install-deps installs it): no HAProxy rows"}
    servers, result = [], {"cases": [], "notes": []}
    try:
        plain, proxied, relay_port = free_port(), free_port(), free_port()
        servers.append(_bertd("bertd-haproxy", tmp, (
            f"listen:\n  - 127.0.0.1:{plain}\n  - {{address: \"127.0.0.1:{proxied}\", proxy_protocol: true}}\n"
            f"acceptors: 2\nmodules:\n  - {{name: echo, command: {ECHO}, count: {WORKERS}}}\n"), plain))
        relay = Server("relay-haproxy", [RELAY, "--port", str(relay_port), "--workers", str(WORKERS), "--handler",
                                         ECHO], relay_port, tmp)
        servers.append(relay)
        relay.start()
        fronts = {"bertd": free_port(), "baseline": free_port()}
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(front_bertd=fronts["bertd"], front_relay=fronts["baseline"],
                                       bertd_proxy=proxied, relay=relay_port))
        hap = Server("haproxy", [haproxy, "-db", "-f", cfg], fronts["bertd"], tmp)
        servers.append(hap)
        hap.start()
        common.wait_for("the relay through HAProxy", lambda: common.probe_port(fronts["baseline"]), 10)
        for i, (mode, clients) in enumerate(_pairs(quick, (8, 64))):
            runs, notes = alternate({side: (lambda p=port: common.run_loadgen(p, clients, mode, duration / rounds,
                                                                               warmup, cpu))
                                     for side, port in fronts.items()}, rounds, i)
            row = {"mode": mode, "clients": clients}
            result["notes"] += [f"haproxy/{mode}/{clients} {n}" for n in notes]
            for side in fronts:
                row[side] = _row(f"haproxy/{mode}/{clients}/{side}", runs[side], result["notes"])
            b, base = row["bertd"], row["baseline"]
            row["ratio"] = b["rps"] / base["rps"] if b and base and base["rps"] else None
            result["cases"].append(row)
            print(f"  {f'haproxy/{mode}/{clients}':<28} bertd {b['rps'] if b else 0:>9,.0f} req/s p99 "
                  f"{us(b['p99_us']) if b else '-':>9}   relay {base['rps'] if base else 0:>9,.0f} req/s p99 "
                  f"{us(base['p99_us']) if base else '-':>9}   ratio {row['ratio'] or 0:.2f}", flush=True)
    except Failed as e:
        result["note"] = f"the HAProxy rows could not run: {e}"
    finally:
        _stop_all(reversed(servers))
    return result


def report_haproxy(result):
    if not result:
        return []
    L = ["## Behind HAProxy", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    L += ["loadgen → HAProxy (`mode tcp`, one process, both frontends) → bertd, beside loadgen → the same "
          "HAProxy → the baseline relay; C++ echo, small arguments. HAProxy sends bertd a PROXY v2 header "
          "(`send-proxy-v2` to a `proxy_protocol: true` listener, as in contrib/haproxy/haproxy.cfg); the relay "
          "cannot read one and gets none. Connect mode: each request is a new client connection, and so a new "
          "HAProxy → server connection. Goal: the same as without HAProxy (0.9 of the baseline).", "",
          "| mode | clients | bertd req/s | p50 | p99 | relay req/s | p50 | p99 | req/s ratio (goal ≥ 0.9) | p99 ratio |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["cases"]:
        b, base = r.get("bertd"), r.get("baseline")
        cells = [r["mode"], str(r["clients"])]
        for x in (b, base):
            cells += [f"{x['rps']:,.0f}", us(x["p50_us"]), us(x["p99_us"])] if x else ["-"] * 3
        cells.append(f"{r['ratio']:.2f}" if r.get("ratio") else "-")
        cells.append(f"{b['p99_us'] / base['p99_us']:.2f}" if b and base and base["p99_us"] else "-")
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]


# --- bertd's cache ----------------------------------------------------------------------------
def _stats(port):
    """bertd's `__admin__:stats()` as a dict of strings."""
    try:
        text = bert.Service("127.0.0.1", port, timeout=5).call.__admin__.stats()
    except Exception as e:  # noqa: BLE001 - the library raises its own classes and OSError
        raise Failed(f"stats: {e}")
    if isinstance(text, bytes):
        text = text.decode()
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def run_cache(tmp, duration, warmup, rounds, cpu, quick):
    """The same echo call through a module with `cache: {size: 64MiB}` (its handler marks the
    answer public, never expiring, so every call after the first is a hit) and through a module
    without cache (the same handler; bertd strips its cache info), one bertd, alternating."""
    result = {"cases": [], "notes": []}
    server = None
    try:
        server = _bertd("bertd-cache", tmp, (
            "listen: 127.0.0.1\nacceptors: 2\nmodules:\n"
            f"  - {{name: cached, command: {HANDLER}, count: {WORKERS}, cache: {{size: 64MiB}}}}\n"
            f"  - {{name: uncached, command: {HANDLER}, count: {WORKERS}}}\n"), module="uncached")
        for i, clients in enumerate((8,) if quick else (1, 8, 64)):
            hits = []

            def cached(clients=clients, hits=hits):
                before = _stats(server.port)
                r = common.run_loadgen(server.port, clients, "persistent", duration / rounds, warmup, cpu, "cached")
                after = _stats(server.port)
                hits.append(tuple(int(after.get(f"cache.{k}.cached", 0)) - int(before.get(f"cache.{k}.cached", 0))
                                  for k in ("hits", "misses")))
                return r

            runs, notes = alternate({"cached": cached,
                                     "uncached": lambda c=clients: common.run_loadgen(
                                         server.port, c, "persistent", duration / rounds, warmup, cpu, "uncached")},
                                    rounds, i)
            result["notes"] += [f"cache/{clients} {n}" for n in notes]
            row = {"mode": "persistent", "clients": clients,
                   "cached": _row(f"cache/{clients}/cached", runs["cached"], result["notes"]),
                   "uncached": _row(f"cache/{clients}/uncached", runs["uncached"], result["notes"]),
                   "hits": sum(h for h, _ in hits), "misses": sum(m for _, m in hits)}
            looked_up = row["hits"] + row["misses"]
            row["hit_rate"] = row["hits"] / looked_up if looked_up else None
            c, u = row["cached"], row["uncached"]
            row["ratio"] = c["rps"] / u["rps"] if c and u and u["rps"] else None
            result["cases"].append(row)
            print(f"  {f'cache/persistent/{clients}':<28} cached {c['rps'] if c else 0:>9,.0f} req/s p99 "
                  f"{us(c['p99_us']) if c else '-':>9}   uncached {u['rps'] if u else 0:>9,.0f} req/s p99 "
                  f"{us(u['p99_us']) if u else '-':>9}   ratio {row['ratio'] or 0:.2f}   hits "
                  f"{row['hits']:,} ({(row['hit_rate'] or 0) * 100:.1f}%)", flush=True)
    except Failed as e:
        result["note"] = f"the cache rows could not run: {e}"
    finally:
        if server:
            server.stop()
    return result


def report_cache(result):
    if not result:
        return []
    L = ["## bertd's own cache", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    L += ["The same call, `{call, M, echo, [<<\"hello\">>]}`, to a module with `cache: {size: 64MiB}` whose "
          "handler (tests/bench/bench_handler.cc, C++) answers `{info, cache, [{access, public}, {expiration, "
          "0}]}` before its reply, so bertd serves every call after the first from its cache without a worker; "
          "and to a module without cache on the same bertd, served by the same handler (bertd strips its "
          "cache info). The hit rate is bertd's `cache.hits` over `cache.hits` + `cache.misses` during the "
          "cached runs (warm-up included). Goal: a cached call is faster than a worker's "
          "(ratio > 1) at a 100% hit rate.", "",
          "| clients | cached req/s | p50 | p99 | uncached req/s | p50 | p99 | cached / uncached | hit rate |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["cases"]:
        cells = [str(r["clients"])]
        for x in (r.get("cached"), r.get("uncached")):
            cells += [f"{x['rps']:,.0f}", us(x["p50_us"]), us(x["p99_us"])] if x else ["-"] * 3
        cells.append(f"{r['ratio']:.2f}" if r.get("ratio") else "-")
        cells.append(f"{r['hit_rate'] * 100:.1f}%" if r.get("hit_rate") is not None else "-")
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]


# --- streams ----------------------------------------------------------------------------------
class RssPeaks(common.Sampling):
    """Samples the resident memory of every bertd process of a server every 20 ms while it runs;
    with each process's own high-water mark (VmHWM) read at the end, the higher counts."""

    def __init__(self, server):
        super().__init__()
        self.server, self.peak_kb, self.anon_kb = server, {}, {}  # {pid: KiB}

    def _read(self, pid, field):
        try:
            with open(f"/proc/{pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
        except (OSError, StopIteration, ValueError):
            return None

    def _sample(self, field, into):
        for pid in self.server.pids():
            kb = self._read(pid, field)
            if kb is not None:
                into[pid] = max(into.get(pid, 0), kb)

    def _run(self):
        while not self._stop.wait(0.02):
            self._sample("VmRSS", self.peak_kb)
            self._sample("RssAnon", self.anon_kb)

    def _finish(self):
        self._sample("VmHWM", self.peak_kb)

    def roles(self, which=None):
        """{"master (pid N)": KiB, "child (pid N)": KiB, ...}: peak RSS, or with which="anon" the
        peak of its anonymous part (the process's own memory, not the shared segment)."""
        out = {}
        for pid, kb in sorted((self.anon_kb if which == "anon" else self.peak_kb).items()):
            role = "master" if pid == self.server.proc.pid else "child"  # an acceptor, or the link
            out[f"{role} (pid {pid})"] = kb
        return out


def _streamer(mode, port, nbytes):
    argv = [STREAMER, mode, "--bytes", str(nbytes), "--chunk", str(STREAM_CHUNK)]
    if port:
        argv += ["--port", str(port)]
    if mode.startswith("direct"):
        argv += ["--handler", HANDLER]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode != 0:
        raise Failed(f"streamer {mode} exited with status {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_stream(tmp, rounds, quick, budget_s=100):
    """Per round, in rotating order: NBYTES through `cat` between two socketpairs (the baseline),
    NBYTES streamed from tests/bench/streamer.cc through bertd to stream:sink (the C++ handler
    library reading the stream), NBYTES streamed by stream:source through bertd to streamer, and
    both straight between streamer and the handler on a socketpair (no bertd: what the handler
    library and the client can do, so a slow library is told from a slow server). Rounds stop
    once they took over budget_s (a slow server then costs fewer rounds, not more minutes)."""
    nbytes = (256 * MIB) if quick else 4 * GIB
    result = {"bytes": nbytes, "chunk": STREAM_CHUNK, "notes": []}
    server = None
    try:
        server = _bertd("bertd-stream", tmp, (
            "listen: 127.0.0.1\nacceptors: 2\nmodules:\n"
            f"  - {{name: uncached, command: {HANDLER}, count: 1}}\n"
            f"  - {{name: stream, command: {HANDLER}, count: 2}}\n"), module="uncached")
        with RssPeaks(server) as peaks:
            runs, notes = alternate({"cat": lambda: _streamer("cat", None, nbytes),
                                     "in": lambda: _streamer("in", server.port, nbytes),
                                     "out": lambda: _streamer("out", server.port, nbytes),
                                     "direct-in": lambda: _streamer("direct-in", None, nbytes),
                                     "direct-out": lambda: _streamer("direct-out", None, nbytes)},
                                    rounds, budget_s=budget_s)
        result["notes"] += [f"stream {n}" for n in notes]
        result["rounds"] = len(runs["cat"])
        result["rss_peak_kb"], result["anon_peak_kb"] = peaks.roles(), peaks.roles("anon")
        for side, rs in runs.items():
            result[side] = {"mib_per_s": median(r["mib_per_s"] for r in rs), "rounds": [r["mib_per_s"] for r in rs]}
        cat = result["cat"]["mib_per_s"]
        for side in ("in", "out", "direct-in", "direct-out"):
            got = result[side]["mib_per_s"]
            result[side]["ratio"] = got / cat if got and cat else None
        f = {k: result[k]["mib_per_s"] or 0 for k in runs}
        print(f"  stream/{nbytes // MIB} MiB  cat {f['cat']:,.0f} MiB/s   in {f['in']:,.0f} MiB/s "
              f"({result['in']['ratio'] or 0:.2f})   out {f['out']:,.0f} MiB/s ({result['out']['ratio'] or 0:.2f})   "
              f"no bertd: in {f['direct-in']:,.0f}, out {f['direct-out']:,.0f} MiB/s   bertd peak RSS "
              f"{max(result['rss_peak_kb'].values(), default=0):,} KiB", flush=True)
    except Failed as e:
        result["note"] = f"the stream rows could not run: {e}"
    finally:
        if server:
            server.stop()
    return result


def report_stream(result):
    if not result:
        return []
    L = ["## Streams", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    gib = result["bytes"] / GIB
    size = f"{gib:g} GiB" if gib >= 1 else f"{result['bytes'] // MIB} MiB"
    L += [f"{size} in one streamed request and in one streamed answer through bertd, beside the same bytes "
          "`cat`-ed from one socketpair to another (a producer thread → cat → a consumer thread), in "
          f"{result['rounds']} rounds that rotate the five runs (two through bertd, two without it, and cat); "
          f"chunks of {result['chunk'] // 1024} KiB. Request: "
          "tests/bench/streamer.cc sends `{info, stream, []}`, `{call, stream, sink, []}` and the chunks; the "
          "C++ handler (tests/bench/bench_handler.cc, bertd's C++ library, the fastest of the handler "
          "libraries) reads them with `read_stream`. "
          "Answer: the handler's `source` streams them with `Call::stream`; streamer reads them. "
          "Throughput: bytes over the time from the request's first byte to the answer's last; the median round "
          "counts.", "",
          "| direction | through bertd MiB/s | cat MiB/s | ratio (goal ≥ 0.8) | no bertd: streamer ↔ handler on a "
          "socketpair, MiB/s | its ratio to cat |", "|---|---:|---:|---:|---:|---:|"]
    cat = result["cat"]["mib_per_s"]
    for side, title in (("in", "client → bertd → handler (streamed request)"),
                        ("out", "handler → bertd → client (streamed answer)")):
        r, d = result[side], result[f"direct-{side}"]
        L.append(f"| {title} | {r['mib_per_s'] or 0:,.0f} | {cat or 0:,.0f} | "
                 f"{r['ratio'] or 0:.2f} | {d['mib_per_s'] or 0:,.0f} | {d['ratio'] or 0:.2f} |")
    L += ["", "The last two columns run the same client and handler with no bertd between them: when they are "
          "well above cat and bertd's are not, the server's path is the bottleneck, not the handler library "
          "or the client."]
    L += ["", "Peak resident memory of each bertd process during all the streams (sampled every 20 ms, and "
          "each process's own high-water mark; goal: every one under 64 MiB), and the peak of its anonymous "
          "part (RssAnon, sampled: the process's own buffers, not the shared segment):", "",
          "| process | peak RSS | under 64 MiB | peak anonymous |", "|---|---:|---|---:|"]
    anon = result.get("anon_peak_kb", {})
    for name, kb in result.get("rss_peak_kb", {}).items():
        L.append(f"| {name} | {kb:,} KiB | {'yes' if kb < 64 * 1024 else '**no**'} | "
                 f"{anon[name]:,} KiB |" if name in anon else f"| {name} | {kb:,} KiB | "
                 f"{'yes' if kb < 64 * 1024 else '**no**'} | - |")
    return L + [""]
