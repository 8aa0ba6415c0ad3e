/* test_faults.c - fault injection: every failure comes back as an error code, the loop keeps
   working, and nothing leaks.

   Built with EVL_TESTING, which lets a test make the nth call of each system call site fail
   (evl_fault_arm). Allocations fail through the loop's own allocator hook: the counting
   allocator below fails its nth call. Each case runs one scenario once cleanly to count the
   calls it makes of each site, then once per call with exactly that call failing, and after
   every run checks:
     - the scenario either saw the error through an API return value, or its results are all
       correct (the library absorbed the failure, e.g. retried an EINTR);
     - the loop still runs a callback and a timer after the failure;
     - evl_loop_close succeeds, every allocation is freed, and the process has exactly the
       fds and memory mappings it had before the run. */
#define EVL_TESTING
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include "check.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#define MS 1000000LL
#define SITE_ALLOC (-1) /* not an evl_fault_site: the allocator hook */

/* ---- a counting allocator that can fail its nth call ---- */

static long live_blocks;            /* atomic: blocks allocated and not yet freed */
static unsigned long alloc_calls;   /* atomic: allocations and reallocations so far */
static unsigned long alloc_fail_at; /* atomic: the call number that fails; 0: none */

static void *counting_alloc(void *ud, void *ptr, size_t size) {
    unsigned long n;
    void *p;
    (void)ud;
    if (size == 0) {
        if (ptr) __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_SEQ_CST);
        free(ptr);
        return NULL;
    }
    n = __atomic_add_fetch(&alloc_calls, 1, __ATOMIC_SEQ_CST);
    if (n == __atomic_load_n(&alloc_fail_at, __ATOMIC_SEQ_CST)) return NULL;
    p = realloc(ptr, size);
    if (p && !ptr) __atomic_add_fetch(&live_blocks, 1, __ATOMIC_SEQ_CST);
    return p;
}

static unsigned long site_calls(int site) {
    return site == SITE_ALLOC ? __atomic_load_n(&alloc_calls, __ATOMIC_SEQ_CST)
                              : evl_fault_calls((evl_fault_site)site);
}

static void site_arm(int site, unsigned long nth, int error) {
    if (site == SITE_ALLOC)
        __atomic_store_n(&alloc_fail_at, nth ? site_calls(site) + nth : 0, __ATOMIC_SEQ_CST);
    else evl_fault_arm((evl_fault_site)site, nth, error);
}

static const char *site_name(int site) {
    static const char *names[] = {"fd_open", "register", "wait",   "read",     "write",
                                  "accept",  "connect",  "mmap",   "thread",   "sigaction"};
    return site == SITE_ALLOC ? "alloc" : names[site];
}

/* ---- what the process holds: fds and memory mappings ---- */

