"""test_cpp_install.py: `make install DESTDIR=...` gives a usable tree: a program built only from the
installed headers and `pkg-config --cflags --libs bertd` handles a request and calls a server; bertc,
the Erlang client's beam and the Python and Ruby libraries are there and load. Runs make in the tree.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from fake_server import FakeServer, reply  # noqa: E402

SANITIZE = os.environ.get("BERTD_BUILD", "build/rel").rstrip("/").endswith("san")

PROGRAM = r'''
#include <cstdio>
#include <cstdlib>

#include <bert/codec.h>
#include <bert/printer.h>
#include <bertd/client.h>
#include <bertd/handler.h>

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    bertd::Handler h;
    h.expose("calc", "add", 2, [](bertd::Args a) { return bert::Term(a[0].as_int() + a[1].as_int()); });
    auto request = bert::Term::tuple({bert::Term::atom("call"), bert::Term::atom("calc"), bert::Term::atom("add"),
                                      bert::Term::list({1, 2})});
    bert::Term answer;
    if (bert::decode(*h.handle(bert::encode(request)), answer)) return 1;
    std::printf("%s\n", bert::to_string(answer).c_str());
    bertd::Client c("127.0.0.1", static_cast<uint16_t>(std::atoi(argv[1])));
    std::printf("%s\n", bert::to_string(c.call("calc", "add", {40, 2})).c_str());
    return 0;
}
'''


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dest = tempfile.mkdtemp(prefix="bertd-install-")
        cls.addClassCleanup(shutil.rmtree, cls.dest, True)
        p = subprocess.run(["make", "-C", ROOT, "install", f"DESTDIR={cls.dest}", f"SANITIZE={int(SANITIZE)}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        if p.returncode != 0:
            raise AssertionError(f"make install failed:\n{p.stdout[-3000:]}")
        pcs = [os.path.join(d, f) for d, _, files in os.walk(cls.dest) for f in files if f == "bertd.pc"]
        assert len(pcs) == 1, pcs
        cls.pkgconfig = os.path.dirname(pcs[0])
        cls.prefix = os.path.dirname(os.path.dirname(cls.pkgconfig))  # <prefix>/lib/pkgconfig
        cls.data = os.path.join(cls.prefix, "share", "bertd")

    def test_a_program_builds_from_the_installed_headers_and_pkg_config(self):
        env = dict(os.environ, PKG_CONFIG_PATH=self.pkgconfig)
        flags = subprocess.run(["pkg-config", f"--define-variable=prefix={self.prefix}", "--cflags", "--libs",
                                "bertd"], env=env, stdout=subprocess.PIPE, text=True, check=True).stdout.split()
        self.assertIn(f"-I{self.prefix}/include/bertd", flags)
        for flag in flags:  # nothing may come from the source tree
            self.assertNotIn(ROOT, flag)
        src = os.path.join(self.dest, "tiny.cc")
        with open(src, "w") as f:
            f.write(PROGRAM)
        exe = os.path.join(self.dest, "tiny")
        san = ["-fsanitize=address,undefined"] if SANITIZE else []
        p = subprocess.run(["g++", "-Wall", "-Wextra", "-o", exe, src] + flags + san, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout)
        self.assertEqual(p.stdout, "", "no warnings from the installed headers")
        server = FakeServer(lambda conn, req, body: reply(sum(req[3])))
        self.addCleanup(server.close)
        out = subprocess.run([exe, str(server.port)], stdout=subprocess.PIPE, text=True, timeout=30, check=True)
        self.assertEqual(out.stdout, "{reply,3}\n42\n")

    def test_bertc_and_the_other_languages_libraries_are_installed(self):
        bertc = os.path.join(self.prefix, "bin", "bertc")
        help_text = subprocess.run([bertc, "--help"], stdout=subprocess.PIPE, text=True, check=True).stdout
        self.assertIn("call|cast MODULE FUNCTION", help_text)
        with open(os.path.join(ROOT, "debian", "changelog")) as f:  # the version, written once
            version = f.readline().split("(", 1)[1].split(")", 1)[0]
        ebin = os.path.join(self.prefix, "lib", "erlang", "lib", f"bertd-{version}", "ebin")
        subprocess.run(["erl", "-noshell", "-pa", ebin, "-eval",
                        "{module, bertd_client} = code:ensure_loaded(bertd_client), halt()."],
                       check=True, timeout=60, stdin=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-c", "import bertd; bertd.Service"], check=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.path.join(self.data, "python")),
                       cwd=self.dest)
        subprocess.run(["ruby", "-I", os.path.join(self.data, "ruby", "lib"), "-e",
                        "require 'bertd/client'; require 'ernie'; BERTD::Service; Ernie.auto_start = false"],
                       check=True, timeout=60)
        self.assertFalse(os.path.exists(os.path.join(self.data, "python", "tests")), "tests are not installed")


if __name__ == "__main__":
    unittest.main()
