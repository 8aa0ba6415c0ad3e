/* echo_tasks.c - a TCP echo server written as straight-line code: one task per connection.

   Usage: echo_tasks [PORT]     (default 7000; 0 picks a free port)
   It prints "listening on PORT" once ready. Try it: ./build/examples/echo_tasks & nc 127.0.0.1 7000 */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

/* One connection: read whatever arrives, write it back, until the peer closes. */
static int serve_client(evl_loop *loop, void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;
    while ((n = evl_read(loop, fd, buf, sizeof buf)) > 0)
        if (evl_write_all(loop, fd, buf, (size_t)n) < 0) break;
    close(fd);
    return n < 0 && n != -ECONNRESET ? (int)n : 0;
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
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1024) < 0) return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

/* The acceptor: every connection gets its own detached task. */
static int accept_loop(evl_loop *loop, void *arg) {
    int lfd = (int)(intptr_t)arg;
    evl_task_opts opts = {"client", 64 * 1024};
    for (;;) {
        int fd = evl_accept(loop, lfd, NULL, NULL);
        int one = 1;
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE) {
                evl_sleep(loop, EVL_MSEC(10)); /* out of fds: let some connections finish */
                continue;
            }
            return fd;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (evl_task_spawn(loop, NULL, serve_client, (void *)(intptr_t)fd, &opts) < 0) close(fd);
    }
}

int main(int argc, char **argv) {
    evl_loop *loop;
    int lfd, err;
    signal(SIGPIPE, SIG_IGN); /* a write to a client that reset fails with EPIPE, not a kill */
    if ((lfd = listen_on(argc > 1 ? atoi(argv[1]) : 7000)) < 0) {
        perror("listen");
        return 1;
    }
    if ((err = evl_loop_new(&loop, NULL)) < 0 ||
        (err = evl_task_spawn(loop, NULL, accept_loop, (void *)(intptr_t)lfd, NULL)) < 0) {
        fprintf(stderr, "echo_tasks: %s\n", evl_strerror(err));
        return 1;
    }
    err = evl_run(loop);
    evl_loop_close(loop);
    close(lfd);
    return err < 0 ? 1 : 0;
}
