/* The loop itself: the ready deque, the drain rule, run/stop, backend choice, errors. */
#define EVLOOP_IMPLEMENTATION
#include "check.h"
#include <time.h>
#include <unistd.h>

/* Records the order callbacks ran in. */
typedef struct order_log {
    int seen[512];
    int len;
} order_log;

typedef struct fifo_item {
    order_log *log;
    int value;
} fifo_item;

static void fifo_cb(evl_loop *loop, void *arg) {
    fifo_item *it = (fifo_item *)arg;
    (void)loop;
    it->log->seen[it->log->len++] = it->value;
}

static void call_soon_is_fifo(void) {
    evl_loop *loop = check_loop_new();
    order_log log;
    fifo_item items[50];
    int i;
    memset(&log, 0, sizeof log);
    for (i = 0; i < 50; i++) {
        items[i].log = &log;
        items[i].value = i;
        CHECK_OK(evl_call_soon(loop, fifo_cb, &items[i]));
    }
    CHECK_OK(evl_run(loop));
    CHECK_EQ(log.len, 50);
    for (i = 0; i < 50; i++) CHECK_EQ(log.seen[i], i);
    CHECK_OK(evl_loop_close(loop));
}

/* The 30th of 60 queued callbacks queues 200 more: the ring (64 slots) is then wrapped around
   and must grow mid-drain. The drain still runs exactly the first 60, then the 200 follow in
   order in the next iteration. */
static fifo_item grow_items[260];

static void grow_fifo_cb(evl_loop *loop, void *arg) {
    fifo_item *it = (fifo_item *)arg;
    int i;
    fifo_cb(loop, arg);
    if (it->value != 29) return;
    for (i = 60; i < 260; i++) CHECK_OK(evl_call_soon(loop, fifo_cb, &grow_items[i]));
}

static void ring_grows_while_wrapped(void) {
    evl_loop *loop = check_loop_new();
    order_log log;
    int i;
    memset(&log, 0, sizeof log);
    for (i = 0; i < 260; i++) {
        grow_items[i].log = &log;
        grow_items[i].value = i;
    }
    for (i = 0; i < 60; i++) CHECK_OK(evl_call_soon(loop, grow_fifo_cb, &grow_items[i]));
    CHECK_EQ(evl_run_once(loop, 0), 60);
    CHECK_EQ(log.len, 60);
    CHECK_EQ(evl_run_once(loop, 0), 200);
    CHECK_EQ(log.len, 260);
    for (i = 0; i < 260; i++) CHECK_EQ(log.seen[i], i);
    CHECK_OK(evl_loop_close(loop));
}

/* A chain of callbacks where each records its index and the loop's iteration; a callback
   queued during a drain must run in the next iteration, not the current one. */
typedef struct drain_state {
    int ran;
    int requeue_left;
} drain_state;

static void requeue_cb(evl_loop *loop, void *arg) {
    drain_state *d = (drain_state *)arg;
    d->ran++;
    if (d->requeue_left-- > 0) CHECK_OK(evl_call_soon(loop, requeue_cb, d));
}

static void added_during_drain_runs_next_iteration(void) {
    evl_loop *loop = check_loop_new();
    drain_state d = {0, 5};
    CHECK_OK(evl_call_soon(loop, requeue_cb, &d));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(d.ran, 1);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(d.ran, 2);
    CHECK_OK(evl_run(loop));
    CHECK_EQ(d.ran, 6);
    CHECK_OK(evl_loop_close(loop));
}

static void count_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (*(int *)arg)++;
}

static void run_returns_when_nothing_is_left(void) {
    evl_loop *loop = check_loop_new();
    int n = 0;
    CHECK_OK(evl_run(loop)); /* nothing at all */
    CHECK_OK(evl_call_soon(loop, count_cb, &n));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(n, 1);
    CHECK_OK(evl_loop_close(loop));
}

