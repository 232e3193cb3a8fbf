"""handler.py: the external-handler side of bertd (and Ernie): read BERPs from fd 3, run the exposed
Python function, write one answer per request to fd 4. It must never write protocol bytes anywhere but
the answer fd, never leave a request unanswered while it runs, and never expose a callable the user did
not publish.

    import bertd

    @bertd.function("calc")
    def add(a, b):
        return a + b

    bertd.expose("text", text_module)   # every public function defined in that module
    bertd.float_format("ernie")         # answers' floats as FLOAT_EXT, for Ernie-era clients
    # the loop starts by itself when the script ends (bertd.auto_start = False disables that)

BERT-RPC 1.0 (doc/info-packets.md): bertd.stream_in() is a streamed request's iterator of bytes;
a function that returns a generator (or bertd.Stream(chunks, reply)) answers with a stream;
bertd.cache(expiration=60) attaches a cache info to the answer; bertd.validation_token() is the
client's token, and `return bertd.VALID` answers {info, valid, []} then {noreply}.
"""
import atexit
import inspect
import logging
import os
import sys
import threading
import traceback
import types

from . import bert, erlang, streams
from ._atoms import _CALL, _CAST, _INFO, _REPLY, _NOREPLY, _ERROR, _SERVER, _USER, _PROTOCOL
from .bert import Atom
from .streams import Stream, StreamError

__all__ = ["expose", "function", "start", "logfile", "loglevel", "float_format", "Handler", "RequestStream",
           "stream_in", "cache", "validation_token", "VALID"]

REQUEST_FD = 3
ANSWER_FD = 4

_log = logging.getLogger("bertd.handler")
_log.addHandler(logging.NullHandler())
_log.propagate = False


