/* echo_evloop.c - evloop's TCP echo servers for `make bench` (workloads 7 and 8a in
   bench/README.md), in the two styles evloop offers.

   Usage: echo_evloop callbacks PORT   evl_io watchers, the same algorithm as the libev and
                                       libevent servers: one read into a shared 64 KiB buffer
                                       per readiness, written back at once; a partial write
                                       keeps the rest and switches the watcher to EVL_WRITE
                                       until it is flushed (backpressure)
          echo_evloop tasks PORT       one task per connection, straight-line code: the loop
                                       of examples/echo_tasks.c (evl_read, evl_write_all) with
                                       a 64 KiB buffer on the task's stack (the loop's default
                                       128 KiB stack, guard page on)
   PORT 0 picks a free port; both print "listening on PORT" once ready. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- callbacks ---- */
typedef struct conn {
    evl_io io;
    char *pending;
    size_t plen, poff;
} conn;
static char rbuf[65536];

static void conn_close(evl_loop *loop, conn *c) {
    evl_io_stop(loop, &c->io);
    close(c->io.fd);
    free(c->pending);
    free(c);
}

static void conn_cb(evl_loop *loop, void *arg, int events) {
    conn *c = (conn *)arg;
    int fd = c->io.fd;
    ssize_t n, m;
    (void)events;
    if (c->pending) {
        m = write(fd, c->pending + c->poff, c->plen - c->poff);
        if (m < 0) {
            if (errno != EAGAIN) conn_close(loop, c);
            return;
        }
        c->poff += (size_t)m;
        if (c->poff < c->plen) return;
        free(c->pending);
        c->pending = NULL;
        evl_io_start(loop, &c->io, EVL_READ);
        return;
    }
    n = read(fd, rbuf, sizeof rbuf);
    if (n <= 0) {
        if (n == 0 || errno != EAGAIN) conn_close(loop, c);
        return;
    }
    m = write(fd, rbuf, (size_t)n);
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
    evl_io_start(loop, &c->io, EVL_WRITE);
}

static void accept_cb(evl_loop *loop, void *arg, int events) {
    int lfd = *(int *)arg;
    (void)events;
    for (;;) {
        int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        conn *c;
        if (fd < 0) return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = (conn *)calloc(1, sizeof *c);
        evl_io_init(&c->io, fd, conn_cb, c);
        if (evl_io_start(loop, &c->io, EVL_READ) < 0) {
            close(fd);
            free(c);
        }
    }
}

/* ---- tasks (examples/echo_tasks.c, with the 64 KiB buffer of the other servers) ---- */
static int serve_client(evl_loop *loop, void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[65536];
    ssize_t n;
    while ((n = evl_read(loop, fd, buf, sizeof buf)) > 0)
        if (evl_write_all(loop, fd, buf, (size_t)n) < 0) break;
    close(fd);
    return n < 0 && n != -ECONNRESET ? (int)n : 0;
}

static int accept_loop(evl_loop *loop, void *arg) {
    int lfd = (int)(intptr_t)arg;
    evl_task_opts opts = {"client", 0};
    for (;;) {
        int fd = evl_accept(loop, lfd, NULL, NULL);
        int one = 1;
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE) {
                evl_sleep(loop, EVL_MSEC(10));
                continue;
            }
            return fd;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (evl_task_spawn(loop, NULL, serve_client, (void *)(intptr_t)fd, &opts) < 0) close(fd);
    }
}

int main(int argc, char **argv) {
    static int lfd;
    static evl_io acceptor;
    evl_loop *loop;
    int err;
    if (argc < 3 || (strcmp(argv[1], "callbacks") != 0 && strcmp(argv[1], "tasks") != 0)) {
        fprintf(stderr, "usage: echo_evloop callbacks|tasks PORT\n");
        return 2;
    }
    if ((lfd = listen_on(atoi(argv[2]))) < 0) {
        perror("echo_evloop: listen");
        return 1;
    }
    if ((err = evl_loop_new(&loop, NULL)) < 0) {
        fprintf(stderr, "echo_evloop: %s\n", evl_strerror(err));
        return 1;
    }
    if (strcmp(argv[1], "tasks") == 0) {
        err = evl_task_spawn(loop, NULL, accept_loop, (void *)(intptr_t)lfd, NULL);
    } else {
        evl_io_init(&acceptor, lfd, accept_cb, &lfd);
        err = evl_io_start(loop, &acceptor, EVL_READ);
    }
    if (err < 0 || (err = evl_run(loop)) < 0) {
        fprintf(stderr, "echo_evloop: %s\n", evl_strerror(err));
        return 1;
    }
    evl_loop_close(loop);
    return 0;
}
