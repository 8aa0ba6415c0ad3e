/* check.h - the tiny test framework of evloop's C test programs.

   A test program defines each case as a function `static void name(void)`, lists them in a
   table `static const check_case cases[] = {{"name", name}, ...};` and ends with
   CHECK_MAIN(cases), a main that hands the table to check_main (test_tasks.c writes its own
   main around check_main instead, to keep a case out of the no-argument run). The harness
   (tests/programs.py, tests/harness.py) finds every tests/test_*.c, asks each program for its
   cases (--list) and runs each case as its own process once per backend (EVLOOP_BACKEND), so
   a crash or a hang fails one case only. A failed check prints where and why and exits 1. */
#ifndef EVL_TEST_CHECK_H
#define EVL_TEST_CHECK_H

#include "evloop.h"
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct check_case {
    const char *name;
    void (*fn)(void);
} check_case;

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);  \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

#define CHECK_EQ(a, b)                                                             \
    do {                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
        if (check_a_ != check_b_) {                                                \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n",   \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);               \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

#define CHECK_OK(call) CHECK_EQ((call), 0)

/* EVL_TEST_TIMEOUT_SCALE gives slow tools (valgrind) more time: upper time bounds scale. */
static inline double check_time_scale(void) {
    const char *s = getenv("EVL_TEST_TIMEOUT_SCALE");
    double v = s ? atof(s) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

static inline evl_time check_scaled(evl_time t) {
    return (evl_time)((double)t * check_time_scale());
}

/* How many times a repeated case repeats: `reduced` under a slow tool or emulator (a timeout
   scale above 1: Valgrind, qemu-user), where each round costs tens of times more, `full`
   otherwise (natively, and under the sanitizers). */
static inline int check_rounds(int full, int reduced) {
    return check_time_scale() > 1.0 ? reduced : full;
}

/* The entries of a directory, without "." and "..": /proc/self/fd counts open fds (the
   directory's own fd cancels out between two counts), /proc/self/task threads. */
static inline int check_dir_count(const char *path) {
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* The threads of this process, as /proc/self/task lists them. */
static inline int check_thread_count(void) {
    return check_dir_count("/proc/self/task");
}

static inline void *check_noop_thread(void *arg) {
    return arg;
}

/* The thread count a case compares against later: first one thread is created and joined,
   so a tool that starts a helper thread of its own with the first pthread_create
   (ThreadSanitizer) has it running before the count. */
static inline int check_thread_base(void) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, check_noop_thread, NULL) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    return check_thread_count();
}

/* Prints each thread's id, state and kernel wait channel: what a thread that did not leave
   was doing. */
static inline void check_dump_threads(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        char path[300], stat[512] = "", wchan[64] = "";
        FILE *f;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        if ((f = fopen(path, "r")) != NULL) {
            if (!fgets(stat, sizeof stat, f)) stat[0] = 0;
            fclose(f);
        }
        snprintf(path, sizeof path, "/proc/self/task/%s/wchan", e->d_name);
        if ((f = fopen(path, "r")) != NULL) {
            if (!fgets(wchan, sizeof wchan, f)) wchan[0] = 0;
            fclose(f);
        }
        fprintf(stderr, "  thread %s: wchan %s, stat %s", e->d_name, wchan, stat);
    }
    closedir(d);
}

/* Waits until no more than `base` threads exist: the detached threads a pool let go have
   left. Up to `seconds` (scaled); the executor and shutdown cases give 30: a thread that has
   finished its work can still wait seconds for a core on a loaded machine, which is not what
   they check. */
static inline void check_wait_threads_back_to(int base, int seconds) {
    struct timespec now, until, nap = {0, 1000000};
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(seconds * check_time_scale());
    for (;;) {
        if (check_thread_count() <= base) return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec) break;
        nanosleep(&nap, NULL);
    }
    fprintf(stderr, "%d threads, %d expected:\n", check_thread_count(), base);
    check_dump_threads();
    CHECK(check_thread_count() <= base);
}

/* SIGALRM handler of a case's hang watchdog: a hang fails fast with a message. */
static inline void check_on_alarm(int sig) {
    static const char msg[] = "watchdog: the case hung\n";
    ssize_t r;
    (void)sig;
    r = write(2, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

/* Arms the case's hang watchdog: `seconds` (scaled) from now the case fails with a message,
   fast, instead of the harness timing it out. */
static inline void check_watchdog(unsigned seconds) {
    signal(SIGALRM, check_on_alarm);
    alarm((unsigned)(seconds * check_time_scale()));
}

/* What a loop's exception handler saw: install check_exc_record with a check_exc_log as its
   ud. The first CHECK_EXC_MAX reports are kept; `calls` counts them all. */
#define CHECK_EXC_MAX 8
typedef struct check_exc_log {
    int calls;
    int error[CHECK_EXC_MAX];
    char message[CHECK_EXC_MAX][160];
    char task[CHECK_EXC_MAX][32];
} check_exc_log;

static inline void check_exc_record(evl_loop *loop, const evl_exception *e, void *ud) {
    check_exc_log *x = (check_exc_log *)ud;
    (void)loop;
    if (x->calls < CHECK_EXC_MAX) {
        x->error[x->calls] = e->error;
        snprintf(x->message[x->calls], sizeof x->message[0], "%s", e->message ? e->message : "");
        snprintf(x->task[x->calls], sizeof x->task[0], "%s", e->task_name ? e->task_name : "");
    }
    x->calls++;
}

/* How many kept reports contain `needle` in their message (and come from `task`, if given). */
static inline int check_exc_find(const check_exc_log *x, const char *needle, const char *task) {
    int i, found = 0;
    for (i = 0; i < x->calls && i < CHECK_EXC_MAX; i++)
        if (strstr(x->message[i], needle) && (!task || strcmp(x->task[i], task) == 0)) found++;
    return found;
}

/* A loop on the backend the harness chose through EVLOOP_BACKEND. */
static inline evl_loop *check_loop_new(void) {
    evl_loop *loop = NULL;
    CHECK_OK(evl_loop_new(&loop, NULL));
    return loop;
}

static inline void check_list_backends(void) {
    static const evl_backend kinds[] = {EVL_BACKEND_EPOLL, EVL_BACKEND_KQUEUE, EVL_BACKEND_POLL,
                                        EVL_BACKEND_SELECT};
    size_t i;
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        evl_config cfg;
        evl_loop *loop;
        evl_config_init(&cfg);
        cfg.backend = kinds[i];
        if (evl_loop_new(&loop, &cfg) == 0) {
            printf("%s\n", evl_backend_name(loop));
            evl_loop_close(loop);
        }
    }
}

/* --list: the case names; --backends: the backends this machine has; NAME: run one case;
   no argument: run them all. */
static inline int check_main(int argc, char **argv, const check_case *cases, size_t n) {
    size_t i;
    int found = 0;
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (i = 0; i < n; i++) printf("%s\n", cases[i].name);
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--backends") == 0) {
        check_list_backends();
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
        cases[i].fn();
        printf("ok %s\n", cases[i].name);
        fflush(stdout);
        found = 1;
    }
    if (!found) {
        fprintf(stderr, "no case named %s\n", argc > 1 ? argv[1] : "(none)");
        return 2;
    }
    return 0;
}

#define CHECK_MAIN(table) \
    int main(int argc, char **argv) { return check_main(argc, argv, table, sizeof table / sizeof table[0]); }

#endif
