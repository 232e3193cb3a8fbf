"""The atoms of BERT-RPC and of bertd's Erlang bridge, made once for the client, the handler
and the Erlang helpers."""
from .bert import Atom

_CALL = Atom("call")
_CAST = Atom("cast")
_INFO = Atom("info")
_REPLY = Atom("reply")
_NOREPLY = Atom("noreply")
_ERROR = Atom("error")
_PRIORITY = Atom("priority")
_SERVER = Atom("server")
_USER = Atom("user")
_PROTOCOL = Atom("protocol")
_RPC = Atom("rpc")
_SEND = Atom("send")
_BADRPC = Atom("badrpc")
