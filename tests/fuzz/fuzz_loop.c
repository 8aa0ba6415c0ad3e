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
   in the environment overrides it), debug mode (bit 2), the final burst (bit 3) and an
   executor pool of one thread instead of one per job (bit 4); then each
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

#define MAX_EVENTS 2
#define MAX_SEMS 2
#define MAX_QUEUES 2
#define QCAP_MAX 3             /* a queue's capacity is 1..QCAP_MAX */
#define MAX_GROUPS 2
#define MAX_DEADLINES 8        /* nested evl_deadline scopes per task */
#define MAX_XJOBS 4            /* executor jobs per input; the pool has as many threads */

/* The model's timers: the user's, one sleep timer and one deadline timer per task, and
   evl_run's guard. */
#define T_SLEEP(i) (MAX_TIMERS + (i))
#define T_DEADLINE(i) (MAX_TIMERS + MAX_TASKS + (i))
#define T_GUARD (MAX_TIMERS + 2 * MAX_TASKS)
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
/* `set`: jobs pushed together whose order the manual leaves open (the waiters an event set
   or a free wakes all at once) carry the same nonzero set number and may run in any order. */
enum { J_CB, J_TASK, J_ONDONE };
typedef struct mjob {
    int kind, id, set;
} mjob;

typedef struct mtimer {
    int active;
    evl_time when, repeat;
    uint64_t seq;
} mtimer;

/* S_JOINED: the handle is gone (joined, or a group child or detached task that finished). */
enum { S_UNUSED, S_NEW, S_RUN, S_SUSP, S_DONE, S_JOINED };
enum {
    W_NONE, W_YIELD, W_SLEEP, W_FUTURE, W_JOIN, W_EVENT, W_SEM, W_QGET, W_QPUT, W_GROUP, W_EXEC
};
typedef struct mtask {
    int state, cancelled, woken, wake_status;
    void *wake_value;
    int wait_kind, wait_obj;
    int claimed, joiner;       /* a joiner waits for this task (or was woken, not yet back) */
    int result;
    int immediate, immediate_rc;   /* the next suspension must return at once with this */
    int group, detached;       /* the group slot it belongs to (-1: none); freed with its group */
    int shield;                /* evl_shield_begin depth */
    evl_time deadline;         /* outside every shield; EVL_FOREVER: none */
    evl_time shield_deadline;  /* set inside the open shields (EVL_FOREVER once the last ends) */
    evl_time dl_stack[MAX_DEADLINES];
    int ndl;
    uintptr_t put_item;        /* a waiting evl_queue_put's item */
    /* evl_group_wait: the group's generation, phase 2 (the waiter was cancelled or timed out,
       cancelled the children and waits for them under an internal shield) with the error it
       will return, and whether the group itself woke it. */
    unsigned wait_gen;
    int gphase2, gerr, by_group;
    /* evl_executor_run: cancelled or out of time while its job ran, the task waits for the
       job uninterruptibly (xwait) and will return xerr. */
    int xwait, xerr;
} mtask;

/* An executor job: evl_executor_run from task `task`, or evl_executor_submit into future slot
   `fut` (generation `fgen`). `done`: its completion was handed to the loop (async_pending),
   not yet dispatched; `gone`: dispatched. `cancelled`: asked to stop (its completion then
   reports -ECANCELED without the result); `dropped`: taken out of the queue unrun. */
typedef struct mxjob {
    int used, run, task, fut;
    unsigned fgen;
    int done, gone, cancelled, dropped;
} mxjob;

typedef struct mwaitq {
    int t[MAX_TASKS], n;
} mwaitq;

typedef struct mevent {
    int set;
    mwaitq w;
} mevent;

typedef struct msem {
    unsigned count;
    mwaitq w;
} msem;

typedef struct mqueue {
    int cap, len, closed;
    uintptr_t items[QCAP_MAX];
    mwaitq getters, putters;
} mqueue;

/* children: the tasks alive in the group, in spawn order (the library cancels them newest
   first). gen counts the group objects that took the slot. cancelled: evl_group_cancel (so
   newcomers are cancelled too); failures and first_task: what evl_group_first_failure says. */
typedef struct mgroup {
    int children[MAX_TASKS], nchildren;
    int first_error, cancelled, failures, first_task;
    unsigned gen;
    mwaitq w;
} mgroup;

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
    mevent events[MAX_EVENTS];
    msem sems[MAX_SEMS];
    mqueue queues[MAX_QUEUES];
    mgroup groups[MAX_GROUPS];
    int nsets;
    unsigned fut_gen[MAX_FUTURES];
    mxjob xjobs[MAX_XJOBS];
    int xorder[MAX_XJOBS], nxdone;   /* completions not yet dispatched, in completion order */
    int async_pending;
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
    int mode, unchecked, closed, closing, wake_slack, debug, xthreads;
    int njobs, nondone, ntasks, nops;
    int job_ids[MAX_JOBS], ondone_ids[MAX_ONDONE];
    evl_timer timers[MAX_TIMERS], guard;
    evl_task *tasks[MAX_TASKS];
    evl_future *futures[MAX_FUTURES];
    evl_event *events[MAX_EVENTS];
    evl_sem *sems[MAX_SEMS];
    evl_queue *queues[MAX_QUEUES];
    evl_group *groups[MAX_GROUPS];
    uintptr_t item_seq;
    int nxjobs;
    evl_io io[NWATCHERS];
    int fds[NENDS];
    unsigned char wseq[NENDS], rseq[NENDS];   /* the byte pattern of each direction */
    unsigned posts_seen[NPOSTERS];
    unsigned posts_made[NPOSTERS];
    int exceptions, abandoned;
} H;

/* The posting threads outlive the inputs: creating two threads per input would cost more than
   the input itself. They sleep on `cond` between commands. */
static struct posters {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    poster p[NPOSTERS];
    int exit_registered;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0};

/* The executor jobs' gates: a job's function marks itself started and blocks until the
   harness releases it, so the model decides when each one completes. `stop_seen`: what
   evl_executor_cancelled said in the job once its gate opened. */
static struct gates {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started[MAX_XJOBS], released[MAX_XJOBS], finished[MAX_XJOBS], stop_seen[MAX_XJOBS];
    int open_all;
} X = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, {0}, {0}, {0}, 0};

static evl_time tadd(evl_time a, evl_time b) {
    return b > EVL_FOREVER - a ? EVL_FOREVER : a + b;
}

/* ---- the model's ready deque ---- */
static int push_set;   /* nonzero while a wake-all pushes its waiters: see mjob */

