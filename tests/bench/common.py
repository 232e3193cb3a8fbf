"""common.py: what make bench's parts share (bench.py, rows.py, hostile.py): the servers it starts
(each in its own process group, stopped with its workers), loadgen runs and their medians, and the
sampler of the load from outside the bench. Nothing here leaves a process behind or leaves loopback.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"))
LOADGEN = os.path.join(BUILD, "tests/bench/loadgen")
MIB = 1 << 20

# {call, echo, echo, [<<"hello">>]} as term_to_binary/1 writes it, and the start of {reply, _}.
def probe_request(module):
    """{call, Module, echo, [<<"hello">>]} as term_to_binary/1 writes it."""
    m = module.encode()
    return bytes([131, 104, 4, 100, 0, 4]) + b"call" + bytes([100, 0, len(m)]) + m + bytes([100, 0, 4]) + b"echo" + \
        bytes([108, 0, 0, 0, 1, 109, 0, 0, 0, 5]) + b"hello" + bytes([106])


PROBE = probe_request("echo")
REPLY_ATOMS = (bytes([100, 0, 5]) + b"reply", bytes([118, 0, 5]) + b"reply",
               bytes([115, 5]) + b"reply", bytes([119, 5]) + b"reply")


class Failed(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recv_exactly(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    """The next frame's payload from `sock` (nothing after it read), or None when the connection
    closed between two frames; a close inside a frame raises ConnectionError (an OSError, as the
    socket's own errors and time-outs). tests/integration/harness.py reads frames with it too."""
    head = _recv_exactly(sock, 4)
    if not head:
        return None
    if len(head) < 4:
        raise ConnectionError(f"closed inside a frame header ({head!r})")
    (n,) = struct.unpack(">I", head)
    body = _recv_exactly(sock, n)
    if len(body) < n:
        raise ConnectionError(f"closed inside a frame ({len(body)} of {n} bytes)")
    return body


def probe_port(port, module="echo"):
    """An echo call {call, Module, echo, [<<"hello">>]} on 127.0.0.1:port, which must answer {reply, _}."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            req = probe_request(module)
            s.sendall(struct.pack(">I", len(req)) + req)
            answer = read_frame(s)
    except OSError as e:
        raise Failed(f"did not answer an echo call: {e}")
    if answer is None:
        raise Failed("closed the connection without answering")
    if answer[:3] != bytes([131, 104, 2]) or not any(answer[3:].startswith(a) for a in REPLY_ATOMS):
        raise Failed(f"answered an echo call with something other than {{reply, _}}: {answer[:64]!r}")


def wait_for(what, fn, timeout):
    """Calls fn until it stops raising Failed, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Failed as e:
            if time.monotonic() > deadline:
                raise Failed(f"{what}: {e}")
            time.sleep(0.1)


def alternate(sides, rounds, offset=0, budget_s=None):
    """Runs each side's callable once per round, in an order that rotates from round to round, so no
    side always goes first: ({side: [results]}, [notes of failed runs]). With a budget, no round
    starts once the rounds so far took longer than it (at least one round runs)."""
    names = list(sides)
    out, notes = {n: [] for n in names}, []
    t0 = time.monotonic()
    for r in range(rounds):
        if r and budget_s is not None and time.monotonic() - t0 > budget_s:
            notes.append(f"{r} of {rounds} rounds: the rounds so far took over the budget of {budget_s:g} s")
            break
        k = (r + offset) % len(names)
        for n in names[k:] + names[:k]:
            try:
                out[n].append(sides[n]())
            except (Failed, subprocess.TimeoutExpired, ValueError, OSError) as e:
                notes.append(f"{n}: {e}")
    return out, notes


def median(values):
    v = sorted(x for x in values if x is not None)
    return v[len(v) // 2] if v else None


class Server:
    """A server process in its own process group, so stopping it stops its workers too."""

    def __init__(self, name, argv, port, logdir, module="echo"):
        self.name, self.argv, self.port, self.module = name, argv, port, module
        self.log_path = os.path.join(logdir, name + ".log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=ROOT)
        except OSError as e:
            raise Failed(f"cannot start {self.argv[0]}: {e}")
        finally:
            log.close()
        self.wait_listening(10)
        deadline = time.monotonic() + 20
        while True:  # the Python workers and the companion Erlang VM take a moment to start
            try:
                self.probe()
                return
            except Failed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, lines=5):
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.read().strip().splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(tail)

    def wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failed(f"exited with status {self.proc.returncode} before listening: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise Failed(f"not accepting connections on 127.0.0.1:{self.port} after {timeout}s")

    def probe(self):
        """One echo call before the load, so a server that accepts but cannot answer is named as such."""
        try:
            probe_port(self.port, self.module)
        except Failed as e:
            raise Failed(f"{e}: {self.log_tail()}")

    def pids(self):
        """The server's own processes, not its workers: bertd's master and acceptors, or the relay."""
        own = os.path.realpath(self.argv[0])
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if os.getpgid(int(name)) == self.proc.pid and os.readlink(f"/proc/{name}/exe") == own:
                    out.append(int(name))
            except OSError:
                pass
        return out

    def rss_kb(self):
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total

    def pss_kb(self):
        """Proportional set size: pages shared between the processes (bertd's master and acceptors
        share what was touched before the fork) counted once in all, not once per process."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            except (OSError, StopIteration):
                pass
        return total

    def stop(self):
        if self.proc is None:
            return
        for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=grace)
                # The leader is gone; make sure no worker of its group outlived it.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            except subprocess.TimeoutExpired:
                continue



def run_loadgen(port, clients, mode, duration, warmup, cpu, module="echo", payload=None, extra=()):
    """One loadgen run (loadgen pinned to `cpu` when given); its JSON summary."""
    argv = [LOADGEN, "--host", "127.0.0.1", "--port", str(port), "--module", module,
            "--connections", str(clients), "--duration", str(duration), "--warmup", str(warmup),
            "--mode", mode, "--timeout", "10", "--log-failures", "3", *extra]
    if payload is not None:
        argv += ["--payload", str(payload)]

    def pin():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pin,
                       timeout=duration + warmup + 60)
    if p.returncode != 0:
        raise Failed(f"loadgen exited with status {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def median_of(runs):
    """One figure from several rounds of a case: the median of each rate and percentile (so a burst
    of other work on the machine during one round does not decide it), the sums of the counts."""
    def med(key):
        v = sorted(r[key] for r in runs)
        return v[len(v) // 2]
    out = {k: med(k) for k in ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "mean_us")}
    out.update({k: sum(r[k] for r in runs) for k in ("requests", "errors")})
    out["failures"] = {k: sum(r["failures"][k] for r in runs) for k in runs[0]["failures"]}
    out["failure_log"] = [f for r in runs for f in r["failure_log"]][:3]
    out["rounds_rps"] = [r["rps"] for r in runs]
    return out



def us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.1f} ms" if v >= 10_000 else f"{v:.0f} µs"



def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"



def _ppids():
    """{pid: parent pid} of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _runnable_threads(pid):
    n = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] in ("R", "D")
        except (OSError, IndexError):
            pass
    return n


class Sampling:
    """A thread that calls self._run() (which waits on self._stop) from `with` to its end;
    _finish() runs once the thread has stopped."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._finish()

    def _finish(self):
        pass


class OutsideLoad(Sampling):
    """Samples, every `interval` seconds, the tasks runnable (or in uninterruptible sleep) on the
    machine that are not the bench's: the system's count (/proc/loadavg, /proc/stat) minus the
    bench's own threads in those states (this process and every descendant, servers in their own
    sessions included). Its mean over a run is the load average the rest of the machine added."""

    def __init__(self, interval=1.0):
        super().__init__()
        self.interval, self.samples = interval, []  # [(monotonic time, outside tasks)]

    def _sample(self):
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        with open("/proc/stat") as f:
            blocked = next((int(line.split()[1]) for line in f if line.startswith("procs_blocked")), 0)
        parents = _ppids()
        mine, frontier = {os.getpid()}, [os.getpid()]
        children = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for c in children.get(frontier.pop(), ()):
                if c not in mine:
                    mine.add(c)
                    frontier.append(c)
        ours = sum(_runnable_threads(p) for p in mine)
        return max(0, running + blocked - ours)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.samples.append((time.monotonic(), self._sample()))
            except (OSError, ValueError):
                pass

    def mean(self, since=None, until=None):
        """The mean outside load between two monotonic times (the whole run by default); None
        before the first sample."""
        v = [n for t, n in self.samples if (since is None or t >= since) and (until is None or t <= until)]
        return round(sum(v) / len(v), 2) if v else None

    def peak(self):
        return max((n for _, n in self.samples), default=None)