/* The sanitizers map memory for themselves as they go: mappings are counted without them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_MAPPINGS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COUNT_MAPPINGS 0
#endif
#endif
#ifndef COUNT_MAPPINGS
#define COUNT_MAPPINGS 1
#endif

/* Valgrind manages the process's memory itself, and preloads its helpers to do it. */
static int under_valgrind(void) {
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

static int count_lines(const char *path) {
    FILE *f = COUNT_MAPPINGS && !under_valgrind() ? fopen(path, "r") : NULL;
    int c, n = 0;
    if (!f) return 0; /* no /proc/self/maps, a sanitizer or Valgrind: not checked */
    while ((c = getc(f)) != EOF) n += c == '\n';
    fclose(f);
    return n;
}

/* ---- the loop still works after a failure ---- */

static void bump(evl_loop *loop, void *arg) {
    (void)loop;
    (*(int *)arg)++;
}

static void check_loop_still_works(evl_loop *loop) {
    evl_timer t;
    int soon = 0, fired = 0;
    CHECK_OK(evl_call_soon(loop, bump, &soon));
    evl_timer_init(&t, bump, &fired);
    CHECK_OK(evl_timer_start(loop, &t, 1 * MS, 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(soon, 1);
    CHECK_EQ(fired, 1);
}

/* Keeps the first error of a scenario. */
static int first_error(int *err, int rc) {
    if (rc < 0 && *err == 0) *err = rc;
    return rc;
}

/* Runs the loop; a failed run (an injected poll failure) is retried once, since the loop must
   keep working after it, and the failure is the scenario's error. */
static void run_loop(evl_loop *loop, int *err) {
    int rc = evl_run(loop);
    if (rc < 0) {
        first_error(err, rc);
        CHECK_OK(evl_run(loop));
    }
}

/* ---- scenario: callbacks, timers, an I/O watcher, posts from a thread ---- */

typedef struct core {
    evl_loop *loop;
    int sv[2];
    evl_io io;
    evl_timer once, repeat;
    int err, soon, once_fired, repeats, narrowed, bytes, posts;
} core;

static void core_soon(evl_loop *loop, void *arg) {
    (void)loop;
    ((core *)arg)->soon++;
}

/* The one-shot timer writes the byte the watcher waits for. */
static void core_once(evl_loop *loop, void *arg) {
    core *c = (core *)arg;
    (void)loop;
    c->once_fired++;
    CHECK_EQ(write(c->sv[1], "x", 1), 1);
}

static void core_repeat(evl_loop *loop, void *arg) {
    core *c = (core *)arg;
    if (++c->repeats == 3) evl_timer_stop(loop, &c->repeat);
}

/* Watches READ|WRITE; the first WRITE narrows it to READ (a deferred registration change),
   then the byte ends it. */
static void core_io(evl_loop *loop, void *arg, int events) {
    core *c = (core *)arg;
    char b;
    if ((events & EVL_WRITE) && !c->narrowed) {
        c->narrowed = 1;
        if (first_error(&c->err, evl_io_start(loop, &c->io, EVL_READ)) < 0)
            evl_io_stop(loop, &c->io);
        return;
    }
    if ((events & EVL_READ) && read(c->sv[0], &b, 1) == 1) {
        c->bytes++;
        evl_io_stop(loop, &c->io);
    }
}

static void core_post(evl_loop *loop, void *arg) {
    core *c = (core *)arg;
    if (++c->posts == 4) evl_loop_unref(loop);
}

static void *core_poster(void *arg) {
    core *c = (core *)arg;
    int i;
    for (i = 0; i < 4; i++) {
        int rc = evl_call_soon_threadsafe(c->loop, core_post, c);
        if (rc < 0) {
            /* The error is reported; the reference the last post would drop goes now. */
            __atomic_store_n(&c->err, rc, __ATOMIC_SEQ_CST);
            evl_loop_unref(c->loop);
            break;
        }
    }
    return NULL;
}

static int core_scenario(evl_loop *loop) {
    core c;
    pthread_t th;
    int i, err;
    memset(&c, 0, sizeof c);
    c.loop = loop;
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, c.sv));
    for (i = 0; i < 3; i++) first_error(&c.err, evl_call_soon(loop, core_soon, &c));
    evl_timer_init(&c.once, core_once, &c);
    evl_timer_init(&c.repeat, core_repeat, &c);
    evl_io_init(&c.io, c.sv[0], core_io, &c);
    /* Without the timer that writes its byte, the watcher would wait forever. */
    if (first_error(&c.err, evl_io_start(loop, &c.io, EVL_READ | EVL_WRITE)) == 0 &&
        first_error(&c.err, evl_timer_start(loop, &c.once, 2 * MS, 0)) < 0)
        evl_io_stop(loop, &c.io);
    first_error(&c.err, evl_timer_start(loop, &c.repeat, 1 * MS, 1 * MS));
    evl_loop_ref(loop);
    CHECK_OK(pthread_create(&th, NULL, core_poster, &c));
    run_loop(loop, &c.err);
    CHECK_OK(pthread_join(th, NULL));
    evl_io_stop(loop, &c.io);
    evl_timer_stop(loop, &c.once);
    evl_timer_stop(loop, &c.repeat);
    close(c.sv[0]);
    close(c.sv[1]);
    err = __atomic_load_n(&c.err, __ATOMIC_SEQ_CST);
    if (err) return err;
    if (c.soon != 3 || c.once_fired != 1 || c.repeats != 3 || c.bytes != 1 || c.posts != 4) {
        fprintf(stderr, "core: wrong results without an error: soon %d once %d repeats %d "
                "bytes %d posts %d\n", c.soon, c.once_fired, c.repeats, c.bytes, c.posts);
        return -EPROTO;
    }
    return 0;
}

/* ---- scenario: tasks over TCP (accept, connect, read, write), a sleep, a future ---- */

typedef struct net {
    int listen_fd;
    struct sockaddr_in addr;
    evl_task *server, *client;
    evl_future *fut;
    evl_timer fut_timer;
    char echoed[6];
} net;

/* Echoes one message back, then closes. A failure cancels the peer so nothing waits forever. */
static int net_server(evl_loop *loop, void *arg) {
    net *n = (net *)arg;
    char buf[16];
    ssize_t got;
    int rc, fd = evl_accept(loop, n->listen_fd, NULL, NULL);
    if (fd < 0) {
        evl_task_cancel(loop, n->client);
        return fd;
    }
    got = evl_read(loop, fd, buf, sizeof buf);
    rc = got < 0 ? (int)got : (int)evl_write_all(loop, fd, buf, (size_t)got);
    close(fd);
    if (rc < 0) evl_task_cancel(loop, n->client);
    return rc < 0 ? rc : 0;
}

static void net_fut_set(evl_loop *loop, void *arg) {
    net *n = (net *)arg;
    evl_future_set(loop, n->fut, 0, n);
}

static int net_client_io(evl_loop *loop, net *n, int fd) {
    ssize_t got, done = 0;
    int rc = evl_connect(loop, fd, (struct sockaddr *)&n->addr, sizeof n->addr);
    if (rc < 0) return rc;
    if ((got = evl_write_all(loop, fd, "hello", 5)) < 0) return (int)got;
    while (done < 5) {
        got = evl_read(loop, fd, n->echoed + done, (size_t)(5 - done));
        if (got <= 0) return got < 0 ? (int)got : -ECONNRESET;
        done += got;
    }
    return 0;
}

static int net_client(evl_loop *loop, void *arg) {
    net *n = (net *)arg;
    void *value = NULL;
    int rc, fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK_OK(fcntl(fd, F_SETFL, O_NONBLOCK));
    rc = net_client_io(loop, n, fd);
    close(fd);
    if (rc == 0) rc = evl_sleep(loop, 1 * MS);
    if (rc == 0 && (rc = evl_future_new(loop, &n->fut)) == 0) {
        evl_timer_init(&n->fut_timer, net_fut_set, n);
        rc = evl_timer_start(loop, &n->fut_timer, 1 * MS, 0);
        if (rc == 0) rc = evl_future_await(loop, n->fut, &value);
        evl_timer_stop(loop, &n->fut_timer);
        evl_future_free(loop, n->fut);
        if (rc == 0 && value != n) rc = -EPROTO;
    }
    if (rc < 0) evl_task_cancel(loop, n->server);
    return rc;
}

static int listen_loopback(struct sockaddr_in *addr) {
    socklen_t len = sizeof *addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(fd, (struct sockaddr *)addr, sizeof *addr));
    CHECK_OK(listen(fd, 16));
    CHECK_OK(getsockname(fd, (struct sockaddr *)addr, &len));
    CHECK_OK(fcntl(fd, F_SETFL, O_NONBLOCK));
    return fd;
}

