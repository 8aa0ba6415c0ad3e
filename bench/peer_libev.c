/* peer_libev.c - the libev side of `make bench` (workloads defined in bench/README.md).

   Usage: peer_libev WORKLOAD N     prints "RESULT <name> <value>" lines
          peer_libev echo PORT      TCP echo server on 127.0.0.1 (PORT 0: any); prints
                                    "listening on PORT" once ready */
#define _GNU_SOURCE 1
#include <ev.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- 1. dispatch: an ev_idle watcher stopped and re-started in its own callback. Each step is
   one loop iteration; an active idle watcher makes the poll non-blocking (epoll_wait with a 0
   timeout every iteration). ---- */
static long chain_left;
static void idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
    (void)revents;
    ev_idle_stop(loop, w);
    if (--chain_left > 0) ev_idle_start(loop, w);
}

static double bench_dispatch(long n) {
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    ev_idle idle;
    double t0;
    ev_idle_init(&idle, idle_cb);
    chain_left = n;
    t0 = now_ns();
    ev_idle_start(loop, &idle);
    ev_run(loop, 0);
    return (now_ns() - t0) / (double)n;
}

/* ---- 2. timers (ev_timer: double seconds) ---- */
static long fired;
static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)w;
    (void)revents;
    fired++;
}

static void bench_timers(long n) {
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    ev_timer *t = (ev_timer *)calloc((size_t)n, sizeof *t);
    double *delay = (double *)malloc((size_t)n * sizeof *delay);
    unsigned x = 12345;
    long i, expect = n - (n + 1) / 2;
    double t0, start, stop, fire;
    for (i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        delay[i] = (double)(x % 500000) / 1e6;
        ev_timer_init(&t[i], timer_cb, delay[i], 0.);
    }
    ev_now_update(loop);
    t0 = now_ns();
    for (i = 0; i < n; i++) {
        ev_timer_set(&t[i], delay[i], 0.);
        ev_timer_start(loop, &t[i]);
    }
    start = (now_ns() - t0) / (double)n;
    t0 = now_ns();
    for (i = 0; i < n; i += 2) ev_timer_stop(loop, &t[i]);
    stop = (now_ns() - t0) / (double)((n + 1) / 2);
    {
        struct timespec ts = {0, 510 * 1000000};
        nanosleep(&ts, NULL);
    }
    fired = 0;
    t0 = now_ns();
    while (fired < expect) ev_run(loop, EVRUN_NOWAIT);
    fire = (now_ns() - t0) / (double)fired;
    printf("RESULT timer_start %.3f\nRESULT timer_stop %.3f\nRESULT timer_fire %.3f\n", start,
           stop, fire);
    free(delay);
}

/* ---- 5. thread-safe posts: a mutex-protected queue plus ev_async_send (which coalesces and
   carries no payload), the libev way to post a callback from another thread ---- */
#define POSTERS 4
typedef struct job {
    void (*cb)(void *);
    void *arg;
} job;
static pthread_mutex_t inbox_lock = PTHREAD_MUTEX_INITIALIZER;
static job *inbox, *spare;
static size_t inbox_len, inbox_cap, spare_cap;
static ev_async async;
static struct ev_loop *post_loop;
static long per_thread, seen, async_calls;

static void post_cb(void *arg) {
    (void)arg;
    if (++seen == POSTERS * per_thread) ev_async_stop(post_loop, &async);
}

static void post(void (*cb)(void *), void *arg) {
    pthread_mutex_lock(&inbox_lock);
    if (inbox_len == inbox_cap) {
        inbox_cap = inbox_cap ? inbox_cap * 2 : 64;
        inbox = (job *)realloc(inbox, inbox_cap * sizeof *inbox);
    }
    inbox[inbox_len].cb = cb;
    inbox[inbox_len].arg = arg;
    inbox_len++;
    pthread_mutex_unlock(&inbox_lock);
    ev_async_send(post_loop, &async);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents) {
    job *batch;
    size_t len, cap, i;
    (void)loop;
    (void)w;
    (void)revents;
    async_calls++;
    pthread_mutex_lock(&inbox_lock);
    batch = inbox, len = inbox_len, cap = inbox_cap;
    inbox = spare, inbox_cap = spare_cap, inbox_len = 0;
    pthread_mutex_unlock(&inbox_lock);
    for (i = 0; i < len; i++) batch[i].cb(batch[i].arg);
    spare = batch, spare_cap = cap;
}

