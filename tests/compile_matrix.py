#!/usr/bin/env python3
"""The full compile matrix of evloop.h (`make test-compile`): does the header drop into any C or
C++ project, and does what it builds work?

Every configuration compiles the header in one way (compiler, language standard, warnings,
libc, architecture, EVL_NO_* switch, linkage, visibility, optimisation) and then runs what it
built: tests/compile/smoke.c (it touches every part of the API the configuration keeps and
checks the outcome), or a test program's first cases. One line per configuration, PASS or FAIL
with its first command, then a summary; the exit status is 1 when any configuration failed. A
missing tool is a failure that names the Debian package to install, never a silent skip.

    python3 tests/compile_matrix.py            # everything, two at a time
    python3 tests/compile_matrix.py -k musl -v # the configurations whose name contains "musl",
                                               # with every command they ran
    python3 tests/compile_matrix.py --list

tests/test_build.py is the quick subset that `make test` runs (standards, two translation
units, EVLOOP_STATIC, symbol hygiene, the quick starts); this is the full matrix.

The warnings: STRICT below (-Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
-Wformat=2 -Werror) everywhere, except under musl, whose FD_SET, FD_CLR and FD_ISSET macros mix
the int fd with sizeof, so any program that uses them warns under -Wsign-conversion: musl gets
STRICT without -Wsign-conversion. Standard library only."""
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
COMPILE_DIR = os.path.join(ROOT, "tests", "compile")
SMOKE = os.path.join(COMPILE_DIR, "smoke.c")
IMPL = os.path.join(COMPILE_DIR, "impl.c")
PEER = os.path.join(COMPILE_DIR, "peer.c")
SCALE = float(os.environ.get("EVL_TEST_TIMEOUT_SCALE", "1"))
COMPILE_TIMEOUT = 300
RUN_TIMEOUT = 30
CASES_PER_PROGRAM = 5

BASE = ["-Wall", "-Wextra", "-Wpedantic"]
STRICT = BASE + ["-Wshadow", "-Wconversion", "-Wsign-conversion", "-Wformat=2", "-Werror"]
MUSL_STRICT = STRICT + ["-Wno-sign-conversion"]
# The flags the Makefile builds the test programs with.
TEST_WARN = ["-std=c99"] + BASE + ["-Werror"]
SWITCHES = ["EVL_NO_TASKS", "EVL_NO_THREADS", "EVL_NO_SIGNALS", "EVL_NO_MMAP", "EVL_NO_EPOLL",
            "EVL_NO_KQUEUE", "EVL_NO_VALGRIND", "EVL_NO_SITE_MACROS", "EVL_CTX_UCONTEXT",
            "EVL_TESTING"]

# The Debian package that provides each tool, for the message of a missing one.
PACKAGES = {
    "gcc": "gcc", "g++": "g++", "clang": "clang", "clang++": "clang", "musl-gcc": "musl-tools",
    "readelf": "binutils", "i686-linux-gnu-gcc": "gcc-i686-linux-gnu",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
    "riscv64-linux-gnu-gcc": "gcc-riscv64-linux-gnu",
    "qemu-i386": "qemu-user", "qemu-aarch64": "qemu-user", "qemu-arm": "qemu-user",
    "qemu-riscv64": "qemu-user",
}


class Failure(Exception):
    pass


