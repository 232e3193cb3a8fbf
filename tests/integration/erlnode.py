"""erlnode.py: real Erlang VMs for the integration tests: ErlNode starts `erl` with a long name on
127.0.0.1 and a test cookie, and evaluates Erlang expressions in it (one per line on its stdin, the
result coming back as term_to_binary, decoded with bertd's codec). Every VM runs in its own process
group and is killed by stop(), registered as a cleanup and at exit, so none outlives a test.
epmd may be shared with other users of the machine: it is left running.
"""
import atexit
import itertools
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import wait_until

import bertd

_live = set()
_names = itertools.count(1)
_RUN = f"{os.getpid()}x{int(time.time()) % 100000}"

# Reads a line, evaluates it (fresh bindings each time), prints OK/ERR and term_to_binary in hex.
_LOOP = r"""
Loop = fun Loop() ->
  case io:get_line("") of
    eof -> halt(0);
    Line ->
      Out = try
              {ok, Toks, _} = erl_scan:string(Line),
              {ok, Exprs} = erl_parse:parse_exprs(Toks),
              {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
              ["OK ", binary:encode_hex(term_to_binary(V))]
            catch C:E:S -> ["ERR ", binary:encode_hex(term_to_binary({C, E, S}))]
            end,
      io:put_chars([Out, "\n"]),
      Loop()
  end
end,
Loop().
"""


def unique_name(prefix):
    """A node name no other test run on this machine uses (epmd is shared)."""
    return f"{prefix}{_RUN}n{next(_names)}@127.0.0.1"


def test_cookie():
    return f"bertdtest{_RUN}"


_made_dirs = []


def compile_erlang(sources):
    """Compiles .erl files with erlc into a fresh temporary directory (removed at exit)."""
    outdir = tempfile.mkdtemp(prefix="bertd-erl-")
    _made_dirs.append(outdir)
    subprocess.run(["erlc", "-o", outdir] + list(sources), check=True, timeout=60)
    return outdir


class ErlangEvalError(Exception):
    pass


def _kill_all():
    for n in list(_live):
        n.stop()
    for d in _made_dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_kill_all)


class ErlNode:
    """An Erlang VM named `name` (long name), with `paths` added to its code path."""

    def __init__(self, name, cookie, paths=()):
        self.name = name
        self.cookie = cookie
        self.paths = list(paths)
        self.proc = None
        self._lines = queue.Queue()

    def start(self, timeout=15):
        cmd = ["erl", "-noshell", "-name", self.name, "-setcookie", self.cookie]
        for p in self.paths:
            cmd += ["-pa", p]
        cmd += ["-eval", _LOOP]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        _live.add(self)
        threading.Thread(target=self._reader, args=(self.proc,), daemon=True).start()
        wait_until(lambda: self.try_eval("ok.") == bertd.Atom("ok"), timeout=timeout,
                   what=f"{self.name} to start")
        return self

    def _reader(self, proc):
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(("OK ", "ERR ")):
                self._lines.put(line)
        self._lines.put(None)

    def eval(self, expr, timeout=15):
        """Evaluates one Erlang expression (ending in '.') and returns its value, decoded."""
        if self.proc is None or self.proc.poll() is not None:
            raise ErlangEvalError(f"{self.name} is not running")
        self.proc.stdin.write((" ".join(expr.splitlines()) + "\n").encode())
        self.proc.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ErlangEvalError(f"{self.name}: no answer to {expr!r} within {timeout}s") from None
        if line is None:
            raise ErlangEvalError(f"{self.name} exited")
        kind, _, data = line.partition(" ")
        value = bertd.decode(bytes.fromhex(data), bert_types=False)
        if kind == "ERR":
            raise ErlangEvalError(f"{self.name}: {expr!r} raised {value!r}")
        return value

    def try_eval(self, expr, timeout=5):
        try:
            return self.eval(expr, timeout=timeout)
        except ErlangEvalError:
            return None

    def kill(self):
        """Kills the VM at once (SIGKILL), as a crash would."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def stop(self):
        if self.proc is None:
            return
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        _live.discard(self)
        self.proc = None
