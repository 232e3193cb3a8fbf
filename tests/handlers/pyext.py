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


bertd.expose("ext", sys.modules[__name__])
bertd.expose("other", sys.modules[__name__])

