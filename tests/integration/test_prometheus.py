"""test_prometheus.py: GET /metrics (issue 17) against a real bertd and a real Prometheus: the
exposition is clean for `promtool check metrics`, Prometheus (contrib/prometheus/prometheus.yml)
scrapes it under load and reads back bertd_requests_total equal to the load generator's count,
and anything but GET /metrics gets an HTTP error without disturbing BERT-RPC clients.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import ROOT, Server, free_port, wait_until
from loadrun import ECHO, Load, failures

import bertd

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
CONTRIB = os.path.join(ROOT, "contrib", "prometheus", "prometheus.yml")


def get(port, path="/metrics", timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def raw_http(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode(errors="replace")
            out += chunk


def exact_calls(port, threads, each, module="echo"):
    """threads x each echo calls to `module`, each answered; returns how many were made."""
    import threading
    errors = []

    def run():
        try:
            svc = bertd.Service("127.0.0.1", port, timeout=10)
            for _ in range(each):
                if getattr(svc.call, module).echo(b"p") != b"p":
                    errors.append("wrong answer")
        except Exception as e:  # noqa: BLE001 - any failure fails the test below
            errors.append(repr(e))
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise AssertionError(f"calls failed: {errors[:3]}")
    return threads * each


class Metrics(unittest.TestCase):
    def setUp(self):
        self.mport = free_port()
        self.server = Server(f"""
            listen: 127.0.0.1
            acceptors: 2
            metrics: {{listen: "127.0.0.1:{self.mport}"}}
            modules:
              - name: echo
                command: {ECHO}
                count: 2
              - name: counted
                command: {ECHO} counted
                count: 1
            """)
        self.addCleanup(shutil.rmtree, self.server.dir, True)
        self.addCleanup(self.server.stop)
        self.server.start()

    def sample(self, text, name, **labels):
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
                return float(line.rsplit(" ", 1)[1])
        return None

    def test_the_exposition_is_clean_for_promtool_and_counts_what_was_served(self):
        svc = self.server.service()
        for i in range(25):
            self.assertEqual(svc.call.echo.echo(b"m"), b"m")
        with self.assertRaises(bertd.BertdError):
            svc.call.nosuch.f()
        status, ctype, text = get(self.mport)
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertEqual(check.stdout + check.stderr, "", "promtool had remarks")
        self.assertEqual(self.sample(text, "bertd_requests_total", module="echo", kind="external",
                                     priority="high"), 25)
        self.assertEqual(self.sample(text, "bertd_requests_total", module="echo", kind="external",
                                     priority="low"), 0)
        self.assertEqual(self.sample(text, "bertd_unknown_module_total"), 1)
        self.assertEqual(self.sample(text, "bertd_request_duration_seconds_count", module="echo"), 25)
        self.assertEqual(self.sample(text, "bertd_request_duration_seconds_bucket", module="echo", le="+Inf"), 25)
        self.assertGreater(self.sample(text, "bertd_request_duration_seconds_sum", module="echo"), 0)
        self.assertEqual(self.sample(text, "bertd_workers", module="echo"), 2)
        self.assertEqual(self.sample(text, "bertd_health", state="ok"), 1)
        buckets = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('bertd_request_duration_seconds_bucket{module="echo"')]
        self.assertEqual(buckets, sorted(buckets), "histogram buckets must be cumulative")

    def test_high_and_low_requests_and_errors_are_counted_apart_as_bertd_stats_counts_them(self):
        svc = self.server.service()
        low = self.server.service(priority="low")
        for _ in range(3):
            self.assertEqual(svc.call.echo.echo(b"h"), b"h")
        for _ in range(5):
            self.assertEqual(low.call.echo.echo(b"l"), b"l")
        with self.assertRaises(bertd.BertdError):
            low.call.echo.nosuch()
        _, _, text = get(self.mport)
        req = {p: self.sample(text, "bertd_requests_total", module="echo", kind="external", priority=p)
               for p in ("high", "low")}
        self.assertEqual(req, {"high": 3, "low": 6})
        err = {p: self.sample(text, "bertd_errors_total", module="echo", type="server", priority=p)
               for p in ("high", "low")}
        self.assertEqual(err, {"high": 0, "low": 1})
        st = self.server.stats()
        self.assertEqual((int(st["requests.high.echo"]), int(st["requests.low.echo"])), (3, 6))
        self.assertEqual(int(st["requests.echo"]), 9)
        self.assertEqual(int(st["errors.server.echo"]), 1)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual((check.returncode, check.stdout + check.stderr), (0, ""))

    def test_anything_but_get_metrics_gets_an_http_error(self):
        self.assertIn("404 Not Found", raw_http(self.mport, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        self.assertIn("405 Method Not Allowed", raw_http(self.mport, b"POST /metrics HTTP/1.1\r\n\r\n"))
        self.assertIn("400 Bad Request", raw_http(self.mport, b"\x00\x00\x00\x05hello\r\n\r\n"))
        self.assertIn("431", raw_http(self.mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000))
        head = raw_http(self.mport, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        self.assertIn("200 OK", head)
        self.assertTrue(head.endswith("\r\n\r\n"))
        self.assertEqual(self.server.service().call.echo.echo(b"still"), b"still")

    def test_a_slow_scraper_is_closed_and_a_flood_is_refused_not_queued(self):
        slow = [socket.create_connection(("127.0.0.1", self.mport), timeout=10) for _ in range(20)]
        for s in slow:
            s.sendall(b"GET /metr")
        self.assertEqual(self.server.service().call.echo.echo(b"served"), b"served")
        answers = [s.recv(4096) for s in slow]  # a 503 at once, or the close after 5 s
        self.assertTrue(any(b"503" in a for a in answers), "the flood was not refused")
        for s in slow:
            s.close()
        status, _, _ = get(self.mport)
        self.assertEqual(status, 200)

    def test_a_flood_of_scrapes_is_served_while_bertrpc_requests_still_succeed(self):
        import threading
        stop, served, errors = threading.Event(), [], []

        def scrape():
            while not stop.is_set():
                try:
                    served.append(get(self.mport, timeout=10)[0])
                except OSError as e:
                    errors.append(repr(e))
        scrapers = [threading.Thread(target=scrape) for _ in range(6)]
        for t in scrapers:
            t.start()
        try:
            load = Load(self, self.server.port, 2, connections=8)
            self.assertEqual(exact_calls(self.server.port, threads=4, each=50), 200)
            self.assertEqual(failures(load.result()), {})
        finally:
            stop.set()
            for t in scrapers:
                t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(served), 8)  # paced, not refused: every scrape was answered
        self.assertEqual(set(served), {200})

    def test_prometheus_reads_back_the_load_generators_request_count(self):
        pport = free_port()
        d = tempfile.mkdtemp(prefix="bertd-prometheus-")
        self.addCleanup(shutil.rmtree, d, True)
        with open(CONTRIB) as f:
            cfg = f.read().replace("127.0.0.1:9464", f"127.0.0.1:{self.mport}")
        path = os.path.join(d, "prometheus.yml")
        with open(path, "w") as f:
            f.write(cfg)
        log = open(os.path.join(d, "prometheus.log"), "w+")
        self.addCleanup(log.close)
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={d}/data",
                                 f"--web.listen-address=127.0.0.1:{pport}"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d)

        def stop():
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        self.addCleanup(stop)

        def query(q):
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
            except OSError:
                return None
            return float(res[0]["value"][1]) if res else None

        wait_until(lambda: query('up{job="bertd"}') == 1, timeout=30, interval=0.5,
                   what="Prometheus to scrape bertd")
        # Load while Prometheus scrapes: loadgen on echo in the background, and an exact count
        # of calls to a second module, which nothing else calls.
        background = Load(self, self.server.port, 3, connections=8)
        sent = exact_calls(self.server.port, threads=8, each=400, module="counted")
        bg = background.result()
        self.assertEqual(failures(bg), {})
        seen = []

        def read(module, want):
            v = query(f'sum(bertd_requests_total{{module="{module}"}})')
            seen.append(v)
            return v if v is not None and want(v) else None
        got = wait_until(lambda: read("counted", lambda v: v == sent), timeout=15, interval=0.5,
                         what=f"Prometheus to read {sent} requests (it read {seen[-3:]})")
        self.assertEqual(got, sent)
        # loadgen's own count leaves out what it had in flight at its end: bertd may count those.
        echo = wait_until(lambda: read("echo", lambda v: v >= bg["requests"]), timeout=15, interval=0.5,
                          what=f"Prometheus to read at least {bg['requests']} echo requests")
        self.assertLessEqual(echo, bg["requests"] + 100)
        log.seek(0)
        self.assertNotIn("level=error", log.read())


if __name__ == "__main__":
    unittest.main()
