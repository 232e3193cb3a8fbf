"""client.py: a BERT-RPC client for bertd (or any BERT-RPC 1.0 server), in the manner of Ruby's bertrpc:
svc = Service("127.0.0.1", 9999); svc.call.calc.add(1, 2) -> 3. It must never hand a caller an answer
that belongs to another request: a connection whose stream may be out of step is closed, not reused.
BERT-RPC 1.0's infos (doc/info-packets.md): streamed requests (stream_in=), streamed answers and cache
infos (accept=, validation=: the result is an Answer), callbacks (callback= on a cast).
"""
import builtins
import select
import socket
import threading
import time

from . import bert, streams
from ._atoms import _CALL, _CAST, _INFO, _REPLY, _NOREPLY, _ERROR, _PRIORITY
from .bert import Atom

__all__ = [
    "Service", "Connection", "Answer", "BertdError", "RPCError", "ProtocolError", "ServerError", "UserError",
    "ProxyError", "ConnectionError", "ReadTimeout", "ReadError",
]

# At most this many infos may come before one answer (a server that sends nothing else is broken).
_MAX_INFOS = 64


class BertdError(Exception):
    """Base of every error this client raises."""


class RPCError(BertdError):
    """The server answered {error, {Type, Code, Class, Message, Backtrace}}."""

    def __init__(self, type, code, klass, message, backtrace):
        self.type = type
        self.code = code
        self.klass = klass
        self.message = message
        self.backtrace = backtrace
        super().__init__(f"{type} error {code}: {klass}: {message}")


class ProtocolError(RPCError):
    pass


class ServerError(RPCError):
    pass


class UserError(RPCError):
    pass


class ProxyError(RPCError):
    pass


class ConnectionError(BertdError, builtins.ConnectionError):
    """Could not connect, or the connection broke before the answer was complete."""


class ReadTimeout(BertdError, builtins.TimeoutError):
    """The answer did not arrive within the timeout."""


class ReadError(BertdError):
    """The server's answer was not a well-formed BERP or not a BERT-RPC answer."""


_ERROR_CLASSES = {"protocol": ProtocolError, "server": ServerError, "user": UserError, "proxy": ProxyError}


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def raise_for_error(detail):
    """Raises the RPCError subclass for the detail of an {error, Detail} answer."""
    if isinstance(detail, tuple) and len(detail) == 5:
        kind, code, klass, message, backtrace = detail
    elif isinstance(detail, tuple) and len(detail) == 3:
        # Older servers answer {Type, Code, Message}.
        kind, code, message = detail
        klass, backtrace = b"", []
    else:
        raise ReadError(f"malformed error answer: {bert.safe_repr(detail)}")
    cls = _ERROR_CLASSES.get(str(kind), RPCError)
    trace = [_text(x) for x in backtrace] if isinstance(backtrace, list) else []
    raise cls(str(kind), code, _text(klass), _text(message), trace)


