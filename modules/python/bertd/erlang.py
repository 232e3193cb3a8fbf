"""erlang.py: a handler that bertd runs is a process of bertd's Erlang node. Through bertd's Erlang link
(its socket is in the environment variable BERTD_ERLANG) it calls Erlang (erlang_rpc), holds node
connections (erlang_connect), sends to names and pids (erlang_send), has a pid of its own (self_pid) and
a mailbox (erlang_recv_message), and registers names whose messages run a function
(erlang_register_process), with no Erlang distribution of its own. One connection per process, one
request at a time on it; it never hands a caller an answer that belongs to another request.

    import bertd
    bertd.erlang_rpc("app@host", "erlang", "node", [])          # -> Atom('app@host')
    app = bertd.erlang_connect("app@host"); app.rpc("lists", "reverse", [[1, 2]])
    bertd.erlang_send(("logger_proc", "app@host"), ("event", 1))
    bertd.erlang_send(("server", "app@host"), (bertd.self_pid(), "ping"))
    reply = bertd.erlang_recv_message(timeout=5)                # raises bertd.ErlangTimeout
    bertd.erlang_register_process("events", lambda msg: ...)    # {events, BertdNode} ! Msg runs it
"""
import os
import socket
import threading

from . import bert
from ._atoms import _RPC, _SEND, _REPLY, _ERROR, _BADRPC
from .bert import Atom, Pid

__all__ = ["erlang_rpc", "erlang_send", "erlang_connect", "erlang_register_process", "erlang_recv_message",
           "self_pid", "ErlangNode", "ErlangError", "ErlangTimeout"]

_CONNECT = Atom("connect")
_SELF = Atom("self")
_REGISTER = Atom("register")
_RECV = Atom("recv")
_MESSAGE = Atom("message")
_TIMEOUT = Atom("timeout")
_INFINITY = Atom("infinity")
# The link answers within the timeout it was given; the socket waits a little longer.
_MARGIN = 5.0