/* Joins a task that has finished (after the loop ran out of work) and keeps its error. */
static void join_done(evl_loop *loop, evl_task *t, int *err) {
    int result = 0;
    if (!t) return;
    CHECK(evl_task_done(t));
    CHECK_OK(evl_task_join(loop, t, &result));
    if (result != -ECANCELED) first_error(err, result);
}

static int net_scenario(evl_loop *loop) {
    net n;
    int err = 0, server_failed;
    memset(&n, 0, sizeof n);
    n.listen_fd = listen_loopback(&n.addr);
    server_failed = first_error(&err, evl_task_spawn(loop, &n.server, net_server, &n, NULL)) < 0;
    if (!server_failed && first_error(&err, evl_task_spawn(loop, &n.client, net_client, &n, NULL)) < 0)
        evl_task_cancel(loop, n.server);
    run_loop(loop, &err);
    join_done(loop, n.server, &err);
    join_done(loop, n.client, &err);
    close(n.listen_fd);
    if (err) return err;
    if (memcmp(n.echoed, "hello", 5) != 0) {
        fprintf(stderr, "net: wrong echo without an error\n");
        return -EPROTO;
    }
    return 0;
}

/* ---- scenario: executor pools (a new one and the default one) ---- */

typedef struct pool {
    evl_executor *ex;
    int ran;
} pool;

