/* test_threads.c - evl_call_soon_threadsafe, evl_stop, evl_loop_ref/unref across threads.

   These cases are also the ones to run under ThreadSanitizer (make test-tsan): every
   cross-thread path of the loop is exercised here, and TSan must report nothing. */
#define EVLOOP_IMPLEMENTATION
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

/* ---- helpers ---- */

static void sleep_ns(long ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pthread_t start_thread(void *(*fn)(void *), void *arg) {
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

static void join_thread(pthread_t t) {
    CHECK_EQ(pthread_join(t, NULL), 0);
}

/* A post's argument: the producer's id in the top bits, its sequence number below. 28 bits of
   sequence leave room for the id even where uintptr_t has 32 bits. */
#define SEQ_BITS 28
#define SEQ_MASK (((uintptr_t)1 << SEQ_BITS) - 1)

static void *encode(unsigned id, unsigned long seq) {
    return (void *)(((uintptr_t)id << SEQ_BITS) | (uintptr_t)seq);
}

static unsigned decode_id(void *arg) {
    return (unsigned)((uintptr_t)arg >> SEQ_BITS);
}

static unsigned long decode_seq(void *arg) {
    return (unsigned long)((uintptr_t)arg & SEQ_MASK);
}

/* ---- many producers: exactly once, in per-producer order ---- */

#define MP_THREADS 4
#define MP_PER_THREAD 250000UL
#define MP_PAUSE_EVERY 10000UL

static struct {
    evl_loop *loop;
    unsigned long next[MP_THREADS]; /* loop thread only: the sequence expected next */
    unsigned long total;            /* loop thread only */
} mp;

static void mp_cb(evl_loop *loop, void *arg) {
    unsigned id = decode_id(arg);
    unsigned long seq = decode_seq(arg);
    CHECK(loop == mp.loop);
    CHECK(id < MP_THREADS);
    /* Exactly the previous + 1: a gap is a lost post, a repeat a double run, a smaller number
       a reordering. */
    CHECK_EQ(seq, mp.next[id]);
    mp.next[id]++;
    if (++mp.total == MP_THREADS * MP_PER_THREAD) evl_loop_unref(loop);
}

static void *mp_producer(void *p) {
    unsigned id = (unsigned)(uintptr_t)p;
    unsigned long i;
    for (i = 0; i < MP_PER_THREAD; i++) {
        CHECK_OK(evl_call_soon_threadsafe(mp.loop, mp_cb, encode(id, i)));
        /* Pause now and then, each producer for its own time, so the loop drains everything
           and goes to sleep in between and the wakeup path is taken over and over. */
        if (i % MP_PAUSE_EVERY == MP_PAUSE_EVERY - 1)
            sleep_ns(50000L + 50000L * (long)((id + i / MP_PAUSE_EVERY) % 4));
    }
    return NULL;
}

static void many_producers_exactly_once_in_order(void) {
    pthread_t threads[MP_THREADS];
    unsigned i;
    memset(&mp, 0, sizeof mp);
    mp.loop = check_loop_new();
    /* The producers post to a loop with nothing else to wait for: hold it until the last post
       has run (its callback drops the hold). */
    evl_loop_ref(mp.loop);
    for (i = 0; i < MP_THREADS; i++) threads[i] = start_thread(mp_producer, (void *)(uintptr_t)i);
    CHECK_OK(evl_run(mp.loop));
    for (i = 0; i < MP_THREADS; i++) join_thread(threads[i]);
    CHECK_EQ(mp.total, MP_THREADS * MP_PER_THREAD);
    for (i = 0; i < MP_THREADS; i++) CHECK_EQ(mp.next[i], MP_PER_THREAD);
    /* Nothing was left behind or run twice: a last iteration finds no work. */
    CHECK_EQ(evl_run_once(mp.loop, 0), 0);
    CHECK_EQ(mp.total, MP_THREADS * MP_PER_THREAD);
    CHECK_OK(evl_loop_close(mp.loop));
}

/* ---- a burst of posts into a sleeping loop ---- */

#define BURST 1000

static struct {
    evl_loop *loop;
    int ran;
    int out_of_order;
} burst;

static void burst_cb(evl_loop *loop, void *arg) {
    if ((int)(intptr_t)arg != burst.ran) burst.out_of_order++;
    if (++burst.ran == BURST) evl_loop_unref(loop);
}

static void *burst_producer(void *p) {
    int i;
    (void)p;
    /* Give the loop time to block in its poll (no timers, only a hold): the burst arrives at a
       sleeping loop, and the first post wakes it. */
    sleep_ns(30000000L);
    for (i = 0; i < BURST; i++)
        CHECK_OK(evl_call_soon_threadsafe(burst.loop, burst_cb, (void *)(intptr_t)i));
    return NULL;
}

/* Run by hand under `strace -f -e trace=write -c build/tests/test_threads
   burst_into_sleeping_loop` to see how few wakeup writes the 1000 posts cost. */
static void burst_into_sleeping_loop(void) {
    pthread_t t;
    memset(&burst, 0, sizeof burst);
    burst.loop = check_loop_new();
    evl_loop_ref(burst.loop);
    t = start_thread(burst_producer, NULL);
    CHECK_OK(evl_run(burst.loop));
    join_thread(t);
    CHECK_EQ(burst.ran, BURST);
    CHECK_EQ(burst.out_of_order, 0);
    CHECK_OK(evl_loop_close(burst.loop));
}

/* ---- ping-pong: each post arrives just as the loop goes back to sleep ---- */

#define PP_ROUNDS 50000
#define PP_DELAY_SPREAD 16384u /* spin iterations: up to some 10 us */

static struct {
    evl_loop *loop;
    int done; /* atomic: rounds the loop has run */
} pp;

static void pp_cb(evl_loop *loop, void *arg) {
    int round = (int)(intptr_t)arg;
    CHECK_EQ(round, __atomic_load_n(&pp.done, __ATOMIC_SEQ_CST));
    __atomic_store_n(&pp.done, round + 1, __ATOMIC_SEQ_CST);
    if (round + 1 == PP_ROUNDS) evl_loop_unref(loop);
}

/* How long a wait may last before the test calls it a hang: 5 s, times the harness's
   EVL_TEST_TIMEOUT_SCALE for slow tools (valgrind). */
static double wait_limit(void) {
    const char *s = getenv("EVL_TEST_TIMEOUT_SCALE");
    double scale = s && *s ? atof(s) : 1.0;
    return 5.0 * (scale > 1.0 ? scale : 1.0);
}

static void *pp_producer(void *p) {
    int i;
    double limit = wait_limit();
    (void)p;
    for (i = 0; i < PP_ROUNDS; i++) {
        double deadline;
        long spins = 0;
        volatile unsigned delay = (unsigned)(i * 7919) % PP_DELAY_SPREAD;
        /* A varying pause, so the posts land all along the loop's way from the last callback
           into the poll: a lost wakeup shows as a post that is never run. */
        while (delay) delay--;
        CHECK_OK(evl_call_soon_threadsafe(pp.loop, pp_cb, (void *)(intptr_t)i));
        deadline = mono_seconds() + limit;
        while (__atomic_load_n(&pp.done, __ATOMIC_SEQ_CST) != i + 1) {
            if (++spins % 256 == 0) {
                if (mono_seconds() > deadline) {
                    fprintf(stderr, "post %d was not run within %.0f s: lost wakeup\n", i, limit);
                    exit(1);
                }
                sched_yield();
            }
        }
    }
    return NULL;
}

static void ping_pong_loses_no_wakeup(void) {
    pthread_t t;
    memset(&pp, 0, sizeof pp);
    pp.loop = check_loop_new();
    evl_loop_ref(pp.loop);
    t = start_thread(pp_producer, NULL);
    CHECK_OK(evl_run(pp.loop));
    join_thread(t);
    CHECK_EQ(pp.done, PP_ROUNDS);
    CHECK_OK(evl_loop_close(pp.loop));
}

/* ---- evl_stop and evl_loop_unref from another thread ---- */

typedef struct {
    evl_loop *loop;
    long delay_ns;
    int unref; /* 0: evl_stop; 1: evl_loop_unref */
} poke;

static void *poke_thread(void *p) {
    poke *k = (poke *)p;
    sleep_ns(k->delay_ns);
    if (k->unref) evl_loop_unref(k->loop);
    else evl_stop(k->loop);
    return NULL;
}

/* Runs the loop while another thread pokes it after 20 ms; returns how long evl_run took. */
static double run_poked(evl_loop *loop, int unref) {
    poke k;
    pthread_t t;
    double t0, elapsed;
    k.loop = loop;
    k.delay_ns = 20000000L;
    k.unref = unref;
    t0 = mono_seconds();
    t = start_thread(poke_thread, &k);
    CHECK_OK(evl_run(loop));
    elapsed = mono_seconds() - t0;
    join_thread(t);
    return elapsed;
}

static void never_cb(evl_loop *loop, void *arg) {
    (void)loop;
    (*(int *)arg)++;
}

static void stop_from_thread_wakes_ref_only_loop(void) {
    evl_loop *loop = check_loop_new();
    double elapsed;
    evl_loop_ref(loop);
    elapsed = run_poked(loop, 0);
    CHECK(elapsed < 5.0);
    CHECK(elapsed >= 0.015); /* it did block until the stop */
    evl_loop_unref(loop);
    CHECK_OK(evl_loop_close(loop));
}

static void stop_from_thread_wakes_loop_waiting_on_far_timer(void) {
    evl_loop *loop = check_loop_new();
    evl_timer far;
    int fired = 0;
    double elapsed;
    evl_timer_init(&far, never_cb, &fired);
    CHECK_OK(evl_timer_start(loop, &far, EVL_SEC(10), 0));
    elapsed = run_poked(loop, 0);
    CHECK(elapsed < 5.0);
    CHECK(elapsed >= 0.015);
    CHECK_EQ(fired, 0);
    CHECK(evl_timer_active(&far));
    CHECK_OK(evl_timer_stop(loop, &far));
    CHECK_OK(evl_loop_close(loop));
}

static void unref_from_thread_ends_run(void) {
    evl_loop *loop = check_loop_new();
    double elapsed;
    evl_loop_ref(loop);
    elapsed = run_poked(loop, 1);
    CHECK(elapsed < 5.0);
    CHECK(elapsed >= 0.015);
    /* The hold is gone: evl_run has nothing to wait for and returns at once. */
    CHECK_OK(evl_run(loop));
    CHECK_OK(evl_loop_close(loop));
}

/* ---- evl_call_soon_threadsafe from the loop's own thread ---- */

static struct {
    int order[16];
    int n;
} own;

static void own_cb(evl_loop *loop, void *arg) {
    int v = (int)(intptr_t)arg;
    CHECK(own.n < 16);
    own.order[own.n++] = v;
    /* From a callback on the loop thread: these come after everything posted before. */
    if (v == 1) {
        CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)4));
        CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)5));
    }
    if (v == 5) CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)6));
}

