/* tour.c - evloop in one screen: a repeating timer, an I/O watcher on a pipe, and a worker
   thread that posts results back to the loop with evl_call_soon_threadsafe.

   Build and run: make build/examples/tour && ./build/examples/tour */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define JOBS 5

typedef struct demo {
    evl_loop *loop;
    evl_timer tick;
    evl_io reader;
    int pipe_fd[2];
    int ticks, results, lines;
} demo;

static evl_time demo_start; /* for the timestamps */

static double ms(evl_loop *loop) { return (double)(evl_now(loop) - demo_start) / 1e6; }

/* Once every result and every line is in, nothing is left to wait for. */
static void maybe_finish(evl_loop *loop, demo *d) {
    if (d->results < JOBS || d->lines < JOBS) return;
    printf("[%7.1f ms] all results and lines in: stopping the timer and the reader\n", ms(loop));
    evl_timer_stop(loop, &d->tick);
    evl_io_stop(loop, &d->reader);
    evl_loop_unref(loop); /* the worker is done: evl_run may finish now */
}

static void on_tick(evl_loop *loop, void *arg) {
    demo *d = (demo *)arg;
    printf("[%7.1f ms] timer: tick %d\n", ms(loop), ++d->ticks);
}

/* Runs on the loop thread, queued by the worker. */
static void on_result(evl_loop *loop, void *arg) {
    demo *d = (demo *)((void **)arg)[0];
    int value = (int)(intptr_t)((void **)arg)[1];
    printf("[%7.1f ms] loop thread: worker result %d (posted from another thread)\n", ms(loop), value);
    d->results++;
    maybe_finish(loop, d);
}

static void on_readable(evl_loop *loop, void *arg, int events) {
    demo *d = (demo *)arg;
    char buf[128];
    ssize_t n = read(d->pipe_fd[0], buf, sizeof buf - 1);
    (void)events;
    if (n <= 0) return;
    buf[n] = 0;
    printf("[%7.1f ms] I/O watcher: read %zd bytes: %s", ms(loop), n, buf);
    d->lines++;
    maybe_finish(loop, d);
}

/* The worker: pretends to compute, writes a line to the pipe and posts a result. */
static void *worker(void *arg) {
    demo *d = (demo *)arg;
    static void *posts[JOBS][2];
    int i;
    for (i = 0; i < JOBS; i++) {
        struct timespec pause = {0, 120 * 1000000};
        char line[64];
        int len;
        nanosleep(&pause, NULL);
        len = snprintf(line, sizeof line, "worker progress %d/%d\n", i + 1, JOBS);
        if (write(d->pipe_fd[1], line, (size_t)len) != len) return NULL;
        posts[i][0] = d;
        posts[i][1] = (void *)(intptr_t)(i * i);
        evl_call_soon_threadsafe(d->loop, on_result, posts[i]);
    }
    return NULL;
}

int main(void) {
    demo d;
    pthread_t thread;
    int err;
    memset(&d, 0, sizeof d);
    if ((err = evl_loop_new(&d.loop, NULL)) < 0) {
        fprintf(stderr, "evl_loop_new: %s\n", evl_strerror(err));
        return 1;
    }
    demo_start = evl_now(d.loop);
    printf("evloop %s on the %s backend\n", EVLOOP_VERSION, evl_backend_name(d.loop));
    if (pipe(d.pipe_fd) < 0) return 1;
    fcntl(d.pipe_fd[0], F_SETFL, O_NONBLOCK);

    evl_timer_init(&d.tick, on_tick, &d);
    evl_timer_start(d.loop, &d.tick, EVL_MSEC(100), EVL_MSEC(100));
    evl_io_init(&d.reader, d.pipe_fd[0], on_readable, &d);
    evl_io_start(d.loop, &d.reader, EVL_READ);

    evl_loop_ref(d.loop); /* a thread will post: keep evl_run alive until it is done */
    pthread_create(&thread, NULL, worker, &d);
    err = evl_run(d.loop);
    pthread_join(thread, NULL);

    printf("loop finished (%s): %d ticks, %d lines, %d results\n", evl_strerror(err), d.ticks,
           d.lines, d.results);
    evl_loop_close(d.loop);
    close(d.pipe_fd[0]);
    close(d.pipe_fd[1]);
    return d.results == JOBS && d.lines == JOBS && d.ticks >= 1 ? 0 : 1;
}
