"""test_pybertd_erl.py: differential test of the Python BERT codec against the real Erlang VM (/usr/bin/erl
via escript): Python's bytes must decode in Erlang to the expected term and re-encode identically, and
term_to_binary bytes must decode in Python and re-encode identically, every tag OTP 25 writes among them
(funs, bit strings, foreign pids, ports and references), and so must the bytes of
term_to_binary(T, [{minor_version, 0}]) with float_format="ernie". Runs one bounded escript; leaves no
process or file behind.
"""
import datetime
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import unittest

from bertd.bert import Atom, BitBinary, Export, Fun, ImproperList, Map, decode, encode

HERE = os.path.dirname(os.path.abspath(__file__))
ESCRIPT = os.path.join(HERE, "pybertd_diff.escript")
UTC = datetime.timezone.utc


def erlang_text(value):
    """Erlang source text of the term a Python value stands for (written independently of the encoder)."""
    if value is None:
        return "{bert,nil}"
    if value is True:
        return "{bert,true}"
    if value is False:
        return "{bert,false}"
    if isinstance(value, Atom):
        return "'" + "".join(_atom_char(c) for c in value) + "'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        return mantissa + ("e" + exponent if exponent else "")
    if isinstance(value, str):
        return erlang_text(value.encode("utf-8"))
    if isinstance(value, bytes):
        return "<<" + ",".join(str(b) for b in value) + ">>"
    if isinstance(value, Export):
        return f"fun {erlang_text(value.module)}:{erlang_text(value.function)}/{value.arity}"
    if isinstance(value, BitBinary):
        parts = [str(b) for b in value.data[:-1]]
        parts.append(f"{value.data[-1] >> (8 - value.bits)}:{value.bits}")
        return "<<" + ",".join(parts) + ">>"
    if isinstance(value, tuple):
        return "{" + ",".join(erlang_text(x) for x in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(erlang_text(x) for x in value) + "]"
    if isinstance(value, ImproperList):
        return "[" + ",".join(erlang_text(x) for x in value.items) + "|" + erlang_text(value.tail) + "]"
    if isinstance(value, Map):
        return "#{" + ",".join(f"{erlang_text(k)}=>{erlang_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, dict):
        pairs = ",".join("{" + erlang_text(k) + "," + erlang_text(v) + "}" for k, v in value.items())
        return "{bert,dict,[" + pairs + "]}"
    if isinstance(value, datetime.datetime):
        micros = (value - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(microseconds=1)
        return f"{{bert,time,{micros // 10**12},{micros // 10**6 % 10**6},{micros % 10**6}}}"
    if isinstance(value, re.Pattern):
        names = [n for n, f in (("caseless", re.I), ("extended", re.X), ("multiline", re.M), ("dotall", re.S))
                 if value.flags & f]
        source = value.pattern if isinstance(value.pattern, bytes) else value.pattern.encode()
        return "{bert,regex," + erlang_text(source) + ",[" + ",".join(names) + "]}"
    raise TypeError(type(value))


def _atom_char(c):
    if c in "'\\":
        return "\\" + c
    if ord(c) < 32 or ord(c) == 127:
        return "\\x{%x}" % ord(c)
    return c


class _Gen:
    """Random Python values whose Erlang text the printer above can write."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def char(self):
        r = self.rng
        return chr(r.choice([r.randint(0x20, 0x7e), r.randint(0xa0, 0xff), r.randint(0x4e00, 0x4fff),
                             r.randint(0x1f600, 0x1f64f), r.choice([0x27, 0x5c, 0x0a])]))

    def atom(self):
        n = self.rng.choice([0, 1, 3, 8, 20, 255]) if self.rng.random() < 0.2 else self.rng.randint(1, 10)
        return Atom("".join(self.char() for _ in range(n)))

    def float(self):
        while True:
            (x,) = struct.unpack(">d", self.rng.getrandbits(64).to_bytes(8, "big"))
            if x == x and abs(x) != float("inf"):
                return x

    def int(self):
        r = self.rng
        kind = r.randint(0, 4)
        if kind == 0:
            return r.randint(0, 255)
        if kind == 1:
            return r.randint(-(2**31), 2**31 - 1)
        if kind == 2:
            return r.choice([-1, 1]) * r.getrandbits(r.randint(32, 300))
        if kind == 3:
            return r.choice([-1, 1]) * r.getrandbits(r.randint(2030, 2060))
        return r.randint(-300, 300)

    def leaf(self):
        r = self.rng
        k = r.randint(0, 11)
        if k <= 2:
            return self.int()
        if k == 3:
            return self.float()
        if k == 4:
            return self.atom()
        if k == 5:
            return r.randbytes(r.randint(0, 30))
        if k == 6:
            return "".join(self.char() for _ in range(r.randint(0, 8)))
        if k == 7:
            return r.choice([None, True, False, []])
        if k == 8:
            micros = r.randint(-(10**16), 10**17)
            return datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=micros)
        if k == 9:
            return r.choice([re.compile("a+b"), re.compile("^x$", re.I | re.M),
                             re.compile(r"\d", re.S | re.X)])
        if k == 10:
            return BitBinary(r.randbytes(r.randint(1, 4)), r.randint(1, 7))
        return [r.randint(0, 255) for _ in range(r.randint(1, 20))]  # a string

    def key(self):
        r = self.rng
        return r.choice([lambda: r.randint(-5, 1000), self.atom, lambda: r.randbytes(r.randint(0, 4)),
                         lambda: (self.atom(), r.randint(0, 9)), self.float])()

    def term(self, depth):
        r = self.rng
        if depth == 0:
            return self.leaf()
        k = r.randint(0, 11)
        if k == 0:
            return tuple(self.term(depth - 1) for _ in range(r.randint(0, 5)))
        if k == 1:
            return [self.term(depth - 1) for _ in range(r.randint(0, 5))]
        if k == 2:
            return Map({self.key(): self.term(depth - 1) for _ in range(r.randint(0, 6))})
        if k == 3:
            tail = r.choice([self.atom(), r.randint(0, 9), b"t", (1,)])
            return ImproperList([self.term(depth - 1) for _ in range(r.randint(1, 3))], tail)
        if k == 4:
            return {self.key(): self.term(depth - 1) for _ in range(r.randint(0, 4))}
        return self.leaf()


def python_cases():
    cases = [
        0, 255, 256, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**64, 2**2039, 2**2040, -(2**2048),
        2**8000, 0.0, -0.0, 1.5, 1e300, 5e-324, -2.2250738585072014e-308,
        Atom(""), Atom("ok"), Atom("with space"), Atom("quote's"), Atom("back\\slash"), Atom("\xe9t\xe9"),
        Atom("\u4f60\u597d"), Atom("\u20ac" * 100), Atom("z" * 255), Atom("\U0001f600"), Atom("nl\n"),
        (), (1,), tuple(range(256)), tuple(range(300)), [], [1, 2, 3], list(range(256)), [1000, 2000],
        [0] * 65535, [0] * 65536, [[]], ImproperList([1, 2], 3), ImproperList([Atom("a")], Atom("b")),
        b"", b"\x00\xff", b"x" * 70000, "h\xe9llo \u4e16\u754c", BitBinary(b"\x20", 3),
        BitBinary(b"\x01\x02\xf8", 5), Map(), Map({Atom("a"): 1, 1: Atom("a"), 2.5: b"b", b"k": [Atom("x")]}),
        Map({100: 1, 1.0: 2, Atom("z"): 3, 0: 4, -5: 5, (1, 2): 6, (1,): 7, b"": 8, 1e300: 9}),
        Map({i: i for i in range(32)}),
        None, True, False, {}, {b"a": 1, Atom("b"): [None, True]},
        datetime.datetime(2010, 2, 20, 11, 42, 25, 259750, tzinfo=UTC),
        datetime.datetime(1960, 1, 1, tzinfo=UTC),
        re.compile("^a+"), re.compile("x", re.I | re.X | re.M | re.S),
        (Atom("call"), Atom("calc"), Atom("add"), [1, 2]),
        (Atom("error"), (Atom("user"), 0, b"RuntimeError", b"boom", [b"calc.rb:5:in `fail'"])),
        Export(Atom("lists"), Atom("map"), 2), [Export(Atom("erlang"), Atom("+"), 2), BitBinary(b"\xa0", 3)],
    ]
    gen = _Gen(2024)
    cases += [gen.term(3) for _ in range(320)]
    return [(value, "new") for value in cases] + [(value, "ernie") for value in ernie_cases()]


def ernie_cases():
    """Values written again with float_format="ernie": every float form, and floats inside containers."""
    gen = _Gen(1999)
    floats = [0.0, -0.0, 1.0, 2.5, 0.1 + 0.2, 1e300, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308,
              123456789.123456789, 1e22, 1e-7]
    floats += [gen.float() for _ in range(200)]
    return floats + [[2.5, (0.5, Map({1.5: 2.5}))], {b"k": -0.25}, ImproperList([1.0], 2.0)]


class AgainstErlang(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        escript = shutil.which("escript")
        if escript is None:
            raise AssertionError("escript (erlang-nox) is not installed; contrib/install-deps installs it")
        cls.cases = python_cases()
        with tempfile.TemporaryDirectory(prefix="pybertd-diff-") as tmp:
            py_cases = os.path.join(tmp, "py_cases.bin")
            with open(py_cases, "wb") as f:
                for value, float_format in cls.cases:
                    body = encode(value, float_format)
                    text = erlang_text(value).encode("utf-8")
                    f.write(struct.pack(">I", len(body)) + body + struct.pack(">I", len(text)) + text)
            py_results = os.path.join(tmp, "py_results.bin")
            erl_cases = os.path.join(tmp, "erl_cases.bin")
            proc = subprocess.run([escript, ESCRIPT, py_cases, py_results, erl_cases], cwd=tmp,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if proc.returncode != 0:
                raise AssertionError(f"escript failed ({proc.returncode}): {proc.stdout.decode()[-2000:]}")
            with open(py_results, "rb") as f:
                cls.py_results = f.read()
            with open(erl_cases, "rb") as f:
                cls.erl_cases = f.read()

    @staticmethod
    def records(data, count_fields, status=False):
        pos = 0
        while pos < len(data):
            fields = []
            st = None
            if status:
                st = data[pos]
                pos += 1
            for _ in range(count_fields):
                (n,) = struct.unpack_from(">I", data, pos)
                fields.append(data[pos + 4:pos + 4 + n])
                pos += 4 + n
            yield (st, *fields)

    def test_python_encodings_decode_in_erlang_to_the_expected_term_and_reencode_identically(self):
        results = list(self.records(self.py_results, 2, status=True))
        self.assertEqual(len(results), len(self.cases))
        self.assertGreater(len(results), 300)
        for (value, _), (status, erl_bytes, expected_bytes) in zip(self.cases, results):
            with self.subTest(value=repr(value)[:200]):
                self.assertNotEqual(status, 2, "binary_to_term refused Python's bytes")
                self.assertNotEqual(status, 3, f"the test's Erlang text did not parse: {erlang_text(value)}")
                self.assertEqual(status, 1, f"Erlang decoded {erl_bytes!r}, expected {expected_bytes!r}")
                self.assertEqual(erl_bytes, encode(value))

    def test_erlang_encodings_decode_in_python_and_reencode_identically(self):
        records = list(self.records(self.erl_cases, 3))
        self.assertGreater(len(records), 250)
        for _, plain, compressed, _ in records:
            with self.subTest(bytes=plain[:60]):
                value = decode(plain)
                self.assertEqual(encode(value), plain)
                if compressed != plain:
                    self.assertEqual(decode(compressed), value)
        # The Erlang side covered every tag OTP 25 writes, compressed terms and FLOAT_EXT included.
        self.assertEqual(self.tags(self.erl_cases), {
            70, 77, 80, 88, 89, 90, 97, 98, 99, 100, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 116,
            118, 119, 120})

    def test_erlang_minor_version_0_encodings_reencode_identically_with_float_format_ernie(self):
        records = list(self.records(self.erl_cases, 3))
        with_old_floats = 0
        for _, plain, _, ernie in records:
            with self.subTest(bytes=ernie[:60]):
                value = decode(ernie)
                self.assertEqual(encode(value, float_format="ernie"), ernie)
                # FLOAT_EXT text holds every bit of the double: the same value as NEW_FLOAT's. (Not for
                # a fun closing over a float: it is opaque, and keeps the form it was read in.)
                if ernie != plain and 112 not in _tags_of(plain):
                    with_old_floats += 1
                    self.assertEqual(encode(value), plain)
        self.assertGreater(with_old_floats, 50)

    def tags(self, data):
        """The tag bytes of every term in the records, nested ones included (as decode() met them)."""
        found = set()
        for _, *fields in self.records(data, 3):
            for raw in fields:
                found.update(_tags_of(raw))
        return found


def _tags_of(raw):
    """The set of tags that decoding raw dispatched on (compression included)."""
    from bertd import bert
    seen = {bert.COMPRESSED} if raw[1] == bert.COMPRESSED else set()
    original = dict(bert._DISPATCH)

    def counting(tag, method):
        def read(decoder, depth):
            seen.add(tag)
            return method(decoder, depth)
        return read

    bert._DISPATCH.update({tag: counting(tag, method) for tag, method in original.items()})
    try:
        decode(raw)
    finally:
        bert._DISPATCH.update(original)
    return seen


if __name__ == "__main__":
    unittest.main()
