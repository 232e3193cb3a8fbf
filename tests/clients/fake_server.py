"""fake_server.py: a scripted BERT-RPC server on a loopback port, for client library tests that need
answers bertd would never give (broken frames, late answers, odd error shapes) and to see exactly
which frames a client sent on which connection. It never outlives its test: close() stops it all.
"""
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "modules", "python"))
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402


def reply(value):
    return [("frame", (Atom("reply"), value))]


def error(kind, code, klass, detail, trace=()):
    return [("frame", (Atom("error"), (Atom(kind), code, klass, detail, list(trace))))]


class FakeServer:
    """answer(conn_no, request, body) -> a list of actions, run in order:
    ("frame", term) send it as a BERP; ("bytes", raw) send raw bytes; ("sleep", seconds);
    ("close",) close the connection. Info frames are recorded and get no answer."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.frames = []  # per connection: the decoded frames it carried, in order
        self.raw = []     # per connection: the frames' bytes
        self._conns = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                index = len(self.frames)
                self.frames.append([])
                self.raw.append([])
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _read(self, conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn, index):
        try:
            while True:
                header = self._read(conn, 4)
                if header is None:
                    return
                body = self._read(conn, struct.unpack(">I", header)[0])
                if body is None:
                    return
                try:
                    term = bertd.decode(body, bert_types=False)
                except bertd.DecodeError:
                    term = None
                with self._lock:
                    self.frames[index].append(term)
                    self.raw[index].append(body)
                if isinstance(term, tuple) and term and term[0] == Atom("info"):
                    continue
                for action in self.answer(index, term, body):
                    if action[0] == "frame":
                        conn.sendall(bertd.encode_berp(action[1]))
                    elif action[0] == "bytes":
                        conn.sendall(action[1])
                    elif action[0] == "sleep":
                        time.sleep(action[1])
                    elif action[0] == "close":
                        conn.close()
                        return
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self._stop = True
        self.sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
