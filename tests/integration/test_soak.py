"""test_soak.py: the short soak in the normal suite: 50,000 mixed requests (three modules, C++ and
Python handlers, high and low priority, persistent and connect-per-request clients), then every
bertd process compared with before: flat memory, no descriptor leaks, no restarts, no zombies.
`make soak` runs the same with one million requests (soak.py).
"""
import unittest

import soak


class ShortSoak(unittest.TestCase):
    def test_fifty_thousand_mixed_requests_leave_every_process_as_it_was(self):
        result, problems = soak.soak(50_000, log=lambda *a: None)
        self.assertEqual(problems, [], result)
        self.assertGreaterEqual(result["answered"], 50_000)
        self.assertTrue(all(n > 0 for n in result["requests_by_module"].values()), result["requests_by_module"])
        self.assertGreaterEqual(len(result["processes"]), 8)  # master, 2 acceptors, 5 workers


if __name__ == "__main__":
    unittest.main()
