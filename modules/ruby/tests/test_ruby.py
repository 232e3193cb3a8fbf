"""test_ruby.py: tests of bertd's Ruby library (modules/ruby): the Ernie-compatible handler run as a real
process on fds 3/4, the Ruby client against a fake BERP server on loopback, and BERTD::Codec against the
real Erlang VM (ruby_diff.escript, codec_diff.rb). Every process and thread started here is stopped in
tearDown, also when a test fails; nothing listens beyond 127.0.0.1.
"""
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
RUBY_DIR = os.path.dirname(HERE)
LIB = os.path.join(RUBY_DIR, "lib")
EXT = os.path.join(RUBY_DIR, "examples", "ext.rb")
CLIENT_CHECK = os.path.join(HERE, "client_check.rb")
CODEC_DIFF = os.path.join(HERE, "codec_diff.rb")
RUBY_DIFF = os.path.join(HERE, "ruby_diff.escript")

# term_to_binary(fz:adder(<<"x">>)) on OTP 25, where adder(V) -> fun(X) -> {X, V} end.
FUN = bytes([
    131, 112, 0, 0, 0, 76, 1, 154, 113, 210, 63, 6, 14, 93, 212, 198, 234, 231, 220, 13, 235, 179, 105, 0, 0,
    0, 0, 0, 0, 0, 1, 100, 0, 2, 102, 122, 97, 0, 98, 4, 211, 142, 145, 88, 100, 0, 13, 110, 111, 110, 111,
    100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 109, 0, 0, 0, 1, 120])[1:]
NODE = b"d\x00\x0aother@host"
# The other tags ruby-bert lacks, as OTP 25 writes them: a pid, ports (V4 for an id past 32 bits), a
# reference of another node, `fun lists:map/2` and <<5:3>>.
PID = b"X" + NODE + bytes([0, 0, 0, 7, 0, 0, 0, 3, 0xFF, 0xEE, 0xDD, 0xCC])
PORT = b"Y" + NODE + bytes([0, 0, 0, 9, 0, 0, 0, 5])
V4_PORT = b"x" + NODE + bytes([0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 5])
REF = b"Z\x00\x03" + NODE + bytes([0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])
EXPORT = b"qd\x00\x05listsd\x00\x03mapa\x02"
BITS = b"M\x00\x00\x00\x01\x03\xa0"


# ---- a minimal BERT codec, just enough for these tests -------------------------------------------------


class Atom(str):
    def __repr__(self):
        return f"Atom({str(self)!r})"


def encode(term):
    return b"\x83" + _enc(term)


