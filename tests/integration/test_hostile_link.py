"""test_hostile_link.py: the Erlang link against terms built to cost far more than their size
(issue 12), on the three paths that carry bytes from parties bertd does not trust: an erlang_rpc
request a handler sends, a handler's answer relayed to an Erlang node's rpc:call, and a native
call's result from the Erlang node. Each hostile term (16 million NILs, compressed to 16 KB or
flat at 16 MB, and a term nested 100,000 levels deep) must cost the link a bounded amount of
memory (its VmHWM), get a clear error, and leave the next call on the same bertd served at once.
Real bertd, real handlers, real Erlang VMs.
"""
import os
import time
import unittest

from erlnode import ErlNode, compile_erlang, test_cookie, unique_name
from harness import ROOT, Server, py_handler, wait_until
from loadrun import link_pid, rss_kb

import bertd
from bertd import Atom

KINDS = (b"compressed", b"flat", b"nested")
# What one hostile term may add to the link's peak memory: its bytes a few times over (the
# frame is buffered, and a dist packet's buffer may grow by doubling), never its elements'.
FRAME_MB = 16
MAX_GROWTH_KB = 4 * FRAME_MB * 1024 + 16 * 1024
PROMPT_S = 2.0  # a plain call right after, on a loaded machine


def hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))


def reset_hwm(pid):
    """Sets the process's peak (VmHWM) to its present RSS (clear_refs 5), so the peak read
    after a step is that step's; returns the present RSS in KiB."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return rss_kb(pid)


class HostileTerms(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cookie = test_cookie()
        cls.ebin = compile_erlang([os.path.join(ROOT, "tests", "erlang", n + ".erl") for n in ("hostile", "nat")])
        cls.name = unique_name("hl")
        alive, host = cls.name.split("@")
        cls.cnode = f"{alive}_bertd@{host}"
        cls.server = Server(f"""
            acceptors: 2
            modules:
              - name: hostile
                type: native
                codepaths: [{cls.ebin}]
              - name: nat
                type: native
                codepaths: [{cls.ebin}]
              - name: hostext
                command: {py_handler("pyhostile.py")}
                count: 2
            """, args=["--name", cls.name, "--cookie", cls.cookie])
        cls.erl = None
        try:
            cls.server.start(timeout=20)
            svc = cls.server.service(timeout=10)
            wait_until(lambda: cls._ready(svc), timeout=30, interval=0.2, what="the native node")
            cls.erl = ErlNode(unique_name("hlt"), cls.cookie, [cls.ebin]).start()
        except Exception:
            cls.tearDownClass()
            raise

    @staticmethod
    def _ready(svc):
        try:
            return svc.call.hostile.ok(1) == (Atom("ok"), 1)
        except (bertd.ServerError, bertd.ReadTimeout):
            return False

    @classmethod
    def tearDownClass(cls):
        if cls.erl:
            cls.erl.stop()
        cls.server.stop()

    def setUp(self):
        self.link = link_pid(self.server)
        self.assertIsNotNone(self.link, "no Erlang link process")

    def svc(self):
        return self.server.service(timeout=30)

    def assert_bounded(self, what, before_kb):
        grown = hwm_kb(self.link) - before_kb
        print(f"\n    {what}: link peak +{grown} KiB", end=" ")
        self.assertLess(grown, MAX_GROWTH_KB, f"{what} grew the link's peak memory by {grown} KiB")
        self.assertEqual(link_pid(self.server), self.link, f"the link restarted after {what}")

    def assert_prompt(self, call, expected, what):
        t0 = time.monotonic()
        self.assertEqual(call(), expected, f"the call after {what}")
        took = time.monotonic() - t0
        self.assertLess(took, PROMPT_S, f"the call after {what} took {took:.2f} s")

    # -- a handler's erlang_rpc --------------------------------------------------------------------
    def test_a_hostile_erlang_rpc_from_a_handler_gets_an_error_and_costs_the_link_a_bounded_amount(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                before = reset_hwm(self.link)
                answer = self.svc().call.hostext.rpc_raw(kind, b"")
                self.assertEqual(answer[0], Atom("error"), answer)
                detail = answer[1][3]
                self.assertIn(b"undecodable request", detail)
                expected = {b"compressed": b"limits.max_inflated", b"flat": b"too many elements",
                            b"nested": b"nesting deeper than max_depth (1000)"}[kind]
                self.assertIn(expected, detail)
                self.assert_bounded(f"a {kind.decode()} erlang_rpc", before)
                self.assert_prompt(lambda: self.svc().call.hostext.rpc(b"", b"erlang", b"length", [[1, 2, 3]]), 3,
                                   f"a {kind.decode()} erlang_rpc")

    # -- a handler's answer to an Erlang node's rpc:call -------------------------------------------
    def erl_rpc(self, function, args):
        return self.erl.eval(f"rpc:call('{self.cnode}', hostext, {function}, {args}, 30000).", timeout=40)

    def test_a_hostile_answer_to_an_erlang_caller_is_an_error_tuple_and_costs_the_link_a_bounded_amount(self):
        for kind in KINDS:
            with self.subTest(kind=kind):
                before = reset_hwm(self.link)
                got = self.erl_rpc("answer", f"[<<\"{kind.decode()}\">>]")
                self.assertEqual(got[0], Atom("badrpc"), got)
                text = repr(got)
                self.assertTrue("undecodable answer" in text or "limits.max_inflated" in text or
                                "unable to read data" in text, got)
                self.assert_bounded(f"a {kind.decode()} answer to rpc:call", before)
                t0 = time.monotonic()
                self.assertEqual(self.erl_rpc("echo", "[1]"), (Atom("echo"), [1]))
                self.assertLess(time.monotonic() - t0, PROMPT_S)

    # -- a native call's result ----------------------------------------------------------------------
    def test_a_hostile_native_result_is_a_clear_error_and_costs_the_link_a_bounded_amount(self):
        # flat: 4 million NILs, shown from their first 1000 bytes of text; nested: 100,000
        # levels, refused at the codec's 1000.
        for function, shown in (("flat", "{badrpc,{'EXIT',[[],[],[],"), ("nested", "nesting deeper than max_depth")):
            with self.subTest(function=function):
                before = reset_hwm(self.link)
                with self.assertRaises(bertd.ServerError) as cm:
                    getattr(self.svc().call.hostile, function)()
                message = cm.exception.message
                self.assertIn(f"native call 'hostile:{function}' failed on", message)
                self.assertIn(shown, message)
                self.assertLess(len(message), 1200)
                self.assert_bounded(f"a {function} native result", before)
                self.assert_prompt(lambda: self.svc().call.nat.add(1, 2), 3, f"a {function} native result")

    def test_other_traffic_goes_on_while_hostile_terms_arrive(self):
        # Native calls answered while a handler's hostile requests are read: none waits on them.
        import threading
        stop = threading.Event()
        worst = [0.0]

        def calls():
            s = self.server.service(timeout=10)
            while not stop.is_set():
                t0 = time.monotonic()
                self.assertEqual(s.call.nat.add(2, 2), 4)
                worst[0] = max(worst[0], time.monotonic() - t0)

        t = threading.Thread(target=calls)
        t.start()
        try:
            for kind in KINDS:
                self.svc().call.hostext.rpc_raw(kind, b"")
        finally:
            stop.set()
            t.join(30)
        print(f"\n    slowest native call meanwhile: {worst[0] * 1000:.0f} ms", end=" ")
        self.assertLess(worst[0], PROMPT_S)


if __name__ == "__main__":
    unittest.main()
