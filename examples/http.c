/* http.c - a small HTTP/1.1 server: one task per connection, written as straight-line code.

   Usage: http [PORT [IDLE_MS]]   (PORT default 8080, 0 picks a free one; IDLE_MS default 30000)
   It prints "listening on PORT" once ready. Try it:
       ./build/examples/http &
       curl -i localhost:8080/  localhost:8080/fib?n=50  localhost:8080/sleep?ms=200
       wrk -t2 -c50 -d3s http://127.0.0.1:8080/

   Routes: GET /             "Hello, world!"
           GET /fib?n=N      the Nth Fibonacci number (0 <= N <= 92), computed on the loop
           GET /sleep?ms=N   blocking work (0 <= N <= 10000 ms) offloaded to the executor
           POST /upload      counts the bytes of the body
   Keep-alive (HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive"),
   pipelining (every complete request in the buffer is answered, in order, in one write),
   Content-Length bodies up to 1 MiB (else 413). A malformed request gets 400, a header block
   over 8 KiB gets 431, and the connection closes. A connection that takes longer than IDLE_MS
   to send a request (or to take a response) is closed. SIGINT or SIGTERM shut it down
   gracefully: the listener closes, requests in progress finish, idle connections close. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define MAX_HEADER (8 * 1024)
#define MAX_BODY (1024 * 1024)

/* One loop on one thread: the tasks share these counters without locks. */
static struct server {
    int listen_fd;
    evl_time idle;
    int shutting_down, closed_by_shutdown;
    unsigned long long requests;
} srv;

/* One connection's buffers live on its task's stack: touched pages only, so an idle
   connection costs a few pages. `out` gathers the responses to a pipelined batch. */
typedef struct conn {
    int fd;
    size_t in_len, out_len;
    char in[MAX_HEADER];
    char out[16 * 1024];
} conn;

typedef struct route route;
typedef struct request {
    const route *route;   /* NULL: answer `status` */
    const char *allow;    /* for a 405: the method the path takes */
    int status;           /* 0, or the error found while parsing */
    int keep_alive, http10;
    long param;           /* the route's query parameter, validated */
    size_t body;          /* Content-Length */
} request;

/* A handler writes the response body into buf and returns the status code. */
typedef int (*handler)(evl_loop *loop, const request *r, char *buf, size_t cap);
struct route {
    const char *method, *path, *param;   /* param: the one query parameter, or NULL */
    long max;                            /* its largest accepted value */
    handler fn;
};

static int hello(evl_loop *loop, const request *r, char *buf, size_t cap) {
    (void)loop, (void)r;
    snprintf(buf, cap, "Hello, world!\n");
    return 200;
}

static int fib(evl_loop *loop, const request *r, char *buf, size_t cap) {
    unsigned long long a = 0, b = 1, t;
    long i;
    (void)loop;
    for (i = 0; i < r->param; i++) t = a + b, a = b, b = t;
    snprintf(buf, cap, "%llu\n", a);
    return 200;
}

/* Runs on an executor thread: a stand-in for a blocking database call. */
static void *blocking_sleep(void *arg) {
    long ms = *(const long *)arg;
    struct timespec pause;
    pause.tv_sec = ms / 1000;
    pause.tv_nsec = ms % 1000 * 1000000L;
    nanosleep(&pause, NULL);
    return NULL;
}

/* The shield lets a request that has started finish even when a shutdown cancels the task. */
static int sleep_route(evl_loop *loop, const request *r, char *buf, size_t cap) {
    int err;
    evl_shield_begin(loop);
    err = evl_executor_run(loop, blocking_sleep, (void *)&r->param, NULL);
    evl_shield_end(loop);
    if (err < 0) {
        snprintf(buf, cap, "%s\n", evl_strerror(err));
        return 503;
    }
    snprintf(buf, cap, "slept %ld ms\n", r->param);
    return 200;
}

static int upload(evl_loop *loop, const request *r, char *buf, size_t cap) {
    (void)loop;
    snprintf(buf, cap, "received %zu bytes\n", r->body);
    return 200;
}

static const route routes[] = {
    {"GET", "/", NULL, 0, hello},
    {"GET", "/fib", "n", 92, fib},
    {"GET", "/sleep", "ms", 10000, sleep_route},
    {"POST", "/upload", NULL, 0, upload},
};

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default: return "Service Unavailable";
    }
}

/* Reads the decimal number that is the whole of [s, end), saturating at 10^9 (larger than any
   limit here); -1 if it is not a number. */
static long parse_number(const char *s, const char *end) {
    long v = 0;
    if (s == end) return -1;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v < 100000000 ? v * 10 + (*s - '0') : 1000000000;
    }
    return v;
}

