"""Shared machinery of evloop's Python test harness (standard library only).

The C test programs are built by `make` into $EVL_BUILD (default build/) and each case of each
program runs as its own process, once per backend the machine has, with a timeout. Set
EVL_TEST_WRAPPER to run every case under a tool (valgrind), EVL_TEST_EMULATOR to run every
program under an emulator (qemu-user, for other architectures), EVL_TEST_BACKENDS to restrict
the backends (comma-separated), EVL_TEST_TIMEOUT_SCALE to give slow tools more time, and
EVL_TEST_SKIP_PROGRAMS to leave programs out (comma-separated). Which programs there are, and
the few settings that differ between them, is tests/programs.py; tests/README.md tells how to
add a case, a program or an example test."""
import os
import re
import shlex
import signal
import subprocess
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("EVL_BUILD", "build"))
WRAPPER = shlex.split(os.environ.get("EVL_TEST_WRAPPER", ""))
EMULATOR = shlex.split(os.environ.get("EVL_TEST_EMULATOR", ""))
ONLY_BACKENDS = [b for b in os.environ.get("EVL_TEST_BACKENDS", "").split(",") if b]
SCALE = float(os.environ.get("EVL_TEST_TIMEOUT_SCALE", "1"))
# The sanitizer flags the programs were built with (the Makefile's test target passes them).
SANFLAGS = os.environ.get("EVL_SANFLAGS", "")


def start_example(name, backend, *args):
    """Starts examples/<name> on a free port (PORT 0, then args) on one backend, under the
    emulator and wrapper; returns (process, port) once it has printed "listening on PORT"."""
    build()
    cmd = EMULATOR + WRAPPER + [os.path.join(BUILD, "examples", name), "0"] + list(args)
    proc = subprocess.Popen(cmd, env=dict(os.environ, EVLOOP_BACKEND=backend),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError("%s did not start: %r %s" % (name, line, proc.stderr.read()))
    return proc, int(line.split()[2])


def stop_example(test, proc, name, final_line):
    """SIGTERM: the example must exit 0 within 15 s (scaled) after printing final_line."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        test.fail("%s did not exit within 15 s of SIGTERM" % name)
    test.assertEqual(proc.returncode, 0, "exit status after SIGTERM; stderr:\n" + err)
    test.assertIn(final_line, out)


_TOOL_LINE = re.compile(r"^(==|--)\d+(==|--) ")


def program_stderr(text):
    """What the program itself wrote to stderr: without the lines of a wrapper tool (Valgrind
    prefixes its own with ==PID== or --PID--, e.g. its warning about epoll_pwait2, a system
    call it does not know)."""
    return "".join(l for l in text.splitlines(True) if not _TOOL_LINE.match(l))


def push_until_stalled(test, sock, timeout):
    """Sends on a client that never reads until the server stops taking bytes (nothing sent
    for 0.5 s); returns how many bytes it took. Fails when the server kept reading for
    timeout seconds."""
    sock.setblocking(False)
    pushed, chunk, stalled_since = 0, b"x" * 65536, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pushed += sock.send(chunk)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 0.5:
                return pushed
            time.sleep(0.01)
    test.fail("the server kept reading a client that never reads (%d KiB taken)" % (pushed // 1024))


def kill_example(proc):
    """Kills an example that is still running and collects it."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def open_sockets(pid):
    """The sockets process pid holds (/proc/PID/fd); an fd it closes while they are counted
    does not count."""
    fd_dir, count = "/proc/%d/fd" % pid, 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, fd)).startswith("socket:")
        except FileNotFoundError:
            pass
    return count


def memory_kib(pid, field):
    """A memory figure of /proc/PID/status: VmRSS (now) or VmHWM (the peak), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(field + r":\s*(\d+) kB", f.read()).group(1))


def task_count(n):
    """How many task-backed connections a test may hold at once: n, but at most 1000 under
    ThreadSanitizer, which treats every task as a thread of its own (about 6 ms and 0.8 MiB to
    create each, and it dies past 8128 of them)."""
    return min(n, 1000) if "-fsanitize=thread" in SANFLAGS else n


def check_memory(test, kib, limit_kib, what):
    """Asserts a server's memory figure (its RSS, peak RSS or growth) stayed under limit_kib,
    except under ThreadSanitizer, whose shadow state for each task (about 0.8 MiB) says nothing
    about the program's own memory, and under a wrapper tool (Valgrind's shadow memory counts
    in the process's RSS: http's peak with 10 000 idle connections is 300 MiB there)."""
    if "-fsanitize=thread" not in SANFLAGS and not WRAPPER:
        test.assertLess(kib, limit_kib, what)

_built = False


def build():
    """Builds the test programs and examples once per harness run."""
    global _built
    if not _built:
        subprocess.run(["make", "-s", "-C", ROOT, "all", "BUILD=" + os.path.relpath(BUILD, ROOT)],
                       check=True, timeout=600)
        _built = True


def program(name):
    return os.path.join(BUILD, "tests", name)


def run(argv, env=None, timeout=30, wrap=True):
    """Runs argv with the wrapper and a scaled timeout; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = EMULATOR + (WRAPPER if wrap else []) + list(argv)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                          timeout=timeout * SCALE)


def backends():
    """The backends this machine can run, as the test programs themselves report them."""
    build()
    out = run([program("test_loop"), "--backends"], wrap=False).stdout.split()
    return [b for b in out if not ONLY_BACKENDS or b in ONLY_BACKENDS]


_cases = {}


def cases(prog):
    """The case names the C program `prog` lists (`prog --list`), asked once per run."""
    if prog not in _cases:
        build()
        r = run([program(prog), "--list"], wrap=False)
        if r.returncode != 0 or not r.stdout.split():
            raise RuntimeError("%s --list failed (exit %d): %s%s"
                               % (prog, r.returncode, r.stdout, r.stderr))
        _cases[prog] = r.stdout.split()
    return _cases[prog]


def add_cases(cls, prog, timeout=30, exclude=(), not_wrapped=None):
    """Adds one test method per case of the C program `prog` and per backend to cls, except
    the cases named in `exclude` (those the caller runs its own way). not_wrapped maps the
    cases a wrapper tool cannot run to the reason, which the skip gives."""
    not_wrapped = not_wrapped or {}
    names = [n for n in cases(prog) if n not in exclude]
    for backend in backends():
        for name in names:
            def method(self, name=name, backend=backend):
                if WRAPPER and name in not_wrapped:
                    self.skipTest(not_wrapped[name])
                try:
                    r = run([program(prog), name], env={"EVLOOP_BACKEND": backend},
                            timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.fail("%s %s on %s: timed out after %ss" % (prog, name, backend, timeout * SCALE))
                self.assertEqual(r.returncode, 0, "%s %s on %s failed (exit %d):\n%s%s" % (
                    prog, name, backend, r.returncode, r.stdout, r.stderr))
                self.assertIn("ok " + name, r.stdout)
            setattr(cls, "test_%s__%s__%s" % (prog, name, backend), method)
    return cls
