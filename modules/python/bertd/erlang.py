"""erlang.py: calling Erlang from a handler that bertd runs: erlang_rpc(node, module, function, args)
and erlang_send(node, name, message) go through bertd's Erlang link (its socket is in the environment
variable BERTD_ERLANG), so a handler needs no Erlang distribution of its own. It never opens more than
one connection per process and never hands a caller an answer that belongs to another request.

    import bertd
    bertd.erlang_rpc("app@host", "erlang", "node", [])      # -> Atom('app@host')
    bertd.erlang_rpc(None, "lists", "reverse", [[1, 2]])   # None: bertd's native node
    bertd.erlang_send("app@host", "logger_proc", ("event", 1))
"""
import os
import socket
import threading

from . import bert
from ._atoms import _RPC, _SEND, _REPLY, _ERROR, _BADRPC
from .bert import Atom

__all__ = ["erlang_rpc", "erlang_send", "ErlangError"]


class ErlangError(Exception):
    """The call did not return normally: bertd could not reach the node, or the node answered
    {badrpc, Reason} (then `reason` holds Reason)."""

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


_lock = threading.Lock()
_conn = {"sock": None, "pid": None}


def _address():
    address = os.environ.get("BERTD_ERLANG")
    if not address:
        raise ErlangError("BERTD_ERLANG is not set: run this handler under bertd with Erlang enabled "
                          "(a native module, --name/--sname, or an erlang: section in the config)")
    # "@name" is Linux's abstract socket namespace.
    return "\0" + address[1:] if address.startswith("@") else address


def _name(value, what):
    if isinstance(value, (Atom, str)):
        return Atom(value)
    if isinstance(value, bytes):
        return Atom(value.decode("utf-8"))
    raise TypeError(f"{what} must be a str, not {type(value).__name__}")


def _request(term, timeout):
    with _lock:
        sock = _conn["sock"]
        if sock is None or _conn["pid"] != os.getpid():  # a forked child gets a connection of its own
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(_address())
            except OSError as e:
                sock.close()
                raise ErlangError(f"cannot reach bertd's Erlang link: {e}") from e
            _conn["sock"], _conn["pid"] = sock, os.getpid()
        try:
            sock.settimeout(timeout)
            bert.write_berp(sock, term)
            answer = bert.read_berp(sock)
        except Exception as e:
            # Whatever happened, the stream may be out of step: never reuse it.
            sock.close()
            _conn["sock"] = None
            if isinstance(e, (OSError, EOFError, bert.DecodeError)):
                raise ErlangError(f"bertd's Erlang link: {e or type(e).__name__}") from e
            raise
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _REPLY:
        return answer[1]
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _ERROR:
        detail = answer[1]
        message = detail[3] if isinstance(detail, tuple) and len(detail) == 5 else detail
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise ErlangError(str(message))
    raise ErlangError(f"unexpected answer from bertd's Erlang link: {bert.safe_repr(answer)}")


def erlang_rpc(node, module, function, args=(), timeout=None):
    """Calls module:function(*args) on the Erlang node `node` (None: bertd's native node) and returns
    the result. Strings go as binaries, as BERT has them; pass bertd.Atom for atoms. Raises
    ErlangError for {badrpc, Reason} and when the node cannot be reached."""
    target = None if node is None else _name(node, "node")
    request = (_RPC, target, _name(module, "module"), _name(function, "function"), list(args))
    result = _request(request, timeout)
    if isinstance(result, tuple) and len(result) == 2 and result[0] == _BADRPC:
        raise ErlangError(f"badrpc: {bert.safe_repr(result[1])}", reason=result[1])
    return result


def erlang_send(node, name, message, timeout=None):
    """Sends message to the process registered as `name` on `node` (None: bertd's native node)."""
    target = None if node is None else _name(node, "node")
    _request((_SEND, target, _name(name, "name"), message), timeout)
