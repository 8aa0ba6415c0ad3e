/* evloop.h - a header-only event loop for C: selector, timers, tasks, executor, signals.
   https://github.com/evloop/evloop.h (MIT license, see the end of this file)

   ============================================================================================
   MANUAL
   ============================================================================================

   QUICK START
   -----------
   evloop.h is the whole library. Include it wherever you need the API, and in exactly one C or
   C++ file define EVLOOP_IMPLEMENTATION first, so that file gets the code:

       #define EVLOOP_IMPLEMENTATION
       #include "evloop.h"
       #include <stdio.h>

       static void on_tick(evl_loop *loop, void *arg) {
           int *left = (int *)arg;
           printf("tick at %lld ms\n", (long long)(evl_now(loop) / EVL_MSEC(1)));
           if (--*left == 0) evl_stop(loop);
       }

       int main(void) {
           evl_loop *loop;
           evl_timer tick;
           int left = 3;
           if (evl_loop_new(&loop, NULL) < 0) return 1;
           evl_timer_init(&tick, on_tick, &left);
           evl_timer_start(loop, &tick, EVL_MSEC(100), EVL_MSEC(100));
           evl_run(loop);
           evl_loop_close(loop);
           return 0;
       }

   Build with `cc -O2 main.c -lpthread`. When evloop.h is the first include of the
   implementation file it defines the POSIX feature macros it needs itself.

   CONFIGURATION (compile time)
   ----------------------------
   Define these before including evloop.h (in the implementation file at least):

     EVLOOP_IMPLEMENTATION   compile the implementation into this translation unit
     EVLOOP_STATIC           make every function static (private to one translation unit)
     EVL_MALLOC(sz)          default allocator (malloc); a per-loop hook in evl_config overrides
     EVL_REALLOC(p, sz)      default reallocator (realloc)
     EVL_FREE(p)             default deallocator (free)
     EVL_ASSERT(c)           assertion for programming errors (assert)
     EVL_NO_THREADS          no pthreads: evl_call_soon_threadsafe and evl_stop are then only
                             safe from the loop's own thread
     EVL_NO_EPOLL            do not compile the epoll backend (Linux)
     EVL_NO_KQUEUE           do not compile the kqueue backend (BSD, macOS)

   CONFIGURATION (run time)
   ------------------------
   evl_loop_new takes an evl_config (NULL means all defaults). evl_config_init fills one with the
   defaults; a field left at zero also means "default", except `debug` (see below).

     backend     EVL_BACKEND_AUTO: EVLOOP_BACKEND from the environment (epoll, kqueue, poll,
                 select), else the best the platform has (epoll, kqueue, poll in that order).
                 Asking for a backend this build or platform lacks is -ENOSYS, an unknown name
                 in EVLOOP_BACKEND is -EINVAL: never a silent fallback.
     debug       -1 (what evl_config_init sets): from EVLOOP_DEBUG in the environment; 0 off;
                 1 on. Read back with evl_get_debug.
     alloc       a realloc-like hook `void *fn(void *ud, void *ptr, size_t size)`: size 0 frees
                 ptr; ptr NULL allocates. Every allocation of the loop goes through it; it must
                 be thread-safe, because evl_call_soon_threadsafe grows its queue on the
                 posting thread. NULL: EVL_MALLOC / EVL_REALLOC / EVL_FREE.
     alloc_ud    passed to `alloc`.

   CONCEPTS
   --------
   Time. evl_time is int64_t nanoseconds of the monotonic clock. EVL_USEC, EVL_MSEC and EVL_SEC
   build durations; EVL_FOREVER is the largest time. Adding a huge delay saturates at
   EVL_FOREVER, it never overflows. evl_now returns the loop's cached time: it is read once per
   iteration (after the poll) and whenever a timer is started, so a timer never fires early.

   Iteration. evl_run repeats iterations until evl_stop is called or nothing is left to wait for
   (no queued callback, active timer, active I/O watcher, or evl_loop_ref hold). One iteration:
     1. compute the poll timeout: 0 if callbacks are ready, else until the first timer, else
        forever (evl_run_once caps it with its max_wait);
     2. poll the backend; the I/O watchers that are ready are marked pending;
     3. run, in this order, the callbacks queued before this step began (FIFO), the pending I/O
        callbacks, and the timers that are due (deadline order, ties in start order).
   A callback queued during step 3 runs in the next iteration, so a callback that reschedules
   itself never starves I/O or timers. When the loop has callbacks ready and no I/O watcher,
   the zero-timeout poll is skipped: there is nothing it could report.

   Handles. Timers (evl_timer) and I/O watchers (evl_io) are structs you own: embed them in your
   own objects, init them once, start and stop them as often as you like. The loop never
   allocates for them on the hot path. A zero-filled handle is a valid inactive one. Stopping an
   inactive handle does nothing; starting an active one restarts it with the new arguments. A
   handle must stay valid (not freed, not moved) while it is active. evl_loop_close stops every
   handle that is still active, so you may close a loop at any time.

   Timers. evl_timer_start(loop, t, delay, repeat) fires t after `delay`, then every `repeat`
   (0: once). Timers live in a 4-ary min-heap that stores each timer's index in the timer:
   start and stop are O(log n), the next deadline O(1). A timer stopped by a callback that ran
   earlier in the same iteration does not fire; a timer may stop or restart itself or any other
   from its callback. A timer restarted from a callback fires at the earliest in the next
   iteration, even with a zero delay. A repeating timer that fell behind skips the ticks it
   missed rather than firing a burst.

   I/O watchers. evl_io_start(loop, w, EVL_READ | EVL_WRITE) watches w's fd, level triggered:
   the callback runs in every iteration in which the fd is ready, with the ready events (errors
   and hang-ups are reported as both readable and writable, within the events asked for). Call
   evl_io_start again to change the events. Several watchers may watch one fd (for example a
   reader task and a writer task). Stop every watcher of an fd before you close the fd: a watcher
   that is stopped, or an fd closed and its number reused during an iteration, never gets a stale
   event from that iteration.

   Loop lifetime. evl_loop_close always succeeds when called from outside the loop's callbacks:
   it stops every active handle, drops the callbacks still queued without running them, and
   frees everything the loop allocated.

   THREADS AND SIGNALS
   -------------------
   A loop belongs to the thread that runs it; run one loop per thread, as many loops per process
   as you like. Each declaration below says whether it is thread-safe. From other threads use
   evl_call_soon_threadsafe (a multi-producer queue: each producer's order is kept, nothing is
   lost or run twice, and a sleeping loop is woken by one eventfd or pipe write however many
   posts arrive before it wakes), evl_stop, evl_loop_ref and evl_loop_unref. A thread that will
   post to a loop with nothing else to wait for should hold evl_loop_ref, or evl_run may return
   before the post arrives. Interrupted system calls (EINTR) are retried inside the poll.

   ERRORS
   ------
   A function that can fail returns int: 0 (or a count) on success, a negative errno on
   failure. evl_strerror names the code. When a call that takes a callback fails, the callback
   never runs. Passing a NULL loop is a programming error and asserts; bad input from the
   caller or a failure of the OS is returned:
     -EINVAL     NULL handle, no callback, negative delay, bad event mask, unknown backend name
     -EBADF      negative file descriptor
     -ERANGE     the select backend cannot watch an fd >= FD_SETSIZE
     -ENOMEM     the allocator failed (the loop keeps working; nothing was queued)
     -ENOSYS     the requested backend is not available in this build or on this platform
     -EBUSY      evl_run or evl_run_once called from inside the same loop's callback
     -EDEADLK    evl_loop_close called from inside the same loop's callback
     other       whatever the backend's system call reported (epoll_ctl on a regular file: -EPERM)

   PLATFORMS
   ---------
   Linux (glibc, musl), the BSDs and macOS; gcc and clang; C99 or later and C++. Backends:
   epoll (Linux), kqueue (BSD, macOS; compiled there, not tested in this project's CI), poll
   (any POSIX), select (any; fds >= FD_SETSIZE are refused). Needs libc and pthreads only.
*/

#ifndef EVLOOP_H
#define EVLOOP_H

