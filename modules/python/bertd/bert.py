"""bert.py: the BERT codec (Erlang external term format, version 131) and BERP framing for bertd's
Python library. It encodes exactly as OTP 25's term_to_binary/1 so bytes round-trip through Erlang.
It must never let hostile input raise anything but DecodeError, recurse without bound, or allocate more
than the input (or a compressed term's checked size) justifies.

Type mapping (both directions unless noted):
    int                         SMALL_INTEGER / INTEGER / SMALL_BIG / LARGE_BIG
    float                       NEW_FLOAT; FLOAT_EXT with encode(..., float_format="ernie") (both decode)
    Atom (a str subclass)       ATOM (latin-1 text) or SMALL_ATOM_UTF8 / ATOM_UTF8; all four atom tags decode
    tuple                       SMALL_TUPLE / LARGE_TUPLE
    list                        NIL / STRING (a list of ints 0..255, as Erlang does) / LIST
    ImproperList(items, tail)   LIST whose tail is not []
    bytes                       BINARY (bytearray and memoryview also encode as BINARY)
    str                         encode only: BINARY of its UTF-8 bytes (decodes back as bytes)
    Map (a dict subclass)       MAP
    BitBinary(data, bits)       BIT_BINARY
    Pid, Ref, Port, Export      NEW_PID, NEWER_REFERENCE, NEW_PORT / V4_PORT, EXPORT (older forms decode)
    Fun                         NEW_FUN (opaque: written back byte for byte as it was read)
    None / True / False         {bert, nil} / {bert, true} / {bert, false}
    dict                        {bert, dict, [{Key, Value}, ...]}
    datetime.datetime           {bert, time, Mega, Sec, Micro} (UTC; naive datetimes are taken as UTC)
    re.Pattern                  {bert, regex, Source, Options}
A {bert, ...} tuple without the shape of a known complex type decodes as a plain tuple.

Float formats: "new" (the default) writes NEW_FLOAT, as term_to_binary/1 does; "ernie" writes the
31-byte FLOAT_EXT text of term_to_binary(T, [{minor_version, 0}]), the only form that Ernie-era
software (the ruby-bert gem 1.1.6 behind Ernie's handlers and the bertrpc client) can read.
"""
import dataclasses
import datetime
import math
import os
import re
import struct
import zlib

__all__ = [
    "Atom", "Map", "ImproperList", "BitBinary", "Pid", "Ref", "Port", "Export", "Fun", "FLOAT_FORMATS",
    "DecodeError", "EncodeError", "encode", "decode",
    "encode_berp", "write_berp", "read_berp", "read_berp_bytes",
]

VERSION = 131

NEW_FLOAT = 70
BIT_BINARY = 77
COMPRESSED = 80
NEW_PID = 88
NEW_PORT = 89
NEWER_REFERENCE = 90
NEW_FUN = 112
SMALL_INTEGER = 97
INTEGER = 98
FLOAT = 99
ATOM = 100
REFERENCE = 101
PORT = 102
PID = 103
SMALL_TUPLE = 104
LARGE_TUPLE = 105
NIL = 106
STRING = 107
LIST = 108
BINARY = 109
SMALL_BIG = 110
LARGE_BIG = 111
EXPORT = 113
NEW_REFERENCE = 114
SMALL_ATOM = 115
MAP = 116
ATOM_UTF8 = 118
SMALL_ATOM_UTF8 = 119
V4_PORT = 120

# Each nesting level costs at most two Python frames, so this stays well inside the default
# recursion limit even when the caller is already deep.
DEFAULT_MAX_DEPTH = 300
# A compressed term may not claim to inflate to more than this unless the caller allows it.
DEFAULT_MAX_INFLATED = 64 << 20
MAX_ATOM_CHARS = 255
# The forms a float can be written in (see the module's docstring).
FLOAT_FORMATS = ("new", "ernie")
FLOAT_EXT_SIZE = 31


class DecodeError(ValueError):
    """The bytes are not one well-formed BERT (or BERP)."""


class EncodeError(ValueError):
    """The Python value has no BERT form."""


class Atom(str):
    """An Erlang atom. Being a str, Atom('ok') == 'ok'; isinstance(x, Atom) tells them apart."""

    __slots__ = ()

    def __repr__(self):
        return f"Atom({str.__repr__(self)})"


