"""test_print_diff.py: the printer and parser against the real Erlang VM. erl writes a
few thousand random terms (term_to_binary + io_lib:print text); build/*/tests/diff/print_diff
decodes each, prints it and must produce the same bytes, and parses erl's text back to the
same term. The seed is random unless BERTD_DIFF_SEED is set, and is printed on failure.
"""
import os
import random
import re
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BERTD_BUILD", "build/rel")
TOOL = os.path.join(ROOT, BUILD, "tests", "diff", "print_diff")
GEN = os.path.join(ROOT, "tests", "diff", "print_diff_gen.escript")
COUNT = 5000


class PrinterMatchesErlang(unittest.TestCase):
    def test_print_and_parse_agree_with_erl_on_random_terms(self):
        self.assertTrue(os.access(TOOL, os.X_OK), f"{TOOL} is not built (make)")
        self.assertIsNotNone(shutil.which("escript"), "escript (Erlang/OTP) is not installed")
        seed = int(os.environ.get("BERTD_DIFF_SEED", random.randrange(1, 2**31)))
        with tempfile.TemporaryDirectory(prefix="bertd-print-diff-") as tmp:
            data = os.path.join(tmp, "terms.bin")
            gen = subprocess.run(["escript", GEN, str(seed), str(COUNT), data],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            self.assertEqual(gen.returncode, 0, f"generator failed (seed {seed}):\n{gen.stdout}")
            wrote = re.search(r"wrote (\d+) terms", gen.stdout)
            self.assertIsNotNone(wrote, gen.stdout)
            run = subprocess.run([TOOL, data], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 timeout=60)
            out = run.stdout.decode("utf-8", "replace")
            self.assertEqual(run.returncode, 0,
                             f"bertd and erl disagree (rerun with BERTD_DIFF_SEED={seed}):\n{out}")
            # The tool counts what it compared; make sure it saw every term.
            self.assertIn(f"{wrote.group(1)} terms: 0 print mismatches, 0 parse mismatches, 0 bad cuts", out,
                          f"seed {seed}")


if __name__ == "__main__":
    unittest.main()