#define EVLOOP_VERSION_MAJOR 0
#define EVLOOP_VERSION_MINOR 1
#define EVLOOP_VERSION_PATCH 0
#define EVLOOP_VERSION "0.1.0"

/* The implementation needs POSIX and Linux interfaces (pipe2, eventfd, MAP_ANONYMOUS) that a
   strict -std=c99 hides; the feature macro must come before the first system header. */
#if defined(EVLOOP_IMPLEMENTATION) && defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef EVLOOP_STATIC
#define EVL_API static
#else
#define EVL_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- time ---- */
typedef int64_t evl_time;                       /* nanoseconds of the monotonic clock */
#define EVL_USEC(x) ((evl_time)(x) * 1000)
#define EVL_MSEC(x) ((evl_time)(x) * 1000000)
#define EVL_SEC(x) ((evl_time)(x) * 1000000000)
#define EVL_FOREVER INT64_MAX

/* ---- the loop ---- */
typedef struct evl_loop evl_loop;
typedef void (*evl_cb)(evl_loop *loop, void *arg);

typedef enum evl_backend {
    EVL_BACKEND_AUTO,
    EVL_BACKEND_EPOLL,
    EVL_BACKEND_KQUEUE,
    EVL_BACKEND_POLL,
    EVL_BACKEND_SELECT
} evl_backend;

/* A realloc-like allocator: size 0 frees ptr (returns NULL), ptr NULL allocates. */
typedef void *(*evl_alloc_fn)(void *ud, void *ptr, size_t size);

typedef struct evl_config {
    evl_backend backend;   /* AUTO: EVLOOP_BACKEND from the environment, else the best */
    int debug;             /* -1: from EVLOOP_DEBUG (what evl_config_init sets), 0 off, 1 on */
    evl_alloc_fn alloc;    /* NULL: EVL_MALLOC / EVL_REALLOC / EVL_FREE */
    void *alloc_ud;        /* passed to alloc */
} evl_config;

/* Fills cfg with the defaults. Thread-safe. */
EVL_API void evl_config_init(evl_config *cfg);
/* Creates a loop (cfg NULL: defaults) and stores it in *out. Thread-safe. */
EVL_API int evl_loop_new(evl_loop **out, const evl_config *cfg);
/* Stops every handle, drops queued callbacks, frees the loop. Loop thread only. */
EVL_API int evl_loop_close(evl_loop *loop);
/* Runs until evl_stop or until nothing is left to wait for; 0 or a negative errno. Loop thread. */
EVL_API int evl_run(evl_loop *loop);
/* Runs one iteration, blocking at most max_wait; returns the callbacks run. Loop thread. */
EVL_API int evl_run_once(evl_loop *loop, evl_time max_wait);
/* Makes evl_run return after the current iteration, waking the loop. Thread-safe. */
EVL_API void evl_stop(evl_loop *loop);
/* Keeps evl_run running while nothing else is pending (counted). Thread-safe. */
EVL_API void evl_loop_ref(evl_loop *loop);
/* Drops a hold taken with evl_loop_ref. Thread-safe. */
EVL_API void evl_loop_unref(evl_loop *loop);
/* The loop's cached monotonic time. Loop thread only. */
EVL_API evl_time evl_now(const evl_loop *loop);
/* "epoll", "kqueue", "poll" or "select". Thread-safe. */
EVL_API const char *evl_backend_name(const evl_loop *loop);
/* Turns debug mode on or off. Loop thread only. */
EVL_API void evl_set_debug(evl_loop *loop, int on);
/* 1 if debug mode is on. Thread-safe. */
EVL_API int evl_get_debug(const evl_loop *loop);
/* A static description of a negative errno (or 0). Thread-safe. */
EVL_API const char *evl_strerror(int err);
/* Queues cb(loop, arg) to run in the next drain, FIFO. Loop thread only. */
EVL_API int evl_call_soon(evl_loop *loop, evl_cb cb, void *arg);
/* Queues cb(loop, arg) from any thread and wakes the loop. Thread-safe. */
EVL_API int evl_call_soon_threadsafe(evl_loop *loop, evl_cb cb, void *arg);

/* ---- timers ---- */
typedef struct evl_timer {
    evl_cb cb;
    void *arg;
    evl_time when;     /* private: deadline */
    evl_time repeat;   /* private: interval, 0 for a one-shot */
    uint64_t seq;      /* private: start order, breaks deadline ties */
    size_t slot;       /* private: heap index + 1, 0 when inactive */
} evl_timer;

/* Prepares a timer; it is inactive until started. Thread-safe (touches only t). */
EVL_API void evl_timer_init(evl_timer *t, evl_cb cb, void *arg);
/* Fires t after delay, then every repeat (0: once); restarts an active t. Loop thread only. */
EVL_API int evl_timer_start(evl_loop *loop, evl_timer *t, evl_time delay, evl_time repeat);
/* Stops t; a no-op when t is inactive. Loop thread only. */
EVL_API int evl_timer_stop(evl_loop *loop, evl_timer *t);
/* 1 if t is started and has not fired for the last time. Loop thread only. */
EVL_API int evl_timer_active(const evl_timer *t);

/* ---- I/O watchers ---- */
enum { EVL_READ = 1, EVL_WRITE = 2 };
typedef void (*evl_io_cb)(evl_loop *loop, void *arg, int events);
typedef struct evl_io {
    evl_io_cb cb;
    void *arg;
    int fd;
    int events;           /* private: what the watcher asked for */
    int revents;          /* private: ready events not yet delivered */
    int active;           /* private */
    size_t pending;       /* private: index + 1 in the loop's pending list, 0 when not pending */
    struct evl_io *next;  /* private: the next watcher of the same fd */
} evl_io;

/* Prepares a watcher of fd; it is inactive until started. Thread-safe (touches only w). */
EVL_API void evl_io_init(evl_io *w, int fd, evl_io_cb cb, void *arg);
/* Watches EVL_READ and/or EVL_WRITE; again to change the events. Loop thread only. */
EVL_API int evl_io_start(evl_loop *loop, evl_io *w, int events);
/* Stops w; a no-op when w is inactive. Loop thread only. */
EVL_API int evl_io_stop(evl_loop *loop, evl_io *w);
/* 1 if w is started. Loop thread only. */
EVL_API int evl_io_active(const evl_io *w);

#ifdef __cplusplus
}
#endif
#endif /* EVLOOP_H */

/* =============================================================================================
   IMPLEMENTATION
   ============================================================================================= */
#if defined(EVLOOP_IMPLEMENTATION) && !defined(EVLOOP_IMPLEMENTATION_DONE)
#define EVLOOP_IMPLEMENTATION_DONE

/* ==== >>config and platform detection ==== */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/select.h>

#ifndef EVL_MALLOC
#define EVL_MALLOC(sz) malloc(sz)
#endif
#ifndef EVL_REALLOC
#define EVL_REALLOC(p, sz) realloc(p, sz)
#endif
#ifndef EVL_FREE
#define EVL_FREE(p) free(p)
#endif
#ifndef EVL_ASSERT
#include <assert.h>
#define EVL_ASSERT(c) assert(c)
#endif

#if defined(__linux__) && !defined(EVL_NO_EPOLL)
#define EVL__HAVE_EPOLL 1
#include <sys/epoll.h>
#include <sys/syscall.h>
#endif
#if defined(__linux__)
#define EVL__HAVE_EVENTFD 1
#include <sys/eventfd.h>
#endif
#if (defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
     defined(__NetBSD__) || defined(__DragonFly__)) && !defined(EVL_NO_KQUEUE)
#define EVL__HAVE_KQUEUE 1
#include <sys/event.h>
#endif
#ifndef EVL_NO_THREADS
#include <pthread.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== >>types ==== */
/* A queued callback. */
typedef struct evl__job {
    evl_cb cb;
    void *arg;
} evl__job;

/* The ready deque: a power-of-two ring that grows by doubling and never shrinks, so steady
   state never allocates. */
typedef struct evl__ring {
    evl__job *jobs;
    size_t cap, head, count;
} evl__ring;

/* One entry of the timer heap. The deadline and sequence number are copied next to the pointer
   so that sifting compares entries without touching the timers themselves. */
typedef struct evl__heap_entry {
    evl_time when;
    uint64_t seq;
    evl_timer *timer;
} evl__heap_entry;

/* What the loop knows about one fd number: its watchers and what the backend has registered.
   `emptied` records that every watcher was stopped while the fd stayed registered, so the fd
   may have been closed and its number reused: the next start registers it from scratch. */
typedef struct evl__fd {
    evl_io *watchers;
    uint32_t gen;          /* epoll: registration generation, to drop stale events */
    uint8_t registered;    /* events the backend is watching */
    uint8_t dirty;         /* queued in the change list */
    uint8_t emptied;
} evl__fd;

typedef struct evl__backend evl__backend;

struct evl_loop {
    evl_alloc_fn alloc;
    void *alloc_ud;
    const evl__backend *backend;
    void *backend_data;
    int debug;

    evl_time now;
    int now_valid;          /* 0 when this iteration skipped reading the clock */
    int running;            /* inside evl_run / evl_run_once */

    evl__ring ready;

    evl__heap_entry *heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;

    evl__fd *fds;
    int fds_cap;
    int *changes;            /* fds whose registration may need to shrink before the poll */
    size_t changes_len, changes_cap;
    evl_io **pending;        /* watchers with events to deliver in this iteration */
    size_t pending_len, pending_cap;
    size_t io_active;        /* user watchers (the wakeup watcher is not counted) */

    /* Cross-thread state. `inbox` is filled by producers under inbox_lock; the loop swaps it
       with `inbox_spare` (empty storage). The atomics use __atomic builtins only. */
#ifndef EVL_NO_THREADS
    pthread_mutex_t inbox_lock;
#endif
    evl__job *inbox, *inbox_spare;
    size_t inbox_len, inbox_cap, inbox_spare_cap;
    int inbox_count;        /* atomic: inbox_len, readable without the lock */
    int sleeping;           /* atomic: the loop is in (or entering) a blocking poll */
    int wake_sent;          /* atomic: a wakeup write is outstanding */
    int stop_requested;     /* atomic */
    int refs;               /* atomic: evl_loop_ref holds */
    int wake_rfd, wake_wfd;
    evl_io wake_io;
};

/* The interface every backend implements. `modify` changes the events registered for fd from
   `old_events` to `new_events` (either may be 0); `old_events` 0 means "unknown or none": the
   backend then makes its state exactly `new_events`, whatever it held, which is how an fd that
   may have been closed and reused is registered again. `poll` waits up to `timeout` (-1:
   forever, else nanoseconds) and hands every ready fd to evl__io_feed. Both return 0 or a
   negative errno. */
struct evl__backend {
    const char *name;
    evl_backend kind;
    int (*init)(evl_loop *loop);
    void (*destroy)(evl_loop *loop);
    int (*modify)(evl_loop *loop, int fd, int old_events, int new_events);
    int (*poll)(evl_loop *loop, evl_time timeout);
};

static void evl__io_feed(evl_loop *loop, int fd, int events);

/* ==== >>memory ==== */
static void *evl__default_alloc(void *ud, void *ptr, size_t size) {
    (void)ud;
    if (size == 0) {
        EVL_FREE(ptr);
        return NULL;
    }
    return ptr ? EVL_REALLOC(ptr, size) : EVL_MALLOC(size);
}

static void *evl__realloc(evl_loop *loop, void *ptr, size_t size) {
    return loop->alloc(loop->alloc_ud, ptr, size);
}

static void evl__free(evl_loop *loop, void *ptr) {
    if (ptr) loop->alloc(loop->alloc_ud, ptr, 0);
}

/* Grows *arr (elements of `elem` bytes, capacity *cap) to hold at least `need` elements. */
static int evl__grow(evl_loop *loop, void **arr, size_t *cap, size_t need, size_t elem) {
    size_t ncap = *cap ? *cap : 16;
    void *p;
    if (need <= *cap) return 0;
    while (ncap < need) ncap *= 2;
    if (ncap > (size_t)-1 / elem) return -ENOMEM;
    p = evl__realloc(loop, *arr, ncap * elem);
    if (!p) return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ==== >>ready deque ==== */
static int evl__ring_push(evl_loop *loop, evl__ring *r, evl_cb cb, void *arg) {
    evl__job *j;
    if (r->count == r->cap) {
        /* Double and unwrap: the jobs from head to the old end move to the new end. */
        size_t ncap = r->cap ? r->cap * 2 : 64, tail_part = r->cap - r->head;
        evl__job *p = (evl__job *)evl__realloc(loop, r->jobs, ncap * sizeof *p);
        if (!p) return -ENOMEM;
        if (r->count && r->head) {
            memmove(p + ncap - tail_part, p + r->head, tail_part * sizeof *p);
            r->head = ncap - tail_part;
        }
        r->jobs = p;
        r->cap = ncap;
    }
    j = &r->jobs[(r->head + r->count) & (r->cap - 1)];
    j->cb = cb;
    j->arg = arg;
    r->count++;
    return 0;
}

static evl__job evl__ring_pop(evl__ring *r) {
    evl__job j = r->jobs[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    return j;
}

/* ==== >>timer heap ==== */
/* A 4-ary min-heap ordered by (deadline, start sequence): shallower than a binary heap, and
   the four children of a node sit side by side in memory. Each timer stores its index + 1. */
static int evl__heap_less(const evl__heap_entry *a, const evl__heap_entry *b) {
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void evl__heap_place(evl_loop *loop, size_t i, evl__heap_entry e) {
    loop->heap[i] = e;
    e.timer->slot = i + 1;
}

static void evl__heap_sift_up(evl_loop *loop, size_t i) {
    evl__heap_entry e = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (!evl__heap_less(&e, &loop->heap[parent])) break;
        evl__heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    evl__heap_place(loop, i, e);
}

static void evl__heap_sift_down(evl_loop *loop, size_t i) {
    evl__heap_entry e = loop->heap[i];
    size_t n = loop->heap_len;
    for (;;) {
        size_t first = 4 * i + 1, best, c, end;
        if (first >= n) break;
        best = first;
        end = first + 4 < n ? first + 4 : n;
        for (c = first + 1; c < end; c++)
            if (evl__heap_less(&loop->heap[c], &loop->heap[best])) best = c;
        if (!evl__heap_less(&loop->heap[best], &e)) break;
        evl__heap_place(loop, i, loop->heap[best]);
        i = best;
    }
    evl__heap_place(loop, i, e);
}

static void evl__heap_remove(evl_loop *loop, evl_timer *t) {
    size_t i = t->slot - 1;
    t->slot = 0;
    loop->heap_len--;
    if (i == loop->heap_len) return;
    loop->heap[i] = loop->heap[loop->heap_len];
    loop->heap[i].timer->slot = i + 1;
    if (i > 0 && evl__heap_less(&loop->heap[i], &loop->heap[(i - 1) / 4]))
        evl__heap_sift_up(loop, i);
    else
        evl__heap_sift_down(loop, i);
}

/* Inserts t, or moves it if it is already in the heap, with deadline `when` and a new start
   sequence number. Moving never allocates, so it cannot fail. */
static int evl__heap_set(evl_loop *loop, evl_timer *t, evl_time when) {
    evl__heap_entry e;
    e.when = when;
    e.seq = loop->timer_seq++;
    e.timer = t;
    t->when = when;
    t->seq = e.seq;
    if (t->slot) {
        loop->heap[t->slot - 1] = e;
        evl__heap_sift_up(loop, t->slot - 1);
        evl__heap_sift_down(loop, t->slot - 1);
        return 0;
    }
    if (evl__grow(loop, (void **)&loop->heap, &loop->heap_cap, loop->heap_len + 1, sizeof e) < 0)
        return -ENOMEM;
    loop->heap[loop->heap_len] = e;
    evl__heap_sift_up(loop, loop->heap_len++);
    return 0;
}

/* ==== >>clock ==== */
static evl_time evl__clock_read(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void evl__time_update(evl_loop *loop) {
    loop->now = evl__clock_read();
    loop->now_valid = 1;
}

/* a + b for b >= 0, saturating at EVL_FOREVER. */
static evl_time evl__time_add(evl_time a, evl_time b) {
    return b > EVL_FOREVER - a ? EVL_FOREVER : a + b;
}

/* Converts a poll timeout to milliseconds, rounding up so a timer is never polled early. */
static int evl__timeout_ms(evl_time timeout) {
    evl_time ms;
    if (timeout < 0) return -1;
    ms = timeout / 1000000 + (timeout % 1000000 != 0);
    return ms > INT_MAX ? -1 : (int)ms;
}

/* ==== >>backend: epoll ==== */
#ifdef EVL__HAVE_EPOLL
#define EVL__EPOLL_BATCH 1024
typedef struct evl__epoll {
    int epfd;
    int stale;             /* an event of an old registration arrived: rebuild the set */
    int no_pwait2;         /* the kernel lacks epoll_pwait2: use epoll_wait (ms timeouts) */
    struct epoll_event events[EVL__EPOLL_BATCH];
} evl__epoll;

static int evl__epoll_init(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)evl__realloc(loop, NULL, sizeof *ep);
    if (!ep) return -ENOMEM;
    memset(ep, 0, sizeof *ep);
    ep->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ep->epfd < 0) {
        int err = -errno;
        evl__free(loop, ep);
        return err;
    }
    loop->backend_data = ep;
    return 0;
}

static void evl__epoll_destroy(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    close(ep->epfd);
    evl__free(loop, ep);
    loop->backend_data = NULL;
}

static int evl__epoll_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    struct epoll_event ev;
    int op = old_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    memset(&ev, 0, sizeof ev);
    if (!new_events) {
        /* The fd may already be closed (EBADF) or gone from the set (ENOENT): both mean done. */
        if (epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, &ev) < 0 && errno != EBADF && errno != ENOENT)
            return -errno;
        return 0;
    }
    /* Every registration carries a new generation in the upper half of its data, so an event
       of a registration the loop no longer knows (an fd closed while dup'ed elsewhere) is
       recognised in poll instead of being delivered to the fd number's new owner. */
    ev.events = (new_events & EVL_READ ? EPOLLIN : 0u) | (new_events & EVL_WRITE ? EPOLLOUT : 0u);
    ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)++loop->fds[fd].gen << 32;
    if (epoll_ctl(ep->epfd, op, fd, &ev) == 0) return 0;
    /* The loop's idea of the registration can be wrong after a close and reuse: try the
       other operation. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT && epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (op == EPOLL_CTL_ADD && errno == EEXIST && epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return -errno;
}

static int evl__backend_reregister(evl_loop *loop);

/* Replaces the epoll set with a fresh one holding only the registrations the loop knows. */
static int evl__epoll_rebuild(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return -errno;
    close(ep->epfd);
    ep->epfd = fd;
    ep->stale = 0;
    return evl__backend_reregister(loop);
}

