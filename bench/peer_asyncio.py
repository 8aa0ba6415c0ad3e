"""peer_asyncio.py - the asyncio and uvloop side of `make bench` (bench/README.md defines every
workload). The same code runs on both loops: --uvloop installs uvloop's loop, nothing else
changes.

Usage: python3 peer_asyncio.py [--uvloop] WORKLOAD N   prints "RESULT <name> <value>" lines
                                                      (WORKLOAD: dispatch, handoff, spawn,
                                                      tspost, executor, mem_tasks, task_scale,
                                                      task_burst)
       python3 peer_asyncio.py [--uvloop] echo PORT    TCP echo server (asyncio.Protocol) on
                                                      127.0.0.1; prints "listening on PORT"
"""
import asyncio
import concurrent.futures
import resource
import sys
import threading
import time


def new_loop(use_uvloop):
    if use_uvloop:
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


# ---- 1. dispatch: a chain of call_soon callbacks, each queueing the next ----
def bench_dispatch(loop, n):
    left = n

    def cb():
        nonlocal left
        left -= 1
        if left > 0:
            loop.call_soon(cb)
        else:
            loop.stop()

    t0 = time.perf_counter_ns()
    loop.call_soon(cb)
    loop.run_forever()
    return (time.perf_counter_ns() - t0) / n


# ---- 3b. task-to-task hand-off through asyncio.Queue(maxsize=1) ----
def bench_handoff(loop, n):
    async def main():
        q = asyncio.Queue(maxsize=1)

        async def producer():
            for i in range(n):
                await q.put(i)

        async def consumer():
            for _ in range(n):
                await q.get()

        t0 = time.perf_counter_ns()
        p = loop.create_task(producer())
        c = loop.create_task(consumer())
        await p
        await c
        return (time.perf_counter_ns() - t0) / n

    return loop.run_until_complete(main())


# ---- 4. spawn + join of a short task, from a task ----
def bench_spawn(loop, n):
    async def short(x):
        return x

    async def main():
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await loop.create_task(short(1))
        return (time.perf_counter_ns() - t0) / n

    return loop.run_until_complete(main())


# ---- 5. thread-safe posts: 4 threads x n/4 call_soon_threadsafe ----
def bench_tspost(loop, n):
    posters = 4
    per_thread = n // posters
    total = posters * per_thread
    seen = 0

    def cb():
        nonlocal seen
        seen += 1
        if seen == total:
            loop.stop()

    def poster():
        post = loop.call_soon_threadsafe
        for _ in range(per_thread):
            post(cb)

    threads = [threading.Thread(target=poster) for _ in range(posters)]
    t0 = time.perf_counter_ns()
    for t in threads:
        t.start()
    loop.run_forever()
    dt = (time.perf_counter_ns() - t0) / total
    for t in threads:
        t.join()
    return dt


# ---- 6. executor round trip: run_in_executor on a 4-thread pool, 64 jobs in flight ----
def trivial(x):
    return x + 1


