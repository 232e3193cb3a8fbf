"""test_haproxy.py: two bertd behind a real HAProxy (issue 17), with contrib/haproxy/haproxy.cfg
as shipped (its addresses replaced by free loopback ports): send-proxy-v2 and a health check on
__admin__:health. Under load through HAProxy, a graceful stop of one bertd (drain_timeout) costs no
request, a kill -9 of the other's master costs only the requests it had in flight, and the extended
access log shows each client's own address, not HAProxy's.
"""
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, Server, echo_config, free_port, wait_until
from loadrun import Load, failures

import bertd

A = bertd.Atom
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CONTRIB = os.path.join(ROOT, "contrib", "haproxy", "haproxy.cfg")
CONNECTIONS = 8


def bertd_config(port, access_log):
    return echo_config(f"drain_timeout: 2s\naccess_log: {access_log}\naccess_log_format: extended",
                       listen=[f'{{address: "127.0.0.1:{port}", proxy_protocol: true}}'])


def raw_call(host, port, term, source=None):
    s = socket.socket()
    s.settimeout(10)
    if source:
        s.bind((source, 0))
    with s:
        s.connect((host, port))
        body = bertd.encode(term)
        s.sendall(struct.pack(">I", len(body)) + body)
        got = b""
        while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got, s.getsockname()


class HAProxy(unittest.TestCase):
    def setUp(self):
        self.front = free_port()
        self.ports = [free_port(), free_port()]
        self.servers = []
        for port in self.ports:
            s = Server("", port=port, wait_workers=False)
            s.access = os.path.join(s.dir, "access.log")
            with open(s.config_path, "w") as f:
                f.write(bertd_config(port, s.access))
            self.addCleanup(shutil.rmtree, s.dir, True)
            self.addCleanup(s.stop)
            self.servers.append(s.start())
        self.dir = tempfile.mkdtemp(prefix="bertd-haproxy-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        with open(CONTRIB) as f:
            cfg = f.read()
        self.assertIn("10.0.0.2:8000", cfg)
        cfg = cfg.replace("127.0.0.1:8000", f"127.0.0.1:{self.front}")
        cfg = cfg.replace("10.0.0.2:8000", f"127.0.0.1:{self.ports[0]}")
        cfg = cfg.replace("10.0.0.3:8000", f"127.0.0.1:{self.ports[1]}")
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        self.haproxy_log = open(os.path.join(self.dir, "haproxy.log"), "w+")
        self.addCleanup(self.haproxy_log.close)
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", path], stdout=self.haproxy_log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.addCleanup(self.stop_haproxy)
        wait_until(lambda: self.through_haproxy() == b"up", timeout=10, what="HAProxy to serve")

    def haproxy_said(self):
        self.haproxy_log.seek(0)
        return "HAProxy said:\n" + self.haproxy_log.read()[-3000:]

    def stop_haproxy(self):
        if self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(5)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()

    def through_haproxy(self, value=b"up", source=None):
        try:
            got, _ = raw_call("127.0.0.1", self.front, (A("call"), A("echo"), A("echo"), [value]), source)
            return bertd.decode(got[4:])[1]
        except (OSError, ValueError, IndexError, bertd.DecodeError):
            return None

    def served_by(self, s, marker):
        try:
            with open(s.access) as f:
                return marker in f.read()
        except OSError:
            return False

    def wait_both_in_rotation(self):
        def both():
            marks = [f"rotation-{i}".encode() for i in range(8)]
            for m in marks:
                self.through_haproxy(m)
            return all(any(self.served_by(s, m.decode()) for m in marks) for s in self.servers)
        wait_until(both, timeout=15, interval=0.3, what="HAProxy to send traffic to both bertd")

    def test_the_health_check_in_contrib_matches_what_bertd_answers(self):
        with open(CONTRIB) as f:
            cfg = f.read()
        send = re.search(r"tcp-check send-binary ([0-9a-f]+)", cfg).group(1)
        expect = re.search(r"tcp-check expect min-recv 20 binary ([0-9a-f]+)", cfg).group(1)
        s = socket.create_connection(("127.0.0.1", self.ports[0]), timeout=5)
        with s:
            # HAProxy's checks start with a v2 LOCAL header.
            s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00" + bytes.fromhex(send))
            got = b""
            while len(got) < len(bytes.fromhex(expect)):
                got += s.recv(4096)
        self.assertEqual(got.hex(), expect)

    def test_the_access_log_shows_the_clients_own_address_not_haproxys(self):
        self.wait_both_in_rotation()
        for i in range(6):
            self.assertEqual(self.through_haproxy(f"from-127.0.0.5-{i}".encode(), source="127.0.0.5"),
                             f"from-127.0.0.5-{i}".encode())
        # bertd writes a request's line just after its answer: give the last one a moment.
        def lines():
            got = []
            for s in self.servers:
                with open(s.access) as f:
                    got += [line for line in f if "from-127.0.0.5" in line]
            return got
        wait_until(lambda: len(lines()) >= 6, timeout=5, interval=0.05, what="six access log lines")
        time.sleep(0.2)
        lines = lines()
        self.assertEqual(len(lines), 6)
        for line in lines:
            self.assertRegex(line, r"^ACC \[[^]]+\] [0-9.]+ [0-9.]+ 127\.0\.0\.5:\d+ ")

    def test_a_graceful_stop_then_a_kill_of_the_other_lose_only_what_the_kill_held(self):
        self.wait_both_in_rotation()
        a, b = self.servers
        # 1. Graceful: a drains (health says draining, HAProxy moves away), stops, starts again.
        load = Load(self, self.front, 6, connections=CONNECTIONS, mode="connect")
        time.sleep(1)
        os.kill(a.proc.pid, signal.SIGQUIT)
        a.proc.wait(15)
        a.proc = None
        a.start()
        quiet = load.result()
        self.assertEqual(failures(quiet), {}, f"the graceful stop cost requests: {quiet}\n{self.haproxy_said()}")
        self.assertGreater(quiet["requests"], 500)
        self.wait_both_in_rotation()
        # 2. kill -9 of b's master: only the requests b held may fail; then it comes back.
        load = Load(self, self.front, 6, connections=CONNECTIONS, mode="connect")
        time.sleep(1)
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait(5)
        wait_until(lambda: subprocess.run(["pgrep", "-s", str(b.proc.pid)], stdout=subprocess.DEVNULL).returncode
                   != 0, timeout=5, what="b's children to die with their master")
        b.proc = None
        b.start()
        killed = load.result()
        lost = sum(failures(killed).values())
        print(f"\n    through HAProxy: graceful stop {quiet['requests']} requests, 0 lost; "
              f"kill -9 {killed['requests']} requests, {lost} lost", end=" ")
        self.assertLessEqual(lost, CONNECTIONS,
                             f"more than the in-flight requests were lost: {killed}\n{self.haproxy_said()}")
        self.assertGreater(killed["requests"], 500)
        self.wait_both_in_rotation()


if __name__ == "__main__":
    unittest.main()