static void threadsafe_post_from_loop_thread(void) {
    evl_loop *loop = check_loop_new();
    int i;
    memset(&own, 0, sizeof own);
    CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)1));
    CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)2));
    CHECK_OK(evl_call_soon_threadsafe(loop, own_cb, (void *)(intptr_t)3));
    /* Queued posts keep evl_run alive without a hold; it returns once all have run. */
    CHECK_OK(evl_run(loop));
    CHECK_EQ(own.n, 6);
    for (i = 0; i < 6; i++) CHECK_EQ(own.order[i], i + 1);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- two loops in two threads, fed by a third ---- */

#define TL_POSTS 20000UL

typedef struct {
    evl_loop *loop;
    unsigned id;
    unsigned long next;
    unsigned long foreign; /* posts meant for the other loop */
    int rc;
} tl_state;

static tl_state tl[2];

static void tl_cb(evl_loop *loop, void *arg) {
    unsigned id = decode_id(arg);
    tl_state *s = loop == tl[0].loop ? &tl[0] : &tl[1];
    CHECK(loop == tl[0].loop || loop == tl[1].loop);
    if (id != s->id) {
        s->foreign++;
        return;
    }
    CHECK_EQ(decode_seq(arg), s->next);
    if (++s->next == TL_POSTS) evl_loop_unref(loop);
}

