"""test_pybertd_client.py: the Python BERT-RPC client (bertd.Service, bertd.Connection) against a small
BERP-speaking fake server thread on 127.0.0.1. Tests of the client against a real bertd live in
tests/integration. Every socket and thread started here is closed and joined, even on failure.
"""
import socket
import threading
import time
import unittest

import bertd
from bertd import bert
from bertd.bert import Atom

CALL, CAST, INFO = Atom("call"), Atom("cast"), Atom("info")
REPLY, NOREPLY, ERROR = Atom("reply"), Atom("noreply"), Atom("error")


class FakeServer:
    """Answers calc:add/echo, casts, and a few deliberate failures. Records every frame it reads."""

    def __init__(self, close_after_answer=False):
        self.close_after_answer = close_after_answer
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepts = 0
        self.closed = 0
        self.frames = []  # (connection number, term)
        self.bodies = []  # the frames' bytes
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self.accept_loop, daemon=True)
        self.acceptor.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepts += 1
                number = self.accepts
                self.conns.append(conn)
            t = threading.Thread(target=self.serve, args=(conn, number), daemon=True)
            self.threads.append(t)
            t.start()

    def serve(self, conn, number):
        conn.settimeout(10)
        try:
            while True:
                body = bert.read_berp_bytes(conn)
                if body is None:
                    return
                try:
                    term = bert.decode(body)
                except bert.DecodeError:
                    bert.write_berp(conn, (ERROR, (Atom("protocol"), 2, b"ProtocolError", b"bad data", [])))
                    continue
                with self.lock:
                    self.frames.append((number, term))
                    self.bodies.append(body)
                if term[0] == INFO:
                    continue
                if not self.answer(conn, term) or self.close_after_answer:
                    return
        except (OSError, bert.DecodeError):
            return
        finally:
            conn.close()
            with self.lock:
                self.closed += 1

    def answer(self, conn, term):
        """Writes the answer to term; returns False when the connection must close."""
        kind, module, function, args = term
        if kind == CAST:
            bert.write_berp(conn, (NOREPLY,))
        elif module == "calc" and function == "add":
            bert.write_berp(conn, (REPLY, args[0] + args[1]))
        elif module == "calc" and function == "echo":
            bert.write_berp(conn, (REPLY, args[0]))
        elif module == "err":
            if function == "old":
                bert.write_berp(conn, (ERROR, (Atom("server"), 0, b"old style")))
            else:
                detail = (Atom(function), 7, b"Klass", b"went wrong", [b"a.py:1", b"b.py:2"])
                bert.write_berp(conn, (ERROR, detail))
        elif function == "sleep":
            time.sleep(args[0])
            bert.write_berp(conn, (REPLY, Atom("slept")))
        elif function == "truncate":
            conn.sendall(b"\x00\x00\x00\x10\x83h")
            return False
        elif function == "garbage":
            conn.sendall(b"\x00\x00\x00\x02\x83\xff")
        elif function == "twice":
            # One send, so the extra frame is already there when the client has read the first.
            conn.sendall(bert.encode_berp((REPLY, 1)) + bert.encode_berp((REPLY, Atom("stale"))))
        elif function == "weird":
            bert.write_berp(conn, (Atom("what"),))
        elif function == "hangup":
            return False
        else:
            bert.write_berp(conn, (ERROR, (Atom("server"), 1, b"ServerError", b"No such module", [])))
        return True

    def requests(self):
        with self.lock:
            return list(self.frames)

    def stop(self):
        self.stopping = True
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)
        if self.acceptor.is_alive() or any(t.is_alive() for t in self.threads):
            raise AssertionError("fake server threads did not stop")


class ClientTest(unittest.TestCase):
    def server(self, **kw):
        s = FakeServer(**kw)
        self.addCleanup(s.stop)
        return s

    def service(self, server, **kw):
        kw.setdefault("timeout", 5)
        svc = bertd.Service("127.0.0.1", server.port, **kw)
        self.addCleanup(svc.close)
        return svc


