/* peer_libuv.c - the libuv side of `make bench` (workloads defined in bench/README.md).

   Usage: peer_libuv WORKLOAD N     prints "RESULT <name> <value>" lines
          peer_libuv echo PORT      TCP echo server on 127.0.0.1 (PORT 0: any); prints
                                    "listening on PORT" once ready */
#include <uv.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- 1. dispatch: an idle handle stopped and re-started in its own callback. Each step is
   one loop iteration; an active idle handle makes the poll non-blocking (epoll_wait with a 0
   timeout every iteration). ---- */
static long chain_left;
static void idle_cb(uv_idle_t *h) {
    uv_idle_stop(h);
    if (--chain_left > 0) uv_idle_start(h, idle_cb);
}

static double bench_dispatch(long n) {
    uv_loop_t *loop = uv_default_loop();
    uv_idle_t idle;
    double t0;
    uv_idle_init(loop, &idle);
    chain_left = n;
    t0 = now_ns();
    uv_idle_start(&idle, idle_cb);
    uv_run(loop, UV_RUN_DEFAULT);
    t0 = (now_ns() - t0) / (double)n;
    uv_close((uv_handle_t *)&idle, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return t0;
}

/* ---- 2. timers (uv_timer_t: millisecond resolution, so the random delays are rounded down
   to whole milliseconds) ---- */
static long fired;
static void timer_cb(uv_timer_t *t) {
    (void)t;
    fired++;
}

static void bench_timers(long n) {
    uv_loop_t *loop = uv_default_loop();
    uv_timer_t *t = (uv_timer_t *)calloc((size_t)n, sizeof *t);
    uint64_t *delay = (uint64_t *)malloc((size_t)n * sizeof *delay);
    unsigned x = 12345;
    long i, expect = n - (n + 1) / 2;
    double t0, start, stop, fire;
    for (i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        delay[i] = (uint64_t)(x % 500000) / 1000; /* the same microseconds, in ms */
        uv_timer_init(loop, &t[i]);
    }
    uv_update_time(loop);
    t0 = now_ns();
    for (i = 0; i < n; i++) uv_timer_start(&t[i], timer_cb, delay[i], 0);
    start = (now_ns() - t0) / (double)n;
    t0 = now_ns();
    for (i = 0; i < n; i += 2) uv_timer_stop(&t[i]);
    stop = (now_ns() - t0) / (double)((n + 1) / 2);
    {
        struct timespec ts = {0, 510 * 1000000};
        nanosleep(&ts, NULL);
    }
    fired = 0;
    t0 = now_ns();
    while (fired < expect) uv_run(loop, UV_RUN_NOWAIT);
    fire = (now_ns() - t0) / (double)fired;
    printf("RESULT timer_start %.3f\nRESULT timer_stop %.3f\nRESULT timer_fire %.3f\n", start,
           stop, fire);
    /* Not closed: closing 500 000 handles would only time the teardown. */
    free(delay);
}

/* ---- 5. thread-safe posts. uv_async_send coalesces (several sends, one callback) and carries
   no payload, so posting a callback from another thread in libuv is a mutex-protected queue
   plus uv_async_send: that pair is what is measured. ---- */
#define POSTERS 4
typedef struct job {
    void (*cb)(void *);
    void *arg;
} job;
static pthread_mutex_t inbox_lock = PTHREAD_MUTEX_INITIALIZER;
static job *inbox, *spare;
static size_t inbox_len, inbox_cap, spare_cap;
static uv_async_t async;
static long per_thread, seen, async_calls;

static void post_cb(void *arg) {
    (void)arg;
    if (++seen == POSTERS * per_thread) uv_close((uv_handle_t *)&async, NULL);
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
    uv_async_send(&async);
}

static void async_cb(uv_async_t *h) {
    job *batch;
    size_t len, cap, i;
    (void)h;
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
    uv_loop_t *loop = uv_default_loop();
    pthread_t th[POSTERS];
    double t0;
    int i;
    per_thread = n / POSTERS;
    uv_async_init(loop, &async, async_cb);
    t0 = now_ns();
    for (i = 0; i < POSTERS; i++) pthread_create(&th[i], NULL, poster, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    t0 = (now_ns() - t0) / (double)(POSTERS * per_thread);
    for (i = 0; i < POSTERS; i++) pthread_join(th[i], NULL);
    printf("RESULT tspost %.3f\nINFO async_callbacks %ld\n", t0, async_calls);
}

/* ---- 6. executor: uv_queue_work on libuv's thread pool (UV_THREADPOOL_SIZE, default 4
   threads), 64 trivial jobs kept in flight ---- */
#define IN_FLIGHT 64
static long exec_total, exec_issued, exec_done;
static volatile long sink;
static void work_cb(uv_work_t *req) {
    sink += (long)(intptr_t)req->data; /* trivial */
}

static void after_work_cb(uv_work_t *req, int status) {
    (void)status;
    exec_done++;
    if (exec_issued < exec_total) {
        exec_issued++;
        uv_queue_work(req->loop, req, work_cb, after_work_cb);
    }
}

static void bench_executor(long n) {
    uv_loop_t *loop = uv_default_loop();
    static uv_work_t reqs[IN_FLIGHT];
    double t0;
    int i;
    exec_total = n;
    exec_issued = exec_done = 0;
    /* Start the pool outside the timing: the first uv_queue_work creates its threads. */
    uv_queue_work(loop, &reqs[0], work_cb, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    t0 = now_ns();
    for (i = 0; i < IN_FLIGHT && exec_issued < n; i++) {
        exec_issued++;
        uv_queue_work(loop, &reqs[i], work_cb, after_work_cb);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    t0 = (now_ns() - t0) / (double)exec_done;
    printf("RESULT executor %.3f\n", t0);
}

/* ---- 7. TCP echo server: reads into one shared 64 KiB buffer, writes back at once with
   uv_try_write; what does not fit is copied and queued with uv_write, and reading pauses until
   it is flushed (backpressure). ---- */
typedef struct conn {
    uv_tcp_t tcp;
    uv_write_t wreq;
    char *pending;
} conn;
static char rbuf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    buf->base = rbuf;
    buf->len = sizeof rbuf;
}

static void on_close(uv_handle_t *h) {
    conn *c = (conn *)h;
    free(c->pending);
    free(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
    conn *c = (conn *)req->data;
    free(c->pending);
    c->pending = NULL;
    if (status < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    conn *c = (conn *)s;
    uv_buf_t rest;
    int w;
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0) return;
    w = uv_try_write(s, &(uv_buf_t){buf->base, (size_t)n}, 1);
    if (w == n) return;
    if (w < 0) {
        if (w != UV_EAGAIN) {
            uv_close((uv_handle_t *)s, on_close);
            return;
        }
        w = 0;
    }
    c->pending = (char *)malloc((size_t)(n - w));
    memcpy(c->pending, buf->base + w, (size_t)(n - w));
    rest = uv_buf_init(c->pending, (unsigned)(n - w));
    c->wreq.data = c;
    uv_read_stop(s);
    uv_write(&c->wreq, s, &rest, 1, on_written);
}

static void on_connection(uv_stream_t *server, int status) {
    conn *c;
    if (status < 0) return;
    c = (conn *)calloc(1, sizeof *c);
    uv_tcp_init(server->loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    } else {
        uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}

static int echo_server(int port) {
    uv_loop_t *loop = uv_default_loop();
    static uv_tcp_t server;
    struct sockaddr_in addr;
    int len = sizeof addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", port, &addr);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) < 0 ||
        uv_listen((uv_stream_t *)&server, 4096, on_connection) < 0) {
        fprintf(stderr, "peer_libuv: listen failed\n");
        return 1;
    }
    uv_tcp_getsockname(&server, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}

int main(int argc, char **argv) {
    long n;
    if (argc < 3) {
        fprintf(stderr, "usage: peer_libuv WORKLOAD N | echo PORT\n");
        return 2;
    }
    n = atol(argv[2]);
    if (strcmp(argv[1], "dispatch") == 0) printf("RESULT dispatch %.3f\n", bench_dispatch(n));
    else if (strcmp(argv[1], "timers") == 0) bench_timers(n);
    else if (strcmp(argv[1], "tspost") == 0) bench_tspost(n);
    else if (strcmp(argv[1], "executor") == 0) bench_executor(n);
    else if (strcmp(argv[1], "echo") == 0) return echo_server((int)n);
    else {
        fprintf(stderr, "peer_libuv: unknown workload '%s'\n", argv[1]);
        return 2;
    }
    return 0;
}