static void *tl_runner(void *p) {
    tl_state *s = (tl_state *)p;
    s->rc = evl_run(s->loop);
    return NULL;
}

static void *tl_producer(void *p) {
    unsigned long i;
    (void)p;
    for (i = 0; i < TL_POSTS; i++) {
        CHECK_OK(evl_call_soon_threadsafe(tl[0].loop, tl_cb, encode(0, i)));
        CHECK_OK(evl_call_soon_threadsafe(tl[1].loop, tl_cb, encode(1, i)));
        if (i % 2000 == 1999) sleep_ns(100000L);
    }
    return NULL;
}

static void two_loops_get_their_own_posts(void) {
    pthread_t runners[2], producer;
    int i;
    memset(tl, 0, sizeof tl);
    for (i = 0; i < 2; i++) {
        tl[i].loop = check_loop_new();
        tl[i].id = (unsigned)i;
        evl_loop_ref(tl[i].loop);
    }
    for (i = 0; i < 2; i++) runners[i] = start_thread(tl_runner, &tl[i]);
    producer = start_thread(tl_producer, NULL);
    join_thread(producer);
    for (i = 0; i < 2; i++) join_thread(runners[i]);
    for (i = 0; i < 2; i++) {
        CHECK_OK(tl[i].rc);
        CHECK_EQ(tl[i].foreign, 0);
        CHECK_EQ(tl[i].next, TL_POSTS);
        CHECK_OK(evl_loop_close(tl[i].loop));
    }
}

