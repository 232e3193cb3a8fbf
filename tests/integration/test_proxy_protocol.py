"""test_proxy_protocol.py: the PROXY protocol on a listener (issue 17), against a real bertd: v1
and v2 headers as HAProxy writes them give the client's address to the extended access log and
the admin allow-list; a connection without a valid header, with a slow one, or from an address
not in proxy_protocol_from is closed with a protocol error and a reason in the error log, and
none of them holds up other clients; a reload hands connections over with their client.
"""
import os
import shutil
import signal
import socket
import struct
import time
import unittest

from harness import Server, echo_config, free_port, read_frame, wait_until

import bertd

A = bertd.Atom
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src="192.0.2.7", sport=56324, dst="127.0.0.1", dport=8000):
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="198.51.100.9", sport=40000, dst="127.0.0.1", dport=8000, tlvs=b""):
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        fam = 0x21
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
        fam = 0x11
    body = addrs + struct.pack(">HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


def v2_local():
    return V2_SIG + bytes([0x20, 0x00]) + struct.pack(">H", 0)


def frame(term):
    body = bertd.encode(term)
    return struct.pack(">I", len(body)) + body


def call(fn="echo", args=(b"x",), mod="echo"):
    return frame((A("call"), A(mod), A(fn), list(args)))


def closed(sock, timeout=5):
    """True once bertd closed the connection (whatever it sent first is read and dropped)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except OSError:
        return False


class ProxyProtocol(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.plain, cls.proxied = free_port(), free_port()
        s = Server("", port=cls.plain)
        cls.access = os.path.join(s.dir, "access.log")
        with open(s.config_path, "w") as f:
            f.write(echo_config(f"access_log: {cls.access}\naccess_log_format: extended\n"
                                "admin_allow: [192.0.2.200]\nlimits: {proxy_header_timeout: 1s}",
                                listen=[f"127.0.0.1:{cls.plain}",
                                        f'{{address: "127.0.0.1:{cls.proxied}", proxy_protocol: true}}']))
        cls.server = s.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.server.dir, True)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.proxied), timeout=10)
        self.addCleanup(s.close)
        return s

    def access_line_with(self, marker):
        def find():
            try:
                with open(self.access) as f:
                    return next((line for line in f if marker in line), None)
            except OSError:
                return None
        return wait_until(find, timeout=5, what=f"an access log line with {marker}")

    def error_log_says(self, text):
        wait_until(lambda: text in self.server.log(), timeout=5, what=f"'{text}' in the error log")

    def test_a_v1_header_gives_the_client_address_to_the_access_log(self):
        s = self.connect()
        s.sendall(v1("192.0.2.7", 56324, dport=self.proxied) + call(args=[b"v1-client"]))
        self.assertEqual(read_frame(s), (A("reply"), b"v1-client"))
        line = self.access_line_with("v1-client")
        self.assertRegex(line, r"^ACC \[[^]]+\] [0-9.]+ [0-9.]+ 192\.0\.2\.7:56324 \d+ \d+ ext high - ")

    def test_a_v2_header_and_the_request_in_one_packet_are_both_read(self):
        s = self.connect()
        s.sendall(v2("2001:db8::9", 1234, "::1", self.proxied) + call(args=[b"v2-client"]))
        self.assertEqual(read_frame(s), (A("reply"), b"v2-client"))
        self.assertIn(" [2001:db8::9]:1234 ", self.access_line_with("v2-client"))
        s.sendall(call(args=[b"v2-again"]))  # the connection goes on as any other
        self.assertEqual(read_frame(s), (A("reply"), b"v2-again"))

    def test_a_header_in_pieces_is_waited_for(self):
        s = self.connect()
        h = v2("198.51.100.20", 5555, tlvs=b"\x01\x00\x07bertrpc")  # an ALPN TLV, skipped
        for i in range(0, len(h), 5):
            s.sendall(h[i:i + 5])
            time.sleep(0.01)
        s.sendall(call(args=[b"pieces"]))
        self.assertEqual(read_frame(s), (A("reply"), b"pieces"))
        self.assertIn(" 198.51.100.20:5555 ", self.access_line_with("pieces"))

    def test_v2_local_keeps_the_balancers_own_address(self):
        s = self.connect()
        s.sendall(v2_local() + call(args=[b"local-check"]))
        self.assertEqual(read_frame(s), (A("reply"), b"local-check"))
        self.assertIn(f" 127.0.0.1:{s.getsockname()[1]} ", self.access_line_with("local-check"))

    def test_the_plain_listener_beside_it_logs_the_socket_peer(self):
        s = socket.create_connection(("127.0.0.1", self.plain), timeout=10)
        self.addCleanup(s.close)
        s.sendall(call(args=[b"plain-client"]))
        self.assertEqual(read_frame(s), (A("reply"), b"plain-client"))
        self.assertIn(f" 127.0.0.1:{s.getsockname()[1]} ", self.access_line_with("plain-client"))

    def test_a_connection_without_a_header_gets_a_protocol_error_and_is_closed(self):
        s = self.connect()
        s.sendall(call(args=[b"no-header"]))
        answer = read_frame(s)
        self.assertEqual(answer[0], A("error"))
        self.assertEqual(answer[1][0:2], (A("protocol"), 1))
        self.assertIn(b"no PROXY header", answer[1][3])
        self.assertTrue(closed(s))
        self.error_log_says("no PROXY header")

    def test_error_log_lines_about_a_client_name_the_address_of_its_proxy_header(self):
        s = self.connect()
        s.sendall(v1("192.0.2.31", 4321, dport=self.proxied) + frame(A("not_a_request")))
        self.assertEqual(read_frame(s)[1][0:2], (A("protocol"), 0))
        self.error_log_says("client 192.0.2.31:4321: a frame of ")
        s = self.connect()
        s.sendall(v2("2001:db8::77", 7777, "::1", self.proxied) + struct.pack(">I", 1 << 31))
        self.assertEqual(read_frame(s)[1][0:2], (A("protocol"), 1))
        self.assertTrue(closed(s))
        self.error_log_says("client [2001:db8::77]:7777: frame of 2147483648 bytes is over the limit")
        s = self.connect()
        s.sendall(v2("198.51.100.78", 7878, dport=self.proxied) + call()[:9])
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(read_frame(s)[1][0:2], (A("protocol"), 2))
        self.error_log_says("client 198.51.100.78:7878: connection closed inside a frame (9 bytes")

    def test_error_log_lines_about_a_client_without_a_header_name_its_socket_peer(self):
        s = socket.create_connection(("127.0.0.1", self.plain), timeout=10)
        self.addCleanup(s.close)
        s.sendall(frame((A("info"), A("priority"), "not a list")) + call(args=[b"after-bad-info"]))
        self.assertEqual(read_frame(s)[0], A("error"))
        self.error_log_says(f"client 127.0.0.1:{s.getsockname()[1]}: a malformed info")
        s2 = socket.create_connection(("127.0.0.1", self.plain), timeout=10)
        self.addCleanup(s2.close)
        s2.sendall(struct.pack(">I", 1 << 31))
        self.assertTrue(closed(s2))
        self.error_log_says(f"client 127.0.0.1:{s2.getsockname()[1]}: frame of 2147483648 bytes is over")

    def test_malformed_headers_are_each_refused_with_their_reason(self):
        cases = [
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fewer than 6 fields"),
            (b"PROXY TCP4 " + b"9" * 200, "107"),
            (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "not TCP4"),
            (V2_SIG + b"\x21\x11\xff\xff", "at most 1024"),
            (v2(tlvs=b"\x01\x00\x50short"), "TLVs"),
            (b"GET / HTTP/1.0\r\n\r\n", "no PROXY header"),
        ]
        for bad, why in cases:
            with self.subTest(why=why):
                s = self.connect()
                s.sendall(bad)
                answer = read_frame(s)
                self.assertEqual(answer[0], A("error"))
                self.assertIn(why.encode(), answer[1][3])
                self.assertTrue(closed(s))

    def test_a_truncated_header_is_closed_when_the_client_leaves(self):
        s = self.connect()
        s.sendall(v2()[:20])
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(closed(s))
        self.error_log_says("ended inside its PROXY header")

    def test_slow_headers_are_closed_at_the_deadline_and_stall_nobody(self):
        slow = []
        for _ in range(40):
            s = self.connect()
            s.sendall(b"PROXY TCP4 ")
            slow.append(s)
        started = time.monotonic()
        fast = self.connect()
        fast.sendall(v1() + call(args=[b"not-stalled"]))
        self.assertEqual(read_frame(fast), (A("reply"), b"not-stalled"))
        # Answered while every slow connection still waits for its deadline (1 s).
        self.assertLess(time.monotonic() - started, 0.9)
        for s in slow:
            self.assertTrue(closed(s, timeout=5))
        self.error_log_says("no whole PROXY header within limits.proxy_header_timeout")

    def test_the_address_from_the_header_decides_admin_calls(self):
        stats = frame((A("call"), A("__admin__"), A("stats"), []))
        s = self.connect()
        s.sendall(v1("192.0.2.7") + stats)  # a remote client, though the balancer is on loopback
        answer = read_frame(s)
        self.assertEqual(answer[0], A("error"))
        self.assertIn(b"admin_allow", answer[1][3])
        s = self.connect()
        s.sendall(v1("192.0.2.200") + stats)  # in admin_allow
        self.assertEqual(read_frame(s)[0], A("reply"))

    def test_a_reload_hands_connections_over_with_their_client(self):
        s = self.connect()
        s.sendall(v1("192.0.2.77", 7777) + call(args=[b"before-reload"]))
        self.assertEqual(read_frame(s), (A("reply"), b"before-reload"))
        before = self.server.log().count("configuration reloaded")
        os.kill(self.server.proc.pid, signal.SIGHUP)
        wait_until(lambda: self.server.log().count("configuration reloaded") > before, timeout=10,
                   what="the reload")
        time.sleep(0.5)  # the old generation hands its idle connections over
        s.sendall(call(args=[b"after-reload"]))
        self.assertEqual(read_frame(s), (A("reply"), b"after-reload"))
        self.assertIn(" 192.0.2.77:7777 ", self.access_line_with("after-reload"))


class ProxyProtocolFrom(unittest.TestCase):
    def test_a_header_from_an_address_not_in_proxy_protocol_from_is_refused(self):
        port = free_port()
        s = Server("", port=port)
        self.addCleanup(shutil.rmtree, s.dir, True)
        self.addCleanup(s.stop)
        with open(s.config_path, "w") as f:
            f.write(echo_config("proxy_protocol_from: [10.0.0.0/8]", count=1, acceptors=None,
                                listen=[f'{{address: "127.0.0.1:{port}", proxy_protocol: true}}']))
        s.wait_workers = False  # stats need a header too
        s.start()
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(c.close)
        c.sendall(v1("192.0.2.7") + call())
        answer = read_frame(c)
        self.assertEqual(answer[0], A("error"))
        self.assertIn(b"not in proxy_protocol_from", answer[1][3])
        self.assertTrue(closed(c))
        wait_until(lambda: "not in proxy_protocol_from" in s.log(), timeout=5, what="the error log line")


if __name__ == "__main__":
    unittest.main()