class ErlangError(Exception):
    """The call did not return normally: bertd could not reach the node, or the node answered
    {badrpc, Reason} (then `reason` holds Reason)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


class ErlangTimeout(ErlangError, TimeoutError):
    """erlang_recv_message found no message within its timeout."""


class ErlangNode:
    """A held connection to an Erlang node (erlang_connect): bertd keeps it up while this worker
    lives, and every call through it reuses it."""

    def __init__(self, name):
        self.name = Atom(name)

    def rpc(self, module, function, args=(), timeout=None):
        return erlang_rpc(self, module, function, args, timeout=timeout)

    def send(self, name, message):
        erlang_send((name, self.name), message)

    def __eq__(self, other):
        return isinstance(other, ErlangNode) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"ErlangNode({str(self.name)!r})"


_lock = threading.Lock()
_conn = {"sock": None, "pid": None}
_processes = {}  # name -> function, for every name this process registered


def _address():
    address = os.environ.get("BERTD_ERLANG")
    if not address:
        raise ErlangError("BERTD_ERLANG is not set: run this handler under bertd with Erlang enabled "
                          "(a native module, --name/--sname, or an erlang: section in the config)")
    # "@name" is Linux's abstract socket namespace.
    return "\0" + address[1:] if address.startswith("@") else address


def _name(value, what):
    if isinstance(value, ErlangNode):
        return value.name
    if isinstance(value, (Atom, str)):
        return Atom(value)
    if isinstance(value, bytes):
        return Atom(value.decode("utf-8"))
    raise TypeError(f"{what} must be a str, not {type(value).__name__}")


def _exchange(sock, term):
    bert.write_berp(sock, term)
    return bert.read_berp(sock)


def _connect():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address())
        # A new connection is a new identity: names registered through a lost one come back.
        for name in list(_processes):
            _answer(_exchange(sock, (_REGISTER, Atom(name))))
    except OSError as e:
        sock.close()
        raise ErlangError(f"cannot reach bertd's Erlang link: {e}") from e
    except Exception:
        sock.close()
        raise
    return sock


def _request(term, timeout):
    with _lock:
        sock = _conn["sock"]
        if sock is None or _conn["pid"] != os.getpid():  # a forked child gets a connection of its own
            _conn["sock"] = None
            sock = _connect()
            _conn["sock"], _conn["pid"] = sock, os.getpid()
        try:
            sock.settimeout(None if timeout is None else timeout + _MARGIN)
            answer = _exchange(sock, term)
        except Exception as e:
            # Whatever happened, the stream may be out of step: never reuse it.
            sock.close()
            _conn["sock"] = None
            if isinstance(e, (OSError, EOFError, bert.DecodeError)):
                raise ErlangError(f"bertd's Erlang link: {e or type(e).__name__}") from e
            raise
    return _answer(answer)


def _answer(answer):
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _REPLY:
        return answer[1]
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _ERROR:
        detail = answer[1]
        message = detail[3] if isinstance(detail, tuple) and len(detail) == 5 else detail
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise ErlangError(str(message))
    raise ErlangError(f"unexpected answer from bertd's Erlang link: {bert.safe_repr(answer)}")


def _millis(timeout):
    if timeout is None:
        return _INFINITY
    if timeout < 0:
        raise ValueError("timeout must be None or at least 0")
    return int(timeout * 1000 + 0.999)


def erlang_connect(node, timeout=None):
    """Connects bertd to `node` (now, or raises ErlangError) and returns an ErlangNode: the connection
    is kept up while this worker lives, and calls through the handle reuse it."""
    return ErlangNode(_request((_CONNECT, _name(node, "node")), timeout))


def erlang_rpc(node, module, function, args=(), timeout=None):
    """Calls module:function(*args) on `node` (a node name, an ErlangNode, or None: bertd's native node)
    and returns the result. Strings go as binaries, as BERT has them; pass bertd.Atom for atoms. Raises
    ErlangError for {badrpc, Reason}, when the node cannot be reached, and after `timeout` seconds
    (default: bertd's erlang.call_timeout)."""
    target = None if node is None else _name(node, "node")
    request = (_RPC, target, _name(module, "module"), _name(function, "function"), list(args))
    if timeout is not None:
        request += (_millis(timeout),)
    result = _request(request, timeout)
    if isinstance(result, tuple) and len(result) == 2 and result[0] == _BADRPC:
        raise ErlangError(f"badrpc: {bert.safe_repr(result[1])}", reason=result[1])
    return result


def _dest(dest):
    if isinstance(dest, Pid):
        return dest
    if isinstance(dest, tuple) and len(dest) == 2:
        return (_name(dest[0], "name"), _name(dest[1], "node"))
    if isinstance(dest, tuple) and len(dest) == 3:  # (node, number, serial): a pid
        return (_name(dest[0], "node"), int(dest[1]), int(dest[2]))
    return _name(dest, "destination")


def erlang_send(*args, timeout=None):
    """erlang_send(dest, message) sends message to dest: a name registered on bertd's own node, a
    (name, node) pair, a bertd.Pid, or (node, number, serial). erlang_send(node, name, message) is
    the older form: the process registered as `name` on `node` (None: bertd's native node)."""
    if len(args) == 4:  # erlang_send(node, name, message, timeout)
        *args, timeout = args
    if len(args) == 3:
        node, name, message = args
        target = None if node is None else _name(node, "node")
        _request((_SEND, target, _name(name, "name"), message), timeout)
    elif len(args) == 2:
        _request((_SEND, _dest(args[0]), args[1]), timeout)
    else:
        raise TypeError("erlang_send(dest, message) or erlang_send(node, name, message)")


def self_pid():
    """This worker's pid on bertd's node: Erlang code sends it messages (Pid ! Msg) that
    erlang_recv_message returns. It lasts as long as the worker's connection to bertd."""
    return _request((_SELF,), None)


def erlang_recv_message(timeout=None):
    """Returns the next message sent to self_pid(), oldest first; waits up to `timeout` seconds (None:
    for ever) and then raises ErlangTimeout."""
    answer = _request((_RECV, _millis(timeout)), timeout)
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _MESSAGE:
        return answer[1]
    if answer == _TIMEOUT:
        raise ErlangTimeout(f"no message within {timeout} s")
    raise ErlangError(f"unexpected answer from bertd's Erlang link: {bert.safe_repr(answer)}")


def erlang_register_process(name, fn):
    """Registers `name` on bertd's node for this worker's module: {name, BertdNode} ! Msg from any
    Erlang node then runs fn(Msg) on one of the module's workers (as a cast), so register it in code
    that every worker runs. A name another module holds raises ErlangError."""
    if not callable(fn):
        raise TypeError("fn must be callable")
    key = str(_name(name, "name"))
    _request((_REGISTER, Atom(key)), None)
    _processes[key] = fn


def process_function(name):
    """The function this worker registered for `name`, or None (the handler loop uses it)."""
    return _processes.get(str(name))
