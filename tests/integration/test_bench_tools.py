"""test_bench_tools.py: the C++ handler library (through the echo and cpp_errors handlers on a
socketpair as fds 3/4) and the benchmark tools (relay + loadgen on a loopback port, and the /metrics
scraper of make bench's metrics row against a real bertd).
Every process started here is stopped in tearDown, pass or fail.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from harness import BUILD, ECHO, Server, echo_config, free_port, read_frame

ERRS = os.path.join(BUILD, "tests/handlers/cpp_errors")
RELAY = os.path.join(BUILD, "tests/bench/relay")
AB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "ab.py")
BERTD = os.path.join(BUILD, "bertd")
LOADGEN = os.path.join(BUILD, "tests/bench/loadgen")

import scrapes  # noqa: E402  (tests/bench/scrapes.py, on the path harness set: make bench's /metrics scraper)


# --- just enough BERT to write these tests' requests (answers: harness.read_frame) ------
class Atom(str):
    pass


def enc(t):
    if isinstance(t, Atom):
        b = t.encode()
        return bytes([100]) + struct.pack(">H", len(b)) + b
    if isinstance(t, bool):
        raise TypeError("no booleans here")
    if isinstance(t, int):
        if 0 <= t < 256:
            return bytes([97, t])
        return bytes([98]) + struct.pack(">i", t)
    if isinstance(t, bytes):
        return bytes([109]) + struct.pack(">I", len(t)) + t
    if isinstance(t, tuple):
        return bytes([104, len(t)]) + b"".join(enc(x) for x in t)
    if isinstance(t, list):
        if not t:
            return bytes([106])
        return bytes([108]) + struct.pack(">I", len(t)) + b"".join(enc(x) for x in t) + bytes([106])
    raise TypeError(type(t))


def encode(t):
    return bytes([131]) + enc(t)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def call(m, f, args):
    return frame(encode((Atom("call"), Atom(m), Atom(f), args)))


def cast(m, f, args):
    return frame(encode((Atom("cast"), Atom(m), Atom(f), args)))


def server_error(code, detail):
    return (Atom("error"), (Atom("server"), code, b"ServerError", detail.encode(), []))


# --- the handler library -----------------------------------------------------------------
class HandlerProcess:
    """A handler with one end of a socketpair as its fds 3 and 4, as bertd and Ernie start them."""

    def __init__(self, exe):
        self.sock, theirs = socket.socketpair()
        fd = theirs.fileno()

        def on_fds_3_and_4():
            os.dup2(fd, 3)
            os.dup2(fd, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        # Not pass_fds=(3, 4): that needs fds 3 and 4 open in this process before the fork (EBADF
        # otherwise). Python's own fds are not inheritable, so nothing else leaks.
        self.proc = subprocess.Popen([exe], close_fds=False, preexec_fn=on_fds_3_and_4,
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        theirs.close()
        self.sock.settimeout(5)

    def ask(self, data):
        self.sock.sendall(data)
        return read_frame(self.sock, strict=True)

    def close(self):
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


class HandlerLibraryTest(unittest.TestCase):
    def setUp(self):
        self.h = HandlerProcess(ECHO)

    def tearDown(self):
        self.h.close()

    def test_call_answers_reply_with_the_result(self):
        self.assertEqual(self.h.ask(call("echo", "echo", [b"hello"])), (Atom("reply"), b"hello"))
        term = (Atom("ok"), [1, 300, -5, b"x" * 1000, (Atom("a"),)], [])
        self.assertEqual(self.h.ask(call("echo", "echo", [term])), (Atom("reply"), term))

    def test_large_argument_survives_partial_reads(self):
        big = os.urandom(3 << 20)  # more than the socketpair buffer, so reads come in pieces
        self.assertEqual(self.h.ask(call("echo", "echo", [big])), (Atom("reply"), big))

    def test_request_arriving_byte_by_byte_is_answered(self):
        for b in call("echo", "echo", [b"slow"]):
            self.h.sock.send(bytes([b]))
            time.sleep(0.001)
        self.assertEqual(read_frame(self.h.sock, strict=True), (Atom("reply"), b"slow"))

    def test_two_requests_in_one_write_get_two_answers_in_order(self):
        self.h.sock.sendall(call("echo", "echo", [b"one"]) + call("echo", "echo", [b"two"]))
        self.assertEqual(read_frame(self.h.sock, strict=True), (Atom("reply"), b"one"))
        self.assertEqual(read_frame(self.h.sock, strict=True), (Atom("reply"), b"two"))

    def test_cast_runs_then_answers_noreply(self):
        t0 = time.monotonic()
        self.assertEqual(self.h.ask(cast("echo", "sleep", [100])), (Atom("noreply"),))
        self.assertGreaterEqual(time.monotonic() - t0, 0.09, "the cast's function ran before the answer")

    def test_info_gets_no_answer(self):
        info = frame(encode((Atom("info"), Atom("priority"), [Atom("low")])))
        self.assertEqual(self.h.ask(info + call("echo", "echo", [b"after"])), (Atom("reply"), b"after"))

    def test_unknown_module_is_server_error_1(self):
        self.assertEqual(self.h.ask(call("failboat", "echo", [b"x"])),
                         server_error(1, "No such module 'failboat'"))

    def test_unknown_function_is_server_error_2(self):
        self.assertEqual(self.h.ask(call("echo", "mcfail", [])), server_error(2, "No such function 'echo:mcfail'"))

    def test_wrong_arity_is_server_error_2(self):
        self.assertEqual(self.h.ask(call("echo", "echo", [b"a", b"b"])),
                         server_error(2, "No such function 'echo:echo'"))

    def test_user_error_carries_class_and_message(self):
        answer = self.h.ask(call("echo", "sleep", [b"soon"]))
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][:3], (Atom("user"), 0, b"ArgumentError"))
        self.assertIn(b"milliseconds", answer[1][3])

    def test_undecodable_request_is_protocol_error_and_handler_goes_on(self):
        answer = self.h.ask(frame(bytes([131, 104, 4, 100, 0, 200])))
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][:3], (Atom("protocol"), 2, b"ProtocolError"))
        answer = self.h.ask(frame(encode((Atom("hello"), 1))))
        self.assertEqual(answer[1][:3], (Atom("protocol"), 0, b"ProtocolError"))
        self.assertEqual(self.h.ask(call("echo", "echo", [b"still here"])), (Atom("reply"), b"still here"))

    def test_exits_0_on_eof(self):
        self.assertEqual(self.h.ask(call("echo", "echo", [1])), (Atom("reply"), 1))
        self.h.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(self.h.proc.wait(timeout=5), 0)

    def test_exits_non_zero_when_cut_inside_a_frame(self):
        self.h.sock.sendall(call("echo", "echo", [b"cut"])[:10])
        self.h.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(self.h.proc.wait(timeout=5), 1)


class HandlerExceptionTest(unittest.TestCase):
    def setUp(self):
        self.h = HandlerProcess(ERRS)

    def tearDown(self):
        self.h.close()

    def user_error(self, f, args):
        answer = self.h.ask(call("errs", f, args))
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][0], Atom("user"))
        self.assertEqual(answer[1][4], [])
        return answer[1][2], answer[1][3]

    def test_std_exception_class_is_its_type_name(self):
        self.assertEqual(self.user_error("runtime", [b"it broke"]), (b"std::runtime_error", b"it broke"))

    def test_user_error_chooses_the_class(self):
        self.assertEqual(self.user_error("user", [b"NotFound", b"no such key"]), (b"NotFound", b"no such key"))

    def test_non_std_exception_is_still_an_answer(self):
        cls, _ = self.user_error("other", [])
        self.assertEqual(cls, b"UnknownError")

    def test_any_arity_function_gets_every_argument(self):
        self.assertEqual(self.h.ask(call("errs", "count", [])), (Atom("reply"), 0))
        self.assertEqual(self.h.ask(call("errs", "count", [1, 2, 3])), (Atom("reply"), 3))

    def test_failed_cast_still_answers_noreply(self):
        self.assertEqual(self.h.ask(cast("errs", "runtime", [b"x"])), (Atom("noreply"),))
        self.assertEqual(self.h.ask(call("errs", "count", [1])), (Atom("reply"), 1))


# --- relay and loadgen -----------------------------------------------------------------------
def loadgen(*args, timeout=30):
    p = subprocess.run([LOADGEN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p


class BenchToolsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.relay = subprocess.Popen([RELAY, "--port", "0", "--workers", "2", "--handler", ECHO],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            line = cls.relay.stdout.readline()  # "listening 127.0.0.1:PORT workers 2"
            cls.port = int(line.split()[1].rsplit(":", 1)[1])
        except Exception:
            cls.stop_relay()
            raise

    @classmethod
    def stop_relay(cls):
        if cls.relay.poll() is None:
            os.killpg(cls.relay.pid, signal.SIGKILL)
        cls.relay.wait()
        cls.relay.stdout.close()

    @classmethod
    def tearDownClass(cls):
        cls.stop_relay()

    def run_load(self, *extra):
        p = loadgen("--port", str(self.port), "--duration", "1", *extra)
        self.assertEqual(p.returncode, 0, p.stderr)
        import json
        return json.loads(p.stdout)

    def test_persistent_connections_get_answers_without_errors(self):
        r = self.run_load("--connections", "8", "--mode", "persistent")  # more clients than workers: queueing
        self.assertGreater(r["requests"], 0)
        self.assertEqual(r["errors"], 0)
        self.assertGreater(r["p99_us"], 0)
        self.assertLessEqual(r["p50_us"], r["p99_us"])

    def test_connection_per_request_gets_answers_without_errors(self):
        r = self.run_load("--connections", "4", "--mode", "connect")
        self.assertGreater(r["requests"], 0)
        self.assertEqual(r["errors"], 0)

    def test_large_payload_is_echoed_intact(self):
        r = self.run_load("--connections", "2", "--payload", "300000", "--max-requests", "50")
        self.assertGreaterEqual(r["requests"], 50)
        self.assertEqual(r["errors"], 0)

    def test_max_requests_bounds_the_run(self):
        r = self.run_load("--connections", "4", "--max-requests", "200", "--duration", "20")
        self.assertGreaterEqual(r["requests"], 200)
        self.assertLess(r["requests"], 204)
        self.assertLess(r["duration_s"], 10)

    def test_error_answers_are_counted(self):
        r = self.run_load("--connections", "2", "--function", "nope", "--max-requests", "20")
        self.assertEqual(r["requests"], 0)
        self.assertGreater(r["errors"], 0)

    def test_failures_are_counted_by_kind_and_described(self):
        r = self.run_load("--connections", "2", "--target", "echo:echo", "--target", "echo:nope",
                          "--log-failures", "2", "--series", "0.25")
        self.assertEqual(set(k for k, v in r["failures"].items() if v), {"server"})
        self.assertEqual(len(r["failure_log"]), 2)
        self.assertEqual(r["failure_log"][0]["target"], "echo:nope")
        self.assertIn("No such function 'echo:nope'", r["failure_log"][0]["detail"])
        self.assertGreater(r["targets"][0]["answered"], 0)
        self.assertEqual(r["targets"][1]["answered"], 0)
        self.assertEqual(len(r["series"]), 4)
        self.assertEqual(sum(r["series"]), r["requests"])

    def test_a_server_that_never_answers_is_a_timeout_not_a_hang(self):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the backlog; nobody ever reads them
        self.addCleanup(silent.close)
        p = loadgen("--port", str(silent.getsockname()[1]), "--duration", "1", "--connections", "2",
                    "--timeout", "0.3")
        self.assertEqual(p.returncode, 0, p.stderr)
        import json
        r = json.loads(p.stdout)
        self.assertEqual(r["requests"], 0)
        self.assertGreaterEqual(r["failures"]["timeout"], 2)
        self.assertLess(r["oldest_in_flight_ms"], 400)

    def test_loadgen_refuses_non_loopback_hosts(self):
        for host in ("10.0.0.1", "0.0.0.0", "192.168.1.1", "::", "2001:db8::1", "localhost.example"):
            p = loadgen("--host", host, "--port", str(self.port), "--duration", "1")
            self.assertEqual(p.returncode, 2, host)
            self.assertIn("refusing host", p.stderr)
            self.assertEqual(p.stdout, "")

    def test_relay_stops_its_workers_on_sigterm(self):
        relay = subprocess.Popen([RELAY, "--port", "0", "--workers", "2", "--handler", ECHO],
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            relay.stdout.readline()
            with open(f"/proc/{relay.pid}/task/{relay.pid}/children") as f:
                workers = [int(p) for p in f.read().split()]
            self.assertEqual(len(workers), 2)
            relay.send_signal(signal.SIGTERM)
            self.assertEqual(relay.wait(timeout=5), 0)
            for pid in workers:
                self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the relay")
        finally:
            if relay.poll() is None:
                os.killpg(relay.pid, signal.SIGKILL)
            relay.wait()
            relay.stdout.close()


class ScraperTest(unittest.TestCase):
    """tests/bench/scrapes.py's scraper, against a real bertd with a metrics listener."""

    @classmethod
    def setUpClass(cls):
        cls.mport = free_port()
        cls.server = Server(echo_config(f'metrics: {{listen: "127.0.0.1:{cls.mport}"}}', count=1, acceptors=None))
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_scrape_reads_the_whole_exposition_and_its_status(self):
        status, took, body = scrapes.scrape(self.mport)
        self.assertEqual(status, 200)
        self.assertGreater(took, 0)
        self.assertIn(b"bertd_requests_total", body)
        self.assertTrue(body.endswith(b"\n"), body[-80:])

    def test_a_paced_scraper_keeps_its_rate_and_the_latency_of_each_scrape(self):
        with scrapes.Scraper(self.mport, rate=10) as scraper:
            time.sleep(0.55)  # scrapes at 0, 0.1, ... 0.5 s: six at the most
        s = scraper.summary()
        self.assertEqual(set(s["counts"]), {"200"}, s["first_error"])
        self.assertGreaterEqual(s["scrapes"], 1)
        self.assertLessEqual(s["scrapes"], 7)
        self.assertEqual(len(s["latencies"]), s["scrapes"])
        self.assertTrue(all(x > 0 for x in s["latencies"]))

    def test_an_answer_that_is_not_the_exposition_is_counted_not_timed(self):
        with scrapes.Scraper(self.server.port, rate=20) as scraper:  # the BERT-RPC port: no HTTP there
            time.sleep(0.2)
        s = scraper.summary()
        self.assertGreaterEqual(s["scrapes"], 1)
        self.assertNotIn("200", s["counts"])
        self.assertEqual(s["latencies"], [])
        self.assertIsNotNone(s["first_error"])


class ABTest(unittest.TestCase):
    """tests/bench/ab.py: two real bertd servers, the same binary on both sides here."""

    def bertd_pids(self):
        out = set()
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and os.readlink(f"/proc/{name}/exe") == os.path.realpath(BERTD):
                    out.add(int(name))
            except OSError:
                pass
        return out

    def test_both_sides_are_measured_in_requests_and_server_cpu_and_stopped(self):
        already = self.bertd_pids()
        with tempfile.TemporaryDirectory(prefix="bertd-abtest-") as tmp:
            out = os.path.join(tmp, "ab.json")
            p = subprocess.run([sys.executable, AB, "--before", BERTD, "--after", BERTD, "--rounds", "2",
                                "--duration", "0.3", "--warmup", "0.1", "--cases", "persistent/2,connect/1",
                                "--acceptors-after", "1", "--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out) as f:
                results = json.load(f)
        self.assertEqual([c["case"] for c in results["cases"]], ["persistent/2", "connect/1"])
        self.assertEqual(results["acceptors"], ["2", "1"])
        self.assertIn("1 acceptors", p.stdout)
        for c in results["cases"]:
            for side in ("before", "after"):
                self.assertEqual(len(c[side]["runs"]), 2, c)
                self.assertGreater(c[side]["rps"], 0, c)
                self.assertGreater(c[side]["cpu_us"], 0, c)
                self.assertGreater(c[side]["p99_us"], 0, c)
                self.assertEqual(c[side]["errors"], 0, c)
            self.assertIsNotNone(c["cpu_ratio"])
        self.assertIn("server CPU/request", p.stdout)
        self.assertEqual(self.bertd_pids() - already, set(), "ab.py left a bertd running")

    def test_a_malformed_case_is_refused_before_anything_starts(self):
        p = subprocess.run([sys.executable, AB, "--before", BERTD, "--cases", "persistent/x"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bad case 'persistent/x'", p.stderr)

    def test_an_acceptor_count_that_is_not_one_is_refused(self):
        p = subprocess.run([sys.executable, AB, "--before", BERTD, "--acceptors-after", "2\nmodules: []"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("acceptors must be 1 to 256 or auto", p.stderr)

    def test_a_before_that_is_neither_a_binary_nor_a_revision_is_named(self):
        p = subprocess.run([sys.executable, AB, "--before", "no-such-revision"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("'no-such-revision' is neither a bertd binary nor a git revision", p.stderr)


if __name__ == "__main__":
    unittest.main()
