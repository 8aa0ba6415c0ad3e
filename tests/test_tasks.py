"""The task tests (tests/test_tasks.c): every case on every backend, as its own process (class
TaskCases, registered by programs.register), except overflow_child, which overflows a task's
stack on purpose. That one runs alone below: the process must die by SIGSEGV after evloop's
handler has named the task and its stack size."""
import shlex
import signal
import subprocess
import unittest

import harness
import programs

PROG = "test_tasks"

# TaskCases; overflow_child is excluded from it in tests/programs.py, since it runs below.
programs.register(globals())


def _under_asan():
    """Whether the programs were built with AddressSanitizer (EVL_SANFLAGS, which the
    Makefile's test target passes on), which installs its own SIGSEGV handler."""
    return any(flag.startswith("-fsanitize=") and "address" in flag[len("-fsanitize="):].split(",")
               for flag in shlex.split(harness.SANFLAGS))


@unittest.skipIf(PROG in programs.skipped(), "EVL_TEST_SKIP_PROGRAMS leaves %s out" % PROG)
class StackOverflow(unittest.TestCase):
    """A task that overflows its stack is reported by name and stack size, then the process
    dies the default way (SIGSEGV), whatever the backend."""

    def _overflow(self, env=None):
        try:
            r = harness.run([harness.program(PROG), "overflow_child"], env=env, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("overflow_child timed out instead of dying by SIGSEGV")
        self.assertEqual(r.returncode, -signal.SIGSEGV,
                         "expected death by SIGSEGV (-11), got exit %d:\n%s%s"
                         % (r.returncode, r.stdout, r.stderr))
        self.assertIn("deep-recursion", r.stderr)
        self.assertIn("32768", r.stderr)
        self.assertNotIn("ok overflow_child", r.stdout)

    @unittest.skipIf(harness.WRAPPER, "the wrapper (valgrind) intercepts SIGSEGV itself")
    @unittest.skipIf(_under_asan(), "AddressSanitizer intercepts SIGSEGV itself")
    def test_overflow_is_reported(self):
        """With the guard the kernel offers: a guard region on Linux 6.13+."""
        self._overflow()

    @unittest.skipIf(harness.WRAPPER, "the wrapper (valgrind) intercepts SIGSEGV itself")
    @unittest.skipIf(_under_asan(), "AddressSanitizer intercepts SIGSEGV itself")
    def test_overflow_is_reported_with_guard_mappings(self):
        """With the fallback of older kernels: a stack mapping of its own, PROT_NONE below."""
        self._overflow({"EVLOOP_STACK_GUARD": "mprotect"})


if __name__ == "__main__":
    unittest.main()
