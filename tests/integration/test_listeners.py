"""test_listeners.py: several listeners (issue 17): `listen` as a list of IPv4, IPv6 and unix
socket entries, each served by every acceptor; a unix socket's mode, its file replaced when a dead
server left it and removed at stop; reloads that add, keep and drop listeners without closing the
ones that stay. Real bertd processes on free loopback ports.
"""
import os
import shutil
import signal
import socket
import stat
import struct
import unittest

from harness import Server, echo_config, free_port, read_frame, run_bertd, wait_until
from loadrun import Load

import bertd


def frame(term):
    body = bertd.encode(term)
    return struct.pack(">I", len(body)) + body


def call_on(sock, value=b"x"):
    """echo:echo(value) on an open socket; the decoded answer."""
    A = bertd.Atom
    sock.sendall(frame((A("call"), A("echo"), A("echo"), [value])))
    return read_frame(sock, strict=True)


def connect(address):
    """A connected socket to "unix:/path", ("127.0.0.1", port) or ("::1", port)."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(address[len("unix:"):])
        return s
    fam = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(address)
    return s


def echo_on(address, value=b"x"):
    with connect(address) as s:
        return call_on(s, value)


def unstarted(test, port=None):
    """A Server not yet started, for its directory: the test writes its config there."""
    s = Server("", port=port)
    test.addCleanup(shutil.rmtree, s.dir, True)
    test.addCleanup(s.stop)
    return s


def write(s, text):
    with open(s.config_path, "w") as f:
        f.write(text)


def tcp_sockets(port, state):
    """Inodes of the TCP sockets whose local port is `port` in `state` ("0A": listening,
    "01": established), from /proc/net/tcp and tcp6."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == state:
                    out.add(cols[9])
    return out


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[len("socket:["):-1])
    return out


