"""text.py: an example external handler using the @bertd.function decorator and an explicit
bertd.start(). It must never write to fd 3/4 itself: the library owns those.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bertd  # noqa: E402


@bertd.function("text")
def upcase(s):
    return s.upper()


@bertd.function("text", name="len")
def length(s):
    return len(s)


@bertd.function("text")
def words(s):
    return [bytes(w) for w in s.split()]


if __name__ == "__main__":
    bertd.start()
    # start() returns at end of input; anything after it runs before the process exits.
    sys.stderr.write("text.py: done\n")
