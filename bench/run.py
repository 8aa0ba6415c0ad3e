#!/usr/bin/env python3
"""bench/run.py - the side-by-side benchmark of evloop.h against libuv, libev, libevent,
asyncio, uvloop and Boost.Context (`make bench`, `make bench-quick`).

Builds every program into build/bench/, installs a missing peer with apt-get when it can, runs
every system in turn, interleaved (the order rotates each round), for several rounds, prints
the medians with the ratio evloop/peer, and writes bench/results.md and bench/results.png
(gnuplot). Every workload is defined in bench/README.md. Standard library only.

    python3 bench/run.py                 # 5 rounds at full size
    python3 bench/run.py --quick         # 1 round at reduced sizes (about 1-2 minutes)
    python3 bench/run.py --rounds 3 --only dispatch,echo   # a subset, for development
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build", "bench")

# Columns of the tables, in order: (id, label).
SYSTEMS = [
    ("evloop", "evloop"),
    ("evloop_tasks", "evloop tasks"),
    ("libuv", "libuv"),
    ("libev", "libev"),
    ("libevent", "libevent"),
    ("asyncio", "asyncio"),
    ("uvloop", "uvloop"),
    ("boost", "Boost.Context"),
]
LABEL = dict(SYSTEMS)

# Full and quick sizes (bench/README.md explains each).
SIZES = {
    "full": dict(dispatch=2000000, timers=500000, switch=10000000, handoff=1000000,
                 spawn=200000, tspost=1000000, executor=100000, echo_seconds=3.0,
                 echo_warmup=0.5, mem_conns=19000, mem_tasks=100000, task_scale=1000000,
                 task_burst=100000),
    "quick": dict(dispatch=200000, timers=100000, switch=2000000, handoff=100000,
                  spawn=20000, tspost=200000, executor=10000, echo_seconds=1.0,
                  echo_warmup=0.3, mem_conns=2000, mem_tasks=20000, task_scale=100000,
                  task_burst=100000),
}

ECHO_CONFIGS = [(64, 1024), (64, 65536), (1000, 1024), (1000, 65536)]


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Peers: find them, install what is missing, build.

def have_header(compiler, header, lang="c"):
    try:
        r = subprocess.run([compiler, "-x", lang, "-E", "-"], input="#include <%s>\n" % header,
                           capture_output=True, text=True, timeout=60)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def python_with_uvloop():
    """The first interpreter that imports uvloop (asyncio is measured on the same one)."""
    seen = []
    for cand in [sys.executable, "/usr/bin/python3", shutil.which("python3")]:
        if not cand or not os.path.exists(cand) or os.path.realpath(cand) in seen:
            continue
        seen.append(os.path.realpath(cand))
        try:
            r = subprocess.run([cand, "-c", "import uvloop, asyncio"], capture_output=True,
                               timeout=60)
            if r.returncode == 0:
                return cand
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


def apt_install(packages):
    if not packages:
        return
    if not shutil.which("apt-get"):
        log("  apt-get not found: cannot install %s" % " ".join(packages))
        return
    log("  installing %s with apt-get" % " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL)
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends"] + packages,
                       env=env, stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        log("  apt-get install failed (exit %d): the peers it was for are skipped" % r.returncode)


def ensure_peers(cc, cxx):
    checks = [
        ("libuv", lambda: have_header(cc, "uv.h"), "libuv1-dev"),
        ("libev", lambda: have_header(cc, "ev.h"), "libev-dev"),
        ("libevent", lambda: have_header(cc, "event2/event.h"), "libevent-dev"),
        ("boost", lambda: shutil.which(cxx) is not None and
         have_header(cxx, "boost/context/detail/fcontext.hpp", "c++"), "libboost-context-dev"),
        ("uvloop", lambda: python_with_uvloop() is not None, "python3-uvloop"),
        ("gnuplot", lambda: shutil.which("gnuplot") is not None, "gnuplot-nox"),
    ]
    missing = [(name, pkg) for name, ok, pkg in checks if not ok()]
    pkgs = [pkg for _, pkg in missing]
    if any(name == "boost" for name, _ in missing) and not shutil.which(cxx):
        pkgs.append("g++")
    if pkgs:
        log("missing: %s" % ", ".join(name for name, _ in missing))
        apt_install(pkgs)
    return {name: ok() for name, ok, _ in checks}


def build(cc, cxx, avail):
    """Compiles every program; returns {program: path} for those that built."""
    os.makedirs(BUILD, exist_ok=True)
    cflags = ["-O2", "-g", "-std=gnu99", "-Wall"]
    progs = {
        "micro": ([cc] + cflags + ["-I" + ROOT, "bench/micro.c", "-lpthread"], True),
        "echo_evloop": ([cc] + cflags + ["-I" + ROOT, "bench/echo_evloop.c", "-lpthread"], True),
        "echo_client": ([cc] + cflags + ["bench/echo_client.c"], True),
        "executor_evloop": ([cc] + cflags + ["-I" + ROOT, "bench/executor_evloop.c",
                                              "-lpthread"], True),
        "peer_libuv": ([cc] + cflags + ["bench/peer_libuv.c", "-luv", "-lpthread"],
                       avail["libuv"]),
        "peer_libev": ([cc] + cflags + ["bench/peer_libev.c", "-lev", "-lpthread"],
                       avail["libev"]),
        "peer_libevent": ([cc] + cflags + ["bench/peer_libevent.c", "-levent"],
                          avail["libevent"]),
        "peer_boost": ([cxx, "-O2", "-g", "-Wall", "bench/peer_boost.cpp", "-lboost_context"],
                       avail["boost"]),
    }
    built = {}
    for name, (cmd, wanted) in progs.items():
        if not wanted:
            continue
        out = os.path.join(BUILD, name)
        r = subprocess.run(cmd + ["-o", out], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            if name == "executor_evloop" and "evl_executor" in r.stderr:
                log("evloop.h has no executor API: evloop's executor cell is 'not yet built'")
            else:
                log("build of %s failed:\n%s" % (name, r.stderr.strip()[-3000:]))
            continue
        built[name] = out
    return built


# ---------------------------------------------------------------------------------------------
# Running one measurement.

def base_env():
    env = dict(os.environ)
    env.pop("EVLOOP_BACKEND", None)   # the default backend (epoll here) for every evloop run
    env["EVLOOP_DEBUG"] = "0"
    return env


def parse(out):
    res, info = {}, {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("RESULT", "INFO"):
            try:
                val = float(parts[2])
            except ValueError:
                continue
            (res if parts[0] == "RESULT" else info)[parts[1]] = val
    return res, info


def run_cmd(cmd, timeout, env=None):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=env or base_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, "timed out after %ds" % timeout
    res, info = parse(r.stdout)
    if r.returncode != 0 or not res:
        return None, "exit %d: %s" % (r.returncode, (r.stderr or r.stdout).strip()[-300:])
    return (res, info), None


def pin_core0():
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        try:
            os.sched_setaffinity(0, {0})
        except OSError:
            pass


def start_server(cmd, timeout=20):
    """Starts an echo server pinned to core 0; returns (process, port) once it listens."""
    # stderr to a file, not a pipe: a server that logs a lot must never block on it.
    err = open(os.path.join(BUILD, "server.stderr"), "w+")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                         env=base_env(), cwd=ROOT, preexec_fn=pin_core0)
    err.close()
    deadline = time.time() + timeout
    line = ""
    while time.time() < deadline:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.time()))
        if not r:
            break
        line = p.stdout.readline()
        if not line:
            break
        m = re.match(r"listening on (\d+)", line)
        if m:
            return p, int(m.group(1))
    stop_server(p)
    raise RuntimeError("server did not start: %s %s" % (line.strip(), server_stderr()))


def server_stderr():
    try:
        with open(os.path.join(BUILD, "server.stderr")) as f:
            return f.read()[-300:]
    except OSError:
        return ""


def stop_server(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


# ---------------------------------------------------------------------------------------------
# The workloads: each returns a list of "jobs", one per system; a job runs once per round and
# returns {row: value} (or raises / returns an error string).

class Job:
    def __init__(self, system, rows, fn, note=""):
        self.system, self.rows, self.fn, self.note = system, rows, fn, note


def cmd_job(system, cmd, keys, timeout, env=None):
    """keys: {result key: row id}."""
    def fn():
        got, err = run_cmd(cmd, timeout, env)
        if err:
            raise RuntimeError(err)
        res, info = got
        return {row: res[k] for k, row in keys.items() if k in res}, info
    return Job(system, list(keys.values()), fn)


def affinity(pid):
    """The set of cores pid may run on (None where the call is missing or fails)."""
    try:
        return os.sched_getaffinity(pid)
    except (AttributeError, OSError):
        return None


def echo_job(system, server_cmd, client, conns, size, seconds, warmup, row, timeout):
    """msg/s (row) and the server's CPU time per message (row + "_cpu", in us): the client,
    pinned to core 1, reads /proc/PID/task/*/schedstat of the server (pinned to core 0) when
    its measuring window opens and when it closes, and divides by the round trips it counted
    in between."""
    def fn():
        p, port = start_server(server_cmd)
        try:
            aff = affinity(p.pid)
            got, err = run_cmd([client, "load", str(port), str(conns), str(size),
                                str(seconds), str(warmup), "1", str(p.pid)], timeout)
            if err:
                raise RuntimeError(err)
            if p.poll() is not None:
                raise RuntimeError("server exited: %s" % server_stderr())
            res, info = got
            info = dict(info, server_pinned=1.0 if aff == {0} else 0.0)
            vals = {row: res["echo"]}
            if "server_cpu" in res:
                vals[row + "_cpu"] = res["server_cpu"]
            return vals, info
        finally:
            stop_server(p)
    return Job(system, [row, row + "_cpu"], fn)


def mem_conn_job(system, server_cmd, client, conns, row, timeout):
    def fn():
        p, port = start_server(server_cmd)
        c = None
        try:
            time.sleep(0.2)
            before = rss_kib(p.pid)
            c = subprocess.Popen([client, "idle", str(port), str(conns), "1"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=base_env())
            deadline = time.time() + timeout
            line = ""
            while time.time() < deadline:
                r, _, _ = select.select([c.stdout], [], [], max(0.0, deadline - time.time()))
                if not r:
                    break
                line = c.stdout.readline()
                if not line or line.startswith("CONNECTED"):
                    break
            m = re.match(r"CONNECTED (\d+)", line)
            if not m or int(m.group(1)) != conns:
                raise RuntimeError("client: %s %s" % (line.strip(), c.stderr.read()[-300:]
                                                      if c.poll() is not None else ""))
            time.sleep(0.5)
            after = rss_kib(p.pid)
            return {row: (after - before) * 1024.0 / conns}, {"conns": conns}
        finally:
            if c is not None:
                try:
                    c.communicate("done\n", timeout=30)
                except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                    c.kill()
                    c.wait()
            stop_server(p)
    return Job(system, [row], fn)


# Row ids, titles, units and which way is better.
ROWS = [
    ("dispatch", "call_soon chain", "ns/op", "lower"),
    ("timer_start", "timer start (random deadlines in 0..500 ms)", "ns/op", "lower"),
    ("timer_stop", "timer stop (half of them)", "ns/op", "lower"),
    ("timer_fire", "timer fire (the other half)", "ns/op", "lower"),
    ("switch", "raw context switch", "ns/switch", "lower"),
    ("handoff", "task hand-off, queue of 1", "ns/item", "lower"),
    ("spawn", "spawn + join a short task", "ns/op", "lower"),
    ("tspost", "thread-safe post, 4 threads", "ns/post", "lower"),
    ("executor", "executor round trip, 64 in flight", "ns/job", "lower"),
    ("echo_64_1k", "TCP echo, 64 conns, 1 KiB", "msg/s", "higher"),
    ("echo_64_64k", "TCP echo, 64 conns, 64 KiB", "msg/s", "higher"),
    ("echo_1000_1k", "TCP echo, 1000 conns, 1 KiB", "msg/s", "higher"),
    ("echo_1000_64k", "TCP echo, 1000 conns, 64 KiB", "msg/s", "higher"),
    ("echo_64_1k_cpu", "TCP echo, 64 conns, 1 KiB: server CPU", "us/msg", "lower"),
    ("echo_64_64k_cpu", "TCP echo, 64 conns, 64 KiB: server CPU", "us/msg", "lower"),
    ("echo_1000_1k_cpu", "TCP echo, 1000 conns, 1 KiB: server CPU", "us/msg", "lower"),
    ("echo_1000_64k_cpu", "TCP echo, 1000 conns, 64 KiB: server CPU", "us/msg", "lower"),
    ("mem_conn", "memory per idle connection", "bytes", "lower"),
    ("mem_task", "memory per sleeping task", "bytes", "lower"),
    ("scale_spawn", "N sleeping tasks: spawn until all asleep", "s", "lower"),
    ("scale_rss", "N sleeping tasks: RSS per task", "bytes", "lower"),
    ("scale_maps", "N sleeping tasks: kernel mappings at the peak", "mappings", "lower"),
    ("scale_free", "N sleeping tasks: cancel, join, close", "s", "lower"),
    ("task_burst", "100 000 joinable tasks: spawn burst + join", "s", "lower"),
    ("debug", "call_soon chain with EVLOOP_DEBUG=1", "ns/op", "lower"),
]
ROW = {r[0]: r for r in ROWS}
SCALE_ROWS = ["scale_spawn", "scale_rss", "scale_maps", "scale_free"]


def row_title(row, sz):
    """A row's title with the sizes of this run filled in."""
    title = ROW[row][1]
    if row in SCALE_ROWS and sz.get("task_scale"):
        title = title.replace("N ", "%s " % thousands(sz["task_scale"]), 1)
    elif row == "task_burst" and sz.get("task_burst"):
        title = title.replace("100 000", thousands(sz["task_burst"]), 1)
    return title


def thousands(n):
    return "{:,}".format(int(n)).replace(",", " ")


def echo_row(conns, size):
    return "echo_%d_%s" % (conns, "1k" if size == 1024 else "64k")


def make_groups(sz, built, py, has_uvloop, timeout):
    """Workload groups: [(group name, [Job])]. Within a group, the jobs run in turn."""
    micro = built.get("micro")
    uv, ev, event, boost = (built.get("peer_libuv"), built.get("peer_libev"),
                            built.get("peer_libevent"), built.get("peer_boost"))
    pyb = os.path.join(HERE, "peer_asyncio.py")
    pys = [("asyncio", [py, pyb])] + ([("uvloop", [py, pyb, "--uvloop"])] if has_uvloop else [])
    groups = []

    def add(name, jobs):
        groups.append((name, [j for j in jobs if j is not None]))

    def c(system, prog, work, n, keys, env=None):
        if not prog:
            return None
        return cmd_job(system, [prog, work, str(n)], keys, timeout, env)

    n = sz["dispatch"]
    debug_env = dict(base_env(), EVLOOP_DEBUG="1")
    add("dispatch", [c("evloop", micro, "dispatch", n, {"dispatch": "dispatch"}),
                     c("evloop", micro, "dispatch", n, {"dispatch": "debug"}, debug_env),
                     c("libuv", uv, "dispatch", n, {"dispatch": "dispatch"}),
                     c("libev", ev, "dispatch", n, {"dispatch": "dispatch"}),
                     c("libevent", event, "dispatch", n, {"dispatch": "dispatch"})] +
        [cmd_job(s, cmd + ["dispatch", str(n)], {"dispatch": "dispatch"}, timeout)
         for s, cmd in pys])
    tk = {"timer_start": "timer_start", "timer_stop": "timer_stop", "timer_fire": "timer_fire"}
    n = sz["timers"]
    add("timers", [c("evloop", micro, "timers", n, tk), c("libuv", uv, "timers", n, tk),
                   c("libev", ev, "timers", n, tk), c("libevent", event, "timers", n, tk)])
    n = sz["switch"]
    add("switch", [c("evloop", micro, "switch", n, {"switch": "switch"}),
                   c("boost", boost, "switch", n, {"switch": "switch"})])
    for work in ("handoff", "spawn"):
        n = sz[work]
        add(work, [c("evloop", micro, work, n, {work: work})] +
            [cmd_job(s, cmd + [work, str(n)], {work: work}, timeout) for s, cmd in pys])
    n = sz["tspost"]
    add("tspost", [c("evloop", micro, "tspost", n, {"tspost": "tspost"}),
                   c("libuv", uv, "tspost", n, {"tspost": "tspost"}),
                   c("libev", ev, "tspost", n, {"tspost": "tspost"})] +
        [cmd_job(s, cmd + ["tspost", str(n)], {"tspost": "tspost"}, timeout) for s, cmd in pys])
    n = sz["executor"]
    add("executor", [c("evloop", built.get("executor_evloop"), "executor", n,
                       {"executor": "executor"}),
                     c("libuv", uv, "executor", n, {"executor": "executor"})] +
        [cmd_job(s, cmd + ["executor", str(n)], {"executor": "executor"}, timeout)
         for s, cmd in pys])
    servers = []
    if built.get("echo_evloop"):
        servers += [("evloop", [built["echo_evloop"], "callbacks", "0"]),
                    ("evloop_tasks", [built["echo_evloop"], "tasks", "0"])]
    for s, prog in (("libuv", uv), ("libev", ev), ("libevent", event)):
        if prog:
            servers.append((s, [prog, "echo", "0"]))
    for s, cmd in pys:
        servers.append((s, cmd + ["echo", "0"]))
    client = built.get("echo_client")
    if client:
        for conns, size in ECHO_CONFIGS:
            row = echo_row(conns, size)
            add(row, [echo_job(s, cmd, client, conns, size, sz["echo_seconds"],
                               sz["echo_warmup"], row, timeout) for s, cmd in servers])
        add("mem_conn", [mem_conn_job(s, cmd, client, sz["mem_conns"], "mem_conn", timeout)
                         for s, cmd in servers])
    n = sz["mem_tasks"]
    add("mem_task", [c("evloop", micro, "mem_tasks", n, {"mem_tasks": "mem_task"})] +
        [cmd_job(s, cmd + ["mem_tasks", str(n)], {"mem_tasks": "mem_task"}, timeout)
         for s, cmd in pys])
    n = sz["task_scale"]
    sk = {k: k for k in SCALE_ROWS}
    add("task_scale", [c("evloop", micro, "task_scale", n, sk)] +
        [cmd_job(s, cmd + ["task_scale", str(n)], sk, timeout) for s, cmd in pys])
    n = sz["task_burst"]
    add("task_burst", [c("evloop", micro, "task_burst", n, {"task_burst": "task_burst"})] +
        [cmd_job(s, cmd + ["task_burst", str(n)], {"task_burst": "task_burst"}, timeout)
         for s, cmd in pys])
    return groups


# ---------------------------------------------------------------------------------------------
# Reporting.

def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "msg/s":
        return "%.0f k" % (v / 1000) if v >= 10000 else "%.1f k" % (v / 1000)
    if unit == "bytes":
        return "%.0f B" % v if v < 10240 else "%.1f KiB" % (v / 1024)
    if unit == "us/msg":
        return "%.2f us" % v if v < 100 else "%.0f us" % v
    if unit == "s":
        return "%.3f s" % v if v < 10 else "%.1f s" % v
    if unit == "mappings":
        return "%.0f" % v
    if v >= 100000:
        return "%.0f us" % (v / 1000)
    if v >= 10000:
        return "%.1f us" % (v / 1000)
    if v >= 100:
        return "%.0f ns" % v
    return "%.1f ns" % v


def med(vals):
    return statistics.median(vals) if vals else None


def cell_value(results, row, system):
    return med(results.get(row, {}).get(system, []))


def evloop_cell(results, row):
    """The evloop value a row is compared with (callbacks server for echo and memory)."""
    if row == "debug":
        return cell_value(results, "debug", "evloop")
    return cell_value(results, row, "evloop")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def target_table(results, sz):
    """[(workload, evloop, reference peer here, target, status)]."""
    out = []

    def v(row, sys_):
        return cell_value(results, row, sys_)

    def best_peer(row, systems, better="lower"):
        vals = [(v(row, s), s) for s in systems if v(row, s) is not None]
        if not vals:
            return None, None
        return (min if better == "lower" else max)(vals)

    def line(workload, ev, peer_txt, target_txt, ok, status=None):
        if status is None:
            status = "not measured" if ok is None else ("met" if ok else "**MISSED**")
        out.append((workload, ev, peer_txt, target_txt, status))

    def each(names, oks):
        """met / MISSED over several cells, with which ones missed when some did."""
        if None in oks:
            return None, None
        if all(oks):
            return True, None
        return False, "**MISSED** (" + ", ".join("%s %s" % (n, "met" if ok else "missed")
                                                 for n, ok in zip(names, oks)) + ")"

    unit = "ns/op"
    e = v("dispatch", "evloop")
    pv, ps = best_peer("dispatch", ["libuv", "libev", "libevent", "asyncio", "uvloop"])
    line("call_soon chain", fmt(e, unit),
         "%s %s" % (LABEL.get(ps, "—"), fmt(pv, unit)) if ps else "—", "< 10 ns",
         None if e is None else e < 10)
    parts, oks = [], []
    for r in ("timer_start", "timer_stop", "timer_fire"):
        e, p = v(r, "evloop"), v(r, "libev")
        parts.append((fmt(e, unit), fmt(p, unit)))
        oks.append(None if e is None or p is None else e <= p)
    line("timer start / stop / fire", " / ".join(a for a, _ in parts),
         "libev " + " / ".join(b for _, b in parts), "at most libev's (each)",
         None if None in oks else all(oks))
    if None not in oks and not all(oks):
        w, e_, p_, t_, st = out[-1]
        out[-1] = (w, e_, p_, t_, st + " (" + ", ".join(
            "%s %s" % (name, "met" if ok else "missed")
            for name, ok in zip(("start", "stop", "fire"), oks)) + ")")
    e, p = v("handoff", "evloop"), v("handoff", "uvloop")
    line("task hand-off", fmt(e, unit), "uvloop %s" % fmt(p, unit), "< 40 ns",
         None if e is None else e < 40)
    e, p = v("switch", "evloop"), v("switch", "boost")
    line("raw switch", fmt(e, unit), "Boost.Context %s" % fmt(p, unit), "within 1.2x of Boost",
         None if e is None or p is None else e <= 1.2 * p)
    e, p = v("spawn", "evloop"), v("spawn", "uvloop")
    line("spawn + join", fmt(e, unit), "uvloop %s" % fmt(p, unit), "< 150 ns",
         None if e is None else e < 150)
    e, p = v("tspost", "evloop"), v("tspost", "uvloop")
    line("thread-safe post", fmt(e, unit), "uvloop %s" % fmt(p, unit), "< 100 ns",
         None if e is None else e < 100)
    e, p = v("executor", "evloop"), v("executor", "libuv")
    line("executor round trip", fmt(e, unit) if e is not None else "not yet built",
         "libuv %s" % fmt(p, unit), "at most libuv's",
         None if e is None or p is None else e <= p)
    e, et = v("echo_64_1k", "evloop"), v("echo_64_1k", "evloop_tasks")
    pv, ps = best_peer("echo_64_1k", ["libuv", "libev", "libevent"], "higher")
    line("echo 64 conns 1 KiB", "%s (tasks %s)" % (fmt(e, "msg/s"), fmt(et, "msg/s")),
         "%s %s" % (LABEL.get(ps, "—"), fmt(pv, "msg/s")) if ps else "—",
         "at least the best C peer", None if e is None or pv is None else e >= pv)

    # Server CPU time per echo message (schedstat; bench/README.md, workload 7).
    cu = "us/msg"
    sizes = ((1024, "1 KiB"), (65536, "64 KiB"))
    for conns in (64, 1000):
        cells, oks = [], []
        for size, sname in sizes:
            r = echo_row(conns, size) + "_cpu"
            e, et = v(r, "evloop"), v(r, "evloop_tasks")
            rel = " (%+.1f %%)" % ((et / e - 1) * 100) if e and et is not None else ""
            cells.append("%s: tasks %s, callbacks %s%s" % (sname, fmt(et, cu), fmt(e, cu), rel))
            oks.append(None if e is None or et is None else et <= 1.05 * e)
        ok, st = each([n for _, n in sizes], oks)
        line("echo server CPU/msg, %d conns: evloop tasks vs callbacks" % conns, "; ".join(cells),
             "—", "evloop tasks within 5 % of evloop callbacks (server CPU/msg; tasks at most "
             "1.05x callbacks)", ok, st)
    cells, pcells, oks, names = [], [], [], []
    for conns, size in ECHO_CONFIGS:
        r = echo_row(conns, size) + "_cpu"
        e, p = v(r, "evloop"), v(r, "libev")
        name = "%d/%s" % (conns, "1k" if size == 1024 else "64k")
        names.append(name)
        cells.append("%s %s" % (name, fmt(e, cu)))
        pcells.append("%s %s" % (name, fmt(p, cu)))
        oks.append(None if e is None or p is None else e <= p)
    ok, st = each(names, oks)
    line("echo server CPU/msg: evloop callbacks vs libev", "; ".join(cells),
         "libev " + "; ".join(pcells), "evloop callbacks at or below libev (server CPU/msg)",
         ok, st)

    # Sleeping tasks at scale (workload 10a): judged at 1 000 000 tasks only.
    n = sz.get("task_scale", 0)
    e_rss, e_sp = v("scale_rss", "evloop"), v("scale_spawn", "evloop")
    e_maps = v("scale_maps", "evloop")
    pv = [(s_, v("scale_rss", s_), v("scale_spawn", s_)) for s_ in ("asyncio", "uvloop")]
    peer_txt = "; ".join("%s %s each, %s" % (LABEL[s_], fmt(a, "bytes"), fmt(b, "s"))
                         for s_, a, b in pv if a is not None) or "—"
    ok = None if e_rss is None or e_sp is None else (e_rss <= 6144 and e_sp <= 3.0)
    status = None
    if ok is not None and n < 1000000:
        status = "not judged (%s tasks in this run)" % thousands(n)
    elif ok is False:
        status = "**MISSED** (RSS %s, spawn %s)" % ("met" if e_rss <= 6144 else "missed",
                                                    "met" if e_sp <= 3.0 else "missed")
    line("%s sleeping tasks (default evl_config, guards on)" % (thousands(n) if n else "N"),
         "%s each, spawned in %s, %s mappings" % (fmt(e_rss, "bytes"), fmt(e_sp, "s"),
                                                  fmt(e_maps, "mappings")),
         peer_txt, "1 000 000 sleeping tasks: <= 6 KiB RSS each, spawned in <= 3 s", ok, status)
    return out


def print_table(results, rounds, sz):
    log("")
    log("Medians of %d round%s. evloop/peer: the evloop median over the peer's (for echo, above 1 "
        "means evloop is faster; elsewhere below 1 does)." % (rounds, "" if rounds == 1 else "s"))
    for row, title, unit, better in ROWS:
        by = results.get(row, {})
        if row.endswith("_cpu") or not by:
            continue
        title = row_title(row, sz)
        log("")
        if row.startswith("echo_"):
            print_echo_row(results, row, title)
            continue
        log("%s  [%s, %s is better]" % (title, unit, better))
        ev = evloop_cell(results, row)
        for sid, label in SYSTEMS:
            vals = by.get(sid)
            if not vals:
                continue
            m = med(vals)
            if row == "debug":
                r = ratio(m, cell_value(results, "dispatch", "evloop"))
                rtxt = "debug on / off %.3g" % r if r else ""
            else:
                r = ratio(ev, m) if sid != "evloop" else None
                rtxt = "evloop/peer %.3g" % r if r else ""
            log("    %-14s %10s   (%s .. %s)   %s" % (label, fmt(m, unit), fmt(min(vals), unit),
                                                   fmt(max(vals), unit), rtxt))
    log("")


def print_echo_row(results, row, title):
    """msg/s and, beside it, the server's CPU time per message with its ratio to the evloop
    callback server (the number that separates servers the shared client cannot)."""
    cpu = row + "_cpu"
    log("%s  [msg/s, higher is better | server CPU per message, lower is better]" % title)
    ev, ev_cpu = evloop_cell(results, row), cell_value(results, cpu, "evloop")
    for sid, label in SYSTEMS:
        vals = results.get(row, {}).get(sid)
        if not vals:
            continue
        m = med(vals)
        r = ratio(ev, m) if sid != "evloop" else None
        left = "%-14s %8s (%s .. %s)%s" % (label, fmt(m, "msg/s"), fmt(min(vals), "msg/s"),
                                          fmt(max(vals), "msg/s"),
                                          "  evloop/peer %.3g" % r if r else "")
        cv = results.get(cpu, {}).get(sid)
        if cv:
            c = med(cv)
            rc = ratio(c, ev_cpu)
            right = "| CPU %9s/msg (%s .. %s)  %s" % (
                fmt(c, "us/msg"), fmt(min(cv), "us/msg"), fmt(max(cv), "us/msg"),
                "(the reference)" if sid == "evloop" else
                "%.3fx evloop callbacks" % rc if rc else "")
        else:
            right = "| CPU —"
        log("    %-62s %s" % (left, right))


def machine_description():
    cpu, cores, mhz, flags = "?", 0, "?", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, val = line.partition(":")
                k, val = k.strip(), val.strip()
                if k == "model name":
                    cpu = val
                    cores += 1
                elif k == "cpu MHz":
                    mhz = val
                elif k == "flags" and not flags:
                    flags = val
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except (OSError, ValueError, IndexError):
        pass
    return cpu, cores, mhz, mem, " ".join(platform.uname())


def tool_versions(cc, py):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    out = {"cc": first_line([cc, "--version"])}
    for name, pkg in (("libuv", "libuv1-dev"), ("libev", "libev-dev"),
                      ("libevent", "libevent-dev"), ("Boost.Context", "libboost-context-dev"),
                      ("uvloop", "python3-uvloop")):
        out[name] = first_line(["dpkg-query", "-W", "-f", "${Version}", pkg])
    if py:
        out["python"] = first_line([py, "-c", "import sys; print(sys.version.split()[0] + ' (' + sys.executable + ')')"])
    return out


def evloop_version():
    ver = "?"
    try:
        with open(os.path.join(ROOT, "evloop.h"), "rb") as f:
            data = f.read()
        m = re.search(rb'#define EVLOOP_VERSION "([^"]+)"', data)
        ver = (m.group(1).decode() if m else "?") + ", evloop.h sha256 " + \
            hashlib.sha256(data).hexdigest()[:12]
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            ver += ", git " + r.stdout.strip()
            d = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "evloop.h"])
            if d.returncode != 0:
                ver += " + uncommitted changes to evloop.h"
    except OSError:
        pass
    return ver


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def write_markdown(path, results, errors, args, sz, meta):
    L = []
    L.append("# evloop.h side-by-side benchmark: results")
    L.append("")
    L.append("Generated by `%s` on %s (%s, %s). Medians of %d round%s; every system ran in "
             "turn, interleaved, in each round. Workload definitions, the closest primitive "
             "each peer uses, and the caveats: [bench/README.md](README.md)." % (
                 meta["command"], meta["date"], "quick mode: reduced sizes" if args.quick
                 else "full sizes", "%.0f s" % meta["elapsed"], args.rounds,
                 "" if args.rounds == 1 else "s"))
    L.append("")
    L.append("## Against the targets")
    L.append("")
    L.append("| workload | evloop | peer measured here | target | status |")
    L.append("|---|---|---|---|---|")
    for w, e, p, t, s in target_table(results, sz):
        L.append("| %s | %s | %s | %s | %s |" % (w, e, p, t, s))
    L.append("")
    missed = [w for w, _, _, _, s in target_table(results, sz) if "MISSED" in s]
    if missed:
        L.append("Targets missed in this run: %s. The benchmark is not tuned to change that; "
                 "see the notes below and bench/README.md." % ", ".join(missed))
        L.append("")
    L.append("## Medians")
    L.append("")
    cols = [s for s, _ in SYSTEMS]
    L.append("| workload | unit | " + " | ".join(LABEL[s] for s in cols) + " |")
    L.append("|---|---|" + "---|" * len(cols))
    for row, title, unit, better in ROWS:
        by = results.get(row, {})
        title = row_title(row, sz)
        cells = []
        for s in cols:
            if row == "executor" and s == "evloop" and not by.get(s):
                cells.append("not yet built")
            else:
                cells.append(fmt(med(by.get(s, [])), unit) if by.get(s) else "—")
        L.append("| %s | %s (%s is better) | %s |" % (title, unit, better, " | ".join(cells)))
    L.append("")
    write_echo_cpu(L, results)
    L.append("## Ratio evloop / peer")
    L.append("")
    L.append("The evloop median divided by the peer's, for the same unit: below 1 means evloop is "
             "faster, or uses less CPU or memory, for the time, server CPU, memory and task-scale "
             "rows; above 1 means evloop is faster for the echo msg/s rows. For echo and memory, "
             "\"evloop\" is the callback server and the evloop tasks server has its own column. "
             "The debug row divides debug on by debug off.")
    L.append("")
    peers = [s for s in cols if s != "evloop"]
    L.append("| workload | " + " | ".join(LABEL[s] for s in peers) + " |")
    L.append("|---|" + "---|" * len(peers))
    for row, title, unit, better in ROWS:
        ev = evloop_cell(results, row)
        title = row_title(row, sz)
        cells = []
        for s in peers:
            if row == "debug":
                cells.append("—")
                continue
            r = ratio(ev, cell_value(results, row, s))
            cells.append("%.3g" % r if r is not None else "—")
        if row == "debug":
            r = ratio(ev, cell_value(results, "dispatch", "evloop"))
            title += " (debug on / off: %s)" % ("%.3g" % r if r else "—")
        L.append("| %s | %s |" % (title, " | ".join(cells)))
    L.append("")
    L.append("## Spread (min..max over the rounds)")
    L.append("")
    L.append("| workload | " + " | ".join(LABEL[s] for s in cols) + " |")
    L.append("|---|" + "---|" * len(cols))
    for row, title, unit, better in ROWS:
        by = results.get(row, {})
        if not by:
            continue
        title = row_title(row, sz)
        cells = ["%s..%s" % (fmt(min(by[s]), unit), fmt(max(by[s]), unit)) if by.get(s) else "—"
                 for s in cols]
        L.append("| %s | %s |" % (title, " | ".join(cells)))
    L.append("")
    L.append("## Notes on this run")
    L.append("")
    for n in meta["notes"]:
        L.append("- " + n)
    if errors:
        L.append("- Failed measurements (left out of the medians):")
        for e in errors:
            L.append("  - " + e)
    L.append("")
    L.append("## Sizes")
    L.append("")
    L.append("| parameter | value |")
    L.append("|---|---|")
    for k, val in sz.items():
        L.append("| %s | %s |" % (k, val))
    L.append("")
    L.append("## Machine")
    L.append("")
    cpu, cores, mhz, mem, uname = machine_description()
    L.append("- CPU: %s, %d logical cores (%s MHz reported), %s of memory" % (cpu, cores, mhz,
                                                                               mem))
    L.append("- uname: `%s`" % uname)
    L.append("- load average at start / end: %s / %s (other work on the machine shows up as "
             "spread)" % (meta["load_start"], meta["load_end"]))
    L.append("- evloop: %s" % meta["evloop"])
    for k, val in meta["tools"].items():
        L.append("- %s: %s" % (k, val))
    L.append("- date: %s" % meta["date"])
    L.append("- command: `%s` (from `%s`)" % (meta["command"], ROOT))
    L.append("")
    L.append("![results](results.png)")
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_echo_cpu(L, results):
    """The echo rows again, msg/s beside the server's CPU time per message and its ratio to
    the evloop callback server (server / evloop callbacks: below 1 is cheaper than evloop)."""
    rows = [echo_row(c, s) for c, s in ECHO_CONFIGS]
    servers = [s for s, _ in SYSTEMS if any(results.get(r, {}).get(s) for r in rows)]
    if not servers:
        return
    L.append("## Echo: server CPU per message")
    L.append("")
    L.append("The server's time on CPU during the measuring window (sum of the first field of "
             "`/proc/PID/task/*/schedstat`, read by the client as the window opens and closes; "
             "server pinned to core 0, client to core 1) divided by the messages the client "
             "counted in it. Medians over the rounds; in brackets the ratio to the evloop "
             "callback server (below 1: less CPU per message than evloop callbacks). msg/s is "
             "repeated for reference: every server faces the same client over the same "
             "loopback round trip, so msg/s hardly separates the C servers; CPU per message "
             "does. It counts only time on CPU, so a neighbour competing for core 0 lowers "
             "msg/s much more than it moves this number (the notes give each process's share "
             "of the window on CPU and waiting for its core).")
    L.append("")
    L.append("| configuration | " + " | ".join(LABEL[s] for s in servers) + " |")
    L.append("|---|" + "---|" * len(servers))
    for r in rows:
        ev = cell_value(results, r + "_cpu", "evloop")
        cells = []
        for s in servers:
            m, c = cell_value(results, r, s), cell_value(results, r + "_cpu", s)
            rc = ratio(c, ev)
            cells.append("%s msg/s, %s/msg%s" % (fmt(m, "msg/s"), fmt(c, "us/msg"),
                                                  " (%.2f)" % rc if rc else ""))
        L.append("| %s | %s |" % (ROW[r][1].replace("TCP echo, ", ""), " | ".join(cells)))
    L.append("")


PLOT_PANELS = [
    ("time per operation (ns, log scale; lower is better)",
     ["dispatch", "debug", "timer_start", "timer_stop", "timer_fire", "switch", "handoff",
      "spawn", "tspost", "executor"]),
    ("TCP echo (messages/s, log scale; higher is better)",
     ["echo_64_1k", "echo_64_64k", "echo_1000_1k", "echo_1000_64k"]),
    ("echo server CPU per message (us, log scale; lower is better)",
     ["echo_64_1k_cpu", "echo_64_64k_cpu", "echo_1000_1k_cpu", "echo_1000_64k_cpu"]),
    ("memory (bytes, log scale; lower is better)", ["mem_conn", "mem_task", "scale_rss"]),
]
SHORT = {"dispatch": "call_soon chain", "debug": "chain, debug on", "timer_start": "timer start",
         "timer_stop": "timer stop", "timer_fire": "timer fire", "switch": "raw switch",
         "handoff": "hand-off q=1", "spawn": "spawn+join", "tspost": "threadsafe post",
         "executor": "executor", "echo_64_1k": "64 conns 1 KiB", "echo_64_64k": "64 conns 64 KiB",
         "echo_1000_1k": "1000 conns 1 KiB", "echo_1000_64k": "1000 conns 64 KiB",
         "mem_conn": "per idle conn", "mem_task": "per sleeping task",
         "echo_64_1k_cpu": "64 conns 1 KiB", "echo_64_64k_cpu": "64 conns 64 KiB",
         "echo_1000_1k_cpu": "1000 conns 1 KiB", "echo_1000_64k_cpu": "1000 conns 64 KiB",
         "scale_rss": "per task, tasks at scale"}


def write_plot(png, results, title):
    if not shutil.which("gnuplot"):
        return "gnuplot not found: no plot"
    cols = [s for s, _ in SYSTEMS]
    script = ["set terminal pngcairo noenhanced size 1500,1900 font 'Sans,10'",
              "set output '%s'" % png,
              "set datafile missing '?'",
              "set style data histogram",
              "set style histogram clustered gap 1",
              "set style fill solid 0.85 border -1",
              "set boxwidth 0.9",
              "set logscale y",
              "set grid ytics mytics",
              "set key outside right top vertical",
              "set xtics nomirror",
              "set multiplot layout %d,1 title '%s'" % (len(PLOT_PANELS), title.replace("'", ""))]
    for i, (ptitle, rows) in enumerate(PLOT_PANELS):
        dat = os.path.join(BUILD, "plot%d.dat" % i)
        present = [r for r in rows if results.get(r)]
        used = [s for s in cols if any(results.get(r, {}).get(s) for r in present)]
        if not present or not used:
            continue
        with open(dat, "w") as f:
            f.write("# label " + " ".join(s for s in used) + "\n")
            for r in present:
                vals = [cell_value(results, r, s) for s in used]
                f.write('"%s" ' % SHORT[r] + " ".join("?" if v is None else "%.6g" % v
                                                       for v in vals) + "\n")
        lo = min(cell_value(results, r, s) or 1e30 for r in present for s in used)
        hi = max(cell_value(results, r, s) or 0 for r in present for s in used)
        script.append("set title '%s'" % ptitle)
        script.append("set yrange [%g:%g]" % (10 ** math.floor(math.log10(max(lo / 2, 1e-9))),
                                              hi * 3))
        script.append("set xrange [-0.6:%g]" % (len(present) - 0.4))
        plots = []
        for j, s in enumerate(used):
            color = ["#d62728", "#ff9896", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf",
                     "#7f7f7f"][cols.index(s)]
            plots.append("'%s' using %d%s title '%s' lc rgb '%s'" % (
                dat, j + 2, ":xtic(1)" if j == 0 else "", LABEL[s], color))
        script.append("plot " + ", ".join(plots))
    script.append("unset multiplot")
    gp = os.path.join(BUILD, "results.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        return "gnuplot failed: " + r.stderr.strip()[-500:]
    return None


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round at reduced sizes")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 1)")
    ap.add_argument("--only", default="", help="comma-separated workload groups to run "
                    "(dispatch,timers,switch,handoff,spawn,tspost,executor,echo,mem_conn,"
                    "mem_task,task_scale,task_burst; echo is all four echo_* groups)")
    ap.add_argument("--out", default=HERE, help="where results.md and results.png go")
    ap.add_argument("--report-only", action="store_true", help="measure nothing: rewrite "
                    "results.md and results.png from the last run's build/bench/results.json")
    args = ap.parse_args()
    if args.report_only:
        return report(args)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    t_start = time.time()
    load_start = loadavg()
    sz = SIZES["quick" if args.quick else "full"]
    cc = os.environ.get("CC", "cc")
    cxx = os.environ.get("CXX", "c++")
    notes = []

    # Enough descriptors for 1000 echo connections and the idle-connection test: children
    # inherit the raised soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = sz["mem_conns"] + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        sz = dict(sz, mem_conns=max(100, hard - 64))
    notes.append("RLIMIT_NOFILE is %s (hard); the idle-connection row uses %d connections: "
                 "the server holds one fd per connection, so 100 000 needs a hard limit above "
                 "100 000, which this environment does not grant (no CAP_SYS_RESOURCE)"
                 % (hard, sz["mem_conns"]) if hard != resource.RLIM_INFINITY and
                 hard < 100064 else "the idle-connection row uses %d connections"
                 % sz["mem_conns"])

    log("== checking peers")
    avail = ensure_peers(cc, cxx)
    py = python_with_uvloop()
    if py is None:
        notes.append("uvloop is not importable by any python3 here: asyncio runs on %s and "
                     "uvloop is left out" % sys.executable)
        py_cmd = sys.executable
    else:
        py_cmd = py
    for name, ok in avail.items():
        if not ok and name != "uvloop":
            notes.append("%s is not available and could not be installed: its cells are "
                         "empty" % name)
    log("== building into %s" % os.path.relpath(BUILD, ROOT))
    built = build(cc, cxx, avail)
    if "micro" not in built:
        notes.append("evloop's benchmark did not build (see the log): evloop cells are empty")

    timeout = 120 if args.quick else 600
    groups = make_groups(sz, built, py_cmd, py is not None, timeout)
    if args.only:
        want = set(args.only.split(","))
        groups = [(g, j) for g, j in groups
                  if g in want or (g.startswith("echo_") and "echo" in want)]

    results, errors, infos = {}, [], {}
    for rnd in range(args.rounds):
        log("== round %d of %d" % (rnd + 1, args.rounds))
        for gname, jobs in groups:
            if not jobs:
                continue
            k = rnd % len(jobs)
            order = jobs[k:] + jobs[:k]   # rotate: nobody always goes first
            line = []
            for job in order:
                try:
                    vals, info = job.fn()
                except Exception as e:  # noqa: BLE001 - one failure must not stop the rest
                    errors.append("round %d, %s, %s: %s" % (rnd + 1, gname, LABEL[job.system],
                                                            str(e).strip()[:300]))
                    line.append("%s FAILED" % LABEL[job.system])
                    continue
                for row, v in vals.items():
                    results.setdefault(row, {}).setdefault(job.system, []).append(v)
                    tag = " (debug)" if row == "debug" else \
                        " " + row.split("_")[1] if row.startswith("timer_") else \
                        " CPU" if row.endswith("_cpu") else \
                        " " + row[6:] if row.startswith("scale_") else ""
                    line.append("%s%s %s" % (LABEL[job.system], tag, fmt(v, ROW[row][2])))
                infos.setdefault(gname, {}).setdefault(job.system, []).append(info)
            log("  %-14s %s" % (gname, ", ".join(line)))

    print_table(results, args.rounds, sz)
    for e in errors:
        log("FAILED: " + e)
    for sysname in ("libuv", "libev"):
        calls = [i.get("async_callbacks") for i in infos.get("tspost", {}).get(sysname, [])
                 if i.get("async_callbacks")]
        if calls:
            notes.append("%s thread-safe post: %d posts ran in a median of %d async callbacks "
                         "(the async handle coalesces; the mutex-protected queue carries the "
                         "posts)" % (sysname, sz["tspost"] // 4 * 4, statistics.median(calls)))
    notes += info_notes(infos, sz)
    if py:
        notes.append("asyncio and uvloop both ran on %s (the interpreter that has uvloop)" % py_cmd)
    elapsed = time.time() - t_start
    cmd = "python3 bench/run.py" + ("".join(" " + shlex.quote(a) for a in sys.argv[1:]))
    if os.environ.get("MAKELEVEL"):
        cmd = ("make bench-quick" if args.quick else "make bench") + " (" + cmd + ")"
    meta = dict(command=cmd, date=datetime.datetime.now().astimezone().strftime(
        "%Y-%m-%d %H:%M %Z"), elapsed=elapsed, notes=notes, load_start=load_start,
        load_end=loadavg(), evloop=evloop_version(), tools=tool_versions(cc, py))
    with open(os.path.join(BUILD, "results.json"), "w") as f:
        json.dump(dict(results=results, errors=errors, sizes=sz, meta=meta, quick=args.quick,
                       rounds=args.rounds), f, indent=1)
    write_reports(args, results, errors, sz, meta)
    return 0


def report(args):
    with open(os.path.join(BUILD, "results.json")) as f:
        data = json.load(f)
    results = data["results"]
    args.quick = data.get("quick", data["sizes"] != SIZES["full"])
    args.rounds = data.get("rounds") or max(len(v) for by in results.values()
                                            for v in by.values())
    write_reports(args, results, data["errors"], data["sizes"], data["meta"])
    return 0


def info_notes(infos, sz):
    """Notes from the INFO lines: pinning and CPU shares of the echo runs, and the phases of
    the task-scale and burst rows."""
    notes = []

    def mi(vals):
        return statistics.median(vals) if vals else None

    for conns, size in ECHO_CONFIGS:
        g = echo_row(conns, size)
        by = infos.get(g, {})
        if not by:
            continue
        runs = [i for lst in by.values() for i in lst]
        bad_pin = sum(1 for i in runs if i.get("server_pinned") == 0 or
                      i.get("client_pinned_to", 1) != 1)
        thr = sorted({"%s %d->%d" % (LABEL[s_], i["server_threads"], i["server_threads_end"])
                      for s_, lst in by.items() for i in lst
                      if "server_threads" in i and i["server_threads"] != i["server_threads_end"]})
        client = [i["client_busy"] for i in runs if "client_busy" in i]
        cwait = [i["client_waiting"] for i in runs if "client_waiting" in i]

        def share(s_, key):
            vals = [i[key] for i in by[s_] if key in i]
            return "%.0f" % (100 * mi(vals)) if vals else "?"
        servers = ", ".join("%s %s/%s" % (LABEL[s_], share(s_, "server_busy"),
                                          share(s_, "server_waiting"))
                            for s_, _ in SYSTEMS if s_ in by and
                            any("server_busy" in i for i in by[s_]))
        if client:
            notes.append("echo %s: share of the measuring window each process spent on CPU / "
                         "runnable but waiting for its core (schedstat fields 1 and 2, medians "
                         "over the runs, %%): client %.0f/%s (on CPU %.0f..%.0f over the runs); "
                         "servers: %s%s%s" % (
                             ROW[g][1].replace("TCP echo, ", ""), 100 * mi(client),
                             "%.0f" % (100 * mi(cwait)) if cwait else "?",
                             100 * min(client), 100 * max(client), servers,
                             "; %d run(s) NOT pinned as intended (server core 0, client core 1)"
                             % bad_pin if bad_pin else "; every server ran pinned to core 0 "
                             "and the client to core 1",
                             "; thread count changed during the window (its CPU time may be "
                             "lost): " + ", ".join(thr) if thr else ""))
    by = infos.get("task_scale", {})
    for s_, _ in SYSTEMS:
        lst = by.get(s_)
        if not lst:
            continue
        keys = ["spawn_calls_s", "cancel_s", "cancel_run_s", "cancel_run_join_s",
                "rss_after_close_kib", "maps_before"]
        m = {k: mi([i[k] for i in lst if k in i]) for k in keys}
        parts = ["the spawn calls alone %.3f s" % m["spawn_calls_s"]] \
            if m["spawn_calls_s"] is not None else []
        if m["cancel_s"] is not None:
            parts.append("of the freeing, the cancel calls %.3f s, until all returned %.3f s, "
                         "joined %.3f s (the rest is closing the loop)" % (
                             m["cancel_s"], m["cancel_run_s"], m["cancel_run_join_s"]))
        if m["rss_after_close_kib"] is not None:
            parts.append("VmRSS after closing %.0f MiB" % (m["rss_after_close_kib"] / 1024))
        if m["maps_before"] is not None:
            parts.append("%.0f mappings before the first spawn" % m["maps_before"])
        notes.append("%s sleeping tasks, %s (medians): %s" % (thousands(sz["task_scale"]),
                                                             LABEL[s_], "; ".join(parts)))
    by = infos.get("task_burst", {})
    parts = []
    for s_, _ in SYSTEMS:
        lst = by.get(s_)
        if lst and all("spawn_s" in i for i in lst):
            parts.append("%s spawn %.3f s + join %.3f s" % (
                LABEL[s_], mi([i["spawn_s"] for i in lst]), mi([i["join_s"] for i in lst])))
    if parts:
        notes.append("%s-task burst, the two phases (medians): %s" % (
            thousands(sz["task_burst"]), "; ".join(parts)))
    return notes


def write_reports(args, results, errors, sz, meta):
    notes = meta["notes"]
    elapsed = meta["elapsed"]
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "results.md")
    png = os.path.join(args.out, "results.png")
    err = write_plot(png, results, "evloop.h vs peers (%s, median of %d round%s)" % (
        "quick" if args.quick else "full", args.rounds, "" if args.rounds == 1 else "s"))
    if err:
        notes.append(err)
        log(err)
    write_markdown(md, results, errors, args, sz, meta)
    log("wrote %s and %s (the run took %.0f s)" % (os.path.relpath(md, ROOT),
                                                   os.path.relpath(png, ROOT), elapsed))


if __name__ == "__main__":
    sys.exit(main())
