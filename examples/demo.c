/* demo.c - what `make demo` runs: a self-check of the HTTP example you can watch.

   It starts the HTTP server (examples/http.c, the binary next to this one) on a free port,
   drives it for two seconds with a load client written with evloop itself (48 keep-alive
   connections, each a task sending a request and checking its response in a loop), prints the
   requests per second, then sends SIGTERM with the connections still open and shows the
   server's graceful shutdown. It exits non-zero if any check failed.

   Usage: demo     (EVLOOP_BACKEND=poll demo runs both sides on another backend) */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#define CONNECTIONS 48
#define LOAD_SECONDS 2

typedef struct demo {
    pid_t server;
    int port, failures;
    evl_time load_end;
    unsigned long long responses, errors;
    int loaded, closed_by_server;
    evl_event *all_loaded, *sigterm_sent;
} demo;

static void check(demo *d, int ok, const char *what) {
    printf("demo: %s %s\n", ok ? "ok:  " : "FAIL:", what);
    d->failures += !ok;
}

/* Starts `path 0` with its stdout on a pipe and reads the port from "listening on PORT". */
static FILE *server_start(demo *d, const char *path) {
    int out[2];
    char line[128];
    FILE *f;
    if (pipe(out) < 0 || (d->server = fork()) < 0) return NULL;
    if (d->server == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(path, path, "0", (char *)NULL);
        perror(path);
        _exit(127);
    }
    close(out[1]);
    f = fdopen(out[0], "r");
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "listening on %d", &d->port) != 1)
        return NULL;
    printf("demo: the server says: %s", line);
    return f;
}

static int connect_to(evl_loop *loop, int port) {
    struct sockaddr_in addr;
    int one = 1, err, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if ((err = evl_connect(loop, fd, (struct sockaddr *)&addr, sizeof addr)) < 0) {
        close(fd);
        return err;
    }
    return fd;
}

/* Sends one GET and reads the response; returns its status (-1: broken) with the body in
   *body. One request at a time, so the response is all there is to read. */
static int get(evl_loop *loop, int fd, const char *path, char *buf, size_t cap, char **body) {
    char request[128];
    size_t len = 0;
    int n = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: demo\r\n\r\n", path);
    if (evl_write_all(loop, fd, request, (size_t)n) < 0) return -1;
    for (;;) {
        char *end, *length;
        ssize_t got;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
        length = strstr(buf, "Content-Length: ");
        if (end && length && length < end &&
            len >= (size_t)(end + 4 - buf) + strtoul(length + 16, NULL, 10)) {
            *body = end + 4;
            return strncmp(buf, "HTTP/1.1 ", 9) == 0 ? atoi(buf + 9) : -1;
        }
        if (len + 1 >= cap || (got = evl_read(loop, fd, buf + len, cap - 1 - len)) <= 0)
            return -1;
        len += (size_t)got;
    }
}

/* One connection: requests until the load ends, then it stays open through the SIGTERM and
   expects the server to close it. */
static int client(evl_loop *loop, void *arg) {
    demo *d = (demo *)arg;
    char buf[1024], *body;
    int i, fd = connect_to(loop, d->port);
    for (i = 0; fd >= 0 && evl_now(loop) < d->load_end; i++) {
        const char *path = i % 2 ? "/fib?n=30" : "/", *want = i % 2 ? "832040\n" : "Hello, world!\n";
        int status = get(loop, fd, path, buf, sizeof buf, &body);
        if (status != 200 || strcmp(body, want) != 0) {
            d->errors++;
            break;
        }
        d->responses++;
    }
    if (fd < 0) d->errors++;
    if (++d->loaded == CONNECTIONS) evl_event_set(loop, d->all_loaded);
    evl_event_wait(loop, d->sigterm_sent);
    evl_deadline(loop, evl_now(loop) + EVL_SEC(10));
    if (fd >= 0 && evl_read(loop, fd, buf, sizeof buf) == 0) d->closed_by_server++;
    if (fd >= 0) close(fd);
    return 0;
}

static int driver(evl_loop *loop, void *arg) {
    demo *d = (demo *)arg;
    char buf[1024], *body;
    evl_time start;
    evl_group *clients;
    int i, fd = connect_to(loop, d->port);
    /* The route that offloads to the server's executor, once, to see it answer. */
    check(d, fd >= 0 && get(loop, fd, "/sleep?ms=100", buf, sizeof buf, &body) == 200 &&
             strcmp(body, "slept 100 ms\n") == 0,
          "GET /sleep?ms=100 -> 200 \"slept 100 ms\" (blocking work on the server's executor)");
    if (fd >= 0) close(fd);

    printf("demo: %d keep-alive connections send GET / and GET /fib?n=30 for %d seconds...\n",
           CONNECTIONS, LOAD_SECONDS);
    fflush(stdout);
    evl_event_new(loop, &d->all_loaded);
    evl_event_new(loop, &d->sigterm_sent);
    evl_group_new(loop, &clients);
    start = evl_now(loop);
    d->load_end = start + EVL_SEC(LOAD_SECONDS);
    for (i = 0; i < CONNECTIONS; i++) evl_group_spawn(loop, clients, client, d, NULL);
    evl_event_wait(loop, d->all_loaded);
    printf("demo: %llu responses checked, %llu errors: %.0f requests/s\n", d->responses,
           d->errors, (double)d->responses * 1e9 / (double)(evl_now(loop) - start));
    check(d, d->responses > 0 && d->errors == 0, "every response was a 200 with the right body");

    printf("demo: sending SIGTERM to the server (pid %d) with %d connections open\n",
           (int)d->server, CONNECTIONS);
    kill(d->server, SIGTERM);
    evl_event_set(loop, d->sigterm_sent);
    evl_group_wait(loop, clients);
    check(d, d->closed_by_server == CONNECTIONS, "the server closed every open connection");
    evl_group_free(loop, clients);
    evl_event_free(loop, d->all_loaded);
    evl_event_free(loop, d->sigterm_sent);
    return 0;
}

int main(int argc, char **argv) {
    demo d;
    char path[4096], line[256];
    const char *slash = strrchr(argv[0], '/');
    evl_loop *loop;
    FILE *server_out;
    int status = 0, shutdown_line = 0;
    (void)argc;
    memset(&d, 0, sizeof d);
    signal(SIGPIPE, SIG_IGN);
    snprintf(path, sizeof path, "%.*shttp", slash ? (int)(slash - argv[0] + 1) : 0, argv[0]);
    printf("demo: starting %s on a free port\n", path);
    fflush(stdout);
    if (!(server_out = server_start(&d, path))) {
        printf("demo: FAIL: the server did not start (build it: make %s)\n", path);
        return 1;
    }
    if (evl_loop_new(&loop, NULL) < 0 || evl_task_spawn(loop, NULL, driver, &d, NULL) < 0) return 1;
    printf("demo: the client runs on the %s backend\n", evl_backend_name(loop));
    evl_run(loop);
    evl_loop_close(loop);

    /* The rest of the server's output is its shutdown report. */
    while (fgets(line, sizeof line, server_out)) {
        printf("demo: the server says: %s", line);
        shutdown_line |= strncmp(line, "shutdown: ", 10) == 0;
    }
    fclose(server_out);
    check(&d, shutdown_line, "the server printed its shutdown line");
    waitpid(d.server, &status, 0);
    check(&d, WIFEXITED(status) && WEXITSTATUS(status) == 0, "the server exited with status 0");
    if (d.failures) printf("demo: %d check(s) FAILED\n", d.failures);
    else printf("demo: all checks passed\n");
    return d.failures ? 1 : 0;
}
