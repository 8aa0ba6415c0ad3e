"""examples/resp.c driven by clients nobody here wrote: redis-cli and redis-benchmark (Debian
package redis-tools), plus Python sockets for the bad input a real client never sends. Every
case runs on every backend and ends with SIGTERM, which must give exit status 0 and the final
line."""
import os
import random
import re
import resource
import socket
import subprocess
import sys
import time
import unittest

import harness

REDIS_CLI = "/usr/bin/redis-cli"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
FINAL_LINE = "resp: shut down cleanly"
IDLE_CONNECTIONS = 10000


class Server:
    """examples/resp on a free port, on one backend."""

    def __init__(self, backend):
        self.proc, self.port = harness.start_example("resp", backend)

    def stop(self, test):
        """SIGTERM: the server must exit 0 after printing its final line."""
        harness.stop_example(test, self.proc, "resp", FINAL_LINE)

    def kill(self):
        harness.kill_example(self.proc)

    def rss_kib(self):
        return harness.memory_kib(self.proc.pid, "VmRSS")


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=20 * harness.SCALE)


def multibulk(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_until_closed(sock, limit=1 << 30):
    """Everything the server sends until it closes the connection (or `limit` bytes)."""
    data = bytearray()
    while len(data) < limit:
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return bytes(data)


class RespCase(unittest.TestCase):
    def require_redis_tools(self):
        for tool in (REDIS_CLI, REDIS_BENCHMARK):
            self.assertTrue(os.path.exists(tool),
                            "%s is missing: apt-get install redis-tools" % tool)

    def cli(self, server, *args, stdin=None, raw=False):
        """One redis-cli call; the reply as redis-cli prints it (--no-raw: types shown)."""
        r = subprocess.run([REDIS_CLI, "-p", str(server.port), "--raw" if raw else "--no-raw"]
                           + list(args), input=stdin, capture_output=True,
                           timeout=20 * harness.SCALE)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout if raw else r.stdout.decode().strip()

    def wait_for(self, server, args, want, within):
        deadline = time.monotonic() + within * harness.SCALE
        while time.monotonic() < deadline:
            got = self.cli(server, *args)
            if got == want:
                return
            time.sleep(0.05)
        self.fail("%s still %r after %s s, want %r" % (" ".join(args), got, within, want))

    # (a) redis-cli: values read back, counters, deletion, expiry after its time, errors.
    def check_redis_cli(self, server):
        cli = lambda *a: self.cli(server, *a)
        self.assertEqual(cli("FLUSHALL"), "OK")
        self.assertEqual(cli("SET", "greeting", "hello world"), "OK")
        self.assertEqual(cli("GET", "greeting"), '"hello world"')
        self.assertEqual(cli("GET", "missing"), "(nil)")
        self.assertEqual([cli("INCR", "hits") for _ in range(3)],
                         ["(integer) 1", "(integer) 2", "(integer) 3"])
        self.assertEqual(cli("GET", "hits"), '"3"')
        self.assertEqual(cli("INCR", "greeting"), "(error) ERR value is not an integer or out of range")
        self.assertEqual(cli("EXISTS", "greeting", "hits", "missing"), "(integer) 2")
        self.assertEqual(cli("DEL", "greeting", "hits", "missing"), "(integer) 2")
        self.assertEqual(cli("EXISTS", "greeting"), "(integer) 0")
        self.assertEqual(cli("TTL", "missing"), "(integer) -2")
        self.assertEqual(cli("SET", "forever", "x"), "OK")
        self.assertEqual(cli("TTL", "forever"), "(integer) -1")
        # PX: alive right after the SET (same connection), gone after its time, removed by its
        # timer (DBSIZE counts stored keys, so it drops only when the timer deleted it).
        px = b"%d" % (400 * harness.SCALE)
        self.assertEqual(self.cli(server, stdin=b"SET brief v PX " + px + b"\nEXISTS brief\n"),
                         "OK\n(integer) 1")
        self.wait_for(server, ["DBSIZE"], "(integer) 1", within=5)
        self.assertEqual(cli("GET", "brief"), "(nil)")
        self.assertEqual(cli("EXPIRE", "forever", "1"), "(integer) 1")
        self.assertIn(cli("TTL", "forever"), ("(integer) 1", "(integer) 0"))
        self.assertEqual(cli("EXPIRE", "missing", "1"), "(integer) 0")
        self.wait_for(server, ["EXISTS", "forever"], "(integer) 0", within=5)
        self.assertEqual(cli("DBSIZE"), "(integer) 0")
        # Binary-safe values: every byte value, CR and LF included, through -x and back raw.
        blob = bytes(range(256)) * 4 + b"\r\n\r\n\x00"
        self.assertEqual(self.cli(server, "-x", "SET", "blob", stdin=blob), "OK")
        self.assertEqual(self.cli(server, "GET", "blob", raw=True), blob + b"\n")
        self.assertEqual(self.cli(server, "-x", "ECHO", stdin=blob, raw=True), blob + b"\n")
        self.assertEqual(cli("GET"), "(error) ERR wrong number of arguments for 'get' command")
        self.assertEqual(cli("SET", "k"), "(error) ERR wrong number of arguments for 'set' command")
        self.assertEqual(cli("NOSUCH", "x"), "(error) ERR unknown command 'NOSUCH'")
        self.assertEqual(cli("SET", "k", "v", "EX", "0"), "(error) ERR invalid expire time in 'SET' command")
        self.assertEqual(cli("SET", "k", "v", "XX"), "(error) ERR syntax error")
        self.assertEqual(cli("PING"), "PONG")
        self.assertEqual(cli("ECHO", "hi"), '"hi"')

    # (b) redis-benchmark, plain and pipelined: a figure for every test, no errors, and
    # INCR ran exactly as many times as it was sent.
    def check_redis_benchmark(self, server):
        tests = ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"]
        self.assertEqual(self.cli(server, "FLUSHALL"), "OK")
        for extra in ([], ["-P", "16"]):
            r = subprocess.run([REDIS_BENCHMARK, "-p", str(server.port), "-t",
                                "ping_inline,ping_mbulk,set,get,incr", "-c", "50", "-n", "20000",
                                "-q"] + extra, capture_output=True, text=True,
                               timeout=120 * harness.SCALE)
            out = r.stdout + r.stderr
            self.assertEqual(r.returncode, 0, out)
            self.assertNotRegex(out.lower(), r"error|refused|reset", out)
            rates = dict(re.findall(r"([A-Z_]+): ([\d.]+) requests per second", out))
            self.assertEqual(sorted(rates), sorted(tests), out)
            for name in tests:
                self.assertGreater(float(rates[name]), 0, out)
        self.assertRegex(self.cli(server, "GET", "key:__rand_int__"), r'^"[^"]+"$')
        self.assertEqual(self.cli(server, "GET", "counter:__rand_int__"), '"40000"')

    # (c) Protocol errors get "-ERR Protocol error" and a closed connection; nothing a client
    # sends or fails to send stops the server from serving the others.
    def check_bad_input(self, server):
        bystander = connect(server.port)
        bystander.sendall(b"PING\r\n")
        self.assertEqual(recv_exactly(bystander, 7), b"+PONG\r\n")
        cases = [
            (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
            (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\n$999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
            (b"*1\r\nGET\r\n", b"-ERR Protocol error: expected '$', got 'G'\r\n"),
            (b"*1\r\n$4\r\nPINGxx", b"-ERR Protocol error: missing CRLF after bulk string\r\n"),
            (b"*1\r\n$" + b"1" * 70000, b"-ERR Protocol error: too big bulk count string\r\n"),
            (b"A" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
            (b"PING\r\n" + b"B" * 200000 + b"\r\n", b"+PONG\r\n-ERR Protocol error: too big inline request\r\n"),
        ]
        for request, reply in cases:
            with connect(server.port) as s:
                s.sendall(request)
                self.assertEqual(read_until_closed(s), reply, request[:40])
        # Binary-safe ECHO, pipelined with inline commands in one write: replies in order.
        blob = bytes(range(256)) * 16
        with connect(server.port) as s:
            s.sendall(b"PING\r\n" + multibulk(b"ECHO", blob) + b"ping hi\n" + multibulk("PING"))
            want = b"+PONG\r\n$%d\r\n%s\r\n$2\r\nhi\r\n+PONG\r\n" % (len(blob), blob)
            self.assertEqual(recv_exactly(s, len(want)), want)
        # Disconnects in the middle of a request, at every kind of point.
        for partial in (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc", b"*2\r\n$3", b"GET k", b"*"):
            with connect(server.port) as s:
                s.sendall(partial)
        # Random garbage: whatever the replies, the server lives (the client ends it).
        rng = random.Random(7)
        for _ in range(5):
            with connect(server.port) as s:
                s.sendall(bytes(rng.getrandbits(8) for _ in range(20000)))
                s.shutdown(socket.SHUT_WR)
                read_until_closed(s)
        # A value just under the 16 MiB bulk limit, sent in pieces, reads back intact.
        huge = bytes(random.Random(3).getrandbits(8) for _ in range(256)) * (60 << 10)
        with connect(server.port) as s:
            request = multibulk("SET", "huge", huge) + multibulk("GET", "huge") + multibulk("DEL", "huge")
            for i in range(0, len(request), 1 << 20):
                s.sendall(request[i:i + (1 << 20)])
            want = b"+OK\r\n$%d\r\n%s\r\n:1\r\n" % (len(huge), huge)
            self.assertEqual(recv_exactly(s, len(want)), want)
        # A client that never reads its replies is dropped past 64 MiB, not buffered forever.
        with connect(server.port) as s:
            s.sendall(multibulk("SET", "big", b"v" * (1 << 20)))
            self.assertEqual(recv_exactly(s, 5), b"+OK\r\n")
            s.sendall(multibulk("GET", "big") * 100)
            self.assertLess(len(read_until_closed(s, 200 << 20)), 100 << 20)
        bystander.sendall(multibulk("ECHO", "still here") + multibulk("DEL", "big"))
        self.assertEqual(recv_exactly(bystander, 21), b"$10\r\nstill here\r\n:1\r\n")
        bystander.close()

    # (d) 10 000 idle connections: all held, commands still served, memory bounded.
    def check_idle_connections(self, server):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < IDLE_CONNECTIONS + 100:
            self.skipTest("the fd hard limit (%d) is below %d" % (hard, IDLE_CONNECTIONS + 100))
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        rss_before = server.rss_kib()
        conns = []
        try:
            for _ in range(IDLE_CONNECTIONS):
                conns.append(connect(server.port))
            for s in conns[::1000]:
                s.sendall(b"PING\r\n")
                self.assertEqual(recv_exactly(s, 7), b"+PONG\r\n")
            with connect(server.port) as s:
                s.sendall(multibulk("SET", "k", "v") + multibulk("GET", "k"))
                self.assertEqual(recv_exactly(s, 12), b"+OK\r\n$1\r\nv\r\n")
            fds = len(os.listdir("/proc/%d/fd" % server.proc.pid))
            self.assertGreaterEqual(fds, IDLE_CONNECTIONS, "fds open in the server")
            rss = server.rss_kib()
            sys.stderr.write("\n  resp with %d idle connections: VmRSS %d KiB (%d KiB at start) "
                             % (IDLE_CONNECTIONS, rss, rss_before))
            harness.check_memory(self, rss - rss_before, 200 * 1024, "RSS growth")
            # The shutdown closes them all (stop() checks the exit), then the clients see EOF.
            server.stop(self)
            self.assertEqual(conns[-1].recv(16), b"")
        finally:
            for s in conns:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _add_backend_tests():
    checks = {"redis_cli": (RespCase.check_redis_cli, True),
              "redis_benchmark": (RespCase.check_redis_benchmark, True),
              "bad_input": (RespCase.check_bad_input, False),
              "idle_connections": (RespCase.check_idle_connections, False)}
    for backend in harness.backends():
        for name, (check, needs_tools) in checks.items():
            # select cannot watch fds >= FD_SETSIZE (1024): 10 000 connections are beyond it.
            if name == "idle_connections" and backend == "select":
                continue

            def method(self, check=check, backend=backend, needs_tools=needs_tools):
                if needs_tools:
                    self.require_redis_tools()
                server = Server(backend)
                try:
                    check(self, server)
                    if server.proc.poll() is None:
                        server.stop(self)
                finally:
                    server.kill()
            setattr(RespCase, "test_%s__%s" % (name, backend), method)


_add_backend_tests()

if __name__ == "__main__":
    unittest.main()
