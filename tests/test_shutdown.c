/* Graceful shutdown and the runner: evl_shutdown (hooks in order, every task cancelled, an
   early end when the tasks finish, close hooks last, evl_run returning; a task that ignores
   cancellation named after the grace period, which bounds the stop; -EALREADY), evl_on_close
   at evl_loop_close, executor work under a shutdown, and evl_main (main's result, detached
   tasks cancelled, SIGTERM as a clean shutdown, the signal dispositions restored). */
#define EVLOOP_IMPLEMENTATION
#include "check.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* ---- helpers ---- */

static void *noop_thread(void *arg) {
    return arg;
}

/* The hang watchdog; one thread created and joined first, so a tool's own helper thread
   (ThreadSanitizer starts one with the first pthread_create) exists before threads are
   counted. */
static void watchdog(void) {
    pthread_t th;
    check_watchdog(20);
    CHECK_OK(pthread_create(&th, NULL, noop_thread, NULL));
    CHECK_OK(pthread_join(th, NULL));
}

static evl_loop *grace_loop_new(evl_time grace, int threads, evl_alloc_fn alloc) {
    evl_config cfg;
    evl_loop *loop = NULL;
    evl_config_init(&cfg);
    cfg.shutdown_grace = grace;
    cfg.executor_threads = threads;
    cfg.alloc = alloc;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    return loop;
}

static evl_time clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Events in the order they happened. */
static struct {
    int seq;
    int hook1, hook2, close1, close2, close_calls;
    int cancelled[8];
    int tasks_done_at_close;
} ord;

static int next_seq(void) {
    return ++ord.seq;
}

/* The fence allocator (see test_executor.c): a freed block becomes PROT_NONE and stays
   mapped, so a use after free faults in every build. */
#define FENCE_HDR 16
static void *fence_alloc(void *ud, void *ptr, size_t size) {
    static size_t page;
    unsigned char *fresh = NULL;
    (void)ud;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    if (size) {
        size_t map = (size + FENCE_HDR + page - 1) / page * page;
        void *base = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (base == MAP_FAILED) return NULL;
        ((size_t *)base)[0] = size;
        ((size_t *)base)[1] = map;
        fresh = (unsigned char *)base + FENCE_HDR;
    }
    if (ptr) {
        unsigned char *base = (unsigned char *)ptr - FENCE_HDR;
        size_t old = ((size_t *)base)[0], map = ((size_t *)base)[1];
        if (fresh) memcpy(fresh, ptr, old < size ? old : size);
        CHECK_OK(mprotect(base, map, PROT_NONE));
    }
    return fresh;
}

/* ---- evl_shutdown: hooks, cancellation, early end, close hooks ---- */

#define SD_TASKS 5

static struct {
    evl_task *tasks[SD_TASKS];
    evl_timer trigger, ticker;
    evl_io io;
    int pipe[2];
    int shutdown_rc, again_rc;
    evl_time t_shutdown, t_close;
    int ticks;
} sd;

static int sd_sleeper(evl_loop *loop, void *arg) {
    int i = (int)(intptr_t)arg, rc;
    /* Sleeps until told to stop; a cancelled sleep returns -ECANCELED at once. */
    while ((rc = evl_sleep(loop, EVL_SEC(100))) == 0) {
    }
    ord.cancelled[i] = next_seq();
    return rc;
}

static void sd_hook1(evl_loop *loop, void *arg) {
    int i;
    CHECK(arg == &sd);
    ord.hook1 = next_seq();
    /* Runs before any task was told: none has seen its cancellation yet. */
    for (i = 0; i < SD_TASKS; i++) CHECK(!evl_task_done(sd.tasks[i]));
    CHECK_EQ(ord.hook2, 0);
    (void)loop;
}

static void sd_hook2(evl_loop *loop, void *arg) {
    (void)loop;
    CHECK(arg == NULL);
    ord.hook2 = next_seq();
}

