"""test_server.py: the server issue's behaviours against real bertd processes and real handlers.

Every test starts its own bertd on a free loopback port (harness.Server) and stops it in a cleanup,
so a failing test leaves nothing running.
"""
import os
import socket
import struct
import subprocess
import threading
import time
import unittest

import harness
from harness import Server, py_handler, read_frame, ruby_handler, run_bertd, wait_until

import bertd
from bertd import Atom


def ext_config(count=2, extra="", module_extra=""):
    return f"""
        listen: 127.0.0.1
        acceptors: 2
        {extra}
        modules:
          - name: ext
            command: {py_handler()}
            count: {count}
            {module_extra}
        """


class ServerTest(unittest.TestCase):
    def server(self, config, **kw):
        s = Server(config, **kw)
        self.addCleanup(s.stop)
        return s.start()

    def tmp(self, name):
        d = self.enterContext(_TempDir())
        return os.path.join(d, name)


class _TempDir:
    def __enter__(self):
        import tempfile
        self.path = tempfile.mkdtemp(prefix="bertd-t-")
        return self.path

    def __exit__(self, *exc):
        import shutil
        shutil.rmtree(self.path, ignore_errors=True)


class Calls(ServerTest):
    def test_call_answers_the_handlers_reply(self):
        s = self.server(ext_config())
        self.assertEqual(s.service().call.ext.add(1, 2), 3)
        self.assertEqual(s.service().call.ext.echo([Atom("a"), (1, 2.5), b"\x00bin"]), [Atom("a"), (1, 2.5), b"\x00bin"])

    def test_cast_answers_noreply_at_once(self):
        s = self.server(ext_config(count=1))
        t0 = time.monotonic()
        self.assertIsNone(s.service().cast.ext.record("cast", 1500))
        self.assertLess(time.monotonic() - t0, 0.5, "a cast must not wait for the work")
        # The one worker is still busy with the cast; the call waits for it, then sees its work.
        t1 = time.monotonic()
        self.assertEqual(s.service().call.ext.order(), [b"cast"])
        self.assertGreater(time.monotonic() - t1, 0.7, "the cast's work was still running on the worker")

    def test_a_cast_to_a_busy_module_answers_noreply_when_it_is_queued(self):
        s = self.server(ext_config(count=1))
        busy = threading.Thread(target=lambda: s.service().call.ext.record("call", 1500), daemon=True)
        busy.start()
        wait_until(lambda: int(s.stats()["workers.idle.ext"]) == 0, what="the one worker to be busy")
        t0 = time.monotonic()
        self.assertIsNone(s.service().cast.ext.record("queued cast"))
        self.assertLess(time.monotonic() - t0, 0.5, "a queued cast waited for a worker before its {noreply}")
        busy.join(5)
        # It still ran, after the call that held the worker.
        self.assertEqual(wait_until(lambda: s.service().call.ext.order() if len(s.service().call.ext.order()) == 2
                                    else None, what="the queued cast to run"), [b"call", b"queued cast"])

    def test_unknown_module_is_a_server_error(self):
        s = self.server(ext_config())
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.failboat.mcfail()
        self.assertEqual(cm.exception.code, 1)
        self.assertEqual(str(cm.exception.message), "No such module 'failboat'")

    def test_unknown_function_is_a_server_error(self):
        s = self.server(ext_config())
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.mcfail()
        self.assertEqual(cm.exception.code, 2)
        self.assertEqual(str(cm.exception.message), "No such function 'ext:mcfail'")

    def test_handler_exception_is_a_user_error(self):
        s = self.server(ext_config())
        with self.assertRaises(bertd.UserError) as cm:
            s.service().call.ext.fail("it broke")
        self.assertEqual(cm.exception.klass, "RuntimeError")
        self.assertEqual(cm.exception.message, "it broke")
        self.assertTrue(any("fail" in str(line) for line in cm.exception.backtrace))

    def test_persistent_connection_serves_many_requests_in_order(self):
        s = self.server(ext_config())
        before = int(s.settled_stats()["connections.total"])
        svc = s.service(persistent=True)
        for i in range(50):
            self.assertEqual(svc.call.ext.add(i, 1), i + 1)
        svc.close()
        # 50 calls, one connection (plus the one stats() used).
        self.assertEqual(int(s.stats()["connections.total"]) - before, 2)

    def test_pipelined_requests_are_answered_in_order(self):
        s = self.server(ext_config())
        c = s.connection()
        reqs = [(Atom("call"), Atom("ext"), Atom("slow"), [300]),
                (Atom("call"), Atom("ext"), Atom("add"), [2, 2]),
                (Atom("call"), Atom("ext"), Atom("echo"), [Atom("last")])]
        c.send_raw(b"".join(bertd.encode_berp(r) for r in reqs))
        answers = [c.read() for _ in reqs]
        self.assertEqual(answers, [(Atom("reply"), 300), (Atom("reply"), 4), (Atom("reply"), Atom("last"))])
        c.close()

    def test_one_connection_per_request_clients_work(self):
        s = self.server(ext_config())
        svc = s.service()  # the bertrpc way: connect, request, read, close
        for i in range(100):
            self.assertEqual(svc.call.ext.add(i, i), 2 * i)
        st = s.stats()
        self.assertGreaterEqual(int(st["connections.completed"]), 100)

    def test_eight_mib_results_are_relayed(self):
        s = self.server(ext_config())
        n = 8 << 20
        self.assertEqual(s.service(timeout=30).call.ext.big(n), b"x" * n)
        self.assertEqual(s.service(timeout=30).call.ext.size(b"y" * n), n)

    def test_ernie_handler_in_ruby_runs_unchanged(self):
        s = self.server(f"""
            [{{module, ext}},
             {{type, external}},
             {{command, "{ruby_handler()}"}},
             {{count, 2}}].
            """, suffix=".cfg")
        self.assertEqual(s.service().call.ext.add(20, 22), 42)
        with self.assertRaises(bertd.UserError):
            s.service().call.ext.fail("boom")


