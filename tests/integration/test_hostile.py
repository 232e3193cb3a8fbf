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

import errno
import json
import shutil
import signal
import subprocess
import sys
import tempfile

from erlnode import compile_erlang, test_cookie, unique_name
from harness import ECHO, ROOT, Server, echo_config, py_handler, read_frame, wait_until
from loadrun import acceptors, link_pid, rss_kb

import bertd
from test_info_packets import CallbackService  # noqa: E402  (not its tests)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User and system CPU a process has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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


    def test_big_frames_begun_on_many_connections_reserve_no_room_they_have_not_received(self):
        # 40 connections each announce a 32 MiB frame (max_frame) and send 1 MiB of it: what
        # they hold is 40 MiB; the room their buffers take must stay near that, not 40 x 32 MiB.
        clients, sent = 40, 1 << 20
        s = self.server(echo_config("limits: {max_connections: 1000}", acceptors=1))
        pid = acceptors(s)[0]
        size0, hwm0 = vm_kb(pid, "VmSize"), hwm_kb(pid)
        head = struct.pack(">I", 32 << 20) + b"\x83" + b"x" * (sent - 1)
        socks = []
        self.addCleanup(lambda: [c.close() for c in socks])
        for _ in range(clients):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(head)
            socks.append(c)
        # The acceptor has read it all once a good client, served after them, has its answer.
        wait_until(lambda: vm_kb(pid, "VmRSS") - hwm0 > clients * sent // 1024 * 3 // 4, timeout=10,
                   what="the acceptor to read the connections' bytes")
        self.assertEqual(bertd.Service("127.0.0.1", s.port, timeout=5).call.echo.echo(b"good"), b"good")
        room, peak = vm_kb(pid, "VmSize") - size0, hwm_kb(pid) - hwm0
        print(f"\n    {clients} connections with 1 MiB of a 32 MiB frame each: acceptor's address space "
              f"+{room >> 10} MiB, peak resident +{peak >> 10} MiB", end=" ")
        self.assertLess(room, clients * 8 << 10, "the buffers took room for frames that have not arrived")
        self.assertLess(peak, clients * 4 << 10)
        for c in socks:
            c.close()
        socks.clear()
        # A whole frame of max_frame bytes still goes through.
        big = b"b" * ((32 << 20) - 64)
        self.assertEqual(bertd.Service("127.0.0.1", s.port, timeout=30).call.echo.echo(big), big)


    def test_buffers_kept_from_closed_connections_count_in_max_buffered(self):
        # A closed connection's big buffer is kept a moment as a spare, and a frame announced
        # next takes it: memory in use before its bytes come. Round after round, fillers send
        # almost whole 4 MiB frames and leave, and holders announce 4 MiB frames, send one byte
        # and stay: the holders' room must count, or the acceptor grows 16 MiB a round.
        frame, budget, rounds = 4 << 20, 16 << 20, 6
        s = self.server(echo_config(f"limits: {{max_frame: {frame}, max_buffered: {budget}, max_connections: 1000}}",
                                    acceptors=1))
        pid = acceptors(s)[0]
        base = vm_kb(pid, "VmRSS")
        filler = struct.pack(">I", frame) + b"\x83" + b"f" * (frame - 2)
        holder = struct.pack(">I", frame) + b"\x83"
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        peak = 0
        for _ in range(rounds):
            fillers = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(3)]
            for c in fillers:
                try:
                    c.sendall(filler)
                except OSError:
                    pass  # refused: over the budget
            # Read what the fillers sent (a good client is served after them), then let them go.
            self.assertEqual(bertd.Service("127.0.0.1", s.port, timeout=5).call.echo.echo(b"good"), b"good")
            for c in fillers:
                c.close()
            time.sleep(0.05)
            for _ in range(4):
                c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
                c.sendall(holder)
                held.append(c)
            self.assertEqual(bertd.Service("127.0.0.1", s.port, timeout=5).call.echo.echo(b"good"), b"good")
            peak = max(peak, vm_kb(pid, "VmRSS") - base)
        print(f"\n    {rounds} rounds of fillers and holders of 4 MiB frames: acceptor grew {peak >> 10} MiB "
              f"at most (budget {budget >> 20} MiB)", end=" ")
        self.assertLess(peak, (budget >> 10) + (8 << 10),
                        f"the acceptor grew by {peak} KiB with limits.max_buffered at {budget >> 20} MiB")


