/* The error boundary, debug mode and observability: the exception handler (failed detached
   tasks, unjoined failures at close, backend poll failures, accept out of fds), the default
   handler and the log hook, slow-callback reports with registration sites, the stall watchdog,
   loop stats and lag, task hooks, wrong-thread refusals, the virtual clock, the close report.

   Two cases run only for tests/test_debug.py, which checks their output: env_debug_child
   (evl_get_debug with a default config, under EVLOOP_DEBUG or not) and default_handler_child
   (the default exception handler's line on stderr). Both pass when run like the others.
   Built with EVL_TESTING: a backend poll failure is injected. */
#define EVL_TESTING
#define EVLOOP_IMPLEMENTATION
#include "check.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

static evl_time clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Burns CPU for `d` (a slow callback must really run, not sleep). */
static void busy_for(evl_time d) {
    evl_time t0 = clock_ns();
    while (clock_ns() - t0 < d) {
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t a, b;
    if (!s) return 0;
    a = strlen(s);
    b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Every line the loop logs, with its level and the (monotonic) time it arrived. The log hook
   may be called from the watchdog thread or from a foreign thread: a mutex guards it. */
typedef struct log_line {
    int level;
    evl_time at;
    pthread_t thread;
    char text[512];
} log_line;

#define MAX_LOG 128
static struct {
    pthread_mutex_t lock;
    log_line lines[MAX_LOG];
    int n;
} logs = {PTHREAD_MUTEX_INITIALIZER, {{0, 0, 0, {0}}}, 0};

static void capture_log(int level, const char *message, void *ud) {
    evl_time at = clock_ns();
    (void)ud;
    pthread_mutex_lock(&logs.lock);
    if (logs.n < MAX_LOG) {
        logs.lines[logs.n].level = level;
        logs.lines[logs.n].at = at;
        logs.lines[logs.n].thread = pthread_self();
        snprintf(logs.lines[logs.n].text, sizeof logs.lines[logs.n].text, "%s", message);
    }
    logs.n++;
    pthread_mutex_unlock(&logs.lock);
}

static int log_count(void) {
    int n;
    pthread_mutex_lock(&logs.lock);
    n = logs.n;
    pthread_mutex_unlock(&logs.lock);
    return n;
}

/* The number of lines at `level` (-1: any) containing `needle`; *first gets the first one. */
static int log_find(int level, const char *needle, log_line *first) {
    int i, found = 0;
    pthread_mutex_lock(&logs.lock);
    for (i = 0; i < logs.n && i < MAX_LOG; i++) {
        if (level >= 0 && logs.lines[i].level != level) continue;
        if (!strstr(logs.lines[i].text, needle)) continue;
        if (found++ == 0 && first) *first = logs.lines[i];
    }
    pthread_mutex_unlock(&logs.lock);
    return found;
}

static void log_dump(void) {
    int i;
    pthread_mutex_lock(&logs.lock);
    for (i = 0; i < logs.n && i < MAX_LOG; i++)
        fprintf(stderr, "  log[%d] level %d: %s\n", i, logs.lines[i].level, logs.lines[i].text);
    pthread_mutex_unlock(&logs.lock);
}

/* A loop on the harness's backend (AUTO reads EVLOOP_BACKEND) with the given debug setting
   (-1: from EVLOOP_DEBUG), the capturing log hook, and optionally a stall threshold or the
   virtual clock. A hang fails the case fast. */
static evl_loop *dloop_new_full(int debug, evl_time stall, int clock) {
    evl_config cfg;
    evl_loop *loop = NULL;
    check_watchdog(20);
    pthread_mutex_lock(&logs.lock);
    logs.n = 0;
    pthread_mutex_unlock(&logs.lock);
    evl_config_init(&cfg);
    cfg.backend = EVL_BACKEND_AUTO;
    cfg.debug = debug ? EVL_DEBUG_ON : EVL_DEBUG_OFF;
    cfg.stall_threshold = stall;
    cfg.clock = clock;
    cfg.log = capture_log;
    cfg.log_ud = NULL;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    if (debug >= 0) CHECK_EQ(evl_get_debug(loop), debug);
    return loop;
}

static evl_loop *dloop_new(int debug) {
    return dloop_new_full(debug, 0, EVL_CLOCK_MONOTONIC);
}

/* What the exception handler saw. */
#define MAX_EXC 16
typedef struct exc_rec {
    int n;
    char message[MAX_EXC][160];
    int error[MAX_EXC];
    evl_task *task[MAX_EXC];
    char name[MAX_EXC][40];
    int has_name[MAX_EXC];
    const char *file[MAX_EXC];
    int line[MAX_EXC];
    int call_default;   /* also hand it to evl_default_exception_handler */
} exc_rec;

static void record_exc(evl_loop *loop, const evl_exception *e, void *ud) {
    exc_rec *r = (exc_rec *)ud;
    if (r->n < MAX_EXC) {
        int i = r->n;
        snprintf(r->message[i], sizeof r->message[i], "%s", e->message ? e->message : "(null)");
        r->error[i] = e->error;
        r->task[i] = e->task;
        r->has_name[i] = e->task_name != NULL;
        snprintf(r->name[i], sizeof r->name[i], "%s", e->task_name ? e->task_name : "");
        r->file[i] = e->file;
        r->line[i] = e->line;
    }
    r->n++;
    if (r->call_default) evl_default_exception_handler(loop, e);
}

/* What the slow-callback receiver saw. */
#define MAX_SLOW 8
typedef struct slow_rec {
    int n;
    char what[MAX_SLOW][40];
    const char *file[MAX_SLOW];
    int line[MAX_SLOW];
    evl_time duration[MAX_SLOW];
} slow_rec;

static void record_slow(evl_loop *loop, const evl_slow_report *r, void *ud) {
    slow_rec *s = (slow_rec *)ud;
    (void)loop;
    if (s->n < MAX_SLOW) {
        snprintf(s->what[s->n], sizeof s->what[s->n], "%s", r->what ? r->what : "(null)");
        s->file[s->n] = r->file;
        s->line[s->n] = r->line;
        s->duration[s->n] = r->duration;
    }
    s->n++;
}

static evl_task_opts named(const char *name) {
    evl_task_opts o;
    memset(&o, 0, sizeof o);
    o.name = name;
    return o;
}

/* Callbacks, timers, tasks and watchers that burn CPU for *(evl_time *)arg. */
static void busy_cb(evl_loop *loop, void *arg) {
    (void)loop;
    busy_for(*(evl_time *)arg);
}

static int busy_task(evl_loop *loop, void *arg) {
    (void)loop;
    busy_for(*(evl_time *)arg);
    return 0;
}

typedef struct busy_io {
    evl_io w;
    evl_time d;
    int fd;
    int ran;
} busy_io;

static void busy_io_cb(evl_loop *loop, void *arg, int events) {
    busy_io *b = (busy_io *)arg;
    char c;
    ssize_t r;
    (void)events;
    busy_for(b->d);
    r = read(b->fd, &c, 1);
    (void)r;
    b->ran++;
    CHECK_OK(evl_io_stop(loop, &b->w));
}

static void flag_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (*(int *)arg)++;
}

static void io_flag_cb(evl_loop *loop, void *arg, int events) {
    (void)loop;
    (void)events;
    (*(int *)arg)++;
}

static int return_arg_task(evl_loop *loop, void *arg) {
    (void)loop;
    return (int)(intptr_t)arg;
}

/* Runs the loop until *flag reaches want (or 5 s pass). */
static void run_until(evl_loop *loop, const int *flag, int want) {
    evl_time end = clock_ns() + EVL_SEC(5) * (evl_time)check_time_scale();
    while (*flag < want && clock_ns() < end) CHECK(evl_run_once(loop, EVL_MSEC(20)) >= 0);
    CHECK_EQ(*flag, want);
}

/* ---- the exception handler ---- */

static evl_task *sleeper_self;

static int sleeps_until_cancelled(evl_loop *loop, void *arg) {
    (void)arg;
    sleeper_self = evl_task_current(loop);
    return evl_sleep(loop, EVL_SEC(3600)); /* -ECANCELED */
}

/* worker-7 (detached) returns -EIO: one report, naming it; with debug on at spawn it carries
   the spawn site. Detached tasks that return -ECANCELED, are cancelled, or return 0 are not
   reported. Nothing more is reported later, at close included. */
static void detached_failure_reported_once(int debug) {
    evl_loop *loop = dloop_new(debug);
    exc_rec rec;
    evl_task_opts w7 = named("worker-7"), c1 = named("returns-ecanceled"),
                  c2 = named("cancelled"), ok = named("succeeds");
    int site;
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-EIO, &w7)); site = __LINE__;
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-ECANCELED, &c1));
    CHECK_OK(evl_task_spawn(loop, NULL, sleeps_until_cancelled, NULL, &c2));
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)0, &ok));
    CHECK(evl_run_once(loop, 0) >= 4);
    CHECK(sleeper_self != NULL);
    CHECK_OK(evl_task_cancel(loop, sleeper_self));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(rec.n, 1);
    CHECK(strstr(rec.message[0], "detached") != NULL);
    CHECK_EQ(rec.error[0], -EIO);
    CHECK(rec.task[0] != NULL);
    CHECK(rec.has_name[0]);
    CHECK(strcmp(rec.name[0], "worker-7") == 0);
    if (debug) {
        CHECK(ends_with(rec.file[0], "test_debug.c"));
        CHECK_EQ(rec.line[0], site);
    } else {
        CHECK(rec.file[0] == NULL);
        CHECK_EQ(rec.line[0], 0);
    }
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(rec.n, 1);
    CHECK_EQ(log_count(), 0); /* a custom handler took it: nothing was logged */
}

