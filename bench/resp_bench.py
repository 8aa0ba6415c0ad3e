#!/usr/bin/env python3
"""bench/resp_bench.py - examples/resp (evloop, callback style) against redis-server (whose loop
is ae), both driven by redis-benchmark in the same run.

Both servers run side by side for the whole run; each round benchmarks them one after the
other (the order alternates between rounds), without and with pipelining (-P 16). The table
gives the median requests per second of each and the ratio resp/redis-server. --pin puts the
servers on CPU 0 and redis-benchmark on CPU 1. Standard library only.

    python3 bench/resp_bench.py                    # 3 rounds, 200 000 requests per test
    python3 bench/resp_bench.py --rounds 1 --requests 20000   # a quick look

Needs redis-server and redis-benchmark: apt-get install redis-server redis-tools."""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESP = os.path.join(ROOT, "build", "examples", "resp")
TESTS = ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR"]
PIPELINES = [1, 16]


PIN = False


def pin(cpu):
    """A preexec_fn that puts the child on one CPU, when the machine has more than one."""
    if not PIN or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("server exited at start: %s" % proc.stderr.read())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit("server on port %d not ready after %d s" % (port, timeout))


def start_resp():
    proc = subprocess.Popen([RESP, "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=pin(0))
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit("resp did not start: %r" % line)
    port = int(line.split()[2])
    wait_ready(port, proc)
    return proc, port


def start_redis():
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--daemonize", "no",
                             "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pin(0))
    wait_ready(port, proc)
    return proc, port


def benchmark(port, requests, clients, pipeline):
    """One redis-benchmark run: {test: requests per second}."""
    cmd = ["redis-benchmark", "-p", str(port), "-t", ",".join(t.lower() for t in TESTS),
           "-c", str(clients), "-n", str(requests), "-q"]
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=pin(1))
    rates = {k: float(v) for k, v in re.findall(r"([A-Z_]+): ([\d.]+) requests per second", r.stdout)}
    if r.returncode != 0 or sorted(rates) != sorted(TESTS):
        sys.exit("redis-benchmark failed on port %d:\n%s%s" % (port, r.stdout, r.stderr))
    return rates


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--pin", action="store_true",
                    help="servers on CPU 0, redis-benchmark on CPU 1 (default: the scheduler's choice)")
    args = ap.parse_args()
    global PIN
    PIN = args.pin
    for tool, package in (("redis-server", "redis-server"), ("redis-benchmark", "redis-tools")):
        if not shutil.which(tool):
            sys.exit("%s is missing: apt-get install %s" % (tool, package))
    subprocess.run(["make", "-s", "-C", ROOT, os.path.relpath(RESP, ROOT)], check=True)

    servers = {"resp": start_resp(), "redis": start_redis()}
    results = {(name, p, t): [] for name in servers for p in PIPELINES for t in TESTS}
    try:
        for rnd in range(args.rounds):
            order = ["resp", "redis"] if rnd % 2 == 0 else ["redis", "resp"]
            for pipeline in PIPELINES:
                for name in order:
                    rates = benchmark(servers[name][1], args.requests, args.clients, pipeline)
                    for t in TESTS:
                        results[(name, pipeline, t)].append(rates[t])
            print("round %d/%d done" % (rnd + 1, args.rounds), file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=20)

    print("redis-benchmark -c %d -n %d -q, median of %d rounds; %s; %d CPUs%s" % (
        args.clients, args.requests, args.rounds, version(["redis-server", "--version"]),
        os.cpu_count() or 1, " (servers on CPU 0, client on CPU 1)" if pin(0) else ""))
    print()
    print("| test | pipeline | evloop resp (req/s) | redis-server (req/s) | resp / redis |")
    print("|---|---:|---:|---:|---:|")
    for pipeline in PIPELINES:
        for t in TESTS:
            ours = statistics.median(results[("resp", pipeline, t)])
            theirs = statistics.median(results[("redis", pipeline, t)])
            print("| %s | %d | %.0f | %.0f | %.2f |" % (t, pipeline, ours, theirs, ours / theirs))


if __name__ == "__main__":
    main()
