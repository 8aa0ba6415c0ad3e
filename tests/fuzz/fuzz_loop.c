/* fuzz_loop.c - a libFuzzer target that drives one evloop loop with a sequence of operations
   read from the input and checks every callback against a reference model of the manual.

   The loop runs on the virtual clock, and every other source of nondeterminism is kept out of
   the checked part (posts from the second threads are made while the loop thread waits for
   them), so the model can predict, online, which callback must run next: each callback, timer,
   I/O callback, task step and post tells the model it is running, and the model aborts when
   that was not allowed. What the manual leaves open is checked as a set (the order of I/O
   callbacks within an iteration, how posts interleave with call_soon callbacks). At the end a
   burst of posts from two threads runs unchecked by the model but counted (exactly once, FIFO
   per thread), the loop is closed, and the fds and memory must all be back (ASan's leak check
   does the memory).

   The input: the first byte picks the backend (bits 0-1: epoll, poll, select; EVLOOP_BACKEND
   in the environment overrides it), debug mode (bit 2) and the final burst (bit 3); then each
   byte is an operation (byte % NOPS) followed by its arguments, and callbacks and tasks read
   what they do next from the same stream when they run. tests/fuzz/README.md lists the codes.

   Build (libFuzzer):  clang -g -O1 -fsanitize=fuzzer,address,undefined -I. \
                           tests/fuzz/fuzz_loop.c -o fuzz_loop -lpthread
   Build (plain C):    cc -DFUZZ_STANDALONE -std=c99 -O2 -g -I. tests/fuzz/fuzz_loop.c \
                           -o fuzz_loop_standalone -lpthread
   then run it on files or directories: ./fuzz_loop_standalone tests/fuzz/corpus */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds that keep one input in the milliseconds. */
#define MAX_OPS 64
#define MAX_JOBS 128
#define MAX_TIMERS 6
#define MAX_TASKS 6
#define MAX_FUTURES 3
#define MAX_ONDONE 16
#define MAX_STEPS 8
#define MAX_ACTIONS 2
#define NENDS 4                /* two socketpairs */
#define NWATCHERS 6            /* watcher w watches end w % NENDS: two ends have two watchers */
#define MAX_WRITES 8           /* unread writes per direction: far below a full socket buffer */
#define NPOSTERS 2
#ifndef BURST
#define BURST 64               /* posts per thread in the final unchecked burst */
#endif
#define RQ_CAP 2048

/* The model's timers: the user's, one sleep timer per task, and evl_run's guard. */
#define T_SLEEP(i) (MAX_TIMERS + (i))
#define T_GUARD (MAX_TIMERS + MAX_TASKS)
#define NMT (T_GUARD + 1)

static void fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fuzz_loop: model mismatch: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define CHECK(c, ...) do { if (!(c)) fail(__VA_ARGS__); } while (0)

/* FUZZ_TRACE=1 in the environment prints what the model sees (to write or debug a seed). */
static int trace_on = -1;

