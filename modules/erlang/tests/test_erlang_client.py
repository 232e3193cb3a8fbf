"""test_erlang_client.py: the Erlang client module (bertd_client) against a scripted server: one-shot
and persistent connections, each error type, info frames, timeouts, late answers never reused,
broken answers, refused connections, bad arguments, and a connection that ends with its owner.
tests/clients/erlang_client_check.escript drives it.
"""
import os
import socket
import struct
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from fake_server import FakeServer, error, reply  # noqa: E402

import bertd  # noqa: E402
from bertd import Atom  # noqa: E402

EBIN = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"), "ebin")
CHECK = os.path.join(ROOT, "tests", "clients", "erlang_client_check.escript")


def call_of(name):
    return (Atom("call"), Atom("m"), Atom(name), [])


class ErlangClient(unittest.TestCase):
    def serve(self, answer):
        server = FakeServer(answer)
        self.addCleanup(server.close)
        return server

    def run_check(self, port, scenario):
        p = subprocess.run(["escript", CHECK, EBIN, str(port), scenario], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout.splitlines()

    def test_one_shot_calls_casts_and_raw_requests(self):
        def answer(conn, req, body):
            if req[0] == Atom("call"):
                return reply(sum(req[3]))
            if req[0] == Atom("cast"):
                return [("frame", (Atom("noreply"),))]
            return reply(Atom("raw"))
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "basic"), ["{ok,3}", "ok", "{ok,raw}", "{ok,7}"])
        self.assertEqual(len(s.frames), 4, "one connection per one-shot request")
        self.assertEqual(s.raw[2], [b"\x83h\x01d\x00\x01x"], "request_raw sends the bytes as given")

    def test_error_answers_keep_every_field_on_one_connection(self):
        answers = {
            "protocol": error("protocol", 2, b"ProtocolError", b"bad"),
            "server": error("server", 1, b"ServerError", b"No such module 'm'"),
            "user": error("user", 0, b"RuntimeError", b"boom", [b"a.rb:1", b"b.rb:2"]),
            "proxy": error("proxy", 3, b"ProxyError", b"down"),
            "other": error("weird", 9, b"C", b"D"),
            "old": [("frame", (Atom("error"), (Atom("user"), 0, b"old style")))],
            "badshape": [("frame", (Atom("error"), 42))],
        }
        s = self.serve(lambda conn, req, body: answers[str(req[2])])
        self.assertEqual(self.run_check(s.port, "errors"), [
            '{error,{protocol,2,<<"ProtocolError">>,<<"bad">>,[]}}',
            '{error,{server,1,<<"ServerError">>,<<"No such module \'m\'">>,[]}}',
            '{error,{user,0,<<"RuntimeError">>,<<"boom">>,[<<"a.rb:1">>,<<"b.rb:2">>]}}',
            '{error,{proxy,3,<<"ProxyError">>,<<"down">>,[]}}',
            '{error,{weird,9,<<"C">>,<<"D">>,[]}}',
            '{error,{user,0,<<>>,<<"old style">>,[]}}',
            "{error,{invalid_answer,{error,42}}}",
        ])
        self.assertEqual(len(s.frames), 1)

    def test_priority_and_info_frames_go_before_the_request(self):
        s = self.serve(lambda conn, req, body: reply(Atom("ok")))
        self.assertEqual(self.run_check(s.port, "priority"), ["{ok,ok}"] * 3)
        info = Atom("info")
        self.assertEqual(s.frames, [
            [(info, Atom("priority"), [Atom("low")]), call_of("a"),
             (info, Atom("priority"), [Atom("high")]), (info, Atom("cache"), [Atom("validation"), b"tok"]),
             call_of("b")],
            [call_of("c")],
        ])

    def test_timeout_bounds_the_wait_for_an_answer(self):
        s = self.serve(lambda conn, req, body: [("sleep", 10)])
        lines = self.run_check(s.port, "timeout")
        self.assertEqual(lines[0], "{error,timeout}")
        elapsed = int(lines[1].strip("{}").split(",")[1])
        self.assertGreaterEqual(elapsed, 290)
        self.assertLess(elapsed, 5000)  # far below the server's 10 s, with room for a busy machine

    def test_a_late_answer_is_never_taken_for_the_next_request(self):
        def answer(conn, req, body):
            if req[2] == Atom("slow"):
                return [("sleep", 0.6)] + reply(b"late")
            return reply(b"next")
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "late"), ["{error,timeout}", '{ok,<<"next">>}'])
        self.assertEqual(len(s.frames), 2, "the timed-out connection is dropped")

    def test_persistent_connection_is_reused_and_replaced_when_the_server_closed_it(self):
        def answer(conn, req, body):
            if req[2] == Atom("b"):
                return reply(Atom("b")) + [("close",)]
            return reply(req[2])
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "persistent"),
                         ["{ok,a}", "{ok,b}", "{ok,c}", "{ok,d}", "{error,closed}"])
        self.assertEqual(s.frames, [[call_of("a"), call_of("b")], [call_of("c"), call_of("d")]])

    def test_answers_that_are_not_bert_rpc_answers(self):
        answers = {
            "garbage": [("bytes", b"\x00\x00\x00\x03abc")],
            "shape": [("frame", (Atom("foo"),))],
            "noreply": [("frame", (Atom("noreply"),))],
            "cut": [("bytes", b"\x00\x00\x00\x10\x83"), ("close",)],
            "reply_to_cast": reply(1),
        }
        s = self.serve(lambda conn, req, body: answers[str(req[2])])
        self.assertEqual(self.run_check(s.port, "broken"), [
            '{error,{invalid_answer,<<"abc">>}}', "{error,{invalid_answer,{foo}}}",
            "{error,{invalid_answer,{noreply}}}", "{error,closed}", "{error,{invalid_answer,{reply,1}}}",
        ])

    def test_refused_connections_and_bad_arguments(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.assertEqual(self.run_check(port, "refused"), [
            "{error,{connect,econnrefused}}", "{error,{connect,econnrefused}}",
            "{error,{badarg,{bogus,1}}}", "{error,{badarg,{call,\"m\",a,[]}}}"])

    def test_float_format_ernie_writes_floats_as_minor_version_0_and_answers_read_either_way(self):
        def answer(conn, req, body):
            if conn == 1:  # this answer's float in the old form
                old = bertd.encode((Atom("reply"), req[3][0]), float_format="ernie")
                return [("bytes", struct.pack(">I", len(old)) + old)]
            return reply(req[3][0])
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "floats"), [
            "{ok,2.5}", "{ok,2.5}", "{ok,[0.30000000000000004]}", "{error,{badarg,{float_format,old}}}"])
        echo = b"\x83h\x04d\x00\x04calld\x00\x01md\x00\x04echol\x00\x00\x00\x01"
        self.assertEqual(s.raw[0], [echo + b"F" + struct.pack(">d", 2.5) + b"j"])
        self.assertEqual(s.raw[1], [echo + b"c2.50000000000000000000e+00\0\0\0\0\0j"])
        info = b"\x83h\x03d\x00\x04info"
        self.assertEqual(s.raw[2], [
            info + b"d\x00\x08priorityl\x00\x00\x00\x01d\x00\x03lowj",
            info + b"d\x00\x05cachel\x00\x00\x00\x02d\x00\x0avalidationm\x00\x00\x00\x01tj",
            echo + b"l\x00\x00\x00\x01c3.00000000000000044409e-01\0\0\0\0\0jj"])

    def test_funs_bit_strings_pids_refs_and_ports_cross_both_ways(self):
        requests = []

        def answer(conn, req, body):
            requests.append((req, body))
            return reply(req[3][0])
        s = self.serve(answer)
        self.assertEqual(self.run_check(s.port, "terms"), ["true", "true"])
        self.assertEqual(len(requests), 2)
        for req, body in requests:
            self.assertEqual(bertd.encode(req), body, "the Python codec re-encodes Erlang's bytes exactly")
            kinds = [type(x) for x in req[3][0]]
            self.assertEqual(kinds, [bertd.Export, bertd.Fun, bertd.BitBinary, bertd.BitBinary, bertd.Pid,
                                     bertd.Ref, bertd.Port, bertd.Port])

    def test_a_connection_ends_with_the_process_that_opened_it(self):
        s = self.serve(lambda conn, req, body: reply(1))
        self.assertEqual(self.run_check(s.port, "owner"), ["{owner_gone,false}"])


if __name__ == "__main__":
    unittest.main()
