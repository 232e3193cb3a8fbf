"""test_rpc10_erlang.py: BERT-RPC 1.0 through bertd's Erlang client (modules/erlang/bertd_client.erl)
on a real Erlang VM (tests/clients/rpc10_erlang_client.escript): streams both ways, cache infos and
validation, callbacks and priority against a real bertd with handlers on the Python library, what
the client does with infos and streams bertd never sends (a scripted server), and a client that
knows none of 1.0 getting plain answers from the same handlers.
"""
import os
import subprocess
import unittest

from harness import BUILD, ROOT, wait_until

import bertd
from bertd import Atom

from test_rpc10 import MiB, FakeServer, Rpc10Server, raw

EBIN = os.path.join(BUILD, "ebin")
CLIENT = os.path.join(ROOT, "tests", "clients", "rpc10_erlang_client.escript")
TRUE, FALSE = Atom("true"), Atom("false")  # Erlang's booleans, as bertd.decode reads them
CALLBACKS = "callbacks: {allow: ['127.0.0.1:*'], timeout: 1s, retries: 1}"


def erlang_client(port, scenario, arg=None):
    cmd = ["escript", CLIENT, EBIN, str(port), scenario] + ([str(arg)] if arg is not None else [])
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=90)
    if proc.returncode != 0:
        raise AssertionError(f"{scenario}: escript exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return bertd.decode(bytes.fromhex(proc.stdout.strip()))


def ok(value):
    return (Atom("ok"), value)


def server_error(out):
    """The (Type, Detail) of an {error, {Type, Code, Class, Detail, Backtrace}} result."""
    tag, (kind, _code, _klass, detail, _trace) = out
    assert tag == Atom("error"), out
    return str(kind), detail.decode()


class ErlangClient(Rpc10Server):
    extra = CALLBACKS

    def run_erl(self, scenario, arg=None):
        return erlang_client(self.server.port, scenario, arg)

    def test_the_erlang_client_streams_a_list_of_chunks_past_max_frame(self):
        got, want = self.run_erl("stream_in")
        self.assertEqual(got, ok(want))

    def test_the_erlang_client_streams_an_unfold_fun_in_chunks_of_chunk_size(self):
        got, want = self.run_erl("stream_in_fun")
        self.assertEqual(got, ok(want))

    def test_the_erlang_client_streams_a_fun_until_it_says_eof(self):
        out = self.run_erl("stream_in_fun0")
        self.assertEqual(out[1][:2], [3, 9])

    def test_the_erlang_client_folds_a_streamed_answer_chunk_by_chunk(self):
        tag, answer = self.run_erl("stream_out")
        self.assertEqual(tag, Atom("ok"))
        self.assertEqual((answer["streamed"], answer["value"], answer["valid"], answer["cache"]),
                         (TRUE, [], FALSE, Atom("undefined")))
        count, total, biggest, letters = answer["stream"]
        self.assertEqual(total, 5 * 300000)
        self.assertLessEqual(biggest, 256 << 10)
        self.assertGreater(count, 5)  # 300000-byte chunks cut to the library's 256 KiB
        self.assertEqual(bytes(letters), b"abcde")

    def test_the_erlang_client_gives_each_chunk_to_a_fun_and_collects_by_default(self):
        (tag, answer), chunks = self.run_erl("stream_out_each")
        self.assertEqual((tag, answer["stream"]), (Atom("ok"), Atom("ok")))
        self.assertEqual(chunks, [b"aaaaa", b"bbbbb", b"ccccc"])
        tag, answer = self.run_erl("collected")
        self.assertEqual(answer["stream"], b"aaabbb")

    def test_the_erlang_client_gets_an_unannounced_stream_gathered_by_bertd(self):
        self.assertEqual(self.run_erl("gathered"), ok(b"aaaabbbbcccc"))

    def test_the_erlang_clients_persistent_connection_goes_on_after_streams_both_ways(self):
        self.assertEqual(self.run_erl("persistent"), [b"a" * 10 + b"b" * 10, 5, ok(4)])

    def test_the_erlang_client_streams_both_ways_at_once(self):
        self.assertEqual(self.run_erl("echo"), (b"echo", TRUE))

    def test_the_erlang_client_surfaces_a_cache_info_only_when_it_accepts_cache(self):
        answer, plain = self.run_erl("cache")
        self.assertEqual(answer["cache"], {"access": Atom("public"), "expiration": 60})
        self.assertEqual(answer["value"][0], 7)
        self.assertEqual(plain[0], Atom("ok"))
        self.assertEqual(plain[1][0], 8)

    def test_the_erlang_client_sends_a_validation_token_and_gets_valid_with_no_value(self):
        first, again, stale, after = self.run_erl("validation")
        self.assertEqual(first["cache"], {"access": Atom("private"), "validation": b"v1"})
        self.assertEqual(first["value"][0], 1)
        self.assertEqual((again[1]["valid"], again[1]["value"]), (TRUE, Atom("undefined")))
        self.assertEqual((stale[1]["valid"], stale[1]["value"][0], stale[1]["cache"]["validation"]),
                         (FALSE, 2, b"v1"))
        self.assertEqual(after, ok(2), "the connection is in step after {info, valid, []} and {noreply}")

    def test_the_erlang_client_sends_a_callback_with_its_cast(self):
        service = raw.CallbackService()
        self.addCleanup(service.close)
        self.assertEqual(self.run_erl("callback", service.port), Atom("ok"))
        wait_until(lambda: service.got, what="the callback")
        self.assertEqual(service.got[0], (Atom("cast"), Atom("cron"), Atom("updated_stats"), [42, 86193]))

    def test_the_erlang_client_returns_the_servers_refusal_of_a_callback(self):
        kind, detail = server_error(self.run_erl("not_allowed"))
        self.assertEqual(kind, "server")
        self.assertIn("not allowed", detail)

    def test_the_erlang_client_refuses_wrong_rpc10_options_before_sending(self):
        out = self.run_erl("bad_options")
        badarg = [o[1][1] for o in out[:6]]
        self.assertTrue(all(o[0] == Atom("error") and o[1][0] == Atom("badarg") for o in out[:6]), out)
        self.assertEqual([b[0] for b in badarg],
                         ["accept", "validation", "callback", "stream_in", "stream_out", "callback"])
        self.assertEqual(badarg[2][1], Atom("only_with_a_cast"))
        self.assertEqual(badarg[5][1][0], Atom("service_is_not_host_port"))
        # A chunk that is not iodata, found while streaming: the connection is dropped, the next call works.
        self.assertEqual(out[6], (Atom("error"), (Atom("badarg"), (Atom("stream_in"), (Atom("not_iodata"), 42)))))
        self.assertEqual(out[7], ok(2))

    def test_the_erlang_client_returns_the_servers_protocol_error_past_max_stream(self):
        refused, then = self.run_erl("max_stream")
        kind, detail = server_error(refused)
        self.assertEqual(kind, "protocol")
        self.assertIn("limits.max_stream", detail)
        self.assertEqual(then, ok(2))

    def test_a_sink_that_throws_or_a_collected_stream_past_max_stream_ends_it_and_the_next_call_works(self):
        thrown, capped, then = self.run_erl("stop_reading")
        self.assertEqual(thrown, (Atom("error"), (Atom("stream_out"), (Atom("throw"), Atom("enough")))))
        self.assertEqual(capped, (Atom("error"), (Atom("max_stream"), MiB)))
        self.assertEqual(then, ok(10))

    def test_priority_goes_with_the_rpc10_options(self):
        first, second = self.run_erl("priority")
        self.assertEqual(first[1]["value"], 3)
        self.assertEqual(second, ok(4))

    def test_a_client_that_knows_none_of_rpc10_gets_one_plain_answer_per_request(self):
        timeout = (Atom("error"), Atom("timeout"))
        gathered, cached, validated, added = self.run_erl("old_client")
        self.assertEqual(gathered, ((Atom("reply"), b"aaaabbbbcccc"), timeout))
        self.assertEqual((cached[0][0], cached[0][1][0], cached[1]), (Atom("reply"), 9, timeout))
        self.assertEqual((validated[0][0], validated[0][1][0], validated[1]), (Atom("reply"), 3, timeout))
        self.assertEqual(added, ((Atom("reply"), 3), timeout))


class ErlangClientAgainstAScriptedServer(unittest.TestCase):
    """What the Erlang client does with infos and streams bertd never sends."""

    HEAD = [("frame", (Atom("info"), Atom("stream"), [])), ("frame", (Atom("reply"), []))]

    def run_erl(self, actions, scenario, arg=None):
        server = FakeServer(lambda conn, req, body: actions)
        self.addCleanup(server.close)
        return erlang_client(server.port, scenario, arg)

    def test_a_malformed_cache_info_is_an_invalid_answer(self):
        out = self.run_erl([("frame", (Atom("info"), Atom("cache"), 42)), ("frame", (Atom("reply"), 1))],
                           "fake_cache")
        self.assertEqual(out, (Atom("error"), (Atom("invalid_answer"), (Atom("info"), Atom("cache"), 42))))

    def test_a_stream_info_before_anything_but_a_reply_is_an_invalid_answer(self):
        out, _ = self.run_erl([self.HEAD[0], ("frame", (Atom("noreply"),))], "fake_stream")
        self.assertEqual(out, (Atom("error"), (Atom("invalid_answer"), (Atom("stream_head"), (Atom("noreply"),)))))

    def test_a_chunk_over_max_chunk_is_refused_before_it_is_read(self):
        out, chunks = self.run_erl(self.HEAD + [("bytes", (5).to_bytes(4, "big") + b"12345"),
                                                ("bytes", (100).to_bytes(4, "big") + b"x" * 100)], "fake_stream", 99)
        self.assertEqual(chunks, [b"12345"])
        self.assertEqual(out, (Atom("error"), (Atom("invalid_answer"), (Atom("chunk_over"), 99))))

    def test_a_stream_cut_short_is_closed_after_the_chunks_that_came(self):
        out, chunks = self.run_erl(self.HEAD + [("bytes", (5).to_bytes(4, "big") + b"12345"), ("close",)],
                                   "fake_stream")
        self.assertEqual(chunks, [b"12345"])
        self.assertEqual(out, (Atom("error"), Atom("closed")))

    def test_unknown_infos_are_ignored_and_only_infos_is_an_invalid_answer(self):
        self.assertEqual(self.run_erl([("frame", (Atom("info"), Atom("shiny"), [1])), ("frame", (Atom("reply"), 5))],
                                      "fake_plain"), ok(5))
        self.assertEqual(self.run_erl([("frame", (Atom("info"), Atom("x"), []))] * 70, "fake_plain"),
                         (Atom("error"), (Atom("invalid_answer"), Atom("too_many_infos"))))


if __name__ == "__main__":
    unittest.main()
