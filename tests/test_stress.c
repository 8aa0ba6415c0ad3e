/* test_stress.c - the stress cases of issue 8: bounded in time and count, exact in outcome.

   Each case runs at a reduced size by default (a few seconds per case per backend, for
   `make test` and the sanitizer runs) and at the full size when EVL_STRESS=full is set (CI's
   stress stage, and the figures quoted in the README). Every case prints its figures as one
   line starting with "figures:" so a run can be quoted as it is. */
#define EVLOOP_IMPLEMENTATION
#include "check.h"

#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

/* ---- sizes, time, watchdog, resource counts ---- */

/* Which sanitizer this build runs under: a few sizes and cases depend on it. */
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define STRESS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STRESS_TSAN 1
#endif
#endif
#ifndef STRESS_ASAN
#define STRESS_ASAN 0
#endif
#ifndef STRESS_TSAN
#define STRESS_TSAN 0
#endif

/* Under Valgrind (or an emulator) the harness scales the timeouts. */
#define STRESS_SLOW_TOOL (check_time_scale() > 1.0)

static int stress_full(void) {
    const char *s = getenv("EVL_STRESS");
    return s && strcmp(s, "full") == 0;
}

/* The full size under EVL_STRESS=full, else the reduced one. */
static unsigned long stress_size(unsigned long full, unsigned long reduced) {
    return stress_full() ? full : reduced;
}

static double mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ns(long ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A hang fails the case with a message before the harness's own timeout kills it. */
static void watchdog_start(unsigned seconds) {
    signal(SIGALRM, check_on_alarm);
    alarm((unsigned)((double)seconds * check_time_scale()) * (stress_full() ? 3u : 1u));
}

/* A line of /proc/self/status as a number ("VmHWM", "Threads"), or -1. */
static long proc_status(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t len = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0 && line[len] == ':') v = atol(line + len + 1);
    fclose(f);
    return v;
}

/* Kernel memory mappings of this process (what vm.max_map_count limits). */
static long map_count(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    if (!f) return -1;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n') n++;
    fclose(f);
    return n;
}

static void *threads_nothing(void *arg) {
    return arg;
}

/* The threads of the process before a case starts any. A thread is started and joined first,
   so a sanitizer's background thread (started with the first thread) is counted in. */
static long threads_baseline(void) {
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, threads_nothing, NULL), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
    return proc_status("Threads");
}

static pthread_t start_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static void join_thread(pthread_t t) {
    CHECK_EQ(pthread_join(t, NULL), 0);
}

/* ==== 1. thread-safe posts: 8 threads, exactly once, per-thread FIFO ==== */

/* A post's argument: the producer's id above SEQ_BITS, its sequence number below. 28 bits
   hold a million posts and leave room for the id where uintptr_t has 32 bits. */
#define SEQ_BITS 28
#define SEQ_MASK (((uintptr_t)1 << SEQ_BITS) - 1)
#define POST_THREADS 8

static struct {
    evl_loop *loop;
    unsigned long per_thread;
    unsigned long next[POST_THREADS]; /* loop thread: the sequence expected next */
    unsigned long total;              /* loop thread */
} posts;

static void posts_cb(evl_loop *loop, void *arg) {
    unsigned id = (unsigned)((uintptr_t)arg >> SEQ_BITS);
    unsigned long seq = (unsigned long)((uintptr_t)arg & SEQ_MASK);
    CHECK(loop == posts.loop);
    CHECK(id < POST_THREADS);
    /* Exactly the previous + 1: a gap is a lost post, a repeat a double run, a smaller number a
       reordering. */
    CHECK_EQ(seq, posts.next[id]);
    posts.next[id]++;
    if (++posts.total == POST_THREADS * posts.per_thread) evl_loop_unref(loop);
}

static void *posts_producer(void *p) {
    unsigned id = (unsigned)(uintptr_t)p;
    unsigned long i;
    for (i = 0; i < posts.per_thread; i++)
        CHECK_OK(evl_call_soon_threadsafe(posts.loop, posts_cb,
                                          (void *)(((uintptr_t)id << SEQ_BITS) | (uintptr_t)i)));
    return NULL;
}

static void posts_8_threads_exactly_once(void) {
    pthread_t threads[POST_THREADS];
    unsigned i;
    double t0, secs;
    watchdog_start(120);
    memset(&posts, 0, sizeof posts);
    posts.per_thread = stress_size(1000000UL, 100000UL);
    posts.loop = check_loop_new();
    /* The producers post to a loop with nothing else to wait for: the hold keeps it running
       until the last post has run (its callback drops the hold). */
    evl_loop_ref(posts.loop);
    t0 = mono_seconds();
    for (i = 0; i < POST_THREADS; i++)
        threads[i] = start_thread(posts_producer, (void *)(uintptr_t)i);
    CHECK_OK(evl_run(posts.loop));
    secs = mono_seconds() - t0;
    for (i = 0; i < POST_THREADS; i++) join_thread(threads[i]);
    CHECK_EQ(posts.total, POST_THREADS * posts.per_thread);
    for (i = 0; i < POST_THREADS; i++) CHECK_EQ(posts.next[i], posts.per_thread);
    /* Nothing was left behind or run twice: a last iteration finds no work. */
    CHECK_EQ(evl_run_once(posts.loop, 0), 0);
    CHECK_EQ(posts.total, POST_THREADS * posts.per_thread);
    printf("figures: %s: posts %d threads x %lu = %lu in %.2f s (%.2f M/s), exact, per-thread FIFO\n",
           evl_backend_name(posts.loop), POST_THREADS, posts.per_thread, posts.total, secs,
           (double)posts.total / secs / 1e6);
    CHECK_OK(evl_loop_close(posts.loop));
}

/* ==== 2. many concurrent loopback connections on one loop ==== */

/* The client ends live in a forked child, so each process holds one end of every connection
   and both stay under RLIMIT_NOFILE (20 000 here: 10 000 connections need 20 000 fds for both
   ends in one process). The child connects every client first, then writes one message on
   each, then reads every echo back: so all connections are open at once on the loop's side. */
#define CONN_MSG 64

typedef struct conn {
    evl_io io;
    int fd;
    size_t got;
    int echoed;
    char buf[CONN_MSG];
} conn;

static struct {
    evl_loop *loop;
    evl_io listener, child_gone;
    int listen_fd;
    conn *conns;
    size_t n, accepted, open, max_open, exchanged, closed;
    size_t early_eofs; /* connections the client closed before it had its echo */
} cs;

