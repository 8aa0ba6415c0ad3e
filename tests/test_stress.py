"""The stress cases of tests/test_stress.c on every backend: 8 threads x thread-safe posts,
concurrent loopback connections, concurrent tasks and the memory-map limit, close-and-reopen of
the same fd number, a signal storm beside a timer, and an executor flood with a full queue.

Reduced sizes by default (a few seconds per case per backend); EVL_STRESS=full selects the full
sizes of issue 8 (1 000 000 posts per thread, 10 000 connections, 100 000 tasks, 100 000
cycles, 5 s of storm, 200 000 jobs) for CI's stress stage. The program reads EVL_STRESS from
the environment it inherits; each case prints a "figures:" line (run the program by hand to
see them, e.g. `EVL_STRESS=full EVLOOP_BACKEND=epoll build/tests/test_stress
tasks_100000_concurrent`)."""
import os
import sys
import unittest

# `python3 -m unittest tests/test_stress.py` from the top directory, as well as discover -s tests.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FULL = os.environ.get("EVL_STRESS") == "full"
# One case's timeout in seconds, scaled by EVL_TEST_TIMEOUT_SCALE. Generous: the machine is
# shared, and the sanitizers slow the thread and task cases several times over.
TIMEOUT = 600 if FULL else 180


class StressCases(unittest.TestCase):
    """The cases of tests/test_stress.c on every backend."""


harness.add_cases(StressCases, "test_stress", timeout=TIMEOUT, not_wrapped={
    "tasks_past_map_limit_fail_cleanly":
        "Valgrind tracks at most a few thousand memory segments (VG_N_SEGMENTS) and exits "
        "long before vm.max_map_count"})

if __name__ == "__main__":
    unittest.main()
