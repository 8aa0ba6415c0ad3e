/* executor_evloop.c - evloop's executor round trip for `make bench` (workload 6 in
   bench/README.md): 64 tasks, each offloading trivial jobs one after the other with
   evl_executor_run_on to a pool of 4 threads (libuv's default pool size, and the size given
   to asyncio's and uvloop's ThreadPoolExecutor), so 64 jobs are in flight until N are done.

   A separate program from micro.c because the executor is newer than the rest of evloop: with
   an evloop.h that has no executor this does not build, and bench/run.py reports the cell as
   "not yet built".

   Usage: executor_evloop executor N     prints "RESULT executor <ns per job>" */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IN_FLIGHT 64
#define THREADS 4

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void *trivial(void *arg) {
    return (void *)((intptr_t)arg + 1);
}

static evl_executor *pool;
static long per_worker[IN_FLIGHT], done, failed;

static int worker(evl_loop *loop, void *arg) {
    long i, k = *(long *)arg;
    void *res;
    for (i = 0; i < k; i++) {
        if (evl_executor_run_on(loop, pool, trivial, (void *)(intptr_t)i, &res) < 0) failed++;
        else done++;
    }
    return 0;
}

/* The pool's threads start outside the timing. */
static int warm(evl_loop *loop, void *arg) {
    void *res;
    int i;
    (void)arg;
    for (i = 0; i < 2 * THREADS; i++) evl_executor_run_on(loop, pool, trivial, NULL, &res);
    return 0;
}

int main(int argc, char **argv) {
    evl_loop *loop;
    long n, i;
    double t0;
    int err;
    if (argc < 3 || strcmp(argv[1], "executor") != 0) {
        fprintf(stderr, "usage: executor_evloop executor N\n");
        return 2;
    }
    n = atol(argv[2]);
    if ((err = evl_loop_new(&loop, NULL)) < 0 ||
        (err = evl_executor_new(loop, &pool, THREADS, 0)) < 0) {
        fprintf(stderr, "executor_evloop: %s\n", evl_strerror(err));
        return 1;
    }
    evl_task_spawn(loop, NULL, warm, NULL, NULL);
    evl_run(loop);
    for (i = 0; i < IN_FLIGHT; i++) {
        per_worker[i] = n / IN_FLIGHT + (i < n % IN_FLIGHT ? 1 : 0);
        evl_task_spawn(loop, NULL, worker, &per_worker[i], NULL);
    }
    t0 = now_ns();
    evl_run(loop);
    t0 = (now_ns() - t0) / (double)(done ? done : 1);
    if (failed) {
        fprintf(stderr, "executor_evloop: %ld jobs failed\n", failed);
        return 1;
    }
    printf("RESULT executor %.3f\n", t0);
    evl_executor_shutdown(loop, pool, EVL_SEC(5));
    evl_loop_close(loop);
    return 0;
}