static void *square(void *arg) {
    intptr_t v = (intptr_t)arg;
    return (void *)(v * v);
}

static int pool_jobs(evl_loop *loop, pool *p) {
    evl_future *f;
    void *result = NULL;
    intptr_t i;
    int rc;
    for (i = 1; i <= 3; i++) {
        if ((rc = evl_executor_run_on(loop, p->ex, square, (void *)i, &result)) < 0) return rc;
        if (result != (void *)(i * i)) return -EPROTO;
        p->ran++;
    }
    if ((rc = evl_executor_submit(loop, square, (void *)7, &f)) < 0) return rc;
    rc = evl_future_await(loop, f, &result);
    evl_future_free(loop, f);
    if (rc < 0) return rc;
    if (result != (void *)49) return -EPROTO;
    p->ran++;
    return 0;
}

static int pool_task(evl_loop *loop, void *arg) {
    pool *p = (pool *)arg;
    int rc = evl_executor_new(loop, &p->ex, 2, 4);
    if (rc < 0) return rc;
    rc = pool_jobs(loop, p);
    if (evl_executor_shutdown(loop, p->ex, 5000 * MS) < 0 && rc == 0) rc = -ETIMEDOUT;
    return rc;
}

static int pool_scenario(evl_loop *loop) {
    pool p;
    evl_task *t = NULL;
    int err = 0;
    memset(&p, 0, sizeof p);
    if (first_error(&err, evl_task_spawn(loop, &t, pool_task, &p, NULL)) == 0) {
        run_loop(loop, &err);
        join_done(loop, t, &err);
    }
    if (err) return err;
    if (p.ran != 4) {
        fprintf(stderr, "pool: %d of 4 jobs ran without an error\n", p.ran);
        return -EPROTO;
    }
    return 0;
}

/* ---- scenario: a signal watcher ---- */

typedef struct sig {
    evl_signal watcher;
    int seen;
} sig;

static void sig_raise(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    raise(SIGUSR1);
}

static void sig_seen(evl_loop *loop, void *arg) {
    sig *s = (sig *)arg;
    s->seen++;
    evl_signal_stop(loop, &s->watcher);
}

static int sig_scenario(evl_loop *loop) {
    sig s;
    int err = 0;
    memset(&s, 0, sizeof s);
    evl_signal_init(&s.watcher, SIGUSR1, sig_seen, &s);
    /* Raise only with the watcher in place: otherwise SIGUSR1 would end the process. */
    if (first_error(&err, evl_signal_start(loop, &s.watcher)) == 0 &&
        first_error(&err, evl_call_soon(loop, sig_raise, NULL)) < 0)
        evl_signal_stop(loop, &s.watcher);
    run_loop(loop, &err);
    evl_signal_stop(loop, &s.watcher);
    if (err) return err;
    if (s.seen != 1) {
        fprintf(stderr, "signal: seen %d times without an error\n", s.seen);
        return -EPROTO;
    }
    return 0;
}

