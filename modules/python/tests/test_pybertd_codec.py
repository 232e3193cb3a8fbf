"""test_pybertd_codec.py: unit tests of bertd.bert, the Python BERT codec: exact bytes, round trips of
every type, and that malformed input only ever raises DecodeError. Needs no other process.
"""
import datetime
import io
import os
import re
import socket
import struct
import threading
import unittest
import zlib

from bertd import bert
from bertd.bert import (Atom, BitBinary, DecodeError, EncodeError, Export, Fun, ImproperList, Map, Pid, Port,
                        Ref, decode, encode)

UTC = datetime.timezone.utc


# term_to_binary(fz:adder(<<"x">>)) on OTP 25, where adder(V) -> fun(X) -> {X, V} end: a NEW_FUN_EXT
# closing over one value.
FUN_BYTES = bytes([
    131, 112, 0, 0, 0, 76, 1, 154, 113, 210, 63, 6, 14, 93, 212, 198, 234, 231, 220, 13, 235, 179, 105, 0, 0,
    0, 0, 0, 0, 0, 1, 100, 0, 2, 102, 122, 97, 0, 98, 4, 211, 142, 145, 88, 100, 0, 13, 110, 111, 110, 111,
    100, 101, 64, 110, 111, 104, 111, 115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 109, 0, 0, 0, 1, 120])
# term_to_binary([1.5, 0.1 + 0.2, -0.0, 5.0e-324], [{minor_version, 0}]) on OTP 25.
ERNIE_TEXTS = (b"1.50000000000000000000e+00", b"3.00000000000000044409e-01", b"-0.00000000000000000000e+00",
               b"4.94065645841246544177e-324")
ERNIE_FLOATS = bytes([131, 108, 0, 0, 0, 4]) + b"".join(b"c" + t.ljust(31, b"\0") for t in ERNIE_TEXTS) + b"j"


def v(*parts):
    """BERT bytes: version byte then the given ints/bytes."""
    out = bytearray([131])
    for p in parts:
        out += bytes([p]) if isinstance(p, int) else p
    return bytes(out)


class ExactBytes(unittest.TestCase):
    """Encodings chosen the way term_to_binary/1 chooses them (values checked against OTP 25)."""

    CASES = [
        (0, v(97, 0)),
        (255, v(97, 255)),
        (256, v(98, b"\x00\x00\x01\x00")),
        (-1, v(98, b"\xff\xff\xff\xff")),
        (2**31 - 1, v(98, b"\x7f\xff\xff\xff")),
        (-(2**31), v(98, b"\x80\x00\x00\x00")),
        (2**31, v(110, 4, 0, b"\x00\x00\x00\x80")),
        (-(2**31) - 1, v(110, 4, 1, b"\x01\x00\x00\x80")),
        (2**64, v(110, 9, 0, b"\x00" * 8 + b"\x01")),
        (1.5, v(70, struct.pack(">d", 1.5))),
        (-0.0, v(70, b"\x80" + b"\x00" * 7)),
        (Atom("abc"), v(100, b"\x00\x03abc")),
        (Atom(""), v(100, b"\x00\x00")),
        (Atom("\xe9b"), v(100, b"\x00\x02\xe9b")),
        (Atom("\u03e8b"), v(119, 3, "\u03e8b".encode())),
        ((), v(104, 0)),
        ((1, Atom("a")), v(104, 2, 97, 1, 100, b"\x00\x01a")),
        ([], v(106)),
        ([1, 2, 3], v(107, b"\x00\x03\x01\x02\x03")),
        ([1, 256], v(108, b"\x00\x00\x00\x02", 97, 1, 98, b"\x00\x00\x01\x00", 106)),
        ([True], v(108, b"\x00\x00\x00\x01", encode(True)[1:], 106)),
        (ImproperList([1], Atom("t")), v(108, b"\x00\x00\x00\x01", 97, 1, 100, b"\x00\x01t")),
        (b"", v(109, b"\x00\x00\x00\x00")),
        (b"ab", v(109, b"\x00\x00\x00\x02ab")),
        ("h\xe9", v(109, b"\x00\x00\x00\x03h\xc3\xa9")),
        (Map(), v(116, b"\x00\x00\x00\x00")),
        (Map({1.0: Atom("b"), 100: Atom("a")}),
         v(116, b"\x00\x00\x00\x02", 97, 100, 100, b"\x00\x01a",
           70, struct.pack(">d", 1.0), 100, b"\x00\x01b")),
        (None, v(104, 2, 100, b"\x00\x04bert", 100, b"\x00\x03nil")),
        (True, v(104, 2, 100, b"\x00\x04bert", 100, b"\x00\x04true")),
        (False, v(104, 2, 100, b"\x00\x04bert", 100, b"\x00\x05false")),
        ({}, v(104, 3, 100, b"\x00\x04bert", 100, b"\x00\x04dict", 106)),
        (BitBinary(b"\x20", 3), v(77, b"\x00\x00\x00\x01", 3, 0x20)),
        (Export(Atom("lists"), Atom("map"), 2), v(113, 100, b"\x00\x05lists", 100, b"\x00\x03map", 97, 2)),
    ]

    def test_encode_matches_term_to_binary(self):
        for value, expected in self.CASES:
            with self.subTest(value=value):
                self.assertEqual(encode(value), expected)

    def test_decode_of_those_bytes_gives_the_value_back(self):
        for value, data in self.CASES:
            if isinstance(value, str) and not isinstance(value, Atom):
                value = value.encode()
            with self.subTest(value=value):
                got = decode(data)
                self.assertEqual(got, value)
                self.assertIs(type(got), type(value))

    def test_long_utf8_atom_uses_atom_utf8(self):
        name = "\u20ac" * 100  # 300 bytes of UTF-8, 100 characters
        data = encode(Atom(name))
        self.assertEqual(data[1], 118)
        self.assertEqual(struct.unpack(">H", data[2:4])[0], 300)
        self.assertEqual(decode(data), name)

    def test_large_tuple_and_large_big(self):
        t = tuple(range(300))
        self.assertEqual(encode(t)[1], 105)
        self.assertEqual(decode(encode(t)), t)
        n = 1 << 4000
        self.assertEqual(encode(n)[1], 111)
        self.assertEqual(decode(encode(-n)), -n)


