/* micro.c - evloop's own hot paths, in nanoseconds per operation (median of several rounds).
   The side-by-side comparison with libuv, libev, libevent, asyncio, uvloop and Boost.Context is
   `make bench` (bench/run.py); this program is its evloop half for the loop and task workloads,
   and every workload here is defined in bench/README.md.

   Usage: micro [ROUNDS]          every workload, ROUNDS rounds (default 5), medians; the env
                                  var EVL_BENCH_SCALE divides the sizes
          micro WORKLOAD N        one run of one workload at size N, printed as
                                  "RESULT <name> <value>" lines (what bench/run.py reads);
                                  WORKLOAD is dispatch, timers, switch, handoff, spawn, tspost,
                                  mem_tasks, task_scale (N sleeping tasks at once, default
                                  evl_config) or task_burst (N tasks spawned in one burst, then
                                  joined); the executor row is executor_evloop.c */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int scale = 1;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- 1. a chain of call_soon callbacks: each queues the next ---- */
static long chain_left;
static void chain_cb(evl_loop *loop, void *arg) {
    if (--chain_left > 0) evl_call_soon(loop, chain_cb, arg);
}

static double bench_call_soon_chain(long n) {
    evl_loop *loop;
    double t0;
    evl_loop_new(&loop, NULL);   /* debug mode from EVLOOP_DEBUG, as any default loop */
    chain_left = n;
    t0 = now_ns();
    evl_call_soon(loop, chain_cb, NULL);
    evl_run(loop);
    t0 = (now_ns() - t0) / (double)n;
    evl_loop_close(loop);
    return t0;
}

/* ---- 2. timers: start N with random deadlines in 0..500 ms, stop half, fire the rest ---- */
static long fired;
static void timer_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    fired++;
}

static void bench_timers(long n, double *start_ns, double *stop_ns, double *fire_ns) {
    evl_loop *loop;
    long i, expect;
    evl_timer *t = (evl_timer *)calloc((size_t)n, sizeof *t);
    evl_time *delay = (evl_time *)malloc((size_t)n * sizeof *delay);
    unsigned x = 12345;
    double t0;
    evl_loop_new(&loop, NULL);
    for (i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        delay[i] = (evl_time)(x % 500000) * 1000;
        evl_timer_init(&t[i], timer_cb, NULL);
    }
    t0 = now_ns();
    for (i = 0; i < n; i++) evl_timer_start(loop, &t[i], delay[i], 0);
    *start_ns = (now_ns() - t0) / (double)n;
    t0 = now_ns();
    for (i = 0; i < n; i += 2) evl_timer_stop(loop, &t[i]);
    *stop_ns = (now_ns() - t0) / (double)((n + 1) / 2);
    /* Wait until every remaining timer is due, then time the firing alone. */
    {
        struct timespec ts = {0, 510 * 1000000};
        nanosleep(&ts, NULL);
    }
    fired = 0;
    expect = n - (n + 1) / 2;
    t0 = now_ns();
    while (fired < expect) evl_run_once(loop, 0);
    *fire_ns = (now_ns() - t0) / (double)(fired ? fired : 1);
    evl_loop_close(loop);
    free(t);
    free(delay);
}

/* ---- 3a. raw context switch: two contexts bouncing, no loop involved ---- */
static evl__ctx ctx_main, ctx_other;
static void bounce(void *arg) {
    (void)arg;
    for (;;) evl__ctx_switch(&ctx_other, &ctx_main);
}

static double bench_raw_switch(long n) {
    static char stack[65536];
    long i;
    double t0;
    evl__ctx_make(&ctx_other, stack, sizeof stack, bounce, NULL);
    t0 = now_ns();
    for (i = 0; i < n; i++) evl__ctx_switch(&ctx_main, &ctx_other);
    return (now_ns() - t0) / (double)(2 * n); /* two switches per round trip */
}

/* ---- 3b. task-to-task hand-off through a queue of size 1 ---- */
static long handoff_n;
static int producer(evl_loop *loop, void *arg) {
    long i;
    for (i = 0; i < handoff_n; i++) evl_queue_put(loop, (evl_queue *)arg, (void *)(intptr_t)i);
    return 0;
}

static int consumer(evl_loop *loop, void *arg) {
    long i;
    void *item;
    for (i = 0; i < handoff_n; i++) evl_queue_get(loop, (evl_queue *)arg, &item);
    return 0;
}

