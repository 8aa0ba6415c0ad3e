"""The C test programs: every tests/test_*.c on disk (the Makefile builds each of them), found
by itself, and the one table of what differs from the defaults for some of them.

Each program lists its cases (`PROGRAM --list`, check.h's check_main); register() gives a test
module one unittest class per program it hosts, with one test method per case and backend
(harness.add_cases). A program not in SETTINGS runs in test_core.py, class <Name>Cases (e.g.
test_loop: test_core.LoopCases), each case with a timeout of 30 s: adding a program is adding
its tests/test_NAME.c, nothing else."""
import glob
import os
import unittest

import harness

DEFAULT_TIMEOUT = 30     # one case's timeout in seconds, scaled by EVL_TEST_TIMEOUT_SCALE
DEFAULT_HOME = "test_core"

STRESS_FULL = os.environ.get("EVL_STRESS") == "full"

# program -> what differs from the defaults:
#   timeout      one case's timeout in seconds (scaled by EVL_TEST_TIMEOUT_SCALE); default 30
#   exclude      cases left out of the generic run: the home module runs them its own way
#   not_wrapped  case -> reason: skipped under EVL_TEST_WRAPPER (valgrind)
#   home         the test module holding the program's class (default test_core): a module of
#                its own keeps its cases selectable with `-p` (.ci/run, the Makefile's
#                test-cross) and holds the cases run their own way
#   cls          the class name, where it is not <Name>Cases (kept: it is in the test ids)
SETTINGS = {
    # One case posts a million callbacks from four threads.
    "test_threads": {"timeout": 60},
    # Each case fails every call of each site in turn, then checks nothing leaked.
    "test_faults": {"timeout": 120, "home": "test_faults", "cls": "FaultCases"},
    # Generous: the machine is shared, and the sanitizers slow the thread and task cases
    # several times over. EVL_STRESS=full (CI's stress stage) selects the full sizes.
    "test_stress": {"timeout": 600 if STRESS_FULL else 180, "home": "test_stress",
                    "not_wrapped": {
                        "tasks_past_map_limit_fail_cleanly":
                            "Valgrind tracks at most a few thousand memory segments "
                            "(VG_N_SEGMENTS) and exits long before vm.max_map_count",
                        "tasks_past_address_limit_fail_cleanly":
                            "Valgrind keeps its own view of the address space and its "
                            "own allocations fail under a lowered RLIMIT_AS"}},
    # overflow_child kills its process by SIGSEGV on purpose: test_tasks.StackOverflow.
    "test_tasks": {"home": "test_tasks", "cls": "TaskCases", "exclude": ("overflow_child",)},
    # The children whose output is checked: test_debug.EnvironmentDebug and
    # test_debug.DefaultExceptionHandler.
    "test_debug": {"home": "test_debug",
                   "exclude": ("env_debug_child", "default_handler_child")},
    "test_executor": {"timeout": 90, "home": "test_production"},
    "test_signals": {"home": "test_production", "cls": "SignalCases"},
    "test_shutdown": {"home": "test_production"},
}

_KEYS = {"timeout", "exclude", "not_wrapped", "home", "cls"}


def on_disk():
    """The names of the programs make builds: tests/test_*.c, sorted."""
    return sorted(os.path.basename(p)[:-2]
                  for p in glob.glob(os.path.join(harness.ROOT, "tests", "test_*.c")))


def skipped():
    """The programs EVL_TEST_SKIP_PROGRAMS (comma-separated) leaves out."""
    return {p for p in os.environ.get("EVL_TEST_SKIP_PROGRAMS", "").split(",") if p}


def settings(prog):
    """prog's settings, the defaults filled in."""
    s = SETTINGS.get(prog, {})
    return {"timeout": s.get("timeout", DEFAULT_TIMEOUT),
            "exclude": tuple(s.get("exclude", ())),
            "not_wrapped": dict(s.get("not_wrapped", {})),
            "home": s.get("home", DEFAULT_HOME),
            "cls": s.get("cls", prog[len("test_"):].capitalize() + "Cases")}


def register(namespace):
    """Adds to a test module's namespace (its globals()) one unittest.TestCase class per
    program on disk whose home is that module, less EVL_TEST_SKIP_PROGRAMS; returns the
    classes by program name."""
    home = namespace["__name__"].rpartition(".")[2]  # tests.test_stress run by path, too
    made = {}
    for prog in on_disk():
        s = settings(prog)
        if s["home"] != home or prog in skipped():
            continue
        cls = type(s["cls"], (unittest.TestCase,),
                   {"__doc__": "The cases of tests/%s.c on every backend." % prog,
                    "__module__": namespace["__name__"]})
        harness.add_cases(cls, prog, timeout=s["timeout"], exclude=s["exclude"],
                          not_wrapped=s["not_wrapped"])
        namespace[cls.__name__] = cls
        made[prog] = cls
    return made


def table_problems():
    """What is wrong with SETTINGS, as sentences (none: an empty list): an entry for a program
    that is not on disk, an unknown key, a home that is not a test module, or an excluded or
    not_wrapped case the program does not list. Any of these would leave cases silently
    unrun or unskipped."""
    problems = []
    progs = on_disk()
    for prog, raw in sorted(SETTINGS.items()):
        if prog not in progs:
            problems.append("%s: no tests/%s.c" % (prog, prog))
            continue
        for key in sorted(set(raw) - _KEYS):
            problems.append("%s: unknown setting %r" % (prog, key))
        s = settings(prog)
        if not os.path.exists(os.path.join(harness.ROOT, "tests", s["home"] + ".py")):
            problems.append("%s: home %s is not tests/%s.py" % (prog, s["home"], s["home"]))
        listed = harness.cases(prog)
        for case in list(s["exclude"]) + list(s["not_wrapped"]):
            if case not in listed:
                problems.append("%s: %s --list has no case %s" % (prog, prog, case))
    return problems
