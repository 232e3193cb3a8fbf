"""test_faults.py: faults under load. A loadgen keeps bertd busy (mixed modules and priorities,
loopback, bounded in time) while a handler worker or an acceptor is killed with SIGKILL, the
server is reloaded, or a handler hangs, writes garbage or exits. Only the requests the failed
process held may fail, each with an answer or a closed connection (never a hang: loadgen fails
a request after 3 s without an answer), everything else succeeds, and the process is back
within a second, measured from the fault.

The Erlang side gets the same treatment: the link process (bertd-link) and the companion VM are
killed under a load mixing native and external calls. Only the native calls in flight in the killed
process fail; calls that arrive while it is restarted wait for it and are served.
"""
import os
import signal
import sys
import textwrap
import threading
import time
import unittest

import harness
from erlnode import compile_erlang, test_cookie, unique_name
from harness import ROOT, Server, py_handler, run_bertd, wait_until
from loadrun import (ECHO, Load, acceptors, companion_vm_pid, failures, fd_count, kill9, link_pid, time_until,
                     workers, zombies)

import bertd

PYEXT = "pyext.py"
BACK_WITHIN = 1.0  # seconds from the fault until the replacement process exists


def config(echo_count=2, ext_count=2, ext_extra=""):
    return textwrap.dedent(f"""\
        listen: 127.0.0.1
        acceptors: 2
        modules:
          - name: echo
            command: {ECHO}
            count: {echo_count}
          - name: ext
            command: {py_handler()}
            count: {ext_count}
            {ext_extra}
        """)


class FaultTest(unittest.TestCase):
    def server(self, text):
        s = Server(text)
        self.addCleanup(s.stop)
        return s.start()

    def assert_failed_only_within(self, result, kinds, t_fault, most, detail=None):
        """Every failure of a run is of `kinds`, at most `most` of them, each within a second of
        the fault (loadgen's failure times are CLOCK_MONOTONIC, as time.monotonic())."""
        f = failures(result)
        self.assertLessEqual(set(f), set(kinds), result["failure_log"])
        self.assertLessEqual(sum(f.values()), most, result["failure_log"])
        self.assertEqual(len(result["failure_log"]), sum(f.values()))
        for e in result["failure_log"]:
            self.assertGreaterEqual(e["t"], t_fault, e)
            self.assertLessEqual(e["t"], t_fault + BACK_WITHIN, e)
            if detail:
                self.assertIn(detail, e["detail"])

    def assert_served_throughout(self, result):
        self.assertGreater(min(result["series"]), 0, f"a stretch with no answers: {result['series']}")
        self.assertLess(result["oldest_in_flight_ms"], 3000, "a request hung")

    def assert_no_zombies(self, s):
        wait_until(lambda: not zombies(s.proc.pid), timeout=2, what="no zombie processes")


class WorkerKilled(FaultTest):
    def test_killed_handler_worker_fails_only_its_request_and_is_back_within_a_second(self):
        s = self.server(config())
        load = Load(self, s.port, 3.0, connections=16, targets=("echo:echo", "echo:echo:low", "ext:echo"),
                    timeout=3, series=0.5)
        time.sleep(1.0)
        before = workers(s, ECHO)
        self.assertEqual(len(before), 2)
        victim = before[0]
        t_kill = kill9(victim)
        back = time_until(lambda: len(w := workers(s, ECHO)) == 2 and victim not in w, t_kill, 5)
        r = load.result()
        self.assertLess(back, BACK_WITHIN)
        print(f"\n    worker back {back * 1000:.0f} ms after kill -9; {failures(r)} of {r['requests']}", end=" ")
        # A worker holds one request at a time: that one may fail, with a server error.
        self.assert_failed_only_within(r, {"server"}, t_kill, 1, detail="exited while serving")
        self.assert_served_throughout(r)
        self.assertTrue(all(t["answered"] > 0 for t in r["targets"]), r["targets"])
        self.assertEqual(s.stats()["workers.restarts.echo"], "1")
        self.assert_no_zombies(s)


class AcceptorKilled(FaultTest):
    def test_killed_acceptor_fails_only_its_connections_and_is_back_within_a_second(self):
        s = self.server(config())
        persistent = Load(self, s.port, 3.0, connections=12, targets=("echo:echo", "echo:echo:low", "ext:echo"),
                          timeout=3, series=0.5)
        connect = Load(self, s.port, 3.0, connections=4, targets=("echo:echo", "ext:echo:low"), mode="connect",
                       timeout=3, series=0.5)
        time.sleep(1.0)
        before = acceptors(s)
        self.assertEqual(len(before), 2)
        victim = max(before, key=fd_count)  # the one holding more connections
        t_kill = kill9(victim)
        back = time_until(lambda: len(a := acceptors(s)) == 2 and victim not in a, t_kill, 5)
        results = [persistent.result(), connect.result()]
        self.assertGreater(sum(sum(failures(r).values()) for r in results), 0, "the victim held no request")
        self.assertLess(back, BACK_WITHIN)
        print(f"\n    acceptor back {back * 1000:.0f} ms after kill -9; "
              f"{[(failures(r), r['requests']) for r in results]}", end=" ")
        for r in results:
            # The dead acceptor's connections are closed under their requests (nobody is left to
            # answer them); each loadgen connection has one request in flight, so at most one each.
            self.assert_failed_only_within(r, {"closed", "reset"}, t_kill, r["connections"])
            self.assert_served_throughout(r)
        self.assertEqual(s.stats()["acceptors.restarts"], "1")
        self.assert_no_zombies(s)