def vm_kb(pid, field):
    """A field of /proc/<pid>/status (VmSize, VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def hwm_kb(pid):
    """The process's peak resident memory (VmHWM), in KiB."""
    return vm_kb(pid, "VmHWM")


def atom(name):
    return b"\x64" + struct.pack(">H", len(name)) + name


def nils(n):
    """The bytes of a list of n NILs: 5 + n + 1 bytes that decode into n elements."""
    return b"\x6c" + struct.pack(">I", n) + b"\x6a" * n + b"\x6a"


def call_of(module, arg, function=b"f"):
    return b"\x68\x04" + atom(b"call") + atom(module) + atom(function) + b"\x6c\x00\x00\x00\x01" + arg + b"\x6a"


def compressed(term):
    import zlib
    return b"\x83\x50" + struct.pack(">I", len(term)) + zlib.compress(term, 9)


class WorkBoundedBySize(HostileTest):
    """Frames built to cost far more than their size (issue 12): each must cost an acceptor
    under 50 ms of CPU more than a plain frame of the same size (a call with one binary: what
    receiving and storing the bytes costs), and under 4x its size in memory; other clients go
    on being served meanwhile."""

    def setUp(self):
        d = tempfile.mkdtemp(prefix="bertd-bomb-")
        self.addCleanup(shutil.rmtree, d, True)
        self.log_path = os.path.join(d, "access.log")
        self.s = self.server(echo_config(f"access_log: {self.log_path}", acceptors=1))
        self.acceptor = acceptors(self.s)[0]
        # A client served before, between and after the hostile frames.
        self.good = bertd.Service("127.0.0.1", self.s.port, timeout=5, persistent=True)
        self.assertEqual(self.good.call.echo.echo(b"warm"), b"warm")

    def send_one(self, payload, then=b""):
        """Sends one frame (and the frames `then`); returns (the first answer, acceptor CPU seconds,
        peak memory growth in KiB)."""
        before_cpu, before_rss = cpu_seconds(self.acceptor), rss_kb(self.acceptor)
        with socket.create_connection(("127.0.0.1", self.s.port), timeout=10) as c:
            c.sendall(struct.pack(">I", len(payload)) + payload + then)
            answer = read_frame(c)
        cpu = cpu_seconds(self.acceptor) - before_cpu
        grown = hwm_kb(self.acceptor) - before_rss
        self.assertEqual(self.good.call.echo.echo(b"still"), b"still")
        return answer, cpu, grown

    def costs(self, payload, then=b"", plain=None):
        """As send_one, with the CPU beyond that of a plain frame of the same size (the
        cheaper of two runs of each, so a busy machine's noise counts least), or of `plain`."""
        size = len(payload) - len(b"\x83" + call_of(b"nomod", b""))
        if plain is None:
            plain = b"\x83" + call_of(b"nomod", b"\x6d" + struct.pack(">I", max(size - 5, 0)) + b"p" * max(size - 5, 0))
        base = min(self.send_one(plain, then)[1] for _ in range(2))
        runs = [self.send_one(payload, then) for _ in range(2)]
        answer, _, grown = runs[0]
        self.base_cpu = base
        return answer, min(r[1] for r in runs) - base, max(r[2] for r in runs)

    def assert_cheap(self, payload, cpu, grown, what, size=None):
        size = size or len(payload)
        print(f"\n    {what}: {len(payload)} bytes, acceptor CPU {cpu * 1000:+.0f} ms beyond a plain frame's "
              f"{self.base_cpu * 1000:.0f} ms, peak +{grown} KiB", end=" ")
        self.assertLess(cpu, 0.05, f"{what} cost the acceptor {cpu:.3f} s of CPU more than a plain frame")
        self.assertLess(grown, 4 * size // 1024 + 4096, f"{what} grew the acceptor by {grown} KiB")

    def test_a_compressed_bomb_costs_an_acceptor_under_50_ms(self):
        # 16 million NILs in 16 KB: inflated, 16 MB that decode into 16 million elements.
        payload = compressed(call_of(b"echo", nils(16 << 20)))
        self.assertLess(len(payload), 20000)
        answer, cpu, grown = self.costs(payload)
        self.assertEqual(answer[1][0], bertd.Atom("protocol"))
        self.assertIn(b"limits.max_inflated", answer[1][3])
        self.assert_cheap(payload, cpu, grown, "compressed bomb")

    def test_a_compressed_frame_that_inflates_over_64_times_its_size_is_refused(self):
        # 4 million NILs: within max_inflated, but from 4 KB.
        payload = compressed(call_of(b"echo", nils(4 << 20)))
        answer, cpu, grown = self.costs(payload)
        self.assertEqual(answer[1][0], bertd.Atom("protocol"))
        self.assertIn(b"max_expansion (64)", answer[1][3])
        self.assert_cheap(payload, cpu, grown, "compressed 4M NILs")

    def test_a_compressed_request_within_the_limits_is_served_and_logged_cut_short(self):
        # term_to_binary(T, [compressed]) from an Erlang client: inflated and served.
        self.assertEqual(self.good.call.echo.echo(b"x"), b"x")
        with socket.create_connection(("127.0.0.1", self.s.port), timeout=10) as c:
            payload = compressed(call_of(b"echo", b"\x6d" + struct.pack(">I", 5) + b"hello", b"echo"))
            c.sendall(struct.pack(">I", len(payload)) + payload)
            self.assertEqual(read_frame(c), (bertd.Atom("reply"), b"hello"))
        # 64 thousand NILs (within the expansion floor): answered, and logged without all of them.
        payload = compressed(call_of(b"nomod", nils(64 << 10)))
        answer, cpu, grown = self.costs(payload)
        self.assertEqual(answer[1][0], bertd.Atom("server"))
        self.assert_cheap(payload, cpu, grown, "compressed 64K NILs, logged")
        line = wait_until(lambda: next((l for l in open(self.log_path) if "nomod,f,[[[]," in l), None),
                          what="the access log line")
        self.assertLess(len(line), 8192)
        self.assertIn("...", line)

    def test_a_long_list_in_a_call_costs_no_decode_in_the_access_log(self):
        # The 2.2 s and 301 MB case: 4 million NILs in a call's arguments, access log on.
        payload = b"\x83" + call_of(b"nomod", nils(4 << 20))
        answer, cpu, grown = self.costs(payload)
        self.assertEqual(answer[1][0], bertd.Atom("server"))
        self.assert_cheap(payload, cpu, grown, "4M NILs in a call, logged")

    def test_a_long_list_that_is_not_a_request_costs_no_decode(self):
        # 16 million NILs in a tuple that is no request: the protocol-error path.
        payload = b"\x83\x68\x02" + atom(b"hello") + nils(16 << 20)
        answer, cpu, grown = self.costs(payload)
        self.assertEqual(answer[1][0], bertd.Atom("protocol"))
        self.assert_cheap(payload, cpu, grown, "16M NILs, not a request")


    def test_an_info_that_inflates_to_millions_of_nils_fails_the_next_request_unread(self):
        # 60 KB on the wire (incompressible bytes, then 3.5 million NILs): under 64 KiB, and
        # within max_expansion, but 3.5 MB of options once inflated.
        noise = os.urandom(56 << 10)
        opts = b"\x6c\x00\x00\x00\x02" + b"\x6d" + struct.pack(">I", len(noise)) + noise + nils(3500 << 10) + b"\x6a"
        payload = compressed(b"\x68\x03" + atom(b"info") + atom(b"cache") + opts)
        self.assertLess(len(payload), 64 << 10)
        # Inflating is bounded by max_expansion, for any request: the info must cost no more
        # than a compressed call of the same bytes does (a call to no module, logged cut short).
        call = compressed(b"\x68\x04" + atom(b"call") + atom(b"nomod") + atom(b"f") + opts)
        answer, cpu, grown = self.costs(payload, then=frame_of(b"\x83" + call_of(b"echo", b"\x61\x01", b"echo")),
                                        plain=call)
        self.assertEqual(answer[1][0], bertd.Atom("protocol"), answer)
        self.assertIn(b"an info of 3", answer[1][3])
        self.assertIn(b"bytes (at most 65536)", answer[1][3])
        self.assert_cheap(payload, cpu, grown, "compressed info of 3.5M NILs", size=len(opts))

    def test_an_info_under_64_kib_of_nils_is_refused_within_a_megabyte(self):
        # 60 thousand NILs: small on the wire, 4 MB as terms.
        payload = b"\x83\x68\x03" + atom(b"info") + atom(b"callback") + nils(60 << 10)
        answer, cpu, grown = self.costs(payload, then=frame_of(b"\x83" + call_of(b"echo", b"\x61\x01", b"echo")))
        self.assertEqual(answer[1][0], bertd.Atom("protocol"), answer)
        self.assertIn(b"bytes of memory to read", answer[1][3])
        self.assert_cheap(payload, cpu, grown, "info of 60K NILs")

    def test_a_list_form_info_over_64_kib_fails_the_request_after_it_not_itself(self):
        # The Ruby client's [info, cache, Options], 4 MB of it: no answer of its own (that would
        # shift every later answer by one), the call after it fails, the one after that is served.
        payload = b"\x83\x6c\x00\x00\x00\x03" + atom(b"info") + atom(b"cache") + nils(4 << 20) + b"\x6a"
        echo = lambda x: frame_of(b"\x83" + call_of(b"echo", b"\x61" + bytes([x]), b"echo"))
        answer, cpu, grown = self.costs(payload, then=echo(1))
        self.assertEqual(answer[1][0], bertd.Atom("protocol"), answer)
        self.assertIn(b"an info of 4194", answer[1][3])
        self.assert_cheap(payload, cpu, grown, "list-form info of 4M NILs")
        with socket.create_connection(("127.0.0.1", self.s.port), timeout=10) as c:
            c.sendall(frame_of(payload) + echo(1) + echo(2))
            self.assertEqual(read_frame(c)[1][0], bertd.Atom("protocol"))
            self.assertEqual(read_frame(c), (bertd.Atom("reply"), 2))


def frame_of(payload):
    return struct.pack(">I", len(payload)) + payload


def cast_of(module, function, args):
    return b"\x68\x04" + atom(b"cast") + atom(module) + atom(function) + args


class CallbackResults(HostileTest):
    def test_a_callbacks_result_of_many_elements_is_cast_on_unread(self):
        service = CallbackService(raw=True)
        self.addCleanup(service.close)
        s = self.server(echo_config("callbacks: {allow: ['127.0.0.1:*'], timeout: 5s, retries: 0}", acceptors=1))
        acceptor = acceptors(s)[0]
        where = f"127.0.0.1:{service.port}".encode()
        cb = bertd.encode((bertd.Atom("info"), bertd.Atom("callback"),
                           [(bertd.Atom("service"), where), (bertd.Atom("mfa"), bertd.Atom("cron"), bertd.Atom("done"), [42])]))
        n = 400_000  # within what the echo handler itself decodes (64 MiB)

        def run(arg):
            """Casts echo(arg) with the callback; (acceptor CPU, peak growth in KiB, what the service got)."""
            before = len(service.got)
            cpu0, rss0 = cpu_seconds(acceptor), rss_kb(acceptor)
            with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
                c.sendall(frame_of(cb) + frame_of(b"\x83" + cast_of(b"echo", b"echo", b"\x6c\x00\x00\x00\x01" + arg + b"\x6a")))
                self.assertEqual(read_frame(c), (bertd.Atom("noreply"),))
            wait_until(lambda: len(service.got) > before, timeout=10, what="the callback")
            return cpu_seconds(acceptor) - cpu0, hwm_kb(acceptor) - rss0, service.got[-1]

        blob = b"\x6d" + struct.pack(">I", n - 4) + b"p" * (n - 4)  # a plain result of the same size
        base = min(run(blob)[0] for _ in range(2))
        runs = [run(nils(n)) for _ in range(2)]
        cpu, grown = min(r[0] for r in runs) - base, max(r[1] for r in runs)
        got = runs[0][2]
        self.assertTrue(got.endswith(b"\x6c\x00\x00\x00\x02\x61\x2a" + nils(n) + b"\x6a"),
                        f"the service got {len(got)} bytes: {got[:300]!r}...")
        print(f"\n    a callback's result of {n} NILs: acceptor CPU {cpu * 1000:+.0f} ms beyond a binary's "
              f"{base * 1000:.0f} ms, peak +{grown} KiB", end=" ")
        self.assertLess(cpu, 0.05)
        self.assertLess(grown, 4 * n // 1024 + 4096)


class CrossingAnswers(HostileTest):
    """A slot's bytes belong to the request that leased it; anything else is the handler's fault."""

    def ext(self, timeout=""):
        return self.server(f"""
            listen: 127.0.0.1
            acceptors: 2
            modules:
              - name: ext
                command: {py_handler()}
                count: 1
                {timeout}
            """)

    def answers_of_later_clients(self, s, n=10, seconds=1.5):
        """What each of `n` clients gets for echo(<its own tag>), one after another, for a while."""
        got = []
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline or i < n:
            tag = f"client {i}".encode()
            try:
                got.append((tag, bertd.Service("127.0.0.1", s.port, timeout=10).call.ext.echo(tag)))
            except bertd.ServerError as e:
                got.append((tag, e))
            i += 1
        return got

    def assert_nobody_got_another_answer(self, got):
        # A request the faulty worker held may fail; it never gets another's answer.
        crossed = [(tag, answer) for tag, answer in got if not isinstance(answer, Exception) and answer != tag]
        self.assertEqual(crossed, [], f"of {len(got)} clients, these got another's answer")
        self.assertEqual(got[-1][1], got[-1][0], f"the last clients are not served in step: {got[-3:]}")
        failed = [(tag, str(a)) for tag, a in got if isinstance(a, Exception)]
        self.assertLessEqual(len(failed), 1, f"more than one failure: {failed}")

    def test_a_handler_that_answers_twice_never_reaches_another_client(self):
        s = self.ext()
        self.assertEqual(s.service().call.ext.answer_twice(b"mine"), b"mine")
        time.sleep(0.2)  # the second answer is in the slot now, and nobody asked for it
        got = self.answers_of_later_clients(s)
        self.assert_nobody_got_another_answer(got)
        wait_until(lambda: "while no request was outstanding" in s.log(), what="the fault in the log")

    def test_a_process_a_worker_left_behind_never_reaches_another_client(self):
        s = self.ext()
        path = os.path.join(s.dir, "child.pid")
        self.assertEqual(s.service().call.ext.leave_writer(path, 300), b"left one")
        self.addCleanup(lambda: _kill_quietly(path))
        got = self.answers_of_later_clients(s)  # the child writes while these run
        self.assert_nobody_got_another_answer(got)
        self.assertTrue("not the worker, wrote into its socket" in s.log() or "no request was outstanding" in s.log(),
                        s.log())

    def test_a_late_answer_after_a_timeout_never_reaches_another_client(self):
        s = self.ext("timeout: 500ms")
        path = os.path.join(s.dir, "child.pid")
        self.addCleanup(lambda: _kill_quietly(path))
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.escape_and_answer_late(path, 1200)
        self.assertIn("did not answer within", str(cm.exception.message))
        # The child escaped the worker's process group and answers into the old socket while these run.
        got = self.answers_of_later_clients(s, seconds=2)
        self.assert_nobody_got_another_answer(got)


def _kill_quietly(path):
    try:
        with open(path) as f:
            os.kill(int(f.read()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


class DegradedLogs(HostileTest):
    def echo_with_access_log(self, path):
        return self.server(echo_config(f"access_log: {path}"))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a small tmpfs")
    def test_a_full_disk_is_counted_and_reported_not_silent(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="bertd-full-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], check=True)
        self.addCleanup(lambda: (subprocess.run(["umount", "-l", d]), os.rmdir(d)))
        s = self.echo_with_access_log(os.path.join(d, "access.log"))
        svc = s.service()
        for i in range(1500):  # about 100 bytes a line: well past 64 KiB
            self.assertEqual(svc.call.echo.echo(b"x" * 20), b"x" * 20)
        lost = int(wait_until(lambda: int(s.stats()["access_log.lost"]) or None, what="lost lines in the stats"))
        self.assertGreater(lost, 100)
        reported = s.log().count("lines not written whole (No space left on device)")
        self.assertGreaterEqual(reported, 1)
        self.assertLessEqual(reported, 4, "one line per period per acceptor, not one per lost line")
        print(f"\n    full disk: {lost} lines lost and counted, {reported} error-log lines", end=" ")

    def test_a_deleted_log_directory_is_reported(self):
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="bertd-logdir-")
        self.addCleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        s = self.echo_with_access_log(os.path.join(d, "access.log"))
        self.assertEqual(s.service().call.echo.echo(b"a"), b"a")
        shutil.rmtree(d)
        self.assertEqual(s.service().call.echo.echo(b"b"), b"b")
        wait_until(lambda: "cannot open it (No such file or directory)" in s.log(), timeout=3,
                   what="the deleted directory in the error log")
        self.assertEqual(s.service().call.echo.echo(b"c"), b"c")


def internal_sockets(master):
    """The abstract unix socket names of the server whose master is `master`, from /proc/net/unix
    (which every local user can read)."""
    names = set()
    with open("/proc/net/unix") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 8 else ""
            if path.startswith(f"@bertd.{master}."):
                names.add(path[1:])
    return names


# What the impostor runs, as nobody: a small program of its own, given a task in JSON.
IMPOSTOR = r"""
import json, socket, struct, sys, time
task = json.loads(sys.argv[1])
out = {}

def abstract(name):
    return "\0" + name

if task["do"] == "squat":
    ok = 0
    print("ready", flush=True)
    deadline = time.monotonic() + task["seconds"]
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(abstract(task["name"]))
            ok += 1
        except OSError:
            pass
        s.close()
    out = {"bound": ok, "tries": tries}
elif task["do"] == "join_listen_group":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(("127.0.0.1", task["port"]))
        s.listen(8)
        out["joined"] = True
    except OSError as e:
        out["joined"] = False
        out["error"] = e.errno
elif task["do"] == "talk":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(abstract(task["name"]))
    got = b""
    try:
        s.sendall(bytes.fromhex(task["send"]))
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError as e:
        out["error"] = type(e).__name__
    out["got"] = got.hex()
elif task["do"] == "hand_over":
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    d.connect(abstract(task["name"]))  # send_fds() takes no address
    pairs = [socket.socketpair() for _ in range(task["count"])]
    socket.send_fds(d, [b"c"], [a.fileno() for a, b in pairs])
    for a, b in pairs:
        a.close()
    answered = 0
    request = bytes.fromhex(task["request"])
    for a, b in pairs:
        b.settimeout(2)
        try:
            b.sendall(request)
            if b.recv(65536):
                answered += 1
        except OSError:
            pass
    out = {"answered": answered}
print(json.dumps(out))
"""


def impostor(task):
    """Starts the impostor as the user nobody (setpriv, as root)."""
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", IMPOSTOR,
           json.dumps(task)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result_of(p, timeout=15):
    """What the impostor printed last, once it is done."""
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        p.kill()
    if p.returncode != 0:
        raise AssertionError(f"the impostor failed: {err}")
    return json.loads(out.strip().splitlines()[-1])


def as_nobody(task, timeout=15):
    return result_of(impostor(task), timeout)


def link_frame(kind, tag, body):
    """A message of the acceptor/link protocol (src/erl/proto.h)."""
    return struct.pack(">IBQ", 1 + 8 + len(body), kind, tag) + body


@unittest.skipUnless(os.geteuid() == 0, "needs root to run the impostor as another user (setpriv)")
class LocalUsers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ebin = compile_erlang([os.path.join(ROOT, "tests", "erlang", "nat.erl")])
        cls.server = Server(f"""
            listen: 127.0.0.1
            acceptors: 2
            limits: {{max_connections: 5}}
            modules:
              - name: nat
                type: native
                codepaths: [{ebin}]
              - name: echo
                command: {ECHO}
            """, args=["--name", unique_name("hostile"), "--cookie", test_cookie()])
        cls.server.start(timeout=20)
        try:
            wait_until(lambda: cls._native_ok(cls.server), timeout=20, what="native calls to work")
        except Exception:
            cls.server.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    @staticmethod
    def _native_ok(s):
        try:
            return bertd.Service("127.0.0.1", s.port, timeout=5).call.nat.add(1, 2) == 3
        except bertd.BertdError:
            return False

    # Each acceptor has a listen socket of its own on the port (SO_REUSEPORT); the kernel lets
    # only sockets of the same user into that group, so another user gets no share of the
    # clients. (A process of bertd's own user could join: bertd(8) SECURITY.)
    def test_another_user_cannot_join_the_listen_group_and_take_clients(self):
        got = as_nobody({"do": "join_listen_group", "port": self.server.port})
        self.assertEqual(got, {"joined": False, "error": errno.EADDRINUSE})
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port, timeout=5).call.echo.echo(b"x"), b"x")

    def names(self):
        names = internal_sockets(self.server.proc.pid)
        self.assertTrue(any(n.endswith(".link") for n in names), f"no link socket among {names}")
        return names

    def name_ending(self, suffix):
        return next(n for n in self.names() if n.endswith(suffix))

    def test_another_local_user_cannot_impersonate_the_erlang_link(self):
        s = self.server
        link = self.name_ending(".link")
        before = link_pid(s)
        # It cannot take the link's name, not even while the link restarts.
        squatter = impostor({"do": "squat", "name": link, "seconds": 1.5})
        self.assertEqual(squatter.stdout.readline().strip(), "ready")
        os.kill(before, signal.SIGKILL)
        squat = result_of(squatter)
        self.assertEqual(squat["bound"], 0, f"the impostor bound the link's name while it restarted: {squat}")
        self.assertGreater(squat["tries"], 100)
        wait_until(lambda: link_pid(s) not in (None, before), timeout=5, what="the link to come back")
        wait_until(lambda: self._native_ok(s), timeout=10, what="native calls after the link restarted")
        time.sleep(1)
        # The real link came back once and stays: it never loops because of the impostor.
        self.assertEqual(s.log().count("the Erlang link killed by signal"), 1)
        self.assertEqual(s.log().count("the Erlang link exited"), 0, s.log())
        # It cannot pass for an acceptor: the link closes on it, having answered nothing.
        call = bertd.encode((bertd.Atom("call"), bertd.Atom("nat"), bertd.Atom("add"), [1, 2]))
        hello = link_frame(1, 0, struct.pack(">QI", 1, 0))
        out = as_nobody({"do": "talk", "name": link, "send": (hello + link_frame(2, 7, b"\x00" + call)).hex()})
        self.assertEqual(out["got"], "", f"the link answered an impostor: {out}")
        self.assertIn("refused a connection to the link's acceptor socket", s.log())
        self.assertIn("(uid 65534)", s.log())
        # Nor for a handler worker calling Erlang.
        rpc = bertd.encode((bertd.Atom("rpc"), bertd.Atom("x@127.0.0.1"), bertd.Atom("erlang"),
                            bertd.Atom("node"), []))
        out = as_nobody({"do": "talk", "name": self.name_ending(".erlang"),
                         "send": (struct.pack(">I", len(rpc)) + rpc).hex()})
        self.assertEqual(out["got"], "", f"the link served an impostor's erlang_rpc: {out}")
        self.assertIn("refused a connection to the link's handler socket", s.log())
        self.assertTrue(self._native_ok(s))

    def test_another_local_user_cannot_hand_connections_to_bertd(self):
        s = self.server
        handover = next(n for n in self.names() if ".handover" in n)
        request = bertd.encode_berp((bertd.Atom("call"), bertd.Atom("echo"), bertd.Atom("echo"), [b"x"]))
        out = as_nobody({"do": "hand_over", "name": handover, "count": 50, "request": request.hex()})
        self.assertEqual(out["answered"], 0, f"bertd served connections an impostor handed it: {out}")
        self.assertIn("refused 50 connections handed over by pid", s.log())
        self.assertEqual(bertd.Service("127.0.0.1", s.port, timeout=5).call.echo.echo(b"ok"), b"ok")


if __name__ == "__main__":
    unittest.main()