/* ---- scenario: a loop with the stall watchdog (a thread of its own) ---- */

static int watchdog_scenario(evl_loop *loop) {
    int soon = 0, err = 0;
    first_error(&err, evl_call_soon(loop, bump, &soon));
    run_loop(loop, &err);
    if (err) return err;
    return soon == 1 ? 0 : -EPROTO;
}

/* ---- the sweep ---- */

typedef int (*scenario_fn)(evl_loop *loop);

typedef struct fault {
    int site;  /* an evl_fault_site or SITE_ALLOC */
    int error; /* the errno the failing call reports */
} fault;

typedef struct tally {
    unsigned long reported, absorbed, unreached;
} tally;

/* The loop's warnings (a failed poll is reported through the log as well as returned) are
   expected here: counted, not printed. */
static unsigned long log_lines;

static void quiet_log(int level, const char *message, void *ud) {
    (void)level;
    (void)message;
    (void)ud;
    __atomic_add_fetch(&log_lines, 1, __ATOMIC_SEQ_CST);
}

static char hang_note[160];

static void on_hang(int signo) {
    ssize_t r = write(2, hang_note, strlen(hang_note));
    (void)signo;
    (void)r;
    _exit(3);
}

/* One run of the scenario on a new loop, with the nth call of f.site failing (nth 0: none).
   Returns what the scenario returned; *fired tells whether the failure happened. */
static int run_with_fault(scenario_fn fn, evl_time stall, const fault *f, unsigned long nth,
                          int *fired) {
    evl_config cfg;
    evl_loop *loop = NULL;
    unsigned long before = site_calls(f->site);
    int rc, made;
    evl_config_init(&cfg);
    cfg.alloc = counting_alloc;
    cfg.stall_threshold = stall;
    cfg.log = quiet_log;
    snprintf(hang_note, sizeof hang_note, "hang: the run with %s call %lu failing (%s)\n",
             site_name(f->site), nth, evl_strerror(-f->error));
    alarm((unsigned)(10 * check_time_scale()));
    site_arm(f->site, nth, f->error);
    made = (rc = evl_loop_new(&loop, &cfg)) == 0;
    if (made) rc = fn(loop);
    *fired = nth && site_calls(f->site) - before >= nth;
    site_arm(f->site, 0, 0);
    if (made) {
        check_loop_still_works(loop);
        CHECK_OK(evl_loop_close(loop));
    }
    alarm(0);
    return rc;
}

/* Sweeps every call of one site the scenario makes; returns how many calls there were. */
static unsigned long sweep_site(scenario_fn fn, evl_time stall, const fault *f, tally *t) {
    unsigned long before = site_calls(f->site), total, nth;
    int fds, maps, fired, rc = run_with_fault(fn, stall, f, 0, &fired);
    CHECK_EQ(rc, 0);
    total = site_calls(f->site) - before;
    /* Counted after the clean run, which warmed up what libc keeps (thread stacks). */
    fds = check_dir_count("/proc/self/fd");
    maps = count_lines("/proc/self/maps");
    for (nth = 1; nth <= total; nth++) {
        rc = run_with_fault(fn, stall, f, nth, &fired);
        if (rc == -EPROTO || (rc < 0 && !fired) || live_blocks != 0 ||
            check_dir_count("/proc/self/fd") != fds || count_lines("/proc/self/maps") != maps) {
            fprintf(stderr, "%s call %lu of %lu failing with %s: result %s, fired %d, "
                    "%ld blocks live, fds %d (was %d), mappings %d (was %d)\n",
                    site_name(f->site), nth, total, evl_strerror(-f->error), evl_strerror(rc),
                    fired, live_blocks, check_dir_count("/proc/self/fd"), fds,
                    count_lines("/proc/self/maps"), maps);
            exit(1);
        }
        if (!fired) t->unreached++; /* this run took a path with fewer calls */
        else if (rc < 0) t->reported++;
        else t->absorbed++;
    }
    return total;
}

