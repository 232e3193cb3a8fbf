"""test_ruby_bert.py: floats between bertd and Ernie-era software, with Debian's ruby-bert gem 1.1.6 on
both sides of a real bertd. ruby-bert reads and writes floats only as FLOAT_EXT (tag 99) and raises
"Unknown term tag: 70" on NEW_FLOAT_EXT.
  - A client on ruby-bert (bertrpc's way: ruby_bert_client.rb) calls handlers written with bertd's Ruby
    library (FLOAT_EXT by default) and Python library (NEW_FLOAT unless bertd.float_format("ernie")).
  - bertd's Ruby, Python and Erlang clients call a handler on ruby-bert alone (ernie_era_handler.rb, as
    Ernie's own handler library): the Ruby client by default, the others with their switch; without it
    the worker dies on the request and the client gets a server error naming that.
  - bertd's own `float_format: ernie` module option: bertd rewrites one module's floats to FLOAT_EXT both
    ways, so neither side changes. Each server is stopped, its workers with it.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
from harness import Server  # noqa: E402

import bertd  # noqa: E402

LIB = harness.RUBY_LIB
RUBY_BERT_CLIENT = os.path.join(HERE, "ruby_bert_client.rb")
ERNIE_ERA_HANDLER = os.path.join(HERE, "ernie_era_handler.rb")
EBIN = os.path.join(harness.BUILD, "ebin")

# A handler on bertd's Ruby library, module `rb`.
RUBY_HANDLER = """\
require 'ernie'

module Floats
  def half(x)
    x / 2.0
  end

  def sum(a, b)
    a + b
  end

  def echo(x)
    x
  end
end

Ernie.expose(:rb, Floats)
"""

# A handler on bertd's Python library: `python3 floats.py MODULE [FLOAT_FORMAT]`.
PYTHON_HANDLER = """\
import sys
import bertd

if len(sys.argv) > 2:
    bertd.float_format(sys.argv[2])
