"""matrix.py: the cross-language matrix's handler written with the Python library, module matrix_py:
echo(X), value(Name) (its own decoding of the table's value), check(Name, X) (ok when X is exactly
that value) and fail(Message) (raises MatrixError). Usage: matrix.py TABLE. It never alters a value.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "modules", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "clients"))
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402
from matrix_values import load_table, same, short  # noqa: E402

VALUES, ERRORS = load_table(sys.argv[1])


class MatrixError(Exception):
    pass


def echo(x):
    return x


def value(name):
    if name not in VALUES:
        raise MatrixError(f"no value {name!r}: {ERRORS.get(name, 'not in the table')}")
    return VALUES[name]


def check(name, x):
    if name not in VALUES:
        return (Atom("undecodable"), ERRORS.get(name, "not in the table"))
    return Atom("ok") if same(x, VALUES[name]) else (Atom("mismatch"), short(x))


def fail(message):
    raise MatrixError(message.decode("utf-8"))


bertd.expose("matrix_py", {"echo": echo, "value": value, "check": check, "fail": fail})
