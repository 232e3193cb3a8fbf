"""harness.py: starts real bertd processes for integration tests and always cleans up.

Each Server runs in its own process group (bertd, its acceptors and its handler workers), on a
free loopback port, with its config in a temporary directory. stop() (registered as a test
cleanup and at interpreter exit) kills the whole group, so nothing outlives a failing test; the
temporary directories go at interpreter exit (a test may still read a stopped server's log).
"""
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"))
BERTD = os.path.join(BUILD, "bertd")
PYTHON_LIB = os.path.join(ROOT, "modules", "python")
RUBY_LIB = os.path.join(ROOT, "modules", "ruby", "lib")
HANDLERS = os.path.join(ROOT, "tests", "handlers")
ECHO = os.path.join(BUILD, "tests", "handlers", "echo")  # the C++ echo handler (tests/handlers/echo.cc)

if PYTHON_LIB not in sys.path:
    sys.path.insert(0, PYTHON_LIB)
if os.path.join(ROOT, "tests", "bench") not in sys.path:
    sys.path.append(os.path.join(ROOT, "tests", "bench"))  # last: none of its modules hides another

import bertd  # noqa: E402 (from PYTHON_LIB)
import common as bench_common  # noqa: E402 (tests/bench/common.py: make bench's parts, read_frame)

_live = set()
# A crash of bertd's own processes as the master logs it (a test that kills one sends SIGKILL).
_CRASHED = re.compile(r"(acceptor \d+|the Erlang link) killed by signal "
                      r"(Segmentation fault|Aborted|Bus error|Floating point exception|Illegal instruction)")
_dirs = []


def _kill_all():
    for s in list(_live):
        try:
            s.stop()
        except AssertionError:
            pass  # a sanitizer report: the test that stopped it has said so
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_kill_all)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def py_handler(name="pyext.py"):
    """The command line of a Python test handler from tests/handlers."""
    return f"{sys.executable} {os.path.join(HANDLERS, name)}"


def ruby_handler():
    return f"ruby -I {RUBY_LIB} {os.path.join(ROOT, 'modules', 'ruby', 'examples', 'ext.rb')}"


def echo_config(extra="", count=2, acceptors=2, listen="127.0.0.1", command=ECHO):
    """A config, flush left, that serves one module, echo, with `count` workers of `command`:
    `listen` (an address, or a list of listen entries in YAML), `acceptors` (None: bertd's
    default), then the lines `extra`."""
    if isinstance(listen, (list, tuple)):
        head = "listen:\n" + "".join(f"  - {entry}\n" for entry in listen)
    else:
        head = f"listen: {listen}\n"
    head += f"acceptors: {acceptors}\n" if acceptors is not None else ""
    return f"{head}{extra}\nmodules:\n  - name: echo\n    command: {command}\n    count: {count}\n"


