"""rpc10_raw.py: a handler that speaks BERT-RPC 1.0's info packets by hand on fds 3 and 4 (no
library support), so the server side of streams, caching and callbacks is tested on its own:

  sum_stream()        a streamed request: answers {reply, [Chunks, Bytes, Checksum]}
  stream_out(N, Size) a streamed answer: {info, stream, []}, {reply, []}, N chunks of Size bytes
  stream_split(Step)  a streamed answer of chunks of 1 to 9 bytes, all of it written Step bytes
                      at a time with a pause between, so that bertd reads every header and chunk
                      cut at every offset
  cached(X)           answers [X, Calls] after {info, cache, [{access, public}, {expiration, 60}]}
  private(X)          the same with {access, private}
  validated(X)        with the token <<"v1">> before it: {info, valid, []} then {noreply};
                      otherwise [X, Calls] after {info, cache, [{access, private}, {validation, <<"v1">>}]}
  add(A, B), echo(X), calls()
Each chunk of stream_out is Size bytes of one repeated letter (a, b, c, ...).
"""
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402

IN, OUT = 3, 4
calls = 0


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(IN, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def read_frame():
    n = struct.unpack(">I", read_exact(4))[0]
    return read_exact(n)


def write(term):
    bertd.write_berp(OUT, term)


def stream_chunks():
    count = total = 0
    crc = 0
    while True:
        n = struct.unpack(">I", read_exact(4))[0]
        if n == 0:
            return count, total, crc
        data = read_exact(n)
        count += 1
        total += n
        crc = zlib.crc32(data, crc)


def answer(fn, args, streamed, token):
    global calls
    calls += 1
    if fn == "sum_stream":
        count, total, crc = stream_chunks() if streamed else (0, 0, 0)
        write((Atom("reply"), [count, total, crc]))
    elif fn == "stream_out":
        n, size = args
        write((Atom("info"), Atom("stream"), []))
        write((Atom("reply"), []))
        for i in range(n):
            letter = bytes([ord("a") + i % 26])
            os.write(OUT, struct.pack(">I", size) + letter * size)
        os.write(OUT, b"\0\0\0\0")
    elif fn == "stream_split":
        step = args[0]
        data = bertd.encode_berp((Atom("info"), Atom("stream"), [])) + bertd.encode_berp((Atom("reply"), []))
        for size in range(1, 10):
            data += struct.pack(">I", size) + bytes([ord("a") + size]) * size
        data += b"\0\0\0\0"
        for at in range(0, len(data), step):
            os.write(OUT, data[at:at + step])
            time.sleep(0.002)
    elif fn in ("cached", "private"):
        access = Atom("public") if fn == "cached" else Atom("private")
        write((Atom("info"), Atom("cache"), [(Atom("access"), access), (Atom("expiration"), 60)]))
        write((Atom("reply"), [args[0], calls]))
    elif fn == "validated":
        if token == b"v1":
            write((Atom("info"), Atom("valid"), []))
            write((Atom("noreply"),))
        else:
            write((Atom("info"), Atom("cache"), [(Atom("access"), Atom("private")), (Atom("validation"), b"v1")]))
            write((Atom("reply"), [args[0], calls]))
    elif fn == "add":
        write((Atom("reply"), args[0] + args[1]))
    elif fn == "echo":
        write((Atom("reply"), args[0]))
    elif fn == "calls":
        write((Atom("reply"), calls))
    else:
        write((Atom("error"), (Atom("server"), 2, b"ServerError", b"no such function", [])))


def main():
    streamed, token = False, None
    while True:
        t = bertd.decode(read_frame())
        if t[0] == Atom("info"):
            if t[1] == Atom("stream"):
                streamed = True
            elif t[1] == Atom("cache"):
                token = dict(t[2]).get(Atom("validation"))
            continue
        kind, _mod, fn, args = t
        answer(str(fn), args, streamed, token)
        if kind == Atom("cast") and fn != "stream_out":
            pass  # the answer above stands for the cast too (bertd ignores a cast's answer)
        streamed, token = False, None


main()
