"""test_rpc10.py: BERT-RPC 1.0's streams, cache infos, validation and callbacks through bertd's
libraries (doc/info-packets.md): a real bertd between the Python, Ruby and C++ clients and handlers
on the Python, Ruby and C++ libraries (tests/handlers/rpc10_*), and each client against a scripted
server for what bertd would never send. test_info_packets.py holds the server to the contract on
raw bytes; these hold the libraries to it.
"""
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import sys
import time
import unittest
import zlib

from harness import BUILD, HANDLERS, ROOT, RUBY_LIB, Server, wait_until

import bertd
from bertd import Atom

sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from fake_server import FakeServer  # noqa: E402

import test_info_packets as raw  # noqa: E402  (its CallbackService; not its tests)

PY_HANDLER = f"{sys.executable} {os.path.join(HANDLERS, 'rpc10_py.py')}"
RB_HANDLER = f"ruby -I {RUBY_LIB} {os.path.join(HANDLERS, 'rpc10_rb.rb')}"
RB_CLIENT = os.path.join(ROOT, "tests", "clients", "rpc10_client.rb")
CPP_HANDLER = os.path.join(BUILD, "tests", "handlers", "rpc10_cpp")
CPP_CLIENT = os.path.join(BUILD, "tests", "clients", "rpc10_cpp_client")
BERTC = os.path.join(BUILD, "bertc")
MiB = 1 << 20


def crc_of(blobs):
    crc = 0
    for b in blobs:
        crc = zlib.crc32(b, crc)
    return crc


class Rpc10Server(unittest.TestCase):
    handler = PY_HANDLER
    limits = "{max_frame: 1MiB, max_stream: 64MiB}"
    extra = ""
    module_extra = ""
    count = 2

    @classmethod
    def setUpClass(cls):
        cls.server = Server(f"""
            listen: 127.0.0.1
            acceptors: 2
            limits: {cls.limits}
            {cls.extra}
            modules:
              - name: lib
                command: {cls.handler}
                count: {cls.count}
                {cls.module_extra}
            """)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def svc(self, **kw):
        s = self.server.service(**kw)
        self.addCleanup(s.close)
        return s


