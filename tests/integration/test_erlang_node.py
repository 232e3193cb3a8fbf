"""test_erlang_node.py: bertd as a whole Erlang C-node, against real Erlang VMs (erlnode.py) and a small
erl_interface client. rex answers every request shape rpc and ei_rpc() send; handler workers are processes
of bertd's node (a pid, a mailbox, registered names, held node connections, sends to every kind of
destination); nothing is dropped without a log line and a counter; and nothing blocks: a worker waiting
for a message, a slow registered process or a flood to one name leave every other call served.
Every VM and server is stopped in cleanups.
"""
import os
import re
import subprocess
import threading
import time
import unittest

from erlnode import ErlNode, test_cookie, unique_name
from harness import BUILD, HANDLERS, RUBY_LIB, Server, free_port, py_handler, wait_until

import bertd
from bertd import Atom

EI_RPC = os.path.join(BUILD, "tests", "clients", "ei_rpc_client")


def erl_term(value):
    """Erlang source for a term Python holds (a pid, say): its external format, decoded on the node."""
    return f'binary_to_term(binary:decode_hex(<<"{bertd.encode(value).hex()}">>))'


# A process registered as {name} that keeps every message it gets until asked for them.
COLLECTOR = """register({name}, spawn(fun() -> Loop = fun L(Acc) -> receive {{take, P}} -> P ! lists:reverse(Acc),
               L([]); M -> L([M | Acc]) end end, Loop([]) end)), ok."""


def take(erl, name, want, timeout=5.0):
    """The messages the collector `name` got, once it holds `want` of them (or the timeout passed)."""
    got = []

    def enough():
        got.extend(erl.eval(f"{name} ! {{take, self()}}, receive M -> M after 2000 -> [] end."))
        return len(got) >= want

    try:
        wait_until(enough, timeout=timeout, interval=0.05, what=f"{want} messages at {name}")
    except AssertionError:
        pass
    return got


def stats(server):
    return {k: int(v) for k, v in server.stats().items() if v.isdigit()}


class ErlangNodeCase(unittest.TestCase):
    """One server whose C-node carries the name (no companion), with Python modules, and a test VM."""

    extra = ""

    @classmethod
    def setUpClass(cls):
        cls.cookie = test_cookie()
        cls.cnode = unique_name("whole")
        cls.mport = free_port()
        cls.server = Server(f"""
            acceptors: 2
            metrics: {{listen: "127.0.0.1:{cls.mport}"}}
            modules:
              - name: ext
                command: {py_handler()}
              - name: pyproc
                command: {py_handler("pyproc.py")}
              - name: other_proc
                command: {py_handler("pyproc.py")} --no-events
              - name: pymany
                command: {py_handler("pyproc.py")} --events=busy_events
                count: 3
              - name: other
                command: {py_handler()}
                count: 3
              - name: cppproc
                command: {os.path.join(BUILD, "tests", "handlers", "cpp_proc")}
              - name: rbproc
                command: ruby -I {RUBY_LIB} {os.path.join(HANDLERS, "rbproc.rb")}
            erlang:
              registered:
                - name: events
                  module: ext
                  function: record
              {cls.extra}
            """, args=["--name", cls.cnode, "--cookie", cls.cookie])
        try:
            cls.server.start(timeout=20)
            # A worker is idle before its script has run: once these answer, the names the
            # handlers register at start are theirs.
            for module in ("pyproc", "cppproc", "rbproc", "other_proc", "pymany"):
                cls.server.service(timeout=20).request(Atom("call"), Atom(module), Atom("ospid"), [])
            cls.erl = ErlNode(unique_name("peer"), cls.cookie).start()
            wait_until(lambda: cls.erl.try_eval(f"net_adm:ping('{cls.cnode}').") == Atom("pong"), timeout=10,
                       what="bertd's node to answer a ping")
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "erl", None):
            cls.erl.stop()
        cls.server.stop()

    def svc(self, timeout=10):
        return self.server.service(timeout=timeout)

    def ev(self, expr, timeout=15):
        return self.erl.eval(expr, timeout=timeout)

    def fresh(self, prefix):
        return f"{prefix}{time.monotonic_ns()}"

    def collector(self):
        name = self.fresh("box")
        self.ev(COLLECTOR.format(name=name))
        return name