static void sd_close1(evl_loop *loop, void *arg) {
    int i;
    (void)loop;
    (void)arg;
    ord.close_calls++;
    ord.close1 = next_seq();
    ord.tasks_done_at_close = 1;
    for (i = 0; i < SD_TASKS; i++)
        if (!evl_task_done(sd.tasks[i])) ord.tasks_done_at_close = 0;
}

static void sd_close2(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    ord.close2 = next_seq();
}

static void sd_trigger(evl_loop *loop, void *arg) {
    (void)arg;
    sd.t_shutdown = clock_ns();
    sd.shutdown_rc = evl_shutdown(loop, EVL_SEC(5));
    sd.again_rc = evl_shutdown(loop, EVL_SEC(5));
}

static void sd_tick(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    sd.ticks++;
}

static void sd_io(evl_loop *loop, void *arg, int events) {
    (void)loop;
    (void)arg;
    (void)events;
}

static void shutdown_runs_hooks_cancels_tasks_then_closes(void) {
    evl_loop *loop;
    int i, result;
    watchdog();
    loop = check_loop_new();
    memset(&sd, 0, sizeof sd);
    memset(&ord, 0, sizeof ord);
    for (i = 0; i < SD_TASKS; i++)
        CHECK_OK(evl_task_spawn(loop, &sd.tasks[i], sd_sleeper, (void *)(intptr_t)i, NULL));
    CHECK_OK(evl_on_shutdown(loop, sd_hook1, &sd));
    CHECK_OK(evl_on_shutdown(loop, sd_hook2, NULL));
    CHECK_OK(evl_on_close(loop, sd_close1, NULL));
    CHECK_OK(evl_on_close(loop, sd_close2, NULL));
    /* Other things to wait for, which a shutdown ends as well: a repeating timer and an I/O
       watcher that never fires. */
    evl_timer_init(&sd.ticker, sd_tick, NULL);
    CHECK_OK(evl_timer_start(loop, &sd.ticker, EVL_MSEC(5), EVL_MSEC(5)));
    CHECK_OK(pipe(sd.pipe));
    evl_io_init(&sd.io, sd.pipe[0], sd_io, NULL);
    CHECK_OK(evl_io_start(loop, &sd.io, EVL_READ));
    evl_timer_init(&sd.trigger, sd_trigger, NULL);
    CHECK_OK(evl_timer_start(loop, &sd.trigger, EVL_MSEC(20), 0));
    CHECK_OK(evl_run(loop));
    sd.t_close = clock_ns();
    CHECK_OK(sd.shutdown_rc);
    CHECK_EQ(sd.again_rc, -EALREADY);
    CHECK_EQ(evl_shutdown(loop, EVL_SEC(5)), -EALREADY); /* also once finished */
    /* The tasks finished at once, so the shutdown did not wait for the 5 s grace. */
    CHECK(sd.t_close - sd.t_shutdown < check_scaled(EVL_MSEC(500)));
    /* Order: shutdown hooks (in order), then the cancellations, then close hooks (in order). */
    CHECK(ord.hook1 > 0);
    CHECK(ord.hook2 > ord.hook1);
    for (i = 0; i < SD_TASKS; i++) {
        CHECK(ord.cancelled[i] > ord.hook2);
        CHECK(ord.close1 > ord.cancelled[i]);
        CHECK(evl_task_done(sd.tasks[i]));
        CHECK_OK(evl_task_join(loop, sd.tasks[i], &result));
        CHECK_EQ(result, -ECANCELED);
    }
    CHECK(ord.close2 > ord.close1);
    CHECK_EQ(ord.close_calls, 1);
    CHECK_EQ(ord.tasks_done_at_close, 1);
    CHECK(evl_timer_active(&sd.ticker)); /* stopped the loop, did not stop the handles */
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(ord.close_calls, 1); /* close hooks run once, not again at close */
    close(sd.pipe[0]);
    close(sd.pipe[1]);
}