class Connection:
    """One TCP connection that sends frames and reads frames; no RPC semantics.

    Meant for tests and tools that need to send odd or broken input and read whatever comes back.
    float_format="ernie" makes send() write floats as FLOAT_EXT (see bertd.bert).
    """

    def __init__(self, host, port, timeout=None, float_format="new"):
        bert.writes_float_ext(float_format)  # a bad value fails here, not at the first send
        self.timeout = timeout
        self.float_format = float_format
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ConnectionError(f"cannot connect to {host}:{port}: {e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_raw(self, data):
        """Sends bytes exactly as given (no length header added)."""
        try:
            self.sock.settimeout(self.timeout)  # a read may have left a shorter one
            self.sock.sendall(data)
        except socket.timeout:
            raise ReadTimeout("sending timed out") from None
        except OSError as e:
            raise ConnectionError(f"sending failed: {e}") from None

    def send(self, term):
        """Sends one term as a BERP."""
        self.send_raw(bert.encode_berp(term, self.float_format))

    def send_bert(self, body):
        """Sends already encoded BERT bytes (possibly malformed) inside a correct length header."""
        self.send_raw(len(body).to_bytes(4, "big") + bytes(body))

    def read_frame_bytes(self, timeout=None):
        """Returns the BERT bytes of the next BERP, or None if the peer closed at a frame boundary."""
        self._set_deadline(timeout)
        try:
            return bert.read_berp_bytes(_DeadlineReader(self.sock, self._deadline))
        except bert.DecodeError as e:
            raise ConnectionError(f"connection closed mid-answer: {e}") from None
        except socket.timeout:
            raise ReadTimeout("no complete answer within the timeout") from None
        except OSError as e:
            raise ConnectionError(f"reading failed: {e}") from None

    def read_frame_bytes_limited(self, max_size, timeout=None):
        """read_frame_bytes() refusing a frame over max_size bytes (a ReadError)."""
        self._set_deadline(timeout)
        try:
            return bert.read_berp_bytes(_DeadlineReader(self.sock, self._deadline), max_size=max_size)
        except bert.DecodeError as e:
            if "exceeds the limit" in str(e):
                raise ReadError(f"a streamed answer's chunk: {e}") from None
            raise ConnectionError(f"the streamed answer was cut short: {e}") from None
        except socket.timeout:
            raise ReadTimeout("no stream chunk within the timeout") from None
        except OSError as e:
            raise ConnectionError(f"reading failed: {e}") from None

    def read(self, timeout=None):
        """Returns the next decoded term. Raises ConnectionError if the peer closed instead."""
        body = self.read_frame_bytes(timeout)
        if body is None:
            raise ConnectionError("connection closed by the server before an answer")
        try:
            return bert.decode(body)
        except bert.DecodeError as e:
            raise ReadError(f"undecodable answer: {e}") from None

    def request(self, term, timeout=None):
        self.send(term)
        return self.read(timeout)

    def is_quiet(self):
        """True when nothing is waiting to be read: no bytes, no end-of-file, no error. Never blocks.

        Between requests a BERT-RPC server sends nothing, so anything else means the server closed
        the connection (or the stream is out of step) and it must not carry another request.
        """
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _set_deadline(self, timeout):
        timeout = self.timeout if timeout is None else timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout


class _DeadlineReader:
    """A socket reader that spends at most one shared deadline over the whole answer."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline

    def recv(self, n):
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("deadline passed")
            self.sock.settimeout(left)
        return self.sock.recv(n)


class Service:
    """A BERT-RPC service at host:port.

    svc.call.mod.fun(*args) returns the result; svc.cast.mod.fun(*args) returns None.
    priority="low" (or "high") sends {info, priority, [low]} before each request;
    svc.call(priority="low") does it for one request only.
    persistent=True keeps one connection for many requests; by default each request has its own
    connection, like Ruby's bertrpc.
    float_format="ernie" writes the requests' floats as FLOAT_EXT, the only form a handler on Ernie's
    own Ruby library (ruby-bert) can read; answers are read in either form.
    chunk_size cuts a streamed request's chunks (keep it at most the server's limits.max_frame);
    max_chunk refuses a streamed answer's chunk longer than that (a ReadError).
    """

    def __init__(self, host, port, timeout=None, priority=None, persistent=False, float_format="new",
                 chunk_size=streams.DEFAULT_CHUNK, max_chunk=64 << 20):
        bert.writes_float_ext(float_format)
        self.float_format = float_format
        self.chunk_size = chunk_size
        self.max_chunk = max_chunk
        self.host = host
        self.port = port
        self.timeout = timeout
        self.priority = priority
        self.persistent = persistent
        self._conn = None
        self._lock = threading.Lock()

    @property
    def call(self):
        return _Request(self, _CALL, {})

    @property
    def cast(self):
        return _Request(self, _CAST, {})

    def request(self, kind, module, function, args, priority=None, info=(), **rpc10):
        """Sends one call or cast with its info frames and returns the result (None for a cast).

        BERT-RPC 1.0 options: stream_in=chunks (an iterable of bytes or a binary file) streams the
        request; accept=["stream", "cache"] and validation=Token make the result an Answer;
        callback=(b"host:port", M, F, Args), on a cast, has the server cast the result there.
        """
        request = bert.encode((Atom(kind), Atom(module), Atom(function), list(args)), self.float_format)
        return self._send(request, kind, priority, info, **rpc10)

    def request_raw(self, payload, priority=None, info=(), **rpc10):
        """Sends `payload` (BERT bytes, not checked: it may be malformed) as the request frame after the
        info frames, and returns the answer interpreted as for a call (None for {noreply}). For tools
        and tests."""
        return self._send(bytes(payload), "request", priority, info, **rpc10)

    def _send(self, request, kind, priority, info, stream_in=None, accept=None, validation=None, callback=None):
        frames = []
        priority = priority if priority is not None else self.priority
        if priority is not None:
            frames.append((_INFO, _PRIORITY, [Atom(priority)]))
        for command, options in info:
            frames.append((_INFO, Atom(command), list(options)))
        frames += _rpc10_infos(kind, stream_in, accept, validation, callback)
        if len(request) > 0xFFFFFFFF:
            raise bert.EncodeError("request longer than a BERP can carry")
        payload = b"".join(bert.encode_berp(f, self.float_format) for f in frames)
        payload += len(request).to_bytes(4, "big") + request
        chunks = None if stream_in is None else streams.Stream(stream_in, chunk_size=self.chunk_size)
        detailed = accept is not None or validation is not None
        with self._lock:
            conn = self._take()
        return self._exchange(conn, payload, chunks, kind, detailed)

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _take(self):
        """The kept connection if it is still good, else a new one (the caller owns it)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_quiet():
            # The server closed an idle connection; it never saw this request, so a new one is safe.
            conn.close()
            conn = None
        return conn if conn is not None else Connection(self.host, self.port, self.timeout)

    def _give_back(self, conn):
        """A connection whose exchange ended in step: kept when persistent (and none is kept yet)."""
        with self._lock:
            if self.persistent and self._conn is None:
                self._conn = conn
                return
        conn.close()

    def _exchange(self, conn, payload, chunks, kind, detailed):
        try:
            conn.send_raw(payload)
            if chunks is not None:
                _send_chunks(conn, chunks)
            answer = _read_answer_head(conn)
            if answer.streamed:
                answer._attach(self, conn)
            else:
                self._give_back(conn)
        except BaseException:
            # After a failure the stream may be out of step: never reuse it.
            conn.close()
            raise
        answer.value = self._interpret(answer.term, kind)
        if detailed:
            return answer
        if answer.streamed:  # a server that streams to a client that did not ask: gathered
            with answer:
                return answer.read()
        return answer.value

    @staticmethod
    def _interpret(answer, kind):
        if isinstance(answer, tuple) and answer:
            tag = answer[0]
            if tag == _REPLY and len(answer) == 2:
                return answer[1]
            if tag == _NOREPLY and len(answer) == 1:
                return None
            if tag == _ERROR and len(answer) == 2:
                raise_for_error(answer[1])
        raise ReadError(f"not a BERT-RPC answer to a {kind}: {bert.safe_repr(answer)}")