static void detached_failure_debug_on(void) {
    detached_failure_reported_once(1);
}

static void detached_failure_debug_off(void) {
    detached_failure_reported_once(0);
}

/* The site is recorded at spawn only when debug mode is on then: turning it on later adds
   none, and turning it off later keeps the one recorded. */
static void spawn_site_follows_debug_at_spawn(void) {
    evl_loop *loop = dloop_new(0);
    exc_rec rec;
    evl_task_opts a = named("spawned-off"), b = named("spawned-on");
    int site_b;
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-EIO, &a));
    evl_set_debug(loop, 1);
    CHECK_EQ(evl_get_debug(loop), 1);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-ENOENT, &b)); site_b = __LINE__;
    evl_set_debug(loop, 0);
    CHECK_EQ(evl_get_debug(loop), 0);
    CHECK_OK(evl_run(loop));
    CHECK_EQ(rec.n, 2);
    CHECK(strcmp(rec.name[0], "spawned-off") == 0);
    CHECK(rec.file[0] == NULL);
    CHECK_EQ(rec.line[0], 0);
    CHECK(strcmp(rec.name[1], "spawned-on") == 0);
    CHECK_EQ(rec.error[1], -ENOENT);
    CHECK(ends_with(rec.file[1], "test_debug.c"));
    CHECK_EQ(rec.line[1], site_b);
    CHECK_OK(evl_loop_close(loop));
}

/* A joinable task that failed and was never joined is reported at close, once. One that was
   joined, one that succeeded and one that returned -ECANCELED are not. */
static void unjoined_failure_reported_at_close(void) {
    evl_loop *loop = dloop_new(1);
    exc_rec rec;
    evl_task_opts miss = named("never-joined"), joined = named("joined"), fine = named("fine"),
                  canc = named("cancelled-unjoined");
    evl_task *t_miss, *t_joined, *t_fine, *t_canc;
    int result = 0, site;
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    CHECK_OK(evl_task_spawn(loop, &t_miss, return_arg_task, (void *)(intptr_t)-EIO, &miss)); site = __LINE__;
    CHECK_OK(evl_task_spawn(loop, &t_joined, return_arg_task, (void *)(intptr_t)-EPIPE, &joined));
    CHECK_OK(evl_task_spawn(loop, &t_fine, return_arg_task, (void *)(intptr_t)0, &fine));
    CHECK_OK(evl_task_spawn(loop, &t_canc, return_arg_task, (void *)(intptr_t)-ECANCELED, &canc));
    CHECK_OK(evl_run(loop));
    CHECK(evl_task_done(t_miss));
    CHECK_OK(evl_task_join(loop, t_joined, &result));
    CHECK_EQ(result, -EPIPE);
    CHECK_EQ(rec.n, 0); /* not while the loop lives: it may still be joined */
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(rec.n, 1);
    CHECK(strstr(rec.message[0], "not collected") != NULL ||
          strstr(rec.message[0], "without its result collected") != NULL);
    CHECK(strstr(rec.message[0], "detached") == NULL);
    CHECK_EQ(rec.error[0], -EIO);
    CHECK(strcmp(rec.name[0], "never-joined") == 0);
    CHECK(rec.task[0] == t_miss);
    CHECK(ends_with(rec.file[0], "test_debug.c"));
    CHECK_EQ(rec.line[0], site);
}

/* A custom handler that calls evl_default_exception_handler: exactly one line through the log
   hook, at EVL_LOG_ERROR, with the message, the error text, the task name (and, debug on at
   spawn, the site). With no handler set (or NULL again), the default does the same itself. */
static void default_handler_logs_one_error_line(void) {
    evl_loop *loop = dloop_new(1);
    exc_rec rec;
    evl_task_opts w7 = named("worker-7"), w8 = named("worker-8");
    log_line line;
    char site_text[64];
    int site;
    memset(&rec, 0, sizeof rec);
    rec.call_default = 1;
    evl_set_exception_handler(loop, record_exc, &rec);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-EIO, &w7)); site = __LINE__;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(rec.n, 1);
    CHECK_EQ(log_count(), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, rec.message[0], &line), 1);
    CHECK(strstr(line.text, evl_strerror(-EIO)) != NULL);
    CHECK(strstr(line.text, "worker-7") != NULL);
    CHECK(strchr(line.text, '\n') == NULL);
    snprintf(site_text, sizeof site_text, "test_debug.c:%d", site);
    CHECK(strstr(line.text, site_text) != NULL);

    /* Back to the default handler: it logs the same way by itself. */
    evl_set_exception_handler(loop, NULL, NULL);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-ENOENT, &w8));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(rec.n, 1);
    CHECK_EQ(log_count(), 2);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "worker-8", &line), 1);
    CHECK(strstr(line.text, "detached task failed") != NULL);
    CHECK(strstr(line.text, evl_strerror(-ENOENT)) != NULL);
    CHECK_OK(evl_loop_close(loop));
    if (log_count() != 2) log_dump();
    CHECK_EQ(log_count(), 2);
}

/* evl_call_exception_handler hands an exception to the handler as the loop does, and drops
   -ECANCELED. */
static void call_exception_handler_drops_ecanceled(void) {
    evl_loop *loop = dloop_new(0);
    exc_rec rec;
    evl_exception e;
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    memset(&e, 0, sizeof e);
    e.message = "custom trouble";
    e.error = -ECANCELED;
    evl_call_exception_handler(loop, &e);
    CHECK_EQ(rec.n, 0);
    e.error = -EPIPE;
    e.task_name = "somebody";
    e.file = "elsewhere.c";
    e.line = 42;
    evl_call_exception_handler(loop, &e);
    CHECK_EQ(rec.n, 1);
    CHECK(strcmp(rec.message[0], "custom trouble") == 0);
    CHECK_EQ(rec.error[0], -EPIPE);
    CHECK(strcmp(rec.name[0], "somebody") == 0);
    CHECK(strcmp(rec.file[0], "elsewhere.c") == 0);
    CHECK_EQ(rec.line[0], 42);
    CHECK_EQ(log_count(), 0);
    /* The default handler through the log hook, and -ECANCELED dropped there too. */
    evl_set_exception_handler(loop, NULL, NULL);
    evl_call_exception_handler(loop, &e);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "custom trouble", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "elsewhere.c:42", NULL), 1);
    e.error = -ECANCELED;
    evl_call_exception_handler(loop, &e);
    CHECK_EQ(log_count(), 1);
    CHECK_OK(evl_loop_close(loop));
}

/* evl_strerror names the errors a task commonly fails with (the default handler's line is
   all an operator sees of the failure). */
static void strerror_names_common_errors(void) {
    static const int codes[] = {EIO, EACCES, EADDRINUSE, ENOTSOCK, ENETUNREACH, EHOSTUNREACH,
                                ECONNABORTED, EISDIR};
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (strcmp(evl_strerror(-codes[i]), "unknown error") == 0)
            fprintf(stderr, "evl_strerror(-%d) (%s) is \"unknown error\"\n", codes[i],
                    strerror(codes[i]));
    }
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        CHECK(strcmp(evl_strerror(-codes[i]), "unknown error") != 0);
}

/* A backend poll failure ends evl_run / evl_run_once with the error and reaches the handler
   (no task: task and task_name NULL), and the loop works again afterwards. The failure is
   injected (EVL_TESTING), so every backend has it the same way. */
