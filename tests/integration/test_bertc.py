"""test_bertc.py: the command-line client bertc: arguments in Erlang syntax (and @FILE), the reply in
Erlang syntax or JSON, options, and one exit status per kind of failure with the error on stderr.
A scripted server (tests/clients/fake_server.py) gives the answers and records what bertc sent; the
cross-language matrix (test_matrix.py) runs bertc against a real bertd.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import harness

from bertd import Atom, ImproperList, Map

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "clients"))
from fake_server import FakeServer, error, reply  # noqa: E402

BERTC = os.path.join(harness.BUILD, "bertc")


def bertc(*args, stdin=None, timeout=30):
    p = subprocess.run([BERTC] + list(args), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


class Bertc(unittest.TestCase):
    def serve(self, answer):
        server = FakeServer(answer)
        self.addCleanup(server.close)
        return server

    def echo_server(self):
        """Answers every call with its argument list, every cast with noreply."""
        def answer(conn, req, body):
            if req[0] == Atom("cast"):
                return [("frame", (Atom("noreply"),))]
            return reply(req[3])
        return self.serve(answer)

    def test_call_prints_the_reply_in_erlang_syntax(self):
        s = self.echo_server()
        status, out, err = bertc("-p", str(s.port), "call", "store", "put", '<<"k">>', "{a,[1,2]}", "-5", '"ab"')
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, '[<<"k">>,{a,[1,2]},-5,"ab"]\n')
        self.assertEqual(s.frames, [[(Atom("call"), Atom("store"), Atom("put"),
                                      [b"k", (Atom("a"), [1, 2]), -5, [97, 98]])]])

    def test_cast_prints_nothing_once_the_server_took_it(self):
        s = self.echo_server()
        self.assertEqual(bertc("--port", str(s.port), "cast", "log", "line", "1"), (0, "", ""))
        self.assertEqual(s.frames, [[(Atom("cast"), Atom("log"), Atom("line"), [1])]])

    def test_options_host_priority_timeout(self):
        s = self.echo_server()
        status, out, err = bertc("-h", "127.0.0.1", f"--port={s.port}", "--priority", "low", "--timeout=2.5",
                                 "call", "m", "f")
        self.assertEqual((status, out, err), (0, "[]\n", ""))
        self.assertEqual(s.frames, [[(Atom("info"), Atom("priority"), [Atom("low")]),
                                     (Atom("call"), Atom("m"), Atom("f"), [])]])

    def test_arguments_from_a_file_and_from_stdin(self):
        s = self.echo_server()
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("% a comment\n{big, <<0,1,2>>, [x]}.\n")
        self.addCleanup(os.unlink, f.name)
        status, out, err = bertc("-p", str(s.port), "call", "m", "f", "@" + f.name, "@-", stdin=b"#{a => 1}")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "[{big,<<0,1,2>>,[x]},#{a => 1}]\n")

    def test_json_output_follows_the_documented_mapping(self):
        value = (Atom("ok"), b"text \xe2\x98\x83", b"\xff\x00", 1.0, -0.0, 1e300, 2 ** 70, -3, [1, [2]], [],
                 ImproperList([1], 2), Map({Atom("a"): 1}), (Atom("bert"), Atom("nil")),
                 (Atom("bert"), Atom("true")), (Atom("bert"), Atom("false")),
                 (Atom("bert"), Atom("dict"), [(b"k", 1)]), (Atom("bert"), Atom("time"), 1, 2, 3), (), b'q"\\\n')
        s = self.serve(lambda conn, req, body: reply(value))
        status, out, err = bertc("-p", str(s.port), "--json", "call", "m", "f")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, (
            '{"tuple":[{"atom":"ok"},"text \u2603",{"binary":"/wA="},1.0,-0.0,1e+300,1180591620717411303424,-3,'
            '[1,[2]],[],{"improper_list":[1,2]},{"map":[[{"atom":"a"},1]]},null,true,false,'
            '{"dict":[["k",1]]},{"tuple":[{"atom":"bert"},{"atom":"time"},1,2,3]},{"tuple":[]},'
            '"q\\"\\\\\\n"]}\n'))
        parsed = json.loads(out)
        self.assertIsInstance(parsed["tuple"][3], float)
        self.assertEqual(parsed["tuple"][6], 2 ** 70)

    def test_float_format_chooses_how_floats_go_out_and_both_forms_are_read(self):
        old = b"c" + b"2.50000000000000000000e+00".ljust(31, b"\0")  # FLOAT_EXT, as the bert gem writes
        new = b"F" + struct.pack(">d", 2.5)                            # NEW_FLOAT_EXT
        answers = {b"old": old, b"new": new}

        def answer(conn, req, body):
            payload = b"\x83h\x02d\x00\x05reply" + answers[bytes(str(req[2]), "ascii")]
            return [("bytes", struct.pack(">I", len(payload)) + payload)]
        s = self.serve(answer)
        port = str(s.port)
        self.assertEqual(bertc("-p", port, "--float-format", "ernie", "call", "m", "old", "[2.5]"), (0, "2.5\n", ""))
        self.assertEqual(bertc("-p", port, "--float-format=new", "call", "m", "new", "[2.5]"), (0, "2.5\n", ""))
        self.assertEqual(bertc("-p", port, "call", "m", "new", "2.5"), (0, "2.5\n", ""))
        self.assertIn(old, s.raw[0][0])
        self.assertNotIn(new, s.raw[0][0])
        self.assertIn(new, s.raw[1][0])
        self.assertIn(new, s.raw[2][0])  # new is the default
        status, out, err = bertc("--float-format", "old", "call", "m", "f")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("bad float format 'old' (new or ernie)", err)

    def test_funs_and_bit_strings_go_out_and_print_as_erlang_writes_them(self):
        s = self.echo_server()
        status, out, err = bertc("-p", str(s.port), "call", "m", "f", "fun lists:reverse/1", "<<5,1:3>>")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, "[fun lists:reverse/1,<<5,1:3>>]\n")
        self.assertIn(b"q\x64\x00\x05listsd\x00\x07reversea\x01", s.raw[0][0])  # EXPORT_EXT
        self.assertIn(b"M\x00\x00\x00\x02\x03\x05\x20", s.raw[0][0])           # BIT_BINARY_EXT
        status, out, err = bertc("-p", str(s.port), "--json", "call", "m", "f", "fun m:f/0", "<<1:3>>")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, '[{"fun":"fun m:f/0"},{"bitstring":"<<1:3>>"}]\n')

    def test_each_error_type_has_its_exit_status_and_its_text_on_stderr(self):
        answers = {
            "protocol": error("protocol", 2, b"ProtocolError", b"Unable to read data"),
            "server": error("server", 1, b"ServerError", b"No such module 'm'"),
            "user": error("user", 0, b"RuntimeError", b"boom", [b"ext.rb:3:in `f'", b"ext.rb:9"]),
            "proxy": error("proxy", 0, b"ProxyError", b"upstream down"),
            "garbage": [("bytes", b"\x00\x00\x00\x03abc")],
        }
        s = self.serve(lambda conn, req, body: answers[str(req[2])])
        port = str(s.port)
        self.assertEqual(bertc("-p", port, "call", "m", "protocol"),
                         (3, "", "bertc: protocol error 2: ProtocolError: Unable to read data\n"))
        self.assertEqual(bertc("-p", port, "call", "m", "server"),
                         (4, "", "bertc: server error 1: ServerError: No such module 'm'\n"))
        self.assertEqual(bertc("-p", port, "call", "m", "user"),
                         (5, "", "bertc: user error 0: RuntimeError: boom\n  ext.rb:3:in `f'\n  ext.rb:9\n"))
        self.assertEqual(bertc("-p", port, "call", "m", "proxy"),
                         (6, "", "bertc: proxy error 0: ProxyError: upstream down\n"))
        status, out, err = bertc("-p", port, "call", "m", "garbage")
        self.assertEqual((status, out), (3, ""))
        self.assertIn("undecodable answer", err)

    def test_connection_refused_and_timeout_exit_2(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        status, out, err = bertc("-p", str(port), "call", "m", "f")
        self.assertEqual((status, out), (2, ""))
        self.assertIn(f"127.0.0.1:{port}: cannot connect", err)
        s = self.serve(lambda conn, req, body: [("sleep", 10)])
        t0 = time.monotonic()
        status, out, err = bertc("-p", str(s.port), "--timeout", "0.3", "call", "m", "f")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual((status, out), (2, ""))
        self.assertIn("no whole answer within 0.3s", err)

    def test_usage_errors_exit_1(self):
        for args, text in [
            ((), "call or cast expected"),
            (("get", "m", "f"), "call or cast expected, not 'get'"),
            (("call", "m"), "MODULE and FUNCTION expected"),
            (("--bogus", "call", "m", "f"), "unknown option '--bogus'"),
            (("-p", "99999", "call", "m", "f"), "bad port '99999'"),
            (("--priority", "urgent", "call", "m", "f"), "bad priority 'urgent'"),
            (("--timeout", "soon", "call", "m", "f"), "bad timeout 'soon'"),
            (("-p",), "-p needs a value"),
            (("call", "m", "f", "{a,"), "argument 1 ({a,) is not an Erlang term: 1:4:"),
            (("call", "m", "f", "1", "X"), "argument 2 (X) is not an Erlang term"),
            (("call", "m", "f", "@/nonexistent/file"), "cannot read '/nonexistent/file'"),
        ]:
            status, out, err = bertc(*args)
            self.assertEqual((status, out), (1, ""), args)
            self.assertIn(text, err, args)
            self.assertIn("Try 'bertc --help'.", err)

    def test_help_lists_options_json_mapping_and_exit_statuses(self):
        status, out, err = bertc("--help")
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("usage: bertc [-h HOST] [-p PORT]"))
        for text in ("--priority", "--timeout", "--json", "--float-format", "@FILE", '{"atom":"ok"}',
                     "0 ok, 1 usage", "2 connection failed or timed out", "5 user error, 6 proxy error"):
            self.assertIn(text, out)


if __name__ == "__main__":
    unittest.main()