class Rex(ErlangNodeCase):
    def test_gen_server_call_to_rex_runs_the_external_module(self):
        self.assertEqual(self.ev(f"gen_server:call({{rex, '{self.cnode}'}}, {{call, ext, add, [1, 2], user}})."), 3)
        self.assertEqual(self.ev(f"rpc:block_call('{self.cnode}', ext, add, [2, 2])."), 4)

    def test_ei_rpc_from_a_c_program_is_answered_with_rex_and_the_result(self):
        out = subprocess.run([EI_RPC, self.cookie, self.cnode, "ext", "add", "20", "22"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.replace(" ", "").strip(), "{rex,42}")
        # An error is the badrpc rpc:call gives.
        out = subprocess.run([EI_RPC, self.cookie, self.cnode, "nomod", "f"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.replace(" ", "").startswith("{rex,{badrpc,{'EXIT',{{server,1,"), out.stdout)

    def test_plain_call_message_to_rex_is_answered_with_rex_and_the_result(self):
        r = self.ev(f"{{rex, '{self.cnode}'}} ! {{self(), {{call, ext, add, [2, 3], user}}}}, "
                    "receive {rex, R} -> R after 5000 -> timeout end.")
        self.assertEqual(r, 5)

    def test_an_unknown_call_to_rex_is_answered_badrpc_and_logged(self):
        r = self.ev(f"gen_server:call({{rex, '{self.cnode}'}}, {{frobnicate, 1}}, 5000).")
        self.assertEqual(r, (Atom("badrpc"), Atom("notsup")))
        wait_until(lambda: "rex: a gen_server:call from" in self.server.log() and "frobnicate" in self.server.log(),
                   what="the log line")

    def test_an_unknown_plain_request_to_rex_is_answered_badrpc_and_logged(self):
        r = self.ev(f"{{rex, '{self.cnode}'}} ! {{self(), {{juggle, 3}}}}, "
                    "receive {rex, R} -> R after 5000 -> timeout end.")
        self.assertEqual(r, (Atom("badrpc"), Atom("notsup")))
        self.assertIn("juggle", self.server.log())

    def test_a_message_to_rex_with_no_one_to_answer_is_logged(self):
        tag = self.fresh("stray")
        self.ev(f"{{rex, '{self.cnode}'}} ! {tag}.")
        wait_until(lambda: f"rex: a message from {self.erl.name} that is no request" in self.server.log()
                   and tag in self.server.log(), what="the log line")

    def test_casts_to_rex_run_the_module(self):
        tags = [self.fresh(k) for k in ("gencast", "rpccast", "everywhere")]
        self.ev(f"gen_server:cast({{rex, '{self.cnode}'}}, {{cast, ext, record, [{tags[0]}], user}}).")
        self.ev(f"rpc:cast('{self.cnode}', ext, record, [{tags[1]}]).")
        self.ev(f"rpc:eval_everywhere(['{self.cnode}'], ext, record, [{tags[2]}]).")
        wait_until(lambda: set(map(Atom, tags)) <= set(self.svc().call.ext.order()), what="the three casts")

    def test_abcast_and_sbcast_reach_a_registered_name(self):
        tags = [self.fresh("ab"), self.fresh("sb")]
        self.ev(f"rpc:abcast(['{self.cnode}'], events, {tags[0]}).")
        r = self.ev(f"rpc:sbcast(['{self.cnode}'], events, {tags[1]}).")
        self.assertEqual(r, ([Atom(self.cnode)], []))
        wait_until(lambda: set(map(Atom, tags)) <= set(self.svc().call.ext.order()), what="both messages")
        self.assertEqual(self.ev(f"rpc:sbcast(['{self.cnode}'], nobody_at_all, x)."), ([], [Atom(self.cnode)]))

    def test_erpc_spawn_requests_still_work(self):
        self.assertEqual(self.ev(f"erpc:call('{self.cnode}', ext, add, [3, 4])."), 7)
        self.assertEqual(self.ev(f"rpc:call('{self.cnode}', ext, add, [5, 6])."), 11)


class Identity(ErlangNodeCase):
    def test_each_worker_has_a_pid_of_bertds_node(self):
        pid = self.svc().call.pyproc.me()
        self.assertIsInstance(pid, bertd.Pid)
        self.assertEqual(pid.node, Atom(self.cnode))
        self.assertEqual(self.svc().call.pyproc.me(), pid)  # the same worker, the same pid
        # Erlang sees a pid of bertd's node.
        self.assertEqual(self.ev(f"node({erl_term(pid)})."), Atom(self.cnode))

    def test_erlang_replies_to_a_workers_pid_and_messages_arrive_in_order(self):
        self.ev("register(echo_srv, spawn(fun L() -> receive {From, X} -> From ! {reply, X}, L() end end)), ok.")
        self.assertEqual(self.svc().call.pyproc.ask(b"echo_srv", self.erl.name.encode(), [1, b"x"], 5000),
                         (Atom("reply"), [1, b"x"]))
        pid = self.svc().call.pyproc.me()
        self.ev(f"P = {erl_term(pid)}, [P ! {{n, I}} || I <- lists:seq(1, 200)], ok.")
        got = self.svc().call.pyproc.recv_all(200, 5000)
        self.assertEqual(got, [(Atom("n"), i) for i in range(1, 201)])
        self.assertEqual(self.svc().call.pyproc.recv(0), Atom("timeout"))

    def test_recv_times_out_when_no_message_comes(self):
        start = time.monotonic()
        self.assertEqual(self.svc().call.pyproc.recv(300), Atom("timeout"))
        self.assertGreaterEqual(time.monotonic() - start, 0.28)

    def test_a_worker_sends_to_a_pid_a_three_tuple_a_name_on_a_node_and_a_name_of_bertd(self):
        box = self.collector()
        pid = self.ev(f"whereis({box}).")
        self.assertIsInstance(pid, bertd.Pid)
        svc = self.svc()
        self.assertIs(svc.call.pyproc.send(pid, b"by_pid"), True)
        self.assertIs(svc.call.pyproc.send([self.erl.name.encode(), pid.id, pid.serial], b"by_triple"), True)
        self.assertIs(svc.call.pyproc.send([box.encode(), self.erl.name.encode()], b"by_name"), True)
        # A bare name is one of bertd's own node: here the name pyproc registered.
        self.assertIs(svc.call.pyproc.send(b"pyproc_events", (pid, b"by_local_name")), True)
        got = take(self.erl, box, 4)
        self.assertEqual(got[:3], [b"by_pid", b"by_triple", b"by_name"])
        self.assertEqual(got[3][:2], (Atom("got"), b"by_local_name"))
        r = svc.call.pyproc.send(b"no_such_name_here", b"x")
        self.assertEqual(r[0], b"ErlangError")
        self.assertIn(b"no process is registered as 'no_such_name_here'", r[1])

    def test_a_worker_sends_to_another_workers_pid(self):
        target = self.svc().call.pyproc.me()
        self.assertIs(self.svc().call.other_proc.send(target, b"hello neighbour"), True)
        self.assertEqual(self.svc().call.pyproc.recv(3000), b"hello neighbour")

    def test_erlang_connect_holds_the_node_and_calls_on_it_reuse_it(self):
        node = self.erl.name.encode()
        self.assertEqual(self.svc().call.pyproc.connect_and_call(node, 3), [Atom(self.erl.name)] * 3)
        start = time.monotonic()
        r = self.svc().call.pyproc.connect(b"nobody_runs_this@127.0.0.1")
        self.assertEqual(r[0], b"ErlangError")
        self.assertLess(time.monotonic() - start, 5)

    def test_erlang_rpc_timeout_is_the_links_deadline(self):
        start = time.monotonic()
        r = self.svc().call.pyproc.rpc(self.erl.name.encode(), b"timer", b"sleep", [3000], 300)
        self.assertEqual(r[0], b"ErlangError")
        self.assertIn(b"timeout", r[1])
        self.assertLess(time.monotonic() - start, 2)
        # The connection survived it: the next call works.
        self.assertEqual(self.svc().call.pyproc.rpc(self.erl.name.encode(), b"erlang", b"abs", [-3], -1), 3)


class EveryLibrary(ErlangNodeCase):
    """The same behaviour through the Python, C++ and Ruby libraries' own API (tests/handlers/*proc*)."""

    libraries = ("pyproc", "cppproc", "rbproc")

    def lib(self, module):
        return getattr(self.svc().call, module)

    def test_every_library_gives_its_worker_a_pid_that_receives_erlangs_messages_in_order(self):
        for module in self.libraries:
            with self.subTest(library=module):
                pid = self.lib(module).me()
                self.assertIsInstance(pid, bertd.Pid)
                self.assertEqual(pid.node, Atom(self.cnode))
                self.ev(f"P = {erl_term(pid)}, [P ! {{n, I}} || I <- lists:seq(1, 50)], ok.")
                self.assertEqual(self.lib(module).recv_all(50, 5000), [(Atom("n"), i) for i in range(1, 51)])
                self.assertEqual(self.lib(module).recv(100), Atom("timeout"))

    def test_every_library_sends_to_a_pid_a_triple_a_name_on_a_node_and_a_name_of_bertd(self):
        for module in self.libraries:
            with self.subTest(library=module):
                box = self.collector()
                pid = self.ev(f"whereis({box}).")
                lib = self.lib(module)
                self.assertIn(lib.send(pid, b"pid"), (True, Atom("true")))
                self.assertIn(lib.send([self.erl.name.encode(), pid.id, pid.serial], b"triple"), (True, Atom("true")))
                self.assertIn(lib.send([box.encode(), self.erl.name.encode()], b"name"), (True, Atom("true")))
                self.assertIn(lib.send(f"{module}_events".encode(), (pid, b"local")), (True, Atom("true")))
                got = take(self.erl, box, 4)
                self.assertEqual(got[:3], [b"pid", b"triple", b"name"])
                self.assertEqual(got[3][:2], (Atom("got"), b"local"))
                self.assertEqual(lib.send(b"nobody_has_this_name", b"x")[0], b"ErlangError")

    def test_every_library_registers_names_that_erlangs_messages_run(self):
        for module in self.libraries:
            with self.subTest(library=module):
                r = self.ev(f"{{{module}_events, '{self.cnode}'}} ! {{self(), hi}}, "
                            "receive {got, hi, OsPid} -> OsPid after 5000 -> timeout end.")
                self.assertEqual(r, self.lib(module).ospid())
                late = self.fresh(module)
                self.assertIn(self.lib(module).register(late.encode()), (True, Atom("true")))
                r = self.ev(f"{{{late}, '{self.cnode}'}} ! {{self(), late}}, "
                            "receive {got, late, _} -> ok after 5000 -> timeout end.")
                self.assertEqual(r, Atom("ok"))
                taken = self.lib(module).register(b"pyproc_events" if module != "pyproc" else b"cppproc_events")
                self.assertEqual(taken[0], b"ErlangError")
                self.assertIn(b"registered by module", taken[1])

    def test_funs_and_bit_strings_cross_the_link_both_ways_in_every_library(self):
        values = "[fun lists:reverse/1, fun(X) -> X + 1 end, <<1:3>>, <<255, 7:4>>, {fun erlang:node/0, [<<0:1>>]}]"
        peer = f'<<"{self.erl.name}">>'
        for module in self.libraries:
            with self.subTest(library=module):
                # rpc:call into the handler and back: the same terms, byte for byte.
                r = self.ev(f"Vs = {values}, [begin R = rpc:call('{self.cnode}', {module}, echo, [V], 5000), "
                            "term_to_binary(R) =:= term_to_binary(V) orelse R end || V <- Vs].")
                self.assertEqual(r, [Atom("true")] * 5)
                # The handler's erlang_rpc: a fun in the answer, funs and bit strings in the arguments.
                r = self.ev(f"rpc:call('{self.cnode}', {module}, rpc, [{peer}, <<\"erlang\">>, <<\"make_fun\">>, "
                            "[lists, reverse, 1], 5000], 5000) =:= fun lists:reverse/1.")
                self.assertEqual(r, Atom("true"))
                r = self.ev(f"rpc:call('{self.cnode}', {module}, rpc, [{peer}, <<\"erlang\">>, <<\"bit_size\">>, "
                            "[<<1:3>>], 5000], 5000).")
                self.assertEqual(r, 3)
                r = self.ev(f"rpc:call('{self.cnode}', {module}, rpc, [{peer}, <<\"erlang\">>, <<\"apply\">>, "
                            "[fun(X) -> X * 2 end, [21]], 5000], 5000).")
                self.assertEqual(r, 42)

    def test_every_library_holds_a_node_connection_and_its_rpc_times_out(self):
        node = self.erl.name.encode()
        for module in self.libraries:
            with self.subTest(library=module):
                self.assertEqual(self.lib(module).connect_and_call(node, 3), [Atom(self.erl.name)] * 3)
                start = time.monotonic()
                r = self.lib(module).rpc(node, b"timer", b"sleep", [3000], 300)
                self.assertEqual(r[0], b"ErlangError")
                self.assertLess(time.monotonic() - start, 2)


class RegisteredProcesses(ErlangNodeCase):
    def test_a_registered_process_runs_for_each_message_from_erlang(self):
        r = self.ev(f"{{pyproc_events, '{self.cnode}'}} ! {{self(), hello}}, "
                    "receive {got, hello, OsPid} -> OsPid after 5000 -> timeout end.")
        self.assertEqual(r, self.svc().call.pyproc.ospid())

    def test_a_name_registered_later_from_a_worker_works_at_once(self):
        name = self.fresh("late")
        self.assertIs(self.svc().call.pyproc.register(name.encode()), True)
        r = self.ev(f"{{{name}, '{self.cnode}'}} ! {{self(), later}}, "
                    "receive {got, later, _} -> ok after 5000 -> timeout end.")
        self.assertEqual(r, Atom("ok"))

    def test_a_name_another_module_holds_is_an_error(self):
        r = self.svc().call.other_proc.register(b"pyproc_events")
        self.assertEqual(r[0], b"ErlangError")
        self.assertIn(b"registered by module 'pyproc'", r[1])
        r = self.svc().call.pyproc.register(b"events")
        self.assertIn(b"erlang.registered", r[1])
        r = self.svc().call.pyproc.register(b"rex")
        self.assertIn(b"bertd's own", r[1])

    def test_a_failing_registered_process_is_logged_and_counted_and_the_next_message_runs(self):
        before = stats(self.server).get("errors.user.pyproc", 0)
        self.ev(f"{{pyproc_events, '{self.cnode}'}} ! not_a_pair.")
        wait_until(lambda: "a message from" in self.server.log() and "failed: {pyproc_events" in self.server.log(),
                   what="the log line")
        self.assertGreater(stats(self.server)["errors.user.pyproc"], before)
        r = self.ev(f"{{pyproc_events, '{self.cnode}'}} ! {{self(), next_one}}, "
                    "receive {got, next_one, _} -> ok after 5000 -> timeout end.")
        self.assertEqual(r, Atom("ok"))

    def test_a_names_messages_run_one_at_a_time_in_order_on_a_module_of_three_workers(self):
        box = self.collector()
        self.ev(f"B = whereis({box}), [{{busy_events, '{self.cnode}'}} ! {{B, I}} || I <- lists:seq(1, 200)], ok.")
        got = take(self.erl, box, 200, timeout=20)
        self.assertEqual([g[1] for g in got], list(range(1, 201)))

    def test_configured_registered_names_keep_working(self):
        tag = self.fresh("cfg")
        self.ev(f"{{events, '{self.cnode}'}} ! {tag}.")
        wait_until(lambda: Atom(tag) in self.svc().call.ext.order(), what="the configured name's cast")


class Counted(ErlangNodeCase):
    def metrics(self):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {k: int(float(line.rsplit(" ", 1)[1])) for k in ("rpc", "name", "pid")
                for line in text.splitlines() if line.startswith(f'bertd_erlang_messages_total{{to="{k}"}} ')}

    def test_messages_and_calls_from_erlang_are_counted_by_kind_in_stats_and_metrics(self):
        keys = {k: f"erlang.messages.{k}" for k in ("rpc", "name", "pid")}
        before = {k: stats(self.server)[v] for k, v in keys.items()}
        self.assertEqual(self.metrics(), before)
        # 3 calls into bertd (erpc's spawn request, rex's gen_server:call, a plain rex message) ...
        self.assertEqual(self.ev(f"rpc:call('{self.cnode}', ext, add, [1, 1])."), 2)
        self.assertEqual(self.ev(f"gen_server:call({{rex, '{self.cnode}'}}, {{call, ext, add, [1, 2], user}})."), 3)
        self.assertEqual(self.ev(f"{{rex, '{self.cnode}'}} ! {{self(), {{call, ext, add, [2, 2], user}}}}, "
                                 "receive {rex, R} -> R after 5000 -> timeout end."), 4)
        # ... 5 messages to names (one nobody registered: counted, and dropped) and 7 to a worker's pid.
        tags = [self.fresh("counted") for _ in range(4)]
        self.ev("".join(f"{{events, '{self.cnode}'}} ! {t}, " for t in tags) + "ok.")
        self.ev(f"{{{self.fresh('nobody')}, '{self.cnode}'}} ! hello.")
        pid = self.svc().call.pyproc.me()
        self.ev(f"P = {erl_term(pid)}, [P ! {{n, I}} || I <- lists:seq(1, 7)], ok.")
        self.assertEqual(len(self.svc().call.pyproc.recv_all(7, 5000)), 7)
        want = {"rpc": before["rpc"] + 3, "name": before["name"] + 5, "pid": before["pid"] + 7}
        wait_until(lambda: set(map(Atom, tags)) <= set(self.svc().call.ext.order()), what="the named messages")
        self.assertEqual({k: stats(self.server)[v] for k, v in keys.items()}, want)
        # A scrape may see an exposition up to 0.1 s old (one rendering serves a flood of scrapes).
        wait_until(lambda: self.metrics() == want, timeout=2, what=f"/metrics to show {want}")


class NothingSilent(ErlangNodeCase):
    def test_a_message_to_a_name_nobody_registered_is_logged_and_counted(self):
        before = stats(self.server)["erlang.dropped.unregistered"]
        name = self.fresh("nobody")
        self.ev(f"{{{name}, '{self.cnode}'}} ! hello.")
        wait_until(lambda: f"'{name}', a name nobody registered" in self.server.log(), what="the log line")
        self.assertGreater(stats(self.server)["erlang.dropped.unregistered"], before)

    def test_messages_to_a_dead_workers_pid_are_dropped_not_given_to_its_successor(self):
        old = self.svc().call.pyproc.me()
        with self.assertRaises(bertd.ServerError):
            self.svc().call.pyproc.die()
        self.server.wait_for_workers()
        new = self.svc().call.pyproc.me()
        self.assertNotEqual(new, old)
        before = stats(self.server)["erlang.dropped.dead_pid"]
        self.ev(f"{erl_term(old)} ! for_the_dead, {erl_term(new)} ! for_the_living, ok.")
        self.assertEqual(self.svc().call.pyproc.recv(3000), Atom("for_the_living"))
        self.assertEqual(self.svc().call.pyproc.recv(200), Atom("timeout"))
        wait_until(lambda: re.search(r"dropped a message from \S+ to <[^>]+> \(a worker of 'pyproc' \(slot \d+, "
                                     r"os pid \d+\) that has gone\)", self.server.log()), what="the log line")
        self.assertGreater(stats(self.server)["erlang.dropped.dead_pid"], before)

    def test_a_message_that_cannot_be_decoded_is_logged_and_counted(self):
        before = stats(self.server)["erlang.dropped.undecodable"]
        pid = self.svc().call.pyproc.me()
        deep = "lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 5000))"
        self.ev(f"{erl_term(pid)} ! {deep}, {{pyproc_events, '{self.cnode}'}} ! {deep}, ok.")
        wait_until(lambda: stats(self.server)["erlang.dropped.undecodable"] >= before + 2, what="two drops")
        self.assertIn("that cannot be decoded", self.server.log())
        self.assertEqual(self.svc().call.pyproc.recv(100), Atom("timeout"))

    def test_drop_log_lines_are_rate_limited_but_every_drop_is_counted(self):
        before = stats(self.server)["erlang.dropped.unregistered"]
        lines_before = self.server.log().count("a name nobody registered")
        self.ev(f"[{{flood_nobody, '{self.cnode}'}} ! I || I <- lists:seq(1, 500)], ok.")
        wait_until(lambda: stats(self.server)["erlang.dropped.unregistered"] >= before + 500, what="500 drops")
        # A few lines a second, not five hundred.
        self.assertLessEqual(self.server.log().count("a name nobody registered") - lines_before, 12)


class NeverBlocks(ErlangNodeCase):
    extra = "max_queue: 1000"

    def call_times(self, n=5):
        """How long n mixed calls take: a client's call, rpc:call from Erlang, a configured name's cast."""
        times = []
        for _ in range(n):
            t = time.monotonic()
            self.assertEqual(self.svc().call.ext.add(1, 1), 2)
            self.assertEqual(self.ev(f"rpc:call('{self.cnode}', other, add, [2, 2], 5000)."), 4)
            times.append(time.monotonic() - t)
        return times

    def test_a_worker_waiting_for_a_message_blocks_nothing_else(self):
        waiting = self.svc().call.pyproc.me()
        result = []
        waiter = threading.Thread(target=lambda: result.append(self.svc().call.pyproc.recv(10000)))
        waiter.start()
        time.sleep(0.2)
        self.assertLess(max(self.call_times()), 1.0)
        tag = self.fresh("meanwhile")
        self.ev(f"{{events, '{self.cnode}'}} ! {tag}.")
        wait_until(lambda: Atom(tag) in self.svc().call.ext.order(), what="a message meanwhile")
        # Another module's worker wakes the waiting one.
        self.assertIs(self.svc().call.other_proc.send(waiting, b"wake up"), True)
        waiter.join(10)
        self.assertEqual(result, [b"wake up"])

    def test_a_slow_registered_process_and_a_flood_to_it_leave_other_calls_served(self):
        self.assertIs(self.svc().call.pyproc.slow_events(200), True)
        box = self.collector()
        self.ev(f"B = whereis({box}), [{{pyproc_events, '{self.cnode}'}} ! {{B, I}} || I <- lists:seq(1, 10000)], ok.",
                timeout=30)
        try:
            self.assertLess(max(self.call_times()), 1.0)
            tag = self.fresh("flooded")
            self.ev(f"{{events, '{self.cnode}'}} ! {tag}.")
            wait_until(lambda: Atom(tag) in self.svc().call.ext.order(), what="another name's message")
            # The name's queue holds max_queue (1000); the rest was dropped and counted.
            wait_until(lambda: stats(self.server)["erlang.dropped.queue_full"] >= 8900, timeout=10,
                       what="the flood's drops counted")
            self.assertLessEqual(stats(self.server)["erlang.dropped.queue_full"], 10000 - 1000)
            self.assertIn("erlang.max_queue", self.server.log())
        finally:
            self.svc().call.pyproc.slow_events(0)
        # What was queued is served, in order, by the registered process.
        got = take(self.erl, box, 50)
        self.assertEqual([g[1] for g in got[:50]], list(range(1, 51)))

    def test_a_workers_mailbox_is_bounded_and_overflow_is_counted(self):
        pid = self.svc().call.other_proc.me()
        before = stats(self.server)["erlang.dropped.queue_full"]
        self.ev(f"P = {erl_term(pid)}, [P ! {{m, I}} || I <- lists:seq(1, 1500)], ok.")
        wait_until(lambda: stats(self.server)["erlang.dropped.queue_full"] >= before + 500, what="500 drops")
        first = self.svc().call.other_proc.recv_all(3, 2000)
        self.assertEqual(first, [(Atom("m"), 1), (Atom("m"), 2), (Atom("m"), 3)])


if __name__ == "__main__":
    unittest.main()