class Answer:
    """A BERT-RPC 1.0 answer, what a call with accept= or validation= returns.

    value: the reply's term (None for {noreply}); cache: the cache info's options as a dict
    ({"access": "public", "expiration": 60} or with "validation": Token), or None; valid: True when
    the server said the client's validation token still holds; streamed: True when chunks follow.
    Iterating yields the chunks (bytes) as they arrive; read() joins them. The connection is busy
    until the last chunk was read: close() (or leaving a `with` block) before the end closes it.
    """

    def __init__(self):
        self.term = None
        self.value = None
        self.cache = None
        self.valid = False
        self.streamed = False
        self._service = self._conn = None

    def _attach(self, service, conn):
        self._service, self._conn = service, conn

    def __iter__(self):
        return self

    def __next__(self):
        conn = self._conn
        if conn is None:
            raise StopIteration
        try:
            body = conn.read_frame_bytes_limited(self._service.max_chunk)
        except BaseException:
            self.close()
            raise
        if body is None:
            self.close()
            raise ConnectionError("the streamed answer was cut short: the server closed the connection")
        if not body:
            self._conn = None
            self._service._give_back(conn)
            raise StopIteration
        return body

    def read(self):
        """All the remaining chunks' bytes at once (iterate instead to keep memory bounded)."""
        return b"".join(self)

    def close(self):
        """Drops the rest of a streamed answer (closing its connection, which cannot be reused)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"Answer(value={bert.safe_repr(self.value)}, cache={self.cache!r}, valid={self.valid}, "
                f"streamed={self.streamed})")


def _rpc10_infos(kind, stream_in, accept, validation, callback):
    """The info terms that BERT-RPC 1.0 options ask for; ValueError for options that are wrong."""
    frames = []
    if accept is not None:
        kinds = [accept] if isinstance(accept, str) else list(accept)
        if any(k not in ("stream", "cache") for k in kinds):
            raise ValueError(f"accept must name 'stream' and/or 'cache', not {accept!r}")
        frames.append((_INFO, streams._ACCEPT, [Atom(k) for k in kinds]))
    if validation is not None:
        frames.append((_INFO, streams._CACHE, [(streams._VALIDATION, streams.token_bytes(validation))]))
    if callback is not None:
        if kind != "cast":
            raise ValueError("callback= goes with a cast (the server answers {noreply} and casts the result)")
        frames.append(_callback_info(callback))
    if stream_in is not None:
        frames.append(streams.STREAM_INFO)
    return frames


def _callback_info(callback):
    try:
        service, module, function, args = callback
    except (TypeError, ValueError):
        raise ValueError("callback must be (b\"host:port\", Module, Function, Args)") from None
    service = streams.token_bytes(service)
    if b":" not in service or not isinstance(args, (list, tuple)):
        raise ValueError(f"callback must be (b\"host:port\", Module, Function, Args), not {callback!r}")
    mfa = (Atom("mfa"), Atom(module), Atom(function), list(args))
    return (_INFO, streams._CALLBACK, [(Atom("service"), service), mfa])


def _send_chunks(conn, chunks):
    """Sends a streamed request's chunks and its zero end. When the server stops reading (it answered
    early: a limit, a refused stream), its answer is what the caller gets."""
    try:
        for piece in chunks.pieces():
            conn.send_raw(streams.chunk_header(len(piece)) + bytes(piece))
        conn.send_raw(streams.END)
    except ConnectionError as e:
        early = _early_answer(conn)
        if early is None:
            raise ConnectionError(f"the server stopped reading the streamed request: {e}") from None
        Service._interpret(early, "call")
        raise


def _early_answer(conn):
    try:
        body = conn.read_frame_bytes(timeout=2)
        return None if body is None else bert.decode(body)
    except (BertdError, bert.DecodeError):
        return None


def _read_answer_head(conn):
    """Reads the infos before the answer, and the answer: an Answer whose chunks, if any, are next."""
    answer = Answer()
    for _ in range(_MAX_INFOS):
        term = conn.read()
        if not (isinstance(term, tuple) and len(term) == 3 and term[0] == _INFO and type(term[0]) is Atom):
            break
        if term[1] == streams._STREAM:
            answer.streamed = True
        elif term[1] == streams._VALID:
            answer.valid = True
        elif term[1] == streams._CACHE:
            try:
                answer.cache = streams.read_cache_options(term[2])
            except ValueError as e:
                raise ReadError(f"malformed cache info from the server: {e}") from None
        # other infos modify nothing this client knows: ignored, as the specification says
    else:
        raise ReadError(f"the server sent {_MAX_INFOS} infos and no answer")
    if answer.streamed and not (isinstance(term, tuple) and len(term) == 2 and term[0] == _REPLY):
        raise ReadError(f"a streamed answer must start with {{reply, Term}}, not {bert.safe_repr(term)}")
    answer.term = term
    return answer


class _Request:
    """svc.call or svc.cast: attribute access picks the module; calling it sets per-request options."""

    def __init__(self, service, kind, options):
        self._service = service
        self._kind = kind
        self._options = options

    def __call__(self, priority=None, info=(), **rpc10):
        return _Request(self._service, self._kind, {"priority": priority, "info": tuple(info), **rpc10})

    def __getattr__(self, module):
        # Python probes objects for protocol names (__iter__, __deepcopy__, ...); only the
        # server's pseudo-module may look like one. Other odd names go through svc.call["name"].
        if module.startswith("__") and module != "__admin__":
            raise AttributeError(module)
        return _Module(self, module)

    def __getitem__(self, module):
        return _Module(self, module)


class _Module:
    def __init__(self, request, name):
        self._request = request
        self._name = name

    def __getattr__(self, function):
        if function.startswith("__"):
            raise AttributeError(function)
        return self[function]

    def __getitem__(self, function):
        req = self._request

        def invoke(*args):
            return req._service.request(req._kind, self._name, function, args, **req._options)

        invoke.__name__ = str(function)
        return invoke