def _enc(t):
    if isinstance(t, Atom):
        data = t.encode("utf-8")
        return struct.pack(">BH", 100, len(data)) + data if t.isascii() else struct.pack(">BB", 119, len(data)) + data
    if isinstance(t, bool) or t is None:
        raise TypeError("use complex types explicitly")
    if isinstance(t, int):
        if 0 <= t < 256:
            return struct.pack(">BB", 97, t)
        if -(2**31) <= t < 2**31:
            return struct.pack(">Bi", 98, t)
        mag = abs(t).to_bytes((abs(t).bit_length() + 7) // 8, "little")
        return struct.pack(">BBB", 110, len(mag), 1 if t < 0 else 0) + mag
    if isinstance(t, float):
        return struct.pack(">Bd", 70, t)
    if isinstance(t, bytes):
        return struct.pack(">BI", 109, len(t)) + t
    if isinstance(t, tuple):
        return struct.pack(">BB", 104, len(t)) + b"".join(_enc(x) for x in t)
    if isinstance(t, list):
        if not t:
            return b"\x6a"
        return struct.pack(">BI", 108, len(t)) + b"".join(_enc(x) for x in t) + b"\x6a"
    raise TypeError(repr(t))


def decode(data):
    assert data[0] == 131, data
    term, rest = _dec(data, 1)
    assert rest == len(data), "trailing bytes"
    return term


def _dec(d, i):
    tag = d[i]
    i += 1
    if tag == 97:
        return d[i], i + 1
    if tag == 98:
        return struct.unpack_from(">i", d, i)[0], i + 4
    if tag in (110, 111):
        n, i = (d[i], i + 1) if tag == 110 else (struct.unpack_from(">I", d, i)[0], i + 4)
        sign = d[i]
        v = int.from_bytes(d[i + 1 : i + 1 + n], "little")
        return (-v if sign else v), i + 1 + n
    if tag == 70:
        return struct.unpack_from(">d", d, i)[0], i + 8
    if tag == 99:
        return float(d[i : i + 31].split(b"\0")[0]), i + 31
    if tag in (100, 118):
        n = struct.unpack_from(">H", d, i)[0]
        return Atom(d[i + 2 : i + 2 + n].decode("utf-8")), i + 2 + n
    if tag in (115, 119):
        n = d[i]
        return Atom(d[i + 1 : i + 1 + n].decode("utf-8")), i + 1 + n
    if tag in (104, 105):
        n, i = (d[i], i + 1) if tag == 104 else (struct.unpack_from(">I", d, i)[0], i + 4)
        items = []
        for _ in range(n):
            x, i = _dec(d, i)
            items.append(x)
        return tuple(items), i
    if tag == 106:
        return [], i
    if tag == 107:
        n = struct.unpack_from(">H", d, i)[0]
        return list(d[i + 2 : i + 2 + n]), i + 2 + n
    if tag == 108:
        n = struct.unpack_from(">I", d, i)[0]
        i += 4
        items = []
        for _ in range(n):
            x, i = _dec(d, i)
            items.append(x)
        tail, i = _dec(d, i)
        assert tail == [], "improper list"
        return items, i
    if tag == 109:
        n = struct.unpack_from(">I", d, i)[0]
        return bytes(d[i + 4 : i + 4 + n]), i + 4 + n
    raise ValueError(f"tag {tag}")


def frame(body):
    return struct.pack(">I", len(body)) + body


def read_exactly(sock, n):
    """n bytes, or None at end of input before them."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(sock):
    header = read_exactly(sock, 4)
    if header is None:
        return None
    body = read_exactly(sock, struct.unpack(">I", header)[0])
    return None if body is None else decode(body)


A = Atom
BERT_NIL = (A("bert"), A("nil"))
BERT_TRUE = (A("bert"), A("true"))


def call(mod, fun, args):
    return (A("call"), A(mod), A(fun), args)


# ---- the handler ---------------------------------------------------------------------------------------


class Handler:
    """A Ruby handler process speaking BERPs on fds 3 and 4 over one end of a socketpair."""

    def __init__(self, argv, env=None, cwd=None):
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.sock.settimeout(5)

        def give_fds():
            os.dup2(theirs.fileno(), 3)
            os.dup2(theirs.fileno(), 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        try:
            # Not pass_fds=(3, 4): that needs fds 3 and 4 open in this process before the fork
            # (EBADF otherwise). Python's own fds are not inheritable, so nothing else leaks.
            self.proc = subprocess.Popen(
                argv, close_fds=False, preexec_fn=give_fds, env=env, cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        finally:
            theirs.close()

    def send(self, term):
        self.sock.sendall(frame(encode(term)))

    def send_raw(self, body):
        self.sock.sendall(frame(body))

    def ask(self, term):
        self.send(term)
        return self.recv()

    def recv(self):
        return read_frame(self.sock)

    def recv_raw(self):
        """The next answer's BERT bytes, undecoded."""
        header = read_exactly(self.sock, 4)
        return read_exactly(self.sock, struct.unpack(">I", header)[0])

    def stop(self):
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.communicate(timeout=5)


class HandlerTest(unittest.TestCase):
    def start(self, argv=None, **kw):
        h = Handler(argv or ["ruby", "-I", LIB, EXT], **kw)
        self.addCleanup(h.stop)
        return h

    def setUp(self):
        self.h = self.start()

    def test_call_answers_reply(self):
        self.assertEqual(self.h.ask(call("ext", "add", [1, 2])), (A("reply"), 3))

    def test_old_mod_fun_dsl_defines_functions(self):
        self.assertEqual(self.h.ask(call("calc", "mul", [6, 7])), (A("reply"), 42))

    def test_cast_answers_noreply_and_the_work_runs(self):
        t0 = time.monotonic()
        self.assertEqual(self.h.ask((A("cast"), A("ext"), A("slow"), [300])), (A("noreply"),))
        # The handler answers a cast once its work is done, so bertd knows when the worker is free.
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.assertEqual(self.h.ask((A("cast"), A("ext"), A("fail"), [b"x"])), (A("noreply"),))
        self.assertEqual(self.h.ask((A("cast"), A("nope"), A("f"), [])), (A("noreply"),))
        self.assertEqual(self.h.ask(call("ext", "add", [1, 1])), (A("reply"), 2))

    def test_info_frames_are_read_and_not_answered(self):
        self.h.send((A("info"), A("priority"), [A("low")]))
        self.h.send((A("info"), A("cache"), [A("validation"), b"token"]))
        self.assertEqual(self.h.ask(call("ext", "add", [2, 2])), (A("reply"), 4))
        # Had the infos been answered, these answers would be out of step.
        self.assertEqual(self.h.ask(call("ext", "add", [3, 3])), (A("reply"), 6))

    def test_unknown_function_is_server_error_2(self):
        err = (A("server"), 2, b"ServerError", b"No such function 'ext:mcfail'", [])
        self.assertEqual(self.h.ask(call("ext", "mcfail", [])), (A("error"), err))
        # Private methods of an exposed module are not functions.
        self.assertEqual(self.h.ask(call("ext", "helper", []))[1][3], b"No such function 'ext:helper'")

    def test_unknown_module_is_server_error_1(self):
        err = (A("server"), 1, b"ServerError", b"No such module 'failboat'", [])
        self.assertEqual(self.h.ask(call("failboat", "add", [1, 2])), (A("error"), err))

    def test_ruby_exception_is_user_error_with_class_message_backtrace(self):
        kind, (etype, code, klass, message, trace) = self.h.ask(call("ext", "fail", [b"it broke"]))
        self.assertEqual((kind, etype, code, klass, message), (A("error"), A("user"), 0, b"RuntimeError", b"it broke"))
        self.assertTrue(trace and all(isinstance(line, bytes) for line in trace), trace)
        self.assertIn(b"ext.rb:", trace[0])
        self.assertIn(b"fail", trace[0])
        # Wrong arity is the caller's mistake, reported as Ruby's ArgumentError.
        kind, err = self.h.ask(call("ext", "add", [1]))
        self.assertEqual((kind, err[0], err[2]), (A("error"), A("user"), b"ArgumentError"))

    def test_bert_types_arrive_as_ruby_types_and_return_unchanged(self):
        arg = (b"bin", A("atom"), [1, 2], (A("t"),), 1.5)
        types = [b"BERT::Tuple", [b"String", b"Symbol", b"Array", b"BERT::Tuple", b"Float"]]
        self.assertEqual(self.h.ask(call("ext", "types", [arg])), (A("reply"), types))
        for value in [b"h\xc3\xa9llo", b"\xff\x00", A("ok"), A("h\u00e9"), 0.1 + 0.2, 2**31, -(2**31), 2**70,
                      -300, [], [b"a", [A("b")]], (), (A("x"), 1), BERT_NIL, BERT_TRUE,
                      (A("bert"), A("dict"), [(A("k"), b"v")])]:
            self.assertEqual(self.h.ask(call("ext", "echo", [value])), (A("reply"), value), value)

    def test_every_tag_ruby_bert_lacks_comes_back_byte_for_byte(self):
        value = b"l\x00\x00\x00\x08" + FUN + PID + PORT + V4_PORT + REF + EXPORT + BITS + b"h\x01" + FUN
        value += b"j"
        self.h.send_raw(b"\x83h\x04d\x00\x04calld\x00\x03extd\x00\x04echol\x00\x00\x00\x01" + value + b"j")
        self.assertEqual(self.h.recv_raw(), b"\x83h\x02d\x00\x05reply" + value)

    def test_answers_write_floats_as_float_ext_unless_switched_to_new_float(self):
        self.h.send(call("ext", "echo", [[0.1 + 0.2, -0.0]]))
        old = b"".join(b"c" + text.ljust(31, b"\0")
                       for text in (b"3.00000000000000044409e-01", b"-0.00000000000000000000e+00"))
        self.assertEqual(self.h.recv_raw(), b"\x83h\x02d\x00\x05replyl\x00\x00\x00\x02" + old + b"j")
        with tempfile.TemporaryDirectory() as tmp:
            script = os.path.join(tmp, "h.rb")
            with open(script, "w") as f:
                f.write("require 'ernie'\nErnie.float_format = :new\n"
                        "Ernie.mod(:m) { fun(:half) { |x| x / 2.0 } }\n")
            h = self.start(["ruby", "-I", LIB, script])
            h.send(call("m", "half", [5]))
            self.assertEqual(h.recv_raw(), b"\x83h\x02d\x00\x05replyF" + struct.pack(">d", 2.5))

    def test_undecodable_frame_is_protocol_error_and_the_loop_goes_on(self):
        self.h.send_raw(b"\x83\xee")
        kind, err = self.h.recv()
        self.assertEqual((kind, err[0], err[1], err[2]), (A("error"), A("protocol"), 2, b"ProtocolError"))
        self.assertEqual(self.h.ask(call("ext", "add", [1, 2])), (A("reply"), 3))

    def test_exits_cleanly_on_eof(self):
        self.assertEqual(self.h.ask(call("ext", "add", [1, 2])), (A("reply"), 3))
        self.h.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(self.h.proc.wait(timeout=5), 0)
        self.assertIsNone(self.h.recv())
        self.assertEqual(self.h.proc.stderr.read(), b"")

    def test_ernie_handler_runs_unchanged_with_rubylib(self):
        env = dict(os.environ, RUBYLIB=LIB)
        h = self.start(["ruby", EXT], env=env)
        self.assertEqual(h.ask(call("ext", "add", [4, 5])), (A("reply"), 9))

    def test_bertd_name_top_level_dsl_logfile_and_explicit_start(self):
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "handler.log")
            script = os.path.join(tmp, "h.rb")
            with open(script, "w") as f:
                f.write(
                    "require 'bertd'\n"
                    "module Math2\n  def double(x)\n    x * 2\n  end\nend\n"
                    "Bertd.expose(:m2, Math2)\n"
                    "mod(:old) do\n  fun(:hello) { |n| \"hello #{n}\" }\n  fun(:opaque) { Object.new }\nend\n"
                    f"logfile({log!r})\n"
                    "loglevel(Logger::DEBUG)\n"
                    "Bertd.auto_start = false\n"
                    "Bertd.start\n"
                    "$stdout.puts 'loop ended'\n"
                )
            h = self.start(["ruby", "-I", LIB, script])
            self.assertEqual(h.ask(call("m2", "double", [21])), (A("reply"), 42))
            self.assertEqual(h.ask(call("old", "hello", [b"you"])), (A("reply"), b"hello you"))
            # A result BERT cannot carry is the handler's error, and the worker goes on.
            kind, err = h.ask(call("old", "opaque", []))
            self.assertEqual((kind, err[0], err[2]), (A("error"), A("user"), b"RuntimeError"))
            self.assertIn(b"Cannot encode", err[3])
            self.assertEqual(h.ask(call("m2", "double", [1])), (A("reply"), 2))
            h.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(h.proc.wait(timeout=5), 0)
            # Explicit start returned at EOF, and at_exit did not start a second loop.
            self.assertEqual(h.proc.stdout.read(), b"loop ended\n")
            with open(log) as f:
                text = f.read()
            self.assertIn("double", text)
            self.assertIn("hello you", text)