class Reloads(FaultTest):
    # A connection busy in generation 1 through two quick reloads: by the time its request ends,
    # generation 2 has drained and gone. It is handed to generation 3, the newest; handed to 2,
    # it would die unread with that process and the client's next request would meet a reset.
    def test_a_connection_busy_through_two_quick_reloads_goes_to_the_newest_generation(self):
        s = self.server(config(ext_count=1))
        svc = bertd.Service("127.0.0.1", s.port, timeout=10, persistent=True)
        self.addCleanup(svc.close)
        self.assertEqual(svc.call.ext.slow(1), 1)  # the connection exists, in generation 1
        got = []
        t = threading.Thread(target=lambda: got.append(svc.call.ext.slow(1500)))
        t.start()
        time.sleep(0.3)
        for generation in ("2", "3"):
            os.kill(s.proc.pid, signal.SIGHUP)
            wait_until(lambda: s.stats()["generation"] == generation, what=f"generation {generation}")
        wait_until(lambda: "generation 2 finished" in s.log(), timeout=5, what="generation 2 to have gone")
        t.join(10)
        self.assertEqual(got, [1500])
        # Generation 1 had nothing left once it passed the connection on: it is gone, not
        # retrying a generation that no longer reads until its drain deadline kills it.
        wait_until(lambda: "generation 1 finished" in s.log(), timeout=5, what="generation 1 to have gone")
        for i in range(3):  # the same connection, now in generation 3
            self.assertEqual(svc.call.ext.slow(i), i)
        self.assertNotIn("cannot reach generation", s.log())

    def test_five_reloads_and_a_reload_handlers_under_load_fail_nothing(self):
        s = self.server(config())
        persistent = Load(self, s.port, 4.5, connections=8,
                          targets=("echo:echo", "echo:echo:low", "ext:echo", "ext:echo:low"), timeout=3, series=0.5)
        connect = Load(self, s.port, 4.5, connections=4, targets=("echo:echo", "ext:echo:low"), mode="connect",
                       timeout=3, series=0.5)
        time.sleep(0.5)
        for i in range(5):
            with open(s.config_path, "w") as f:
                f.write(config(echo_count=2 + i % 2, ext_count=1 + i % 2))
            os.kill(s.proc.pid, signal.SIGHUP)
            time.sleep(0.4)
        wait_until(lambda: s.stats()["generation"] == "6", what="the fifth reload to take effect")
        code, out, err = run_bertd(["reload-handlers", "-p", str(s.port)])
        self.assertEqual(code, 0, err)
        results = [persistent.result(), connect.result()]
        for r in results:
            self.assertEqual(failures(r), {}, r["failure_log"])
            self.assertTrue(all(t["answered"] > 0 for t in r["targets"]), r["targets"])
            self.assert_served_throughout(r)
        st = s.stats()
        self.assertEqual(st["workers.total.echo"], "2")  # the last config: 2 + 4 % 2
        self.assertNotIn("reload refused", s.log())
        self.assert_no_zombies(s)


