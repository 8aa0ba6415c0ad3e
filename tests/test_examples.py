"""The examples, driven by clients nobody inside the library wrote: Python sockets for echo."""
import concurrent.futures
import os
import resource
import signal
import socket
import struct
import sys
import time
import unittest

import harness


def echo_client(port, seed, rounds=20):
    """Sends `rounds` messages of different sizes and checks each comes back intact."""
    with socket.create_connection(("127.0.0.1", port), timeout=30 * harness.SCALE) as s:
        for k in range(rounds):
            msg = os.urandom(100 + (seed * 37 + k * 101) % 20000)
            s.sendall(msg)
            got = bytearray()
            while len(got) < len(msg):
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError("connection closed after %d of %d bytes" % (len(got), len(msg)))
                got += chunk
            if bytes(got) != msg:
                raise AssertionError("echo mismatch")
    return True


class EchoTasks(unittest.TestCase):
    """echo_tasks on every backend: many clients at once, and bad input from the network. It
    has no shutdown of its own (it runs until killed), so each case ends by checking that the
    server is alive and still echoes, then kills it."""

    def start(self, backend):
        proc, port = harness.start_example("echo_tasks", backend)

        def stop():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        self.addCleanup(stop)
        return proc, port

    def check_still_serving(self, proc, port):
        self.assertIsNone(proc.poll(), "the server died")
        self.assertTrue(echo_client(port, 1, rounds=3))

    def run_clients(self, backend, clients):
        proc, port = self.start(backend)
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda i: echo_client(port, i), range(clients)))
        self.assertEqual(results.count(True), clients)
        self.check_still_serving(proc, port)

    def check_vanishing_clients(self, backend):
        """Clients that close mid-message with echoes unread, half of them with a reset
        (SO_LINGER 0) while data is in flight both ways."""
        proc, port = self.start(backend)
        for i in range(30):
            with socket.create_connection(("127.0.0.1", port), timeout=30 * harness.SCALE) as s:
                if i % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(os.urandom(200000 + i))
        self.check_still_serving(proc, port)
        deadline = time.monotonic() + 10 * harness.SCALE
        while harness.open_sockets(proc.pid) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(harness.open_sockets(proc.pid), 1, "every connection is closed, the listener stays")

    def check_client_that_never_reads(self, backend):
        """The task of a client that sends and never reads blocks on its write: the client can
        push only what the socket buffers hold, the server's memory stays put, and the other
        clients still get their echoes meanwhile."""
        proc, port = self.start(backend)
        before = harness.memory_kib(proc.pid, "VmRSS")
        hog = socket.create_connection(("127.0.0.1", port), timeout=30 * harness.SCALE)
        self.addCleanup(hog.close)
        pushed = harness.push_until_stalled(self, hog, 20 * harness.SCALE)
        self.assertLess(pushed, 64 * 1024 * 1024)
        grown = harness.memory_kib(proc.pid, "VmRSS") - before
        sys.stderr.write("[echo_tasks, a client that never reads on %s: %d KiB pushed, RSS +%d KiB] "
                         % (backend, pushed // 1024, grown))
        harness.check_memory(self, grown, 16 * 1024, "RSS growth")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            self.assertEqual(list(pool.map(lambda i: echo_client(port, i, rounds=5), range(8))), [True] * 8)
        self.check_still_serving(proc, port)

    def check_idle_connections(self, backend):
        """10 000 connections that never send (select: 900, as it cannot watch an fd at or
        above FD_SETSIZE = 1024): each holds a task and its stack, the memory stays bounded,
        and the first and the last still echo."""
        idle_count = 900 if backend == "select" else harness.task_count(10000)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        proc, port = self.start(backend)
        idle = []
        self.addCleanup(lambda: [s.close() for s in idle])
        for _ in range(idle_count):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30 * harness.SCALE))
        for s in (idle[0], idle[-1]):
            s.sendall(b"ping")
            self.assertEqual(s.recv(16), b"ping")
        self.check_still_serving(proc, port)
        peak = harness.memory_kib(proc.pid, "VmHWM")
        sys.stderr.write("[echo_tasks, %d idle on %s: peak RSS %d KiB] " % (idle_count, backend, peak))
        harness.check_memory(self, peak, 256 * 1024, "peak RSS with %d idle connections" % idle_count)


def _add_backend_tests():
    checks = {"vanishing_clients": EchoTasks.check_vanishing_clients,
              "client_that_never_reads": EchoTasks.check_client_that_never_reads,
              "idle_connections": EchoTasks.check_idle_connections}
    for backend in harness.backends():
        def method(self, backend=backend):
            self.run_clients(backend, 200)
        setattr(EchoTasks, "test_200_concurrent_clients__" + backend, method)
        for name, check in checks.items():
            setattr(EchoTasks, "test_%s__%s" % (name, backend),
                    lambda self, check=check, backend=backend: check(self, backend))


_add_backend_tests()


class Demo(unittest.TestCase):
    """`make demo`: the HTTP example under a load client, then its graceful shutdown."""

    def test_demo_checks_the_http_server(self):
        harness.build()
        for backend in harness.backends():
            with self.subTest(backend=backend):
                self.check_demo(backend)

    def check_demo(self, backend):
        r = harness.run([os.path.join(harness.BUILD, "examples", "demo")],
                        env={"EVLOOP_BACKEND": backend}, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, r"demo: \d+ responses checked, 0 errors: \d+ requests/s")
        self.assertNotRegex(r.stdout, r"demo: 0 responses checked")
        self.assertIn("the server closed every open connection", r.stdout)
        self.assertRegex(r.stdout, r"shutdown: 48 connections closed, \d+ requests served")
        self.assertIn("the server exited with status 0", r.stdout)
        self.assertIn("all checks passed", r.stdout)
        self.assertNotIn("FAIL", r.stdout)

    def test_tour_runs_and_reports(self):
        harness.build()
        r = harness.run([os.path.join(harness.BUILD, "examples", "tour")], timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("5 lines, 5 results", r.stdout)
        self.assertIn("posted from another thread", r.stdout)


if __name__ == "__main__":
    unittest.main()