static void sweep(const char *name, scenario_fn fn, evl_time stall, const fault *faults,
                  size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        tally t = {0, 0, 0};
        unsigned long calls = sweep_site(fn, stall, &faults[i], &t);
        printf("%s: %s (%s): %lu calls swept: %lu failures reported, %lu absorbed, %lu not "
               "reached\n", name, site_name(faults[i].site), evl_strerror(-faults[i].error),
               calls, t.reported, t.absorbed, t.unreached);
    }
}

static const fault core_faults[] = {
    {SITE_ALLOC, ENOMEM},          {EVL_FAULT_FD_OPEN, EMFILE}, {EVL_FAULT_REGISTER, ENOMEM},
    {EVL_FAULT_WAIT, EINTR},       {EVL_FAULT_WAIT, ENOMEM},
};

static const fault net_faults[] = {
    {SITE_ALLOC, ENOMEM},           {EVL_FAULT_REGISTER, ENOMEM}, {EVL_FAULT_WAIT, EINTR},
    {EVL_FAULT_MMAP, ENOMEM},       {EVL_FAULT_ACCEPT, EMFILE},   {EVL_FAULT_ACCEPT, ECONNABORTED},
    {EVL_FAULT_READ, ECONNRESET},   {EVL_FAULT_READ, EINTR},      {EVL_FAULT_WRITE, EPIPE},
    {EVL_FAULT_WRITE, EINTR},      {EVL_FAULT_CONNECT, ECONNREFUSED},
};

/* The stacks' own sites once more with guard mappings (the fallback of kernels without guard
   regions): a mapping and an mprotect per stack instead of a slab and a madvise. */
static const fault stack_faults[] = {
    {EVL_FAULT_MMAP, ENOMEM},
};

static const fault pool_faults[] = {
    {SITE_ALLOC, ENOMEM}, {EVL_FAULT_THREAD, EAGAIN}, {EVL_FAULT_MMAP, ENOMEM},
    {EVL_FAULT_WAIT, EINTR},
};

static const fault sig_faults[] = {
    {SITE_ALLOC, ENOMEM}, {EVL_FAULT_SIGACTION, EINVAL}, {EVL_FAULT_WAIT, EINTR},
};

static const fault watchdog_faults[] = {
    {SITE_ALLOC, ENOMEM}, {EVL_FAULT_THREAD, EAGAIN},
};

#define SWEEP(name, fn, stall, table) sweep(name, fn, stall, table, sizeof table / sizeof table[0])

static void setup(void) {
    signal(SIGALRM, on_hang);
    signal(SIGPIPE, SIG_IGN);
}

static void sweep_core(void) {
    setup();
    SWEEP("core", core_scenario, 0, core_faults);
}

static void sweep_tasks_over_tcp(void) {
    setup();
    SWEEP("tasks", net_scenario, 0, net_faults);
}

static void sweep_tasks_with_guard_mappings(void) {
    setup();
    CHECK_EQ(setenv("EVLOOP_STACK_GUARD", "mprotect", 1), 0);
    SWEEP("tasks, guard mappings", net_scenario, 0, stack_faults);
}

static void sweep_executor(void) {
    setup();
    SWEEP("executor", pool_scenario, 0, pool_faults);
}

static void sweep_signals(void) {
    setup();
    SWEEP("signals", sig_scenario, 0, sig_faults);
}

static void sweep_watchdog(void) {
    setup();
    SWEEP("watchdog", watchdog_scenario, 1000 * MS, watchdog_faults);
}

static const check_case cases[] = {
    {"sweep_core", sweep_core},
    {"sweep_tasks_over_tcp", sweep_tasks_over_tcp},
    {"sweep_tasks_with_guard_mappings", sweep_tasks_with_guard_mappings},
    {"sweep_executor", sweep_executor},
    {"sweep_signals", sweep_signals},
    {"sweep_watchdog", sweep_watchdog},
};

CHECK_MAIN(cases)
