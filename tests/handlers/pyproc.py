"""pyproc.py: a Python handler as a process of bertd's Erlang node, for tests/integration/test_erlang_node.py
(module `pyproc`). At start it registers `pyproc_events`: a message {ReplyTo, Payload} to that name makes
the worker that runs it send {got, Payload, OsPid} to ReplyTo (not with --no-events). Its functions hand a test every part of the
Erlang API: the worker's pid, its mailbox, sends to each kind of destination, names, held connections.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402

_slow_ms = [0]


def _exposed(fn):
    """Both modules run this file; each exposes every function."""
    for module in ("pyproc", "other_proc", "pymany"):
        bertd.function(module)(fn)
    return fn


def _forward(message):
    reply_to, payload = message
    time.sleep(_slow_ms[0] / 1000.0)
    bertd.erlang_send(reply_to, (Atom("got"), payload, os.getpid()))


# Modules other_proc and pymany run this file too, with --no-events or --events=NAME: a name is one
# module's.
_events = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--events=")), "pyproc_events")
if "--no-events" not in sys.argv:
    bertd.erlang_register_process(_events, _forward)


def _text(b):
    return b.decode() if isinstance(b, bytes) else b


@_exposed
def me():
    return bertd.self_pid()


@_exposed
def ospid():
    return os.getpid()


@_exposed
def recv(timeout_ms):
    try:
        return bertd.erlang_recv_message(None if timeout_ms < 0 else timeout_ms / 1000.0)
    except bertd.ErlangTimeout:
        return Atom("timeout")


@_exposed
def recv_all(n, timeout_ms):
    """The next n messages, in the order they came."""
    return [bertd.erlang_recv_message(timeout_ms / 1000.0) for _ in range(n)]


@_exposed
def ask(name, node, payload, timeout_ms):
    """Sends {SelfPid, Payload} to {name, node} and returns the first message that comes back."""
    bertd.erlang_send((_text(name), _text(node)), (bertd.self_pid(), payload))
    return bertd.erlang_recv_message(timeout_ms / 1000.0)


@_exposed
def send(dest, message):
    """dest as the test gives it: a pid, [node, number, serial] (the 3-tuple form), [name, node] or a name."""
    if isinstance(dest, list):
        dest = tuple(_text(d) if isinstance(d, bytes) else d for d in dest)
    elif isinstance(dest, bytes):
        dest = _text(dest)
    try:
        bertd.erlang_send(dest, message)
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]
    return True


@_exposed
def register(name):
    try:
        bertd.erlang_register_process(_text(name), _forward)
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]
    return True


@_exposed
def slow_events(ms):
    """From now on, this worker's pyproc_events function sleeps ms before it answers."""
    _slow_ms[0] = ms
    return True


@_exposed
def connect_and_call(node, n):
    """erlang_connect, then n calls through the handle; returns the node each call ran on."""
    handle = bertd.erlang_connect(_text(node))
    return [handle.rpc("erlang", "node", []) for _ in range(n)]


@_exposed
def connect(node):
    try:
        return bertd.erlang_connect(_text(node)).name
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]


@_exposed
def rpc(node, module, function, args, timeout_ms):
    try:
        return bertd.erlang_rpc(_text(node) or None, _text(module), _text(function), args,
                                timeout=None if timeout_ms < 0 else timeout_ms / 1000.0)
    except bertd.ErlangError as e:
        return [b"ErlangError", str(e).encode()]


@_exposed
def echo(x):
    return x


@_exposed
def forward_next(dest, timeout_ms):
    """Sends the next message that arrives to dest, as it came."""
    bertd.erlang_send(dest, bertd.erlang_recv_message(timeout_ms / 1000.0))
    return True


@_exposed
def die():
    os._exit(3)