/* ---- a task that ignores cancellation is named; the grace bounds the stop ---- */

static struct {
    evl_timer trigger;
    evl_time t_shutdown;
    int release, stubborn_sleeps, polite_rc;
    int closed_hook;
} sb;

static int sb_stubborn(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    while (!sb.release) {
        CHECK_OK(evl_sleep(loop, EVL_MSEC(10)));
        sb.stubborn_sleeps++;
    }
    evl_shield_end(loop);
    return 0;
}

static int sb_polite(evl_loop *loop, void *arg) {
    (void)arg;
    sb.polite_rc = evl_sleep(loop, EVL_SEC(100));
    return 0;
}

static void sb_trigger(evl_loop *loop, void *arg) {
    (void)arg;
    sb.t_shutdown = clock_ns();
    CHECK_OK(evl_shutdown(loop, EVL_MSEC(100)));
}

static void sb_close(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    sb.closed_hook++;
}

static void shutdown_names_a_task_that_ignores_cancellation(void) {
    evl_loop *loop;
    evl_task *stubborn, *polite;
    evl_task_opts opts = {"stubborn", 0};
    check_exc_log x;
    evl_time took;
    int result = 1;
    watchdog();
    loop = check_loop_new();
    memset(&sb, 0, sizeof sb);
    memset(&x, 0, sizeof x);
    evl_set_exception_handler(loop, check_exc_record, &x);
    CHECK_OK(evl_task_spawn(loop, &stubborn, sb_stubborn, NULL, &opts));
    CHECK_OK(evl_task_spawn(loop, &polite, sb_polite, NULL, NULL));
    CHECK_OK(evl_on_close(loop, sb_close, NULL));
    evl_timer_init(&sb.trigger, sb_trigger, NULL);
    CHECK_OK(evl_timer_start(loop, &sb.trigger, EVL_MSEC(10), 0));
    CHECK_OK(evl_run(loop));
    took = clock_ns() - sb.t_shutdown;
    CHECK(took >= EVL_MSEC(95));
    CHECK(took <= check_scaled(EVL_MSEC(600)));
    CHECK_EQ(sb.polite_rc, -ECANCELED);
    CHECK(evl_task_done(polite));
    CHECK(!evl_task_done(stubborn));
    CHECK_EQ(sb.closed_hook, 1);
    /* Reported once, by name. */
    CHECK_EQ(x.calls, 1);
    CHECK_EQ(x.error[0], -ETIMEDOUT);
    CHECK(strcmp(x.task[0], "stubborn") == 0);
    CHECK(strstr(x.message[0], "did not finish within the shutdown grace period") != NULL);
    /* The loop is still usable: let the stubborn task end and collect it. */
    sb.release = 1;
    CHECK_OK(evl_run(loop));
    CHECK(evl_task_done(stubborn));
    CHECK_OK(evl_task_join(loop, stubborn, &result));
    CHECK_OK(result);
    CHECK_OK(evl_task_join(loop, polite, &result));
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(sb.closed_hook, 1);
    CHECK_EQ(x.calls, 1);
}

/* ---- no task: a shutdown ends at once ---- */

static void sn_trigger(evl_loop *loop, void *arg) {
    (void)arg;
    *(evl_time *)arg = clock_ns();
    CHECK_OK(evl_shutdown(loop, EVL_SEC(10)));
}

static void sn_tick(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
}

