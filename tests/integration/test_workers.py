"""test_workers.py: how bertd runs handler workers, against real bertd processes: a module's
`command` runs through /bin/sh -c as Ernie ran it, and a worker that cannot start is reported.

Every test starts its own bertd on a free loopback port and stops it in a cleanup.
"""
import os
import shutil
import signal
import sys
import tempfile
import unittest

from harness import HANDLERS, Server, wait_until

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


def alive(pid):
    """True while `pid` runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()
