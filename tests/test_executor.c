/* The executor: evl_executor_run / _submit on the default pool and on pools made with
   evl_executor_new, the bounded queue and its backpressure, cancellation of queued and running
   jobs, deadlines, evl_executor_shutdown with a job that never ends, the loop gauges, bad
   input, and evl_loop_close with jobs still running.

   Jobs that must block wait on a `gate` (a mutex and condition variable) that the test opens
   itself, always before the case ends, so no thread outlives its case by accident. Where a
   case is about memory that the loop may free while something still points at it, the loop
   gets the `fence` allocator below: every block has pages of its own, and a freed block
   becomes PROT_NONE and stays mapped, so a use after free is a SIGSEGV in every build, not
   only under AddressSanitizer. Every case must also be clean under ThreadSanitizer. */
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

/* Arms the hang watchdog, and creates and joins one thread: a tool that starts a helper
   thread of its own with the first pthread_create (ThreadSanitizer) has it running before a
   case counts the process's threads. */
static void watchdog(void) {
    pthread_t th;
    check_watchdog(20);
    CHECK_OK(pthread_create(&th, NULL, noop_thread, NULL));
    CHECK_OK(pthread_join(th, NULL));
}

/* A loop on the harness's backend (AUTO: EVLOOP_BACKEND decides) with the given executor
   size, grace and allocator (0 / NULL: the defaults). */
static evl_loop *xloop_new(int threads, int queue, evl_time grace, evl_alloc_fn alloc) {
    evl_config cfg;
    evl_loop *loop = NULL;
    watchdog();
    evl_config_init(&cfg);
    cfg.executor_threads = threads;
    cfg.executor_queue = queue;
    cfg.shutdown_grace = grace;
    cfg.alloc = alloc;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    return loop;
}

