/* Signal watchers: delivery after evl_signal_start (also of a signal sent before evl_run),
   no lost arrivals under a flood from another thread, one signal reaching the loops of two
   threads, bad signal numbers, the old disposition restored after the last watcher,
   evl_signal_start from another thread, callbacks that stop watchers, and evl_loop_fork: the
   child's timers, I/O and signals work, the parent's loop does not hear the child's signal
   and still works itself, and the child forgets the parent's executor jobs.

   Every case must be clean under ThreadSanitizer. */
#define EVLOOP_IMPLEMENTATION
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
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

static void watchdog(void) {
    check_watchdog(20);
}

static evl_loop *sloop_new(void) {
    watchdog();
    return check_loop_new();
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

static void set_int(int *p, int v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Runs the loop until *flag reaches `want` or `limit` passes; returns the flag. */
static int run_until(evl_loop *loop, const int *flag, int want, evl_time limit) {
    evl_time until = clock_ns() + check_scaled(limit);
    while (get_int(flag) < want && clock_ns() < until) CHECK(evl_run_once(loop, EVL_MSEC(5)) >= 0);
    return get_int(flag);
}

/* Runs the loop for `d` of real time. */
static void run_for(evl_loop *loop, evl_time d) {
    evl_time until = clock_ns() + d;
    while (clock_ns() < until) CHECK(evl_run_once(loop, EVL_MSEC(5)) >= 0);
}

/* The handler a signal has now. */
static void (*disposition(int signo))(int) {
    struct sigaction sa;
    CHECK_OK(sigaction(signo, NULL, &sa));
    return sa.sa_handler;
}

/* A watcher's callback: counts, on the loop thread. */
typedef struct counter {
    evl_signal sig;
    int hits;                 /* atomic: read by other threads in some cases */
    pthread_t thread;         /* where the last hit ran */
    int stop_after;           /* stop the watcher after this many hits (0: never) */
    int stop_loop;            /* then evl_stop the loop too */
} counter;

static void count_cb(evl_loop *loop, void *arg) {
    counter *c = (counter *)arg;
    int n = __atomic_add_fetch(&c->hits, 1, __ATOMIC_SEQ_CST);
    c->thread = pthread_self();
    if (c->stop_after && n >= c->stop_after) {
        CHECK_OK(evl_signal_stop(loop, &c->sig));
        if (c->stop_loop) evl_stop(loop);
    }
}

static void counter_start(evl_loop *loop, counter *c, int signo) {
    memset(c, 0, sizeof *c);
    evl_signal_init(&c->sig, signo, count_cb, c);
    CHECK_OK(evl_signal_start(loop, &c->sig));
}

/* ---- a signal sent before evl_run is delivered when the loop runs ---- */

static void fail_timeout(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    fprintf(stderr, "the signal was not delivered in time\n");
    exit(1);
}

static void signal_before_run_is_delivered(void) {
    evl_loop *loop = sloop_new();
    counter c;
    evl_timer limit;
    evl_time t0;
    counter_start(loop, &c, SIGUSR1);
    c.stop_after = 1; /* then nothing is left: evl_run returns */
    CHECK_OK(raise(SIGUSR1));
    CHECK_EQ(get_int(&c.hits), 0); /* not in the handler: on the loop, when it runs */
    evl_timer_init(&limit, fail_timeout, NULL);
    CHECK_OK(evl_timer_start(loop, &limit, check_scaled(EVL_SEC(2)), 0));
    t0 = clock_ns();
    c.stop_loop = 1;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(get_int(&c.hits), 1);
    CHECK(pthread_equal(c.thread, pthread_self()));
    CHECK(clock_ns() - t0 < check_scaled(EVL_MSEC(500)));
    CHECK_OK(evl_timer_stop(loop, &limit));
    CHECK_OK(evl_loop_close(loop));
}

/* A signal that arrives while its own watcher's callback runs is delivered again. */
static void resignal_cb(evl_loop *loop, void *arg) {
    counter *c = (counter *)arg;
    int n = __atomic_add_fetch(&c->hits, 1, __ATOMIC_SEQ_CST);
    if (n == 1) CHECK_OK(raise(c->sig.signo));
    if (n == 2) {
        CHECK_OK(evl_signal_stop(loop, &c->sig));
        evl_stop(loop);
    }
}

static void signal_during_its_callback_is_delivered_again(void) {
    evl_loop *loop = sloop_new();
    counter c;
    memset(&c, 0, sizeof c);
    evl_signal_init(&c.sig, SIGUSR2, resignal_cb, &c);
    CHECK_OK(evl_signal_start(loop, &c.sig));
    CHECK_OK(raise(SIGUSR2));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(get_int(&c.hits), 2);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- a flood of signals from another thread while the loop is busy ---- */

static struct {
    int n;                    /* signals to send: 10 000, 1 000 under a slow tool */
    evl_loop *loop;
    pthread_t loop_thread;
    int sender_done;          /* atomic */
    int sent;                 /* atomic */
    int hits_during;          /* loop thread: deliveries while the sender was sending */
    int busy_runs;
    counter c;
} fl;

static void *flood_sender(void *arg) {
    int i;
    (void)arg;
    for (i = 0; i < fl.n; i++) {
        /* Half to the process (any thread may take it), half to the loop's thread. */
        if (i % 2) CHECK_OK(kill(getpid(), SIGUSR1));
        else CHECK_OK(pthread_kill(fl.loop_thread, SIGUSR1));
        __atomic_add_fetch(&fl.sent, 1, __ATOMIC_SEQ_CST);
        if (i % 64 == 0) sched_yield();
        if (i % 1000 == 999) sleep_ns(EVL_USEC(100)); /* the flood spans many iterations */
    }
    set_int(&fl.sender_done, 1);
    return NULL;
}

/* Keeps the loop busy in short bursts (about 200 us each) while the sender sends. */
static void busy_cb(evl_loop *loop, void *arg) {
    evl_time until = clock_ns() + EVL_USEC(200);
    (void)arg;
    while (clock_ns() < until) {
    }
    fl.busy_runs++;
    if (!get_int(&fl.sender_done)) {
        fl.hits_during = get_int(&fl.c.hits);
        CHECK_OK(evl_call_soon(loop, busy_cb, NULL));
    }
}

static void flood_is_delivered_and_nothing_lost(void) {
    evl_loop *loop = sloop_new();
    pthread_t sender;
    int settled, before;
    memset(&fl, 0, sizeof fl);
    fl.n = check_rounds(10000, 1000);
    fl.loop = loop;
    fl.loop_thread = pthread_self();
    counter_start(loop, &fl.c, SIGUSR1);
    CHECK_OK(evl_call_soon(loop, busy_cb, NULL));
    CHECK_OK(pthread_create(&sender, NULL, flood_sender, NULL));
    while (!get_int(&fl.sender_done)) CHECK(evl_run_once(loop, EVL_MSEC(5)) >= 0);
    CHECK_OK(pthread_join(sender, NULL));
    CHECK_EQ(get_int(&fl.sent), fl.n);
    CHECK(fl.busy_runs > 1);
    /* Deliveries happened while the sender sent, each arrival coalesced with the ones before
       it was run, never more often than sent. */
    run_for(loop, EVL_MSEC(50));
    settled = get_int(&fl.c.hits);
    CHECK(fl.hits_during >= 1);
    CHECK(settled >= 1);
    CHECK(settled <= fl.n);
    /* Quiet now: nothing more arrives. */
    run_for(loop, EVL_MSEC(50));
    CHECK_EQ(get_int(&fl.c.hits), settled);
    /* One more signal after the flood: delivered, exactly once (no pending flag was lost or
       left set). */
    before = settled;
    CHECK_OK(kill(getpid(), SIGUSR1));
    CHECK_EQ(run_until(loop, &fl.c.hits, before + 1, EVL_SEC(2)), before + 1);
    run_for(loop, EVL_MSEC(50));
    CHECK_EQ(get_int(&fl.c.hits), before + 1);
    /* And once more through the loop thread. */
    CHECK_OK(raise(SIGUSR1));
    CHECK_EQ(run_until(loop, &fl.c.hits, before + 2, EVL_SEC(2)), before + 2);
    CHECK_OK(evl_signal_stop(loop, &fl.c.sig));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- two loops in two threads both receive one signal ---- */

typedef struct loop_thread {
    pthread_t th;
    evl_loop *loop;
    counter c;
    int ready;               /* atomic */
    int rc;
} loop_thread;

static void *two_loops_main(void *arg) {
    loop_thread *lt = (loop_thread *)arg;
    CHECK_OK(evl_loop_new(&lt->loop, NULL));
    counter_start(lt->loop, &lt->c, SIGUSR2);
    lt->c.stop_after = 1; /* then nothing is left and evl_run returns */
    set_int(&lt->ready, 1);
    lt->rc = evl_run(lt->loop);
    CHECK(pthread_equal(lt->c.thread, pthread_self()));
    CHECK_OK(evl_loop_close(lt->loop));
    return NULL;
}

static void two_loops_in_two_threads_both_receive(void) {
    loop_thread a, b;
    void (*before)(int);
    watchdog();
    before = disposition(SIGUSR2);
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK_OK(pthread_create(&a.th, NULL, two_loops_main, &a));
    CHECK_OK(pthread_create(&b.th, NULL, two_loops_main, &b));
    while (!get_int(&a.ready) || !get_int(&b.ready)) sleep_ns(EVL_MSEC(1));
    CHECK_OK(kill(getpid(), SIGUSR2)); /* once */
    CHECK_OK(pthread_join(a.th, NULL));
    CHECK_OK(pthread_join(b.th, NULL));
    CHECK_OK(a.rc);
    CHECK_OK(b.rc);
    CHECK_EQ(get_int(&a.c.hits), 1);
    CHECK_EQ(get_int(&b.c.hits), 1);
    CHECK(disposition(SIGUSR2) == before);
}

/* ---- bad input ---- */

static void nop_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
}

static void invalid_signals_are_einval(void) {
    evl_loop *loop = sloop_new();
    static const int bad[] = {0, -1, 65, NSIG, 1000, SIGKILL, SIGSTOP};
    evl_signal s;
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        evl_signal_init(&s, bad[i], nop_cb, NULL);
        CHECK_EQ(evl_signal_start(loop, &s), -EINVAL);
        CHECK_EQ(s.active, 0);
    }
    CHECK_EQ(evl_signal_start(loop, NULL), -EINVAL);
    CHECK_EQ(evl_signal_stop(loop, NULL), -EINVAL);
    evl_signal_init(&s, SIGUSR1, NULL, NULL); /* no callback */
    CHECK_EQ(evl_signal_start(loop, &s), -EINVAL);
    /* Stopping a watcher that was never started is harmless. */
    evl_signal_init(&s, SIGUSR1, nop_cb, NULL);
    CHECK_OK(evl_signal_stop(loop, &s));
    /* Nothing was started: the loop has nothing to wait for. */
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- the old disposition returns after the last watcher ---- */

static int custom_hits;

static void custom_handler(int signo) {
    (void)signo;
    __atomic_add_fetch(&custom_hits, 1, __ATOMIC_SEQ_CST);
}

static void old_disposition_comes_back(void) {
    evl_loop *loop = sloop_new(), *loop2;
    struct sigaction sa, old;
    counter a, b, c;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = custom_handler;
    sigemptyset(&sa.sa_mask);
    CHECK_OK(sigaction(SIGUSR2, &sa, NULL));
    counter_start(loop, &a, SIGUSR2);
    counter_start(loop, &b, SIGUSR2);
    CHECK(disposition(SIGUSR2) != custom_handler);
    /* Both watchers hear one signal; the custom handler does not. */
    CHECK_OK(raise(SIGUSR2));
    CHECK_EQ(run_until(loop, &b.hits, 1, EVL_SEC(2)), 1);
    run_for(loop, EVL_MSEC(10));
    CHECK_EQ(get_int(&a.hits), 1);
    CHECK_EQ(get_int(&custom_hits), 0);
    CHECK_OK(evl_signal_stop(loop, &a.sig));
    CHECK(disposition(SIGUSR2) != custom_handler); /* b still watches */
    CHECK_OK(evl_signal_stop(loop, &b.sig));
    CHECK_OK(sigaction(SIGUSR2, NULL, &old));
    CHECK(old.sa_handler == custom_handler);
    CHECK_OK(raise(SIGUSR2));
    CHECK_EQ(get_int(&custom_hits), 1);
    run_for(loop, EVL_MSEC(10));
    CHECK_EQ(get_int(&a.hits), 1);
    CHECK_EQ(get_int(&b.hits), 1);
    /* Watchers on two loops; the loops closed (not stopped): the same. */
    CHECK_OK(evl_loop_new(&loop2, NULL));
    counter_start(loop, &a, SIGUSR2);
    counter_start(loop2, &c, SIGUSR2);
    CHECK(disposition(SIGUSR2) != custom_handler);
    CHECK_OK(evl_loop_close(loop2));
    CHECK(disposition(SIGUSR2) != custom_handler);
    CHECK_EQ(c.sig.active, 0);
    CHECK_OK(evl_loop_close(loop));
    CHECK(disposition(SIGUSR2) == custom_handler);
    CHECK_EQ(a.sig.active, 0);
    signal(SIGUSR2, SIG_DFL);
}

/* ---- evl_signal_start from another thread ---- */

static struct {
    evl_loop *loop;
    counter c;
    int started;              /* atomic */
} xt;

static void xt_cb(evl_loop *loop, void *arg) {
    (void)arg;
    xt.c.thread = pthread_self();
    __atomic_add_fetch(&xt.c.hits, 1, __ATOMIC_SEQ_CST);
    CHECK_OK(evl_signal_stop(loop, &xt.c.sig));
    evl_loop_unref(loop);
}

static void *xt_starter(void *arg) {
    (void)arg;
    sleep_ns(EVL_MSEC(20)); /* the loop is asleep in its poll by now */
    CHECK_OK(evl_signal_start(xt.loop, &xt.c.sig));
    set_int(&xt.started, 1);
    CHECK_OK(kill(getpid(), SIGHUP));
    return NULL;
}

static void start_from_another_thread(void) {
    evl_loop *loop = sloop_new();
    pthread_t th;
    memset(&xt, 0, sizeof xt);
    xt.loop = loop;
    evl_signal_init(&xt.c.sig, SIGHUP, xt_cb, NULL);
    evl_loop_ref(loop); /* the loop waits for the watcher's signal */
    CHECK_OK(pthread_create(&th, NULL, xt_starter, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(get_int(&xt.started), 1);
    CHECK_EQ(get_int(&xt.c.hits), 1);
    CHECK(pthread_equal(xt.c.thread, pthread_self())); /* ran on the loop's thread */
    CHECK(disposition(SIGHUP) == SIG_DFL);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- a callback stops itself and another watcher of the same signal ---- */

static struct {
    evl_signal a, b;
    int hits_a, hits_b;
    int first_round_done;
    counter keep;
} st2;

static void st2_cb(evl_loop *loop, void *arg) {
    evl_signal *self = (evl_signal *)arg;
    if (self == &st2.a) st2.hits_a++;
    else st2.hits_b++;
    /* Whichever runs first stops both: the other must not run in this round either. */
    CHECK_OK(evl_signal_stop(loop, &st2.a));
    CHECK_OK(evl_signal_stop(loop, &st2.b));
}

static void callback_stops_itself_and_another(void) {
    evl_loop *loop = sloop_new();
    memset(&st2, 0, sizeof st2);
    evl_signal_init(&st2.a, SIGHUP, st2_cb, &st2.a);
    evl_signal_init(&st2.b, SIGHUP, st2_cb, &st2.b);
    CHECK_OK(evl_signal_start(loop, &st2.a));
    CHECK_OK(evl_signal_start(loop, &st2.b));
    counter_start(loop, &st2.keep, SIGHUP); /* keeps the handler installed */
    CHECK_OK(raise(SIGHUP));
    CHECK_EQ(run_until(loop, &st2.keep.hits, 1, EVL_SEC(2)), 1);
    run_for(loop, EVL_MSEC(10));
    CHECK_EQ(st2.hits_a + st2.hits_b, 1);
    CHECK_EQ(st2.a.active, 0);
    CHECK_EQ(st2.b.active, 0);
    /* A second signal: only the watcher still started runs. */
    CHECK_OK(raise(SIGHUP));
    CHECK_EQ(run_until(loop, &st2.keep.hits, 2, EVL_SEC(2)), 2);
    run_for(loop, EVL_MSEC(10));
    CHECK_EQ(st2.hits_a + st2.hits_b, 1);
    /* Restarting a stopped watcher works. */
    CHECK_OK(evl_signal_start(loop, &st2.a));
    CHECK_OK(raise(SIGHUP));
    CHECK_EQ(run_until(loop, &st2.keep.hits, 3, EVL_SEC(2)), 3);
    run_for(loop, EVL_MSEC(10));
    CHECK_EQ(st2.hits_a + st2.hits_b, 2);
    CHECK_OK(evl_signal_stop(loop, &st2.keep.sig));
    CHECK(disposition(SIGHUP) == SIG_DFL);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- fork ---- */

/* The child's verdicts, as exit statuses. */
enum { CHILD_OK = 0, CHILD_FORK_FAILED = 10, CHILD_NO_TIMER, CHILD_NO_IO, CHILD_NO_SIGNAL,
       CHILD_RUN_FAILED, CHILD_TASK, CHILD_JOB, CHILD_TOO_MANY_SIGNALS };

static struct {
    int timer_fired, io_fired, io_byte;
    evl_timer timer;
    evl_io io;
    int data[2];
} fc;

static void fc_timer(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    fc.timer_fired++;
}

static void fc_io(evl_loop *loop, void *arg, int events) {
    char b = 0;
    (void)arg;
    if ((events & EVL_READ) && read(fc.data[0], &b, 1) == 1) {
        fc.io_fired++;
        fc.io_byte = b;
        evl_io_stop(loop, &fc.io);
    }
}

/* In the child: the loop forked from the parent runs timers, I/O and the signal the parent
   sends, and nothing else. */
static int fork_child(evl_loop *loop, counter *c, int ready_fd) {
    evl_time until;
    char r = 'r';
    if (evl_loop_fork(loop) != 0) return CHILD_FORK_FAILED;
    CHECK_OK(pipe(fc.data));
    evl_timer_init(&fc.timer, fc_timer, NULL);
    CHECK_OK(evl_timer_start(loop, &fc.timer, EVL_MSEC(10), 0));
    evl_io_init(&fc.io, fc.data[0], fc_io, NULL);
    CHECK_OK(evl_io_start(loop, &fc.io, EVL_READ));
    CHECK_EQ(write(fc.data[1], "x", 1), 1);
    CHECK_EQ(write(ready_fd, &r, 1), 1); /* now the parent sends SIGUSR1 */
    until = clock_ns() + check_scaled(EVL_SEC(3));
    while ((get_int(&c->hits) == 0 || !fc.timer_fired || !fc.io_fired) && clock_ns() < until)
        if (evl_run_once(loop, EVL_MSEC(5)) < 0) return CHILD_RUN_FAILED;
    if (!fc.timer_fired) return CHILD_NO_TIMER;
    if (!fc.io_fired || fc.io_byte != 'x') return CHILD_NO_IO;
    if (get_int(&c->hits) != 1) return CHILD_NO_SIGNAL;
    run_for(loop, EVL_MSEC(20));
    if (get_int(&c->hits) != 1) return CHILD_TOO_MANY_SIGNALS;
    return CHILD_OK;
}

/* Sends SIGUSR1 to the parent from a helper thread, so the parent's loop, asleep in its
   poll, is woken through its wakeup fd and not by an interrupted poll. */
static void *raise_in_helper(void *arg) {
    (void)arg;
    sleep_ns(EVL_MSEC(30));
    CHECK_OK(raise(SIGUSR1)); /* to this helper thread: the handler runs here */
    return NULL;
}

static void fork_child_gets_its_own_signals(void) {
    evl_loop *loop = sloop_new();
    counter c;
    int ready[2], status = 0;
    pid_t pid;
    char r = 0;
    pthread_t helper;
    evl_time t0;
    counter_start(loop, &c, SIGUSR1);
    CHECK_OK(pipe(ready));
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        _exit(fork_child(loop, &c, ready[1]));
    }
    close(ready[1]);
    CHECK_EQ(read(ready[0], &r, 1), 1);
    CHECK_EQ(r, 'r');
    CHECK_OK(kill(pid, SIGUSR1));
    /* The parent's loop never hears the child's signal. */
    run_for(loop, EVL_MSEC(150));
    CHECK_EQ(get_int(&c.hits), 0);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != CHILD_OK)
        fprintf(stderr, "child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), CHILD_OK);
    CHECK_EQ(get_int(&c.hits), 0);
    /* The parent's loop still works after the child rebuilt its copy: a signal taken by
       another thread wakes it from a poll that would otherwise sleep for 2 s. */
    {
        evl_timer limit;
        evl_timer_init(&limit, fail_timeout, NULL);
        CHECK_OK(evl_timer_start(loop, &limit, check_scaled(EVL_SEC(2)), 0));
        c.stop_after = 1;
        c.stop_loop = 1;
        t0 = clock_ns();
        CHECK_OK(pthread_create(&helper, NULL, raise_in_helper, NULL));
        CHECK_OK(evl_run(loop));
        CHECK_OK(pthread_join(helper, NULL));
        CHECK_EQ(get_int(&c.hits), 1);
        CHECK(pthread_equal(c.thread, pthread_self()));
        CHECK(clock_ns() - t0 < check_scaled(EVL_SEC(1)));
        CHECK_OK(evl_timer_stop(loop, &limit));
    }
    close(ready[0]);
    CHECK_OK(evl_loop_close(loop));
}

/* fork with executor work in flight, on the default pool and on one of the program's own: in
   the child the parent's jobs fail (the task waiting on one hears -ECANCELED, futures too, and
   every job is freed), evl_run returns once nothing is left, and (where the tool allows threads
   in a forked child) both pools work again and the program's own shuts down cleanly. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int open, started; /* started: blockers running */
    evl_executor *own;   /* the program's own pool */
    evl_future *own_job; /* a job on it, in flight at the fork */
} fg;

static void *fg_blocker(void *arg) {
    pthread_mutex_lock(&fg.m);
    fg.started++;
    pthread_cond_broadcast(&fg.c);
    while (!fg.open) pthread_cond_wait(&fg.c, &fg.m);
    pthread_mutex_unlock(&fg.m);
    return arg;
}

static void *fg_calc(void *arg) {
    return (void *)((uintptr_t)arg * 2 + 1);
}

static struct {
    int rc;
    int returned;
} fw;

static int fg_waiter(evl_loop *loop, void *arg) {
    void *out = NULL;
    (void)arg;
    fw.rc = evl_executor_run(loop, fg_calc, (void *)(uintptr_t)5, &out);
    fw.returned = 1;
    return fw.rc;
}

#ifndef UNDER_TSAN
static int fg_child_new_pool(evl_loop *loop, void *arg) {
    void *out = NULL;
    (void)arg;
    CHECK_OK(evl_executor_run(loop, fg_calc, (void *)(uintptr_t)20, &out));
    CHECK_EQ((uintptr_t)out, 41);
    CHECK_OK(evl_executor_run_on(loop, fg.own, fg_calc, (void *)(uintptr_t)3, &out));
    CHECK_EQ((uintptr_t)out, 7);
    return 0;
}
#endif

static int fork_executor_child(evl_loop *loop, evl_future *blocker, evl_task *waiter) {
    int result = 0;
    if (evl_loop_fork(loop) != 0) return CHILD_FORK_FAILED;
    /* Nothing left but the waiter, which hears -ECANCELED: evl_run must return. */
    alarm((unsigned)(2 * check_time_scale())); /* a hang here ends in check_on_alarm: exit 3 */
    if (evl_run(loop) != 0) return CHILD_RUN_FAILED;
    if (!evl_task_done(waiter) || !fw.returned) return CHILD_TASK;
    if (evl_task_join(loop, waiter, &result) != 0 || result != -ECANCELED) return CHILD_TASK;
    if (!evl_future_done(blocker) || evl_future_await(loop, blocker, NULL) != -ECANCELED)
        return CHILD_JOB;
    evl_future_free(loop, blocker);
    if (!evl_future_done(fg.own_job) || evl_future_await(loop, fg.own_job, NULL) != -ECANCELED)
        return CHILD_JOB;
    evl_future_free(loop, fg.own_job);
#ifndef UNDER_TSAN
    {
        /* ThreadSanitizer stops a forked child of a threaded process that creates a thread
           (die_after_fork): only without it does the child start a new pool. */
        evl_task *t;
        if (evl_task_spawn(loop, &t, fg_child_new_pool, NULL, NULL) != 0) return CHILD_JOB;
        if (evl_run(loop) != 0) return CHILD_RUN_FAILED;
        if (evl_task_join(loop, t, &result) != 0 || result != 0) return CHILD_JOB;
    }
#endif
    if (evl_executor_shutdown(loop, fg.own, EVL_SEC(5)) != 0) return CHILD_JOB;
    return evl_loop_close(loop) == 0 ? CHILD_OK : CHILD_RUN_FAILED;
}

static void fork_forgets_parent_executor_jobs(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_future *blocker;
    evl_task *waiter;
    evl_stats st;
    int status = 0, i, result = 0;
    pid_t pid;
    void *v = NULL;
    watchdog();
    memset(&fg, 0, sizeof fg);
    memset(&fw, 0, sizeof fw);
    CHECK_OK(pthread_mutex_init(&fg.m, NULL));
    CHECK_OK(pthread_cond_init(&fg.c, NULL));
    evl_config_init(&cfg);
    cfg.executor_threads = 1;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_OK(evl_executor_submit(loop, fg_blocker, NULL, &blocker));
    CHECK_OK(evl_executor_new(loop, &fg.own, 1, 4));
    CHECK_OK(evl_executor_submit_on(loop, fg.own, fg_blocker, (void *)(uintptr_t)2, &fg.own_job));
    pthread_mutex_lock(&fg.m);
    while (fg.started < 2) pthread_cond_wait(&fg.c, &fg.m);
    pthread_mutex_unlock(&fg.m);
    CHECK_OK(evl_task_spawn(loop, &waiter, fg_waiter, NULL, NULL));
    for (i = 0; i < 5; i++) evl_run_once(loop, 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.executor_queue, 1); /* the waiter's job is queued behind the blocker */
    CHECK_EQ(st.executor_busy, 2);  /* both blockers */
    CHECK(!evl_task_done(waiter));
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(fork_executor_child(loop, blocker, waiter));
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != CHILD_OK)
        fprintf(stderr, "child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), CHILD_OK);
    /* The parent is untouched: its jobs complete normally. */
    pthread_mutex_lock(&fg.m);
    fg.open = 1;
    pthread_cond_broadcast(&fg.c);
    pthread_mutex_unlock(&fg.m);
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, waiter, &result));
    CHECK_OK(result);
    CHECK_OK(fw.rc);
    CHECK_OK(evl_future_await(loop, blocker, &v));
    evl_future_free(loop, blocker);
    CHECK_OK(evl_future_await(loop, fg.own_job, &v));
    CHECK_EQ((uintptr_t)v, 2);
    evl_future_free(loop, fg.own_job);
    CHECK_OK(evl_executor_shutdown(loop, fg.own, EVL_SEC(5)));
    CHECK_OK(evl_loop_close(loop));
    pthread_cond_destroy(&fg.c);
    pthread_mutex_destroy(&fg.m);
}

/* In the child only the forked loop survives: when its last watcher of a signal stops, the
   old disposition comes back, although the parent had another loop watching that signal. */
enum { CHILD_DISPOSITION_KEPT = 30 };

static void fork_child_restores_disposition_after_its_last_watcher(void) {
    evl_loop *a = sloop_new(), *b;
    counter ca, cb;
    void (*before)(int) = disposition(SIGUSR2);
    int status = 0;
    pid_t pid;
    CHECK(before == SIG_DFL);
    CHECK_OK(evl_loop_new(&b, NULL));
    counter_start(a, &ca, SIGUSR2);
    counter_start(b, &cb, SIGUSR2);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (evl_loop_fork(a) != 0) _exit(CHILD_FORK_FAILED);
        if (evl_signal_stop(a, &ca.sig) != 0) _exit(CHILD_RUN_FAILED);
        _exit(disposition(SIGUSR2) == before ? CHILD_OK : CHILD_DISPOSITION_KEPT);
    }
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), CHILD_OK);
    /* The parent's own table is untouched. */
    CHECK(disposition(SIGUSR2) != before);
    CHECK_OK(evl_signal_stop(a, &ca.sig));
    CHECK(disposition(SIGUSR2) != before);
    CHECK_OK(evl_signal_stop(b, &cb.sig));
    CHECK(disposition(SIGUSR2) == before);
    CHECK_OK(evl_loop_close(b));
    CHECK_OK(evl_loop_close(a));
}

static const check_case cases[] = {
    {"signal_before_run_is_delivered", signal_before_run_is_delivered},
    {"signal_during_its_callback_is_delivered_again", signal_during_its_callback_is_delivered_again},
    {"flood_is_delivered_and_nothing_lost", flood_is_delivered_and_nothing_lost},
    {"two_loops_in_two_threads_both_receive", two_loops_in_two_threads_both_receive},
    {"invalid_signals_are_einval", invalid_signals_are_einval},
    {"old_disposition_comes_back", old_disposition_comes_back},
    {"start_from_another_thread", start_from_another_thread},
    {"callback_stops_itself_and_another", callback_stops_itself_and_another},
    {"fork_child_gets_its_own_signals", fork_child_gets_its_own_signals},
    {"fork_forgets_parent_executor_jobs", fork_forgets_parent_executor_jobs},
    {"fork_child_restores_disposition_after_its_last_watcher", fork_child_restores_disposition_after_its_last_watcher},
};

CHECK_MAIN(cases)