static void stop_cb(evl_loop *loop, void *arg) {
    (*(int *)arg)++;
    evl_stop(loop);
}

static void forever_cb(evl_loop *loop, void *arg) {
    (*(int *)arg)++;
    CHECK_OK(evl_call_soon(loop, forever_cb, arg));
}

static void stop_from_callback_ends_run_after_the_iteration(void) {
    evl_loop *loop = check_loop_new();
    int spins = 0, stops = 0;
    CHECK_OK(evl_call_soon(loop, forever_cb, &spins));
    CHECK_OK(evl_call_soon(loop, stop_cb, &stops));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(stops, 1);
    CHECK_EQ(spins, 1);
    /* The loop is usable again: the pending forever_cb runs on the next run. */
    CHECK_OK(evl_call_soon(loop, stop_cb, &stops));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(spins, 2);
    CHECK_EQ(stops, 2);
    CHECK_OK(evl_loop_close(loop));
}

static void stop_before_run_runs_one_iteration(void) {
    evl_loop *loop = check_loop_new();
    int n = 0;
    CHECK_OK(evl_call_soon(loop, forever_cb, &n));
    evl_stop(loop);
    CHECK_OK(evl_run(loop));
    CHECK_EQ(n, 1);
    CHECK_OK(evl_loop_close(loop));
}

static void nested_run_cb(evl_loop *loop, void *arg) {
    int *res = (int *)arg;
    res[0] = evl_run(loop);
    res[1] = evl_run_once(loop, 0);
    res[2] = evl_loop_close(loop);
}

static void reentrant_calls_are_refused(void) {
    evl_loop *loop = check_loop_new();
    int res[3] = {1, 1, 1};
    CHECK_OK(evl_call_soon(loop, nested_run_cb, res));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(res[0], -EBUSY);
    CHECK_EQ(res[1], -EBUSY);
    CHECK_EQ(res[2], -EDEADLK);
    CHECK_OK(evl_loop_close(loop));
}

static void bad_arguments_return_errors(void) {
    evl_loop *loop = check_loop_new();
    evl_config cfg;
    evl_loop *other = (evl_loop *)&cfg;
    int n = 0;
    CHECK_EQ(evl_call_soon(loop, NULL, NULL), -EINVAL);
    CHECK_EQ(evl_call_soon_threadsafe(loop, NULL, NULL), -EINVAL);
    CHECK_EQ(evl_loop_new(NULL, NULL), -EINVAL);
    evl_config_init(&cfg);
    cfg.backend = (evl_backend)42;
    CHECK_EQ(evl_loop_new(&other, &cfg), -EINVAL);
    CHECK(other == NULL);
    /* The loop still works. */
    CHECK_OK(evl_call_soon(loop, count_cb, &n));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(n, 1);
    CHECK_OK(evl_loop_close(loop));
}

static void backend_choice_honours_config_and_environment(void) {
    evl_config cfg;
    evl_loop *loop;
    const char *env = getenv("EVLOOP_BACKEND");
    loop = check_loop_new();
    if (env && *env) CHECK(strcmp(evl_backend_name(loop), env) == 0);
    CHECK_OK(evl_loop_close(loop));
    evl_config_init(&cfg);
    cfg.backend = EVL_BACKEND_POLL;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK(strcmp(evl_backend_name(loop), "poll") == 0);
    CHECK_OK(evl_loop_close(loop));
    cfg.backend = EVL_BACKEND_SELECT;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK(strcmp(evl_backend_name(loop), "select") == 0);
    CHECK_OK(evl_loop_close(loop));
#if defined(__linux__)
    /* An unavailable choice is an error, never a silent fallback. */
    cfg.backend = EVL_BACKEND_KQUEUE;
    loop = NULL;
    CHECK_EQ(evl_loop_new(&loop, &cfg), -ENOSYS);
    CHECK(loop == NULL);
    cfg.backend = EVL_BACKEND_AUTO;
    CHECK_OK(setenv("EVLOOP_BACKEND", "kqueue", 1));
    CHECK_EQ(evl_loop_new(&loop, &cfg), -ENOSYS);
    CHECK_OK(setenv("EVLOOP_BACKEND", "bogus", 1));
    CHECK_EQ(evl_loop_new(&loop, &cfg), -EINVAL);
    CHECK_OK(setenv("EVLOOP_BACKEND", "", 1));
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK(strcmp(evl_backend_name(loop), "epoll") == 0);
    CHECK_OK(evl_loop_close(loop));
#endif
}

