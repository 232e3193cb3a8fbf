"""test_operations.py: running bertd like nginx: daemon and pidfile, the init script, signals,
graceful reload under load, reload-handlers, the access log and its rotation, stats, admin rules,
the error log and the command line. Real processes throughout; every test cleans up.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import BERTD, BUILD, ECHO, ROOT, Server, echo_config, py_handler, run_bertd, wait_until

import bertd
from bertd import Atom

LOADGEN = os.path.join(BUILD, "tests", "bench", "loadgen")
INIT = os.path.join(ROOT, "contrib", "init.d", "bertd")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class OpsTest(unittest.TestCase):
    def setUp(self):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="bertd-ops-")
        self.addCleanup(shutil.rmtree, self.dir, True)  # last: after the processes below are gone
        # Whatever a test started from its own directory goes when it ends, even if it failed
        # before it learnt the pid (a daemon whose start timed out, say). Acceptors share the
        # master's command line; workers exit once both are gone (end of file on fd 3).
        self.addCleanup(self.kill_everything_from_here)

    def kill_everything_from_here(self):
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if self.dir.encode() in cmdline:
                try:
                    os.kill(int(name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

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

    def kill_later(self, pid):
        def kill():
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.addCleanup(kill)


class Daemon(OpsTest):
    def start_daemon(self, config_text, *extra):
        cfg = self.write("bertd.yaml", config_text)
        pidfile = self.path("bertd.pid")
        port = harness.free_port()
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile] + list(extra))
        self.assertEqual(code, 0, err)
        pid = int(open(pidfile).read())
        self.kill_later(pid)
        return pid, port, pidfile, cfg

    def test_daemon_detaches_and_writes_the_pidfile_when_ready(self):
        pid, port, pidfile, _ = self.start_daemon(echo_config())
        # Ready means serving: the pidfile exists only once requests are answered.
        self.assertEqual(bertd.Service("127.0.0.1", port, timeout=5).call.echo.echo(b"hi"), b"hi")
        self.assertNotEqual(os.getsid(pid), os.getsid(0), "a new session")
        for fd in (0, 1, 2):
            self.assertEqual(os.readlink(f"/proc/{pid}/fd/{fd}"), "/dev/null")
        with open(f"/proc/{pid}/stat") as f:
            tty_nr = int(f.read().split(")")[-1].split()[4])
        self.assertEqual(tty_nr, 0, "no controlling terminal")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="the daemon to stop")
        self.assertFalse(os.path.exists(pidfile), "the pidfile is removed on exit")

    def test_daemon_that_cannot_start_says_why(self):
        cfg = self.write("bertd.yaml", echo_config())
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.addCleanup(blocker.close)
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(blocker.getsockname()[1]), "-P", self.path("p")])
        self.assertNotEqual(code, 0)
        self.assertIn("cannot listen", err)

    def test_second_server_on_a_live_pidfile_is_refused(self):
        pid, port, pidfile, cfg = self.start_daemon(echo_config())
        code, out, err = run_bertd(["-c", cfg, "-p", str(harness.free_port()), "-P", pidfile])
        self.assertNotEqual(code, 0)
        self.assertIn("already running", err)
        self.assertIn(str(pid), err)
        self.assertEqual(int(open(pidfile).read()), pid)

    def test_stale_pidfile_is_replaced(self):
        pidfile = self.write("bertd.pid", "999999\n")  # nobody
        cfg = self.write("bertd.yaml", echo_config())
        port = harness.free_port()
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile])
        self.assertEqual(code, 0, err)
        pid = int(open(pidfile).read())
        self.kill_later(pid)
        self.assertNotEqual(pid, 999999)
        self.assertTrue(pid_alive(pid))
        # A pidfile naming a live process that is not bertd is stale too.
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="the daemon to stop")
        self.write("bertd.pid", f"{os.getpid()}\n")
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile])
        self.assertEqual(code, 0, err)
        self.kill_later(int(open(pidfile).read()))

    def test_init_script_starts_reloads_and_stops(self):
        cfg = self.write("bertd.yaml", echo_config())
        pidfile = self.path("bertd.pid")
        port = harness.free_port()
        env = dict(os.environ, BERTD=BERTD, BERTD_CONFIG=cfg, BERTD_PIDFILE=pidfile, BERTD_OPTS=f"-p {port}")

        def init(action):
            return subprocess.run(["sh", INIT, action], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=30)
        self.addCleanup(lambda: init("stop"))
        self.assertEqual(init("status").returncode, 3)
        r = init("start")
        self.assertEqual(r.returncode, 0, r.stdout)
        pid = int(open(pidfile).read())
        self.kill_later(pid)
        self.assertEqual(init("status").returncode, 0)
        svc = bertd.Service("127.0.0.1", port, timeout=5)
        self.assertEqual(svc.call.echo.echo(1), 1)
        gen = int(svc.call.__admin__.stats().decode().split("generation=")[1].split()[0])
        self.assertEqual(init("reload").returncode, 0)
        wait_until(lambda: int(svc.call.__admin__.stats().decode().split("generation=")[1].split()[0]) == gen + 1,
                   what="the reload")
        self.assertEqual(int(open(pidfile).read()), pid, "a reload keeps the master")
        r = init("restart")
        self.assertEqual(r.returncode, 0, r.stdout)
        pid2 = int(open(pidfile).read())
        self.kill_later(pid2)
        self.assertNotEqual(pid, pid2)
        self.assertEqual(init("stop").returncode, 0)
        wait_until(lambda: not pid_alive(pid2), what="the server to stop")
        self.assertEqual(init("status").returncode, 3)


class Signals(OpsTest):
    def run_load(self, port, seconds, mode, connections=16):
        p = subprocess.Popen([LOADGEN, "--port", str(port), "--connections", str(connections), "--duration",
                              str(seconds), "--mode", mode], stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def test_sighup_with_changed_config_under_load_loses_nothing(self):
        s = self.server(echo_config(count=2))
        master = s.proc.pid
        for mode in ("persistent", "connect"):
            load = self.run_load(s.port, 4, mode)
            time.sleep(0.4)
            for i in range(5):
                # Every reload changes something: the worker count, and a second module comes and goes.
                extra_module = f"  - name: other\n    command: {py_handler()}\n    count: 1\n" if i % 2 == 0 else ""
                with open(s.config_path, "w") as f:
                    f.write(echo_config(count=2 + i % 2) + extra_module)
                os.kill(master, signal.SIGHUP)
                time.sleep(0.5)
            out, _ = load.communicate(timeout=30)
            result = json.loads(out)
            self.assertGreater(result["requests"], 1000, result)
            self.assertEqual(result["errors"], 0, f"{mode}: {result}")
        st = s.stats()
        self.assertEqual(st["generation"], "11", "every reload took effect")
        self.assertNotIn("reload refused", s.log())
        self.assertEqual(st["workers.total.echo"], "2")  # the last config's count: 2 + 4 % 2
        self.assertEqual(s.service().call.other.echo(b"new module"), b"new module")

    def test_sighup_with_invalid_config_keeps_serving(self):
        s = self.server(echo_config())
        gen = s.stats()["generation"]
        with open(s.config_path, "w") as f:
            f.write("listen: 127.0.0.1\nmodules:\n  - name: echo\n    count: many\n")
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in s.log(), what="the refusal in the log")
        self.assertIn(s.config_path + ":4:", s.log())
        self.assertEqual(s.stats()["generation"], gen)
        self.assertEqual(s.service().call.echo.echo(7), 7)

    def test_sigquit_finishes_requests_in_flight(self):
        s = self.server(f"""
            listen: 127.0.0.1
            modules:
              - name: ext
                command: {py_handler()}
                count: 1
            """)
        c = s.connection()
        c.send((Atom("call"), Atom("ext"), Atom("slow"), [700]))
        time.sleep(0.2)
        os.kill(s.proc.pid, signal.SIGQUIT)
        self.assertEqual(c.read(), (Atom("reply"), 700))
        s.proc.wait(10)
        self.assertEqual(s.proc.returncode, 0)

    def test_halt_command_stops_gracefully(self):
        s = self.server(echo_config())
        code, out, err = run_bertd(["halt", "-p", str(s.port)])
        self.assertEqual(code, 0, err)
        s.proc.wait(10)
        self.assertEqual(s.proc.returncode, 0)

    def test_sigterm_stops_now_and_leaves_nothing(self):
        s = self.server(echo_config())
        children = s.children()
        self.assertGreaterEqual(len(children), 4)
        os.kill(s.proc.pid, signal.SIGTERM)
        s.proc.wait(10)
        wait_until(lambda: not any(pid_alive(p) for p in children), what="every child to exit")
        self.assertFalse([p for p in os.listdir("/dev/shm") if p.startswith(f"bertd.{s.proc.pid}.")])


class ReloadHandlers(OpsTest):
    def test_reload_handlers_picks_up_new_code_and_cuts_no_request(self):
        version = self.write("version", "v1")
        s = self.server(f"""
            listen: 127.0.0.1
            modules:
              - name: ver
                command: {sys.executable} {os.path.join(harness.HANDLERS, 'pyversion.py')} {version}
                count: 2
            """)
        self.assertEqual(s.service().call.ver.version(), b"v1")
        # A request in flight when the reload starts finishes on the old code.
        slow = s.connection()
        slow.send((Atom("call"), Atom("ver"), Atom("slow"), [800]))
        failures, stop = [], threading.Event()

        def load():
            svc = s.service(persistent=True)
            while not stop.is_set():
                try:
                    if svc.call.ver.add(1, 2) != 3:
                        failures.append("wrong")
                except Exception as e:  # noqa: BLE001
                    failures.append(e)
        loaders = [threading.Thread(target=load) for _ in range(2)]
        for t in loaders:
            t.start()
        time.sleep(0.2)
        self.write("version", "v2")
        code, out, err = run_bertd(["reload-handlers", "-p", str(s.port)])
        self.assertEqual(code, 0, err)
        self.assertEqual(slow.read(), (Atom("reply"), b"v1"))
        wait_until(lambda: all(s.service().call.ver.version() == b"v2" for _ in range(6)), timeout=10,
                   what="every worker to run the new code")
        stop.set()
        for t in loaders:
            t.join(10)
        self.assertEqual(failures, [])


class AccessLog(OpsTest):
    def config(self, log):
        return f"""
            listen: 127.0.0.1
            access_log: {log}
            modules:
              - name: ext
                command: {py_handler()}
                count: 2
            """

    def lines(self, path):
        """The log's lines, less the harness's own __admin__ stats calls."""
        with open(path) as f:
            return [line for line in f.read().splitlines() if "'__admin__'" not in line]

    def test_lines_are_in_ernies_format(self):
        log = self.path("access.log")
        s = self.server(self.config(log))
        s.service().call.ext.add(1, 2)
        with self.assertRaises(bertd.ServerError):
            s.service().call.nomod.f()
        s.service(priority="low").call.ext.echo(b"x")
        wait_until(lambda: len(self.lines(log)) >= 3, what="three lines")
        import re
        pattern = (r"^(ACC|ERR) \[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\] \d+\.\d{6} \d+\.\d{6} - \d+ \d+ "
                   r"(ext|nat) (high|low) - (.*)$")
        found = [re.match(pattern, line) for line in self.lines(log)]
        self.assertTrue(all(found), self.lines(log))
        by_request = {m.group(4): m for m in found}
        self.assertEqual(by_request["{call,ext,add,[1,2]}"].group(1), "ACC")
        self.assertEqual(by_request["{call,nomod,f,[]}"].group(1), "ERR")
        self.assertEqual(by_request['{call,ext,echo,[<<"x">>]}'].group(3), "low")

    def test_moved_log_is_replaced_and_no_line_is_lost(self):
        log = self.path("access.log")
        s = self.server(self.config(log))
        for i in range(10):
            s.service().call.ext.add(i, 0)
        wait_until(lambda: len(self.lines(log)) == 10, what="ten lines")
        os.rename(log, log + ".1")
        t0 = time.monotonic()
        wait_until(lambda: os.path.exists(log), timeout=2, what="a new file at the configured path")
        self.assertLess(time.monotonic() - t0, 1.2)
        for i in range(10, 25):
            s.service().call.ext.add(i, 0)
        wait_until(lambda: len(self.lines(log)) == 15, what="fifteen lines in the new file")
        old, new = self.lines(log + ".1"), self.lines(log)
        self.assertEqual(len(old), 10)
        seen = [line.rsplit(" - ", 1)[1] for line in old + new]
        self.assertEqual(sorted(seen), sorted(f"{{call,ext,add,[{i},0]}}" for i in range(25)))

    def test_deleted_log_is_recreated(self):
        log = self.path("access.log")
        s = self.server(self.config(log))
        s.service().call.ext.add(1, 1)
        wait_until(lambda: os.path.exists(log) and self.lines(log), what="a line")
        os.unlink(log)
        wait_until(lambda: os.path.exists(log), timeout=1.5, what="the log to be recreated")
        s.service().call.ext.add(2, 2)
        wait_until(lambda: len(self.lines(log)) == 1, what="one line in the new file")

    def test_sigusr1_reopens_at_once(self):
        log = self.path("access.log")
        s = self.server(self.config(log))
        s.service().call.ext.add(1, 1)
        # The line is written just after the answer: wait for it, or it may follow the reopen.
        wait_until(lambda: len(self.lines(log)) == 1, what="the first line")
        os.rename(log, log + ".1")
        os.kill(s.proc.pid, signal.SIGUSR1)
        wait_until(lambda: os.path.exists(log), timeout=0.5, interval=0.01, what="the reopen")
        s.service().call.ext.add(2, 2)
        wait_until(lambda: len(self.lines(log)) == 1, what="the line in the new file")
        self.assertEqual(len(self.lines(log + ".1")), 1)

    def test_concurrent_lines_are_never_interleaved(self):
        log = self.path("access.log")
        s = self.server(self.config(log))
        blob = b"y" * 3000  # long lines, written from both acceptors at once
        def hammer():
            svc = s.service(persistent=True)
            for _ in range(40):
                svc.call.ext.size(blob)
        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wait_until(lambda: len(self.lines(log)) == 240, what="240 lines")
        for line in self.lines(log):
            self.assertTrue(line.startswith("ACC [") and line.endswith('>>]}'), line[:80])


class Admin(OpsTest):
    NS = f"bertd-t{os.getpid()}"

    def netns(self):
        """A network namespace joined to the host by a veth pair: a real non-loopback client."""
        host, peer = "10.231.7.1", "10.231.7.2"
        cmds = [f"ip netns add {self.NS}", f"ip link add {self.NS}a type veth peer name {self.NS}b",
                f"ip link set {self.NS}b netns {self.NS}", f"ip addr add {host}/30 dev {self.NS}a",
                f"ip link set {self.NS}a up", f"ip netns exec {self.NS} ip addr add {peer}/30 dev {self.NS}b",
                f"ip netns exec {self.NS} ip link set {self.NS}b up", f"ip netns exec {self.NS} ip link set lo up"]
        self.addCleanup(lambda: subprocess.run(f"ip link del {self.NS}a; ip netns del {self.NS}", shell=True,
                                               stderr=subprocess.DEVNULL))
        for c in cmds:
            subprocess.run(c, shell=True, check=True)
        return host, peer

    def call_from_netns(self, host, port, function):
        script = (f"import sys; sys.path.insert(0, {harness.PYTHON_LIB!r}); import bertd\n"
                  f"try:\n    print(repr(bertd.Service({host!r}, {port}, timeout=5).call.{function}))\n"
                  f"except bertd.RPCError as e:\n    print('ERROR', e.type, e.message)\n")
        r = subprocess.run(["ip", "netns", "exec", self.NS, sys.executable, "-c", script],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        return r.stdout

    def test_admin_calls_are_refused_from_a_non_loopback_address(self):
        host, peer = self.netns()
        s = self.server(echo_config(listen="0.0.0.0"))
        out = self.call_from_netns(host, s.port, "__admin__.halt()")
        self.assertIn("ERROR server", out)
        self.assertIn("only from loopback", out)
        # Ordinary calls from there work, and the server is still up.
        self.assertIn("b'ok'", self.call_from_netns(host, s.port, "echo.echo(b'ok')"))
        self.assertEqual(s.service().call.echo.echo(1), 1)

    def test_admin_allow_lets_an_address_in(self):
        host, peer = self.netns()
        s = self.server(echo_config(f"admin_allow: [{peer}]", listen="0.0.0.0"))
        out = self.call_from_netns(host, s.port, "__admin__.stats()")
        self.assertIn("connections.total=", out)


class Commands(OpsTest):
    def test_stats_by_pidfile_reads_shared_memory(self):
        pidfile = self.path("bertd.pid")
        s = self.server(echo_config(), args=["-P", pidfile])
        for i in range(5):
            s.service().call.echo.echo(i)
        code, out, err = run_bertd(["stats", "-P", pidfile])
        self.assertEqual(code, 0, err)
        self.assertIn("requests.echo=5", out)
        self.assertIn("workers.idle.echo=2", out)

    def test_pidfile_forms_of_reload_handlers_and_halt_print_what_the_port_forms_print(self):
        pidfile = self.path("bertd.pid")
        s = self.server(echo_config(), args=["-P", pidfile])
        by_port = run_bertd(["reload-handlers", "-p", str(s.port)])
        by_pidfile = run_bertd(["reload-handlers", "-P", pidfile])
        self.assertEqual(by_port[:2], (0, "ok\n"), by_port)
        self.assertEqual(by_pidfile, by_port)
        self.assertEqual(run_bertd(["halt", "-P", pidfile]), by_port)
        s.proc.wait(10)

    def test_listen_address_on_the_command_line_overrides_an_ernie_config(self):
        # An Ernie .cfg has no listen address: bertd would listen on every address, as Ernie did.
        cfg = self.write("ernie.cfg", f"""[{{module, echo}}, {{type, external}}, {{command, "{ECHO}"}}, {{count, 1}}].\n""")
        pidfile = self.path("bertd.pid")
        port = harness.free_port()
        code, out, err = run_bertd(["-d", "-c", cfg, "-p", str(port), "-P", pidfile, "-H", "127.0.0.2"])
        self.assertEqual(code, 0, err)
        self.kill_later(int(open(pidfile).read()))
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # -H keeps its meaning for the commands: where the server is.
        code, out, err = run_bertd(["stats", "-p", str(port), "--listen", "127.0.0.2"])
        self.assertEqual(code, 0, err)
        self.assertIn("workers.total.echo=1", out)
        self.assertEqual(run_bertd(["halt", "-p", str(port), "-H", "127.0.0.2"])[:2], (0, "ok\n"))

    def test_version_help_and_bad_options(self):
        code, out, err = run_bertd(["-v"])
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("bertd "))
        code, out, err = run_bertd(["-h"])
        self.assertEqual(code, 0)
        for opt in ("-c", "-p", "-H", "--listen", "-l", "-a", "-d", "-P", "--name", "--sname", "-E", "-t",
                    "reload-handlers", "halt"):
            self.assertIn(opt, out)
        for bad in (["-p", "notaport", "-c", "x"], ["-l", "9", "-c", "x"], ["frobnicate"], ["-c"]):
            code, out, err = run_bertd(bad)
            self.assertNotEqual(code, 0, bad)
            self.assertIn("Usage", err)

    def test_access_log_and_log_level_from_the_command_line(self):
        log = self.path("access.log")
        s = self.server(echo_config(), args=["-a", log, "-l", "4"])
        s.service().call.echo.echo(1)
        wait_until(lambda: os.path.exists(log) and open(log).read().count("{call,echo,echo,[1]}") == 1,
                   what="the access line")
        self.assertIn("[debug] master[", s.log())
        self.assertRegex(s.log(), r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[debug\] acceptor \d\[\d+\]|"
                                  r"\[info\] master\[\d+\]")

    def test_quiet_log_level_hides_notices(self):
        s = self.server(echo_config(), args=["-l", "0"])
        s.service().call.echo.echo(1)
        self.assertNotIn("[info]", s.log())


if __name__ == "__main__":
    unittest.main()
