/* I/O watchers: level triggering, event changes, several watchers per fd, stale events after a
   stop or a close and fd-number reuse within one batch, hang-ups, starvation, bad input,
   backend limits, loop lifetime, many fds. */
#define EVLOOP_IMPLEMENTATION
#include "check.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

static evl_time clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    CHECK(fl >= 0);
    CHECK(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

static void make_pipe(int p[2]) {
    CHECK(pipe(p) == 0);
    set_nonblock(p[0]);
    set_nonblock(p[1]);
}

static void make_sp(int s[2]) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
    set_nonblock(s[0]);
    set_nonblock(s[1]);
}

static void put(int fd, char c) {
    CHECK_EQ(write(fd, &c, 1), 1);
}

/* Reads everything there is; returns the bytes read (0 at EOF or when there is nothing). */
static long drain(int fd) {
    char buf[4096];
    long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) break;
        total += n;
    }
    return total;
}

/* Creates a new nonblocking pipe whose read end has the number fd (which must be free). */
static void pipe_at(int fd, int np[2]) {
    make_pipe(np);
    if (np[1] == fd) {
        int moved = fcntl(np[1], F_DUPFD, fd + 1);
        CHECK(moved >= 0);
        close(np[1]);
        np[1] = moved;
    }
    if (np[0] != fd) {
        CHECK_EQ(dup2(np[0], fd), fd);
        close(np[0]);
        np[0] = fd;
    }
    CHECK_EQ(np[0], fd);
}

/* Raises the soft RLIMIT_NOFILE to at least `want` (up to the hard limit); 1 on success. */
static int raise_nofile(rlim_t want) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) return 0;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    }
    return 1;
}

/* A loop on the harness's backend; writes to closed peers return EPIPE instead of killing the
   process, and a hang fails fast. */
static evl_loop *io_loop_new(void) {
    signal(SIGPIPE, SIG_IGN);
    check_watchdog(10);
    return check_loop_new();
}

static int is_backend(evl_loop *loop, const char *name) {
    return strcmp(evl_backend_name(loop), name) == 0;
}

/* A watcher and what it saw. */
typedef struct wrec {
    evl_io io;
    int count;
    int last_events;
    int all_events;
    int drain;            /* read everything in the callback */
    int stop_after;       /* stop itself when count reaches this (0: never) */
    long last_read;       /* what the last drain returned */
    char last_byte;
} wrec;

static void wrec_cb(evl_loop *loop, void *arg, int events) {
    wrec *r = (wrec *)arg;
    CHECK(events != 0);
    CHECK((events & ~(EVL_READ | EVL_WRITE)) == 0);
    r->count++;
    r->last_events = events;
    r->all_events |= events;
    if (r->drain) {
        char buf[256];
        ssize_t n = read(r->io.fd, buf, sizeof buf);
        r->last_read = n;
        if (n > 0) r->last_byte = buf[n - 1];
        if (n > 0) drain(r->io.fd);
    }
    if (r->stop_after && r->count == r->stop_after) {
        CHECK_OK(evl_io_stop(loop, &r->io));
        CHECK(!evl_io_active(&r->io));
    }
}

static void wrec_init(wrec *r, int fd) {
    memset(r, 0, sizeof *r);
    evl_io_init(&r->io, fd, wrec_cb, r);
}

static void wrec_reset(wrec *r) {
    r->count = 0;
    r->last_events = 0;
    r->all_events = 0;
}

/* ---- level triggering ---- */

static void read_watcher_is_level_triggered(void) {
    evl_loop *loop = io_loop_new();
    int p[2];
    wrec r;
    make_pipe(p);
    wrec_init(&r, p[0]);
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK(evl_io_active(&r.io));
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(r.count, 0);
    put(p[1], 'a');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 1);
    CHECK_EQ(r.last_events, EVL_READ);
    /* Not read: it fires again in each following iteration. */
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(r.count, 2);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 3);
    CHECK_EQ(r.last_events, EVL_READ);
    /* Read in the callback: that was the last time. */
    r.drain = 1;
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(r.count, 4);
    CHECK_EQ(r.last_read, 1);
    CHECK_EQ(r.last_byte, 'a');
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(r.count, 4);
    /* New data, new event. */
    put(p[1], 'b');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 5);
    CHECK_EQ(r.last_byte, 'b');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(r.all_events, EVL_READ);
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK(!evl_io_active(&r.io));
    CHECK_OK(evl_loop_close(loop));
    close(p[0]);
    close(p[1]);
}