class Priority(ServerTest):
    def served_order(self, low_info):
        """With the one worker busy, a low request (marked by `low_info`) and then a high one
        queue; returns the order the worker served them in."""
        s = self.server(ext_config(count=1))
        busy = s.connection()
        busy.send((Atom("call"), Atom("ext"), Atom("record"), [b"first", 600]))
        time.sleep(0.2)
        low = s.connection()
        low.send(low_info)
        low.send((Atom("call"), Atom("ext"), Atom("record"), [b"low"]))
        wait_until(lambda: s.stats()["queue.low"] == "1", what="the low request to queue")
        high = s.connection()
        high.send((Atom("call"), Atom("ext"), Atom("record"), [b"high"]))
        wait_until(lambda: s.stats()["queue.high"] == "1", what="the high request to queue")
        for c in (busy, low, high):
            self.assertEqual(c.read()[0], Atom("reply"))
            c.close()
        return s.service().call.ext.order()

    def test_high_priority_is_served_before_low(self):
        order = self.served_order((Atom("info"), Atom("priority"), [Atom("low")]))
        self.assertEqual(order, [b"first", b"high", b"low"])

    def test_ernies_bare_atom_priority_form_is_accepted(self):
        # As Ernie's README writes it: the option without a list around it.
        order = self.served_order((Atom("info"), Atom("priority"), Atom("low")))
        self.assertEqual(order, [b"first", b"high", b"low"])

    def test_priority_applies_to_the_next_request_only(self):
        s = self.server(ext_config(count=1))
        busy = s.connection()
        busy.send((Atom("call"), Atom("ext"), Atom("record"), [b"first", 600]))
        time.sleep(0.2)
        c = s.connection()
        c.send((Atom("info"), Atom("priority"), [Atom("low")]))
        c.send((Atom("call"), Atom("ext"), Atom("record"), [b"low"]))
        wait_until(lambda: s.stats()["queue.low"] == "1", what="the low request to queue")
        self.assertEqual(busy.read()[0], Atom("reply"))
        self.assertEqual(c.read()[0], Atom("reply"))
        # The next request on the same connection, with no info, is high again.
        busy.send((Atom("call"), Atom("ext"), Atom("record"), [b"second", 600]))
        time.sleep(0.2)
        c.send((Atom("call"), Atom("ext"), Atom("record"), [b"default"]))
        wait_until(lambda: s.stats()["queue.high"] == "1", what="the default request to queue as high")
        self.assertEqual(busy.read()[0], Atom("reply"))
        self.assertEqual(c.read()[0], Atom("reply"))


class Faults(ServerTest):
    def test_worker_killed_mid_request_fails_only_that_request(self):
        s = self.server(ext_config(count=2))
        mark = self.tmp("pid")
        result = {}

        def victim():
            try:
                s.service().call.ext.mark_slow(mark, 5000)
                result["victim"] = "answered"
            except bertd.ServerError as e:
                result["victim"] = e
        t = threading.Thread(target=victim)
        t.start()
        pid = int(wait_until(lambda: os.path.exists(mark) and open(mark).read(), what="the victim to start"))
        failures = []
        stop = threading.Event()

        def load():
            svc = s.service(persistent=True)
            i = 0
            while not stop.is_set():
                try:
                    if svc.call.ext.add(i, 1) != i + 1:
                        failures.append(("wrong", i))
                except Exception as e:  # noqa: BLE001 - any failure counts
                    failures.append(e)
                i += 1
            svc.close()
        loaders = [threading.Thread(target=load) for _ in range(3)]
        for th in loaders:
            th.start()
        time.sleep(0.2)
        os.kill(pid, 9)
        t.join(10)
        time.sleep(0.5)
        stop.set()
        for th in loaders:
            th.join(10)
        self.assertIsInstance(result.get("victim"), bertd.ServerError)
        self.assertIn("exited while serving", str(result["victim"].message))
        self.assertEqual(failures, [])
        # The slot came back with a fresh worker.
        wait_until(lambda: s.stats()["workers.idle.ext"] == "2", what="the worker to be replaced")
        self.assertEqual(s.stats()["workers.restarts.ext"], "1")

    def test_replacement_worker_starts_clean(self):
        s = self.server(ext_config(count=1))
        mark = self.tmp("pid")
        c = s.connection()
        c.send((Atom("call"), Atom("ext"), Atom("mark_half"), [mark]))
        pid = int(wait_until(lambda: os.path.exists(mark) and open(mark).read(), what="half an answer"))
        os.kill(pid, 9)
        answer = c.read()
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][0], Atom("server"))
        # The half-written answer must not leak into the next requests on the same slot.
        for i in range(20):
            self.assertEqual(s.service().call.ext.add(i, 100), i + 100)

    def test_worker_that_exits_on_its_own_is_replaced(self):
        s = self.server(ext_config(count=1))
        with self.assertRaises(bertd.ServerError):
            s.service().call.ext.die()
        self.assertEqual(s.service().call.ext.add(1, 1), 2)

    def test_worker_that_writes_garbage_is_replaced(self):
        s = self.server(ext_config(count=1))
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.garbage()
        self.assertIn("not a BERT term", str(cm.exception.message))
        self.assertEqual(s.service().call.ext.add(2, 3), 5)

    def test_hanging_worker_times_out_and_is_replaced(self):
        s = self.server(ext_config(count=1, module_extra="timeout: 500ms"))
        t0 = time.monotonic()
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.slow(10000)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertIn("timeout", str(cm.exception.message))
        self.assertEqual(s.service().call.ext.add(2, 2), 4)

    def test_acceptor_killed_is_restarted_and_others_keep_serving(self):
        s = self.server(ext_config())
        acceptors = s.acceptor_pids()
        self.assertEqual(len(acceptors), 2)
        os.kill(acceptors[0], 9)
        for i in range(30):
            self.assertEqual(s.service().call.ext.add(i, 0), i)
        wait_until(lambda: len(s.acceptor_pids()) == 2 and acceptors[0] not in s.acceptor_pids(),
                   timeout=2, what="the acceptor to be restarted")
        self.assertEqual(s.stats()["acceptors.restarts"], "1")

    def test_crashing_handler_restarts_with_back_off(self):
        s = Server(f"""
            listen: 127.0.0.1
            modules:
              - name: ext
                command: {py_handler()}
                count: 1
              - name: broken
                command: sh -c 'exit 3'
                count: 1
            """, wait_workers=False)
        self.addCleanup(s.stop)
        s.start()
        time.sleep(2)
        restarts = int(s.stats()["workers.restarts.broken"])
        self.assertGreater(restarts, 2)
        self.assertLess(restarts, 15, "a crashing handler must be restarted with back-off")
        self.assertEqual(s.service().call.ext.add(1, 2), 3)


