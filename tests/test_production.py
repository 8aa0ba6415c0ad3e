"""The production pieces: the executor (tests/test_executor.c), signal watchers and fork
(tests/test_signals.c) and graceful shutdown with the evl_main runner (tests/test_shutdown.c),
every case on every backend as its own process; then the bootstrap example
(examples/bootstrap.c) driven from outside as an orchestrator would: SIGTERM with live
workers ends it cleanly within the grace period, a worker that ignores cancellation is named
on stderr, and a second signal ends it at once."""
import os
import signal
import subprocess
import threading
import time
import unittest

import harness
import programs

# ExecutorCases (90 s per case), SignalCases and ShutdownCases: see tests/programs.py.
programs.register(globals())


class Bootstrap:
    """examples/bootstrap started on a backend; stderr is read by a thread, line by line."""

    def __init__(self, backend, grace_ms, stubborn=False):
        harness.build()
        env = dict(os.environ, EVLOOP_BACKEND=backend)
        env.pop("BOOTSTRAP_STUBBORN", None)
        if stubborn:
            env["BOOTSTRAP_STUBBORN"] = "1"
        cmd = harness.EMULATOR + harness.WRAPPER + [
            os.path.join(harness.BUILD, "examples", "bootstrap"), str(grace_ms)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # end of stderr
            self.cond.notify_all()

    def wait_for(self, text, timeout):
        """Waits until a stderr line contains text; False at the timeout or at end of file."""
        deadline = time.monotonic() + timeout * harness.SCALE
        with self.cond:
            while True:
                if any(l is not None and text in l for l in self.lines):
                    return True
                if self.lines and self.lines[-1] is None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)

    def stderr(self):
        with self.cond:
            return "".join(l for l in self.lines if l is not None)

    def finish(self, timeout):
        """Waits for the exit; returns (returncode, stdout, seconds waited)."""
        t0 = time.monotonic()
        try:
            # stderr belongs to the reader thread; stdout is one line, read after the exit.
            self.proc.wait(timeout=timeout * harness.SCALE)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("bootstrap did not exit within %ss; stderr:\n%s"
                                 % (timeout * harness.SCALE, self.stderr()))
        took = time.monotonic() - t0
        out = self.proc.stdout.read()
        self.reader.join(10)
        return self.proc.returncode, out, took

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


class BootstrapSignals(unittest.TestCase):
    """SIGTERM and a second signal, sent to examples/bootstrap."""

    def start_live(self, backend, grace_ms, stubborn=False):
        """Starts the program and waits until its workers have done real work (a tick goes
        through the executor)."""
        b = Bootstrap(backend, grace_ms, stubborn)
        self.addCleanup(b.kill)
        self.assertTrue(b.wait_for("service up", 10),
                        "bootstrap did not come up:\n" + b.stderr())
        self.assertTrue(b.wait_for(" tick ", 10),
                        "no worker ticked:\n" + b.stderr())
        return b

    def check_sigterm_clean(self, backend):
        b = self.start_live(backend, 5000)
        b.proc.send_signal(signal.SIGTERM)
        rc, out, took = b.finish(10)
        err = b.stderr()
        self.assertEqual(rc, 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (rc, out, err))
        self.assertIn("clean shutdown complete", out)
        # Every worker was cancelled, none had to be named, and the 5 s grace was not needed.
        for i in range(4):
            self.assertIn("worker %d cancelled" % i, err)
        self.assertNotIn("did not finish within the shutdown grace period", err)
        self.assertLess(took, 2.5 * harness.SCALE, err)

    def check_stubborn_named(self, backend):
        b = self.start_live(backend, 300, stubborn=True)
        b.proc.send_signal(signal.SIGTERM)
        rc, out, took = b.finish(10)
        err = b.stderr()
        self.assertEqual(rc, 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (rc, out, err))
        self.assertIn("clean shutdown complete", out)
        named = [l for l in err.splitlines()
                 if "did not finish within the shutdown grace period" in l]
        self.assertTrue(named, err)
        self.assertTrue(all("stubborn-worker" in l for l in named), err)
        for i in range(4):
            self.assertIn("worker %d cancelled" % i, err)
        # The grace (0.3 s) bounds the exit.
        self.assertGreaterEqual(took, 0.25, err)
        self.assertLess(took, 2.5 * harness.SCALE, err)

    def check_second_signal_exits_at_once(self, backend, second):
        # A grace of 30 s that the stubborn worker would use up: only the second signal can
        # end the program quickly.
        b = self.start_live(backend, 30000, stubborn=True)
        b.proc.send_signal(signal.SIGTERM)
        self.assertTrue(b.wait_for("shutting down", 10),
                        "the first signal was not acted on:\n" + b.stderr())
        b.proc.send_signal(second)
        rc, out, took = b.finish(10)
        err = b.stderr()
        self.assertNotEqual(rc, 0, err)
        self.assertNotIn("clean shutdown complete", out)
        self.assertIn("second signal", err)
        self.assertLess(took, 2.0 * harness.SCALE, err)


def _add_bootstrap_tests():
    for backend in harness.backends():
        def sigterm(self, backend=backend):
            self.check_sigterm_clean(backend)

        def stubborn(self, backend=backend):
            self.check_stubborn_named(backend)

        def second_int(self, backend=backend):
            self.check_second_signal_exits_at_once(backend, signal.SIGINT)

        def second_term(self, backend=backend):
            self.check_second_signal_exits_at_once(backend, signal.SIGTERM)

        setattr(BootstrapSignals, "test_sigterm_with_live_workers_is_clean__" + backend, sigterm)
        setattr(BootstrapSignals, "test_stubborn_worker_is_named__" + backend, stubborn)
        setattr(BootstrapSignals, "test_second_sigint_exits_at_once__" + backend, second_int)
        setattr(BootstrapSignals, "test_second_sigterm_exits_at_once__" + backend, second_term)


_add_bootstrap_tests()


if __name__ == "__main__":
    unittest.main()
