"""examples/echo.c (callbacks and I/O watchers) driven by a Python socket client: data comes
back intact, a client that never reads is held back (bounded memory), clients that vanish
mid-message do no harm, 10 000 idle connections are held, SIGTERM exits cleanly. Every case
runs on every backend."""
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
import unittest

import harness

TIMEOUT = 20 * harness.SCALE


def echo_round(sock, size):
    msg = os.urandom(size)
    sock.sendall(msg)
    got = b""
    while len(got) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed after %d of %d bytes" % (len(got), size))
        got += chunk
    return got == msg


class EchoCase(unittest.TestCase):
    backend = None

    def setUp(self):
        self.proc, self.port = harness.start_example("echo", self.backend)

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        self.addCleanup(s.close)
        return s

    def finish(self, open_connections):
        """Still alive and echoing; then SIGTERM closes what is open and exits 0."""
        self.assertIsNone(self.proc.poll(), "the server died")
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            self.assertTrue(echo_round(s, 1000))
        time.sleep(0.3)  # lets the server see that close before the shutdown counts
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=TIMEOUT)
        self.assertEqual(self.proc.returncode, 0, out + err)
        self.assertIn("shutdown: %d connections closed" % open_connections, out)
        self.assertEqual(harness.program_stderr(err), "")

    def test_concurrent_clients_get_their_bytes_back(self):
        results = []

        def client(seed):
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                results.append(all(echo_round(s, 1 + (seed * 7919 + k * 104729) % 300000)
                                   for k in range(5)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        self.assertEqual(results, [True] * 50)
        self.finish(0)

    def test_half_close_gets_everything_back_then_eof(self):
        s = self.connect()
        msg = os.urandom(500000)
        threading.Thread(target=lambda: (s.sendall(msg), s.shutdown(socket.SHUT_WR))).start()
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, msg)
        self.finish(0)

    def test_client_that_never_reads_is_held_back(self):
        """The server stops reading once its buffer is full: what the client can push is
        bounded by the socket buffers, and the server's memory does not grow."""
        before = harness.memory_kib(self.proc.pid, "VmRSS")
        hog = self.connect()
        pushed = harness.push_until_stalled(self, hog, TIMEOUT)
        self.assertLess(pushed, 64 * 1024 * 1024)
        harness.check_memory(self, harness.memory_kib(self.proc.pid, "VmRSS") - before, 16 * 1024,
                             "RSS growth")
        # Others are still served meanwhile.
        self.assertTrue(echo_round(self.connect(), 100000))
        self.finish(2)

    def test_clients_vanishing_mid_message(self):
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            if i % 2:  # a reset, with echoes unread
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(os.urandom(200000 + i))
            s.close()
        self.finish(0)

    def test_10000_idle_connections(self):
        if self.backend == "select":
            self.skipTest("select cannot watch fds >= FD_SETSIZE (1024)")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        socks = [self.connect() for _ in range(10000)]
        self.assertTrue(echo_round(socks[-1], 1000))
        self.assertTrue(echo_round(socks[0], 1000))
        rss = harness.memory_kib(self.proc.pid, "VmRSS")
        sys.stderr.write("[10000 idle on %s: VmRSS %d KiB] " % (self.backend, rss))
        harness.check_memory(self, rss, 200 * 1024, "RSS with 10000 idle connections")
        self.finish(10000)


def _add_backend_classes():
    for backend in harness.backends():
        name = "Echo_" + backend
        globals()[name] = type(name, (EchoCase,), {"backend": backend})


_add_backend_classes()
del EchoCase  # only the per-backend classes run

if __name__ == "__main__":
    unittest.main()
