"""pynat.py: the external twins of the native test modules (tests/integration/test_erlang.py) and
Python's side of erlang_rpc/erlang_send: module `nat` (functions the native nat lacks or defers to),
module `grow` (b/0, until the native grow exports it) and module `pyerl` (calls Erlang through bertd).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402


@bertd.function("nat")
def pick(x):
    return ["external", x]


@bertd.function("nat")
def both(x):
    return ["external", x]


@bertd.function("nat")
def only_ext(x):
    return x * 2


@bertd.function("grow")
def b():
    return "external_b"


def _node(node):
    return None if node in (None, b"", "") else node.decode() if isinstance(node, bytes) else node


@bertd.function("pyerl")
def rpc(node, module, function, args):
    try:
        return bertd.erlang_rpc(_node(node), module.decode(), function.decode(), args)
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]


@bertd.function("pyerl")
def send(node, name, message):
    bertd.erlang_send(_node(node), name.decode(), message)
    return True