class StreamMemory(Rpc10Server):
    """At the default max_frame (32 MiB), a streamed request faster than its handler reads it."""
    limits = "{max_stream: 1GiB}"

    def acceptors_hwm_kb(self):
        total = 0
        for pid in self.server.acceptor_pids():
            with open(f"/proc/{pid}/status") as f:
                total = max(total, next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")))
        return total

    def test_a_stream_faster_than_its_handler_waits_in_the_client_not_in_bertd(self):
        before = self.acceptors_hwm_kb()
        chunk = b"s" * MiB
        got = self.svc().call(stream_in=(chunk for _ in range(160))).lib.sum_stream()
        self.assertEqual(got[1:], [160 * MiB, crc_of([chunk] * 160)])  # in the client's chunk_size
        # About a MiB of chunks waits in the acceptor; the rest stays in the client's socket
        # (it was 60 MiB and more when the client was read whatever the worker took).
        self.assertLess(self.acceptors_hwm_kb() - before, 12 * 1024)


class PythonStreams(Rpc10Server):
    not_bytes = "chunks must be bytes, not int"

    def test_a_python_handler_reads_a_streamed_request_past_max_frame_as_an_iterator(self):
        blobs = [bytes([i]) * 65536 for i in range(128)]  # 8 MiB against max_frame 1 MiB
        got = self.svc().call(stream_in=iter(blobs)).lib.sum_stream()
        self.assertEqual(got, [128, 8 * MiB, crc_of(blobs)])

    def test_a_client_streams_a_file_in_chunks_of_chunk_size(self):
        data = os.urandom(3 * MiB + 17)
        got = self.svc(chunk_size=100000).call(stream_in=io.BytesIO(data)).lib.sum_stream()
        self.assertEqual(got, [32, len(data), zlib.crc32(data)])

    def test_a_request_that_was_not_streamed_has_no_stream(self):
        self.assertEqual(self.svc().call.lib.sum_stream(), [0, 0, 0])

    def test_what_a_handler_leaves_unread_is_dropped_and_the_next_request_is_in_step(self):
        svc = self.svc(persistent=True)
        self.assertEqual(svc.call(stream_in=[b"a" * 10, b"b" * 20, b"c" * 30]).lib.head_stream(2), [10, 20])
        self.assertEqual(svc.call.lib.add(1, 2), 3)
        self.assertEqual(svc.call(stream_in=[b"x"]).lib.head_stream(5), [1])

    def test_a_generator_answer_reaches_a_client_that_accepts_streams_chunk_by_chunk(self):
        with self.svc().call(accept=["stream"]).lib.stream_out(5, 300000) as answer:
            self.assertTrue(answer.streamed)
            self.assertEqual(answer.value, [])
            sizes, letters = [], set()
            for chunk in answer:
                sizes.append(len(chunk))
                letters.add(chunk[:1])
        # 300000 bytes cut to the library's 256 KiB chunks; every byte there.
        self.assertEqual(sum(sizes), 5 * 300000)
        self.assertLessEqual(max(sizes), bertd.streams.DEFAULT_CHUNK)
        self.assertEqual(letters, {b"a", b"b", b"c", b"d", b"e"})

    def test_a_client_that_did_not_accept_streams_gets_the_bytes_gathered(self):
        self.assertEqual(self.svc().call.lib.stream_out(3, 4), b"aaaabbbbcccc")

    def test_a_persistent_connection_carries_requests_after_streams_both_ways(self):
        svc = self.svc(persistent=True)
        self.assertEqual(svc.call(accept="stream").lib.stream_out(2, 10).read(), b"a" * 10 + b"b" * 10)
        self.assertEqual(svc.call(stream_in=[b"12345"]).lib.sum_stream()[:2], [1, 5])
        self.assertEqual(svc.call.lib.add(2, 2), 4)

    def test_a_handler_streams_back_what_it_reads_while_it_reads_it(self):
        # 1 MiB each way: the clients read the answer once the request's stream is sent (the
        # contract's order), so what comes back meanwhile must fit the sockets' buffers.
        blobs = [os.urandom(50000) for _ in range(20)]
        with self.svc().call(stream_in=blobs, accept=["stream"]).lib.echo_stream() as answer:
            self.assertEqual(answer.value, b"echo")
            self.assertEqual(b"".join(answer), b"".join(blobs))

    def test_a_stream_that_fails_before_its_first_chunk_is_a_user_error(self):
        with self.assertRaises(bertd.UserError) as cm:
            self.svc().call(accept=["stream"]).lib.stream_fail_first()
        self.assertEqual(cm.exception.klass, "KeyError")
        self.assertEqual(self.svc().call.lib.add(1, 1), 2)

    def test_a_stream_whose_chunks_are_not_bytes_is_a_user_error(self):
        with self.assertRaises(bertd.UserError) as cm:
            self.svc().call(accept=["stream"]).lib.stream_not_bytes()
        self.assertIn(self.not_bytes, cm.exception.message)

    def test_a_streamed_request_past_max_stream_raises_the_servers_protocol_error(self):
        def endless():
            while True:
                yield b"s" * MiB

        with self.assertRaises(bertd.ProtocolError) as cm:
            self.svc(timeout=20).call(stream_in=endless()).lib.sum_stream()
        self.assertIn("limits.max_stream", cm.exception.message)
        self.assertEqual(self.svc().call.lib.add(1, 1), 2)


class PythonCaching(Rpc10Server):
    bad_cache = [(b"expiration", "ValueError", "expiration must be an int of seconds >= 0"),
                 (b"access", "ValueError", "access must be 'public' or 'private'"),
                 (b"token", "ValueError", "token must be bytes or str"),
                 (b"none", "ValueError", "needs expiration=Seconds, validation=Token")]

    def test_a_cache_info_reaches_a_client_that_accepts_cache(self):
        answer = self.svc().call(accept=["cache"]).lib.cached(7)
        self.assertEqual(answer.cache, {"access": "public", "expiration": 60})
        self.assertEqual(answer.value[0], 7)
        self.assertFalse(answer.streamed)
        # A client that did not ask gets the plain value.
        self.assertEqual(self.svc().call.lib.cached(8)[0], 8)

    def test_a_token_that_still_holds_is_answered_valid_with_no_value(self):
        svc = self.svc()
        first = svc.call(accept=["cache"]).lib.validated(1)
        self.assertEqual(first.cache, {"access": "private", "validation": b"v1"})
        again = svc.call(validation=first.cache["validation"]).lib.validated(1)
        self.assertTrue(again.valid)
        self.assertIsNone(again.value)
        stale = svc.call(validation=b"v0").lib.validated(2)
        self.assertFalse(stale.valid)
        self.assertEqual(stale.value[0], 2)
        self.assertEqual(stale.cache["validation"], b"v1")

    def test_cache_options_a_handler_gets_wrong_are_a_clear_user_error(self):
        for how, klass, text in self.bad_cache:
            with self.assertRaises(bertd.UserError, msg=how) as cm:
                self.svc().call(accept=["cache"]).lib.bad_cache(how)
            self.assertEqual(cm.exception.klass, klass)
            self.assertIn(text, cm.exception.message)

    def test_cache_outside_a_request_says_where_it_works(self):
        self.assertIn(b"only inside a function that answers a request", self.svc().call.lib.outside_message())


class PythonCacheBehindBertd(Rpc10Server):
    """A handler's public expiration, set with the library, has bertd serve the answer itself."""

    module_extra = "cache: {size: 1MiB}"

    def test_an_answer_the_library_marked_public_is_served_by_bertd_without_a_worker(self):
        svc = self.svc()
        first = svc.call.lib.cached(b"same")
        for _ in range(10):
            self.assertEqual(svc.call.lib.cached(b"same"), first, "a repeated call reached a worker")
        answer = svc.call(accept=["cache"]).lib.cached(b"same")
        self.assertEqual((answer.value, answer.cache), (first, {"access": "public", "expiration": 60}))
        self.assertGreaterEqual(int(self.server.stats()["cache.hits.lib"]), 11)


class RubyCacheBehindBertd(PythonCacheBehindBertd):
    handler = RB_HANDLER


class CppCacheBehindBertd(PythonCacheBehindBertd):
    handler = CPP_HANDLER


class PythonCallbacks(Rpc10Server):
    extra = "callbacks: {allow: ['127.0.0.1:*'], timeout: 1s, retries: 1}"

    def test_a_cast_with_a_callback_has_bertd_cast_the_result_to_the_service(self):
        service = raw.CallbackService()
        self.addCleanup(service.close)
        where = f"127.0.0.1:{service.port}"
        self.assertIsNone(self.svc().cast(callback=(where, "cron", "updated_stats", [42])).lib.add(86000, 193))
        wait_until(lambda: service.got, what="the callback")
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, 86193]))

    def test_a_callback_to_a_service_not_allowed_raises_the_servers_error(self):
        with self.assertRaises(bertd.ServerError) as cm:
            self.svc().cast(callback=("192.0.2.1:4815", "m", "f", [])).lib.add(1, 1)
        self.assertIn("not allowed", cm.exception.message)

    def test_rpc10_options_that_are_wrong_raise_before_anything_is_sent(self):
        svc = self.svc()
        cases = [(dict(accept=["everything"]), "accept must name"),
                 (dict(callback=("127.0.0.1:1", "m", "f", [])), "callback= goes with a cast"),
                 (dict(validation=7), "token must be bytes or str")]
        for options, text in cases:
            with self.assertRaises(ValueError, msg=options) as cm:
                svc.call(**options).lib.add(1, 1)
            self.assertIn(text, str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            svc.cast(callback=("nowhere", "m", "f", [])).lib.add(1, 1)
        self.assertIn("host:port", str(cm.exception))


class PythonHostileStreams(Rpc10Server):
    """Streamed answers that go wrong: a handler that fails after its stream began, a client that
    stops reading. Each may cost a worker (see the SERVER BUG notes), so this class has its own
    server with three."""

    limits = "{max_frame: 1MiB}"
    count = 3

    def test_a_client_that_stops_reading_a_stream_can_call_again_at_once(self):
        svc = self.svc(timeout=10)
        answer = svc.call(accept=["stream"]).lib.stream_out(64, MiB)  # 64 MiB
        self.assertEqual(len(next(answer)), bertd.streams.DEFAULT_CHUNK)
        answer.close()
        with self.assertRaises(StopIteration):
            next(answer)
        self.assertEqual(svc.call.lib.add(5, 5), 10)

    # A client that resets its connection while bertd relays its stream: the send that finds it
    # gone ends the lease from inside the relay, which must then stop (it once read on into the
    # next chunk with no request left, and the acceptor died: the clients of the moment were cut off).
    def test_clients_that_reset_inside_a_stream_never_cost_an_acceptor(self):
        before = sorted(self.server.acceptor_pids())
        for i in range(12):
            conn = bertd.Connection("127.0.0.1", self.server.port, timeout=10)
            conn.send((Atom("info"), Atom("accept"), [Atom("stream")]))
            conn.send((Atom("call"), Atom("lib"), Atom("stream_out"), [64, MiB]))
            self.assertEqual(conn.read(), (Atom("info"), Atom("stream"), []))
            conn.sock.recv(256 * 1024)  # into the chunks
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST: bertd's next send fails
            self.assertEqual(self.svc(timeout=10).call.lib.add(i, 1), i + 1)
        self.assertEqual(sorted(self.server.acceptor_pids()), before)
        # (A worker may die by bertd's SIGKILL before it sees its client gone: only it is replaced.)
        died = [l for l in self.server.log().splitlines() if "killed by signal" in l and "worker" not in l]
        self.assertEqual(died, [])

    # A client that leaves while bertd has paused its streamed answer (more than 1 MiB waiting
    # for it) frees the worker: it is replaced, and the module has all its workers idle again.
    def test_a_client_that_leaves_a_paused_stream_gets_its_worker_back(self):
        conn = bertd.Connection("127.0.0.1", self.server.port, timeout=10)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.send((Atom("info"), Atom("accept"), [Atom("stream")]))
        conn.send((Atom("call"), Atom("lib"), Atom("stream_out"), [64, MiB]))
        self.assertEqual(conn.read(), (Atom("info"), Atom("stream"), []))
        time.sleep(1)  # bertd fills its buffer for this client and pauses the worker
        conn.close()
        wait_until(lambda: int(self.server.stats()["workers.idle.lib"]) == 3, timeout=5, what="the worker back")

    # When a worker fails after its streamed answer began, an error frame would pass for a
    # chunk: bertd ends the connection after the chunks sent, and the client says so.
    def test_a_stream_that_breaks_after_it_began_ends_in_an_error_not_a_short_answer(self):
        got = []
        with self.assertRaises(bertd.ConnectionError):
            with self.svc(timeout=3).call(accept=["stream"]).lib.stream_then_fail(3) as answer:
                for chunk in answer:
                    got.append(chunk)
        self.assertEqual(got, [b"x" * 1000] * 3)


class PythonStreamIntruder(Rpc10Server):
    """A process the worker forked writes chunks of its own into the worker's socket while the
    worker streams an answer (its own server: the worker is replaced)."""

    # bertd relays a stream's bytes socket to socket without reading them (splice): every piece
    # is still checked to be the worker's, and the intruder's never reach the client.
    def test_chunks_a_left_behind_process_writes_into_a_stream_never_reach_the_client(self):
        path = os.path.join(self.server.dir, "intruder.pid")
        self.addCleanup(lambda: _kill_pid_in(path))
        got = []
        with self.assertRaises(bertd.ConnectionError):
            with self.svc(timeout=10).call(accept=["stream"]).lib.stream_with_intruder(path, 3000, 1000) as answer:
                for chunk in answer:
                    got.append(chunk)
        self.assertGreater(len(got), 0)
        self.assertEqual([c for c in got if c != b"g" * 1000], [], "bytes that are not the worker's")
        self.assertIn("not the worker, wrote into its socket", self.server.log())
        self.assertEqual(self.svc(timeout=10).call.lib.add(1, 2), 3)


def _kill_pid_in(path):
    try:
        with open(path) as f:
            os.kill(int(f.read()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


class PythonEndlessHandlerStream(Rpc10Server):
    """A handler whose stream never ends (its own server: the worker may stream on after the test)."""

    limits = "{max_frame: 1MiB, max_stream: 8MiB}"

    # limits.max_stream bounds a handler's stream as it bounds a client's.
    def test_a_handler_stream_that_never_ends_is_cut_by_max_stream(self):
        got = 0
        try:
            with self.svc(timeout=10).call(accept=["stream"]).lib.stream_forever(65536) as answer:
                for chunk in answer:
                    got += len(chunk)
                    if got > 32 * MiB:  # four times max_stream: bertd did not bound it
                        break
        except bertd.BertdError:
            pass  # cut: the stream ended with an error, as it should
        self.assertLessEqual(got, 8 * MiB, "bertd relayed a handler's endless stream past limits.max_stream")


class RubyHandlerStreams(PythonStreams):
    """The same through a handler on the Ruby library (Enumerators, Ernie.stream_in)."""

    handler = RB_HANDLER
    not_bytes = "chunks must be Strings, not Integer"

    def test_ernie_stream_with_a_block_answers_with_a_stream(self):
        answer = self.svc().call(accept=["stream"]).lib.stream_block(3, 2)
        self.assertEqual((answer.value, answer.read()), (b"block", b"aabbcc"))


class RubyHandlerCaching(PythonCaching):
    handler = RB_HANDLER
    bad_cache = [(b"expiration", "ArgumentError", "expiration must be an Integer of seconds >= 0"),
                 (b"access", "ArgumentError", "access must be :public or :private"),
                 (b"token", "ArgumentError", "token must be a String"),
                 (b"none", "ArgumentError", "needs expiration: Seconds, validation: Token")]


class RubyHandlerHostileStreams(PythonHostileStreams):
    handler = RB_HANDLER


class CppHandlerStreams(PythonStreams):
    """The same through a handler on the C++ library (Call::read_stream, Call::stream)."""

    handler = CPP_HANDLER
    test_a_stream_whose_chunks_are_not_bytes_is_a_user_error = None  # ChunkWriter::write takes bytes only


class CppHandlerCaching(PythonCaching):
    handler = CPP_HANDLER
    # CacheInfo's access is an enum and its token a string: only these can be wrong.
    bad_cache = [(b"expiration", "std::invalid_argument", "a cache expiration is seconds >= 0"),
                 (b"none", "std::invalid_argument", "needs an expiration, a validation token or both")]
    test_cache_outside_a_request_says_where_it_works = None  # a Call exists only inside a request


class CppHandlerHostileStreams(PythonHostileStreams):
    handler = CPP_HANDLER


def ruby_client(port, scenario, arg=None):
    cmd = ["ruby", "-I", RUBY_LIB, RB_CLIENT, str(port), scenario] + ([str(arg)] if arg is not None else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"{scenario}: ruby exited {proc.returncode}: {proc.stderr}")
    return json.loads(proc.stdout)


class RubyClient(Rpc10Server):
    """bertd's Ruby client (tests/clients/rpc10_client.rb) against handlers on the Ruby library."""

    handler = RB_HANDLER
    extra = "callbacks: {allow: ['127.0.0.1:*'], timeout: 1s, retries: 1}"

    def run_ruby(self, scenario, arg=None):
        return ruby_client(self.server.port, scenario, arg)

    def test_the_ruby_client_streams_a_request_past_max_frame(self):
        out = self.run_ruby("stream_in")
        self.assertEqual(out["got"], out["want"])

    def test_the_ruby_client_streams_an_io_in_chunks_of_chunk_size(self):
        out = self.run_ruby("stream_in_io")
        self.assertEqual(out["got"], out["want"])

    def test_the_ruby_client_reads_a_streamed_answer_chunk_by_chunk_in_a_block(self):
        out = self.run_ruby("stream_out")
        self.assertEqual(out, {"streamed": True, "value": [], "total": 5 * 300000, "max": 256 << 10,
                               "letters": ["a", "b", "c", "d", "e"]})

    def test_the_ruby_client_gets_an_unannounced_stream_gathered(self):
        self.assertEqual(self.run_ruby("gathered"), {"got": "aaaabbbbcccc"})

    def test_the_ruby_clients_persistent_connection_goes_on_after_streams(self):
        self.assertEqual(self.run_ruby("persistent"), {"got": ["a" * 10 + "b" * 10, [1, 5], 4]})

    def test_the_ruby_client_streams_both_ways_at_once(self):
        self.assertEqual(self.run_ruby("echo"), {"value": "echo", "same": True})

    def test_the_ruby_client_reads_cache_infos(self):
        self.assertEqual(self.run_ruby("cache"),
                         {"cache": {"access": "public", "expiration": "60"}, "value": 7, "plain": 8})

    def test_the_ruby_client_sends_validation_tokens_in_both_forms(self):
        out = self.run_ruby("validation")
        self.assertEqual(out["token"], "v1")
        self.assertEqual((out["valid"], out["value"]), (True, None))
        self.assertEqual(out["stale"], [False, 2, "v1"])
        self.assertIsNone(out["gem"])  # {noreply} after {info, valid, []}: nil

    def test_the_ruby_client_sends_a_callback_with_its_cast(self):
        service = raw.CallbackService()
        self.addCleanup(service.close)
        self.assertEqual(self.run_ruby("callback", service.port), {"got": None})
        wait_until(lambda: service.got, what="the callback")
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, 86193]))

    def test_the_ruby_client_raises_the_servers_refusal_of_a_callback(self):
        out = self.run_ruby("not_allowed")
        self.assertEqual(out["raised"], "BERTD::ServerError")
        self.assertIn("not allowed", out["message"])

    def test_the_ruby_client_refuses_wrong_rpc10_options_before_sending(self):
        out = self.run_ruby("bad_options")
        for got, text in zip(out, ["accept must name :stream and/or :cache", "validation must be a String",
                                   "callback: goes with a cast", "callback must be ['host:port'"]):
            self.assertIn(text, got)

    def test_the_ruby_client_raises_the_servers_protocol_error_past_max_stream(self):
        out = self.run_ruby("max_stream")
        self.assertEqual(out["raised"], "BERTD::ProtocolError")
        self.assertIn("limits.max_stream", out["message"])

    def test_the_ruby_client_that_stops_reading_can_call_again(self):
        self.assertEqual(self.run_ruby("stop_reading"), {"first": 256 << 10, "rest": 0, "then": 10})

    def test_bertrpc_names_take_the_rpc10_options_as_a_hash(self):
        self.assertEqual(self.run_ruby("bertrpc_hash_options"), "aaabbb")


