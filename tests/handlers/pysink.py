#!/usr/bin/env python3
"""pysink.py: the registered Python process make bench sends Erlang messages to (tests/bench/erlbench.py):
it registers `bench_sink` on bertd's node and counts what arrives; {sync, Pid} makes it answer
{synced, Count} to Pid, so the sender knows everything before it was run. Module pysink: count().
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402

_SYNC = Atom("sync")
_SYNCED = Atom("synced")
_count = [0]


def _sink(message):
    if type(message) is tuple and len(message) == 2 and message[0] == _SYNC:
        bertd.erlang_send(message[1], (_SYNCED, _count[0]))
    else:
        _count[0] += 1


bertd.erlang_register_process("bench_sink", _sink)


@bertd.function("pysink")
def count():
    return _count[0]