static evl_time clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(evl_time ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int get_int(const int *p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

/* A gate: jobs that wait on it block their worker until the test opens it. */
typedef struct gate {
    pthread_mutex_t m;
    pthread_cond_t c;
    int open, started, finished;
} gate;

static void gate_init(gate *g) {
    memset(g, 0, sizeof *g);
    CHECK_OK(pthread_mutex_init(&g->m, NULL));
    CHECK_OK(pthread_cond_init(&g->c, NULL));
}

static void gate_destroy(gate *g) {
    pthread_cond_destroy(&g->c);
    pthread_mutex_destroy(&g->m);
}

static void gate_open(gate *g) {
    pthread_mutex_lock(&g->m);
    g->open = 1;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
}

static int gate_started(gate *g) {
    int n;
    pthread_mutex_lock(&g->m);
    n = g->started;
    pthread_mutex_unlock(&g->m);
    return n;
}

static int gate_finished(gate *g) {
    int n;
    pthread_mutex_lock(&g->m);
    n = g->finished;
    pthread_mutex_unlock(&g->m);
    return n;
}

/* Blocks the calling thread (the loop's, in a callback) until n jobs have started. */
static void gate_wait_started(gate *g, int n) {
    pthread_mutex_lock(&g->m);
    while (g->started < n) pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

static void gate_wait_finished(gate *g, int n) {
    pthread_mutex_lock(&g->m);
    while (g->finished < n) pthread_cond_wait(&g->c, &g->m);
    pthread_mutex_unlock(&g->m);
}

#define GATED_RESULT ((void *)(uintptr_t)0x5eed)

/* A job that blocks until its gate opens. */
static void *gated_job(void *arg) {
    gate *g = (gate *)arg;
    pthread_mutex_lock(&g->m);
    g->started++;
    pthread_cond_broadcast(&g->c);
    while (!g->open) pthread_cond_wait(&g->c, &g->m);
    g->finished++;
    pthread_cond_broadcast(&g->c);
    pthread_mutex_unlock(&g->m);
    return GATED_RESULT;
}

/* A job that records that it ran. */
static void *flag_job(void *arg) {
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
    return arg;
}

/* arg * 2 + 1. */
static void *calc_job(void *arg) {
    return (void *)((uintptr_t)arg * 2 + 1);
}

/* Opens a gate from another thread after a delay. */
typedef struct opener {
    gate *g;
    evl_time delay;
    pthread_t th;
} opener;

static void *opener_main(void *arg) {
    opener *o = (opener *)arg;
    sleep_ns(o->delay);
    gate_open(o->g);
    return NULL;
}

static void opener_start(opener *o, gate *g, evl_time delay) {
    o->g = g;
    o->delay = delay;
    CHECK_OK(pthread_create(&o->th, NULL, opener_main, o));
}

static void opener_join(opener *o) {
    CHECK_OK(pthread_join(o->th, NULL));
}

/* What the exception handler saw. */
typedef struct exc_log {
    int calls;
    int error;
    char message[256];
} exc_log;

static void exc_record(evl_loop *loop, const evl_exception *e, void *ud) {
    exc_log *x = (exc_log *)ud;
    (void)loop;
    x->calls++;
    x->error = e->error;
    snprintf(x->message, sizeof x->message, "%s", e->message ? e->message : "");
}

/* The fence allocator: each block on pages of its own; a freed block is made PROT_NONE and
   left mapped, so any later access faults. Thread-safe (mmap and mprotect are). */
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

/* ---- 1 000 tasks x 100 jobs through a queue of 16 and 4 threads ---- */

#define MANY_TASKS 1000
#define JOBS_PER_TASK 100
#define MANY_THREADS 4
#define MANY_QUEUE 16

static struct {
    int running, running_max;      /* atomics: jobs running now, and the most at once */
    pthread_mutex_t lock;          /* guards the thread list */
    pthread_t threads[64];
    int nthreads;
    long jobs_ok;                  /* loop thread */
    int tasks_done;                /* loop thread */
    size_t busy_max, queue_max;    /* sampled gauges */
    int threads_base, threads_extra_max;
    evl_timer sampler;
} many;

static void *counted_job(void *arg) {
    int now = __atomic_add_fetch(&many.running, 1, __ATOMIC_SEQ_CST);
    int max = __atomic_load_n(&many.running_max, __ATOMIC_SEQ_CST);
    pthread_t self = pthread_self();
    volatile unsigned spin = 0;
    int i, known = 0;
    while (now > max && !__atomic_compare_exchange_n(&many.running_max, &max, now, 0,
                                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    pthread_mutex_lock(&many.lock);
    for (i = 0; i < many.nthreads; i++)
        if (pthread_equal(many.threads[i], self)) known = 1;
    if (!known && many.nthreads < 64) many.threads[many.nthreads++] = self;
    pthread_mutex_unlock(&many.lock);
    while (spin < 200) spin++; /* a little work, so that jobs overlap; no sleeping */
    __atomic_sub_fetch(&many.running, 1, __ATOMIC_SEQ_CST);
    return calc_job(arg);
}

static void many_sample(evl_loop *loop, void *arg) {
    evl_stats st;
    int extra;
    (void)arg;
    evl_loop_stats(loop, &st);
    if (st.executor_busy > many.busy_max) many.busy_max = st.executor_busy;
    if (st.executor_queue > many.queue_max) many.queue_max = st.executor_queue;
    extra = check_thread_count() - many.threads_base;
    if (extra > many.threads_extra_max) many.threads_extra_max = extra;
}

static int many_task(evl_loop *loop, void *arg) {
    uintptr_t id = (uintptr_t)arg;
    int k;
    for (k = 0; k < JOBS_PER_TASK; k++) {
        uintptr_t in = id * JOBS_PER_TASK + (uintptr_t)k;
        void *out = NULL;
        CHECK_OK(evl_executor_run(loop, counted_job, (void *)in, &out));
        CHECK_EQ((uintptr_t)out, in * 2 + 1);
        many.jobs_ok++;
    }
    if (++many.tasks_done == MANY_TASKS) evl_timer_stop(loop, &many.sampler);
    return 0;
}

static void thousand_tasks_hundred_jobs_each(void) {
    evl_loop *loop = xloop_new(MANY_THREADS, MANY_QUEUE, 0, NULL);
    uintptr_t i;
    evl_stats st;
    /* About 1 s natively; ThreadSanitizer makes each of the 100 000 round trips far slower. */
    alarm((unsigned)(60 * check_time_scale()));
    memset(&many, 0, sizeof many);
    CHECK_OK(pthread_mutex_init(&many.lock, NULL));
    many.threads_base = check_thread_count();
    for (i = 0; i < MANY_TASKS; i++) CHECK_OK(evl_task_spawn(loop, NULL, many_task, (void *)i, NULL));
    evl_timer_init(&many.sampler, many_sample, NULL);
    CHECK_OK(evl_timer_start(loop, &many.sampler, EVL_MSEC(1), EVL_MSEC(1)));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(many.tasks_done, MANY_TASKS);
    CHECK_EQ(many.jobs_ok, (long)MANY_TASKS * JOBS_PER_TASK);
    /* Never more than 4 at once, by every measure: jobs running together, distinct worker
       threads, the busy gauge, and the threads that exist. */
    CHECK(get_int(&many.running_max) >= 1);
    CHECK(get_int(&many.running_max) <= MANY_THREADS);
    CHECK(many.nthreads >= 1);
    CHECK(many.nthreads <= MANY_THREADS);
    CHECK(many.busy_max <= MANY_THREADS);
    CHECK(many.queue_max <= MANY_QUEUE);
    CHECK(many.threads_extra_max <= MANY_THREADS);
    CHECK(check_thread_count() - many.threads_base <= MANY_THREADS);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    CHECK_OK(evl_loop_close(loop));
    check_wait_threads_back_to(many.threads_base, 30);
    pthread_mutex_destroy(&many.lock);
}

/* ---- evl_executor_submit from a callback; a full queue says -EAGAIN ---- */

static struct {
    gate g;
    evl_future *fa, *fb, *fc;
    int full_rc1, full_rc2;
    evl_future *full_out;
    size_t queue_gauge, busy_gauge;
    int timer_fired, done_cbs;
    evl_timer tick;
} sub;

static void sub_done(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    sub.done_cbs++;
}

static void sub_tick(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    /* The loop keeps working while the pool is full and its worker blocked. */
    sub.timer_fired++;
    CHECK(!evl_future_done(sub.fa));
    CHECK(!evl_future_done(sub.fb));
    gate_open(&sub.g);
}

static void sub_submit(evl_loop *loop, void *arg) {
    evl_stats st;
    (void)arg;
    CHECK_OK(evl_executor_submit(loop, gated_job, &sub.g, &sub.fa));
    CHECK(sub.fa != NULL);
    gate_wait_started(&sub.g, 1); /* the one worker is now busy */
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)10, &sub.fb));
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)20, &sub.fc));
    sub.full_out = (evl_future *)&sub; /* must come back NULL */
    sub.full_rc1 = evl_executor_submit(loop, calc_job, (void *)(uintptr_t)30, &sub.full_out);
    sub.full_rc2 = evl_executor_submit(loop, calc_job, (void *)(uintptr_t)40, &sub.full_out);
    evl_loop_stats(loop, &st);
    sub.queue_gauge = st.executor_queue;
    sub.busy_gauge = st.executor_busy;
    CHECK_OK(evl_future_on_done(loop, sub.fa, sub_done, NULL));
    CHECK_OK(evl_future_on_done(loop, sub.fb, sub_done, NULL));
    CHECK_OK(evl_future_on_done(loop, sub.fc, sub_done, NULL));
    evl_timer_init(&sub.tick, sub_tick, NULL);
    CHECK_OK(evl_timer_start(loop, &sub.tick, EVL_MSEC(20), 0));
}

