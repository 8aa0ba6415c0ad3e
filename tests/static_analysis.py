#!/usr/bin/env python3
"""Static analysis of evloop.h with the implementation enabled (`make test-static`): cppcheck
and clang-tidy (its clang-analyzer-* checks are the Clang Static Analyzer), and on request
scan-build. The goal is zero findings: each one is fixed in evloop.h or justified, either by an
inline suppression comment in evloop.h or by one of the suppressions below, each with its
reason. One line per run, PASS or FAIL with the command; the exit status is 1 when any run has
a finding or could not run. A missing tool is a failure that names its Debian package.

The analysers read evloop.h itself as the main file (-x c -DEVLOOP_IMPLEMENTATION): the Clang
Static Analyzer, and cppcheck's unused-member check, skip the function bodies of included
headers, so a small .c file that includes evloop.h would leave the implementation unexamined.

    python3 tests/static_analysis.py              # cppcheck and clang-tidy
    python3 tests/static_analysis.py --scan-build # and scan-build (the same analyzer as
                                                  # clang-tidy's clang-analyzer-*, ~30 s more)
Standard library only."""
import argparse
import concurrent.futures
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "evloop.h")
IMPL = os.path.join(ROOT, "tests", "compile", "impl.c")
TIMEOUT = 600

# ---- cppcheck ----
CPPCHECK = ["cppcheck", "--enable=warning,style,performance,portability", "--inline-suppr",
            "--error-exitcode=1", "--quiet", "--std=c99", "--language=c", "--library=posix",
            "--template={file}:{line}: {severity}: {id}: {message}",
            # Reason: the header declares a function's locals at its top (the C89 habit the
            # whole file keeps); narrowing a variable's scope changes nothing it does.
            "--suppress=variableScope",
            # Reason: ucontext is the documented fallback context switch (EVL_CTX_UCONTEXT and
            # CPUs without the assembly); POSIX.1-2008 dropped it, glibc and the BSDs ship it.
            "--suppress=getcontextCalled", "--suppress=swapcontextCalled",
            "--suppress=makecontextCalled",
            "-D__GNUC__", "-DEVLOOP_IMPLEMENTATION"]

# cppcheck's posix.cfg says mmap's fd must be >= 0, but an anonymous mapping takes -1 (the
# Linux and BSD manuals ask for -1 with MAP_ANONYMOUS): the same declaration with -1 allowed.
MMAP_CFG = """<?xml version="1.0"?>
<def format="2">
  <function name="mmap">
    <use-retval/>
    <returnValue type="void *"/>
    <noreturn>false</noreturn>
    <leak-ignore/>
    <arg nr="1" direction="in"><not-uninit/></arg>
    <arg nr="2" direction="in"><not-uninit/><not-bool/><valid>1:</valid></arg>
    <arg nr="3" direction="in"><not-uninit/><not-bool/></arg>
    <arg nr="4" direction="in"><not-uninit/><not-bool/></arg>
    <arg nr="5" direction="in"><not-uninit/><not-bool/><valid>-1:</valid></arg>
    <arg nr="6" direction="in"><not-uninit/><not-bool/></arg>
  </function>
</def>
"""

# Reason, for every configuration but the first: a switch leaves out the code that reads some
# struct members (the public evl_config and evl_stats keep every field whatever the switches,
# so a program compiles against any build; private ones such as the Valgrind stack id and the
# epoll generation counter are read only by the code of their feature). The full configuration
# checks that every member is used somewhere.
REDUCED = ["--suppress=unusedStructMember"]
CPPCHECK_CONFIGS = [
    ("Linux x86-64, all features, Valgrind", ["-D__linux__", "-D__x86_64__", "-DEVL_VALGRIND"]),
    ("Linux x86-64, ucontext, no mmap, no epoll", REDUCED + [
        "-D__linux__", "-D__x86_64__", "-DEVL_CTX_UCONTEXT", "-DEVL_NO_MMAP", "-DEVL_NO_EPOLL"]),
    ("Linux x86-64, fault injection (EVL_TESTING)", REDUCED + [
        "-D__linux__", "-D__x86_64__", "-DEVL_TESTING"]),
    ("Linux x86-64, no tasks", REDUCED + ["-D__linux__", "-D__x86_64__", "-DEVL_NO_TASKS"]),
    ("Linux x86-64, no threads, no signals", REDUCED + [
        "-D__linux__", "-D__x86_64__", "-DEVL_NO_THREADS", "-DEVL_NO_SIGNALS"]),
    ("Linux i386", REDUCED + ["-D__linux__", "-D__i386__"]),
    ("Linux AArch64", REDUCED + ["-D__linux__", "-D__aarch64__"]),
    ("Linux ARMv7", REDUCED + ["-D__linux__", "-D__arm__"]),
    ("Linux RISC-V 64", REDUCED + ["-D__linux__", "-D__riscv", "-D__riscv_xlen=64"]),
    ("macOS (kqueue)", REDUCED + ["-D__APPLE__", "-D__MACH__", "-D__x86_64__"]),
    ("FreeBSD (kqueue)", REDUCED + ["-D__FreeBSD__", "-D__x86_64__"]),
]

