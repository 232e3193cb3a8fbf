#!/usr/bin/env python3
"""pyecho.py: the minimal Python external handler bertd is benchmarked with: module echo,
echo(X) -> X, on the Python library. Executable on its own, so the baseline relay (which execs
a path without arguments) can run it too. It must stay as lean as the library.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402


@bertd.function("echo")
def echo(x):
    return x
