/* test_taskio.c - what task I/O costs and what it keeps: the readiness guess after a short
   read, the registration a task keeps from its wakeup to its next wait on the same fd, and
   the ways a kept registration is found out when the fd under it changed.

   Built with EVL_TESTING, so the system call sites count their calls (evl_fault_calls): a
   case counts reads and registrations instead of timing anything. */
#define EVLOOP_IMPLEMENTATION
#define EVL_TESTING
#include "check.h"

#include <sys/socket.h>

static void watchdog(unsigned seconds) {
    signal(SIGALRM, check_on_alarm);
    alarm((unsigned)((double)seconds * check_time_scale()));
}

static void pair(int sv[2]) {
    CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv));
}

/* ---- ping-pong: one read per message and no registration per wait ---- */

#define PP_SIZE 100

static struct {
    int fd[2];
    int rounds, done[2];
} pp;

static int pp_side(evl_loop *loop, void *arg) {
    int me = (int)(intptr_t)arg, i;
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    for (i = 0; i < pp.rounds; i++) {
        size_t got = 0;
        if (me == 0) CHECK_EQ(evl_write_all(loop, pp.fd[0], buf, PP_SIZE), PP_SIZE);
        while (got < PP_SIZE) {
            ssize_t n = evl_read(loop, pp.fd[me], buf, sizeof buf);
            CHECK(n > 0);
            got += (size_t)n;
        }
        CHECK_EQ(got, PP_SIZE);
        if (me == 1) CHECK_EQ(evl_write_all(loop, pp.fd[1], buf, PP_SIZE), PP_SIZE);
    }
    pp.done[me] = 1;
    return 0;
}

/* Two tasks bounce a 100-byte message. A read that comes back short makes the next read
   wait first instead of failing with EAGAIN, and each task keeps its registration between
   its waits: about one read per message and a handful of registrations in all, where each
   wait used to cost a registration and a failed read. */
