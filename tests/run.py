#!/usr/bin/env python3
"""run.py: runs every bertd test (CppUTest units, then integration, differential and
fuzz-smoke tests against real processes, and tests/lint's source checks) and ends with one
line `N passed, N failed`.

Usage: tests/run.py [-k PATTERN] [--unit-only] [--no-unit] [-j N]
The exit status is non-zero when any test failed or a suite could not run.
"""
import argparse
import os
import re
import subprocess
import sys
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BERTD_BUILD", "build/rel")


def run_unit():
    """Runs the CppUTest binary; returns (passed, failed)."""
    exe = os.path.join(ROOT, BUILD, "unit-tests")
    print(f"== unit tests ({exe})", flush=True)
    proc = subprocess.run([exe], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout
    ok = re.search(r"OK \((\d+) tests, (\d+) ran", out)
    bad = re.search(r"Errors \((\d+) failures, (\d+) tests, (\d+) ran", out)
    if ok and proc.returncode == 0:
        print(out.strip().splitlines()[-1] if out.strip() else "", flush=True)
        return int(ok.group(2)), 0
    sys.stdout.write(out)
    if bad:
        failed = int(bad.group(1))
        return int(bad.group(3)) - failed, failed
    print(f"unit tests did not finish (exit {proc.returncode})")
    return 0, 1


def discover(pattern):
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    dirs = [os.path.join(ROOT, "tests", d) for d in ("integration", "diff", "lint")]
    modules = os.path.join(ROOT, "modules")
    for mod in sorted(os.listdir(modules)) if os.path.isdir(modules) else []:
        d = os.path.join(ROOT, "modules", mod, "tests")
        if os.path.isdir(d):
            dirs.append(d)
    for d in dirs:
        if not os.path.isdir(d):
            continue
        found = loader.discover(d, pattern="test_*.py", top_level_dir=d)
        suite.addTests(found)
    if pattern:
        flat = []

        def walk(s):
            for t in s:
                if isinstance(t, unittest.TestSuite):
                    walk(t)
                elif re.search(pattern, t.id()):
                    flat.append(t)

        walk(suite)
        suite = unittest.TestSuite(flat)
    return suite


class CountingResult(unittest.TextTestResult):
    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        dt = time.monotonic() - self._t0
        if dt > 5:
            self.stream.write(f"    ({test.id()} took {dt:.1f}s)\n")


def run_integration(pattern):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, os.path.join(ROOT, "modules", "python"))
    suite = discover(pattern)
    print(f"== integration tests ({suite.countTestCases()})", flush=True)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=CountingResult)
    result = runner.run(suite)
    # A test whose subtests fail is one failed test, however many of them failed.
    failed_ids = {getattr(t, "test_case", t).id() for t, _ in result.failures + result.errors}
    failed = len(failed_ids) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    return passed, failed, skipped


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", dest="pattern", help="run only tests whose id matches this regex")
    ap.add_argument("--no-unit", action="store_true")
    ap.add_argument("--unit-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("BERTD_BUILD", BUILD)
    passed = failed = skipped = 0
    t0 = time.monotonic()
    if not args.no_unit and not args.pattern:
        p, f = run_unit()
        passed += p
        failed += f
    if not args.unit_only:
        p, f, s = run_integration(args.pattern)
        passed += p
        failed += f
        skipped += s
    print(f"== {time.monotonic() - t0:.0f}s")
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
