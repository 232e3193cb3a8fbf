#!/usr/bin/env python3
"""sizes.py: no function in src/ over 60 lines and no file over 600 (issue 11).

Usage: tests/lint/sizes.py [--all] [--allow FILE] [ROOT]
Prints each offender as `path:line: what` and exits 1 when one is not named in the
allow-list (tests/lint/sizes-allow.txt unless --allow); --all prints the allowed ones too. A function's length runs
from the first line of its signature (template line included) to its closing brace. It
reads C++ with a small scanner (comments, strings, raw strings, char literals and digit
separators skipped; braces matched), not a compiler: a construct it misreads is a bug here.
"""
import os
import re
import sys

MAX_FUNCTION = 60
MAX_FILE = 600
HERE = os.path.dirname(os.path.abspath(__file__))


def blank_out(text):
    """The text with comments, string and char literals and preprocessor lines replaced
    by spaces (newlines kept), so braces and parentheses in them do not count."""
    out = list(text)
    i, n = 0, len(text)
    line_start = True

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if line_start and c == "#":
            j = i
            while j < n and not (text[j] == "\n" and text[j - 1] != "\\"):
                j += 1
            blank(i, j)
            i = j
            continue
        if c == "\n":
            line_start = True
            i += 1
            continue
        if not c.isspace():
            line_start = False
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif c == "R" and i + 1 < n and text[i + 1] == '"' and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_") and text[i - 1] not in "u8LU"):
            m = re.match(r'R"([^()\\ ]{0,16})\(', text[i:])
            if not m:
                i += 1
                continue
            end = text.find(")" + m.group(1) + '"', i + m.end())
            j = n if end < 0 else end + len(m.group(1)) + 2
            blank(i, j)
            i = j
        elif c == '"' or (c == "'" and not in_number(text, i)):
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            blank(i, j)
            i = j
        else:
            i += 1
    return "".join(out)


def in_number(text, i):
    """Whether the ' at i is a digit separator (100'000) rather than a char literal."""
    j = i
    while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_'."):
        j -= 1
    return j < i and text[j].isdigit()


def matching(code, i):
    """The index of the } that closes the { at i (len(code) when none does)."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


def function_name(header):
    """The (qualified) name before the parameter list, e.g. Link::setup_reply."""
    depth = 0
    for k, ch in enumerate(header):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif ch == "(" and depth == 0:
            before = header[:k].rstrip()
            m = re.search(r"((?:[A-Za-z_~][\w]*\s*::\s*)*(?:operator\s*\S+|~?[A-Za-z_]\w*))$", before)
            if m:
                return re.sub(r"\s+", "", m.group(1))
            if before.endswith("operator()"):
                return "operator()"
            return "?"
    return "?"


def functions(code):
    """Yields (name, first_line, last_line) of every function defined at namespace or
    class scope (lambdas and local classes count as part of the function they are in)."""
    line_of = [0] * (len(code) + 1)
    ln = 1
    for k, ch in enumerate(code):
        line_of[k] = ln
        if ch == "\n":
            ln += 1
    line_of[len(code)] = ln

    def scan(a, b):
        header_start = a
        i = a
        while i < b:
            ch = code[i]
            if ch in ";}":
                header_start = i + 1
            elif ch == "{":
                acc = list(re.finditer(r"\b(public|private|protected)\s*:(?!:)", code[header_start:i]))
                if acc:
                    header_start += acc[-1].end()
                header = code[header_start:i]
                h = header.strip()
                h_flat = re.sub(r"\s+", " ", h)
                close = matching(code, i)
                if re.match(r"^(namespace\b|extern\s*$|inline namespace\b)", h_flat) or h_flat.startswith("extern "):
                    yield from scan(i + 1, close)
                elif re.match(r"^(template\s*<.*>\s*)?(typedef\s+)?(class|struct|union|enum)\b", h_flat) and "(" not in h_flat.split(":")[0]:
                    yield from scan(i + 1, close)
                elif "(" in h_flat and not re.search(r"=\s*$", h_flat):
                    # A constructor's member initialiser a_{x} is not the body: the body's
                    # brace is the one not followed by ',' or '{'.
                    j = close
                    while True:
                        k = j + 1
                        while k < b and code[k].isspace():
                            k += 1
                        if k < b and code[k] in ",{":
                            nxt = code.find("{", k) if code[k] == "," else k
                            if nxt < 0:
                                break
                            j = matching(code, nxt)
                            continue
                        break
                    first = header_start + (len(header) - len(header.lstrip()))
                    yield function_name(h_flat), line_of[first], line_of[j]
                    close = j
                i = close
                header_start = close + 1
            i += 1

    yield from scan(0, len(code))


def offenders(root):
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "src")):
        dirnames.sort()
        for f in sorted(filenames):
            if not f.endswith((".cc", ".h")):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
            if lines > MAX_FILE:
                yield rel, None, 1, f"the file is {lines} lines (limit {MAX_FILE})"
            for name, first, last in functions(blank_out(text)):
                if last - first + 1 > MAX_FUNCTION:
                    yield rel, name, first, f"{name} is {last - first + 1} lines (limit {MAX_FUNCTION})"


def read_allow(path):
    """`path` (a whole file) or `path:Function::name`, then a reason, one per line."""
    allowed = {}
    if not os.path.exists(path):
        return allowed
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, reason = line.partition(" ")
            if not reason.strip():
                sys.exit(f"{path}:{n}: `{key}` has no reason")
            allowed[key] = n
    return allowed


def main(argv):
    show_all = "--all" in argv
    args = [a for a in argv if a != "--all"]
    allow_path = os.path.join(HERE, "sizes-allow.txt")
    if "--allow" in args:
        k = args.index("--allow")
        if k + 1 >= len(args):
            sys.exit("--allow needs a file")
        allow_path = args[k + 1]
        del args[k : k + 2]
    root = os.path.abspath(args[0]) if args else os.path.dirname(os.path.dirname(HERE))
    allowed = read_allow(allow_path)
    used = set()
    bad = 0
    for rel, name, line, what in offenders(root):
        key = rel if name is None else f"{rel}:{name}"
        if key in allowed:
            used.add(key)
            if show_all:
                print(f"{rel}:{line}: {what} (allowed)")
            continue
        bad += 1
        print(f"{rel}:{line}: {what}")
    for key in sorted(set(allowed) - used):
        print(f"{os.path.relpath(allow_path, root)}:{allowed[key]}: `{key}` is within the limits now: "
              "remove it from the allow-list")
    if bad:
        print(f"{bad} over the limits (a function over {MAX_FUNCTION} lines, a file over {MAX_FILE})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
