/* echo.c - a TCP echo server in the callback style: I/O watchers and no tasks (compare
   echo_tasks.c, the same server written with one task per connection).

   Usage: echo [PORT]     (default 7000; 0 picks a free port)
   It prints "listening on PORT" once ready. Try it: ./build/examples/echo & nc 127.0.0.1 7000
   SIGINT or SIGTERM closes every connection and exits 0.

   Each connection owns a fixed buffer of bytes read and not yet written back. The server reads
   only while that buffer has room, and asks for write readiness only while it holds bytes the
   socket would not take: a client that sends but never reads fills its buffer, then the server
   stops reading from it (backpressure), so memory stays bounded by the buffer size. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#define BUFFER_SIZE (64 * 1024)

typedef struct server server;
typedef struct client {
    evl_io io;
    server *srv;
    int fd, events, eof;
    size_t start, end;           /* buf[start..end) is still to be written back */
    struct client *prev, *next;  /* the server's list of open clients */
    char buf[BUFFER_SIZE];
} client;

struct server {
    evl_io accept_io;
    evl_timer accept_retry;      /* out of fds: accepting pauses for a moment */
    evl_signal sigint, sigterm;
    client *clients;
    int listen_fd, open;
};

static void client_close(evl_loop *loop, client *c) {
    server *srv = c->srv;
    evl_io_stop(loop, &c->io); /* before close(): the fd number may be reused at once */
    close(c->fd);
    if (c->prev) c->prev->next = c->next;
    else srv->clients = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->open--;
    free(c);
}

static int would_block(void) {
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Writes what the socket takes now; -1 when the connection has failed. */
static int client_write(client *c) {
    while (c->start < c->end) {
        ssize_t n = write(c->fd, c->buf + c->start, c->end - c->start);
        if (n < 0) return would_block() ? 0 : -1;
        c->start += (size_t)n;
    }
    c->start = c->end = 0; /* all written: the whole buffer is free again */
    return 0;
}

/* Reads into the free end of the buffer; -1 when the connection has failed. */
static int client_read(client *c) {
    ssize_t n = read(c->fd, c->buf + c->end, sizeof c->buf - c->end);
    if (n > 0) c->end += (size_t)n;
    else if (n == 0) c->eof = 1;
    else if (!would_block()) return -1;
    return 0;
}

/* Reads, writes back at once (the socket usually takes it), then decides what to wait for. */
static void on_client(evl_loop *loop, void *arg, int events) {
    client *c = (client *)arg;
    int want;
    if (((events & EVL_READ) && client_read(c) < 0) || client_write(c) < 0) {
        client_close(loop, c);
        return;
    }
    /* Read while there is room and the peer has not finished; wait for write readiness only
       while bytes are stuck. A peer that has finished and got everything back is done. */
    want = (!c->eof && c->end < sizeof c->buf ? EVL_READ : 0) | (c->start < c->end ? EVL_WRITE : 0);
    if (!want) client_close(loop, c);
    else if (want != c->events) evl_io_start(loop, &c->io, c->events = want);
}

static void client_open(evl_loop *loop, server *srv, int fd) {
    client *c = (client *)malloc(sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    /* Not calloc: the buffer's pages stay untouched (no memory) until data arrives. */
    memset(c, 0, offsetof(client, buf));
    c->srv = srv;
    c->fd = fd;
    c->events = EVL_READ;
    evl_io_init(&c->io, fd, on_client, c);
    if (evl_io_start(loop, &c->io, EVL_READ) < 0) { /* select: fd >= FD_SETSIZE */
        close(fd);
        free(c);
        return;
    }
    c->next = srv->clients;
    if (c->next) c->next->prev = c;
    srv->clients = c;
    srv->open++;
}

static void on_accept_retry(evl_loop *loop, void *arg) {
    server *srv = (server *)arg;
    evl_io_start(loop, &srv->accept_io, EVL_READ);
}

/* Takes the waiting connections, a bounded number per call so one busy listener cannot keep
   the loop from its other work. */
static void on_accept(evl_loop *loop, void *arg, int events) {
    server *srv = (server *)arg;
    int i;
    (void)events;
    for (i = 0; i < 64; i++) {
        int fd = accept(srv->listen_fd, NULL, NULL);
        if (fd >= 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            client_open(loop, srv, fd);
        } else if (errno == EMFILE || errno == ENFILE) {
            /* Level triggered, the listener would stay ready and spin: pause it instead. */
            evl_io_stop(loop, &srv->accept_io);
            evl_timer_start(loop, &srv->accept_retry, EVL_MSEC(100), 0);
            return;
        } else if (errno != ECONNABORTED && errno != EINTR) {
            return; /* EAGAIN: nothing more waiting */
        }
    }
}

/* Closes everything: with nothing left to wait for, evl_run returns. */
static void on_signal(evl_loop *loop, void *arg) {
    server *srv = (server *)arg;
    int closed = srv->open;
    while (srv->clients) client_close(loop, srv->clients);
    evl_io_stop(loop, &srv->accept_io);
    evl_timer_stop(loop, &srv->accept_retry);
    evl_signal_stop(loop, &srv->sigint);
    evl_signal_stop(loop, &srv->sigterm);
    close(srv->listen_fd);
    printf("shutdown: %d connections closed\n", closed);
}

static int listen_on(int port) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv) {
    server srv;
    evl_loop *loop;
    struct rlimit rl;
    int err;
    /* Every connection is an fd: take as many as the hard limit allows. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN); /* a write to a closed peer fails with EPIPE instead */
    memset(&srv, 0, sizeof srv);
    if ((srv.listen_fd = listen_on(argc > 1 ? atoi(argv[1]) : 7000)) < 0) {
        perror("echo: listen");
        return 1;
    }
    if ((err = evl_loop_new(&loop, NULL)) < 0) {
        fprintf(stderr, "echo: %s\n", evl_strerror(err));
        return 1;
    }
    evl_io_init(&srv.accept_io, srv.listen_fd, on_accept, &srv);
    evl_timer_init(&srv.accept_retry, on_accept_retry, &srv);
    evl_signal_init(&srv.sigint, SIGINT, on_signal, &srv);
    evl_signal_init(&srv.sigterm, SIGTERM, on_signal, &srv);
    if ((err = evl_io_start(loop, &srv.accept_io, EVL_READ)) == 0 &&
        (err = evl_signal_start(loop, &srv.sigint)) == 0 &&
        (err = evl_signal_start(loop, &srv.sigterm)) == 0)
        err = evl_run(loop);
    evl_loop_close(loop);
    if (err < 0) fprintf(stderr, "echo: %s\n", evl_strerror(err));
    return err < 0 ? 1 : 0;
}
