"""The C test programs (tests/test_*.c built by make): every case of each program runs as its own
process on every backend the machine has (see harness.add_cases). One unittest class per
program; a program whose source does not exist (yet) is not registered."""
import os
import unittest

import harness

# program -> timeout in seconds of one case (scaled by EVL_TEST_TIMEOUT_SCALE)
PROGRAMS = {
    "test_loop": 30,
    "test_timers": 30,
    "test_io": 30,
    "test_threads": 60,  # one case posts a million callbacks from four threads
}


def _backends(prog):
    """The backends to run `prog` on: harness.backends() (which honours EVL_TEST_BACKENDS) when
    test_loop, the program it asks, exists; otherwise the program itself answers --backends
    (every program built on check.h does), filtered the same way."""
    if os.path.exists(os.path.join(harness.ROOT, "tests", "test_loop.c")):
        return harness.backends()
    r = harness.run([harness.program(prog), "--backends"], wrap=False)
    if r.returncode != 0:
        raise RuntimeError("%s --backends failed (exit %d): %s" % (prog, r.returncode, r.stderr))
    only = getattr(harness, "ONLY_BACKENDS", None)
    return [b for b in r.stdout.split() if not only or b in only]


def _register(prog, timeout):
    cls = type(prog[len("test_"):].capitalize() + "Cases", (unittest.TestCase,),
               {"__doc__": "The cases of tests/%s.c on every backend." % prog})
    harness.add_cases(cls, prog, timeout=timeout, only_backends=_backends(prog))
    globals()[cls.__name__] = cls


for _prog, _timeout in PROGRAMS.items():
    # EVL_TEST_SKIP_PROGRAMS (comma-separated) leaves programs out.
    if _prog in os.environ.get("EVL_TEST_SKIP_PROGRAMS", "").split(","):
        continue
    if os.path.exists(os.path.join(harness.ROOT, "tests", _prog + ".c")):
        harness.build()
        _register(_prog, _timeout)

if __name__ == "__main__":
    unittest.main()