static void shutdown_without_tasks_ends_at_once(void) {
    evl_loop *loop;
    evl_timer trigger, ticker;
    evl_time t0 = 0;
    watchdog();
    loop = check_loop_new();
    evl_timer_init(&ticker, sn_tick, NULL);
    CHECK_OK(evl_timer_start(loop, &ticker, EVL_MSEC(1), EVL_MSEC(1)));
    evl_timer_init(&trigger, sn_trigger, &t0);
    CHECK_OK(evl_timer_start(loop, &trigger, EVL_MSEC(5), 0));
    CHECK_OK(evl_run(loop));
    CHECK(t0 > 0);
    CHECK(clock_ns() - t0 < check_scaled(EVL_MSEC(500)));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- evl_on_close at evl_loop_close, without a shutdown ---- */

static struct {
    int shutdown_hook, order[3], n;
} oc;

static void oc_shutdown(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    oc.shutdown_hook++;
}

static void oc_close(evl_loop *loop, void *arg) {
    (void)loop;
    if (oc.n < 3) oc.order[oc.n] = (int)(intptr_t)arg;
    oc.n++;
}

static void close_hooks_run_at_loop_close(void) {
    evl_loop *loop;
    watchdog();
    loop = check_loop_new();
    memset(&oc, 0, sizeof oc);
    CHECK_EQ(evl_on_close(loop, NULL, NULL), -EINVAL);
    CHECK_EQ(evl_on_shutdown(loop, NULL, NULL), -EINVAL);
    CHECK_OK(evl_on_shutdown(loop, oc_shutdown, NULL));
    CHECK_OK(evl_on_close(loop, oc_close, (void *)(intptr_t)1));
    CHECK_OK(evl_on_close(loop, oc_close, (void *)(intptr_t)2));
    CHECK_OK(evl_on_close(loop, oc_close, (void *)(intptr_t)3));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(oc.n, 0); /* not at the end of evl_run */
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(oc.n, 3);
    CHECK_EQ(oc.order[0], 1);
    CHECK_EQ(oc.order[1], 2);
    CHECK_EQ(oc.order[2], 3);
    CHECK_EQ(oc.shutdown_hook, 0); /* no shutdown happened */
}

/* ---- executor work under a shutdown ---- */

typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    int open, started, finished;
} gate;

static void *gated_job(void *arg) {
    gate *g = (gate *)arg;
    pthread_mutex_lock(&g->m);
    g->started++;
    pthread_cond_broadcast(&g->c);
    while (!g->open) pthread_cond_wait(&g->c, &g->m);
    g->finished++;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
    return arg;
}

static struct {
    gate g;
    int rc;
    evl_time t_shutdown;
    evl_timer trigger;
} sx;

static int sx_task(evl_loop *loop, void *arg) {
    (void)arg;
    sx.rc = evl_executor_run(loop, gated_job, &sx.g, NULL);
    return 0;
}

static void sx_trigger(evl_loop *loop, void *arg) {
    (void)arg;
    pthread_mutex_lock(&sx.g.m);
    while (!sx.g.started) pthread_cond_wait(&sx.g.c, &sx.g.m);
    pthread_mutex_unlock(&sx.g.m);
    sx.t_shutdown = clock_ns();
    CHECK_OK(evl_shutdown(loop, EVL_MSEC(200)));
}

/* A task waits on a job that never ends: the task is cancelled but must not return while the
   job may still write where its arg points, so it waits; the executors get what is left of
   the grace, the job is reported and the loop stops. evl_loop_close then abandons the task,
   reports it, and leaves its stack to the job, which frees it when it ends. */
