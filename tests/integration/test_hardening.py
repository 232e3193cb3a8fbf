"""test_hardening.py: the master against careless users and a hostile machine, with real bertd
processes: the pidfile never follows a planted symlink and a zombie is not a running server, TERM
stops bertd within a second whatever it is doing, a blocked stderr blocks nothing, kill -9 of the
master leaves no child and no shared segment behind, and the Erlang cookie never shows in ps.
Every test stops what it started, even when it fails.
"""
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time
import unittest

from erlnode import ErlNode, compile_erlang, test_cookie, unique_name
from harness import BERTD, HANDLERS, ROOT, Server, alive, free_port, run_bertd, wait_until
from loadrun import comm

import bertd

PYEXT = os.path.join(HANDLERS, "pyext.py")
ERL_SRC = os.path.join(ROOT, "tests", "erlang")


def descendants(pid):
    """Every process below `pid`, by /proc's parent links."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out.add(child)
                todo.append(child)
    return out


def segments_of(pid):
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"bertd.{pid}.")]


def ext_config(count=1, command=None, extra=""):
    return f"""
        listen: 127.0.0.1
        acceptors: 1
        {extra}
        modules:
          - name: ext
            command: "{command or f'{sys.executable} {PYEXT}'}"
            count: {count}
        """


class HardeningTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="bertd-hard-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def server(self, config, **kw):
        s = Server(config, **kw)
        self.addCleanup(s.stop)
        return s.start()

    def kill_tree_later(self, pid):
        def kill():
            for p in [pid] + list(descendants(pid)):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.addCleanup(kill)

    def daemon(self, config_text, *extra):
        cfg = self.write("bertd.yaml", config_text)
        pidfile = self.path("bertd.pid")
        port = free_port()
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile] + list(extra))
        self.assertEqual(code, 0, err)
        pid = int(open(pidfile).read())
        self.kill_tree_later(pid)
        return pid, port, pidfile


class Pidfile(HardeningTest):
    def test_a_symlink_at_the_pidfile_path_is_never_followed(self):
        victims = [self.write("victim-tmp", "precious\n"), self.write("victim", "precious too\n")]
        pidfile = self.path("bertd.pid")
        os.symlink(victims[0], pidfile + ".tmp")  # where bertd used to write first
        os.symlink(victims[1], pidfile)
        pid, port, _ = self.daemon(ext_config())
        self.assertEqual(open(victims[0]).read(), "precious\n")
        self.assertEqual(open(victims[1]).read(), "precious too\n")
        self.assertFalse(os.path.islink(pidfile))
        self.assertEqual(open(pidfile).read(), f"{pid}\n")
        self.assertEqual(oct(os.stat(pidfile).st_mode & 0o777), oct(0o644))
        # Only the pidfile and what was planted: no temporary left behind.
        self.assertEqual(sorted(n for n in os.listdir(self.dir) if n.startswith("bertd.pid")),
                         ["bertd.pid", "bertd.pid.tmp"])

    def test_a_zombie_in_the_pidfile_is_not_a_running_server(self):
        zombie = subprocess.Popen([BERTD, "-v"], stdout=subprocess.DEVNULL)
        self.addCleanup(zombie.wait)
        wait_until(lambda: not alive(zombie.pid), what="bertd -v to exit (and stay a zombie)")
        self.write("bertd.pid", f"{zombie.pid}\n")
        pid, port, pidfile = self.daemon(ext_config())
        self.assertNotEqual(pid, zombie.pid)


class Term(HardeningTest):
    def time_term(self, s):
        t0 = time.monotonic()
        os.kill(s.proc.pid, signal.SIGTERM)
        s.proc.wait(10)
        return time.monotonic() - t0

    def test_term_stops_bertd_within_a_second_while_the_companion_vm_boots(self):
        ebin = compile_erlang([os.path.join(ERL_SRC, "solo.erl")])
        name = unique_name("boot")
        s = self.server(f"""
            modules:
              - name: solo
                type: native
                codepaths: [{ebin}]
            """, args=["--name", name, "--cookie", test_cookie()])
        vm = wait_until(lambda: [p for p in descendants(s.proc.pid) if comm(p).startswith("beam")],
                        what="the companion VM to be booting")
        tree = descendants(s.proc.pid)
        took = self.time_term(s)
        self.assertLess(took, 1.0)
        wait_until(lambda: not any(alive(p) for p in tree), timeout=2, what="every child to be gone")
        print(f"\n    stopped in {took * 1000:.0f} ms with the VM {vm} booting", end=" ")

    def test_term_stops_bertd_within_a_second_when_a_worker_ignores_it(self):
        script = self.write("ignore-term.sh", f"trap '' TERM\nexec {sys.executable} {PYEXT}\n")
        s = self.server(ext_config(count=2, command=f"sh {script}"))
        workers = [p for p in s.children() if p not in s.acceptor_pids()]
        self.assertEqual(len(workers), 2)
        with open(f"/proc/{workers[0]}/status") as f:  # the handler really ignores TERM
            ignored = int(next(l for l in f if l.startswith("SigIgn:")).split()[1], 16)
        self.assertTrue(ignored & (1 << (signal.SIGTERM - 1)))
        took = self.time_term(s)
        self.assertLess(took, 1.0)
        self.assertFalse([p for p in workers if alive(p)])


class BlockedStderr(HardeningTest):
    def test_a_blocked_stderr_never_blocks_the_master_and_dropped_lines_are_counted(self):
        # A worker that writes a lot on stderr at start; bertd's own stderr is a pipe nobody reads.
        spam = self.write("spam.sh", "i=0; while [ $i -lt 3000 ]; do echo \"spam line $i of a chatty worker\" >&2; "
                                     f"i=$((i+1)); done; exec {sys.executable} {PYEXT}\n")
        cfg = self.write("bertd.yaml", ext_config(command=f"sh {spam}"))
        port = free_port()
        r, w = os.pipe()
        proc = subprocess.Popen([BERTD, "-c", cfg, "-p", str(port), "-l", "4"], stdout=w, stderr=w,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(w)
        self.addCleanup(os.close, r)
        self.kill_tree_later(proc.pid)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        svc = bertd.Service("127.0.0.1", port, timeout=10)

        def pid_of_worker():
            try:
                return svc.call.ext.pid()
            except (OSError, bertd.ServerError):
                return None
        first = wait_until(pid_of_worker, timeout=20, what="the worker to serve while stderr is blocked")
        # A killed worker is still replaced (and spams again) ...
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: pid_of_worker() not in (None, first), timeout=20, what="a new worker")
        # ... and once the pipe drains, a line says how many were lost.
        os.set_blocking(r, False)
        drained = b""
        deadline = time.monotonic() + 10
        while b"log lines dropped" not in drained and time.monotonic() < deadline:
            try:
                drained += os.read(r, 1 << 20)
            except BlockingIOError:
                time.sleep(0.05)
        self.assertRegex(drained.decode("utf-8", "replace"), r"\[warn\] master\[\d+\]: \d+ log lines dropped")
        # Blocked again (the workers keep spamming nobody), TERM still stops it at once.
        t0 = time.monotonic()
        proc.terminate()
        proc.wait(5)
        self.assertLess(time.monotonic() - t0, 1.0)


class KilledMaster(HardeningTest):
    def test_after_kill_9_of_the_master_every_child_exits_and_no_segment_stays(self):
        pid, port, _ = self.daemon(ext_config(count=2))
        svc = bertd.Service("127.0.0.1", port, timeout=10)
        wait_until(lambda: svc.call.ext.add(1, 1) == 2, what="the server to serve")
        self.assertEqual(segments_of(pid), [])  # unlinked once mapped, while it runs
        code, out, err = run_bertd(["stats", "-P", self.path("bertd.pid")])  # through /proc/PID/fd
        self.assertEqual(code, 0, err)
        self.assertIn("workers.total.ext=2", out)
        tree = descendants(pid)
        # One worker is busy for a minute: it must not live on until its request ends.
        import threading
        threading.Thread(target=lambda: _ignore(lambda: bertd.Service("127.0.0.1", port, timeout=70)
                                                .call.ext.slow(60000)), daemon=True).start()
        time.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in tree), timeout=3,
                   what=f"every child of the killed master to exit: {[p for p in tree if alive(p)]}")
        self.assertEqual(segments_of(pid), [])


def _ignore(f):
    try:
        f()
    except Exception:
        pass


class Cookie(HardeningTest):
    def companion_server(self, *args, extra="", env=None):
        ebin = compile_erlang([os.path.join(ERL_SRC, "solo.erl")])
        name = unique_name("ck")
        s = Server(f"""
            modules:
              - name: solo
                type: native
                codepaths: [{ebin}]
            {extra}
            """, args=["--name", name] + list(args))
        self.addCleanup(s.stop)
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            s.start(timeout=20)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        svc = s.service(timeout=5)
        wait_until(lambda: _ok(lambda: svc.call.solo.hello(b"a")), timeout=20, interval=0.1,
                   what="the companion VM to answer")
        return s, name

    def assert_cookie_works(self, name, cookie):
        probe = ErlNode(unique_name("p"), cookie).start()
        self.addCleanup(probe.stop)
        self.assertEqual(probe.eval(f"net_adm:ping('{name}')."), bertd.Atom("pong"))

    def test_the_cookie_never_shows_in_ps(self):
        cookie = test_cookie() + "secret"
        s, name = self.companion_server("--cookie", cookie)
        tree = [s.proc.pid] + sorted(descendants(s.proc.pid))
        self.assertGreaterEqual(len(tree), 4)  # master, acceptor, link, VM
        for p in tree:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                self.assertNotIn(cookie.encode(), f.read(), f"pid {p}")
        ps = subprocess.run(["ps", "-eo", "args"], stdout=subprocess.PIPE, text=True).stdout
        self.assertNotIn(cookie, ps)
        self.assert_cookie_works(name, cookie)  # (the probe node has it on its own command line)

    def test_a_cookie_file_gives_the_cookie(self):
        cookie = test_cookie() + "file"
        f = self.write("cookie", cookie + "\n")
        os.chmod(f, 0o400)
        s, name = self.companion_server("--cookie-file", f)
        self.assert_cookie_works(name, cookie)

    def test_the_config_can_name_a_cookie_file(self):
        cookie = test_cookie() + "cfg"
        f = self.write("cookie", cookie)
        s, name = self.companion_server(extra=f"erlang:\n              cookie_file: {f}")
        self.assert_cookie_works(name, cookie)

    def test_bertd_cookie_in_the_environment_gives_the_cookie_and_no_handler_inherits_it(self):
        cookie = test_cookie() + "env"
        s, name = self.companion_server(env={"BERTD_COOKIE": cookie})
        self.assert_cookie_works(name, cookie)
        for p in [s.proc.pid] + sorted(descendants(s.proc.pid)):
            try:
                with open(f"/proc/{p}/environ", "rb") as f:
                    self.assertNotIn(cookie.encode(), f.read(), f"pid {p}")
            except OSError:
                pass


def _ok(f):
    try:
        return f() is not None
    except bertd.ServerError:
        return False


if __name__ == "__main__":
    unittest.main()