class Map(dict):
    """An Erlang map (MAP_EXT). Plain dicts are BERT dicts ({bert, dict, ...}) instead."""

    __slots__ = ()

    def __repr__(self):
        return f"Map({dict.__repr__(self)})"


class ImproperList:
    """A list whose tail is not []: [a, b | tail]. items is a non-empty list."""

    __slots__ = ("items", "tail")

    def __init__(self, items, tail):
        self.items = list(items)
        self.tail = tail

    def __eq__(self, other):
        return isinstance(other, ImproperList) and self.items == other.items and self.tail == other.tail

    def __repr__(self):
        return f"ImproperList({self.items!r}, {self.tail!r})"


@dataclasses.dataclass(frozen=True)
class BitBinary:
    """A bitstring whose last byte holds only `bits` (1..8) significant high bits."""

    data: bytes
    bits: int


@dataclasses.dataclass(frozen=True)
class Pid:
    node: Atom
    id: int
    serial: int
    creation: int


@dataclasses.dataclass(frozen=True)
class Ref:
    node: Atom
    creation: int
    ids: tuple


@dataclasses.dataclass(frozen=True)
class Port:
    node: Atom
    id: int
    creation: int


@dataclasses.dataclass(frozen=True)
class Export:
    """An external fun, fun Module:Function/Arity."""

    module: Atom
    function: Atom
    arity: int


@dataclasses.dataclass(frozen=True)
class Fun:
    """A local fun (NEW_FUN_EXT). Python cannot run it: it is an opaque value that encodes back to
    exactly the bytes it was decoded from (`raw`, from the tag on). Two funs are equal when those
    bytes are. The other fields are what the bytes say, for reading: Erlang prints this one as
    #Fun<module.old_index.old_uniq>, and `free` holds the values it closed over."""

    raw: bytes = dataclasses.field(repr=False)
    module: Atom = dataclasses.field(compare=False)
    arity: int = dataclasses.field(compare=False)
    index: int = dataclasses.field(compare=False)
    old_index: int = dataclasses.field(compare=False)
    old_uniq: int = dataclasses.field(compare=False)
    uniq: bytes = dataclasses.field(compare=False, repr=False)
    pid: "Pid" = dataclasses.field(compare=False, repr=False)
    free: tuple = dataclasses.field(compare=False)

    @classmethod
    def from_bytes(cls, raw):
        """The Fun of raw NEW_FUN_EXT bytes (tag 112 first). Raises DecodeError."""
        value = decode(bytes([VERSION]) + bytes(raw))
        if type(value) is not cls:
            raise DecodeError("not a NEW_FUN_EXT term")
        return value


_BERT = Atom("bert")
_NIL = Atom("nil")
_TRUE = Atom("true")
_FALSE = Atom("false")
_DICT = Atom("dict")
_TIME = Atom("time")
_REGEX = Atom("regex")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_ONE_MICRO = datetime.timedelta(microseconds=1)
# Option atoms in the order they are written; re.U is implied for str patterns and not an option.
_REGEX_FLAGS = (("caseless", re.I), ("extended", re.X), ("multiline", re.M), ("dotall", re.S))


# ---------------------------------------------------------------------------------------------------
# Encoding


def encode(obj, float_format="new"):
    """Returns the BERT bytes of obj (version byte included). Raises EncodeError.

    float_format="ernie" writes floats as FLOAT_EXT (see the module's docstring)."""
    out = bytearray([VERSION])
    old_floats = writes_float_ext(float_format)
    try:
        _encode(obj, out, old_floats)
    except RecursionError:
        raise EncodeError("value nested too deeply to encode") from None
    except UnicodeEncodeError as e:
        raise EncodeError(f"text is not valid Unicode: {e}") from None
    except (struct.error, OverflowError, TypeError) as e:
        # A field out of its range (a Pid's id past 32 bits, say) or of the wrong type.
        raise EncodeError(f"value has no BERT form: {e}") from None
    return bytes(out)


def writes_float_ext(float_format):
    """True for "ernie", False for "new"; anything else is a ValueError."""
    if float_format not in FLOAT_FORMATS:
        raise ValueError(f"float_format must be one of {', '.join(FLOAT_FORMATS)}, not {float_format!r}")
    return float_format == "ernie"


