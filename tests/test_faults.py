"""Fault injection (tests/test_faults.c, built with EVL_TESTING): each case makes every call
of each system call site and every allocation of a scenario fail in turn, on every backend,
and checks the failure comes back as an error code, the loop keeps working, and nothing
leaks (allocations, fds, memory mappings)."""
import unittest

import harness


class FaultCases(unittest.TestCase):
    """The sweeps of tests/test_faults.c on every backend."""


harness.add_cases(FaultCases, "test_faults", timeout=120)

if __name__ == "__main__":
    unittest.main()
