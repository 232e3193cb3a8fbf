"""matrix_client.py: the cross-language matrix's Python client: runs every check of a plan against one bertd
over one persistent bertd.Service and prints `ok N` or `fail N why` per check, then `done`.
Usage: matrix_client.py HOST PORT TABLE PLAN. It never retries a failed check.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "modules", "python"))
sys.path.insert(0, HERE)
import bertd  # noqa: E402
from bertd import Atom  # noqa: E402
from matrix_values import load_table, same, short  # noqa: E402

MESSAGE = "matrix failure: \u2603 \u00fc"


def expect_error(cls, fn, code, detail, klass=None):
    try:
        result = fn()
    except cls as e:
        if e.code != code or (detail is not None and e.message != detail) or (klass is not None and e.klass != klass):
            return f"got {e.type} {e.code} {e.klass!r} {e.message!r}"
        return None
    except bertd.BertdError as e:
        return f"got {type(e).__name__}: {e}"
    return f"no error, got {short(result)}"


def run(svc, check, module, name, values, errors):
    value = values.get(name)
    if name and name not in values:
        return f"this library cannot decode the value: {errors.get(name)}"
    call = svc.call[module]
    if check == "echo":
        got = call.echo(value)
        return None if same(got, value) else f"changed: {short(got)}"
    if check == "send":
        got = call.check(name, value)
        return None if same(got, Atom("ok")) else f"handler saw: {short(got)}"
    if check == "fetch":
        got = call.value(name)
        return None if same(got, value) else f"changed: {short(got)}"
    if check == "priority":
        got = svc.call(priority="low")[module].echo(value)
        return None if same(got, value) else f"changed: {short(got)}"
    if check == "cast":
        got = svc.cast[module].echo(value)
        return None if got is None else f"cast answered {short(got)}"
    if check == "user_error":
        return expect_error(bertd.UserError, lambda: call.fail(MESSAGE), 0, MESSAGE, "MatrixError")
    if check == "no_function":
        return expect_error(bertd.ServerError, lambda: call.no_such_function(1), 2,
                            f"No such function '{module}:no_such_function'")
    if check == "no_module":
        return expect_error(bertd.ServerError, lambda: svc.call.matrix_none.f(), 1, "No such module 'matrix_none'")
    if check == "protocol":
        return expect_error(bertd.ProtocolError, lambda: svc.request_raw(b"\x83\xff\x00"), 2, None)
    return f"unknown check {check}"


def main():
    host, port, table, plan_path = sys.argv[1:5]
    values, errors = load_table(table)
    with open(plan_path, "rb") as f:
        plan = bertd.decode(f.read())
    svc = bertd.Service(host, int(port), timeout=60, persistent=True)
    out = []
    for i, (check, module, name) in enumerate(plan):
        try:
            why = run(svc, str(check), str(module), name, values, errors)
        except Exception as e:  # noqa: BLE001 - every failure is a result, never a crash
            why = f"{type(e).__name__}: {e}"
        out.append(f"ok {i}" if why is None else f"fail {i} {why!r}")
    svc.close()
    out.append("done")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