static void shutdown_with_stuck_executor_job_is_bounded(void) {
    evl_loop *loop;
    check_exc_log x;
    evl_time took;
    int base, i, found = 0;
    watchdog();
    base = check_thread_count();
    loop = grace_loop_new(0, 2, NULL);
    memset(&sx, 0, sizeof sx);
    memset(&x, 0, sizeof x);
    CHECK_OK(pthread_mutex_init(&sx.g.m, NULL));
    CHECK_OK(pthread_cond_init(&sx.g.c, NULL));
    sx.rc = 1;
    evl_set_exception_handler(loop, check_exc_record, &x);
    CHECK_OK(evl_task_spawn(loop, NULL, sx_task, NULL, NULL));
    evl_timer_init(&sx.trigger, sx_trigger, NULL);
    CHECK_OK(evl_timer_start(loop, &sx.trigger, EVL_MSEC(5), 0));
    CHECK_OK(evl_run(loop));
    took = clock_ns() - sx.t_shutdown;
    CHECK_EQ(sx.rc, 1); /* still waiting for its job */
    CHECK(took >= EVL_MSEC(190));
    CHECK(took <= check_scaled(EVL_MSEC(700)));
    for (i = 0; i < x.calls && i < CHECK_EXC_MAX; i++)
        if (x.error[i] == -ETIMEDOUT && strstr(x.message[i], "executor job(s) still running")) found++;
    CHECK_EQ(found, 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(sx.rc, 1); /* abandoned, never resumed */
    for (i = found = 0; i < x.calls && i < CHECK_EXC_MAX; i++)
        if (strstr(x.message[i], "abandoned by evl_loop_close while its executor job")) found++;
    CHECK_EQ(found, 1);
    pthread_mutex_lock(&sx.g.m);
    sx.g.open = 1;
    pthread_cond_broadcast(&sx.g.c);
    pthread_mutex_unlock(&sx.g.m);
    check_wait_threads_back_to(base, 30);
    pthread_mutex_lock(&sx.g.m);
    CHECK_EQ(sx.g.finished, 1);
    pthread_mutex_unlock(&sx.g.m);
    pthread_cond_destroy(&sx.g.c);
    pthread_mutex_destroy(&sx.g.m);
}

/* A shutdown whose grace is spent (0 here) while the default pool has idle workers that
   have not left yet: the pool must not be freed under them. A race, so repeated. */
#ifdef UNDER_TSAN
#define SI_ROUNDS 60 /* thread creation is slow under ThreadSanitizer, which sees the race anyway */
#else
#define SI_ROUNDS 300
#endif
#define SI_ROUNDS_SLOW 20 /* under Valgrind or qemu: thread creation costs 100 times more */
#define SI_THREADS 8

static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int arrived;
} si;

static void *si_job(void *arg) {
    pthread_mutex_lock(&si.m);
    si.arrived++;
    pthread_cond_broadcast(&si.c);
    while (si.arrived < SI_THREADS) pthread_cond_wait(&si.c, &si.m);
    pthread_mutex_unlock(&si.m);
    return arg;
}

static int si_main(evl_loop *loop, void *arg) {
    int i;
    evl_future *f[SI_THREADS];
    (void)arg;
    for (i = 0; i < SI_THREADS; i++) CHECK_OK(evl_executor_submit(loop, si_job, NULL, &f[i]));
    for (i = 0; i < SI_THREADS; i++) {
        CHECK_OK(evl_future_await(loop, f[i], NULL));
        evl_future_free(loop, f[i]);
    }
    CHECK_OK(evl_shutdown(loop, 0));
    return 0;
}

static void shutdown_with_spent_grace_and_idle_workers(void) {
    int base, round;
    watchdog();
    base = check_thread_count();
    CHECK_OK(pthread_mutex_init(&si.m, NULL));
    CHECK_OK(pthread_cond_init(&si.c, NULL));
    for (round = 0; round < check_rounds(SI_ROUNDS, SI_ROUNDS_SLOW); round++) {
        evl_loop *loop = grace_loop_new(0, SI_THREADS, fence_alloc);
        check_exc_log x;
        memset(&x, 0, sizeof x);
        evl_set_exception_handler(loop, check_exc_record, &x);
        si.arrived = 0;
        CHECK_OK(evl_task_spawn(loop, NULL, si_main, NULL, NULL));
        CHECK_OK(evl_run(loop));
        CHECK_EQ(x.calls, 0); /* no job was running: nothing to report */
        CHECK_OK(evl_loop_close(loop));
        check_wait_threads_back_to(base, 30);
    }
    pthread_cond_destroy(&si.c);
    pthread_mutex_destroy(&si.m);
}