/* epoll_pwait2 takes a nanosecond timeout; epoll_wait (older kernels) only milliseconds. */
static int evl__epoll_wait(evl__epoll *ep, evl_time timeout) {
#if defined(SYS_epoll_pwait2)
    if (!ep->no_pwait2) {
        struct timespec ts, *tsp = NULL;
        long n;
        if (timeout >= 0) {
            ts.tv_sec = (time_t)(timeout / 1000000000);
            ts.tv_nsec = (long)(timeout % 1000000000);
            tsp = &ts;
        }
        n = syscall(SYS_epoll_pwait2, ep->epfd, ep->events, EVL__EPOLL_BATCH, tsp, NULL, 0);
        if (n >= 0 || errno != ENOSYS) return (int)n;
        ep->no_pwait2 = 1;
    }
#endif
    return epoll_wait(ep->epfd, ep->events, EVL__EPOLL_BATCH, evl__timeout_ms(timeout));
}

static int evl__epoll_poll(evl_loop *loop, evl_time timeout) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    int n, i;
    if (ep->stale) {
        int err = evl__epoll_rebuild(loop);
        if (err < 0) return err;
    }
    n = evl__epoll_wait(ep, timeout);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        struct epoll_event *e = &ep->events[i];
        int fd = (int)(uint32_t)e->data.u64, events = 0;
        if (fd >= loop->fds_cap || (uint32_t)(e->data.u64 >> 32) != loop->fds[fd].gen) {
            ep->stale = 1;
            continue;
        }
        if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) events |= EVL_READ;
        if (e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) events |= EVL_WRITE;
        evl__io_feed(loop, fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_epoll = {
    "epoll", EVL_BACKEND_EPOLL, evl__epoll_init, evl__epoll_destroy, evl__epoll_modify,
    evl__epoll_poll};
#endif /* EVL__HAVE_EPOLL */

/* ==== >>backend: kqueue ==== */
#ifdef EVL__HAVE_KQUEUE
#define EVL__KQUEUE_BATCH 1024
typedef struct evl__kqueue {
    int kq;
    struct kevent events[EVL__KQUEUE_BATCH];
} evl__kqueue;

static int evl__kqueue_init(evl_loop *loop) {
    evl__kqueue *kq = (evl__kqueue *)evl__realloc(loop, NULL, sizeof *kq);
    if (!kq) return -ENOMEM;
    kq->kq = kqueue();
    if (kq->kq < 0) {
        int err = -errno;
        evl__free(loop, kq);
        return err;
    }
    fcntl(kq->kq, F_SETFD, FD_CLOEXEC);
    loop->backend_data = kq;
    return 0;
}

static void evl__kqueue_destroy(evl_loop *loop) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    close(kq->kq);
    evl__free(loop, kq);
    loop->backend_data = NULL;
}

/* Applies one kevent change with `flags` to each filter in `filters` (EVL_READ, EVL_WRITE). */
static int evl__kqueue_change(evl__kqueue *kq, int fd, int filters, int flags) {
    struct kevent ch[2];
    int n = 0;
    if (filters & EVL_READ) {
        EV_SET(&ch[n], fd, EVFILT_READ, flags, 0, 0, 0);
        n++;
    }
    if (filters & EVL_WRITE) {
        EV_SET(&ch[n], fd, EVFILT_WRITE, flags, 0, 0, 0);
        n++;
    }
    return n && kevent(kq->kq, ch, n, NULL, 0, NULL) < 0 ? -errno : 0;
}

/* kqueue has one filter per direction: add the ones gained, delete the ones lost. With
   old_events 0 every filter not wanted is deleted, in case the kernel still holds it;
   deleting a filter the kernel no longer holds (a closed fd) fails harmlessly. */
static int evl__kqueue_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    int lost = (old_events ? old_events : EVL_READ | EVL_WRITE) & ~new_events;
    int err = evl__kqueue_change(kq, fd, new_events & ~old_events, EV_ADD);
    if (err < 0) return err;
    if (lost & EVL_READ) evl__kqueue_change(kq, fd, EVL_READ, EV_DELETE);
    if (lost & EVL_WRITE) evl__kqueue_change(kq, fd, EVL_WRITE, EV_DELETE);
    return 0;
}

static int evl__kqueue_poll(evl_loop *loop, evl_time timeout) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    struct timespec ts, *tsp = NULL;
    int n, i;
    if (timeout >= 0) {
        ts.tv_sec = (time_t)(timeout / 1000000000);
        ts.tv_nsec = (long)(timeout % 1000000000);
        tsp = &ts;
    }
    n = kevent(kq->kq, NULL, 0, kq->events, EVL__KQUEUE_BATCH, tsp);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        struct kevent *e = &kq->events[i];
        int events = e->filter == EVFILT_READ ? EVL_READ : EVL_WRITE;
        if (e->flags & EV_ERROR) events = EVL_READ | EVL_WRITE;
        evl__io_feed(loop, (int)e->ident, events);
    }
    return 0;
}

static const evl__backend evl__backend_kqueue = {
    "kqueue", EVL_BACKEND_KQUEUE, evl__kqueue_init, evl__kqueue_destroy, evl__kqueue_modify,
    evl__kqueue_poll};