static void rq_push(int kind, int id) {
    CHECK(M.rtail < RQ_CAP, "model ready deque overflow");
    M.ready[M.rtail].kind = kind;
    M.ready[M.rtail].id = id;
    M.ready[M.rtail].set = push_set;
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

static void wq_push(mwaitq *q, int t) {
    CHECK(q->n < MAX_TASKS, "model wait list overflow");
    q->t[q->n++] = t;
}

static void wq_remove(mwaitq *q, int t) {
    int i, j = 0;
    for (i = 0; i < q->n; i++)
        if (q->t[i] != t) q->t[j++] = q->t[i];
    q->n = j;
}

/* The wait list a suspended task is in, if any (a freed group's waiters were all woken). */
static mwaitq *mtask_waitq(int t) {
    mtask *k = &M.tasks[t];
    switch (k->wait_kind) {
    case W_EVENT: return &M.events[k->wait_obj].w;
    case W_SEM: return &M.sems[k->wait_obj].w;
    case W_QGET: return &M.queues[k->wait_obj].getters;
    case W_QPUT: return &M.queues[k->wait_obj].putters;
    case W_GROUP: return M.groups[k->wait_obj].gen == k->wait_gen ? &M.groups[k->wait_obj].w : NULL;
    default: return NULL;
    }
}

/* What a wakeup does first: the task leaves what it waited on. */
static void mtask_leave_wait(int t) {
    mtask *k = &M.tasks[t];
    mwaitq *q = mtask_waitq(t);
    if (k->wait_kind == W_FUTURE) mfuture_remove_waiter(&M.futures[k->wait_obj], t);
    if (k->wait_kind == W_JOIN && M.tasks[k->wait_obj].joiner == t) M.tasks[k->wait_obj].joiner = -1;
    if (q) wq_remove(q, t);
}

/* A suspended task that is not woken yet is woken: it leaves what it waited on and waits its
   turn in the ready deque. Only the first wakeup of a suspension counts. */
static void mtask_wake(int t, int status, void *value) {
    mtask *k = &M.tasks[t];
    if (k->state != S_SUSP || k->woken) return;
    mtask_leave_wait(t);
    mtask_push_wake(t, status, value);
}

/* Wakes every task of a wait list, in list order; `as_set`: the manual leaves the order open,
   so they may run in any order. */
static void wq_wake_all(mwaitq *q, int status, int as_set) {
    if (as_set && q->n > 1) push_set = ++M.nsets;
    while (q->n) mtask_wake(q->t[0], status, NULL);
    push_set = 0;
}

/* A cancel does not wake a task in a shield, in a group wait's second phase or waiting for
   its running executor job. */
static int mtask_shielded(int t) {
    const mtask *k = &M.tasks[t];
    return k->shield > 0 || (k->wait_kind == W_GROUP && k->gphase2) ||
           (k->wait_kind == W_EXEC && k->xwait);
}

/* The deadline that applies to the task now: inside a shield only the one set inside it. */
static evl_time mtask_deadline(int t) {
    const mtask *k = &M.tasks[t];
    return k->shield ? k->shield_deadline : k->deadline;
}

/* evl_task_cancel on a task that has not finished. */
static void mtask_cancel(int t) {
    mtask *k = &M.tasks[t];
    k->cancelled = 1;
    if (k->state == S_SUSP && !mtask_shielded(t)) mtask_wake(t, -ECANCELED, NULL);
}

/* The children of a group are cancelled newest first (evloop.h 0.1.0's list order). */
static void mgroup_cancel_children(int g) {
    mgroup *m = &M.groups[g];
    int i;
    for (i = m->nchildren - 1; i >= 0; i--) mtask_cancel(m->children[i]);
}

static void mgroup_child_done(int t) {
    mtask *k = &M.tasks[t];
    mgroup *m = &M.groups[k->group];
    int i, j = 0;
    for (i = 0; i < m->nchildren; i++)
        if (m->children[i] != t) m->children[j++] = m->children[i];
    m->nchildren = j;
    k->group = -1;
    if (k->result < 0 && k->result != -ECANCELED) {
        m->failures++;
        if (!m->first_error) {
            m->first_error = k->result;
            m->first_task = t;
            mgroup_cancel_children((int)(m - M.groups));
        }
    }
    if (m->nchildren == 0 && m->w.n) {
        /* Every waiter is woken by the group: a phase-2 waiter returns its own error. */
        if (m->w.n > 1) push_set = ++M.nsets;
        while (m->w.n) {
            int u = m->w.t[0];
            M.tasks[u].by_group = 1;
            mtask_wake(u, M.tasks[u].gphase2 ? M.tasks[u].gerr : m->first_error, NULL);
        }
        push_set = 0;
    }
}

static void mtask_finish(int t, int result) {
    mtask *k = &M.tasks[t];
    k->state = S_DONE;
    k->result = result;
    if (k->group >= 0) {
        mgroup_child_done(t);
        k->state = S_JOINED;     /* released: its handle is stale */
        H.tasks[t] = NULL;
    } else if (k->detached) {
        k->state = S_JOINED;
        H.tasks[t] = NULL;
    } else if (k->joiner >= 0) {
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
/* A group waiter woken by its own cancellation or deadline, whose group is neither freed nor
   finished, does not return from evl_group_wait: it cancels the children and waits for them
   again, shielded (phase 2). No user code runs, so the model cannot observe it. */
static int mgroup_waiter_continues(int t) {
    mtask *k = &M.tasks[t];
    mgroup *m;
    if (k->state != S_SUSP || k->wait_kind != W_GROUP || k->gphase2 || k->by_group) return 0;
    m = &M.groups[k->wait_obj];
    return m->gen == k->wait_gen && m->nchildren > 0;
}

static void mgroup_phase2(int t) {
    mtask *k = &M.tasks[t];
    k->gerr = k->wake_status;
    k->state = S_RUN;          /* it runs (cancelling itself, if it is a child, only flags it) */
    k->woken = 0;
    M.timers[T_SLEEP(t)].active = 0;
    M.timers[T_DEADLINE(t)].active = 0;
    mgroup_cancel_children(k->wait_obj);
    k->state = S_SUSP;
    k->gphase2 = 1;
    wq_push(&M.groups[k->wait_obj].w, t);
    trace("  task %d: group wait goes on shielded (error %d)", t, k->gerr);
}

static int job_running(int j);

/* A task of evl_executor_run woken by a cancel, or by its deadline, while its job was not
   back yet: if the job had left the queue (it runs, or has returned and its completion is not
   dispatched yet), the task does not return but asks the job to stop and waits for it,
   uninterruptibly (xwait); if it was still queued, the job is dropped and the call returns.
   Which one is up to the pool's threads: the harness asks its gates, after the pool settled,
   whether the job's function was entered (a dropped job never is). No user code runs in the
   first case, so the model cannot observe it. */
static int mexec_waiter_continues(int t) {
    mtask *k = &M.tasks[t];
    if (k->state != S_SUSP || k->wait_kind != W_EXEC || k->xwait) return 0;
    return !M.xjobs[k->wait_obj].gone && job_running(k->wait_obj);
}

static void mexec_xwait(int t, int err) {
    mtask *k = &M.tasks[t];
    k->xwait = 1;
    k->xerr = err;
    k->woken = 0;
    M.timers[T_SLEEP(t)].active = 0;
    M.timers[T_DEADLINE(t)].active = 0;   /* no deadline applies to this wait */
    M.xjobs[k->wait_obj].cancelled = 1;
    trace("  task %d: waits for its running executor job %d (error %d)", t, k->wait_obj, err);
}

static void model_skip_unobservable_ready(void) {
    /* A task cancelled before it started never runs: its start job runs no user code. */
    while (M.snap > 0) {
        mjob j = M.ready[M.rhead];
        if (j.kind != J_TASK) break;
        if (M.tasks[j.id].state == S_NEW && M.tasks[j.id].cancelled) {
            M.rhead++;
            M.snap--;
            M.ran++;
            M.tasks[j.id].woken = 0;
            mtask_finish(j.id, -ECANCELED);
        } else if (M.tasks[j.id].woken && mgroup_waiter_continues(j.id)) {
            M.rhead++;
            M.snap--;
            M.ran++;
            mgroup_phase2(j.id);
        } else if (M.tasks[j.id].woken && mexec_waiter_continues(j.id)) {
            M.rhead++;
            M.snap--;
            M.ran++;
            mexec_xwait(j.id, M.tasks[j.id].wake_status);
        } else {
            break;
        }
    }
}

static void model_skip_zombie_timers(void) {
    /* The sleep or deadline timer of a task woken otherwise still fires (counted), waking
       nobody. A deadline that ends a group wait's first phase, or that makes evl_executor_run
       wait for its running job, is not observable either. */
    for (;;) {
        int i = mt_next_due(), t;
        if (i >= T_SLEEP(0) && i < T_SLEEP(MAX_TASKS)) {
            if (!M.tasks[i - T_SLEEP(0)].woken) return;
            mt_fire(i);
            trace("  fired timer %d (sleep of a task woken otherwise)", i);
        } else if (i >= T_DEADLINE(0) && i < T_DEADLINE(MAX_TASKS)) {
            t = i - T_DEADLINE(0);
            if (M.tasks[t].woken) {
                mt_fire(i);
                trace("  fired timer %d (deadline of task %d, woken otherwise)", i, t);
            } else if (mgroup_waiter_continues(t)) {
                mt_fire(i);
                trace("  fired timer %d (deadline of task %d)", i, t);
                mtask_leave_wait(t);
                M.tasks[t].wake_status = -ETIMEDOUT;
                mgroup_phase2(t);
            } else if (mexec_waiter_continues(t)) {
                mt_fire(i);
                trace("  fired timer %d (deadline of task %d)", i, t);
                mexec_xwait(t, -ETIMEDOUT);
            } else {
                return;
            }
        } else {
            return;
        }
    }
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

/* Executor completions are dispatched after the poll, before the drain's snapshot, in
   completion order. A job asked to stop by then reports -ECANCELED and no result, else 0 and
   its result. A submitted job completes its future (nothing else can: evl_future_set on it is
   -EBUSY, and cancelling it while the job runs only asks the job to stop), unless the future
   was freed (the job was orphaned); an evl_executor_run job wakes its task, which waits for it
   until then (unless something else woke it first: a cancel or a deadline makes it wait on,
   uninterruptibly, once it runs, and return its own error). */
static void model_dispatch_async(void) {
    int i;
    if (!M.async_pending) return;
    M.async_pending = 0;
    for (i = 0; i < M.nxdone; i++) {
        int j = M.xorder[i];
        mxjob *x = &M.xjobs[j];
        int status = x->cancelled ? -ECANCELED : 0;
        void *result = status ? NULL : (void *)(uintptr_t)(0x7000 + j);
        CHECK(!x->dropped && !x->gone, "model: job %d dispatched twice or after it was dropped", j);
        x->gone = 1;
        if (x->run) {
            mtask *k = &M.tasks[x->task];
            CHECK(k->state == S_SUSP && k->wait_kind == W_EXEC && k->wait_obj == j,
                  "model: task %d left evl_executor_run before its job %d came back", x->task, j);
            mtask_wake(x->task, status, result);
        } else if (M.fut_gen[x->fut] == x->fgen) {
            CHECK(!M.futures[x->fut].done, "model: future %d done before its job %d came back",
                  x->fut, j);
            mfuture_complete(x->fut, status, result);
        }
        trace("  executor job %d dispatched (status %d)", j, status);
    }
    M.nxdone = 0;
}

/* Step 1 and 2 of an iteration, in the model: the poll timeout and the virtual clock's jump,
   then the ready snapshot, the posts taken and the I/O readiness. */
static void model_begin_iteration(evl_time max_wait) {
    evl_time t = max_wait < 0 ? EVL_FOREVER : max_wait, timeout;
    int p, w, posts = 0;
    for (p = 0; p < NPOSTERS; p++) posts += M.posts_pending[p];
    if (t == 0 || rq_len() || posts || M.stop_requested || M.async_pending) {
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
    model_dispatch_async();
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
    for (t = 0; t < MAX_XJOBS; t++)   /* may be more than the loop counts: safe for the check */
        if (M.xjobs[t].used && !M.xjobs[t].gone && !M.xjobs[t].dropped) return 1;
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
    if (j.set && !(j.kind == kind && j.id == id)) {
        /* The head belongs to a set whose order is open: the job may be any of it. */
        int i;
        for (i = M.rhead + 1; i < M.rhead + M.snap && M.ready[i].set == j.set; i++)
            if (M.ready[i].kind == kind && M.ready[i].id == id) {
                M.ready[i] = j;
                M.ready[M.rhead].kind = kind;
                M.ready[M.rhead].id = id;
                j = M.ready[M.rhead];
                break;
            }
    }
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
/* One code space for the top level and the callbacks: 0-16 actions, 17-22 top-level
   operations (see OP_RUN_ONCE), 23 on the actions added with task groups, events,
   semaphores, queues and executor jobs, then those added with evl_queue_close and
   evl_group_cancel. NACT, the old number of actions, stays what it was, and new codes go at
   the end, so that the old seeds keep their meaning. */
enum {
    A_NOP, A_CALL_SOON, A_TIMER_START, A_TIMER_STOP, A_IO_START, A_IO_STOP, A_WRITE, A_READ,
    A_SHUT, A_REOPEN, A_SPAWN, A_CANCEL, A_FUT_SET, A_FUT_CANCEL, A_FUT_ON_DONE, A_FUT_RENEW,
    A_STOP, NACT
};
enum {
    A_EV_SET = NACT + 6, A_EV_CLEAR, A_EV_RENEW, A_SEM_RELEASE, A_SEM_TRY, A_SEM_RENEW,
    A_Q_TRY_PUT, A_Q_TRY_GET, A_Q_RENEW, A_GROUP_SPAWN, A_GROUP_RENEW, A_EXEC_SUBMIT,
    A_EXEC_RELEASE, A_Q_CLOSE, A_GROUP_CANCEL, A_GROUP_SPAWN_TASK, NCODES
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

static int new_task_slot(int group) {
    int t = H.ntasks++;
    memset(&M.tasks[t], 0, sizeof M.tasks[t]);
    M.tasks[t].state = S_NEW;
    M.tasks[t].joiner = -1;
    M.tasks[t].group = group;
    M.tasks[t].deadline = M.tasks[t].shield_deadline = EVL_FOREVER;
    return t;
}

static void act_spawn(void) {
    int t;
    if (restricted() || H.ntasks >= MAX_TASKS) return;
    t = new_task_slot(-1);
    CHECK(evl_task_spawn(H.loop, &H.tasks[t], task_fn, (void *)(intptr_t)t, NULL) == 0,
          "evl_task_spawn failed");
    mtask_push_wake(t, 0, NULL);
}

static int task_pick(void) {
    return H.ntasks ? (int)(take() % (unsigned)H.ntasks) : -1;
}

static void act_cancel(void) {
    int t = task_pick(), want, got;
    mtask *k;
    /* a joined task's handle is stale; an unstarted group child has none yet */
    if (t < 0 || M.tasks[t].state == S_JOINED || !H.tasks[t]) return;
    k = &M.tasks[t];
    CHECK(evl_task_done(H.tasks[t]) == (k->state == S_DONE), "task %d: evl_task_done is %d, "
          "the model says %d", t, evl_task_done(H.tasks[t]), k->state == S_DONE);
    want = k->state == S_DONE ? -ESRCH : 0;
    got = evl_task_cancel(H.loop, H.tasks[t]);
    CHECK(got == want, "evl_task_cancel(task %d) returned %d, the model says %d", t, got, want);
    if (got < 0) return;
    mtask_cancel(t);
}

static int fut_job(int f);

/* evl_future_set, or evl_future_cancel (status -ECANCELED, no value). A done future: -EALREADY.
   The future of an executor job that has not come back: evl_future_set is -EBUSY; a cancel
   drops a queued job and completes the future at once, or asks a running one to stop (0, and
   the future completes with -ECANCELED when the job comes back). */
static void future_set(int f, int status, void *value) {
    int cancel = status == -ECANCELED && !value, j = fut_job(f), running = 0, want, got;
    if (M.futures[f].done) want = -EALREADY;
    else if (j >= 0 && !cancel) want = -EBUSY;
    else want = 0;
    if (want == 0 && j >= 0) running = job_running(j);
    got = cancel ? evl_future_cancel(H.loop, H.futures[f])
                 : evl_future_set(H.loop, H.futures[f], status, value);
    trace("    future %d %s: %d%s", f, cancel ? "cancel" : "set", got,
          j < 0 || want != 0 ? "" : running ? " (its job runs)" : " (its job is queued)");
    CHECK(got == want, "completing future %d returned %d, the model says %d", f, got, want);
    if (got == 0 && j >= 0 && running) {
        M.xjobs[j].cancelled = 1;
    } else if (got == 0) {
        if (j >= 0) M.xjobs[j].dropped = 1;
        mfuture_complete(f, status, value);
    }
    CHECK(evl_future_done(H.futures[f]) == M.futures[f].done, "future %d: evl_future_done is %d, "
          "the model says %d", f, evl_future_done(H.futures[f]), M.futures[f].done);
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

/* Frees the future in slot f: the tasks waiting on it get -ECANCELED, its on_done callbacks
   never run, and the slot's model starts a new generation. A job behind it is dropped if
   queued, else asked to stop and orphaned (its completion does nothing). */
static void future_slot_free(int f) {
    mfuture *m = &M.futures[f];
    int j = fut_job(f);
    if (j >= 0) {
        if (job_running(j)) M.xjobs[j].cancelled = 1;
        else M.xjobs[j].dropped = 1;
    }
    evl_future_free(H.loop, H.futures[f]);
    while (m->nwait) {
        int t = m->waiters[0];
        mfuture_remove_waiter(m, t);
        mtask_wake(t, -ECANCELED, NULL);
    }
    memset(m, 0, sizeof *m);
    M.fut_gen[f]++;
}

/* Freeing a future while tasks wait on it is safe: they get -ECANCELED. Its on_done
   callbacks never run. A new pending future takes its place. */
static void act_fut_renew(void) {
    int f = (int)(take() % MAX_FUTURES);
    future_slot_free(f);
    CHECK(evl_future_new(H.loop, &H.futures[f]) == 0, "evl_future_new failed");
}

/* evl_stop inside a guarded evl_run or inside evl_run_once: either way the request ends with
   that run (the fuzzer found evl_run_once leaving it set; see README.md here). */
static void act_stop(void) {
    if (H.mode != MODE_RUN_GUARDED && H.mode != MODE_ONCE) return;
    evl_stop(H.loop);
    M.stop_requested = 1;
}

/* ---- events, semaphores, queues, groups ---- */
static void act_ev_set(void) {
    int e = (int)(take() % MAX_EVENTS);
    trace("    event %d set (%d waiter(s))", e, M.events[e].w.n);
    evl_event_set(H.loop, H.events[e]);
    M.events[e].set = 1;
    wq_wake_all(&M.events[e].w, 0, 1);
}

static void act_ev_clear(void) {
    int e = (int)(take() % MAX_EVENTS);
    CHECK(evl_event_is_set(H.events[e]) == M.events[e].set, "event %d: evl_event_is_set is %d, "
          "the model says %d", e, evl_event_is_set(H.events[e]), M.events[e].set);
    evl_event_clear(H.loop, H.events[e]);
    M.events[e].set = 0;
}

/* Freeing an event, semaphore, queue or group while tasks wait is safe: they get -ECANCELED
   (in an order the manual leaves open). A new one takes the slot. */
static void act_ev_renew(void) {
    int e = (int)(take() % MAX_EVENTS);
    trace("    event %d freed (%d waiter(s))", e, M.events[e].w.n);
    evl_event_free(H.loop, H.events[e]);
    wq_wake_all(&M.events[e].w, -ECANCELED, 1);
    memset(&M.events[e], 0, sizeof M.events[e]);
    CHECK(evl_event_new(H.loop, &H.events[e]) == 0, "evl_event_new failed");
}

/* A release hands its unit to the first waiter (FIFO, no barging), else adds it. */
static void act_sem_release(void) {
    int i = (int)(take() % MAX_SEMS);
    msem *m = &M.sems[i];
    trace("    sem %d release (count %u, %d waiter(s))", i, m->count, m->w.n);
    evl_sem_release(H.loop, H.sems[i]);
    if (m->w.n) mtask_wake(m->w.t[0], 0, NULL);
    else m->count++;
}

static void act_sem_try(void) {
    int i = (int)(take() % MAX_SEMS), want, got;
    msem *m = &M.sems[i];
    want = m->count > 0 && m->w.n == 0 ? 0 : -EAGAIN;
    got = evl_sem_try_acquire(H.loop, H.sems[i]);
    trace("    sem %d try_acquire: %d", i, got);
    CHECK(got == want, "evl_sem_try_acquire(sem %d) returned %d, the model says %d (count %u, "
          "%d waiter(s))", i, got, want, m->count, m->w.n);
    if (got == 0) m->count--;
}

static void act_sem_renew(void) {
    int i = (int)(take() % MAX_SEMS);
    unsigned count = take() % 3;
    trace("    sem %d freed (%d waiter(s)), new count %u", i, M.sems[i].w.n, count);
    evl_sem_free(H.loop, H.sems[i]);
    wq_wake_all(&M.sems[i].w, -ECANCELED, 1);
    memset(&M.sems[i], 0, sizeof M.sems[i]);
    M.sems[i].count = count;
    CHECK(evl_sem_new(H.loop, &H.sems[i], count) == 0, "evl_sem_new failed");
}

static void mqueue_append(mqueue *m, uintptr_t item) {
    CHECK(m->len < m->cap, "model queue overflow");
    m->items[m->len++] = item;
}

static void check_qlen(int i) {
    CHECK(evl_queue_len(H.queues[i]) == (size_t)M.queues[i].len, "queue %d: evl_queue_len is "
          "%zu, the model says %d", i, evl_queue_len(H.queues[i]), M.queues[i].len);
}

/* A put into a closed queue is -EPIPE. A put with a getter waiting hands the item to the
   first getter; else it needs room and no earlier putter waiting. */
static int mqueue_try_put(int i, uintptr_t item) {
    mqueue *m = &M.queues[i];
    if (m->closed) return -EPIPE;
    if (m->getters.n) {
        mtask_wake(m->getters.t[0], 0, (void *)item);
        return 0;
    }
    if (m->len == m->cap || m->putters.n) return -EAGAIN;
    mqueue_append(m, item);
    return 0;
}

/* A get takes the oldest item; the room it makes goes to the first waiting putter. An empty
   closed queue is -EPIPE. */
static int mqueue_try_get(int i, uintptr_t *item) {
    mqueue *m = &M.queues[i];
    if (m->len == 0) return m->closed ? -EPIPE : -EAGAIN;
    *item = m->items[0];
    memmove(m->items, m->items + 1, (size_t)(m->len - 1) * sizeof m->items[0]);
    m->len--;
    if (m->putters.n) {
        int p = m->putters.t[0];
        mqueue_append(m, M.tasks[p].put_item);
        mtask_wake(p, 0, NULL);
    }
    return 0;
}

static void act_q_try_put(void) {
    int i = (int)(take() % MAX_QUEUES), want, got;
    uintptr_t item = ++H.item_seq;
    check_qlen(i);
    want = mqueue_try_put(i, item);
    got = evl_queue_try_put(H.loop, H.queues[i], (void *)item);
    trace("    queue %d try_put %lu: %d", i, (unsigned long)item, got);
    CHECK(got == want, "evl_queue_try_put(queue %d) returned %d, the model says %d", i, got, want);
    check_qlen(i);
}

static void act_q_try_get(void) {
    int i = (int)(take() % MAX_QUEUES), want, got;
    uintptr_t expect = 0;
    void *item = NULL;
    check_qlen(i);
    want = mqueue_try_get(i, &expect);
    got = evl_queue_try_get(H.loop, H.queues[i], &item);
    trace("    queue %d try_get: %d (%lu)", i, got, (unsigned long)(uintptr_t)item);
    CHECK(got == want, "evl_queue_try_get(queue %d) returned %d, the model says %d", i, got, want);
    if (got == 0)
        CHECK((uintptr_t)item == expect, "queue %d: got item %lu, the model says %lu (FIFO)", i,
              (unsigned long)(uintptr_t)item, (unsigned long)expect);
    check_qlen(i);
}

static void act_q_renew(void) {
    int i = (int)(take() % MAX_QUEUES), cap = 1 + (int)(take() % QCAP_MAX), n;
    mqueue *m = &M.queues[i];
    trace("    queue %d freed (%d getter(s), %d putter(s)), new capacity %d", i, m->getters.n,
          m->putters.n, cap);
    evl_queue_free(H.loop, H.queues[i]);
    /* Getters, then putters, in one set. */
    n = m->getters.n + m->putters.n;
    if (n > 1) push_set = ++M.nsets;
    while (m->getters.n) mtask_wake(m->getters.t[0], -ECANCELED, NULL);
    while (m->putters.n) mtask_wake(m->putters.t[0], -ECANCELED, NULL);
    push_set = 0;
    memset(m, 0, sizeof *m);
    m->cap = cap;
    CHECK(evl_queue_new(H.loop, &H.queues[i], (size_t)cap) == 0, "evl_queue_new failed");
}

/* evl_queue_close: the waiting putters (their items stay out) and getters (the queue is
   empty when they wait) wake with -EPIPE, in one set; the items left stay for the gets. */
static void act_q_close(void) {
    int i = (int)(take() % MAX_QUEUES);
    mqueue *m = &M.queues[i];
    trace("    queue %d closed (%d item(s), %d getter(s), %d putter(s))", i, m->len, m->getters.n,
          m->putters.n);
    check_qlen(i);
    evl_queue_close(H.loop, H.queues[i]);
    m->closed = 1;
    if (m->getters.n + m->putters.n > 1) push_set = ++M.nsets;
    while (m->putters.n) mtask_wake(m->putters.t[0], -EPIPE, NULL);
    while (m->getters.n) mtask_wake(m->getters.t[0], -EPIPE, NULL);
    push_set = 0;
    check_qlen(i);
}

/* evl_group_first_failure agrees with the model: the first failure's error, the task it came
   from (its default name "task-N", N its spawn number in the loop) and its spawn site in
   debug mode only, and how many tasks failed. */
static void check_group(int g) {
    mgroup *m = &M.groups[g];
    evl_group_failure ff;
    int got;
    memset(&ff, 0x5a, sizeof ff);
    got = evl_group_first_failure(H.groups[g], &ff);
    CHECK(got == m->first_error && ff.error == m->first_error, "group %d: evl_group_first_failure "
          "returned %d (error %d), the model says %d", g, got, ff.error, m->first_error);
    CHECK(ff.failures == (size_t)m->failures, "group %d: %zu failure(s), the model says %d", g,
          ff.failures, m->failures);
    if (m->first_error) {
        char name[32];
        snprintf(name, sizeof name, "task-%d", m->first_task + 1);
        CHECK(strcmp(ff.task_name, name) == 0, "group %d: first failure from '%s', the model says "
              "'%s'", g, ff.task_name, name);
        CHECK((ff.file != NULL) == H.debug, "group %d: first failure's spawn site is %s in %s "
              "mode", g, ff.file ? ff.file : "NULL", H.debug ? "debug" : "normal");
    }
}

/* A group child has no handle until it runs (evl_group_spawn gives none): the harness takes
   evl_task_current then, and drops it when the child finishes (it is released at once);
   evl_group_spawn_task gives the handle at once, and it must be the one the child runs as. A
   group that already failed, or was cancelled, cancels a newcomer at once. */
static void group_spawn(int with_handle) {
    int g = (int)(take() % MAX_GROUPS), t;
    mgroup *m = &M.groups[g];
    if (restricted() || H.ntasks >= MAX_TASKS) return;
    t = new_task_slot(g);
    H.tasks[t] = NULL;
    if (with_handle) {
        CHECK(evl_group_spawn_task(H.loop, H.groups[g], &H.tasks[t], task_fn, (void *)(intptr_t)t,
                                   NULL) == 0 && H.tasks[t], "evl_group_spawn_task failed");
    } else {
        CHECK(evl_group_spawn(H.loop, H.groups[g], task_fn, (void *)(intptr_t)t, NULL) == 0,
              "evl_group_spawn failed");
    }
    trace("    group %d spawns task %d%s", g, t, with_handle ? " (with its handle)" : "");
    m->children[m->nchildren++] = t;
    mtask_push_wake(t, 0, NULL);
    if (m->first_error || m->cancelled) mtask_cancel(t);
}

static void act_group_spawn(void) {
    group_spawn(0);
}

static void act_group_spawn_task(void) {
    group_spawn(1);
}

/* evl_group_cancel: the children are cancelled (newest first), and so is every later one. */
static void act_group_cancel(void) {
    int g = (int)(take() % MAX_GROUPS);
    trace("    group %d cancelled (%d child(ren))", g, M.groups[g].nchildren);
    check_group(g);
    evl_group_cancel(H.loop, H.groups[g]);
    M.groups[g].cancelled = 1;
    mgroup_cancel_children(g);
}

/* evl_group_free: the children still alive are cancelled (newest first) and detached, then
   the waiters get -ECANCELED. */
static void act_group_renew(void) {
    int g = (int)(take() % MAX_GROUPS), i;
    mgroup *m = &M.groups[g];
    trace("    group %d freed (%d child(ren), %d waiter(s))", g, m->nchildren, m->w.n);
    check_group(g);
    evl_group_free(H.loop, H.groups[g]);
    for (i = m->nchildren - 1; i >= 0; i--) {
        int c = m->children[i];
        M.tasks[c].group = -1;
        M.tasks[c].detached = 1;
        mtask_cancel(c);
    }
    m->nchildren = 0;
    wq_wake_all(&m->w, -ECANCELED, 1);
    m->first_error = m->cancelled = m->failures = 0;
    m->gen++;
    CHECK(evl_group_new(H.loop, &H.groups[g]) == 0, "evl_group_new failed");
}

/* ---- executor jobs ---- */
static void *xjob_fn(void *arg) {
    int j = (int)(intptr_t)arg;
    pthread_mutex_lock(&X.lock);
    X.started[j] = 1;
    pthread_cond_broadcast(&X.cond);
    while (!X.released[j] && !X.open_all) pthread_cond_wait(&X.cond, &X.lock);
    X.stop_seen[j] = evl_executor_cancelled();
    X.finished[j] = 1;
    pthread_cond_broadcast(&X.cond);
    pthread_mutex_unlock(&X.lock);
    return (void *)(uintptr_t)(0x7000 + j);
}

/* Waits until no job is queued (or every worker is busy: the one-thread pool) and every busy
   worker is inside a gated function: then every completion of a released job has been handed
   to the loop (the pool sets async_pending under the lock it counts busy workers with), a job
   cancelled before it started was taken out of the queue and will never run, and which jobs
   run cannot change until the harness releases one. */
static void exec_settle(void) {
    int n;
    for (n = 0;; n++) {
        evl_stats st;
        int j, inside = 0;
        pthread_mutex_lock(&X.lock);
        for (j = 0; j < MAX_XJOBS; j++) inside += X.started[j] && !X.finished[j];
        pthread_mutex_unlock(&X.lock);
        evl_loop_stats(H.loop, &st);
        if (st.executor_busy == (size_t)inside &&
            (st.executor_queue == 0 || st.executor_busy == (size_t)H.xthreads))
            return;
        CHECK(n < 2000000, "executor jobs never settled (queued %zu, busy %zu, gated %d)",
              st.executor_queue, st.executor_busy, inside);
        if (n >= 100) usleep(10);
    }
}

/* Whether job j has left the pool's queue (it runs, or has returned): its function was
   entered, once the pool has settled. A job dropped from the queue never enters it. */
static int job_running(int j) {
    int r;
    exec_settle();
    pthread_mutex_lock(&X.lock);
    r = X.started[j];
    pthread_mutex_unlock(&X.lock);
    CHECK(!(r && M.xjobs[j].dropped), "executor job %d ran after it was dropped from the queue", j);
    return r;
}

/* The job behind future slot f's current future, still to come back: -1 if none. */
static int fut_job(int f) {
    int j;
    for (j = 0; j < H.nxjobs; j++) {
        const mxjob *x = &M.xjobs[j];
        if (!x->run && x->fut == f && x->fgen == M.fut_gen[f] && !x->gone && !x->dropped) return j;
    }
    return -1;
}

static int xjob_new(int run, int who) {
    int j;
    if (H.nxjobs >= MAX_XJOBS) return -1;
    j = H.nxjobs++;
    memset(&M.xjobs[j], 0, sizeof M.xjobs[j]);
    M.xjobs[j].used = 1;
    M.xjobs[j].run = run;
    M.xjobs[j].task = run ? who : -1;
    M.xjobs[j].fut = run ? -1 : who;
    return j;
}

/* evl_executor_submit into a future slot: the old future is freed first (its waiters get
   -ECANCELED; a job behind it is orphaned), the job's future takes the slot. */
static void act_exec_submit(void) {
    int f = (int)(take() % MAX_FUTURES), j;
    if (restricted() || H.nxjobs >= MAX_XJOBS) return;
    future_slot_free(f);
    j = xjob_new(0, f);
    M.xjobs[j].fgen = M.fut_gen[f];
    CHECK(evl_executor_submit(H.loop, xjob_fn, (void *)(intptr_t)j, &H.futures[f]) == 0,
          "evl_executor_submit failed");
    trace("    executor job %d submitted into future %d", j, f);
}

/* Opens the gate of the oldest job that is in its function and not released yet, and waits
   until its completion has reached the loop. The job saw evl_executor_cancelled say whether
   it had been asked to stop (on the loop thread, outside any job, it says 0). */
static void act_exec_release(void) {
    int j, pick = -1, seen;
    if (!H.nxjobs) return;
    CHECK(evl_executor_cancelled() == 0, "evl_executor_cancelled is 1 outside a job");
    exec_settle();
    pthread_mutex_lock(&X.lock);
    for (j = 0; j < H.nxjobs && pick < 0; j++)
        if (X.started[j] && !X.released[j]) pick = j;
    if (pick >= 0) {
        X.released[pick] = 1;
        pthread_cond_broadcast(&X.cond);
        while (!X.finished[pick]) pthread_cond_wait(&X.cond, &X.lock);
    }
    seen = pick >= 0 ? X.stop_seen[pick] : 0;
    pthread_mutex_unlock(&X.lock);
    if (pick < 0) return;
    CHECK(!M.xjobs[pick].dropped, "executor job %d ran after it was dropped from the queue", pick);
    CHECK(seen == M.xjobs[pick].cancelled, "executor job %d: evl_executor_cancelled said %d in it, "
          "the model says %d", pick, seen, M.xjobs[pick].cancelled);
    exec_settle();   /* and the pool has handed the completion to the loop */
    M.xjobs[pick].done = 1;
    M.xorder[M.nxdone++] = pick;
    M.async_pending = 1;
    trace("    executor job %d completed", pick);
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
    case A_EV_SET: act_ev_set(); break;
    case A_EV_CLEAR: act_ev_clear(); break;
    case A_EV_RENEW: act_ev_renew(); break;
    case A_SEM_RELEASE: act_sem_release(); break;
    case A_SEM_TRY: act_sem_try(); break;
    case A_SEM_RENEW: act_sem_renew(); break;
    case A_Q_TRY_PUT: act_q_try_put(); break;
    case A_Q_TRY_GET: act_q_try_get(); break;
    case A_Q_RENEW: act_q_renew(); break;
    case A_GROUP_SPAWN: act_group_spawn(); break;
    case A_GROUP_RENEW: act_group_renew(); break;
    case A_EXEC_SUBMIT: act_exec_submit(); break;
    case A_EXEC_RELEASE: act_exec_release(); break;
    case A_Q_CLOSE: act_q_close(); break;
    case A_GROUP_CANCEL: act_group_cancel(); break;
    case A_GROUP_SPAWN_TASK: act_group_spawn_task(); break;
    default: break;
    }
}

/* What a callback or task step does with an action byte: a top-level operation's code
   (17-22) means what it meant when the byte was taken % NACT (0-5). */
static unsigned cb_code(unsigned b) {
    unsigned a = b % NCODES;
    return a >= NACT && a < A_EV_SET ? a - NACT : a;
}

/* A callback does up to MAX_ACTIONS actions, chosen by the input when it runs. */
static void do_actions(void) {
    unsigned n = take() % (MAX_ACTIONS + 1), i;
    for (i = 0; i < n; i++) do_action(cb_code(take()));
}

/* ---- tasks ---- */
/* What evl__task_enter says before a task may suspend: cancellation (not inside a shield),
   then a deadline that has passed (inside a shield, only the one set inside it). */
static int enter_rc(int t) {
    mtask *k = &M.tasks[t];
    evl_time dl = mtask_deadline(t);
    if (k->cancelled && !k->shield) return -ECANCELED;
    if (dl != EVL_FOREVER && dl <= M.vnow) return -ETIMEDOUT;
    return 0;
}

/* A task resumed by one of its own timers: the loop's next event must be that timer. */
static int obs_task_timer(int t) {
    int n;
    model_phase_to(PH_TIMER);
    model_skip_zombie_timers();
    n = mt_next_due();
    CHECK(n == T_SLEEP(t) || n == T_DEADLINE(t), "task %d was resumed by a timer, the model "
          "expected timer %d (now %lld)", t, n, (long long)M.vnow);
    mt_fire(n);
    trace("  fired timer %d (%s of task %d)", n, n == T_SLEEP(t) ? "sleep" : "deadline", t);
    return n;
}

/* After a suspending call returned: either at once (the model said so), or as a resumption
   that must be the loop's next event: from the ready deque, or from its sleep or deadline
   timer. */
static void task_resumed(int t, int rc, void *value) {
    mtask *k = &M.tasks[t];
    int want;
    if (H.unchecked) return;
    trace("    task %d: %s returned %d", t, k->immediate ? "at once" : "resumed, its wait", rc);
    if (k->immediate) {
        k->immediate = 0;
        CHECK(rc == k->immediate_rc, "task %d: a suspension returned %d at once, the model "
              "says %d", t, rc, k->immediate_rc);
        return;
    }
    obs_begin("task step");
    if (k->woken) {
        obs_ready(J_TASK, t);
    } else if (obs_task_timer(t) == T_SLEEP(t)) {
        CHECK(k->wait_kind == W_SLEEP, "task %d: its sleep timer woke a wait of kind %d", t,
              k->wait_kind);
        k->wake_status = 0;
        k->wake_value = NULL;
    } else {
        mtask_leave_wait(t);
        k->wake_status = -ETIMEDOUT;
        k->wake_value = NULL;
    }
    want = k->wake_status;
    /* A phase-2 group waiter returns its own error, or -ECANCELED when its group was freed
       (even after the group woke it). */
    if (k->wait_kind == W_GROUP && k->gphase2)
        want = M.groups[k->wait_obj].gen != k->wait_gen ? -ECANCELED : k->gerr;
    /* evl_executor_run that waited for its running job returns its own error; one that
       returns otherwise before its job came back dropped the job from the queue. */
    if (k->wait_kind == W_EXEC && k->xwait) want = k->xerr;
    else if (k->wait_kind == W_EXEC && !M.xjobs[k->wait_obj].gone) M.xjobs[k->wait_obj].dropped = 1;
    CHECK(rc == want, "task %d: its suspension (kind %d) returned %d, the model says %d", t,
          k->wait_kind, rc, want);
    if (k->wait_kind == W_FUTURE || (k->wait_kind == W_QGET && rc == 0))
        CHECK(value == k->wake_value, "task %d: got value %p, the model says %p", t, value,
              k->wake_value);
    if (k->wait_kind == W_EXEC)
        CHECK(value == (rc == 0 ? k->wake_value : NULL), "task %d: evl_executor_run returned %d "
              "with result %p, the model says %p", t, rc, value, rc == 0 ? k->wake_value : NULL);
    if (k->wait_kind == W_JOIN) M.tasks[k->wait_obj].claimed = 0;
    M.timers[T_SLEEP(t)].active = 0;
    M.timers[T_DEADLINE(t)].active = 0;
    k->state = S_RUN;
    k->woken = 0;
    k->wait_kind = W_NONE;
    k->gphase2 = 0;
    k->by_group = 0;
    k->xwait = 0;
}

static void expect_immediate(int t, int rc) {
    M.tasks[t].immediate = 1;
    M.tasks[t].immediate_rc = rc;
}

/* The suspension arms the deadline timer for the deadline that applies (after any sleep
   timer: ties go to the sleep). evl_yield does not go through it. */
static void suspend_model(int t, int kind, int obj) {
    mtask *k = &M.tasks[t];
    evl_time dl = mtask_deadline(t);
    k->state = S_SUSP;
    k->woken = 0;
    k->wait_kind = kind;
    k->wait_obj = obj;
    k->gphase2 = 0;
    k->by_group = 0;
    k->xwait = 0;
    if (kind != W_YIELD && dl != EVL_FOREVER)
        mt_start(T_DEADLINE(t), dl > M.vnow ? dl - M.vnow : 0, 0);
}

static void step_yield(evl_loop *loop, int t) {
    int rc = enter_rc(t);
    if (rc) {
        expect_immediate(t, rc);
    } else {
        suspend_model(t, W_YIELD, 0);
        mtask_push_wake(t, 0, NULL);
    }
    task_resumed(t, evl_yield(loop), NULL);
}

static void step_sleep(evl_loop *loop, int t) {
    evl_time d = decode_delay(take());
    int rc = enter_rc(t);
    if (rc) {
        expect_immediate(t, rc);
    } else {
        mt_start(T_SLEEP(t), d, 0);
        suspend_model(t, W_SLEEP, 0);
    }
    task_resumed(t, evl_sleep(loop, d), NULL);
}

static void step_await(evl_loop *loop, int t) {
    int f = (int)(take() % MAX_FUTURES), rc;
    mfuture *m = &M.futures[f];
    void *value = NULL;
    if (m->done) {
        expect_immediate(t, m->status);
    } else if ((rc = enter_rc(t)) != 0) {
        expect_immediate(t, rc);
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
    if (u < 0 || M.tasks[u].state == S_JOINED || !H.tasks[u]) return;
    v = &M.tasks[u];
    if (v->group >= 0 || v->detached) expect_immediate(t, -EINVAL);
    else if (v->claimed) expect_immediate(t, -EBUSY);
    else if (u == t) expect_immediate(t, -EDEADLK);
    else if (v->state == S_DONE) expect_immediate(t, 0);
    else if ((rc = enter_rc(t)) != 0) expect_immediate(t, rc);
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

/* An event wait returns at once when the event is set (after the cancellation and deadline
   checks); a set wakes every waiter. */
static void step_event_wait(evl_loop *loop, int t) {
    int e = (int)(take() % MAX_EVENTS), rc = enter_rc(t);
    if (rc) expect_immediate(t, rc);
    else if (M.events[e].set) expect_immediate(t, 0);
    else {
        suspend_model(t, W_EVENT, e);
        wq_push(&M.events[e].w, t);
    }
    trace("    task %d waits for event %d", t, e);
    task_resumed(t, evl_event_wait(loop, H.events[e]), NULL);
}

static void step_sem_acquire(evl_loop *loop, int t) {
    int i = (int)(take() % MAX_SEMS), rc = enter_rc(t);
    msem *m = &M.sems[i];
    if (rc) {
        expect_immediate(t, rc);
    } else if (m->count > 0 && m->w.n == 0) {
        m->count--;
        expect_immediate(t, 0);
    } else {
        suspend_model(t, W_SEM, i);
        wq_push(&m->w, t);
    }
    trace("    task %d acquires sem %d", t, i);
    task_resumed(t, evl_sem_acquire(loop, H.sems[i]), NULL);
}

static void step_queue_put(evl_loop *loop, int t) {
    int i = (int)(take() % MAX_QUEUES), rc = enter_rc(t);
    uintptr_t item = ++H.item_seq;
    if (rc) {
        expect_immediate(t, rc);
    } else if ((rc = mqueue_try_put(i, item)) != -EAGAIN) {
        expect_immediate(t, rc);
    } else {
        suspend_model(t, W_QPUT, i);
        M.tasks[t].put_item = item;
        wq_push(&M.queues[i].putters, t);
    }
    trace("    task %d puts %lu into queue %d", t, (unsigned long)item, i);
    task_resumed(t, evl_queue_put(loop, H.queues[i], (void *)item), NULL);
    if (!H.unchecked) check_qlen(i);
}

static void step_queue_get(evl_loop *loop, int t) {
    int i = (int)(take() % MAX_QUEUES), rc = enter_rc(t), immediate = 0;
    uintptr_t expect = 0;
    void *item = NULL;
    if (rc) {
        expect_immediate(t, rc);
    } else if ((rc = mqueue_try_get(i, &expect)) != -EAGAIN) {
        expect_immediate(t, rc);
        immediate = rc == 0;
    } else {
        suspend_model(t, W_QGET, i);
        wq_push(&M.queues[i].getters, t);
    }
    trace("    task %d gets from queue %d", t, i);
    rc = evl_queue_get(loop, H.queues[i], &item);
    if (immediate && rc == 0)
        CHECK((uintptr_t)item == expect, "task %d: got item %lu from queue %d, the model says "
              "%lu (FIFO)", t, (unsigned long)(uintptr_t)item, i, (unsigned long)expect);
    if (!H.unchecked && rc != 0)
        CHECK(item == NULL, "task %d: evl_queue_get returned %d and stored an item", t, rc);
    task_resumed(t, rc, item);
    if (!H.unchecked) check_qlen(i);
}

/* evl_group_wait: an empty group returns its first error at once (no checks); a waiter that
   may suspend waits for the last child (phase 1); one that is cancelled or past its deadline,
   at entry or while it waits, cancels the children and waits for them shielded (phase 2). */
static void step_group_wait(evl_loop *loop, int t) {
    int g = (int)(take() % MAX_GROUPS), rc;
    mgroup *m = &M.groups[g];
    mtask *k = &M.tasks[t];
    unsigned gen = m->gen;
    trace("    task %d waits for group %d (%d child(ren))", t, g, m->nchildren);
    if (m->nchildren == 0) {
        expect_immediate(t, m->first_error);
    } else if ((rc = enter_rc(t)) == 0) {
        suspend_model(t, W_GROUP, g);
        k->wait_gen = m->gen;
        wq_push(&m->w, t);
    } else {
        mgroup_cancel_children(g);
        suspend_model(t, W_GROUP, g);
        M.timers[T_DEADLINE(t)].active = 0;   /* shielded: no deadline timer */
        k->wait_gen = m->gen;
        k->gphase2 = 1;
        k->gerr = rc;
        wq_push(&m->w, t);
    }
    task_resumed(t, evl_group_wait(loop, H.groups[g]), NULL);
    if (!H.unchecked && M.groups[g].gen == gen) check_group(g);
}

/* evl_deadline(now + d): returns the deadline in force and keeps the earlier one. Inside a
   shield both act on the shield's deadline, outside on the task's own. */
static void step_deadline(evl_loop *loop, int t) {
    mtask *k = &M.tasks[t];
    evl_time at = tadd(M.vnow, decode_delay(take())), old;
    evl_time *slot = k->shield ? &k->shield_deadline : &k->deadline;
    if (k->ndl >= MAX_DEADLINES) return;
    old = evl_deadline(loop, at);
    CHECK(old == *slot, "task %d: evl_deadline returned %lld, the model says %lld (%s)", t,
          (long long)old, (long long)*slot, k->shield ? "in a shield" : "outside shields");
    k->dl_stack[k->ndl++] = old;
    if (at < *slot) *slot = at;
    trace("    task %d %sdeadline %lld ms", t, k->shield ? "shield " : "",
          (long long)(*slot / EVL_MSEC(1)));
}

static void step_deadline_restore(evl_loop *loop, int t) {
    mtask *k = &M.tasks[t];
    evl_time old = k->ndl ? k->dl_stack[--k->ndl] : EVL_FOREVER;
    evl_deadline_restore(loop, old);
    if (k->shield) k->shield_deadline = old;
    else k->deadline = old;
}

/* The last evl_shield_end drops the shield's deadline. */
static void step_shield(evl_loop *loop, int t) {
    mtask *k = &M.tasks[t];
    if (take() & 1) {
        evl_shield_end(loop);
        if (k->shield && --k->shield == 0) k->shield_deadline = EVL_FOREVER;
    } else if (k->shield < 3) {
        evl_shield_begin(loop);
        k->shield++;
    }
    trace("    task %d shield depth %d", t, k->shield);
}

/* evl_executor_run: the task waits for the job; a cancel or the deadline that applies drops
   a queued job and returns at once, or makes the task wait for its running job (see
   mexec_waiter_continues). The result is stored only with 0. */
static void step_exec_run(evl_loop *loop, int t) {
    int rc = enter_rc(t), j = -1;
    void *result = NULL;
    if (rc) {
        expect_immediate(t, rc);
    } else {
        if ((j = xjob_new(1, t)) < 0) return;
        suspend_model(t, W_EXEC, j);
    }
    trace("    task %d runs executor job %d", t, j);
    rc = evl_executor_run(loop, xjob_fn, (void *)(intptr_t)(j < 0 ? 0 : j), &result);
    if (!H.unchecked && rc != 0)
        CHECK(result == NULL, "task %d: evl_executor_run returned %d and stored a result", t, rc);
    task_resumed(t, rc, result);
}

/* Task steps (byte % NSTEPS): 0-7 as before (return, yield, sleep, await, join, action x2,
   result), then the steps added with the new primitives. */
enum {
    ST_EVENT_WAIT = 8, ST_SEM_ACQUIRE, ST_QUEUE_PUT, ST_QUEUE_GET, ST_GROUP_WAIT, ST_DEADLINE,
    ST_DEADLINE_RESTORE, ST_SHIELD, ST_EXEC_RUN, NSTEPS
};

static int task_fn(evl_loop *loop, void *arg) {
    int t = (int)(intptr_t)arg, step, result = 0;
    if (H.unchecked) return 0;
    obs_begin("task start");
    obs_ready(J_TASK, t);
    CHECK(M.tasks[t].state == S_NEW && !M.tasks[t].cancelled, "task %d started (state %d, "
          "cancelled %d)", t, M.tasks[t].state, M.tasks[t].cancelled);
    M.tasks[t].state = S_RUN;
    M.tasks[t].woken = 0;
    if (!H.tasks[t]) H.tasks[t] = evl_task_current(loop);   /* a group child */
    CHECK(H.tasks[t] == evl_task_current(loop), "task %d runs as another task than its handle", t);
    for (step = 0; step < MAX_STEPS && !H.unchecked; step++) {
        unsigned s = take() % NSTEPS;
        if (s == 0) break;
        switch (s) {
        case 1: step_yield(loop, t); break;
        case 2: step_sleep(loop, t); break;
        case 3: step_await(loop, t); break;
        case 4: step_join(loop, t); break;
        case 7: result = -(int)(take() % 3); break;
        case ST_EVENT_WAIT: step_event_wait(loop, t); break;
        case ST_SEM_ACQUIRE: step_sem_acquire(loop, t); break;
        case ST_QUEUE_PUT: step_queue_put(loop, t); break;
        case ST_QUEUE_GET: step_queue_get(loop, t); break;
        case ST_GROUP_WAIT: step_group_wait(loop, t); break;
        case ST_DEADLINE: step_deadline(loop, t); break;
        case ST_DEADLINE_RESTORE: step_deadline_restore(loop, t); break;
        case ST_SHIELD: step_shield(loop, t); break;
        case ST_EXEC_RUN: step_exec_run(loop, t); break;
        default: do_action(cb_code(take())); break;
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
    if (mt_any_active() || posts_pending() || H.ntasks || H.nxjobs) return;
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
    if (rq_len() || mt_any_active() || posts_pending() || any_watcher_ready() || M.async_pending ||
        H.nxjobs)
        return;
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
    if (u < 0 || M.tasks[u].state == S_JOINED || !H.tasks[u]) return;
    v = &M.tasks[u];
    want = v->group >= 0 || v->detached ? -EINVAL
           : v->claimed                 ? -EBUSY
           : v->state == S_DONE         ? 0
                                        : -EPERM;
    got = evl_task_join(H.loop, H.tasks[u], &result);
    trace("    join task %d from outside: %d", u, got);
    CHECK(got == want, "evl_task_join(task %d) outside a task returned %d, the model says %d", u,
          got, want);
    if (got == 0) {
        CHECK(result == v->result, "join of task %d gave %d, its result was %d", u, result,
              v->result);
        v->state = S_JOINED;
    }
}

enum { OP_RUN_ONCE = NACT, OP_RUN, OP_RUN_RESTRICTED, OP_POST, OP_POST_WAKE, OP_JOIN };
#define NOPS NCODES

static void do_op(unsigned op) {
    trace("op %u", op);
    /* The pool has settled before the top level acts: every job the input made is in a
       worker, or (the one-thread pool) waits behind the one that is. Whether a job has left
       the queue is asked again wherever it matters (job_running): inside a drain a new job may
       still be on its way to a worker. */
    if (H.nxjobs) exec_settle();
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

/* Counted. A task abandoned by evl_loop_close is reported in every mode, by name, with
   -ETIMEDOUT, and only there; none waits for a running job then (every gate is open and the
   close waits for the jobs that tasks wait on). */
static void on_exception(evl_loop *loop, const evl_exception *e, void *ud) {
    static const char abandoned[] = "task still running when the loop closed: abandoned";
    (void)loop;
    (void)ud;
    H.exceptions++;
    CHECK(e->message && e->error < 0 && e->error != -ECANCELED, "an exception without a message "
          "or with error %d", e->error);
    CHECK(strncmp(e->message, "task abandoned", 14) != 0, "a task was abandoned while its "
          "executor job still ran: %s", e->message);
    if (strncmp(e->message, abandoned, sizeof abandoned - 1) != 0) return;
    CHECK(H.closing, "'%s' reported outside evl_loop_close", e->message);
    CHECK(e->error == -ETIMEDOUT && e->task && e->task_name && e->task_name[0], "an abandoned "
          "task reported with error %d, task %p, name %s", e->error, (void *)e->task,
          e->task_name ? e->task_name : "NULL");
    H.abandoned++;
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
    pthread_mutex_lock(&X.lock);   /* the last input's jobs have all left their functions */
    memset(X.started, 0, sizeof X.started);
    memset(X.released, 0, sizeof X.released);
    memset(X.finished, 0, sizeof X.finished);
    memset(X.stop_seen, 0, sizeof X.stop_seen);
    X.open_all = 0;
    pthread_mutex_unlock(&X.lock);
    evl_config_init(&cfg);
    /* EVLOOP_BACKEND, when set, picks the backend (the test runs every one); else the input. */
    cfg.backend = getenv("EVLOOP_BACKEND") ? EVL_BACKEND_AUTO : kinds[(first & 3) % 3];
    cfg.debug = (first >> 2) & 1 ? EVL_DEBUG_ON : EVL_DEBUG_OFF;
    cfg.clock = EVL_CLOCK_VIRTUAL;
    cfg.log = log_silent;
    /* A thread for every job (none waits in the queue once the pool settled), or one thread:
       the jobs after the running one wait in the queue. */
    H.debug = (first >> 2) & 1;
    H.xthreads = first & 16 ? 1 : MAX_XJOBS;
    cfg.executor_threads = H.xthreads;
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
    for (i = 0; i < MAX_EVENTS; i++)
        CHECK(evl_event_new(H.loop, &H.events[i]) == 0, "evl_event_new failed");
    for (i = 0; i < MAX_SEMS; i++) {    /* sem 0 starts empty, sem 1 with one unit */
        M.sems[i].count = (unsigned)i;
        CHECK(evl_sem_new(H.loop, &H.sems[i], (unsigned)i) == 0, "evl_sem_new failed");
    }
    for (i = 0; i < MAX_QUEUES; i++) {  /* queue 0 holds one item, queue 1 two */
        M.queues[i].cap = i + 1;
        CHECK(evl_queue_new(H.loop, &H.queues[i], (size_t)(i + 1)) == 0, "evl_queue_new failed");
    }
    for (i = 0; i < MAX_GROUPS; i++)
        CHECK(evl_group_new(H.loop, &H.groups[i]) == 0, "evl_group_new failed");
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
        /* A loop with a timer never blocks here (the virtual clock jumps): on a loaded machine
           it could spin through every iteration before a poster thread gets a core. */
        if (n >= 1000) usleep(20);
        evl_run_once(H.loop, -1);
    }
    posters_wait();
}

static void teardown(int burst) {
    int i, err;
    H.unchecked = 1;
    pthread_mutex_lock(&X.lock);
    X.open_all = 1;
    pthread_cond_broadcast(&X.cond);
    pthread_mutex_unlock(&X.lock);
    final_burst(burst ? BURST : 0);
    for (i = 0; i < MAX_FUTURES; i++) evl_future_free(H.loop, H.futures[i]);
    for (i = 0; i < MAX_GROUPS; i++) evl_group_free(H.loop, H.groups[i]);
    for (i = 0; i < MAX_EVENTS; i++) evl_event_free(H.loop, H.events[i]);
    for (i = 0; i < MAX_SEMS; i++) evl_sem_free(H.loop, H.sems[i]);
    for (i = 0; i < MAX_QUEUES; i++) evl_queue_free(H.loop, H.queues[i]);
    H.closing = 1;
    err = evl_loop_close(H.loop);
    CHECK(err == 0, "evl_loop_close returned %d", err);
    H.closed = 1;
    pthread_mutex_lock(&X.lock);
    for (i = 0; i < H.nxjobs; i++)
        CHECK(!(M.xjobs[i].dropped && X.started[i]), "executor job %d ran after it was dropped", i);
    pthread_mutex_unlock(&X.lock);
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
