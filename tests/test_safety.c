/* test_safety.c - ownership and task safety: every pointer the library is handed comes back
   at a stated moment and is not touched afterwards (executor jobs, their futures, the stacks
   their tasks lend them, callbacks at shutdown), and the contracts around them: evl_close,
   shields with deadlines, closing queues, stopping groups, error names, the second signal,
   partial writes. Every case runs on every backend. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include "check.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

static evl_time clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int atomic_get(const int *p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void atomic_set(int *p, int v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static evl_loop *loop_with_grace(evl_time grace) {
    evl_config cfg;
    evl_loop *loop = NULL;
    evl_config_init(&cfg);
    cfg.shutdown_grace = grace;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    return loop;
}

static int nonblocking_pair(int sv[2]) {
    int i;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -errno;
    for (i = 0; i < 2; i++) fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK);
    return 0;
}

/* ---- 1. an executor job keeps what it was handed until it returns ---- */

/* A job that writes into its task's stack after `ms`, unless it is asked to stop first
   (`stop_early`): the write is what would land in a freed stack if the task returned early. */
typedef struct stack_job {
    int *slot;            /* a local of the waiting task */
    int ms, stop_early;
    int started;          /* atomic */
    int saw_cancel;       /* atomic */
    int wrote;            /* atomic */
} stack_job;

static void *stack_job_fn(void *arg) {
    stack_job *j = (stack_job *)arg;
    int i;
    atomic_set(&j->started, 1);
    for (i = 0; i < j->ms; i++) {
        if (evl_executor_cancelled()) {
            atomic_set(&j->saw_cancel, 1);
            if (j->stop_early) break;
        }
        sleep_ms(1);
    }
    *j->slot = 42;
    atomic_set(&j->wrote, 1);
    return NULL;
}

static struct {
    evl_task *victim;
    int rc, slot_at_return;
    evl_time took;
    stack_job early, late;
} ec;

/* Cancelled at 20 ms, its job notices and stops early: the task returns after the job wrote. */
static int ec_cancelled(evl_loop *loop, void *arg) {
    int slot = 0;
    evl_time t0 = clock_ns();
    (void)arg;
    ec.early.slot = &slot;
    ec.early.ms = 2000;
    ec.early.stop_early = 1;
    ec.rc = evl_executor_run(loop, stack_job_fn, &ec.early, NULL);
    ec.took = clock_ns() - t0;
    ec.slot_at_return = slot;
    return 0;
}

/* Cancels the task once its job runs (a queued job would just be dropped). */
static void ec_cancel(evl_loop *loop, void *arg) {
    evl_timer *t = (evl_timer *)arg;
    if (!atomic_get(&ec.early.started)) CHECK_OK(evl_timer_start(loop, t, EVL_MSEC(1), 0));
    else CHECK_OK(evl_task_cancel(loop, ec.victim));
}

static void executor_run_waits_for_a_cancelled_job(void) {
    evl_loop *loop = check_loop_new();
    evl_timer t;
    check_watchdog(20);
    memset(&ec, 0, sizeof ec);
    CHECK_EQ(evl_executor_cancelled(), 0); /* outside a job */
    CHECK_OK(evl_task_spawn(loop, &ec.victim, ec_cancelled, NULL, NULL));
    evl_timer_init(&t, ec_cancel, &t);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(20), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(ec.rc, -ECANCELED);
    CHECK_EQ(ec.slot_at_return, 42);   /* the job's write came before the return */
    CHECK_EQ(atomic_get(&ec.early.saw_cancel), 1);
    CHECK(ec.took >= EVL_MSEC(15));
    CHECK(ec.took < check_scaled(EVL_MSEC(1500))); /* it stopped early, not after 2 s */
    CHECK_OK(evl_task_join(loop, ec.victim, NULL));
    CHECK_OK(evl_loop_close(loop));
}

/* Past its deadline at 20 ms, with a job that ignores the request and runs 150 ms (both
   scaled, so that under Valgrind the job still starts before the deadline): the task still
   returns only after the job, with -ETIMEDOUT. */
static int ec_deadline(evl_loop *loop, void *arg) {
    int slot = 0;
    evl_time t0 = clock_ns(), old = evl_deadline(loop, evl_now(loop) + check_scaled(EVL_MSEC(20)));
    (void)arg;
    ec.late.slot = &slot;
    ec.late.ms = (int)(150 * check_time_scale());
    ec.rc = evl_executor_run(loop, stack_job_fn, &ec.late, NULL);
    ec.took = clock_ns() - t0;
    ec.slot_at_return = slot;
    evl_deadline_restore(loop, old);
    return 0;
}