#endif /* EVL__HAVE_KQUEUE */

/* ==== >>backend: poll ==== */
/* A dense pollfd array plus, per fd, its index in the array, so modify is O(1): a removed
   entry is replaced by the last one. */
typedef struct evl__poll {
    struct pollfd *pfds;
    size_t len, cap;
    int *index;            /* fd -> index + 1 in pfds, 0 when absent */
    size_t index_cap;
} evl__poll;

static int evl__poll_init(evl_loop *loop) {
    evl__poll *p = (evl__poll *)evl__realloc(loop, NULL, sizeof *p);
    if (!p) return -ENOMEM;
    memset(p, 0, sizeof *p);
    loop->backend_data = p;
    return 0;
}

static void evl__poll_destroy(evl_loop *loop) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    evl__free(loop, p->pfds);
    evl__free(loop, p->index);
    evl__free(loop, p);
    loop->backend_data = NULL;
}

static void evl__poll_remove(evl__poll *p, int fd) {
    size_t i = (size_t)p->index[fd] - 1;
    p->index[fd] = 0;
    if (i != --p->len) {
        p->pfds[i] = p->pfds[p->len];
        p->index[p->pfds[i].fd] = (int)i + 1;
    }
}

static int evl__poll_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    short mask = (short)((new_events & EVL_READ ? POLLIN : 0) | (new_events & EVL_WRITE ? POLLOUT : 0));
    size_t old_cap = p->index_cap;
    (void)old_events;
    if ((size_t)fd >= p->index_cap) {
        if (!new_events) return 0;
        if (evl__grow(loop, (void **)&p->index, &p->index_cap, (size_t)fd + 1, sizeof *p->index) < 0)
            return -ENOMEM;
        memset(p->index + old_cap, 0, (p->index_cap - old_cap) * sizeof *p->index);
    }
    if (p->index[fd]) {
        if (new_events) p->pfds[p->index[fd] - 1].events = mask;
        else evl__poll_remove(p, fd);
        return 0;
    }
    if (!new_events) return 0;
    if (evl__grow(loop, (void **)&p->pfds, &p->cap, p->len + 1, sizeof *p->pfds) < 0)
        return -ENOMEM;
    p->pfds[p->len].fd = fd;
    p->pfds[p->len].events = mask;
    p->pfds[p->len].revents = 0;
    p->index[fd] = (int)++p->len;
    return 0;
}