class RoundTrips(unittest.TestCase):
    def roundtrip(self, value, expected=None):
        got = decode(encode(value))
        self.assertEqual(got, value if expected is None else expected)
        return got

    def test_integers_around_every_boundary(self):
        for base in (0, 255, 2**31, 2**32, 2**63, 2**64, 2**2040, 2**2048):
            for n in (base - 1, base, base + 1, -base - 1, -base, -base + 1):
                with self.subTest(n=n):
                    self.assertEqual(self.roundtrip(n), n)

    def test_floats(self):
        for x in (0.0, -0.0, 1.0, -2.5, 1e300, -1e-300, 5e-324, 3.141592653589793):
            self.assertEqual(struct.pack(">d", self.roundtrip(x)), struct.pack(">d", x))

    def test_non_finite_floats_have_no_encoding(self):
        for x in (float("inf"), float("-inf"), float("nan")):
            with self.assertRaises(EncodeError):
                encode(x)

    def test_atoms_stay_atoms(self):
        names = ("", "ok", "with space", "\xff", "\u00e9t\u00e9", "\u65e5\u672c", "\U0001f600", "a" * 255)
        for name in names:
            got = self.roundtrip(Atom(name))
            self.assertIsInstance(got, Atom)
        with self.assertRaises(EncodeError):
            encode(Atom("a" * 256))

    def test_strings_are_binaries(self):
        got = self.roundtrip("h\u00e9llo \u65e5", "h\u00e9llo \u65e5".encode())
        self.assertIsInstance(got, bytes)
        self.assertEqual(self.roundtrip(bytearray(b"xy"), b"xy"), b"xy")

    def test_containers(self):
        self.roundtrip((1, (2, (3, ())), [b"a", [Atom("b")]]))
        self.roundtrip([[], [[]], [1, [2, [3]]]])
        self.roundtrip(list(range(1000)))
        self.roundtrip([0] * 70000)  # too long for STRING_EXT
        self.roundtrip(Map({Atom("k"): [1, 2], 2: Map({b"x": 1.5}), (1, 2): None}))

    def test_improper_lists(self):
        self.roundtrip(ImproperList([1, 2], b"tail"))
        self.roundtrip(ImproperList([Atom("a")], Map()))
        # [1 | [2]] is just [1, 2]
        self.assertEqual(decode(encode(ImproperList([1], [2]))), [1, 2])
        self.assertEqual(decode(encode(ImproperList([1], ImproperList([2], 3)))), ImproperList([1, 2], 3))

    def test_pids_refs_ports(self):
        node = Atom("bertd@127.0.0.1")
        for value in (Pid(node, 81, 0, 3), Ref(node, 3, (1, 2, 3)), Port(node, 5, 3), Port(node, 2**40, 1)):
            got = self.roundtrip(value)
            self.assertIs(type(got), type(value))

    def test_bert_complex_types(self):
        self.assertIsNone(self.roundtrip(None))
        self.assertIs(self.roundtrip(True), True)
        self.assertIs(self.roundtrip(False), False)
        d = self.roundtrip({b"a": 1, Atom("b"): [None, True], 3: {}})
        self.assertIs(type(d), dict)
        m = self.roundtrip(Map({1: 2}))
        self.assertIs(type(m), Map)

    def test_time(self):
        for dt in (datetime.datetime(2010, 2, 20, 11, 42, 25, 259750, tzinfo=UTC),
                   datetime.datetime(1970, 1, 1, tzinfo=UTC),
                   datetime.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
                   datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
            self.assertEqual(self.roundtrip(dt), dt)
        dt = datetime.datetime(2010, 2, 20, 11, 42, 25, 259750, tzinfo=UTC)
        self.assertEqual(decode(encode(dt), bert_types=False),
                         (Atom("bert"), Atom("time"), 1266, 666145, 259750))
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        self.assertEqual(self.roundtrip(dt.astimezone(plus2)), dt)
        # Naive datetimes are taken as UTC.
        self.assertEqual(self.roundtrip(dt.replace(tzinfo=None), dt), dt)

    def test_regex(self):
        p = self.roundtrip(re.compile(r"^a.b$", re.I | re.M | re.S | re.X))
        self.assertEqual(p.flags & (re.I | re.M | re.S | re.X), re.I | re.M | re.S | re.X)
        raw = decode(encode(re.compile("x+", re.I | re.X)), bert_types=False)
        self.assertEqual(raw, (Atom("bert"), Atom("regex"), b"x+", [Atom("caseless"), Atom("extended")]))
        self.assertEqual(self.roundtrip(re.compile(b"\xff+")).pattern, b"\xff+")

    def test_bert_tuples_without_a_known_shape_stay_tuples(self):
        B = Atom("bert")
        for raw in ((B, Atom("nil"), 1), (B, Atom("other")), (B, Atom("dict"), [1]),
                    (B, Atom("time"), 1, 2), (B, Atom("regex"), b"(", []),
                    (B, Atom("regex"), b"a", [Atom("unicode")]), (B, Atom("dict"), [([1], 2)])):
            with self.subTest(raw=raw):
                self.assertEqual(decode(encode(raw)), raw)

    def test_unencodable_values(self):
        for value in (object(), {1, 2}, 1j, datetime.date(2020, 1, 1), "\ud800", Atom("\ud800"),
                      Pid(Atom("n"), 2**40, 0, 0), Ref(Atom("n"), -1, (1,)), Pid(5, 1, 1, 1),
                      BitBinary(b"", 3), [1, object()]):
            with self.assertRaises(EncodeError):
                encode(value)

    def test_float_format_ernie_writes_floats_as_erlang_minor_version_0_does(self):
        value = [1.5, 0.1 + 0.2, -0.0, 5e-324]
        self.assertEqual(encode(value, float_format="ernie"), ERNIE_FLOATS)
        self.assertEqual(bert.encode_berp(2.5, "ernie"),
                         b"\x00\x00\x00\x21" + v(99, b"2.50000000000000000000e+00\0\0\0\0\0"))
        got = decode(ERNIE_FLOATS)
        self.assertEqual([struct.pack(">d", x) for x in got], [struct.pack(">d", x) for x in value])
        self.assertEqual(encode(value, float_format="new"), encode(value))
        self.assertEqual(encode(value), encode(got))

    def test_float_format_ernie_keeps_every_bit_of_every_double(self):
        import random
        rng = random.Random(5)
        for _ in range(2000):
            (x,) = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))
            if x != x or x in (float("inf"), float("-inf")):
                continue
            data = encode(x, float_format="ernie")
            self.assertEqual((data[1], len(data)), (99, 33))
            self.assertEqual(struct.pack(">d", decode(data)), struct.pack(">d", x))

    def test_ruby_bert_float_text_decodes(self):
        # ruby-bert 1.1.6 writes format("%15.15e", f): 16 digits, so 0.1 + 0.2 arrives as 0.3.
        self.assertEqual(decode(v(99, b"2.500000000000000e+00".ljust(31, b"\0"))), 2.5)
        self.assertEqual(decode(v(99, b"3.000000000000000e-01".ljust(31, b"\0"))), 0.3)

    def test_an_unknown_float_format_is_refused(self):
        for bad in ("old", "NEW", None, 0):
            with self.assertRaises(ValueError):
                encode(1.0, float_format=bad)
        with self.assertRaises(ValueError):
            bert.encode_berp(1, "erlang")

    def test_a_fun_is_opaque_and_encodes_back_byte_for_byte(self):
        fun = decode(FUN_BYTES)
        self.assertIs(type(fun), Fun)
        self.assertEqual((fun.module, fun.arity, fun.index, fun.old_index, fun.free),
                         (Atom("fz"), 1, 0, 0, (b"x",)))
        self.assertEqual(fun.pid.node, Atom("nonode@nohost"))
        self.assertEqual(encode(fun), FUN_BYTES)
        body = FUN_BYTES[1:]
        self.assertEqual(encode([fun, (fun,)]), v(108, b"\0\0\0\2", body, 104, 1, body, 106))
        self.assertEqual(Fun.from_bytes(FUN_BYTES[1:]), fun)
        self.assertEqual(hash(Fun.from_bytes(FUN_BYTES[1:])), hash(fun))
        self.assertEqual(decode(encode(Map({fun: 1})))[fun], 1)
        self.assertIn("Fun(module=Atom('fz'), arity=1", repr(fun))
        self.assertIn("free=(b'x',)", repr(fun))
        other = bytearray(FUN_BYTES)
        other[-1] = ord("y")
        self.assertNotEqual(decode(bytes(other)), fun)
        with self.assertRaises(DecodeError):
            Fun.from_bytes(encode(1)[1:])

    def test_old_forms_decode(self):
        self.assertEqual(decode(v(99, b"1.50000000000000000000e+00".ljust(31, b"\0"))), 1.5)
        self.assertEqual(decode(v(115, 2, b"ok")), Atom("ok"))
        self.assertEqual(decode(v(118, b"\x00\x02ok")), Atom("ok"))
        node = v(100, b"\x00\x01n")[1:]
        self.assertEqual(decode(v(103, node, b"\0\0\0\1\0\0\0\2", 3)), Pid(Atom("n"), 1, 2, 3))
        self.assertEqual(decode(v(102, node, b"\0\0\0\7", 1)), Port(Atom("n"), 7, 1))
        self.assertEqual(decode(v(101, node, b"\0\0\0\7", 1)), Ref(Atom("n"), 1, (7,)))
        self.assertEqual(decode(v(114, b"\0\2", node, 1, b"\0\0\0\1\0\0\0\2")), Ref(Atom("n"), 1, (1, 2)))
        self.assertEqual(decode(v(77, b"\0\0\0\1", 8, 0xff)), b"\xff")

    def test_compressed(self):
        term = [b"x" * 1000, list(range(300))]
        plain = encode(term)[1:]
        data = v(80, struct.pack(">I", len(plain)), zlib.compress(plain))
        self.assertEqual(decode(data), term)

    def test_depth_limit_is_an_option(self):
        deep = []
        for _ in range(200):
            deep = [deep]
        self.assertEqual(decode(encode(deep)), deep)
        with self.assertRaises(DecodeError):
            decode(encode(deep), max_depth=100)


