"""test_info_packets.py: bertd's side of BERT-RPC 1.0's info packets (doc/info-packets.md):
streamed requests and answers, cache and validation infos, callbacks, and clients that know
none of it. The client here writes raw BERPs; the handler (tests/handlers/rpc10_raw.py) speaks
the packets by hand too, so these tests hold the server to the wire contract on its own.
"""
import os
import socket
import struct
import threading
import time
import unittest
import zlib

from erlnode import compile_erlang, test_cookie, unique_name
from harness import HANDLERS, ROOT, Server, wait_until
from loadrun import acceptors, rss_kb

import bertd
from bertd import Atom

HANDLER = f"python3 {os.path.join(HANDLERS, 'rpc10_raw.py')}"


def berp(term):
    return bertd.encode_berp(term)


def call(fn, *args, kind="call"):
    return berp((Atom(kind), Atom("rpc"), Atom(fn), list(args)))


def info(command, options):
    return berp((Atom("info"), Atom(command), options))


def chunk(data):
    return struct.pack(">I", len(data)) + data


END = b"\0\0\0\0"


class Wire:
    """A client connection that reads frames and stream chunks exactly as they come."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            got = self.sock.recv(1 << 20)
            if not got:
                raise EOFError(f"closed with {len(self.buf)} of {n} bytes")
            self.buf += got

    def raw_frame(self):
        self._fill(4)
        n = struct.unpack(">I", self.buf[:4])[0]
        self._fill(4 + n)
        body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return body

    def frame(self):
        return bertd.decode(self.raw_frame())

    def chunks(self):
        """The chunks of a streamed answer, up to its zero header."""
        out = []
        while True:
            body = self.raw_frame()
            if not body:
                return out
            out.append(body)

    def closed(self):
        try:
            self._fill(len(self.buf) + 1)
            return False
        except (EOFError, ConnectionResetError):
            return True

    def close(self):
        self.sock.close()


class InfoPacketTest(unittest.TestCase):
    extra = ""
    module_extra = ""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(f"""
            listen: 127.0.0.1
            acceptors: 2
            limits: {{max_frame: 1MiB, max_stream: 64MiB}}
            {cls.extra}
            modules:
              - name: rpc
                command: {HANDLER}
                count: 2
                {cls.module_extra}
            """)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def wire(self):
        w = Wire(self.server.port)
        self.addCleanup(w.close)
        return w


class StreamedRequests(InfoPacketTest):
    def test_a_streamed_request_past_max_frame_reaches_the_handler_whole(self):
        w = self.wire()
        blobs = [bytes([i % 256]) * 65536 for i in range(128)]  # 8 MiB, eight times max_frame
        w.send(info("stream", []) + call("sum_stream"))
        for b in blobs:
            w.send(chunk(b))
        w.send(END)
        crc = 0
        for b in blobs:
            crc = zlib.crc32(b, crc)
        self.assertEqual(w.frame(), (Atom("reply"), [128, 128 * 65536, crc]))
        # The connection goes on.
        w.send(call("add", 1, 2))
        self.assertEqual(w.frame(), (Atom("reply"), 3))

    def test_a_chunk_over_max_frame_is_a_protocol_error_and_ends_the_connection(self):
        w = self.wire()
        w.send(info("stream", []) + call("sum_stream") + struct.pack(">I", 2 << 20) + b"x" * 1000)
        answer = w.frame()
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][0], Atom("protocol"))
        self.assertIn(b"limits.max_frame", answer[1][3])
        self.assertTrue(w.closed())
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port).call.rpc.add(2, 2), 4)

    def test_a_stream_past_max_stream_is_refused(self):
        w = self.wire()
        w.send(info("stream", []) + call("sum_stream"))
        answer = None
        try:
            for _ in range(70):  # 70 MiB against max_stream 64 MiB
                w.send(chunk(b"y" * (1 << 20)))
        except OSError:
            pass
        answer = w.frame()
        self.assertEqual(answer[1][0], Atom("protocol"))
        self.assertIn(b"limits.max_stream", answer[1][3])

    def test_a_stream_cut_short_fails_only_its_own_request(self):
        w = self.wire()
        w.send(info("stream", []) + call("sum_stream") + chunk(b"z" * 1000))
        time.sleep(0.2)
        w.close()
        wait_until(lambda: "inside its streamed request" in self.server.log()
                   or "left inside a streamed request" in self.server.log(), what="the cut stream in the log")
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port).call.rpc.add(3, 4), 7)

    def test_a_refused_stream_is_read_to_its_end_and_the_connection_goes_on(self):
        w = self.wire()
        w.send(info("stream", []) + berp((Atom("call"), Atom("nosuch"), Atom("f"), [])))
        w.send(chunk(b"a" * 5000) + chunk(b"b" * 3) + END + call("add", 5, 6))
        self.assertEqual(w.frame()[1][0], Atom("server"))
        self.assertEqual(w.frame(), (Atom("reply"), 11))


class StreamedAnswers(InfoPacketTest):
    def test_a_client_that_announced_streams_gets_the_chunks(self):
        w = self.wire()
        w.send(info("accept", [Atom("stream")]) + call("stream_out", 10, 1000))
        self.assertEqual(w.frame(), (Atom("info"), Atom("stream"), []))
        self.assertEqual(w.frame(), (Atom("reply"), []))
        got = w.chunks()
        self.assertEqual(got, [bytes([ord("a") + i]) * 1000 for i in range(10)])
        w.send(call("add", 1, 1))
        self.assertEqual(w.frame(), (Atom("reply"), 2))

    def test_a_streamed_answer_read_in_pieces_cut_at_every_offset_reaches_the_client_whole(self):
        w = self.wire()
        want = [bytes([ord("a") + n]) * n for n in range(1, 10)]
        for step in (1, 2, 3, 5, 7):
            w.send(info("accept", [Atom("stream")]) + call("stream_split", step))
            self.assertEqual(w.frame(), (Atom("info"), Atom("stream"), []))
            self.assertEqual(w.frame(), (Atom("reply"), []))
            self.assertEqual(w.chunks(), want, f"written {step} bytes at a time")
        w.send(call("add", 1, 1))
        self.assertEqual(w.frame(), (Atom("reply"), 2))
        # Gathered for a client that did not announce streams, from the same pieces.
        got = bertd.Service("127.0.0.1", self.server.port).call.rpc.stream_split(1)
        self.assertEqual(got, b"".join(want))

    def test_a_client_that_did_not_announce_streams_gets_one_reply(self):
        got = bertd.Service("127.0.0.1", self.server.port).call.rpc.stream_out(3, 10)
        self.assertEqual(got, b"a" * 10 + b"b" * 10 + b"c" * 10)

    def test_a_streamed_answer_too_big_for_an_old_client_is_a_server_error(self):
        with self.assertRaises(bertd.ServerError) as cm:
            bertd.Service("127.0.0.1", self.server.port).call.rpc.stream_out(40, 65536)  # 2.5 MiB > max_frame
        self.assertIn("the answer was streamed", str(cm.exception.message))
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port).call.rpc.add(1, 2), 3)

    def test_a_client_that_leaves_a_paused_stream_frees_its_worker(self):
        w = self.wire()
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        w.send(info("accept", [Atom("stream")]) + call("stream_out", 64, 1 << 20))  # 64 MiB, read slowly
        w.frame()
        w.frame()
        time.sleep(0.5)  # bertd pauses the worker: more than 1 MiB waits for this client
        w.close()
        # The worker is replaced (its stream has nobody to go to), and both are idle again.
        wait_until(lambda: self.server.stats().get("workers.idle.rpc") == "2", timeout=10,
                   what="both workers to be idle")
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port, timeout=5).call.rpc.add(2, 2), 4)

    def test_a_streamed_answer_past_max_stream_ends_the_connection_without_an_error_among_the_chunks(self):
        w = self.wire()
        w.send(info("accept", [Atom("stream")]) + call("stream_out", 80, 1 << 20))  # 80 MiB > max_stream 64 MiB
        self.assertEqual(w.frame(), (Atom("info"), Atom("stream"), []))
        self.assertEqual(w.frame(), (Atom("reply"), []))
        got = 0
        with self.assertRaises(EOFError):
            while True:
                body = w.raw_frame()
                self.assertEqual(len(body), 1 << 20, "a frame that is not a chunk came inside the stream")
                got += len(body)
        self.assertEqual(got, 64 << 20)  # every chunk within the limit, then the end of the connection
        wait_until(lambda: "streamed answer is over limits.max_stream" in self.server.log(), what="the log line")
        self.assertEqual(bertd.Service("127.0.0.1", self.server.port, timeout=5).call.rpc.add(2, 3), 5)

    def test_a_slow_reader_slows_the_worker_and_bertd_holds_little(self):
        w = self.wire()
        pids = acceptors(self.server)
        base = sum(rss_kb(p) for p in pids)
        w.send(info("accept", [Atom("stream")]) + call("stream_out", 1024, 65536))  # 64 MiB
        w.frame()
        w.frame()
        peak, got = 0, 0
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        while True:
            body = w.raw_frame()
            if not body:
                break
            got += len(body)
            if got % (4 << 20) < 65536:
                time.sleep(0.05)  # a slow reader
                peak = max(peak, sum(rss_kb(p) for p in pids) - base)
        self.assertEqual(got, 64 << 20)
        self.assertLess(peak, 16 << 10, f"the acceptors grew by {peak} KiB relaying a 64 MiB stream")


class Caching(InfoPacketTest):
    def test_cache_infos_reach_only_clients_that_announced_cache(self):
        w = self.wire()
        w.send(info("accept", [Atom("cache")]) + call("cached", 7))
        self.assertEqual(w.frame(), (Atom("info"), Atom("cache"), [(Atom("access"), Atom("public")),
                                                                   (Atom("expiration"), 60)]))
        self.assertEqual(w.frame()[0], Atom("reply"))
        old = self.wire()
        old.send(call("private", 7))
        self.assertEqual(old.frame()[0], Atom("reply"))  # no info first

    def test_a_valid_token_is_answered_valid_and_noreply(self):
        w = self.wire()
        w.send(info("cache", [(Atom("validation"), b"v1")]) + call("validated", 1))
        self.assertEqual(w.frame(), (Atom("info"), Atom("valid"), []))
        self.assertEqual(w.frame(), (Atom("noreply"),))
        # The Ruby bertrpc client's list form of the same packet.
        w.send(berp([Atom("info"), Atom("cache"), [Atom("validation"), b"v1"]]) + call("validated", 1))
        self.assertEqual(w.frame(), (Atom("info"), Atom("valid"), []))
        self.assertEqual(w.frame(), (Atom("noreply"),))
        # A stale token: the answer, with the new validation info.
        w.send(info("cache", [(Atom("validation"), b"old")]) + call("validated", 2))
        self.assertEqual(w.frame()[1], Atom("cache"))
        self.assertEqual(w.frame()[0], Atom("reply"))


class BertdsOwnCache(InfoPacketTest):
    extra = "access_log: access.log"
    module_extra = "cache: {size: 1MiB}"

    def test_a_public_answer_is_served_from_bertds_cache_until_it_expires(self):
        svc = bertd.Service("127.0.0.1", self.server.port)
        first = svc.call.rpc.cached(b"same")
        for _ in range(20):
            self.assertEqual(svc.call.rpc.cached(b"same"), first, "a repeated call reached a worker")
        # Other arguments are another request.
        self.assertNotEqual(svc.call.rpc.cached(b"other")[1], first[1])
        st = self.server.stats()
        self.assertGreaterEqual(int(st["cache.hits.rpc"]), 20)
        # A client that announced cache gets the cache info with the cached answer.
        w = self.wire()
        w.send(info("accept", [Atom("cache")]) + call("cached", b"same"))
        self.assertEqual(w.frame()[1], Atom("cache"))
        self.assertEqual(w.frame(), (Atom("reply"), first))
        log = open(os.path.join(self.server.dir, "access.log")).read()
        self.assertIn(" cache high - {call,rpc,cached,[<<\"same\">>]}", log)

    def test_a_private_answer_is_never_served_from_the_cache(self):
        svc = bertd.Service("127.0.0.1", self.server.port)
        self.assertNotEqual(svc.call.rpc.private(b"p")[1], svc.call.rpc.private(b"p")[1])


class NativeInfos(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ebin = compile_erlang([os.path.join(ROOT, "tests", "erlang", "natinfo.erl")])
        cls.server = Server(f"""
            listen: 127.0.0.1
            modules:
              - name: natinfo
                type: native
                codepaths: [{ebin}]
            """, args=["--name", unique_name("infos"), "--cookie", test_cookie()])
        cls.server.start(timeout=20)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_a_native_function_attaches_infos_with_bert_rpc_info(self):
        svc = bertd.Service("127.0.0.1", self.server.port, timeout=10)
        got = wait_until(lambda: self._try(svc), timeout=15, what="the native module")
        self.assertEqual(got, b"x")  # an old client gets the Result alone
        w = Wire(self.server.port)
        self.addCleanup(w.close)
        w.send(info("accept", [Atom("cache")]) + berp((Atom("call"), Atom("natinfo"), Atom("cached"), [b"y"])))
        self.assertEqual(w.frame(), (Atom("info"), Atom("cache"), [(Atom("access"), Atom("public")),
                                                                   (Atom("expiration"), 60)]))
        self.assertEqual(w.frame(), (Atom("reply"), b"y"))

    def test_a_native_results_elements_are_relayed_unread_after_its_infos(self):
        svc = bertd.Service("127.0.0.1", self.server.port, timeout=10)
        wait_until(lambda: self._try(svc), timeout=15, what="the native module")
        n = 2_000_000  # 2 MB that would be 144 MB of terms
        w = Wire(self.server.port)
        self.addCleanup(w.close)
        w.send(info("accept", [Atom("cache")]) + berp((Atom("call"), Atom("natinfo"), Atom("many"), [n])))
        self.assertEqual(w.frame(), (Atom("info"), Atom("cache"), [(Atom("access"), Atom("private"))]))
        reply, elements = w.raw_frame(), b"l" + struct.pack(">I", n) + b"j" * (n + 1)
        self.assertTrue(reply.endswith(elements), reply[:40])
        self.assertEqual(bertd.decode(reply[:-len(elements)] + b"j"), (Atom("reply"), []))

    def test_native_infos_over_64_kib_are_a_clear_error(self):
        svc = bertd.Service("127.0.0.1", self.server.port, timeout=10)
        wait_until(lambda: self._try(svc), timeout=15, what="the native module")
        with self.assertRaises(bertd.ServerError) as cm:
            svc.call.natinfo.loud(10_000)
        self.assertIn("a native function's infos: an info of", str(cm.exception.message))
        self.assertEqual(svc.call.natinfo.loud(10), Atom("ok"))

    @staticmethod
    def _try(svc):
        try:
            return svc.call.natinfo.cached(b"x")
        except bertd.ServerError:
            return None


class CallbackService:
    """A BERT-RPC service on loopback that records what it is cast (decoded, or with `raw` the
    frame's bytes unread) and answers {noreply}; `accepted` counts the connections it took."""

    def __init__(self, raw=False, host="127.0.0.1"):
        self.raw = raw
        self.listener = socket.socket()
        self.listener.bind((host, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.got = []
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with c:
                c.settimeout(10 if self.raw else 5)
                try:
                    f = c.makefile("rb")
                    self.got.append(read_raw_berp(f) if self.raw else bertd.read_berp(f))
                    c.sendall(berp((Atom("noreply"),)))
                except (OSError, EOFError, bertd.DecodeError):
                    pass

    def close(self):
        self.listener.close()


def read_raw_berp(f):
    head = f.read(4)
    if len(head) < 4:
        raise EOFError("no frame")
    return f.read(struct.unpack(">I", head)[0])


class Callbacks(InfoPacketTest):
    extra = "callbacks: {allow: ['127.0.0.1:*'], timeout: 1s, retries: 2}"

    def callback(self, port, host="127.0.0.1"):
        svc = f"{host}:{port}".encode()
        return info("callback", [(Atom("service"), svc), (Atom("mfa"), Atom("cron"), Atom("updated_stats"), [42])])

    def counts(self):
        stats = self.server.stats()
        return int(stats["callbacks.ok"]), int(stats["callbacks.failed"])

    def test_a_callback_casts_the_result_to_the_service(self):
        service = CallbackService()
        self.addCleanup(service.close)
        w = self.wire()
        t0 = time.monotonic()
        w.send(self.callback(service.port) + call("add", 86000, 193, kind="cast"))
        self.assertEqual(w.frame(), (Atom("noreply"),))
        self.assertLess(time.monotonic() - t0, 1)
        wait_until(lambda: service.got, what="the callback")
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, 86193]))
        wait_until(lambda: int(self.server.stats()["callbacks.ok"]) >= 1, what="callbacks.ok")

    def test_a_service_not_allowed_is_refused_no_open_relay(self):
        # A live service outside callbacks.allow (127.0.0.2 is loopback, but not allowed): the
        # refusal is the whole answer; bertd never connects there and counts nothing.
        service = CallbackService(host="127.0.0.2")
        self.addCleanup(service.close)
        before = self.counts()
        w = self.wire()
        w.send(self.callback(service.port, host="127.0.0.2") + call("add", 1, 1, kind="cast"))
        answer = w.frame()
        self.assertEqual(answer[0], Atom("error"))
        self.assertEqual(answer[1][0], Atom("server"))
        self.assertIn(b"not allowed", answer[1][3])
        time.sleep(1.5)  # past the callback timeout (1 s): an attempt would have been made by now
        self.assertEqual(service.accepted, 0)
        self.assertEqual(self.counts(), before)

    def test_a_callback_refused_before_a_call_is_not_cast_either(self):
        service = CallbackService()
        self.addCleanup(service.close)
        before = self.counts()
        w = self.wire()
        w.send(self.callback(service.port) + call("add", 1, 1))
        answer = w.frame()
        self.assertEqual(answer[1][0], Atom("server"))
        self.assertIn(b"before a cast", answer[1][3])
        w.send(call("add", 2, 2))
        self.assertEqual(w.frame(), (Atom("reply"), 4))  # the callback did not stay pending
        time.sleep(1.5)
        self.assertEqual(service.accepted, 0)
        self.assertEqual(self.counts(), before)

    def test_a_handler_error_is_cast_to_the_service_as_the_whole_error_term(self):
        service = CallbackService()
        self.addCleanup(service.close)
        w = self.wire()
        w.send(self.callback(service.port) + call("no_such_fn", kind="cast"))
        self.assertEqual(w.frame(), (Atom("noreply"),))
        wait_until(lambda: service.got, what="the callback")
        error = (Atom("error"), (Atom("server"), 2, b"ServerError", b"no such function", []))
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, error]))

    def test_a_callback_before_a_call_or_malformed_is_an_error_in_place_of_the_request(self):
        w = self.wire()
        w.send(self.callback(1) + call("add", 1, 1))
        self.assertEqual(w.frame()[1][0], Atom("server"))
        w.send(info("callback", [(Atom("service"), 7)]) + call("add", 1, 1, kind="cast"))
        self.assertEqual(w.frame()[1][0], Atom("protocol"))
        w.send(call("add", 1, 1))
        self.assertEqual(w.frame(), (Atom("reply"), 2))

    def test_a_service_that_is_down_is_retried_then_counted_failed(self):
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        dead.close()  # nobody listens there
        before = int(self.server.stats()["callbacks.failed"])
        w = self.wire()
        w.send(self.callback(port) + call("add", 1, 1, kind="cast"))
        self.assertEqual(w.frame(), (Atom("noreply"),))
        # The line is the first such failure of this server, so its rate limit lets it through.
        line = f"to 127.0.0.1:{port} failed after 3 attempts"
        wait_until(lambda: line in self.server.log(), timeout=10, what="the failure's log line")
        wait_until(lambda: int(self.server.stats()["callbacks.failed"]) > before, timeout=5, what="callbacks.failed")


if __name__ == "__main__":
    unittest.main()
