"""loadrun.py: what the fault, bad-input and soak tests share: a loadgen run in the background
(bounded by --duration, stopped in the test's cleanup) and what /proc says about a bertd's
processes (resident memory, descriptors, zombies, which child is what). Loopback only.
"""
import json
import os
import signal
import subprocess
import time

from harness import BUILD, BERTD, ECHO, Server  # noqa: F401  (ECHO: for the tests that import it from here)

LOADGEN = os.path.join(BUILD, "tests", "bench", "loadgen")

# In the sanitizer build, AddressSanitizer keeps freed memory in a quarantine (256 MiB by default)
# to catch use after free, so resident memory would measure the quarantine, not bertd. Servers
# whose memory a test measures run with the quarantine off; every other check stays on.
SANITIZED = os.path.basename(os.path.normpath(BUILD)) == "san"
MEASURED_ASAN_OPTIONS = "quarantine_size_mb=0"


class MeasuredServer(Server):
    """A harness.Server whose resident memory means something in every build."""

    def start(self, timeout=10.0):
        if not SANITIZED:
            return super().start(timeout)
        saved = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = ":".join(x for x in (saved, MEASURED_ASAN_OPTIONS) if x)
        try:
            return super().start(timeout)  # bertd takes its environment from os.environ now
        finally:
            if saved is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = saved


class Load:
    """One loadgen process against 127.0.0.1:port; result() waits for its JSON line."""

    def __init__(self, test, port, seconds, connections=8, targets=("echo:echo",), mode="persistent", timeout=5.0,
                 series=None, log_failures=100, payload=None, max_requests=None):
        argv = [LOADGEN, "--port", str(port), "--duration", str(seconds), "--connections", str(connections),
                "--mode", mode, "--timeout", str(timeout), "--log-failures", str(log_failures)]
        for t in targets:
            argv += ["--target", t]
        if series:
            argv += ["--series", str(series)]
        if payload is not None:
            argv += ["--payload", str(payload)]
        if max_requests:
            argv += ["--max-requests", str(max_requests)]
        self.seconds = seconds
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if test is not None:  # else the caller calls kill()
            test.addCleanup(self.kill)

    def result(self):
        out, err = self.proc.communicate(timeout=self.seconds + 60)
        if self.proc.returncode != 0:
            raise AssertionError(f"loadgen exited with {self.proc.returncode}: {err}")
        return json.loads(out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def failures(result):
    """The kinds of failure a run saw, without the zero counts: {} when everything was answered."""
    return {k: v for k, v in result["failures"].items() if v}


# --- /proc -----------------------------------------------------------------------------------
def stat(pid):
    """(state, ppid, session) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[3])


def session_pids(leader):
    """Every process in bertd's session (harness.Server starts each in its own): master,
    acceptors, workers and whatever the workers started."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat(int(name))
            if st and st[2] == leader:
                pids.append(int(name))
    return sorted(pids)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def is_bertd(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe") == os.path.realpath(BERTD)
    except OSError:
        return False


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def acceptors(server):
    """The master's bertd children but the Erlang link (named bertd-link)."""
    return sorted(p for p in children(server.proc.pid) if is_bertd(p) and comm(p) != "bertd-link")


def link_pid(server):
    """The Erlang link process (native modules), or None: for the link's fault tests."""
    return next((p for p in children(server.proc.pid) if is_bertd(p) and comm(p) == "bertd-link"), None)


def companion_vm_pid(server):
    """The companion Erlang VM the master starts for native codepaths (beam.smp), or None."""
    return next((p for p in children(server.proc.pid) if comm(p) == "beam.smp"), None)


def workers(server, marker):
    """The master's children whose command line mentions `marker` (e.g. the handler's path)."""
    return sorted(p for p in children(server.proc.pid) if not is_bertd(p) and any(marker in a for a in cmdline(p)))


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def open_files_limit(pid):
    """The soft 'Max open files' limit of a process."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return float("inf") if soft == "unlimited" else int(soft)
    raise AssertionError(f"no open files limit for {pid}")


def zombies(leader):
    return [p for p in session_pids(leader) if (stat(p) or ("",))[0] == "Z"]


def bertd_processes(server):
    """{pid: role} for the bertd processes proper: the master and its acceptors."""
    out = {server.proc.pid: "master"}
    for p in acceptors(server):
        out[p] = "acceptor"
    if (p := link_pid(server)) is not None:
        out[p] = "link"
    return out


def time_until(predicate, since, timeout, interval=0.005):
    """Seconds from `since` (a time.monotonic() value) until predicate() is true, polled every
    `interval`; fails after `timeout` seconds."""
    while True:
        if predicate():
            return time.monotonic() - since
        if time.monotonic() - since > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(interval)


def kill9(pid):
    """SIGKILL, returning the monotonic time it was sent."""
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return t