class BadInput(ServerTest):
    def raw(self, s, data, shutdown=False):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        return sock

    def read_answer(self, sock):
        return read_frame(sock, strict=True)

    def assert_protocol_error(self, answer, code):
        self.assertEqual(answer[0], Atom("error"), answer)
        self.assertEqual(answer[1][0], Atom("protocol"))
        self.assertEqual(answer[1][1], code)

    def test_undecodable_term_is_a_protocol_error_and_the_connection_goes_on(self):
        s = self.server(ext_config())
        sock = self.raw(s, struct.pack(">I", 7) + b"\x83\x68\x09garb")
        self.assert_protocol_error(self.read_answer(sock), 2)
        sock.sendall(bertd.encode_berp((Atom("call"), Atom("ext"), Atom("add"), [1, 1])))
        self.assertEqual(self.read_answer(sock), (Atom("reply"), 2))

    def test_term_that_is_not_a_request_is_a_protocol_error(self):
        s = self.server(ext_config())
        sock = self.raw(s, bertd.encode_berp((Atom("hello"), 1)))
        self.assert_protocol_error(self.read_answer(sock), 0)

    def test_huge_length_header_is_refused_and_closed(self):
        s = self.server(ext_config())
        sock = self.raw(s, b"\xff\xff\xff\xff" + b"x" * 100)
        self.assert_protocol_error(self.read_answer(sock), 1)
        self.assertEqual(sock.recv(1), b"")  # closed: the stream cannot be resynchronised
        self.assertEqual(s.service().call.ext.add(1, 1), 2)

    def test_frame_over_the_configured_limit_is_refused(self):
        s = self.server(ext_config(extra="limits: {max_frame: 1KiB}"))
        with self.assertRaises(bertd.ProtocolError):
            s.service().call.ext.size(b"z" * 4096)
        self.assertEqual(s.service().call.ext.size(b"z" * 100), 100)

    def test_truncated_frame_then_half_close_gets_an_error(self):
        s = self.server(ext_config())
        sock = self.raw(s, struct.pack(">I", 50) + b"\x83\x68", shutdown=True)
        self.assert_protocol_error(self.read_answer(sock), 2)
        self.assertEqual(sock.recv(1), b"")

    def test_request_then_half_close_is_still_answered(self):
        s = self.server(ext_config())
        sock = self.raw(s, bertd.encode_berp((Atom("call"), Atom("ext"), Atom("add"), [3, 4])), shutdown=True)
        self.assertEqual(self.read_answer(sock), (Atom("reply"), 7))
        self.assertEqual(sock.recv(1), b"")

    def test_a_malformed_info_is_a_protocol_error_in_place_of_the_request_after_it(self):
        # BERT-RPC 1.0: "a bad info packet yields an error answer after the request that follows it".
        s = self.server(ext_config())
        payload = b"\x83\x68\x03\x64\x00\x04info\x64\x00\x08priority\x6d\x00\x00\x00\xff"
        sock = self.raw(s, struct.pack(">I", len(payload)) + payload)
        sock.sendall(bertd.encode_berp((Atom("call"), Atom("ext"), Atom("add"), [1, 2])))
        self.assert_protocol_error(self.read_answer(sock), 2)
        sock.sendall(bertd.encode_berp((Atom("call"), Atom("ext"), Atom("add"), [1, 2])))
        self.assertEqual(self.read_answer(sock), (Atom("reply"), 3))

    def test_unknown_info_is_ignored(self):
        s = self.server(ext_config())
        sock = self.raw(s, bertd.encode_berp((Atom("info"), Atom("frobnicate"), []))
                        + bertd.encode_berp((Atom("call"), Atom("ext"), Atom("add"), [5, 5])))
        self.assertEqual(self.read_answer(sock), (Atom("reply"), 10))