static void conn_message(char *buf, size_t i) {
    memset(buf, '.', CONN_MSG);
    snprintf(buf, CONN_MSG, "connection %zu says hello", i);
}

static int read_full(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const char *buf, size_t len) {
    size_t put = 0;
    while (put < len) {
        ssize_t n = write(fd, buf + put, len - put);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        put += (size_t)n;
    }
    return 0;
}

/* The child: plain blocking sockets. Its exit code says which step failed. */
static int conn_clients(int port, size_t n) {
    struct sockaddr_in sa;
    int *fds = (int *)calloc(n, sizeof *fds);
    char msg[CONN_MSG], echo[CONN_MSG];
    size_t i;
    if (!fds) return 10;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) return 11;
        if (connect(fds[i], (struct sockaddr *)&sa, sizeof sa) < 0) return 12;
    }
    for (i = 0; i < n; i++) {
        conn_message(msg, i);
        if (write_full(fds[i], msg, CONN_MSG) < 0) return 13;
    }
    for (i = 0; i < n; i++) {
        conn_message(msg, i);
        if (read_full(fds[i], echo, CONN_MSG) < 0) return 14;
        if (memcmp(msg, echo, CONN_MSG) != 0) return 15;
    }
    for (i = 0; i < n; i++) close(fds[i]);
    free(fds);
    return 0;
}

static void conn_close(evl_loop *loop, conn *c) {
    CHECK_OK(evl_io_stop(loop, &c->io));
    close(c->fd);
    cs.open--;
    if (++cs.closed == cs.n) {
        CHECK_OK(evl_io_stop(loop, &cs.listener));
        CHECK_OK(evl_io_stop(loop, &cs.child_gone));
    }
}

/* Reads the client's message and echoes it once it is whole; end of file closes. */
static void conn_cb(evl_loop *loop, void *arg, int events) {
    conn *c = (conn *)arg;
    char scratch[CONN_MSG];
    ssize_t n;
    CHECK(events & EVL_READ);
    if (c->got < CONN_MSG) n = read(c->fd, c->buf + c->got, CONN_MSG - c->got);
    else n = read(c->fd, scratch, sizeof scratch);
    if (n < 0) {
        CHECK(errno == EAGAIN || errno == EINTR);
        return;
    }
    if (n == 0) {
        if (!c->echoed) cs.early_eofs++; /* the client failed: its exit code says why */
        conn_close(loop, c);
        return;
    }
    CHECK(c->got < CONN_MSG); /* the client sends one message and no more */
    c->got += (size_t)n;
    if (c->got == CONN_MSG) {
        /* 64 bytes into an empty socket buffer: written whole at once. */
        CHECK_EQ(write(c->fd, c->buf, CONN_MSG), CONN_MSG);
        c->echoed = 1;
        cs.exchanged++;
    }
}

static void conn_accept_cb(evl_loop *loop, void *arg, int events) {
    (void)arg;
    CHECK(events & EVL_READ);
    for (;;) {
        int fd = accept4(cs.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        conn *c;
        if (fd < 0) {
            CHECK(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                  errno == ECONNABORTED);
            return;
        }
        CHECK(cs.accepted < cs.n);
        c = &cs.conns[cs.accepted++];
        c->fd = fd;
        evl_io_init(&c->io, fd, conn_cb, c);
        CHECK_OK(evl_io_start(loop, &c->io, EVL_READ));
        if (++cs.open > cs.max_open) cs.max_open = cs.open;
    }
}

/* The child's end of the pipe closes when it exits. No connection can come after that, so
   the listener stops: if the child failed half way, the loop then ends once the connections
   it made have closed, instead of waiting for ever for the others. */
static void conn_child_gone_cb(evl_loop *loop, void *arg, int events) {
    (void)arg;
    (void)events;
    CHECK_OK(evl_io_stop(loop, &cs.child_gone));
    CHECK_OK(evl_io_stop(loop, &cs.listener));
}

/* Raises the soft fd limit to the hard one; returns the limit now in force. */
static size_t fd_limit_raise(void) {
    struct rlimit rl;
    CHECK_OK(getrlimit(RLIMIT_NOFILE, &rl));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl));
    }
    return rl.rlim_cur == RLIM_INFINITY ? (size_t)1 << 20 : (size_t)rl.rlim_cur;
}

static int listen_loopback(void) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa));
    CHECK_OK(listen(fd, 4096));
    CHECK_OK(getsockname(fd, (struct sockaddr *)&sa, &len));
    return fd;
}

/* select cannot watch an fd >= FD_SETSIZE: the manual promises -ERANGE from evl_io_start, and
   the watcher stays inactive. */
static void select_refuses_high_fd(evl_loop *loop) {
    int p[2], high;
    evl_io w;
    CHECK_OK(pipe2(p, O_CLOEXEC));
    high = fcntl(p[0], F_DUPFD_CLOEXEC, FD_SETSIZE + 10);
    CHECK(high >= FD_SETSIZE);
    evl_io_init(&w, high, conn_cb, NULL);
    CHECK_EQ(evl_io_start(loop, &w, EVL_READ), -ERANGE);
    CHECK(!evl_io_active(&w));
    close(high);
    close(p[0]);
    close(p[1]);
}

static pid_t conn_fork_clients(int port, int gone_pipe[2]) {
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(cs.listen_fd);
        close(gone_pipe[0]);
        alarm(0);
        _exit(conn_clients(port, cs.n));
    }
    close(gone_pipe[1]);
    return pid;
}

static int loopback_port(int fd) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    CHECK_OK(getsockname(fd, (struct sockaddr *)&sa, &len));
    return ntohs(sa.sin_port);
}