def _fun_with(start, end, replacement):
    """FUN_BYTES with bytes start..end replaced, its size field made to match."""
    body = FUN_BYTES[6:start] + replacement + FUN_BYTES[end:]
    return FUN_BYTES[:2] + struct.pack(">I", len(body) + 4) + body


def _nest(n):
    """n nested one-element tuples, as raw bytes (no encoder recursion involved)."""
    return v(*([104, 1] * n), 106)


class Malformed(unittest.TestCase):
    SAMPLES = [
        (1, 300, -5, 2**70, 1.25, Atom("at\u00e9"), Atom("\u65e5")),
        [b"bin", [1, 2, 3], ImproperList([1], 2), Map({1: [Atom("x")]}), {b"k": None}],
        Pid(Atom("n@h"), 1, 2, 3),
        Ref(Atom("n@h"), 1, (1, 2, 3)),
        datetime.datetime(2020, 5, 17, 1, 2, 3, 4, tzinfo=UTC),
        BitBinary(b"\x01\x80", 1),
        Export(Atom("m"), Atom("f"), 1),
        tuple(range(300)),
        decode(FUN_BYTES),
        [2.5, -1e300],
    ]

    def assertDecodeError(self, data, **options):
        try:
            decode(data, **options)
        except DecodeError:
            return
        except Exception as e:  # anything else is a bug in the decoder
            self.fail(f"{data!r} raised {type(e).__name__}: {e}")
        self.fail(f"{data!r} decoded without error")

    def test_every_truncation_is_a_decode_error(self):
        for sample in self.SAMPLES:
            for data in (encode(sample), encode(sample, float_format="ernie")):
                for cut in range(len(data)):
                    with self.subTest(sample=sample, cut=cut):
                        self.assertDecodeError(data[:cut])

    def test_trailing_bytes(self):
        self.assertDecodeError(encode(1) + b"\0")

    def test_table_of_bad_inputs(self):
        huge = b"\xff\xff\xff\xff"
        bad = [
            b"",
            b"\x82a\x01",                       # wrong version
            v(0), v(255), v(117), v(121),       # unknown / unsupported tags
            v(112),                             # fun without its fields
            v(112, b"\0\0\0\x1c", b"\0" * 40),  # fun whose size cannot hold its fixed fields
            FUN_BYTES[:5] + b"\x4d" + FUN_BYTES[6:],                # size past the end of the input
            FUN_BYTES[:5] + b"\x4b" + FUN_BYTES[6:] + b"\0",       # size short of what it holds
            FUN_BYTES[:5] + b"\x4d" + FUN_BYTES[6:] + b"\x6a",     # size beyond what it holds
            _fun_with(31, 36, b"\x61\x01"),                         # module not an atom
            _fun_with(36, 38, b"\x64\0\1x"),                        # old index not an integer
            _fun_with(27, 31, b"\0\0\0\x02"),                       # two values closed over, one there
            _fun_with(43, 72, b"\x61\x01"),                         # creator not a pid
            v(109, huge, b"abc"),               # binary longer than the input
            v(108, huge, 106),                  # list of 4G elements
            v(116, huge),                       # map of 4G pairs
            v(105, huge, 106),                  # tuple of 4G elements
            v(111, huge, 0, b"\x01"),           # bignum of 4G bytes
            v(107, b"\xff\xff", b"ab"),         # string longer than the input
            v(100, b"\xff\xff", b"a"),          # atom longer than the input
            v(100, b"\x01\x00", b"a" * 256),    # atom of 256 characters
            v(118, b"\x00\x02\xc3\x28"),        # atom not UTF-8
            v(119, 1, b"\xff"),
            v(110, 1, 2, 1),                    # bad bignum sign
            v(99, b"not a float".ljust(31, b"\0")),
            v(99, b"inf".ljust(31, b"\0")),
            v(70, struct.pack(">d", float("nan"))),
            v(77, b"\0\0\0\1", 0, 1),           # bit binary with 0 bits
            v(77, b"\0\0\0\1", 9, 1),
            v(88, 97, 1, b"\0" * 12),           # pid whose node is not an atom
            v(90, b"\0\0", 100, b"\0\1n", b"\0\0\0\0"),          # reference without id words
            v(90, b"\x00\x09", 100, b"\0\1n", b"\0" * 40),      # too many id words
            v(113, 97, 1, 100, b"\0\1f", 97, 1),                # export with a non-atom module
            v(116, b"\0\0\0\1", 106, 97, 1),                    # map key [] has no Python form
            v(116, b"\0\0\0\2", 97, 1, 97, 1, 97, 1, 97, 2),    # duplicate keys
            v(80, b"\0\0\0\5", b"notzlib"),                     # bad compressed data
            v(80, b"\0\0\0\5", zlib.compress(b"\x61\x01")),     # wrong declared size
            v(80, b"\xff\xff\xff\xff", zlib.compress(b"a")),    # absurd declared size
            v(80, b"\0\0"),                                     # truncated compressed header
            _nest(5000),                                        # nesting far past any limit
        ]
        for data in bad:
            with self.subTest(data=data[:40]):
                self.assertDecodeError(data)

    def test_zip_bomb_stops_at_declared_size(self):
        inflated = v(109, struct.pack(">I", 50 << 20), b"\0" * (50 << 20))[1:]
        bomb = v(80, struct.pack(">I", 100), zlib.compress(inflated, 9))
        self.assertDecodeError(bomb)
        self.assertDecodeError(v(80, struct.pack(">I", len(inflated)), zlib.compress(inflated, 9)),
                               max_inflated=1 << 20)

    def test_nesting_limit(self):
        self.assertEqual(decode(_nest(300)), decode(_nest(300)))
        self.assertDecodeError(_nest(301))
        self.assertDecodeError(_nest(50), max_depth=10)

    def test_random_byte_flips_never_escape_as_other_errors(self):
        import random
        rng = random.Random(7)
        for sample in self.SAMPLES:
            data = bytearray(encode(sample))
            for _ in range(300):
                mutated = bytearray(data)
                for _ in range(rng.randint(1, 3)):
                    mutated[rng.randrange(1, len(mutated))] = rng.randrange(256)
                try:
                    decode(bytes(mutated))
                except DecodeError:
                    pass


