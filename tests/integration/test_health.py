"""test_health.py: __admin__:health() and drain_timeout (issue 17), against real bertd processes:
ok while every module has a live worker, degraded when one has none, draining while a graceful
stop waits out drain_timeout (serving all the while), answered to any client.
"""
import os
import shutil
import signal
import socket
import struct
import time
import unittest

from erlnode import test_cookie, unique_name
from harness import Server, alive, echo_config, free_port, wait_until
from loadrun import link_pid

import bertd

A = bertd.Atom


def health(port):
    return bertd.Service("127.0.0.1", port, timeout=5).call.__admin__.health()


def echo(port, value=b"x"):
    return bertd.Service("127.0.0.1", port, timeout=5).call.echo.echo(value)


class Health(unittest.TestCase):
    def server(self, text, **kw):
        s = Server(text, **kw)
        self.addCleanup(shutil.rmtree, s.dir, True)
        self.addCleanup(s.stop)
        return s.start()

    def test_health_is_ok_while_every_module_has_a_live_worker(self):
        s = self.server(echo_config())
        self.assertEqual(health(s.port), A("ok"))

    def test_health_is_degraded_when_a_module_has_no_live_worker(self):
        s = self.server(echo_config(command="sh -c 'exit 3'"), wait_workers=False)
        wait_until(lambda: health(s.port) == A("degraded"), timeout=5, what="health to say degraded")

    def test_health_is_degraded_while_the_erlang_link_is_lost_and_ok_once_it_is_back(self):
        s = self.server(echo_config(), args=["--name", unique_name("health"), "--cookie", test_cookie()])
        wait_until(lambda: link_pid(s) and health(s.port) == A("ok"), timeout=15, what="the link to be up")
        # The link is restarted at once the first time, then with back-off (100 ms, 200 ms, ...):
        # killed again each time it comes back, it is soon down long enough to be seen so.
        seen, killed = [], set()
        deadline = time.monotonic() + 15
        while A("degraded") not in seen and time.monotonic() < deadline:
            pid = link_pid(s)
            if pid and pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            seen.append(health(s.port))
            time.sleep(0.01)
        self.assertIn(A("degraded"), seen, f"health never said degraded while the link was killed {len(killed)} times")
        self.assertEqual(echo(s.port), b"x")  # external modules serve all the while
        wait_until(lambda: health(s.port) == A("ok"), timeout=15, what="health to say ok with the link back")
        self.assertNotIn(link_pid(s), killed)

    def test_health_is_answered_to_a_client_that_may_not_call_admin(self):
        port, proxied = free_port(), free_port()
        s = Server("", port=port)
        self.addCleanup(shutil.rmtree, s.dir, True)
        self.addCleanup(s.stop)
        with open(s.config_path, "w") as f:
            f.write(echo_config(count=1, acceptors=None, listen=[
                f"127.0.0.1:{port}", f'{{address: "127.0.0.1:{proxied}", proxy_protocol: true}}']))
        s.start()
        c = socket.create_connection(("127.0.0.1", proxied), timeout=5)
        self.addCleanup(c.close)
        header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 8000\r\n"  # a remote client: no admin calls
        for fn, want in ((b"stats", A("error")), (b"health", A("reply"))):
            body = bertd.encode((A("call"), A("__admin__"), A(fn.decode()), []))
            c.sendall(header + struct.pack(">I", len(body)) + body)
            header = b""
            got = b""
            while len(got) < 4 or len(got) < 4 + struct.unpack(">I", got[:4])[0]:
                got += c.recv(65536)
            answer = bertd.decode(got[4:])
            self.assertEqual(answer[0], want, answer)
        self.assertEqual(answer, (A("reply"), A("ok")))

    def test_a_graceful_stop_with_drain_timeout_serves_while_health_says_draining(self):
        s = self.server(echo_config("drain_timeout: 2s"))
        self.assertEqual(health(s.port), A("ok"))
        os.kill(s.proc.pid, signal.SIGQUIT)  # the master only, as systemd or kill does
        started = time.monotonic()
        wait_until(lambda: health(s.port) == A("draining"), timeout=2, what="health to say draining")
        served = 0
        while time.monotonic() - started < 1.5:  # new connections are still accepted and answered
            self.assertEqual(echo(s.port, b"during-drain"), b"during-drain")
            served += 1
        self.assertGreater(served, 10)
        s.proc.wait(10)
        self.assertGreaterEqual(time.monotonic() - started, 2.0)
        self.assertIn("draining for 2.0 s", s.log())

    def test_a_second_quit_ends_the_drain_at_once(self):
        s = self.server(echo_config("drain_timeout: 60s"))
        os.kill(s.proc.pid, signal.SIGQUIT)
        wait_until(lambda: health(s.port) == A("draining"), timeout=2, what="health to say draining")
        started = time.monotonic()
        os.kill(s.proc.pid, signal.SIGQUIT)
        s.proc.wait(10)
        self.assertLess(time.monotonic() - started, 10)

    def test_halt_drains_too(self):
        s = self.server(echo_config("drain_timeout: 1s"))
        s.service().call.__admin__.halt()
        wait_until(lambda: health(s.port) == A("draining"), timeout=2, what="health to say draining")
        s.proc.wait(10)
        self.assertFalse(alive(s.proc.pid))


if __name__ == "__main__":
    unittest.main()