static void write_watcher_and_event_changes(void) {
    evl_loop *loop = io_loop_new();
    int s[2];
    wrec w;
    make_sp(s);
    wrec_init(&w, s[0]);
    /* WRITE on a writable socket. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(w.count, 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.count, 2);
    /* WRITE -> READ on the active watcher: nothing to read, so silence. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ));
    CHECK(evl_io_active(&w.io));
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(w.count, 2);
    put(s[1], 'x');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(w.count, 3);
    CHECK_EQ(w.last_events, EVL_READ);
    /* READ -> READ|WRITE: both, the data is still unread. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ | EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.count, 4);
    CHECK_EQ(w.last_events, EVL_READ | EVL_WRITE);
    /* -> WRITE before any iteration: the unread data must not show up as EVL_READ. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    /* READ|WRITE again, then the data is read: WRITE only. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ | EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_READ | EVL_WRITE);
    CHECK_EQ(drain(s[0]), 1);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    /* Back to READ: silence again. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ));
    wrec_reset(&w);
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(w.count, 0);
    /* Starting again with the same events changes nothing. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    put(s[1], 'y');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(w.last_events, EVL_READ);
    /* READ -> WRITE -> READ|WRITE, the sequence from the manual, with 'y' still unread. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    CHECK_OK(evl_io_start(loop, &w.io, EVL_READ | EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.last_events, EVL_READ | EVL_WRITE);
    CHECK_OK(evl_loop_close(loop));
    CHECK(!evl_io_active(&w.io));
    close(s[0]);
    close(s[1]);
}

static void two_watchers_on_one_fd(void) {
    evl_loop *loop = io_loop_new();
    int s[2];
    wrec r, w;
    make_sp(s);
    wrec_init(&r, s[0]);
    wrec_init(&w, s[0]);
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_OK(evl_io_start(loop, &w.io, EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 0);
    CHECK_EQ(w.count, 1);
    CHECK_EQ(w.last_events, EVL_WRITE);
    put(s[1], 'a');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 2);
    CHECK_EQ(r.count, 1);
    CHECK_EQ(r.last_events, EVL_READ);
    CHECK_EQ(w.count, 2);
    CHECK_EQ(w.last_events, EVL_WRITE);
    /* Stop the writer: the reader goes on, the writer is silent. */
    CHECK_OK(evl_io_stop(loop, &w.io));
    CHECK(!evl_io_active(&w.io));
    CHECK(evl_io_active(&r.io));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(r.count, 3);
    CHECK_EQ(w.count, 2);
    CHECK_EQ(drain(s[0]), 1);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    put(s[1], 'b');
    r.drain = 1;
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 4);
    CHECK_EQ(r.last_byte, 'b');
    CHECK_EQ(w.count, 2);
    /* Writer back, reader stopped: the writer works, the reader is silent even with data. */
    CHECK_OK(evl_io_start(loop, &w.io, EVL_WRITE));
    CHECK_OK(evl_io_stop(loop, &r.io));
    put(s[1], 'c');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(w.count, 4);
    CHECK_EQ(w.all_events, EVL_WRITE);
    CHECK_EQ(r.count, 4);
    CHECK_EQ(r.all_events, EVL_READ);
    /* Both again: each its own events. */
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    r.drain = 0;
    CHECK_EQ(evl_run_once(loop, 0), 2);
    CHECK_EQ(r.count, 5);
    CHECK_EQ(r.last_events, EVL_READ);
    CHECK_EQ(w.last_events, EVL_WRITE);
    CHECK_OK(evl_loop_close(loop));
    CHECK(!evl_io_active(&r.io));
    CHECK(!evl_io_active(&w.io));
    close(s[0]);
    close(s[1]);
}

/* ---- stale events within one batch ---- */

/* Two watchers on two readable pipes, polled in the same batch. Whichever runs first acts on
   the other (the order within a batch is the backend's). */
typedef struct side {
    evl_io io;
    struct duo *duo;
    int idx;
    int count;
} side;

typedef struct duo {
    side s[2];
    int rfd[2], wfd[2];
    int mode;           /* 0: passive; 1: stop the other; 2: stop and restart the other;
                           3: stop, close, reuse the number, start a new watcher c on it;
                           4: like 3 but re-init and start the other's own struct on it */
    int acted;          /* how often a callback acted */
    int first;          /* which side acted */
    int reused_fd;
    int new_wfd;        /* write end of the pipe now under reused_fd */
    evl_io c;
    int c_count;
} duo;

static void duo_c_cb(evl_loop *loop, void *arg, int events) {
    duo *d = (duo *)arg;
    (void)loop;
    CHECK_EQ(events, EVL_READ);
    d->c_count++;
}