static double bench_handoff(long n) {
    evl_loop *loop;
    evl_queue *q;
    double t0;
    handoff_n = n;
    evl_loop_new(&loop, NULL);
    evl_queue_new(loop, &q, 1);
    evl_task_spawn(loop, NULL, producer, q, NULL);
    evl_task_spawn(loop, NULL, consumer, q, NULL);
    t0 = now_ns();
    evl_run(loop);
    t0 = (now_ns() - t0) / (double)handoff_n;
    evl_queue_free(loop, q);
    evl_loop_close(loop);
    return t0;
}

/* ---- 4. spawn and join of a short task, from a task ---- */
static int short_task(evl_loop *loop, void *arg) {
    (void)loop;
    return (int)(intptr_t)arg;
}

static long spawn_n;
static int spawner(evl_loop *loop, void *arg) {
    long i;
    int r;
    (void)arg;
    for (i = 0; i < spawn_n; i++) {
        evl_task *t;
        evl_task_spawn(loop, &t, short_task, (void *)(intptr_t)1, NULL);
        evl_task_join(loop, t, &r);
    }
    return 0;
}

static double bench_spawn_join(long n) {
    evl_loop *loop;
    double t0;
    spawn_n = n;
    evl_loop_new(&loop, NULL);
    evl_task_spawn(loop, NULL, spawner, NULL, NULL);
    t0 = now_ns();
    evl_run(loop);
    t0 = (now_ns() - t0) / (double)spawn_n;
    evl_loop_close(loop);
    return t0;
}

/* ---- 5. thread-safe posts: 4 threads x N posts ---- */
#define POSTERS 4
static long posts_per_thread, posts_seen;
static evl_loop *post_loop;
static void post_cb(evl_loop *loop, void *arg) {
    (void)arg;
    if (++posts_seen == POSTERS * posts_per_thread) evl_loop_unref(loop);
}

static void *poster(void *arg) {
    long i;
    (void)arg;
    for (i = 0; i < posts_per_thread; i++) evl_call_soon_threadsafe(post_loop, post_cb, NULL);
    return NULL;
}

static double bench_threadsafe(long per_thread) {
    pthread_t th[POSTERS];
    double t0;
    int i;
    posts_per_thread = per_thread;
    posts_seen = 0;
    evl_loop_new(&post_loop, NULL);
    evl_loop_ref(post_loop);
    t0 = now_ns();
    for (i = 0; i < POSTERS; i++) pthread_create(&th[i], NULL, poster, NULL);
    evl_run(post_loop);
    t0 = (now_ns() - t0) / (double)(POSTERS * posts_per_thread);
    for (i = 0; i < POSTERS; i++) pthread_join(th[i], NULL);
    evl_loop_close(post_loop);
    return t0;
}

/* ---- 8b. memory per sleeping task: VmRSS delta over N tasks asleep in evl_sleep ---- */
/* A line of /proc/self/status in KiB ("VmRSS", "VmHWM"), or -1. */
static long status_kib(const char *key) {
    char line[256];
    long kib = -1;
    size_t len = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0 && line[len] == ':')
            kib = strtol(line + len + 1, NULL, 10);
    fclose(f);
    return kib;
}

static long rss_kib(void) {
    return status_kib("VmRSS");
}

static long sleepers_started;
static int sleeper(evl_loop *loop, void *arg) {
    (void)arg;
    sleepers_started++;
    return evl_sleep(loop, EVL_SEC(3600));
}

/* stack_guard = -1, so that the row measures the same on kernels without guard regions, where
   a guarded stack costs two kernel mappings and vm.max_map_count (65530 by default) keeps
   100 000 guarded tasks from existing at once. 10a measures the default config. */
static double bench_mem_tasks(long n, long *spawned) {
    evl_loop *loop;
    evl_config cfg;
    long i, before, after;
    evl_config_init(&cfg);
    cfg.stack_guard = -1;
    if (evl_loop_new(&loop, &cfg) < 0) return -1;
    before = rss_kib();
    for (i = 0; i < n; i++)
        if (evl_task_spawn(loop, NULL, sleeper, NULL, NULL) < 0) break;
    *spawned = i;
    while (sleepers_started < *spawned) evl_run_once(loop, 0);
    after = rss_kib();
    evl_loop_close(loop);
    return *spawned ? (double)(after - before) * 1024.0 / (double)*spawned : -1;
}

/* ---- 10a. sleeping tasks at scale: N joinable tasks asleep at once, default evl_config ---- */
static long count_maps(void) {
    char line[512];
    long n = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strchr(line, '\n')) n++;
    fclose(f);
    return n;
}

