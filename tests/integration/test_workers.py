"""test_workers.py: how bertd runs handler workers, against real bertd processes: a module's
`command` runs through /bin/sh -c as Ernie ran it, and a worker that cannot start is reported.

Every test starts its own bertd on a free loopback port and stops it in a cleanup.
"""
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

from harness import HANDLERS, Server, alive, echo_config, free_port, run_bertd, tcp_sockets, wait_until
from loadrun import acceptors
from test_hostile import cpu_seconds

import bertd  # noqa: E402  (harness puts it on the path)

PYEXT = os.path.join(HANDLERS, "pyext.py")


def module_config(command, count=1, extra=""):
    return f"""
        listen: 127.0.0.1
        acceptors: 1
        {extra}
        modules:
          - name: ext
            command: "{command}"
            count: {count}
        """


class WorkerTest(unittest.TestCase):
    def server(self, config, **kw):
        s = Server(config, **kw)
        self.addCleanup(s.stop)
        return s.start()

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="bertd-w-")
        self.addCleanup(shutil.rmtree, d, True)
        return d


class CommandsRunAsErnieRanThem(WorkerTest):
    def test_a_plain_command_is_execed_so_the_workers_pid_is_the_handlers(self):
        s = self.server(module_config(f"{sys.executable} {PYEXT}"))
        self.assertIn(s.service().call.ext.pid(), s.children())

    def test_a_leading_assignment_reaches_the_handlers_environment(self):
        s = self.server(module_config(f"BERTD_TEST_MARK=from-the-command {sys.executable} {PYEXT}"))
        self.assertEqual(s.service().call.ext.getenv("BERTD_TEST_MARK"), b"from-the-command")

    def test_cd_and_then_the_handler_runs_in_that_directory(self):
        d = os.path.realpath(self.tmpdir())
        s = self.server(module_config(f"cd {d} && {sys.executable} {PYEXT}"))
        self.assertEqual(s.service().call.ext.cwd(), d.encode())
        # The shell stays the worker the master started; the handler is its child.
        self.assertIn(s.service().call.ext.ppid(), s.children())

    def test_a_handler_whose_output_goes_through_a_pipe_serves(self):
        s = self.server(module_config(f"{sys.executable} {PYEXT} | cat"))
        self.assertEqual(s.service().call.ext.add(2, 3), 5)

    def test_a_quoted_path_with_a_space_is_one_argument(self):
        d = os.path.join(self.tmpdir(), "dir with space")
        os.mkdir(d)
        shutil.copy(PYEXT, d)
        s = self.server(module_config(f"{sys.executable} '{d}/pyext.py'"))
        self.assertEqual(s.service().call.ext.echo(b"ok"), b"ok")
        self.assertIn(s.service().call.ext.pid(), s.children())

    def test_a_handler_a_shell_started_goes_with_its_shell_when_workers_are_replaced(self):
        d = self.tmpdir()
        s = self.server(module_config(f"cd {d} && {sys.executable} {PYEXT}"))
        handler = s.service().call.ext.pid()
        self.assertNotIn(handler, s.children())  # the shell's child, not the master's
        os.kill(s.proc.pid, signal.SIGUSR2)  # reload-handlers
        wait_until(lambda: s.service().call.ext.pid() != handler, what="a new handler")
        wait_until(lambda: not alive(handler), what=f"the old handler {handler} to be gone")

    def test_what_a_killed_worker_leaves_behind_is_killed_with_it(self):
        d = self.tmpdir()
        s = self.server(module_config(f"cd {d} && {sys.executable} {PYEXT}"))
        handler = s.service().call.ext.pid()
        shell = s.service().call.ext.ppid()
        os.kill(shell, signal.SIGKILL)
        wait_until(lambda: not alive(handler), what=f"the handler {handler} to go with its shell")
        self.assertNotEqual(s.service().call.ext.pid(), handler)