# ---- clang-tidy ----
TIDY_CHECKS = ",".join([
    "-*", "bugprone-*", "clang-analyzer-*", "cert-*", "performance-*", "portability-*",
    # Reason: a check of API shape, not of correctness. The flagged signatures take (fd,
    # events) or (old_events, new_events) in POSIX order, or are the public API: changing them
    # would break callers for no bug.
    "-bugprone-easily-swappable-parameters",
    # Reason: every call it flags ignores a result on purpose: snprintf/vsnprintf into a fixed
    # message buffer (truncating a log line is the wanted behaviour; the buffer is always
    # terminated), fprintf to stderr in the default log hook (a failed write to stderr has
    # nowhere to be reported), signal(SIGSEGV, SIG_DFL) in the guard-page handler (cannot fail
    # for a valid signal number).
    "-cert-err33-c",
    # Reason: the one integer-to-pointer conversion computes the aligned initial stack pointer
    # of a new task, which is integer arithmetic by nature; it runs once per task start.
    "-performance-no-int-to-ptr",
    # Reason: struct evl_loop exists once per loop; its fields stay grouped by purpose, and
    # the 40 bytes the optimal order would save do not matter.
    "-clang-analyzer-optin.performance.Padding",
])
# Reason for the allowed identifier: evloop.h defines the feature macro _GNU_SOURCE on Linux
# (when it is the implementation's first include), which is what the macro is for.
TIDY_CONFIG = """Checks: '%s'
WarningsAsErrors: '*'
CheckOptions:
  - {key: bugprone-reserved-identifier.AllowedIdentifiers, value: _GNU_SOURCE}
  - {key: cert-dcl37-c.AllowedIdentifiers, value: _GNU_SOURCE}
  - {key: cert-dcl51-cpp.AllowedIdentifiers, value: _GNU_SOURCE}
""" % TIDY_CHECKS
TIDY_CONFIGS = [
    ("all features", []),
    ("ucontext, no mmap, no epoll, fault injection", [
        "-DEVL_CTX_UCONTEXT", "-DEVL_NO_MMAP", "-DEVL_NO_EPOLL", "-DEVL_TESTING"]),
    ("no tasks, no threads, no signals", ["-DEVL_NO_TASKS", "-DEVL_NO_THREADS",
                                          "-DEVL_NO_SIGNALS"]),
]

PACKAGES = {"cppcheck": "cppcheck", "clang-tidy": "clang-tidy", "scan-build": "clang-tools",
            "clang": "clang"}


def show(argv, tmp):
    return " ".join(shlex.quote(a) for a in argv).replace(tmp + "/", "$TMP/").replace(
        ROOT + "/", "")


def run(argv, tmp, ok_output=None):
    """(passed, command, output). Passed: exit 0, and ok_output (when given) decides on the
    output too."""
    missing = [] if shutil.which(argv[0]) else [argv[0]]
    if missing:
        return False, show(argv, tmp), "missing %s (apt-get install %s)" % (
            argv[0], PACKAGES.get(argv[0], argv[0]))
    try:
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, show(argv, tmp), "timed out after %ss" % TIMEOUT
    out = r.stdout + r.stderr
    passed = r.returncode == 0 and (ok_output is None or ok_output(out))
    return passed, show(argv, tmp), out


def cppcheck_job(name, flags, tmp):
    argv = CPPCHECK + ["--library=" + os.path.join(tmp, "mmap.cfg")] + flags + [HEADER]
    return ("cppcheck: " + name,) + run(argv, tmp, lambda out: "error:" not in out and
                                        "warning:" not in out and "style:" not in out and
                                        "performance:" not in out and "portability:" not in out)


def tidy_job(name, defines, tmp):
    argv = [os.environ.get("CLANG_TIDY", "clang-tidy"), "--quiet",
            "--config-file=" + os.path.join(tmp, "clang-tidy.yaml"),
            HEADER, "--", "-x", "c", "-std=c99", "-Wall", "-Wextra", "-DEVLOOP_IMPLEMENTATION",
            "-I" + ROOT] + defines
    return ("clang-tidy: " + name,) + run(argv, tmp, lambda out: "warning:" not in out and
                                          "error:" not in out)


def scan_build_job(tmp):
    argv = [os.environ.get("SCAN_BUILD", "scan-build"), "-analyze-headers", "--status-bugs",
            "-o", os.path.join(tmp, "scan-build"), "clang", "-std=c99", "-I" + ROOT, "-c", IMPL,
            "-o", os.path.join(tmp, "impl.o")]
    return ("scan-build -analyze-headers",) + run(argv, tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="runs at once (2)")
    ap.add_argument("--scan-build", action="store_true", help="also run scan-build")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every output")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="evl-static-")
    for name, text in (("mmap.cfg", MMAP_CFG), ("clang-tidy.yaml", TIDY_CONFIG)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    jobs = [(tidy_job, (name, d, tmp)) for name, d in TIDY_CONFIGS]
    jobs += [(cppcheck_job, (name, flags, tmp)) for name, flags in CPPCHECK_CONFIGS]
    if args.scan_build:
        jobs.append((scan_build_job, (tmp,)))
    else:
        print("NOT RUN scan-build (pass --scan-build: it is the same analyzer as clang-tidy's "
              "clang-analyzer-* checks)")
    lock = threading.Lock()
    failed = []
    start = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(fn, *a) for fn, a in jobs]
            for fut in concurrent.futures.as_completed(futures):
                name, passed, command, output = fut.result()
                with lock:
                    print("%s %s: %s" % ("PASS" if passed else "FAIL", name, command), flush=True)
                    if not passed:
                        failed.append(name)
                    if (not passed or args.verbose) and output.strip():
                        print("      " + output.strip().replace("\n", "\n      "), flush=True)
    finally:
        shutil.rmtree(tmp, True)
    print("%d analyses: %d passed, %d failed (%.0f s)" % (
        len(jobs), len(jobs) - len(failed), len(failed), time.monotonic() - start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