def wait_until(predicate, timeout=5.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_frame(sock, strict=False):
    """The next frame from `sock`, decoded (nothing of the frame after it read), or None when
    the server closed the connection between two frames. A close inside a frame, a socket error
    or a time-out is None as well (for a test that asks whether bertd answered at all), or with
    `strict` raises (for a test that waits for an answer: no silence taken for a close)."""
    try:
        body = bench_common.read_frame(sock)
    except OSError:
        if strict:
            raise
        return None
    return None if body is None else bertd.decode(body)


def alive(pid):
    """True while `pid` runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ServerFailed(Exception):
    pass


class Server:
    """A bertd under test. `config` is the file's text (YAML or Ernie .cfg, by `suffix`)."""

    def __init__(self, config, suffix=".yaml", args=(), port=None, wait_workers=True, preexec=None):
        self.dir = tempfile.mkdtemp(prefix="bertd-test-")
        _dirs.append(self.dir)
        self.config_path = os.path.join(self.dir, "bertd" + suffix)
        with open(self.config_path, "w") as f:
            f.write(textwrap.dedent(config))
        self.port = port or free_port()
        self.args = list(args)
        self.log_path = os.path.join(self.dir, "bertd.log")
        self.proc = None
        self.wait_workers = wait_workers
        self.preexec = preexec  # runs in the child before bertd starts (resource limits)

    # -- life cycle --------------------------------------------------------------------
    def start(self, timeout=10.0):
        cmd = [BERTD, "-c", self.config_path, "-p", str(self.port)] + self.args
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=PYTHON_LIB, RUBYLIB=RUBY_LIB)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=self.dir, env=env, preexec_fn=self.preexec)
        _live.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"bertd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.02)
        else:
            raise ServerFailed(f"bertd did not listen on port {self.port} within {timeout}s:\n{self.log()}")
        if self.wait_workers:
            self.wait_for_workers(deadline - time.monotonic())
        return self

    def wait_for_workers(self, timeout=10.0):
        """Waits until every worker slot has been started once (state idle or leased)."""
        def ready():
            st = self.stats()
            totals = {k[len("workers.total."):]: int(v) for k, v in st.items() if k.startswith("workers.total.")}
            return all(int(st.get("workers.idle." + m, 0)) == n for m, n in totals.items())
        wait_until(ready, timeout=max(timeout, 1.0), what="handler workers to start")

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of the group (workers that ignored SIGTERM) goes now.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        _live.discard(self)
        self.proc = None
        # Under `make test SANITIZE=1` a report in a process that did not crash
        # only reaches its log: it must still fail the test.
        log = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                raise AssertionError(f"sanitizer report in bertd's log ({self.log_path}):\n{log[-4000:]}")
        # The master restarts a crashed acceptor or link and the clients of the moment see only a
        # closed connection: a test that passed through such a crash must still fail.
        crash = _CRASHED.search(log)
        if crash:
            raise AssertionError(f"a bertd process crashed ({crash.group(0)}); bertd's log ({self.log_path}):\n"
                                 f"{log[-4000:]}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- looking inside ------------------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def service(self, **kw):
        import bertd
        kw.setdefault("timeout", 10)
        return bertd.Service("127.0.0.1", self.port, **kw)

    def connection(self, timeout=10):
        import bertd
        return bertd.Connection("127.0.0.1", self.port, timeout=timeout)

    def stats(self):
        text = self.service().call.__admin__.stats()
        if isinstance(text, bytes):
            text = text.decode()
        out = {}
        for line in text.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def queued_connections(self):
        """Connections waiting in the accept queues of the listen sockets on this port (the
        rx_queue of a LISTEN socket in /proc/net/tcp is its accept backlog)."""
        return sum(row["rx_queue"] for row in tcp_sockets() if row["state"] == "0A" and row["local_port"] == self.port)

    def settled_stats(self, timeout=5.0):
        """Stats once every earlier connection has been counted: the readiness probe's connection
        may still wait in an acceptor's accept queue when the first stats call is answered by another
        acceptor, so a baseline taken then is one short. Two reads apart by exactly this call's own
        connection mean nothing else was pending. An acceptor that has not started yet answers
        nothing, so first the kernel's accept queues on the port must be empty."""
        wait_until(lambda: self.queued_connections() == 0, timeout=timeout,
                   what=f"the acceptors to take the connections queued on port {self.port}")
        prev = self.stats()
        deadline = time.monotonic() + timeout
        while True:
            cur = self.stats()
            if int(cur["connections.total"]) - int(prev["connections.total"]) == 1 or time.monotonic() > deadline:
                return cur
            prev = cur

    def children(self):
        """Pids of the processes bertd forked directly (acceptors and handler shells)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], stdout=subprocess.PIPE, text=True).stdout
        return [int(p) for p in out.split()]

    def acceptor_pids(self):
        pids = []
        for p in self.children():
            try:
                if os.readlink(f"/proc/{p}/exe") == os.path.realpath(BERTD):
                    pids.append(p)
            except OSError:
                pass
        return pids


def tcp_sockets():
    """The kernel's TCP sockets, from /proc/net/tcp and tcp6: per socket its ports, its state
    (hex, 0A is LISTEN), its receive queue (a LISTEN socket's: its accept backlog) and inode."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            yield {"local_port": int(fields[1].rsplit(":", 1)[1], 16), "remote_port": int(fields[2].rsplit(":", 1)[1], 16),
                   "state": fields[3], "rx_queue": int(fields[4].split(":")[1], 16), "inode": fields[9]}


def run_bertd(args, timeout=10):
    """Runs bertd with arguments to completion; returns (exit status, stdout, stderr)."""
    p = subprocess.run([BERTD] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr
