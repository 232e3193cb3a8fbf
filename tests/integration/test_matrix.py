"""test_matrix.py: the cross-language matrix. One real bertd serves three handler modules, written with
the Ruby (matrix_rb), Python (matrix_py) and C++ (matrix_cc) handler libraries; every client (Python,
Ruby, C++, Erlang libraries and bertc) calls every handler with the same table of values, made by
Erlang itself (tests/clients/matrix_table.escript), in both directions, and meets every error type.

For each client, handler and value:
  echo   the client sends the value, the handler returns what it got: the client compares exactly;
  send   the handler compares what it got with its own decoding of the table (matrix.* check/2);
  fetch  the handler sends its own decoding of the table (value/1): the client compares exactly.
For each client and handler: a cast, a low-priority call, a user error (MatrixError with a unicode
message), and an unknown function (server error 2). For each client: an unknown module (server error
1) and, where the client can send one, a malformed request (protocol error 2). A value that changes on
the way is a failure. Each client is one process that makes all its calls over one persistent
connection; the four library clients run at once, bertc beside them.

Values a language cannot represent are excluded for that language only, listed in EXCLUDED with the
reason, and each exclusion is proven still needed: the excluded value is sent anyway (by that client
to the C++ handler, or by the C++ client through that handler) and must come out changed or refused.
Values bertc cannot take as text (BERTC_EXCLUDED) are proven the same way: bertc's echo of their text
through the Python handler must fail.
"""
import base64
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness
from harness import Server

import bertd
from bertd import Atom

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "clients"))
from matrix_values import same  # noqa: E402

CLIENTS = os.path.join(harness.ROOT, "tests", "clients")
EBIN = os.path.join(harness.BUILD, "ebin")
BERTC = os.path.join(harness.BUILD, "bertc")
HANDLERS = {"ruby": "matrix_rb", "python": "matrix_py", "cpp": "matrix_cc"}
MESSAGE = "matrix failure: \u2603 \u00fc"
SMALL = b"tuple_nested"  # the value used for casts and low-priority calls

_RUBY_IMPROPER = ("Ruby has no improper list: ruby-bert reads a list's elements and takes the tail for "
                  "[], so [1,2|3] cannot be held")
_RUBY_MAP = ("ruby-bert has no map type: an Erlang map arrives as a Hash, and a Hash is sent back as "
             "{bert, dict, ...}")
# (language, value name) -> why that language's library cannot carry the value unchanged.
EXCLUDED = {
    ("ruby", b"list_improper"): _RUBY_IMPROPER,
    ("ruby", b"list_improper_nested"): _RUBY_IMPROPER,
    ("ruby", b"map_empty"): _RUBY_MAP,
    ("ruby", b"map_mixed"): _RUBY_MAP,
}
_BERTC_NO_TEXT = ("bertc takes arguments as Erlang text: #Fun<...>, <0.7.3>, #Port<...> and #Ref<...> "
                  "are not terms to read")
# value name -> why bertc cannot send it.
BERTC_EXCLUDED = {name: _BERTC_NO_TEXT for name in (
    b"fun_local", b"fun_local_nested", b"pid", b"port", b"port_v4", b"ref", b"erlang_mixed")}


def excluded(lang, name):
    return (lang, name) in EXCLUDED


def json_of(v):
    """The JSON that `bertc --json` documents for a term (decoded with bert_types=False)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if isinstance(v, Atom):
        return {"atom": str(v)}
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return {"binary": base64.b64encode(v).decode()}
    if isinstance(v, bertd.Export):  # the matrix's atoms need no quotes
        return {"fun": f"fun {v.module}:{v.function}/{v.arity}"}
    if isinstance(v, bertd.BitBinary):
        whole = [str(b) for b in v.data[:-1]]
        return {"bitstring": "<<" + ",".join(whole + [f"{v.data[-1] >> (8 - v.bits)}:{v.bits}"]) + ">>"}
    if isinstance(v, bertd.ImproperList):
        return {"improper_list": [json_of(x) for x in v.items] + [json_of(v.tail)]}
    if isinstance(v, bertd.Map):
        return {"map": [[json_of(k), json_of(x)] for k, x in v.items()]}
    if isinstance(v, list):
        return [json_of(x) for x in v]
    if isinstance(v, tuple):
        if len(v) == 2 and v[0] == Atom("bert") and v[1] in (Atom("nil"), Atom("true"), Atom("false")):
            return {"nil": None, "true": True, "false": False}[str(v[1])]
        if (len(v) == 3 and v[0] == Atom("bert") and v[1] == Atom("dict") and isinstance(v[2], list)
                and all(isinstance(kv, tuple) and len(kv) == 2 for kv in v[2])):
            return {"dict": [[json_of(k), json_of(x)] for k, x in v[2]]}
        return {"tuple": [json_of(x) for x in v]}
    raise TypeError(f"no JSON form for {v!r}")


def parse_results(out):
    """{index: None (ok) or why} from a driver's `ok N` / `fail N why` lines; requires `done`."""
    lines = out.splitlines()
    if not lines or lines[-1] != "done":
        raise AssertionError(f"the client did not finish: {out[-2000:]!r}")
    results = {}
    for line in lines[:-1]:
        status, _, rest = line.partition(" ")
        index, _, why = rest.partition(" ")
        results[int(index)] = None if status == "ok" else why
    return results


class Matrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="bertd-matrix-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        subprocess.run(["escript", os.path.join(CLIENTS, "matrix_table.escript"), cls.dir], check=True, timeout=60)
        table = os.path.join(cls.dir, "table.bert")
        with open(table, "rb") as f:
            cls.names = [name for name, _ in bertd.decode(f.read())]
        cls.server = Server(f"""
            listen: 127.0.0.1
            acceptors: 2
            modules:
              - name: matrix_py
                command: {sys.executable} {os.path.join(harness.HANDLERS, "matrix.py")} {table}
                count: 2
              - name: matrix_rb
                command: ruby -I {harness.RUBY_LIB} {os.path.join(harness.HANDLERS, "matrix.rb")} {table}
                count: 2
              - name: matrix_cc
                command: {os.path.join(harness.BUILD, "tests", "handlers", "matrix")} {table}
                count: 2
            """)
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        # The library clients run at once, each one process for all its calls; each test collects one.
        cls.runs = {}
        for lang, cmd in cls.client_commands().items():
            plan, proofs = cls.plan(lang)
            path = os.path.join(cls.dir, f"plan-{lang}.bert")
            with open(path, "wb") as f:
                f.write(bertd.encode([(Atom(c), Atom(m), n) for c, m, n in plan]))
            proc = subprocess.Popen(cmd + [path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, cwd=harness.ROOT,
                                    env=dict(os.environ, RUBYLIB=harness.RUBY_LIB))
            cls.addClassCleanup(_kill, proc)
            cls.runs[lang] = (proc, plan, proofs)

    @classmethod
    def client_commands(cls):
        common = ["127.0.0.1", str(cls.server.port), os.path.join(cls.dir, "table.bert")]
        return {
            "python": [sys.executable, os.path.join(CLIENTS, "matrix_client.py")] + common,
            "ruby": ["ruby", "-I", harness.RUBY_LIB, os.path.join(CLIENTS, "matrix_client.rb")] + common,
            "cpp": [os.path.join(harness.BUILD, "tests", "clients", "matrix_client")] + common,
            "erlang": ["escript", os.path.join(CLIENTS, "matrix_client.escript"), EBIN] + common,
        }

    @classmethod
    def plan(cls, lang):
        """The checks for a client in `lang`, and the indexes of the exclusion proofs among them."""
        plan, proofs = [], set()
        for hlang, module in HANDLERS.items():
            for name in cls.names:
                if excluded(lang, name) or excluded(hlang, name):
                    continue
                for check in ("echo", "send", "fetch"):
                    plan.append((check, module, name))
            for check in ("cast", "priority"):
                plan.append((check, module, SMALL))
            for check in ("user_error", "no_function"):
                plan.append((check, module, b""))
        plan.append(("no_module", "matrix_none", b""))
        plan.append(("protocol", "matrix_none", b""))
        for (xlang, name) in EXCLUDED:
            if xlang == lang:
                # The client sends it; the C++ handler judges what arrived.
                proofs.add(len(plan))
                plan.append(("send", "matrix_cc", name))
            elif xlang in HANDLERS and lang == "cpp":
                # The C++ client judges what the handler's library makes of it.
                proofs.add(len(plan))
                plan.append(("echo", HANDLERS[xlang], name))
        return plan, proofs

    def check_client(self, lang):
        proc, plan, proofs = self.runs[lang]
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            self.fail(f"the {lang} client did not finish in 120 s: {err.decode(errors='replace')[-2000:]}")
        self.assertEqual(proc.returncode, 0, err.decode(errors="replace")[-3000:])
        results = parse_results(out.decode("utf-8", "replace"))
        self.assertEqual(sorted(results), list(range(len(plan))), "every check must report")
        failures = [f"{plan[i][0]} {plan[i][1]} {plan[i][2].decode()}: {why}"
                    for i, why in sorted(results.items()) if why is not None and i not in proofs]
        self.assertEqual(failures, [], f"{lang} client: {len(failures)} of {len(plan)} checks failed")
        stale = [f"{plan[i][0]} {plan[i][1]} {plan[i][2].decode()}" for i in proofs if results[i] is None]
        self.assertEqual(stale, [], f"{lang}: excluded values that now pass: drop them from EXCLUDED")
        # At least the whole value table went through every handler both ways.
        self.assertGreater(len(plan), 3 * 3 * (len(self.names) - len(EXCLUDED)))

    def test_python_client(self):
        self.check_client("python")

    def test_ruby_client(self):
        self.check_client("ruby")

    def test_cpp_client(self):
        self.check_client("cpp")

    def test_erlang_client(self):
        self.check_client("erlang")

    # -- bertc: one process per call by nature; values in Erlang syntax as Erlang prints them -----------
    def test_bertc(self):
        with open(os.path.join(self.dir, "texts.bert"), "rb") as f:
            texts = {name: text.decode("utf-8") for name, text in bertd.decode(f.read())}
        with open(os.path.join(self.dir, "table.bert"), "rb") as f:
            raw = {name: bertd.decode(enc, bert_types=False) for name, enc in bertd.decode(f.read())}
        args = dict(texts)
        for name in self.names:
            if name not in texts:
                # ~p of the 8 MiB binary takes Erlang too long; its bytes (zeros among them) print as a
                # byte list. bertc gets it as a string literal with octal escapes, which it reads faster.
                data = raw[name]
                texts[name] = "<<" + ",".join(map(str, data)) + ">>"
                args[name] = '<<"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else "\\%03o" % b
                                             for b in data) + '">>'
        for name, text in args.items():
            if len(text) > 64 * 1024:  # beyond what one argv string may hold: bertc's @FILE
                path = os.path.join(self.dir, name.decode() + ".txt")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                args[name] = "@" + path
        jobs = []  # (description, argv, expected status, check of (stdout, stderr))
        for hlang, module in HANDLERS.items():
            for name in self.names:
                if excluded(hlang, name) or name in BERTC_EXCLUDED:
                    continue
                text, arg, label = texts[name], args[name], name.decode()
                quoted = f'<<"{label}">>'
                jobs.append((f"echo {module} {label}", ["call", module, "echo", arg], 0, _stdout_is(text)))
                jobs.append((f"send {module} {label}", ["call", module, "check", quoted, arg], 0, _stdout_is("ok")))
                jobs.append((f"fetch {module} {label}", ["call", module, "value", quoted], 0, _stdout_is(text)))
                if module == "matrix_cc":  # the JSON form is bertc's own: once per value is enough
                    jobs.append((f"json {module} {label}", ["--json", "call", module, "value", quoted], 0,
                                 _json_is(json_of(raw[name]))))
            small = args[SMALL]
            jobs.append((f"cast {module}", ["cast", module, "echo", small], 0, _stdout_is(None)))
            jobs.append((f"priority {module}", ["--priority", "low", "call", module, "echo", small], 0,
                         _stdout_is(texts[SMALL])))
            jobs.append((f"user_error {module}", ["call", module, "fail", f'<<"{MESSAGE}"/utf8>>'], 5,
                         _stderr_has(f"user error 0: MatrixError: {MESSAGE}")))
            jobs.append((f"no_function {module}", ["call", module, "no_such_function", "1"], 4,
                         _stderr_has(f"server error 2: ServerError: No such function '{module}:no_such_function'")))
        jobs.append(("no_module", ["call", "matrix_none", "f"], 4,
                     _stderr_has("server error 1: ServerError: No such module 'matrix_none'")))
        # bertc sends only well-formed requests (its arguments are parsed terms): no protocol check here.
        port = str(self.server.port)

        def run(job):
            what, argv, status, check = job
            p = subprocess.run([BERTC, "-p", port, "--timeout", "60"] + argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
            out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
            if p.returncode != status:
                return f"{what}: exit {p.returncode}, wanted {status}: {err[:300]}"
            why = check(out, err)
            return f"{what}: {why}" if why else None

        jobs.sort(key=lambda job: "bin_8mib" not in job[0])  # the slow ones first, beside the rest
        # The proofs: each value bertc is excused from must still fail to go through it.
        proofs = [(f"echo matrix_py {name.decode()} (excluded)", ["call", "matrix_py", "echo", texts[name]], 0,
                   _stdout_is(texts[name])) for name in BERTC_EXCLUDED]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            failures = [why for why in pool.map(run, jobs) if why]
            stale = [job[0] for job, why in zip(proofs, pool.map(run, proofs)) if why is None]
        self.assertEqual(failures, [], f"bertc: {len(failures)} of {len(jobs)} checks failed")
        self.assertEqual(stale, [], "bertc: excluded values that now pass: drop them from BERTC_EXCLUDED")


def _stdout_is(text):
    def check(out, err):
        want = "" if text is None else text + "\n"
        if out != want:
            return f"printed {out[:300]!r}, wanted {want[:300]!r}"
        return None
    return check


def _json_is(value):
    def check(out, err):
        try:
            got = json.loads(out)
        except ValueError as e:
            return f"not JSON ({e}): {out[:300]!r}"
        return None if same(got, value) else f"JSON {out[:300]!r}, wanted {json.dumps(value)[:300]}"
    return check


def _stderr_has(text):
    def check(out, err):
        return None if text in err else f"stderr {err[:300]!r} lacks {text!r}"
    return check


def _kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


if __name__ == "__main__":
    unittest.main()