# ---- the codec against Erlang ------------------------------------------------------------------------


class CodecAgainstErlang(unittest.TestCase):
    """Erlang-made terms of every tag ruby-bert lacks (and floats in both forms) decode in Ruby and
    re-encode to Erlang's own bytes; Ruby-made values decode in Erlang to the term their Erlang text
    says, with the bytes term_to_binary writes for it."""

    @classmethod
    def setUpClass(cls):
        for tool in ("escript", "ruby"):
            if shutil.which(tool) is None:
                raise AssertionError(f"{tool} is not installed; contrib/install-deps installs it")
        with tempfile.TemporaryDirectory(prefix="ruby-diff-") as tmp:
            erl_terms, ruby_cases, verdicts = (os.path.join(tmp, n) for n in ("erl", "ruby", "verdicts"))
            run = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, cwd=tmp, check=True)
            subprocess.run(["escript", RUBY_DIFF, "terms", erl_terms], **run)
            p = subprocess.run(["ruby", "-I", LIB, CODEC_DIFF, erl_terms, ruby_cases], **run)
            cls.report = json.loads(p.stdout)
            subprocess.run(["escript", RUBY_DIFF, "check", ruby_cases, verdicts], **run)
            with open(verdicts) as f:
                cls.verdicts = f.read().splitlines()

    def test_erlang_terms_of_every_tag_reencode_to_erlangs_bytes_in_both_float_forms(self):
        self.assertEqual(self.report["failures"], [])
        self.assertGreater(self.report["records"], 200)
        kinds = {"BERTD::Fun", "BERTD::Export", "BERTD::Pid", "BERTD::Port", "BERTD::Ref", "BERTD::BitBinary",
                 "Float"}
        self.assertEqual(set(self.report["kinds"]), kinds)
        self.assertGreater(self.report["kinds"]["Float"], 200)

    def test_ruby_values_decode_in_erlang_to_their_term_with_the_bytes_erlang_writes(self):
        self.assertGreater(len(self.verdicts), 500)
        wrong = [(i, v) for i, v in enumerate(self.verdicts) if v != "ok"]
        self.assertEqual(wrong, [])