static void submit_from_callback_and_full_queue(void) {
    evl_loop *loop = xloop_new(1, 2, 0, NULL);
    void *v = NULL;
    evl_future *f;
    memset(&sub, 0, sizeof sub);
    gate_init(&sub.g);
    CHECK_OK(evl_call_soon(loop, sub_submit, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(sub.full_rc1, -EAGAIN);
    CHECK_EQ(sub.full_rc2, -EAGAIN);
    CHECK(sub.full_out == NULL);
    CHECK_EQ(sub.queue_gauge, 2);
    CHECK_EQ(sub.busy_gauge, 1);
    CHECK_EQ(sub.timer_fired, 1);
    CHECK_EQ(sub.done_cbs, 3);
    CHECK(evl_future_done(sub.fa) && evl_future_done(sub.fb) && evl_future_done(sub.fc));
    CHECK_OK(evl_future_await(loop, sub.fa, &v));
    CHECK(v == GATED_RESULT);
    CHECK_OK(evl_future_await(loop, sub.fb, &v));
    CHECK_EQ((uintptr_t)v, 21);
    CHECK_OK(evl_future_await(loop, sub.fc, &v));
    CHECK_EQ((uintptr_t)v, 41);
    evl_future_free(loop, sub.fa);
    evl_future_free(loop, sub.fb);
    evl_future_free(loop, sub.fc);
    /* Room again: a submit succeeds. */
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)50, &f));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_future_await(loop, f, &v));
    CHECK_EQ((uintptr_t)v, 101);
    evl_future_free(loop, f);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&sub.g);
}

/* ---- a queued job that is cancelled never runs ---- */

static struct {
    gate g;
    int ran_future, ran_freed, ran_task, ran_deadline, ran_cancelled_before;
    int task_rc, deadline_rc, cancelled_before_rc;
    evl_time deadline_took;
    evl_task *victim;
    evl_timer cancel_timer, open_timer;
    evl_future *last;
} cq;

static int cq_victim(evl_loop *loop, void *arg) {
    void *out = (void *)(uintptr_t)1;
    (void)arg;
    cq.task_rc = evl_executor_run(loop, flag_job, &cq.ran_task, &out);
    CHECK(out == (void *)(uintptr_t)1); /* nothing delivered */
    return 0;
}

static int cq_deadline(evl_loop *loop, void *arg) {
    evl_time t0 = evl_now(loop), old = evl_deadline(loop, t0 + EVL_MSEC(30));
    (void)arg;
    cq.deadline_rc = evl_executor_run(loop, flag_job, &cq.ran_deadline, NULL);
    evl_now_update(loop);
    cq.deadline_took = evl_now(loop) - t0;
    evl_deadline_restore(loop, old);
    return 0;
}

static int cq_already_cancelled(evl_loop *loop, void *arg) {
    (void)arg;
    CHECK_OK(evl_task_cancel(loop, evl_task_current(loop)));
    cq.cancelled_before_rc = evl_executor_run(loop, flag_job, &cq.ran_cancelled_before, NULL);
    return 0;
}

static void cq_cancel(evl_loop *loop, void *arg) {
    (void)arg;
    CHECK_OK(evl_task_cancel(loop, cq.victim));
}

static void cq_open(evl_loop *loop, void *arg) {
    (void)arg;
    CHECK(evl_task_done(cq.victim));
    gate_open(&cq.g);
    /* The queue still works after the cancellations. */
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)3, &cq.last));
}

static void cancelled_queued_jobs_never_run(void) {
    evl_loop *loop = xloop_new(1, 8, 0, NULL);
    evl_future *blocker, *fa, *fb;
    void *v = (void *)(uintptr_t)1;
    evl_stats st;
    memset(&cq, 0, sizeof cq);
    gate_init(&cq.g);
    CHECK_OK(evl_executor_submit(loop, gated_job, &cq.g, &blocker));
    gate_wait_started(&cq.g, 1);
    /* A queued job whose future is cancelled: the future says -ECANCELED at once. */
    CHECK_OK(evl_executor_submit(loop, flag_job, &cq.ran_future, &fa));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 1);
    CHECK_OK(evl_future_cancel(loop, fa));
    CHECK(evl_future_done(fa));
    CHECK_EQ(evl_future_await(loop, fa, &v), -ECANCELED);
    CHECK_EQ(evl_future_cancel(loop, fa), -EALREADY);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 0);
    evl_future_free(loop, fa);
    /* A queued job whose future is freed. */
    CHECK_OK(evl_executor_submit(loop, flag_job, &cq.ran_freed, &fb));
    evl_future_free(loop, fb);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 0);
    /* A task cancelled while its job waits behind the blocker; one whose deadline passes
       there; one already cancelled when it asks. */
    CHECK_OK(evl_task_spawn(loop, &cq.victim, cq_victim, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cq_deadline, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cq_already_cancelled, NULL, NULL));
    evl_timer_init(&cq.cancel_timer, cq_cancel, NULL);
    CHECK_OK(evl_timer_start(loop, &cq.cancel_timer, EVL_MSEC(10), 0));
    evl_timer_init(&cq.open_timer, cq_open, NULL);
    CHECK_OK(evl_timer_start(loop, &cq.open_timer, EVL_MSEC(60), 0));
    CHECK_OK(evl_run(loop));
    /* Everything drained: the blocker and the last job ran, nothing cancelled did. */
    CHECK(evl_future_done(blocker));
    CHECK_OK(evl_future_await(loop, blocker, &v));
    CHECK(v == GATED_RESULT);
    CHECK(cq.last != NULL);
    CHECK(evl_future_done(cq.last));
    CHECK_OK(evl_future_await(loop, cq.last, &v));
    CHECK_EQ((uintptr_t)v, 7);
    CHECK_EQ(cq.task_rc, -ECANCELED);
    CHECK_EQ(cq.deadline_rc, -ETIMEDOUT);
    CHECK(cq.deadline_took >= EVL_MSEC(29));
    CHECK(cq.deadline_took < check_scaled(EVL_MSEC(500)));
    CHECK_EQ(cq.cancelled_before_rc, -ECANCELED);
    CHECK_EQ(get_int(&cq.ran_future), 0);
    CHECK_EQ(get_int(&cq.ran_freed), 0);
    CHECK_EQ(get_int(&cq.ran_task), 0);
    CHECK_EQ(get_int(&cq.ran_deadline), 0);
    CHECK_EQ(get_int(&cq.ran_cancelled_before), 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    evl_future_free(loop, blocker);
    evl_future_free(loop, cq.last);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&cq.g);
}