/* ---- evl_main ---- */

static int main_returns_arg(evl_loop *loop, void *arg) {
    CHECK(evl_task_current(loop) != NULL);
    CHECK(strcmp(evl_task_name(evl_task_current(loop)), "main") == 0);
    return (int)(intptr_t)arg;
}

/* A signal's disposition now (SIG_DFL, SIG_IGN or a handler). */
static void (*disposition(int signo))(int) {
    struct sigaction sa;
    CHECK_OK(sigaction(signo, NULL, &sa));
    return sa.sa_handler;
}

static void evl_main_returns_mains_result(void) {
    void (*int_before)(int) = disposition(SIGINT), (*term_before)(int) = disposition(SIGTERM);
    evl_time t0;
    watchdog();
    t0 = clock_ns();
    CHECK_EQ(evl_main(NULL, main_returns_arg, (void *)(intptr_t)7), 7);
    CHECK_EQ(evl_main(NULL, main_returns_arg, (void *)(intptr_t)0), 0);
    CHECK_EQ(evl_main(NULL, main_returns_arg, (void *)(intptr_t)-EIO), -EIO);
    CHECK_EQ(evl_main(NULL, NULL, NULL), -EINVAL);
    CHECK(clock_ns() - t0 < check_scaled(EVL_SEC(1)));
    /* The dispositions of SIGINT and SIGTERM are back to what they were (SIG_DFL, or SIG_IGN
       for SIGINT in a process a shell started in the background). */
    CHECK(disposition(SIGINT) == int_before);
    CHECK(disposition(SIGTERM) == term_before);
}

static int detached_cancelled;

static int forever_task(evl_loop *loop, void *arg) {
    int rc;
    (void)arg;
    while ((rc = evl_sleep(loop, EVL_SEC(1))) == 0) {
    }
    if (rc == -ECANCELED) detached_cancelled++;
    return rc;
}

static int main_leaves_tasks(evl_loop *loop, void *arg) {
    int i;
    (void)arg;
    for (i = 0; i < 3; i++) CHECK_OK(evl_task_spawn(loop, NULL, forever_task, NULL, NULL));
    CHECK_OK(evl_sleep(loop, EVL_MSEC(5)));
    return 5;
}

static void evl_main_cancels_detached_tasks(void) {
    evl_time t0, took;
    watchdog();
    detached_cancelled = 0;
    t0 = clock_ns();
    CHECK_EQ(evl_main(NULL, main_leaves_tasks, NULL), 5);
    took = clock_ns() - t0;
    CHECK_EQ(detached_cancelled, 3);
    CHECK(took < check_scaled(EVL_SEC(1))); /* the default grace is 25 s: not waited for */
}

static int main_signals_itself(evl_loop *loop, void *arg) {
    int signo = (int)(intptr_t)arg, rc;
    CHECK_OK(kill(getpid(), signo));
    rc = evl_sleep(loop, EVL_SEC(10));
    CHECK_EQ(rc, -ECANCELED);
    return rc;
}

static void evl_main_signal_is_a_clean_shutdown(void) {
    void (*int_before)(int) = disposition(SIGINT), (*term_before)(int) = disposition(SIGTERM);
    evl_time t0;
    watchdog();
    t0 = clock_ns();
    CHECK_EQ(evl_main(NULL, main_signals_itself, (void *)(intptr_t)SIGTERM), 0);
    CHECK_EQ(evl_main(NULL, main_signals_itself, (void *)(intptr_t)SIGINT), 0);
    CHECK(clock_ns() - t0 < check_scaled(EVL_SEC(1)));
    CHECK(disposition(SIGTERM) == term_before);
    CHECK(disposition(SIGINT) == int_before);
}

static check_exc_log main_exc;
static int main_release;

