"""test_erlang.py: native modules and the Erlang C-node side, against real Erlang VMs: bertd's companion
VM and test nodes started here (erlnode.py). Native calls, shadowing and predicates, errors, the atom
safety of client arguments, calls that never block each other, a native node that goes away and comes
back, rpc:call and messages from Erlang nodes into bertd, handlers calling Erlang in Python, Ruby and
C++, and two servers sharing a globally registered process. Every VM and server is stopped in cleanups.
"""
import os
import signal
import threading
import time
import unittest

from erlnode import ErlNode, compile_erlang, test_cookie, unique_name
from harness import BUILD, HANDLERS, ROOT, Server, py_handler, wait_until

import bertd
from bertd import Atom

ERL_SRC = os.path.join(ROOT, "tests", "erlang")
RUBY_LIB = os.path.join(ROOT, "modules", "ruby", "lib")
# A process registered as {name} that keeps the first message it gets until asked for it.
MAILBOX = "register({name}, spawn(fun() -> receive M -> receive {{get, P}} -> P ! M end end end)), ok."
MAILBOX_GET = "{name} ! {{get, self()}}, receive M -> M after 3000 -> timeout end."


def compiled(*names, subdir=""):
    return compile_erlang([os.path.join(ERL_SRC, subdir, n + ".erl") for n in names])


def wait_native(server, call, timeout=20):
    """Waits until the native node answers `call` (a function of a Service)."""
    svc = server.service(timeout=5)

    def ready():
        try:
            return call(svc) is not None
        except (bertd.ServerError, bertd.ReadTimeout):
            # A loaded machine may start the VM slower than one call's timeout: ask again.
            return False

    wait_until(ready, timeout=timeout, interval=0.1, what="the native node to be ready")


def start(test_case, server):
    test_case.addCleanup(server.stop)
    try:
        server.start(timeout=20)
    except Exception:
        server.stop()
        raise
    return server