static void connections_10000_on_one_loop(void) {
    int fds_before, gone[2], status, is_select;
    size_t limit;
    pid_t child;
    double t0, secs;
    watchdog_start(120);
    memset(&cs, 0, sizeof cs);
    limit = fd_limit_raise();
    cs.n = stress_size(10000UL, 2000UL);
    /* The loop's side needs one fd per connection plus a few of its own. */
    if (cs.n > limit - 64) cs.n = limit - 64;
    {
        /* Which backend EVLOOP_BACKEND chose decides the size: select stays under FD_SETSIZE. */
        evl_loop *probe = check_loop_new();
        is_select = strcmp(evl_backend_name(probe), "select") == 0;
        CHECK_OK(evl_loop_close(probe));
    }
    if (is_select) cs.n = 900;
    fds_before = check_dir_count("/proc/self/fd");
    cs.conns = (conn *)calloc(cs.n, sizeof *cs.conns);
    CHECK(cs.conns != NULL);
    cs.listen_fd = listen_loopback();
    CHECK_OK(pipe2(gone, O_CLOEXEC));
    /* Fork before the loop exists: the child runs plain blocking code and owns nothing of it. */
    t0 = mono_seconds();
    child = conn_fork_clients(loopback_port(cs.listen_fd), gone);
    cs.loop = check_loop_new();
    if (is_select) select_refuses_high_fd(cs.loop);
    evl_io_init(&cs.listener, cs.listen_fd, conn_accept_cb, NULL);
    CHECK_OK(evl_io_start(cs.loop, &cs.listener, EVL_READ));
    evl_io_init(&cs.child_gone, gone[0], conn_child_gone_cb, NULL);
    CHECK_OK(evl_io_start(cs.loop, &cs.child_gone, EVL_READ));
    CHECK_OK(evl_run(cs.loop));
    secs = mono_seconds() - t0;
    CHECK_EQ(waitpid(child, &status, 0), child);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "client child failed: status 0x%x (exit codes: 11 socket, 12 connect, "
                "13 write, 14 read, 15 wrong echo)\n", (unsigned)status);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ(cs.early_eofs, 0);
    CHECK_EQ(cs.accepted, cs.n);
    CHECK_EQ(cs.max_open, cs.n); /* all of them were open at once */
    CHECK_EQ(cs.exchanged, cs.n);
    CHECK_EQ(cs.closed, cs.n);
    printf("figures: %s: %zu concurrent loopback connections on one loop (client ends in a "
           "child), all exchanged 64 B and closed in %.2f s%s\n",
           evl_backend_name(cs.loop), cs.n, secs,
           is_select ? "; select: reduced to stay under FD_SETSIZE, an fd >= FD_SETSIZE is -ERANGE" : "");
    CHECK_OK(evl_loop_close(cs.loop));
    close(cs.listen_fd);
    close(gone[0]);
    free(cs.conns);
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
}

/* ==== 3. a million concurrent tasks, 100 000 joined in a burst, and the limits ==== */

static struct {
    evl_event *go;
    size_t n, started, finished;
    size_t alive_at_peak;
} ts;

/* Every task waits on one event, so all are alive at once; the last to start sets it. */
static int task_wait_all(evl_loop *loop, void *arg) {
    size_t idx = (size_t)(uintptr_t)arg;
    if (++ts.started == ts.n) {
        evl_stats st;
        evl_loop_stats(loop, &st);
        ts.alive_at_peak = st.tasks_alive;
        evl_event_set(loop, ts.go);
    } else {
        CHECK_OK(evl_event_wait(loop, ts.go));
    }
    ts.finished++;
    return (int)(idx % 1000);
}

/* Whether this kernel has guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13+), asked the
   way the library asks: the kernel must refuse to read a guarded page. EVLOOP_STACK_GUARD=
   mprotect makes the library use guard mappings even so. */
static int kernel_has_guard_regions(void) {
    const char *env = getenv("EVLOOP_STACK_GUARD");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *m;
    int p[2], yes = 0;
    if (env && strcmp(env, "mprotect") == 0) return 0;
    m = (unsigned char *)mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0);
    CHECK(m != MAP_FAILED);
    if (madvise(m, page, 102) == 0) {
        CHECK_EQ(pipe(p), 0);
        yes = write(p[1], m, 1) < 0 && errno == EFAULT;
        close(p[0]);
        close(p[1]);
    }
    munmap(m, page);
    return yes;
}

/* The default config runs a million guarded tasks at once: the stacks are carved from slabs
   and guarded with guard regions, so the mappings stay a few dozen where a mapping per stack
   would pass vm.max_map_count (65530) at about 32 000 tasks. Without guard regions the case
   turns guards off, as the manual advises there. */
static void tasks_1000000_concurrent(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_task **tasks;
    size_t i;
    int fds_before = check_dir_count("/proc/self/fd");
    int regions = kernel_has_guard_regions();
    double t0, t_spawned, t_done;
    long maps_before = map_count(), maps_peak, rss_before = proc_status("VmRSS");
    watchdog_start(120);
    memset(&ts, 0, sizeof ts);
    ts.n = stress_size(1000000UL, 100000UL);
    /* TSan counts every task as a thread (a fiber) and dies past 8128 of them; each one also
       costs it some 6 ms and 0.8 MiB to create here. */
    if (STRESS_TSAN) ts.n = 500;
    evl_config_init(&cfg);
    if (!regions) cfg.stack_guard = -1;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_OK(evl_event_new(loop, &ts.go));
    tasks = (evl_task **)calloc(ts.n, sizeof *tasks);
    CHECK(tasks != NULL);
    t0 = mono_seconds();
    for (i = 0; i < ts.n; i++)
        CHECK_OK(evl_task_spawn(loop, &tasks[i], task_wait_all, (void *)(uintptr_t)i, NULL));
    t_spawned = mono_seconds();
    maps_peak = map_count();
    /* A slab holds up to 496 default stacks: a mapping per stack would be ts.n or more.
       (TSan maps memory for each fiber, the sanitizers' allocators for themselves.) */
    if (!STRESS_ASAN && !STRESS_TSAN) CHECK(maps_peak - maps_before < 64 + (long)(ts.n / 400));
    CHECK_OK(evl_run(loop));
    t_done = mono_seconds();
    CHECK_EQ(ts.started, ts.n);
    CHECK_EQ(ts.finished, ts.n);
    CHECK_EQ(ts.alive_at_peak, ts.n);
    for (i = 0; i < ts.n; i++) {
        int result = -1;
        CHECK(evl_task_done(tasks[i]));
        CHECK_OK(evl_task_join(loop, tasks[i], &result));
        CHECK_EQ(result, (int)(i % 1000));
    }
    printf("figures: %s: %zu concurrent tasks (%s): spawned in %.2f s, all waiting then woken "
           "and joined in %.2f s; %ld more mappings at the peak, peak RSS %ld MiB (%ld B a "
           "task)\n", evl_backend_name(loop), ts.n,
           regions ? "guard regions" : "no guard regions in this kernel: stack_guard -1",
           t_spawned - t0, t_done - t_spawned, maps_peak - maps_before,
           proc_status("VmHWM") / 1024, (proc_status("VmHWM") - rss_before) * 1024 / (long)ts.n);
    evl_event_free(loop, ts.go);
    CHECK_OK(evl_loop_close(loop));
    free(tasks);
    /* (The sanitizers' allocators, and Valgrind's, map memory of their own.) */
    if (!STRESS_ASAN && !STRESS_TSAN && !STRESS_SLOW_TOOL) CHECK(map_count() <= maps_before + 2);
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
}