/* Finds `name` in a query string "a=1&b=2" and validates its value against the route. */
static int parse_param(request *r, const char *query) {
    size_t len = strlen(r->route->param);
    while (query && *query) {
        const char *end = strchr(query, '&');
        if (!end) end = query + strlen(query);
        if (strncmp(query, r->route->param, len) == 0 && query[len] == '=') {
            r->param = parse_number(query + len + 1, end);
            return r->param >= 0 && r->param <= r->route->max ? 0 : 400;
        }
        query = *end ? end + 1 : NULL;
    }
    return 400;
}

/* Picks the route for method and target ("/path?query"): 404 and 405 when there is none. */
static int resolve(request *r, const char *method, char *target) {
    char *query = strchr(target, '?');
    size_t i;
    if (query) *query++ = 0;
    for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(routes[i].path, target) != 0) continue;
        r->allow = routes[i].method;
        if (strcmp(routes[i].method, method) != 0) continue;
        r->route = &routes[i];
        return r->route->param ? parse_param(r, query) : 0;
    }
    return r->allow ? 405 : 404;
}

/* Reads one header line; returns 0, or 400 / 501 for what this server refuses. */
static int parse_header(request *r, char *line) {
    char *value = strchr(line, ':'), *end;
    if (!value || value == line || strcspn(line, " \t") < (size_t)(value - line)) return 400;
    *value++ = 0;
    value += strspn(value, " \t");
    for (end = value + strlen(value); end > value && (end[-1] == ' ' || end[-1] == '\t'); end--) {}
    *end = 0;
    if (strcasecmp(line, "Content-Length") == 0) {
        long n = parse_number(value, end);
        if (n < 0) return 400;
        r->body = (size_t)n;
    } else if (strcasecmp(line, "Connection") == 0) {
        if (strcasecmp(value, "close") == 0) r->keep_alive = 0;
        if (strcasecmp(value, "keep-alive") == 0) r->keep_alive = 1;
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
        return 501; /* chunked bodies are not supported: Content-Length only */
    }
    return 0;
}

/* Reads the request line "METHOD /target HTTP/1.x"; 0 or 400. */
static int parse_request_line(request *r, char *line, char *method, char *target) {
    char version[16];
    int n = 0;
    if (sscanf(line, "%15[A-Z] %1023[^ ] %15s%n", method, target, version, &n) != 3 ||
        line[n] || target[0] != '/' || strncmp(version, "HTTP/1.", 7) != 0 ||
        (version[7] != '0' && version[7] != '1') || version[8])
        return 400;
    r->http10 = version[7] == '0';
    r->keep_alive = !r->http10;
    return 0;
}

/* Parses the header block head[0..len), which ends with CRLF CRLF, in place. */
static void parse_request(request *r, char *head, size_t len) {
    char *line, *eol = strstr(head, "\r\n"), method[16], target[1024];
    int status = memchr(head, 0, len) ? 400 : 0;
    memset(r, 0, sizeof *r);
    head[len - 2] = 0; /* the block is now a string of CRLF-terminated lines */
    *eol = 0;
    if (!status) status = parse_request_line(r, head, method, target);
    for (line = eol + 2; !status && *line; line = eol + 2) {
        eol = strstr(line, "\r\n");
        *eol = 0;
        status = parse_header(r, line);
    }
    if (!status && r->body > MAX_BODY) status = 413;
    /* After an error in the framing the rest of the stream cannot be trusted: close. */
    if (status) r->keep_alive = 0;
    else if ((status = resolve(r, method, target)) != 0) r->route = NULL;
    r->status = status;
}

/* Sends what is queued. A plain write(2) first: a response that fits (the usual case) goes out
   even when a shutdown has cancelled the task; the rest waits for room. */
static int flush(evl_loop *loop, conn *c) {
    ssize_t n = c->out_len ? write(c->fd, c->out, c->out_len) : 0;
    size_t len = c->out_len;
    c->out_len = 0;
    if (n < 0) n = 0;
    return (size_t)n < len && evl_write_all(loop, c->fd, c->out + n, len - n) < 0 ? -1 : 0;
}