static void ping_pong_keeps_registrations_and_skips_eagain(void) {
    evl_loop *loop = check_loop_new();
    unsigned long reads0, regs0, reads, regs;
    watchdog(30);
    pair(pp.fd);
    pp.rounds = check_rounds(2000, 200);
    CHECK_OK(evl_task_spawn(loop, NULL, pp_side, (void *)(intptr_t)0, NULL));
    CHECK_OK(evl_task_spawn(loop, NULL, pp_side, (void *)(intptr_t)1, NULL));
    reads0 = evl_fault_calls(EVL_FAULT_READ);
    regs0 = evl_fault_calls(EVL_FAULT_REGISTER);
    CHECK_OK(evl_run(loop));
    reads = evl_fault_calls(EVL_FAULT_READ) - reads0;
    regs = evl_fault_calls(EVL_FAULT_REGISTER) - regs0;
    CHECK(pp.done[0] && pp.done[1]);
    printf("figures: %s: %d round trips: %lu reads, %lu registrations\n",
           evl_backend_name(loop), pp.rounds, reads, regs);
    CHECK(reads <= 2ul * (unsigned long)pp.rounds + 8);
    CHECK(regs <= 16);
    close(pp.fd[0]);
    close(pp.fd[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- the fd under a kept registration changes ---- */

static struct {
    int fd[2];       /* the first pair; fd[0] is the task's */
    int next[2];     /* the pair made after fd[0] was closed: the same number */
    int dup_of_old;  /* -1, or a dup of the first fd[0] that keeps its file open */
    ssize_t result;
    char got;
    evl_timer timer;
} ch;

static void ch_write_next(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    CHECK_EQ(write(ch.next[1], "b", 1), 1);
}

static void ch_write_old(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    CHECK_EQ(write(ch.fd[1], "a", 1), 1);
}

/* Reads "a" from the first pair after waiting for it (so the task is woken by the fd and
   keeps its registration), then, without suspending, closes that fd with close(), makes a new
   pair that gets the same number, and reads from it. */
static int ch_reader(evl_loop *loop, void *arg) {
    char c = 0;
    int old;
    (void)arg;
    CHECK_OK(evl_timer_start(loop, &ch.timer, EVL_MSEC(5), 0));
    CHECK_EQ(evl_read(loop, ch.fd[0], &c, 1), 1); /* waits: the timer writes */
    CHECK_EQ(c, 'a');
    old = ch.fd[0];
    if (ch.dup_of_old >= 0) {
        ch.dup_of_old = dup(old);
        CHECK(ch.dup_of_old >= 0);
    }
    close(old);
    pair(ch.next);
    CHECK_EQ(ch.next[0], old); /* the lowest free number: the one just closed */
    evl_timer_init(&ch.timer, ch_write_next, NULL);
    CHECK_OK(evl_timer_start(loop, &ch.timer, EVL_MSEC(10), 0));
    if (ch.dup_of_old >= 0) CHECK_EQ(write(ch.fd[1], "z", 1), 1); /* the old file: readable */
    ch.result = evl_read(loop, ch.next[0], &ch.got, 1);
    return 0;
}

static void ch_run(int with_dup) {
    evl_loop *loop = check_loop_new();
    evl_stats st;
    watchdog(30);
    memset(&ch, 0, sizeof ch);
    ch.dup_of_old = with_dup ? 0 : -1;
    pair(ch.fd);
    evl_timer_init(&ch.timer, ch_write_old, NULL);
    CHECK_OK(evl_task_spawn(loop, NULL, ch_reader, NULL, NULL));
    CHECK_OK(evl_run(loop));
    evl_loop_stats(loop, &st);
    CHECK_EQ(ch.result, 1);
    CHECK_EQ(ch.got, 'b');
    /* No spinning on the old file's events: a few dozen iterations at most (the kept wait's
       check after 100 ms, the timers, the rebuild of the epoll set). */
    printf("figures: %s: %llu iterations\n", evl_backend_name(loop),
           (unsigned long long)st.iterations);
    CHECK(st.iterations < 100);
    close(ch.fd[1]);
    close(ch.next[0]);
    close(ch.next[1]);
    if (with_dup) close(ch.dup_of_old);
    CHECK_OK(evl_loop_close(loop));
}

/* The task closes its fd with close() (not evl_close) and a new file gets the number before
   it waits again: the kept registration no longer exists in the kernel (epoll dropped it
   with the file). The wait is registered from scratch once no event has confirmed it for
   100 ms, and the read gets the new file's byte. */
static void fd_closed_and_reused_by_the_task_itself(void) {
    ch_run(0);
}

/* The same, with the old file kept open by a dup and readable: its events still arrive under
   the number. The task wakes, finds EAGAIN, registers from scratch, and the stale events are
   recognised and dropped: the read gets the new file's byte and the loop does not spin. */
static void fd_reused_while_a_dup_keeps_the_old_file(void) {
    ch_run(1);
}

static struct {
    int fd[2];
    ssize_t result;
    evl_timer timer;
} cb;

static void cb_write(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    CHECK_EQ(write(cb.fd[1], "a", 1), 1);
}

static void cb_close(evl_loop *loop, void *arg) {
    (void)loop;
    (void)arg;
    close(cb.fd[0]); /* behind the loop's back */
}

static int cb_reader(evl_loop *loop, void *arg) {
    char c;
    (void)arg;
    CHECK_OK(evl_timer_start(loop, &cb.timer, EVL_MSEC(5), 0));
    CHECK_EQ(evl_read(loop, cb.fd[0], &c, 1), 1);
    evl_timer_init(&cb.timer, cb_close, NULL);
    CHECK_OK(evl_timer_start(loop, &cb.timer, EVL_MSEC(10), 0));
    cb.result = evl_read(loop, cb.fd[0], &c, 1);
    return 0;
}

/* A task waits again on its fd (a kept registration) and a callback closes the fd with
   close(): the wait does not last forever, it ends with -EBADF (poll and select see the
   closed fd at once; epoll forgets it silently, and the check of the kept wait finds it). */
static void kept_wait_on_an_fd_closed_behind_its_back_is_ebadf(void) {
    evl_loop *loop = check_loop_new();
    watchdog(30);
    memset(&cb, 0, sizeof cb);
    pair(cb.fd);
    evl_timer_init(&cb.timer, cb_write, NULL);
    CHECK_OK(evl_task_spawn(loop, NULL, cb_reader, NULL, NULL));
    CHECK_OK(evl_run(loop));
    CHECK_EQ(cb.result, -EBADF);
    close(cb.fd[1]);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- many kept waits that outlive the check ---- */

#define SLOW_TASKS 100

static struct {
    int fd[SLOW_TASKS][2];
    int done;
    evl_timer first, second;
} sl;

static void slow_write(evl_loop *loop, void *arg) {
    int i;
    (void)loop;
    for (i = 0; i < SLOW_TASKS; i++) CHECK_EQ(write(sl.fd[i][1], arg, 1), 1);
}

static int slow_reader(evl_loop *loop, void *arg) {
    int i = (int)(intptr_t)arg;
    char c = 0;
    CHECK_EQ(evl_read(loop, sl.fd[i][0], &c, 1), 1); /* woken by the fd: the next wait keeps */
    CHECK_EQ(c, 'a');
    CHECK_EQ(evl_read(loop, sl.fd[i][0], &c, 1), 1); /* a kept wait of 250 ms */
    CHECK_EQ(c, 'b');
    sl.done++;
    return 0;
}

/* A hundred tasks each wait 250 ms on a kept registration, past the 100 ms check: each is
   registered from scratch once (so a registration per task, not per check), the ring that
   holds them grows past its first size, and every byte arrives. */
static void kept_waits_outliving_the_check_are_checked_once(void) {
    evl_loop *loop = check_loop_new();
    unsigned long regs0, regs;
    int i;
    watchdog(30);
    memset(&sl, 0, sizeof sl);
    for (i = 0; i < SLOW_TASKS; i++) {
        pair(sl.fd[i]);
        CHECK_OK(evl_task_spawn(loop, NULL, slow_reader, (void *)(intptr_t)i, NULL));
    }
    evl_timer_init(&sl.first, slow_write, "a");
    evl_timer_init(&sl.second, slow_write, "b");
    CHECK_OK(evl_timer_start(loop, &sl.first, EVL_MSEC(5), 0));
    CHECK_OK(evl_timer_start(loop, &sl.second, EVL_MSEC(255), 0));
    regs0 = evl_fault_calls(EVL_FAULT_REGISTER);
    CHECK_OK(evl_run(loop));
    regs = evl_fault_calls(EVL_FAULT_REGISTER) - regs0;
    CHECK_EQ(sl.done, SLOW_TASKS);
    printf("figures: %s: %d tasks, kept waits of 250 ms: %lu registrations\n",
           evl_backend_name(loop), SLOW_TASKS, regs);
    /* The first waits' registrations, one check each, and the removals at the end. */
    CHECK(regs <= 3 * SLOW_TASKS + 8);
    for (i = 0; i < SLOW_TASKS; i++) {
        close(sl.fd[i][0]);
        close(sl.fd[i][1]);
    }
    CHECK_OK(evl_loop_close(loop));
}

static const check_case cases[] = {
    {"ping_pong_keeps_registrations_and_skips_eagain",
     ping_pong_keeps_registrations_and_skips_eagain},
    {"fd_closed_and_reused_by_the_task_itself", fd_closed_and_reused_by_the_task_itself},
    {"fd_reused_while_a_dup_keeps_the_old_file", fd_reused_while_a_dup_keeps_the_old_file},
    {"kept_wait_on_an_fd_closed_behind_its_back_is_ebadf",
     kept_wait_on_an_fd_closed_behind_its_back_is_ebadf},
    {"kept_waits_outliving_the_check_are_checked_once",
     kept_waits_outliving_the_check_are_checked_once},
};

CHECK_MAIN(cases)