static void strerror_names_codes(void) {
    CHECK(strcmp(evl_strerror(0), "success") == 0);
    CHECK(strcmp(evl_strerror(-EINVAL), "invalid argument") == 0);
    CHECK(strcmp(evl_strerror(-ECANCELED), "operation canceled") == 0);
    CHECK(strcmp(evl_strerror(-ETIMEDOUT), "timed out") == 0);
    CHECK(strcmp(evl_strerror(-12345), "unknown error") == 0);
    CHECK(strcmp(evl_strerror(7), "unknown error") == 0);
}

/* A counting allocator that fails on demand. */
typedef struct counting_alloc {
    long live, calls, fail_after;
} counting_alloc;

static void *counting_alloc_fn(void *ud, void *ptr, size_t size) {
    counting_alloc *a = (counting_alloc *)ud;
    if (size == 0) {
        if (ptr) a->live--;
        free(ptr);
        return NULL;
    }
    if (a->fail_after >= 0 && a->calls++ >= a->fail_after) return NULL;
    if (!ptr) a->live++;
    return realloc(ptr, size);
}

static void allocator_hook_sees_everything(void) {
    counting_alloc a = {0, 0, -1};
    evl_config cfg;
    evl_loop *loop;
    int n = 0, i;
    evl_config_init(&cfg);
    cfg.alloc = counting_alloc_fn;
    cfg.alloc_ud = &a;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK(a.live > 0);
    for (i = 0; i < 1000; i++) CHECK_OK(evl_call_soon(loop, count_cb, &n));
    CHECK_OK(evl_call_soon_threadsafe(loop, count_cb, &n));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(n, 1001);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(a.live, 0);
}

static void allocation_failure_is_reported_and_harmless(void) {
    counting_alloc a = {0, 0, -1};
    evl_config cfg;
    evl_loop *loop = NULL;
    int n = 0, i, fails = 0, limit;
    evl_config_init(&cfg);
    cfg.alloc = counting_alloc_fn;
    cfg.alloc_ud = &a;
    /* Creating a loop fails cleanly at every allocation it makes. */
    for (limit = 0; limit < 20; limit++) {
        a.calls = 0;
        a.fail_after = limit;
        if (evl_loop_new(&loop, &cfg) == 0) break;
        CHECK(loop == NULL);
        CHECK_EQ(a.live, 0);
    }
    CHECK(loop != NULL);
    /* Queueing fails with -ENOMEM once the ring must grow; what was queued still runs. */
    a.calls = 0;
    a.fail_after = 0;
    for (i = 0; i < 200; i++)
        if (evl_call_soon(loop, count_cb, &n) == -ENOMEM) fails++;
    CHECK(fails > 0);
    a.fail_after = -1;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(n, 200 - fails);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(a.live, 0);
}

static void now_advances_and_is_monotonic(void) {
    evl_loop *loop = check_loop_new();
    evl_time a = evl_now(loop), b;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    CHECK_EQ(evl_run_once(loop, 0), 0);
    b = evl_now(loop);
    CHECK(b >= a + EVL_MSEC(2));
    CHECK_EQ(EVL_SEC(1), 1000000000LL);
    CHECK_EQ(EVL_MSEC(1), 1000000LL);
    CHECK_EQ(EVL_USEC(1), 1000LL);
    CHECK_OK(evl_loop_close(loop));
}

