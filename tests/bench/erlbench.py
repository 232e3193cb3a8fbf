"""erlbench.py: make bench's Erlang rows (bench.py calls run() and report()). An Erlang node
(tests/bench/erl_driver.escript) sends messages to a registered Python handler on bertd's node
(tests/handlers/pysink.py) and loops rpc:call into bertd's external C++ echo, each beside its Erlang
baseline in the same run: erlang:send to a local Erlang process, and rpc:call to another Erlang VM
(bertd_echo:echo). Every process it starts is stopped, also on failure.
"""
import os
import secrets
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BERTD_BUILD", "build/rel"))
DRIVER = os.path.join(ROOT, "tests", "bench", "erl_driver.escript")

ROWS = [
    # key, what is measured, the unit, the baseline's key and title
    ("msgs", "messages from an Erlang node to a registered Python handler (`{bench_sink, Bertd} ! Msg`)",
     "msg/s", "local", "`erlang:send` to a local Erlang process"),
    ("rpc", "`rpc:call` loop from an Erlang node into bertd's external C++ echo (1 caller)",
     "calls/s", "erlang", "`rpc:call` to another Erlang VM (`bertd_echo:echo`)"),
    ("rpc8", "the same `rpc:call` loop from 8 Erlang processes at once",
     "calls/s", "erlang", "the same to another Erlang VM"),
]


def _spawn(argv, log, env=None):
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT, env=env)


def _stop(proc):
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp, duration, rounds):
    """Measures every row; returns {"rows": {key_side: [(count, us), ...]}} or {"note": why not}."""
    tag = f"{os.getpid()}x{int(time.time()) % 100000}"
    cookie = "bench" + secrets.token_hex(8)
    bertd_node, other, me = (f"{p}{tag}@127.0.0.1" for p in ("bbench", "obench", "dbench"))
    cfg = os.path.join(tmp, "erlbench.yaml")
    with open(cfg, "w") as f:
        f.write(f"listen: 127.0.0.1\nacceptors: 2\nmodules:\n"
                f"  - name: echo\n    command: {os.path.join(BUILD, 'tests/handlers/echo')}\n    count: 2\n"
                f"  - name: pysink\n    command: {os.path.join(ROOT, 'tests/handlers/pysink.py')}\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "modules", "python"))
    procs = []
    log = open(os.path.join(tmp, "erlbench.log"), "wb")
    try:
        procs.append(_spawn([os.path.join(BUILD, "bertd"), "-c", cfg, "-p", str(_free_port()), "--name",
                             bertd_node, "--cookie", cookie], log, env))
        procs.append(_spawn(["erl", "-noshell", "-name", other, "-setcookie", cookie, "-pa",
                             os.path.join(BUILD, "ebin")], log))
        budget = 30 + 3 * len(ROWS) * rounds * 2 * duration
        p = subprocess.run(["escript", DRIVER, me, cookie, bertd_node, other, f"{duration / rounds:.3f}",
                            str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=budget, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"note": f"the Erlang rows could not run: {e}"}
    finally:
        for proc in procs:
            _stop(proc)
        log.close()
    rows = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "RESULT":
            rows.setdefault(parts[1], []).append((int(parts[2]), int(parts[3])))
    if p.returncode != 0 or not rows:
        return {"note": f"the Erlang driver failed (status {p.returncode}): {p.stdout.strip()[-300:]}"}
    return {"rows": rows}


def _rate(runs):
    """The median round's rate, per second."""
    rates = sorted(c / (us / 1e6) for c, us in runs if us > 0)
    return rates[len(rates) // 2] if rates else None


def summary(result):
    """One printable line per row."""
    out = []
    for key, _, unit, base, _ in ROWS:
        b, e = _rate(result.get("rows", {}).get(f"{key}_bertd", [])), _rate(result.get("rows", {}).get(f"{key}_{base}", []))
        out.append(f"  erlang/{key:<8} bertd {b or 0:>10,.0f} {unit}   Erlang {e or 0:>10,.0f} {unit}")
    return out


def report(result):
    """The BENCHMARKS.md section (lines)."""
    if not result:
        return []
    L = ["## Erlang nodes and bertd", ""]
    if "note" in result:
        return L + [f"(Not measured: {result['note']}.)", ""]
    L += ["An Erlang node (tests/bench/erl_driver.escript) against bertd's C-node, each row beside its Erlang "
          "baseline in the same run (the median round of alternating runs). Messages go in windows of 500, each "
          "followed by a sync the receiver answers, so every message counted has been run by the handler.", "",
          "| what | bertd | Erlang baseline | baseline | bertd / baseline |", "|---|---:|---|---:|---:|"]
    for key, title, unit, base, base_title in ROWS:
        b = _rate(result["rows"].get(f"{key}_bertd", []))
        e = _rate(result["rows"].get(f"{key}_{base}", []))
        cells = [title, f"{b:,.0f} {unit}" if b else "-", base_title, f"{e:,.0f} {unit}" if e else "-",
                 f"{b / e:.3f}" if b and e else "-"]
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]