static int task_return_index(evl_loop *loop, void *arg) {
    (void)loop;
    return (int)((uintptr_t)arg % 1000);
}

/* 100 000 joinable tasks spawned in one burst (what an asyncio user writes without thinking),
   then joined; with the default config, under the sanitizers too. The memory comes back:
   after the joins the process holds far less than at the peak. */
static void tasks_100000_joinable_burst(void) {
    evl_loop *loop = check_loop_new();
    evl_task **tasks;
    size_t n = STRESS_TSAN ? 500 : 100000, i;
    long maps_before = map_count(), rss_before = proc_status("VmRSS"), rss_peak, rss_after;
    double t0, t_spawned, t_joined;
    watchdog_start(120);
    tasks = (evl_task **)calloc(n, sizeof *tasks);
    CHECK(tasks != NULL);
    t0 = mono_seconds();
    for (i = 0; i < n; i++)
        CHECK_OK(evl_task_spawn(loop, &tasks[i], task_return_index, (void *)(uintptr_t)i, NULL));
    t_spawned = mono_seconds();
    rss_peak = proc_status("VmRSS"); /* each stack holds the page its first frame is on */
    CHECK_OK(evl_run(loop));
    for (i = 0; i < n; i++) {
        int result = -1;
        CHECK_OK(evl_task_join(loop, tasks[i], &result));
        CHECK_EQ(result, (int)(i % 1000));
    }
    t_joined = mono_seconds();
    rss_after = proc_status("VmRSS");
    printf("figures: %s: %zu joinable tasks spawned in %.2f s, run and joined in %.2f s; RSS "
           "%ld MiB more at the peak, %ld MiB more after the joins; %ld more mappings\n",
           evl_backend_name(loop), n, t_spawned - t0, t_joined - t_spawned,
           (rss_peak - rss_before) / 1024, (rss_after - rss_before) / 1024,
           map_count() - maps_before);
    /* The stacks past the pool of free ones are discarded as their tasks end (the sanitizers
       keep shadow memory of their own, and TSan's burst is too small to tell). */
    if (!STRESS_ASAN && !STRESS_TSAN) CHECK(rss_after - rss_before < (rss_peak - rss_before) / 2);
    CHECK_OK(evl_loop_close(loop));
    free(tasks);
    /* (The sanitizers' allocators, and Valgrind's, map memory of their own.) */
    if (!STRESS_ASAN && !STRESS_TSAN && !STRESS_SLOW_TOOL) CHECK(map_count() <= maps_before + 2);
}

static int task_return_zero(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    return 0;
}

static long max_map_count(void) {
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = -1;
    if (!f) return -1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

static int limit_warnings;

static void limit_log(int level, const char *message, void *ud) {
    (void)ud;
    if (level == EVL_LOG_WARN && strstr(message, "could not be mapped")) limit_warnings++;
}

/* Without guard regions (older kernels; EVLOOP_STACK_GUARD=mprotect forces it here) each
   guarded stack has two mappings, and spawning past vm.max_map_count fails with -ENOMEM (the
   manual's promise): the tasks already spawned still run and join, the limit is named once,
   and the loop spawns again once they are gone. */
static void tasks_past_map_limit_fail_cleanly(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_task **tasks;
    long limit = max_map_count();
    size_t cap, n = 0, i;
    int err = 0;
    evl_task *again;
    watchdog_start(120);
    CHECK_EQ(setenv("EVLOOP_STACK_GUARD", "mprotect", 1), 0);
    evl_config_init(&cfg);
    cfg.log = limit_log;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    /* A sanitizer's own allocator maps memory too, and aborts ("Failed to mmap") once the
       process is at vm.max_map_count: the case cannot run under one. */
    if (STRESS_ASAN || STRESS_TSAN) {
        printf("figures: %s: the map limit case does not run under a sanitizer (its allocator "
               "aborts at the limit)\n", evl_backend_name(loop));
        CHECK_OK(evl_loop_close(loop));
        return;
    }
    if (limit < 0 || limit > 300000) {
        /* Reaching a larger limit would take too long and too much memory for a test. */
        printf("figures: %s: vm.max_map_count is %ld: the limit case needs it <= 300000, not run\n",
               evl_backend_name(loop), limit);
        CHECK_OK(evl_loop_close(loop));
        return;
    }
    cap = (size_t)limit; /* two mappings per task: the spawns fail well before this many */
    tasks = (evl_task **)calloc(cap, sizeof *tasks);
    CHECK(tasks != NULL);
    while (n < cap && (err = evl_task_spawn(loop, &tasks[n], task_return_zero, NULL, NULL)) == 0)
        n++;
    CHECK_EQ(err, -ENOMEM);
    CHECK(tasks[n] == NULL);
    /* Two mappings per guarded stack: the failure comes at about half the limit. */
    CHECK((long)n <= limit / 2);
    CHECK((long)n >= limit / 4);
    CHECK_EQ(evl_task_spawn(loop, &tasks[n], task_return_zero, NULL, NULL), -ENOMEM);
    CHECK_EQ(limit_warnings, 1);
    printf("figures: %s: with guard mappings, spawn %zu failed with %s (vm.max_map_count %ld, "
           "%ld mappings)\n", evl_backend_name(loop), n + 1, evl_strerror(err), limit, map_count());
    CHECK_OK(evl_run(loop));
    for (i = 0; i < n; i++) {
        int result = -1;
        CHECK_OK(evl_task_join(loop, tasks[i], &result));
        CHECK_EQ(result, 0);
    }
    CHECK_OK(evl_task_spawn(loop, &again, task_return_zero, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, again, NULL));
    CHECK_OK(evl_loop_close(loop));
    free(tasks);
}

static void limit_timer_cb(evl_loop *loop, void *arg) {
    (void)loop;
    ++*(int *)arg;
}

static int limit_future_waiter(evl_loop *loop, void *arg) {
    void *value = NULL;
    int err = evl_future_await(loop, (evl_future *)arg, &value);
    return err < 0 ? err : (int)(uintptr_t)value;
}

/* When the address space runs out (here a lowered RLIMIT_AS), spawn fails with -ENOMEM, the
   limit is named once, and nothing else fails: a timer started after the failure fires, a
   future set then wakes the task awaiting it, every task spawned runs and joins, and spawning
   works again once stacks come back. */
static void tasks_past_address_limit_fail_cleanly(void) {
    evl_config cfg;
    evl_loop *loop;
    evl_task **tasks, *waiter;
    evl_future *f;
    evl_timer timer;
    struct rlimit old, low;
    size_t cap = 200000, n = 0, i;
    int err = 0, fired = 0, result = -1;
    watchdog_start(120);
    if (STRESS_ASAN || STRESS_TSAN) {
        /* The sanitizers reserve terabytes of shadow memory: a lowered RLIMIT_AS stops them. */
        printf("figures: the address limit case does not run under a sanitizer\n");
        return;
    }
    evl_config_init(&cfg);
    cfg.log = limit_log;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    tasks = (evl_task **)calloc(cap, sizeof *tasks);
    CHECK(tasks != NULL);
    CHECK_OK(evl_future_new(loop, &f));
    CHECK_OK(evl_task_spawn(loop, &waiter, limit_future_waiter, f, NULL));
    CHECK_EQ(getrlimit(RLIMIT_AS, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)proc_status("VmSize") * 1024 + ((rlim_t)256 << 20);
    CHECK_EQ(setrlimit(RLIMIT_AS, &low), 0);
    while (n < cap && (err = evl_task_spawn(loop, &tasks[n], task_return_zero, NULL, NULL)) == 0)
        n++;
    CHECK_EQ(err, -ENOMEM);
    CHECK(n > 100);
    CHECK_EQ(evl_task_spawn(loop, &tasks[n], task_return_zero, NULL, NULL), -ENOMEM);
    CHECK_EQ(limit_warnings, 1);
    evl_timer_init(&timer, limit_timer_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &timer, EVL_MSEC(1), 0));
    CHECK_OK(evl_future_set(loop, f, 0, (void *)(uintptr_t)7));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fired, 1);
    CHECK_OK(evl_task_join(loop, waiter, &result));
    CHECK_EQ(result, 7);
    for (i = 0; i < n; i++) CHECK_OK(evl_task_join(loop, tasks[i], NULL));
    printf("figures: %s: with RLIMIT_AS 256 MiB above the start, spawn %zu failed with %s; the "
           "timer, the future and every task spawned before it worked\n",
           evl_backend_name(loop), n + 1, evl_strerror(err));
    CHECK_OK(evl_task_spawn(loop, &tasks[0], task_return_zero, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, tasks[0], NULL));
    CHECK_EQ(setrlimit(RLIMIT_AS, &old), 0);
    evl_future_free(loop, f);
    CHECK_OK(evl_loop_close(loop));
    free(tasks);
}

