"""The error boundary, debug mode and observability tests (tests/test_debug.c): every case on
every backend, as its own process (class DebugCases, registered by programs.register), except
the two children, which run below so their output can be checked: EVLOOP_DEBUG in the
environment turns debug mode on (env_debug_child), and the default exception handler writes
one line to stderr (default_handler_child)."""
import os
import subprocess
import unittest

import harness
import programs

PROG = "test_debug"

# DebugCases; the children are excluded from it in tests/programs.py, since they run below.
programs.register(globals())
SKIPPED = unittest.skipIf(PROG in programs.skipped(),
                          "EVL_TEST_SKIP_PROGRAMS leaves %s out" % PROG)


def run_child(case, backend, set_env=None, unset=()):
    """Runs one child case with EVLOOP_BACKEND=backend, the variables of set_env set and those
    in unset removed from the environment (harness.run can only add variables)."""
    env = dict(os.environ)
    for name in unset:
        env.pop(name, None)
    env.update(set_env or {})
    env["EVLOOP_BACKEND"] = backend
    cmd = harness.EMULATOR + harness.WRAPPER + [harness.program(PROG), case]
    return subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=30 * harness.SCALE)


def parse(stdout):
    """key=value lines of a child's stdout, as a dict."""
    out = {}
    for line in stdout.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@SKIPPED
class EnvironmentDebug(unittest.TestCase):
    """EVLOOP_DEBUG turns debug mode on for a loop made with a default config (NULL, a zeroed
    one, evl_config_init's, or debug = -1 as before 0.2); an explicit EVL_DEBUG_OFF or
    EVL_DEBUG_ON in the config wins over it."""

    def check(self, backend, set_env, unset, want):
        r = run_child("env_debug_child", backend, set_env, unset)
        self.assertEqual(r.returncode, 0, "env_debug_child on %s (env %r) failed (exit %d):\n%s%s"
                         % (backend, set_env, r.returncode, r.stdout, r.stderr))
        self.assertIn("ok env_debug_child", r.stdout)
        got = parse(r.stdout)
        self.assertEqual(got.get("default-null"), str(want), r.stdout)
        self.assertEqual(got.get("default-init"), str(want), r.stdout)
        self.assertEqual(got.get("default-zeroed"), str(want), r.stdout)
        self.assertEqual(got.get("default-legacy"), str(want), r.stdout)
        self.assertEqual(got.get("explicit-off"), "0", r.stdout)
        self.assertEqual(got.get("explicit-on"), "1", r.stdout)
        # The 110 ms callback of the default loop: with debug on, the default log writes the
        # slow report (WARN) to stderr, naming the evl_call_soon site; with debug off, nothing.
        slow = [l for l in harness.program_stderr(r.stderr).splitlines() if "slow callback" in l]
        if want:
            self.assertEqual(len(slow), 1, r.stderr)
            self.assertIn("test_debug.c:", slow[0])
        else:
            self.assertEqual(slow, [], r.stderr)

    def test_unset_is_off(self):
        for backend in harness.backends():
            with self.subTest(backend=backend):
                self.check(backend, None, ("EVLOOP_DEBUG",), 0)

    def test_one_is_on(self):
        for backend in harness.backends():
            with self.subTest(backend=backend):
                self.check(backend, {"EVLOOP_DEBUG": "1"}, (), 1)

    def test_zero_and_empty_are_off(self):
        backend = harness.backends()[0]
        for value in ("0", ""):
            with self.subTest(value=value):
                self.check(backend, {"EVLOOP_DEBUG": value}, (), 0)


@SKIPPED
class DefaultExceptionHandler(unittest.TestCase):
    """A failing detached task with no handler set: the default handler writes exactly one line
    to stderr (through the default log), with the message, the task's name and the error text
    (evl_strerror(-EIO), which the child prints on stdout)."""

    def test_one_line_on_stderr(self):
        for backend in harness.backends():
            with self.subTest(backend=backend):
                r = run_child("default_handler_child", backend, unset=("EVLOOP_DEBUG",))
                self.assertEqual(r.returncode, 0, "default_handler_child on %s failed (exit %d):"
                                 "\n%s%s" % (backend, r.returncode, r.stdout, r.stderr))
                self.assertIn("ok default_handler_child", r.stdout)
                error_text = parse(r.stdout).get("error-text")
                self.assertTrue(error_text, r.stdout)
                lines = harness.program_stderr(r.stderr).splitlines()
                self.assertEqual(len(lines), 1, "expected exactly one line on stderr:\n" + r.stderr)
                self.assertIn("detached task failed", lines[0])
                self.assertIn("worker-7", lines[0])
                self.assertIn(error_text, lines[0])


if __name__ == "__main__":
    unittest.main()
