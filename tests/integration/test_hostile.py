"""test_hostile.py: bertd tried as an attacker and a careless handler author would try it (issue 12):
answers that could cross between clients, frames whose work is out of proportion to their size,
other local users at bertd's internal sockets, running out of descriptors, memory held by many
connections at once, and degraded logs. Each test is named after the behaviour it holds bertd to,
and runs against real bertd processes.
"""
import os
import resource
import socket
import struct
import threading
import time
import unittest

from harness import Server, wait_until
from loadrun import ECHO, acceptors, rss_kb

import bertd

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User and system CPU a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def echo_config(extra="", count=2, acceptors=2):
    return f"""
        listen: 127.0.0.1
        acceptors: {acceptors}
        {extra}
        modules:
          - name: echo
            command: {ECHO}
            count: {count}
        """


class HostileTest(unittest.TestCase):
    def server(self, text, **kw):
        s = Server(text, **kw)
        self.addCleanup(s.stop)
        return s.start()


class Descriptors(HostileTest):
    def test_out_of_descriptors_bertd_pauses_accepting_instead_of_spinning(self):
        limit = 256

        def low_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        s = self.server(echo_config("limits: {max_connections: 5000}"), preexec=low_limit)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        for _ in range(1000):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", s.port))
            held.append(c)
        time.sleep(0.5)  # the acceptors take what they can, then run out
        pids = acceptors(s)
        cpu0 = {p: cpu_seconds(p) for p in pids}
        lines0 = s.log().count("out of file descriptors")
        time.sleep(3)
        used = sum(cpu_seconds(p) - cpu0[p] for p in pids)
        lines = s.log().count("out of file descriptors") - lines0
        self.assertGreater(s.log().count("out of file descriptors"), 0, "bertd never noticed it ran out")
        self.assertLess(used, 0.6, f"the acceptors used {used:.2f} s of CPU in 3 s with no descriptor to spare")
        self.assertLessEqual(lines, 2, f"{lines} log lines about it in 3 s")
        # Once clients leave, new ones are served again.
        for c in held[:900]:
            c.close()
        del held[:900]
        t0 = time.monotonic()
        answer = wait_until(lambda: self._try_call(s), timeout=5, what="a call to succeed after clients left")
        self.assertEqual(answer, b"back")
        print(f"\n    out of descriptors: {used:.2f} s of acceptor CPU in 3 s, {lines} log lines; served again "
              f"{time.monotonic() - t0:.2f} s after 900 clients left", end=" ")

    @staticmethod
    def _try_call(s):
        try:
            return bertd.Service("127.0.0.1", s.port, timeout=1).call.echo.echo(b"back")
        except (OSError, bertd.BertdError):
            return None


def read_frame(sock):
    """The next answer, decoded, or None when the server closed the connection first."""
    buf = b""
    try:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except OSError:
        return None
    return bertd.decode(buf[4:4 + struct.unpack(">I", buf[:4])[0]])


class MemoryBudget(HostileTest):
    def test_unfinished_frames_of_many_clients_cannot_hold_more_than_max_buffered(self):
        frame, budget, clients = 8 << 20, 32 << 20, 48
        # One acceptor: the budget is each acceptor's.
        s = self.server(echo_config(f"limits: {{max_frame: {frame}, max_buffered: {budget}, max_connections: 1000}}",
                                    acceptors=1))
        pids = acceptors(s)
        base = sum(rss_kb(p) for p in pids)
        # Each announces a whole frame and sends all of it but the last byte: 384 MiB in all.
        blob = struct.pack(">I", frame) + b"\x83" + b"x" * (frame - 2)
        socks = []
        self.addCleanup(lambda: [c.close() for c in socks])

        def feed(sock):
            try:
                sock.sendall(blob)
            except OSError:
                pass  # refused and closed, or held back by bertd's backpressure until the timeout

        threads = []
        for _ in range(clients):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=4)
            socks.append(c)
            threads.append(threading.Thread(target=feed, args=(c,), daemon=True))
            threads[-1].start()
        peak, served = 0, 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            peak = max(peak, sum(rss_kb(p) for p in pids) - base)
            # A good client with a small request is served all along.
            if bertd.Service("127.0.0.1", s.port, timeout=5).call.echo.echo(b"good") == b"good":
                served += 1
            time.sleep(0.05)
        for t in threads:
            t.join(6)
        refused = 0
        for c in socks:
            c.settimeout(1)
            answer = read_frame(c)
            if answer is not None and answer[0] == bertd.Atom("error") and answer[1][0] == bertd.Atom("protocol"):
                self.assertIn(b"limits.max_buffered", answer[1][3])
                refused += 1
        self.assertGreater(refused, 0, "no unfinished frame was refused")
        self.assertGreater(served, 10, "the good client was not served while the budget was full")
        # The budget, and a read's worth of slack per connection.
        self.assertLess(peak, budget // 1024 + (8 << 10),
                        f"the acceptors grew by {peak} KiB with limits.max_buffered at {budget >> 20} MiB")
        print(f"\n    {clients} unfinished {frame >> 20} MiB frames: acceptors grew {peak >> 10} MiB at most "
              f"(budget {budget >> 20} MiB), {refused} refused, {served} good calls served", end=" ")


if __name__ == "__main__":
    unittest.main()