static void poll_failure_reported(void) {
    evl_loop *loop = dloop_new(0);
    exc_rec rec;
    evl_timer t;
    int fired = 0;
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    evl_timer_init(&t, flag_cb, &fired);
    /* Far enough that the failing polls do block, however slow the machine (Valgrind). */
    CHECK_OK(evl_timer_start(loop, &t, EVL_SEC(60), 0));
    evl_fault_arm(EVL_FAULT_WAIT, 1, EINVAL);
    CHECK_EQ(evl_run(loop), -EINVAL);
    CHECK_EQ(rec.n, 1);
    CHECK_EQ(rec.error[0], -EINVAL);
    evl_fault_arm(EVL_FAULT_WAIT, 1, EINVAL);
    CHECK_EQ(evl_run_once(loop, EVL_MSEC(5)), -EINVAL);
    CHECK_EQ(rec.n, 2);
    CHECK_EQ(fired, 0);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(5), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fired, 1);
    CHECK(strstr(rec.message[0], "poll") != NULL);
    CHECK(rec.task[0] == NULL);
    CHECK(!rec.has_name[0]);
    CHECK(rec.file[0] == NULL);
    CHECK_EQ(rec.line[0], 0);
    CHECK_OK(evl_loop_close(loop));
}

/* evl_accept out of fds (EMFILE): the caller gets -EMFILE, the handler hears of it at most
   once a second. The process's fd limit is lowered to exactly the fds in use, with a
   connection waiting in the backlog, so accept keeps failing. */
typedef struct accept_ctx {
    int listen_fd;
    int rc[4];
    int reports_before_sleep;
    exc_rec *rec;
} accept_ctx;

/* evl_accept with the process out of fds: the accept fails with EMFILE (injected: lowering
   RLIMIT_NOFILE instead works on a real kernel but not under Valgrind, which keeps fds of
   its own), while a connection waits in the backlog. */
static int accept_out_of_fds(evl_loop *loop, int listen_fd) {
    evl_fault_arm(EVL_FAULT_ACCEPT, 1, EMFILE);
    return evl_accept(loop, listen_fd, NULL, NULL);
}

static int accept_task(evl_loop *loop, void *arg) {
    accept_ctx *a = (accept_ctx *)arg;
    int i, fd;
    for (i = 0; i < 3; i++) a->rc[i] = accept_out_of_fds(loop, a->listen_fd);
    a->reports_before_sleep = a->rec->n;
    CHECK_OK(evl_sleep(loop, EVL_MSEC(1050)));
    a->rc[3] = accept_out_of_fds(loop, a->listen_fd);
    fd = evl_accept(loop, a->listen_fd, NULL, NULL);
    CHECK(fd >= 0);
    close(fd);
    return 0;
}

static void accept_out_of_fds_rate_limited(int clock) {
    evl_loop *loop = dloop_new_full(0, 0, clock);
    exc_rec rec;
    accept_ctx a;
    evl_task_opts opts = named("acceptor");
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int client, i;
    memset(&rec, 0, sizeof rec);
    memset(&a, 0, sizeof a);
    a.rec = &rec;
    evl_set_exception_handler(loop, record_exc, &rec);
    a.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(a.listen_fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(a.listen_fd, (struct sockaddr *)&sa, sizeof sa));
    CHECK_OK(listen(a.listen_fd, 8));
    CHECK_OK(getsockname(a.listen_fd, (struct sockaddr *)&sa, &sl));
    client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(client >= 0);
    CHECK_OK(connect(client, (struct sockaddr *)&sa, sizeof sa)); /* completes in the backlog */
    CHECK_OK(evl_task_spawn(loop, NULL, accept_task, &a, &opts));
    CHECK_OK(evl_run(loop));
    for (i = 0; i < 4; i++) CHECK_EQ(a.rc[i], -EMFILE);
    CHECK_EQ(a.reports_before_sleep, 1);
    CHECK_EQ(rec.n, 2);
    for (i = 0; i < 2; i++) {
        CHECK(strstr(rec.message[i], "accept") != NULL);
        CHECK_EQ(rec.error[i], -EMFILE);
        CHECK(strcmp(rec.name[i], "acceptor") == 0);
    }
    close(client);
    close(a.listen_fd);
    CHECK_OK(evl_loop_close(loop));
}

static void accept_emfile_rate_limited(void) {
    accept_out_of_fds_rate_limited(EVL_CLOCK_MONOTONIC);
}

/* The same on the virtual clock, which starts at 0 and stands still while the task runs. */
static void accept_emfile_rate_limited_virtual_clock(void) {
    accept_out_of_fds_rate_limited(EVL_CLOCK_VIRTUAL);
}

/* ---- slow callbacks ---- */

static void slow_callback_reported_with_site(void) {
    evl_loop *loop = dloop_new(1);
    slow_rec s;
    evl_stats st;
    evl_time d = EVL_MSEC(150);
    int site;
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d)); site = __LINE__;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 1);
    CHECK(strcmp(s.what[0], "callback") == 0);
    CHECK(ends_with(s.file[0], "test_debug.c"));
    CHECK_EQ(s.line[0], site);
    CHECK(s.duration[0] >= EVL_MSEC(150));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    CHECK_EQ(log_count(), 0); /* the receiver took it */
    CHECK_OK(evl_loop_close(loop));
}

static void slow_timer_reported_with_site(void) {
    evl_loop *loop = dloop_new(1);
    slow_rec s;
    evl_stats st;
    evl_timer t;
    evl_time d = EVL_MSEC(150);
    int site;
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    evl_timer_init(&t, busy_cb, &d); site = __LINE__;
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(1), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 1);
    CHECK(strcmp(s.what[0], "timer") == 0);
    CHECK(ends_with(s.file[0], "test_debug.c"));
    CHECK_EQ(s.line[0], site);
    CHECK(s.duration[0] >= EVL_MSEC(150));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    CHECK_OK(evl_loop_close(loop));
}

static int naps_then_busy(evl_loop *loop, void *arg) {
    CHECK_OK(evl_sleep(loop, EVL_MSEC(1)));
    busy_for(*(evl_time *)arg);
    return 0;
}

static void slow_task_step_reported_with_name(void) {
    evl_loop *loop = dloop_new(1);
    slow_rec s;
    evl_stats st;
    evl_task *t;
    evl_task_opts opts = named("slowpoke"), nap = named("napper");
    evl_time d = EVL_MSEC(150), d2 = EVL_MSEC(60);
    int site, nap_site, result = 1;
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    CHECK_OK(evl_task_spawn(loop, &t, busy_task, &d, &opts)); site = __LINE__;
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, t, &result));
    CHECK_OK(result);
    CHECK_EQ(s.n, 1);
    CHECK(strcmp(s.what[0], "slowpoke") == 0);
    CHECK(ends_with(s.file[0], "test_debug.c"));
    CHECK_EQ(s.line[0], site);
    CHECK(s.duration[0] >= EVL_MSEC(150));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    /* A step resumed by the task's own sleep timer is the task's, not a "timer". */
    evl_set_slow_callback(loop, EVL_MSEC(40), record_slow, &s);
    CHECK_OK(evl_task_spawn(loop, NULL, naps_then_busy, &d2, &nap)); nap_site = __LINE__;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 2);
    CHECK(strcmp(s.what[1], "napper") == 0);
    CHECK(ends_with(s.file[1], "test_debug.c"));
    CHECK_EQ(s.line[1], nap_site);
    CHECK(s.duration[1] >= EVL_MSEC(60));
    CHECK_OK(evl_loop_close(loop));
}

static void slow_io_watcher_reported_with_site(void) {
    evl_loop *loop = dloop_new(1);
    slow_rec s;
    evl_stats st;
    busy_io b;
    int p[2], site;
    memset(&s, 0, sizeof s);
    memset(&b, 0, sizeof b);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    CHECK_OK(pipe(p));
    CHECK_EQ(write(p[1], "x", 1), 1);
    b.d = EVL_MSEC(150);
    b.fd = p[0];
    evl_io_init(&b.w, p[0], busy_io_cb, &b); site = __LINE__;
    CHECK_OK(evl_io_start(loop, &b.w, EVL_READ));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(b.ran, 1);
    CHECK_EQ(s.n, 1);
    CHECK(strcmp(s.what[0], "I/O watcher") == 0);
    CHECK(ends_with(s.file[0], "test_debug.c"));
    CHECK_EQ(s.line[0], site);
    CHECK(s.duration[0] >= EVL_MSEC(150));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    close(p[0]);
    close(p[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* Debug off: the same slow callback, timer and task step are not reported (by the receiver,
   or by the log). */
static void no_slow_reports_without_debug(void) {
    evl_loop *loop = dloop_new(0);
    slow_rec s;
    evl_stats st;
    evl_timer t;
    evl_task *task;
    evl_task_opts opts = named("slowpoke");
    evl_time d = EVL_MSEC(150);
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d));
    evl_timer_init(&t, busy_cb, &d);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(1), 0));
    CHECK_OK(evl_task_spawn(loop, &task, busy_task, &d, &opts));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, task, NULL));
    CHECK_EQ(s.n, 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 0);
    CHECK_EQ(log_count(), 0);
    CHECK_OK(evl_loop_close(loop));
}