static void duo_cb(evl_loop *loop, void *arg, int events) {
    side *me = (side *)arg;
    duo *d = me->duo;
    side *other = &d->s[1 - me->idx];
    int np[2];
    CHECK_EQ(events, EVL_READ);
    me->count++;
    if (d->mode == 0 || d->acted) return;
    d->acted++;
    d->first = me->idx;
    CHECK(evl_io_active(&other->io));
    CHECK_OK(evl_io_stop(loop, &other->io));
    CHECK(!evl_io_active(&other->io));
    if (d->mode == 2) {
        CHECK_OK(evl_io_start(loop, &other->io, EVL_READ));
        CHECK(evl_io_active(&other->io));
        return;
    }
    if (d->mode < 3) return;
    /* Close the other's fd and put a new, empty pipe under the same number. */
    d->reused_fd = d->rfd[other->idx];
    CHECK(close(d->rfd[other->idx]) == 0);
    d->rfd[other->idx] = -1;
    pipe_at(d->reused_fd, np);
    CHECK_EQ(np[0], d->reused_fd);
    d->new_wfd = np[1];
    close(d->wfd[other->idx]);
    d->wfd[other->idx] = -1;
    if (d->mode == 3) {
        evl_io_init(&d->c, d->reused_fd, duo_c_cb, d);
        CHECK_OK(evl_io_start(loop, &d->c, EVL_READ));
        CHECK(evl_io_active(&d->c));
    } else {
        evl_io_init(&d->c, -1, duo_c_cb, d); /* unused */
        evl_io_init(&other->io, d->reused_fd, duo_cb, other);
        CHECK_OK(evl_io_start(loop, &other->io, EVL_READ));
        CHECK(evl_io_active(&other->io));
    }
}

static void duo_setup(evl_loop *loop, duo *d) {
    int i, p[2];
    memset(d, 0, sizeof *d);
    for (i = 0; i < 2; i++) {
        make_pipe(p);
        d->rfd[i] = p[0];
        d->wfd[i] = p[1];
        d->s[i].duo = d;
        d->s[i].idx = i;
        evl_io_init(&d->s[i].io, p[0], duo_cb, &d->s[i]);
        CHECK_OK(evl_io_start(loop, &d->s[i].io, EVL_READ));
        put(p[1], 'x');
    }
    d->new_wfd = -1;
    /* Control: both readable, both run in one iteration, so they share a batch. */
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 2);
    CHECK_EQ(d->s[0].count, 1);
    CHECK_EQ(d->s[1].count, 1);
}

static void duo_teardown(duo *d) {
    int i;
    for (i = 0; i < 2; i++) {
        if (d->rfd[i] >= 0) close(d->rfd[i]);
        if (d->wfd[i] >= 0) close(d->wfd[i]);
    }
    if (d->mode >= 3) {
        close(d->reused_fd);
        close(d->new_wfd);
    }
}

static void watcher_stopped_earlier_in_batch_does_not_run(void) {
    evl_loop *loop = io_loop_new();
    duo d;
    side *first, *second;
    /* Stopped. */
    duo_setup(loop, &d);
    d.mode = 1;
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(d.acted, 1);
    first = &d.s[d.first];
    second = &d.s[1 - d.first];
    CHECK_EQ(first->count, 2);
    CHECK_EQ(second->count, 1); /* did not run, although its fd was ready in this batch */
    CHECK(!evl_io_active(&second->io));
    CHECK_EQ(evl_run_once(loop, 0), 1); /* only the first, still readable */
    CHECK_EQ(second->count, 1);
    CHECK_EQ(first->count, 3);
    CHECK_OK(evl_io_stop(loop, &first->io));
    CHECK_OK(evl_loop_close(loop));
    duo_teardown(&d);
    /* Stopped and restarted: no event from this batch, the next iteration's event arrives. */
    loop = io_loop_new();
    duo_setup(loop, &d);
    d.mode = 2;
    CHECK_EQ(evl_run_once(loop, 0), 1);
    first = &d.s[d.first];
    second = &d.s[1 - d.first];
    CHECK_EQ(second->count, 1);
    CHECK(evl_io_active(&second->io));
    CHECK_EQ(evl_run_once(loop, 0), 2); /* level triggered: both fire in the next one */
    CHECK_EQ(second->count, 2);
    CHECK_EQ(first->count, 3);
    CHECK_OK(evl_loop_close(loop));
    duo_teardown(&d);
}

