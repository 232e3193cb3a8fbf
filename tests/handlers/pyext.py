"""pyext.py: the Python handler the integration tests run as module `ext` (and `other`).

Functions are small and observable: they report their pid, record the order they ran in,
sleep, fail, write bytes out of turn, or die, so tests can see what bertd did with them.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402

_order = []


def add(a, b):
    return a + b


def echo(x):
    return x


def pid():
    return os.getpid()


def slow(ms):
    time.sleep(ms / 1000.0)
    return ms


def mark_slow(path, ms):
    """Writes this worker's pid to `path`, then sleeps: a test can kill it mid-request."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(ms / 1000.0)
    return ms


def mark_half(path):
    """Writes half an answer to fd 4, then its pid to `path`, then hangs: stale bytes for the next worker."""
    os.write(4, b"\x00\x00\x00\x64\x83\x68\x02\x64")
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


def record(tag, ms=0):
    """Sleeps ms, then appends tag to this worker's run order."""
    time.sleep(ms / 1000.0)
    _order.append(tag)
    return len(_order)


def order():
    return list(_order)


def fail(message):
    raise RuntimeError(message.decode() if isinstance(message, bytes) else message)


def big(n):
    return b"x" * n


def size(b):
    return len(b)


def garbage():
    """Answers with bytes that are not a BERT term."""
    os.write(4, b"\x00\x00\x00\x05hello")
    time.sleep(60)


def die():
    os._exit(3)


def getenv(name):
    """The value of an environment variable in this worker, or nil."""
    value = os.environ.get(name.decode() if isinstance(name, bytes) else name)
    return value.encode() if value is not None else []


def cwd():
    return os.getcwd().encode()


def ppid():
    return os.getppid()


def _forged():
    return bertd.encode_berp((bertd.Atom("reply"), b"forged"))


def answer_twice(x):
    """Answers x, then (once the answer has gone) writes a second answer nobody asked for."""
    import threading
    threading.Timer(0.05, lambda: os.write(4, _forged())).start()
    return x


def leave_writer(path, ms):
    """Forks a child that stays in the worker's process group and, ms later, writes an answer
    of its own into the worker's socket; its pid goes to `path`. Answers at once."""
    pid = os.fork()
    if pid == 0:
        time.sleep(ms / 1000.0)
        try:
            os.write(4, _forged())
        finally:
            os._exit(0)
    with open(path, "w") as f:
        f.write(str(pid))
    return b"left one"


def escape_and_answer_late(path, ms):
    """Forks a child that leaves the worker's process group (setsid) and answers ms later, after
    the worker itself has been killed for its timeout; the child's pid goes to `path`."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(ms / 1000.0)
        try:
            os.write(4, _forged())
        except OSError:
            pass
        os._exit(0)
    with open(path, "w") as f:
        f.write(str(pid))
    time.sleep(60)


bertd.expose("ext", sys.modules[__name__])
bertd.expose("other", sys.modules[__name__])

