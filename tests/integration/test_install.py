"""test_install.py: what ships: man pages that render cleanly, and `make install` with DESTDIR."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import ROOT


def version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        return f.readline().split("(", 1)[1].split(")", 1)[0]


class ManPages(unittest.TestCase):
    def test_man_pages_render_without_warnings(self):
        for page in ("man/bertd.8", "man/bertd.yaml.5", "man/bertc.1"):
            r = subprocess.run(["groff", "-ww", "-z", "-man", os.path.join(ROOT, page)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertEqual(r.stdout, "", f"{page}: {r.stdout}")

    def test_bertd_man_page_documents_every_option(self):
        text = open(os.path.join(ROOT, "man", "bertd.8")).read()
        for opt in ("\\-c", "\\-p", "\\-l", "\\-a", "\\-d", "\\-P", "\\-\\-name", "\\-\\-sname", "\\-E", "\\-t",
                    "\\-\\-cookie",
                    "reload\\-handlers", ".B stats", ".B halt", ".B HUP", ".B USR1", ".B QUIT"):
            self.assertIn(opt, text)


class Install(unittest.TestCase):
    def test_make_install_with_destdir(self):
        dest = tempfile.mkdtemp(prefix="bertd-install-")
        self.addCleanup(shutil.rmtree, dest, True)
        build = os.environ.get("BERTD_BUILD", "build/rel")
        san = ["SANITIZE=1"] if build.endswith("san") else []
        r = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}"] + san, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout)
        prefix = None
        for line in open(os.path.join(ROOT, "config.mk")):
            if line.startswith("PREFIX ="):
                prefix = line.split("=", 1)[1].strip()
        root = dest + prefix
        for path in ("sbin/bertd", "bin/bertc", "share/man/man8/bertd.8", "share/man/man5/bertd.yaml.5",
                     "share/man/man1/bertc.1", f"lib/erlang/lib/bertd-{version()}/ebin/bertd_native.beam",
                     "lib/pkgconfig/bertd.pc", "include/bertd/bert/codec.h"):
            self.assertTrue(os.path.exists(os.path.join(root, path)), path)
        r = subprocess.run([os.path.join(root, "sbin", "bertd"), "-v"], stdout=subprocess.PIPE, text=True)
        self.assertTrue(r.stdout.startswith("bertd "))
        # `man bertd` finds the installed page.
        r = subprocess.run(["man", "-M", os.path.join(root, "share", "man"), "-w", "bertd"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertTrue(r.stdout.strip().endswith("man8/bertd.8"), r.stdout)


if __name__ == "__main__":
    unittest.main()