def _encode(obj, out, old):
    """Appends obj's encoding to out; old=True writes floats as FLOAT_EXT."""
    t = type(obj)
    if t is Atom:
        _encode_atom(obj, out)
    elif t is bool:
        _encode_tuple((_BERT, _TRUE if obj else _FALSE), out, old)
    elif obj is None:
        _encode_tuple((_BERT, _NIL), out, old)
    elif isinstance(obj, int) and not isinstance(obj, bool):
        _encode_int(int(obj), out)
    elif isinstance(obj, float):
        if not math.isfinite(obj):
            raise EncodeError(f"Erlang has no float {obj!r}")
        if old:
            # Erlang's own text: "%.20e", 21 significant digits, so the double comes back exactly.
            out.append(FLOAT)
            out += ("%.20e" % obj).encode("ascii").ljust(FLOAT_EXT_SIZE, b"\0")
        else:
            out.append(NEW_FLOAT)
            out += struct.pack(">d", obj)
    elif isinstance(obj, Atom):
        _encode_atom(obj, out)
    elif isinstance(obj, str):
        _encode_binary(obj.encode("utf-8"), out)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _encode_binary(bytes(obj), out)
    elif isinstance(obj, tuple):
        _encode_tuple(obj, out, old)
    elif isinstance(obj, list):
        _encode_list(obj, None, out, old)
    elif isinstance(obj, ImproperList):
        _encode_improper(obj, out, old)
    elif isinstance(obj, Map):
        _encode_map(obj, out, old)
    elif isinstance(obj, dict):
        pairs = [(k, v) for k, v in obj.items()]
        _encode_tuple((_BERT, _DICT, pairs), out, old)
    elif isinstance(obj, datetime.datetime):
        _encode_tuple(_time_tuple(obj), out, old)
    elif isinstance(obj, re.Pattern):
        _encode_tuple(_regex_tuple(obj), out, old)
    elif isinstance(obj, _ERLANG_ONLY):
        _encode_erlang_only(obj, out)
    else:
        raise EncodeError(f"cannot encode {t.__name__} as BERT")


# The terms only Erlang makes, each in a small class of its own.
_ERLANG_ONLY = (BitBinary, Pid, Port, Ref, Export, Fun)


def _encode_erlang_only(obj, out):
    if isinstance(obj, BitBinary):
        _encode_bit_binary(obj, out)
    elif isinstance(obj, Pid):
        out.append(NEW_PID)
        _encode_atom(obj.node, out)
        out += struct.pack(">III", obj.id, obj.serial, obj.creation)
    elif isinstance(obj, Port):
        if obj.id > 0xFFFFFFFF:
            out.append(V4_PORT)
            _encode_atom(obj.node, out)
            out += struct.pack(">QI", obj.id, obj.creation)
        else:
            out.append(NEW_PORT)
            _encode_atom(obj.node, out)
            out += struct.pack(">II", obj.id, obj.creation)
    elif isinstance(obj, Ref):
        out.append(NEWER_REFERENCE)
        out += struct.pack(">H", len(obj.ids))
        _encode_atom(obj.node, out)
        out += struct.pack(">I", obj.creation)
        for i in obj.ids:
            out += struct.pack(">I", i)
    elif isinstance(obj, Export):
        out.append(EXPORT)
        _encode_atom(Atom(obj.module), out)
        _encode_atom(Atom(obj.function), out)
        _encode_int(obj.arity, out)
    elif isinstance(obj, Fun):
        # Opaque: the floats it closed over keep the form they were read in.
        out += obj.raw


def _encode_int(n, out):
    if 0 <= n <= 255:
        out.append(SMALL_INTEGER)
        out.append(n)
    elif -(1 << 31) <= n < (1 << 31):
        out.append(INTEGER)
        out += struct.pack(">i", n)
    else:
        magnitude = abs(n)
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) <= 255:
            out.append(SMALL_BIG)
            out.append(len(digits))
        else:
            out.append(LARGE_BIG)
            out += struct.pack(">I", len(digits))
        out.append(1 if n < 0 else 0)
        out += digits