/* ---- a running job whose task (or future) is cancelled: the waiter waits for it ---- */

static struct {
    gate g, g2;
    opener o, o2;
    evl_task *victim;
    int rc;
    void *out;
    int finished_when_returned, future_done_while_running, cancel_rc;
    evl_future *f;
} cr;

static int cr_victim(evl_loop *loop, void *arg) {
    (void)arg;
    cr.out = (void *)(uintptr_t)1;
    cr.rc = evl_executor_run(loop, gated_job, &cr.g, &cr.out);
    /* The task returns only once the job has: its arg could point into this stack. */
    cr.finished_when_returned = gate_finished(&cr.g);
    return 0;
}

static int cr_driver(evl_loop *loop, void *arg) {
    (void)arg;
    CHECK_OK(evl_task_spawn(loop, &cr.victim, cr_victim, NULL, NULL));
    while (gate_started(&cr.g) == 0) CHECK_OK(evl_sleep(loop, EVL_MSEC(1)));
    CHECK_OK(evl_task_cancel(loop, cr.victim));
    opener_start(&cr.o, &cr.g, EVL_MSEC(30)); /* the job ends 30 ms after the cancel */
    CHECK_OK(evl_task_join(loop, cr.victim, NULL));
    CHECK_EQ(cr.rc, -ECANCELED);
    CHECK(cr.out == (void *)(uintptr_t)1); /* the result is dropped */
    CHECK_EQ(cr.finished_when_returned, 1);
    /* The same through a future: cancelled while its job runs, it completes (with
       -ECANCELED) only when the job returns. */
    CHECK_OK(evl_executor_submit(loop, gated_job, &cr.g2, &cr.f));
    while (gate_started(&cr.g2) == 0) CHECK_OK(evl_sleep(loop, EVL_MSEC(1)));
    cr.cancel_rc = evl_future_cancel(loop, cr.f);
    CHECK_OK(evl_sleep(loop, EVL_MSEC(20)));
    cr.future_done_while_running = evl_future_done(cr.f);
    CHECK_EQ(evl_future_cancel(loop, cr.f), 0); /* asking twice changes nothing */
    opener_start(&cr.o2, &cr.g2, 0);
    CHECK_EQ(evl_future_await(loop, cr.f, NULL), -ECANCELED);
    CHECK_EQ(gate_finished(&cr.g2), 1);
    return 0;
}

static void cancelled_running_job_finishes_result_dropped(void) {
    evl_loop *loop = xloop_new(2, 0, 0, NULL);
    void *v = (void *)(uintptr_t)1;
    memset(&cr, 0, sizeof cr);
    gate_init(&cr.g);
    gate_init(&cr.g2);
    CHECK_OK(evl_task_spawn(loop, NULL, cr_driver, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(gate_finished(&cr.g), 1);
    CHECK_EQ(gate_finished(&cr.g2), 1);
    CHECK_EQ(cr.cancel_rc, 0);
    CHECK_EQ(cr.future_done_while_running, 0);
    CHECK_EQ(evl_future_await(loop, cr.f, &v), -ECANCELED);
    CHECK(v == NULL);
    evl_future_free(loop, cr.f);
    opener_join(&cr.o);
    opener_join(&cr.o2);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&cr.g);
    gate_destroy(&cr.g2);
}

/* ---- backpressure: a full queue makes evl_executor_run wait, not fail ---- */

#define BP_WAITERS 5

static struct {
    gate g;
    evl_future *blocker, *q1, *q2;
    int rc[BP_WAITERS];
    uintptr_t out[BP_WAITERS];
    int returned;
    int suspended_checked;
    evl_timer check;
    int deadline_rc, deadline_ran;
    evl_time deadline_took;
} bp;

static int bp_waiter(evl_loop *loop, void *arg) {
    uintptr_t i = (uintptr_t)arg;
    void *out = NULL;
    bp.rc[i] = evl_executor_run(loop, calc_job, (void *)(100 + i), &out);
    bp.out[i] = (uintptr_t)out;
    bp.returned++;
    return 0;
}

static int bp_deadline(evl_loop *loop, void *arg) {
    evl_time t0 = evl_now(loop), old = evl_deadline(loop, t0 + EVL_MSEC(50));
    (void)arg;
    bp.deadline_rc = evl_executor_run(loop, flag_job, &bp.deadline_ran, NULL);
    evl_now_update(loop);
    bp.deadline_took = evl_now(loop) - t0;
    evl_deadline_restore(loop, old);
    return 0;
}

static void bp_check(evl_loop *loop, void *arg) {
    evl_stats st;
    (void)arg;
    /* 100 ms in: every waiter is still suspended, the queue still full, the deadline task
       gave up at 50 ms. Then the blocker ends and room appears. */
    CHECK_EQ(bp.returned, 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 2);
    CHECK_EQ(st.executor_busy, 1);
    CHECK_EQ(bp.deadline_rc, -ETIMEDOUT);
    bp.suspended_checked = 1;
    gate_open(&bp.g);
}

static void backpressure_waits_for_room(void) {
    evl_loop *loop = xloop_new(1, 2, 0, NULL);
    evl_future *extra = NULL;
    uintptr_t i;
    void *v;
    memset(&bp, 0, sizeof bp);
    gate_init(&bp.g);
    for (i = 0; i < BP_WAITERS; i++) bp.rc[i] = 1;
    bp.deadline_rc = 1;
    CHECK_OK(evl_executor_submit(loop, gated_job, &bp.g, &bp.blocker));
    gate_wait_started(&bp.g, 1);
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)1, &bp.q1));
    CHECK_OK(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)2, &bp.q2));
    CHECK_EQ(evl_executor_submit(loop, calc_job, (void *)(uintptr_t)3, &extra), -EAGAIN);
    CHECK(extra == NULL);
    for (i = 0; i < BP_WAITERS; i++) CHECK_OK(evl_task_spawn(loop, NULL, bp_waiter, (void *)i, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, bp_deadline, NULL, NULL));
    evl_timer_init(&bp.check, bp_check, NULL);
    CHECK_OK(evl_timer_start(loop, &bp.check, EVL_MSEC(100), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(bp.suspended_checked, 1);
    CHECK_EQ(bp.returned, BP_WAITERS);
    for (i = 0; i < BP_WAITERS; i++) {
        CHECK_OK(bp.rc[i]);
        CHECK_EQ(bp.out[i], (100 + i) * 2 + 1);
    }
    CHECK_EQ(bp.deadline_rc, -ETIMEDOUT);
    CHECK(bp.deadline_took >= EVL_MSEC(49));
    CHECK(bp.deadline_took < check_scaled(EVL_MSEC(400)));
    CHECK_EQ(get_int(&bp.deadline_ran), 0);
    CHECK_OK(evl_future_await(loop, bp.q1, &v));
    CHECK_EQ((uintptr_t)v, 3);
    CHECK_OK(evl_future_await(loop, bp.q2, &v));
    CHECK_EQ((uintptr_t)v, 5);
    evl_future_free(loop, bp.blocker);
    evl_future_free(loop, bp.q1);
    evl_future_free(loop, bp.q2);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&bp.g);
}

