/* bootstrap.c - the production bootstrap of a hardened asyncio service, ported to evloop.

   Everything a service needs before its first line of business logic, in one evl_main call:
   backend chosen by EVLOOP_BACKEND (else the best), debug mode gated by EVLOOP_DEBUG, a
   slow-callback threshold, an error boundary that logs every failure nobody awaited, an
   executor sized for blocking I/O, and SIGINT/SIGTERM wired to a graceful shutdown that
   cancels the workers and finishes inside the grace period (a second signal exits at once).

   Usage: bootstrap [GRACE_MS]       (default 25000: keep it under the orchestrator's
                                      terminationGracePeriod)
   Environment: EVLOOP_BACKEND, EVLOOP_DEBUG=1, BOOTSTRAP_STUBBORN=1 adds a worker that ignores
   cancellation, to show how the shutdown names it. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4

/* The log pipeline: every library message and ours, with a timestamp, on stderr. */
static void log_line(int level, const char *message, void *ud) {
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char stamp[32];
    time_t now = time(NULL);
    (void)ud;
    strftime(stamp, sizeof stamp, "%H:%M:%S", localtime(&now));
    fprintf(stderr, "%s %s %s\n", stamp, names[level & 3], message);
}

/* The error boundary: every failure that no caller can receive comes here. Keep the default
   handler's line too, as a hardened asyncio service keeps asyncio's. */
static void on_exception(evl_loop *loop, const evl_exception *e, void *ud) {
    (void)ud;
    fprintf(stderr, "loop exception: %s | task=%s | %s\n", e->message,
            e->task_name ? e->task_name : "n/a", evl_strerror(e->error));
    evl_default_exception_handler(loop, e);
}

/* Blocking work leaves the loop thread: a stand-in for a database call or a vendor SDK. */
static void *blocking_lookup(void *arg) {
    struct timespec pause = {0, 5 * 1000000};
    nanosleep(&pause, NULL);
    return arg;
}

static int worker(evl_loop *loop, void *arg) {
    int id = (int)(intptr_t)arg, ticks = 0, err;
    for (;;) {
        void *answer;
        if ((err = evl_sleep(loop, EVL_MSEC(500))) < 0) break;
        if ((err = evl_executor_run(loop, blocking_lookup, (void *)(intptr_t)id, &answer)) < 0) break;
        fprintf(stderr, "worker %d tick %d\n", id, ++ticks);
    }
    fprintf(stderr, "worker %d %s\n", id, err == -ECANCELED ? "cancelled" : evl_strerror(err));
    return err;
}

/* A worker that does not yield to cancellation: the shutdown reports it by name. */
static int stubborn(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    for (;;) evl_sleep(loop, EVL_MSEC(100));
    return 0;
}

static int service(evl_loop *loop, void *arg) {
    evl_group *workers;
    int i, err;
    (void)arg;
    evl_set_exception_handler(loop, on_exception, NULL);
    evl_set_slow_callback(loop, EVL_MSEC(100), NULL, NULL);
    fprintf(stderr, "service up | backend=%s | debug=%s\n", evl_backend_name(loop),
            evl_get_debug(loop) ? "on" : "off");
    if ((err = evl_group_new(loop, &workers)) < 0) return err;
    for (i = 0; i < WORKERS; i++) {
        char name[24];
        evl_task_opts opts = {name, 0};
        snprintf(name, sizeof name, "worker-%d", i);
        evl_group_spawn(loop, workers, worker, (void *)(intptr_t)i, &opts);
    }
    if (getenv("BOOTSTRAP_STUBBORN")) {
        evl_task_opts opts = {"stubborn-worker", 0};
        evl_task_spawn(loop, NULL, stubborn, NULL, &opts);
    }
    /* Runs until the workers fail, or a signal's shutdown cancels us (and them). */
    err = evl_group_wait(loop, workers);
    evl_group_free(loop, workers);
    return err;
}

int main(int argc, char **argv) {
    evl_config cfg;
    int err;
    evl_config_init(&cfg); /* backend and debug from the environment */
    cfg.log = log_line;
    cfg.shutdown_grace = EVL_MSEC(argc > 1 ? atol(argv[1]) : 25000);
    cfg.executor_threads = 16; /* blocking I/O: more threads than cores */
    cfg.executor_queue = 256;  /* bounded: backpressure instead of unbounded memory */
    err = evl_main(&cfg, service, NULL);
    if (err < 0) {
        fprintf(stderr, "service failed: %s\n", evl_strerror(err));
        return 1;
    }
    printf("clean shutdown complete\n");
    return 0;
}
