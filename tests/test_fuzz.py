"""The fuzz target's seed corpus as a regression test: tests/fuzz/fuzz_loop.c built without
libFuzzer (-DFUZZ_STANDALONE, with the suite's warnings) runs every file of tests/fuzz/corpus
on every backend. Each input drives a loop through a sequence of operations and checks every
callback against the target's reference model; a mismatch aborts with a message, and the last
line of stderr names the input. The libFuzzer build itself is `make fuzz` (clang)."""
import os
import shlex
import subprocess
import unittest

import harness

SOURCE = os.path.join(harness.ROOT, "tests", "fuzz", "fuzz_loop.c")
CORPUS = os.path.join(harness.ROOT, "tests", "fuzz", "corpus")
PROGRAM = harness.program("fuzz_loop_standalone")


def build():
    """Compiles the standalone driver when the source or the header is newer than it (the
    Makefile only builds tests/test_*.c), with $CC and the sanitizer flags of the run in
    EVL_SANFLAGS (the Makefile's SANFLAGS, when its test recipe passes them on)."""
    deps = [SOURCE, os.path.join(harness.ROOT, "evloop.h")]
    if os.path.exists(PROGRAM) and all(os.path.getmtime(PROGRAM) >= os.path.getmtime(d)
                                       for d in deps):
        return
    os.makedirs(os.path.dirname(PROGRAM), exist_ok=True)
    cmd = [os.environ.get("CC", "cc"), "-DFUZZ_STANDALONE", "-std=c99", "-Wall", "-Wextra",
           "-Wpedantic", "-Werror", "-O2", "-g"] + shlex.split(os.environ.get("EVL_SANFLAGS", "")) + [
           "-I" + harness.ROOT, SOURCE, "-o", PROGRAM, "-lpthread"]
    subprocess.run(cmd, check=True, timeout=300)


class FuzzCorpus(unittest.TestCase):
    """Every seed on every backend: the model must agree with the loop on each of them."""

    @classmethod
    def setUpClass(cls):
        build()

    def test_corpus_is_there(self):
        # 20-50 small seeds that between them use every operation (see tests/fuzz/README.md).
        seeds = os.listdir(CORPUS)
        self.assertGreaterEqual(len(seeds), 20)
        self.assertLessEqual(max(os.path.getsize(os.path.join(CORPUS, s)) for s in seeds), 4096)

    def run_corpus(self, backend):
        n = len(os.listdir(CORPUS))
        try:
            r = harness.run([PROGRAM, CORPUS], env={"EVLOOP_BACKEND": backend}, timeout=120)
        except subprocess.TimeoutExpired:
            self.fail("fuzz corpus on %s: timed out after %ss" % (backend, 120 * harness.SCALE))
        self.assertEqual(r.returncode, 0, "fuzz corpus on %s failed (exit %d):\n%s%s" % (
            backend, r.returncode, r.stdout, r.stderr[-4000:]))
        self.assertIn("ok %d inputs" % n, r.stdout)


def add_backends(cls):
    for backend in harness.backends():
        setattr(cls, "test_corpus__" + backend,
                lambda self, backend=backend: self.run_corpus(backend))
    return cls


add_backends(FuzzCorpus)

if __name__ == "__main__":
    unittest.main()