/* ---- evl_executor_shutdown with a job that never ends ---- */

static void executor_shutdown_with_stuck_job(void) {
    evl_loop *loop = xloop_new(0, 0, 0, NULL);
    int base = check_thread_count(), queued_ran = 0, rc;
    evl_executor *ex;
    evl_future *stuck, *queued;
    exc_log x;
    gate g;
    void *v = (void *)(uintptr_t)1;
    evl_time t0, took;
    evl_stats st;
    memset(&x, 0, sizeof x);
    gate_init(&g);
    evl_set_exception_handler(loop, exc_record, &x);
    CHECK_OK(evl_executor_new(loop, &ex, 1, 0));
    CHECK_OK(evl_executor_submit_on(loop, ex, gated_job, &g, &stuck));
    gate_wait_started(&g, 1);
    CHECK_OK(evl_executor_submit_on(loop, ex, flag_job, &queued_ran, &queued));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 1);
    CHECK_EQ(st.executor_busy, 1);
    t0 = clock_ns();
    rc = evl_executor_shutdown(loop, ex, EVL_MSEC(100));
    took = clock_ns() - t0;
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK(took >= EVL_MSEC(95));
    CHECK(took <= check_scaled(EVL_MSEC(500)));
    CHECK_EQ(x.calls, 1);
    CHECK_EQ(x.error, -ETIMEDOUT);
    /* The queued job was cancelled. The stuck job's future stays pending while the job runs
       (a callback on it may free what the job was handed), and completes when it returns. */
    CHECK(evl_future_done(queued));
    CHECK_EQ(evl_future_await(loop, queued, &v), -ECANCELED);
    CHECK(!evl_future_done(stuck));
    evl_loop_stats(loop, &st); /* the pool is gone from the gauges */
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    evl_future_free(loop, queued);
    /* Nothing keeps evl_run waiting for the abandoned job. */
    CHECK_OK(evl_run(loop));
    CHECK(!evl_future_done(stuck));
    /* The job ends: its future completes (-ECANCELED: the pool had given up on it), and the
       thread leaves. */
    gate_open(&g);
    gate_wait_finished(&g, 1);
    t0 = clock_ns();
    while (!evl_future_done(stuck) && clock_ns() - t0 < check_scaled(EVL_SEC(2)))
        evl_run_once(loop, EVL_MSEC(10));
    CHECK(evl_future_done(stuck));
    CHECK_EQ(evl_future_await(loop, stuck, NULL), -ECANCELED);
    evl_future_free(loop, stuck);
    check_wait_threads_back_to(base, 30);
    CHECK_EQ(get_int(&queued_ran), 0);
    CHECK_EQ(x.calls, 1);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&g);
}

/* evl_executor_shutdown of a pool whose jobs all end in time: 0, no report, the pool's
   threads gone. */
static void executor_shutdown_in_time(void) {
    evl_loop *loop = xloop_new(0, 0, 0, NULL);
    int base = check_thread_count();
    evl_executor *ex;
    evl_future *f;
    exc_log x;
    gate g;
    opener o;
    void *v = NULL;
    evl_time t0, took;
    memset(&x, 0, sizeof x);
    gate_init(&g);
    evl_set_exception_handler(loop, exc_record, &x);
    CHECK_OK(evl_executor_new(loop, &ex, 2, 0));
    CHECK_OK(evl_executor_submit_on(loop, ex, gated_job, &g, &f));
    gate_wait_started(&g, 1);
    opener_start(&o, &g, EVL_MSEC(30));
    t0 = clock_ns();
    CHECK_OK(evl_executor_shutdown(loop, ex, EVL_SEC(5)));
    took = clock_ns() - t0;
    CHECK(took < check_scaled(EVL_SEC(1)));
    CHECK_EQ(x.calls, 0);
    /* The job ended within the timeout: its result is delivered. */
    CHECK(evl_future_done(f));
    CHECK_OK(evl_future_await(loop, f, &v));
    CHECK(v == GATED_RESULT);
    evl_future_free(loop, f);
    opener_join(&o);
    check_wait_threads_back_to(base, 30);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&g);
}