def bench_executor(loop, n):
    in_flight = 64
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    async def main():
        # Start the pool's threads outside the timing.
        await asyncio.gather(*[loop.run_in_executor(pool, trivial, i) for i in range(8)])
        per_worker = [n // in_flight + (1 if i < n % in_flight else 0) for i in range(in_flight)]

        async def worker(k):
            for i in range(k):
                await loop.run_in_executor(pool, trivial, i)

        t0 = time.perf_counter_ns()
        await asyncio.gather(*[worker(k) for k in per_worker])
        return (time.perf_counter_ns() - t0) / n

    try:
        return loop.run_until_complete(main())
    finally:
        pool.shutdown(wait=True)


# ---- 8b. memory per sleeping task: VmRSS delta over n tasks in asyncio.sleep ----
def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def bench_mem_tasks(loop, n):
    started = 0

    async def sleeper():
        nonlocal started
        started += 1
        await asyncio.sleep(3600)

    async def main():
        nonlocal started
        await asyncio.sleep(0)
        before = rss_bytes()
        tasks = [loop.create_task(sleeper()) for _ in range(n)]
        while started < n:
            await asyncio.sleep(0)
        after = rss_bytes()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return (after - before) / n

    return loop.run_until_complete(main())


# ---- 10a. sleeping tasks at scale: n tasks asleep at once, then cancelled and gathered ----
def count_maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def bench_task_scale(loop, n):
    """The asyncio side of micro.c's task_scale: spawn until every task sleeps, RSS per task,
    mappings at the peak, and cancel + gather + loop close. The list of tasks is allocated
    before the first RSS reading (like evloop's handle array)."""
    asleep = 0

    async def sleeper():
        nonlocal asleep
        asleep += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return 0
        return 1

    tasks = [None] * n
    out = {}

    async def main():
        await asyncio.sleep(0)
        rss0, maps0 = rss_bytes(), count_maps()
        t0 = time.perf_counter_ns()
        for i in range(n):
            tasks[i] = loop.create_task(sleeper())
        t_calls = time.perf_counter_ns() - t0
        while asleep < n:
            await asyncio.sleep(0)
        t_spawn = time.perf_counter_ns() - t0
        rss1, maps1 = rss_bytes(), count_maps()
        t1 = time.perf_counter_ns()
        for t in tasks:
            t.cancel()
        res = await asyncio.gather(*tasks)
        out.update(t1=t1, t_spawn=t_spawn, t_calls=t_calls, rss0=rss0, rss1=rss1,
                   maps0=maps0, maps1=maps1, bad=sum(1 for r in res if r != 0))

    loop.run_until_complete(main())
    tasks.clear()
    loop.close()
    t_free = time.perf_counter_ns() - out["t1"]
    if out["bad"]:
        raise RuntimeError("%d tasks did not end as cancelled" % out["bad"])
    return {"scale_spawn": out["t_spawn"] / 1e9,
            "scale_rss": (out["rss1"] - out["rss0"]) / n,
            "scale_maps": out["maps1"],
            "scale_free": t_free / 1e9}, {"tasks": n, "spawn_calls_s": out["t_calls"] / 1e9,
                                          "maps_before": out["maps0"]}


# ---- 10b. a burst: n tasks created at once from a task, then awaited in order ----
def bench_task_burst(loop, n):
    async def short(x):
        return x

    async def main():
        tasks = [None] * n
        t0 = time.perf_counter_ns()
        for i in range(n):
            tasks[i] = loop.create_task(short(1))
        t1 = time.perf_counter_ns()
        bad = 0
        for t in tasks:
            if await t != 1:
                bad += 1
        t2 = time.perf_counter_ns()
        if bad:
            raise RuntimeError("%d tasks returned the wrong value" % bad)
        return {"task_burst": (t2 - t0) / 1e9}, {"tasks": n, "spawn_s": (t1 - t0) / 1e9,
                                                   "join_s": (t2 - t1) / 1e9}

    return loop.run_until_complete(main())


# ---- 7. TCP echo server on asyncio.Protocol, with flow control both ways ----
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def echo_server(loop, port):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = loop.run_until_complete(
        loop.create_server(Echo, "127.0.0.1", port, backlog=4096, reuse_address=True))
    print("listening on %d" % server.sockets[0].getsockname()[1], flush=True)
    loop.run_forever()


def main(argv):
    use_uvloop = "--uvloop" in argv
    args = [a for a in argv if a != "--uvloop"]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    work, n = args[0], int(args[1])
    loop = new_loop(use_uvloop)
    asyncio.set_event_loop(loop)
    if work == "echo":
        echo_server(loop, n)
        return 0
    benches = {"dispatch": bench_dispatch, "handoff": bench_handoff, "spawn": bench_spawn,
               "tspost": bench_tspost, "executor": bench_executor, "mem_tasks": bench_mem_tasks,
               "task_scale": bench_task_scale, "task_burst": bench_task_burst}
    if work not in benches:
        print("peer_asyncio: unknown workload %r" % work, file=sys.stderr)
        return 2
    if work in ("task_scale", "task_burst"):
        # Several results, in seconds or bytes, and some INFO lines; task_scale closes the loop
        # itself (closing is part of what it times).
        res, info = benches[work](loop, n)
        for k, v in res.items():
            print("RESULT %s %.6g" % (k, v))
        for k, v in info.items():
            print("INFO %s %.6g" % (k, v))
        sys.stdout.flush()
        if not loop.is_closed():
            loop.close()
        return 0
    print("RESULT %s %.3f" % (work, benches[work](loop, n)), flush=True)
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