static int stubborn_forever(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    while (!main_release) CHECK_OK(evl_sleep(loop, EVL_MSEC(10)));
    evl_shield_end(loop);
    return 0;
}

static int main_with_stubborn(evl_loop *loop, void *arg) {
    evl_task_opts opts = {"stubborn-worker", 0};
    (void)arg;
    evl_set_exception_handler(loop, check_exc_record, &main_exc);
    CHECK_OK(evl_task_spawn(loop, NULL, stubborn_forever, NULL, &opts));
    CHECK_OK(evl_sleep(loop, EVL_MSEC(5)));
    return 0;
}

static void evl_main_grace_bounds_a_stubborn_task(void) {
    evl_config cfg;
    evl_time t0, took;
    watchdog();
    memset(&main_exc, 0, sizeof main_exc);
    evl_config_init(&cfg);
    cfg.shutdown_grace = EVL_MSEC(100);
    t0 = clock_ns();
    CHECK_EQ(evl_main(&cfg, main_with_stubborn, NULL), 0);
    took = clock_ns() - t0;
    CHECK(took >= EVL_MSEC(100));
    CHECK(took <= check_scaled(EVL_MSEC(600)));
    /* Named once when the grace ends, and once more when the loop closes and abandons it. */
    CHECK_EQ(main_exc.calls, 2);
    CHECK_EQ(main_exc.error[0], -ETIMEDOUT);
    CHECK(strcmp(main_exc.task[0], "stubborn-worker") == 0);
    CHECK(strstr(main_exc.message[0], "did not finish within the shutdown grace period") != NULL);
    CHECK(strcmp(main_exc.task[1], "stubborn-worker") == 0);
    CHECK(strstr(main_exc.message[1], "abandoned") != NULL);
}

/* evl_main says which backend it runs (at INFO, through the log hook): the one EVLOOP_BACKEND
   chose. */
static char main_log[512];

static void log_capture(int level, const char *message, void *ud) {
    (void)ud;
    if (level == EVL_LOG_INFO && strstr(message, "backend") && !main_log[0])
        snprintf(main_log, sizeof main_log, "%s", message);
}

static void evl_main_uses_the_configured_backend(void) {
    evl_config cfg;
    const char *want = getenv("EVLOOP_BACKEND");
    char expect[64];
    watchdog();
    evl_config_init(&cfg);
    cfg.log = log_capture;
    main_log[0] = 0;
    CHECK_EQ(evl_main(&cfg, main_returns_arg, (void *)(intptr_t)0), 0);
    CHECK(main_log[0] != 0);
    if (want && *want) {
        snprintf(expect, sizeof expect, "backend %s", want);
        CHECK(strstr(main_log, expect) != NULL);
    }
}

static const check_case cases[] = {
    {"shutdown_runs_hooks_cancels_tasks_then_closes", shutdown_runs_hooks_cancels_tasks_then_closes},
    {"shutdown_names_a_task_that_ignores_cancellation", shutdown_names_a_task_that_ignores_cancellation},
    {"shutdown_without_tasks_ends_at_once", shutdown_without_tasks_ends_at_once},
    {"close_hooks_run_at_loop_close", close_hooks_run_at_loop_close},
    {"shutdown_with_stuck_executor_job_is_bounded", shutdown_with_stuck_executor_job_is_bounded},
    {"shutdown_with_spent_grace_and_idle_workers", shutdown_with_spent_grace_and_idle_workers},
    {"evl_main_returns_mains_result", evl_main_returns_mains_result},
    {"evl_main_cancels_detached_tasks", evl_main_cancels_detached_tasks},
    {"evl_main_signal_is_a_clean_shutdown", evl_main_signal_is_a_clean_shutdown},
    {"evl_main_grace_bounds_a_stubborn_task", evl_main_grace_bounds_a_stubborn_task},
    {"evl_main_uses_the_configured_backend", evl_main_uses_the_configured_backend},
};

CHECK_MAIN(cases)