static void no_stale_event_after_close_and_fd_reuse_in_batch(void) {
    int mode;
    for (mode = 3; mode <= 4; mode++) {
        evl_loop *loop = io_loop_new();
        duo d;
        side *first, *second;
        duo_setup(loop, &d);
        d.mode = mode;
        CHECK_EQ(evl_run_once(loop, 0), 1);
        CHECK_EQ(d.acted, 1);
        first = &d.s[d.first];
        second = &d.s[1 - d.first];
        CHECK_EQ(first->count, 2);
        /* The stopped watcher did not run, nor did the one started on the reused number: the
           old file's readiness must not be delivered to the new file's watcher. */
        CHECK_EQ(second->count, 1);
        CHECK_EQ(d.c_count, 0);
        /* The new pipe is empty: the watcher on the reused number stays silent. */
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 1); /* the first, still readable */
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 1);
        CHECK_EQ(second->count, 1);
        CHECK_EQ(d.c_count, 0);
        CHECK_EQ(drain(d.rfd[d.first]), 1);
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
        /* Data in the new pipe: its watcher fires. */
        put(d.new_wfd, 'n');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        if (mode == 3) {
            CHECK_EQ(d.c_count, 1);
            CHECK_EQ(second->count, 1);
        } else {
            CHECK_EQ(second->count, 2);
        }
        CHECK_EQ(first->count, 4);
        CHECK_EQ(drain(d.reused_fd), 1);
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
        CHECK_OK(evl_loop_close(loop));
        CHECK(!evl_io_active(&d.c));
        CHECK(!evl_io_active(&d.s[0].io));
        CHECK(!evl_io_active(&d.s[1].io));
        duo_teardown(&d);
    }
}

/* ---- stop, restart, close and reuse ---- */

static void stop_and_restart_on_same_fd(void) {
    evl_loop *loop = io_loop_new();
    int p[2], i;
    wrec r;
    make_pipe(p);
    wrec_init(&r, p[0]);
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    put(p[1], 'a');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    /* Stop and start with no iteration between. */
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 2);
    /* Stop, an iteration (the registration is dropped), start. */
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(r.count, 2);
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 3);
    /* Many round trips. */
    for (i = 0; i < 100; i++) {
        CHECK_OK(evl_io_stop(loop, &r.io));
        if (i % 3 == 0) CHECK_EQ(evl_run_once(loop, 0), 0);
        CHECK_OK(evl_io_start(loop, &r.io, i % 2 ? EVL_READ : EVL_READ | EVL_WRITE));
    }
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 4);
    CHECK_EQ(r.last_events, EVL_READ);
    r.drain = 1;
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    put(p[1], 'b');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.last_byte, 'b');
    CHECK_OK(evl_loop_close(loop));
    close(p[0]);
    close(p[1]);
}

/* Stop, close, reopen under the same number, start: the watcher gets the new file's events.
   variant 0: no iteration between stop and close; 1: one iteration between; 2: the old file
   stays open through a dup, is written to, and must never be reported. */
static void fd_closed_and_reused_gets_new_events(void) {
    int variant;
    for (variant = 0; variant < 3; variant++) {
        evl_loop *loop = io_loop_new();
        int p[2], np[2], fd, keep = -1, i;
        wrec r;
        make_pipe(p);
        fd = p[0];
        wrec_init(&r, fd);
        r.drain = 1;
        CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
        put(p[1], 'o');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        CHECK_EQ(r.last_byte, 'o');
        if (variant == 2) {
            keep = dup(fd);
            CHECK(keep >= 0);
        }
        CHECK_OK(evl_io_stop(loop, &r.io));
        if (variant == 1) CHECK_EQ(evl_run_once(loop, 0), 0);
        CHECK(close(fd) == 0);
        pipe_at(fd, np);
        CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
        CHECK(evl_io_active(&r.io));
        if (variant == 2) {
            /* The old file is readable (through `keep`); the new one is not. */
            put(p[1], 'O');
            for (i = 0; i < 3; i++) CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
            CHECK_EQ(r.count, 1);
        } else {
            CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
            CHECK_EQ(r.count, 1);
        }
        put(np[1], 'n');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        CHECK_EQ(r.count, 2);
        CHECK_EQ(r.last_events, EVL_READ);
        CHECK_EQ(r.last_read, 1);
        CHECK_EQ(r.last_byte, 'n');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
        put(np[1], 'm');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        CHECK_EQ(r.last_byte, 'm');
        CHECK_EQ(r.count, 3);
        if (variant == 2) {
            char c = 0;
            CHECK_EQ(read(keep, &c, 1), 1); /* the old data is still there, never consumed */
            CHECK_EQ(c, 'O');
            close(keep);
        }
        CHECK_OK(evl_loop_close(loop));
        close(np[0]);
        close(np[1]);
        close(p[1]);
    }
}