class Calls(ClientTest):
    def test_call_returns_the_result_over_one_connection_per_request(self):
        srv = self.server()
        svc = self.service(srv)
        self.assertEqual(svc.call.calc.add(1, 2), 3)
        self.assertEqual(svc.call.calc.add(2**80, 1), 2**80 + 1)
        self.assertEqual(svc.call.calc.echo([None, {b"k": True}]), [None, {b"k": True}])
        self.assertEqual(srv.accepts, 3)
        self.assertEqual(srv.requests()[0], (1, (CALL, Atom("calc"), Atom("add"), [1, 2])))

    def test_cast_returns_none(self):
        srv = self.server()
        svc = self.service(srv)
        self.assertIsNone(svc.cast.calc.add(1, 2))
        self.assertEqual(srv.requests(), [(1, (CAST, Atom("calc"), Atom("add"), [1, 2]))])

    def test_persistent_service_reuses_one_connection(self):
        srv = self.server()
        svc = self.service(srv, persistent=True)
        for i in range(20):
            self.assertEqual(svc.call.calc.add(i, 1), i + 1)
        self.assertEqual(srv.accepts, 1)

    def test_persistent_service_reconnects_when_the_server_closed_an_idle_connection(self):
        srv = self.server(close_after_answer=True)
        svc = self.service(srv, persistent=True)
        for i in range(5):
            self.assertEqual(svc.call.calc.add(i, 1), i + 1)
            # The next request must find the server's close already there, not race it.
            deadline = time.monotonic() + 5
            while srv.closed < i + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertEqual(srv.closed, i + 1)
        self.assertEqual(srv.accepts, 5)

    def test_persistent_service_never_reads_an_answer_it_did_not_ask_for(self):
        srv = self.server()
        svc = self.service(srv, persistent=True)
        self.assertEqual(svc.call.x.twice(), 1)
        self.assertEqual(svc.call.calc.add(1, 1), 2)
        self.assertEqual(srv.accepts, 2)

    def test_float_format_ernie_sends_float_ext_and_answers_read_in_either_form(self):
        srv = self.server()
        old = b"c2.50000000000000000000e+00\0\0\0\0\0"
        self.assertEqual(self.service(srv, float_format="ernie").call.calc.echo(2.5), 2.5)
        self.assertEqual(self.service(srv, float_format="ernie", priority="low").call.calc.echo([0.5]), [0.5])
        self.assertEqual(self.service(srv).call.calc.echo(2.5), 2.5)
        with bertd.Connection("127.0.0.1", srv.port, timeout=5, float_format="ernie") as conn:
            self.assertEqual(conn.request((CALL, Atom("calc"), Atom("echo"), [2.5])), (REPLY, 2.5))
        echo = b"\x83h\x04d\x00\x04calld\x00\x04calcd\x00\x04echol\x00\x00\x00\x01"
        self.assertEqual(srv.bodies[0], echo + old + b"j")
        self.assertEqual(srv.bodies[1], bert.encode((INFO, Atom("priority"), [Atom("low")])))
        self.assertEqual(srv.bodies[2], echo + b"l\x00\x00\x00\x01c5.00000000000000000000e-01\0\0\0\0\0jj")
        self.assertEqual(srv.bodies[3], echo + b"F" + bert.encode(2.5)[2:] + b"j")
        self.assertEqual(srv.bodies[4], echo + old + b"j")
        for bad in ("old", None):
            with self.assertRaises(ValueError):
                bertd.Service("127.0.0.1", srv.port, float_format=bad)
            with self.assertRaises(ValueError):
                bertd.Connection("127.0.0.1", srv.port, float_format=bad)

    def test_names_that_are_not_identifiers(self):
        srv = self.server()
        svc = self.service(srv)
        svc.call["calc"]["echo"](1)
        with self.assertRaises(bertd.ServerError):
            svc.call.__admin__.stats()
        self.assertEqual([t[1][:3] for t in srv.requests()],
                         [(CALL, Atom("calc"), Atom("echo")), (CALL, Atom("__admin__"), Atom("stats"))])
        self.assertFalse(hasattr(svc.call, "__iter__"))

    def test_service_request_method(self):
        srv = self.server()
        svc = self.service(srv)
        self.assertEqual(svc.request("call", "calc", "add", [4, 5]), 9)


