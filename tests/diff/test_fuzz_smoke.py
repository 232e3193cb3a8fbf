"""test_fuzz_smoke.py: runs each libFuzzer target in build/fuzz/ briefly from the
seeds in tests/fuzz/seeds and fails on any crash, sanitizer report or leak. The
codec targets run under a memory bound: no single allocation over 64 MB and at
most 1 GB resident, so a decoder or printer whose memory follows a term's shape
rather than its size fails here.

The corpus it grows goes to a temporary directory (never into the seeds), each
run is bounded by -max_total_time and a hard timeout, and the fuzzer process is
gone when the test ends. `make test` builds the targets when clang is present;
a missing target is a failure, not a skip.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEEDS = os.path.join(ROOT, "tests", "fuzz", "seeds")
SECONDS = 6  # per target; four targets keep the smoke under 30 s
MEMORY_BOUND = ["-malloc_limit_mb=64", "-rss_limit_mb=1024"]
# libFuzzer cuts every input, seeds too, to max_len: the longest seed (z_nested_map_keys.bert,
# 7,120 bytes, a shape that once cost check() 40 s here) must run whole. One such seed slower
# than the run leaves too few executions and fails the test.
MAX_LEN = 8192


class FuzzSmokeTest(unittest.TestCase):
    def run_target(self, name, extra=()):
        exe = os.path.join(ROOT, "build", "fuzz", name)
        self.assertTrue(os.path.exists(exe),
                        f"{exe} is missing: build it with `make fuzz-build` (needs clang and libFuzzer; "
                        f"`make test` builds it when ./configure found them)")
        corpus = tempfile.mkdtemp(prefix=f"{name}.")
        try:
            proc = subprocess.run([exe, f"-max_total_time={SECONDS}", f"-max_len={MAX_LEN}", "-print_final_stats=1",
                                   *extra, corpus, SEEDS],
                                  cwd=corpus, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=SECONDS + 60)
        finally:
            shutil.rmtree(corpus, ignore_errors=True)
        out = proc.stdout
        tail = out[-4000:]
        self.assertEqual(proc.returncode, 0, f"{name} exited with {proc.returncode}:\n{tail}")
        for marker in ("ERROR: AddressSanitizer", "ERROR: libFuzzer", "runtime error:", "SUMMARY:",
                       "out-of-memory", "malloc(", "rss limit"):
            self.assertNotIn(marker, out, f"{name} reported a problem:\n{tail}")
        self.assertIn("stat::number_of_executed_units", out, f"{name} did not finish its run:\n{tail}")
        runs = int(out.split("stat::number_of_executed_units:")[1].split()[0])
        self.assertGreater(runs, 1000, f"{name} ran only {runs} inputs")

    def test_fuzz_decode_survives_within_its_memory_bound(self):
        self.run_target("fuzz_decode", MEMORY_BOUND)

    def test_fuzz_print_survives_within_its_memory_bound(self):
        self.run_target("fuzz_print", MEMORY_BOUND)

    def test_fuzz_frame_survives(self):
        self.run_target("fuzz_frame")

    def test_fuzz_connection_state_machine_survives(self):
        self.run_target("fuzz_conn")


if __name__ == "__main__":
    unittest.main()