bertd.expose(sys.argv[1], {"half": lambda x: x / 2, "sum": lambda a, b: a + b, "echo": lambda x: x})
"""

UNKNOWN_70 = "RuntimeError: Unknown term tag: 70"


def bits(x):
    return struct.pack(">d", x)


def ruby_env():
    """The environment of a program that must see ruby-bert alone: no bertd library on its path."""
    return {k: v for k, v in os.environ.items() if k != "RUBYLIB"}


class Servers(unittest.TestCase):
    config = ""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="bertd-ruby-bert-")
        cls.addClassCleanup(cls.dir.cleanup)
        for name, text in (("floats.rb", RUBY_HANDLER), ("floats.py", PYTHON_HANDLER)):
            with open(os.path.join(cls.dir.name, name), "w") as f:
                f.write(text)
        cls.server = Server(textwrap.dedent(cls.config).format(
            dir=cls.dir.name, python=sys.executable, lib=LIB, old=ERNIE_ERA_HANDLER,
            rewrite="float_format: ernie"))
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()


class RubyBertClient(Servers):
    """A client on ruby-bert calls handlers on bertd's libraries."""

    config = """\
        listen: 127.0.0.1
        modules:
          - name: rb
            command: ruby -I {lib} {dir}/floats.rb
          - name: py
            command: {python} {dir}/floats.py py
          - name: py_ernie
            command: {python} {dir}/floats.py py_ernie ernie
          - name: py_rewritten
            command: {python} {dir}/floats.py py_rewritten
            {rewrite}
        """

    def calls(self, *calls):
        p = subprocess.run(["ruby", RUBY_BERT_CLIENT, str(self.server.port), json.dumps(calls)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                           env=ruby_env(), stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)
        return [json.loads(line) for line in p.stdout.splitlines()]

    def test_reads_the_floats_of_a_handler_on_bertds_ruby_library(self):
        half, total, echoed = self.calls(["rb", "half", [5]], ["rb", "sum", [0.1, 0.2]],
                                         ["rb", "echo", [[2.5, -0.0]]])
        self.assertEqual(half, {"value": 2.5})
        # Written with Erlang's 21 digits, so every bit of the handler's double arrives.
        self.assertEqual(total, {"value": 0.30000000000000004})
        self.assertEqual([bits(x) for x in echoed["value"]], [bits(2.5), bits(-0.0)])

    def test_reads_the_floats_of_a_python_handler_switched_to_ernie(self):
        self.assertEqual(self.calls(["py_ernie", "half", [5]], ["py_ernie", "sum", [0.1, 0.2]]),
                         [{"value": 2.5}, {"value": 0.30000000000000004}])

    def test_cannot_read_a_python_handler_left_on_new_float(self):
        # What happens without bertd.float_format("ernie"): ruby-bert fails on the answer.
        self.assertEqual(self.calls(["py", "half", [5]]), [{"raised": UNKNOWN_70}])
        # Answers without floats are read as ever.
        self.assertEqual(self.calls(["py", "echo", [[1, "text"]]]), [{"value": [1, "text"]}])

    def test_reads_a_python_handler_on_new_float_behind_the_module_option(self):
        self.assertEqual(self.calls(["py_rewritten", "half", [5]]), [{"value": 2.5}])


class ErnieEraHandler(Servers):
    """bertd's clients call a handler on ruby-bert alone (Ernie's handler library)."""

    config = """\
        listen: 127.0.0.1
        modules:
          - name: old
            command: ruby {old}
          - name: old_rewritten
            command: ruby {old} old_rewritten
            {rewrite}
        """

    def ruby_client(self, float_format=None):
        option = f", float_format: :{float_format}" if float_format else ""
        program = textwrap.dedent(f"""\
            require 'json'
            require 'bertd/client'
            svc = BERTD::Service.new('127.0.0.1', {self.server.port}, timeout: 20{option})
            old = svc.call.old
            puts JSON.generate([old.echo(2.5), old.half(5), old.kind(2.5), old.sum(0.1, 0.2)])
            """)
        p = subprocess.run(["ruby", "-I", LIB, "-e", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_bertds_ruby_client_is_read_by_default(self):
        echoed, half, kind, total = self.ruby_client()
        self.assertEqual((echoed, half, kind), (2.5, 2.5, "Float"))
        # The handler's own ruby-bert writes 16 digits: 0.1 + 0.2 comes back as 0.3, as under Ernie.
        self.assertEqual(total, 0.3)

    def test_bertds_python_client_is_read_with_float_format_ernie(self):
        svc = self.server.service(float_format="ernie")
        self.assertEqual(svc.call.old.echo(2.5), 2.5)
        self.assertEqual(svc.call.old.kind([1.5]), b"Array")
        self.assertEqual(svc.call.old.echo([0.5, (-0.0,)]), [0.5, (-0.0,)])

    def test_bertds_erlang_client_is_read_with_float_format_ernie(self):
        program = (f'true = code:add_patha("{EBIN}"), '
                   f'R = bertd_client:call({{"127.0.0.1", {self.server.port}, [{{float_format, ernie}}, '
                   f'{{timeout, 20000}}]}}, old, half, [5]), io:format("~p~n", [R]), halt().')
        p = subprocess.run(["erl", "-noshell", "-eval", program], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(p.stdout.strip(), "{ok,2.5}", p.stderr)

    def test_without_the_switch_the_worker_dies_on_the_request_and_the_client_is_told(self):
        restarts = int(self.server.stats().get("workers.restarts.old", 0))
        with self.assertRaises(bertd.ServerError) as caught:
            self.server.service().call.old.echo(2.5)
        self.assertEqual(caught.exception.code, 0)
        self.assertIn("the handler worker for 'old' exited while serving this request",
                      caught.exception.message)
        # Why it died is in bertd's log: the worker's stderr.
        harness.wait_until(lambda: "Unknown term tag: 70" in self.server.log(), what="the worker's error")
        harness.wait_until(lambda: int(self.server.stats().get("workers.restarts.old", 0)) > restarts,
                           what="the worker's restart")
        # bertd started another worker: with the switch the module works again.
        self.assertEqual(self.server.service(float_format="ernie").call.old.echo(2.5), 2.5)

    def test_bertds_python_client_is_read_without_its_switch_behind_the_module_option(self):
        self.assertEqual(self.server.service().call.old_rewritten.echo(2.5), 2.5)
        self.assertEqual(self.server.service().call.old_rewritten.sum(0.25, 0.5), 0.75)


if __name__ == "__main__":
    unittest.main()