def cpp_client(port, scenario, arg=None):
    cmd = [CPP_CLIENT, str(port), scenario] + ([str(arg)] if arg is not None else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"{scenario}: exited {proc.returncode}: {proc.stderr}")
    out = {}
    for ln in proc.stdout.splitlines():
        key, _, value = ln.partition("=")
        out.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


class CppClient(Rpc10Server):
    """bertd's C++ client (tests/clients/rpc10_cpp_client.cc) against handlers on the C++ library."""

    handler = CPP_HANDLER
    extra = "callbacks: {allow: ['127.0.0.1:*'], timeout: 1s, retries: 1}"

    def run_cpp(self, scenario, arg=None):
        return cpp_client(self.server.port, scenario, arg)

    def test_the_cpp_client_passes_a_streamed_answers_chunks_to_its_callback(self):
        self.assertEqual(self.run_cpp("stream"), {"streamed": "yes", "value": "[]",
                                                  "bytes": "1500000 in 10 chunks, counted 1500000",
                                                  "gathered": '<<"aaaabbbbcccc">>'})

    def test_the_cpp_client_reads_cache_infos(self):
        self.assertEqual(self.run_cpp("cache"), {"cache": "public expiration 60", "value": "7", "plain": "8"})

    def test_the_cpp_client_sends_validation_tokens(self):
        self.assertEqual(self.run_cpp("validation"), {"first": "private validation v1", "again": "valid none",
                                                      "stale": "not valid private validation v1"})

    def test_the_cpp_client_sends_a_callback_with_its_cast(self):
        service = raw.CallbackService()
        self.addCleanup(service.close)
        self.assertEqual(self.run_cpp("callback", service.port), {"cast": "done"})
        wait_until(lambda: service.got, what="the callback")
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, 86193]))

    def test_the_cpp_client_refuses_a_wrong_callback_before_sending(self):
        out = self.run_cpp("bad_options")
        self.assertIn("a callback goes with a cast", out["call"])
        self.assertIn('needs a service "host:port"', out["cast"])

    def test_the_cpp_client_raises_the_servers_protocol_error_past_max_stream(self):
        out = self.run_cpp("max_stream")
        self.assertEqual(out["raised"], "protocol")
        self.assertIn("limits.max_stream", out["message"])

    def test_a_cpp_client_whose_callback_throws_drops_the_connection_and_can_call_again(self):
        self.assertEqual(self.run_cpp("stop_reading"), {"first": str(256 << 10), "then": "10"})