static long scale_asleep, scale_woken;
static int scale_sleeper(evl_loop *loop, void *arg) {
    int r;
    (void)arg;
    scale_asleep++;
    r = evl_sleep(loop, EVL_SEC(3600));
    scale_woken++;
    return r == -ECANCELED ? 0 : r == 0 ? 1 : r;
}

/* Spawn time: from the first evl_task_spawn until every task has run up to its evl_sleep.
   RSS per task: VmRSS once they all sleep minus VmRSS after evl_loop_new, over N (the handle
   array is allocated and touched before). Free time: evl_task_cancel on each, the loop run
   until all have returned, evl_task_join on each, evl_loop_close. Guards as the default
   evl_config has them (on). */
static int bench_task_scale(long n) {
    evl_loop *loop;
    evl_task **t = (evl_task **)malloc((size_t)n * sizeof *t);
    long i, spawned, rss0, rss1, rss2, maps0, maps1, bad = 0;
    double t0, t_calls, t_spawn, t1, t_cancel, t_run, t_join, t_free;
    int err = 0, r;
    if (!t) return 1;
    memset(t, 0, (size_t)n * sizeof *t);
    if ((err = evl_loop_new(&loop, NULL)) < 0) {
        fprintf(stderr, "micro: evl_loop_new: %s\n", evl_strerror(err));
        return 1;
    }
    rss0 = rss_kib();
    maps0 = count_maps();
    t0 = now_ns();
    for (i = 0; i < n; i++)
        if ((err = evl_task_spawn(loop, &t[i], scale_sleeper, NULL, NULL)) < 0) break;
    spawned = i;
    t_calls = now_ns() - t0;
    while (scale_asleep < spawned) evl_run_once(loop, 0);
    t_spawn = now_ns() - t0;
    rss1 = rss_kib();
    maps1 = count_maps();
    t1 = now_ns();
    for (i = 0; i < spawned; i++) evl_task_cancel(loop, t[i]);
    t_cancel = now_ns() - t1;
    while (scale_woken < spawned) evl_run_once(loop, 0);
    t_run = now_ns() - t1;
    for (i = 0; i < spawned; i++)
        if (evl_task_join(loop, t[i], &r) < 0 || r != 0) bad++;
    t_join = now_ns() - t1;
    evl_loop_close(loop);
    t_free = now_ns() - t1;
    rss2 = rss_kib();
    printf("RESULT scale_spawn %.4f\nRESULT scale_rss %.1f\nRESULT scale_maps %ld\n"
           "RESULT scale_free %.4f\n", t_spawn / 1e9,
           spawned ? (double)(rss1 - rss0) * 1024.0 / (double)spawned : -1.0, maps1,
           t_free / 1e9);
    printf("INFO tasks %ld\nINFO spawn_calls_s %.4f\nINFO maps_before %ld\nINFO cancel_s %.4f\n"
           "INFO cancel_run_s %.4f\nINFO cancel_run_join_s %.4f\nINFO rss_before_kib %ld\n"
           "INFO rss_peak_kib %ld\nINFO rss_after_close_kib %ld\nINFO hwm_kib %ld\n",
           spawned, t_calls / 1e9, maps0, t_cancel / 1e9, t_run / 1e9, t_join / 1e9, rss0, rss1,
           rss2, status_kib("VmHWM"));
    free(t);
    if (spawned < n) {
        fprintf(stderr, "micro: task_scale: spawn %ld of %ld failed: %s\n", spawned + 1, n,
                evl_strerror(err));
        return 1;
    }
    if (bad) {
        fprintf(stderr, "micro: task_scale: %ld tasks did not end as cancelled\n", bad);
        return 1;
    }
    return 0;
}

/* ---- 10b. a burst: N joinable tasks spawned at once from a task, then joined in order ---- */
typedef struct burst {
    long n, bad;
    evl_task **t;
    double spawn_ns, total_ns;
    int err;
} burst;

static int burst_main(evl_loop *loop, void *arg) {
    burst *b = (burst *)arg;
    long i, spawned;
    int r;
    double t0 = now_ns();
    for (i = 0; i < b->n; i++)
        if ((b->err = evl_task_spawn(loop, &b->t[i], short_task, (void *)(intptr_t)1, NULL)) < 0)
            break;
    spawned = i;
    b->spawn_ns = now_ns() - t0;
    for (i = 0; i < spawned; i++)
        if (evl_task_join(loop, b->t[i], &r) < 0 || r != 1) b->bad++;
    b->total_ns = now_ns() - t0;
    b->n = spawned;
    return 0;
}