/* A callback queued while debug mode was off carries no site even if debug is on when it
   runs; it is still reported (as a plain callback). */
static void call_soon_site_only_when_queued_in_debug(void) {
    evl_loop *loop = dloop_new(0);
    slow_rec s;
    evl_time d = EVL_MSEC(30);
    int site;
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, EVL_MSEC(20), record_slow, &s);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d));
    evl_set_debug(loop, 1);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d)); site = __LINE__;
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 2);
    CHECK(strcmp(s.what[0], "callback") == 0);
    CHECK(s.file[0] == NULL);
    CHECK_EQ(s.line[0], 0);
    CHECK(strcmp(s.what[1], "callback") == 0);
    CHECK(ends_with(s.file[1], "test_debug.c"));
    CHECK_EQ(s.line[1], site);
    CHECK_OK(evl_loop_close(loop));
}

/* evl_set_slow_callback's threshold: 20 ms reports a 30 ms callback and not an empty one;
   0 goes back to the default 100 ms. */
static void slow_threshold_can_be_changed(void) {
    evl_loop *loop = dloop_new(1);
    slow_rec s;
    evl_stats st;
    evl_time d30 = EVL_MSEC(30), d0 = 0;
    memset(&s, 0, sizeof s);
    evl_set_slow_callback(loop, EVL_MSEC(20), record_slow, &s);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d0));
    CHECK_OK(evl_call_soon(loop, busy_cb, &d30));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 1);
    CHECK(s.duration[0] >= EVL_MSEC(30));
    CHECK(strcmp(s.what[0], "callback") == 0);
    evl_set_slow_callback(loop, 0, record_slow, &s);
    CHECK_OK(evl_call_soon(loop, busy_cb, &d30));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(s.n, 1);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    CHECK_OK(evl_loop_close(loop));
}

/* No receiver: one WARN line through the log hook naming what and where. */
static void default_slow_report_is_one_warn_line(void) {
    evl_loop *loop = dloop_new(1);
    evl_time d = EVL_MSEC(150);
    evl_stats st;
    log_line line;
    char site_text[64];
    int site;
    CHECK_OK(evl_call_soon(loop, busy_cb, &d)); site = __LINE__;
    CHECK_OK(evl_run(loop));
    if (log_count() != 1) log_dump();
    CHECK_EQ(log_count(), 1);
    CHECK_EQ(log_find(EVL_LOG_WARN, "slow", &line), 1);
    CHECK(strstr(line.text, "callback") != NULL);
    snprintf(site_text, sizeof site_text, "test_debug.c:%d", site);
    CHECK(strstr(line.text, site_text) != NULL);
    CHECK(strchr(line.text, '\n') == NULL);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.slow_callbacks, 1);
    CHECK_OK(evl_loop_close(loop));
}

/* A report about something registered without a site (the plain function, not the macro)
   names no file and no line: no stray ":0". The same for the watchdog's line. */
static void reports_without_site_print_no_line_number(void) {
    evl_loop *loop = dloop_new_full(1, EVL_MSEC(40), EVL_CLOCK_MONOTONIC);
    evl_time d = EVL_MSEC(150);
    log_line slow, stall;
    evl_set_slow_callback(loop, EVL_MSEC(20), NULL, NULL);
    CHECK_OK((evl_call_soon)(loop, busy_cb, &d));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_loop_close(loop));
    if (log_find(EVL_LOG_WARN, "slow", &slow) != 1 || log_find(EVL_LOG_WARN, "stalled", &stall) != 1)
        log_dump();
    CHECK_EQ(log_find(EVL_LOG_WARN, "slow", &slow), 1);
    CHECK_EQ(log_find(EVL_LOG_WARN, "stalled", &stall), 1);
    if (strstr(slow.text, ":0") || strstr(stall.text, ":0")) log_dump();
    CHECK(strstr(slow.text, "callback:0") == NULL);
    CHECK(strstr(stall.text, "callback:0") == NULL);
}

/* ---- the stall watchdog ---- */

typedef struct stall_probe {
    evl_time busy, began, returned;
} stall_probe;

static void stall_cb(evl_loop *loop, void *arg) {
    stall_probe *p = (stall_probe *)arg;
    (void)loop;
    p->began = clock_ns();
    busy_for(p->busy);
    p->returned = clock_ns();
}

static int stall_task(evl_loop *loop, void *arg) {
    stall_cb(loop, arg);
    return 0;
}

/* A 500 ms callback with a 100 ms threshold: the watchdog says so while it still runs (from
   its own thread, through the log hook), once; a stuck task step is named. */
static void watchdog_reports_a_stall_while_it_lasts(void) {
    evl_loop *loop = dloop_new_full(0, EVL_MSEC(100), EVL_CLOCK_MONOTONIC);
    stall_probe p, q;
    evl_stats st;
    evl_task *t;
    evl_task_opts opts = named("stuck-task");
    log_line line;
    memset(&p, 0, sizeof p);
    memset(&q, 0, sizeof q);
    p.busy = EVL_MSEC(500);
    q.busy = EVL_MSEC(300);
    CHECK_OK(evl_call_soon(loop, stall_cb, &p));
    CHECK_OK(evl_run(loop));
    if (log_find(EVL_LOG_WARN, "stalled", NULL) != 1) log_dump();
    CHECK_EQ(log_find(EVL_LOG_WARN, "stalled", &line), 1);
    CHECK(strstr(line.text, "callback") != NULL);
    CHECK(line.at >= p.began + EVL_MSEC(100));
    CHECK(line.at < p.returned);
    CHECK(!pthread_equal(line.thread, pthread_self())); /* the watchdog's own thread */
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.stalls, 1);
    CHECK_EQ(st.slow_callbacks, 0); /* debug is off: no slow reports, only the watchdog */

    CHECK_OK(evl_task_spawn(loop, &t, stall_task, &q, &opts));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_task_join(loop, t, NULL));
    CHECK_EQ(log_find(EVL_LOG_WARN, "stalled", NULL), 2);
    CHECK_EQ(log_find(EVL_LOG_WARN, "stuck-task", &line), 1);
    CHECK(line.at >= q.began + EVL_MSEC(100));
    CHECK(line.at < q.returned);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.stalls, 2);
    CHECK_OK(evl_loop_close(loop));
}

typedef struct quick_chain {
    int left;
} quick_chain;

static void quick_cb(evl_loop *loop, void *arg) {
    quick_chain *c = (quick_chain *)arg;
    busy_for(EVL_MSEC(2));
    if (--c->left > 0) CHECK_OK(evl_call_soon(loop, quick_cb, c));
}

/* Many quick callbacks (300 ms in all, 2 ms each) and a loop idle in its poll for 300 ms are
   not stalls (threshold 200 ms). */
static void watchdog_quiet_for_quick_callbacks(void) {
    evl_loop *loop = dloop_new_full(0, EVL_MSEC(200), EVL_CLOCK_MONOTONIC);
    quick_chain c;
    evl_timer t;
    evl_stats st;
    int fired = 0, i;
    quick_chain burst[75];
    c.left = 75;
    CHECK_OK(evl_call_soon(loop, quick_cb, &c));
    for (i = 0; i < 75; i++) {
        burst[i].left = 1;
        CHECK_OK(evl_call_soon(loop, quick_cb, &burst[i]));
    }
    CHECK_OK(evl_run(loop));
    evl_timer_init(&t, flag_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(300), 0));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fired, 1);
    if (log_count()) log_dump();
    CHECK_EQ(log_find(-1, "stalled", NULL), 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.stalls, 0);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- stats ---- */

static int waits_for_event(evl_loop *loop, void *arg) {
    return evl_event_wait(loop, (evl_event *)arg);
}

