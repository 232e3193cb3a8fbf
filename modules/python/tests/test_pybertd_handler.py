"""test_pybertd_handler.py: the Python external-handler library, end to end: real handler processes
(modules/python/examples) see a socketpair as fd 3 and fd 4, get call/cast/info frames and must answer
as Ernie's handlers do. Every process started here is reaped, even when a test fails.
"""
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import types
import unittest

import bertd
from bertd import bert
from bertd.bert import Atom

HERE = os.path.dirname(os.path.abspath(__file__))
PYLIB = os.path.dirname(HERE)
EXAMPLES = os.path.join(PYLIB, "examples")

# Runs in the child: puts the inherited socket on fd 3 and fd 4, then becomes the handler.
_SHIM = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "os.dup2(fd, 3)\n"
    "os.dup2(fd, 4)\n"
    "if fd not in (3, 4): os.close(fd)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)

CALL, CAST, INFO = Atom("call"), Atom("cast"), Atom("info")
REPLY, NOREPLY, ERROR = Atom("reply"), Atom("noreply"), Atom("error")


class HandlerProcess:
    """A handler script running with one end of a socketpair as its fd 3 and fd 4."""

    def __init__(self, test, script, env=None, stdout=subprocess.DEVNULL, args=()):
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.sock.settimeout(10)
        full_env = dict(os.environ, PYTHONPATH=PYLIB)
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-c", _SHIM, str(theirs.fileno()), script, *args],
                                     pass_fds=(theirs.fileno(),), env=full_env, stdout=stdout,
                                     stderr=subprocess.PIPE)
        theirs.close()
        test.addCleanup(self.cleanup)

    def send(self, term):
        bert.write_berp(self.sock, term)

    def read(self):
        return bert.read_berp(self.sock)

    def request(self, term):
        self.send(term)
        return self.read()

    def close_input(self):
        self.sock.shutdown(socket.SHUT_WR)

    def wait(self, timeout=10):
        return self.proc.wait(timeout)

    def cleanup(self):
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def call(m, f, *args):
    return (CALL, Atom(m), Atom(f), list(args))