/* ---- evl_executor_new is an independent pool; the gauges ---- */

#define IND_JOBS 6

static struct {
    pthread_mutex_t lock;
    pthread_t def[IND_JOBS], own[IND_JOBS];
    int ndef, nown;
    int arrived;                  /* jobs of both pools that have started */
    pthread_cond_t all_here;
} ind;

/* Records its thread, then waits until jobs of both pools have started, so each pool has
   several jobs running at once. */
static void *ind_job(void *arg) {
    int own = arg != NULL;
    pthread_mutex_lock(&ind.lock);
    if (own) ind.own[ind.nown++] = pthread_self();
    else ind.def[ind.ndef++] = pthread_self();
    ind.arrived++;
    pthread_cond_broadcast(&ind.all_here);
    while (ind.arrived < 4) pthread_cond_wait(&ind.all_here, &ind.lock);
    pthread_mutex_unlock(&ind.lock);
    return NULL;
}

static void executor_new_is_an_independent_pool(void) {
    evl_loop *loop = xloop_new(2, 0, 0, NULL);
    evl_executor *ex, *ex1;
    evl_future *fd[IND_JOBS], *fo[IND_JOBS], *blocker, *q[3];
    evl_stats st;
    gate g;
    int i, k;
    memset(&ind, 0, sizeof ind);
    CHECK_OK(pthread_mutex_init(&ind.lock, NULL));
    CHECK_OK(pthread_cond_init(&ind.all_here, NULL));
    CHECK_OK(evl_executor_new(loop, &ex, 2, 0));
    for (i = 0; i < IND_JOBS; i++) {
        CHECK_OK(evl_executor_submit(loop, ind_job, NULL, &fd[i]));
        CHECK_OK(evl_executor_submit_on(loop, ex, ind_job, (void *)&ind, &fo[i]));
    }
    CHECK_OK(evl_run(loop));
    for (i = 0; i < IND_JOBS; i++) {
        CHECK(evl_future_done(fd[i]) && evl_future_done(fo[i]));
        evl_future_free(loop, fd[i]);
        evl_future_free(loop, fo[i]);
    }
    CHECK_EQ(ind.ndef, IND_JOBS);
    CHECK_EQ(ind.nown, IND_JOBS);
    /* No thread ran jobs of both pools. */
    for (i = 0; i < IND_JOBS; i++)
        for (k = 0; k < IND_JOBS; k++) CHECK(!pthread_equal(ind.def[i], ind.own[k]));
    /* The gauges count queued jobs and busy threads over every pool. */
    gate_init(&g);
    CHECK_OK(evl_executor_new(loop, &ex1, 1, 0));
    CHECK_OK(evl_executor_submit_on(loop, ex1, gated_job, &g, &blocker));
    gate_wait_started(&g, 1);
    for (i = 0; i < 3; i++)
        CHECK_OK(evl_executor_submit_on(loop, ex1, calc_job, (void *)(uintptr_t)i, &q[i]));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 3);
    CHECK_EQ(st.executor_busy, 1);
    gate_open(&g);
    CHECK_OK(evl_run(loop));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    for (i = 0; i < 3; i++) {
        void *v = NULL;
        CHECK_OK(evl_future_await(loop, q[i], &v));
        CHECK_EQ((uintptr_t)v, (uintptr_t)i * 2 + 1);
        evl_future_free(loop, q[i]);
    }
    evl_future_free(loop, blocker);
    CHECK_OK(evl_executor_shutdown(loop, ex1, EVL_SEC(1)));
    CHECK_OK(evl_executor_shutdown(loop, ex, EVL_SEC(1)));
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&g);
    pthread_cond_destroy(&ind.all_here);
    pthread_mutex_destroy(&ind.lock);
}

/* ---- bad input ---- */

static struct {
    int null_fn_rc, null_ex_rc, cancelled_rc, ran;
} bi;

static int bi_task(evl_loop *loop, void *arg) {
    void *out = NULL;
    (void)arg;
    bi.null_fn_rc = evl_executor_run(loop, NULL, NULL, &out);
    bi.null_ex_rc = evl_executor_run_on(loop, NULL, calc_job, NULL, &out);
    return 0;
}