static void stats_count_what_ran(void) {
    evl_loop *loop = dloop_new(0);
    evl_stats st, before;
    evl_timer timers[3], far;
    evl_io w;
    evl_event *e;
    evl_task *j1, *j2;
    int i, called = 0, fired = 0, io_ran = 0, p[2], r1 = 1, r2 = 1;
    CHECK_OK(pipe(p));
    CHECK_OK(evl_event_new(loop, &e));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.iterations, 0);
    CHECK_EQ(st.callbacks, 0);
    CHECK_EQ(st.tasks_spawned, 0);
    CHECK_EQ(st.tasks_alive, 0);
    CHECK_EQ(st.timers, 0);
    CHECK_EQ(st.fds, 0);
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    CHECK_EQ(st.slow_callbacks, 0);
    CHECK_EQ(st.stalls, 0);
    /* N = 5 callbacks, M = 3 timers that fire and one that does not, one watcher that never
       becomes ready, K = 4 tasks (two detached that finish, two joinable that wait). */
    for (i = 0; i < 5; i++) CHECK_OK(evl_call_soon(loop, flag_cb, &called));
    for (i = 0; i < 3; i++) {
        evl_timer_init(&timers[i], flag_cb, &fired);
        CHECK_OK(evl_timer_start(loop, &timers[i], EVL_MSEC(1 + i), 0));
    }
    evl_timer_init(&far, flag_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &far, EVL_SEC(3600), 0));
    evl_io_init(&w, p[0], io_flag_cb, &io_ran);
    CHECK_OK(evl_io_start(loop, &w, EVL_READ));
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)0, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)0, NULL));
    CHECK_OK(evl_task_spawn(loop, &j1, waits_for_event, e, NULL));
    CHECK_OK(evl_task_spawn(loop, &j2, waits_for_event, e, NULL));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.tasks_spawned, 4);
    CHECK_EQ(st.tasks_alive, 4);
    CHECK_EQ(st.timers, 4);
    CHECK_EQ(st.fds, 1);
    before = st;
    CHECK(evl_run_once(loop, 0) > 0);
    evl_loop_stats(loop, &st);
    CHECK(st.iterations > before.iterations);
    CHECK_EQ(called, 5);
    CHECK_EQ(st.tasks_alive, 2);
    run_until(loop, &fired, 3);
    evl_loop_stats(loop, &st);
    CHECK(st.callbacks >= 5 + 3);
    CHECK(st.callbacks >= 5 + 3 + 4); /* the task steps count too */
    CHECK_EQ(st.tasks_spawned, 4);
    CHECK_EQ(st.tasks_alive, 2);
    CHECK_EQ(st.timers, 1);
    CHECK_EQ(st.fds, 1);
    CHECK(st.lag_last >= 0);
    CHECK(st.lag_max >= st.lag_last);
    CHECK_EQ(io_ran, 0);
    before = st;
    CHECK_EQ(evl_run_once(loop, 0), 0);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.iterations, before.iterations + 1);
    CHECK_EQ(st.callbacks, before.callbacks);
    /* The joinable tasks finish: no longer alive (even before they are joined). */
    evl_event_set(loop, e);
    CHECK(evl_run_once(loop, 0) >= 2);
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.tasks_alive, 0);
    CHECK_EQ(st.tasks_spawned, 4);
    CHECK_OK(evl_task_join(loop, j1, &r1));
    CHECK_OK(evl_task_join(loop, j2, &r2));
    CHECK_OK(r1);
    CHECK_OK(r2);
    CHECK_OK(evl_timer_stop(loop, &far));
    CHECK_OK(evl_io_stop(loop, &w));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.timers, 0);
    CHECK_EQ(st.fds, 0);
    CHECK_EQ(st.executor_queue, 0);
    CHECK_EQ(st.executor_busy, 0);
    evl_event_free(loop, e);
    close(p[0]);
    close(p[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* Loop lag: how late a timer fires. A 40 ms timer, and a callback that blocks the loop for
   100 ms from the start: the timer becomes due while the callback blocks, and fires about
   60 ms late. */
static void stats_lag_timer_due_during_blocking_callback(void) {
    evl_loop *loop = dloop_new(0);
    evl_stats st;
    evl_timer t;
    evl_time d = EVL_MSEC(100);
    int fired = 0;
    evl_timer_init(&t, flag_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(40), 0));
    CHECK_OK(evl_call_soon(loop, busy_cb, &d));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fired, 1);
    evl_loop_stats(loop, &st);
    CHECK(st.lag_max >= EVL_MSEC(40));
    CHECK(st.lag_last >= EVL_MSEC(40));
    CHECK(st.lag_max >= st.lag_last);
    CHECK_OK(evl_loop_close(loop));
}

/* A 1 ms timer that is already due when the loop starts its drain, queued behind a callback
   that blocks 50 ms: it fires about 50 ms late, and the lag must say so (not the lateness at
   the moment the drain began). */
static void stats_lag_timer_already_due_behind_blocking_callback(void) {
    evl_loop *loop = dloop_new(0);
    evl_stats st;
    evl_timer t;
    evl_time d = EVL_MSEC(50), fired_at = 0, began;
    int fired = 0;
    evl_timer_init(&t, flag_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &t, EVL_MSEC(1), 0));
    busy_for(EVL_MSEC(3)); /* the timer is due now */
    CHECK_OK(evl_call_soon(loop, busy_cb, &d));
    began = clock_ns();
    CHECK_OK(evl_run(loop));
    fired_at = clock_ns();
    CHECK_EQ(fired, 1);
    CHECK(fired_at - began >= EVL_MSEC(50));
    evl_loop_stats(loop, &st);
    if (st.lag_max < EVL_MSEC(40))
        fprintf(stderr, "lag_max %.1f ms, lag_last %.1f ms for a timer that fired after a 50 ms "
                "callback\n", (double)st.lag_max / 1e6, (double)st.lag_last / 1e6);
    CHECK(st.lag_max >= EVL_MSEC(40));
    CHECK(st.lag_last >= 0);
    CHECK(st.lag_max >= st.lag_last);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- task hooks ---- */

#define MAX_HOOK 16
typedef struct hook_rec {
    int spawns, finishes;
    evl_task *spawned[MAX_HOOK];
    char spawn_name[MAX_HOOK][32];
    int spawn_result[MAX_HOOK];
    evl_task *finished[MAX_HOOK];
    char finish_name[MAX_HOOK][32];
    int finish_result[MAX_HOOK];
} hook_rec;

static void on_spawn_hook(evl_loop *loop, evl_task *t, int result, void *ud) {
    hook_rec *h = (hook_rec *)ud;
    (void)loop;
    CHECK(h->spawns < MAX_HOOK);
    h->spawned[h->spawns] = t;
    snprintf(h->spawn_name[h->spawns], 32, "%s", evl_task_name(t));
    h->spawn_result[h->spawns] = result;
    h->spawns++;
}

static void on_finish_hook(evl_loop *loop, evl_task *t, int result, void *ud) {
    hook_rec *h = (hook_rec *)ud;
    (void)loop;
    CHECK(h->finishes < MAX_HOOK);
    h->finished[h->finishes] = t;
    snprintf(h->finish_name[h->finishes], 32, "%s", evl_task_name(t));
    h->finish_result[h->finishes] = result;
    h->finishes++;
}

static int group_parent(evl_loop *loop, void *arg) {
    evl_group *g;
    evl_task_opts g1 = named("g1"), g2 = named("g2");
    int err;
    (void)arg;
    CHECK_OK(evl_group_new(loop, &g));
    CHECK_OK(evl_group_spawn(loop, g, return_arg_task, (void *)(intptr_t)0, &g1));
    CHECK_OK(evl_group_spawn(loop, g, return_arg_task, (void *)(intptr_t)11, &g2));
    err = evl_group_wait(loop, g);
    evl_group_free(loop, g);
    return err;
}

static int hook_index(char names[][32], int n, const char *name) {
    int i, found = -1;
    for (i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) {
            CHECK_EQ(found, -1); /* once only */
            found = i;
        }
    CHECK(found >= 0);
    return found;
}

