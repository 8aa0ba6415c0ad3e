/* peer_libevent.c - the libevent side of `make bench` (workloads defined in bench/README.md).

   Usage: peer_libevent WORKLOAD N     prints "RESULT <name> <value>" lines
          peer_libevent echo PORT      TCP echo server on 127.0.0.1 (PORT 0: any); prints
                                       "listening on PORT" once ready */
#define _GNU_SOURCE 1
#include <event2/event.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/* ---- 1. dispatch: event_active() on an event with no fd and no timeout (never added), from
   its own callback. libevent runs an event activated during the active-queue pass in the same
   pass: no poll between steps. ---- */
static long chain_left;
static void active_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    if (--chain_left > 0) event_active((struct event *)arg, EV_TIMEOUT, 0);
}

static double bench_dispatch(long n) {
    struct event_base *base = event_base_new();
    struct event *ev = event_new(base, -1, 0, active_cb, event_self_cbarg());
    double t0;
    chain_left = n;
    t0 = now_ns();
    event_active(ev, EV_TIMEOUT, 0);
    event_base_dispatch(base);
    t0 = (now_ns() - t0) / (double)n;
    event_free(ev);
    event_base_free(base);
    return t0;
}

/* ---- 2. timers (evtimer: struct timeval, microseconds) ---- */
static long fired;
static void timer_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    (void)arg;
    fired++;
}

static void bench_timers(long n) {
    struct event_base *base = event_base_new();
    struct event *t = (struct event *)calloc((size_t)n, event_get_struct_event_size());
    size_t sz = event_get_struct_event_size();
    struct timeval *delay = (struct timeval *)malloc((size_t)n * sizeof *delay);
    unsigned x = 12345;
    long i, expect = n - (n + 1) / 2;
    double t0, start, stop, fire;
#define EV_AT(i) ((struct event *)((char *)t + (size_t)(i) * sz))
    for (i = 0; i < n; i++) {
        unsigned us;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        us = x % 500000;
        delay[i].tv_sec = 0;
        delay[i].tv_usec = (suseconds_t)us;
        evtimer_assign(EV_AT(i), base, timer_cb, NULL);
    }
    t0 = now_ns();
    for (i = 0; i < n; i++) evtimer_add(EV_AT(i), &delay[i]);
    start = (now_ns() - t0) / (double)n;
    t0 = now_ns();
    for (i = 0; i < n; i += 2) evtimer_del(EV_AT(i));
    stop = (now_ns() - t0) / (double)((n + 1) / 2);
    {
        struct timespec ts = {0, 510 * 1000000};
        nanosleep(&ts, NULL);
    }
    fired = 0;
    t0 = now_ns();
    while (fired < expect) event_base_loop(base, EVLOOP_NONBLOCK);
    fire = (now_ns() - t0) / (double)fired;
    printf("RESULT timer_start %.3f\nRESULT timer_stop %.3f\nRESULT timer_fire %.3f\n", start,
           stop, fire);
    free(delay);
}

/* ---- 7. TCP echo server: level-triggered persistent read events; one read into a shared
   64 KiB buffer per readiness, written back at once; a partial write keeps the rest, deletes
   the read event and adds the write event until it is flushed (backpressure). ---- */
typedef struct conn {
    struct event *rd, *wr;
    int fd;
    char *pending;
    size_t plen, poff;
} conn;
static char rbuf[65536];

static void conn_close(conn *c) {
    event_free(c->rd);
    event_free(c->wr);
    close(c->fd);
    free(c->pending);
    free(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
    conn *c = (conn *)arg;
    ssize_t m;
    (void)what;
    m = write(fd, c->pending + c->poff, c->plen - c->poff);
    if (m < 0) {
        if (errno != EAGAIN) conn_close(c);
        return;
    }
    c->poff += (size_t)m;
    if (c->poff < c->plen) return;
    free(c->pending);
    c->pending = NULL;
    event_del(c->wr);
    event_add(c->rd, NULL);
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
    conn *c = (conn *)arg;
    ssize_t n, m;
    (void)what;
    n = read(fd, rbuf, sizeof rbuf);
    if (n <= 0) {
        if (n == 0 || errno != EAGAIN) conn_close(c);
        return;
    }
    m = write(fd, rbuf, (size_t)n);
    if (m == n) return;
    if (m < 0) {
        if (errno != EAGAIN) {
            conn_close(c);
            return;
        }
        m = 0;
    }
    c->plen = (size_t)(n - m);
    c->poff = 0;
    c->pending = (char *)malloc(c->plen);
    memcpy(c->pending, rbuf + m, c->plen);
    event_del(c->rd);
    event_add(c->wr, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg) {
    struct event_base *base = (struct event_base *)arg;
    (void)what;
    for (;;) {
        int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        conn *c;
        if (fd < 0) return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = (conn *)calloc(1, sizeof *c);
        c->fd = fd;
        c->rd = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
        c->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
        event_add(c->rd, NULL);
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
    struct event_base *base = event_base_new();
    struct event *acceptor;
    int lfd = listen_on(port);
    if (lfd < 0) {
        perror("peer_libevent: listen");
        return 1;
    }
    acceptor = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, base);
    event_add(acceptor, NULL);
    event_base_dispatch(base);
    return 0;
}

int main(int argc, char **argv) {
    long n;
    if (argc < 3) {
        fprintf(stderr, "usage: peer_libevent WORKLOAD N | echo PORT\n");
        return 2;
    }
    n = atol(argv[2]);
    if (strcmp(argv[1], "dispatch") == 0) printf("RESULT dispatch %.3f\n", bench_dispatch(n));
    else if (strcmp(argv[1], "timers") == 0) bench_timers(n);
    else if (strcmp(argv[1], "echo") == 0) return echo_server((int)n);
    else {
        fprintf(stderr, "peer_libevent: unknown workload '%s'\n", argv[1]);
        return 2;
    }
    return 0;
}