class CppClientAgainstAScriptedServer(unittest.TestCase):
    HEAD = [("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("reply"), []))]

    def run_cpp(self, actions, scenario, arg=None):
        server = FakeServer(lambda conn, req, body: actions)
        self.addCleanup(server.close)
        return cpp_client(server.port, scenario, arg)

    def test_a_malformed_cache_info_is_an_invalid_answer(self):
        out = self.run_cpp([("frame", (Atom("info"), Atom("cache"), 42)), ("frame", (Atom("reply"), 1))],
                           "fake_cache")
        self.assertEqual(out["raised"], "InvalidAnswer")
        self.assertIn("malformed cache info from the server", out["message"])

    def test_a_stream_info_before_anything_but_a_reply_is_an_invalid_answer(self):
        out = self.run_cpp([self.HEAD[0], ("frame", (Atom("noreply"),))], "fake_stream")
        self.assertIn("must start with {reply, Term}", out["message"])

    def test_a_chunk_over_max_chunk_is_an_invalid_answer(self):
        out = self.run_cpp(self.HEAD + [("bytes", (100).to_bytes(4, "big") + b"x" * 100)], "fake_stream", 99)
        self.assertEqual(out["raised"], "InvalidAnswer")
        self.assertIn("chunk of 100 bytes is over max_chunk (99)", out["message"])

    def test_a_stream_cut_short_is_a_connection_error_after_the_chunks_that_came(self):
        out = self.run_cpp(self.HEAD + [("bytes", (5).to_bytes(4, "big") + b"12345"), ("close",)], "fake_stream")
        self.assertEqual(out["chunk"], "12345")
        self.assertEqual(out["raised"], "ConnectionError")
        self.assertIn("cut short", out["message"])

    def test_unknown_infos_are_skipped_and_only_infos_is_an_invalid_answer(self):
        ok = self.run_cpp([("frame", (Atom("info"), Atom("shiny"), [1])), ("frame", (Atom("reply"), 5))],
                          "fake_plain")
        self.assertEqual(ok, {"value": "5"})
        out = self.run_cpp([("frame", (Atom("info"), Atom("x"), []))] * 70, "fake_plain")
        self.assertIn("infos and no answer", out["message"])


class Bertc(Rpc10Server):
    """bertc --stream-in / --stream-out through bertd and the C++ handler."""

    handler = CPP_HANDLER
    limits = "{max_frame: 1MiB, max_stream: 1GiB}"

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="bertc-rpc10-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def bertc(self, *args, stdin=None):
        cmd = [BERTC, "-p", str(self.server.port), "--timeout", "20", *args]
        proc = subprocess.Popen(cmd, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=120)
        return proc.returncode, out, err.decode()

    def bounded_bertc(self, *args, stdout=subprocess.DEVNULL):
        """Runs bertc with its address space limited to 32 MiB: a bertc that held a 128 MiB
        stream whole could not run to its end."""
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (32 << 20, 32 << 20))

        cmd = [BERTC, "-p", str(self.server.port), "--timeout", "30", *args]
        proc = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, preexec_fn=limit, timeout=120)
        return proc.returncode, proc.stderr.decode()

    def test_bertc_streams_a_128_mib_file_in_in_bounded_memory(self):
        src = os.path.join(self.dir, "in")
        crc, block = 0, os.urandom(1 << 20)
        with open(src, "wb") as f:
            for i in range(128):  # 128 MiB, 128 times max_frame
                piece = bytes([i]) + block[1:]
                crc = zlib.crc32(piece, crc)
                f.write(piece)
        with tempfile.TemporaryFile(dir=self.dir) as reply:
            code, err = self.bounded_bertc("--stream-in", src, "call", "lib", "sum_stream", stdout=reply)
            self.assertEqual(code, 0, err)
            reply.seek(0)
            self.assertEqual(reply.read(), f"[512,{128 << 20},{crc}]\n".encode())  # 256 KiB chunks

    def test_bertc_writes_a_128_mib_streamed_answer_to_a_file_in_bounded_memory(self):
        dst = os.path.join(self.dir, "out")
        code, err = self.bounded_bertc("--stream-out", dst, "call", "lib", "stream_out", "128", str(1 << 20))
        self.assertEqual(code, 0, err)
        self.assertEqual(os.path.getsize(dst), 128 << 20)
        with open(dst, "rb") as f:
            f.seek(127 << 20)
            self.assertEqual(f.read(4), bytes([ord("a") + 127 % 26]) * 4)

    def test_the_32_mib_limit_would_stop_a_bertc_that_held_the_stream(self):
        # The bound above means something: bertc cannot hold 64 MiB under it.
        code, err = self.bounded_bertc("call", "lib", "add", "1", "2")
        self.assertEqual(code, 0, err)
        big = os.path.join(self.dir, "big")
        with open(big, "w") as f:
            f.write("<<" + ",".join(["7"] * (8 << 20)) + ">>")  # an 8 Mi-byte binary in Erlang syntax: 16 MiB of text
        code, err = self.bounded_bertc("call", "lib", "add", "@" + big, "1")
        self.assertIn("bad_alloc", err, "bertc parsed 16 MiB of text and built its term within 32 MiB")

    def test_bertc_prints_the_reply_and_writes_the_stream_to_its_file(self):
        dst = os.path.join(self.dir, "out")
        code, out, err = self.bertc("--stream-out", dst, "call", "lib", "stream_out", "3", "4")
        self.assertEqual((code, out, err), (0, b"[]\n", ""))
        with open(dst, "rb") as f:
            self.assertEqual(f.read(), b"aaaabbbbcccc")

    def test_bertc_streams_standard_input_and_to_standard_output_without_a_reply_line(self):
        r, w = os.pipe()
        os.write(w, b"hello, stream")
        os.close(w)
        with os.fdopen(r, "rb") as stdin:
            code, out, err = self.bertc("--stream-in", "-", "--stream-out", "-", "call", "lib", "echo_stream",
                                        stdin=stdin)
        self.assertEqual((code, out), (0, b"hello, stream"), err)

    def test_bertc_removes_the_stream_out_file_of_a_request_that_failed(self):
        dst = os.path.join(self.dir, "out")
        code, out, err = self.bertc("--stream-out", dst, "call", "lib", "nosuch")
        self.assertEqual(code, 4, err)
        self.assertIn("No such function", err)
        self.assertFalse(os.path.exists(dst))

    def test_bertc_refuses_stream_options_it_cannot_honour(self):
        code, _, err = self.bertc("--stream-out", os.path.join(self.dir, "x"), "cast", "lib", "add", "1", "2")
        self.assertEqual(code, 1)
        self.assertIn("--stream-out goes with a call", err)
        code, _, err = self.bertc("--stream-in", os.path.join(self.dir, "missing"), "call", "lib", "sum_stream")
        self.assertEqual(code, 1)
        self.assertIn("cannot read", err)