/* ==== 4. close and reopen the same fd number inside callbacks, no stale event ==== */

/* REUSE_SLOTS pipes are made readable together, so the backend reports all of them in one
   iteration. Each callback that runs closes its own pipe and, when its event is pending in
   this same iteration, the next slot's; puts new pipes on the very same fd numbers, and
   watches them while they stay empty for a whole iteration: a stale event delivered to a new
   watcher finds its fd unreadable and fails the case. The old pipes are kept alive under
   other numbers and made readable again, so a registration the backend kept for the old file
   shows up too (on epoll such an event is recognised and the epoll set rebuilt: 5000 rebuilds
   in the reduced run, one per round, all without a stale delivery). */
#define REUSE_SLOTS 4
#define REUSE_KEEP_MIN 64 /* where the old pipes are kept: above every slot's fd, below FD_SETSIZE */

typedef struct reuse_slot {
    int r, w;
    int armed; /* a byte was written to the current pipe and not yet read */
    evl_io io;
} reuse_slot;

static struct {
    reuse_slot slot[REUSE_SLOTS];
    int kept[2 * REUSE_SLOTS]; /* the old pipes of this round, closed at the next arm */
    int nkept;
    unsigned long cycles, target, delivered, rounds;
} ru;

static void reuse_io_cb(evl_loop *loop, void *arg, int events);

static void reuse_watch(evl_loop *loop, reuse_slot *s) {
    s->armed = 0;
    evl_io_init(&s->io, s->r, reuse_io_cb, s);
    CHECK_OK(evl_io_start(loop, &s->io, EVL_READ));
}

static void reuse_open(evl_loop *loop, reuse_slot *s) {
    int p[2];
    CHECK_OK(pipe2(p, O_NONBLOCK | O_CLOEXEC));
    s->r = p[0];
    s->w = p[1];
    reuse_watch(loop, s);
}

/* Puts fd's file on the number `to` (closing what was there) and drops the number fd. */
static void reuse_move(int fd, int to) {
    CHECK_EQ(dup3(fd, to, O_CLOEXEC), to);
    close(fd);
}

/* Stops the slot's watcher, keeps its old pipe alive under other numbers (readable), and puts
   a new, empty pipe on the very same two numbers: dup3 closes the old file's number and reuses
   it in one step, so the numbers are the same whatever other fds the loop opens or closes
   meanwhile (the epoll backend replaces its own epoll fd when it drops an old registration). */
static void reuse_cycle(evl_loop *loop, reuse_slot *s) {
    int p[2], keep_r, keep_w;
    CHECK_OK(evl_io_stop(loop, &s->io));
    keep_r = fcntl(s->r, F_DUPFD_CLOEXEC, REUSE_KEEP_MIN);
    keep_w = fcntl(s->w, F_DUPFD_CLOEXEC, REUSE_KEEP_MIN);
    CHECK(keep_r >= 0 && keep_w >= 0);
    ru.kept[ru.nkept++] = keep_r;
    ru.kept[ru.nkept++] = keep_w;
    CHECK_OK(pipe2(p, O_NONBLOCK | O_CLOEXEC));
    reuse_move(p[0], s->r);
    reuse_move(p[1], s->w);
    reuse_watch(loop, s);
    /* The old file is readable: only a registration that outlived the stop could report it. */
    CHECK_EQ(write(keep_w, "x", 1), 1);
    ru.cycles++;
}

