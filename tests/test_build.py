"""How evloop.h compiles: language standards, compilers, translation units, linkage, symbols,
and the quick starts of the README and of the manual at the top of evloop.h.

Standard library only. Each check compiles into its own temporary directory with the compilers
found on PATH (gcc, clang, g++, clang++); a check whose compiler is absent is skipped and says
so. Every compile and every run has a timeout."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import ROOT

HEADER = os.path.join(ROOT, "evloop.h")
README = os.path.join(ROOT, "README.md")
COMPILE_TIMEOUT = 180
RUN_TIMEOUT = 10
STRICT = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"]
C_COMPILERS = ["gcc", "clang"]
CXX_COMPILERS = ["g++", "clang++"]

# A small program that uses the API end to end: valid C99 and C++. Exits non-zero, with a
# distinct code, at the first thing that goes wrong.
PROGRAM_BODY = r"""
#include <stdio.h>
#include <string.h>

static void on_timer(evl_loop *loop, void *arg) {
    (void)loop;
    *(int *)arg += 1;
}

int main(void) {
    evl_loop *loop;
    evl_timer t;
    int fired = 0;
    if (evl_loop_new(&loop, NULL) != 0) return 10;
    evl_timer_init(&t, on_timer, &fired);
    if (evl_timer_start(loop, &t, EVL_MSEC(1), 0) != 0) return 11;
    if (evl_run(loop) != 0) return 12;
    if (fired != 1) return 13;
    if (strcmp(evl_strerror(0), evl_strerror(-EINVAL)) == 0) return 14;
    if (evl_loop_close(loop) != 0) return 15;
    printf("ok\n");
    return 0;
}
"""

IMPL_PROGRAM = "#define EVLOOP_IMPLEMENTATION\n#include \"evloop.h\"\n#include <errno.h>\n" + PROGRAM_BODY


def _which(compiler):
    return shutil.which(compiler)


class BuildTestCase(unittest.TestCase):
    """Temporary directory, compile, nm and run helpers that fail with the tool's output."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="evl-build-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def need(self, tool):
        path = _which(tool)
        if not path:
            self.skipTest("%s not found on PATH" % tool)
        return path

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def tool(self, argv, what, timeout=COMPILE_TIMEOUT):
        """Runs a build tool in the temp dir; fails the test with its output unless it exits 0."""
        try:
            r = subprocess.run(argv, cwd=self.tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("%s: timed out after %ss: %s" % (what, timeout, " ".join(argv)))
        if r.returncode != 0:
            self.fail("%s failed (exit %d): %s\n%s%s" % (
                what, r.returncode, " ".join(argv), r.stdout, r.stderr))
        return r

    def compile(self, compiler, args, what=None):
        cc = self.need(compiler)
        return self.tool([cc, "-I" + ROOT] + list(args), what or "%s compile" % compiler)

    def run_program(self, path, what):
        try:
            r = subprocess.run([path], cwd=self.tmp, capture_output=True, text=True,
                               timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail("%s: %s did not finish within %ss" % (what, path, RUN_TIMEOUT))
        self.assertEqual(r.returncode, 0, "%s: %s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            what, path, r.returncode, r.stdout, r.stderr))
        return r

    def is_hidden_private(self, obj, name):
        """True for an evl__ symbol with hidden visibility (the context switch's assembly
        routines): it merges between copies and never leaves the program or library."""
        if not name.startswith("evl__"):
            return False
        readelf = self.need("readelf")
        r = self.tool([readelf, "-sW", obj], "readelf")
        for line in r.stdout.splitlines():
            parts = line.split()
            if parts and parts[-1] == name:
                return "HIDDEN" in parts
        return False

    def nm(self, obj, *flags):
        """(type, name) of every symbol nm lists with `flags`."""
        nm = self.need("nm")
        r = self.tool([nm] + list(flags) + [obj], "nm")
        syms = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                syms.append((parts[-2], parts[-1]))
        return syms


# ---- the implementation under each standard and compiler ----

class ImplementationCompiles(BuildTestCase):
    """The implementation plus a program using it builds warning-free under -Wall -Wextra
    -Wpedantic -Werror as C99, C11, C++11 and C++17, and the program runs."""


def _add_std_check(compiler, std, ext):
    def method(self):
        src = self.write("prog." + ext, IMPL_PROGRAM)
        exe = os.path.join(self.tmp, "prog")
        self.compile(compiler, ["-std=" + std] + STRICT + [src, "-o", exe, "-lpthread"],
                     "%s -std=%s" % (compiler, std))
        self.run_program(exe, "%s -std=%s program" % (compiler, std))
    name = "test_%s_%s" % (re.sub(r"\W", "x", compiler), re.sub(r"\W", "x", std))
    method.__name__ = name
    setattr(ImplementationCompiles, name, method)


for _cc in C_COMPILERS:
    for _std in ("c99", "c11"):
        _add_std_check(_cc, _std, "c")
for _cxx in CXX_COMPILERS:
    for _std in ("c++11", "c++17"):
        _add_std_check(_cxx, _std, "cpp")


# ---- several translation units ----

B_SOURCE = "#include \"evloop.h\"\n#include <errno.h>\n" + PROGRAM_BODY


class TwoTranslationUnits(BuildTestCase):
    """a.c holds the implementation, b.c only the declarations and main: they link into one
    program that runs."""

    def build_pair(self, impl_compiler, impl_ext, user_compiler, user_ext, linker, std_impl,
                   std_user):
        a = self.write("a." + impl_ext, "#define EVLOOP_IMPLEMENTATION\n#include \"evloop.h\"\n")
        b = self.write("b." + user_ext, B_SOURCE)
        ao = os.path.join(self.tmp, "a.o")
        bo = os.path.join(self.tmp, "b.o")
        exe = os.path.join(self.tmp, "prog")
        self.compile(impl_compiler, ["-std=" + std_impl] + STRICT + ["-c", a, "-o", ao])
        self.compile(user_compiler, ["-std=" + std_user] + STRICT + ["-c", b, "-o", bo])
        self.compile(linker, [ao, bo, "-o", exe, "-lpthread"], "link")
        self.run_program(exe, "two-TU program")

    def test_gcc(self):
        self.build_pair("gcc", "c", "gcc", "c", "gcc", "c99", "c99")

    def test_clang(self):
        self.build_pair("clang", "c", "clang", "c", "clang", "c99", "c99")

    def test_implementation_in_c_used_from_cxx(self):
        self.build_pair("gcc", "c", "g++", "cpp", "g++", "c99", "c++11")

    def test_implementation_in_cxx_used_from_c(self):
        self.build_pair("g++", "cpp", "gcc", "c", "g++", "c++11", "c99")


# ---- repeated inclusion ----

class RepeatedInclusion(BuildTestCase):
    def check_each_compiler(self, source, link, what):
        ran = False
        for compiler, ext, std in (("gcc", "c", "c99"), ("clang", "c", "c99"),
                                   ("g++", "cpp", "c++11"), ("clang++", "cpp", "c++11")):
            if not _which(compiler):
                continue
            ran = True
            with self.subTest(compiler=compiler):
                src = self.write("%s_twice.%s" % (re.sub(r"\W", "x", compiler), ext), source)
                out = os.path.join(self.tmp, re.sub(r"\W", "x", compiler) + "_twice")
                args = ["-std=" + std] + STRICT + [src, "-o", out]
                if link:
                    self.compile(compiler, args + ["-lpthread"], "%s: %s" % (compiler, what))
                    self.run_program(out, "%s: %s" % (compiler, what))
                else:
                    self.compile(compiler, ["-c"] + args, "%s: %s" % (compiler, what))
        if not ran:
            self.skipTest("no C or C++ compiler found")

    def test_header_twice(self):
        self.check_each_compiler(
            "#include \"evloop.h\"\n#include \"evloop.h\"\n"
            "int use(void);\nint use(void) { evl_config c; evl_config_init(&c); "
            "return (int)c.backend + EVL_READ + (int)EVL_MSEC(0); }\n",
            link=False, what="header included twice")

    def test_implementation_twice(self):
        self.check_each_compiler(
            "#define EVLOOP_IMPLEMENTATION\n#include \"evloop.h\"\n#include \"evloop.h\"\n"
            "#include <errno.h>\n" + PROGRAM_BODY,
            link=True, what="implementation included twice")

    def test_header_then_implementation(self):
        """The declarations arrive first (through the file's own header, say), then the file
        defines EVLOOP_IMPLEMENTATION and includes evloop.h again. On Linux the feature macros
        the implementation needs can no longer take effect, so the manual says: define
        EVLOOP_IMPLEMENTATION before the first include, or build with -D_GNU_SOURCE. The
        implementation must then stop with an #error that says exactly that (not with a
        cascade of undeclared functions), and build cleanly with -D_GNU_SOURCE."""
        src_text = ("#include \"evloop.h\"\n#define EVLOOP_IMPLEMENTATION\n#include \"evloop.h\"\n"
                    "#include <errno.h>\n" + PROGRAM_BODY)
        src = self.write("late.c", src_text)
        cc = self.need("cc")
        if sys.platform.startswith("linux"):
            r = subprocess.run([cc, "-I" + ROOT, "-std=c99", "-c", src, "-o", "late.o"],
                               cwd=self.tmp, capture_output=True, text=True,
                               timeout=COMPILE_TIMEOUT)
            self.assertNotEqual(r.returncode, 0, "late implementation include compiled without "
                                "_GNU_SOURCE: expected the #error")
            self.assertIn("define EVLOOP_IMPLEMENTATION before the first #include", r.stderr)
            self.assertEqual(r.stderr.count("error:"), 1, "more than the one #error:\n" + r.stderr)
        exe = os.path.join(self.tmp, "late")
        self.compile("cc", ["-std=c99", "-D_GNU_SOURCE"] + STRICT + [src, "-o", exe, "-lpthread"])
        self.run_program(exe, "header, then implementation, with -D_GNU_SOURCE")


# ---- EVLOOP_STATIC ----

STATIC_PROGRAM = "#define EVLOOP_STATIC\n" + IMPL_PROGRAM


class StaticBuild(BuildTestCase):
    """With EVLOOP_STATIC everything is private to the one translation unit."""

    def check_static(self, compiler):
        src = self.write("static.c", STATIC_PROGRAM)
        obj = os.path.join(self.tmp, "static.o")
        exe = os.path.join(self.tmp, "static")
        # Not -Werror here: the API functions this program does not call are unused statics
        # (test_no_unused_warnings checks that separately).
        self.compile(compiler, ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-c", src, "-o", obj])
        self.compile(compiler, [obj, "-o", exe, "-lpthread"], "link")
        self.run_program(exe, "EVLOOP_STATIC program")
        defined = [(t, n) for t, n in self.nm(obj, "-g", "--defined-only")
                   if not self.is_hidden_private(obj, n)]
        self.assertEqual(defined, [("T", "main")],
                         "EVLOOP_STATIC object: only main (and hidden evl__ assembly routines) "
                         "should be external, nm -g --defined-only lists %r" % (defined,))
        undefined_evl = [n for t, n in self.nm(obj, "-u") if n.startswith("evl")]
        self.assertEqual(undefined_evl, [], "EVLOOP_STATIC object refers to external %r"
                         % (undefined_evl,))

    def test_gcc(self):
        self.check_static("gcc")

    def test_clang(self):
        self.check_static("clang")

    def test_two_private_copies_link(self):
        """Two translation units, each with its own EVLOOP_STATIC copy of the implementation
        (two libraries that each embed evloop.h, say), link into one program: nothing of
        either copy is visible to the linker."""
        for compiler in C_COMPILERS:
            if not _which(compiler):
                continue
            with self.subTest(compiler=compiler):
                one = self.write("one_%s.c" % compiler,
                                 "#define EVLOOP_STATIC\n#define EVLOOP_IMPLEMENTATION\n"
                                 "#include \"evloop.h\"\nint one(void);\n"
                                 "int one(void) { evl_loop *l; if (evl_loop_new(&l, NULL)) "
                                 "return 1; evl_loop_close(l); return 0; }\n")
                two = self.write("two_%s.c" % compiler,
                                 "#define EVLOOP_STATIC\n" + IMPL_PROGRAM.replace(
                                     "int main(void) {", "int one(void);\nint main(void) {\n"
                                     "    if (one() != 0) return 9;"))
                objs = []
                for src in (one, two):
                    objs.append(src[:-2] + ".o")
                    self.compile(compiler, ["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-c",
                                            src, "-o", objs[-1]])
                exe = os.path.join(self.tmp, "two_copies_" + compiler)
                self.compile(compiler, objs + ["-o", exe, "-lpthread"],
                             "%s: link two EVLOOP_STATIC copies" % compiler)
                self.run_program(exe, "two EVLOOP_STATIC copies")

    def test_no_unused_warnings(self):
        """A program that calls only some of the API still builds under -Wall -Werror: the
        statics it does not call must not warn as unused."""
        for compiler in C_COMPILERS:
            if not _which(compiler):
                continue
            with self.subTest(compiler=compiler):
                src = self.write("static_%s.c" % compiler, STATIC_PROGRAM)
                self.compile(compiler, ["-std=c99"] + STRICT + ["-c", src, "-o",
                                                                 src[:-2] + ".o"],
                             "%s EVLOOP_STATIC -Wall -Werror" % compiler)


# ---- symbol hygiene ----

class SymbolHygiene(BuildTestCase):
    """Every external symbol the implementation defines starts with evl_; the private evl__ ones
    (the context switch's assembly routines) must have hidden visibility."""

    def check_symbols(self, compiler, ext, std, opt):
        src = self.write("impl." + ext, "#define EVLOOP_IMPLEMENTATION\n#include \"evloop.h\"\n")
        obj = os.path.join(self.tmp, "impl.o")
        self.compile(compiler, ["-std=" + std, opt] + STRICT + ["-c", src, "-o", obj])
        names = [n for t, n in self.nm(obj, "-g", "--defined-only")]
        self.assertTrue(names, "nm found no external symbol in the implementation object")
        offenders = [n for n in names if not n.startswith("evl_") or
                     (n.startswith("evl__") and not self.is_hidden_private(obj, n))]
        self.assertEqual(offenders, [], "%s %s %s: external symbols outside the evl_ "
                         "namespace, or private evl__ ones that are not hidden: %s" % (
                             compiler, std, opt, ", ".join(offenders)))

    def test_gcc_O0(self):
        self.check_symbols("gcc", "c", "c99", "-O0")

    def test_gcc_O2(self):
        self.check_symbols("gcc", "c", "c99", "-O2")

    def test_clang_O2(self):
        self.check_symbols("clang", "c", "c99", "-O2")

    def test_gxx_O2(self):
        self.check_symbols("g++", "cpp", "c++11", "-O2")

    def test_clangxx_O2(self):
        self.check_symbols("clang++", "cpp", "c++11", "-O2")


# ---- quick starts ----

def readme_first_c_block(text):
    """The first ```c fenced block of a Markdown text, or None."""
    m = re.search(r"^[ \t]*```[ \t]*c[ \t]*\n(.*?)^[ \t]*```", text, re.M | re.S)
    return m.group(1) if m else None


def manual_quick_start(text):
    """The code of the manual's QUICK START: the lines indented by 7 spaces between the
    "QUICK START" and "CONFIGURATION" headings at the top of evloop.h, dedented. None when
    either heading or the code is missing."""
    start = text.find("QUICK START")
    if start < 0:
        return None
    end = text.find("CONFIGURATION", start)
    if end < 0:
        return None
    code, in_code = [], False
    for line in text[start:end].splitlines():
        if line.startswith(" " * 7) and line.strip():
            in_code = True
            code.append(line[7:])
        elif not line.strip():
            if in_code:
                code.append("")
        elif in_code:
            break
    while code and not code[-1]:
        code.pop()
    return "\n".join(code) + "\n" if code else None


class QuickStarts(BuildTestCase):
    """The quick starts compile as written with -std=c99 -Wall -Wextra -Werror and run."""

    def build_and_run(self, compiler, source, what):
        src = self.write("quick.c", source)
        exe = os.path.join(self.tmp, "quick")
        self.compile(compiler, ["-std=c99", "-Wall", "-Wextra", "-Werror", src, "-o", exe,
                                "-lpthread"], what)
        return self.run_program(exe, what)

    def readme_block(self):
        self.assertTrue(os.path.exists(README), "README.md is missing: %s" % README)
        with open(README) as f:
            block = readme_first_c_block(f.read())
        self.assertIsNotNone(block, "README.md has no ```c fenced block for the quick start")
        return block

    def manual_block(self):
        with open(HEADER) as f:
            block = manual_quick_start(f.read())
        self.assertIsNotNone(block, "evloop.h: no code indented by 7 spaces between QUICK START "
                             "and CONFIGURATION in the manual")
        self.assertIn("EVLOOP_IMPLEMENTATION", block)
        return block

    def test_readme_quick_start_cc(self):
        self.build_and_run("cc", self.readme_block(), "README quick start (cc)")

    def test_readme_quick_start_clang(self):
        self.build_and_run("clang", self.readme_block(), "README quick start (clang)")

    def test_manual_quick_start_cc(self):
        self.build_and_run("cc", self.manual_block(), "manual quick start (cc)")

    def test_manual_quick_start_clang(self):
        self.build_and_run("clang", self.manual_block(), "manual quick start (clang)")


if __name__ == "__main__":
    unittest.main()
