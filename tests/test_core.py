"""The C test programs (tests/test_*.c built by make): every case of each program runs as its own
process on every backend the machine has (see harness.add_cases). One unittest class per
program, registered by programs.register: here every program that tests/programs.py's SETTINGS
does not give a home of its own (test_loop, test_timers, test_io, test_threads, and any new
one), as <Name>Cases. EVL_TEST_SKIP_PROGRAMS (comma-separated) leaves programs out."""
import unittest

import programs

programs.register(globals())


class ProgramTable(unittest.TestCase):
    """The table of per-program settings (tests/programs.py) names only programs, modules and
    cases that exist: a stale entry would leave cases unrun, or unskipped under Valgrind."""

    def test_settings_match_the_programs(self):
        self.assertEqual(programs.table_problems(), [])


if __name__ == "__main__":
    unittest.main()