static void reuse_arm(evl_loop *loop, void *arg) {
    int i;
    (void)loop;
    (void)arg;
    for (i = 0; i < ru.nkept; i++) close(ru.kept[i]);
    ru.nkept = 0;
    for (i = 0; i < REUSE_SLOTS; i++) {
        CHECK_EQ(write(ru.slot[i].w, "x", 1), 1);
        ru.slot[i].armed = 1;
    }
    ru.rounds++;
}

/* The new pipes stay empty for one whole iteration first: its poll is where an event of an old
   registration would come back, and there it would meet an unarmed slot. */
static void reuse_arm_next_iteration(evl_loop *loop, void *arg) {
    (void)arg;
    CHECK_OK(evl_call_soon(loop, reuse_arm, NULL));
}

static int reuse_any_armed(void) {
    int i;
    for (i = 0; i < REUSE_SLOTS; i++)
        if (ru.slot[i].armed) return 1;
    return 0;
}

static void reuse_io_cb(evl_loop *loop, void *arg, int events) {
    reuse_slot *s = (reuse_slot *)arg;
    reuse_slot *next = &ru.slot[(s - ru.slot + 1) % REUSE_SLOTS];
    char c;
    ssize_t n = read(s->r, &c, 1);
    if (n != 1 || !s->armed) {
        fprintf(stderr, "stale event: fd %d called back (events %d) but read gave %zd (%s), "
                "armed %d, after %lu cycles\n", s->r, events, n, n < 0 ? strerror(errno) : "-",
                s->armed, ru.cycles);
        exit(1);
    }
    CHECK(events & EVL_READ);
    s->armed = 0;
    ru.delivered++;
    reuse_cycle(loop, s);
    if (next != s && next->armed) reuse_cycle(loop, next); /* its event is pending right now */
    if (reuse_any_armed()) return;
    if (ru.cycles < ru.target) CHECK_OK(evl_call_soon(loop, reuse_arm_next_iteration, NULL));
    else {
        int i;
        for (i = 0; i < REUSE_SLOTS; i++) CHECK_OK(evl_io_stop(loop, &ru.slot[i].io));
    }
}

static void fd_reuse_no_stale_event(void) {
    evl_loop *loop;
    int fds_before = check_dir_count("/proc/self/fd"), i;
    double t0, secs;
    watchdog_start(120);
    memset(&ru, 0, sizeof ru);
    ru.target = stress_size(100000UL, 20000UL);
    loop = check_loop_new();
    for (i = 0; i < REUSE_SLOTS; i++) reuse_open(loop, &ru.slot[i]);
    CHECK(ru.slot[REUSE_SLOTS - 1].w < REUSE_KEEP_MIN);
    CHECK_OK(evl_call_soon(loop, reuse_arm, NULL));
    t0 = mono_seconds();
    CHECK_OK(evl_run(loop));
    secs = mono_seconds() - t0;
    CHECK(ru.cycles >= ru.target);
    /* Each round delivers at least one event and at most every slot's. */
    CHECK(ru.delivered >= ru.rounds && ru.delivered <= ru.rounds * REUSE_SLOTS);
    printf("figures: %s: %lu close-and-reopen cycles of the same fd numbers inside callbacks "
           "(%lu rounds, %lu events delivered, the others dropped as stale) in %.2f s, no stale "
           "event\n", evl_backend_name(loop), ru.cycles, ru.rounds, ru.delivered, secs);
    CHECK_OK(evl_loop_close(loop));
    for (i = 0; i < ru.nkept; i++) close(ru.kept[i]);
    for (i = 0; i < REUSE_SLOTS; i++) {
        close(ru.slot[i].r);
        close(ru.slot[i].w);
    }
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
}

/* ==== 5. a 1 kHz signal storm with a 10 ms timer still on time ==== */

/* The manual promises that a watcher's callback runs after the signal arrived, arrivals
   between two runs coalescing into one. So the callback runs at most once per arrival, and
   some run follows every arrival: the storm thread numbers its signals (the number is stored
   before the kill), each run records the highest number it sees, and every 250th signal and
   the last one the thread waits until a run has seen it. */
#define STORM_HANDSHAKE_EVERY 250

static struct {
    evl_loop *loop;
    evl_timer tick, watch;
    evl_signal sig;
    unsigned long total;            /* signals the storm sends */
    unsigned long sent;             /* atomic: the number of the signal being sent */
    unsigned long seen;             /* atomic: the highest number a run has seen */
    unsigned long runs, ticks, ticks_at_end;
    int storm_over;                 /* loop thread */
    double t_start, t_end;
} st;

static void storm_sig_cb(evl_loop *loop, void *arg) {
    unsigned long now = __atomic_load_n(&st.sent, __ATOMIC_SEQ_CST);
    (void)loop;
    (void)arg;
    st.runs++;
    if (now > __atomic_load_n(&st.seen, __ATOMIC_SEQ_CST))
        __atomic_store_n(&st.seen, now, __ATOMIC_SEQ_CST);
}

static void storm_tick_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    st.ticks++;
}

/* Waits until a run of the callback has seen signal k; a lost signal fails here. */
static void storm_handshake(unsigned long k) {
    double deadline = mono_seconds() + 5.0 * check_time_scale();
    while (__atomic_load_n(&st.seen, __ATOMIC_SEQ_CST) < k) {
        if (mono_seconds() > deadline) {
            fprintf(stderr, "signal %lu of the storm was never delivered (the last run saw %lu)\n",
                    k, __atomic_load_n(&st.seen, __ATOMIC_SEQ_CST));
            exit(1);
        }
        sleep_ns(100000L);
    }
}

static void storm_over_cb(evl_loop *loop, void *arg) {
    (void)arg;
    st.t_end = mono_seconds();
    st.ticks_at_end = st.ticks;
    CHECK_OK(evl_timer_stop(loop, &st.tick));
    CHECK_OK(evl_signal_stop(loop, &st.sig));
    st.storm_over = 1;
}

/* One signal to the process every millisecond on an absolute schedule (a late wakeup sends
   the next one at once rather than slowing the storm down). */
static void *storm_thread(void *p) {
    struct timespec next;
    unsigned long k;
    (void)p;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (k = 1; k <= st.total; k++) {
        __atomic_store_n(&st.sent, k, __ATOMIC_SEQ_CST);
        CHECK_OK(kill(getpid(), SIGUSR1));
        if (k % STORM_HANDSHAKE_EVERY == 0 || k == st.total) storm_handshake(k);
        next.tv_nsec += 1000000L;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
    }
    CHECK_OK(evl_call_soon_threadsafe(st.loop, storm_over_cb, NULL));
    return NULL;
}