class CalcHandler(unittest.TestCase):
    """examples/calc.py: bertd.expose of a module, started by auto_start at exit."""

    def setUp(self):
        self.h = HandlerProcess(self, os.path.join(EXAMPLES, "calc.py"), stdout=subprocess.PIPE)

    def test_call_answers_reply(self):
        self.assertEqual(self.h.request(call("calc", "add", 1, 2)), (REPLY, 3))
        self.assertEqual(self.h.request(call("calc", "sub", 2**70, 1)), (REPLY, 2**70 - 1))

    def test_cast_answers_noreply_after_running(self):
        self.assertEqual(self.h.request((CAST, Atom("calc"), Atom("put"), [b"k", [1, 2]])), (NOREPLY,))
        self.assertEqual(self.h.request(call("calc", "get", b"k")), (REPLY, [1, 2]))

    def test_info_frames_are_accepted_without_answer(self):
        self.h.send((INFO, Atom("priority"), [Atom("low")]))
        self.h.send((INFO, Atom("cache"), [Atom("validation"), b"token"]))
        self.h.send(call("calc", "add", 3, 4))
        self.h.send(call("calc", "add", 5, 6))
        self.assertEqual(self.h.read(), (REPLY, 7))
        self.assertEqual(self.h.read(), (REPLY, 11))

    def test_exception_is_a_user_error_with_class_message_and_backtrace(self):
        answer = self.h.request(call("calc", "fail", b"boom"))
        self.assertEqual(answer[0], ERROR)
        kind, code, klass, message, backtrace = answer[1]
        self.assertEqual((kind, code, klass, message), (Atom("user"), 0, b"CalcError", b"boom"))
        self.assertIsInstance(backtrace, list)
        self.assertTrue(backtrace and all(isinstance(line, bytes) for line in backtrace))
        self.assertIn(b"calc.py", backtrace[0])
        self.assertIn(b"in `fail'", backtrace[0])
        answer = self.h.request(call("calc", "div", 1, 0))
        self.assertEqual(answer[1][:3], (Atom("user"), 0, b"ZeroDivisionError"))
        # A wrong number of arguments is the user's TypeError, not a dead handler.
        self.assertEqual(self.h.request(call("calc", "add", 1))[1][2], b"TypeError")
        self.assertEqual(self.h.request(call("calc", "add", 1, 1)), (REPLY, 2))

    def test_unknown_function_and_module_are_server_errors_with_ernie_texts(self):
        self.assertEqual(self.h.request(call("calc", "mcfail")),
                         (ERROR, (Atom("server"), 2, b"ServerError", b"No such function 'calc:mcfail'", [])))
        self.assertEqual(self.h.request(call("failboat", "mcfail")),
                         (ERROR, (Atom("server"), 1, b"ServerError", b"No such module 'failboat'", [])))
        # Private names, classes and modules imported by the handler are not functions.
        for name in ("_store", "CalcError", "os", "__init__", "bertd"):
            with self.subTest(name=name):
                self.assertEqual(self.h.request(call("calc", name))[1][:2], (Atom("server"), 2))

    def test_invalid_and_undecodable_requests_get_errors_and_the_handler_goes_on(self):
        answer = self.h.request((Atom("bogus"), 1))
        self.assertEqual(answer[1][:3], (Atom("server"), 0, b"ServerError"))
        self.assertEqual(self.h.request(b"a binary")[1][:2], (Atom("server"), 0))
        # Python 3.11 cannot print this int; the error text must still be made.
        self.assertEqual(self.h.request((Atom("bogus"), 1 << 20000))[1][:2], (Atom("server"), 0))
        self.h.sock.sendall(b"\x00\x00\x00\x03\x83\xff\x00")
        answer = self.h.read()
        self.assertEqual(answer[1][:3], (Atom("protocol"), 2, b"ProtocolError"))
        self.assertEqual(self.h.request(call("calc", "add", 1, 2)), (REPLY, 3))

    def test_unencodable_result_is_a_user_error(self):
        answer = self.h.request(call("calc", "echo", 1.5))
        self.assertEqual(answer, (REPLY, 1.5))
        answer = self.h.request(call("calc", "add", 1e308, 1e308))  # inf
        self.assertEqual(answer[1][:3], (Atom("user"), 0, b"EncodeError"))

    def test_stdout_and_stderr_stay_the_handlers_own(self):
        self.assertEqual(self.h.request(call("calc", "chatter", b"hello out there")), (REPLY, Atom("ok")))
        self.assertEqual(self.h.proc.stdout.readline(), b"hello out there\n")

    def test_all_types_survive_a_trip_through_the_handler(self):
        import datetime
        import re
        values = [None, True, False, 2**100, -3, 2.5, Atom("a"), b"bin", (1, (2,)), [1, [2]], {b"k": [None]},
                  bert.Map({1: 2}), bert.ImproperList([1], 2), b"x" * 1_000_000,
                  datetime.datetime(2010, 2, 20, 11, 42, 25, 259750, tzinfo=datetime.timezone.utc),
                  re.compile("a+", re.I)]
        for value in values:
            with self.subTest(value=repr(value)[:80]):
                self.assertEqual(self.h.request(call("calc", "echo", value)), (REPLY, value))

    def test_pipelined_requests_are_answered_in_order(self):
        for i in range(100):
            self.h.send(call("calc", "add", i, 1000))
        for i in range(100):
            self.assertEqual(self.h.read(), (REPLY, i + 1000))

    def test_handler_exits_on_end_of_input(self):
        self.assertEqual(self.h.request(call("calc", "add", 1, 2)), (REPLY, 3))
        self.h.close_input()
        self.assertEqual(self.h.wait(), 0)
        with self.assertRaises(EOFError):
            self.h.read()


class DecoratorHandler(unittest.TestCase):
    """examples/text.py: @bertd.function and an explicit bertd.start()."""

    def test_decorated_functions_and_explicit_start(self):
        h = HandlerProcess(self, os.path.join(EXAMPLES, "text.py"))
        self.assertEqual(h.request(call("text", "upcase", b"abc")), (REPLY, b"ABC"))
        self.assertEqual(h.request(call("text", "len", b"abcd")), (REPLY, 4))
        self.assertEqual(h.request(call("text", "words", b"a bc d")), (REPLY, [b"a", b"bc", b"d"]))
        self.assertEqual(h.request(call("text", "length", b"x"))[1][:2], (Atom("server"), 2))
        h.close_input()
        self.assertEqual(h.wait(), 0)
        # Code after start() runs once the input ends.
        self.assertIn(b"text.py: done", h.proc.stderr.read())


