"""The stress cases of tests/test_stress.c on every backend: 8 threads x thread-safe posts,
concurrent loopback connections, a million concurrent tasks, 100 000 joinable tasks in a burst,
the memory-map and address-space limits, close-and-reopen of the same fd number, a signal storm
beside a timer, and an executor flood with a full queue.

Reduced sizes by default (a few seconds per case per backend); EVL_STRESS=full selects the full
sizes (1 000 000 posts per thread, 10 000 connections, 1 000 000 concurrent tasks, 100 000
cycles, 5 s of storm, 200 000 jobs) for CI's stress stage. The program reads EVL_STRESS from
the environment it inherits; each case prints a "figures:" line (run the program by hand to
see them, e.g. `EVL_STRESS=full EVLOOP_BACKEND=epoll build/tests/test_stress
tasks_1000000_concurrent`).

The cases are registered by programs.register (class StressCases; 180 s per case, 600 s with
EVL_STRESS=full; the two limit cases are skipped under Valgrind: see tests/programs.py).
This module is their home so that `-p test_stress.py` (.ci/run's stress stage) selects them
alone."""
import os
import sys
import unittest

# `python3 -m unittest tests/test_stress.py` from the top directory, as well as discover -s tests.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import programs  # noqa: E402

programs.register(globals())

if __name__ == "__main__":
    unittest.main()