class ClientAgainstAScriptedServer(unittest.TestCase):
    """What the Python client does with infos and streams bertd never sends."""

    def serve(self, actions):
        server = FakeServer(lambda conn, req, body: actions)
        self.addCleanup(server.close)
        return bertd.Service("127.0.0.1", server.port, timeout=3)

    def test_a_malformed_cache_info_is_a_clear_read_error(self):
        svc = self.serve([("frame", (Atom("info"), Atom("cache"), 42)), ("frame", (Atom("reply"), 1))])
        with self.assertRaises(bertd.ReadError) as cm:
            svc.call(accept=["cache"]).m.f()
        self.assertIn("malformed cache info from the server", str(cm.exception))

    def test_a_stream_info_before_anything_but_a_reply_is_a_read_error(self):
        svc = self.serve([("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("noreply"),))])
        with self.assertRaises(bertd.ReadError) as cm:
            svc.call(accept=["stream"]).m.f()
        self.assertIn("must start with {reply, Term}", str(cm.exception))

    def test_a_chunk_over_max_chunk_is_a_read_error(self):
        head = [("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("reply"), []))]
        svc = self.serve(head + [("bytes", (100).to_bytes(4, "big") + b"x" * 100)])
        svc.max_chunk = 99
        with self.assertRaises(bertd.ReadError) as cm:
            svc.call(accept=["stream"]).m.f().read()
        self.assertIn("chunk: BERP of 100 bytes exceeds the limit of 99", str(cm.exception))

    def test_a_stream_cut_short_is_a_connection_error_not_a_short_answer(self):
        head = [("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("reply"), []))]
        svc = self.serve(head + [("bytes", (5).to_bytes(4, "big") + b"12345"), ("close",)])
        answer = svc.call(accept=["stream"]).m.f()
        self.assertEqual(next(answer), b"12345")
        with self.assertRaises(bertd.ConnectionError) as cm:
            next(answer)
        self.assertIn("cut short", str(cm.exception))

    def test_unknown_infos_before_an_answer_are_ignored(self):
        svc = self.serve([("frame", (Atom("info"), Atom("shiny"), [1])), ("frame", (Atom("reply"), 5))])
        self.assertEqual(svc.call.m.f(), 5)

    def test_a_server_that_sends_only_infos_is_a_read_error(self):
        svc = self.serve([("frame", (Atom("info"), Atom("x"), []))] * 70)
        with self.assertRaises(bertd.ReadError) as cm:
            svc.call.m.f()
        self.assertIn("infos and no answer", str(cm.exception))


class RubyClientAgainstAScriptedServer(unittest.TestCase):
    """What the Ruby client does with infos and streams bertd never sends."""

    HEAD = [("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("reply"), []))]

    def run_ruby(self, actions, scenario, arg=None):
        server = FakeServer(lambda conn, req, body: actions)
        self.addCleanup(server.close)
        return ruby_client(server.port, scenario, arg)

    def test_a_malformed_cache_info_is_a_clear_invalid_reply(self):
        out = self.run_ruby([("frame", (Atom("info"), Atom("cache"), 42)), ("frame", (Atom("reply"), 1))],
                            "fake_cache")
        self.assertEqual(out["raised"], "BERTD::InvalidReply")
        self.assertIn("malformed cache info from the server", out["message"])

    def test_a_stream_info_before_anything_but_a_reply_is_an_invalid_reply(self):
        out = self.run_ruby([self.HEAD[0], ("frame", (Atom("noreply"),))], "fake_stream")
        self.assertEqual(out["raised"], "BERTD::InvalidReply")
        self.assertIn("must start with {reply, Term}", out["message"])

    def test_a_chunk_over_max_chunk_is_an_invalid_reply(self):
        out = self.run_ruby(self.HEAD + [("bytes", (100).to_bytes(4, "big") + b"x" * 100)], "fake_stream", 99)
        self.assertEqual(out["raised"], "BERTD::InvalidReply")
        self.assertIn("chunk of 100 bytes is over max_chunk (99)", out["message"])

    def test_a_stream_cut_short_is_a_connection_error_after_the_chunks_that_came(self):
        out = self.run_ruby(self.HEAD + [("bytes", (5).to_bytes(4, "big") + b"12345"), ("close",)], "fake_stream")
        self.assertEqual(out["chunks"], ["12345"])
        self.assertEqual(out["raised"], "BERTD::ConnectionError")
        self.assertIn("cut short", out["message"])

    def test_unknown_infos_are_ignored_and_only_infos_is_an_invalid_reply(self):
        ok = self.run_ruby([("frame", (Atom("info"), Atom("shiny"), [1])), ("frame", (Atom("reply"), 5))],
                           "fake_plain")
        self.assertEqual(ok, 5)
        out = self.run_ruby([("frame", (Atom("info"), Atom("x"), []))] * 70, "fake_plain")
        self.assertIn("infos and no answer", out["message"])


if __name__ == "__main__":
    unittest.main()