static void task_hooks_see_every_task(void) {
    static const char *const names[] = {"det", "join", "parent", "g1", "g2"};
    static const int results[] = {-EIO, 7, 0, 0, 11};
    evl_loop *loop = dloop_new(0);
    hook_rec h;
    exc_rec rec;
    evl_task_opts det = named("det"), join = named("join"), parent = named("parent");
    evl_task *tj, *tp;
    int i, result = 0;
    memset(&h, 0, sizeof h);
    memset(&rec, 0, sizeof rec);
    evl_set_exception_handler(loop, record_exc, &rec);
    evl_set_task_hooks(loop, on_spawn_hook, on_finish_hook, &h);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-EIO, &det));
    CHECK_EQ(h.spawns, 1); /* at spawn, not when it starts */
    CHECK_EQ(h.finishes, 0);
    CHECK_OK(evl_task_spawn(loop, &tj, return_arg_task, (void *)(intptr_t)7, &join));
    CHECK(h.spawned[1] == tj);
    CHECK_OK(evl_task_spawn(loop, &tp, group_parent, NULL, &parent));
    CHECK(h.spawned[2] == tp);
    CHECK_OK(evl_run(loop));
    CHECK_EQ(h.spawns, 5);
    CHECK_EQ(h.finishes, 5);
    for (i = 0; i < 5; i++) {
        int s = hook_index(h.spawn_name, h.spawns, names[i]);
        int f = hook_index(h.finish_name, h.finishes, names[i]);
        CHECK_EQ(h.spawn_result[s], 0);
        CHECK(h.spawned[s] == h.finished[f]);
        CHECK_EQ(h.finish_result[f], results[i]);
    }
    CHECK_EQ(rec.n, 1); /* det's failure, reported as well */
    CHECK_OK(evl_task_join(loop, tj, &result));
    CHECK_EQ(result, 7);
    CHECK_OK(evl_task_join(loop, tp, &result));
    CHECK_EQ(result, 0);
    /* Hooks off again. */
    evl_set_task_hooks(loop, NULL, NULL, NULL);
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)0, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(h.spawns, 5);
    CHECK_EQ(h.finishes, 5);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- wrong-thread checks ---- */

typedef struct foreign {
    evl_loop *loop;
    evl_timer *idle_timer, *active_timer;
    evl_io *idle_io, *active_io;
    int *flag;
    int rc_call_soon, rc_timer_start, rc_timer_stop, rc_io_start, rc_io_stop, rc_spawn;
    int rc_threadsafe;
    evl_task *spawned;
} foreign;

static void *foreign_main(void *arg) {
    foreign *f = (foreign *)arg;
    f->rc_call_soon = evl_call_soon(f->loop, flag_cb, f->flag);
    f->rc_timer_start = evl_timer_start(f->loop, f->idle_timer, 0, 0);
    f->rc_timer_stop = evl_timer_stop(f->loop, f->active_timer);
    f->rc_io_start = evl_io_start(f->loop, f->idle_io, EVL_READ);
    f->rc_io_stop = evl_io_stop(f->loop, f->active_io);
    f->rc_spawn = evl_task_spawn(f->loop, &f->spawned, return_arg_task, NULL, NULL);
    f->rc_threadsafe = evl_call_soon_threadsafe(f->loop, flag_cb, f->flag);
    return NULL;
}

/* Debug on: every loop-thread-only call made from another thread is refused with -EPERM and an
   ERROR line, and changes nothing; evl_call_soon_threadsafe still works. The loop's thread
   is idle meanwhile (it waits in pthread_join): nothing races. */
static void wrong_thread_refused_in_debug(void) {
    evl_loop *loop = dloop_new(1);
    foreign f;
    pthread_t th;
    evl_timer idle_t, active_t;
    evl_io idle_w, active_w;
    evl_stats st;
    int flag = 0, timer_flag = 0, io_flag = 0, p[2];
    CHECK_OK(pipe(p));
    evl_timer_init(&idle_t, flag_cb, &timer_flag);
    evl_timer_init(&active_t, flag_cb, &timer_flag);
    CHECK_OK(evl_timer_start(loop, &active_t, EVL_SEC(3600), 0));
    evl_io_init(&idle_w, p[0], io_flag_cb, &io_flag);
    evl_io_init(&active_w, p[0], io_flag_cb, &io_flag);
    CHECK_OK(evl_io_start(loop, &active_w, EVL_READ));
    memset(&f, 0, sizeof f);
    f.loop = loop;
    f.idle_timer = &idle_t;
    f.active_timer = &active_t;
    f.idle_io = &idle_w;
    f.active_io = &active_w;
    f.flag = &flag;
    CHECK_OK(pthread_create(&th, NULL, foreign_main, &f));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(f.rc_call_soon, -EPERM);
    CHECK_EQ(f.rc_timer_start, -EPERM);
    CHECK_EQ(f.rc_timer_stop, -EPERM);
    CHECK_EQ(f.rc_io_start, -EPERM);
    CHECK_EQ(f.rc_io_stop, -EPERM);
    CHECK_EQ(f.rc_spawn, -EPERM);
    CHECK(f.spawned == NULL);
    CHECK_OK(f.rc_threadsafe);
    if (log_find(EVL_LOG_ERROR, "EPERM", NULL) != 6) log_dump();
    CHECK_EQ(log_find(EVL_LOG_ERROR, "EPERM", NULL), 6);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_call_soon called from", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_timer_start called from", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_timer_stop called from", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_io_start called from", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_io_stop called from", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "evl_task_spawn called from", NULL), 1);
    /* Nothing was queued, started, stopped or spawned. */
    CHECK(!evl_timer_active(&idle_t));
    CHECK(evl_timer_active(&active_t));
    CHECK(!evl_io_active(&idle_w));
    CHECK(evl_io_active(&active_w));
    evl_loop_stats(loop, &st);
    CHECK_EQ(st.timers, 1);
    CHECK_EQ(st.fds, 1);
    CHECK_EQ(st.tasks_spawned, 0);
    CHECK_EQ(st.tasks_alive, 0);
    CHECK_EQ(evl_run_once(loop, 0), 1); /* the threadsafe post only */
    CHECK_EQ(flag, 1);
    CHECK_EQ(timer_flag, 0);
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_EQ(flag, 1);
    /* The same calls from the loop's own thread are fine. */
    CHECK_OK(evl_call_soon(loop, flag_cb, &flag));
    CHECK_OK(evl_timer_stop(loop, &active_t));
    CHECK_OK(evl_io_stop(loop, &active_w));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(flag, 2);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "EPERM", NULL), 6);
    close(p[0]);
    close(p[1]);
    CHECK_OK(evl_loop_close(loop));
}

static void *threadsafe_post_main(void *arg) {
    foreign *f = (foreign *)arg;
    f->rc_threadsafe = evl_call_soon_threadsafe(f->loop, flag_cb, f->flag);
    return NULL;
}

/* Debug off: no check runs and nothing is logged; the other thread only posts with
   evl_call_soon_threadsafe (a real cross-thread call of a loop-thread-only function would be
   a race, not something to test). */
static void wrong_thread_not_checked_without_debug(void) {
    evl_loop *loop = dloop_new(0);
    foreign f;
    pthread_t th;
    int flag = 0;
    memset(&f, 0, sizeof f);
    f.loop = loop;
    f.flag = &flag;
    evl_loop_ref(loop);
    CHECK_OK(pthread_create(&th, NULL, threadsafe_post_main, &f));
    run_until(loop, &flag, 1);
    CHECK_OK(pthread_join(th, NULL));
    evl_loop_unref(loop);
    CHECK_OK(f.rc_threadsafe);
    CHECK_EQ(log_count(), 0);
    CHECK_OK(evl_loop_close(loop));
}

/* A loop belongs to the thread that runs it, and evl_loop_new is thread-safe: a loop made on
   one thread and handed to another, which sets it up and runs it, is correct code. Debug mode
   must not refuse the set-up calls the running thread makes before its first evl_run. The
   creating thread is idle (in pthread_join) meanwhile. */
typedef struct handoff {
    evl_loop *loop;
    int rc_timer_start, rc_call_soon, rc_spawn, rc_run;
    int fired, called;
    int task_result;
} handoff;

static void *handoff_main(void *arg) {
    handoff *h = (handoff *)arg;
    evl_timer t;
    evl_timer_init(&t, flag_cb, &h->fired);
    h->rc_timer_start = evl_timer_start(h->loop, &t, EVL_MSEC(1), 0);
    h->rc_call_soon = evl_call_soon(h->loop, flag_cb, &h->called);
    h->rc_spawn = evl_task_spawn(h->loop, NULL, return_arg_task, (void *)(intptr_t)0, NULL);
    h->rc_run = evl_run(h->loop);
    return NULL;
}