static void executor_run_waits_past_its_deadline(void) {
    evl_loop *loop = check_loop_new();
    check_watchdog(20);
    memset(&ec, 0, sizeof ec);
    CHECK_OK(evl_task_spawn(loop, NULL, ec_deadline, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(ec.rc, -ETIMEDOUT);
    CHECK_EQ(ec.slot_at_return, 42);
    CHECK_EQ(atomic_get(&ec.late.saw_cancel), 1);
    CHECK(ec.took >= check_scaled(EVL_MSEC(140)));
    CHECK_OK(evl_loop_close(loop));
}

/* evl_loop_close with a task whose job ignores cancellation past the grace period: the task
   is abandoned and reported, and its stack is kept for the job, which writes into it after
   close returned (an unmapped stack would kill the process here). */
static struct {
    stack_job job;
} lc;

static int lc_task(evl_loop *loop, void *arg) {
    int slot = 0;
    (void)arg;
    lc.job.slot = &slot;
    lc.job.ms = 300;
    evl_executor_run(loop, stack_job_fn, &lc.job, NULL);
    return 0;
}

static void loop_close_keeps_a_stack_its_job_writes_to(void) {
    evl_loop *loop = loop_with_grace(EVL_MSEC(50));
    evl_task_opts opts = {"lender", 0};
    int base = check_thread_base(), i;
    check_exc_log x;
    evl_time t0, took;
    check_watchdog(20);
    memset(&x, 0, sizeof x);
    memset(&lc, 0, sizeof lc);
    evl_set_exception_handler(loop, check_exc_record, &x);
    CHECK_OK(evl_task_spawn(loop, NULL, lc_task, NULL, &opts));
    for (i = 0; i < 2000 && !atomic_get(&lc.job.started); i++) evl_run_once(loop, EVL_MSEC(1));
    CHECK(atomic_get(&lc.job.started)); /* running, not queued: a queued job is just dropped */
    t0 = clock_ns();
    CHECK_OK(evl_loop_close(loop));
    took = clock_ns() - t0;
    CHECK(took >= EVL_MSEC(45));
    CHECK(took < check_scaled(EVL_MSEC(250)));
    CHECK_EQ(atomic_get(&lc.job.wrote), 0); /* close returned before the job's write */
    CHECK_EQ(check_exc_find(&x, "abandoned by evl_loop_close while its executor job", "lender"), 1);
    CHECK_EQ(check_exc_find(&x, "executor job(s) still running", NULL), 1);
    for (i = 0; i < 5000 && !atomic_get(&lc.job.wrote); i++) sleep_ms(1);
    CHECK_EQ(atomic_get(&lc.job.wrote), 1);
    CHECK_EQ(atomic_get(&lc.job.saw_cancel), 1);
    check_wait_threads_back_to(base, 30); /* the worker freed the stack, the job, the pool */
}

/* A future cancelled while its job runs completes when the job returns: its callback may free
   what the job was handed (a heap argument here; ASan sees a write after the free). */
static struct {
    evl_future *f;
    int *arg;
    int cancel_rc, done_after_cancel, callback_ran, value_seen;
} fc;

static void *heap_job(void *arg) {
    int *p = (int *)arg;
    sleep_ms(80);
    *p = 7;
    return NULL;
}

static void fc_on_done(evl_loop *loop, void *arg) {
    (void)arg;
    fc.value_seen = *fc.arg;
    free(fc.arg); /* what a C program does once the job is known to be done */
    fc.arg = NULL;
    fc.callback_ran = 1;
    CHECK_EQ(evl_future_await(loop, fc.f, NULL), -ECANCELED);
    evl_future_free(loop, fc.f); /* freeing a future from its own callback is allowed */
    fc.f = NULL;
}

static void fc_cancel(evl_loop *loop, void *arg) {
    (void)arg;
    fc.cancel_rc = evl_future_cancel(loop, fc.f);
    fc.done_after_cancel = evl_future_done(fc.f);
}

static void cancelled_future_completes_when_its_job_returns(void) {
    evl_loop *loop = check_loop_new();
    evl_timer t;
    check_watchdog(20);
    memset(&fc, 0, sizeof fc);
    fc.arg = (int *)malloc(sizeof *fc.arg);
    CHECK(fc.arg != NULL);
    *fc.arg = 0;
    CHECK_OK(evl_executor_submit(loop, heap_job, fc.arg, &fc.f));
    CHECK_OK(evl_future_on_done(loop, fc.f, fc_on_done, NULL));
    CHECK_EQ(evl_future_set(loop, fc.f, 0, NULL), -EBUSY); /* the executor completes it */
    evl_timer_init(&t, fc_cancel, NULL);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(10), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fc.cancel_rc, 0);
    CHECK_EQ(fc.done_after_cancel, 0);
    CHECK_EQ(fc.callback_ran, 1);
    CHECK_EQ(fc.value_seen, 7);   /* the callback ran after the job's write */
    CHECK_OK(evl_loop_close(loop));
}

/* A pool shut down past its deadline asks its stuck job to stop: evl_executor_cancelled turns
   1 in the job, and its future completes (-ECANCELED) when the job returns. */
static void *until_cancelled_job(void *arg) {
    int i;
    for (i = 0; i < 5000 && !evl_executor_cancelled(); i++) sleep_ms(1);
    atomic_set((int *)arg, evl_executor_cancelled());
    return NULL;
}

static void shutdown_past_deadline_asks_the_job_to_stop(void) {
    evl_loop *loop = check_loop_new();
    evl_executor *ex;
    evl_future *f;
    check_exc_log x;
    int saw = -1, i;
    check_watchdog(20);
    memset(&x, 0, sizeof x);
    evl_set_exception_handler(loop, check_exc_record, &x);
    CHECK_OK(evl_executor_new(loop, &ex, 1, 0));
    CHECK_OK(evl_executor_submit_on(loop, ex, until_cancelled_job, &saw, &f));
    sleep_ms(10);
    CHECK_EQ(evl_executor_shutdown(loop, ex, EVL_MSEC(30)), -ETIMEDOUT);
    CHECK_EQ(x.calls, 1);
    for (i = 0; i < 2000 && !evl_future_done(f); i++) evl_run_once(loop, EVL_MSEC(5));
    CHECK(evl_future_done(f));
    CHECK_EQ(evl_future_await(loop, f, NULL), -ECANCELED);
    CHECK_EQ(atomic_get(&saw), 1);
    evl_future_free(loop, f);
    CHECK_OK(evl_loop_close(loop));
}

/* The cleanup of a task cancelled by evl_loop_close may not start an executor job: the pools
   are about to be shut, and a job started then would outlive the loop. */
static int late_offload_rc = 1;

static int late_offloader(evl_loop *loop, void *arg) {
    int ran = 0;
    (void)arg;
    if (evl_sleep(loop, EVL_SEC(3600)) == -ECANCELED) {
        evl_shield_begin(loop);
        late_offload_rc = evl_executor_run(loop, heap_job, &ran, NULL);
        evl_shield_end(loop);
    }
    return 0;
}

static void loop_close_refuses_new_jobs(void) {
    evl_loop *loop = check_loop_new();
    check_watchdog(20);
    CHECK_OK(evl_task_spawn(loop, NULL, late_offloader, NULL, NULL));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(late_offload_rc, -ESHUTDOWN);
}

/* ---- 2. a graceful shutdown delivers what finished and runs what became due ---- */
static struct {
    int callback_ran, arg_value;
    int started; /* atomic */
} gs;

static void *short_job(void *arg) {
    atomic_set(&gs.started, 1);
    sleep_ms(50);
    *(int *)arg = 5;
    return NULL;
}

static void gs_on_done(evl_loop *loop, void *arg) {
    int *p = (int *)arg;
    gs.arg_value = *p;
    gs.callback_ran = 1;
    free(p);
    (void)loop;
}

static void gs_free_future(evl_loop *loop, void *arg) {
    evl_future_free(loop, (evl_future *)arg);
}

static int gs_main(evl_loop *loop, void *arg) {
    evl_future *f;
    int *p = (int *)malloc(sizeof *p);
    (void)arg;
    CHECK(p != NULL);
    *p = 0;
    CHECK_OK(evl_executor_submit(loop, short_job, p, &f));
    CHECK_OK(evl_future_on_done(loop, f, gs_on_done, p));
    CHECK_OK(evl_future_on_done(loop, f, gs_free_future, f));
    /* main ends once the job runs (a queued one would just be cancelled): the shutdown finds
       it still running. */
    while (!atomic_get(&gs.started)) CHECK_OK(evl_sleep(loop, EVL_MSEC(1)));
    return 0;
}

static void graceful_shutdown_runs_on_done_callbacks(void) {
    evl_config cfg;
    check_watchdog(20);
    memset(&gs, 0, sizeof gs);
    evl_config_init(&cfg);
    cfg.shutdown_grace = EVL_SEC(5);
    CHECK_EQ(evl_main(&cfg, gs_main, NULL), 0);
    CHECK_EQ(gs.callback_ran, 1); /* else its argument leaked (LeakSanitizer says so) */
    CHECK_EQ(gs.arg_value, 5);
}

/* ---- 3. evl_close wakes every task waiting on the fd ---- */
static struct {
    int fd, listen_fd;
    int read_rc, write_rc, wait_rc, accept_rc;
    int watcher_calls;
    evl_time woke_after;
    evl_time t_close;
} cl;

static int cl_reader(evl_loop *loop, void *arg) {
    char buf[16];
    (void)arg;
    cl.read_rc = (int)evl_read(loop, cl.fd, buf, sizeof buf);
    cl.woke_after = clock_ns() - cl.t_close;
    return 0;
}

static int cl_writer(evl_loop *loop, void *arg) {
    static char big[1 << 20];
    (void)arg;
    cl.write_rc = (int)evl_write_all(loop, cl.fd, big, sizeof big); /* the peer never reads */
    return 0;
}

static int cl_waiter(evl_loop *loop, void *arg) {
    (void)arg;
    cl.wait_rc = evl_wait_io(loop, cl.fd, EVL_READ);
    return 0;
}

static int cl_acceptor(evl_loop *loop, void *arg) {
    (void)arg;
    cl.accept_rc = evl_accept(loop, cl.listen_fd, NULL, NULL);
    return 0;
}

static void cl_watcher(evl_loop *loop, void *arg, int events) {
    (void)loop;
    (void)arg;
    (void)events;
    cl.watcher_calls++;
}

static int cl_closer(evl_loop *loop, void *arg) {
    evl_io *w = (evl_io *)arg;
    CHECK_OK(evl_sleep(loop, EVL_MSEC(20))); /* everyone waits by now */
    cl.t_close = clock_ns();
    CHECK_OK(evl_close(loop, cl.fd));
    CHECK_OK(evl_close(loop, cl.listen_fd));
    CHECK(!evl_io_active(w));
    return 0;
}

static int listening_socket(void) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(fd, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(fd, 8));
    return fd;
}