class Handler:
    """A table of exposed modules and the request loop that serves them.

    float_format="ernie" writes the answers' floats as FLOAT_EXT (see bertd.bert), for clients on
    ruby-bert (Ernie-era bertrpc); requests are read in either form.
    """

    def __init__(self, float_format="new"):
        self.modules = {}
        self.float_format = float_format
        bert.writes_float_ext(float_format)

    def expose(self, name, target):
        """Publishes target's functions as module `name`.

        target may be a Python module (its public functions defined in it, or the names in its
        __all__), a dict of name -> callable, or any other object (its public callable attributes,
        e.g. a class of static methods or an instance).
        """
        self.modules.setdefault(str(name), {})
        self.modules[str(name)]["*"] = target

    def function(self, module, name=None):
        """Decorator publishing one function as module:name (name defaults to the function's own)."""

        def register(fn):
            self.modules.setdefault(str(module), {})[name or fn.__name__] = fn
            return fn

        return register

    def lookup(self, module, function):
        """Returns the callable for module:function, or an error answer when there is none."""
        table = self.modules.get(str(module))
        if table is None:
            return None, _server_error(1, f"No such module '{module}'")
        fn = table.get(str(function)) if str(function) != "*" else None
        if fn is None and "*" in table:
            fn = _public_callable(table["*"], str(function))
        if fn is None:
            return None, _server_error(2, f"No such function '{module}:{function}'")
        return fn, None

    def dispatch(self, request):
        """Returns the answer term for one decoded request, or None for a frame that needs none."""
        if not isinstance(request, tuple) or not request:
            return _server_error(0, f"Invalid request: {_show(request)}")
        kind = request[0]
        if kind == _INFO and type(kind) is Atom and len(request) == 3:
            _log.debug("info %s", _show(request))
            return None
        if len(request) != 4 or type(kind) is not Atom or kind not in (_CALL, _CAST):
            return _server_error(0, f"Invalid request: {_show(request)}")
        _, module, function, args = request
        if type(module) is not Atom or type(function) is not Atom or not isinstance(args, list):
            return _server_error(0, f"Invalid request: {_show(request)}")
        _log.info("%s %s:%s/%d", kind, module, function, len(args))
        if function == _PROCESS:
            return _run_process(kind, args)
        ctx = _context if _context is not None else _Context()
        fn, error = self.lookup(module, function)
        if error is None:
            result, error = _run_user(fn, args, kind == _CAST, f"{module}:{function}")
        else:
            _log.warning("%s", error[1][3].decode())
        if error is not None:
            ctx.cache = ctx.valid = None  # an error is never cached nor "still valid"
        # The client of a cast already has its {noreply}; like Ernie's handler, answer that
        # whatever happened, so the server only learns the work is over.
        if kind == _CAST:
            return (_NOREPLY,)
        if error is not None:
            return error
        if result is VALID:
            ctx.valid = True
            return (_NOREPLY,)
        if isinstance(result, Stream):
            return result
        answer = (_REPLY, result)
        _log.debug("reply %s", _show(answer))
        return answer

    def encode_answer(self, answer):
        try:
            return bert.encode(answer, self.float_format)
        except bert.EncodeError as e:
            _log.error("cannot encode the answer: %s", e)
            return bert.encode(_user_error(e), self.float_format)

    def serve(self, request_fd=REQUEST_FD, answer_fd=ANSWER_FD):
        """Answers requests until end-of-file on request_fd (or a closed answer fd)."""
        global _context
        _log.info("handler %d serving modules %s", os.getpid(), ", ".join(sorted(self.modules)))
        infos = _Context()  # what the infos before the next request said
        while True:
            try:
                body = bert.read_berp_bytes(request_fd)
            except (bert.DecodeError, ConnectionResetError) as e:
                # The stream ended inside a frame, or the server is gone: nothing can follow.
                _log.error("%s", e)
                return
            if body is None:
                _log.info("end of input, exiting")
                return
            undecodable = None
            try:
                request = bert.decode(body)
            except bert.DecodeError as e:
                _log.error("undecodable request: %s", e)
                undecodable = _error(_PROTOCOL, 2, "ProtocolError", f"Unable to decode request: {e}", [])
            else:
                if _note_info(request, infos):
                    continue
            if infos.streamed:
                infos.stream = RequestStream(request_fd)
            _context, ctx, infos = infos, infos, _Context()
            try:
                answer = undecodable or self.dispatch(request)
            finally:
                _context = None
            # A plain answer waits for the request's stream to end (bertd takes an answer as the
            # end of the request); a streamed one drains it before its own end (write_answer).
            if not isinstance(answer, Stream) and ctx.stream is not None and not ctx.stream.drain():
                return  # cut short: bertd replaces this worker
            if answer is None:
                continue
            try:
                if not self.write_answer(answer_fd, ctx, answer):
                    return
            except (BrokenPipeError, ConnectionResetError):
                _log.info("answer channel closed, exiting")
                return

    def write_answer(self, fd, ctx, answer):
        """Writes the infos, the answer and, for a Stream, its chunks. False when a stream broke
        after it began: the worker must end (a stream cannot be cut short any other way)."""
        head = []
        ctx = ctx if ctx is not None else _Context()
        if ctx.cache:
            head.append(bert.encode_berp((_INFO, streams._CACHE, ctx.cache), self.float_format))
        if ctx.valid:
            head.append(bert.encode_berp(streams.VALID_INFO))
        if not isinstance(answer, Stream):
            head.append(_berp(self.encode_answer(answer)))
            bert._write_all(fd, b"".join(head))
            return True
        pieces = answer.pieces()
        try:
            first = next(pieces, None)
        except Exception as e:  # failed before its first chunk: still an ordinary error answer
            _log.error("the streamed answer raised %s: %s", type(e).__name__, _message(e))
            if ctx.stream is not None and not ctx.stream.drain():
                return False
            bert._write_all(fd, _berp(self.encode_answer(_user_error(e))))
            return True
        head.append(bert.encode_berp(streams.STREAM_INFO))
        head.append(_berp(self.encode_answer((_REPLY, answer.reply))))
        bert._write_all(fd, b"".join(head))
        try:
            while first is not None:
                _write_chunk(fd, first)
                first = next(pieces, None)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as e:
            _log.error("the streamed answer raised %s after it began: %s; ending the worker",
                       type(e).__name__, _message(e))
            return False
        if ctx.stream is not None and not ctx.stream.drain():
            return False
        bert._write_all(fd, streams.END)
        return True