static void loop_handed_to_another_thread_in_debug(void) {
    evl_loop *loop = dloop_new(1);
    handoff h;
    pthread_t th;
    memset(&h, 0, sizeof h);
    h.loop = loop;
    CHECK_OK(pthread_create(&th, NULL, handoff_main, &h));
    CHECK_OK(pthread_join(th, NULL));
    if (log_count()) log_dump();
    CHECK_OK(h.rc_timer_start);
    CHECK_OK(h.rc_call_soon);
    CHECK_OK(h.rc_spawn);
    CHECK_OK(h.rc_run);
    CHECK_EQ(h.fired, 1);
    CHECK_EQ(h.called, 1);
    CHECK_EQ(log_count(), 0);
    CHECK_OK(evl_loop_close(loop));
}

/* A worker thread runs the loop (a task is left sleeping) and ends; the thread that made the
   loop joins it and closes the loop. The close must finish the task's clean-up: none of its
   own internal calls may be refused as "wrong thread" (a refused evl_timer_stop leaves the
   freed task's timer in the heap, and the close then writes into freed memory). */
static void *runs_a_sleeper(void *arg) {
    evl_loop *loop = (evl_loop *)arg;
    evl_task_opts opts = named("left-asleep");
    /* A first run makes this thread the loop's (the case above is about the calls before). */
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_OK(evl_task_spawn(loop, NULL, sleeps_until_cancelled, NULL, &opts));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    return NULL;
}

static void close_after_another_thread_ran_the_loop_in_debug(void) {
    evl_loop *loop = dloop_new(1);
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, runs_a_sleeper, loop));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(log_count(), 0);
    CHECK_OK(evl_loop_close(loop));
    if (log_find(EVL_LOG_ERROR, "", NULL)) log_dump();
    CHECK_EQ(log_find(EVL_LOG_ERROR, "", NULL), 0);
}

/* ---- the virtual clock ---- */

typedef struct vsleep {
    int rc;
    evl_time woke;
} vsleep;

static int sleeps_an_hour(evl_loop *loop, void *arg) {
    vsleep *v = (vsleep *)arg;
    v->rc = evl_sleep(loop, EVL_SEC(3600));
    v->woke = evl_now(loop);
    return 0;
}