static int evl__poll_poll(evl_loop *loop, evl_time timeout) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    size_t i;
    int n = poll(p->pfds, (nfds_t)p->len, evl__timeout_ms(timeout));
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < p->len && n > 0; i++) {
        short re = p->pfds[i].revents;
        int events = 0;
        if (!re) continue;
        n--;
        if (re & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) events |= EVL_READ;
        if (re & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) events |= EVL_WRITE;
        evl__io_feed(loop, p->pfds[i].fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_poll = {
    "poll", EVL_BACKEND_POLL, evl__poll_init, evl__poll_destroy, evl__poll_modify,
    evl__poll_poll};

/* ==== >>backend: select ==== */
typedef struct evl__select {
    fd_set rd, wr;           /* what is registered */
    fd_set rd_out, wr_out;   /* scratch copies handed to select() */
    int maxfd;               /* highest registered fd, -1 when none */
} evl__select;

static int evl__select_init(evl_loop *loop) {
    evl__select *s = (evl__select *)evl__realloc(loop, NULL, sizeof *s);
    if (!s) return -ENOMEM;
    FD_ZERO(&s->rd);
    FD_ZERO(&s->wr);
    s->maxfd = -1;
    loop->backend_data = s;
    return 0;
}

static void evl__select_destroy(evl_loop *loop) {
    evl__free(loop, loop->backend_data);
    loop->backend_data = NULL;
}

static int evl__select_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__select *s = (evl__select *)loop->backend_data;
    (void)old_events;
    if (fd >= FD_SETSIZE) return new_events ? -ERANGE : 0;
    if (new_events & EVL_READ) FD_SET(fd, &s->rd);
    else FD_CLR(fd, &s->rd);
    if (new_events & EVL_WRITE) FD_SET(fd, &s->wr);
    else FD_CLR(fd, &s->wr);
    if (new_events && fd > s->maxfd) s->maxfd = fd;
    while (s->maxfd >= 0 && !FD_ISSET(s->maxfd, &s->rd) && !FD_ISSET(s->maxfd, &s->wr))
        s->maxfd--;
    return 0;
}

/* select() fails as a whole with EBADF when one registered fd was closed. Find the closed ones
   and report them ready, as poll() reports POLLNVAL, so their owners see the error. */
static void evl__select_feed_closed(evl_loop *loop, evl__select *s) {
    int fd;
    for (fd = 0; fd <= s->maxfd; fd++)
        if ((FD_ISSET(fd, &s->rd) || FD_ISSET(fd, &s->wr)) && fcntl(fd, F_GETFD) < 0)
            evl__io_feed(loop, fd, EVL_READ | EVL_WRITE);
}

static int evl__select_poll(evl_loop *loop, evl_time timeout) {
    evl__select *s = (evl__select *)loop->backend_data;
    struct timeval tv, *tvp = NULL;
    int n, fd;
    if (timeout >= 0) {
        evl_time us = timeout / 1000 + (timeout % 1000 != 0);
        tv.tv_sec = (time_t)(us / 1000000);
        tv.tv_usec = (suseconds_t)(us % 1000000);
        tvp = &tv;
    }
    s->rd_out = s->rd;
    s->wr_out = s->wr;
    n = select(s->maxfd + 1, &s->rd_out, &s->wr_out, NULL, tvp);
    if (n < 0) {
        if (errno == EINTR) return 0;
        if (errno != EBADF) return -errno;
        evl__select_feed_closed(loop, s);
        return 0;
    }
    for (fd = 0; fd <= s->maxfd && n > 0; fd++) {
        int events = (FD_ISSET(fd, &s->rd_out) ? EVL_READ : 0) |
                     (FD_ISSET(fd, &s->wr_out) ? EVL_WRITE : 0);
        if (!events) continue;
        n -= (events & EVL_READ ? 1 : 0) + (events & EVL_WRITE ? 1 : 0);
        evl__io_feed(loop, fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_select = {
    "select", EVL_BACKEND_SELECT, evl__select_init, evl__select_destroy, evl__select_modify,
    evl__select_poll};

/* ==== >>backend choice ==== */
static const evl__backend *evl__backend_find(evl_backend kind) {
    switch (kind) {
#ifdef EVL__HAVE_EPOLL
    case EVL_BACKEND_EPOLL: return &evl__backend_epoll;
#endif
#ifdef EVL__HAVE_KQUEUE
    case EVL_BACKEND_KQUEUE: return &evl__backend_kqueue;
#endif
    case EVL_BACKEND_POLL: return &evl__backend_poll;
    case EVL_BACKEND_SELECT: return &evl__backend_select;
    default: return NULL;
    }
}

/* Resolves AUTO through the environment, then to the best compiled backend. */
static int evl__backend_choose(evl_backend want, const evl__backend **out) {
    static const char *const names[] = {"", "epoll", "kqueue", "poll", "select"};
    if (want == EVL_BACKEND_AUTO) {
        const char *env = getenv("EVLOOP_BACKEND");
        if (env && *env) {
            int i;
            for (i = 1; i < 5; i++)
                if (strcmp(env, names[i]) == 0) want = (evl_backend)i;
            if (want == EVL_BACKEND_AUTO) return -EINVAL;
        }
    }
    if (want == EVL_BACKEND_AUTO) {
        *out = evl__backend_find(EVL_BACKEND_EPOLL);
        if (!*out) *out = evl__backend_find(EVL_BACKEND_KQUEUE);
        if (!*out) *out = evl__backend_find(EVL_BACKEND_POLL);
        return 0;
    }
    if (want < EVL_BACKEND_AUTO || want > EVL_BACKEND_SELECT) return -EINVAL;
    *out = evl__backend_find(want);
    return *out ? 0 : -ENOSYS;
}

/* Registers again every fd the loop watches, with a backend that knows none of them. */
static int evl__backend_reregister(evl_loop *loop) {
    int fd, err = 0;
    for (fd = 0; fd < loop->fds_cap; fd++) {
        evl__fd *s = &loop->fds[fd];
        int want = s->watchers ? s->registered : 0;
        s->emptied = 0;
        s->registered = 0;
        if (want && loop->backend->modify(loop, fd, 0, want) < 0) {
            err = -EIO;
            continue;
        }
        s->registered = (uint8_t)want;
    }
    return err;
}

/* ==== >>I/O watchers ==== */
static int evl__io_union(const evl__fd *s) {
    const evl_io *w;
    int events = 0;
    for (w = s->watchers; w; w = w->next) events |= w->events;
    return events;
}

static int evl__fds_reserve(evl_loop *loop, int fd) {
    size_t cap = (size_t)loop->fds_cap, old = cap;
    if (fd < loop->fds_cap) return 0;
    if (evl__grow(loop, (void **)&loop->fds, &cap, (size_t)fd + 1, sizeof *loop->fds) < 0)
        return -ENOMEM;
    if (cap > INT_MAX) cap = INT_MAX;
    memset(loop->fds + old, 0, (cap - old) * sizeof *loop->fds);
    loop->fds_cap = (int)cap;
    return 0;
}

/* Queues fd for the pre-poll pass that shrinks its registration to what its watchers want.
   Shrinking is deferred because the common stop-then-start of one watcher then costs no
   system call; growing is done at once, so evl_io_start can report an error. */
static int evl__fd_mark_dirty(evl_loop *loop, int fd) {
    evl__fd *s = &loop->fds[fd];
    if (s->dirty) return 0;
    if (evl__grow(loop, (void **)&loop->changes, &loop->changes_cap, loop->changes_len + 1,
                  sizeof *loop->changes) < 0)
        return -ENOMEM;
    loop->changes[loop->changes_len++] = fd;
    s->dirty = 1;
    return 0;
}

static void evl__fd_flush_changes(evl_loop *loop) {
    size_t i;
    for (i = 0; i < loop->changes_len; i++) {
        int fd = loop->changes[i];
        evl__fd *s = &loop->fds[fd];
        int want = evl__io_union(s);
        s->dirty = 0;
        if (want == s->registered) continue;
        /* A failure here means the fd is already gone, and its registration with it. */
        loop->backend->modify(loop, fd, s->registered, want);
        s->registered = (uint8_t)want;
        if (!want) s->emptied = 0;
    }
    loop->changes_len = 0;
}

/* Called by the backends for every ready fd: marks the watchers that asked for the events. */
static void evl__io_feed(evl_loop *loop, int fd, int events) {
    evl_io *w;
    if (fd < 0 || fd >= loop->fds_cap) return;
    for (w = loop->fds[fd].watchers; w; w = w->next) {
        int ev = events & w->events;
        if (!ev) continue;
        w->revents |= ev;
        if (w->pending) continue;
        if (loop->pending_len == loop->pending_cap &&
            evl__grow(loop, (void **)&loop->pending, &loop->pending_cap, loop->pending_len + 1,
                      sizeof *loop->pending) < 0)
            continue; /* level triggered: the event comes back in the next iteration */
        loop->pending[loop->pending_len++] = w;
        w->pending = loop->pending_len;
    }
}

/* Links w to its fd (when it is new) with `events`, and grows the registration at once if the
   fd now needs more; on failure w is exactly as it was. */
static int evl__io_attach(evl_loop *loop, evl_io *w, int events) {
    evl__fd *s;
    int want, err = 0, old_events = w->events;
    if (!w->active) {
        err = evl__fds_reserve(loop, w->fd);
        if (err < 0) return err;
        w->next = loop->fds[w->fd].watchers;
        loop->fds[w->fd].watchers = w;
    }
    s = &loop->fds[w->fd];
    w->events = events;
    want = evl__io_union(s);
    if (s->emptied) {
        /* Every watcher was stopped since the fd was registered: it may be a new file under
           the same number now, so register it from scratch. */
        err = loop->backend->modify(loop, w->fd, 0, want);
        if (err == 0) {
            s->registered = (uint8_t)want;
            s->emptied = 0;
        }
    } else if (want & ~s->registered) {
        err = loop->backend->modify(loop, w->fd, s->registered, want | s->registered);
        if (err == 0) s->registered = (uint8_t)(want | s->registered);
    }
    if (err < 0) {
        w->events = old_events;
        if (!w->active) loop->fds[w->fd].watchers = w->next;
        return err;
    }
    if (want != s->registered) evl__fd_mark_dirty(loop, w->fd);
    w->active = 1;
    return 0;
}

static void evl__io_detach(evl_loop *loop, evl_io *w) {
    evl__fd *s = &loop->fds[w->fd];
    evl_io **pp = &s->watchers;
    while (*pp != w) pp = &(*pp)->next;
    *pp = w->next;
    w->next = NULL;
    w->active = 0;
    w->revents = 0;
    if (w->pending) {
        loop->pending[w->pending - 1] = NULL;
        w->pending = 0;
    }
    if (!s->watchers && s->registered) s->emptied = 1;
    if (evl__fd_mark_dirty(loop, w->fd) < 0 && !s->watchers && s->registered) {
        /* No room to defer: remove it now rather than leave a registration nobody wants. */
        loop->backend->modify(loop, w->fd, s->registered, 0);
        s->registered = 0;
        s->emptied = 0;
    }
}

/* Runs the pending I/O callbacks gathered by the last poll. A watcher stopped by an earlier
   callback was taken off the list; one started since was never on it. */
static int evl__io_dispatch(evl_loop *loop) {
    size_t i;
    int ran = 0;
    for (i = 0; i < loop->pending_len; i++) {
        evl_io *w = loop->pending[i];
        int ev;
        if (!w) continue;
        ev = w->revents & w->events;
        w->revents = 0;
        w->pending = 0;
        if (!ev) continue;
        w->cb(loop, w->arg, ev);
        ran++;
    }
    loop->pending_len = 0;
    return ran;
}

void evl_io_init(evl_io *w, int fd, evl_io_cb cb, void *arg) {
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
}

int evl_io_start(evl_loop *loop, evl_io *w, int events) {
    int was_active, err;
    EVL_ASSERT(loop);
    if (!w || !w->cb) return -EINVAL;
    if (w->fd < 0) return -EBADF;
    if (!events || (events & ~(EVL_READ | EVL_WRITE))) return -EINVAL;
    was_active = w->active;
    err = evl__io_attach(loop, w, events);
    if (err == 0 && !was_active && w != &loop->wake_io) loop->io_active++;
    return err;
}

int evl_io_stop(evl_loop *loop, evl_io *w) {
    EVL_ASSERT(loop);
    if (!w) return -EINVAL;
    if (!w->active) return 0;
    evl__io_detach(loop, w);
    if (w != &loop->wake_io) loop->io_active--;
    return 0;
}

int evl_io_active(const evl_io *w) {
    return w && w->active;
}

/* ==== >>timers ==== */
void evl_timer_init(evl_timer *t, evl_cb cb, void *arg) {
    memset(t, 0, sizeof *t);
    t->cb = cb;
    t->arg = arg;
}

int evl_timer_start(evl_loop *loop, evl_timer *t, evl_time delay, evl_time repeat) {
    EVL_ASSERT(loop);
    if (!t || !t->cb || delay < 0 || repeat < 0) return -EINVAL;
    /* The iteration may have skipped the clock (nothing needed it): never start from a stale
       time, or the timer would fire early. */
    if (!loop->now_valid) evl__time_update(loop);
    t->repeat = repeat;
    return evl__heap_set(loop, t, evl__time_add(loop->now, delay));
}

int evl_timer_stop(evl_loop *loop, evl_timer *t) {
    EVL_ASSERT(loop);
    if (!t) return -EINVAL;
    if (t->slot) evl__heap_remove(loop, t);
    return 0;
}

int evl_timer_active(const evl_timer *t) {
    return t && t->slot != 0;
}

/* Fires the due timers that were started before this batch began: a timer (re)started by a
   callback of this batch has a newer sequence number and waits for the next iteration, so a
   zero-delay restart cannot spin here forever. Each timer leaves the heap (or moves to its
   next deadline) before its callback runs, so the callback may do anything to it. */
static int evl__timers_dispatch(evl_loop *loop) {
    uint64_t batch = loop->timer_seq;
    int ran = 0;
    while (loop->heap_len) {
        evl__heap_entry top = loop->heap[0];
        evl_timer *t = top.timer;
        if (top.when > loop->now || top.seq >= batch) break;
        if (t->repeat) {
            evl_time next = evl__time_add(top.when, t->repeat);
            if (next <= loop->now) next = evl__time_add(loop->now, t->repeat);
            evl__heap_set(loop, t, next);
        } else {
            evl__heap_remove(loop, t);
        }
        t->cb(loop, t->arg);
        ran++;
    }
    return ran;
}

/* ==== >>wakeup ==== */
/* One eventfd (a pipe where there is none) wakes the loop from other threads. A producer
   writes only when the loop is sleeping and no write is outstanding, so many posts cost one
   write per sleep. The loop announces `sleeping` before it looks for posts once more, and a
   producer publishes its post before it reads `sleeping` (both sequentially consistent), so
   one of the two always sees the other: no wakeup is lost. */
static int evl__wakeup_open(evl_loop *loop) {
#ifdef EVL__HAVE_EVENTFD
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return -errno;
    loop->wake_rfd = loop->wake_wfd = fd;
#else
    int p[2], i;
    if (pipe(p) < 0) return -errno;
    for (i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
    }
    loop->wake_rfd = p[0];
    loop->wake_wfd = p[1];
#endif
    return 0;
}

static void evl__wakeup_close(evl_loop *loop) {
    if (loop->wake_wfd >= 0 && loop->wake_wfd != loop->wake_rfd) close(loop->wake_wfd);
    if (loop->wake_rfd >= 0) close(loop->wake_rfd);
    loop->wake_rfd = loop->wake_wfd = -1;
}

static void evl__wakeup_signal(evl_loop *loop) {
    static const uint64_t one = 1;
    ssize_t r;
    if (!__atomic_load_n(&loop->sleeping, __ATOMIC_SEQ_CST)) return;
    if (__atomic_exchange_n(&loop->wake_sent, 1, __ATOMIC_SEQ_CST)) return;
    /* 8 bytes for an eventfd; a pipe takes them as well. EAGAIN means the counter or the pipe
       is already full: the loop wakes anyway. */
    r = write(loop->wake_wfd, &one, sizeof one);
    (void)r;
}

/* Drains the wakeup fd, then allows the next write. In the other order a producer could
   write between the two steps and leave `wake_sent` set with nothing left to read. */
static void evl__wakeup_cb(evl_loop *loop, void *arg, int events) {
    char buf[64];
    (void)arg;
    (void)events;
    while (read(loop->wake_rfd, buf, sizeof buf) > 0) {
    }
    __atomic_store_n(&loop->wake_sent, 0, __ATOMIC_SEQ_CST);
}

/* ==== >>thread-safe queue ==== */
static void evl__inbox_lock(evl_loop *loop) {
#ifndef EVL_NO_THREADS
    pthread_mutex_lock(&loop->inbox_lock);
#else
    (void)loop;
#endif
}

static void evl__inbox_unlock(evl_loop *loop) {
#ifndef EVL_NO_THREADS
    pthread_mutex_unlock(&loop->inbox_lock);
#else
    (void)loop;
#endif
}

int evl_call_soon_threadsafe(evl_loop *loop, evl_cb cb, void *arg) {
    EVL_ASSERT(loop);
    if (!cb) return -EINVAL;
    evl__inbox_lock(loop);
    if (loop->inbox_len == loop->inbox_cap &&
        evl__grow(loop, (void **)&loop->inbox, &loop->inbox_cap, loop->inbox_len + 1,
                  sizeof *loop->inbox) < 0) {
        evl__inbox_unlock(loop);
        return -ENOMEM;
    }
    loop->inbox[loop->inbox_len].cb = cb;
    loop->inbox[loop->inbox_len].arg = arg;
    loop->inbox_len++;
    __atomic_store_n(&loop->inbox_count, (int)loop->inbox_len, __ATOMIC_SEQ_CST);
    evl__inbox_unlock(loop);
    evl__wakeup_signal(loop);
    return 0;
}

/* The posts taken from the inbox for one drain. */
typedef struct evl__batch {
    evl__job *jobs;
    size_t len, cap;
} evl__batch;

/* Takes every post made so far. The inbox and the spare array swap roles under the lock, so a
   producer waits for a pointer swap, never for a copy, and nothing is allocated. */
static void evl__inbox_take(evl_loop *loop, evl__batch *b) {
    b->jobs = NULL;
    b->len = b->cap = 0;
    if (!__atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST)) return;
    evl__inbox_lock(loop);
    b->jobs = loop->inbox;
    b->len = loop->inbox_len;
    b->cap = loop->inbox_cap;
    loop->inbox = loop->inbox_spare;
    loop->inbox_cap = loop->inbox_spare_cap;
    loop->inbox_len = 0;
    __atomic_store_n(&loop->inbox_count, 0, __ATOMIC_SEQ_CST);
    evl__inbox_unlock(loop);
    loop->inbox_spare = NULL;
    loop->inbox_spare_cap = 0;
}

/* Runs a taken batch in posting order and keeps its storage as the next spare. */
static int evl__batch_run(evl_loop *loop, evl__batch *b) {
    size_t i;
    for (i = 0; i < b->len; i++) b->jobs[i].cb(loop, b->jobs[i].arg);
    if (b->jobs) {
        evl__free(loop, loop->inbox_spare);
        loop->inbox_spare = b->jobs;
        loop->inbox_spare_cap = b->cap;
    }
    return (int)b->len;
}

/* ==== >>loop ==== */
static const char *evl__errnames(int err) {
    switch (err) {
    case 0: return "success";
    case EINVAL: return "invalid argument";
    case ENOMEM: return "out of memory";
    case ECANCELED: return "operation canceled";
    case ETIMEDOUT: return "timed out";
    case EAGAIN: return "resource temporarily unavailable";
    case EBADF: return "bad file descriptor";
    case EEXIST: return "already exists";
    case ENOENT: return "no such file or directory";
    case ENOSYS: return "not available on this platform or build";
    case EBUSY: return "loop is already running";
    case EDEADLK: return "cannot do this from inside the loop's own callback";
    case EPERM: return "operation not permitted";
    case ERANGE: return "file descriptor out of range for this backend";
    case EMFILE: return "too many open files";
    case ENFILE: return "too many open files in system";
    case EINTR: return "interrupted system call";
    case EPIPE: return "broken pipe";
    case ECONNRESET: return "connection reset by peer";
    case ECONNREFUSED: return "connection refused";
    case ENOTCONN: return "socket is not connected";
    case EINPROGRESS: return "operation in progress";
    case EALREADY: return "operation already in progress";
    case ESRCH: return "no such task";
    case ENOTSUP: return "operation not supported";
    case EFAULT: return "bad address";
    case ENOSPC: return "no space left";
    default: return NULL;
    }
}

const char *evl_strerror(int err) {
    const char *s = err <= 0 ? evl__errnames(-err) : NULL;
    return s ? s : "unknown error";
}

void evl_config_init(evl_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->backend = EVL_BACKEND_AUTO;
    cfg->debug = -1;
}

static int evl__debug_from_env(void) {
    const char *s = getenv("EVLOOP_DEBUG");
    return s && *s && strcmp(s, "0") != 0;
}

int evl_loop_new(evl_loop **out, const evl_config *cfg) {
    evl_config defaults;
    const evl__backend *backend;
    evl_alloc_fn alloc;
    evl_loop *loop;
    int err;
    if (!out) return -EINVAL;
    *out = NULL;
    if (!cfg) {
        evl_config_init(&defaults);
        cfg = &defaults;
    }
    err = evl__backend_choose(cfg->backend, &backend);
    if (err < 0) return err;
    alloc = cfg->alloc ? cfg->alloc : evl__default_alloc;
    loop = (evl_loop *)alloc(cfg->alloc_ud, NULL, sizeof *loop);
    if (!loop) return -ENOMEM;
    memset(loop, 0, sizeof *loop);
    loop->alloc = alloc;
    loop->alloc_ud = cfg->alloc_ud;
    loop->backend = backend;
    loop->debug = cfg->debug < 0 ? evl__debug_from_env() : cfg->debug != 0;
    loop->wake_rfd = loop->wake_wfd = -1;
#ifndef EVL_NO_THREADS
    if (pthread_mutex_init(&loop->inbox_lock, NULL) != 0) {
        alloc(cfg->alloc_ud, loop, 0);
        return -ENOMEM;
    }
#endif
    evl__time_update(loop);
    err = backend->init(loop);
    if (err == 0) err = evl__wakeup_open(loop);
    if (err == 0) {
        evl_io_init(&loop->wake_io, loop->wake_rfd, evl__wakeup_cb, NULL);
        err = evl_io_start(loop, &loop->wake_io, EVL_READ);
    }
    if (err < 0) {
        evl_loop_close(loop);
        return err;
    }
    *out = loop;
    return 0;
}

int evl_loop_close(evl_loop *loop) {
    int fd;
    size_t i;
    EVL_ASSERT(loop);
    if (loop->running) return -EDEADLK;
    /* Stop every handle still active so the caller's structs read as inactive afterwards. */
    for (i = 0; i < loop->heap_len; i++) loop->heap[i].timer->slot = 0;
    for (fd = 0; fd < loop->fds_cap; fd++) {
        evl_io *w = loop->fds[fd].watchers;
        while (w) {
            evl_io *next = w->next;
            w->next = NULL;
            w->active = 0;
            w->pending = 0;
            w->revents = 0;
            w = next;
        }
    }
    if (loop->backend_data) loop->backend->destroy(loop);
    evl__wakeup_close(loop);
#ifndef EVL_NO_THREADS
    pthread_mutex_destroy(&loop->inbox_lock);
#endif
    evl__free(loop, loop->ready.jobs);
    evl__free(loop, loop->heap);
    evl__free(loop, loop->fds);
    evl__free(loop, loop->changes);
    evl__free(loop, loop->pending);
    evl__free(loop, loop->inbox);
    evl__free(loop, loop->inbox_spare);
    loop->alloc(loop->alloc_ud, loop, 0);
    return 0;
}

const char *evl_backend_name(const evl_loop *loop) {
    EVL_ASSERT(loop);
    return loop->backend->name;
}

evl_time evl_now(const evl_loop *loop) {
    EVL_ASSERT(loop);
    if (!loop->now_valid) evl__time_update((evl_loop *)loop); /* the cache is logically const */
    return loop->now;
}

void evl_set_debug(evl_loop *loop, int on) {
    EVL_ASSERT(loop);
    loop->debug = on != 0;
}

int evl_get_debug(const evl_loop *loop) {
    EVL_ASSERT(loop);
    return loop->debug;
}

int evl_call_soon(evl_loop *loop, evl_cb cb, void *arg) {
    EVL_ASSERT(loop);
    if (!cb) return -EINVAL;
    return evl__ring_push(loop, &loop->ready, cb, arg);
}

void evl_stop(evl_loop *loop) {
    EVL_ASSERT(loop);
    __atomic_store_n(&loop->stop_requested, 1, __ATOMIC_SEQ_CST);
    evl__wakeup_signal(loop);
}

void evl_loop_ref(evl_loop *loop) {
    EVL_ASSERT(loop);
    __atomic_add_fetch(&loop->refs, 1, __ATOMIC_SEQ_CST);
}

void evl_loop_unref(evl_loop *loop) {
    EVL_ASSERT(loop);
    /* The last hold may be what keeps evl_run waiting: wake it to look again. */
    if (__atomic_sub_fetch(&loop->refs, 1, __ATOMIC_SEQ_CST) == 0) evl__wakeup_signal(loop);
}

/* Something is left to wait for: evl_run keeps going. */
static int evl__loop_alive(evl_loop *loop) {
    return loop->ready.count || loop->heap_len || loop->io_active ||
           __atomic_load_n(&loop->refs, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST);
}

/* The poll timeout for this iteration: 0 when there is work already, else until the first
   timer, capped by max_wait (negative: no cap). -1 means forever. */
static evl_time evl__poll_timeout(evl_loop *loop, evl_time max_wait) {
    evl_time t = max_wait < 0 ? EVL_FOREVER : max_wait;
    if (t == 0 || loop->ready.count || __atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST))
        return 0;
    if (loop->heap_len) {
        evl_time due;
        evl__time_update(loop);
        due = loop->heap[0].when - loop->now;
        if (due < t) t = due < 0 ? 0 : due;
    }
    return t == EVL_FOREVER ? -1 : t;
}

/* Polls the backend. Before a blocking poll the loop announces that it sleeps and then looks
   once more for posts, a stop, or (in evl_run) nothing left to wait for; see >>wakeup. A
   zero-timeout poll is skipped when no user fd is registered: the only fd left is the wakeup,
   and everything it could announce is read from atomics anyway. */
static int evl__loop_poll(evl_loop *loop, evl_time timeout, int exit_when_idle) {
    int err;
    if (timeout == 0 && loop->io_active == 0) return 0;
    if (timeout != 0) {
        __atomic_store_n(&loop->sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST) ||
            (exit_when_idle && !evl__loop_alive(loop)))
            timeout = 0;
    }
    err = loop->backend->poll(loop, timeout);
    __atomic_store_n(&loop->sleeping, 0, __ATOMIC_SEQ_CST);
    return err;
}

/* One iteration; returns the callbacks run or a negative errno from the backend. */
static int evl__iterate(evl_loop *loop, evl_time max_wait, int exit_when_idle) {
    evl__batch posts;
    evl_time timeout = evl__poll_timeout(loop, max_wait);
    size_t n, i;
    int err, ran;
    evl__fd_flush_changes(loop);
    err = evl__loop_poll(loop, timeout, exit_when_idle);
    if (err < 0) return err;
    /* The timers need the time now; anything else reads the clock on demand (evl_now,
       evl_timer_start), so a loop busy with callbacks alone never pays for it. */
    if (loop->heap_len) evl__time_update(loop);
    else loop->now_valid = 0;
    /* The drain: what was queued before it began (callbacks, then posts from other threads),
       then I/O, then the due timers. Whatever these queue runs in the next iteration. */
    evl__inbox_take(loop, &posts);
    n = loop->ready.count;
    for (i = 0; i < n; i++) {
        evl__job j = evl__ring_pop(&loop->ready);
        j.cb(loop, j.arg);
    }
    ran = (int)n + evl__batch_run(loop, &posts);
    ran += evl__io_dispatch(loop);
    if (loop->heap_len) ran += evl__timers_dispatch(loop);
    return ran;
}

int evl_run_once(evl_loop *loop, evl_time max_wait) {
    int ran;
    EVL_ASSERT(loop);
    if (loop->running) return -EBUSY;
    loop->running = 1;
    ran = evl__iterate(loop, max_wait, 0);
    loop->running = 0;
    return ran;
}

int evl_run(evl_loop *loop) {
    int err = 0;
    EVL_ASSERT(loop);
    if (loop->running) return -EBUSY;
    loop->running = 1;
    while (evl__loop_alive(loop)) {
        err = evl__iterate(loop, EVL_FOREVER, 1);
        if (err < 0) break;
        if (__atomic_exchange_n(&loop->stop_requested, 0, __ATOMIC_SEQ_CST)) break;
        err = 0;
    }
    if (err > 0) err = 0;
    __atomic_store_n(&loop->stop_requested, 0, __ATOMIC_SEQ_CST);
    loop->running = 0;
    return err;
}

#ifdef __cplusplus
}
#endif
#endif /* EVLOOP_IMPLEMENTATION */

/*
   LICENSE
   -------
   MIT License

   Copyright (c) 2026 the evloop.h authors

   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:

   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.

   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