class RequestStream:
    """A streamed request's chunks, read from fd 3 as the function iterates (bertd.stream_in()).

    Iterating yields each chunk's bytes; read() joins them all. What the function leaves unread is
    read and dropped once it returns, so the next request is in step. A stream cut short raises
    bertd.StreamError.
    """

    def __init__(self, fd):
        self.fd = fd
        self.done = False
        self.broken = False
        self.bytes = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.done or self.broken:
            if self.broken:
                raise StreamError("the request's stream was cut short")
            raise StopIteration
        try:
            data = streams.read_chunk(self._read_exact, None)
        except StreamError:
            self.broken = True
            raise
        if data is None:
            self.done = True
            raise StopIteration
        self.bytes += len(data)
        return data

    def read(self):
        """All the stream's remaining bytes at once (bounded memory only if you iterate instead)."""
        return b"".join(self)

    def drain(self):
        """Reads the rest and drops it. False when the stream was cut short."""
        try:
            for _ in self:
                pass
        except (StreamError, OSError) as e:
            _log.error("the request's stream: %s", e)
            return False
        return True

    def _read_exact(self, n):
        parts, got = [], 0
        while got < n:
            piece = os.read(self.fd, min(n - got, 1 << 20))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)


class _Context:
    """What the request being served carries beyond its term: the infos before it (a stream, the
    client's validation token) and what its function attached (a cache info, VALID)."""

    __slots__ = ("streamed", "stream", "token", "cache", "valid")

    def __init__(self):
        self.streamed = False
        self.stream = None
        self.token = None
        self.cache = None
        self.valid = None


class _Valid:
    def __repr__(self):
        return "bertd.VALID"


# Returned by a function: the client's validation token still holds ({info, valid, []}, {noreply}).
VALID = _Valid()

# The request being served (the loop serves one at a time); None outside a request.
_context = None


def _note_info(request, infos):
    """True when `request` is an info (recorded in `infos` for the request after it)."""
    if not (isinstance(request, tuple) and len(request) == 3 and request[0] == _INFO and type(request[0]) is Atom):
        return False
    _log.debug("info %s", _show(request))
    if request[1] == streams._STREAM:
        infos.streamed = True
    elif request[1] == streams._CACHE:
        try:
            infos.token = streams.read_cache_options(request[2]).get("validation")
        except ValueError as e:
            _log.warning("%s", e)
    return True


def _run_user(fn, args, cast, name):
    """Runs the user's function: (result, None), or (None, error answer). A generator result is a
    Stream; a cast's stream is run through (its work is done) and dropped."""
    try:
        result = fn(*args)
        if inspect.isgenerator(result):
            result = Stream(result)
        if cast and isinstance(result, Stream):
            for _ in result.pieces():
                pass
        return result, None
    except Exception as e:  # the client must learn about any failure of the user's code
        _log.error("%s raised %s: %s", name, type(e).__name__, _message(e))
        return None, _user_error(e)


def _write_chunk(fd, piece):
    head = streams.chunk_header(len(piece))
    if len(piece) < 65536:
        bert._write_all(fd, head + bytes(piece))  # one write for a small chunk
    else:
        bert._write_all(fd, head)
        bert._write_all(fd, piece)


def _berp(body):
    return len(body).to_bytes(4, "big") + body


def _require_context(what):
    if _context is None:
        raise RuntimeError(f"bertd.{what}() works only inside a function that answers a request")
    return _context


def stream_in():
    """The streamed request's chunks (a RequestStream), or None when the request was not streamed."""
    return _require_context("stream_in").stream


def validation_token():
    """The token of the client's {info, cache, [{validation, Token}]} for this request, or None."""
    return _require_context("validation_token").token


def cache(expiration=None, validation=None, access="private"):
    """Attaches {info, cache, [{access, A}, {expiration, S} | {validation, Token}]} to this answer
    (expiration in seconds, 0: for ever; validation a bytes or str token). Errors are not cached."""
    options = streams.cache_options(access, expiration, validation)
    _require_context("cache").cache = options


# bertd runs a message to a name this worker's module registered (erlang_register_process) as
# {call, Module, '$bertd_message', [Name, Message]}, answered {reply, ok} once the function ran; a
# failure is answered as an error, which bertd counts (errors.<type>.<module>) and logs.
_PROCESS = Atom("$bertd_message")
_OK = (_REPLY, Atom("ok"))


