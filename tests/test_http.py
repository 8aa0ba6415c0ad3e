"""examples/http.c driven by wrk (a client nobody here wrote) and by a Python socket client that
checks the protocol: keep-alive, pipelining, the executor route, bad input, 10 000 idle
connections, graceful shutdown. Every case runs on every backend and ends with a SIGTERM that
must give exit status 0 and the shutdown line."""
import os
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

import harness

WRK = "/usr/bin/wrk"
TIMEOUT = 20 * harness.SCALE


class Server:
    """examples/http on a free port, with a Python client for it."""

    def __init__(self, backend, idle_ms=30000):
        self.proc, self.port = harness.start_example("http", backend, str(idle_ms))

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, signalled=False):
        """SIGTERM (unless sent already: a second one exits at once); returns (exit status,
        stdout, stderr)."""
        if not signalled:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("http did not exit after SIGTERM: %s %s" % (out, err))
        return self.proc.returncode, out, err


class Reader:
    """Reads HTTP responses (status, headers, body) off a socket, keeping what follows."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed with %d bytes buffered" % len(self.buf))
        self.buf += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body.decode()

    def closed(self):
        """True if the server closed the connection (EOF or reset) with nothing more sent."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def get(path, version="1.1", headers=""):
    return ("GET %s HTTP/%s\r\nHost: t\r\n%s\r\n" % (path, version, headers)).encode()


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def send_ignoring_reset(sock, data):
    """The server may close before it has read all of data: that is allowed."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class HttpCase(unittest.TestCase):
    backend = None

    def setUp(self):
        self.server = None

    def start(self, **kw):
        self.server = Server(self.backend, **kw)
        return self.server

    def tearDown(self):
        if self.server and self.server.alive():
            self.server.proc.kill()
            self.server.proc.communicate()

    def finish(self, connections_closed=None):
        """The server is still up and serves; then SIGTERM ends it cleanly."""
        self.assertTrue(self.server.alive(), "the server died")
        (status, _, _), reader = self.simple(get("/", headers="Connection: close\r\n"))
        self.assertEqual(status, 200)
        self.assertTrue(reader.closed())  # closed by the server: not one the shutdown counts
        code, out, err = self.server.stop()
        self.assertEqual(code, 0, out + err)
        match = re.search(r"shutdown: (\d+) connections closed, (\d+) requests served", out)
        self.assertTrue(match, out + err)
        self.assertEqual(harness.program_stderr(err), "", "unexpected stderr")
        if connections_closed is not None:
            self.assertEqual(int(match.group(1)), connections_closed, out)
        return out

    def simple(self, request):
        """Sends one request on a new connection; returns the response and the Reader."""
        s = self.server.connect()
        self.addCleanup(s.close)
        s.sendall(request)
        r = Reader(s)
        return r.response(), r

    # (a) wrk against the fixed and the computed route.
    def test_wrk(self):
        if not os.path.exists(WRK):
            self.fail("wrk is missing: apt-get install wrk (the HTTP example is tested with it)")
        self.start()
        for path in ("/", "/fib?n=30"):
            r = subprocess.run([WRK, "-t2", "-c50", "-d2s", "--timeout", "10s",
                                "http://127.0.0.1:%d%s" % (self.server.port, path)],
                               capture_output=True, text=True, timeout=30 * harness.SCALE)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertNotIn("Socket errors", r.stdout)
            self.assertNotIn("Non-2xx", r.stdout)
            count = re.search(r"(\d+) requests in", r.stdout)
            self.assertTrue(count and int(count.group(1)) > 0, r.stdout)
            rps = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
            sys.stderr.write("[wrk %s on %s: %s requests/s] " % (path, self.backend, rps.group(1)))
        self.finish()

    # (b) 100 pipelined requests in one write, answered in order.
    def test_pipelining(self):
        self.start()
        with self.server.connect() as s:
            s.sendall(b"".join(get("/fib?n=%d" % (i % 93)) if i % 3 else get("/")
                               for i in range(100)))
            reader = Reader(s)
            for i in range(100):
                status, _, body = reader.response()
                self.assertEqual(status, 200)
                self.assertEqual(body, "%d\n" % fib(i % 93) if i % 3 else "Hello, world!\n")
        self.finish()

    # (c) keep-alive, Connection: close, HTTP/1.0, and the keep-alive error replies.
    def test_keep_alive_semantics(self):
        self.start()
        with self.server.connect() as s:
            reader = Reader(s)
            for request, status, body in [
                    (get("/"), 200, "Hello, world!\n"),
                    (get("/nowhere"), 404, "Not Found\n"),
                    (b"DELETE / HTTP/1.1\r\n\r\n", 405, "Method Not Allowed\n"),
                    (get("/fib?n=93"), 400, "Bad Request\n"),
                    (get("/fib?n=x"), 400, "Bad Request\n"),
                    (get("/fib"), 400, "Bad Request\n"),
                    (get("/fib?m=1&n=10"), 200, "55\n")]:
                s.sendall(request)
                got = reader.response()
                self.assertEqual((got[0], got[2]), (status, body), request)
                self.assertNotIn("connection", got[1])
            # A body, sent in pieces, is consumed exactly: the next request follows it.
            s.sendall(b"POST /upload HTTP/1.1\r\nContent-Length: 3000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.05)
            s.sendall(b"y" * 2000 + get("/"))
            self.assertEqual(reader.response()[2], "received 3000 bytes\n")
            self.assertEqual(reader.response()[2], "Hello, world!\n")
        (status, headers, _), reader = self.simple(get("/", headers="Connection: close\r\n"))
        self.assertEqual((status, headers.get("connection")), (200, "close"))
        self.assertTrue(reader.closed())
        (status, headers, _), reader = self.simple(get("/", version="1.0"))
        self.assertEqual((status, headers.get("connection")), (200, "close"))
        self.assertTrue(reader.closed())
        (status, headers, _), reader = self.simple(get("/", "1.0", "Connection: keep-alive\r\n"))
        self.assertEqual((status, headers.get("connection")), (200, "keep-alive"))
        reader.sock.sendall(get("/fib?n=20", "1.0", "Connection: keep-alive\r\n"))
        self.assertEqual(reader.response()[2], "6765\n")
        self.finish()

    # (d) the executor route answers right and does not hold up the loop.
    def test_executor_route_does_not_block(self):
        self.start()
        results = []

        def slow():
            (status, _, body), _ = self.simple(get("/sleep?ms=1500"))
            results.append((status, body))

        threads = [threading.Thread(target=slow) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        (status, _, body), _ = self.simple(get("/fib?n=10"))
        self.assertEqual((status, body), (200, "55\n"))
        # The fast request was answered while the slow ones still wait for their sleep.
        self.assertEqual(results, [], "the fast request waited for the slow ones")
        for t in threads:
            t.join(TIMEOUT)
        self.assertEqual(results, [(200, "slept 1500 ms\n")] * 4)
        self.finish()

    # (e) bad input: an error reply and a closed connection, or just a closed one.
    def test_bad_input(self):
        self.start()
        for request, status in [
                (b"GARBAGE\r\n\r\n", 400),
                (b"GET / HTTP/2.0\r\n\r\n", 400),
                (b"GET nopath HTTP/1.1\r\n\r\n", 400),
                (b"get / HTTP/1.1\r\n\r\n", 400),
                (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
                (b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n", 400),
                (b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
                (b"POST /upload HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
                (b"POST /upload HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
                (b"POST /upload HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413),
                (b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501)]:
            (got, headers, _), reader = self.simple(request)
            self.assertEqual((got, headers.get("connection")), (status, "close"), request)
            self.assertTrue(reader.closed(), request)
        # A 64 KiB header: 431 once the first 8 KiB hold no complete header block.
        with self.server.connect() as s:
            send_ignoring_reset(s, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
            self.assertEqual(Reader(s).response()[0], 431)
        # Clients that leave mid-request and mid-body; then random bytes.
        for partial in [b"GET / HTTP/1.1\r\nHost:",
                        b"POST /upload HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789"]:
            with self.server.connect() as s:
                s.sendall(partial)
        # Clients that reset with pipelined requests unanswered: the server's writes fail.
        for _ in range(20):
            s = self.server.connect()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(get("/sleep?ms=5") + get("/") * 300)
            s.close()
        for seed in range(20):
            with self.server.connect() as s:
                send_ignoring_reset(s, os.urandom(256 + 997 * seed))
                try:
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
                except OSError:  # the server may have closed (and reset) it already
                    pass
        time.sleep(0.5)  # lets the server see the last closes before the shutdown counts
        self.finish(connections_closed=0)

    # (f) 10 000 idle connections are held, the server still answers, the idle timeout closes
    # them, and memory stays bounded.
    def test_10000_idle_connections(self):
        if self.backend == "select":
            self.skipTest("select cannot watch fds >= FD_SETSIZE (1024)")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        idle_ms = int(5000 * harness.SCALE)
        self.start(idle_ms=idle_ms)
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        started = time.monotonic()
        for _ in range(harness.task_count(10000)):
            socks.append(self.server.connect())
        (status, _, body), reader = self.simple(get("/", headers="Connection: close\r\n"))
        self.assertEqual((status, body), (200, "Hello, world!\n"))
        self.assertTrue(reader.closed())
        opened = time.monotonic() - started
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        if opened < idle_ms / 1000.0 * 0.8:
            self.assertEqual(sel.select(0), [], "idle connections closed before their time")
        # The idle timeout closes every one of them.
        closed, deadline = 0, time.monotonic() + idle_ms / 1000.0 + TIMEOUT
        while closed < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                self.assertEqual(key.fileobj.recv(1), b"")
                sel.unregister(key.fileobj)
                closed += 1
        self.assertEqual(closed, len(socks))
        # The peak, read once the server has surely accepted (and closed) every connection:
        # about 90 MiB here, 210 MiB under ASan (shadow memory, stack redzones); buffers
        # touched in full would add 240 MiB.
        peak = harness.memory_kib(self.server.proc.pid, "VmHWM")
        sys.stderr.write("[%d idle on %s: peak RSS %d KiB] " % (len(socks), self.backend, peak))
        harness.check_memory(self, peak, 256 * 1024, "peak RSS with %d idle connections" % len(socks))
        self.finish(connections_closed=0)

    # (g) SIGTERM with a keep-alive connection open and a request in progress.
    def test_sigterm_with_open_and_busy_connections(self):
        self.start()
        (status, _, _), idle = self.simple(get("/"))
        self.assertEqual(status, 200)
        busy = self.server.connect()
        self.addCleanup(busy.close)
        busy.sendall(get("/sleep?ms=500"))
        time.sleep(0.2)
        self.server.proc.send_signal(signal.SIGTERM)
        # The request in progress finishes, then its connection closes; so does the idle one.
        reader = Reader(busy)
        self.assertEqual(reader.response()[2], "slept 500 ms\n")
        self.assertTrue(reader.closed())
        self.assertTrue(idle.closed())
        code, out, err = self.server.stop(signalled=True)
        self.assertEqual(code, 0, out + err)
        self.assertIn("shutdown: 2 connections closed, 2 requests served", out)
        self.assertEqual(harness.program_stderr(err), "")


def _add_backend_classes():
    for backend in harness.backends():
        name = "Http_" + backend
        globals()[name] = type(name, (HttpCase,), {"backend": backend})


_add_backend_classes()
del HttpCase  # only the per-backend classes run

if __name__ == "__main__":
    unittest.main()
