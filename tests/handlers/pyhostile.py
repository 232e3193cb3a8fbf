"""pyhostile.py: a handler that sends the Erlang link what a hostile or buggy handler could
(tests/integration/test_hostile_link.py). Module `hostile`, read and answered by hand (no
handler library: it must be able to write any bytes as its answer):
  rpc_raw(Kind, Node)  sends an erlang_rpc request built to cost the link far more than its
                       size, and answers what the link answered, as it came
  answer(Kind)         answers with such bytes (to an Erlang node's rpc:call, relayed by the link)
  rpc(Node, M, F, A)   a plain erlang_rpc, through the handler library
Kinds: compressed (16 million NILs in 16 KB, tag 80), flat (16 million NILs, 16 MB), nested
(100,000 tuples deep).
"""
import os
import socket
import struct
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
from bertd import bert  # noqa: E402
import bertd  # noqa: E402

N = 16 << 20


def atom(name):
    return b"\x64" + struct.pack(">H", len(name)) + name


def nils(n):
    return b"\x6c" + struct.pack(">I", n) + b"\x6a" * n + b"\x6a"


def nested(depth):
    return b"\x68\x01" * depth + b"\x6a"


def hostile(kind, term_of):
    """`term_of(arg)` is the term's bytes (no version byte) with the hostile argument in it."""
    if kind == b"compressed":
        inner = term_of(nils(N))
        return b"\x83\x50" + struct.pack(">I", len(inner)) + zlib.compress(inner, 9)
    return b"\x83" + term_of(nils(N) if kind == b"flat" else nested(100000))


def rpc_raw(kind, node):
    # {rpc, Node, erlang, length, [Arg]}
    payload = hostile(kind, lambda arg: b"\x68\x05" + atom(b"rpc") + atom(node) + atom(b"erlang") +
                      atom(b"length") + b"\x6c\x00\x00\x00\x01" + arg + b"\x6a")
    address = os.environ["BERTD_ERLANG"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + address[1:] if address.startswith("@") else address)
    with s:
        s.settimeout(30)
        s.sendall(struct.pack(">I", len(payload)) + payload)
        return bert.decode(bert.read_berp_bytes(s))


def answer_bytes(kind):
    # {reply, Arg}
    return hostile(kind, lambda arg: b"\x68\x02" + atom(b"reply") + arg)


def rpc(node, module, function, args):
    try:
        return bertd.erlang_rpc(node.decode() or None, module.decode(), function.decode(), args)
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]


def serve():
    while True:
        body = bert.read_berp_bytes(3)
        if body is None:
            return
        req = bert.decode(body)
        kind, function, args = req[0], req[2], req[3]
        if kind == bertd.Atom("info"):
            continue
        if function == bertd.Atom("answer"):
            out = answer_bytes(args[0])
        elif function == bertd.Atom("rpc_raw"):
            out = bert.encode((bertd.Atom("reply"), rpc_raw(*args)))
        elif function == bertd.Atom("rpc"):
            out = bert.encode((bertd.Atom("reply"), rpc(*args)))
        else:
            out = bert.encode((bertd.Atom("reply"), (function, args)))
        if kind == bertd.Atom("cast"):
            out = bert.encode((bertd.Atom("noreply"),))
        bert._write_all(4, struct.pack(">I", len(out)) + out)


if __name__ == "__main__":
    serve()
