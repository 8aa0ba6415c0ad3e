"""The examples, driven by clients nobody inside the library wrote: Python sockets for echo."""
import concurrent.futures
import os
import signal
import socket
import subprocess
import unittest

import harness


def start_server(name, backend):
    """Starts examples/<name> on a free port; returns (process, port)."""
    harness.build()
    cmd = harness.EMULATOR + harness.WRAPPER + [os.path.join(harness.BUILD, "examples", name), "0"]
    env = dict(os.environ, EVLOOP_BACKEND=backend)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError("%s did not start: %r %s" % (name, line, proc.stderr.read()))
    return proc, int(line.split()[2])


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
    def run_clients(self, backend, clients):
        proc, port = start_server("echo_tasks", backend)
        try:
            with concurrent.futures.ThreadPoolExecutor(64) as pool:
                results = list(pool.map(lambda i: echo_client(port, i), range(clients)))
            self.assertEqual(results.count(True), clients)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()


def _add_backend_tests():
    for backend in harness.backends():
        def method(self, backend=backend):
            self.run_clients(backend, 200)
        setattr(EchoTasks, "test_200_concurrent_clients__" + backend, method)


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
