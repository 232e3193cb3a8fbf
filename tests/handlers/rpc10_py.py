"""rpc10_py.py: a handler on bertd's Python library that uses its BERT-RPC 1.0 calls (streams in
and out, cache infos, validation), module `lib`, for tests/integration/test_rpc10.py:

  sum_stream()          reads bertd.stream_in(): [Chunks, Bytes, CRC32] ([0, 0, 0] if not streamed)
  head_stream(N)        reads only N chunks and returns their sizes (the library drops the rest)
  stream_out(N, Size)   a generator: N chunks of Size bytes of one letter each (a, b, c, ...)
  echo_stream()         a generator that yields each chunk of the request as it is read
  stream_forever(Size)  a generator that never ends (hostile)
  stream_then_fail(N)   N chunks, then an exception
  stream_fail_first()   raises before its first chunk; stream_not_bytes() yields an int
  stream_with_intruder(Path, N, Size)
                        N chunks of b"g", while a child it forks (pid in Path) writes chunks of b"X"
                        into fd 4 (hostile: a process the worker left behind)
  cached(X)             [X, Calls] with cache(expiration=60, access="public")
  validated(X)          VALID for the token b"v1", else [X, Calls] with cache(validation=b"v1")
  bad_cache(How)        bertd.cache() with wrong options
  add(A, B), calls(), cache_outside()
"""
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402

calls = 0


def counted(fn):
    def wrapper(*args):
        global calls
        calls += 1
        return fn(*args)

    wrapper.__name__ = fn.__name__
    return bertd.function("lib")(wrapper)


@counted
def sum_stream():
    stream = bertd.stream_in()
    if stream is None:
        return [0, 0, 0]
    count = total = crc = 0
    for chunk in stream:
        count += 1
        total += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return [count, total, crc]


@counted
def head_stream(n):
    sizes = []
    for chunk in bertd.stream_in():
        sizes.append(len(chunk))
        if len(sizes) == n:
            break
    return sizes


@counted
def stream_out(n, size):
    for i in range(n):
        yield bytes([ord("a") + i % 26]) * size


@counted
def stream_with_intruder(path, n, size):
    yield b"g" * size  # the worker's own first chunk: bertd knows its writer from here on
    pid = os.fork()
    if pid == 0:
        forged = struct.pack(">I", size) + b"X" * size
        try:
            for _ in range(n):
                os.write(4, forged)
                time.sleep(0.0002)
        finally:
            os._exit(0)
    with open(path, "w") as f:
        f.write(str(pid))
    for _ in range(n - 1):
        time.sleep(0.0002)
        yield b"g" * size


@counted
def echo_stream():
    stream = bertd.stream_in()

    def chunks():
        for chunk in stream:
            yield chunk

    return bertd.Stream(chunks(), reply=b"echo")


@counted
def stream_forever(size):
    block = b"f" * size
    while True:
        yield block


@counted
def stream_then_fail(n):
    for _ in range(n):
        yield b"x" * 1000
    raise RuntimeError("the generator failed after it began")


@counted
def stream_fail_first():
    raise KeyError("before the first chunk")
    yield b""  # noqa: unreachable: makes this a generator


@counted
def stream_not_bytes():
    yield 42


@counted
def cached(x):
    bertd.cache(expiration=60, access="public")
    return [x, calls]


@counted
def validated(x):
    if bertd.validation_token() == b"v1":
        return bertd.VALID
    bertd.cache(validation=b"v1")
    return [x, calls]


@counted
def bad_cache(how):
    if how == b"expiration":
        bertd.cache(expiration=-1)
    elif how == b"access":
        bertd.cache(expiration=1, access="everyone")
    elif how == b"token":
        bertd.cache(validation=42)
    else:
        bertd.cache()
    return "unreachable"


@counted
def add(a, b):
    return a + b


@bertd.function("lib")
def get_calls():
    return calls


def cache_outside():
    bertd.cache(expiration=1)


try:
    cache_outside()
except RuntimeError as e:
    OUTSIDE = str(e).encode()


@bertd.function("lib")
def outside_message():
    return OUTSIDE
