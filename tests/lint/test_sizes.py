"""test_sizes.py: src/ keeps to the size limits of issue 11 (tests/lint/sizes.py), and the
checker finds what it must on a tree made for it."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = os.path.join(HERE, "sizes.py")


def body(n):
    """n lines of statements."""
    return "".join(f"    x += {k};\n" for k in range(n))


class Sizes(unittest.TestCase):
    def check(self, root, *extra):
        p = subprocess.run([sys.executable, SIZES, *extra, root], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout

    def tree(self, files):
        root = tempfile.mkdtemp(prefix="bertd-sizes-")
        self.addCleanup(shutil.rmtree, root)
        for rel, text in files.items():
            path = os.path.join(root, "src", rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return root

    def test_no_function_in_src_is_over_60_lines_and_no_file_over_600_beyond_the_allow_list(self):
        rc, out = self.check(ROOT)
        self.assertEqual(rc, 0, out)

    def test_a_function_of_61_lines_is_reported_from_its_signature_to_its_brace_and_one_of_60_is_not(self):
        # 2 signature lines + 57 statements + the brace = 60; one more statement = 61.
        text = ("namespace a {\n"
                "int Thing::fits(int x,\n"
                "                int y) const {\n" + body(57) + "}\n"
                "template <class T>\n"
                "T too_long(T x) {\n" + body(58) + "}\n"
                "}  // namespace a\n")
        rc, out = self.check(self.tree({"x.cc": text}), "--allow", os.devnull)
        self.assertEqual(rc, 1, out)
        self.assertIn("src/x.cc:62: too_long is 61 lines", out)
        self.assertNotIn("fits", out)

    def test_braces_in_strings_comments_and_member_initialisers_do_not_end_or_start_a_function(self):
        text = ("struct S {\n"
                "    S(int v) : a_{v}, b_(v) {\n"
                '        const char* s = "}}}"; char c = \'}\'; int n = 100\'000; // }\n'
                '        auto r = R"x(} { })x"; /* } */\n' + body(60) + "    }\n"
                "    int a_, b_;\n"
                "};\n"
                "void after() {}\n")
        rc, out = self.check(self.tree({"y.h": text}), "--allow", os.devnull)
        self.assertEqual(rc, 1, out)
        self.assertIn("src/y.h:2: S is 64 lines", out)
        self.assertNotIn("after", out)

    def test_a_file_over_600_lines_is_reported_unless_the_allow_list_names_it_with_a_reason(self):
        root = self.tree({"big.cc": "int x;\n" * 601, "ok.cc": "int y;\n" * 600})
        rc, out = self.check(root, "--allow", os.devnull)
        self.assertEqual(rc, 1, out)
        self.assertIn("src/big.cc:1: the file is 601 lines", out)
        self.assertNotIn("ok.cc", out)
        allow = os.path.join(root, "allow.txt")
        with open(allow, "w") as f:
            f.write("src/big.cc being split elsewhere\n")
        self.assertEqual(self.check(root, "--allow", allow)[0], 0)
        with open(allow, "w") as f:
            f.write("src/big.cc\n")
        rc, out = self.check(root, "--allow", allow)
        self.assertNotEqual(rc, 0)
        self.assertIn("has no reason", out)


if __name__ == "__main__":
    unittest.main()
