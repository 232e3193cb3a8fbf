"""test_cpp_client.py: the C++ client library (bertd/client.h) against a scripted server: answers and
each error type with its fields, info frames, timeouts, late answers never reused, persistent and
one-shot connections, broken answers, refused connections. tests/clients/cpp_client_check drives it.
"""
import os
import socket
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from fake_server import FakeServer, error, reply  # noqa: E402

from bertd import Atom  # noqa: E402

CHECK = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"), "tests", "clients", "cpp_client_check")


def call_of(name):
    return (Atom("call"), Atom("m"), Atom(name), [])


class CppClient(unittest.TestCase):
    def serve(self, answer):
        server = FakeServer(answer)
        self.addCleanup(server.close)
        return server

    def run_check(self, port, scenario):
        p = subprocess.run([CHECK, str(port), scenario], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.splitlines()

    def test_call_cast_and_raw_each_open_their_own_connection(self):
        def answer(conn, req, body):
            if req[0] == Atom("call"):
                return reply(sum(req[3]))
            if req[0] == Atom("cast"):
                return [("frame", (Atom("noreply"),))]
            return reply(Atom("raw"))
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "basic"), ["ok 3", "ok noreply", "ok raw", "closed"])
        self.assertEqual(s.frames, [[(Atom("call"), Atom("m"), Atom("add"), [1, 2])],
                                    [(Atom("cast"), Atom("m"), Atom("work"), [1])], [(Atom("x"),)]])
        self.assertEqual(s.raw[2], [b"\x83h\x01d\x00\x01x"], "request_raw sends the bytes as given")

    def test_each_error_type_is_its_own_exception_with_every_field(self):
        answers = {
            "protocol": error("protocol", 2, b"ProtocolError", b"bad"),
            "server": error("server", 1, b"ServerError", b"No such module 'm'"),
            "user": error("user", 0, b"RuntimeError", "boom \u2603".encode(), [b"a.rb:1", b"b.rb:2"]),
            "proxy": error("proxy", 3, b"ProxyError", b"down"),
            "other": error("weird", 9, b"C", b"D"),
            "old": [("frame", (Atom("error"), (Atom("user"), 0, b"old style")))],
            "badshape": [("frame", (Atom("error"), 42))],
        }
        s = self.serve(lambda conn, req, body: answers[str(req[2])])
        lines = self.run_check(s.port, "errors")
        self.assertEqual(lines[:6], [
            "ProtocolError type=protocol code=2 class=ProtocolError detail=bad trace=",
            "ServerError type=server code=1 class=ServerError detail=No such module 'm' trace=",
            "UserError type=user code=0 class=RuntimeError detail=boom \u2603 trace=a.rb:1|b.rb:2",
            "ProxyError type=proxy code=3 class=ProxyError detail=down trace=",
            "RemoteError type=weird code=9 class=C detail=D trace=",
            "UserError type=user code=0 class= detail=old style trace=",
        ])
        self.assertTrue(lines[6].startswith("InvalidAnswer ") and "malformed error answer" in lines[6], lines[6])
        self.assertEqual(lines[7], "connected", "error answers leave the stream in step")
        self.assertEqual(len(s.frames), 1, "a persistent client sends everything on one connection")

    def test_priority_and_info_frames_go_before_the_request(self):
        s = self.serve(lambda conn, req, body: reply(Atom("ok")))
        self.assertEqual(self.run_check(s.port, "priority"), ["ok ok"] * 3)
        info = Atom("info")
        self.assertEqual(s.frames, [
            [(info, Atom("priority"), [Atom("low")]), call_of("a")],
            [(info, Atom("priority"), [Atom("high")]), (info, Atom("cache"), [Atom("validation"), b"tok"]),
             call_of("b")],
            [call_of("c")],
        ])

    def test_timeout_bounds_the_wait_for_an_answer(self):
        s = self.serve(lambda conn, req, body: [("sleep", 10)])
        lines = self.run_check(s.port, "timeout")
        self.assertTrue(lines[0].startswith("TimeoutError ") and "within 0.3s" in lines[0], lines[0])
        elapsed = int(lines[1].split()[1])
        self.assertGreaterEqual(elapsed, 290)
        self.assertLess(elapsed, 5000)  # far below the server's 10 s, with room for a busy machine

    def test_a_late_answer_is_never_taken_for_the_next_request(self):
        def answer(conn, req, body):
            if req[2] == Atom("slow"):
                return [("sleep", 0.6)] + reply(b"late")
            return reply(b"next")
        s = self.serve(answer)
        lines = self.run_check(s.port, "late")
        self.assertTrue(lines[0].startswith("TimeoutError"), lines[0])
        self.assertEqual(lines[1:], ["closed", 'ok <<"next">>'])
        self.assertEqual(len(s.frames), 2, "the timed-out connection is dropped")

    def test_persistent_connection_is_reused_and_replaced_when_the_server_closed_it(self):
        def answer(conn, req, body):
            if req[2] == Atom("b"):
                return reply(Atom("b")) + [("close",)]
            return reply(req[2])
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "persistent"), ["ok a", "ok b", "ok c", "ok d", "ok e", "closed"])
        self.assertEqual(s.frames, [[call_of("a"), call_of("b")], [call_of("c"), call_of("d"), call_of("e")]])

    def test_answers_that_are_not_bert_rpc_answers(self):
        answers = {
            "garbage": [("bytes", b"\x00\x00\x00\x03abc")],
            "shape": [("frame", (Atom("foo"),))],
            "huge": [("bytes", b"\x00\x00\x13\x88")],
            "noreply": [("frame", (Atom("noreply"),))],
            "cut": [("bytes", b"\x00\x00\x00\x10\x83"), ("close",)],
            "reply_to_cast": reply(1),
        }
        s = self.serve(lambda conn, req, body: answers[str(req[2])])
        lines = self.run_check(s.port, "broken")
        self.assertEqual([line.split()[0] for line in lines],
                         ["InvalidAnswer"] * 4 + ["ConnectionError", "InvalidAnswer"], lines)
        self.assertIn("undecodable answer", lines[0])
        self.assertIn("not a BERT-RPC answer to a call", lines[1])
        self.assertIn("exceeds the limit of 1000", lines[2])
        self.assertIn("closed before a whole answer", lines[4])
        self.assertIn("not a BERT-RPC answer to a cast", lines[5])
        self.assertEqual(len(s.frames), 6, "after a broken answer the connection is never reused")

    def test_float_format_sets_how_requests_and_answers_write_floats(self):
        s = self.serve(lambda conn, req, body: reply(req[3][0]))
        self.assertEqual(self.run_check(s.port, "floats"),
                         ["ok 2.5", "handler NEW_FLOAT_EXT", "handler NEW_FLOAT_EXT", "handler FLOAT_EXT",
                          "handler FLOAT_EXT"])
        self.assertIn(b"c2.50000000000000000000e+00\0\0\0\0\0", s.raw[0][0], "FLOAT_EXT, as the bert gem reads")

    def test_refused_and_unresolvable_are_connection_errors(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        lines = self.run_check(port, "refused")
        self.assertTrue(lines[0].startswith("ConnectionError 127.0.0.1:%d: cannot connect" % port), lines[0])
        self.assertTrue(lines[1].startswith("ConnectionError no-such-host.invalid:%d: cannot resolve" % port),
                        lines[1])


if __name__ == "__main__":
    unittest.main()