class CodecMalformed(unittest.TestCase):
    """Bad bytes in the new tags are a RuntimeError from BERTD::Codec.decode (the handler then answers a
    protocol error), never a value, a hang or another exception."""

    PROGRAM = (
        "require 'bertd/codec'\n"
        "$stdin.each_line do |hex|\n"
        "  value = BERTD::Codec.decode([hex.strip].pack('H*'))\n"
        "  puts \"value #{value.inspect}\"\n"
        "rescue RuntimeError => e\n"
        "  puts \"error #{e.message}\"\n"
        "end\n"
    )

    def decode_all(self, inputs):
        p = subprocess.run(["ruby", "-I", LIB, "-e", self.PROGRAM],
                           input="".join(b.hex() + "\n" for b in inputs),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.splitlines()

    def test_truncated_and_inconsistent_terms_are_errors(self):
        fun = b"\x83" + FUN
        tags = (FUN, PID, PORT, V4_PORT, REF, EXPORT, BITS)
        bad = [b"\x83" + t[:cut] for t in tags for cut in range(len(t))]
        bad += [
            fun[:5] + b"\x4b" + fun[6:] + b"\0",          # size short of what the fun holds
            fun[:5] + b"\x4d" + fun[6:] + b"\x6a",        # size beyond it
            b"\x83p\x00\x00\x00\x1c" + b"\0" * 40,       # size below the fixed fields
            b"\x83X\x61\x01" + b"\0" * 12,                # pid whose node is not an atom
            b"\x83Z\x00\x00" + NODE + b"\0" * 4,          # reference without id words
            b"\x83Z\x00\x09" + NODE + b"\0" * 40,         # too many id words
            b"\x83qa\x01d\x00\x01fa\x01",                 # export with a non-atom module
            b"\x83M\x00\x00\x00\x01\x00\x01",             # bit string of 0 bits
            b"\x83M\x00\x00\x00\x01\x09\x01",
            b"\x83c" + b"not a float".ljust(31, b"\0"),     # FLOAT_EXT garbage (ruby-bert says 0.0)
            b"\x83F" + struct.pack(">d", float("inf")),
        ]
        lines = self.decode_all(bad)
        self.assertEqual(len(lines), len(bad))
        wrong = [(b.hex(), line) for b, line in zip(bad, lines) if not line.startswith("error ")]
        self.assertEqual(wrong, [])


# ---- the client ----------------------------------------------------------------------------------------


class FakeServer:
    """A BERP server thread on 127.0.0.1: records (connection number, term) and the frames' bytes, and
    answers by function name."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.received = []
        self.received_raw = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.conns = []
        self.acceptor = threading.Thread(target=self.accept_loop, daemon=True)
        self.acceptor.start()

    def accept_loop(self):
        n = 0
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            n += 1
            conn.settimeout(10)
            t = threading.Thread(target=self.serve, args=(conn, n), daemon=True)
            with self.lock:
                self.conns.append(conn)
                self.threads.append(t)
            t.start()

    def serve(self, conn, n):
        try:
            while not self.stopping.is_set():
                header = read_exactly(conn, 4)
                body = header and read_exactly(conn, struct.unpack(">I", header)[0])
                if body is None:
                    return
                term = decode(body)
                with self.lock:
                    self.received.append((n, term))
                    self.received_raw.append(body)
                if term[0] == A("info"):
                    continue
                answer = self.answer(term)
                if answer == "close":
                    return
                if answer == "hold":
                    read_exactly(conn, 1)  # until the client gives up and closes
                    return
                conn.sendall(frame(answer) if isinstance(answer, bytes) else frame(encode(answer)))
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def answer(term):
        kind, mod, fun, args = term
        if kind == A("cast"):
            return (A("noreply"),)
        if mod == A("failboat"):
            return (A("error"), (A("server"), 1, b"ServerError", b"No such module 'failboat'", []))
        table = {
            "add": lambda: (A("reply"), sum(args)),
            "echo": lambda: (A("reply"), args[0]),
            "fail": lambda: (A("error"), (A("user"), 0, b"RuntimeError", args[0], [b"ext.rb:15:in `fail'"])),
            "protocol": lambda: (A("error"), (A("protocol"), 1, b"ProtocolError", b"Unable to read header", [])),
            "proxy": lambda: (A("error"), (A("proxy"), 0, b"ProxyError", b"upstream down", [])),
            "garbage": lambda: b"\x83\xee\xee",
            "close": lambda: "close",
            "slow": lambda: "hold",
        }
        make = table.get(str(fun))
        if make is None:
            return (A("error"), (A("server"), 2, b"ServerError", f"No such function 'ext:{fun}'".encode(), []))
        return make()

    def stop(self):
        self.stopping.set()
        self.listener.close()
        with self.lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.acceptor.join(5)
        for t in threads:
            t.join(5)


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ClientTest(unittest.TestCase):
    """One Ruby run of client_check.rb against the fake server; each test judges one part of it."""

    @classmethod
    def setUpClass(cls):
        cls.server = FakeServer()
        try:
            proc = subprocess.Popen(
                ["ruby", "-I", LIB, CLIENT_CHECK, str(cls.server.port), str(closed_port())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                out, err = proc.communicate(timeout=20)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            if proc.returncode != 0:
                raise AssertionError(f"client_check.rb failed ({proc.returncode}): {err.decode()}")
            cls.out = json.loads(out)
        finally:
            cls.server.stop()
        cls.received = cls.server.received
        cls.received_raw = cls.server.received_raw

    def error(self, key):
        self.assertIn("error", self.out[key], self.out[key])
        return self.out[key]["error"]

    def connection_of(self, term):
        conns = [n for n, t in self.received if t == term]
        self.assertEqual(len(conns), 1, (term, self.received))
        return conns[0]

    def frames_on(self, n):
        return [t for m, t in self.received if m == n]

    def test_call_returns_the_reply(self):
        self.assertEqual(self.out["add"], {"value": 3})
        self.assertEqual(self.out["explicit"], {"value": 15})

    def test_cast_returns_nil_and_sends_a_cast(self):
        self.assertEqual(self.out["cast"], {"value": None})
        self.connection_of((A("cast"), A("ext"), A("add"), [5, 6]))

    def test_one_connection_per_request_by_default(self):
        a = self.connection_of(call("ext", "add", [1, 2]))
        b = self.connection_of((A("cast"), A("ext"), A("add"), [5, 6]))
        self.assertNotEqual(a, b)
        self.assertEqual(self.frames_on(a), [call("ext", "add", [1, 2])])

    def test_priority_sends_info_frame_before_the_request(self):
        self.assertEqual(self.out["low"], {"value": 5})
        n = self.connection_of(call("ext", "add", [2, 3]))
        self.assertEqual(self.frames_on(n), [(A("info"), A("priority"), [A("low")]), call("ext", "add", [2, 3])])
        n = self.connection_of(call("ext", "add", [7, 8]))
        self.assertEqual(self.frames_on(n)[0], (A("info"), A("priority"), [A("high")]))

    def test_values_round_trip_with_ruby_types(self):
        self.assertEqual(self.out["echo_equal"], {"value": [True] * 7})
        self.assertEqual(self.out["echo_tuple_class"], {"value": "BERT::Tuple"})
        # A Ruby String travels as a binary, a float as FLOAT_EXT, a Hash as {bert, dict, ...}.
        echoed = [t[3][0] for _, t in self.received if t[0] == A("call") and t[2] == A("echo")]
        self.assertIn(b"h\xc3\xa9llo", echoed)
        self.assertIn(0.1 + 0.2, echoed)
        self.assertIn((A("bert"), A("dict"), [(b"k", [A("a"), BERT_NIL, BERT_TRUE])]), echoed)

    def test_floats_go_as_float_ext_unless_the_service_says_new_and_answers_read_in_both_forms(self):
        echo = b"\x83h\x04d\x00\x04calld\x00\x03extd\x00\x04echol\x00\x00\x00\x01"
        self.assertIn(echo + b"c2.50000000000000000000e+00\0\0\0\0\0j", self.received_raw)
        self.assertIn(echo + b"F" + struct.pack(">d", 0.75) + b"j", self.received_raw)
        # The fake server answers NEW_FLOAT: both services read it.
        self.assertEqual(self.out["float_ernie"], {"value": 2.5})
        self.assertEqual(self.out["float_new"], {"value": 0.75})
        self.assertEqual(self.error("float_bad")["class"], "ArgumentError")
        self.assertIn("float_format must be one of :ernie, :new", self.error("float_bad")["message"])

    def test_user_error(self):
        e = self.error("user")
        self.assertEqual((e["class"], e["type"], e["code"]), ("BERTD::UserError", "user", 0))
        self.assertEqual((e["remote_class"], e["message"]), ("RuntimeError", "boom"))
        self.assertEqual(e["remote_backtrace"], ["ext.rb:15:in `fail'"])
        self.assertEqual(e["original"], "RuntimeError: boom")
        self.assertEqual(e["original_backtrace"], ["ext.rb:15:in `fail'"])
        self.assertIn("BERTD::RPCError", e["ancestors"])

    def test_server_errors(self):
        e = self.error("server_module")
        self.assertEqual((e["class"], e["code"], e["message"]), ("BERTD::ServerError", 1, "No such module 'failboat'"))
        e = self.error("server_function")
        self.assertEqual((e["class"], e["code"], e["message"]), ("BERTD::ServerError", 2, "No such function 'ext:mcfail'"))

    def test_protocol_and_proxy_errors(self):
        e = self.error("protocol")
        self.assertEqual((e["class"], e["code"], e["remote_class"]), ("BERTD::ProtocolError", 1, "ProtocolError"))
        e = self.error("proxy")
        self.assertEqual((e["class"], e["message"]), ("BERTD::ProxyError", "upstream down"))
        self.assertIn("BERTD::RPCError", e["ancestors"])

    def test_transport_errors(self):
        self.assertEqual(self.error("refused")["class"], "BERTD::ConnectionError")
        self.assertEqual(self.error("closed")["class"], "BERTD::ConnectionError")
        self.assertEqual(self.error("garbage")["class"], "BERTD::InvalidReply")
        e = self.error("timeout")
        self.assertEqual(e["class"], "BERTD::ReadTimeoutError")
        self.assertIn("BERTD::ConnectionError", e["ancestors"])
        self.assertGreaterEqual(self.out["timeout_seconds"], 0.29)
        self.assertLess(self.out["timeout_seconds"], 2)

    def test_bad_requests_are_refused_before_sending(self):
        self.assertEqual(self.error("bad_option")["class"], "BERTD::InvalidOption")
        self.assertEqual(self.error("unencodable")["class"], "BERTD::InvalidRequest")

    def test_persistent_connection_is_reused(self):
        self.assertEqual(self.out["persistent"], {"value": [101, 102, 103]})
        self.assertEqual(self.out["persistent_after_error"], {"value": 201})
        conns = {self.connection_of(call("ext", "add", [100, i])) for i in (1, 2, 3)}
        self.assertEqual(len(conns), 1)
        n = conns.pop()
        self.assertEqual(self.connection_of(call("ext", "add", [200, 1])), n)

    def test_bertrpc_gem_names(self):
        self.assertEqual(self.out["compat_add"], {"value": 4})
        self.assertEqual(self.out["compat_cache"], {"value": 301})
        self.assertEqual(self.out["compat_cache_hash"], {"value": 302})
        n = self.connection_of(call("ext", "add", [300, 1]))
        self.assertEqual(self.frames_on(n)[0], (A("info"), A("cache"), [A("validation"), b"tok"]))
        self.assertEqual(self.out["compat_user"]["value"], "rescued BERTD::UserError as BERTRPC::UserError: boom")
        self.assertEqual(self.out["compat_server"]["value"], "rescued as BERTRPC::ServerError: No such module 'failboat'")
        self.assertTrue(self.out["compat_timeout"]["value"].startswith("rescued as BERTRPC::ReadTimeoutError"))
        self.assertEqual(self.out["compat_base"]["value"], "rescued as BERTRPC::BERTRPCError: BERTD::ProtocolError")


if __name__ == "__main__":
    unittest.main()