class WorkersThatCannotStart(WorkerTest):
    def test_a_worker_that_exits_at_start_is_reported_with_its_status_and_its_last_lines_on_stderr(self):
        d = self.tmpdir()
        script = os.path.join(d, "broken.sh")
        with open(script, "w") as f:
            f.write("echo loading the app >&2\necho 'ImportError: no module named app' >&2\nexit 3\n")
        s = self.server(module_config(f"sh {script}"), wait_workers=False)
        line = wait_until(lambda: next((l for l in s.log().splitlines() if "within its first second" in l), None),
                          what="the report of the worker's death")
        self.assertIn("for 'ext' exited with status 3 within its first second", line)
        self.assertIn("loading the app | ImportError: no module named app", line)
        # Each line also reached the error log as it was written.
        self.assertRegex(s.log(), r"\[info\] master\[\d+\]: worker \d+ for 'ext': ImportError: no module named app")

    def test_a_module_whose_workers_keep_failing_is_named_failing_in_the_log_and_in_stats(self):
        s = self.server(module_config("/nonexistent/bin/handler --serve"), wait_workers=False)
        wait_until(lambda: "module 'ext' is failing" in s.log(), what="the module to be said failing")
        why = wait_until(lambda: s.stats().get("workers.failing.ext"), what="stats to say why")
        self.assertIn("exit within a second of starting (exited with status 127", why)
        self.assertIn("not found", why)
        self.assertEqual(s.log().count("module 'ext' is failing"), 1)  # once, not at every death

    def test_calls_to_a_failing_module_are_refused_with_the_reason_not_left_waiting(self):
        import threading, time
        import bertd
        s = self.server(module_config("/nonexistent/bin/handler --serve"), wait_workers=False)
        early = {}

        def call_before_it_fails():
            # Sent at once: no worker is up, so it waits in the queue until bertd knows.
            try:
                s.service(timeout=20).call.ext.add(1, 2)
            except bertd.ServerError as e:
                early["error"], early["at"] = str(e), time.monotonic()

        t = threading.Thread(target=call_before_it_fails)
        t.start()
        wait_until(lambda: s.stats().get("workers.failing.ext"), timeout=10, what="the module to be failing")
        failing_at = time.monotonic()
        t.join(15)
        # It reached a worker that died under it, or waited and was refused: either way at
        # once, not at its 20 s timeout.
        self.assertRegex(early.get("error", ""), "has no worker|exited while serving this request")
        self.assertLess(early["at"] - failing_at, 3.0)
        # A call made while it is failing is refused at once, with the same reason.
        with self.assertRaises(bertd.ServerError) as cm:
            s.service(timeout=2).call.ext.add(1, 2)
        self.assertIn("module 'ext' has no worker: its workers exit within a second of starting", str(cm.exception))

    def test_a_module_that_starts_working_again_is_no_longer_failing(self):
        d = self.tmpdir()
        count = os.path.join(d, "tries")
        # The first four tries fail at once, then the real handler starts.
        cmd = (f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; "
               f"if [ $n -lt 4 ]; then echo try $n >&2; exit 1; fi; exec {sys.executable} {PYEXT}")
        s = self.server(f"""
            listen: 127.0.0.1
            acceptors: 1
            modules:
              - name: ext
                command: '{cmd}'
            """, wait_workers=False)
        wait_until(lambda: s.stats().get("workers.failing.ext"), what="the module to be failing")
        wait_until(lambda: "module 'ext' works again" in s.log(), timeout=8, what="the module to work again")
        self.assertNotIn("workers.failing.ext", s.stats())
        self.assertEqual(s.service().call.ext.add(1, 1), 2)

    def test_a_daemon_reports_a_worker_that_cannot_start_in_its_error_log(self):
        d = self.tmpdir()
        error_log = os.path.join(d, "error.log")
        pidfile = os.path.join(d, "bertd.pid")
        cfg = os.path.join(d, "bertd.yaml")
        with open(cfg, "w") as f:
            f.write(f"listen: 127.0.0.1\nacceptors: 1\nerror_log: {error_log}\n"
                    f"modules:\n  - name: ext\n    command: /nonexistent/handler\n")
        port = free_port()
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile])
        self.assertEqual(code, 0, err)
        pid = int(open(pidfile).read())
        self.addCleanup(stop_daemon, pid)

        def report():
            with open(error_log) as f:
                text = f.read()
            return "module 'ext' is failing" in text and text
        text = wait_until(report, what="the error log to say the module is failing")
        self.assertIn("/nonexistent/handler: not found", text)


def stop_daemon(pid):
    try:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not alive(pid), what="the daemon to stop")
    except ProcessLookupError:
        pass
    except AssertionError:
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    unittest.main()


def serving_acceptor(server, conn):
    """The acceptor pid that holds `conn`'s server side (found by its socket's inode)."""
    port = conn.sock.getsockname()[1]

    def holder():
        inode = next((row["inode"] for row in tcp_sockets()
                      if row["local_port"] == server.port and row["remote_port"] == port), None)
        for pid in acceptors(server) if inode else ():
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    pass
        return None  # still in the listen queue

    return wait_until(holder, timeout=5, what=f"an acceptor to take the connection from port {port}")


class SlotsSharedByAcceptors(WorkerTest):
    def test_an_acceptor_whose_idle_slot_another_leased_does_not_wake_for_its_answers(self):
        # One worker, two acceptors. A slot that goes idle stays registered with the acceptor
        # that held it, to be leased again without an epoll_ctl. When the other acceptor
        # leases it, the first one sees the worker's answers become readable: it must drop
        # the event at the first one (and never read the answer), not wake for each.
        s = self.server(echo_config(count=1, acceptors=2))
        conns, by_acceptor = [], {}
        self.addCleanup(lambda: [c.close() for c in conns])
        while len(by_acceptor) < 2 and len(conns) < 64:
            c = s.connection()
            conns.append(c)
            by_acceptor.setdefault(serving_acceptor(s, c), c)
        self.assertEqual(len(by_acceptor), 2, "64 connections all went to one acceptor")
        (idle, first), (busy, second) = by_acceptor.items()
        call = (bertd.Atom("call"), bertd.Atom("echo"), bertd.Atom("echo"), [b"x"])
        self.assertEqual(first.request(call), (bertd.Atom("reply"), b"x"))  # the slot idles at `idle`
        cpu0 = cpu_seconds(idle)
        served, t_end = 0, time.monotonic() + 2.0
        while time.monotonic() < t_end:
            self.assertEqual(second.request(call), (bertd.Atom("reply"), b"x"))
            served += 1
        used = cpu_seconds(idle) - cpu0
        self.assertGreater(served, 200)
        self.assertLess(used, 0.1, f"the acceptor whose slot the other leased used {used:.2f} s of CPU "
                                    f"while the other served {served} calls in 2 s")
        # And the first acceptor still serves with the slot it dropped.
        self.assertEqual(first.request(call), (bertd.Atom("reply"), b"x"))