def _encode_atom(name, out):
    if len(name) > MAX_ATOM_CHARS:
        raise EncodeError(f"atom longer than {MAX_ATOM_CHARS} characters")
    # OTP 25 writes ATOM_EXT whenever the atom's text fits latin-1, UTF-8 atoms otherwise.
    try:
        text = name.encode("latin-1")
        out.append(ATOM)
        out += struct.pack(">H", len(text))
    except UnicodeEncodeError:
        try:
            text = name.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodeError("atom is not valid Unicode") from None
        if len(text) <= 255:
            out.append(SMALL_ATOM_UTF8)
            out.append(len(text))
        else:
            out.append(ATOM_UTF8)
            out += struct.pack(">H", len(text))
    out += text


def _encode_binary(data, out):
    if len(data) > 0xFFFFFFFF:
        raise EncodeError("binary longer than 4 GiB")
    out.append(BINARY)
    out += struct.pack(">I", len(data))
    out += data


def _encode_tuple(items, out, old):
    if len(items) <= 255:
        out.append(SMALL_TUPLE)
        out.append(len(items))
    else:
        out.append(LARGE_TUPLE)
        out += struct.pack(">I", len(items))
    for item in items:
        _encode(item, out, old)


def _encode_list(items, tail, out, old):
    """Writes items as a list ending in tail (None meaning [])."""
    if tail is None:
        if not items:
            out.append(NIL)
            return
        # term_to_binary writes a list of bytes as STRING_EXT; doing the same keeps bytes identical.
        if len(items) <= 0xFFFF and all(type(x) is int and 0 <= x <= 255 for x in items):
            out.append(STRING)
            out += struct.pack(">H", len(items))
            out += bytes(items)
            return
    out.append(LIST)
    out += struct.pack(">I", len(items))
    for item in items:
        _encode(item, out, old)
    if tail is None:
        out.append(NIL)
    else:
        _encode(tail, out, old)


def _encode_improper(obj, out, old):
    items = list(obj.items)
    tail = obj.tail
    # [a | [b]] is the proper list [a, b] in Erlang; write it the way Erlang would.
    while True:
        if isinstance(tail, list):
            items += tail
            tail = None
            break
        if isinstance(tail, ImproperList):
            items += tail.items
            tail = tail.tail
            continue
        break
    if not items:
        if tail is None:
            out.append(NIL)
        else:
            _encode(tail, out, old)
        return
    _encode_list(items, tail, out, old)


def _encode_map(obj, out, old):
    out.append(MAP)
    out += struct.pack(">I", len(obj))
    # Small maps (the only ones whose order term_to_binary makes predictable) are written in
    # Erlang's map-key order; any order decodes the same in Erlang.
    try:
        keys = sorted(obj.keys(), key=map_key_order)
    except TypeError:
        keys = list(obj.keys())
    for k in keys:
        _encode(k, out, old)
        _encode(obj[k], out, old)


def _encode_bit_binary(obj, out):
    if not 1 <= obj.bits <= 8 or not obj.data:
        raise EncodeError("BitBinary needs data and 1..8 bits in its last byte")
    out.append(BIT_BINARY)
    out += struct.pack(">IB", len(obj.data), obj.bits)
    data = bytearray(obj.data)
    data[-1] &= (0xFF << (8 - obj.bits)) & 0xFF
    out += data


