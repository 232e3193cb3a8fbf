"""calc.py: an example external handler exposing module `calc` through bertd.expose; also the handler
the Python library's tests run. It must never write to fd 3/4 itself: the library owns those.

Config (Ernie style): [{module, calc}, {type, external}, {command, "python3 calc.py"}, {count, 2}].
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bertd  # noqa: E402

_store = {}


class CalcError(Exception):
    pass


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def div(a, b):
    return a / b


def fail(message):
    raise CalcError(message.decode() if isinstance(message, bytes) else message)


def echo(value):
    return value


def put(key, value):
    """Used as a cast: remembers a value that a later call to get() returns."""
    _store[key] = value


def get(key):
    return _store.get(key)


def chatter(text):
    """Writes to stdout and stderr, which stay the handler's own: answers are on fd 4 only."""
    print(text.decode() if isinstance(text, bytes) else text, flush=True)
    sys.stderr.write("chatter on stderr\n")
    return bertd.Atom("ok")


def pid():
    return os.getpid()


if os.environ.get("CALC_LOG"):
    bertd.logfile(os.environ["CALC_LOG"])
    bertd.loglevel(os.environ.get("CALC_LOGLEVEL", "info"))

bertd.expose("calc", sys.modules[__name__])
# No bertd.start(): the loop starts by itself when this script ends (bertd.auto_start).