class ErlangKilled(FaultTest):
    """A server with a native module on its companion VM beside an external one."""

    TARGETS = ("nat:echo", "echo:echo", "nat:echo:low")  # connection i sends target i mod 3
    NATIVE_CONNECTIONS = 8  # of 12

    def native_server(self):
        ebin = compile_erlang([os.path.join(ROOT, "tests", "erlang", "nat.erl")])
        s = Server(textwrap.dedent(f"""\
            listen: 127.0.0.1
            acceptors: 2
            modules:
              - name: echo
                command: {ECHO}
                count: 2
              - name: nat
                type: native
                codepaths: [{ebin}]
                timeout: 6s
            """), args=["--name", unique_name("flt"), "--cookie", test_cookie()])
        self.addCleanup(s.stop)
        s.start(timeout=20)
        wait_until(lambda: self.native_answers(s), timeout=20, interval=0.1, what="the companion VM")
        return s

    @staticmethod
    def native_answers(s):
        try:
            return s.service(timeout=5).call.nat.add(1, 2) == 3
        except Exception:
            return False

    def kill_and_time_return(self, find):
        """kill -9 of the process find() names; returns the kill's time and the seconds until
        find() names another."""
        victim = find()
        self.assertIsNotNone(victim)
        t_kill = kill9(victim)
        return t_kill, time_until(lambda: find() not in (None, victim), t_kill, 5)

    def test_killed_erlang_link_fails_only_its_calls_and_is_back_within_a_second(self):
        s = self.native_server()
        load = Load(self, s.port, 3.0, connections=12, targets=self.TARGETS, timeout=3, series=0.5)
        time.sleep(1.0)
        t_kill, back = self.kill_and_time_return(lambda: link_pid(s))
        r = load.result()
        self.assertLess(back, BACK_WITHIN)
        print(f"\n    link back {back * 1000:.0f} ms after kill -9; {failures(r)} of {r['requests']}", end=" ")
        # The calls the link held are answered with an error; those that arrive while it is down
        # wait for the new one (never "not running").
        self.assert_failed_only_within(r, {"server"}, t_kill, self.NATIVE_CONNECTIONS,
                                       detail="lost the connection to the Erlang link")
        self.assert_served_throughout(r)
        self.assertTrue(all(t["answered"] > 0 for t in r["targets"]), r["targets"])
        self.assertIn("the Erlang link killed by signal", s.log())
        self.assertTrue(self.native_answers(s))
        self.assert_no_zombies(s)

    def test_killed_companion_vm_fails_only_its_calls_and_waiting_calls_are_served_when_it_is_back(self):
        s = self.native_server()
        load = Load(self, s.port, 6.0, connections=12, targets=self.TARGETS, timeout=8, series=0.5)
        time.sleep(1.0)
        t_kill, back = self.kill_and_time_return(lambda: companion_vm_pid(s))
        serving = time_until(lambda: self.native_answers(s), t_kill, 15, interval=0.05)
        r = load.result()
        self.assertLess(back, BACK_WITHIN)
        print(f"\n    VM process back {back * 1000:.0f} ms and serving {serving * 1000:.0f} ms after kill -9; "
              f"{failures(r)} of {r['requests']}, longest wait {r['max_us'] / 1e3:.0f} ms", end=" ")
        # Only the calls in flight on the VM fail; the ones that arrive while it boots wait for it.
        self.assert_failed_only_within(r, {"server"}, t_kill, self.NATIVE_CONNECTIONS,
                                       detail="went away during the call")
        # The external module is served throughout; native calls wait the VM's boot out, no more.
        self.assertGreater(min(r["series"]), 0, f"a stretch with no answers: {r['series']}")
        self.assertLess(r["max_us"] / 1e6, serving + 1.0)
        self.assertLess(r["oldest_in_flight_ms"], 3000, "a request hung")
        self.assertTrue(all(t["answered"] > 0 for t in r["targets"]), r["targets"])
        self.assertIn("the companion Erlang VM killed by signal", s.log())
        self.assert_no_zombies(s)


class MisbehavingHandlers(FaultTest):
    def test_hanging_handler_is_timed_out_and_replaced_while_others_are_served(self):
        # 2 s, not less: the other ext worker (Python) must answer the load within the timeout
        # even when the machine is busy with other work.
        s = self.server(config(ext_extra="timeout: 2s"))
        load = Load(self, s.port, 4.0, connections=8, targets=("echo:echo", "echo:echo:low", "ext:echo"),
                    timeout=6, series=0.5)
        time.sleep(0.5)
        before = workers(s, PYEXT)
        t_sent = time.monotonic()
        with self.assertRaises(bertd.ServerError) as cm:
            s.service().call.ext.slow(20000)
        t_answer = time.monotonic()
        self.assertIn("'ext' did not answer within 2 s (timeout)", str(cm.exception.message))
        self.assertGreaterEqual(t_answer - t_sent, 1.95)
        self.assertLess(t_answer - t_sent, 4)
        back = time_until(lambda: len(w := workers(s, PYEXT)) == 2 and set(w) != set(before), t_answer, 5)
        self.assertLess(back, BACK_WITHIN)
        print(f"\n    timeout answered after {(t_answer - t_sent) * 1000:.0f} ms, worker back {back * 1000:.0f} ms "
              "later", end=" ")
        r = load.result()
        self.assertEqual(failures(r), {}, r["failure_log"])
        self.assert_served_throughout(r)
        self.assert_no_zombies(s)

    def test_handler_that_writes_garbage_or_exits_answers_an_error_and_is_replaced(self):
        s = self.server(config())
        load = Load(self, s.port, 3.0, connections=8, targets=("echo:echo", "echo:echo:low", "ext:echo"),
                    timeout=3, series=0.5)
        time.sleep(0.5)
        for function, text in (("garbage", "not a BERT term"), ("die", "exited while serving")):
            before = workers(s, PYEXT)
            t_sent = time.monotonic()
            with self.assertRaises(bertd.ServerError) as cm:
                getattr(s.service().call.ext, function)()
            self.assertIn(text, str(cm.exception.message))
            back = time_until(lambda: len(w := workers(s, PYEXT)) == 2 and set(w) != set(before), t_sent, 5)
            self.assertLess(back, BACK_WITHIN, function)
            print(f"\n    {function}: worker back {back * 1000:.0f} ms after the request", end=" ")
        r = load.result()
        self.assertEqual(failures(r), {}, r["failure_log"])
        self.assert_served_throughout(r)
        self.assertEqual(s.stats()["workers.restarts.ext"], "2")
        self.assert_no_zombies(s)


if __name__ == "__main__":
    unittest.main()
