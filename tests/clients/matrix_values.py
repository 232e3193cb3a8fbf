"""matrix_values.py: what the Python matrix handler and client share: the value table (each value
decoded on its own, so one this library cannot read costs only that value) and an equality that
sees every change (1 vs 1.0, -0.0 vs 0.0, bytes vs str, tuple vs list, dict order). Never lenient.
"""
import datetime
import re
import struct

import bertd


def load_table(path):
    """{name (bytes): value}, and {name: error text} for values this library could not decode."""
    with open(path, "rb") as f:
        entries = bertd.decode(f.read())
    values, errors = {}, {}
    for name, encoded in entries:
        try:
            values[name] = bertd.decode(encoded)
        except Exception as e:  # noqa: BLE001 - any failure is reported per value
            errors[name] = f"{type(e).__name__}: {e}"
    return values, errors


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bertd.ImproperList):
        return same(list(a.items), list(b.items)) and same(a.tail, b.tail)
    if isinstance(a, dict):  # a BERT dict keeps its order; a Map's order is the codec's
        return len(a) == len(b) and all(same(k1, k2) and same(v1, v2)
                                        for (k1, v1), (k2, v2) in zip(a.items(), b.items()))
    if isinstance(a, re.Pattern):
        return a.pattern == b.pattern and a.flags == b.flags
    if isinstance(a, datetime.datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return a == b


def short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
