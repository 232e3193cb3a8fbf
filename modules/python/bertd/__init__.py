"""bertd: Python library for bertd (and Ernie) -- the BERT codec, external handlers and a BERT-RPC client.
Importing it never starts anything: the handler loop only starts once expose() or function() was used.
"""
from .bert import (Atom, BitBinary, DecodeError, EncodeError, Export, Fun, ImproperList, Map, Pid, Port, Ref,
                   decode, encode, encode_berp, read_berp, read_berp_bytes, write_berp)
from .client import (Answer, BertdError, Connection, ConnectionError, ProtocolError, ProxyError, ReadError,
                     ReadTimeout, RPCError, ServerError, Service, UserError)
from .erlang import (ErlangError, ErlangNode, ErlangTimeout, erlang_connect, erlang_recv_message,
                     erlang_register_process, erlang_rpc, erlang_send, self_pid)
from .handler import (VALID, Handler, RequestStream, cache, expose, float_format, function, logfile, loglevel,
                      start, stream_in, validation_token)
from .streams import Stream, StreamError

# When true (the default), a script that exposed functions and did not call start() runs the
# request loop as it exits, like Ernie's Ruby handlers. Set bertd.auto_start = False to prevent it.
auto_start = True

__all__ = [
    "Atom", "BitBinary", "DecodeError", "EncodeError", "Export", "Fun", "ImproperList", "Map", "Pid", "Port",
    "Ref",
    "decode", "encode", "encode_berp", "read_berp", "read_berp_bytes", "write_berp",
    "BertdError", "Connection", "ConnectionError", "ProtocolError", "ProxyError", "ReadError", "ReadTimeout",
    "RPCError", "ServerError", "Service", "UserError", "Answer",
    "Stream", "StreamError", "RequestStream", "stream_in", "cache", "validation_token", "VALID",
    "Handler", "expose", "float_format", "function", "logfile", "loglevel", "start", "auto_start",
    "ErlangError", "ErlangNode", "ErlangTimeout", "erlang_connect", "erlang_recv_message",
    "erlang_register_process", "erlang_rpc", "erlang_send", "self_pid",
]
