"""test_codec_diff.py: the BERT codec against a real Erlang VM, both ways.

bert_diff (C++) encodes edge cases and random terms (funs and bit strings included),
in both float forms; erl rebuilds each term from an independent description and
requires binary_to_term to give it, term_to_binary to give the same bytes and
term_to_binary(T, [{minor_version, 0}]) the Ernie-form bytes. erl then writes random
term_to_binary/1 output (some compressed, some in the minor_version 0 form);
bert_diff must decode it, re-encode identical bytes in both forms, and convert one
form into the other with rewrite_floats. Maps stay at
32 keys or fewer: larger maps are written in hash order by Erlang.
Seeds are random unless BERT_DIFF_SEED is set; failures print the seed. Every erl
started here runs to completion under a timeout; nothing is left behind.
"""
import os
import random
import shutil
import struct
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BERTD_BUILD", "build/rel")
TOOL = os.path.join(ROOT, BUILD, "tests", "diff", "bert_diff")
ERL_SRC = os.path.join(ROOT, "tests", "diff", "bert_diff_erl.erl")
COUNT = 3000
TIMEOUT = 120


class CodecDiffTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="bert_diff.")
        cls.seed = int(os.environ.get("BERT_DIFF_SEED", random.randrange(1, 2**31)))
        cls.compiled = subprocess.run(["erlc", "-o", cls.tmp, ERL_SRC], capture_output=True, text=True,
                                      timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.assertTrue(os.path.exists(TOOL), f"{TOOL} is missing: run make")
        self.assertEqual(self.compiled.returncode, 0, f"erlc failed: {self.compiled.stderr}")

    def erl(self, *args):
        # -run calls bert_diff_erl:F([Args]), which halts with the result; the
        # working directory is the temp dir so a crash dump lands there. erl writes
        # a failure's terms in latin-1, so bytes that are not UTF-8 are escaped: the
        # failure is reported with its seed instead of a UnicodeDecodeError.
        return subprocess.run(["erl", "-noshell", "-noinput", "-pa", self.tmp, "-run", "bert_diff_erl", *args],
                              cwd=self.tmp, capture_output=True, encoding="utf-8", errors="backslashreplace",
                              timeout=TIMEOUT)

    def tool(self, *args):
        return subprocess.run([TOOL, *args], cwd=self.tmp, capture_output=True, encoding="utf-8",
                              errors="backslashreplace", timeout=TIMEOUT)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def test_bert_encodings_are_what_erlang_writes_and_reads(self):
        out = self.path("cpp.txt")
        gen = self.tool("gen", str(self.seed), str(COUNT), out)
        self.assertEqual(gen.returncode, 0, f"bert_diff gen failed (seed {self.seed}): {gen.stderr}")
        check = self.erl("check", out)
        self.assertEqual(check.returncode, 0,
                         f"erl disagrees with bert's encodings (BERT_DIFF_SEED={self.seed}):\n"
                         f"{check.stdout[-6000:]}{check.stderr[-2000:]}")
        self.assertIn(f"checked {COUNT} terms, 0 failures", check.stdout)

    def test_erlang_encodings_decode_and_reencode_identically(self):
        out = self.path("erl.bin")
        gen = self.erl("gen", str(self.seed), str(COUNT), out)
        self.assertEqual(gen.returncode, 0, f"erl gen failed (seed {self.seed}): {gen.stdout}{gen.stderr}")
        check = self.tool("check", out)
        self.assertEqual(check.returncode, 0,
                         f"bert disagrees with term_to_binary/1 (BERT_DIFF_SEED={self.seed}):\n"
                         f"{check.stdout[-6000:]}{check.stderr[-2000:]}")
        self.assertIn(f"checked {COUNT} terms ({COUNT // 5} compressed, {COUNT // 5} in the Ernie form), 0 failures",
                      check.stdout)

    def test_erlang_check_catches_a_wrong_encoding(self):
        # 5 as INTEGER_EXT decodes to 5 but is not what term_to_binary writes;
        # <<131,97,5>> is 5, not the described 6.
        out = self.path("wrong.txt")
        with open(out, "w") as f:
            f.write('{{i,5},"836200000005"}.\n{{i,6},"836105"}.\n{{i,7},"836107"}.\n')
        check = self.erl("check", out)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("checked 3 terms, 2 failures", check.stdout)

    def test_bert_check_catches_a_wrong_encoding(self):
        out = self.path("wrong.bin")
        with open(out, "wb") as f:
            for term in (bytes([131, 98, 0, 0, 0, 5]), bytes([131, 97, 5])):
                f.write(b"\0" + struct.pack(">I", len(term)) + term)
        check = self.tool("check", out)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("checked 2 terms (0 compressed, 0 in the Ernie form), 1 failures", check.stdout)


if __name__ == "__main__":
    unittest.main()