static void run_once_blocks_at_most_max_wait(void) {
    evl_loop *loop = check_loop_new();
    struct timespec t0, t1;
    long long ms;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(30)), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000LL + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 29);
    CHECK(ms < 2000);
    CHECK_OK(evl_loop_close(loop));
}

/* A stop asked for inside evl_run_once ends with that iteration: the next evl_run_once waits
   again, and on the virtual clock time moves and timers fire (found by the fuzzer: the request
   used to stay set until some evl_run consumed it). */
static void stop_inside_run_once_ends_with_it(void) {
    evl_config cfg;
    evl_loop *loop = check_loop_new();
    evl_timer t;
    struct timespec t0, t1;
    long long ms;
    int fired = 0, stops = 0;
    CHECK_OK(evl_call_soon(loop, stop_cb, &stops));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(30)), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000LL + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 29);
    CHECK_OK(evl_loop_close(loop));

    evl_config_init(&cfg);
    cfg.clock = EVL_CLOCK_VIRTUAL;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    evl_stop(loop); /* outside any run: the next run_once is the one it ends */
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_OK(evl_call_soon(loop, stop_cb, &stops));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(stops, 2);
    evl_timer_init(&t, count_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(10), 0));
    CHECK_EQ(evl_run_once(loop, -1), 1);
    CHECK_EQ(fired, 1);
    CHECK(evl_now(loop) >= EVL_MSEC(10));
    CHECK_OK(evl_loop_close(loop));
}

static void debug_flag_follows_config_and_environment(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_config_init(&cfg);
    CHECK_EQ(cfg.debug, EVL_DEBUG_FROM_ENV);
    CHECK_OK(setenv("EVLOOP_DEBUG", "1", 1));
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_EQ(evl_get_debug(loop), 1);
    evl_set_debug(loop, 0);
    CHECK_EQ(evl_get_debug(loop), 0);
    CHECK_OK(evl_loop_close(loop));
    cfg.debug = EVL_DEBUG_OFF;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_EQ(evl_get_debug(loop), 0);
    CHECK_OK(evl_loop_close(loop));
    memset(&cfg, 0, sizeof cfg); /* zero is the default: from the environment */
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_EQ(evl_get_debug(loop), 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK_OK(unsetenv("EVLOOP_DEBUG"));
    CHECK_OK(evl_loop_new(&loop, NULL));
    CHECK_EQ(evl_get_debug(loop), 0);
    CHECK_OK(evl_loop_close(loop));
}

static const check_case cases[] = {
    {"call_soon_is_fifo", call_soon_is_fifo},
    {"ring_grows_while_wrapped", ring_grows_while_wrapped},
    {"added_during_drain_runs_next_iteration", added_during_drain_runs_next_iteration},
    {"run_returns_when_nothing_is_left", run_returns_when_nothing_is_left},
    {"stop_from_callback_ends_run_after_the_iteration", stop_from_callback_ends_run_after_the_iteration},
    {"stop_before_run_runs_one_iteration", stop_before_run_runs_one_iteration},
    {"reentrant_calls_are_refused", reentrant_calls_are_refused},
    {"bad_arguments_return_errors", bad_arguments_return_errors},
    {"backend_choice_honours_config_and_environment", backend_choice_honours_config_and_environment},
    {"strerror_names_codes", strerror_names_codes},
    {"allocator_hook_sees_everything", allocator_hook_sees_everything},
    {"allocation_failure_is_reported_and_harmless", allocation_failure_is_reported_and_harmless},
    {"now_advances_and_is_monotonic", now_advances_and_is_monotonic},
    {"run_once_blocks_at_most_max_wait", run_once_blocks_at_most_max_wait},
    {"stop_inside_run_once_ends_with_it", stop_inside_run_once_ends_with_it},
    {"debug_flag_follows_config_and_environment", debug_flag_follows_config_and_environment},
};
CHECK_MAIN(cases)