class ScriptHandlers(unittest.TestCase):
    def script(self, body):
        f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.addCleanup(os.unlink, f.name)
        with f:
            f.write(textwrap.dedent(body))
        return f.name

    def test_auto_start_false_does_not_serve(self):
        path = self.script("""
            import bertd
            bertd.expose("m", {"f": lambda: 1})
            bertd.auto_start = False
        """)
        h = HandlerProcess(self, path)
        self.assertEqual(h.wait(), 0)
        with self.assertRaises(EOFError):
            h.read()

    def test_a_script_that_crashes_does_not_start_serving(self):
        path = self.script("""
            import bertd
            bertd.expose("m", {"f": lambda: 1})
            raise RuntimeError("broken handler")
        """)
        h = HandlerProcess(self, path)
        self.assertNotEqual(h.wait(), 0)
        self.assertIn(b"broken handler", h.proc.stderr.read())

    def test_expose_an_object_and_log_to_a_file(self):
        log = tempfile.NamedTemporaryFile(suffix=".log", delete=False)
        log.close()
        self.addCleanup(os.unlink, log.name)
        path = self.script(f"""
            import bertd

            class Greeter:
                def __init__(self, greeting):
                    self.greeting = greeting

                def greet(self, name):
                    return self.greeting + b", " + name

            bertd.logfile({log.name!r})
            bertd.loglevel("debug")
            bertd.expose("greeter", Greeter(b"hello"))
        """)
        h = HandlerProcess(self, path)
        self.assertEqual(h.request(call("greeter", "greet", b"joe")), (REPLY, b"hello, joe"))
        self.assertEqual(h.request(call("greeter", "greeting"))[1][:2], (Atom("server"), 2))
        h.close_input()
        self.assertEqual(h.wait(), 0)
        with open(log.name) as f:
            text = f.read()
        self.assertIn("call greeter:greet/1", text)
        self.assertIn("No such function 'greeter:greeting'", text)
        self.assertIn("hello, joe", text)  # responses are logged at DEBUG

    def test_float_format_ernie_writes_answers_floats_as_float_ext(self):
        path = self.script("""
            import sys
            import bertd
            bertd.expose("m", {"half": lambda x: x / 2})
            bertd.float_format(sys.argv[1])
        """)
        answers = {}
        for fmt in ("ernie", "new"):
            h = HandlerProcess(self, path, args=[fmt])
            # The request's float is FLOAT_EXT: read in either form.
            h.sock.sendall(bert.encode_berp(call("m", "half", 5.0), float_format="ernie"))
            answers[fmt] = bert.read_berp_bytes(h.sock)
        reply = b"\x83h\x02d\x00\x05reply"
        self.assertEqual(answers["ernie"], reply + b"c2.50000000000000000000e+00\0\0\0\0\0")
        self.assertEqual(answers["new"], reply + bert.encode(2.5)[1:])
        with self.assertRaises(ValueError):
            bertd.Handler(float_format="old")
        with self.assertRaises(ValueError):
            bertd.float_format("erlang")

    def test_without_fd_3_the_script_says_so(self):
        path = self.script("""
            import bertd
            bertd.expose("m", {"f": lambda: 1})
        """)
        proc = subprocess.run([sys.executable, path], env=dict(os.environ, PYTHONPATH=PYLIB),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        self.assertEqual(proc.returncode, 1)
        self.assertIn(b"fd 3 and 4 are not open", proc.stderr)


class HandlerTable(unittest.TestCase):
    """bertd.Handler in-process: what expose() publishes and what it keeps private."""

    def test_a_module_publishes_only_its_own_public_functions(self):
        mod = types.ModuleType("mymod")
        exec("import os\nfrom os import getcwd\ndef f(x): return x\ndef _g(): pass\nclass K: pass\n",
             mod.__dict__)
        h = bertd.Handler()
        h.expose("mymod", mod)
        self.assertEqual(h.dispatch(call("mymod", "f", 5)), (REPLY, 5))
        for name in ("getcwd", "_g", "K", "os"):
            self.assertEqual(h.dispatch(call("mymod", name))[1][:2], (Atom("server"), 2), name)

    def test_all_decides_when_a_module_has_it(self):
        mod = types.ModuleType("m2")
        exec("from os import getcwd\n__all__ = ['getcwd']\ndef f(): return 1\n", mod.__dict__)
        h = bertd.Handler()
        h.expose("m2", mod)
        self.assertEqual(h.dispatch(call("m2", "getcwd")), (REPLY, os.getcwd()))
        self.assertEqual(h.dispatch(call("m2", "f"))[1][:2], (Atom("server"), 2))

    def test_an_exception_that_cannot_print_itself_is_still_a_user_error(self):
        class Mute(Exception):
            def __str__(self):
                raise RuntimeError("no")

        def f():
            raise Mute()

        h = bertd.Handler()
        h.expose("m", {"f": f})
        answer = h.dispatch(call("m", "f"))
        self.assertEqual(answer[1][:3], (Atom("user"), 0, b"Mute"))
        self.assertIn(b"cannot be printed", answer[1][3])

    def test_decorated_functions_extend_an_exposed_module(self):
        h = bertd.Handler()
        h.expose("m", {"a": lambda: 1})

        @h.function("m", name="b")
        def anything():
            return 2

        self.assertEqual(h.dispatch(call("m", "a")), (REPLY, 1))
        self.assertEqual(h.dispatch(call("m", "b")), (REPLY, 2))
        self.assertIsNone(h.dispatch((INFO, Atom("priority"), [Atom("high")])))
        self.assertEqual(h.dispatch((CAST, Atom("m"), Atom("nope"), [])), (NOREPLY,))


if __name__ == "__main__":
    unittest.main()


class Rpc10OnTheFds(unittest.TestCase):
    """BERT-RPC 1.0 frames written straight to a handler's fd 3 (tests/handlers/rpc10_py.py), as
    bertd relays them, including what bertd would never send."""

    HANDLER = os.path.join(os.path.dirname(os.path.dirname(PYLIB)), "tests", "handlers", "rpc10_py.py")

    def setUp(self):
        self.h = HandlerProcess(self, self.HANDLER)

    def stream(self, *chunks, end=True):
        data = b"".join(len(c).to_bytes(4, "big") + c for c in chunks)
        self.h.sock.sendall(data + (b"\0\0\0\0" if end else b""))

    def read_chunks(self):
        out = []
        while True:
            n = int.from_bytes(bert._read_exact(self.h.sock, 4, "chunk header"), "big")
            if n == 0:
                return out
            out.append(bert._read_exact(self.h.sock, n, "chunk"))

    def test_a_streamed_request_and_a_streamed_answer_on_the_fds(self):
        self.h.send((INFO, Atom("stream"), []))
        self.h.send(call("lib", "sum_stream"))
        self.stream(b"abc", b"de")
        self.assertEqual(self.h.read()[1][:2], [2, 5])
        self.assertEqual(self.h.request(call("lib", "stream_out", 2, 3)), (INFO, Atom("stream"), []))
        self.assertEqual(self.h.read(), (REPLY, []))
        self.assertEqual(self.read_chunks(), [b"aaa", b"bbb"])
        self.assertEqual(self.h.request(call("lib", "add", 1, 2)), (REPLY, 3))

    def test_a_cache_info_with_garbage_options_is_ignored_and_the_request_answered(self):
        self.h.send((INFO, Atom("cache"), 42))
        self.h.send((INFO, Atom("cache"), [(Atom("validation"), 7)]))
        self.h.send((INFO, Atom("unknown"), [1, 2]))
        self.assertEqual(self.h.request(call("lib", "add", 2, 2)), (REPLY, 4))

    def test_a_validation_token_in_the_tuple_form_reaches_the_function(self):
        self.h.send((INFO, Atom("cache"), [(Atom("validation"), b"v1")]))
        self.assertEqual(self.h.request(call("lib", "validated", 1)), (INFO, Atom("valid"), []))
        self.assertEqual(self.h.read(), (NOREPLY,))

    def test_a_stream_cut_short_ends_the_handler_without_an_answer(self):
        self.h.send((INFO, Atom("stream"), []))
        self.h.send(call("lib", "sum_stream"))
        self.stream(b"abc", end=False)
        self.h.sock.sendall((100).to_bytes(4, "big") + b"only ten b")
        self.h.close_input()
        self.assertEqual(self.h.wait(), 0)
        self.assertEqual(self.h.sock.recv(100), b"")  # no answer: bertd fails the request itself

    def test_a_generator_that_fails_midway_ends_the_handler_after_its_chunks(self):
        self.assertEqual(self.h.request(call("lib", "stream_then_fail", 2)), (INFO, Atom("stream"), []))
        self.assertEqual(self.h.read(), (REPLY, []))
        self.assertEqual(bert._read_exact(self.h.sock, 2008, "chunks"), ((1000).to_bytes(4, "big") + b"x" * 1000) * 2)
        self.assertEqual(self.h.wait(), 0)
        self.assertEqual(self.h.sock.recv(100), b"")  # no zero header: the stream is not passed off as whole
