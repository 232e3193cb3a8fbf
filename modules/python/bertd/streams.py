"""streams.py: BERT-RPC 1.0's info packets as the handler and the client write and read them
(doc/info-packets.md): stream chunks (<u32 N><N bytes>, ended by <u32 0>), {info, stream, []},
{info, cache, Options} and {info, valid, []}. It must never write an empty chunk inside a stream
(four zero bytes end it) and never read a chunk past the limit it was given.
"""
import struct

from . import bert
from ._atoms import _INFO
from .bert import Atom

__all__ = ["Stream", "StreamError", "DEFAULT_CHUNK", "cache_options", "read_cache_options"]

# A streamed answer's chunks are at most this long (bertd refuses chunks over limits.max_frame).
DEFAULT_CHUNK = 256 << 10
END = b"\0\0\0\0"

_STREAM, _CACHE, _VALID, _ACCEPT, _CALLBACK = (Atom(a) for a in ("stream", "cache", "valid", "accept", "callback"))
_ACCESS, _EXPIRATION, _VALIDATION = Atom("access"), Atom("expiration"), Atom("validation")
_PUBLIC, _PRIVATE = Atom("public"), Atom("private")
STREAM_INFO = (_INFO, _STREAM, [])
VALID_INFO = (_INFO, _VALID, [])


class StreamError(ValueError):
    """A stream that broke its framing: cut short, a chunk over the limit, a chunk that is not bytes."""


class Stream:
    """An answer sent as a stream: ``return bertd.Stream(chunks, reply=[])``.

    `chunks` is any iterable of bytes-like objects (a generator, a list, a file opened "rb" is
    read in DEFAULT_CHUNK pieces). The client reads `reply` first, then the chunks. Empty chunks
    are skipped; long ones are cut to at most `chunk_size` bytes.
    """

    def __init__(self, chunks, reply=None, chunk_size=DEFAULT_CHUNK):
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError("chunk_size must be a positive int")
        if hasattr(chunks, "read"):
            source = chunks
            chunks = iter(lambda: source.read(chunk_size), b"")
        self.chunks = iter(chunks)
        self.reply = [] if reply is None else reply
        self.chunk_size = chunk_size

    def pieces(self):
        """The chunks as they go on the wire: non-empty bytes, at most chunk_size each."""
        size = self.chunk_size
        for item in self.chunks:
            if not isinstance(item, (bytes, bytearray, memoryview)):
                raise StreamError(f"a stream's chunks must be bytes, not {type(item).__name__}")
            view = memoryview(item).cast("B")
            for at in range(0, len(view), size):
                yield view[at:at + size]


def chunk_header(n):
    return struct.pack(">I", n)


def read_chunk(read_exact, max_chunk):
    """Reads one chunk with `read_exact(n)` (which returns fewer bytes only at end of input).
    Returns the chunk's bytes, or None for the zero header that ends the stream."""
    head = read_exact(4)
    if len(head) < 4:
        raise StreamError("the stream was cut short: end of input before its zero-length end")
    (n,) = struct.unpack(">I", head)
    if n == 0:
        return None
    if max_chunk is not None and n > max_chunk:
        raise StreamError(f"a stream chunk of {n} bytes is over the limit of {max_chunk}")
    data = read_exact(n)
    if len(data) < n:
        raise StreamError(f"the stream was cut short inside a chunk ({len(data)} of {n} bytes)")
    return data


def cache_options(access="private", expiration=None, validation=None):
    """The Options of {info, cache, Options} for a handler's answer; ValueError when they are wrong."""
    if access not in ("public", "private"):
        raise ValueError(f"cache access must be 'public' or 'private', not {access!r}")
    if expiration is None and validation is None:
        raise ValueError("cache() needs expiration=Seconds, validation=Token or both")
    options = [(_ACCESS, Atom(access))]
    if expiration is not None:
        if isinstance(expiration, bool) or not isinstance(expiration, int) or expiration < 0:
            raise ValueError(f"cache expiration must be an int of seconds >= 0 (0: for ever), not {expiration!r}")
        options.append((_EXPIRATION, expiration))
    if validation is not None:
        options.append((_VALIDATION, token_bytes(validation)))
    return options


def token_bytes(token):
    if isinstance(token, str):
        return token.encode("utf-8")
    if isinstance(token, (bytes, bytearray, memoryview)):
        return bytes(token)
    raise ValueError(f"a validation token must be bytes or str, not {type(token).__name__}")


def read_cache_options(options):
    """A dict of a cache info's options ({"access": "public", "expiration": 60, "validation": b"t"}).
    Raises ValueError for a shape doc/info-packets.md does not allow."""
    if not isinstance(options, list):
        raise ValueError(f"{{info, cache, Options}}: Options must be a list, not {bert.safe_repr(options)}")
    out = {}
    for o in options:
        if not (isinstance(o, tuple) and len(o) == 2 and type(o[0]) is Atom):
            raise ValueError(f"{{info, cache, Options}}: an option must be {{Key, Value}}, not {bert.safe_repr(o)}")
        key, value = o
        if key == _ACCESS and value in (_PUBLIC, _PRIVATE) and type(value) is Atom:
            out["access"] = str(value)
        elif key == _EXPIRATION and type(value) is int and value >= 0:
            out["expiration"] = value
        elif key == _VALIDATION and isinstance(value, bytes):
            out["validation"] = value
        elif key in (_ACCESS, _EXPIRATION, _VALIDATION):
            raise ValueError(f"{{info, cache, Options}}: bad {key}: {bert.safe_repr(value)}")
        else:
            out[str(key)] = value  # an option this library does not know is kept, not refused
    return out