static void trace(const char *fmt, ...) {
    va_list ap;
    if (trace_on < 0) trace_on = getenv("FUZZ_TRACE") != NULL;
    if (!trace_on) return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- the input ---- */
static const uint8_t *in_p;
static size_t in_n, in_i;

static unsigned take(void) {
    return in_i < in_n ? in_p[in_i++] : 0;
}

/* ---- the model ---- */
enum { J_CB, J_TASK, J_ONDONE };
typedef struct mjob {
    int kind, id;
} mjob;

typedef struct mtimer {
    int active;
    evl_time when, repeat;
    uint64_t seq;
} mtimer;

enum { S_UNUSED, S_NEW, S_RUN, S_SUSP, S_DONE, S_JOINED };
enum { W_NONE, W_YIELD, W_SLEEP, W_FUTURE, W_JOIN };
typedef struct mtask {
    int state, cancelled, woken, wake_status;
    void *wake_value;
    int wait_kind, wait_obj;
    int claimed, joiner;       /* a joiner waits for this task (or was woken, not yet back) */
    int result;
    int immediate, immediate_rc;   /* the next suspension must return at once with this */
} mtask;

typedef struct mfuture {
    int done, status;
    void *value;
    int waiters[MAX_TASKS], nwait;
    int ondone[MAX_ONDONE], nondone;
} mfuture;

/* `pending`: the events the poll found for the watcher's events of that moment. `may_skip`:
   its events were changed to exclude them during the drain, so whether its callback runs
   depends on the events at its turn, which depends on the (unspecified) I/O order. */
typedef struct mwatcher {
    int active, events, pending, may_skip;
} mwatcher;

typedef struct mend {
    int inbuf, nwrites, eof, shut_wr;
} mend;

enum { PH_CB, PH_IO, PH_TIMER };
enum { MODE_TOP, MODE_ONCE, MODE_RUN_GUARDED, MODE_RUN_RESTRICT };

static struct model {
    evl_time vnow;
    uint64_t seq, batch;
    mjob ready[RQ_CAP];
    int rhead, rtail, snap;
    int posts_pending[NPOSTERS], posts_taken[NPOSTERS], async_posts[NPOSTERS];
    int phase, open;
    uint64_t iter;
    int stop_requested, ran;
    mtimer timers[NMT];
    mtask tasks[MAX_TASKS];
    mfuture futures[MAX_FUTURES];
    mwatcher watchers[NWATCHERS];
    mend ends[NENDS];
} M;

/* ---- the real objects and the harness state ---- */
typedef struct poster {
    pthread_t thread;
    int started, index;
    int cmd_count, cmd_delay_us, cmd_exit, busy;
    unsigned next_seq;
} poster;

static struct harness {
    evl_loop *loop;
    int mode, unchecked, closed, wake_slack;
    int njobs, nondone, ntasks, nops;
    int job_ids[MAX_JOBS], ondone_ids[MAX_ONDONE];
    evl_timer timers[MAX_TIMERS], guard;
    evl_task *tasks[MAX_TASKS];
    evl_future *futures[MAX_FUTURES];
    evl_io io[NWATCHERS];
    int fds[NENDS];
    unsigned char wseq[NENDS], rseq[NENDS];   /* the byte pattern of each direction */
    unsigned posts_seen[NPOSTERS];
    unsigned posts_made[NPOSTERS];
    int exceptions;
} H;

/* The posting threads outlive the inputs: creating two threads per input would cost more than
   the input itself. They sleep on `cond` between commands. */
static struct posters {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    poster p[NPOSTERS];
    int exit_registered;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0};

static evl_time tadd(evl_time a, evl_time b) {
    return b > EVL_FOREVER - a ? EVL_FOREVER : a + b;
}

/* ---- the model's ready deque ---- */
static void rq_push(int kind, int id) {
    CHECK(M.rtail < RQ_CAP, "model ready deque overflow");
    M.ready[M.rtail].kind = kind;
    M.ready[M.rtail].id = id;
    M.rtail++;
}

static int rq_len(void) {
    return M.rtail - M.rhead;
}

/* ---- the model's timers ---- */
static void mt_start(int i, evl_time delay, evl_time repeat) {
    M.timers[i].active = 1;
    M.timers[i].when = tadd(M.vnow, delay);
    M.timers[i].repeat = repeat;
    M.timers[i].seq = M.seq++;
}

static int mt_any_active(void) {
    int i;
    for (i = 0; i < NMT; i++)
        if (M.timers[i].active) return 1;
    return 0;
}

static evl_time mt_first_deadline(void) {
    evl_time first = EVL_FOREVER;
    int i, any = 0;
    for (i = 0; i < NMT; i++)
        if (M.timers[i].active && (!any || M.timers[i].when < first)) {
            first = M.timers[i].when;
            any = 1;
        }
    return first;
}

/* The timer that must fire next in this drain: due, started before the drain, and first by
   (deadline, start order). -1 when none. */
static int mt_next_due(void) {
    int i, best = -1;
    for (i = 0; i < NMT; i++) {
        const mtimer *t = &M.timers[i];
        if (!t->active || t->when > M.vnow || t->seq >= M.batch) continue;
        if (best < 0 || t->when < M.timers[best].when ||
            (t->when == M.timers[best].when && t->seq < M.timers[best].seq))
            best = i;
    }
    return best;
}

/* A repeating timer moves to its next tick before its callback runs (skipping missed ticks);
   a one-shot leaves the heap. */
static void mt_fire(int i) {
    mtimer *t = &M.timers[i];
    if (t->repeat) {
        evl_time next = tadd(t->when, t->repeat);
        if (next <= M.vnow) next = tadd(M.vnow, t->repeat);
        t->when = next;
        t->seq = M.seq++;
    } else {
        t->active = 0;
    }
    M.ran++;
}

/* ---- the model's I/O ---- */
static int end_of(int w) {
    return w % NENDS;
}

static int end_ready(int e) {
    return ((M.ends[e].inbuf > 0 || M.ends[e].eof) ? EVL_READ : 0) | EVL_WRITE;
}

static int watcher_ready(int w) {
    return M.watchers[w].active ? end_ready(end_of(w)) & M.watchers[w].events : 0;
}

/* ---- the model's tasks ---- */
static void mtask_push_wake(int t, int status, void *value) {
    mtask *k = &M.tasks[t];
    k->woken = 1;
    k->wake_status = status;
    k->wake_value = value;
    rq_push(J_TASK, t);
}

static void mfuture_remove_waiter(mfuture *f, int t) {
    int i, j = 0;
    for (i = 0; i < f->nwait; i++)
        if (f->waiters[i] != t) f->waiters[j++] = f->waiters[i];
    f->nwait = j;
}

/* A suspended task that is not woken yet is woken: it leaves what it waited on and waits its
   turn in the ready deque. Only the first wakeup of a suspension counts. */
static void mtask_wake(int t, int status, void *value) {
    mtask *k = &M.tasks[t];
    if (k->state != S_SUSP || k->woken) return;
    if (k->wait_kind == W_FUTURE) mfuture_remove_waiter(&M.futures[k->wait_obj], t);
    if (k->wait_kind == W_JOIN && M.tasks[k->wait_obj].joiner == t) M.tasks[k->wait_obj].joiner = -1;
    mtask_push_wake(t, status, value);
}

static void mtask_finish(int t, int result) {
    mtask *k = &M.tasks[t];
    k->state = S_DONE;
    k->result = result;
    if (k->joiner >= 0) {
        int j = k->joiner;
        k->joiner = -1;
        mtask_wake(j, 0, NULL);
    }
}

/* ---- the model's futures ---- */
static void mfuture_complete(int f, int status, void *value) {
    mfuture *m = &M.futures[f];
    int i;
    m->done = 1;
    m->status = status;
    m->value = value;
    while (m->nwait) {
        int t = m->waiters[0];
        mfuture_remove_waiter(m, t);
        mtask_wake(t, status, value);
    }
    for (i = 0; i < m->nondone; i++) rq_push(J_ONDONE, m->ondone[i]);
    m->nondone = 0;
}

/* ---- iterations ---- */
static void model_skip_unobservable_ready(void) {
    /* A task cancelled before it started never runs: its start job runs no user code. */
    while (M.snap > 0) {
        mjob j = M.ready[M.rhead];
        if (j.kind != J_TASK || M.tasks[j.id].state != S_NEW || !M.tasks[j.id].cancelled) break;
        M.rhead++;
        M.snap--;
        M.ran++;
        M.tasks[j.id].woken = 0;
        mtask_finish(j.id, -ECANCELED);
    }
}

static void model_skip_zombie_timers(void) {
    /* The sleep timer of a task woken otherwise still fires (counted), waking nobody. */
    int i;
    while ((i = mt_next_due()) >= T_SLEEP(0) && i < T_GUARD && M.tasks[i - T_SLEEP(0)].woken)
        mt_fire(i);
}

static void model_phase_to(int ph) {
    int w, p;
    if (M.phase == PH_CB && ph > PH_CB) {
        model_skip_unobservable_ready();
        CHECK(M.snap == 0, "%d callback(s) queued before the drain did not run before I/O and "
              "timers (next: kind %d id %d)", M.snap, M.ready[M.rhead].kind, M.ready[M.rhead].id);
        for (p = 0; p < NPOSTERS; p++)
            CHECK(M.posts_taken[p] == 0, "%d post(s) of thread %d did not run in the callback phase",
                  M.posts_taken[p], p);
        M.phase = PH_IO;
    }
    if (M.phase == PH_IO && ph > PH_IO) {
        for (w = 0; w < NWATCHERS; w++)
            CHECK(M.watchers[w].may_skip || !(M.watchers[w].pending & M.watchers[w].events),
                  "watcher %d was ready (events %d) but its callback did not run", w,
                  M.watchers[w].pending & M.watchers[w].events);
        M.phase = PH_TIMER;
    }
}

/* Step 1 and 2 of an iteration, in the model: the poll timeout and the virtual clock's jump,
   then the ready snapshot, the posts taken and the I/O readiness. */
static void model_begin_iteration(evl_time max_wait) {
    evl_time t = max_wait < 0 ? EVL_FOREVER : max_wait, timeout;
    int p, w, posts = 0;
    for (p = 0; p < NPOSTERS; p++) posts += M.posts_pending[p];
    if (t == 0 || rq_len() || posts || M.stop_requested) {
        timeout = 0;
    } else {
        if (mt_any_active()) {
            evl_time due = mt_first_deadline() - M.vnow;
            if (due < t) t = due < 0 ? 0 : due;
        }
        timeout = t == EVL_FOREVER ? -1 : t;
    }
    if (timeout != 0 && (mt_any_active() || timeout > 0)) {
        evl_time to = mt_any_active() ? mt_first_deadline() : EVL_FOREVER;
        if (timeout > 0 && timeout < to - M.vnow) to = M.vnow + timeout;
        if (to > M.vnow) M.vnow = to;
    }
    M.batch = M.seq;
    M.snap = rq_len();
    for (p = 0; p < NPOSTERS; p++) {
        M.posts_taken[p] = M.posts_pending[p];
        M.posts_pending[p] = 0;
    }
    for (w = 0; w < NWATCHERS; w++) {
        M.watchers[w].pending = watcher_ready(w);
        M.watchers[w].may_skip = 0;
    }
    M.phase = PH_CB;
    M.open = 1;
    M.iter++;
    trace("iteration %llu: now %lld ms, %d queued", (unsigned long long)M.iter,
          (long long)(M.vnow / EVL_MSEC(1)), M.snap);
}

static void model_end_iteration(void) {
    int w;
    model_phase_to(PH_TIMER);
    model_skip_zombie_timers();
    w = mt_next_due();
    CHECK(w < 0, "timer %d was due (deadline %lld, now %lld) but did not fire", w,
          (long long)(w >= 0 ? M.timers[w].when : 0), (long long)M.vnow);
    for (w = 0; w < NWATCHERS; w++) M.watchers[w].pending = 0;
    M.open = 0;
}

static int model_alive(void) {
    int t, w, p;
    if (rq_len() || mt_any_active()) return 1;
    for (w = 0; w < NWATCHERS; w++)
        if (M.watchers[w].active) return 1;
    for (t = 0; t < MAX_TASKS; t++)
        if (M.tasks[t].state == S_NEW || M.tasks[t].state == S_SUSP) return 1;
    for (p = 0; p < NPOSTERS; p++)
        if (M.posts_pending[p]) return 1;
    return 0;
}

/* Inside evl_run the model learns where iterations begin from the loop's counters: an
   iteration with a guard timer is never the callbacks-only fast path, which counts itself
   only after its drain. Without timers (the restricted run) a new iteration starts exactly
   when the last snapshot is used up. */
static void model_sync(void) {
    if (H.mode == MODE_RUN_GUARDED) {
        evl_stats st;
        evl_loop_stats(H.loop, &st);
        while (M.iter < st.iterations) {
            if (M.open) model_end_iteration();
            CHECK(!M.stop_requested, "evl_run began an iteration after evl_stop");
            CHECK(model_alive(), "evl_run began an iteration with nothing alive");
            model_begin_iteration(-1);
        }
    } else if (H.mode == MODE_RUN_RESTRICT) {
        model_skip_unobservable_ready();
        if (M.snap == 0 && rq_len()) {
            model_end_iteration();
            model_begin_iteration(-1);
        }
    }
}

/* Every observation starts here: the loop must be running an iteration the model opened,
   at the time the model says. */
static int obs_begin(const char *what) {
    CHECK(!H.closed, "%s ran after evl_loop_close", what);
    if (H.unchecked) return 0;
    CHECK(H.mode != MODE_TOP, "%s ran outside evl_run / evl_run_once", what);
    model_sync();
    CHECK(M.open, "%s ran outside an iteration", what);
    CHECK(evl_now(H.loop) == M.vnow, "%s: evl_now is %lld, the model says %lld", what,
          (long long)evl_now(H.loop), (long long)M.vnow);
    return 1;
}

static void obs_ready(int kind, int id) {
    mjob j;
    CHECK(M.phase == PH_CB, "queued job (kind %d id %d) ran after I/O or timers of its drain",
          kind, id);
    model_skip_unobservable_ready();
    CHECK(M.snap > 0, "queued job (kind %d id %d) ran in the drain it was queued in (or was "
          "never queued)", kind, id);
    j = M.ready[M.rhead];
    CHECK(j.kind == kind && j.id == id, "FIFO order broken: job kind %d id %d ran, the model "
          "expected kind %d id %d", kind, id, j.kind, j.id);
    M.rhead++;
    M.snap--;
    M.ran++;
    trace("  ran %s %d", kind == J_CB ? "callback" : kind == J_TASK ? "task" : "on_done", id);
}

static void obs_timer(int i) {
    int n;
    model_phase_to(PH_TIMER);
    model_skip_zombie_timers();
    n = mt_next_due();
    CHECK(n == i, "timer %d fired, the model expected %d (now %lld)", i, n, (long long)M.vnow);
    mt_fire(i);
    trace("  fired timer %d", i);
}

static void obs_io(int w, int events) {
    mwatcher *m = &M.watchers[w];
    CHECK(M.phase != PH_TIMER, "watcher %d ran after a timer of the same drain", w);
    model_phase_to(PH_IO);
    CHECK(m->active, "stopped watcher %d got an event", w);
    CHECK(m->pending & m->events, "watcher %d got events %d it was not ready for (stale event?)",
          w, events);
    CHECK(events == (m->pending & m->events), "watcher %d got events %d, the model says %d", w,
          events, m->pending & m->events);
    m->pending = 0;
    M.ran++;
    trace("  I/O watcher %d events %d", w, events);
}

/* ---- actions: what callbacks, task steps and the top level do ---- */
enum {
    A_NOP, A_CALL_SOON, A_TIMER_START, A_TIMER_STOP, A_IO_START, A_IO_STOP, A_WRITE, A_READ,
    A_SHUT, A_REOPEN, A_SPAWN, A_CANCEL, A_FUT_SET, A_FUT_CANCEL, A_FUT_ON_DONE, A_FUT_RENEW,
    A_STOP, NACT
};

static void do_actions(void);

static int restricted(void) {
    return H.mode == MODE_RUN_RESTRICT;
}

static void cb_job(evl_loop *loop, void *arg) {
    int id = *(int *)arg;
    (void)loop;
    if (!obs_begin("call_soon callback")) return;
    obs_ready(J_CB, id);
    do_actions();
}

static void cb_ondone(evl_loop *loop, void *arg) {
    int id = *(int *)arg;
    (void)loop;
    if (!obs_begin("on_done callback")) return;
    obs_ready(J_ONDONE, id);
    do_actions();
}

static void cb_timer(evl_loop *loop, void *arg) {
    int i = (int)(intptr_t)arg;
    (void)loop;
    if (!obs_begin("timer")) return;
    obs_timer(i);
    CHECK(evl_timer_active(&H.timers[i]) == M.timers[i].active, "timer %d: evl_timer_active "
          "in its callback disagrees with the model", i);
    do_actions();
}

static void cb_guard(evl_loop *loop, void *arg) {
    (void)arg;
    if (!obs_begin("guard timer")) return;
    obs_timer(T_GUARD);
    evl_stop(loop);
    M.stop_requested = 1;
}

static void cb_io(evl_loop *loop, void *arg, int events) {
    int w = (int)(intptr_t)arg;
    (void)loop;
    if (!obs_begin("I/O callback")) return;
    obs_io(w, events);
    do_actions();
}

static void cb_post(evl_loop *loop, void *arg) {
    uintptr_t v = (uintptr_t)arg;
    int p = (int)(v & 1);
    unsigned seq = (unsigned)(v >> 1);
    (void)loop;
    CHECK(seq == H.posts_seen[p], "thread %d: post %u ran, expected post %u (FIFO per thread, "
          "exactly once)", p, seq, H.posts_seen[p]);
    H.posts_seen[p]++;
    if (!obs_begin("post")) return;
    CHECK(M.phase == PH_CB, "post of thread %d ran after I/O or timers of its drain", p);
    if (M.posts_taken[p] > 0) M.posts_taken[p]--;
    else if (M.async_posts[p] > 0) M.async_posts[p]--;
    else fail("post %u of thread %d ran before it was posted or in the wrong drain", seq, p);
    M.ran++;
    trace("  post %d.%u", p, seq);
}

static evl_time decode_delay(unsigned d) {
    if (d % 4 == 0) return 0;
    if (d == 255) return EVL_FOREVER / 2;
    return EVL_MSEC(d % 24);
}

static evl_time decode_repeat(unsigned r) {
    return r % 3 == 0 ? EVL_MSEC(1 + r % 16) : 0;
}

static void act_call_soon(void) {
    int id;
    if (H.njobs >= MAX_JOBS) return;
    id = H.njobs++;
    H.job_ids[id] = id;
    CHECK(evl_call_soon(H.loop, cb_job, &H.job_ids[id]) == 0, "evl_call_soon failed");
    rq_push(J_CB, id);
}

static void act_timer_start(void) {
    int i = (int)(take() % MAX_TIMERS);
    evl_time delay = decode_delay(take()), repeat = decode_repeat(take());
    if (restricted()) return;
    CHECK(evl_timer_start(H.loop, &H.timers[i], delay, repeat) == 0, "evl_timer_start failed");
    mt_start(i, delay, repeat);
    CHECK(evl_timer_active(&H.timers[i]), "timer %d inactive after start", i);
}

static void act_timer_stop(void) {
    int i = (int)(take() % MAX_TIMERS);
    CHECK(evl_timer_active(&H.timers[i]) == M.timers[i].active, "timer %d: evl_timer_active "
          "is %d, the model says %d", i, evl_timer_active(&H.timers[i]), M.timers[i].active);
    CHECK(evl_timer_stop(H.loop, &H.timers[i]) == 0, "evl_timer_stop failed");
    M.timers[i].active = 0;
}

static void io_start(int w, int events) {
    trace("    io_start %d (fd %d) events %d", w, H.io[w].fd, events);
    CHECK(evl_io_start(H.loop, &H.io[w], events) == 0, "evl_io_start(%d) failed", w);
    if (M.watchers[w].active && M.watchers[w].pending && !(M.watchers[w].pending & events))
        M.watchers[w].may_skip = 1;
    M.watchers[w].active = 1;
    M.watchers[w].events = events;
}

static void io_stop(int w) {
    trace("    io_stop %d", w);
    CHECK(evl_io_active(&H.io[w]) == M.watchers[w].active, "watcher %d: evl_io_active "
          "disagrees with the model", w);
    CHECK(evl_io_stop(H.loop, &H.io[w]) == 0, "evl_io_stop failed");
    M.watchers[w].active = 0;
    M.watchers[w].pending = 0;
}

static void act_io_start(void) {
    int w = (int)(take() % NWATCHERS), events = (int)(take() % 3) + 1;
    if (!restricted()) io_start(w, events);
}

static void act_io_stop(void) {
    io_stop((int)(take() % NWATCHERS));
}

static void act_write(void) {
    int e = (int)(take() % NENDS), n = (int)(take() % 64) + 1, i;
    unsigned char buf[64];
    mend *peer = &M.ends[e ^ 1];
    if (M.ends[e].shut_wr || peer->nwrites >= MAX_WRITES) return;
    for (i = 0; i < n; i++) buf[i] = H.wseq[e]++;
    CHECK(send(H.fds[e], buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n, "send: %s",
          strerror(errno));
    peer->inbuf += n;
    peer->nwrites++;
}

/* Reads everything the end has: exactly the bytes the model says, in order, then EOF when
   the peer shut its side, else EAGAIN. */
static void act_read(void) {
    int e = (int)(take() % NENDS), total = 0, i;
    unsigned char buf[512];
    ssize_t r;
    while ((r = recv(H.fds[e], buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        for (i = 0; i < r; i++)
            CHECK(buf[i] == H.rseq[e]++, "end %d: byte %d of the stream is wrong", e, total + i);
        total += (int)r;
    }
    CHECK(total == M.ends[e].inbuf, "end %d: read %d bytes, the model says %d", e, total,
          M.ends[e].inbuf);
    if (M.ends[e].eof) CHECK(r == 0, "end %d: no EOF after the peer's shutdown", e);
    else CHECK(r < 0 && errno == EAGAIN, "end %d: recv ended with %zd (%s)", e, r, strerror(errno));
    M.ends[e].inbuf = 0;
    M.ends[e].nwrites = 0;
}

static void act_shut(void) {
    int e = (int)(take() % NENDS);
    if (M.ends[e].shut_wr) return;
    CHECK(shutdown(H.fds[e], SHUT_WR) == 0, "shutdown: %s", strerror(errno));
    M.ends[e].shut_wr = 1;
    M.ends[e ^ 1].eof = 1;
}

static void pair_open(int p) {
    int sv[2], e;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
          "socketpair: %s", strerror(errno));
    for (e = 0; e < 2; e++) {
        H.fds[2 * p + e] = sv[e];
        H.wseq[2 * p + e] = H.rseq[2 * p + e] = 0;
        memset(&M.ends[2 * p + e], 0, sizeof M.ends[0]);
    }
}

/* Close-and-reopen: the pair's watchers stop (as the manual requires before a close), both
   fds close, a new pair takes (usually) the same numbers, and the watchers that were active
   start again on the new fds. A stale event of the old fds must never reach them. */
static void act_reopen(void) {
    int p = (int)(take() % (NENDS / 2)), w, was[NWATCHERS];
    if (restricted()) return;
    for (w = 0; w < NWATCHERS; w++) {
        was[w] = M.watchers[w].active ? M.watchers[w].events : 0;
        if (end_of(w) / 2 == p) io_stop(w);
    }
    close(H.fds[2 * p]);
    close(H.fds[2 * p + 1]);
    pair_open(p);
    for (w = 0; w < NWATCHERS; w++) {
        if (end_of(w) / 2 != p) continue;
        evl_io_init(&H.io[w], H.fds[end_of(w)], cb_io, (void *)(intptr_t)w);
        if (was[w]) io_start(w, was[w]);
    }
}

static int task_fn(evl_loop *loop, void *arg);

static void act_spawn(void) {
    int t;
    if (restricted() || H.ntasks >= MAX_TASKS) return;
    t = H.ntasks++;
    CHECK(evl_task_spawn(H.loop, &H.tasks[t], task_fn, (void *)(intptr_t)t, NULL) == 0,
          "evl_task_spawn failed");
    memset(&M.tasks[t], 0, sizeof M.tasks[t]);
    M.tasks[t].state = S_NEW;
    M.tasks[t].joiner = -1;
    mtask_push_wake(t, 0, NULL);
}

static int task_pick(void) {
    return H.ntasks ? (int)(take() % (unsigned)H.ntasks) : -1;
}

static void act_cancel(void) {
    int t = task_pick(), want, got;
    mtask *k;
    if (t < 0 || M.tasks[t].state == S_JOINED) return;  /* a joined task's handle is stale */
    k = &M.tasks[t];
    CHECK(evl_task_done(H.tasks[t]) == (k->state == S_DONE), "task %d: evl_task_done is %d, "
          "the model says %d", t, evl_task_done(H.tasks[t]), k->state == S_DONE);
    want = k->state == S_DONE ? -ESRCH : 0;
    got = evl_task_cancel(H.loop, H.tasks[t]);
    CHECK(got == want, "evl_task_cancel(task %d) returned %d, the model says %d", t, got, want);
    if (got < 0) return;
    k->cancelled = 1;
    if (k->state == S_SUSP) mtask_wake(t, -ECANCELED, NULL);
}

static void future_set(int f, int status, void *value) {
    int want = M.futures[f].done ? -EALREADY : 0, got;
    got = status == -ECANCELED && !value ? evl_future_cancel(H.loop, H.futures[f])
                                         : evl_future_set(H.loop, H.futures[f], status, value);
    CHECK(got == want, "completing future %d returned %d, the model says %d", f, got, want);
    if (got == 0) mfuture_complete(f, status, value);
    CHECK(evl_future_done(H.futures[f]), "future %d not done after completion", f);
}

static void act_fut_set(void) {
    int f = (int)(take() % MAX_FUTURES), status = -(int)(take() % 3);
    future_set(f, status, (void *)(uintptr_t)(0x1000 + in_i));
}

static void act_fut_cancel(void) {
    future_set((int)(take() % MAX_FUTURES), -ECANCELED, NULL);
}

static void act_fut_on_done(void) {
    int f = (int)(take() % MAX_FUTURES), id;
    if (H.nondone >= MAX_ONDONE) return;
    id = H.nondone++;
    H.ondone_ids[id] = id;
    CHECK(evl_future_on_done(H.loop, H.futures[f], cb_ondone, &H.ondone_ids[id]) == 0,
          "evl_future_on_done failed");
    if (M.futures[f].done) rq_push(J_ONDONE, id);
    else M.futures[f].ondone[M.futures[f].nondone++] = id;
}

/* Freeing a future while tasks wait on it is safe: they get -ECANCELED. Its on_done
   callbacks never run. A new pending future takes its place. */
static void act_fut_renew(void) {
    int f = (int)(take() % MAX_FUTURES);
    mfuture *m = &M.futures[f];
    evl_future_free(H.loop, H.futures[f]);
    while (m->nwait) {
        int t = m->waiters[0];
        mfuture_remove_waiter(m, t);
        mtask_wake(t, -ECANCELED, NULL);
    }
    memset(m, 0, sizeof *m);
    CHECK(evl_future_new(H.loop, &H.futures[f]) == 0, "evl_future_new failed");
}

/* evl_stop inside a guarded evl_run or inside evl_run_once: either way the request ends with
   that run (the fuzzer found evl_run_once leaving it set; see README.md here). */
static void act_stop(void) {
    if (H.mode != MODE_RUN_GUARDED && H.mode != MODE_ONCE) return;
    evl_stop(H.loop);
    M.stop_requested = 1;
}

static void do_action(unsigned a) {
    if (a) trace("    action %u", a);
    switch (a) {
    case A_CALL_SOON: act_call_soon(); break;
    case A_TIMER_START: act_timer_start(); break;
    case A_TIMER_STOP: act_timer_stop(); break;
    case A_IO_START: act_io_start(); break;
    case A_IO_STOP: act_io_stop(); break;
    case A_WRITE: act_write(); break;
    case A_READ: act_read(); break;
    case A_SHUT: act_shut(); break;
    case A_REOPEN: act_reopen(); break;
    case A_SPAWN: act_spawn(); break;
    case A_CANCEL: act_cancel(); break;
    case A_FUT_SET: act_fut_set(); break;
    case A_FUT_CANCEL: act_fut_cancel(); break;
    case A_FUT_ON_DONE: act_fut_on_done(); break;
    case A_FUT_RENEW: act_fut_renew(); break;
    case A_STOP: act_stop(); break;
    default: break;
    }
}

/* A callback does up to MAX_ACTIONS actions, chosen by the input when it runs. */
static void do_actions(void) {
    unsigned n = take() % (MAX_ACTIONS + 1), i;
    for (i = 0; i < n; i++) do_action(take() % NACT);
}

/* ---- tasks ---- */
/* After a suspending call returned: either at once (the model said so), or as a resumption
   that must be the loop's next event: from the ready deque, or from its sleep timer. */
static void task_resumed(int t, int rc, void *value) {
    mtask *k = &M.tasks[t];
    if (H.unchecked) return;
    if (k->immediate) {
        k->immediate = 0;
        CHECK(rc == k->immediate_rc, "task %d: a suspension returned %d at once, the model "
              "says %d", t, rc, k->immediate_rc);
        return;
    }
    obs_begin("task step");
    if (k->woken) {
        obs_ready(J_TASK, t);
    } else {
        CHECK(k->wait_kind == W_SLEEP, "task %d resumed without a wakeup", t);
        obs_timer(T_SLEEP(t));
        k->wake_status = 0;
        k->wake_value = NULL;
    }
    CHECK(rc == k->wake_status, "task %d: its suspension returned %d, the model says %d", t, rc,
          k->wake_status);
    if (k->wait_kind == W_FUTURE && rc != -ECANCELED)
        CHECK(value == k->wake_value, "task %d: awaited value %p, the model says %p", t, value,
              k->wake_value);
    if (k->wait_kind == W_JOIN) M.tasks[k->wait_obj].claimed = 0;
    M.timers[T_SLEEP(t)].active = 0;
    k->state = S_RUN;
    k->woken = 0;
    k->wait_kind = W_NONE;
}

static void expect_immediate(int t, int rc) {
    M.tasks[t].immediate = 1;
    M.tasks[t].immediate_rc = rc;
}

static void suspend_model(int t, int kind, int obj) {
    M.tasks[t].state = S_SUSP;
    M.tasks[t].woken = 0;
    M.tasks[t].wait_kind = kind;
    M.tasks[t].wait_obj = obj;
}

static void step_yield(evl_loop *loop, int t) {
    if (M.tasks[t].cancelled) {
        expect_immediate(t, -ECANCELED);
    } else {
        suspend_model(t, W_YIELD, 0);
        mtask_push_wake(t, 0, NULL);
    }
    task_resumed(t, evl_yield(loop), NULL);
}

static void step_sleep(evl_loop *loop, int t) {
    evl_time d = decode_delay(take());
    if (M.tasks[t].cancelled) {
        expect_immediate(t, -ECANCELED);
    } else {
        suspend_model(t, W_SLEEP, 0);
        mt_start(T_SLEEP(t), d, 0);
    }
    task_resumed(t, evl_sleep(loop, d), NULL);
}

static void step_await(evl_loop *loop, int t) {
    int f = (int)(take() % MAX_FUTURES), rc;
    mfuture *m = &M.futures[f];
    void *value = NULL;
    if (m->done) {
        expect_immediate(t, m->status);
    } else if (M.tasks[t].cancelled) {
        expect_immediate(t, -ECANCELED);
    } else {
        suspend_model(t, W_FUTURE, f);
        m->waiters[m->nwait++] = t;
    }
    rc = evl_future_await(loop, H.futures[f], &value);
    if (m->done && M.tasks[t].immediate && rc == m->status)
        CHECK(value == m->value, "task %d: await of done future %d gave %p, expected %p", t, f,
              value, m->value);
    task_resumed(t, rc, value);
}

static void step_join(evl_loop *loop, int t) {
    int u = task_pick(), result = 12345, rc;
    mtask *v;
    if (u < 0 || M.tasks[u].state == S_JOINED) return;
    v = &M.tasks[u];
    if (v->claimed) expect_immediate(t, -EBUSY);
    else if (u == t) expect_immediate(t, -EDEADLK);
    else if (v->state == S_DONE) expect_immediate(t, 0);
    else if (M.tasks[t].cancelled) expect_immediate(t, -ECANCELED);
    else {
        suspend_model(t, W_JOIN, u);
        v->claimed = 1;
        v->joiner = t;
    }
    rc = evl_task_join(loop, H.tasks[u], &result);
    task_resumed(t, rc, NULL);
    if (rc == 0 && !H.unchecked) {
        CHECK(result == v->result, "join of task %d gave %d, its result was %d", u, result,
              v->result);
        v->state = S_JOINED;
    }
}

static int task_fn(evl_loop *loop, void *arg) {
    int t = (int)(intptr_t)arg, step, result = 0;
    if (H.unchecked) return 0;
    obs_begin("task start");
    obs_ready(J_TASK, t);
    CHECK(M.tasks[t].state == S_NEW && !M.tasks[t].cancelled, "task %d started (state %d, "
          "cancelled %d)", t, M.tasks[t].state, M.tasks[t].cancelled);
    M.tasks[t].state = S_RUN;
    M.tasks[t].woken = 0;
    for (step = 0; step < MAX_STEPS && !H.unchecked; step++) {
        unsigned s = take() % 8;
        if (s == 0) break;
        switch (s) {
        case 1: step_yield(loop, t); break;
        case 2: step_sleep(loop, t); break;
        case 3: step_await(loop, t); break;
        case 4: step_join(loop, t); break;
        case 7: result = -(int)(take() % 3); break;
        default: do_action(take() % NACT); break;
        }
    }
    if (H.unchecked) return result;
    mtask_finish(t, result);
    return result;
}

/* ---- the posting threads ---- */
static void *poster_main(void *arg) {
    poster *p = (poster *)arg;
    pthread_mutex_lock(&P.lock);
    for (;;) {
        int n, delay, i;
        while (!p->cmd_count && !p->cmd_exit) pthread_cond_wait(&P.cond, &P.lock);
        if (!p->cmd_count && p->cmd_exit) break;
        n = p->cmd_count;
        delay = p->cmd_delay_us;
        pthread_mutex_unlock(&P.lock);
        if (delay) usleep((useconds_t)delay);
        for (i = 0; i < n; i++) {
            uintptr_t v = ((uintptr_t)p->next_seq++ << 1) | (uintptr_t)p->index;
            CHECK(evl_call_soon_threadsafe(H.loop, cb_post, (void *)v) == 0,
                  "evl_call_soon_threadsafe failed");
        }
        pthread_mutex_lock(&P.lock);
        p->cmd_count = 0;
        p->busy = 0;
        pthread_cond_broadcast(&P.cond);
    }
    pthread_mutex_unlock(&P.lock);
    return NULL;
}

/* Lets the threads finish at process exit, so a leak check sees them gone. */
static void posters_exit(void) {
    int i;
    pthread_mutex_lock(&P.lock);
    for (i = 0; i < NPOSTERS; i++) P.p[i].cmd_exit = 1;
    pthread_cond_broadcast(&P.cond);
    pthread_mutex_unlock(&P.lock);
    for (i = 0; i < NPOSTERS; i++)
        if (P.p[i].started) pthread_join(P.p[i].thread, NULL);
}

static void posters_command(const int *counts, int delay_us) {
    int i;
    pthread_mutex_lock(&P.lock);
    for (i = 0; i < NPOSTERS; i++) {
        poster *p = &P.p[i];
        if (!counts[i]) continue;
        if (!p->started) {
            p->index = i;
            CHECK(pthread_create(&p->thread, NULL, poster_main, p) == 0, "pthread_create");
            p->started = 1;
            if (!P.exit_registered) atexit(posters_exit);
            P.exit_registered = 1;
        }
        p->cmd_count = counts[i];
        p->cmd_delay_us = delay_us;
        p->busy = 1;
        H.posts_made[i] += (unsigned)counts[i];
    }
    pthread_cond_broadcast(&P.cond);
    pthread_mutex_unlock(&P.lock);
}

static void posters_wait(void) {
    int i;
    pthread_mutex_lock(&P.lock);
    for (i = 0; i < NPOSTERS; i++)
        while (P.p[i].busy) pthread_cond_wait(&P.cond, &P.lock);
    pthread_mutex_unlock(&P.lock);
}

/* ---- top-level operations ---- */
static void check_ran(int got) {
    if (got == M.ran) return;
    /* The wakeup watcher is internal but counted: a wakeup written by a POST_WAKE post may be
       read one iteration later. */
    CHECK(H.wake_slack && got == M.ran + 1, "evl_run_once returned %d, the model ran %d", got,
          M.ran);
    H.wake_slack = 0;
}

static void check_iterations(void) {
    evl_stats st;
    evl_loop_stats(H.loop, &st);
    CHECK(st.iterations == M.iter, "the loop counted %llu iterations, the model %llu",
          (unsigned long long)st.iterations, (unsigned long long)M.iter);
}

static int any_watcher_ready(void) {
    int w;
    for (w = 0; w < NWATCHERS; w++)
        if (watcher_ready(w)) return 1;
    return 0;
}

static int posts_pending(void) {
    int p, n = 0;
    for (p = 0; p < NPOSTERS; p++) n += M.posts_pending[p];
    return n;
}

static void run_once(evl_time max_wait) {
    int got;
    /* A wait without limit, timer or ready work would block the thread for good. */
    if (max_wait < 0 && !rq_len() && !mt_any_active() && !posts_pending() && !any_watcher_ready())
        max_wait = 0;
    H.mode = MODE_ONCE;
    model_begin_iteration(max_wait);
    M.ran = 0;
    got = evl_run_once(H.loop, max_wait);
    model_end_iteration();
    H.mode = MODE_TOP;
    M.stop_requested = 0;   /* a stop asked for in the only iteration has been honoured */
    check_ran(got);
    check_iterations();
    CHECK(evl_now(H.loop) == M.vnow, "after evl_run_once: evl_now %lld, the model %lld",
          (long long)evl_now(H.loop), (long long)M.vnow);
}

static void op_run_once(void) {
    unsigned m = take();
    switch (m % 4) {
    case 0: run_once(0); break;
    case 1: run_once(-1); break;
    case 2: run_once(EVL_MSEC(m >> 2)); break;
    default: run_once(EVL_SEC(1)); break;
    }
}

/* evl_run with a guard timer that stops it: the virtual clock reaches the guard in a bounded
   number of iterations because every source of ready work is bounded. */
static void op_run_guarded(void) {
    evl_time delay = EVL_MSEC(1 + take() % 64);
    int err;
    CHECK(evl_timer_start(H.loop, &H.guard, delay, 0) == 0, "guard start failed");
    mt_start(T_GUARD, delay, 0);
    H.mode = MODE_RUN_GUARDED;
    err = evl_run(H.loop);
    CHECK(err == 0, "evl_run returned %d", err);
    model_sync();
    if (M.open) model_end_iteration();
    CHECK(M.stop_requested, "evl_run returned without evl_stop while work was alive");
    M.stop_requested = 0;
    H.mode = MODE_TOP;
    check_iterations();
    CHECK(evl_timer_stop(H.loop, &H.guard) == 0, "guard stop failed");
    M.timers[T_GUARD].active = 0;
}

/* evl_run with nothing but callbacks: it must return by itself once they are all done (the
   callbacks may not start timers, watchers or tasks meanwhile). */
static void op_run_restricted(void) {
    int err, w;
    if (mt_any_active() || posts_pending() || H.ntasks) return;
    for (w = 0; w < NWATCHERS; w++)
        if (M.watchers[w].active) return;
    H.mode = MODE_RUN_RESTRICT;
    if (rq_len()) model_begin_iteration(-1);
    err = evl_run(H.loop);
    CHECK(err == 0, "evl_run returned %d", err);
    if (M.open) model_end_iteration();
    CHECK(rq_len() == 0, "evl_run returned with %d callback(s) still queued", rq_len());
    H.mode = MODE_TOP;
    check_iterations();
}

static void op_post(void) {
    int counts[NPOSTERS], p;
    for (p = 0; p < NPOSTERS; p++) counts[p] = (int)(take() % 8);
    posters_command(counts, 0);
    posters_wait();
    for (p = 0; p < NPOSTERS; p++) M.posts_pending[p] += counts[p];
}

/* One post that must wake a loop blocked in the poll with nothing else to do. */
static void op_post_wake(void) {
    int counts[NPOSTERS] = {1, 0}, n;
    if (rq_len() || mt_any_active() || posts_pending() || any_watcher_ready()) return;
    M.async_posts[0] = 1;
    posters_command(counts, 200);
    for (n = 0; M.async_posts[0] && n < 1000; n++) {
        int got;
        H.mode = MODE_ONCE;
        model_begin_iteration(-1);
        M.ran = 0;
        got = evl_run_once(H.loop, -1);
        model_end_iteration();
        H.mode = MODE_TOP;
        CHECK(got == M.ran || got == M.ran + 1, "evl_run_once returned %d, the model ran %d",
              got, M.ran);
    }
    CHECK(!M.async_posts[0], "the post never ran");
    posters_wait();
    H.wake_slack = 1;
    check_iterations();
}

static void op_join(void) {
    int u = task_pick(), want, got, result = 12345;
    mtask *v;
    if (u < 0 || M.tasks[u].state == S_JOINED) return;
    v = &M.tasks[u];
    want = v->claimed ? -EBUSY : v->state == S_DONE ? 0 : -EPERM;
    got = evl_task_join(H.loop, H.tasks[u], &result);
    CHECK(got == want, "evl_task_join(task %d) outside a task returned %d, the model says %d", u,
          got, want);
    if (got == 0) {
        CHECK(result == v->result, "join of task %d gave %d, its result was %d", u, result,
              v->result);
        v->state = S_JOINED;
    }
}

enum { OP_RUN_ONCE = NACT, OP_RUN, OP_RUN_RESTRICTED, OP_POST, OP_POST_WAKE, OP_JOIN, NOPS };

static void do_op(unsigned op) {
    trace("op %u", op);
    switch (op) {
    case OP_RUN_ONCE: op_run_once(); break;
    case OP_RUN: op_run_guarded(); break;
    case OP_RUN_RESTRICTED: op_run_restricted(); break;
    case OP_POST: op_post(); break;
    case OP_POST_WAKE: op_post_wake(); break;
    case OP_JOIN: op_join(); break;
    default: do_action(op); break;
    }
}

/* ---- setup and teardown ---- */
static void log_silent(int level, const char *message, void *ud) {
    (void)level;
    (void)message;
    (void)ud;
}

static void on_exception(evl_loop *loop, const evl_exception *e, void *ud) {
    (void)loop;
    (void)e;
    (void)ud;
    H.exceptions++;
}

static void setup(unsigned first) {
    static const evl_backend kinds[3] = {EVL_BACKEND_EPOLL, EVL_BACKEND_POLL, EVL_BACKEND_SELECT};
    evl_config cfg;
    int i, err;
    memset(&M, 0, sizeof M);
    memset(&H, 0, sizeof H);
    pthread_mutex_lock(&P.lock);
    for (i = 0; i < NPOSTERS; i++) P.p[i].next_seq = 0;
    pthread_mutex_unlock(&P.lock);
    evl_config_init(&cfg);
    /* EVLOOP_BACKEND, when set, picks the backend (the test runs every one); else the input. */
    cfg.backend = getenv("EVLOOP_BACKEND") ? EVL_BACKEND_AUTO : kinds[(first & 3) % 3];
    cfg.debug = (int)((first >> 2) & 1);
    cfg.clock = EVL_CLOCK_VIRTUAL;
    cfg.log = log_silent;
    err = evl_loop_new(&H.loop, &cfg);
    CHECK(err == 0, "evl_loop_new: %s", evl_strerror(err));
    evl_set_exception_handler(H.loop, on_exception, NULL);
    for (i = 0; i < MAX_TIMERS; i++) evl_timer_init(&H.timers[i], cb_timer, (void *)(intptr_t)i);
    evl_timer_init(&H.guard, cb_guard, NULL);
    for (i = 0; i < NENDS / 2; i++) pair_open(i);
    for (i = 0; i < NWATCHERS; i++)
        evl_io_init(&H.io[i], H.fds[end_of(i)], cb_io, (void *)(intptr_t)i);
    for (i = 0; i < MAX_FUTURES; i++)
        CHECK(evl_future_new(H.loop, &H.futures[i]) == 0, "evl_future_new failed");
    M.vnow = evl_now(H.loop);
}

/* Unchecked by the model: a burst of posts from both threads while the loop runs (`size`
   each, maybe 0), each run exactly once and in order per thread, waking the loop when it
   blocks. The posts the input made and never ran before run here too. */
static void final_burst(int size) {
    int counts[NPOSTERS], p, n;
    unsigned total = 0, seen;
    for (p = 0; p < NPOSTERS; p++) counts[p] = size;
    posters_command(counts, 0);
    for (p = 0; p < NPOSTERS; p++) total += H.posts_made[p];
    for (n = 0;; n++) {
        seen = H.posts_seen[0] + H.posts_seen[1];
        if (seen == total) break;
        CHECK(n < 1000000, "posts lost: %u of %u ran", seen, total);
        evl_run_once(H.loop, -1);
    }
    posters_wait();
}

static void teardown(int burst) {
    int i, err;
    H.unchecked = 1;
    final_burst(burst ? BURST : 0);
    for (i = 0; i < MAX_FUTURES; i++) evl_future_free(H.loop, H.futures[i]);
    err = evl_loop_close(H.loop);
    CHECK(err == 0, "evl_loop_close returned %d", err);
    H.closed = 1;
    for (i = 0; i < NPOSTERS; i++)
        CHECK(H.posts_seen[i] == H.posts_made[i], "thread %d: %u posts made, %u ran", i,
              H.posts_made[i], H.posts_seen[i]);
    for (i = 0; i < NENDS; i++) close(H.fds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The number open() would return now: the same before and after an input, or an fd leaked. */
static int lowest_free_fd(void) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0, "open /dev/null: %s", strerror(errno));
    close(fd);
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd_probe = lowest_free_fd(), after;
    unsigned first;
    in_p = data;
    in_n = size;
    in_i = 0;
    first = take();
    setup(first);
    for (H.nops = 0; H.nops < MAX_OPS && in_i < in_n; H.nops++) do_op(take() % NOPS);
    /* The burst costs thread handoffs (most of an input's time): half the inputs do it. */
    teardown((first >> 3) & 1);
    after = lowest_free_fd();
    CHECK(after == fd_probe, "an fd leaked: the lowest free fd was %d, now %d", fd_probe, after);
    return 0;
}

#ifdef FUZZ_STANDALONE
/* The plain-C driver: every file named, or every file of every directory named, goes through
   the same entry point. */
static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    static uint8_t buf[1 << 16];
    size_t n;
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "fuzz_loop: %s\n", path);   /* on a failure, the last line names the input */
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

static int run_path(const char *path) {
    struct stat st;
    DIR *d;
    struct dirent *e;
    int count = 0;
    char full[4096];
    if (stat(path, &st) < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return run_file(path) == 0 ? 1 : -1;
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (run_file(full) < 0) {
            closedir(d);
            return -1;
        }
        count++;
    }
    closedir(d);
    return count;
}

int main(int argc, char **argv) {
    int i, total = 0;
    for (i = 1; i < argc; i++) {
        int n = run_path(argv[i]);
        if (n < 0) return 1;
        total += n;
    }
    printf("ok %d inputs\n", total);
    return total > 0 ? 0 : 1;
}
#endif