class NativeModules(unittest.TestCase):
    """One server with a companion VM (native nat, solo and grow; external nat, grow, ext, pyerl, ...)."""

    @classmethod
    def setUpClass(cls):
        cls.cookie = test_cookie()
        cls.ebin = compiled("nat", "solo", "shared")
        cls.grow_dir = compiled("grow", subdir="grow1")
        cls.name = unique_name("nat")
        alive, host = cls.name.split("@")
        cls.cnode = f"{alive}_bertd@{host}"
        cls.server = Server(f"""
            acceptors: 2
            access_log: access.log
            modules:
              - name: nat
                type: native
                codepaths: [{cls.ebin}]
              - name: solo
                type: native
                codepaths: [{cls.ebin}]
              - name: grow
                type: native
                codepaths: [{cls.grow_dir}]
              - name: nat
                type: external
                command: {py_handler("pynat.py")}
              - name: grow
                type: external
                command: {py_handler("pynat.py")}
              - name: pyerl
                command: {py_handler("pynat.py")}
              - name: ext
                command: {py_handler()}
              - name: other
                command: {py_handler()}
                count: 4
              - name: rberl
                command: ruby -I {RUBY_LIB} {os.path.join(HANDLERS, "rberl.rb")}
              - name: cpperl
                command: {os.path.join(BUILD, "tests", "handlers", "cpp_erlang")}
            erlang:
              registered:
                - name: events
                  module: ext
                  function: record
            """, args=["--name", cls.name, "--cookie", cls.cookie])
        try:
            cls.server.start(timeout=20)
            wait_native(cls.server, lambda s: s.call.nat.add(1, 2))
            cls.erl = ErlNode(unique_name("t"), cls.cookie, [cls.ebin]).start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "erl", None):
            cls.erl.stop()
        cls.server.stop()

    def svc(self):
        return self.server.service(timeout=10)

    @property
    def erl_node(self):
        return self.erl.name.encode()

    def erl_eval(self, expr):
        return self.erl.eval(expr)

    # -- native calls --------------------------------------------------------------------------------------
    def test_native_call_runs_on_the_companion_node_named_by_name(self):
        self.assertEqual(self.svc().call.nat.add(1, 2), 3)
        # --name keeps Ernie's meaning: the native code runs on the node of that name.
        self.assertEqual(self.svc().call.nat.whoami(), Atom(self.name))
        self.assertEqual(self.svc().call.solo.hello(b"bert"), b"hello bert")

    def test_native_function_shadows_the_external_one(self):
        self.assertEqual(self.svc().call.nat.both(1), (Atom("native"), 1))

    def test_function_not_exported_natively_goes_to_the_external_module(self):
        self.assertEqual(self.svc().call.nat.only_ext(4), 8)

    def test_predicate_true_means_native(self):
        self.assertEqual(self.svc().call.nat.pick(50), (Atom("native"), 50))

    def test_predicate_false_means_external(self):
        self.assertEqual(self.svc().call.nat.pick(5), [b"external", 5])

    def test_undefined_function_of_a_native_only_module_is_no_such_function(self):
        with self.assertRaises(bertd.ServerError) as cm:
            self.svc().call.solo.nope(1)
        self.assertEqual(cm.exception.code, 2)
        self.assertEqual(cm.exception.message, "No such function 'solo:nope'")
        # Wrong arity is the same: Function/Arity is what must be exported.
        with self.assertRaises(bertd.ServerError) as cm:
            self.svc().call.solo.hello(1, 2)
        self.assertEqual(cm.exception.message, "No such function 'solo:hello'")

    def test_erlang_exception_is_a_user_error_with_class_reason_and_trace(self):
        with self.assertRaises(bertd.UserError) as cm:
            self.svc().call.nat.boom(7)
        e = cm.exception
        self.assertEqual(e.klass, "error")
        self.assertEqual(e.message, "{boom,7}")
        self.assertTrue(e.backtrace and e.backtrace[0].startswith("nat:boom/1"), e.backtrace)
        self.assertFalse(any("bertd_native" in f for f in e.backtrace), e.backtrace)

    def test_native_casts_never_block_a_following_call(self):
        svc = self.svc()
        start = time.monotonic()
        for _ in range(3):
            self.assertIsNone(svc.cast.nat.slow(1000))
        self.assertEqual(svc.call.nat.add(2, 2), 4)
        # Blocking would take a second at least; a loaded test machine gets some slack.
        self.assertLess(time.monotonic() - start, 0.75)

    def test_a_native_cast_runs(self):
        key = f"k{time.monotonic_ns()}".encode()
        self.svc().cast.nat.note(key, 42)
        wait_until(lambda: self.svc().call.nat.notes(key) == [42], timeout=5, what="the cast to run")

    def test_many_native_calls_are_in_flight_at_once(self):
        results, errors = [], []

        def one():
            try:
                results.append(self.svc().call.nat.slow(600))
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(8)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(results, [600] * 8)
        self.assertLess(time.monotonic() - start, 2.5)  # one after the other would take 4.8 s

    def test_client_arguments_create_no_atoms_on_the_node(self):
        fresh = f"bertd_fresh_atom_{os.getpid()}_{time.monotonic_ns()}"
        with self.assertRaises(bertd.ServerError) as cm:
            self.svc().call.nat.echo([Atom(fresh)])
        self.assertIn("atom unknown to node", cm.exception.message)
        self.assertEqual(self.svc().call.nat.atom_exists(fresh.encode()), Atom("false"))
        # Atoms the node knows are fine.
        self.assertEqual(self.svc().call.nat.echo([Atom("ok")]), [Atom("ok")])

    def test_native_requests_are_logged_as_nat_and_counted(self):
        self.svc().call.nat.add(40, 2)
        self.svc().call.nat.only_ext(1)
        log = os.path.join(self.server.dir, "access.log")

        def lines():
            with open(log) as f:
                return f.read()

        wait_until(lambda: "{call,nat,only_ext,[1]}" in lines(), what="the access log")
        text = lines()
        self.assertRegex(text, r"ACC \[[^]]+\] \S+ \S+ - \d+ \d+ nat high - \{call,nat,add,\[40,2\]\}")
        self.assertRegex(text, r"ACC \[[^]]+\] \S+ \S+ - \d+ \d+ ext high - \{call,nat,only_ext,\[1\]\}")
        self.assertGreater(int(self.server.stats()["native.requests.nat"]), 0)

    def test_export_lists_are_refreshed_on_reload(self):
        svc = self.svc()
        self.assertEqual(svc.call.grow.a(), Atom("native_a"))
        self.assertEqual(svc.call.grow.b(), b"external_b")  # not exported natively (yet)
        # A new version of grow, loaded on the companion node behind bertd's back ...
        v2 = compiled("grow", subdir="grow2")
        beam = os.path.join(v2, "grow.beam")
        self.erl_eval(f"{{ok, B}} = file:read_file(\"{beam}\"), "
                      f"{{module, grow}} = rpc:call('{self.name}', code, load_binary, "
                      f"[grow, \"{beam}\", B]).")
        self.assertEqual(svc.call.grow.b(), b"external_b")  # the export list is cached ...
        os.kill(self.server.proc.pid, signal.SIGHUP)  # ... until a reload refreshes it
        wait_until(lambda: self.svc().call.grow.b() == Atom("native_b"), timeout=10,
                   what="the refreshed exports")

    # -- Erlang nodes calling bertd -----------------------------------------------------------------------
    def test_net_adm_ping_answers_pong(self):
        self.assertEqual(self.erl_eval(f"net_adm:ping('{self.cnode}')."), Atom("pong"))

    def test_rpc_call_from_an_erlang_node_runs_the_external_module(self):
        self.assertEqual(self.erl_eval(f"rpc:call('{self.cnode}', ext, add, [1, 2])."), 3)
        self.assertEqual(self.erl_eval(f"erpc:call('{self.cnode}', ext, add, [3, 4])."), 7)
        self.assertEqual(self.erl_eval(f"rpc:block_call('{self.cnode}', ext, add, [5, 6])."), 11)
        # A native-and-external name: from Erlang, bertd's C-node serves the external module.
        self.assertEqual(self.erl_eval(f"rpc:call('{self.cnode}', nat, only_ext, [21])."), 42)

    def test_rpc_errors_come_back_as_badrpc(self):
        r = self.erl_eval(f"rpc:call('{self.cnode}', ext, fail, [<<\"bad\">>]).")
        self.assertEqual(r[0], Atom("badrpc"))
        exit_, (reason, _stack) = r[1]
        self.assertEqual(exit_, Atom("EXIT"))
        self.assertEqual(reason[:4], (Atom("user"), 0, b"RuntimeError", b"bad"))
        r = self.erl_eval(f"rpc:call('{self.cnode}', nomod, f, []).")
        self.assertEqual(r[1][1][0][:4], (Atom("server"), 1, b"ServerError", b"No such module 'nomod'"))

    def test_many_rpc_calls_from_erlang_run_at_once(self):
        start = time.monotonic()
        r = self.erl_eval(f"""Self = self(),
                              [spawn(fun() -> Self ! rpc:call('{self.cnode}', other, slow, [1000]) end)
                               || _ <- lists:seq(1, 4)],
                              [receive X -> X end || _ <- lists:seq(1, 4)].""")
        self.assertEqual(r, [1000] * 4)
        self.assertLess(time.monotonic() - start, 2.5)  # four workers: one after the other would take 4 s

    def test_message_to_a_registered_name_is_a_cast_to_its_handler(self):
        tag = f"event{time.monotonic_ns()}"
        self.erl_eval(f"{{events, '{self.cnode}'}} ! {tag}.")
        wait_until(lambda: Atom(tag) in self.svc().call.ext.order(), timeout=5, what="the message's cast")

    # -- handlers calling Erlang --------------------------------------------------------------------------
    def test_python_handler_calls_erlang(self):
        svc = self.svc()
        self.assertEqual(svc.call.pyerl.rpc(b"", b"nat", b"whoami", []), Atom(self.name))
        self.assertEqual(svc.call.pyerl.rpc(self.erl_node, b"erlang", b"node", []), Atom(self.erl.name))
        self.assertEqual(svc.call.pyerl.rpc(b"", b"nat", b"boom", [1])[0], b"ErlangError")
        self.assertEqual(svc.call.pyerl.rpc(b"nobody@127.0.0.1", b"erlang", b"node", [])[0], b"ErlangError")
        name = f"pybox{time.monotonic_ns()}"
        self.erl_eval(MAILBOX.format(name=name))
        self.assertIs(svc.call.pyerl.send(self.erl.name.encode(), name.encode(), [1, b"two"]), True)
        got = self.erl_eval(MAILBOX_GET.format(name=name))
        self.assertEqual(got, [1, b"two"])

    def test_ruby_handler_calls_erlang(self):
        svc = self.svc()
        self.assertEqual(svc.call.rberl.rpc(b"", b"nat", b"add", [2, 3]), 5)
        self.assertEqual(svc.call.rberl.rpc(self.erl_node, b"erlang", b"node", []), Atom(self.erl.name))
        self.assertEqual(svc.call.rberl.rpc(b"", b"nat", b"boom", [1])[0], b"ErlangError")
        key = f"rb{time.monotonic_ns()}".encode()
        self.assertIs(svc.call.rberl.send(b"", b"nonexistent_name", key), True)  # sends are fire and forget

    def test_cpp_handler_calls_erlang(self):
        svc = self.svc()
        self.assertEqual(svc.call.cpperl.rpc(b"", b"nat", b"add", [20, 22]), 42)
        self.assertEqual(svc.call.cpperl.rpc(self.erl_node, b"erlang", b"node", []), Atom(self.erl.name))
        self.assertEqual(svc.call.cpperl.rpc(b"", b"nat", b"boom", [1])[0], b"ErlangError")
        name = f"cppbox{time.monotonic_ns()}"
        self.erl_eval(MAILBOX.format(name=name))
        self.assertEqual(svc.call.cpperl.send(self.erl.name.encode(), name.encode(), 99), Atom("true"))
        self.assertEqual(self.erl_eval(MAILBOX_GET.format(name=name)), 99)