/* Flushes the responses so far, then waits for more input. */
static ssize_t fill(evl_loop *loop, conn *c) {
    ssize_t n;
    if (flush(loop, c) < 0) return -1;
    n = evl_read(loop, c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
    if (n > 0) c->in_len += (size_t)n;
    return n;
}

static void consume(conn *c, size_t n) {
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* Reads and drops the body: bytes already buffered first, then from the socket. */
static int skip_body(evl_loop *loop, conn *c, size_t left) {
    for (;;) {
        size_t take = left < c->in_len ? left : c->in_len;
        consume(c, take);
        if ((left -= take) == 0) return 0;
        if (fill(loop, c) <= 0) return -1;
    }
}

static void respond(evl_loop *loop, conn *c, const request *r) {
    char body[128], extra[64] = "";
    int status = r->status, n = 0;
    if (!status) status = r->route->fn(loop, r, body, sizeof body);
    else snprintf(body, sizeof body, "%s\n", reason(status));
    if (status == 405) n = snprintf(extra, sizeof extra, "Allow: %s\r\n", r->allow);
    if (!r->keep_alive || r->http10)
        snprintf(extra + n, sizeof extra - (size_t)n, "Connection: %s\r\n",
                 r->keep_alive ? "keep-alive" : "close");
    if (c->out_len + 512 > sizeof c->out) flush(loop, c);
    c->out_len += (size_t)snprintf(c->out + c->out_len, sizeof c->out - c->out_len,
        "HTTP/1.1 %d %s\r\nServer: evloop\r\nContent-Type: text/plain\r\n"
        "Content-Length: %zu\r\n%s\r\n%s", status, reason(status), strlen(body), extra, body);
    srv.requests++;
}

/* Serves one request; 1 to go on with the next, 0 to close. */
static int serve_one(evl_loop *loop, conn *c) {
    request r;
    char *end;
    while ((end = memmem(c->in, c->in_len, "\r\n\r\n", 4)) == NULL) {
        if (c->in_len == sizeof c->in) {
            memset(&r, 0, sizeof r);
            r.status = 431;
            respond(loop, c, &r);
            return 0;
        }
        if (fill(loop, c) <= 0) return 0; /* closed, failed, idle too long or shutting down */
    }
    parse_request(&r, c->in, (size_t)(end - c->in) + 4);
    consume(c, (size_t)(end - c->in) + 4);
    if (r.keep_alive && skip_body(loop, c, r.body) < 0) return 0;
    respond(loop, c, &r);
    return r.keep_alive;
}

static int connection(evl_loop *loop, void *arg) {
    conn c;
    int more = 1;
    c.fd = (int)(intptr_t)arg;
    c.in_len = c.out_len = 0;
    while (more) {
        /* Each request (and the wait for it) gets the idle timeout, then the clock restarts. */
        evl_time outer = evl_deadline(loop, evl_now(loop) + srv.idle);
        more = serve_one(loop, &c);
        evl_deadline_restore(loop, outer);
    }
    flush(loop, &c);
    close(c.fd);
    srv.closed_by_shutdown += srv.shutting_down;
    return 0;
}

static void on_shutdown(evl_loop *loop, void *arg) {
    (void)loop, (void)arg;
    srv.shutting_down = 1;
}

/* The main task accepts until a shutdown cancels it, then closes the listener. */
static int accept_loop(evl_loop *loop, void *arg) {
    evl_task_opts opts = {"connection", 64 * 1024};
    int err = 0;
    (void)arg;
    evl_on_shutdown(loop, on_shutdown, NULL);
    while (err >= 0) {
        int fd = evl_accept(loop, srv.listen_fd, NULL, NULL), one = 1;
        if (fd == -EMFILE || fd == -ENFILE) { /* out of fds: let some connections finish */
            err = evl_sleep(loop, EVL_MSEC(10));
        } else if ((err = fd) >= 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (evl_task_spawn(loop, NULL, connection, (void *)(intptr_t)fd, &opts) < 0) close(fd);
        }
    }
    close(srv.listen_fd);
    return err;
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

/* Every connection is an fd: take as many as the hard limit allows. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    evl_config cfg;
    int err;
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN); /* a write to a peer that reset fails with EPIPE, not a kill */
    srv.idle = EVL_MSEC(argc > 2 ? atol(argv[2]) : 30000);
    if ((srv.listen_fd = listen_on(argc > 1 ? atoi(argv[1]) : 8080)) < 0) {
        perror("http: listen");
        return 1;
    }
    evl_config_init(&cfg);                /* backend from EVLOOP_BACKEND, else the best */
    cfg.shutdown_grace = EVL_SEC(10);     /* the longest a request in progress may take */
    err = evl_main(&cfg, accept_loop, NULL);
    printf("shutdown: %d connections closed, %llu requests served\n", srv.closed_by_shutdown,
           srv.requests);
    if (err < 0) fprintf(stderr, "http: %s\n", evl_strerror(err));
    return err < 0 ? 1 : 0;
}