def _run_process(kind, args):
    fn = erlang.process_function(args[0]) if len(args) == 2 else None
    if fn is None:
        name = bert.safe_repr(args[0]) if args else "?"
        _log.error("a message for %s, which this worker did not register", name)
        return _server_error(2, f"no Erlang process {name} is registered in worker {os.getpid()}")
    try:
        fn(args[1])
    except Exception as e:
        _log.error("the Erlang process %s raised %s: %s", args[0], type(e).__name__, _message(e))
        return _user_error(e)
    return _OK if kind == _CALL else (_NOREPLY,)


def _public_callable(target, name):
    if name.startswith("_"):
        return None
    if isinstance(target, dict):
        fn = target.get(name)
        return fn if callable(fn) else None
    if isinstance(target, types.ModuleType):
        exported = getattr(target, "__all__", None)
        if exported is not None and name not in exported:
            return None
        fn = getattr(target, name, None)
        # A module's imports (os.system, say) must not become remote procedures, nor its classes.
        if exported is None and (getattr(fn, "__module__", None) != target.__name__ or inspect.isclass(fn)):
            return None
        return fn if callable(fn) else None
    fn = getattr(target, name, None)
    if fn is None or not callable(fn) or inspect.isclass(fn):
        return None
    return fn


def _error(kind, code, klass, message, backtrace):
    return (_ERROR, (kind, code, klass.encode(), message.encode("utf-8", "replace"), backtrace))


def _server_error(code, message):
    return _error(_SERVER, code, "ServerError", message, [])


def _user_error(exc):
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # drop dispatch's own frame
    # Innermost first, "file:line:in `function'", the order and shape Ernie clients print.
    lines = [f"{f.filename}:{f.lineno}:in `{f.name}'".encode("utf-8", "replace") for f in reversed(frames)]
    return _error(_USER, 0, type(exc).__name__, _message(exc), lines)


def _show(term):
    return bert.safe_repr(term)


def _message(exc):
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be printed>"


# ---------------------------------------------------------------------------------------------------
# The process-wide handler behind bertd.expose / bertd.function / bertd.start.

_default = Handler()
_state = {"started": False, "hooked": False, "crashed": False}
_lock = threading.Lock()


def expose(name, target):
    _default.expose(name, target)
    _arm_auto_start()


def function(module, name=None):
    if callable(module):
        raise TypeError("use @bertd.function(\"module_name\"): the module name is required")
    register = _default.function(module, name)

    def wrapper(fn):
        _arm_auto_start()
        return register(fn)

    return wrapper


def start(request_fd=REQUEST_FD, answer_fd=ANSWER_FD):
    """Runs the request loop until end-of-file on fd 3. Returns when it is done."""
    _state["started"] = True
    _default.serve(request_fd, answer_fd)


def float_format(fmt):
    """Sets the form of the floats in answers: "new" (NEW_FLOAT, the default) or "ernie" (FLOAT_EXT,
    for clients on ruby-bert, such as Ernie-era bertrpc programs)."""
    bert.writes_float_ext(fmt)
    _default.float_format = fmt


def logfile(path):
    """Logs start-up, requests and errors to path (responses too at level DEBUG)."""
    for h in list(_log.handlers):
        if not isinstance(h, logging.NullHandler):
            _log.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    _log.addHandler(handler)
    if _log.level == logging.NOTSET:
        _log.setLevel(logging.INFO)


def loglevel(level):
    """Sets the log level: a logging constant or a name such as "debug" or "warning"."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {level!r}")
    _log.setLevel(level)


def _arm_auto_start():
    with _lock:
        if _state["hooked"]:
            return
        _state["hooked"] = True
    previous = sys.excepthook

    def note_crash(*exc_info):
        # A script that died of an exception must not then sit serving requests.
        _state["crashed"] = True
        previous(*exc_info)

    sys.excepthook = note_crash
    atexit.register(_auto_start)


def _auto_start():
    package = sys.modules.get("bertd")
    if _state["started"] or _state["crashed"] or not getattr(package, "auto_start", True):
        return
    try:
        os.fstat(REQUEST_FD)
        os.fstat(ANSWER_FD)
    except OSError:
        sys.stderr.write("bertd: fd 3 and 4 are not open; run this handler under bertd\n")
        sys.stderr.flush()
        os._exit(1)
    start()