static int bench_task_burst(long n) {
    evl_loop *loop;
    burst b;
    long want = n;
    memset(&b, 0, sizeof b);
    b.n = n;
    b.t = (evl_task **)malloc((size_t)n * sizeof *b.t);
    if (!b.t || evl_loop_new(&loop, NULL) < 0) return 1;
    memset(b.t, 0, (size_t)n * sizeof *b.t);
    evl_task_spawn(loop, NULL, burst_main, &b, NULL);
    evl_run(loop);
    evl_loop_close(loop);
    free(b.t);
    printf("RESULT task_burst %.4f\nINFO tasks %ld\nINFO spawn_s %.4f\nINFO join_s %.4f\n"
           "INFO hwm_kib %ld\n", b.total_ns / 1e9, b.n, b.spawn_ns / 1e9,
           (b.total_ns - b.spawn_ns) / 1e9, status_kib("VmHWM"));
    if (b.n < want) {
        fprintf(stderr, "micro: task_burst: spawn %ld of %ld failed: %s\n", b.n + 1, want,
                evl_strerror(b.err));
        return 1;
    }
    if (b.bad) {
        fprintf(stderr, "micro: task_burst: %ld joins failed\n", b.bad);
        return 1;
    }
    return 0;
}

/* One workload, one run: what bench/run.py calls, interleaved with the other systems. */
static int run_one(const char *w, long n) {
    if (strcmp(w, "dispatch") == 0) {
        printf("RESULT dispatch %.3f\n", bench_call_soon_chain(n));
    } else if (strcmp(w, "timers") == 0) {
        double a, b, c;
        bench_timers(n, &a, &b, &c);
        printf("RESULT timer_start %.3f\nRESULT timer_stop %.3f\nRESULT timer_fire %.3f\n", a, b, c);
    } else if (strcmp(w, "switch") == 0) {
        printf("RESULT switch %.3f\n", bench_raw_switch(n));
    } else if (strcmp(w, "handoff") == 0) {
        printf("RESULT handoff %.3f\n", bench_handoff(n));
    } else if (strcmp(w, "spawn") == 0) {
        printf("RESULT spawn %.3f\n", bench_spawn_join(n));
    } else if (strcmp(w, "tspost") == 0) {
        printf("RESULT tspost %.3f\n", bench_threadsafe(n / POSTERS));
    } else if (strcmp(w, "mem_tasks") == 0) {
        long spawned = 0;
        double b = bench_mem_tasks(n, &spawned);
        printf("RESULT mem_tasks %.1f\nINFO tasks %ld\n", b, spawned);
        if (spawned < n) return 1;
    } else if (strcmp(w, "task_scale") == 0) {
        return bench_task_scale(n);
    } else if (strcmp(w, "task_burst") == 0) {
        return bench_task_burst(n);
    } else {
        fprintf(stderr, "micro: unknown workload '%s'\n", w);
        return 2;
    }
    return 0;
}

#define ROWS 9
int main(int argc, char **argv) {
    static const char *names[ROWS] = {"call_soon chain", "timer start", "timer stop", "timer fire",
                                      "raw switch (" EVL__CTX_NAME ")", "task hand-off (queue of 1)",
                                      "spawn + join", "thread-safe post (4 threads)", ""};
    double v[ROWS][32];
    int rounds, r, k;
    if (argc > 2) return run_one(argv[1], atol(argv[2]));
    rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (getenv("EVL_BENCH_SCALE")) scale = atoi(getenv("EVL_BENCH_SCALE"));
    if (scale < 1) scale = 1;
    if (rounds < 1 || rounds > 32) rounds = 5;
    for (r = 0; r < rounds; r++) {
        v[0][r] = bench_call_soon_chain(2000000 / scale);
        bench_timers(500000 / scale, &v[1][r], &v[2][r], &v[3][r]);
        v[4][r] = bench_raw_switch(10000000 / scale);
        v[5][r] = bench_handoff(1000000 / scale);
        v[6][r] = bench_spawn_join(500000 / scale);
        v[7][r] = bench_threadsafe(250000 / scale);
    }
    printf("%-34s %10s   (median of %d rounds)\n", "workload", "ns/op", rounds);
    for (k = 0; k < 8; k++) {
        qsort(v[k], (size_t)rounds, sizeof(double), cmp_double);
        printf("%-34s %10.1f\n", names[k], v[k][rounds / 2]);
    }
    return 0;
}
