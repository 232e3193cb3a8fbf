"""pyversion.py: a handler whose code version is read from a file when it starts (argv[1]),
so a test can change "the handler code" and see reload-handlers pick it up."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402

with open(sys.argv[1]) as f:
    VERSION = f.read().strip()


def version():
    return VERSION.encode()


def slow(ms):
    time.sleep(ms / 1000.0)
    return VERSION.encode()


def add(a, b):
    return a + b


bertd.expose("ver", sys.modules[__name__])