class NativeNodeDownAndBack(unittest.TestCase):
    """Native modules on an existing node (`node:`), which goes away and comes back."""

    def test_node_down_gives_a_clear_error_at_once_and_calls_work_again_when_it_is_back(self):
        cookie = test_cookie()
        ebin = compiled("nat", "solo")
        app = unique_name("app")
        node = ErlNode(app, cookie, [ebin])  # bertd_native is not on its path: bertd loads it
        self.addCleanup(node.stop)
        node.start()
        server = start(self, Server(f"""
            modules:
              - name: nat
                type: native
                node: {app}
                timeout: 1s
            erlang:
              name: {unique_name("b")}
              cookie: {cookie}
              trust_clients: true
            """))
        wait_native(server, lambda s: s.call.nat.add(1, 2))
        svc = server.service(timeout=10)
        self.assertEqual(svc.call.nat.whoami(), Atom(app))
        # trust_clients: arguments go as terms, atoms and all.
        fresh = f"trusted_atom_{time.monotonic_ns()}"
        self.assertEqual(svc.call.nat.echo(Atom(fresh)), Atom(fresh))
        # The per-call timeout.
        start_t = time.monotonic()
        with self.assertRaises(bertd.ServerError) as cm:
            svc.call.nat.slow(3000)
        self.assertIn("timeout", cm.exception.message)
        self.assertLess(time.monotonic() - start_t, 2.0)

        # A call in flight when the node dies is answered at once, not left hanging.
        errors = []

        def in_flight():
            try:
                server.service(timeout=10).call.nat.slow(900)
            except bertd.ServerError as e:
                errors.append((e, time.monotonic()))

        t = threading.Thread(target=in_flight)
        t.start()
        time.sleep(0.2)
        killed = time.monotonic()
        node.kill()
        t.join(10)
        self.assertEqual(len(errors), 1)
        self.assertIn("went away", errors[0][0].message)
        self.assertLess(errors[0][1] - killed, 0.7)

        start_t = time.monotonic()
        with self.assertRaises(bertd.ServerError) as cm:
            svc.call.nat.add(1, 2)
        self.assertLess(time.monotonic() - start_t, 1.0)
        self.assertIn(app, cm.exception.message)
        self.assertIn("not connected", cm.exception.message)

        node.start()
        wait_native(server, lambda s: s.call.nat.add(1, 2), timeout=10)
        self.assertEqual(svc.call.nat.add(2, 3), 5)

        # The link itself dies: the master starts another, which connects again.
        link = [p for p in server.children() if open(f"/proc/{p}/comm").read().strip() == "bertd-link"]
        self.assertEqual(len(link), 1)
        os.kill(link[0], signal.SIGKILL)
        wait_until(lambda: "the Erlang link killed by signal" in server.log(), what="the master to notice")
        wait_native(server, lambda s: s.call.nat.add(1, 2), timeout=10)
        self.assertEqual(svc.call.nat.whoami(), Atom(app))

    def test_ernie_config_starts_a_companion_vm_that_is_restarted_when_it_dies(self):
        cookie = test_cookie()
        ebin = compiled("solo")
        name = unique_name("cmp")
        # Ernie's own form, unchanged; -E reaches the VM's command line.
        server = start(self, Server(f"""
            [{{module, solo}}, {{type, native}}, {{codepaths, ["{ebin}"]}}].
            """, suffix=".cfg", args=["--name", name, "--cookie", cookie, "-E", "+S 1"]))
        wait_native(server, lambda s: s.call.solo.hello(b"a"))
        probe = ErlNode(unique_name("p"), cookie).start()
        self.addCleanup(probe.stop)
        self.assertEqual(probe.eval(f"rpc:call('{name}', erlang, system_info, [schedulers])."), 1)
        pid_expr = f"list_to_integer(rpc:call('{name}', os, getpid, []))."
        vm = probe.eval(pid_expr)
        os.kill(vm, signal.SIGKILL)
        wait_until(lambda: probe.try_eval(pid_expr) not in (None, vm), timeout=15, what="a new companion VM")
        wait_native(server, lambda s: s.call.solo.hello(b"b"), timeout=15)
        self.assertIn("the companion Erlang VM killed by signal", server.log())