class Priority(ClientTest):
    def test_priority_on_the_service_precedes_every_request(self):
        srv = self.server()
        svc = self.service(srv, priority="low")
        svc.call.calc.add(1, 2)
        svc.cast.calc.add(1, 2)
        frames = srv.requests()
        self.assertEqual(frames[0], (1, (INFO, Atom("priority"), [Atom("low")])))
        self.assertEqual(frames[1][0], 1)
        self.assertEqual(frames[2], (2, (INFO, Atom("priority"), [Atom("low")])))
        self.assertEqual(frames[3][1][0], CAST)

    def test_priority_for_one_request_and_other_infos(self):
        srv = self.server()
        svc = self.service(srv)
        self.assertEqual(svc.call(priority="low").calc.add(1, 2), 3)
        svc.call.calc.add(1, 2)
        svc.call(info=[("cache", [Atom("validation"), b"tok"])]).calc.add(1, 2)
        frames = [t for _, t in srv.requests()]
        self.assertEqual(frames[0], (INFO, Atom("priority"), [Atom("low")]))
        self.assertEqual(frames[1][0], CALL)
        self.assertEqual(frames[2][0], CALL)  # no info for the plain call
        self.assertEqual(frames[3], (INFO, Atom("cache"), [Atom("validation"), b"tok"]))


class Errors(ClientTest):
    def test_each_error_type_has_its_exception(self):
        srv = self.server()
        svc = self.service(srv)
        for kind, cls in (("protocol", bertd.ProtocolError), ("server", bertd.ServerError),
                          ("user", bertd.UserError), ("proxy", bertd.ProxyError), ("other", bertd.RPCError)):
            with self.subTest(kind=kind):
                with self.assertRaises(cls) as cm:
                    getattr(svc.call.err, kind)()
                e = cm.exception
                self.assertIsInstance(e, bertd.RPCError)
                self.assertEqual((e.type, e.code, e.klass, e.message, e.backtrace),
                                 (kind, 7, "Klass", "went wrong", ["a.py:1", "b.py:2"]))
        with self.assertRaises(bertd.ServerError) as cm:
            svc.call.err.old()
        self.assertEqual((cm.exception.code, cm.exception.message), (0, "old style"))

    def test_timeout(self):
        srv = self.server()
        svc = self.service(srv, timeout=0.2, persistent=True)
        t0 = time.monotonic()
        with self.assertRaises(bertd.ReadTimeout):
            svc.call.x.sleep(1.0)
        self.assertLess(time.monotonic() - t0, 0.9)
        self.assertEqual(svc.call.calc.add(1, 1), 2)  # a fresh connection: the late answer is never read
        self.assertEqual(srv.accepts, 2)

    def test_connection_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        svc = bertd.Service("127.0.0.1", port, timeout=2)
        with self.assertRaises(bertd.ConnectionError) as cm:
            svc.call.calc.add(1, 2)
        self.assertIsInstance(cm.exception, ConnectionError)  # also the builtin

    def test_broken_answers(self):
        srv = self.server()
        svc = self.service(srv)
        with self.assertRaises(bertd.ConnectionError):
            svc.call.x.truncate()
        with self.assertRaises(bertd.ConnectionError):
            svc.call.x.hangup()
        with self.assertRaises(bertd.ReadError):
            svc.call.x.garbage()
        with self.assertRaises(bertd.ReadError):
            svc.call.x.weird()


class RawConnection(ClientTest):
    def test_sends_bad_input_and_reads_the_answer(self):
        srv = self.server()
        with bertd.Connection("127.0.0.1", srv.port, timeout=5) as conn:
            conn.send_bert(b"\x83\xff\x00")
            self.assertEqual(conn.read()[1][:2], (Atom("protocol"), 2))
            conn.send((CALL, Atom("calc"), Atom("add"), [1, 2]))
            self.assertEqual(conn.read(), (REPLY, 3))
            self.assertEqual(conn.request((CALL, Atom("calc"), Atom("add"), [2, 2])), (REPLY, 4))
            conn.send((CALL, Atom("x"), Atom("hangup"), []))
            self.assertIsNone(conn.read_frame_bytes())
            with self.assertRaises(bertd.ConnectionError):
                conn.read()
        with bertd.Connection("127.0.0.1", srv.port, timeout=5) as conn:
            conn.send_raw(b"\x00\x00\x01\x00\x83h")  # a header announcing more than ever comes
            conn.shutdown_write()
            self.assertIsNone(conn.read_frame_bytes())


if __name__ == "__main__":
    unittest.main()