static void virtual_clock_hour_sleep_is_instant(void) {
    evl_loop *loop = dloop_new_full(0, 0, EVL_CLOCK_VIRTUAL);
    vsleep v;
    evl_time real0 = clock_ns(), start;
    memset(&v, 0, sizeof v);
    v.rc = 1;
    start = evl_now(loop);
    CHECK_EQ(start, 0);
    CHECK_OK(evl_task_spawn(loop, NULL, sleeps_an_hour, &v, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_OK(v.rc);
    CHECK(v.woke - start >= EVL_SEC(3600));
    CHECK(evl_now(loop) - start >= EVL_SEC(3600));
    CHECK(clock_ns() - real0 < EVL_SEC(1));
    CHECK_OK(evl_loop_close(loop));
}

typedef struct vtimer {
    evl_timer t;
    int id;
    int *order, *len;
    evl_time *at;
} vtimer;

static void vtimer_cb(evl_loop *loop, void *arg) {
    vtimer *v = (vtimer *)arg;
    v->at[*v->len] = evl_now(loop);
    v->order[(*v->len)++] = v->id;
}

static void virtual_clock_timers_fire_at_deadlines(void) {
    evl_loop *loop = dloop_new_full(0, 0, EVL_CLOCK_VIRTUAL);
    static const int secs[] = {3, 1, 2};
    vtimer v[3];
    int order[3], len = 0, i;
    evl_time at[3], real0 = clock_ns();
    CHECK_EQ(evl_now(loop), 0);
    for (i = 0; i < 3; i++) {
        v[i].id = secs[i];
        v[i].order = order;
        v[i].len = &len;
        v[i].at = at;
        evl_timer_init(&v[i].t, vtimer_cb, &v[i]);
        CHECK_OK(evl_timer_start(loop, &v[i].t, EVL_SEC(secs[i]), 0));
    }
    CHECK_OK(evl_run(loop));
    CHECK_EQ(len, 3);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(order[i], i + 1);
        CHECK_EQ(at[i], EVL_SEC(i + 1));
    }
    CHECK_EQ(evl_now(loop), EVL_SEC(3));
    CHECK(clock_ns() - real0 < EVL_SEC(1));
    CHECK_OK(evl_loop_close(loop));
}

static int deadline_cuts_hour_sleep(evl_loop *loop, void *arg) {
    vsleep *v = (vsleep *)arg;
    evl_time old = evl_deadline(loop, evl_now(loop) + EVL_SEC(10));
    v->rc = evl_sleep(loop, EVL_SEC(3600));
    v->woke = evl_now(loop);
    evl_deadline_restore(loop, old);
    return 0;
}

static void virtual_clock_deadline_cuts_sleep(void) {
    evl_loop *loop = dloop_new_full(0, 0, EVL_CLOCK_VIRTUAL);
    vsleep v;
    evl_time real0 = clock_ns();
    memset(&v, 0, sizeof v);
    CHECK_OK(evl_task_spawn(loop, NULL, deadline_cuts_hour_sleep, &v, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(v.rc, -ETIMEDOUT);
    CHECK_EQ(v.woke, EVL_SEC(10));
    CHECK(clock_ns() - real0 < EVL_SEC(1));
    CHECK_OK(evl_loop_close(loop));
}

/* The virtual clock stands still while work is ready: callbacks that take real time do not
   move it, nor does a chain of callbacks. */
typedef struct still {
    int left;
    evl_time seen[4];
} still;

static void still_cb(evl_loop *loop, void *arg) {
    still *s = (still *)arg;
    busy_for(EVL_MSEC(5));
    s->seen[4 - s->left] = evl_now(loop);
    if (--s->left > 0) CHECK_OK(evl_call_soon(loop, still_cb, s));
}

static void virtual_clock_stands_still_while_work_is_ready(void) {
    evl_loop *loop = dloop_new_full(0, 0, EVL_CLOCK_VIRTUAL);
    still s;
    evl_timer t;
    int fired = 0, i;
    memset(&s, 0, sizeof s);
    s.left = 4;
    evl_timer_init(&t, flag_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &t, EVL_SEC(5), 0));
    CHECK_OK(evl_call_soon(loop, still_cb, &s));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(fired, 1);
    for (i = 0; i < 4; i++) CHECK_EQ(s.seen[i], 0);
    CHECK_EQ(evl_now(loop), EVL_SEC(5));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- the close report ---- */

/* Debug on: closing with an active timer, an active watcher and a queued callback logs one
   WARN line that counts them; the callback does not run. Debug off: no line. */
static void close_report(int debug) {
    evl_loop *loop = dloop_new(debug);
    evl_timer t;
    evl_io w;
    int flag = 0, p[2];
    log_line line;
    CHECK_OK(pipe(p));
    evl_timer_init(&t, flag_cb, &flag);
    CHECK_OK(evl_timer_start(loop, &t, EVL_SEC(3600), 0));
    evl_io_init(&w, p[0], io_flag_cb, &flag);
    CHECK_OK(evl_io_start(loop, &w, EVL_READ));
    CHECK_OK(evl_call_soon(loop, flag_cb, &flag));
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(flag, 0);
    CHECK(!evl_timer_active(&t));
    CHECK(!evl_io_active(&w));
    if (debug) {
        if (log_count() != 1) log_dump();
        CHECK_EQ(log_count(), 1);
        CHECK_EQ(log_find(EVL_LOG_WARN, "clos", &line), 1);
        CHECK(strstr(line.text, "1 active timer") != NULL);
        CHECK(strstr(line.text, "1 active I/O watcher") != NULL);
        CHECK(strstr(line.text, "1 queued callback") != NULL);
    } else {
        CHECK_EQ(log_count(), 0);
    }
    close(p[0]);
    close(p[1]);
}

static void close_report_in_debug_mode(void) {
    close_report(1);
}

static void no_close_report_without_debug(void) {
    close_report(0);
}

/* Debug on, a clean close says nothing. */
static void clean_close_is_silent_in_debug_mode(void) {
    evl_loop *loop = dloop_new(1);
    int flag = 0;
    CHECK_OK(evl_call_soon(loop, flag_cb, &flag));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(flag, 1);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(log_count(), 0);
}

/* A task that ignores cancellation (it sleeps in a shield) is abandoned at close: the
   exception handler (here the default one, which logs at ERROR) names it, in every mode. */
static int shielded_sleeper(evl_loop *loop, void *arg) {
    (void)arg;
    evl_shield_begin(loop);
    evl_sleep(loop, EVL_SEC(3600));
    evl_shield_end(loop);
    return 0;
}

static void close_names_abandoned_task_in_debug_mode(void) {
    evl_loop *loop = dloop_new(1);
    evl_task_opts opts = named("immortal");
    CHECK_OK(evl_task_spawn(loop, NULL, shielded_sleeper, NULL, &opts));
    CHECK_EQ(evl_run_once(loop, 0), 1);
    CHECK_OK(evl_loop_close(loop));
    if (log_find(EVL_LOG_ERROR, "immortal", NULL) != 1) log_dump();
    CHECK_EQ(log_find(EVL_LOG_ERROR, "immortal", NULL), 1);
    CHECK_EQ(log_find(EVL_LOG_ERROR, "abandoned", NULL), 1);
}

/* The manual: evl_loop_close "drops the callbacks still queued without running them" and
   stops every active handle. That holds when a task is still alive too (the close gives the
   task iterations to finish its cancellation; the user's queued callback and due timer must
   not run in them), and the debug report counts what was left. */
static void close_with_live_task_drops_queued_callbacks(void) {
    evl_loop *loop = dloop_new(1);
    evl_task_opts opts = named("sleeper");
    evl_timer t;
    int flag = 0, timer_flag = 0;
    log_line line;
    CHECK_OK(evl_task_spawn(loop, NULL, sleeps_until_cancelled, NULL, &opts));
    CHECK_EQ(evl_run_once(loop, 0), 1); /* the task now sleeps */
    CHECK_OK(evl_call_soon(loop, flag_cb, &flag));
    evl_timer_init(&t, flag_cb, &timer_flag);
    CHECK_OK(evl_timer_start(loop, &t, 0, 0));
    CHECK_OK(evl_loop_close(loop));
    if (flag || timer_flag) log_dump();
    CHECK_EQ(flag, 0);
    CHECK_EQ(timer_flag, 0);
    CHECK_EQ(log_find(EVL_LOG_WARN, "clos", &line), 1);
    CHECK(strstr(line.text, "1 queued callback") != NULL);
    CHECK(strstr(line.text, "1 active timer") != NULL);
}

/* ---- debug mode switches ---- */

static void debug_mode_switches(void) {
    evl_loop *loop = dloop_new(0);
    CHECK_EQ(evl_get_debug(loop), 0);
    evl_set_debug(loop, 1);
    CHECK_EQ(evl_get_debug(loop), 1);
    evl_set_debug(loop, 7);
    CHECK_EQ(evl_get_debug(loop), 1);
    evl_set_debug(loop, 0);
    CHECK_EQ(evl_get_debug(loop), 0);
    CHECK_OK(evl_loop_close(loop));
    loop = dloop_new(1);
    CHECK_EQ(evl_get_debug(loop), 1);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- children for tests/test_debug.py ---- */

/* Prints what a default config gives (debug from EVLOOP_DEBUG), what explicit settings give,
   then runs a 110 ms callback on the default loop: with debug on, the default log writes the
   slow report to stderr. */
static void env_debug_child(void) {
    evl_loop *loop;
    evl_config cfg;
    evl_time d = EVL_MSEC(110);
    loop = check_loop_new(); /* evl_loop_new(&loop, NULL) */
    printf("default-null=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_call_soon(loop, busy_cb, &d));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_loop_close(loop));
    evl_config_init(&cfg);
    CHECK_EQ(cfg.debug, EVL_DEBUG_FROM_ENV);
    CHECK_OK(evl_loop_new(&loop, &cfg));
    printf("default-init=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_loop_close(loop));
    memset(&cfg, 0, sizeof cfg); /* a zeroed config is the defaults too */
    CHECK_OK(evl_loop_new(&loop, &cfg));
    printf("default-zeroed=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_loop_close(loop));
    cfg.debug = -1; /* what evl_config_init set before 0.2 */
    CHECK_OK(evl_loop_new(&loop, &cfg));
    printf("default-legacy=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_loop_close(loop));
    cfg.debug = EVL_DEBUG_OFF;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    printf("explicit-off=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_loop_close(loop));
    cfg.debug = 1;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    printf("explicit-on=%d\n", evl_get_debug(loop));
    CHECK_OK(evl_loop_close(loop));
    fflush(stdout);
}

/* A failing detached task with the default handler and the default log (stderr). Prints the
   error text the line must contain. */
static void default_handler_child(void) {
    evl_loop *loop;
    evl_config cfg;
    evl_task_opts opts = named("worker-7");
    evl_config_init(&cfg);
    cfg.debug = EVL_DEBUG_OFF;
    CHECK_OK(evl_loop_new(&loop, &cfg));
    CHECK_OK(evl_task_spawn(loop, NULL, return_arg_task, (void *)(intptr_t)-EIO, &opts));
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_loop_close(loop));
    printf("error-text=%s\n", evl_strerror(-EIO));
    fflush(stdout);
}

static const check_case cases[] = {
    {"detached_failure_debug_on", detached_failure_debug_on},
    {"detached_failure_debug_off", detached_failure_debug_off},
    {"spawn_site_follows_debug_at_spawn", spawn_site_follows_debug_at_spawn},
    {"unjoined_failure_reported_at_close", unjoined_failure_reported_at_close},
    {"default_handler_logs_one_error_line", default_handler_logs_one_error_line},
    {"call_exception_handler_drops_ecanceled", call_exception_handler_drops_ecanceled},
    {"strerror_names_common_errors", strerror_names_common_errors},
    {"poll_failure_reported", poll_failure_reported},
    {"accept_emfile_rate_limited", accept_emfile_rate_limited},
    {"accept_emfile_rate_limited_virtual_clock", accept_emfile_rate_limited_virtual_clock},
    {"slow_callback_reported_with_site", slow_callback_reported_with_site},
    {"slow_timer_reported_with_site", slow_timer_reported_with_site},
    {"slow_task_step_reported_with_name", slow_task_step_reported_with_name},
    {"slow_io_watcher_reported_with_site", slow_io_watcher_reported_with_site},
    {"no_slow_reports_without_debug", no_slow_reports_without_debug},
    {"call_soon_site_only_when_queued_in_debug", call_soon_site_only_when_queued_in_debug},
    {"slow_threshold_can_be_changed", slow_threshold_can_be_changed},
    {"default_slow_report_is_one_warn_line", default_slow_report_is_one_warn_line},
    {"reports_without_site_print_no_line_number", reports_without_site_print_no_line_number},
    {"watchdog_reports_a_stall_while_it_lasts", watchdog_reports_a_stall_while_it_lasts},
    {"watchdog_quiet_for_quick_callbacks", watchdog_quiet_for_quick_callbacks},
    {"stats_count_what_ran", stats_count_what_ran},
    {"stats_lag_timer_due_during_blocking_callback", stats_lag_timer_due_during_blocking_callback},
    {"stats_lag_timer_already_due_behind_blocking_callback", stats_lag_timer_already_due_behind_blocking_callback},
    {"task_hooks_see_every_task", task_hooks_see_every_task},
    {"wrong_thread_refused_in_debug", wrong_thread_refused_in_debug},
    {"wrong_thread_not_checked_without_debug", wrong_thread_not_checked_without_debug},
    {"loop_handed_to_another_thread_in_debug", loop_handed_to_another_thread_in_debug},
    {"close_after_another_thread_ran_the_loop_in_debug", close_after_another_thread_ran_the_loop_in_debug},
    {"virtual_clock_hour_sleep_is_instant", virtual_clock_hour_sleep_is_instant},
    {"virtual_clock_timers_fire_at_deadlines", virtual_clock_timers_fire_at_deadlines},
    {"virtual_clock_deadline_cuts_sleep", virtual_clock_deadline_cuts_sleep},
    {"virtual_clock_stands_still_while_work_is_ready", virtual_clock_stands_still_while_work_is_ready},
    {"close_report_in_debug_mode", close_report_in_debug_mode},
    {"no_close_report_without_debug", no_close_report_without_debug},
    {"clean_close_is_silent_in_debug_mode", clean_close_is_silent_in_debug_mode},
    {"close_names_abandoned_task_in_debug_mode", close_names_abandoned_task_in_debug_mode},
    {"close_with_live_task_drops_queued_callbacks", close_with_live_task_drops_queued_callbacks},
    {"debug_mode_switches", debug_mode_switches},
    {"env_debug_child", env_debug_child},
    {"default_handler_child", default_handler_child},
};

CHECK_MAIN(cases)