/* ---- bad input ---- */

static void *null_cb_from_thread(void *p) {
    evl_loop *loop = (evl_loop *)p;
    CHECK_EQ(evl_call_soon_threadsafe(loop, NULL, NULL), -EINVAL);
    return NULL;
}

static void threadsafe_null_cb_is_einval(void) {
    evl_loop *loop = check_loop_new();
    int dummy = 0;
    CHECK_EQ(evl_call_soon_threadsafe(loop, NULL, &dummy), -EINVAL);
    join_thread(start_thread(null_cb_from_thread, loop));
    /* Nothing was queued: evl_run has nothing to wait for and returns at once. */
    CHECK_OK(evl_run(loop));
    CHECK_EQ(evl_run_once(loop, 0), 0);
    CHECK_OK(evl_loop_close(loop));
}

/* ---- closing a loop with posts still queued ---- */

#define CLOSE_POSTS 5000

typedef struct {
    evl_loop *loop;
    int *ran;
} close_job;

static void *close_producer(void *p) {
    close_job *j = (close_job *)p;
    int i;
    for (i = 0; i < CLOSE_POSTS; i++) CHECK_OK(evl_call_soon_threadsafe(j->loop, never_cb, j->ran));
    return NULL;
}

static void post_from_thread_and_join(evl_loop *loop, int *ran) {
    close_job j;
    j.loop = loop;
    j.ran = ran;
    join_thread(start_thread(close_producer, &j));
}

static void close_drops_queued_posts(void) {
    evl_loop *loop = check_loop_new();
    int ran = 0;
    post_from_thread_and_join(loop, &ran);
    /* Never run: closing frees the queue (ASan/valgrind see any leak) and runs nothing. */
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(ran, 0);
}

static void close_drops_queued_posts_after_a_drain(void) {
    evl_loop *loop = check_loop_new();
    int ran = 0, dropped = 0;
    /* A first batch runs, so the loop holds a spare queue as well as the live one. */
    post_from_thread_and_join(loop, &ran);
    CHECK_OK(evl_run(loop));
    CHECK_EQ(ran, CLOSE_POSTS);
    post_from_thread_and_join(loop, &dropped);
    CHECK_OK(evl_loop_close(loop));
    CHECK_EQ(dropped, 0);
    CHECK_EQ(ran, CLOSE_POSTS);
}

static const check_case cases[] = {
    {"many_producers_exactly_once_in_order", many_producers_exactly_once_in_order},
    {"burst_into_sleeping_loop", burst_into_sleeping_loop},
    {"ping_pong_loses_no_wakeup", ping_pong_loses_no_wakeup},
    {"stop_from_thread_wakes_ref_only_loop", stop_from_thread_wakes_ref_only_loop},
    {"stop_from_thread_wakes_loop_waiting_on_far_timer",
     stop_from_thread_wakes_loop_waiting_on_far_timer},
    {"unref_from_thread_ends_run", unref_from_thread_ends_run},
    {"threadsafe_post_from_loop_thread", threadsafe_post_from_loop_thread},
    {"two_loops_get_their_own_posts", two_loops_get_their_own_posts},
    {"threadsafe_null_cb_is_einval", threadsafe_null_cb_is_einval},
    {"close_drops_queued_posts", close_drops_queued_posts},
    {"close_drops_queued_posts_after_a_drain", close_drops_queued_posts_after_a_drain},
};

CHECK_MAIN(cases)