static void evl_close_wakes_every_waiting_task(void) {
    evl_loop *loop = check_loop_new();
    int sv[2], fds_before = check_dir_count("/proc/self/fd");
    evl_io w;
    check_watchdog(20);
    memset(&cl, 0, sizeof cl);
    CHECK_OK(nonblocking_pair(sv));
    cl.fd = sv[0];
    cl.listen_fd = listening_socket();
    evl_io_init(&w, cl.fd, cl_watcher, NULL);
    CHECK_OK(evl_io_start(loop, &w, EVL_READ));
    CHECK_OK(evl_task_spawn(loop, NULL, cl_reader, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cl_writer, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cl_waiter, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cl_acceptor, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, cl_closer, &w, NULL));
    CHECK_OK(evl_run(loop)); /* returns: nothing waits on a closed fd */
    CHECK_EQ(cl.read_rc, -EBADF);
    CHECK_EQ(cl.write_rc, -EBADF);
    CHECK_EQ(cl.wait_rc, -EBADF);
    CHECK_EQ(cl.accept_rc, -EBADF);
    CHECK_EQ(cl.watcher_calls, 0);
    CHECK(cl.woke_after < check_scaled(EVL_MSEC(100)));
    CHECK_EQ(evl_close(loop, cl.fd), -EBADF); /* close(2)'s own answer */
    CHECK_EQ(evl_close(loop, -1), -EBADF);
    close(sv[1]);
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
    CHECK_OK(evl_loop_close(loop));
}