def _time_tuple(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    micros = (dt - _EPOCH) // _ONE_MICRO
    seconds, micro = divmod(micros, 1_000_000)
    mega, sec = divmod(seconds, 1_000_000)
    return (_BERT, _TIME, mega, sec, micro)


def _regex_tuple(pattern):
    source = pattern.pattern
    if isinstance(source, str):
        source = source.encode("utf-8")
    options = [Atom(name) for name, flag in _REGEX_FLAGS if pattern.flags & flag]
    return (_BERT, _REGEX, source, options)


def map_key_order(value):
    """A sort key giving Erlang's map-key order (exact term order, integers before floats).

    number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring.
    Python-only types are ordered as the Erlang terms they encode to.
    """
    t = type(value)
    if t is bool or value is None:
        return _order_of_tuple((_BERT, (_TRUE if value else _FALSE) if t is bool else _NIL))
    if isinstance(value, int):
        return (0, 0, value)
    if isinstance(value, float):
        return (0, 1, value)
    if isinstance(value, Atom):
        return (1, str(value))
    if isinstance(value, Ref):
        return (2, value.node, tuple(reversed(value.ids)), value.creation)
    if isinstance(value, Fun):  # local funs before external ones, as in OTP 25
        return (3, 0, value.module, value.old_index, value.old_uniq, len(value.free),
                tuple(map_key_order(x) for x in value.free))
    if isinstance(value, Export):
        return (3, 1, value.module, value.function, value.arity)
    if isinstance(value, Port):
        return (4, value.node, value.id, value.creation)
    if isinstance(value, Pid):
        return (5, value.node, value.serial, value.id, value.creation)
    if isinstance(value, tuple):
        return _order_of_tuple(value)
    if isinstance(value, Map):
        keys = sorted(value.keys(), key=map_key_order)
        return (7, len(keys), tuple(map_key_order(k) for k in keys),
                tuple(map_key_order(value[k]) for k in keys))
    if isinstance(value, dict):
        return _order_of_tuple((_BERT, _DICT, list(value.items())))
    if isinstance(value, datetime.datetime):
        return _order_of_tuple(_time_tuple(value))
    if isinstance(value, re.Pattern):
        return _order_of_tuple(_regex_tuple(value))
    if isinstance(value, list):
        return (8,) if not value else (9, tuple(map_key_order(x) for x in value))
    if isinstance(value, ImproperList):
        return (9, tuple(map_key_order(x) for x in value.items), map_key_order(value.tail))
    if isinstance(value, str):
        return (10, value.encode("utf-8"), 8)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (10, bytes(value), 8)
    if isinstance(value, BitBinary):
        return (10, value.data, value.bits)
    raise TypeError(f"no Erlang order for {t.__name__}")


def _order_of_tuple(items):
    return (6, len(items), tuple(map_key_order(x) for x in items))


def safe_repr(value, limit=300):
    """repr() for logs and messages: shortened, and never raising (huge ints have no repr in 3.11)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} without a printable form>"
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------------------------------------------
# Decoding


def decode(data, *, max_depth=DEFAULT_MAX_DEPTH, max_inflated=DEFAULT_MAX_INFLATED, bert_types=True):
    """Returns the Python value of one whole BERT (version byte first). Raises DecodeError.

    bert_types=False keeps {bert, ...} tuples as tuples instead of mapping them to Python types.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("decode() needs bytes")
    data = bytes(data)
    if not data:
        raise DecodeError("empty input")
    if data[0] != VERSION:
        raise DecodeError(f"bad version byte {data[0]} (expected {VERSION})")
    if len(data) > 1 and data[1] == COMPRESSED:
        data = bytes([VERSION]) + _inflate(data, 2, max_inflated)
    decoder = _Decoder(data, max_depth, bert_types)
    try:
        value = decoder.term(0)
    except RecursionError:
        raise DecodeError("term nested too deeply") from None
    if decoder.pos != len(data):
        raise DecodeError(f"{len(data) - decoder.pos} trailing bytes after the term")
    return value


def _inflate(data, pos, max_inflated):
    if len(data) < pos + 4:
        raise DecodeError("truncated compressed term header")
    (size,) = struct.unpack_from(">I", data, pos)
    if size > max_inflated:
        raise DecodeError(f"compressed term claims {size} bytes (limit {max_inflated})")
    z = zlib.decompressobj()
    try:
        # Never inflate past the declared size plus one byte: a zip bomb stops here.
        body = z.decompress(data[pos + 4:], size + 1)
    except zlib.error as e:
        raise DecodeError(f"bad compressed term: {e}") from None
    if len(body) != size or not z.eof:
        raise DecodeError("compressed term does not inflate to its declared size")
    if z.unused_data or z.unconsumed_tail:
        raise DecodeError("trailing bytes after the compressed term")
    return body


class _Decoder:
    __slots__ = ("data", "pos", "max_depth", "bert_types")

    def __init__(self, data, max_depth, bert_types):
        self.data = data
        self.pos = 1
        self.max_depth = max_depth
        self.bert_types = bert_types

    def need(self, n):
        if n > len(self.data) - self.pos:
            raise DecodeError(f"truncated: need {n} bytes at offset {self.pos}, "
                              f"have {len(self.data) - self.pos}")

    def take(self, n):
        self.need(n)
        start = self.pos
        self.pos += n
        return self.data[start:self.pos]

    def u8(self):
        self.need(1)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def unpack(self, fmt, size):
        self.need(size)
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def u16(self):
        return self.unpack(">H", 2)[0]

    def u32(self):
        return self.unpack(">I", 4)[0]

    def count(self, n, min_bytes_each):
        """Checks that n elements of at least min_bytes_each can still follow, before allocating."""
        if n * min_bytes_each > len(self.data) - self.pos:
            raise DecodeError(f"declared {n} elements at offset {self.pos}, more than the input holds")

    def term(self, depth):
        if depth > self.max_depth:
            raise DecodeError(f"term nested deeper than {self.max_depth}")
        tag = self.u8()
        method = _DISPATCH.get(tag)
        if method is None:
            raise DecodeError(f"unsupported tag {tag} at offset {self.pos - 1}")
        return method(self, depth)

    def small_integer(self, depth):
        return self.u8()

    def integer(self, depth):
        return self.unpack(">i", 4)[0]

    def big(self, n):
        sign = self.u8()
        if sign > 1:
            raise DecodeError(f"bad bignum sign byte {sign}")
        value = int.from_bytes(self.take(n), "little")
        return -value if sign else value

    def small_big(self, depth):
        return self.big(self.u8())

    def large_big(self, depth):
        return self.big(self.u32())

    def new_float(self, depth):
        value = self.unpack(">d", 8)[0]
        if not math.isfinite(value):
            raise DecodeError("NEW_FLOAT_EXT holds an infinity or NaN, which Erlang has no term for")
        return value

    def old_float(self, depth):
        text = self.take(31).split(b"\0", 1)[0]
        try:
            value = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise DecodeError(f"bad FLOAT_EXT text {text!r}") from None
        if not math.isfinite(value):
            raise DecodeError(f"bad FLOAT_EXT text {text!r}")
        return value

    def atom_text(self, n, encoding):
        raw = self.take(n)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            raise DecodeError(f"atom is not valid {encoding}") from None
        if len(text) > MAX_ATOM_CHARS:
            raise DecodeError(f"atom longer than {MAX_ATOM_CHARS} characters")
        return Atom(text)

    def atom(self, depth):
        return self.atom_text(self.u16(), "latin-1")

    def small_atom(self, depth):
        return self.atom_text(self.u8(), "latin-1")

    def atom_utf8(self, depth):
        return self.atom_text(self.u16(), "utf-8")

    def small_atom_utf8(self, depth):
        return self.atom_text(self.u8(), "utf-8")

    def node(self, depth):
        """The node name inside a pid, port or reference: an atom of any of the four kinds."""
        tag = self.u8()
        if tag not in (ATOM, SMALL_ATOM, ATOM_UTF8, SMALL_ATOM_UTF8):
            raise DecodeError(f"node name is not an atom (tag {tag})")
        return _DISPATCH[tag](self, depth)

    # Containers loop here rather than in a helper or comprehension, so that one nesting level
    # costs two Python frames (term and the container method).
    def small_tuple(self, depth):
        n = self.u8()
        self.count(n, 1)
        items = []
        for _ in range(n):
            items.append(self.term(depth + 1))
        return self.finish_tuple(items)

    def large_tuple(self, depth):
        n = self.u32()
        self.count(n, 1)
        items = []
        for _ in range(n):
            items.append(self.term(depth + 1))
        return self.finish_tuple(items)

    def finish_tuple(self, items):
        items = tuple(items)
        if self.bert_types and len(items) >= 2 and type(items[0]) is Atom and items[0] == _BERT:
            return _complex(items)
        return items

    def nil(self, depth):
        return []

    def string(self, depth):
        return list(self.take(self.u16()))

    def list(self, depth):
        n = self.u32()
        self.count(n + 1, 1)  # n elements and a tail, at least one byte each
        items = []
        for _ in range(n):
            items.append(self.term(depth + 1))
        tail = self.term(depth + 1)
        if isinstance(tail, list):
            return items + tail
        if isinstance(tail, ImproperList):
            return ImproperList(items + tail.items, tail.tail)
        if not items:
            return tail
        return ImproperList(items, tail)

    def binary(self, depth):
        return self.take(self.u32())

    def bit_binary(self, depth):
        n = self.u32()
        bits = self.u8()
        if n == 0 or not 1 <= bits <= 8:
            if n == 0 and bits == 0:
                return b""
            raise DecodeError(f"bad BIT_BINARY: {n} bytes, {bits} bits")
        data = self.take(n)
        if bits == 8:
            return data
        return BitBinary(data, bits)

    def map(self, depth):
        n = self.u32()
        self.count(n, 2)
        result = Map()
        for _ in range(n):
            key = self.term(depth + 1)
            value = self.term(depth + 1)
            try:
                result[key] = value
            except TypeError:
                raise DecodeError(f"map key of type {type(key).__name__} has no Python form") from None
        if len(result) != n:
            raise DecodeError("map has duplicate keys (as Python sees them)")
        return result

    def pid(self, depth):
        node = self.node(depth)
        ident, serial, creation = self.unpack(">IIB", 9)
        return Pid(node, ident, serial, creation)

    def new_pid(self, depth):
        node = self.node(depth)
        ident, serial, creation = self.unpack(">III", 12)
        return Pid(node, ident, serial, creation)

    def port(self, depth):
        node = self.node(depth)
        ident, creation = self.unpack(">IB", 5)
        return Port(node, ident, creation)

    def new_port(self, depth):
        node = self.node(depth)
        ident, creation = self.unpack(">II", 8)
        return Port(node, ident, creation)

    def v4_port(self, depth):
        node = self.node(depth)
        ident, creation = self.unpack(">QI", 12)
        return Port(node, ident, creation)

    def reference(self, depth):
        node = self.node(depth)
        ident, creation = self.unpack(">IB", 5)
        return Ref(node, creation, (ident,))

    def new_reference(self, depth, creation_fmt=">B", creation_size=1):
        n = self.u16()
        if not 1 <= n <= 5:
            raise DecodeError(f"reference with {n} id words")
        node = self.node(depth)
        (creation,) = self.unpack(creation_fmt, creation_size)
        ids = self.unpack(f">{n}I", 4 * n)
        return Ref(node, creation, tuple(ids))

    def newer_reference(self, depth):
        return self.new_reference(depth, ">I", 4)

    def new_fun(self, depth):
        start = self.pos - 1
        size = self.u32()
        # Size counts itself and the fields after it; the fixed ones alone take 29 bytes.
        if size < 29:
            raise DecodeError(f"NEW_FUN_EXT of {size} bytes")
        self.need(size - 4)
        end = start + 1 + size
        arity = self.u8()
        uniq = self.take(16)
        index, num_free = self.unpack(">II", 8)
        module = self.term(depth + 1)
        old_index = self.term(depth + 1)
        old_uniq = self.term(depth + 1)
        pid = self.term(depth + 1)
        if type(module) is not Atom or type(old_index) is not int or type(old_uniq) is not int \
                or type(pid) is not Pid:
            raise DecodeError("bad NEW_FUN_EXT")
        self.count(num_free, 1)
        free = []
        for _ in range(num_free):
            free.append(self.term(depth + 1))
        if self.pos != end:
            raise DecodeError(f"NEW_FUN_EXT says {size} bytes, holds {self.pos - start - 1}")
        return Fun(self.data[start:end], module, arity, index, old_index, old_uniq, uniq, pid, tuple(free))

    def export(self, depth):
        module = self.term(depth + 1)
        function = self.term(depth + 1)
        arity = self.term(depth + 1)
        if type(module) is not Atom or type(function) is not Atom or type(arity) is not int:
            raise DecodeError("bad EXPORT_EXT")
        return Export(module, function, arity)


_DISPATCH = {
    SMALL_INTEGER: _Decoder.small_integer,
    INTEGER: _Decoder.integer,
    SMALL_BIG: _Decoder.small_big,
    LARGE_BIG: _Decoder.large_big,
    NEW_FLOAT: _Decoder.new_float,
    FLOAT: _Decoder.old_float,
    ATOM: _Decoder.atom,
    SMALL_ATOM: _Decoder.small_atom,
    ATOM_UTF8: _Decoder.atom_utf8,
    SMALL_ATOM_UTF8: _Decoder.small_atom_utf8,
    SMALL_TUPLE: _Decoder.small_tuple,
    LARGE_TUPLE: _Decoder.large_tuple,
    NIL: _Decoder.nil,
    STRING: _Decoder.string,
    LIST: _Decoder.list,
    BINARY: _Decoder.binary,
    BIT_BINARY: _Decoder.bit_binary,
    MAP: _Decoder.map,
    PID: _Decoder.pid,
    NEW_PID: _Decoder.new_pid,
    PORT: _Decoder.port,
    NEW_PORT: _Decoder.new_port,
    V4_PORT: _Decoder.v4_port,
    REFERENCE: _Decoder.reference,
    NEW_REFERENCE: _Decoder.new_reference,
    NEWER_REFERENCE: _Decoder.newer_reference,
    EXPORT: _Decoder.export,
    NEW_FUN: _Decoder.new_fun,
}


def _complex(items):
    """Maps a {bert, ...} tuple to its Python type, or returns it unchanged when it has no known shape."""
    kind = items[1]
    n = len(items)
    if n == 2 and kind == _NIL:
        return None
    if n == 2 and kind == _TRUE:
        return True
    if n == 2 and kind == _FALSE:
        return False
    if n == 3 and kind == _DICT and isinstance(items[2], list):
        result = {}
        for pair in items[2]:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                return items
            try:
                result[pair[0]] = pair[1]
            except TypeError:
                return items
        return result
    if n == 5 and kind == _TIME and all(type(x) is int for x in items[2:]):
        mega, sec, micro = items[2:]
        try:
            return _EPOCH + datetime.timedelta(seconds=mega * 1_000_000 + sec, microseconds=micro)
        except OverflowError:
            return items
    if n == 4 and kind == _REGEX and isinstance(items[2], bytes) and isinstance(items[3], list):
        return _regex(items)
    return items


def _regex(items):
    flags = 0
    known = dict(_REGEX_FLAGS)
    for option in items[3]:
        if type(option) is not Atom or option not in known:
            return items
        flags |= known[option]
    source = items[2]
    try:
        source = source.decode("utf-8")
    except UnicodeDecodeError:
        pass  # a bytes pattern keeps non-UTF-8 sources exact
    try:
        return re.compile(source, flags)
    except (re.error, OverflowError, RecursionError, ValueError):
        return items


# ---------------------------------------------------------------------------------------------------
# BERP framing: a 4-byte big-endian length, then one BERT.

_CHUNK = 1 << 20


def encode_berp(obj, float_format="new"):
    """Returns the BERP (length header + BERT) of obj."""
    body = encode(obj, float_format)
    if len(body) > 0xFFFFFFFF:
        raise EncodeError("term longer than a BERP can carry")
    return struct.pack(">I", len(body)) + body


def write_berp(dest, obj_or_bert, *, raw=False, float_format="new"):
    """Writes one BERP to a socket, a binary file or an int file descriptor.

    raw=True writes obj_or_bert (bytes) as an already encoded BERT.
    """
    body = bytes(obj_or_bert) if raw else encode(obj_or_bert, float_format)
    _write_all(dest, struct.pack(">I", len(body)) + body)


def _write_all(dest, data):
    if isinstance(dest, int):
        view = memoryview(data)
        while view:
            n = os.write(dest, view)
            view = view[n:]
    elif hasattr(dest, "sendall"):
        dest.sendall(data)
    else:
        dest.write(data)
        if hasattr(dest, "flush"):
            dest.flush()


def _read_some(src, n):
    if isinstance(src, int):
        return os.read(src, n)
    if hasattr(src, "recv"):
        return src.recv(n)
    return src.read(n)


def _read_exact(src, n, what):
    """Reads exactly n bytes; returns None on end-of-file before the first byte."""
    parts = []
    got = 0
    while got < n:
        # Grows with the bytes that really arrive, so a lying length header cannot make us allocate.
        chunk = _read_some(src, min(n - got, _CHUNK))
        if not chunk:
            if got == 0:
                return None
            raise DecodeError(f"end of file inside a BERP {what} ({got} of {n} bytes)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_berp_bytes(src, *, max_size=None):
    """Reads one BERP and returns its BERT bytes, or None at a clean end of file.

    Raises DecodeError when the stream ends inside a frame or the frame exceeds max_size.
    """
    header = _read_exact(src, 4, "header")
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if max_size is not None and size > max_size:
        raise DecodeError(f"BERP of {size} bytes exceeds the limit of {max_size}")
    body = _read_exact(src, size, "body")
    if body is None:
        raise DecodeError(f"end of file after a BERP header announcing {size} bytes")
    return body


def read_berp(src, *, max_size=None, **decode_options):
    """Reads and decodes one BERP. Raises EOFError at a clean end of file, DecodeError on bad data."""
    body = read_berp_bytes(src, max_size=max_size)
    if body is None:
        raise EOFError("end of file before a BERP")
    return decode(body, **decode_options)