static void *poster(void *arg) {
    long i;
    (void)arg;
    for (i = 0; i < per_thread; i++) post(post_cb, NULL);
    return NULL;
}

static void bench_tspost(long n) {
    pthread_t th[POSTERS];
    double t0;
    int i;
    post_loop = ev_default_loop(EVFLAG_AUTO);
    per_thread = n / POSTERS;
    ev_async_init(&async, async_cb);
    ev_async_start(post_loop, &async);
    t0 = now_ns();
    for (i = 0; i < POSTERS; i++) pthread_create(&th[i], NULL, poster, NULL);
    ev_run(post_loop, 0);
    t0 = (now_ns() - t0) / (double)(POSTERS * per_thread);
    for (i = 0; i < POSTERS; i++) pthread_join(th[i], NULL);
    printf("RESULT tspost %.3f\nINFO async_callbacks %ld\n", t0, async_calls);
}

/* ---- 7. TCP echo server: level-triggered ev_io; one read into a shared 64 KiB buffer per
   readiness, written back at once; a partial write keeps the rest and switches the watcher
   from read to write until it is flushed (backpressure). ---- */
typedef struct conn {
    ev_io io;
    char *pending;
    size_t plen, poff;
} conn;
static char rbuf[65536];

static void conn_close(struct ev_loop *loop, conn *c) {
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    free(c->pending);
    free(c);
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents) {
    conn *c = (conn *)w;
    ssize_t n, m;
    (void)revents;
    if (c->pending) {
        m = write(w->fd, c->pending + c->poff, c->plen - c->poff);
        if (m < 0) {
            if (errno != EAGAIN) conn_close(loop, c);
            return;
        }
        c->poff += (size_t)m;
        if (c->poff < c->plen) return;
        free(c->pending);
        c->pending = NULL;
        ev_io_stop(loop, w);
        ev_io_set(w, w->fd, EV_READ);
        ev_io_start(loop, w);
        return;
    }
    n = read(w->fd, rbuf, sizeof rbuf);
    if (n <= 0) {
        if (n == 0 || errno != EAGAIN) conn_close(loop, c);
        return;
    }
    m = write(w->fd, rbuf, (size_t)n);
    if (m == n) return;
    if (m < 0) {
        if (errno != EAGAIN) {
            conn_close(loop, c);
            return;
        }
        m = 0;
    }
    c->plen = (size_t)(n - m);
    c->poff = 0;
    c->pending = (char *)malloc(c->plen);
    memcpy(c->pending, rbuf + m, c->plen);
    ev_io_stop(loop, w);
    ev_io_set(w, w->fd, EV_WRITE);
    ev_io_start(loop, w);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    for (;;) {
        int one = 1, fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        conn *c;
        if (fd < 0) return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = (conn *)calloc(1, sizeof *c);
        ev_io_init(&c->io, conn_cb, fd, EV_READ);
        ev_io_start(loop, &c->io);
    }
}

static int listen_on(int port) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) return -1;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

static int echo_server(int port) {
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    static ev_io acceptor;
    int lfd = listen_on(port);
    if (lfd < 0) {
        perror("peer_libev: listen");
        return 1;
    }
    ev_io_init(&acceptor, accept_cb, lfd, EV_READ);
    ev_io_start(loop, &acceptor);
    ev_run(loop, 0);
    return 0;
}

int main(int argc, char **argv) {
    long n;
    if (argc < 3) {
        fprintf(stderr, "usage: peer_libev WORKLOAD N | echo PORT\n");
        return 2;
    }
    n = atol(argv[2]);
    if (strcmp(argv[1], "dispatch") == 0) printf("RESULT dispatch %.3f\n", bench_dispatch(n));
    else if (strcmp(argv[1], "timers") == 0) bench_timers(n);
    else if (strcmp(argv[1], "tspost") == 0) bench_tspost(n);
    else if (strcmp(argv[1], "echo") == 0) return echo_server((int)n);
    else {
        fprintf(stderr, "peer_libev: unknown workload '%s'\n", argv[1]);
        return 2;
    }
    return 0;
}