/* A plain close(2) of an fd a task waits on is a bug: debug mode says so where the backend can
   see it (poll's POLLNVAL, select's EBADF; epoll forgets the fd without a word). */
static char dbg_log[2048];

static void dbg_capture(int level, const char *message, void *ud) {
    (void)level;
    (void)ud;
    if (strlen(dbg_log) + strlen(message) + 2 < sizeof dbg_log) {
        strcat(dbg_log, message);
        strcat(dbg_log, "\n");
    }
}

static int plain_closer(evl_loop *loop, void *arg) {
    int fd = (int)(intptr_t)arg;
    CHECK_OK(evl_sleep(loop, EVL_MSEC(10)));
    close(fd);
    return 0;
}

static int closed_reader(evl_loop *loop, void *arg) {
    char buf[8];
    return (int)evl_read(loop, (int)(intptr_t)arg, buf, sizeof buf) == -EBADF ? 0 : -EIO;
}

static void plain_close_is_reported_in_debug_mode(void) {
    evl_config cfg;
    evl_loop *loop;
    int sv[2];
    evl_task *reader;
    int rc = 1;
    check_watchdog(20);
    dbg_log[0] = 0;
    evl_config_init(&cfg);
    cfg.debug = EVL_DEBUG_ON;
    cfg.log = dbg_capture;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    if (strcmp(evl_backend_name(loop), "epoll") == 0) { /* nothing to see there */
        CHECK_OK(evl_loop_close(loop));
        return;
    }
    CHECK_OK(nonblocking_pair(sv));
    CHECK_OK(evl_task_spawn(loop, &reader, closed_reader, (void *)(intptr_t)sv[0], NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, plain_closer, (void *)(intptr_t)sv[0], NULL));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, reader, &rc));
    CHECK_OK(rc);
    CHECK(strstr(dbg_log, "was closed while watched") != NULL);
    close(sv[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- 4. a task abandoned at close is reported in every mode ---- */
static int shielded_forever(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    evl_sleep(loop, EVL_SEC(3600));
    evl_shield_end(loop);
    return 0;
}

static void close_reports_abandoned_task_without_debug(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_task_opts opts = {"immortal", 0};
    check_exc_log x;
    check_watchdog(20);
    memset(&x, 0, sizeof x);
    evl_config_init(&cfg);
    cfg.debug = EVL_DEBUG_OFF;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    evl_set_exception_handler(loop, check_exc_record, &x);
    CHECK_OK(evl_task_spawn(loop, NULL, shielded_forever, NULL, &opts));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(x.calls, 1);
    CHECK_EQ(check_exc_find(&x, "abandoned", "immortal"), 1);
    CHECK_EQ(x.error[0], -ETIMEDOUT);
}

/* ---- 5. a deadline set inside a shield applies inside it ---- */
static struct {
    int sv[2];
    int inner_rc, nested_rc, outer_sleep_rc, after_rc, cancelled_rc, after_cancel_rc;
    evl_time inner_took;
} sd;

static int sd_task(evl_loop *loop, void *arg) {
    char buf[8];
    evl_time t0, outer, inner;
    (void)arg;
    /* An outer deadline 10 ms away does not reach into the shield... */
    outer = evl_deadline(loop, evl_now(loop) + EVL_MSEC(10));
    evl_shield_begin(loop);
    sd.outer_sleep_rc = evl_sleep(loop, EVL_MSEC(30));
    /* ...but one set inside it bounds a read from a peer that never writes. */
    t0 = clock_ns();
    inner = evl_deadline(loop, evl_now(loop) + EVL_MSEC(50));
    sd.inner_rc = (int)evl_read(loop, sd.sv[0], buf, sizeof buf);
    sd.inner_took = clock_ns() - t0;
    /* It holds in a nested shield too. */
    evl_shield_begin(loop);
    sd.nested_rc = evl_sleep(loop, EVL_MSEC(1));
    evl_shield_end(loop);
    evl_deadline_restore(loop, inner);
    evl_shield_end(loop);
    /* Outside the shield the outer deadline, long past, applies again. */
    sd.after_rc = evl_sleep(loop, EVL_MSEC(1));
    evl_deadline_restore(loop, outer);
    return 0;
}

static int sd_cancelled(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    sd.cancelled_rc = evl_sleep(loop, EVL_MSEC(30)); /* cancelled meanwhile: not interrupted */
    evl_shield_end(loop);
    sd.after_cancel_rc = evl_sleep(loop, EVL_MSEC(1));
    return 0;
}

static int sd_canceller(evl_loop *loop, void *arg) {
    CHECK_OK(evl_sleep(loop, EVL_MSEC(5)));
    CHECK_OK(evl_task_cancel(loop, (evl_task *)arg));
    return 0;
}

static void deadline_inside_a_shield_applies(void) {
    evl_loop *loop = check_loop_new();
    evl_task *victim;
    check_watchdog(20);
    memset(&sd, 0, sizeof sd);
    CHECK_OK(nonblocking_pair(sd.sv));
    CHECK_OK(evl_task_spawn(loop, NULL, sd_task, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, &victim, sd_cancelled, NULL, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, sd_canceller, victim, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(sd.outer_sleep_rc, 0);
    CHECK_EQ(sd.inner_rc, -ETIMEDOUT);
    CHECK(sd.inner_took >= EVL_MSEC(45));
    CHECK(sd.inner_took < check_scaled(EVL_MSEC(1000)));
    CHECK_EQ(sd.nested_rc, -ETIMEDOUT);
    CHECK_EQ(sd.after_rc, -ETIMEDOUT);
    CHECK_EQ(sd.cancelled_rc, 0);
    CHECK_EQ(sd.after_cancel_rc, -ECANCELED);
    CHECK_OK(evl_task_join(loop, victim, NULL));
    close(sd.sv[0]);
    close(sd.sv[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* A group waiter that passes a deadline set inside its shield cancels the children and
   still waits for them: it never returns while a child runs (the fuzzer found that it did). */
static int gw_child_done;

static int gw_child(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop); /* cleanup that must finish */
    CHECK_OK(evl_sleep(loop, EVL_MSEC(50)));
    evl_shield_end(loop);
    gw_child_done = 1;
    return 0;
}

static int gw_parent(evl_loop *loop, void *arg) {
    evl_group *g;
    int *rc = (int *)arg;
    CHECK_OK(evl_group_new(loop, &g));
    CHECK_OK(evl_group_spawn(loop, g, gw_child, NULL, NULL));
    evl_shield_begin(loop);
    evl_deadline(loop, evl_now(loop) + EVL_MSEC(10));
    *rc = evl_group_wait(loop, g);
    CHECK_EQ(gw_child_done, 1);
    evl_shield_end(loop);
    evl_group_free(loop, g);
    return 0;
}

static void group_wait_in_a_shield_waits_for_its_children(void) {
    evl_loop *loop = check_loop_new();
    int rc = 1;
    check_watchdog(20);
    CHECK_OK(evl_task_spawn(loop, NULL, gw_parent, &rc, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK_EQ(gw_child_done, 1);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- 6. a closed queue is the end of a stream ---- */
static struct {
    evl_queue *q;
    int putter_rc, getter_rc;
    void *got[4];
    int gets[4];
} qc;

static int qc_putter(evl_loop *loop, void *arg) {
    qc.putter_rc = evl_queue_put(loop, qc.q, arg); /* the queue is full: waits */
    return 0;
}

static int qc_getter(evl_loop *loop, void *arg) {
    evl_queue *empty = (evl_queue *)arg;
    void *item;
    qc.getter_rc = evl_queue_get(loop, empty, &item);
    return 0;
}

static int qc_drainer(evl_loop *loop, void *arg) {
    int i;
    (void)arg;
    for (i = 0; i < 4; i++) qc.gets[i] = evl_queue_get(loop, qc.q, &qc.got[i]);
    return 0;
}

static void closed_queue_ends_the_stream(void) {
    evl_loop *loop = check_loop_new();
    evl_queue *empty;
    int a = 1, b = 2, c = 3, i;
    void *item;
    check_watchdog(20);
    memset(&qc, 0, sizeof qc);
    CHECK_OK(evl_queue_new(loop, &qc.q, 2));
    CHECK_OK(evl_queue_new(loop, &empty, 1));
    CHECK_OK(evl_queue_try_put(loop, qc.q, &a));
    CHECK_OK(evl_queue_try_put(loop, qc.q, &b));
    CHECK_OK(evl_task_spawn(loop, NULL, qc_putter, &c, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, qc_getter, empty, NULL));
    for (i = 0; i < 3; i++) evl_run_once(loop, 0); /* both wait now */
    evl_queue_close(loop, qc.q);
    evl_queue_close(loop, empty);
    CHECK_EQ(evl_queue_try_put(loop, qc.q, &c), -EPIPE);
    CHECK_OK(evl_task_spawn(loop, NULL, qc_drainer, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(qc.putter_rc, -EPIPE);
    CHECK_EQ(qc.getter_rc, -EPIPE);
    CHECK_OK(qc.gets[0]);
    CHECK(qc.got[0] == &a);
    CHECK_OK(qc.gets[1]);
    CHECK(qc.got[1] == &b);        /* the waiting putter's item never went in */
    CHECK_EQ(qc.gets[2], -EPIPE);
    CHECK_EQ(qc.gets[3], -EPIPE);
    CHECK_EQ(evl_queue_try_get(loop, qc.q, &item), -EPIPE);
    CHECK_EQ(evl_queue_len(qc.q), 0);
    evl_queue_free(loop, qc.q);
    evl_queue_free(loop, empty);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- 7. a group stopped on purpose has not failed ---- */
static struct {
    evl_group *g;
    int wait_rc, late_ran, member_rc;
    evl_group_failure failure;
} gc;

static int gc_sleeper(evl_loop *loop, void *arg) {
    (void)arg;
    return evl_sleep(loop, EVL_SEC(3600));
}

static int gc_failer(evl_loop *loop, void *arg) {
    int rc = evl_sleep(loop, EVL_MSEC(5));
    (void)arg;
    return rc < 0 ? rc : -EPROTO;
}

static int gc_late(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    gc.late_ran = 1;
    return 0;
}

static int gc_parent(evl_loop *loop, void *arg) {
    evl_task *member;
    evl_task_opts opts = {"member", 0};
    int failing = arg != NULL, i;
    CHECK_OK(evl_group_new(loop, &gc.g));
    for (i = 0; i < 3; i++) CHECK_OK(evl_group_spawn(loop, gc.g, gc_sleeper, NULL, NULL));
    CHECK_OK(evl_group_spawn_task(loop, gc.g, &member, gc_sleeper, NULL, &opts));
    CHECK(strcmp(evl_task_name(member), "member") == 0);
    if (failing) {
        evl_task_opts fopts = {"bad-apple", 0};
        CHECK_OK(evl_group_spawn_task(loop, gc.g, NULL, gc_failer, NULL, &fopts));
        CHECK_OK(evl_sleep(loop, EVL_MSEC(20))); /* the failure comes first */
    } else {
        CHECK_OK(evl_task_cancel(loop, member)); /* one member, through its handle */
        CHECK_OK(evl_yield(loop));
        CHECK_EQ(evl_task_cancel(loop, member), -ESRCH); /* it has finished */
    }
    evl_group_cancel(loop, gc.g);
    CHECK_OK(evl_group_spawn(loop, gc.g, gc_late, NULL, NULL)); /* cancelled before it runs */
    gc.wait_rc = evl_group_wait(loop, gc.g);
    evl_group_first_failure(gc.g, &gc.failure);
    evl_group_free(loop, gc.g);
    return 0;
}

static void group_cancel_stops_it_on_purpose(void) {
    evl_loop *loop = check_loop_new();
    check_watchdog(20);
    memset(&gc, 0, sizeof gc);
    CHECK_OK(evl_task_spawn(loop, NULL, gc_parent, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(gc.wait_rc, 0);
    CHECK_EQ(gc.late_ran, 0);
    CHECK_EQ(gc.failure.error, 0);
    CHECK_EQ(gc.failure.failures, 0);
    /* A failure before the cancel is still what the wait returns, and is named. */
    memset(&gc, 0, sizeof gc);
    CHECK_OK(evl_task_spawn(loop, NULL, gc_parent, (void *)1, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(gc.wait_rc, -EPROTO);
    CHECK_EQ(gc.failure.error, -EPROTO);
    CHECK_EQ(gc.failure.failures, 1);
    CHECK(strcmp(gc.failure.task_name, "bad-apple") == 0);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- 8. every errno the C library names has a name ---- */
static void strerror_names_every_errno(void) {
    int e, named = 0;
    for (e = 1; e < 4096; e++) {
        const char *libc = strerror(e);
        if (!libc || strncmp(libc, "Unknown error", 13) == 0) continue;
        named++;
        if (strcmp(evl_strerror(-e), "unknown error") == 0)
            fprintf(stderr, "errno %d (%s) has no name\n", e, libc);
        CHECK(strcmp(evl_strerror(-e), "unknown error") != 0);
        CHECK(strcmp(evl_errname(-e), "unknown") != 0);
        CHECK(evl_errname(-e)[0] == 'E');
    }
    CHECK(named > 100);
    CHECK(strcmp(evl_errname(-EBADF), "EBADF") == 0);
    CHECK(strcmp(evl_errname(-ENOEXEC), "ENOEXEC") == 0);
    CHECK(strcmp(evl_strerror(-EPROTO), "protocol error") == 0);
    CHECK(strstr(evl_strerror(-EBUSY), "loop") == NULL); /* a second joiner is busy too */
    CHECK(strcmp(evl_strerror(0), "success") == 0);
    CHECK(strcmp(evl_strerror(1), "unknown error") == 0); /* not a negative errno */
    CHECK(strcmp(evl_strerror(-100000), "unknown error") == 0);
    CHECK(strcmp(evl_errname(-100000), "unknown") == 0);
}

/* ---- 9. a second signal ends evl_main with that signal ---- */
static int stubborn_main(evl_loop *loop, void *arg) {
    int signo = (int)(intptr_t)arg;
    CHECK_OK(kill(getpid(), signo)); /* the first: a graceful shutdown begins */
    evl_shield_begin(loop);          /* ...which this main ignores */
    CHECK_OK(evl_sleep(loop, EVL_MSEC(20)));
    CHECK_OK(kill(getpid(), signo)); /* the second: exit at once */
    CHECK_OK(evl_sleep(loop, EVL_SEC(5)));
    evl_shield_end(loop);
    return 0;
}

static void second_signal_exits_with_its_own_status(void) {
    static const int signals[] = {SIGTERM, SIGINT};
    size_t i;
    check_watchdog(20);
    for (i = 0; i < 2; i++) {
        int status = 0;
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            evl_config cfg;
            signal(signals[i], SIG_DFL); /* a background job starts with SIGINT ignored */
            evl_config_init(&cfg);
            cfg.log = dbg_capture;
            _exit(evl_main(&cfg, stubborn_main, (void *)(intptr_t)signals[i]) == 0 ? 0 : 1);
        }
        CHECK_EQ(waitpid(pid, &status, 0), pid);
        CHECK(WIFSIGNALED(status));
        CHECK_EQ(WTERMSIG(status), signals[i]);
    }
}

/* ---- 10. a partial write says how much went out ---- */
static struct {
    int sv[2];
    size_t sent;
    int last_rc, calls;
} pw;

static int pw_writer(evl_loop *loop, void *arg) {
    static char chunk[256 * 1024];
    evl_time old = evl_deadline(loop, evl_now(loop) + EVL_MSEC(50));
    (void)arg;
    memset(chunk, 'x', sizeof chunk);
    for (;;) {
        ssize_t n = evl_write(loop, pw.sv[0], chunk, sizeof chunk);
        if (n < 0) {
            pw.last_rc = (int)n;
            break;
        }
        CHECK(n > 0 && (size_t)n <= sizeof chunk);
        pw.sent += (size_t)n;
        pw.calls++;
    }
    evl_deadline_restore(loop, old);
    return 0;
}

static void evl_write_reports_partial_progress(void) {
    evl_loop *loop = check_loop_new();
    int small = 4096;
    size_t got = 0;
    char buf[65536];
    ssize_t n;
    check_watchdog(20);
    memset(&pw, 0, sizeof pw);
    CHECK_OK(nonblocking_pair(pw.sv));
    setsockopt(pw.sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    CHECK_OK(evl_task_spawn(loop, NULL, pw_writer, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(pw.last_rc, -ETIMEDOUT);
    CHECK(pw.sent > 0);
    CHECK(pw.sent < 256 * 1024); /* the peer never read: the first write was short */
    while ((n = read(pw.sv[1], buf, sizeof buf)) > 0) got += (size_t)n;
    CHECK_EQ(got, pw.sent);      /* every byte counted went out, and no other */
    close(pw.sv[0]);
    close(pw.sv[1]);
    CHECK_OK(evl_loop_close(loop));
}

static const check_case cases[] = {
    {"executor_run_waits_for_a_cancelled_job", executor_run_waits_for_a_cancelled_job},
    {"executor_run_waits_past_its_deadline", executor_run_waits_past_its_deadline},
    {"loop_close_keeps_a_stack_its_job_writes_to", loop_close_keeps_a_stack_its_job_writes_to},
    {"cancelled_future_completes_when_its_job_returns", cancelled_future_completes_when_its_job_returns},
    {"shutdown_past_deadline_asks_the_job_to_stop", shutdown_past_deadline_asks_the_job_to_stop},
    {"loop_close_refuses_new_jobs", loop_close_refuses_new_jobs},
    {"graceful_shutdown_runs_on_done_callbacks", graceful_shutdown_runs_on_done_callbacks},
    {"evl_close_wakes_every_waiting_task", evl_close_wakes_every_waiting_task},
    {"plain_close_is_reported_in_debug_mode", plain_close_is_reported_in_debug_mode},
    {"close_reports_abandoned_task_without_debug", close_reports_abandoned_task_without_debug},
    {"deadline_inside_a_shield_applies", deadline_inside_a_shield_applies},
    {"group_wait_in_a_shield_waits_for_its_children", group_wait_in_a_shield_waits_for_its_children},
    {"closed_queue_ends_the_stream", closed_queue_ends_the_stream},
    {"group_cancel_stops_it_on_purpose", group_cancel_stops_it_on_purpose},
    {"strerror_names_every_errno", strerror_names_every_errno},
    {"second_signal_exits_with_its_own_status", second_signal_exits_with_its_own_status},
    {"evl_write_reports_partial_progress", evl_write_reports_partial_progress},
};

CHECK_MAIN(cases)