class TwoServersShareState(unittest.TestCase):
    def test_two_servers_whose_nodes_are_connected_share_a_globally_registered_process(self):
        cookie = test_cookie()
        ebin = compiled("shared")
        names = [unique_name("sa"), unique_name("sb")]
        servers = []
        for name in names:
            servers.append(start(self, Server(f"""
                modules:
                  - name: shared
                    type: native
                    codepaths: [{ebin}]
                """, args=["--name", name, "--cookie", cookie])))
        for s in servers:
            wait_native(s, lambda svc: svc.call.shared.home(b"nobody"))
        a, b = (s.service(timeout=10) for s in servers)
        reg = f"counter{time.monotonic_ns()}".encode()
        self.assertEqual(a.call.shared.start(reg), Atom(names[0]))
        # B's native code connects to A's node by the name A was started with.
        self.assertEqual(b.call.shared.connect(names[0].encode()), Atom("true"))
        self.assertEqual(b.call.shared.home(reg), Atom(names[0]))
        self.assertEqual(b.call.shared.put(reg, b"k", 42), Atom("ok"))
        self.assertEqual(a.call.shared.get(reg, b"k"), 42)
        self.assertEqual(b.call.shared.get(reg, b"k"), 42)


if __name__ == "__main__":
    unittest.main()