static void signal_storm_timers_on_time(void) {
    pthread_t storm;
    evl_stats stats;
    double secs, expected;
    unsigned long seconds = stress_size(5, 1);
    watchdog_start(60);
    memset(&st, 0, sizeof st);
    st.total = seconds * 1000;
    /* The disposition from before the first watcher comes back when the last one stops: make
       it "ignore", so a signal still on its way after the stop cannot kill the process. */
    signal(SIGUSR1, SIG_IGN);
    st.loop = check_loop_new();
    evl_signal_init(&st.sig, SIGUSR1, storm_sig_cb, NULL);
    CHECK_OK(evl_signal_start(st.loop, &st.sig));
    evl_timer_init(&st.tick, storm_tick_cb, NULL);
    CHECK_OK(evl_timer_start(st.loop, &st.tick, EVL_MSEC(10), EVL_MSEC(10)));
    st.t_start = mono_seconds();
    storm = start_thread(storm_thread, NULL);
    /* The tick timer keeps evl_run going until the storm's end stops it and the watcher. */
    CHECK_OK(evl_run(st.loop));
    join_thread(storm);
    CHECK(st.storm_over);
    CHECK_EQ(__atomic_load_n(&st.seen, __ATOMIC_SEQ_CST), st.total);
    CHECK(st.runs >= 1);
    CHECK(st.runs <= st.total); /* never more runs than arrivals */
    secs = st.t_end - st.t_start;
    expected = secs / 0.010;
    evl_loop_stats(st.loop, &stats);
    printf("figures: %s: signal storm %lu x SIGUSR1 at 1 kHz over %.2f s: %lu callback runs "
           "(coalesced), none lost; 10 ms timer fired %lu times (%.0f expected), worst lag "
           "%.2f ms\n", evl_backend_name(st.loop), st.total, secs, st.runs, st.ticks_at_end,
           expected, (double)stats.lag_max / 1e6);
    /* Missed ticks are skipped, never bunched: at most one per 10 ms elapsed. At least half of
       them must have fired on a shared machine (a quarter under slow tools). */
    CHECK((double)st.ticks_at_end <= expected + 1.0);
    CHECK((double)st.ticks_at_end >= expected / (2.0 * check_time_scale()));
    CHECK_OK(evl_loop_close(st.loop));
    signal(SIGUSR1, SIG_DFL);
}

/* ==== 6. executor flood with a full queue ==== */

#define EX_THREADS 2
#define EX_QUEUE 16
#define EX_SHUTDOWN_EXTRA 64 /* room for the shutdown phase's jobs after the flood's */

static struct {
    evl_loop *loop;
    evl_executor *ex;
    unsigned *runs; /* atomic: how often each job ran (int-sized: RISC-V has no byte atomics) */
    int gate_closed;                /* atomic: jobs wait while it is set */
    size_t n, next, completed, rejected, first_burst;
    size_t queue_max;               /* the most jobs seen queued */
} xf;

static void *flood_job(void *arg) {
    size_t idx = (size_t)(uintptr_t)arg;
    while (__atomic_load_n(&xf.gate_closed, __ATOMIC_SEQ_CST)) sleep_ns(100000L);
    __atomic_add_fetch(&xf.runs[idx], 1, __ATOMIC_SEQ_CST);
    return arg;
}

static void flood_note_queue(evl_loop *loop) {
    evl_stats s;
    evl_loop_stats(loop, &s);
    if (s.executor_queue > xf.queue_max) xf.queue_max = s.executor_queue;
}

static void flood_pump(evl_loop *loop);

static void flood_done_cb(evl_loop *loop, void *arg) {
    evl_future *f = (evl_future *)arg;
    void *value = NULL;
    size_t idx;
    CHECK_OK(evl_future_await(loop, f, &value));
    idx = (size_t)(uintptr_t)value;
    CHECK(idx < xf.n);
    CHECK_EQ(__atomic_load_n(&xf.runs[idx], __ATOMIC_SEQ_CST), 1);
    evl_future_free(loop, f);
    xf.completed++;
    flood_pump(loop);
}

/* Submits until the queue is full (-EAGAIN, as the manual says) or every job is in; each
   completion pumps again. The first burst meets closed gates: the queue must take exactly its
   bound, plus at most one job per worker already taken out of it. */
static void flood_pump(evl_loop *loop) {
    while (xf.next < xf.n) {
        evl_future *f = (evl_future *)&f; /* must come back NULL when refused */
        int err = evl_executor_submit_on(loop, xf.ex, flood_job, (void *)(uintptr_t)xf.next, &f);
        if (err == -EAGAIN) {
            CHECK(f == NULL);
            xf.rejected++;
            flood_note_queue(loop);
            if (xf.rejected == 1) {
                xf.first_burst = xf.next;
                __atomic_store_n(&xf.gate_closed, 0, __ATOMIC_SEQ_CST);
            }
            return;
        }
        CHECK_OK(err);
        CHECK_OK(evl_future_on_done(loop, f, flood_done_cb, f));
        xf.next++;
    }
}

/* Opens the gate after a while, from another thread, while the loop thread is inside
   evl_executor_shutdown waiting for the running jobs. */
static void *gate_opener(void *p) {
    (void)p;
    sleep_ns(50000000L);
    __atomic_store_n(&xf.gate_closed, 0, __ATOMIC_SEQ_CST);
    return NULL;
}

/* The documented shutdown: queued jobs never run and their futures complete with -ECANCELED;
   running ones are waited for and complete with their result. */
static void flood_shutdown_phase(evl_loop *loop) {
    evl_future *f[EX_QUEUE + EX_THREADS + 1];
    size_t n = 0, i, ok = 0, cancelled = 0;
    pthread_t opener;
    int err;
    __atomic_store_n(&xf.gate_closed, 1, __ATOMIC_SEQ_CST);
    while ((err = evl_executor_submit_on(loop, xf.ex, flood_job,
                                         (void *)(uintptr_t)(xf.n + n), &f[n])) == 0)
        CHECK(++n < sizeof f / sizeof f[0]);
    CHECK_EQ(err, -EAGAIN);
    CHECK(n >= EX_QUEUE);
    opener = start_thread(gate_opener, NULL);
    CHECK_OK(evl_executor_shutdown(loop, xf.ex, EVL_SEC(30)));
    join_thread(opener);
    for (i = 0; i < n; i++) {
        unsigned ran = __atomic_load_n(&xf.runs[xf.n + i], __ATOMIC_SEQ_CST);
        CHECK(evl_future_done(f[i]));
        err = evl_future_await(loop, f[i], NULL);
        if (err == 0) {
            CHECK_EQ(ran, 1);
            ok++;
        } else {
            CHECK_EQ(err, -ECANCELED);
            CHECK_EQ(ran, 0);
            cancelled++;
        }
        evl_future_free(loop, f[i]);
    }
    CHECK(ok <= EX_THREADS);
    CHECK(cancelled >= n - EX_THREADS);
    printf("figures: %s: shutdown with %zu jobs in: %zu running finished, %zu queued cancelled "
           "(-ECANCELED), none ran after\n", evl_backend_name(loop), n, ok, cancelled);
}