class Context:
    """One configuration's temporary directory and the commands it ran."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.commands = []

    def path(self, name):
        return os.path.join(self.tmp, name)

    def show(self, argv):
        text = " ".join(shlex.quote(a) for a in argv)
        return text.replace(self.tmp + "/", "").replace(ROOT + "/", "")

    def sh(self, argv, timeout=COMPILE_TIMEOUT):
        """Runs argv in the temp dir; Failure with its output unless it exits 0."""
        self.commands.append(self.show(argv))
        env = dict(os.environ)
        env.pop("EVLOOP_BACKEND", None)   # AUTO must pick the best backend of the build
        try:
            r = subprocess.run(argv, cwd=self.tmp, env=env, capture_output=True, text=True,
                               timeout=timeout * SCALE)
        except subprocess.TimeoutExpired:
            raise Failure("timed out after %ss: %s" % (timeout * SCALE, self.show(argv)))
        if r.returncode != 0:
            raise Failure("exit %d: %s\n%s%s" % (r.returncode, self.show(argv), r.stdout, r.stderr))
        return r

    def run(self, argv, expect=None):
        """Runs a built program; its stdout must contain `expect`."""
        r = self.sh(argv, RUN_TIMEOUT)
        if expect is not None and expect not in r.stdout:
            raise Failure("%s: expected %r in the output:\n%s%s" % (
                self.show(argv), expect, r.stdout, r.stderr))
        return r

    def run_cases(self, program, emulator=()):
        """`program --list`, then its first cases, each as its own process, as the harness does."""
        names = self.run(list(emulator) + [program, "--list"]).stdout.split()
        if not names:
            raise Failure("%s --list printed no case" % program)
        for name in names[:CASES_PER_PROGRAM]:
            self.run(list(emulator) + [program, name], expect="ok " + name)

    def exported(self, binary, dynamic=False):
        """Names of the defined symbols of default visibility, global or weak (readelf)."""
        r = self.sh(["readelf", "--dyn-syms" if dynamic else "--syms", "-W", binary])
        names = []
        for line in r.stdout.splitlines():
            f = line.split()
            # Num: Value Size Type Bind Vis Ndx Name
            if len(f) >= 8 and f[0].endswith(":") and f[4] in ("GLOBAL", "WEAK") and \
                    f[5] == "DEFAULT" and f[6] != "UND":
                names.append(f[7].split("@")[0])
        return names


class Config:
    def __init__(self, name, tools, body):
        self.name = name
        self.tools = tools
        self.body = body


CONFIGS = []


def config(name, tools):
    def register(body):
        CONFIGS.append(Config(name, tools, body))
        return body
    return register


def smoke_config(name, cc, flags, expect="smoke ok: epoll", emulator=None, sources=None):
    """A configuration that builds smoke.c with `cc flags` and runs it (under `emulator`)."""
    tools = [cc] + ([emulator] if emulator else [])

    def body(ctx):
        exe = ctx.path("smoke")
        ctx.sh([cc] + flags + ["-I" + ROOT] + (sources or [SMOKE]) + ["-o", exe, "-lpthread"])
        ctx.run(([emulator] if emulator else []) + [exe], expect=expect)
    CONFIGS.append(Config(name, tools, body))


def program_config(name, cc, flags, programs, emulator=None):
    """Builds test programs with `cc flags` (on top of the Makefile's warnings) and runs their
    first cases."""
    tools = [cc] + ([emulator] if emulator else [])

    def body(ctx):
        for prog in programs:
            exe = ctx.path(prog)
            ctx.sh([cc] + TEST_WARN + flags + ["-I" + ROOT,
                                               os.path.join(ROOT, "tests", prog + ".c"),
                                               "-o", exe, "-lpthread"])
            ctx.run_cases(exe, [emulator] if emulator else [])
    CONFIGS.append(Config(name, tools, body))


# ---- compilers, standards, strict warnings (glibc, x86-64) ----
for _cc, _std in (("gcc", "c99"), ("gcc", "c11"), ("clang", "c99"), ("clang", "c11")):
    smoke_config("%s -std=%s strict" % (_cc, _std), _cc, ["-std=" + _std, "-O2"] + STRICT)
for _cxx, _std in (("g++", "c++11"), ("g++", "c++17"), ("clang++", "c++11"),
                   ("clang++", "c++17")):
    smoke_config("%s -std=%s strict" % (_cxx, _std), _cxx,
                 ["-x", "c++", "-std=" + _std, "-O2"] + STRICT)

# ---- musl: static, so the program runs without a musl loader ----
smoke_config("musl-gcc -static strict (no -Wsign-conversion)", "musl-gcc",
             ["-std=c99", "-O2", "-static"] + MUSL_STRICT)
program_config("musl-gcc -static test_loop test_timers test_tasks", "musl-gcc",
               ["-O2", "-static"], ["test_loop", "test_timers", "test_tasks"])

# ---- 32-bit x86 ----
# gcc -m32 needs gcc-multilib, which Debian cannot install beside the cross compilers (apt
# would remove gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, gcc-i686-linux-gnu and
# gcc-riscv64-linux-gnu), so i386 is built with i686-linux-gnu-gcc, and by clang -m32 with that
# toolchain's headers and libraries. Static, under qemu-i386: not every x86-64 kernel runs
# i386 programs (this one says "Exec format error"), and a static build needs no i386 loader.
smoke_config("i386: i686-linux-gnu-gcc -static strict (qemu-i386)", "i686-linux-gnu-gcc",
             ["-std=c99", "-O2", "-static"] + STRICT, emulator="qemu-i386")
smoke_config("i386: clang -m32 -static strict (qemu-i386)", "clang",
             ["-m32", "-std=c99", "-O2", "-static"] + STRICT, emulator="qemu-i386")

# ---- other architectures (the behaviour tests under qemu are `make test-cross`) ----
for _triple, _emu in (("aarch64-linux-gnu", "qemu-aarch64"), ("arm-linux-gnueabihf", "qemu-arm"),
                      ("riscv64-linux-gnu", "qemu-riscv64")):
    smoke_config("%s-gcc -static strict (%s)" % (_triple, _emu), _triple + "-gcc",
                 ["-std=c99", "-O2", "-static"] + STRICT, emulator=_emu)

# ---- every switch alone: the smoke program, and the first cases of a test program that
# exercises what the switch changes ----
_SWITCH_PROGRAM = {
    "EVL_NO_TASKS": "test_loop", "EVL_NO_THREADS": "test_tasks", "EVL_NO_SIGNALS": "test_tasks",
    "EVL_NO_MMAP": "test_tasks", "EVL_NO_EPOLL": "test_io", "EVL_NO_KQUEUE": "test_io",
    "EVL_NO_VALGRIND": "test_tasks", "EVL_NO_SITE_MACROS": "test_loop",
    "EVL_CTX_UCONTEXT": "test_tasks",
    # The fault-injection hooks compiled in but never armed: the library behaves as without.
    "EVL_TESTING": "test_loop",
}
for _sw in SWITCHES:
    smoke_config("-D%s strict" % _sw, "gcc", ["-std=c99", "-O2", "-D" + _sw] + STRICT,
                 expect="smoke ok: poll" if _sw == "EVL_NO_EPOLL" else "smoke ok: epoll")
    program_config("-D%s %s" % (_sw, _SWITCH_PROGRAM[_sw]), "gcc", ["-O2", "-D" + _sw],
                   [_SWITCH_PROGRAM[_sw]])

# ---- switches combined ----
smoke_config("clang -DEVL_NO_TASKS -DEVL_NO_THREADS -DEVL_NO_SIGNALS strict (the bare core)",
             "clang", ["-std=c99", "-O2", "-DEVL_NO_TASKS", "-DEVL_NO_THREADS", "-DEVL_NO_SIGNALS"]
             + STRICT)
smoke_config("gcc -DEVL_CTX_UCONTEXT -DEVL_NO_MMAP -DEVL_NO_EPOLL strict (portable fallbacks)",
             "gcc", ["-std=c99", "-O2", "-DEVL_CTX_UCONTEXT", "-DEVL_NO_MMAP", "-DEVL_NO_EPOLL"]
             + STRICT, expect="smoke ok: poll")
smoke_config("g++ -std=c++11 -DEVL_NO_THREADS -DEVL_NO_SIGNALS strict", "g++",
             ["-x", "c++", "-std=c++11", "-O2", "-DEVL_NO_THREADS", "-DEVL_NO_SIGNALS"] + STRICT)
smoke_config("musl-gcc -DEVL_NO_TASKS -DEVL_NO_SITE_MACROS -DEVL_NO_VALGRIND", "musl-gcc",
             ["-std=c99", "-O2", "-static", "-DEVL_NO_TASKS", "-DEVL_NO_SITE_MACROS",
              "-DEVL_NO_VALGRIND"] + MUSL_STRICT)


# ---- linkage ----
@config("two translation units: gcc C implementation, clang++ C++ user", ["gcc", "clang++"])
def two_units(ctx):
    impl, user, exe = ctx.path("impl.o"), ctx.path("smoke.o"), ctx.path("smoke")
    ctx.sh(["gcc", "-std=c99", "-O2", "-I" + ROOT] + STRICT + ["-c", IMPL, "-o", impl])
    ctx.sh(["clang++", "-x", "c++", "-std=c++17", "-O2", "-DSMOKE_EXTERN_IMPL", "-I" + ROOT]
           + STRICT + ["-c", SMOKE, "-o", user])
    ctx.sh(["clang++", impl, user, "-o", exe, "-lpthread"])
    ctx.run([exe], expect="smoke ok: epoll")


@config("EVLOOP_STATIC: two private copies in one program", ["gcc", "readelf"])
def two_static_copies(ctx):
    """smoke.c and peer.c each embed their own static copy: each object exports only its own
    function (the context switch's evl__ routines are weak and hidden, so they merge), and the
    program runs both copies."""
    objs = {"main": ctx.path("smoke.o"), "smoke_peer": ctx.path("peer.o")}
    ctx.sh(["gcc", "-std=c99", "-O2", "-DEVLOOP_STATIC", "-DSMOKE_PEER", "-I" + ROOT] + STRICT
           + ["-c", SMOKE, "-o", objs["main"]])
    ctx.sh(["gcc", "-std=c99", "-O2", "-DEVLOOP_STATIC", "-I" + ROOT] + STRICT
           + ["-c", PEER, "-o", objs["smoke_peer"]])
    for own, obj in objs.items():
        names = ctx.exported(obj)
        if names != [own]:
            raise Failure("%s exports %r, expected only %r" % (obj, names, own))
    exe = ctx.path("smoke")
    ctx.sh(["gcc", objs["main"], objs["smoke_peer"], "-o", exe, "-lpthread"])
    ctx.run([exe], expect="smoke ok: epoll")


@config("-fvisibility=hidden: program, and a shared library that exports nothing of evloop",
        ["gcc", "readelf"])
def hidden_visibility(ctx):
    flags = ["-std=c99", "-O2", "-fPIC", "-fvisibility=hidden", "-I" + ROOT] + STRICT
    exe, lib = ctx.path("smoke"), ctx.path("libembed.so")
    ctx.sh(["gcc"] + flags + [IMPL, "-DSMOKE_EXTERN_IMPL", SMOKE, "-o", exe, "-lpthread"])
    ctx.run([exe], expect="smoke ok: epoll")
    ctx.sh(["gcc"] + flags + ["-shared", IMPL, "-o", lib, "-lpthread"])
    leaked = [n for n in ctx.exported(lib, dynamic=True) if n.startswith("evl")]
    if leaked:
        raise Failure("%s built with -fvisibility=hidden exports %r" % (lib, leaked))


@config("shared library (default visibility): exports evl_* only, no evl__", ["gcc", "readelf"])
def shared_library(ctx):
    lib = ctx.path("libevloop.so")
    ctx.sh(["gcc", "-std=c99", "-O2", "-fPIC", "-shared", "-I" + ROOT] + STRICT
           + [IMPL, "-o", lib, "-lpthread"])
    names = ctx.exported(lib, dynamic=True)
    public = [n for n in names if n.startswith("evl_") and not n.startswith("evl__")]
    others = [n for n in names if n not in public]
    if not public or "evl_loop_new" not in public:
        raise Failure("%s exports no evl_ API: %r" % (lib, names))
    if others:
        raise Failure("%s exports symbols outside the evl_ API: %r" % (lib, others))
    exe = ctx.path("smoke")
    ctx.sh(["gcc", "-std=c99", "-O2", "-DSMOKE_EXTERN_IMPL", "-I" + ROOT] + STRICT
           + [SMOKE, "-o", exe, lib, "-Wl,-rpath," + ctx.tmp, "-lpthread"])
    ctx.run([exe], expect="smoke ok: epoll")


# ---- optimisation levels ----
smoke_config("gcc -O0 strict", "gcc", ["-std=c99", "-O0", "-g"] + STRICT)
program_config("gcc -O0 -g test_tasks", "gcc", ["-O0", "-g"], ["test_tasks"])
smoke_config("gcc -O3 -flto strict", "gcc", ["-std=c99", "-O3", "-flto"] + STRICT)
smoke_config("clang -O3 -flto strict", "clang", ["-std=c99", "-O3", "-flto"] + STRICT)
program_config("gcc -O3 -flto test_tasks test_timers", "gcc", ["-O3", "-flto"],
               ["test_tasks", "test_timers"])


def run_config(cfg):
    """(ok, seconds, first command, detail) of one configuration."""
    start = time.monotonic()
    missing = [t for t in cfg.tools if not shutil.which(t)]
    if missing:
        return False, 0.0, [], "missing %s (apt-get install %s)" % (
            ", ".join(missing), " ".join(sorted({PACKAGES.get(t, t) for t in missing})))
    tmp = tempfile.mkdtemp(prefix="evl-matrix-")
    ctx = Context(tmp)
    try:
        cfg.body(ctx)
        ok, detail = True, ""
    except Failure as e:
        ok, detail = False, str(e)
    finally:
        shutil.rmtree(tmp, True)
    return ok, time.monotonic() - start, ctx.commands, detail


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="configurations at once (2)")
    ap.add_argument("-k", "--filter", default="", help="only names containing this")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every command")
    ap.add_argument("--list", action="store_true", help="list the configurations")
    args = ap.parse_args()
    configs = [c for c in CONFIGS if args.filter in c.name]
    if args.list:
        for c in configs:
            print(c.name)
        return 0
    if not configs:
        print("no configuration matches %r" % args.filter)
        return 1
    lock = threading.Lock()
    failed = []
    start = time.monotonic()

    def report(cfg, result):
        ok, secs, commands, detail = result
        with lock:
            first = commands[0] if commands else ""
            print("%s [%5.1fs] %s: %s" % ("PASS" if ok else "FAIL", secs, cfg.name, first),
                  flush=True)
            if args.verbose or not ok:
                for cmd in commands[1:]:
                    print("      then: " + cmd)
            if not ok:
                failed.append(cfg.name)
                print("      " + detail.rstrip().replace("\n", "\n      "), flush=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_config, c): c for c in configs}
        for f in concurrent.futures.as_completed(futures):
            report(futures[f], f.result())
    print("%d configurations: %d passed, %d failed (%.0f s)" % (
        len(configs), len(configs) - len(failed), len(failed), time.monotonic() - start))
    for name in failed:
        print("FAILED: " + name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