class Listeners(unittest.TestCase):
    def server(self, text, **kw):
        s = Server(text, **kw)
        self.addCleanup(s.stop)
        return s.start()

    def test_every_listener_of_a_list_serves_tcp_ipv6_and_unix(self):
        port, port2, port6 = free_port(), free_port(), free_port()
        s = unstarted(self, port)
        sock = os.path.join(s.dir, "b.sock")
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f'"127.0.0.1:{port2}"', f'"[::1]:{port6}"',
                                 f'{{address: "unix:{sock}", mode: "0600"}}']))
        s.start()
        self.assertEqual(echo_on(("127.0.0.1", port)), (bertd.Atom("reply"), b"x"))
        self.assertEqual(echo_on(("127.0.0.1", port2)), (bertd.Atom("reply"), b"x"))
        self.assertEqual(echo_on(("::1", port6)), (bertd.Atom("reply"), b"x"))
        self.assertEqual(echo_on("unix:" + sock), (bertd.Atom("reply"), b"x"))
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)
        self.assertTrue(stat.S_ISSOCK(os.stat(sock).st_mode))
        self.assertIn(f"127.0.0.1:{port}, 127.0.0.1:{port2}, [::1]:{port6}, unix:{sock}", s.log())
        s.stop(signal.SIGQUIT, timeout=10)
        self.assertFalse(os.path.exists(sock), "the unix socket file outlived the server")

    def test_ernies_listen_with_port_still_works(self):
        s = self.server(echo_config())
        self.assertEqual(echo_on(("127.0.0.1", s.port)), (bertd.Atom("reply"), b"x"))

    def test_a_unix_socket_file_a_dead_server_left_is_replaced(self):
        port = free_port()
        s = unstarted(self, port)
        path = os.path.join(s.dir, "stale.sock")
        left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        left.bind(path)  # bound, never listening, then closed: as a killed server leaves it
        left.close()
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f"unix:{path}"]))
        s.start()
        self.assertEqual(echo_on("unix:" + path), (bertd.Atom("reply"), b"x"))

    def test_a_file_that_is_not_a_socket_is_never_removed(self):
        port = free_port()
        s = unstarted(self, port)
        path = os.path.join(s.dir, "data")
        with open(path, "w") as f:
            f.write("precious")
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f"unix:{path}"]))
        rc, out, err = run_bertd(["-c", s.config_path, "-p", str(port)])
        self.assertNotEqual(rc, 0)
        self.assertIn("not a socket", err)
        with open(path) as f:
            self.assertEqual(f.read(), "precious")

    def test_a_reload_adds_and_drops_listeners_and_keeps_the_others_open(self):
        port, added = free_port(), free_port()
        s = unstarted(self, port)
        sock = os.path.join(s.dir, "b.sock")
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f"unix:{sock}"]))
        s.start()
        kept = connect(("127.0.0.1", port))  # an open connection lives through the reload
        self.assertEqual(call_on(kept), (bertd.Atom("reply"), b"x"))
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f"127.0.0.1:{added}"]))
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in s.log(), timeout=10, what="the reload")
        self.assertEqual(echo_on(("127.0.0.1", added)), (bertd.Atom("reply"), b"x"))
        self.assertEqual(echo_on(("127.0.0.1", port)), (bertd.Atom("reply"), b"x"))
        self.assertEqual(call_on(kept, b"y"), (bertd.Atom("reply"), b"y"))
        kept.close()
        wait_until(lambda: not os.path.exists(sock), timeout=5, what="the dropped unix socket's file to go")

    def test_a_reload_onto_a_port_in_use_is_refused_and_the_old_listeners_stay(self):
        port = free_port()
        s = unstarted(self, port)
        write(s, echo_config(listen=[f"127.0.0.1:{port}"]))
        s.start()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        write(s, echo_config(listen=[f"127.0.0.1:{port}", f"127.0.0.1:{busy.getsockname()[1]}"]))
        os.kill(s.proc.pid, signal.SIGHUP)
        wait_until(lambda: "reload refused" in s.log(), timeout=10, what="the refused reload")
        self.assertEqual(echo_on(("127.0.0.1", port)), (bertd.Atom("reply"), b"x"))

    def test_each_acceptor_accepts_on_its_own_socket_and_connections_reach_all_of_them(self):
        port = free_port()
        s = unstarted(self, port)
        write(s, echo_config(acceptors=3, listen=f"127.0.0.1:{port}"))
        s.start()
        # One SO_REUSEPORT member per acceptor: the kernel gives each connection to one of them.
        self.assertEqual(len(tcp_sockets(port, "0A")), 3)
        socks = [connect(("127.0.0.1", port)) for _ in range(60)]
        try:
            for c in socks:
                self.assertEqual(call_on(c), (bertd.Atom("reply"), b"x"))
            established = tcp_sockets(port, "01")
            per_acceptor = [len(socket_inodes(pid) & established) for pid in s.acceptor_pids()]
            self.assertEqual(sum(per_acceptor), 60, per_acceptor)
            self.assertTrue(all(n > 0 for n in per_acceptor), per_acceptor)  # 3^-59 to fail by chance
        finally:
            for c in socks:
                c.close()

    def test_a_second_bertd_on_a_port_a_reuseport_group_holds_is_refused(self):
        port = free_port()
        s = unstarted(self, port)
        write(s, echo_config(listen=f"127.0.0.1:{port}"))
        s.start()
        code, _, err = run_bertd(["-c", s.config_path, "-p", str(port)])
        self.assertNotEqual(code, 0)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}: Address already in use", err)
        self.assertEqual(echo_on(("127.0.0.1", port)), (bertd.Atom("reply"), b"x"))

    def test_reloads_that_change_the_acceptor_count_lose_no_connection(self):
        port = free_port()
        s = unstarted(self, port)
        write(s, echo_config(listen=f"127.0.0.1:{port}"))
        s.start()
        load = Load(self, port, 5, connections=16, mode="connect")
        for n in (3, 1, 4, 2):
            write(s, echo_config(acceptors=n, listen=f"127.0.0.1:{port}"))
            os.kill(s.proc.pid, signal.SIGHUP)
            wait_until(lambda: len(s.acceptor_pids()) == n, timeout=10, what=f"{n} acceptors")
        result = load.result()
        self.assertGreater(result["requests"], 500, result)
        self.assertEqual(result["errors"], 0, result)
        # Members are only added while the address stays: none closed with connections queued on it.
        self.assertEqual(len(tcp_sockets(port, "0A")), 4)
        self.assertEqual(echo_on(("127.0.0.1", port)), (bertd.Atom("reply"), b"x"))

    def test_a_bad_listen_entry_stops_the_start_with_file_and_line(self):
        s = unstarted(self)
        write(s, echo_config(listen=["127.0.0.1:1", "localhost:2"]))
        rc, out, err = run_bertd(["-t", "-c", s.config_path])
        self.assertNotEqual(rc, 0)
        self.assertIn("bertd.yaml:3", err)
        self.assertIn("not a numeric", err)


if __name__ == "__main__":
    unittest.main()
