#!/usr/bin/env python3
"""make_seeds.py: writes the small starting corpus in tests/fuzz/seeds/ for the
fuzz targets (BERT terms, and BERP frames for fuzz_frame). Bytes are built here
by hand from the external term format; run it again to regenerate the seeds.
Inputs starting with 'Z' are compressed by fuzz_decode and fuzz_print themselves."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def atom(name):
    b = name.encode("latin-1")
    return bytes([100]) + struct.pack(">H", len(b)) + b


def small_int(n):
    return bytes([97, n])


def tup(*items):
    return bytes([104, len(items)]) + b"".join(items)


def lst(*items, tail=bytes([106])):
    return bytes([108]) + struct.pack(">I", len(items)) + b"".join(items) + tail


def binary(b):
    return bytes([109]) + struct.pack(">I", len(b)) + b


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


NODE = atom("a@b")
call = b"\x83" + tup(atom("call"), atom("nat"), atom("add"), lst(small_int(1), small_int(2)))
info = b"\x83" + tup(atom("info"), atom("priority"), lst(atom("low")))
cast = b"\x83" + tup(atom("cast"), atom("m"), bytes([119, 2, 0xce, 0xb1]), bytes([107, 0, 2, 1, 2]))
mixed = b"\x83" + tup(
    lst(small_int(1), tail=small_int(2)),                      # [1|2]
    bytes([110, 9, 0]) + bytes(8) + b"\x01",                     # 2^64
    bytes([70]) + struct.pack(">d", 1.5),                        # NEW_FLOAT
    bytes([99]) + b"1.50000000000000000000e+00".ljust(31, b"\0"),  # old FLOAT
    bytes([118, 0, 2, 0xce, 0xb1]),                              # ATOM_UTF8
    bytes([115, 2]) + b"ok",                                     # SMALL_ATOM
    binary(b"bin"),
    bytes([88]) + NODE + struct.pack(">III", 1, 2, 3),           # NEW_PID
    bytes([90, 0, 2]) + NODE + struct.pack(">III", 1, 7, 8),     # NEWER_REFERENCE
    bytes([120]) + NODE + struct.pack(">QI", 1 << 40, 1),        # V4_PORT
    bytes([105, 0, 0, 0, 1, 106]),                               # LARGE_TUPLE
)
mapping = b"\x83" + bytes([116, 0, 0, 0, 3]) + small_int(2) + atom("b") + \
    bytes([70]) + struct.pack(">d", 1.5) + atom("a") + tup(small_int(1)) + atom("c")
inner = lst(*[atom("hello")] * 20)
compressed = b"\x83\x50" + struct.pack(">I", len(inner)) + zlib.compress(inner)

# A closure (term_to_binary(fun(X) -> X + 1 end) in module t1) and an export.
closure = bytes([131, 112, 0, 0, 0, 70, 1, 25, 203, 242, 85, 225, 56, 109, 102, 129, 21, 70, 218, 143, 225, 20,
                 170, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 2, 116, 49, 97, 0, 98, 0, 206, 95, 146]) + \
    bytes([88]) + atom("nonode@nohost") + struct.pack(">III", 9, 0, 0)
funs = b"\x83" + tup(bytes([113]) + atom("lists") + atom("reverse") + small_int(1),
                     closure[1:],
                     bytes([77, 0, 0, 0, 2, 3, 5, 32]))                          # <<5,1:3>>
# Shapes that cost by shape: deep nesting, long lists of one-byte elements, and
# unsorted map keys; compressed too.
deep = b"\x83" + bytes([104, 1]) * 998 + bytes([108, 0, 0, 0, 1, 106, 106])
nils = b"\x83" + lst(*[bytes([106])] * 2000)
unsorted = b"\x83" + bytes([116, 0, 0, 0, 4]) + atom("c") + small_int(3) + small_int(2) + atom("x") + \
    lst(atom("a")) + atom("z") + bytes([70]) + struct.pack(">d", 1.0) + atom("y")

seeds = {
    "call.bert": call,
    "mixed.bert": mixed,
    "map.bert": mapping,
    "compressed.bert": compressed,
    "funs.bert": funs,
    "deep.bert": deep,
    "unsorted_map.bert": unsorted,
    "z_nils.bert": b"Z" + nils[1:],
    "z_deep.bert": b"Z" + deep[1:],
    "z_funs.bert": b"Z" + funs[1:],
    "frames.berp": frame(info) + frame(call) + frame(cast) + bytes([7, 200, 3, 9]),
}
os.makedirs(os.path.join(HERE, "seeds"), exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(HERE, "seeds", name), "wb") as f:
        f.write(data)
