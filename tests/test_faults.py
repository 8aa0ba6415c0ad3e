"""Fault injection (tests/test_faults.c, built with EVL_TESTING): each case makes every call
of each system call site and every allocation of a scenario fail in turn, on every backend,
and checks the failure comes back as an error code, the loop keeps working, and nothing
leaks (allocations, fds, memory mappings).

The cases are registered by programs.register (class FaultCases, 120 s per case: see
tests/programs.py); this module is their home so that `-p test_[cf][oa]*.py` (.ci/run's
Valgrind stage on poll and select) selects them with the core programs."""
import unittest

import programs

programs.register(globals())

if __name__ == "__main__":
    unittest.main()