class Limits(ServerTest):
    def test_connections_over_the_limit_get_an_error(self):
        s = self.server(ext_config(extra="limits: {max_connections: 3}"))
        # Connections the harness used are counted until bertd sees them close.
        wait_until(lambda: s.stats()["connections.active"] == "1", what="earlier connections to close")
        time.sleep(0.2)  # and the stats call's own connection
        held = [s.connection() for _ in range(3)]
        for c in held:  # make sure all three are accepted before the fourth
            c.send((Atom("call"), Atom("ext"), Atom("add"), [1, 1]))
            self.assertEqual(c.read(), (Atom("reply"), 2))
        extra = s.connection()
        answer = extra.read()
        self.assertEqual(answer[0], Atom("error"))
        self.assertIn(b"too many connections", answer[1][3])
        held[0].close()
        wait_until(lambda: _call_ok(s), what="a free connection slot")

    def test_idle_connections_are_closed(self):
        s = self.server(ext_config(extra="limits: {idle_timeout: 1s}"))
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        t0 = time.monotonic()
        self.assertEqual(sock.recv(1), b"")
        self.assertLess(time.monotonic() - t0, 3.5)

    def test_queue_over_the_limit_is_refused(self):
        s = self.server(ext_config(count=1, extra="limits: {max_queue: 1}"))
        busy = s.connection()
        busy.send((Atom("call"), Atom("ext"), Atom("slow"), [800]))
        time.sleep(0.2)
        waiting = s.connection()
        waiting.send((Atom("call"), Atom("ext"), Atom("add"), [1, 1]))
        wait_until(lambda: s.stats()["queue.high"] == "1", what="one queued request")
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.add(2, 2)
        self.assertIn("is full", str(cm.exception.message))
        self.assertEqual(waiting.read(), (Atom("reply"), 2))


def _call_ok(s):
    try:
        return s.service(timeout=2).call.ext.add(1, 1) == 2
    except bertd.BertdError:
        return False


class Config(ServerTest):
    def test_invalid_config_names_file_and_line_and_starts_nothing(self):
        s = Server("port: 8000\nmodules:\n  - name: ext\n    command: x\n    count: many\n")
        code, out, err = run_bertd(["-c", s.config_path])
        self.assertNotEqual(code, 0)
        self.assertIn(s.config_path + ":5:", err)
        self.assertIn("count", err)

    def test_missing_config_file_is_reported(self):
        code, out, err = run_bertd(["-c", "/nonexistent/bertd.yaml"])
        self.assertNotEqual(code, 0)
        self.assertIn("/nonexistent/bertd.yaml", err)

    def test_check_config_flag(self):
        s = Server(ext_config())
        code, out, err = run_bertd(["-t", "-c", s.config_path])
        self.assertEqual(code, 0, err)
        self.assertIn("ok", out)

    def test_wrong_options_print_usage(self):
        code, out, err = run_bertd(["--bogus"])
        self.assertNotEqual(code, 0)
        self.assertIn("Usage: bertd", err)

    def test_port_in_use_is_reported(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.addCleanup(blocker.close)
        s = Server(ext_config())
        code, out, err = run_bertd(["-c", s.config_path, "-p", str(blocker.getsockname()[1])])
        self.assertNotEqual(code, 0)
        self.assertIn("cannot listen", err)

    def test_example_configs_are_valid(self):
        for name in ("bertd.yaml", "ernie.cfg"):
            code, out, err = run_bertd(["-t", "-c", os.path.join(harness.ROOT, "conf", name)])
            self.assertEqual(code, 0, err)


class Stats(ServerTest):
    def test_stats_count_the_traffic_sent(self):
        s = self.server(ext_config())
        base = s.settled_stats()
        for i in range(7):
            s.service().call.ext.add(i, i)
        with self.assertRaises(bertd.UserError):
            s.service().call.ext.fail("x")
        with self.assertRaises(bertd.ServerError):
            s.service().call.nomod.f()
        st = s.stats()
        self.assertEqual(int(st["requests.ext"]) - int(base["requests.ext"]), 8)
        self.assertEqual(int(st["errors.user.ext"]) - int(base["errors.user.ext"]), 1)
        self.assertEqual(int(st["errors.unknown_module"]) - int(base["errors.unknown_module"]), 1)
        # 9 calls plus this stats call's connection, each one connection.
        self.assertEqual(int(st["connections.total"]) - int(base["connections.total"]), 10)
        for key in ("connections.completed", "workers.idle.ext", "queue.high", "queue.low", "latency.p99_us.ext",
                    "uptime", "generation"):
            self.assertIn(key, st)
        self.assertEqual(st["workers.idle.ext"], "2")

    def test_stats_command_prints_the_keys(self):
        s = self.server(ext_config())
        code, out, err = run_bertd(["stats", "-p", str(s.port)])
        self.assertEqual(code, 0, err)
        self.assertIn("connections.total=", out)
        self.assertIn("workers.idle.ext=2", out)


if __name__ == "__main__":
    unittest.main()