static void bad_input(void) {
    evl_loop *loop;
    watchdog();
    loop = check_loop_new(); /* the defaults */
    evl_executor *ex = (evl_executor *)&bi;
    evl_future *f = (evl_future *)&bi;
    void *out = (void *)(uintptr_t)1;
    int ran = 0;
    memset(&bi, 0, sizeof bi);
    CHECK_EQ(evl_executor_submit(loop, NULL, NULL, &f), -EINVAL);
    CHECK_EQ(evl_executor_submit(loop, calc_job, NULL, NULL), -EINVAL);
    CHECK_EQ(evl_executor_submit_on(loop, NULL, calc_job, NULL, &f), -EINVAL);
    /* Outside a task, the suspending calls are -EPERM, and nothing runs. */
    CHECK_EQ(evl_executor_run(loop, flag_job, &ran, &out), -EPERM);
    CHECK(out == (void *)(uintptr_t)1);
    CHECK_EQ(evl_executor_new(loop, NULL, 1, 1), -EINVAL);
    CHECK_EQ(evl_executor_new(loop, &ex, -1, 0), -EINVAL);
    CHECK_EQ(evl_executor_new(loop, &ex, 0, -1), -EINVAL);
    CHECK_OK(evl_executor_new(loop, &ex, 1, 1));
    CHECK_EQ(evl_executor_run_on(loop, ex, flag_job, &ran, &out), -EPERM);
    CHECK_EQ(evl_executor_submit_on(loop, ex, NULL, NULL, &f), -EINVAL);
    CHECK_EQ(evl_executor_shutdown(loop, NULL, 0), -EINVAL);
    CHECK_OK(evl_task_spawn(loop, NULL, bi_task, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(bi.null_fn_rc, -EINVAL);
    CHECK_EQ(bi.null_ex_rc, -EINVAL);
    CHECK_EQ(get_int(&ran), 0);
    CHECK_OK(evl_executor_shutdown(loop, ex, EVL_SEC(1)));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- evl_loop_close with jobs still running ---- */

static void loop_close_with_stuck_job_is_bounded(void) {
    evl_loop *loop = xloop_new(0, 0, EVL_MSEC(200), NULL);
    int base = check_thread_count();
    evl_future *f;
    exc_log x;
    gate g;
    evl_time t0, took;
    memset(&x, 0, sizeof x);
    gate_init(&g);
    evl_set_exception_handler(loop, exc_record, &x);
    CHECK_OK(evl_executor_submit(loop, gated_job, &g, &f));
    gate_wait_started(&g, 1);
    evl_future_free(loop, f); /* nobody wants the result */
    t0 = clock_ns();
    CHECK_OK(evl_loop_close(loop));
    took = clock_ns() - t0;
    CHECK(took >= EVL_MSEC(190));
    CHECK(took <= check_scaled(EVL_SEC(1)));
    CHECK_EQ(x.calls, 1);
    CHECK_EQ(x.error, -ETIMEDOUT);
    gate_open(&g);
    gate_wait_finished(&g, 1);
    check_wait_threads_back_to(base, 30);
    gate_destroy(&g);
}

static void loop_close_waits_for_a_job_ending_in_grace(void) {
    evl_loop *loop = xloop_new(0, 0, EVL_SEC(5), NULL);
    int base = check_thread_count();
    evl_future *f;
    exc_log x;
    gate g;
    opener o;
    evl_time t0, took;
    memset(&x, 0, sizeof x);
    gate_init(&g);
    evl_set_exception_handler(loop, exc_record, &x);
    CHECK_OK(evl_executor_submit(loop, gated_job, &g, &f));
    gate_wait_started(&g, 1);
    evl_future_free(loop, f);
    opener_start(&o, &g, EVL_MSEC(50));
    t0 = clock_ns();
    CHECK_OK(evl_loop_close(loop));
    took = clock_ns() - t0;
    CHECK_EQ(gate_finished(&g), 1); /* close waited for the job */
    CHECK(took >= EVL_MSEC(40));
    CHECK(took <= check_scaled(EVL_SEC(1)));
    CHECK_EQ(x.calls, 0);
    opener_join(&o);
    check_wait_threads_back_to(base, 30);
    gate_destroy(&g);
}

/* ---- memory the loop frees while something still points at it (fence allocator) ---- */

/* evl_executor_shutdown frees the pool; a task that was waiting for room in its queue must
   not stay suspended in (or later touch) the freed pool: it hears an error. */
static struct {
    gate g;
    evl_executor *ex;
    evl_task *waiter;
    int waiter_rc;
    void *waiter_out;
    int ran;
} rw;

static int rw_waiter(evl_loop *loop, void *arg) {
    (void)arg;
    rw.waiter_rc = evl_executor_run_on(loop, rw.ex, flag_job, &rw.ran, &rw.waiter_out);
    return 0;
}

static void executor_shutdown_releases_tasks_waiting_for_room(void) {
    evl_loop *loop = xloop_new(0, 0, 0, fence_alloc);
    evl_future *blocker, *queued;
    opener o;
    evl_time until;
    int i;
    memset(&rw, 0, sizeof rw);
    rw.waiter_rc = 1;
    gate_init(&rw.g);
    CHECK_OK(evl_executor_new(loop, &rw.ex, 1, 1));
    CHECK_OK(evl_executor_submit_on(loop, rw.ex, gated_job, &rw.g, &blocker));
    gate_wait_started(&rw.g, 1);
    CHECK_OK(evl_executor_submit_on(loop, rw.ex, calc_job, NULL, &queued));
    CHECK_OK(evl_task_spawn(loop, &rw.waiter, rw_waiter, NULL, NULL));
    for (i = 0; i < 5; i++) evl_run_once(loop, 0);
    CHECK(!evl_task_done(rw.waiter)); /* waiting for room */
    /* The blocker ends 30 ms into the shutdown: the pool shuts cleanly and is freed. */
    opener_start(&o, &rw.g, EVL_MSEC(30));
    CHECK_OK(evl_executor_shutdown(loop, rw.ex, EVL_SEC(2)));
    opener_join(&o);
    /* The waiter must come back (with an error) instead of waiting forever on a freed pool. */
    until = clock_ns() + check_scaled(EVL_SEC(1));
    while (!evl_task_done(rw.waiter) && clock_ns() < until) evl_run_once(loop, EVL_MSEC(10));
    CHECK(evl_task_done(rw.waiter));
    CHECK(rw.waiter_rc < 0);
    CHECK_EQ(get_int(&rw.ran), 0);
    CHECK_OK(evl_task_join(loop, rw.waiter, NULL));
    CHECK(evl_future_done(queued));
    CHECK_EQ(evl_future_await(loop, queued, NULL), -ECANCELED);
    evl_future_free(loop, blocker);
    evl_future_free(loop, queued);
    CHECK_OK(evl_loop_close(loop));
    gate_destroy(&rw.g);
}

/* A zero (or already spent) timeout while idle workers have not left yet: the pool must not
   be freed under them (they wait on its condition variable, and take its lock to leave).
   Whether a worker is still there at that moment is a race, so the case repeats it. */
#define ZI_THREADS 8
#ifdef UNDER_TSAN
#define ZI_ROUNDS 60 /* thread creation is slow under ThreadSanitizer, which sees the race anyway */
#else
#define ZI_ROUNDS 200
#endif
#define ZI_ROUNDS_SLOW 20 /* under Valgrind or qemu: thread creation costs 100 times more */

static struct {
    int arrived;
    pthread_mutex_t m;
    pthread_cond_t c;
} zi;

static void *zi_job(void *arg) {
    /* Holds its worker until all the pool's jobs run at once, so every worker exists. */
    pthread_mutex_lock(&zi.m);
    zi.arrived++;
    pthread_cond_broadcast(&zi.c);
    while (zi.arrived < ZI_THREADS) pthread_cond_wait(&zi.c, &zi.m);
    pthread_mutex_unlock(&zi.m);
    return arg;
}

static void executor_shutdown_zero_timeout_with_idle_threads(void) {
    evl_loop *loop = xloop_new(0, 0, 0, fence_alloc);
    int base = check_thread_count(), i, round;
    evl_executor *ex;
    evl_future *f[ZI_THREADS];
    exc_log x;
    memset(&x, 0, sizeof x);
    memset(&zi, 0, sizeof zi);
    CHECK_OK(pthread_mutex_init(&zi.m, NULL));
    CHECK_OK(pthread_cond_init(&zi.c, NULL));
    evl_set_exception_handler(loop, exc_record, &x);
    for (round = 0; round < check_rounds(ZI_ROUNDS, ZI_ROUNDS_SLOW); round++) {
        zi.arrived = 0;
        CHECK_OK(evl_executor_new(loop, &ex, ZI_THREADS, 0));
        for (i = 0; i < ZI_THREADS; i++)
            CHECK_OK(evl_executor_submit_on(loop, ex, zi_job, NULL, &f[i]));
        CHECK_OK(evl_run(loop));
        for (i = 0; i < ZI_THREADS; i++) {
            CHECK_OK(evl_future_await(loop, f[i], NULL));
            evl_future_free(loop, f[i]);
        }
        CHECK_EQ(check_thread_count(), base + ZI_THREADS); /* every worker idle, none gone */
        /* No job is running: nothing to report, and the workers leave without touching
           freed memory (a fault here is a use after free). */
        CHECK_EQ(evl_executor_shutdown(loop, ex, 0), 0);
        CHECK_EQ(x.calls, 0);
        check_wait_threads_back_to(base, 30);
    }
    CHECK_OK(evl_loop_close(loop));
    pthread_cond_destroy(&zi.c);
    pthread_mutex_destroy(&zi.m);
}

/* evl_loop_close with a task that shields itself while its job runs: close waits for the job
   (within the grace), so the task gets its result and returns. */
static struct {
    gate g;
    int rc, returned;
} sh;

static int sh_task(evl_loop *loop, void *arg) {
    void *out = NULL;
    (void)arg;
    evl_shield_begin(loop);
    sh.rc = evl_executor_run(loop, gated_job, &sh.g, &out);
    evl_shield_end(loop);
    sh.returned = 1;
    return 0;
}

static void loop_close_with_shielded_task_waiting_on_a_job(void) {
    evl_loop *loop = xloop_new(0, 0, EVL_SEC(5), fence_alloc);
    int base = check_thread_count();
    exc_log x;
    opener o;
    evl_time until;
    memset(&x, 0, sizeof x);
    memset(&sh, 0, sizeof sh);
    gate_init(&sh.g);
    evl_set_exception_handler(loop, exc_record, &x);
    CHECK_OK(evl_task_spawn(loop, NULL, sh_task, NULL, NULL));
    until = clock_ns() + check_scaled(EVL_SEC(2));
    while (gate_started(&sh.g) == 0 && clock_ns() < until) evl_run_once(loop, EVL_MSEC(1));
    CHECK_EQ(gate_started(&sh.g), 1);
    /* The job ends 100 ms into the close, after the task was abandoned. */
    opener_start(&o, &sh.g, EVL_MSEC(100));
    CHECK_OK(evl_loop_close(loop));
    opener_join(&o);
    CHECK_EQ(gate_finished(&sh.g), 1);
    CHECK_EQ(sh.returned, 1);
    CHECK_EQ(sh.rc, 0);
    CHECK_EQ(x.calls, 0);
    check_wait_threads_back_to(base, 30);
    gate_destroy(&sh.g);
}

static const check_case cases[] = {
    {"thousand_tasks_hundred_jobs_each", thousand_tasks_hundred_jobs_each},
    {"submit_from_callback_and_full_queue", submit_from_callback_and_full_queue},
    {"cancelled_queued_jobs_never_run", cancelled_queued_jobs_never_run},
    {"cancelled_running_job_finishes_result_dropped", cancelled_running_job_finishes_result_dropped},
    {"backpressure_waits_for_room", backpressure_waits_for_room},
    {"executor_shutdown_with_stuck_job", executor_shutdown_with_stuck_job},
    {"executor_shutdown_in_time", executor_shutdown_in_time},
    {"executor_new_is_an_independent_pool", executor_new_is_an_independent_pool},
    {"bad_input", bad_input},
    {"loop_close_with_stuck_job_is_bounded", loop_close_with_stuck_job_is_bounded},
    {"loop_close_waits_for_a_job_ending_in_grace", loop_close_waits_for_a_job_ending_in_grace},
    {"executor_shutdown_releases_tasks_waiting_for_room", executor_shutdown_releases_tasks_waiting_for_room},
    {"executor_shutdown_zero_timeout_with_idle_threads", executor_shutdown_zero_timeout_with_idle_threads},
    {"loop_close_with_shielded_task_waiting_on_a_job", loop_close_with_shielded_task_waiting_on_a_job},
};

CHECK_MAIN(cases)