static void executor_flood_full_queue(void) {
    int fds_before = check_dir_count("/proc/self/fd");
    long threads_before = threads_baseline();
    size_t i;
    double t0, secs;
    watchdog_start(120);
    memset(&xf, 0, sizeof xf);
    xf.n = stress_size(200000UL, 20000UL);
    xf.runs = (unsigned *)calloc(xf.n + EX_SHUTDOWN_EXTRA, sizeof *xf.runs);
    CHECK(xf.runs != NULL);
    xf.loop = check_loop_new();
    CHECK_OK(evl_executor_new(xf.loop, &xf.ex, EX_THREADS, EX_QUEUE));
    xf.gate_closed = 1;
    t0 = mono_seconds();
    flood_pump(xf.loop);
    CHECK_OK(evl_run(xf.loop));
    secs = mono_seconds() - t0;
    CHECK_EQ(xf.completed, xf.n);
    CHECK(xf.rejected >= 1);
    CHECK(xf.first_burst >= EX_QUEUE && xf.first_burst <= EX_QUEUE + EX_THREADS);
    CHECK(xf.queue_max <= EX_QUEUE);
    for (i = 0; i < xf.n; i++) CHECK_EQ(xf.runs[i], 1);
    printf("figures: %s: executor flood: %zu jobs through a %d-job queue on %d threads in %.2f s "
           "(%.0f jobs/s), %zu submits refused with -EAGAIN, each job ran exactly once\n",
           evl_backend_name(xf.loop), xf.n, EX_QUEUE, EX_THREADS, secs, (double)xf.n / secs,
           xf.rejected);
    flood_shutdown_phase(xf.loop);
    CHECK_OK(evl_loop_close(xf.loop));
    free(xf.runs);
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
    check_wait_threads_back_to((int)threads_before, 5);
    CHECK_EQ(check_thread_count(), threads_before);
}

/* The same flood from tasks with evl_executor_run, which waits for queue room instead of
   refusing: backpressure, and still every job exactly once. */
#define RUN_TASKS 64

static struct {
    size_t per_task, done;
    size_t queue_max;
    unsigned *runs; /* atomic, int-sized */
} xr;

static void *run_job(void *arg) {
    __atomic_add_fetch(&xr.runs[(size_t)(uintptr_t)arg], 1, __ATOMIC_SEQ_CST);
    return arg;
}

static int run_task(evl_loop *loop, void *arg) {
    size_t base = (size_t)(uintptr_t)arg * xr.per_task, k;
    for (k = 0; k < xr.per_task; k++) {
        void *result = NULL;
        evl_stats s;
        CHECK_OK(evl_executor_run(loop, run_job, (void *)(uintptr_t)(base + k), &result));
        CHECK_EQ((size_t)(uintptr_t)result, base + k);
        evl_loop_stats(loop, &s);
        if (s.executor_queue > xr.queue_max) xr.queue_max = s.executor_queue;
        xr.done++;
    }
    return 0;
}

static void executor_run_backpressure(void) {
    evl_config cfg;
    evl_loop *loop;
    size_t i, total;
    double t0, secs;
    int fds_before = check_dir_count("/proc/self/fd");
    long threads_before = threads_baseline();
    watchdog_start(120);
    memset(&xr, 0, sizeof xr);
    xr.per_task = stress_size(200000UL, 20000UL) / RUN_TASKS;
    total = xr.per_task * RUN_TASKS;
    xr.runs = (unsigned *)calloc(total, sizeof *xr.runs);
    CHECK(xr.runs != NULL);
    evl_config_init(&cfg);
    cfg.executor_threads = EX_THREADS;
    cfg.executor_queue = EX_QUEUE;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    for (i = 0; i < RUN_TASKS; i++)
        CHECK_OK(evl_task_spawn(loop, NULL, run_task, (void *)(uintptr_t)i, NULL));
    t0 = mono_seconds();
    CHECK_OK(evl_run(loop));
    secs = mono_seconds() - t0;
    CHECK_EQ(xr.done, total);
    CHECK(xr.queue_max <= EX_QUEUE);
    for (i = 0; i < total; i++) CHECK_EQ(xr.runs[i], 1);
    printf("figures: %s: %d tasks ran %zu jobs through the default executor (%d threads, a "
           "%d-job queue) in %.2f s (%.0f jobs/s), waiting for room when full, each exactly once\n",
           evl_backend_name(loop), RUN_TASKS, total, EX_THREADS, EX_QUEUE, secs,
           (double)total / secs);
    /* evl_loop_close shuts the default executor down and waits for its threads. */
    CHECK_OK(evl_loop_close(loop));
    free(xr.runs);
    CHECK_EQ(check_dir_count("/proc/self/fd"), fds_before);
    check_wait_threads_back_to((int)threads_before, 5);
    CHECK_EQ(check_thread_count(), threads_before);
}

static const check_case cases[] = {
    {"posts_8_threads_exactly_once", posts_8_threads_exactly_once},
    {"connections_10000_on_one_loop", connections_10000_on_one_loop},
    {"tasks_1000000_concurrent", tasks_1000000_concurrent},
    {"tasks_100000_joinable_burst", tasks_100000_joinable_burst},
    {"tasks_past_map_limit_fail_cleanly", tasks_past_map_limit_fail_cleanly},
    {"tasks_past_address_limit_fail_cleanly", tasks_past_address_limit_fail_cleanly},
    {"fd_reuse_no_stale_event", fd_reuse_no_stale_event},
    {"signal_storm_timers_on_time", signal_storm_timers_on_time},
    {"executor_flood_full_queue", executor_flood_full_queue},
    {"executor_run_backpressure", executor_run_backpressure},
};

CHECK_MAIN(cases)
