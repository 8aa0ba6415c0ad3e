/* smoke.c - a small program that touches every part of evloop.h the build configuration keeps,
   checks the outcome and prints "smoke ok: <backend>". tests/compile_matrix.py builds it in
   every configuration of the compile matrix (C and C++, every EVL_NO_* switch, musl, the
   cross compilers) and runs it, so each configuration shows it works, not only that it
   compiles. Valid C99 and C++11, clean under the matrix's strictest warnings.

   SMOKE_EXTERN_IMPL: the implementation lives in another translation unit (impl.c).
   SMOKE_PEER: another translation unit (peer.c) provides smoke_peer(), which runs a loop of
   its own private copy of the library (the EVLOOP_STATIC case). */
#ifndef SMOKE_EXTERN_IMPL
#define EVLOOP_IMPLEMENTATION
#endif
#include "evloop.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#ifndef EVL_NO_THREADS
#include <pthread.h>
#endif

#define SMOKE_CHECK(c)                                                         \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "smoke.c:%d: check failed: %s\n", __LINE__, #c);  \
            return 1;                                                          \
        }                                                                      \
    } while (0)

#ifdef SMOKE_PEER
int smoke_peer(void);
#endif

/* What the callbacks saw; main checks it after the loop ran. */
typedef struct smoke_state {
    evl_loop *loop;
    int soon_calls;
    int timer_fires;
    int io_bytes;
    int posted;
    int signalled;
    int task_read;
    int work_done;
    evl_timer repeat;
    evl_io reader;
    int io_fds[2];
    int task_fds[2];
#ifndef EVL_NO_SIGNALS
    evl_signal usr1;
#endif
} smoke_state;

static void on_soon(evl_loop *loop, void *arg) {
    (void)loop;
    ((smoke_state *)arg)->soon_calls++;
}

/* Stops itself after the third tick, so the loop runs out of work. */
static void on_repeat(evl_loop *loop, void *arg) {
    smoke_state *s = (smoke_state *)arg;
    if (++s->timer_fires == 3) evl_timer_stop(loop, &s->repeat);
}

static void on_readable(evl_loop *loop, void *arg, int events) {
    smoke_state *s = (smoke_state *)arg;
    char buf[16];
    ssize_t n = read(s->io_fds[0], buf, sizeof buf);
    if ((events & EVL_READ) && n > 0) s->io_bytes += (int)n;
    evl_io_stop(loop, &s->reader);
}

#ifndef EVL_NO_THREADS
/* The post holds the loop open (evl_loop_ref) until it arrives. */
static void on_posted(evl_loop *loop, void *arg) {
    ((smoke_state *)arg)->posted = 1;
    evl_loop_unref(loop);
}

static void *post_from_thread(void *arg) {
    smoke_state *s = (smoke_state *)arg;
    if (evl_call_soon_threadsafe(s->loop, on_posted, s) != 0) s->posted = -1;
    return NULL;
}
#endif

#ifndef EVL_NO_SIGNALS
static void on_usr1(evl_loop *loop, void *arg) {
    smoke_state *s = (smoke_state *)arg;
    s->signalled++;
    evl_signal_stop(loop, &s->usr1);
}
#endif

#ifndef EVL_NO_TASKS
#ifndef EVL_NO_THREADS
static void *executor_work(void *arg) {
    return arg;
}
#endif

/* Sleeps, reads what main wrote (suspending until it is there), runs a job on the executor. */
static int smoke_task(evl_loop *loop, void *arg) {
    smoke_state *s = (smoke_state *)arg;
    char buf[16];
    ssize_t n;
    if (evl_sleep(loop, EVL_MSEC(1)) != 0) return -1;
    n = evl_read(loop, s->task_fds[0], buf, sizeof buf);
    if (n < 0) return (int)n;
    s->task_read = (int)n;
#ifndef EVL_NO_THREADS
    {
        void *result = NULL;
        int rc = evl_executor_run(loop, executor_work, s, &result);
        if (rc != 0) return rc;
        s->work_done = result == (void *)s;
    }
#endif
    return 7;
}
#endif

/* A build without epoll must say so, not fall back silently. */
static int check_backend_switches(void) {
#if defined(EVL_NO_EPOLL) && defined(__linux__)
    evl_config cfg;
    evl_loop *loop = NULL;
    evl_config_init(&cfg);
    cfg.backend = EVL_BACKEND_EPOLL;
    SMOKE_CHECK(evl_loop_new(&loop, &cfg) == -ENOSYS);
#endif
    return 0;
}

int main(void) {
    smoke_state s;
    evl_loop *loop;
#ifndef EVL_NO_THREADS
    pthread_t poster;
#endif
#ifndef EVL_NO_TASKS
    evl_task *task = NULL;
    int task_result = 0;
#endif
    memset(&s, 0, sizeof s);
    SMOKE_CHECK(check_backend_switches() == 0);
    SMOKE_CHECK(evl_loop_new(&loop, NULL) == 0);
    s.loop = loop;
    SMOKE_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, s.io_fds) == 0);
    SMOKE_CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, s.task_fds) == 0);

    SMOKE_CHECK(evl_call_soon(loop, on_soon, &s) == 0);
    evl_timer_init(&s.repeat, on_repeat, &s);
    SMOKE_CHECK(evl_timer_start(loop, &s.repeat, EVL_MSEC(1), EVL_MSEC(1)) == 0);
    evl_io_init(&s.reader, s.io_fds[0], on_readable, &s);
    SMOKE_CHECK(evl_io_start(loop, &s.reader, EVL_READ) == 0);
    SMOKE_CHECK(write(s.io_fds[1], "abc", 3) == 3);
#ifndef EVL_NO_SIGNALS
    evl_signal_init(&s.usr1, SIGUSR1, on_usr1, &s);
    SMOKE_CHECK(evl_signal_start(loop, &s.usr1) == 0);
    SMOKE_CHECK(raise(SIGUSR1) == 0);
#endif
#ifndef EVL_NO_TASKS
    SMOKE_CHECK(evl_task_spawn(loop, &task, smoke_task, &s, NULL) == 0);
    SMOKE_CHECK(write(s.task_fds[1], "hello", 5) == 5);
#endif
#ifndef EVL_NO_THREADS
    evl_loop_ref(loop);
    SMOKE_CHECK(pthread_create(&poster, NULL, post_from_thread, &s) == 0);
#endif

    SMOKE_CHECK(evl_run(loop) == 0);

#ifndef EVL_NO_THREADS
    SMOKE_CHECK(pthread_join(poster, NULL) == 0);
    SMOKE_CHECK(s.posted == 1);
#endif
#ifndef EVL_NO_TASKS
    SMOKE_CHECK(evl_task_join(loop, task, &task_result) == 0);
    SMOKE_CHECK(task_result == 7);
    SMOKE_CHECK(s.task_read == 5);
#ifndef EVL_NO_THREADS
    SMOKE_CHECK(s.work_done == 1);
#endif
#endif
#ifndef EVL_NO_SIGNALS
    SMOKE_CHECK(s.signalled == 1);
#endif
    SMOKE_CHECK(s.soon_calls == 1);
    SMOKE_CHECK(s.timer_fires == 3);
    SMOKE_CHECK(s.io_bytes == 3);
    printf("smoke ok: %s\n", evl_backend_name(loop));
    SMOKE_CHECK(evl_loop_close(loop) == 0);
#ifdef SMOKE_PEER
    SMOKE_CHECK(smoke_peer() == 0);
#endif
    return 0;
}