/* ---- hang-ups ---- */

static void peer_close_fires_read(void) {
    evl_loop *loop = io_loop_new();
    int s[2], p[2], q[2];
    wrec r, rw, pr, pw;
    long filled = 0;
    /* socketpair: READ watcher, peer closed: it fires and read returns 0. */
    make_sp(s);
    wrec_init(&r, s[0]);
    r.drain = 1;
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    close(s[1]);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 1);
    CHECK_EQ(r.last_events, EVL_READ);
    CHECK_EQ(r.last_read, 0);
    /* Level triggered: the hang-up stays. */
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_EQ(r.count, 2);
    CHECK_OK(evl_io_stop(loop, &r.io));
    close(s[0]);
    /* socketpair, READ|WRITE watcher: a hang-up is reported as both. */
    make_sp(s);
    wrec_init(&rw, s[0]);
    CHECK_OK(evl_io_start(loop, &rw.io, EVL_READ | EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(rw.last_events, EVL_WRITE);
    close(s[1]);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(rw.last_events, EVL_READ | EVL_WRITE);
    CHECK_OK(evl_io_stop(loop, &rw.io));
    close(s[0]);
    /* pipe: write end closed. */
    make_pipe(p);
    wrec_init(&pr, p[0]);
    pr.drain = 1;
    CHECK_OK(evl_io_start(loop, &pr.io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    close(p[1]);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(pr.last_events, EVL_READ);
    CHECK_EQ(pr.last_read, 0);
    CHECK_OK(evl_io_stop(loop, &pr.io));
    close(p[0]);
    /* pipe: full, so a WRITE watcher is silent, until the read end closes (an error). */
    make_pipe(q);
    for (;;) {
        char buf[4096];
        ssize_t n;
        memset(buf, 'f', sizeof buf);
        n = write(q[1], buf, sizeof buf);
        if (n <= 0) break;
        filled += n;
    }
    CHECK(filled > 0);
    wrec_init(&pw, q[1]);
    CHECK_OK(evl_io_start(loop, &pw.io, EVL_WRITE));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    CHECK_EQ(pw.count, 0);
    close(q[0]);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(pw.last_events, EVL_WRITE);
    CHECK_OK(evl_io_stop(loop, &pw.io));
    close(q[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- starvation ---- */

typedef struct starve_ctx {
    wrec r;
    evl_timer feeder;
    int feed_fd;
    long soon_runs, soon_after;
    evl_time give_up;
} starve_ctx;

static void starve_soon_cb(evl_loop *loop, void *arg) {
    starve_ctx *s = (starve_ctx *)arg;
    s->soon_runs++;
    if (s->r.count) {
        s->soon_after++;
        return;
    }
    if (clock_ns() > s->give_up) return; /* starved: give up, the checks fail */
    CHECK_OK(evl_call_soon(loop, starve_soon_cb, s));
}

static void starve_feed_cb(evl_loop *loop, void *arg) {
    starve_ctx *s = (starve_ctx *)arg;
    (void)loop;
    put(s->feed_fd, 'f');
}

static void call_soon_loop_does_not_starve_io(void) {
    evl_loop *loop = io_loop_new();
    int sp[2];
    starve_ctx s;
    make_sp(sp);
    /* Data arrives while the callback spins (written by a timer after 10 ms). */
    memset(&s, 0, sizeof s);
    wrec_init(&s.r, sp[0]);
    s.r.drain = 1;
    s.r.stop_after = 1;
    s.feed_fd = sp[1];
    s.give_up = clock_ns() + EVL_SEC(2);
    evl_timer_init(&s.feeder, starve_feed_cb, &s);
    CHECK_OK(evl_io_start(loop, &s.r.io, EVL_READ));
    CHECK_OK(evl_timer_start(loop, &s.feeder, EVL_MSEC(10), 0));
    CHECK_OK(evl_call_soon(loop, starve_soon_cb, &s));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.r.count, 1);
    CHECK_EQ(s.r.last_byte, 'f');
    CHECK(s.soon_runs > 1);
    CHECK_EQ(s.soon_after, 1);
    CHECK(!evl_io_active(&s.r.io));
    /* Data already there: the watcher runs in the very first iteration, next to the spinner. */
    memset(&s, 0, sizeof s);
    wrec_init(&s.r, sp[0]);
    s.r.drain = 1;
    s.r.stop_after = 1;
    s.give_up = clock_ns() + EVL_SEC(2);
    put(sp[1], 'g');
    CHECK_OK(evl_io_start(loop, &s.r.io, EVL_READ));
    CHECK_OK(evl_call_soon(loop, starve_soon_cb, &s));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 2);
    CHECK_EQ(s.r.count, 1);
    CHECK_EQ(s.r.last_byte, 'g');
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.soon_after, 1);
    CHECK_OK(evl_loop_close(loop));
    close(sp[0]);
    close(sp[1]);
}

/* ---- bad input and backend limits ---- */

/* After a failed start, a normal watcher still works and evl_run does not wait for the
   failed one. */
static void check_loop_still_works(evl_loop *loop) {
    int p[2];
    wrec r;
    make_pipe(p);
    wrec_init(&r, p[0]);
    r.drain = 1;
    r.stop_after = 1;
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    put(p[1], 'k');
    CHECK_OK(evl_run(loop)); /* returns when r stopped itself: nothing else is active */
    CHECK_EQ(r.count, 1);
    CHECK_EQ(r.last_byte, 'k');
    close(p[0]);
    close(p[1]);
}

static void bad_io_input_is_refused(void) {
    evl_loop *loop = io_loop_new();
    int p[2];
    evl_io zero, nocb, neg;
    wrec r;
    make_pipe(p);
    memset(&zero, 0, sizeof zero);
    CHECK_EQ(evl_io_start(loop, NULL, EVL_READ), -EINVAL);
    CHECK_EQ(evl_io_start(loop, &zero, EVL_READ), -EINVAL); /* zero-filled: no callback */
    CHECK(!evl_io_active(&zero));
    evl_io_init(&nocb, p[0], NULL, NULL);
    CHECK_EQ(evl_io_start(loop, &nocb, EVL_READ), -EINVAL);
    CHECK(!evl_io_active(&nocb));
    check_loop_still_works(loop);
    evl_io_init(&neg, -1, wrec_cb, NULL);
    CHECK_EQ(evl_io_start(loop, &neg, EVL_READ), -EBADF);
    evl_io_init(&neg, -100, wrec_cb, NULL);
    CHECK_EQ(evl_io_start(loop, &neg, EVL_WRITE), -EBADF);
    CHECK(!evl_io_active(&neg));
    check_loop_still_works(loop);
    wrec_init(&r, p[0]);
    CHECK_EQ(evl_io_start(loop, &r.io, 0), -EINVAL);
    CHECK_EQ(evl_io_start(loop, &r.io, 4), -EINVAL);
    CHECK_EQ(evl_io_start(loop, &r.io, EVL_READ | 4), -EINVAL);
    CHECK_EQ(evl_io_start(loop, &r.io, -1), -EINVAL);
    CHECK(!evl_io_active(&r.io));
    check_loop_still_works(loop);
    /* Stopping what is not active is a no-op returning 0; NULL is -EINVAL. */
    CHECK_OK(evl_io_stop(loop, &zero));
    CHECK_OK(evl_io_stop(loop, &nocb));
    CHECK_OK(evl_io_stop(loop, &neg));
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK(!evl_io_active(&r.io));
    CHECK_EQ(evl_io_stop(loop, NULL), -EINVAL);
    /* A bad event mask on an active watcher is refused and leaves it working. */
    CHECK_OK(evl_io_start(loop, &r.io, EVL_READ));
    CHECK_EQ(evl_io_start(loop, &r.io, 0), -EINVAL);
    CHECK_EQ(evl_io_start(loop, &r.io, 8), -EINVAL);
    CHECK(evl_io_active(&r.io));
    put(p[1], 'z');
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r.count, 1);
    CHECK_EQ(r.last_events, EVL_READ);
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK_OK(evl_io_stop(loop, &r.io));
    CHECK_EQ(drain(p[0]), 1);
    check_loop_still_works(loop);
    CHECK_OK(evl_loop_close(loop));
    close(p[0]);
    close(p[1]);
}

/* select cannot watch an fd >= FD_SETSIZE (-ERANGE); the other backends can. */
static void fd_beyond_fd_setsize(void) {
    evl_loop *loop = io_loop_new();
    int p[2], high = FD_SETSIZE + 10, err;
    wrec r;
    if (!raise_nofile((rlim_t)high + 1)) {
        printf("skipped: cannot raise RLIMIT_NOFILE above %d\n", high);
        CHECK_OK(evl_loop_close(loop));
        return;
    }
    make_pipe(p);
    CHECK_EQ(dup2(p[0], high), high);
    wrec_init(&r, high);
    r.drain = 1;
    err = evl_io_start(loop, &r.io, EVL_READ);
    if (is_backend(loop, "select")) {
        CHECK_EQ(err, -ERANGE);
        CHECK(!evl_io_active(&r.io));
        CHECK_OK(evl_io_stop(loop, &r.io));
        CHECK_EQ(evl_io_start(loop, &r.io, EVL_WRITE), -ERANGE);
        check_loop_still_works(loop);
        put(p[1], 'h');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
        CHECK_EQ(r.count, 0);
    } else {
        CHECK_OK(err);
        put(p[1], 'h');
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        CHECK_EQ(r.count, 1);
        CHECK_EQ(r.last_byte, 'h');
        CHECK_OK(evl_io_stop(loop, &r.io));
        check_loop_still_works(loop);
    }
    CHECK_OK(evl_loop_close(loop));
    close(high);
    close(p[0]);
    close(p[1]);
}

/* epoll refuses regular files (-EPERM); poll and select report them always ready. */
static void regular_file(void) {
    evl_loop *loop = io_loop_new();
    char path[] = "/tmp/evloop_test_io_XXXXXX";
    int fd = mkstemp(path), err;
    wrec r;
    CHECK(fd >= 0);
    unlink(path);
    CHECK_EQ(write(fd, "data", 4), 4);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    wrec_init(&r, fd);
    err = evl_io_start(loop, &r.io, EVL_READ);
    if (is_backend(loop, "epoll")) {
        CHECK_EQ(err, -EPERM);
        CHECK(!evl_io_active(&r.io));
        CHECK_EQ(evl_io_start(loop, &r.io, EVL_READ | EVL_WRITE), -EPERM);
        CHECK(!evl_io_active(&r.io));
        CHECK_OK(evl_io_stop(loop, &r.io));
        check_loop_still_works(loop);
        check_loop_still_works(loop);
        CHECK_EQ(r.count, 0);
    } else {
        CHECK_OK(err);
        CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
        CHECK_EQ(r.last_events, EVL_READ);
        CHECK_OK(evl_io_stop(loop, &r.io));
        check_loop_still_works(loop);
    }
    CHECK_OK(evl_loop_close(loop));
    close(fd);
}

/* ---- loop lifetime ---- */

static void run_returns_when_last_watcher_stops(void) {
    evl_loop *loop = io_loop_new();
    int s[2];
    wrec a, b;
    evl_time t0;
    make_sp(s);
    wrec_init(&a, s[0]);
    wrec_init(&b, s[1]);
    a.stop_after = 3;
    b.stop_after = 5;
    CHECK_OK(evl_io_start(loop, &a.io, EVL_WRITE));
    CHECK_OK(evl_io_start(loop, &b.io, EVL_WRITE));
    t0 = clock_ns();
    CHECK_OK(evl_run(loop));
    CHECK_EQ(a.count, 3);
    CHECK_EQ(b.count, 5);
    CHECK(!evl_io_active(&a.io));
    CHECK(!evl_io_active(&b.io));
    CHECK(clock_ns() - t0 < EVL_SEC(1));
    /* Stopped from outside between runs: evl_run returns at once. */
    CHECK_OK(evl_io_start(loop, &a.io, EVL_READ));
    CHECK_OK(evl_io_stop(loop, &a.io));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(a.count, 3);
    CHECK_OK(evl_loop_close(loop));
    close(s[0]);
    close(s[1]);
}

static void close_with_active_watchers(void) {
    evl_loop *loop = io_loop_new();
    int p[2], s[2];
    wrec r[5];
    int i;
    make_pipe(p);
    make_sp(s);
    wrec_init(&r[0], p[0]);
    wrec_init(&r[1], p[1]);
    wrec_init(&r[2], s[0]);
    wrec_init(&r[3], s[0]);
    wrec_init(&r[4], s[1]);
    CHECK_OK(evl_io_start(loop, &r[0].io, EVL_READ));
    CHECK_OK(evl_io_start(loop, &r[1].io, EVL_WRITE));
    CHECK_OK(evl_io_start(loop, &r[2].io, EVL_READ));
    CHECK_OK(evl_io_start(loop, &r[3].io, EVL_READ | EVL_WRITE));
    CHECK_OK(evl_io_start(loop, &r[4].io, EVL_READ));
    put(p[1], 'a');
    put(s[1], 'b');
    CHECK(evl_run_once(loop, EVL_MSEC(500)) >= 3);
    /* A change still queued for the pre-poll pass at close time. */
    CHECK_OK(evl_io_start(loop, &r[3].io, EVL_WRITE));
    for (i = 0; i < 5; i++) {
        CHECK(evl_io_active(&r[i].io));
        r[i].count = 0;
    }
    CHECK_OK(evl_loop_close(loop));
    for (i = 0; i < 5; i++) {
        CHECK(!evl_io_active(&r[i].io));
        CHECK_EQ(r[i].count, 0);
    }
    /* The handles are reusable with a new loop. */
    loop = io_loop_new();
    CHECK_OK(evl_io_start(loop, &r[0].io, EVL_READ));
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), 1);
    CHECK_EQ(r[0].count, 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK(!evl_io_active(&r[0].io));
    close(p[0]);
    close(p[1]);
    close(s[0]);
    close(s[1]);
}

/* ---- many fds ---- */

#define MANY 500
static int many_sp[MANY][2];
static wrec many_w[MANY];

static void many_fds(void) {
    evl_loop *loop;
    int i, started = 0, expect = 0, fired, select_backend;
    CHECK(raise_nofile(2 * MANY + 64));
    loop = io_loop_new();
    select_backend = is_backend(loop, "select");
    for (i = 0; i < MANY; i++) {
        int err;
        make_sp(many_sp[i]);
        wrec_init(&many_w[i], many_sp[i][0]);
        err = evl_io_start(loop, &many_w[i].io, EVL_READ);
        if (select_backend && many_sp[i][0] >= FD_SETSIZE) {
            CHECK_EQ(err, -ERANGE); /* only if the process already had many fds open */
            continue;
        }
        CHECK_OK(err);
        started++;
    }
    CHECK(started > MANY * 9 / 10);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    for (i = 0; i < MANY; i += 7) {
        put(many_sp[i][1], 'm');
        if (evl_io_active(&many_w[i].io)) expect++;
    }
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(500)), expect);
    for (i = 0; i < MANY; i++) CHECK_EQ(many_w[i].count, evl_io_active(&many_w[i].io) && i % 7 == 0);
    /* Level triggered: the same again; then read in the callbacks, then silence. */
    for (i = 0; i < MANY; i++) many_w[i].drain = 1;
    CHECK_EQ(evl_run_once(loop, 0), expect);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(10)), 0);
    for (i = 0; i < MANY; i++) CHECK_EQ(many_w[i].count, evl_io_active(&many_w[i].io) && i % 7 == 0 ? 2 : 0);
    /* Another set, with every other watcher of it stopped first. */
    expect = 0;
    for (i = 3; i < MANY; i += 7) {
        if ((i / 7) % 2) CHECK_OK(evl_io_stop(loop, &many_w[i].io));
        else if (evl_io_active(&many_w[i].io)) expect++;
        put(many_sp[i][1], 'n');
    }
    fired = evl_run_once(loop, EVL_MSEC(500));
    CHECK_EQ(fired, expect);
    for (i = 3; i < MANY; i += 7) {
        CHECK_EQ(many_w[i].count, evl_io_active(&many_w[i].io) ? 1 : 0);
        if (many_w[i].count) CHECK_EQ(many_w[i].last_byte, 'n');
    }
    CHECK_OK(evl_loop_close(loop));
    for (i = 0; i < MANY; i++) {
        CHECK(!evl_io_active(&many_w[i].io));
        close(many_sp[i][0]);
        close(many_sp[i][1]);
    }
}

static const check_case cases[] = {
    {"read_watcher_is_level_triggered", read_watcher_is_level_triggered},
    {"write_watcher_and_event_changes", write_watcher_and_event_changes},
    {"two_watchers_on_one_fd", two_watchers_on_one_fd},
    {"watcher_stopped_earlier_in_batch_does_not_run", watcher_stopped_earlier_in_batch_does_not_run},
    {"no_stale_event_after_close_and_fd_reuse_in_batch",
     no_stale_event_after_close_and_fd_reuse_in_batch},
    {"stop_and_restart_on_same_fd", stop_and_restart_on_same_fd},
    {"fd_closed_and_reused_gets_new_events", fd_closed_and_reused_gets_new_events},
    {"peer_close_fires_read", peer_close_fires_read},
    {"call_soon_loop_does_not_starve_io", call_soon_loop_does_not_starve_io},
    {"bad_io_input_is_refused", bad_io_input_is_refused},
    {"fd_beyond_fd_setsize", fd_beyond_fd_setsize},
    {"regular_file", regular_file},
    {"run_returns_when_last_watcher_stops", run_returns_when_last_watcher_stops},
    {"close_with_active_watchers", close_with_active_watchers},
    {"many_fds", many_fds},
};

CHECK_MAIN(cases)