class Framing(unittest.TestCase):
    def test_encode_berp(self):
        self.assertEqual(bert.encode_berp(1), b"\x00\x00\x00\x03\x83a\x01")

    def test_read_and_write_on_a_socketpair(self):
        a, b = socket.socketpair()
        a.settimeout(10)
        b.settimeout(10)

        def writer():
            bert.write_berp(a, (Atom("call"), Atom("m"), Atom("f"), [1]))
            bert.write_berp(a, [b"x" * 3_000_000])  # more than a socket buffer: read while written
            a.shutdown(socket.SHUT_WR)

        with a, b:
            t = threading.Thread(target=writer)
            t.start()
            try:
                self.assertEqual(bert.read_berp(b), (Atom("call"), Atom("m"), Atom("f"), [1]))
                self.assertEqual(bert.read_berp(b), [b"x" * 3_000_000])
                with self.assertRaises(EOFError):
                    bert.read_berp(b)
            finally:
                t.join(10)

    def test_int_file_descriptors(self):
        r, w = os.pipe()
        try:
            bert.write_berp(w, [1, Atom("two")])
            self.assertEqual(bert.read_berp(r), [1, Atom("two")])
        finally:
            os.close(r)
            os.close(w)

    def test_files_and_truncated_frames(self):
        f = io.BytesIO()
        bert.write_berp(f, Atom("ok"))
        data = f.getvalue()
        self.assertEqual(bert.read_berp(io.BytesIO(data)), Atom("ok"))
        self.assertIsNone(bert.read_berp_bytes(io.BytesIO(b"")))
        for cut in range(1, len(data)):
            with self.assertRaises(DecodeError):
                bert.read_berp(io.BytesIO(data[:cut]))
        with self.assertRaises(DecodeError):
            bert.read_berp_bytes(io.BytesIO(data), max_size=2)

    def test_a_lying_header_does_not_allocate(self):
        # 4 GiB announced, 3 bytes sent: the reader must fail on EOF, not try to allocate 4 GiB.
        r, w = os.pipe()
        os.write(w, b"\xff\xff\xff\xfeabc")
        os.close(w)
        try:
            with self.assertRaises(DecodeError):
                bert.read_berp_bytes(r)
        finally:
            os.close(r)


if __name__ == "__main__":
    unittest.main()
