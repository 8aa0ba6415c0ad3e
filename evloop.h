/* evloop.h - a header-only event loop for C: selector, timers, tasks, executor, signals.
   https://github.com/evloop/evloop.h (MIT license, see the end of this file)

   ============================================================================================
   MANUAL
   ============================================================================================
   Contents: quick start; configuration (compile time, run time); examples; concepts (time,
   iteration, handles, timers, I/O watchers, loop lifetime, tasks, cancellation, deadlines,
   structured concurrency, partial writes); error boundary and debug mode; executor, signals,
   shutdown; ownership; configuring a loop for production; threads and signals; errors;
   platforms; changes. The API follows the manual, and the implementation the API, in
   sections whose banners `grep '==== >>' evloop.h` lists.

   QUICK START
   -----------
   evloop.h is the whole library. Include it wherever you need the API, and in exactly one C or
   C++ file define EVLOOP_IMPLEMENTATION first, so that file gets the code:

       #define EVLOOP_IMPLEMENTATION
       #include "evloop.h"
       #include <stdio.h>

       static void on_tick(evl_loop *loop, void *arg) {
           int *left = (int *)arg;
           printf("tick at %lld ms\n", (long long)(evl_now(loop) / EVL_MSEC(1)));
           if (--*left == 0) evl_stop(loop);
       }

       int main(void) {
           evl_loop *loop;
           evl_timer tick;
           int left = 3;
           if (evl_loop_new(&loop, NULL) < 0) return 1;
           evl_timer_init(&tick, on_tick, &left);
           evl_timer_start(loop, &tick, EVL_MSEC(100), EVL_MSEC(100));
           evl_run(loop);
           evl_loop_close(loop);
           return 0;
       }

   Build with `cc -O2 main.c -lpthread`. When evloop.h is the first include of the
   implementation file it defines the POSIX feature macros it needs itself; on Linux, define
   EVLOOP_IMPLEMENTATION before that first include (or build with -D_GNU_SOURCE), or the
   implementation stops with an #error that says so. Every symbol the implementation defines
   starts with evl_: the public ones with evl_, the two assembly routines of the context switch
   with evl__ (weak and hidden, so copies merge within a program and stay out of a shared
   library's exports; EVLOOP_STATIC makes everything else static).

   CONFIGURATION (compile time)
   ----------------------------
   Define these before including evloop.h (in the implementation file at least):

     EVLOOP_IMPLEMENTATION   compile the implementation into this translation unit
     EVLOOP_STATIC           make every function static (private to one translation unit)
     EVL_MALLOC(sz)          default allocator (malloc); a per-loop hook in evl_config overrides
     EVL_REALLOC(p, sz)      default reallocator (realloc)
     EVL_FREE(p)             default deallocator (free)
     EVL_ASSERT(c)           assertion for programming errors (assert)
     EVL_NO_THREADS          no pthreads: evl_call_soon_threadsafe and evl_stop are then only
                             safe from the loop's own thread
     EVL_NO_EPOLL            do not compile the epoll backend (Linux)
     EVL_NO_KQUEUE           do not compile the kqueue backend (BSD, macOS)
     EVL_NO_TASKS            leave tasks out (callbacks, timers and I/O watchers only)
     EVL_CTX_UCONTEXT        switch task contexts with ucontext instead of the assembly for
                             x86-64, i386, AArch64, ARMv7 and RISC-V 64 (other CPUs use ucontext)
     EVL_NO_MMAP             take task stacks from the allocator (no guard pages), for systems
                             without mmap
     EVL_NO_VALGRIND         do not include <valgrind/valgrind.h> even when it exists (by default
                             task stacks are registered with Valgrind when the header is there)
     EVL_VALGRIND            include <valgrind/valgrind.h> even where the compiler lacks
                             __has_include to find it
     EVL_NO_SIGNALS          leave signal watchers out
     EVL_NO_SITE_MACROS      do not define the macros that record registration sites (see
                             ERROR BOUNDARY AND DEBUG MODE)
     EVL_TESTING             test builds: evl_fault_arm makes the nth call of a system call
                             site (epoll_ctl, the poll, read, write, accept, mmap,
                             pthread_create, ...) fail with a chosen errno; tests/test_faults.c
                             sweeps every site with it (allocations fail through the alloc hook)

   CONFIGURATION (run time)
   ------------------------
   evl_loop_new takes an evl_config (NULL means all defaults). Zero means "default" in every
   field, so a zeroed evl_config (`evl_config c = {0}`, or evl_config_init) is the defaults.

     backend     EVL_BACKEND_AUTO: EVLOOP_BACKEND from the environment (epoll, kqueue, poll,
                 select), else the best the platform has (epoll, kqueue, poll in that order).
                 Asking for a backend this build or platform lacks is -ENOSYS, an unknown name
                 in EVLOOP_BACKEND is -EINVAL: never a silent fallback.
     debug       EVL_DEBUG_FROM_ENV (0): from EVLOOP_DEBUG in the environment; EVL_DEBUG_ON;
                 EVL_DEBUG_OFF. Read back with evl_get_debug. (Before 0.2, 0 meant off and -1
                 from the environment; -1 still means from the environment.)
     alloc       a realloc-like hook `void *fn(void *ud, void *ptr, size_t size)`: size 0 frees
                 ptr; ptr NULL allocates. Every allocation of the loop goes through it; it must
                 be thread-safe, because evl_call_soon_threadsafe grows its queue on the
                 posting thread. NULL: EVL_MALLOC / EVL_REALLOC / EVL_FREE.
     alloc_ud    passed to `alloc`.
     stack_size  the default task stack, rounded up to whole pages (0: 128 KiB). Stacks are
                 mapped lazily: a task uses as much memory as the deepest point its stack has
                 reached, not the size asked for.
     stack_guard 0: a guard page below each task stack (the default); -1: none. On Linux
                 6.13 and later the guard is a guard region inside a slab of stacks and adds
                 no kernel mapping: a million guarded tasks fit in a few dozen mappings. On
                 older kernels and other systems each guarded stack has a mapping of its own
                 and a PROT_NONE page (two mappings), and Linux allows 65530 per process by
                 default (vm.max_map_count): there, raise that limit
                 (sysctl vm.max_map_count=262144) or turn guards off to run more than about
                 30 000 tasks at once. EVLOOP_STACK_GUARD=mprotect in the environment picks
                 the older guard pages everywhere. Spawning past any limit fails with
                 -ENOMEM, logged once with the limit that was hit.
     stall_threshold  0: no watchdog; else a thread that reports a callback or task step
                 still running after this long, while it runs.
     clock       EVL_CLOCK_MONOTONIC (0) or EVL_CLOCK_VIRTUAL (for tests, see below).
     log, log_ud the log hook `void fn(int level, const char *message, void *ud)`; NULL writes
                 EVL_LOG_WARN and EVL_LOG_ERROR lines to stderr. The library prints nothing else.
                 It may be called from the watchdog's thread: make it thread-safe.
     executor_threads  the default executor's size (0: min(32, ncpu + 4), as asyncio's).
     executor_queue    its bound on queued jobs (0: 1024).
     shutdown_grace    the grace period of evl_main's signal-driven shutdown and the longest
                 evl_loop_close waits for executor jobs (0: 25 s).

   EXAMPLES
   --------
   A server is a task that accepts and one task per connection, each written as straight-line
   code; evl_main runs it and shuts it down gracefully on SIGTERM. From examples/http.c:

       static int connection(evl_loop *loop, void *arg) {
           conn c;
           int more = 1;
           c.fd = (int)(intptr_t)arg;
           c.in_len = c.out_len = 0;
           while (more) {
               // Each request (and the wait for it) gets the idle timeout.
               evl_time outer = evl_deadline(loop, evl_now(loop) + srv.idle);
               more = serve_one(loop, &c);   // evl_read, parse, evl_write_all
               evl_deadline_restore(loop, outer);
           }
           flush(loop, &c);
           close(c.fd);
           return 0;
       }

       static int accept_loop(evl_loop *loop, void *arg) {
           evl_task_opts opts = {"connection", 64 * 1024};
           int err = 0;
           while (err >= 0) {   // a shutdown cancels the accept: -ECANCELED
               int fd = evl_accept(loop, srv.listen_fd, NULL, NULL);
               if (fd == -EMFILE || fd == -ENFILE) err = evl_sleep(loop, EVL_MSEC(10));
               else if ((err = fd) >= 0 &&
                        evl_task_spawn(loop, NULL, connection, (void *)(intptr_t)fd, &opts) < 0)
                   close(fd);
           }
           close(srv.listen_fd);
           return err;
       }

       // main: evl_config_init(&cfg); return evl_main(&cfg, accept_loop, NULL) < 0;

   Blocking work goes to the executor from inside a task, and its result comes back there:
   `err = evl_executor_run(loop, blocking_sleep, &ms, NULL);`. Every example takes its TCP port
   as its first argument (0 picks a free one) and prints "listening on PORT":

     examples/http.c        HTTP/1.1: keep-alive, pipelining, an executor route, idle timeout
     examples/resp.c        a Redis-protocol key-value server in the callback style (I/O
                            watchers, key expiry with timers); redis-cli and redis-benchmark
     examples/chat.c        a chat room with tasks and a bounded queue per client (a slow
                            client is dropped), goodbye to every client on SIGTERM
     examples/echo.c        TCP echo with I/O watchers and backpressure (callback style)
     examples/echo_tasks.c  TCP echo, one task per connection
     examples/bootstrap.c   the production bootstrap (see CONFIGURING A LOOP FOR PRODUCTION)
     examples/tour.c        a timer, a pipe watcher and a worker thread posting back
     examples/demo.c        `make demo`: drives http.c for two seconds, then SIGTERM

   CONCEPTS
   --------
   Time. evl_time is int64_t nanoseconds of the monotonic clock. EVL_USEC, EVL_MSEC and EVL_SEC
   build durations; EVL_FOREVER is the largest time. Adding a huge delay saturates at
   EVL_FOREVER, it never overflows. evl_now returns the loop's cached time, as libuv and libev
   do: it is read after each poll, and afresh on first use whenever the loop has been out of
   evl_run / evl_run_once or skipped the read (an iteration with nothing but callbacks). A
   timer's delay counts from that time, so it never fires before its deadline, and one started
   outside the loop counts from the moment it was started. Inside a drain the cache is the
   time the drain began: a callback that has run for long and then starts a timer should call
   evl_now_update first if the delay must count from that moment.

   Iteration. evl_run repeats iterations until evl_stop is called or nothing is left to wait for
   (no queued callback, active timer, active I/O watcher, or evl_loop_ref hold). One iteration:
     1. compute the poll timeout: 0 if callbacks are ready, else until the first timer, else
        forever (evl_run_once caps it with its max_wait);
     2. poll the backend; the I/O watchers that are ready are marked pending;
     3. run, in this order, the callbacks queued before this step began (FIFO), the pending I/O
        callbacks, and the timers that are due (deadline order, ties in start order).
   A callback queued during step 3 runs in the next iteration, so a callback that reschedules
   itself never starves I/O or timers. When the loop has callbacks ready and no I/O watcher,
   the zero-timeout poll is skipped: there is nothing it could report.

   Handles. Timers (evl_timer) and I/O watchers (evl_io) are structs you own: embed them in your
   own objects, init them once, start and stop them as often as you like. The loop never
   allocates for them on the hot path. A zero-filled handle is a valid inactive one. Stopping an
   inactive handle does nothing; starting an active one restarts it with the new arguments. A
   handle must stay valid (not freed, not moved) while it is active. evl_loop_close stops every
   handle that is still active, so you may close a loop at any time.

   Timers. evl_timer_start(loop, t, delay, repeat) fires t after `delay`, then every `repeat`
   (0: once). Timers live in a 4-ary min-heap that stores each timer's index in the timer:
   start and stop are O(log n), the next deadline O(1). A timer stopped by a callback that ran
   earlier in the same iteration does not fire; a timer may stop or restart itself or any other
   from its callback. A timer started or restarted by any callback fires at the earliest in
   the next iteration, even with a zero delay (like a callback queued during the drain). A
   repeating timer that fell behind skips the ticks it
   missed rather than firing a burst.

   I/O watchers. evl_io_start(loop, w, EVL_READ | EVL_WRITE) watches w's fd, level triggered:
   the callback runs in every iteration in which the fd is ready, with the ready events (errors
   and hang-ups are reported as both readable and writable, within the events asked for). Call
   evl_io_start again to change the events. Several watchers may watch one fd (for example a
   reader task and a writer task). Stop every watcher of an fd before you close the fd, or close
   it with evl_close(loop, fd), which stops them for you and wakes every task waiting on the fd
   with -EBADF at once (a plain close(2) of an fd a task waits on is a bug: on epoll the kernel
   drops the fd without an event and the task sleeps forever, unless the wait was on a kept
   registration (see Task I/O below), which ends with -EBADF within 200 ms; debug mode reports
   it where the backend can see it, on poll and select). A watcher that is stopped, or an fd
   closed and its number reused during an iteration, never gets a stale event from that
   iteration.

   Loop lifetime. evl_loop_close always succeeds when called from outside the loop's callbacks:
   it stops every active handle and drops the callbacks still queued without running them,
   cancels the tasks still alive and gives them a few non-blocking iterations to finish, waits
   (up to evl_config.shutdown_grace, or what is left of a shutdown's) for the executor jobs
   that tasks still wait on (a new job is refused meanwhile, -ESHUTDOWN), shuts the executors
   down, and frees everything the loop allocated. A task still running after that is
   abandoned, and the exception handler hears of it by name in every mode: its cleanup never
   runs, its stack is freed, unless an executor job it waits on still runs, in which case the
   job keeps the stack and frees it when it returns.

   Tasks. A task is a function that runs on its own stack and can suspend in the middle, so a
   server is written as plain sequential code:

       static int serve(evl_loop *loop, void *arg) {
           int fd = (int)(intptr_t)arg;
           char buf[4096];
           ssize_t n;
           while ((n = evl_read(loop, fd, buf, sizeof buf)) > 0)   // suspends until readable
               if (evl_write_all(loop, fd, buf, (size_t)n) < 0) break;
           close(fd);
           return 0;
       }
       ...
       evl_task_spawn(loop, NULL, serve, (void *)(intptr_t)fd, NULL);   // NULL: detached

   evl_task_spawn starts the task in the next drain; pass an evl_task ** to keep a handle and
   collect the result with evl_task_join (which frees the task), or NULL to detach it. Tasks
   suspend only in evloop calls (evl_yield, evl_sleep, the task I/O calls, waiting on a future,
   event, semaphore, queue, group or join) and always switch back to the loop, never directly
   to one another: a task woken by another task or by evl_yield waits its turn in the ready
   deque like a callback; a task woken by its timer or its fd continues at once. Calling a
   suspending function outside a task returns -EPERM. The context switch saves only the
   callee-saved registers of the ABI (and the floating-point control state on x86), in
   assembly for x86-64, i386, AArch64, ARMv7 and RISC-V 64; elsewhere it uses ucontext.
   Stacks are carved from slabs (one reserved mapping of many stacks per size), each with a
   guard page below it, and the kernel commits a page only when the stack first touches it.
   Free stacks are kept for reuse, up to 1024 of each size per loop (a reused stack costs no
   system call); past that a stack goes back to its slab with its pages discarded
   (MADV_DONTNEED), so the memory of a burst of tasks returns when they end, and an empty
   slab is unmapped. What a task costs, measured on Linux 6.18 x86-64 with the default
   config (`build/tests/test_stress tasks_1000000_concurrent` with EVL_STRESS=full): 4.6 KiB
   of RSS for a task waiting with a shallow stack (one 4 KiB stack page, the 0.5 KiB task),
   about 250 bytes of page tables, a mapping per 496 tasks, and 1.4 us to spawn; a million
   such tasks spawn in 1.4 s. The guard is a guard region (madvise MADV_GUARD_INSTALL, Linux
   6.13+, probed once per process); older kernels give each stack its own mapping and a
   PROT_NONE guard page (see stack_guard). A task
   that overflows into its guard page stops the process with a message naming the task and
   its stack size (a SIGSEGV handler on an alternate signal stack recognises the page); a
   handler installed before evloop's still gets every other SIGSEGV. The handler knows the
   first 128 loops of a process that run tasks at once; an overflow in a further one dies by
   SIGSEGV without the message. ASan, TSan and Valgrind are told about every switch and stack,
   so they work on task code. ThreadSanitizer defers a signal's handler to the next call it
   intercepts on the fiber that was current, and a fiber that never runs again loses it: a
   TSan build therefore holds signals across each task switch and fiber set-up and teardown,
   and waits in calls TSan intercepts (epoll_wait, not epoll_pwait2, so its epoll timeouts
   round up to milliseconds; pselect), so that a SIGTERM is never lost.

   Task I/O. evl_read, evl_write, evl_accept and the rest try the system call first and wait
   for readiness only on EAGAIN, with two shortcuts that make task I/O cost what callbacks
   cost. A read that came back short on an fd the task has waited on (a socket, a pipe) most
   likely emptied it, so the next evl_read on that fd waits first instead of failing with
   EAGAIN (where the guess is wrong, the backend reports the fd at once: one trip through the
   poll). And when a task is woken by its fd, the fd's registration with the backend is kept
   until the task's next wait on the same fd, which then costs no system call, provided
   nothing else ran in between (the task did not suspend on anything else). Server CPU per
   1 KiB echo message, server and client pinned to their own cores (bench/README.md, `python3
   bench/run.py --only echo`, medians of 3, 2026-12-03): tasks 4.53 us and callbacks 4.40 us
   at 64 connections (+3 %; +13 % without the shortcuts), 4.60 and 4.33 us at 1000 (+6 %,
   +12 % without; what is left is mostly each task's own memory touched per message: its
   struct and its stack's frames, where a callback touches one small record). A kept
   registration is dropped by evl_close, an EOF or error on the fd, evl_accept returning the
   same number, and any other suspension. If the task's own code closes the fd with close(2)
   and a new file gets the same number before its next wait, that wait is registered from
   scratch after 100 to 200 ms without an event (a delay, never a hang: use evl_close and it
   never happens), and a kept wait on an fd closed behind the task's back ends with -EBADF.
   The loop finds such waits in a ring it appends each kept wait's task to, once, and reads
   from the oldest end before each poll: a wait that ends touches nothing but its own task.

   Cancellation. evl_task_cancel(loop, t) makes the task's current suspension, or its next one,
   return -ECANCELED, and every later one too, until the task returns: cancellation is a
   request to finish, not a one-time interruption. Code that must still wait while cancelled
   (flushing a reply, closing a session) opens a shield:

       if (evl_read(loop, fd, buf, len) == -ECANCELED) {
           evl_shield_begin(loop);
           evl_write_all(loop, fd, "bye\n", 4);   // waits even though cancelled
           evl_shield_end(loop);
       }

   Inside a shield, a deadline set with evl_deadline still applies (so a goodbye to a stuck
   peer cannot hang a shutdown); cancellation and the deadlines set outside the shield apply
   again after the last evl_shield_end. A shield is for waits that must finish; it does not
   stop the loop from closing (see Loop lifetime).

   Every task I/O call checks for cancellation (and the deadline) before it even tries, so a
   loop over an fd that is always ready still stops: a task that took an item from a queue and
   must not lose it writes it under a shield. Joining a finished task and awaiting a completed
   future return their result without checking. A task cancelled before it started never
   runs, so what its arg owns (an accepted fd, a buffer) is its spawner's to release: keep
   such tasks on a list and free the leftovers in an evl_on_close hook, as examples/chat.c
   does (a shutdown during a burst of accepts cancels tasks that have not started).
   Cancelling a finished task, or one already joined, returns -ESRCH (a joined task's memory
   stays reserved by the loop, so the stale pointer is safe to pass for as long as no newer
   task took its place).

   Deadlines. evl_deadline(loop, at) tightens the current task's deadline to the earlier of `at`
   and the one in force, and returns the one in force before; evl_deadline_restore puts it
   back. Every suspension after the deadline returns -ETIMEDOUT. Nested scopes therefore take
   the earliest deadline:

       evl_time old = evl_deadline(loop, evl_now(loop) + EVL_MSEC(200));
       int err = fetch(loop, request);   // everything inside gives up after 200 ms
       evl_deadline_restore(loop, old);

   Bounding a cleanup that must not be cancelled: a shield, and a deadline set inside it:

       evl_shield_begin(loop);
       evl_time old = evl_deadline(loop, evl_now(loop) + EVL_MSEC(50));
       evl_write_all(loop, fd, "bye\n", 4);   // -ETIMEDOUT after 50 ms against a stuck peer
       evl_deadline_restore(loop, old);
       evl_shield_end(loop);

   Structured concurrency. An evl_group owns the tasks spawned into it: evl_group_wait returns
   when all have finished, with 0 or the first failure (which cancelled the others); a waiter
   that is cancelled cancels the group's tasks and waits for them before it returns.
   evl_group_cancel stops a group on purpose: its tasks are cancelled, and the wait returns 0
   (a failure that came first is still returned). evl_group_spawn_task hands back a member's
   task, valid to cancel or name it until it finishes; after a failed wait,
   evl_group_first_failure says which task failed first, with what, and how many failed.
   Futures (evl_future) carry one result, settable from any thread with
   evl_future_set_threadsafe; a future may be freed from its own evl_future_on_done callback,
   which is how C code cleans up after it. evl_event, evl_sem and the bounded evl_queue are
   the coordination and backpressure primitives: a task waiting on a full queue is how a fast
   producer is slowed to the pace of its consumer. evl_queue_close ends a stream of items (as
   asyncio's Queue.shutdown and Go's close do): every put from then on, and every put
   waiting, returns -EPIPE; gets return the items left, then -EPIPE. After a wakeup a task
   never touches the object it waited on, so freeing an event, semaphore, queue, future or
   group while tasks wait is safe: they get -ECANCELED.

   Partial writes. evl_write_all returns len or an error; when it fails part way (a reset, a
   cancel, a deadline) it does not say how much went out. evl_write is one write(2) that waits
   for room and returns what it took, so a caller that must know loops over it:

       size_t sent = 0;
       while (sent < len) {
           ssize_t n = evl_write(loop, fd, buf + sent, len - sent);
           if (n < 0) break;   // sent bytes went out; the rest did not
           sent += (size_t)n;
       }

   ERROR BOUNDARY AND DEBUG MODE
   -----------------------------
   Errors a caller can receive are returned. Those nobody can receive go to the loop's
   exception handler (evl_set_exception_handler) as an evl_exception: a detached task that
   returned a failure; a joinable task that failed and was never joined (at close); a backend
   failure (evl_run also returns it); evl_accept out of file descriptors (also returned, and
   reported at most once a second); executor jobs still stuck after a shutdown deadline; tasks
   that outlived the shutdown grace period. -ECANCELED is never reported. The default handler
   (evl_default_exception_handler, which a custom handler may call) writes one line through
   the log hook: "evloop: detached task failed: input/output error (task 'w3' spawned at
   server.c:88)". evl_call_exception_handler sends your own errors the same way.

   Debug mode (evl_config.debug, evl_set_debug, or EVLOOP_DEBUG=1 in the environment) times
   every callback and task step and reports one that ran longer than the slow threshold
   (100 ms; evl_set_slow_callback changes it and can receive the evl_slow_report instead of the
   log): what ran (callback, timer, I/O watcher, or the task's name) and where it was
   registered, which the macros evl_call_soon, evl_timer_init, evl_io_init, evl_task_spawn and
   evl_group_spawn record (__FILE__, __LINE__); it records tasks' spawn sites for the
   exception handler, refuses calls that only the loop's thread may make when another thread
   makes them (-EPERM and an error line, instead of silent corruption), and says at close what
   was still alive. Off, it costs one predictable branch per callback.

   The stall watchdog (evl_config.stall_threshold) is a thread that sees a callback or task
   step still running past the threshold and logs it while the loop is still stuck, which
   asyncio can only do after the fact: "evloop: loop stalled: timer registered at
   server.c:40 has been running for 512 ms and has not returned".

   evl_loop_stats fills evl_stats: iterations, callbacks run, tasks spawned and alive, active
   timers, watched fds, executor queue depth and busy threads, loop lag (how late the last
   timer fired, and the worst so far), slow callbacks and stalls. evl_set_task_hooks calls you
   on every spawn and finish (the C counterpart of asyncio's task factory).

   The virtual clock (evl_config.clock = EVL_CLOCK_VIRTUAL) starts at 0 and stands still while
   work is ready; when the loop would sleep until a timer, it jumps to the timer instead (I/O is
   still polled, without waiting). A test of a one-hour timeout runs in microseconds and the
   same way every time.

   EXECUTOR, SIGNALS, SHUTDOWN
   ---------------------------
   Blocking work (a database driver, a DNS lookup, a compression) leaves the loop thread:

       void *rows;
       int err = evl_executor_run(loop, query_db, &request, &rows);   // in a task

   Each loop has its own pool, started on first use with evl_config.executor_threads threads
   and a queue bounded by evl_config.executor_queue. A task offloading to a full queue waits
   for room (backpressure; cancellation and deadlines apply while it waits); evl_executor_submit
   from a callback returns a future, or -EAGAIN when full. Results return on the loop thread
   through the same coalesced wakeup as posts, many per wakeup. evl_executor_new makes further
   pools, so CPU-bound work sized to the cores does not starve blocking I/O (C has no GIL:
   threads are the answer to asyncio's ProcessPoolExecutor advice). evl_executor_shutdown
   cancels what is queued, waits for what runs until its deadline, reports a job still stuck
   and returns: it never hangs.

   A job's arg is handed back when the job has returned, and the library never frees or
   reuses what it points to before then, as Trio's to_thread.run_sync waits for its thread:
     - evl_executor_run returns only after its job has returned (or was dropped unrun), so arg
       may point into the task's own stack. Cancelled or past its deadline while the job is
       queued, the job never runs and the call returns -ECANCELED or -ETIMEDOUT at once;
       while it runs, the job is asked to stop, the task waits for it, and the call returns
       -ECANCELED or -ETIMEDOUT without the result.
     - A submitted job's future completes when the job has returned: cancelling it drops a
       queued job at once (the future completes with -ECANCELED), and a running one completes
       the future with -ECANCELED when it returns. Its evl_future_on_done callbacks are where
       to free arg. Freeing the future before then gives that moment up (the job runs on,
       orphaned): do not free what arg points to.
     - A job asked to stop sees evl_executor_cancelled() return 1 on its worker thread: its
       waiter was cancelled or passed its deadline, its future was cancelled, or its pool was
       shut down past its deadline. A long job polls it and returns early.
     - A job still running past a shutdown deadline (evl_executor_shutdown, evl_shutdown,
       evl_loop_close) is reported and asked to stop; whoever waits for it hears -ECANCELED
       when it returns, and if the loop closes first, the stack of a task waiting on it is
       kept until it returns. Nothing is freed under a running job.

   Signals: an evl_signal watcher runs its callback on the loop thread after the signal
   arrived. One process-wide handler sets a per-loop pending flag and writes the loop's wakeup,
   so any thread may start a watcher, several loops may watch one signal, and a signal that
   arrives before evl_run is delivered when it runs. Arrivals between two runs of the callback
   coalesce into one. The disposition from before the first watcher comes back when the last
   one stops. 0, negative, too large, SIGKILL and SIGSTOP are -EINVAL.

   evl_shutdown(loop, grace) is the graceful exit an orchestrator expects between SIGTERM and
   SIGKILL: it runs the evl_on_shutdown hooks (close your listeners there), cancels every task,
   waits for them until the grace period ends (or less, when the last one finishes), reports
   by name each task still running, shuts the executors within what is left, runs what that
   made due (the futures' on_done callbacks of the jobs that finished, the tasks they woke),
   then the evl_on_close hooks, and stops the loop. evl_main(cfg, main, arg) is the whole
   bootstrap: the loop, SIGINT and SIGTERM wired to evl_shutdown(cfg->shutdown_grace), main run
   as a task (when it returns, the rest is shut down the same way), the loop closed, main's
   result returned (0 when main ended because a shutdown cancelled it). A second SIGINT or
   SIGTERM during the shutdown ends the process at once by that signal (its default action),
   so a supervisor sees the signal, as a shell does (exit status 128 + signo).
   evl_loop_fork(loop) prepares a loop for the child after fork(): new backend and wakeup fds;
   the parent's executor jobs fail with -ECANCELED and its pools start again empty (their
   threads are the parent's; new ones start on first use); the parent's signals are not
   delivered twice.

   OWNERSHIP: WHEN A POINTER COMES BACK
   ------------------------------------
   Every pointer the library takes has a moment when it is handed back; after it the library
   never touches it, whatever cancellation, deadline, shutdown or close happens in between:
     callback args    (evl_call_soon, timers, I/O and signal watchers, hooks): passed to the
                      callback only; yours again once the handle is stopped, the callback
                      has run, or evl_loop_close dropped it unrun
     a task's arg     passed to its function; a task cancelled before it started never runs,
                      so the arg is its spawner's again when evl_task_done says so
     a job's arg      when the job has returned: evl_executor_run returns, or the job's
                      future completes (free it in an evl_future_on_done callback)
     a task's stack   the library's: freed when the task finishes, or at evl_loop_close, but
                      kept for as long as an executor job the task waits on still runs
     queue items      yours: evl_queue_free and evl_queue_close leave the items left to you
     a future         yours until evl_future_free, which may run from its own callback
     handles          (evl_timer, evl_io, evl_signal): yours; not moved or freed while active

   CONFIGURING A LOOP FOR PRODUCTION
   ---------------------------------
   The production checklist for an asyncio service, step by step, in evloop:
     1. Backend: the best one is the default (epoll, kqueue); EVLOOP_BACKEND overrides it at
        run time, and an unavailable choice is an error, never a silent fallback.
     2. Debug gating: leave evl_config.debug at zero so EVLOOP_DEBUG=1 in the environment turns
        it on for a debugging session, never in the production image.
     3. Error boundary: evl_set_exception_handler from main, before spawning detached tasks;
        forward to your logging, then call evl_default_exception_handler.
     4. Slow callbacks: evl_set_slow_callback(loop, EVL_MSEC(100), NULL, NULL) (lower it to
        20 ms while hunting a stall); add evl_config.stall_threshold to catch a stall live.
     5. Executor sizing: evl_config.executor_threads for blocking I/O (min(32, ncpu + 4) by
        default), a bounded evl_config.executor_queue, and an evl_executor_new pool the size
        of the core count for CPU-bound work.
     6. Signals and shutdown: evl_main wires SIGINT and SIGTERM to evl_shutdown with
        evl_config.shutdown_grace, shorter than the orchestrator's termination grace period;
        close listeners in an evl_on_shutdown hook, flush in evl_on_close.
   examples/bootstrap.c is all of it in 100 lines.

   THREADS AND SIGNALS
   -------------------
   A loop belongs to the thread that runs it; run one loop per thread, as many loops per process
   as you like. Each declaration below says whether it is thread-safe. From other threads use
   evl_call_soon_threadsafe (a multi-producer queue: each producer's order is kept, nothing is
   lost or run twice, and a sleeping loop is woken by one eventfd or pipe write however many
   posts arrive before it wakes), evl_stop, evl_loop_ref, evl_loop_unref,
   evl_future_set_threadsafe and evl_signal_start/stop. A thread that will
   post to a loop with nothing else to wait for should hold evl_loop_ref, or evl_run may return
   before the post arrives. An executor job may call evl_executor_cancelled on its worker
   thread. Interrupted system calls (EINTR) are retried inside the poll.
   The library leaves SIGPIPE alone: by default a write to a socket the peer has reset kills
   the process. A server ignores it once at start, signal(SIGPIPE, SIG_IGN), and the write
   (evl_write_all too) fails with -EPIPE instead, as examples/http.c does.

   ERRORS
   ------
   A function that can fail returns int: 0 (or a count) on success, a negative errno on
   failure. evl_strerror describes the code and evl_errname names it ("EBADF"), for every
   errno the C library has, from one table. When a call that takes a callback fails, the
   callback never runs. Passing a NULL loop is a programming error and asserts; bad input from
   the caller or a failure of the OS is returned:
     -EINVAL     NULL handle, no callback, negative delay, bad event mask, unknown backend
                 name; evl_task_join of a detached task or of a group's task
     -EBADF      negative file descriptor; a task I/O call whose fd evl_close closed, or
                 that waited on a kept registration of an fd closed behind its back
     -ERANGE     the select backend cannot watch an fd >= FD_SETSIZE
     -ENOMEM     the allocator failed (the loop keeps working; nothing was queued)
     -ENOSYS     the requested backend is not available in this build or on this platform
     -EBUSY      evl_run or evl_run_once called from inside the same loop's callback; a
                 second evl_task_join of one task; evl_future_set on an executor job's future
     -EDEADLK    evl_loop_close called from inside the same loop's callback; a task joining itself
     -EPERM      a suspending call made outside a task; (debug mode) a loop-thread-only call
                 made from another thread
     -ECANCELED  the task was cancelled (not an error to report: the task is being told to end)
     -ETIMEDOUT  the task's deadline has passed
     -ESRCH      cancelling or joining a task that has finished or was joined
     -EALREADY   completing a future twice; evl_shutdown while one is under way
     -EAGAIN     evl_sem_try_acquire, evl_queue_try_put, evl_queue_try_get or
                 evl_executor_submit could not proceed
     -EPIPE      a put to a closed queue, a get from a closed and empty one
     -ENOSPC     evl_signal_start when 16 loops already watch that signal
     -ESHUTDOWN  offloading to an executor that is shutting down, or inside evl_loop_close
     other       whatever the backend's system call reported (epoll_ctl on a regular file: -EPERM)

   PLATFORMS
   ---------
   Linux (glibc, musl), the BSDs and macOS; gcc and clang; C99 or later and C++. Task context
   switches in assembly on ELF platforms for x86-64, i386, AArch64, ARMv7 (hard float) and
   RISC-V 64 (lp64d), tested under qemu-user for the four that are not native here; ucontext
   everywhere else. Guarded task stacks cost no kernel mapping on Linux 6.13+ (guard regions,
   probed at run time; elsewhere two mappings per stack, see stack_guard). Backends:
   epoll (Linux), kqueue (BSD, macOS; compiled there, not tested in this project's CI), poll
   (any POSIX), select (any; fds >= FD_SETSIZE are refused). Needs libc and pthreads only.

   CHANGES
   -------
   next   tasks at scale: stacks carved from slabs with guard regions (Linux
          6.13+), so the default config runs a million concurrent tasks; free stacks past
          the pool are discarded and empty slabs unmapped; EVLOOP_STACK_GUARD=mprotect.
   0.2.0  ownership and task safety: evl_executor_run waits for a running job even when
          cancelled or past its deadline, and a cancelled job's future completes when the
          job returns (evl_executor_cancelled tells the job); nothing a running job was
          handed is freed under it, by a shutdown or by evl_loop_close; a graceful shutdown
          runs the callbacks of the jobs that finished; evl_loop_close reports every task it
          abandons; deadlines apply inside shields; new evl_close, evl_write,
          evl_queue_close, evl_group_cancel, evl_group_spawn_task, evl_group_first_failure,
          evl_errname; evl_strerror names every errno; a second signal ends evl_main by that
          signal; evl_future_set on an executor job's future is -EBUSY; zero means the
          default in every evl_config field, debug included (EVL_DEBUG_FROM_ENV; off is
          EVL_DEBUG_OFF now, and -1 still reads the environment).
   0.1.0  the first release: the loop, four backends, timers, I/O watchers, tasks, the error
          boundary and debug mode, the executor, signals, graceful shutdown, evl_main.
*/

#ifndef EVLOOP_H
#define EVLOOP_H

#define EVLOOP_VERSION_MAJOR 0
#define EVLOOP_VERSION_MINOR 2
#define EVLOOP_VERSION_PATCH 0
#define EVLOOP_VERSION "0.2.0"

/* The implementation needs POSIX and Linux interfaces (pipe2, eventfd, MAP_ANONYMOUS) that a
   strict -std=c99 hides; the feature macro must come before the first system header. */
#if defined(EVLOOP_IMPLEMENTATION) && defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(EVLOOP_STATIC) && defined(__GNUC__)
#define EVL_API static __attribute__((unused)) /* a program need not call every function */
#elif defined(EVLOOP_STATIC)
#define EVL_API static
#else
#define EVL_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- time ---- */
typedef int64_t evl_time;                       /* nanoseconds of the monotonic clock */
#define EVL_USEC(x) ((evl_time)(x) * 1000)
#define EVL_MSEC(x) ((evl_time)(x) * 1000000)
#define EVL_SEC(x) ((evl_time)(x) * 1000000000)
#define EVL_FOREVER INT64_MAX

/* ---- the loop ---- */
typedef struct evl_loop evl_loop;
typedef void (*evl_cb)(evl_loop *loop, void *arg);

typedef enum evl_backend {
    EVL_BACKEND_AUTO,
    EVL_BACKEND_EPOLL,
    EVL_BACKEND_KQUEUE,
    EVL_BACKEND_POLL,
    EVL_BACKEND_SELECT
} evl_backend;

typedef struct evl_task evl_task;               /* library-owned: holds the stack */

/* A realloc-like allocator: size 0 frees ptr (returns NULL), ptr NULL allocates. */
typedef void *(*evl_alloc_fn)(void *ud, void *ptr, size_t size);

/* Log levels and the log hook. The library prints nothing except through it; the default
   writes warnings and errors to stderr. It may be called from the stall watchdog's thread. */
enum { EVL_LOG_DEBUG, EVL_LOG_INFO, EVL_LOG_WARN, EVL_LOG_ERROR };
typedef void (*evl_log_fn)(int level, const char *message, void *ud);

/* Clocks: the monotonic clock, or a virtual one for tests (see the manual). */
enum { EVL_CLOCK_MONOTONIC = 0, EVL_CLOCK_VIRTUAL = 1 };

/* evl_config.debug: from EVLOOP_DEBUG in the environment (the default: zero), on, or off. */
enum { EVL_DEBUG_FROM_ENV = 0, EVL_DEBUG_ON = 1, EVL_DEBUG_OFF = 2 };

typedef struct evl_config {
    evl_backend backend;   /* AUTO: EVLOOP_BACKEND from the environment, else the best */
    int debug;             /* EVL_DEBUG_FROM_ENV (0), EVL_DEBUG_ON (1) or EVL_DEBUG_OFF (2) */
    evl_alloc_fn alloc;    /* NULL: EVL_MALLOC / EVL_REALLOC / EVL_FREE */
    void *alloc_ud;        /* passed to alloc */
    size_t stack_size;     /* default task stack (0: 128 KiB) */
    int stack_guard;       /* 0: one guard page below each task stack; -1: none */
    evl_time stall_threshold;  /* 0: no stall watchdog; else report a loop stuck this long */
    int clock;             /* EVL_CLOCK_MONOTONIC (0) or EVL_CLOCK_VIRTUAL */
    evl_log_fn log;        /* NULL: warnings and errors to stderr */
    void *log_ud;          /* passed to log */
    int executor_threads;  /* default executor's threads (0: min(32, ncpu + 4)) */
    int executor_queue;    /* bound on its queued jobs (0: 1024) */
    evl_time shutdown_grace;   /* evl_main's and evl_loop_close's grace period (0: 25 s) */
} evl_config;

/* Fills cfg with the defaults (zeroes: a zeroed evl_config is the same). Thread-safe. */
EVL_API void evl_config_init(evl_config *cfg);
/* Creates a loop (cfg NULL: defaults) and stores it in *out. Thread-safe. */
EVL_API int evl_loop_new(evl_loop **out, const evl_config *cfg);
/* Stops every handle, drops queued callbacks, frees the loop. Loop thread only. */
EVL_API int evl_loop_close(evl_loop *loop);
/* Runs until evl_stop or until nothing is left to wait for; 0 or a negative errno. Loop thread. */
EVL_API int evl_run(evl_loop *loop);
/* Runs one iteration, blocking at most max_wait; returns the callbacks run. Loop thread. */
EVL_API int evl_run_once(evl_loop *loop, evl_time max_wait);
/* Makes evl_run return after the current iteration, waking the loop; a stop asked for
   inside evl_run_once ends with it. Thread-safe. */
EVL_API void evl_stop(evl_loop *loop);
/* Keeps evl_run running while nothing else is pending (counted). Thread-safe. */
EVL_API void evl_loop_ref(evl_loop *loop);
/* Drops a hold taken with evl_loop_ref. Thread-safe. */
EVL_API void evl_loop_unref(evl_loop *loop);
/* The loop's cached monotonic time. Loop thread only. */
EVL_API evl_time evl_now(const evl_loop *loop);
/* Reads the clock into the cache now (after a long callback, before starting a timer that
   must count from this moment). Loop thread only. */
EVL_API void evl_now_update(evl_loop *loop);
/* "epoll", "kqueue", "poll" or "select". Thread-safe. */
EVL_API const char *evl_backend_name(const evl_loop *loop);
/* Turns debug mode on or off. Loop thread only. */
EVL_API void evl_set_debug(evl_loop *loop, int on);
/* 1 if debug mode is on. Thread-safe. */
EVL_API int evl_get_debug(const evl_loop *loop);
/* A static description of a negative errno (or 0); "unknown error" for what no errno is.
   Thread-safe. */
EVL_API const char *evl_strerror(int err);
/* The errno's name ("EBADF" for -EBADF), or "unknown". Thread-safe. */
EVL_API const char *evl_errname(int err);
/* Queues cb(loop, arg) to run in the next drain, FIFO. Loop thread only. */
EVL_API int evl_call_soon(evl_loop *loop, evl_cb cb, void *arg);
/* Queues cb(loop, arg) from any thread and wakes the loop. Thread-safe. */
EVL_API int evl_call_soon_threadsafe(evl_loop *loop, evl_cb cb, void *arg);

/* ---- timers ---- */
typedef struct evl_timer {
    evl_cb cb;
    void *arg;
    evl_time repeat;   /* private: interval, 0 for a one-shot */
    uint64_t seq;      /* private: start order, breaks deadline ties */
    size_t slot;       /* private: heap index + 1, 0 when inactive (the deadline is in the heap) */
    const char *file;  /* where it was initialised (for debug reports), or NULL */
    int line;
} evl_timer;

/* Prepares a timer; it is inactive until started. Thread-safe (touches only t). */
EVL_API void evl_timer_init(evl_timer *t, evl_cb cb, void *arg);
/* Fires t after delay, then every repeat (0: once); restarts an active t. Loop thread only. */
EVL_API int evl_timer_start(evl_loop *loop, evl_timer *t, evl_time delay, evl_time repeat);
/* Stops t; a no-op when t is inactive. Loop thread only. */
EVL_API int evl_timer_stop(evl_loop *loop, evl_timer *t);
/* 1 if t is started and has not fired for the last time. Loop thread only. */
EVL_API int evl_timer_active(const evl_timer *t);

/* ---- I/O watchers ---- */
enum { EVL_READ = 1, EVL_WRITE = 2 };
typedef void (*evl_io_cb)(evl_loop *loop, void *arg, int events);
typedef struct evl_io {
    evl_io_cb cb;
    void *arg;
    int fd;
    int events;           /* private: what the watcher asked for */
    int revents;          /* private: ready events not yet delivered */
    int active;           /* private */
    size_t pending;       /* private: index + 1 in the loop's pending list, 0 when not pending */
    struct evl_io *next;  /* private: the next watcher of the same fd */
    const char *file;     /* where it was initialised (for debug reports), or NULL */
    int line;
} evl_io;

/* Prepares a watcher of fd; it is inactive until started. Thread-safe (touches only w). */
EVL_API void evl_io_init(evl_io *w, int fd, evl_io_cb cb, void *arg);
/* Watches EVL_READ and/or EVL_WRITE; again to change the events. Loop thread only. */
EVL_API int evl_io_start(evl_loop *loop, evl_io *w, int events);
/* Stops w; a no-op when w is inactive. Loop thread only. */
EVL_API int evl_io_stop(evl_loop *loop, evl_io *w);
/* 1 if w is started. Loop thread only. */
EVL_API int evl_io_active(const evl_io *w);
/* Closes fd the safe way: every task waiting on it (in any task I/O call) wakes with -EBADF at
   once and its I/O watchers stop, then close(2); returns close's result. A plain close(2) of
   an fd a task waits on is a bug (on epoll the task would sleep forever). Loop thread only. */
EVL_API int evl_close(evl_loop *loop, int fd);

/* ---- error boundary, debug mode, observability ---- */
/* What went wrong, handed to the exception handler. `task` is NULL when no task is involved;
   `file` and `line` are the task's spawn site in debug mode (else NULL and 0). */
typedef struct evl_exception {
    const char *message;
    int error;                 /* a negative errno; never -ECANCELED */
    evl_task *task;
    const char *task_name;
    const char *file;
    int line;
} evl_exception;
typedef void (*evl_exception_fn)(evl_loop *loop, const evl_exception *e, void *ud);
/* Routes every error the loop cannot return to a caller to fn (NULL: the default). Loop thread. */
EVL_API void evl_set_exception_handler(evl_loop *loop, evl_exception_fn fn, void *ud);
/* Logs e as one line at EVL_LOG_ERROR; a custom handler may call it too. Loop thread only. */
EVL_API void evl_default_exception_handler(evl_loop *loop, const evl_exception *e);
/* Hands e to the loop's handler, as the loop does itself (-ECANCELED is dropped). Loop thread. */
EVL_API void evl_call_exception_handler(evl_loop *loop, const evl_exception *e);

/* A callback or task step that ran too long (debug mode). */
typedef struct evl_slow_report {
    const char *what;          /* "callback", "timer", "I/O watcher" or the task's name */
    const char *file;          /* where it was registered or spawned, or NULL */
    int line;
    evl_time duration;
} evl_slow_report;
typedef void (*evl_slow_fn)(evl_loop *loop, const evl_slow_report *r, void *ud);
/* Sets the slow-callback threshold (0: 100 ms) and receiver (NULL: log it). Loop thread only. */
EVL_API void evl_set_slow_callback(evl_loop *loop, evl_time threshold, evl_slow_fn fn, void *ud);

/* Counters and gauges of one loop. */
typedef struct evl_stats {
    uint64_t iterations, callbacks;        /* loop iterations; callbacks and task steps run */
    uint64_t tasks_spawned;
    size_t tasks_alive, timers, fds;       /* live tasks, active timers, fds watched */
    size_t executor_queue, executor_busy;  /* queued jobs, busy threads (no executor yet: 0) */
    evl_time lag_last, lag_max;            /* how late the last / the latest timer fired */
    uint64_t slow_callbacks, stalls;       /* slow reports (debug), watchdog reports */
} evl_stats;
/* Fills *out. Loop thread only. */
EVL_API void evl_loop_stats(const evl_loop *loop, evl_stats *out);

/* ---- tasks ---- */
#ifndef EVL_NO_TASKS
#include <sys/socket.h>

typedef int (*evl_task_fn)(evl_loop *loop, void *arg);   /* 0 = success, negative = failure */
typedef struct evl_task_opts {
    const char *name;    /* copied (up to 31 bytes); NULL: "task-N" */
    size_t stack_size;   /* 0: the loop's default (evl_config.stack_size) */
} evl_task_opts;

/* Spawns fn(loop, arg) as a task; out NULL = detached. It starts in the next drain. Loop thread. */
EVL_API int evl_task_spawn(evl_loop *loop, evl_task **out, evl_task_fn fn, void *arg,
                           const evl_task_opts *opts);
/* Waits for t (from a task, unless t is done), stores its result, frees t. Loop thread. */
EVL_API int evl_task_join(evl_loop *loop, evl_task *t, int *result);
/* Cancels t: its current or next suspension returns -ECANCELED until it returns. Loop thread. */
EVL_API int evl_task_cancel(evl_loop *loop, evl_task *t);
/* 1 once t has returned (or was cancelled before it started). Loop thread only. */
EVL_API int evl_task_done(const evl_task *t);
/* The task running now, NULL outside a task. Loop thread only. */
EVL_API evl_task *evl_task_current(const evl_loop *loop);
/* The task's name. Loop thread only. */
EVL_API const char *evl_task_name(const evl_task *t);
typedef void (*evl_task_hook)(evl_loop *loop, evl_task *t, int result, void *ud);
/* Calls on_spawn (result 0) after each spawn and on_finish with the result when a task
   returns; either may be NULL. The C counterpart of asyncio's task factory. Loop thread. */
EVL_API void evl_set_task_hooks(evl_loop *loop, evl_task_hook on_spawn, evl_task_hook on_finish,
                                void *ud);
/* Lets every other ready task and callback run once, then continues. Task only. */
EVL_API int evl_yield(evl_loop *loop);
/* Suspends the current task for delay. Task only. */
EVL_API int evl_sleep(evl_loop *loop, evl_time delay);
/* Tightens the task's deadline to the earlier of `at` and the current one; returns the one in
   force before. Every suspension after the deadline returns -ETIMEDOUT. Task only. */
EVL_API evl_time evl_deadline(evl_loop *loop, evl_time at);
/* Puts back a deadline returned by evl_deadline (EVL_FOREVER: none). Task only. */
EVL_API void evl_deadline_restore(evl_loop *loop, evl_time old);
/* Opens a shield: until the matching end, cancellation and the deadlines set before it do not
   interrupt the task's suspensions (they apply again afterwards); a deadline set inside it
   does. Nests. Task only. */
EVL_API void evl_shield_begin(evl_loop *loop);
/* Closes the innermost shield. Task only. */
EVL_API void evl_shield_end(evl_loop *loop);

/* Futures: a result (status, value) delivered once. */
typedef struct evl_future evl_future;
/* Creates a pending future. Loop thread only. */
EVL_API int evl_future_new(evl_loop *loop, evl_future **out);
/* Completes f with status and value, waking its waiters; -EALREADY if done. Loop thread. */
EVL_API int evl_future_set(evl_loop *loop, evl_future *f, int status, void *value);
/* evl_future_set from any thread; f must stay alive until it has been delivered. Thread-safe. */
EVL_API int evl_future_set_threadsafe(evl_future *f, int status, void *value);
/* Waits until f is done (from a task, unless it is done); returns its status. Loop thread. */
EVL_API int evl_future_await(evl_loop *loop, evl_future *f, void **value);
/* Runs cb(loop, arg) in a drain after f completes (at once queued if it is done). Loop thread. */
EVL_API int evl_future_on_done(evl_loop *loop, evl_future *f, evl_cb cb, void *arg);
/* Completes f with -ECANCELED; -EALREADY if done. Loop thread only. */
EVL_API int evl_future_cancel(evl_loop *loop, evl_future *f);
/* 1 once f is done. Loop thread only. */
EVL_API int evl_future_done(const evl_future *f);
/* Frees f; tasks still waiting get -ECANCELED. Loop thread only. */
EVL_API void evl_future_free(evl_loop *loop, evl_future *f);

/* Task groups: structured concurrency. */
typedef struct evl_group evl_group;
/* The first failure in a group: what evl_group_wait returned, and which task it came from. */
typedef struct evl_group_failure {
    int error;            /* the task's result (a negative errno); 0: no task failed */
    size_t failures;      /* how many tasks of the group failed (-ECANCELED is not a failure) */
    char task_name[32];   /* the first failed task's name */
    const char *file;     /* its spawn site in debug mode, else NULL */
    int line;
} evl_group_failure;
/* Creates an empty group. Loop thread only. */
EVL_API int evl_group_new(evl_loop *loop, evl_group **out);
/* Spawns a task owned by g. Loop thread only. */
EVL_API int evl_group_spawn(evl_loop *loop, evl_group *g, evl_task_fn fn, void *arg,
                            const evl_task_opts *opts);
/* evl_group_spawn that also stores the task in *out: valid to cancel or name it until it
   finishes (a group's task cannot be joined: the group collects it). Loop thread only. */
EVL_API int evl_group_spawn_task(evl_loop *loop, evl_group *g, evl_task **out, evl_task_fn fn,
                                 void *arg, const evl_task_opts *opts);
/* Cancels every task still running in g, and those spawned into it later: a group stopped on
   purpose has not failed, so evl_group_wait returns 0 (or a failure that came first). Loop
   thread only. */
EVL_API void evl_group_cancel(evl_loop *loop, evl_group *g);
/* The group's first failure: returns its error (0: none) and fills *out (may be NULL). Loop
   thread only. */
EVL_API int evl_group_first_failure(const evl_group *g, evl_group_failure *out);
/* Waits for every task of g; the first failure cancels the others and is returned; a cancelled
   waiter cancels the tasks, waits for them, and returns -ECANCELED. Task only. */
EVL_API int evl_group_wait(evl_loop *loop, evl_group *g);
/* Cancels what is still running in g and frees it; a waiter gets -ECANCELED. Loop thread. */
EVL_API void evl_group_free(evl_loop *loop, evl_group *g);

/* Events: a flag tasks can wait for. */
typedef struct evl_event evl_event;
/* Creates a cleared event. Loop thread only. */
EVL_API int evl_event_new(evl_loop *loop, evl_event **out);
/* Sets e and wakes every waiter. Loop thread only. */
EVL_API void evl_event_set(evl_loop *loop, evl_event *e);
/* Clears e. Loop thread only. */
EVL_API void evl_event_clear(evl_loop *loop, evl_event *e);
/* 1 if e is set. Loop thread only. */
EVL_API int evl_event_is_set(const evl_event *e);
/* Waits until e is set. Task only. */
EVL_API int evl_event_wait(evl_loop *loop, evl_event *e);
/* Frees e; waiters get -ECANCELED. Loop thread only. */
EVL_API void evl_event_free(evl_loop *loop, evl_event *e);

/* Semaphores: a counter tasks wait on, FIFO. */
typedef struct evl_sem evl_sem;
/* Creates a semaphore holding `count` units. Loop thread only. */
EVL_API int evl_sem_new(evl_loop *loop, evl_sem **out, unsigned count);
/* Takes one unit, waiting while there is none. Task only. */
EVL_API int evl_sem_acquire(evl_loop *loop, evl_sem *s);
/* Takes one unit if there is one, else -EAGAIN. Loop thread only. */
EVL_API int evl_sem_try_acquire(evl_loop *loop, evl_sem *s);
/* Gives one unit back, waking the first waiter. Loop thread only. */
EVL_API void evl_sem_release(evl_loop *loop, evl_sem *s);
/* Frees s; waiters get -ECANCELED. Loop thread only. */
EVL_API void evl_sem_free(evl_loop *loop, evl_sem *s);

/* Bounded queues of pointers, FIFO, with waiting on both ends: the backpressure primitive. */
typedef struct evl_queue evl_queue;
/* Creates a queue holding at most capacity (>= 1) items. Loop thread only. */
EVL_API int evl_queue_new(evl_loop *loop, evl_queue **out, size_t capacity);
/* Appends item, waiting while the queue is full. Task only. */
EVL_API int evl_queue_put(evl_loop *loop, evl_queue *q, void *item);
/* Appends item if there is room, else -EAGAIN. Loop thread only. */
EVL_API int evl_queue_try_put(evl_loop *loop, evl_queue *q, void *item);
/* Takes the oldest item, waiting while the queue is empty. Task only. */
EVL_API int evl_queue_get(evl_loop *loop, evl_queue *q, void **item);
/* Takes the oldest item if there is one, else -EAGAIN. Loop thread only. */
EVL_API int evl_queue_try_get(evl_loop *loop, evl_queue *q, void **item);
/* The number of items queued. Loop thread only. */
EVL_API size_t evl_queue_len(const evl_queue *q);
/* Ends the stream: every put from now on, and every put waiting, returns -EPIPE; gets take
   the items left, then return -EPIPE. Loop thread only. */
EVL_API void evl_queue_close(evl_loop *loop, evl_queue *q);
/* Frees q (the items are the caller's); waiters get -ECANCELED. Loop thread only. */
EVL_API void evl_queue_free(evl_loop *loop, evl_queue *q);

/* Task I/O on non-blocking fds: each suspends only the calling task and honours its
   cancellation and deadline. Task only; outside a task they return -EPERM. */
/* Waits until fd is ready for events; returns the ready events. */
EVL_API int evl_wait_io(evl_loop *loop, int fd, int events);
/* read(2) that waits for data; 0 at end of file. */
EVL_API ssize_t evl_read(evl_loop *loop, int fd, void *buf, size_t len);
/* write(2) that waits for room; returns what one write took (1 to len bytes), so a caller that
   must know how much went out before a failure (a cancel, a deadline, a reset) loops over it. */
EVL_API ssize_t evl_write(evl_loop *loop, int fd, const void *buf, size_t len);
/* Writes all of buf, waiting for room as needed; returns len. A failure part way returns the
   error alone: use evl_write to learn how much went out. */
EVL_API ssize_t evl_write_all(evl_loop *loop, int fd, const void *buf, size_t len);
/* accept(2) that waits for a connection; the new fd is non-blocking and close-on-exec. */
EVL_API int evl_accept(evl_loop *loop, int listen_fd, struct sockaddr *addr, socklen_t *len);
/* connect(2) on a non-blocking socket that waits until the connection is made. */
EVL_API int evl_connect(evl_loop *loop, int fd, const struct sockaddr *addr, socklen_t len);
/* recvfrom(2) that waits for a datagram. */
EVL_API ssize_t evl_recvfrom(evl_loop *loop, int fd, void *buf, size_t len, int flags,
                             struct sockaddr *addr, socklen_t *addrlen);
/* sendto(2) that waits for room. */
EVL_API ssize_t evl_sendto(evl_loop *loop, int fd, const void *buf, size_t len, int flags,
                           const struct sockaddr *addr, socklen_t addrlen);
#endif /* EVL_NO_TASKS */

/* ---- executor, signals, shutdown ---- */
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
/* A pool of threads for blocking work. Each loop has a default pool, started on first use;
   evl_executor_new makes more (CPU-bound work sized to the cores, beside the blocking-I/O
   pool). Results come back on the loop thread. */
typedef struct evl_executor evl_executor;
typedef void *(*evl_work_fn)(void *arg);
/* Runs fn(arg) on the default pool and suspends the task until it returns; waits for queue
   room when the queue is full. Returns only once the job has returned (or never ran), so arg
   may point into the task's stack. Cancelled or past its deadline while queued: the job never
   runs; while running: the job is asked to stop (evl_executor_cancelled), the task waits for
   it, and returns -ECANCELED or -ETIMEDOUT without its result. Task only. */
EVL_API int evl_executor_run(evl_loop *loop, evl_work_fn fn, void *arg, void **result);
/* Queues fn(arg) on the default pool; *out completes with status 0 and the result once the job
   has returned. Cancelling the future drops a queued job at once; a running one is asked to
   stop and the future completes (-ECANCELED) when it returns. evl_future_set on it is
   -EBUSY. -EAGAIN when the queue is full. Loop thread only. */
EVL_API int evl_executor_submit(evl_loop *loop, evl_work_fn fn, void *arg, evl_future **out);
/* In a job, on its worker thread: 1 once the job was asked to stop (its task was cancelled or
   passed its deadline, its future was cancelled, or its pool shut down past its deadline), so
   a long job can return early; 0 otherwise, and outside a job. Thread-safe. */
EVL_API int evl_executor_cancelled(void);
/* Creates another pool of `threads` threads (0: min(32, ncpu + 4)) and `queue` queued jobs
   (0: 1024), freed at evl_loop_close or by evl_executor_shutdown. Loop thread only. */
EVL_API int evl_executor_new(evl_loop *loop, evl_executor **out, int threads, int queue);
/* evl_executor_run on a given pool. Task only. */
EVL_API int evl_executor_run_on(evl_loop *loop, evl_executor *ex, evl_work_fn fn, void *arg,
                                void **result);
/* evl_executor_submit on a given pool. Loop thread only. */
EVL_API int evl_executor_submit_on(evl_loop *loop, evl_executor *ex, evl_work_fn fn, void *arg,
                                   evl_future **out);
/* Cancels the queued jobs, waits up to `timeout` for the running ones, and frees ex; 0 or
   -ETIMEDOUT. Never hangs: a job still running then is reported and asked to stop, and whoever
   waits for it (a task, a future) hears -ECANCELED when it returns. Loop thread only. */
EVL_API int evl_executor_shutdown(evl_loop *loop, evl_executor *ex, evl_time timeout);
#endif

#ifndef EVL_NO_SIGNALS
/* A signal watcher: cb(loop, arg) runs on the loop thread after signo arrived (once for any
   number of arrivals since the last run). Caller-owned, like timers. */
typedef struct evl_signal {
    evl_cb cb;
    void *arg;
    int signo;
    int active;                 /* private */
    evl_loop *loop;             /* private */
    struct evl_signal *next;    /* private: the loop's watchers of the same signal */
    unsigned seen;              /* private: the dispatch round that last ran it */
} evl_signal;
/* Prepares a watcher of signo. Thread-safe (touches only s). */
EVL_API void evl_signal_init(evl_signal *s, int signo, evl_cb cb, void *arg);
/* Starts watching; -EINVAL for 0, negative, too large, SIGKILL, SIGSTOP. Thread-safe. */
EVL_API int evl_signal_start(evl_loop *loop, evl_signal *s);
/* Stops watching; the old disposition returns after the last watcher. Thread-safe. */
EVL_API int evl_signal_stop(evl_loop *loop, evl_signal *s);
#endif

/* Graceful shutdown: runs the shutdown hooks, cancels every task, waits up to `grace` for
   them, reports by name those still running, shuts the executors within what is left, runs
   the close hooks and stops the loop. -EALREADY if one is under way. Loop thread only. */
EVL_API int evl_shutdown(evl_loop *loop, evl_time grace);
/* Adds cb(loop, arg) to run when a shutdown begins (close listeners here). Loop thread. */
EVL_API int evl_on_shutdown(evl_loop *loop, evl_cb cb, void *arg);
/* Adds cb(loop, arg) to run at the end of a shutdown, or at evl_loop_close. Loop thread. */
EVL_API int evl_on_close(evl_loop *loop, evl_cb cb, void *arg);
/* In the child after fork(): new backend and wakeup fds, the parent's executor jobs failed
   (pools start empty) and pending signals forgotten. Child only, before anything else. */
EVL_API int evl_loop_fork(evl_loop *loop);
#ifndef EVL_NO_TASKS
/* The production bootstrap in one call: a loop from cfg, SIGINT and SIGTERM wired to a
   graceful shutdown (a second one exits at once), main run as a task, the loop closed; returns
   main's result (0 when main ended because a shutdown cancelled it). Thread-safe. */
EVL_API int evl_main(const evl_config *cfg, evl_task_fn main, void *arg);
#endif

/* ---- registration sites ---- */
/* The calls that register a callback or spawn a task have variants that record the caller's
   file and line for debug reports, and same-named macros that pass __FILE__ and __LINE__. The
   functions stay real (take their address, or call `(evl_call_soon)(...)`); define
   EVL_NO_SITE_MACROS to leave the macros out. */
EVL_API int evl_call_soon_at(evl_loop *loop, evl_cb cb, void *arg, const char *file, int line);
EVL_API void evl_timer_init_at(evl_timer *t, evl_cb cb, void *arg, const char *file, int line);
EVL_API void evl_io_init_at(evl_io *w, int fd, evl_io_cb cb, void *arg, const char *file, int line);
#ifndef EVL_NO_TASKS
EVL_API int evl_task_spawn_at(evl_loop *loop, evl_task **out, evl_task_fn fn, void *arg,
                              const evl_task_opts *opts, const char *file, int line);
EVL_API int evl_group_spawn_at(evl_loop *loop, evl_group *g, evl_task_fn fn, void *arg,
                               const evl_task_opts *opts, const char *file, int line);
EVL_API int evl_group_spawn_task_at(evl_loop *loop, evl_group *g, evl_task **out, evl_task_fn fn,
                                    void *arg, const evl_task_opts *opts, const char *file,
                                    int line);
#endif
#ifndef EVL_NO_SITE_MACROS
#define evl_call_soon(loop, cb, arg) evl_call_soon_at(loop, cb, arg, __FILE__, __LINE__)
#define evl_timer_init(t, cb, arg) evl_timer_init_at(t, cb, arg, __FILE__, __LINE__)
#define evl_io_init(w, fd, cb, arg) evl_io_init_at(w, fd, cb, arg, __FILE__, __LINE__)
#ifndef EVL_NO_TASKS
#define evl_task_spawn(loop, out, fn, arg, opts) \
    evl_task_spawn_at(loop, out, fn, arg, opts, __FILE__, __LINE__)
#define evl_group_spawn(loop, g, fn, arg, opts) \
    evl_group_spawn_at(loop, g, fn, arg, opts, __FILE__, __LINE__)
#define evl_group_spawn_task(loop, g, out, fn, arg, opts) \
    evl_group_spawn_task_at(loop, g, out, fn, arg, opts, __FILE__, __LINE__)
#endif
#endif

/* ---- fault injection (test builds) ---- */
/* With EVL_TESTING defined, the system calls the library makes can be told to fail: the nth
   call of a site from now on fails with the given errno, once. Allocations need no switch: the
   evl_config `alloc` hook sees every one of them. Sites are counted process-wide. */
#ifdef EVL_TESTING
typedef enum evl_fault_site {
    EVL_FAULT_FD_OPEN,  /* epoll_create1, kqueue, eventfd, pipe: the loop's own fds */
    EVL_FAULT_REGISTER, /* epoll_ctl, kevent changes: (re)registering an fd */
    EVL_FAULT_WAIT,     /* epoll_pwait2 or epoll_wait, kevent, poll, select: the poll */
    EVL_FAULT_READ,     /* read in evl_read, recvfrom in evl_recvfrom */
    EVL_FAULT_WRITE,    /* write in evl_write_all, sendto in evl_sendto */
    EVL_FAULT_ACCEPT,   /* accept4 or accept in evl_accept */
    EVL_FAULT_CONNECT,  /* connect in evl_connect */
    EVL_FAULT_MMAP,     /* a stack slab's mmap, a guard's madvise; mmap and mprotect of a stack */
    EVL_FAULT_THREAD,   /* pthread_create: executor workers, the watchdog */
    EVL_FAULT_SIGACTION, /* sigaction when the first watcher of a signal starts */
    EVL_FAULT_SITES
} evl_fault_site;
/* Makes the nth call of `site` from now (1: the next) fail with `error`; nth 0 disarms the
   site. Thread-safe. */
EVL_API void evl_fault_arm(evl_fault_site site, unsigned long nth, int error);
/* How many calls of `site` the process has made. Thread-safe. */
EVL_API unsigned long evl_fault_calls(evl_fault_site site);
#endif

#ifdef __cplusplus
}
#endif
#endif /* EVLOOP_H */

/* =============================================================================================
   IMPLEMENTATION
   ============================================================================================= */
#if defined(EVLOOP_IMPLEMENTATION) && !defined(EVLOOP_IMPLEMENTATION_DONE) && \
    defined(__linux__) && !defined(_GNU_SOURCE)
#error "evloop.h: define EVLOOP_IMPLEMENTATION before the first #include of evloop.h in this file (or compile with -D_GNU_SOURCE): the implementation needs feature macros that must precede every system header"
#elif defined(EVLOOP_IMPLEMENTATION) && !defined(EVLOOP_IMPLEMENTATION_DONE)
#define EVLOOP_IMPLEMENTATION_DONE

/* ==== >>config and platform detection ==== */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/select.h>

#ifndef EVL_MALLOC
#define EVL_MALLOC(sz) malloc(sz)
#endif
#ifndef EVL_REALLOC
#define EVL_REALLOC(p, sz) realloc(p, sz)
#endif
#ifndef EVL_FREE
#define EVL_FREE(p) free(p)
#endif
#ifndef EVL_ASSERT
#include <assert.h>
#define EVL_ASSERT(c) assert(c)
#endif

#if defined(__linux__) && !defined(EVL_NO_EPOLL)
#define EVL__HAVE_EPOLL 1
#include <sys/epoll.h>
#include <sys/syscall.h>
#endif
#if defined(__linux__)
#define EVL__HAVE_EVENTFD 1
#include <sys/eventfd.h>
#endif
#if (defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || \
     defined(__NetBSD__) || defined(__DragonFly__)) && !defined(EVL_NO_KQUEUE)
#define EVL__HAVE_KQUEUE 1
#include <sys/event.h>
#endif
#ifndef EVL_NO_THREADS
#include <pthread.h>
#endif
#include <signal.h>
#ifdef NSIG
#define EVL__NSIG NSIG
#else
#define EVL__NSIG 65
#endif
/* ThreadSanitizer, detected here because the backends' waits need it as well as the tasks. */
#if defined(__SANITIZE_THREAD__)
#define EVL__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EVL__TSAN 1
#endif
#endif
#ifdef EVL__TSAN
/* ThreadSanitizer runs a signal handler at once only when the signal interrupts a call it
   intercepts as blocking (poll, epoll_wait). Anywhere else it queues the signal on the state
   of the current fiber and runs the handler at that fiber's next intercepted call or atomic
   operation. So a signal queued on a task's fiber that never runs again (it has finished, or
   waits for what will not come) is lost, and one queued just before a wait TSan does not
   intercept (select here) waits with it: in both cases the loop sleeps on, deaf to the
   signal. Between hold and release such signals stay pending in the kernel instead, and the
   release, an intercepted call, runs any handler they bring as it returns. The synchronous
   signals stay open: blocked, a fault would kill the process instead of reaching a handler. */
static void evl__tsan_signals_hold(sigset_t *old) {
    sigset_t set;
    sigfillset(&set);
    sigdelset(&set, SIGSEGV);
    sigdelset(&set, SIGBUS);
    sigdelset(&set, SIGFPE);
    sigdelset(&set, SIGILL);
    sigdelset(&set, SIGTRAP);
    sigdelset(&set, SIGSYS);
    sigdelset(&set, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void evl__tsan_signals_release(const sigset_t *old) {
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, old, NULL);
    errno = saved;
}
#endif
#ifndef EVL_NO_TASKS
#ifndef EVL_NO_MMAP
#include <sys/mman.h>
#endif
/* The context switch: assembly where the architecture has it, ucontext elsewhere. */
#if defined(EVL_CTX_UCONTEXT)
#define EVL__CTX_UCONTEXT 1
#elif defined(__x86_64__) && defined(__ELF__)
#define EVL__CTX_ASM "x86-64"
#elif defined(__i386__) && defined(__ELF__)
#define EVL__CTX_ASM "i386"
#elif defined(__aarch64__) && defined(__ELF__)
#define EVL__CTX_ASM "aarch64"
#elif defined(__arm__) && defined(__ELF__) && defined(__ARM_PCS_VFP)
#define EVL__CTX_ASM "armv7"
#elif defined(__riscv) && defined(__ELF__) && __riscv_xlen == 64 && defined(__riscv_float_abi_double)
#define EVL__CTX_ASM "riscv64"
#else
#define EVL__CTX_UCONTEXT 1
#endif

#ifdef EVL__CTX_UCONTEXT
#include <ucontext.h>
typedef struct evl__ctx {
    ucontext_t uc;
} evl__ctx;
#else
typedef struct evl__ctx {
    void *sp;
} evl__ctx;
#define EVL__ASM_FN(name) \
    ".text\n.weak " #name "\n.hidden " #name "\n.type " #name ",%function\n" #name ":\n"
#define EVL__ASM_END(name) ".size " #name ",.-" #name "\n"
/* The symbols carry the frame layout's version: copies from different evloop.h versions in one
   program must not merge. Bump the suffix whenever a frame changes. */
#define evl__ctx_switch evl__ctx_switch_v1
#define evl__ctx_start evl__ctx_start_v1
#define EVL__ASM_FN_X(name) EVL__ASM_FN(name)
#define EVL__ASM_END_X(name) EVL__ASM_END(name)
#ifdef __cplusplus
extern "C" {
#endif
void evl__ctx_switch(evl__ctx *from, evl__ctx *to) __attribute__((visibility("hidden")));
void evl__ctx_start(void) __attribute__((visibility("hidden")));
#ifdef __cplusplus
}
#endif
#endif

/* ---- sanitizer and Valgrind hooks: each switch is announced, so the tools follow it ---- */
#if defined(__SANITIZE_ADDRESS__)
#define EVL__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVL__ASAN 1
#endif
#endif
#ifdef __cplusplus
extern "C" {
#endif
#ifdef EVL__ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef EVL__TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif
#ifdef __cplusplus
}
#endif
#if defined(EVL_VALGRIND) || (defined(__has_include) && !defined(EVL_NO_VALGRIND))
#if defined(EVL_VALGRIND) || __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define EVL__VALGRIND 1
#endif
#endif
#endif /* EVL_NO_TASKS */

#ifdef __cplusplus
extern "C" {
#endif

/* ==== >>types ==== */
/* A queued callback. */
typedef struct evl__job {
    evl_cb cb;
    void *arg;
} evl__job;

/* The ready deque: a power-of-two ring that grows by doubling and never shrinks, so steady
   state never allocates. */
typedef struct evl__ring {
    evl__job *jobs;
    size_t cap, head, count;
} evl__ring;

/* One entry of the timer heap: 16 bytes, four to a cache line. The deadline is copied next to
   the pointer so that sifting compares entries without touching the timers; the start
   sequence, which only breaks exact ties, stays in the timer. */
typedef struct evl__heap_entry {
    evl_time when;
    evl_timer *timer;
} evl__heap_entry;

/* What the loop knows about one fd number: its watchers and what the backend has registered.
   `emptied` records that every watcher was stopped while the fd stayed registered, so the fd
   may have been closed and its number reused: the next start registers it from scratch. */
typedef struct evl__fd {
    evl_io *watchers;
    uint32_t gen;          /* epoll: registration generation, to drop stale events */
    uint8_t registered;    /* events the backend is watching */
    uint8_t dirty;         /* queued in the change list */
    uint8_t emptied;
} evl__fd;

typedef struct evl__backend evl__backend;

#ifndef EVL_NO_TASKS
typedef struct evl__slab evl__slab;

/* A task stack: `base` is its slot in a slab or its own mapping (guard page first), `lo` the
   usable bottom. */
typedef struct evl__stack {
    void *base, *lo;
    size_t size, map_size;
    evl__slab *slab;           /* the slab it was carved from; NULL: a mapping or heap block */
    unsigned valgrind_id;
} evl__stack;

/* The stacks of one size: free ones kept as they are (their touched pages stay, ready), and
   the slabs they are carved from, those with a free slot first. */
typedef struct evl__stack_class {
    size_t size;
    evl__stack *pool;
    size_t pool_len, pool_cap;
    evl__slab *avail, *full;
    size_t slots;              /* slots in the class's slabs: the next slab has as many */
} evl__stack_class;

/* A FIFO of waiting tasks, linked through the tasks themselves. */
typedef struct evl__waitq {
    evl_task *head, *tail;
} evl__waitq;

/* What every task I/O wait reads and writes comes first, in the first three cache lines (on
   64-bit systems; the I/O watcher straddles the second and the third): a server with a
   thousand tasks touches each one's struct once per message, from wherever the caches left
   it. */
struct evl_task {
    evl__ctx ctx;
    evl_loop *loop;
    int state;
    int woken;                 /* a wakeup is scheduled for the current suspension */
    int wake_status;           /* what the suspension returns */
    int cancelled, shield;
    int drained_fd;            /* fd + 1 that a short evl_read left empty (see evl_read) */
    int kept_fd;               /* fd + 1 whose registration its last wakeup left in place */
    int kept_waiting;          /* in a wait on a kept registration no event has confirmed */
    evl_time deadline;         /* the deadline outside every shield */
    evl_time shield_deadline;  /* the one set inside the open shields (they nest) */
    evl__waitq *wq;            /* the wait list the task is in, if any */
    void *wake_value;          /* what a wakeup handed over (a future's value, a queue item) */
    evl_io io;
    evl_time kept_since;       /* when that wait began */
    int kept_queued;           /* in the loop's kept ring */
    evl_task_fn fn;
    void *arg;
    int result, detached;
    void *wait_item;           /* a waiting evl_queue_put's item */
    evl_timer sleep_timer, deadline_timer;
    evl_task *wnext, *wprev;
    evl__waitq joiners;
    int join_claimed;          /* a joiner waits (or was woken and has yet to collect) */
    evl_group *group;
    evl_task *gnext, *gprev;   /* siblings in the group */
    evl_task *next, *prev;     /* the loop's task list (the free FIFO once released) */
    evl__stack stack;
    struct evl__xjob *job;     /* the executor job it waits for (evl_executor_run) */
    void *tsan_fiber;
    unsigned long long id;
    const char *file;          /* spawn site (debug reports), or NULL */
    int line;
    char name[32];
};

#define EVL__STACK_POOL_MAX 1024
#endif

struct evl_loop {
    evl_alloc_fn alloc;
    void *alloc_ud;
    const evl__backend *backend;
    void *backend_data;
    int debug;

    evl_time now;
    int now_valid;          /* 0 when this iteration skipped reading the clock */
    int running;            /* inside evl_run / evl_run_once */

    evl__ring ready;

    evl__heap_entry *heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;

    evl__fd *fds;
    int fds_cap;
    int *changes;            /* fds whose registration may need to shrink before the poll */
    size_t changes_len, changes_cap;
    evl_io **pending;        /* watchers with events to deliver in this iteration */
    size_t pending_len, pending_cap;
    size_t io_active;        /* user watchers (the wakeup watcher is not counted) */
    size_t fds_watched;      /* fds with at least one watcher (the wakeup's included) */

    /* Cross-thread state. `inbox` is filled by producers under inbox_lock; the loop swaps it
       with `inbox_spare` (empty storage). The atomics use __atomic builtins only. */
#ifndef EVL_NO_THREADS
    pthread_mutex_t inbox_lock;
#endif
    evl__job *inbox, *inbox_spare;
    size_t inbox_len, inbox_cap, inbox_spare_cap;
    int inbox_count;        /* atomic: inbox_len, readable without the lock */
    int sleeping;           /* atomic: the loop is in (or entering) a blocking poll */
    int wake_sent;          /* atomic: a wakeup write is outstanding */
    int stop_requested;     /* atomic */
    int refs;               /* atomic: evl_loop_ref holds */
    int wake_rfd, wake_wfd;
    evl_io wake_io;

    /* Ready-deque slots promised to future pushes that must not fail: one per live task
       (its wakeups) and one per registered future callback. */
    size_t ring_reserved;

    /* Executors and signals hand their results to the loop through this flag and the wakeup:
       nothing to allocate, so nothing can be lost. */
    int async_pending;          /* atomic */
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    evl_executor *executors, *default_executor;
    evl_executor *executors_abandoned;  /* shut down with jobs still running */
    int executor_threads, executor_queue;
#endif
    size_t jobs_in_flight;      /* executor jobs not yet completed (keep evl_run alive) */
#ifndef EVL_NO_SIGNALS
    evl_signal *sig_watchers[EVL__NSIG];   /* under the process-wide signal lock */
    int sig_pending[EVL__NSIG];            /* atomic, set by the signal handler */
    int signals_active;                    /* atomic */
    unsigned sig_round;
#endif
    /* Shutdown: 0 none, 1 waiting for the tasks, 2 finished. */
    int shutdown_state, shutdown_finish_queued, close_hooks_ran;
    int closing;            /* inside evl_loop_close: no new executor job is taken */
    evl_time shutdown_grace, shutdown_deadline;
    evl_timer shutdown_timer;
    evl__job *shutdown_hooks, *close_hooks;
    size_t shutdown_hooks_len, shutdown_hooks_cap, close_hooks_len, close_hooks_cap;

    /* The error boundary, debug mode and what they measure. */
    evl_exception_fn exc_fn;
    void *exc_ud;
    evl_log_fn log_fn;
    void *log_ud;
    evl_slow_fn slow_fn;
    void *slow_ud;
    evl_time slow_threshold;
    int measure;                /* time every callback: debug mode or the stall watchdog */
    evl_time step_t0;
    int virtual_clock;
    evl_time virtual_now;
    evl_stats stats;
    evl_time accept_next_report;  /* evl_accept reports EMFILE once a second at most */
    int stack_limit_warned;       /* a stack could not be mapped: the limit was named */
#ifndef EVL_NO_THREADS
    pthread_t owner;            /* the thread that runs the loop (debug-mode checks) */
    int owner_known;
    /* The stall watchdog: the loop publishes each step it starts (atomics); the watchdog
       thread reports a step still running past the threshold. */
    evl_time stall_threshold;
    int watchdog_running, watchdog_stop;
    pthread_t watchdog;
    pthread_mutex_t watchdog_lock;
    pthread_cond_t watchdog_cond;
    /* The 64-bit atomics are 8-byte aligned: i386 aligns them to 4 in a struct, where one may
       straddle two cache lines (then not atomic) and clang calls libatomic instead. */
    evl_time step_started __attribute__((aligned(8))); /* atomic: when the step began; 0: none */
    uint64_t stalls __attribute__((aligned(8)));       /* atomic: stalls the watchdog reported */
    unsigned step_seq;          /* atomic: counts steps */
    const char *step_what, *step_file;  /* atomic */
    int step_line;              /* atomic */
#endif
#ifndef EVL_NO_TASKS
    evl_task_hook on_spawn, on_finish;
    void *hooks_ud;
    evl_task *current;          /* the task running now; read by the overflow handler */
    struct evl__kept *kept;     /* a ring of the tasks in kept waits, oldest first */
    size_t kept_head, kept_len, kept_cap;
    evl_time kept_clock;        /* when the ring was last looked at */
    evl__ctx ctx;               /* the loop's own context while a task runs */
    evl_task *tasks;            /* every task not yet released */
    evl_task *task_free_head, *task_free_tail;
    size_t tasks_alive;
    unsigned long long task_seq;
    size_t stack_size, page_size;
    int stack_guard;            /* EVL__GUARD_NONE, _REGION or _MAPPING */
    evl__stack_class *stack_classes;
    size_t stack_classes_len, stack_classes_cap;
    int guard_registered;
    void *altstack;
    size_t altstack_size;
    const void *asan_stack_bottom;
    size_t asan_stack_size;
    void *tsan_loop_fiber;
#ifdef EVL__TSAN
    sigset_t tsan_sigmask;      /* held by a task's switch out, released by the switch in */
#endif
#endif
};

/* The interface every backend implements; the loop core calls nothing else of it.
     init     makes the backend's state (loop->backend_data) and kernel object; 0 or -errno.
     destroy  frees them; also called in a child after fork() (before init again), where the
              kernel object may not be the child's to close (kqueue).
     modify   changes the events registered for fd from `old_events` to `new_events` (EVL_READ
              and EVL_WRITE; either may be 0) and returns 0 or -errno, leaving the registration
              as it was on failure. `old_events` EVL__REG_UNKNOWN means the fd was registered
              but may have been closed and its number reused since: the backend then makes its
              state exactly `new_events`, whatever it held. The core grows a registration at
              once (so evl_io_start can report an error) and shrinks it in a pass before the
              next poll (so a watcher stopped and started again in one iteration costs no
              system call); -EBADF and -ENOENT from a shrink mean the fd is already gone.
     poll     waits up to `timeout` (-1: forever, else nanoseconds; 0: do not block), then
              hands each ready fd to evl__io_feed with its events (errors and hang-ups as both,
              EVL__IO_CLOSED added when the fd turned out closed); 0 or -errno (EINTR is 0). */
struct evl__backend {
    const char *name;
    int (*init)(evl_loop *loop);
    void (*destroy)(evl_loop *loop);
    int (*modify)(evl_loop *loop, int fd, int old_events, int new_events);
    int (*poll)(evl_loop *loop, evl_time timeout);
};

#define EVL__REG_UNKNOWN (-1)
/* A backend adds this to an fd's events when the fd turned out to be closed behind the
   loop's back (poll's POLLNVAL, select's EBADF): debug mode says so. */
#define EVL__IO_CLOSED 4
static void evl__io_feed(evl_loop *loop, int fd, int events);
static void evl__shutdown_task_done(evl_loop *loop);
static void evl__close_hooks_run(evl_loop *loop);
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
static void evl__executor_gauges(const evl_loop *loop, evl_stats *out);
static void evl__executors_shutdown(evl_loop *loop, evl_time timeout);
static void evl__executor_keep_stack(evl_task *t);
static void evl__executors_drain(evl_loop *loop);
static void evl__executors_detach(evl_loop *loop);
#endif
#ifndef EVL_NO_SIGNALS
static void evl__signals_close(evl_loop *loop);
static void evl__signals_dispatch(evl_loop *loop);
#endif
static void evl__measured_job(evl_loop *loop, evl__job j);
static void evl__measured_io(evl_loop *loop, evl_io *w, int events);
static void evl__measured_timer(evl_loop *loop, evl_timer *t);

/* ==== >>memory ==== */
static void *evl__default_alloc(void *ud, void *ptr, size_t size) {
    (void)ud;
    if (size == 0) {
        EVL_FREE(ptr);
        return NULL;
    }
    return ptr ? EVL_REALLOC(ptr, size) : EVL_MALLOC(size);
}

static void *evl__realloc(evl_loop *loop, void *ptr, size_t size) {
    return loop->alloc(loop->alloc_ud, ptr, size);
}

static void evl__free(evl_loop *loop, void *ptr) {
    if (ptr) loop->alloc(loop->alloc_ud, ptr, 0);
}

/* Grows *arr (elements of `elem` bytes, capacity *cap) to hold at least `need` elements. */
static int evl__grow(evl_loop *loop, void **arr, size_t *cap, size_t need, size_t elem) {
    size_t ncap = *cap ? *cap : 16;
    void *p;
    if (need <= *cap) return 0;
    while (ncap < need) ncap *= 2;
    if (ncap > (size_t)-1 / elem) return -ENOMEM;
    p = evl__realloc(loop, *arr, ncap * elem);
    if (!p) return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ==== >>fault injection ==== */
/* In a test build each wrapped system call first asks evl__fault whether to fail; the answer
   is "yes, with errno set" exactly once, on the armed call. Elsewhere evl__fault is a constant 0
   and the compiler drops it. */
#ifdef EVL_TESTING
static struct {
    unsigned long calls;   /* atomic */
    unsigned long fail_at; /* atomic: the call number that fails; 0: none */
    int error;             /* atomic */
} evl__faults[EVL_FAULT_SITES];

void evl_fault_arm(evl_fault_site site, unsigned long nth, int error) {
    unsigned long at = nth ? __atomic_load_n(&evl__faults[site].calls, __ATOMIC_SEQ_CST) + nth : 0;
    __atomic_store_n(&evl__faults[site].error, error, __ATOMIC_SEQ_CST);
    __atomic_store_n(&evl__faults[site].fail_at, at, __ATOMIC_SEQ_CST);
}

unsigned long evl_fault_calls(evl_fault_site site) {
    return __atomic_load_n(&evl__faults[site].calls, __ATOMIC_SEQ_CST);
}

static int evl__fault(evl_fault_site site) {
    unsigned long n = __atomic_add_fetch(&evl__faults[site].calls, 1, __ATOMIC_SEQ_CST);
    unsigned long at = n;
    /* The exchange makes the failure one-shot even when two threads race for it. */
    if (!__atomic_compare_exchange_n(&evl__faults[site].fail_at, &at, 0, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
        return 0;
    errno = __atomic_load_n(&evl__faults[site].error, __ATOMIC_SEQ_CST);
    return 1;
}
#else
#define evl__fault(site) 0
#endif

/* ==== >>log and errors ==== */
/* Every errno the C library names, with its name and a message: one table, so evl_strerror and
   evl_errname cannot disagree. POSIX's codes are always there; the others only where the
   platform defines them. Aliases (EWOULDBLOCK, EDEADLOCK, and EOPNOTSUPP where it equals
   ENOTSUP) share a number with a code listed first, so the lookup finds that one. */
typedef struct evl__errno_entry {
    int code;
    const char *name, *message;
} evl__errno_entry;

#define EVL__ERRNO(code, message) {code, #code, message}
static const evl__errno_entry evl__errnos[] = {
    {0, "0", "success"},
    EVL__ERRNO(E2BIG, "argument list too long"),
    EVL__ERRNO(EACCES, "permission denied"),
    EVL__ERRNO(EADDRINUSE, "address already in use"),
    EVL__ERRNO(EADDRNOTAVAIL, "address not available"),
    EVL__ERRNO(EAFNOSUPPORT, "address family not supported"),
    EVL__ERRNO(EAGAIN, "resource temporarily unavailable"),
    EVL__ERRNO(EALREADY, "operation already in progress"),
    EVL__ERRNO(EBADF, "bad file descriptor"),
    EVL__ERRNO(EBADMSG, "bad message"),
    EVL__ERRNO(EBUSY, "device or resource busy"),
    EVL__ERRNO(ECANCELED, "operation canceled"),
    EVL__ERRNO(ECHILD, "no child processes"),
    EVL__ERRNO(ECONNABORTED, "connection aborted"),
    EVL__ERRNO(ECONNREFUSED, "connection refused"),
    EVL__ERRNO(ECONNRESET, "connection reset by peer"),
    EVL__ERRNO(EDEADLK, "resource deadlock avoided"),
    EVL__ERRNO(EDESTADDRREQ, "destination address required"),
    EVL__ERRNO(EDOM, "argument out of domain"),
    EVL__ERRNO(EDQUOT, "disk quota exceeded"),
    EVL__ERRNO(EEXIST, "already exists"),
    EVL__ERRNO(EFAULT, "bad address"),
    EVL__ERRNO(EFBIG, "file too large"),
    EVL__ERRNO(EHOSTUNREACH, "no route to host"),
    EVL__ERRNO(EIDRM, "identifier removed"),
    EVL__ERRNO(EILSEQ, "invalid or incomplete multibyte or wide character"),
    EVL__ERRNO(EINPROGRESS, "operation in progress"),
    EVL__ERRNO(EINTR, "interrupted system call"),
    EVL__ERRNO(EINVAL, "invalid argument"),
    EVL__ERRNO(EIO, "input/output error"),
    EVL__ERRNO(EISCONN, "socket is already connected"),
    EVL__ERRNO(EISDIR, "is a directory"),
    EVL__ERRNO(ELOOP, "too many levels of symbolic links"),
    EVL__ERRNO(EMFILE, "too many open files"),
    EVL__ERRNO(EMLINK, "too many links"),
    EVL__ERRNO(EMSGSIZE, "message too long"),
    EVL__ERRNO(EMULTIHOP, "multihop attempted"),
    EVL__ERRNO(ENAMETOOLONG, "file name too long"),
    EVL__ERRNO(ENETDOWN, "network is down"),
    EVL__ERRNO(ENETRESET, "connection reset by the network"),
    EVL__ERRNO(ENETUNREACH, "network is unreachable"),
    EVL__ERRNO(ENFILE, "too many open files in system"),
    EVL__ERRNO(ENOBUFS, "no buffer space available"),
    EVL__ERRNO(ENODEV, "no such device"),
    EVL__ERRNO(ENOENT, "no such file or directory"),
    EVL__ERRNO(ENOEXEC, "exec format error"),
    EVL__ERRNO(ENOLCK, "no locks available"),
    EVL__ERRNO(ENOLINK, "link has been severed"),
    EVL__ERRNO(ENOMEM, "out of memory"),
    EVL__ERRNO(ENOMSG, "no message of the desired type"),
    EVL__ERRNO(ENOPROTOOPT, "protocol not available"),
    EVL__ERRNO(ENOSPC, "no space left"),
    EVL__ERRNO(ENOSYS, "not implemented, or not available in this build or on this platform"),
    EVL__ERRNO(ENOTCONN, "socket is not connected"),
    EVL__ERRNO(ENOTDIR, "not a directory"),
    EVL__ERRNO(ENOTEMPTY, "directory not empty"),
    EVL__ERRNO(ENOTSOCK, "not a socket"),
    EVL__ERRNO(ENOTSUP, "operation not supported"),
    EVL__ERRNO(ENOTTY, "inappropriate ioctl for device"),
    EVL__ERRNO(ENXIO, "no such device or address"),
    EVL__ERRNO(EOPNOTSUPP, "operation not supported on socket"),
    EVL__ERRNO(EOVERFLOW, "value too large"),
    EVL__ERRNO(EPERM, "operation not permitted"),
    EVL__ERRNO(EPIPE, "broken pipe"),
    EVL__ERRNO(EPROTO, "protocol error"),
    EVL__ERRNO(EPROTONOSUPPORT, "protocol not supported"),
    EVL__ERRNO(EPROTOTYPE, "protocol wrong type for socket"),
    EVL__ERRNO(ERANGE, "result out of range (for the select backend: fd at or above FD_SETSIZE)"),
    EVL__ERRNO(EROFS, "read-only file system"),
    EVL__ERRNO(ESPIPE, "illegal seek"),
    EVL__ERRNO(ESRCH, "no such process or task"),
    EVL__ERRNO(ESTALE, "stale file handle"),
    EVL__ERRNO(ETIMEDOUT, "timed out"),
    EVL__ERRNO(ETXTBSY, "text file busy"),
    EVL__ERRNO(EXDEV, "cross-device link"),
#ifdef EOWNERDEAD
    EVL__ERRNO(EOWNERDEAD, "owner died"),
#endif
#ifdef ENOTRECOVERABLE
    EVL__ERRNO(ENOTRECOVERABLE, "state not recoverable"),
#endif
#ifdef ENODATA
    EVL__ERRNO(ENODATA, "no data available"),
#endif
#ifdef ENOSR
    EVL__ERRNO(ENOSR, "out of streams resources"),
#endif
#ifdef ENOSTR
    EVL__ERRNO(ENOSTR, "device not a stream"),
#endif
#ifdef ETIME
    EVL__ERRNO(ETIME, "timer expired"),
#endif
#ifdef ENOTBLK
    EVL__ERRNO(ENOTBLK, "block device required"),
#endif
#ifdef ESHUTDOWN
    EVL__ERRNO(ESHUTDOWN, "shutting down"),
#endif
#ifdef ETOOMANYREFS
    EVL__ERRNO(ETOOMANYREFS, "too many references"),
#endif
#ifdef EHOSTDOWN
    EVL__ERRNO(EHOSTDOWN, "host is down"),
#endif
#ifdef EUSERS
    EVL__ERRNO(EUSERS, "too many users"),
#endif
#ifdef EREMOTE
    EVL__ERRNO(EREMOTE, "object is remote"),
#endif
#ifdef ESOCKTNOSUPPORT
    EVL__ERRNO(ESOCKTNOSUPPORT, "socket type not supported"),
#endif
#ifdef EPFNOSUPPORT
    EVL__ERRNO(EPFNOSUPPORT, "protocol family not supported"),
#endif
#ifdef EPROCLIM
    EVL__ERRNO(EPROCLIM, "too many processes"),
#endif
#ifdef EBADRPC
    EVL__ERRNO(EBADRPC, "RPC struct is bad"),
#endif
#ifdef ERPCMISMATCH
    EVL__ERRNO(ERPCMISMATCH, "RPC version wrong"),
#endif
#ifdef EPROGUNAVAIL
    EVL__ERRNO(EPROGUNAVAIL, "RPC program not available"),
#endif
#ifdef EPROGMISMATCH
    EVL__ERRNO(EPROGMISMATCH, "program version wrong"),
#endif
#ifdef EPROCUNAVAIL
    EVL__ERRNO(EPROCUNAVAIL, "bad procedure for program"),
#endif
#ifdef EFTYPE
    EVL__ERRNO(EFTYPE, "inappropriate file type or format"),
#endif
#ifdef EAUTH
    EVL__ERRNO(EAUTH, "authentication error"),
#endif
#ifdef ENEEDAUTH
    EVL__ERRNO(ENEEDAUTH, "need authenticator"),
#endif
#ifdef ENOATTR
    EVL__ERRNO(ENOATTR, "attribute not found"),
#endif
#ifdef EDOOFUS
    EVL__ERRNO(EDOOFUS, "programming error"),
#endif
#ifdef ENOTCAPABLE
    EVL__ERRNO(ENOTCAPABLE, "capabilities insufficient"),
#endif
#ifdef ECAPMODE
    EVL__ERRNO(ECAPMODE, "not permitted in capability mode"),
#endif
#ifdef EINTEGRITY
    EVL__ERRNO(EINTEGRITY, "integrity check failed"),
#endif
#ifdef EPWROFF
    EVL__ERRNO(EPWROFF, "device power is off"),
#endif
#ifdef EDEVERR
    EVL__ERRNO(EDEVERR, "device error"),
#endif
#ifdef EBADEXEC
    EVL__ERRNO(EBADEXEC, "bad executable"),
#endif
#ifdef EBADARCH
    EVL__ERRNO(EBADARCH, "bad CPU type in executable"),
#endif
#ifdef ESHLIBVERS
    EVL__ERRNO(ESHLIBVERS, "shared library version mismatch"),
#endif
#ifdef EBADMACHO
    EVL__ERRNO(EBADMACHO, "malformed Mach-o file"),
#endif
#ifdef ENOPOLICY
    EVL__ERRNO(ENOPOLICY, "no such policy registered"),
#endif
#ifdef EQFULL
    EVL__ERRNO(EQFULL, "interface output queue is full"),
#endif
#if defined(__linux__)
    EVL__ERRNO(ECHRNG, "channel number out of range"),
    EVL__ERRNO(EL2NSYNC, "level 2 not synchronized"),
    EVL__ERRNO(EL3HLT, "level 3 halted"),
    EVL__ERRNO(EL3RST, "level 3 reset"),
    EVL__ERRNO(ELNRNG, "link number out of range"),
    EVL__ERRNO(EUNATCH, "protocol driver not attached"),
    EVL__ERRNO(ENOCSI, "no CSI structure available"),
    EVL__ERRNO(EL2HLT, "level 2 halted"),
    EVL__ERRNO(EBADE, "invalid exchange"),
    EVL__ERRNO(EBADR, "invalid request descriptor"),
    EVL__ERRNO(EXFULL, "exchange full"),
    EVL__ERRNO(ENOANO, "no anode"),
    EVL__ERRNO(EBADRQC, "invalid request code"),
    EVL__ERRNO(EBADSLT, "invalid slot"),
    EVL__ERRNO(EBFONT, "bad font file format"),
    EVL__ERRNO(ENONET, "machine is not on the network"),
    EVL__ERRNO(ENOPKG, "package not installed"),
    EVL__ERRNO(EADV, "advertise error"),
    EVL__ERRNO(ESRMNT, "srmount error"),
    EVL__ERRNO(ECOMM, "communication error on send"),
    EVL__ERRNO(EDOTDOT, "RFS specific error"),
    EVL__ERRNO(ENOTUNIQ, "name not unique on network"),
    EVL__ERRNO(EBADFD, "file descriptor in bad state"),
    EVL__ERRNO(EREMCHG, "remote address changed"),
    EVL__ERRNO(ELIBACC, "cannot access a needed shared library"),
    EVL__ERRNO(ELIBBAD, "accessing a corrupted shared library"),
    EVL__ERRNO(ELIBSCN, ".lib section in a.out corrupted"),
    EVL__ERRNO(ELIBMAX, "attempting to link in too many shared libraries"),
    EVL__ERRNO(ELIBEXEC, "cannot exec a shared library directly"),
    EVL__ERRNO(ERESTART, "interrupted system call should be restarted"),
    EVL__ERRNO(ESTRPIPE, "streams pipe error"),
    EVL__ERRNO(EUCLEAN, "structure needs cleaning"),
    EVL__ERRNO(ENOTNAM, "not a XENIX named type file"),
    EVL__ERRNO(ENAVAIL, "no XENIX semaphores available"),
    EVL__ERRNO(EISNAM, "is a named type file"),
    EVL__ERRNO(EREMOTEIO, "remote I/O error"),
    EVL__ERRNO(ENOMEDIUM, "no medium found"),
    EVL__ERRNO(EMEDIUMTYPE, "wrong medium type"),
    EVL__ERRNO(ENOKEY, "required key not available"),
    EVL__ERRNO(EKEYEXPIRED, "key has expired"),
    EVL__ERRNO(EKEYREVOKED, "key has been revoked"),
    EVL__ERRNO(EKEYREJECTED, "key was rejected by service"),
    EVL__ERRNO(ERFKILL, "operation not possible due to RF-kill"),
#ifdef EHWPOISON
    EVL__ERRNO(EHWPOISON, "memory page has hardware error"),
#endif
#endif
};
#undef EVL__ERRNO

static const evl__errno_entry *evl__errno_find(int err) {
    size_t i;
    for (i = 0; err <= 0 && i < sizeof evl__errnos / sizeof evl__errnos[0]; i++)
        if (evl__errnos[i].code == -err) return &evl__errnos[i];
    return NULL;
}

const char *evl_strerror(int err) {
    const evl__errno_entry *e = evl__errno_find(err);
    return e ? e->message : "unknown error";
}

const char *evl_errname(int err) {
    const evl__errno_entry *e = evl__errno_find(err);
    return e ? e->name : "unknown";
}

static void evl__log_default(int level, const char *message, void *ud) {
    (void)ud;
    if (level >= EVL_LOG_WARN) fprintf(stderr, "%s\n", message);
}

#ifdef __GNUC__
static void evl__log(evl_loop *loop, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif
static void evl__log(evl_loop *loop, int level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    loop->log_fn(level, buf, loop->log_ud);
}

void evl_set_exception_handler(evl_loop *loop, evl_exception_fn fn, void *ud) {
    EVL_ASSERT(loop);
    loop->exc_fn = fn;
    loop->exc_ud = ud;
}

void evl_default_exception_handler(evl_loop *loop, const evl_exception *e) {
    char where[256] = "";
    EVL_ASSERT(loop && e);
    if (e->task_name && e->file)
        snprintf(where, sizeof where, " (task '%s' spawned at %s:%d)", e->task_name, e->file, e->line);
    else if (e->task_name)
        snprintf(where, sizeof where, " (task '%s')", e->task_name);
    evl__log(loop, EVL_LOG_ERROR, "evloop: %s: %s%s", e->message ? e->message : "error",
             evl_strerror(e->error), where);
}

void evl_call_exception_handler(evl_loop *loop, const evl_exception *e) {
    EVL_ASSERT(loop && e);
    if (e->error == -ECANCELED) return; /* a task told to finish did: not an error */
    if (loop->exc_fn) loop->exc_fn(loop, e, loop->exc_ud);
    else evl_default_exception_handler(loop, e);
}

/* Debug mode: a call that only the loop's thread may make, made from another thread, gets
   -EPERM and a report instead of corrupting the loop. */
static int evl__foreign_thread(evl_loop *loop, const char *call) {
#ifndef EVL_NO_THREADS
    if (!loop->debug) return 0;
    if (!loop->owner_known) {
        /* The first thread that uses the loop owns it: a loop may be created on one thread
           and handed to another that sets it up and runs it. */
        loop->owner = pthread_self();
        loop->owner_known = 1;
        return 0;
    }
    if (!pthread_equal(loop->owner, pthread_self())) {
        evl__log(loop, EVL_LOG_ERROR, "evloop: %s called from a thread that does not run the "
                 "loop (use evl_call_soon_threadsafe): refused with -EPERM", call);
        return -EPERM;
    }
#else
    (void)loop;
    (void)call;
#endif
    return 0;
}

/* ==== >>ready deque ==== */
/* Grows the ring so that `extra` more pushes fit beside every reserved slot. Doubling keeps
   the jobs in order: the part from head to the old end moves to the new end. */
static int evl__ring_fit(evl_loop *loop, size_t extra) {
    evl__ring *r = &loop->ready;
    size_t need = r->count + loop->ring_reserved + extra, ncap = r->cap ? r->cap : 64;
    evl__job *p;
    if (need <= r->cap) return 0;
    while (ncap < need) ncap *= 2;
    p = (evl__job *)evl__realloc(loop, r->jobs, ncap * sizeof *p);
    if (!p) return -ENOMEM;
    if (r->count && r->head + r->count > r->cap) {
        size_t tail_part = r->cap - r->head;
        memmove(p + ncap - tail_part, p + r->head, tail_part * sizeof *p);
        r->head = ncap - tail_part;
    }
    r->jobs = p;
    r->cap = ncap;
    return 0;
}

/* Appends a job where room is known to exist (a reserved slot, or after evl__ring_fit). */
static void evl__ring_put(evl_loop *loop, evl_cb cb, void *arg) {
    evl__ring *r = &loop->ready;
    evl__job *j;
    EVL_ASSERT(r->count < r->cap);
    j = &r->jobs[(r->head + r->count) & (r->cap - 1)];
    j->cb = cb;
    j->arg = arg;
    r->count++;
}

static evl__job evl__ring_pop(evl__ring *r) {
    evl__job j = r->jobs[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    return j;
}

/* ==== >>timer heap ==== */
/* A 4-ary min-heap ordered by (deadline, start sequence): shallower than a binary heap, and
   the four children of a node sit side by side in memory. Each timer stores its index + 1. */
static int evl__heap_less(const evl__heap_entry *a, const evl__heap_entry *b) {
    return a->when < b->when || (a->when == b->when && a->timer->seq < b->timer->seq);
}

static void evl__heap_place(evl_loop *loop, size_t i, evl__heap_entry e) {
    loop->heap[i] = e;
    e.timer->slot = i + 1;
}

static void evl__heap_sift_up(evl_loop *loop, size_t i) {
    evl__heap_entry e = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (!evl__heap_less(&e, &loop->heap[parent])) break;
        evl__heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    evl__heap_place(loop, i, e);
}

static void evl__heap_sift_down(evl_loop *loop, size_t i) {
    evl__heap_entry e = loop->heap[i];
    size_t n = loop->heap_len;
    for (;;) {
        size_t first = 4 * i + 1, best, c, end;
        if (first >= n) break;
        best = first;
        if (first + 4 <= n) { /* all four children: no bound checks */
            const evl__heap_entry *h = loop->heap;
            size_t b2 = evl__heap_less(&h[first + 3], &h[first + 2]) ? first + 3 : first + 2;
            if (evl__heap_less(&h[first + 1], &h[first])) best = first + 1;
            if (evl__heap_less(&h[b2], &h[best])) best = b2;
        } else {
            end = n;
            for (c = first + 1; c < end; c++)
                if (evl__heap_less(&loop->heap[c], &loop->heap[best])) best = c;
        }
        if (!evl__heap_less(&loop->heap[best], &e)) break;
        evl__heap_place(loop, i, loop->heap[best]);
        i = best;
    }
    evl__heap_place(loop, i, e);
}

static void evl__heap_remove(evl_loop *loop, evl_timer *t) {
    size_t i = t->slot - 1;
    t->slot = 0;
    loop->heap_len--;
    if (i == loop->heap_len) return;
    loop->heap[i] = loop->heap[loop->heap_len];
    loop->heap[i].timer->slot = i + 1;
    if (i > 0 && evl__heap_less(&loop->heap[i], &loop->heap[(i - 1) / 4]))
        evl__heap_sift_up(loop, i);
    else
        evl__heap_sift_down(loop, i);
}

/* What the rest of the loop reads of the heap: how many timers, the i-th in heap order, and
   the first deadline (EVL_FOREVER when there is none). */
static size_t evl__heap_count(const evl_loop *loop) {
    return loop->heap_len;
}

static evl_timer *evl__heap_timer(const evl_loop *loop, size_t i) {
    return loop->heap[i].timer;
}

static evl_time evl__heap_first(const evl_loop *loop) {
    return loop->heap_len ? loop->heap[0].when : EVL_FOREVER;
}

/* Inserts t, or moves it if it is already in the heap, with deadline `when` and a new start
   sequence number. Moving never allocates, so it cannot fail. */
static int evl__heap_set(evl_loop *loop, evl_timer *t, evl_time when) {
    evl__heap_entry e;
    e.when = when;
    e.timer = t;
    t->seq = loop->timer_seq++;
    if (t->slot) {
        loop->heap[t->slot - 1] = e;
        evl__heap_sift_up(loop, t->slot - 1);
        evl__heap_sift_down(loop, t->slot - 1);
        return 0;
    }
    if (loop->heap_len == loop->heap_cap &&
        evl__grow(loop, (void **)&loop->heap, &loop->heap_cap, loop->heap_len + 1, sizeof e) < 0)
        return -ENOMEM;
    loop->heap[loop->heap_len] = e;
    evl__heap_sift_up(loop, loop->heap_len++);
    return 0;
}

/* ==== >>clock ==== */
static evl_time evl__clock_read(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (evl_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The virtual clock stands still except where the loop moves it (see evl__iterate). */
static void evl__time_update(evl_loop *loop) {
    loop->now = loop->virtual_clock ? loop->virtual_now : evl__clock_read();
    loop->now_valid = 1;
}

/* a + b for b >= 0, saturating at EVL_FOREVER. */
static evl_time evl__time_add(evl_time a, evl_time b) {
    return b > EVL_FOREVER - a ? EVL_FOREVER : a + b;
}

/* Converts a poll timeout to milliseconds, rounding up so a timer is never polled early. */
static int evl__timeout_ms(evl_time timeout) {
    evl_time ms;
    if (timeout < 0) return -1;
    ms = timeout / 1000000 + (timeout % 1000000 != 0);
    return ms > INT_MAX ? -1 : (int)ms;
}

/* ==== >>backend: epoll ==== */
#ifdef EVL__HAVE_EPOLL
#define EVL__EPOLL_BATCH 1024
typedef struct evl__epoll {
    int epfd;
    int stale;             /* an event of an old registration arrived: rebuild the set */
    int no_pwait2;         /* the kernel lacks epoll_pwait2: use epoll_wait (ms timeouts) */
    struct epoll_event events[EVL__EPOLL_BATCH];
} evl__epoll;

static int evl__epoll_init(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)evl__realloc(loop, NULL, sizeof *ep);
    if (!ep) return -ENOMEM;
    memset(ep, 0, sizeof *ep);
    ep->epfd = evl__fault(EVL_FAULT_FD_OPEN) ? -1 : epoll_create1(EPOLL_CLOEXEC);
    if (ep->epfd < 0) {
        int err = -errno;
        evl__free(loop, ep);
        return err;
    }
    loop->backend_data = ep;
    return 0;
}

static void evl__epoll_destroy(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    close(ep->epfd);
    evl__free(loop, ep);
    loop->backend_data = NULL;
}

static int evl__epoll_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    struct epoll_event ev;
    /* A registration of unknown state is most likely still there (a task waiting on the
       same fd again): MOD first, ADD if the kernel dropped it. */
    int op = old_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    memset(&ev, 0, sizeof ev);
    if (!new_events) {
        /* The fd may already be closed (EBADF) or gone from the set (ENOENT): both mean done. */
        if ((evl__fault(EVL_FAULT_REGISTER) || epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, &ev) < 0) &&
            errno != EBADF && errno != ENOENT)
            return -errno;
        return 0;
    }
    /* Every registration carries a new generation in the upper half of its data, so an event
       of a registration the loop no longer knows (an fd closed while dup'ed elsewhere) is
       recognised in poll instead of being delivered to the fd number's new owner. */
    ev.events = (new_events & EVL_READ ? EPOLLIN : 0u) | (new_events & EVL_WRITE ? EPOLLOUT : 0u);
    ev.data.u64 = (uint64_t)(uint32_t)fd | (uint64_t)++loop->fds[fd].gen << 32;
    if (!evl__fault(EVL_FAULT_REGISTER) && epoll_ctl(ep->epfd, op, fd, &ev) == 0) return 0;
    /* The loop's idea of the registration can be wrong after a close and reuse: try the
       other operation. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT && epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (op == EPOLL_CTL_ADD && errno == EEXIST && epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return -errno;
}

static int evl__backend_reregister(evl_loop *loop);

/* Replaces the epoll set with a fresh one holding only the registrations the loop knows. */
static int evl__epoll_rebuild(evl_loop *loop) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    int fd = evl__fault(EVL_FAULT_FD_OPEN) ? -1 : epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return -errno;
    close(ep->epfd);
    ep->epfd = fd;
    ep->stale = 0;
    return evl__backend_reregister(loop);
}

/* epoll_pwait2 takes a nanosecond timeout; epoll_wait (older kernels) only milliseconds.
   Under ThreadSanitizer always epoll_wait: it intercepts that one and runs a signal handler
   at once during the wait, while it would queue a signal that arrives just before the raw
   system call until after it (see evl__tsan_signals_hold). */
static int evl__epoll_wait(evl__epoll *ep, evl_time timeout) {
    if (evl__fault(EVL_FAULT_WAIT)) return -1;
#if defined(SYS_epoll_pwait2) && !defined(EVL__TSAN)
    if (!ep->no_pwait2) {
        struct timespec ts, *tsp = NULL;
        long n;
        if (timeout >= 0) {
            ts.tv_sec = (time_t)(timeout / 1000000000);
            ts.tv_nsec = (long)(timeout % 1000000000);
            tsp = &ts;
        }
        n = syscall(SYS_epoll_pwait2, ep->epfd, ep->events, EVL__EPOLL_BATCH, tsp, NULL, 0);
        if (n >= 0 || errno != ENOSYS) return (int)n;
        ep->no_pwait2 = 1;
    }
#endif
    return epoll_wait(ep->epfd, ep->events, EVL__EPOLL_BATCH, evl__timeout_ms(timeout));
}

static int evl__epoll_poll(evl_loop *loop, evl_time timeout) {
    evl__epoll *ep = (evl__epoll *)loop->backend_data;
    int n, i;
    if (ep->stale) {
        int err = evl__epoll_rebuild(loop);
        if (err < 0) return err;
    }
    n = evl__epoll_wait(ep, timeout);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        struct epoll_event *e = &ep->events[i];
        int fd = (int)(uint32_t)e->data.u64, events = 0;
        if (fd >= loop->fds_cap || (uint32_t)(e->data.u64 >> 32) != loop->fds[fd].gen) {
            ep->stale = 1;
            continue;
        }
        if (e->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) events |= EVL_READ;
        if (e->events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) events |= EVL_WRITE;
        evl__io_feed(loop, fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_epoll = {
    "epoll", evl__epoll_init, evl__epoll_destroy, evl__epoll_modify,
    evl__epoll_poll};
#endif /* EVL__HAVE_EPOLL */

/* ==== >>backend: kqueue ==== */
#ifdef EVL__HAVE_KQUEUE
#define EVL__KQUEUE_BATCH 1024
/* A kqueue belongs to the process that made it: a child after fork() has none (the BSDs do
   not pass kqueues on), and by the time evl_loop_fork runs, its fd number may be a file the
   child opened. `owner` tells destroy whether the fd is still ours to close. */
typedef struct evl__kqueue {
    int kq;
    pid_t owner;
    struct kevent events[EVL__KQUEUE_BATCH];
} evl__kqueue;

static int evl__kqueue_init(evl_loop *loop) {
    evl__kqueue *kq = (evl__kqueue *)evl__realloc(loop, NULL, sizeof *kq);
    if (!kq) return -ENOMEM;
    kq->kq = evl__fault(EVL_FAULT_FD_OPEN) ? -1 : kqueue();
    if (kq->kq < 0) {
        int err = -errno;
        evl__free(loop, kq);
        return err;
    }
    fcntl(kq->kq, F_SETFD, FD_CLOEXEC);
    kq->owner = getpid();
    loop->backend_data = kq;
    return 0;
}

static void evl__kqueue_destroy(evl_loop *loop) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    if (kq->owner == getpid()) close(kq->kq);
    evl__free(loop, kq);
    loop->backend_data = NULL;
}

/* Applies one kevent change with `flags` to the filter of `filter` (EVL_READ or EVL_WRITE).
   One change per call: a failed change in a batch leaves the ones before it applied, and the
   caller could not tell which. */
static int evl__kqueue_change(evl__kqueue *kq, int fd, int filter, int flags) {
    struct kevent ch;
    EV_SET(&ch, fd, filter == EVL_READ ? EVFILT_READ : EVFILT_WRITE, flags, 0, 0, 0);
    return evl__fault(EVL_FAULT_REGISTER) || kevent(kq->kq, &ch, 1, NULL, 0, NULL) < 0 ? -errno : 0;
}

/* kqueue has one filter per direction: add the ones gained, delete the ones lost. With
   EVL__REG_UNKNOWN every wanted filter is added and every other one deleted, in case the
   kernel still holds it; deleting a filter it no longer holds (a closed fd) fails harmlessly.
   When the second addition fails, the first is taken back: the registration is exactly what
   it was, as the loop believes. */
static int evl__kqueue_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    int known = old_events == EVL__REG_UNKNOWN ? 0 : old_events;
    int lost = (old_events == EVL__REG_UNKNOWN ? EVL_READ | EVL_WRITE : old_events) & ~new_events;
    int gained = new_events & ~known, err = 0;
    if (gained & EVL_READ) err = evl__kqueue_change(kq, fd, EVL_READ, EV_ADD);
    if (err == 0 && (gained & EVL_WRITE)) {
        err = evl__kqueue_change(kq, fd, EVL_WRITE, EV_ADD);
        if (err < 0 && (gained & EVL_READ)) evl__kqueue_change(kq, fd, EVL_READ, EV_DELETE);
    }
    if (err < 0) return err;
    if (lost & EVL_READ) evl__kqueue_change(kq, fd, EVL_READ, EV_DELETE);
    if (lost & EVL_WRITE) evl__kqueue_change(kq, fd, EVL_WRITE, EV_DELETE);
    return 0;
}

static int evl__kqueue_poll(evl_loop *loop, evl_time timeout) {
    evl__kqueue *kq = (evl__kqueue *)loop->backend_data;
    struct timespec ts, *tsp = NULL;
    int n, i;
    if (timeout >= 0) {
        ts.tv_sec = (time_t)(timeout / 1000000000);
        ts.tv_nsec = (long)(timeout % 1000000000);
        tsp = &ts;
    }
    n = evl__fault(EVL_FAULT_WAIT) ? -1
                                   : kevent(kq->kq, NULL, 0, kq->events, EVL__KQUEUE_BATCH, tsp);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        struct kevent *e = &kq->events[i];
        int events = e->filter == EVFILT_READ ? EVL_READ : EVL_WRITE;
        if (e->flags & EV_ERROR) events = EVL_READ | EVL_WRITE;
        evl__io_feed(loop, (int)e->ident, events);
    }
    return 0;
}

static const evl__backend evl__backend_kqueue = {
    "kqueue", evl__kqueue_init, evl__kqueue_destroy, evl__kqueue_modify,
    evl__kqueue_poll};
#endif /* EVL__HAVE_KQUEUE */

/* ==== >>backend: poll ==== */
/* A dense pollfd array plus, per fd, its index in the array, so modify is O(1): a removed
   entry is replaced by the last one. */
typedef struct evl__poll {
    struct pollfd *pfds;
    size_t len, cap;
    int *index;            /* fd -> index + 1 in pfds, 0 when absent */
    size_t index_cap;
} evl__poll;

static int evl__poll_init(evl_loop *loop) {
    evl__poll *p = (evl__poll *)evl__realloc(loop, NULL, sizeof *p);
    if (!p) return -ENOMEM;
    memset(p, 0, sizeof *p);
    loop->backend_data = p;
    return 0;
}

static void evl__poll_destroy(evl_loop *loop) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    evl__free(loop, p->pfds);
    evl__free(loop, p->index);
    evl__free(loop, p);
    loop->backend_data = NULL;
}

static void evl__poll_remove(evl__poll *p, int fd) {
    size_t i = (size_t)p->index[fd] - 1;
    p->index[fd] = 0;
    if (i != --p->len) {
        p->pfds[i] = p->pfds[p->len];
        p->index[p->pfds[i].fd] = (int)i + 1;
    }
}

static int evl__poll_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    short mask = (short)((new_events & EVL_READ ? POLLIN : 0) | (new_events & EVL_WRITE ? POLLOUT : 0));
    size_t old_cap = p->index_cap;
    (void)old_events;
    if ((size_t)fd >= p->index_cap) {
        if (!new_events) return 0;
        if (evl__grow(loop, (void **)&p->index, &p->index_cap, (size_t)fd + 1, sizeof *p->index) < 0)
            return -ENOMEM;
        memset(p->index + old_cap, 0, (p->index_cap - old_cap) * sizeof *p->index);
    }
    if (p->index[fd]) {
        if (new_events) p->pfds[p->index[fd] - 1].events = mask;
        else evl__poll_remove(p, fd);
        return 0;
    }
    if (!new_events) return 0;
    if (evl__grow(loop, (void **)&p->pfds, &p->cap, p->len + 1, sizeof *p->pfds) < 0)
        return -ENOMEM;
    p->pfds[p->len].fd = fd;
    p->pfds[p->len].events = mask;
    p->pfds[p->len].revents = 0;
    p->index[fd] = (int)++p->len;
    return 0;
}

static int evl__poll_poll(evl_loop *loop, evl_time timeout) {
    evl__poll *p = (evl__poll *)loop->backend_data;
    size_t i;
    int n = evl__fault(EVL_FAULT_WAIT) ? -1
                                       : poll(p->pfds, (nfds_t)p->len, evl__timeout_ms(timeout));
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < p->len && n > 0; i++) {
        short re = p->pfds[i].revents;
        int events = 0;
        if (!re) continue;
        n--;
        if (re & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) events |= EVL_READ;
        if (re & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) events |= EVL_WRITE;
        if (re & POLLNVAL) events |= EVL__IO_CLOSED;
        evl__io_feed(loop, p->pfds[i].fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_poll = {
    "poll", evl__poll_init, evl__poll_destroy, evl__poll_modify,
    evl__poll_poll};

/* ==== >>backend: select ==== */
typedef struct evl__select {
    fd_set rd, wr;           /* what is registered */
    fd_set rd_out, wr_out;   /* scratch copies handed to select() */
    int maxfd;               /* highest registered fd, -1 when none */
} evl__select;

static int evl__select_init(evl_loop *loop) {
    evl__select *s = (evl__select *)evl__realloc(loop, NULL, sizeof *s);
    if (!s) return -ENOMEM;
    FD_ZERO(&s->rd);
    FD_ZERO(&s->wr);
    s->maxfd = -1;
    loop->backend_data = s;
    return 0;
}

static void evl__select_destroy(evl_loop *loop) {
    evl__free(loop, loop->backend_data);
    loop->backend_data = NULL;
}

static int evl__select_modify(evl_loop *loop, int fd, int old_events, int new_events) {
    evl__select *s = (evl__select *)loop->backend_data;
    (void)old_events;
    if (fd >= FD_SETSIZE) return new_events ? -ERANGE : 0;
    if (new_events & EVL_READ) FD_SET(fd, &s->rd);
    else FD_CLR(fd, &s->rd);
    if (new_events & EVL_WRITE) FD_SET(fd, &s->wr);
    else FD_CLR(fd, &s->wr);
    if (new_events && fd > s->maxfd) s->maxfd = fd;
    while (s->maxfd >= 0 && !FD_ISSET(s->maxfd, &s->rd) && !FD_ISSET(s->maxfd, &s->wr))
        s->maxfd--;
    return 0;
}

/* select() fails as a whole with EBADF when one registered fd was closed. Find the closed ones
   and report them ready, as poll() reports POLLNVAL, so their owners see the error. */
static void evl__select_feed_closed(evl_loop *loop, evl__select *s) {
    int fd;
    for (fd = 0; fd <= s->maxfd; fd++)
        if ((FD_ISSET(fd, &s->rd) || FD_ISSET(fd, &s->wr)) && fcntl(fd, F_GETFD) < 0)
            evl__io_feed(loop, fd, EVL_READ | EVL_WRITE | EVL__IO_CLOSED);
}

static int evl__select_poll(evl_loop *loop, evl_time timeout) {
    evl__select *s = (evl__select *)loop->backend_data;
    struct timeval tv, *tvp = NULL;
    int n, fd;
    if (timeout >= 0) {
        evl_time us = timeout / 1000 + (timeout % 1000 != 0);
        tv.tv_sec = (time_t)(us / 1000000);
        tv.tv_usec = (suseconds_t)(us % 1000000);
        tvp = &tv;
    }
    s->rd_out = s->rd;
    s->wr_out = s->wr;
#ifdef EVL__TSAN
    /* ThreadSanitizer does not intercept select: the signals are held up to pselect, which
       lets them in only while it waits, so one that arrives ends the wait with EINTR and the
       release runs its handler (see evl__tsan_signals_hold). */
    if (evl__fault(EVL_FAULT_WAIT)) {
        n = -1;
    } else {
        struct timespec ts;
        sigset_t old;
        if (tvp) {
            ts.tv_sec = tv.tv_sec;
            ts.tv_nsec = (long)tv.tv_usec * 1000;
        }
        evl__tsan_signals_hold(&old);
        n = pselect(s->maxfd + 1, &s->rd_out, &s->wr_out, NULL, tvp ? &ts : NULL, &old);
        evl__tsan_signals_release(&old);
    }
#else
    n = evl__fault(EVL_FAULT_WAIT) ? -1 : select(s->maxfd + 1, &s->rd_out, &s->wr_out, NULL, tvp);
#endif
    if (n < 0) {
        if (errno == EINTR) return 0;
        if (errno != EBADF) return -errno;
        evl__select_feed_closed(loop, s);
        return 0;
    }
    for (fd = 0; fd <= s->maxfd && n > 0; fd++) {
        int events = (FD_ISSET(fd, &s->rd_out) ? EVL_READ : 0) |
                     (FD_ISSET(fd, &s->wr_out) ? EVL_WRITE : 0);
        if (!events) continue;
        n -= (events & EVL_READ ? 1 : 0) + (events & EVL_WRITE ? 1 : 0);
        evl__io_feed(loop, fd, events);
    }
    return 0;
}

static const evl__backend evl__backend_select = {
    "select", evl__select_init, evl__select_destroy, evl__select_modify,
    evl__select_poll};

/* ==== >>backend choice ==== */
static const evl__backend *evl__backend_find(evl_backend kind) {
    switch (kind) {
#ifdef EVL__HAVE_EPOLL
    case EVL_BACKEND_EPOLL: return &evl__backend_epoll;
#endif
#ifdef EVL__HAVE_KQUEUE
    case EVL_BACKEND_KQUEUE: return &evl__backend_kqueue;
#endif
    case EVL_BACKEND_POLL: return &evl__backend_poll;
    case EVL_BACKEND_SELECT: return &evl__backend_select;
    default: return NULL;
    }
}

/* Resolves AUTO through the environment, then to the best compiled backend. */
static int evl__backend_choose(evl_backend want, const evl__backend **out) {
    static const char *const names[] = {"", "epoll", "kqueue", "poll", "select"};
    if (want == EVL_BACKEND_AUTO) {
        const char *env = getenv("EVLOOP_BACKEND");
        if (env && *env) {
            int i;
            for (i = 1; i < 5; i++)
                if (strcmp(env, names[i]) == 0) want = (evl_backend)i;
            if (want == EVL_BACKEND_AUTO) return -EINVAL;
        }
    }
    if (want == EVL_BACKEND_AUTO) {
        *out = evl__backend_find(EVL_BACKEND_EPOLL);
        if (!*out) *out = evl__backend_find(EVL_BACKEND_KQUEUE);
        if (!*out) *out = evl__backend_find(EVL_BACKEND_POLL);
        return 0;
    }
    if (want < EVL_BACKEND_AUTO || want > EVL_BACKEND_SELECT) return -EINVAL;
    *out = evl__backend_find(want);
    return *out ? 0 : -ENOSYS;
}

/* Registers again every fd the loop watches, with a backend that knows none of them. */
static int evl__backend_reregister(evl_loop *loop) {
    int fd, err = 0;
    for (fd = 0; fd < loop->fds_cap; fd++) {
        evl__fd *s = &loop->fds[fd];
        int want = s->watchers ? s->registered : 0;
        s->emptied = 0;
        s->registered = 0;
        if (want && loop->backend->modify(loop, fd, 0, want) < 0) {
            err = -EIO;
            continue;
        }
        s->registered = (uint8_t)want;
    }
    return err;
}

/* ==== >>I/O watchers ==== */
static int evl__io_union(const evl__fd *s) {
    const evl_io *w;
    int events = 0;
    for (w = s->watchers; w; w = w->next) events |= w->events;
    return events;
}

static int evl__fds_reserve(evl_loop *loop, int fd) {
    size_t cap = (size_t)loop->fds_cap, old = cap;
    if (fd < loop->fds_cap) return 0;
    if (evl__grow(loop, (void **)&loop->fds, &cap, (size_t)fd + 1, sizeof *loop->fds) < 0)
        return -ENOMEM;
    if (cap > INT_MAX) cap = INT_MAX;
    memset(loop->fds + old, 0, (cap - old) * sizeof *loop->fds);
    loop->fds_cap = (int)cap;
    return 0;
}

/* Queues fd for the pre-poll pass that shrinks its registration to what its watchers want.
   Shrinking is deferred because the common stop-then-start of one watcher then costs no
   system call; growing is done at once, so evl_io_start can report an error. */
static int evl__fd_mark_dirty(evl_loop *loop, int fd) {
    evl__fd *s = &loop->fds[fd];
    if (s->dirty) return 0;
    if (loop->changes_len == loop->changes_cap &&
        evl__grow(loop, (void **)&loop->changes, &loop->changes_cap, loop->changes_len + 1,
                  sizeof *loop->changes) < 0)
        return -ENOMEM;
    loop->changes[loop->changes_len++] = fd;
    s->dirty = 1;
    return 0;
}

static void evl__fd_flush_changes(evl_loop *loop) {
    size_t i, kept = 0;
    for (i = 0; i < loop->changes_len; i++) {
        int fd = loop->changes[i];
        evl__fd *s = &loop->fds[fd];
        int want = evl__io_union(s), err;
        s->dirty = 0;
        if (want == s->registered) continue;
        /* EBADF or ENOENT mean the fd is already gone, and its registration with it. Any other
           failure (ENOMEM) leaves the wider registration in the kernel, whose unwanted events
           would keep the poll from sleeping: the change stays queued and is tried again in the
           next iteration. */
        err = loop->backend->modify(loop, fd, s->registered, want);
        if (err < 0 && err != -EBADF && err != -ENOENT) {
            s->dirty = 1;
            loop->changes[kept++] = fd;
            continue;
        }
        s->registered = (uint8_t)want;
        if (!want) s->emptied = 0;
    }
    loop->changes_len = kept;
}

/* Called by the backends for every ready fd: marks the watchers that asked for the events. */
static void evl__io_feed(evl_loop *loop, int fd, int events) {
    evl_io *w;
    if (fd < 0 || fd >= loop->fds_cap) return;
    if ((events & EVL__IO_CLOSED) && loop->debug)
        evl__log(loop, EVL_LOG_WARN, "evloop: fd %d was closed while watched (close it with "
                 "evl_close, which wakes its tasks and stops its watchers first)", fd);
    for (w = loop->fds[fd].watchers; w; w = w->next) {
        int ev = events & w->events;
        if (!ev) continue;
        w->revents |= ev;
        if (w->pending) continue;
        if (loop->pending_len == loop->pending_cap &&
            evl__grow(loop, (void **)&loop->pending, &loop->pending_cap, loop->pending_len + 1,
                      sizeof(evl_io *)) < 0)
            continue; /* level triggered: the event comes back in the next iteration */
        loop->pending[loop->pending_len++] = w;
        w->pending = loop->pending_len;
    }
}

/* Links w to its fd (when it is new) with `events`, and grows the registration at once if the
   fd now needs more; on failure w is exactly as it was. */
static int evl__io_attach(evl_loop *loop, evl_io *w, int events) {
    evl__fd *s;
    int want, err = 0, old_events = w->events;
    if (!w->active) {
        err = evl__fds_reserve(loop, w->fd);
        if (err < 0) return err;
        if (!loop->fds[w->fd].watchers) loop->fds_watched++;
        w->next = loop->fds[w->fd].watchers;
        loop->fds[w->fd].watchers = w;
    }
    s = &loop->fds[w->fd];
    w->events = events;
    want = evl__io_union(s);
    if (s->emptied) {
        /* Every watcher was stopped since the fd was registered: it may be a new file under
           the same number now, so register it from scratch. */
        err = loop->backend->modify(loop, w->fd, EVL__REG_UNKNOWN, want);
        if (err == 0) {
            s->registered = (uint8_t)want;
            s->emptied = 0;
        }
    } else if (want & ~s->registered) {
        err = loop->backend->modify(loop, w->fd, s->registered, want | s->registered);
        if (err == 0) s->registered = (uint8_t)(want | s->registered);
    }
    if (err < 0) {
        w->events = old_events;
        if (!w->active) {
            loop->fds[w->fd].watchers = w->next;
            if (!w->next) loop->fds_watched--;
        }
        return err;
    }
    if (want != s->registered) evl__fd_mark_dirty(loop, w->fd);
    w->active = 1;
    return 0;
}

static void evl__io_detach(evl_loop *loop, evl_io *w) {
    evl__fd *s = &loop->fds[w->fd];
    evl_io **pp = &s->watchers;
    while (*pp != w) pp = &(*pp)->next;
    *pp = w->next;
    w->next = NULL;
    w->active = 0;
    w->revents = 0;
    if (w->pending) {
        loop->pending[w->pending - 1] = NULL;
        w->pending = 0;
    }
    if (!s->watchers) loop->fds_watched--;
    if (!s->watchers && s->registered) s->emptied = 1;
    if (evl__fd_mark_dirty(loop, w->fd) < 0 && !s->watchers && s->registered) {
        /* No room to defer: remove it now rather than leave a registration nobody wants. */
        loop->backend->modify(loop, w->fd, s->registered, 0);
        s->registered = 0;
        s->emptied = 0;
    }
}

/* Runs the pending I/O callbacks gathered by the last poll. A watcher stopped by an earlier
   callback was taken off the list; one started since was never on it. */
static int evl__io_dispatch(evl_loop *loop) {
    size_t i;
    int ran = 0;
    for (i = 0; i < loop->pending_len; i++) {
        evl_io *w = loop->pending[i];
        int ev;
        if (!w) continue;
        ev = w->revents & w->events;
        w->revents = 0;
        w->pending = 0;
        if (!ev) continue;
        if (loop->measure) evl__measured_io(loop, w, ev);
        else w->cb(loop, w->arg, ev);
        ran++;
    }
    loop->pending_len = 0;
    return ran;
}

void evl_io_init_at(evl_io *w, int fd, evl_io_cb cb, void *arg, const char *file, int line) {
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->cb = cb;
    w->arg = arg;
    w->file = file;
    w->line = line;
}

void (evl_io_init)(evl_io *w, int fd, evl_io_cb cb, void *arg) {
    evl_io_init_at(w, fd, cb, arg, NULL, 0);
}

int evl_io_start(evl_loop *loop, evl_io *w, int events) {
    int was_active, err;
    EVL_ASSERT(loop);
    if (!w || !w->cb) return -EINVAL;
    if (w->fd < 0) return -EBADF;
    if (!events || (events & ~(EVL_READ | EVL_WRITE))) return -EINVAL;
    if (loop->debug && evl__foreign_thread(loop, "evl_io_start")) return -EPERM;
    was_active = w->active;
    err = evl__io_attach(loop, w, events);
    if (err == 0 && !was_active && w != &loop->wake_io) loop->io_active++;
    return err;
}

int evl_io_stop(evl_loop *loop, evl_io *w) {
    EVL_ASSERT(loop);
    if (!w) return -EINVAL;
    if (!w->active) return 0;
    if (loop->debug && evl__foreign_thread(loop, "evl_io_stop")) return -EPERM;
    evl__io_detach(loop, w);
    if (w != &loop->wake_io) loop->io_active--;
    return 0;
}

int evl_io_active(const evl_io *w) {
    return w && w->active;
}

/* ==== >>timers ==== */
void evl_timer_init_at(evl_timer *t, evl_cb cb, void *arg, const char *file, int line) {
    memset(t, 0, sizeof *t);
    t->cb = cb;
    t->arg = arg;
    t->file = file;
    t->line = line;
}

void (evl_timer_init)(evl_timer *t, evl_cb cb, void *arg) {
    evl_timer_init_at(t, cb, arg, NULL, 0);
}

int evl_timer_start(evl_loop *loop, evl_timer *t, evl_time delay, evl_time repeat) {
    EVL_ASSERT(loop);
    if (!t || !t->cb || delay < 0 || repeat < 0) return -EINVAL;
    if (loop->debug && evl__foreign_thread(loop, "evl_timer_start")) return -EPERM;
    /* The iteration may have skipped the clock (nothing needed it): never start from a stale
       time, or the timer would fire early. */
    if (!loop->now_valid) evl__time_update(loop);
    t->repeat = repeat;
    return evl__heap_set(loop, t, evl__time_add(loop->now, delay));
}

int evl_timer_stop(evl_loop *loop, evl_timer *t) {
    EVL_ASSERT(loop);
    if (!t) return -EINVAL;
    if (!t->slot) return 0;
    if (loop->debug && evl__foreign_thread(loop, "evl_timer_stop")) return -EPERM;
    evl__heap_remove(loop, t);
    return 0;
}

int evl_timer_active(const evl_timer *t) {
    return t && t->slot != 0;
}

/* Fires the due timers that were started before this drain began (`batch`): a timer started
   or restarted by any callback of the drain has a newer sequence number and waits for the
   next iteration, so a zero-delay restart cannot spin here forever. Each timer leaves the heap
   (or moves to its next deadline) before its callback runs, so the callback may do anything
   to it. */
static int evl__timers_dispatch(evl_loop *loop, uint64_t batch) {
    evl_time fired_at = 0; /* the clock when the first due timer fires, for the lag */
    int ran = 0;
    while (evl__heap_count(loop)) {
        evl_timer *t = evl__heap_timer(loop, 0);
        evl_time when = evl__heap_first(loop);
        if (when > loop->now || t->seq >= batch) break;
        /* Loop lag: how late this timer fires, by the clock of this moment (the callbacks
           before it in the drain count). */
        if (!fired_at) fired_at = loop->virtual_clock ? loop->virtual_now : evl__clock_read();
        loop->stats.lag_last = fired_at > when ? fired_at - when : 0;
        if (loop->stats.lag_last > loop->stats.lag_max) loop->stats.lag_max = loop->stats.lag_last;
        if (t->repeat) {
            evl_time next = evl__time_add(when, t->repeat);
            if (next <= loop->now) next = evl__time_add(loop->now, t->repeat);
            evl__heap_set(loop, t, next);
        } else {
            evl__heap_remove(loop, t);
        }
        if (loop->measure) evl__measured_timer(loop, t);
        else t->cb(loop, t->arg);
        ran++;
    }
    return ran;
}

/* ==== >>wakeup ==== */
/* One eventfd (a pipe where there is none) wakes the loop from other threads. A producer
   writes only when the loop is sleeping and no write is outstanding, so many posts cost one
   write per sleep. The loop announces `sleeping` before it looks for posts once more, and a
   producer publishes its post before it reads `sleeping` (both sequentially consistent), so
   one of the two always sees the other: no wakeup is lost. */
static int evl__wakeup_open(evl_loop *loop) {
#ifdef EVL__HAVE_EVENTFD
    int fd = evl__fault(EVL_FAULT_FD_OPEN) ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) return -errno;
    loop->wake_rfd = loop->wake_wfd = fd;
#else
    int p[2], i;
    if (evl__fault(EVL_FAULT_FD_OPEN) || pipe(p) < 0) return -errno;
    for (i = 0; i < 2; i++) {
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK);
        fcntl(p[i], F_SETFD, FD_CLOEXEC);
    }
    loop->wake_rfd = p[0];
    loop->wake_wfd = p[1];
#endif
    return 0;
}

static void evl__wakeup_close(evl_loop *loop) {
    if (loop->wake_wfd >= 0 && loop->wake_wfd != loop->wake_rfd) close(loop->wake_wfd);
    if (loop->wake_rfd >= 0) close(loop->wake_rfd);
    loop->wake_rfd = loop->wake_wfd = -1;
}

static void evl__wakeup_signal(evl_loop *loop) {
    static const uint64_t one = 1;
    ssize_t r;
    if (!__atomic_load_n(&loop->sleeping, __ATOMIC_SEQ_CST)) return;
    if (__atomic_exchange_n(&loop->wake_sent, 1, __ATOMIC_SEQ_CST)) return;
    /* 8 bytes for an eventfd; a pipe takes them as well. EAGAIN means the counter or the pipe
       is already full: the loop wakes anyway. */
    r = write(loop->wake_wfd, &one, sizeof one);
    (void)r;
}

/* Drains the wakeup fd, then allows the next write. In the other order a producer could
   write between the two steps and leave `wake_sent` set with nothing left to read. */
static void evl__wakeup_cb(evl_loop *loop, void *arg, int events) {
    char buf[64];
    (void)arg;
    (void)events;
    while (read(loop->wake_rfd, buf, sizeof buf) > 0) {
    }
    __atomic_store_n(&loop->wake_sent, 0, __ATOMIC_SEQ_CST);
}

/* ==== >>thread-safe queue ==== */
static void evl__inbox_lock(evl_loop *loop) {
#ifndef EVL_NO_THREADS
    pthread_mutex_lock(&loop->inbox_lock);
#else
    (void)loop;
#endif
}

static void evl__inbox_unlock(evl_loop *loop) {
#ifndef EVL_NO_THREADS
    pthread_mutex_unlock(&loop->inbox_lock);
#else
    (void)loop;
#endif
}

int evl_call_soon_threadsafe(evl_loop *loop, evl_cb cb, void *arg) {
    EVL_ASSERT(loop);
    if (!cb) return -EINVAL;
    evl__inbox_lock(loop);
    if (loop->inbox_len == loop->inbox_cap &&
        evl__grow(loop, (void **)&loop->inbox, &loop->inbox_cap, loop->inbox_len + 1,
                  sizeof *loop->inbox) < 0) {
        evl__inbox_unlock(loop);
        return -ENOMEM;
    }
    loop->inbox[loop->inbox_len].cb = cb;
    loop->inbox[loop->inbox_len].arg = arg;
    loop->inbox_len++;
    __atomic_store_n(&loop->inbox_count, (int)loop->inbox_len, __ATOMIC_SEQ_CST);
    evl__inbox_unlock(loop);
    evl__wakeup_signal(loop);
    return 0;
}

/* The posts taken from the inbox for one drain. */
typedef struct evl__batch {
    evl__job *jobs;
    size_t len, cap;
} evl__batch;

/* Takes every post made so far. The inbox and the spare array swap roles under the lock, so a
   producer waits for a pointer swap, never for a copy, and nothing is allocated. */
static void evl__inbox_take(evl_loop *loop, evl__batch *b) {
    b->jobs = NULL;
    b->len = b->cap = 0;
    if (!__atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST)) return;
    evl__inbox_lock(loop);
    b->jobs = loop->inbox;
    b->len = loop->inbox_len;
    b->cap = loop->inbox_cap;
    loop->inbox = loop->inbox_spare;
    loop->inbox_cap = loop->inbox_spare_cap;
    loop->inbox_len = 0;
    __atomic_store_n(&loop->inbox_count, 0, __ATOMIC_SEQ_CST);
    evl__inbox_unlock(loop);
    loop->inbox_spare = NULL;
    loop->inbox_spare_cap = 0;
}

/* Runs a taken batch in posting order and keeps its storage as the next spare. */
static int evl__batch_run(evl_loop *loop, evl__batch *b) {
    size_t i;
    for (i = 0; i < b->len; i++) {
        if (loop->measure) evl__measured_job(loop, b->jobs[i]);
        else b->jobs[i].cb(loop, b->jobs[i].arg);
    }
    if (b->jobs) {
        evl__free(loop, loop->inbox_spare);
        loop->inbox_spare = b->jobs;
        loop->inbox_spare_cap = b->cap;
    }
    return (int)b->len;
}

/* ==== >>context switch ==== */
#ifndef EVL_NO_TASKS
/* evl__ctx_switch(from, to) saves the callee-saved registers of the running context on its own
   stack, stores its stack pointer in *from, loads the one in *to, restores that context's
   registers and returns into it. Only what the ABI makes callee-saved is saved: the compiler
   has already spilled everything else around the call. A new context gets a hand-built frame
   whose return address is evl__ctx_start, which calls fn(arg) with the two values the frame
   put in callee-saved registers. The symbols are weak and hidden, so identical copies from
   several translation units merge and nothing is exported from a shared library. */
#if defined(EVL__CTX_ASM) && defined(__x86_64__)
/* Callee-saved: rbx, rbp, r12-r15, and the control bits of MXCSR and the x87 control word.
   Frame, from the saved sp up: 8 pad, mxcsr, x87 cw, pad, r15, r14, r13, r12, rbx, rbp, ret.
   The switch leaves through an indirect jmp, not ret: a ret to an address the CPU's return
   stack never saw is mispredicted every time (measured: 12.3 ns per switch with ret, 5.3 ns
   with jmp, on this project's test machine). The i386 switch does the same. */
__asm__(EVL__ASM_FN_X(evl__ctx_switch)
        "pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
        "subq $16, %rsp\n stmxcsr 8(%rsp)\n fnstcw 12(%rsp)\n"
        "movq %rsp, (%rdi)\n movq (%rsi), %rsp\n"
        "ldmxcsr 8(%rsp)\n fldcw 12(%rsp)\n addq $16, %rsp\n"
        "popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
        "popq %rcx\n jmp *%rcx\n"
        EVL__ASM_END_X(evl__ctx_switch)
        EVL__ASM_FN_X(evl__ctx_start)
        "movq %r12, %rdi\n callq *%r13\n ud2\n"
        EVL__ASM_END_X(evl__ctx_start));
enum { EVL__FRAME = 88, EVL__SLOT_RET = 64, EVL__SLOT_ARG = 40, EVL__SLOT_FN = 32 };
static void evl__ctx_frame_extra(unsigned char *sp) {
    uint32_t mxcsr = 0x1F80;   /* all exceptions masked, round to nearest */
    uint16_t fpucw = 0x037F;   /* the same for the x87 unit, extended precision */
    memcpy(sp + 8, &mxcsr, sizeof mxcsr);
    memcpy(sp + 12, &fpucw, sizeof fpucw);
}
#elif defined(EVL__CTX_ASM) && defined(__i386__)
/* Callee-saved: ebx, esi, edi, ebp and the x87 control word. Frame: cw, edi, esi, ebx, ebp, ret;
   the start stub then pushes arg so that the call happens with esp 16-byte aligned. */
__asm__(EVL__ASM_FN_X(evl__ctx_switch)
        "movl 4(%esp), %eax\n movl 8(%esp), %edx\n"
        "pushl %ebp\n pushl %ebx\n pushl %esi\n pushl %edi\n"
        "subl $4, %esp\n fnstcw (%esp)\n"
        "movl %esp, (%eax)\n movl (%edx), %esp\n"
        "fldcw (%esp)\n addl $4, %esp\n"
        "popl %edi\n popl %esi\n popl %ebx\n popl %ebp\n popl %ecx\n jmp *%ecx\n"
        EVL__ASM_END_X(evl__ctx_switch)
        EVL__ASM_FN_X(evl__ctx_start)
        "pushl %esi\n calll *%edi\n ud2\n"
        EVL__ASM_END_X(evl__ctx_start));
enum { EVL__FRAME = 36, EVL__SLOT_RET = 20, EVL__SLOT_ARG = 8, EVL__SLOT_FN = 4 };
static void evl__ctx_frame_extra(unsigned char *sp) {
    uint16_t fpucw = 0x037F;
    memcpy(sp, &fpucw, sizeof fpucw);
}
#elif defined(EVL__CTX_ASM) && defined(__aarch64__)
/* Callee-saved: x19-x28, x29 (fp), x30 (lr) and the low halves of v8-v15 (d8-d15). */
__asm__(EVL__ASM_FN_X(evl__ctx_switch)
        "sub sp, sp, #176\n"
        "stp x19, x20, [sp, #0]\n stp x21, x22, [sp, #16]\n stp x23, x24, [sp, #32]\n"
        "stp x25, x26, [sp, #48]\n stp x27, x28, [sp, #64]\n stp x29, x30, [sp, #80]\n"
        "stp d8, d9, [sp, #96]\n stp d10, d11, [sp, #112]\n stp d12, d13, [sp, #128]\n"
        "stp d14, d15, [sp, #144]\n"
        "mov x9, sp\n str x9, [x0]\n ldr x9, [x1]\n mov sp, x9\n"
        "ldp x19, x20, [sp, #0]\n ldp x21, x22, [sp, #16]\n ldp x23, x24, [sp, #32]\n"
        "ldp x25, x26, [sp, #48]\n ldp x27, x28, [sp, #64]\n ldp x29, x30, [sp, #80]\n"
        "ldp d8, d9, [sp, #96]\n ldp d10, d11, [sp, #112]\n ldp d12, d13, [sp, #128]\n"
        "ldp d14, d15, [sp, #144]\n"
        "add sp, sp, #176\n ret\n"
        EVL__ASM_END_X(evl__ctx_switch)
        EVL__ASM_FN_X(evl__ctx_start)
        "mov x0, x19\n blr x20\n brk #0\n"
        EVL__ASM_END_X(evl__ctx_start));
enum { EVL__FRAME = 176, EVL__SLOT_RET = 88, EVL__SLOT_ARG = 0, EVL__SLOT_FN = 8 };
static void evl__ctx_frame_extra(unsigned char *sp) {
    (void)sp;
}
#elif defined(EVL__CTX_ASM) && defined(__arm__)
/* Callee-saved: r4-r11, lr and d8-d15 (r3 only pads the frame to 8 bytes). Written in ARM
   state; `pop {..., pc}` interworks, so Thumb callers and Thumb task functions are fine. */
__asm__(".syntax unified\n .arm\n"
        EVL__ASM_FN_X(evl__ctx_switch)
        "push {r3-r11, lr}\n vpush {d8-d15}\n"
        "mov r2, sp\n str r2, [r0]\n ldr r2, [r1]\n mov sp, r2\n"
        "vpop {d8-d15}\n pop {r3-r11, pc}\n"
        EVL__ASM_END_X(evl__ctx_switch)
        EVL__ASM_FN_X(evl__ctx_start)
        "mov r0, r4\n blx r5\n 1: b 1b\n"
        EVL__ASM_END_X(evl__ctx_start));
enum { EVL__FRAME = 104, EVL__SLOT_RET = 100, EVL__SLOT_ARG = 68, EVL__SLOT_FN = 72 };
static void evl__ctx_frame_extra(unsigned char *sp) {
    (void)sp;
}
#elif defined(EVL__CTX_ASM) && defined(__riscv)
/* Callee-saved: ra, s0-s11 and fs0-fs11 (the D extension). */
__asm__(EVL__ASM_FN_X(evl__ctx_switch)
        "addi sp, sp, -208\n"
        "sd ra, 0(sp)\n sd s0, 8(sp)\n sd s1, 16(sp)\n sd s2, 24(sp)\n sd s3, 32(sp)\n"
        "sd s4, 40(sp)\n sd s5, 48(sp)\n sd s6, 56(sp)\n sd s7, 64(sp)\n sd s8, 72(sp)\n"
        "sd s9, 80(sp)\n sd s10, 88(sp)\n sd s11, 96(sp)\n"
        "fsd fs0, 104(sp)\n fsd fs1, 112(sp)\n fsd fs2, 120(sp)\n fsd fs3, 128(sp)\n"
        "fsd fs4, 136(sp)\n fsd fs5, 144(sp)\n fsd fs6, 152(sp)\n fsd fs7, 160(sp)\n"
        "fsd fs8, 168(sp)\n fsd fs9, 176(sp)\n fsd fs10, 184(sp)\n fsd fs11, 192(sp)\n"
        "sd sp, 0(a0)\n ld sp, 0(a1)\n"
        "ld ra, 0(sp)\n ld s0, 8(sp)\n ld s1, 16(sp)\n ld s2, 24(sp)\n ld s3, 32(sp)\n"
        "ld s4, 40(sp)\n ld s5, 48(sp)\n ld s6, 56(sp)\n ld s7, 64(sp)\n ld s8, 72(sp)\n"
        "ld s9, 80(sp)\n ld s10, 88(sp)\n ld s11, 96(sp)\n"
        "fld fs0, 104(sp)\n fld fs1, 112(sp)\n fld fs2, 120(sp)\n fld fs3, 128(sp)\n"
        "fld fs4, 136(sp)\n fld fs5, 144(sp)\n fld fs6, 152(sp)\n fld fs7, 160(sp)\n"
        "fld fs8, 168(sp)\n fld fs9, 176(sp)\n fld fs10, 184(sp)\n fld fs11, 192(sp)\n"
        "addi sp, sp, 208\n ret\n"
        EVL__ASM_END_X(evl__ctx_switch)
        EVL__ASM_FN_X(evl__ctx_start)
        "mv a0, s1\n jalr s2\n ebreak\n"
        EVL__ASM_END_X(evl__ctx_start));
enum { EVL__FRAME = 208, EVL__SLOT_RET = 0, EVL__SLOT_ARG = 16, EVL__SLOT_FN = 24 };
static void evl__ctx_frame_extra(unsigned char *sp) {
    (void)sp;
}
#endif

#ifdef EVL__CTX_UCONTEXT
/* makecontext passes int arguments only: the pointers travel as two 32-bit halves. */
static void evl__ctx_trampoline(unsigned fn_hi, unsigned fn_lo, unsigned arg_hi, unsigned arg_lo) {
    uintptr_t fn = ((uintptr_t)fn_hi << 16 << 16) | fn_lo;
    uintptr_t arg = ((uintptr_t)arg_hi << 16 << 16) | arg_lo;
    ((void (*)(void *))fn)((void *)arg);
}

static int evl__ctx_make(evl__ctx *c, void *stack, size_t size, void (*fn)(void *), void *arg) {
    uintptr_t f = (uintptr_t)fn, a = (uintptr_t)arg;
    if (getcontext(&c->uc) < 0) return -errno;
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))evl__ctx_trampoline, 4, (unsigned)(f >> 16 >> 16),
                (unsigned)f, (unsigned)(a >> 16 >> 16), (unsigned)a);
    return 0;
}

static void evl__ctx_switch(evl__ctx *from, evl__ctx *to) {
    swapcontext(&from->uc, &to->uc);
}

/* The stack pointer a suspended context resumes with; NULL: not known here. */
static void *evl__ctx_sp(const evl__ctx *c) {
    (void)c;
    return NULL;
}
#define EVL__CTX_NAME "ucontext"
#else
static int evl__ctx_make(evl__ctx *c, void *stack, size_t size, void (*fn)(void *), void *arg) {
    uintptr_t top = ((uintptr_t)stack + size) & ~(uintptr_t)15;
    unsigned char *sp = (unsigned char *)(top - EVL__FRAME);
    uintptr_t ret = (uintptr_t)&evl__ctx_start, f = (uintptr_t)fn, a = (uintptr_t)arg;
    memset(sp, 0, EVL__FRAME);
    memcpy(sp + EVL__SLOT_RET, &ret, sizeof ret);
    memcpy(sp + EVL__SLOT_FN, &f, sizeof f);
    memcpy(sp + EVL__SLOT_ARG, &a, sizeof a);
    evl__ctx_frame_extra(sp);
    c->sp = sp;
    return 0;
}

/* The stack pointer a suspended context resumes with; NULL: not known here. */
static void *evl__ctx_sp(const evl__ctx *c) {
    return c->sp;
}
#define EVL__CTX_NAME EVL__CTX_ASM
#endif

#endif /* EVL_NO_TASKS */

/* ==== >>tasks ==== */
#ifndef EVL_NO_TASKS
/* A task runs on its own stack and always switches to and from the loop's context, never
   directly to another task: a suspension returns to the code that resumed the task, which is
   either the drain (a task woken by another task or by evl_yield waits in the ready deque like
   any callback) or the internal callback of a timer or I/O watcher, which resumes the task at
   once so that an I/O wakeup costs no extra iteration. After a wakeup the task never touches
   the object it waited on: whatever it waited for (a value, an item, a unit) is handed over at
   wakeup time, so the object may be freed in between. */
enum { EVL__T_FREE, EVL__T_NEW, EVL__T_RUNNING, EVL__T_SUSPENDED, EVL__T_DONE };

#define EVL__STACK_MIN 16384

static void evl__task_run_cb(evl_loop *loop, void *arg);
static int evl__iterate(evl_loop *loop, evl_time max_wait, int exit_when_idle);

/* ---- stacks: carved from slabs, guarded, committed lazily by the kernel, pooled ---- */
/* A stack is a slot of a slab: one reserved mapping of many slots, each a guard page below a
   stack. The guard is a guard region (madvise MADV_GUARD_INSTALL, Linux 6.13+): it faults like
   a PROT_NONE page but adds no kernel mapping, so a million stacks cost at most one mapping
   per slab (the kernel merges neighbouring slabs: 39 mappings in the whole process were
   measured with a million tasks), far below vm.max_map_count. Where the kernel has no guard regions each stack gets
   a mapping of its own with a PROT_NONE guard page (two mappings per stack); without guards
   (stack_guard -1) the slots are bare. The kernel commits a page when the stack first touches
   it. Free stacks are kept per size class as they are, up to EVL__STACK_POOL_MAX, because
   reuse is cheaper than anything else; past that a slot goes back to its slab with its pages
   discarded, and an empty slab is unmapped. */
enum { EVL__GUARD_NONE, EVL__GUARD_REGION, EVL__GUARD_MAPPING };

static size_t evl__page_size(void) {
#ifndef EVL_NO_MMAP
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
#else
    return 64;
#endif
}

#ifndef EVL_NO_MMAP
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
/* The address space one slab reserves at most; the first slab of a class holds
   EVL__SLAB_SLOTS_MIN slots and each next one as many as the class has already. */
#define EVL__SLAB_BYTES_MAX ((size_t)64 << 20)
#define EVL__SLAB_SLOTS_MIN 16
/* Added to `held` when the loop closes: the last stack an executor job gives back after that
   unmaps the slab. */
#define EVL__SLAB_ORPHAN (1 << 30)

struct evl__slab {
    evl__slab *next, *prev;      /* in its class's `avail` or `full` list */
    unsigned char *mem;
    size_t map_size, slot_size;
    uint32_t nslots, fresh;      /* slots from `fresh` on were never handed out */
    uint32_t used, nfree;        /* slots handed out; discarded free slots in `free` */
    uint32_t *free;
    int held;                    /* atomic: stacks kept by executor jobs, plus the orphan mark */
    evl_alloc_fn alloc;          /* the loop's allocator, for a slab that outlives the loop */
    void *alloc_ud;
};

/* Whether the kernel has guard regions, found once per process. The kernel must refuse to
   read a guarded page: qemu-user, for one, reports advice it does not know as done. */
static int evl__guard_kind; /* atomic; 0: not probed yet */

static int evl__guard_probe(size_t page) {
    int kind = EVL__GUARD_MAPPING;
#ifdef __linux__
    unsigned char *m;
    int p[2];
    m = (unsigned char *)mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0);
    if (m == MAP_FAILED) return 0;
    if (madvise(m, page, MADV_GUARD_INSTALL) == 0) {
        if (pipe(p) == 0) {
            if (write(p[1], m, 1) < 0 && errno == EFAULT) kind = EVL__GUARD_REGION;
            close(p[0]);
            close(p[1]);
        } else {
            kind = 0; /* out of fds: ask again next time */
        }
    }
    munmap(m, page);
#else
    (void)page;
#endif
    return kind;
}

/* EVLOOP_STACK_GUARD=mprotect in the environment picks guard mappings even so (read at each
   evl_loop_new, for tests of the fallback). */
static int evl__stack_guard_kind(size_t page) {
    const char *env = getenv("EVLOOP_STACK_GUARD");
    int kind = __atomic_load_n(&evl__guard_kind, __ATOMIC_ACQUIRE);
    if (env && strcmp(env, "mprotect") == 0) return EVL__GUARD_MAPPING;
    if (kind) return kind;
    kind = evl__guard_probe(page);
    if (!kind) return EVL__GUARD_MAPPING;
    __atomic_store_n(&evl__guard_kind, kind, __ATOMIC_RELEASE);
    return kind;
}

/* -ENOMEM with memory to spare is the per-process mapping limit where each stack has its
   own mappings, and the address space or memory otherwise: say which once, since the bare
   error code points at the allocator instead. */
static int evl__stack_map_failed(evl_loop *loop, int err) {
    if (err != -ENOMEM || loop->stack_limit_warned) return err;
    loop->stack_limit_warned = 1;
    if (loop->stack_guard == EVL__GUARD_MAPPING)
        evl__log(loop, EVL_LOG_WARN,
                 "evloop: a task stack could not be mapped with %zu tasks alive (-ENOMEM): "
                 "without guard regions (Linux 6.13+) each guarded stack costs two memory "
                 "mappings and vm.max_map_count limits them; raise it or set "
                 "evl_config.stack_guard = -1", loop->tasks_alive);
    else
        evl__log(loop, EVL_LOG_WARN,
                 "evloop: task stacks could not be mapped with %zu tasks alive (-ENOMEM): the "
                 "address space or memory is exhausted (ulimit -v, vm.overcommit_memory)",
                 loop->tasks_alive);
    return err;
}

/* A stack with a mapping of its own, guard page first: the fallback without guard regions. */
static int evl__stack_map(evl_loop *loop, evl__stack *s, size_t size) {
    size_t guard = loop->page_size;
    void *map = evl__fault(EVL_FAULT_MMAP)
                    ? MAP_FAILED
                    : mmap(NULL, size + guard, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return evl__stack_map_failed(loop, -errno);
    if (evl__fault(EVL_FAULT_MMAP) || mprotect(map, guard, PROT_NONE) < 0) {
        int err = -errno;
        munmap(map, size + guard);
        return evl__stack_map_failed(loop, err);
    }
    s->base = map;
    s->lo = (unsigned char *)map + guard;
    s->map_size = size + guard;
    s->slab = NULL;
    return 0;
}

static void evl__slab_link(evl__slab **head, evl__slab *sl) {
    sl->prev = NULL;
    sl->next = *head;
    if (*head) (*head)->prev = sl;
    *head = sl;
}

static void evl__slab_unlink(evl__slab **head, evl__slab *sl) {
    if (sl->prev) sl->prev->next = sl->next;
    else *head = sl->next;
    if (sl->next) sl->next->prev = sl->prev;
}

static int evl__slab_new(evl_loop *loop, evl__stack_class *c, evl__slab **out) {
    size_t slot = c->size + (loop->stack_guard ? loop->page_size : 0);
    size_t max = EVL__SLAB_BYTES_MAX / slot, n = c->slots;
    evl__slab *sl;
    void *mem;
    if (n < EVL__SLAB_SLOTS_MIN) n = EVL__SLAB_SLOTS_MIN;
    if (n > max) n = max ? max : 1;
    sl = (evl__slab *)evl__realloc(loop, NULL, sizeof *sl + n * sizeof(uint32_t));
    if (!sl) return -ENOMEM;
    mem = evl__fault(EVL_FAULT_MMAP) ? MAP_FAILED
                                     : mmap(NULL, n * slot, PROT_READ | PROT_WRITE,
                                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        int err = -errno;
        evl__free(loop, sl);
        return evl__stack_map_failed(loop, err);
    }
#ifdef MADV_NOHUGEPAGE
    /* With transparent huge pages always on, a task's first touch would commit 2 MiB. */
    madvise(mem, n * slot, MADV_NOHUGEPAGE);
#endif
    memset(sl, 0, sizeof *sl);
    sl->mem = (unsigned char *)mem;
    sl->map_size = n * slot;
    sl->slot_size = slot;
    sl->nslots = (uint32_t)n;
    sl->free = (uint32_t *)(sl + 1);
    sl->alloc = loop->alloc;
    sl->alloc_ud = loop->alloc_ud;
    c->slots += n;
    evl__slab_link(&c->avail, sl);
    *out = sl;
    return 0;
}

static void evl__slab_unmap(evl__slab *sl) {
    munmap(sl->mem, sl->map_size);
    sl->alloc(sl->alloc_ud, sl, 0);
}

/* Takes a slot from the first slab of the class with one (every slab in `avail` has one). */
static int evl__slab_take(evl_loop *loop, evl__stack_class *c, evl__stack *s) {
    size_t guard = loop->stack_guard ? loop->page_size : 0;
    evl__slab *sl;
    uint32_t i;
    int err;
    sl = c->avail;
    if (!sl) {
        err = evl__slab_new(loop, c, &sl);
        if (!sl) return err < 0 ? err : -ENOMEM; /* (an mmap failure always sets errno) */
    }
    if (sl->nfree) {
        i = sl->free[--sl->nfree];
    } else {
        /* A slot's guard is installed when it is first handed out and outlives discards. */
        i = sl->fresh;
        if (guard && (evl__fault(EVL_FAULT_MMAP) ||
                      madvise(sl->mem + (size_t)i * sl->slot_size, guard, MADV_GUARD_INSTALL) < 0))
            return evl__stack_map_failed(loop, -errno);
        sl->fresh++;
    }
    if (++sl->used == sl->nslots) {
        evl__slab_unlink(&c->avail, sl);
        evl__slab_link(&c->full, sl);
    }
    s->base = sl->mem + (size_t)i * sl->slot_size;
    s->lo = (unsigned char *)s->base + guard;
    s->map_size = sl->slot_size;
    s->slab = sl;
    return 0;
}

/* Gives a slot back with its pages discarded, so the memory of a burst returns at once. An
   empty slab is unmapped while another has room: one stays, so a loop whose task count
   swings around a slab's edge does not map and unmap at every spawn. */
static void evl__slab_give(evl__stack_class *c, evl__stack *s) {
    evl__slab *sl = s->slab;
    size_t offset;
    if (sl->used-- == sl->nslots) {
        evl__slab_unlink(&c->full, sl);
        evl__slab_link(&c->avail, sl);
    }
    if (sl->used == 0 && (c->avail != sl || sl->next)) {
        evl__slab_unlink(&c->avail, sl);
        c->slots -= sl->nslots;
        evl__slab_unmap(sl);
        return;
    }
    madvise(s->lo, s->size, MADV_DONTNEED);
    offset = (size_t)((unsigned char *)s->base - sl->mem);
    sl->free[sl->nfree++] = (uint32_t)(offset / sl->slot_size);
}

/* The loop closes: each slab is unmapped, or by the last executor job that holds a stack of
   it. `next` is read first, since the slab may be gone once it is marked. */
static void evl__slabs_orphan(evl__slab *sl) {
    while (sl) {
        evl__slab *next = sl->next;
        if (__atomic_add_fetch(&sl->held, EVL__SLAB_ORPHAN, __ATOMIC_ACQ_REL) == EVL__SLAB_ORPHAN)
            evl__slab_unmap(sl);
        sl = next;
    }
}
#else
static int evl__stack_guard_kind(size_t page) {
    (void)page;
    return EVL__GUARD_NONE;
}
#endif /* EVL_NO_MMAP */

/* `sp` is the stack pointer of the stack's last switch (NULL: not known), below which every
   frame has returned. */
static void evl__stack_unpoison(evl__stack *s, const void *sp) {
#ifdef EVL__ASAN
    /* Frames that never returned (the task's last ones) leave poisoned shadow behind, all
       above `sp`. Clearing the whole stack's shadow would commit 16 KiB of it per 128 KiB
       stack: 1.6 GiB for 100 000 tasks. */
    unsigned char *lo = (unsigned char *)s->lo, *hi = lo + s->size, *p = (unsigned char *)sp;
    if (!p || p < lo || p > hi) p = lo;
    __asan_unpoison_memory_region(p, (size_t)(hi - p));
#else
    (void)s;
    (void)sp;
#endif
}

static void evl__stack_unregister(evl__stack *s) {
    (void)s; /* where Valgrind does not support the CPU, its macros expand to nothing */
#ifdef EVL__VALGRIND
    VALGRIND_STACK_DEREGISTER(s->valgrind_id);
#endif
}

/* Frees a stack that has a mapping or heap block of its own. It takes the allocator rather
   than the loop because an executor job that was handed a stack frees it on its worker
   thread, maybe after the loop. */
static void evl__stack_unmap(evl_alloc_fn alloc, void *alloc_ud, evl__stack *s) {
#ifndef EVL_NO_MMAP
    (void)alloc;
    (void)alloc_ud;
    munmap(s->base, s->map_size);
#else
    alloc(alloc_ud, s->base, 0);
#endif
    s->base = NULL;
}

#ifndef EVL_NO_THREADS
/* An abandoned task's stack goes to its executor job (evl__executor_keep_stack): its slot
   stays taken, and its slab outlives the loop until the job gives the stack back here. */
static void evl__stack_hold(evl__stack *s) {
#ifndef EVL_NO_MMAP
    if (s->slab) __atomic_add_fetch(&s->slab->held, 1, __ATOMIC_ACQ_REL);
#else
    (void)s;
#endif
}

static void evl__stack_release(evl_alloc_fn alloc, void *alloc_ud, evl__stack *s) {
    evl__stack_unpoison(s, NULL);
    evl__stack_unregister(s);
#ifndef EVL_NO_MMAP
    if (s->slab) {
        if (__atomic_sub_fetch(&s->slab->held, 1, __ATOMIC_ACQ_REL) == EVL__SLAB_ORPHAN)
            evl__slab_unmap(s->slab);
        s->base = NULL;
        return;
    }
#endif
    evl__stack_unmap(alloc, alloc_ud, s);
}
#endif

static evl__stack_class *evl__stack_class_of(evl_loop *loop, size_t size) {
    evl__stack_class *c;
    size_t i;
    for (i = 0; i < loop->stack_classes_len; i++)
        if (loop->stack_classes[i].size == size) return &loop->stack_classes[i];
    if (evl__grow(loop, (void **)&loop->stack_classes, &loop->stack_classes_cap, i + 1,
                  sizeof *loop->stack_classes) < 0)
        return NULL;
    c = &loop->stack_classes[loop->stack_classes_len++];
    memset(c, 0, sizeof *c);
    c->size = size;
    return c;
}

static int evl__stack_get(evl_loop *loop, evl__stack *s, size_t size) {
    size_t page = loop->page_size;
    evl__stack_class *c;
    int err;
    if (size > (size_t)-1 / 4) return -ENOMEM;
    size = (size + page - 1) / page * page;
    c = evl__stack_class_of(loop, size);
    if (!c) return -ENOMEM;
    if (c->pool_len) {
        *s = c->pool[--c->pool_len];
        return 0;
    }
#ifndef EVL_NO_MMAP
    err = loop->stack_guard == EVL__GUARD_MAPPING ? evl__stack_map(loop, s, size)
                                                  : evl__slab_take(loop, c, s);
#else
    s->base = s->lo = evl__realloc(loop, NULL, size);
    s->map_size = size;
    s->slab = NULL;
    err = s->base ? 0 : -ENOMEM;
#endif
    if (err < 0) return err;
    s->size = size;
#ifdef EVL__VALGRIND
    s->valgrind_id = VALGRIND_STACK_REGISTER(s->lo, (unsigned char *)s->lo + size);
#endif
    return 0;
}

/* `sp`: the stack pointer of the stack's last switch (see evl__stack_unpoison). */
static void evl__stack_put(evl_loop *loop, evl__stack *s, const void *sp) {
    evl__stack_class *c = evl__stack_class_of(loop, s->size); /* found: it gave the stack */
    evl__stack_unpoison(s, sp);
    if (c->pool_len < EVL__STACK_POOL_MAX &&
        evl__grow(loop, (void **)&c->pool, &c->pool_cap, c->pool_len + 1, sizeof *c->pool) == 0) {
        c->pool[c->pool_len++] = *s;
    } else {
        evl__stack_unregister(s);
#ifndef EVL_NO_MMAP
        if (s->slab) evl__slab_give(c, s);
        else
#endif
            evl__stack_unmap(loop->alloc, loop->alloc_ud, s);
    }
    s->base = NULL;
}

/* The loop closes: every free stack and slab goes (a slab held by an executor job, later). */
static void evl__stacks_close(evl_loop *loop) {
    size_t i;
    for (i = 0; i < loop->stack_classes_len; i++) {
        evl__stack_class *c = &loop->stack_classes[i];
        while (c->pool_len) {
            evl__stack *s = &c->pool[--c->pool_len];
            evl__stack_unregister(s);
            if (!s->slab) evl__stack_unmap(loop->alloc, loop->alloc_ud, s);
        }
        evl__free(loop, c->pool);
#ifndef EVL_NO_MMAP
        evl__slabs_orphan(c->avail);
        evl__slabs_orphan(c->full);
#endif
    }
    evl__free(loop, loop->stack_classes);
    loop->stack_classes = NULL;
    loop->stack_classes_len = loop->stack_classes_cap = 0;
}

/* ---- stack overflow: a SIGSEGV in a running task's guard page is named, not silent ---- */
#ifndef EVL_NO_MMAP
/* The process-wide table of loops that run tasks; the fault handler looks for the loop whose
   running task owns the faulting guard page. It is the one piece of global state besides the
   signal routing table, and it is only written with atomic compare-and-swap. */
#define EVL__GUARD_LOOPS 128
static evl_loop *evl__guard_loops[EVL__GUARD_LOOPS];
static int evl__guard_installed;
static struct sigaction evl__guard_old;

static void evl__write_str(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void evl__write_num(size_t n) {
    char buf[24];
    int i = (int)sizeof buf;
    buf[--i] = 0;
    do buf[--i] = (char)('0' + n % 10); while ((n /= 10) && i > 0);
    evl__write_str(buf + i);
}

static void evl__guard_handler(int sig, siginfo_t *info, void *uctx) {
    unsigned char *addr = (unsigned char *)info->si_addr;
    int i;
    for (i = 0; i < EVL__GUARD_LOOPS; i++) {
        evl_loop *loop = __atomic_load_n(&evl__guard_loops[i], __ATOMIC_ACQUIRE);
        evl_task *t = loop ? __atomic_load_n(&loop->current, __ATOMIC_ACQUIRE) : NULL;
        if (!t || t->stack.lo == t->stack.base) continue;
        if (addr >= (unsigned char *)t->stack.base && addr < (unsigned char *)t->stack.lo) {
            evl__write_str("evloop: stack overflow in task '");
            if (t->name[0]) {
                evl__write_str(t->name);
            } else {
                evl__write_str("task-");
                evl__write_num((size_t)t->id);
            }
            evl__write_str("' (stack size ");
            evl__write_num(t->stack.size);
            evl__write_str(" bytes): give it a larger evl_task_opts.stack_size\n");
            signal(SIGSEGV, SIG_DFL); /* returning re-runs the access, which now kills us */
            return;
        }
    }
    /* Not ours: hand it to whoever handled SIGSEGV before, or die the default way. */
    if ((evl__guard_old.sa_flags & SA_SIGINFO) && evl__guard_old.sa_sigaction) {
        evl__guard_old.sa_sigaction(sig, info, uctx);
        return;
    }
    if (evl__guard_old.sa_handler != SIG_DFL && evl__guard_old.sa_handler != SIG_IGN &&
        evl__guard_old.sa_handler != NULL) {
        evl__guard_old.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

/* The handler runs on an alternate stack (the task's own is exhausted). sigaltstack is per
   thread: the loop installs one on the thread that spawns its first task, unless the thread
   has one already. */
static void evl__guard_setup(evl_loop *loop) {
    stack_t ss;
    int i;
    if (loop->guard_registered) return;
    loop->guard_registered = 1;
    for (i = 0; i < EVL__GUARD_LOOPS; i++) {
        evl_loop *expected = NULL;
        if (__atomic_compare_exchange_n(&evl__guard_loops[i], &expected, loop, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            break;
    }
    if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
        size_t size = 65536;
        void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem != MAP_FAILED) {
            ss.ss_sp = mem;
            ss.ss_size = size;
            ss.ss_flags = 0;
            if (sigaltstack(&ss, NULL) == 0) {
                loop->altstack = mem;
                loop->altstack_size = size;
            } else {
                munmap(mem, size);
            }
        }
    }
    if (!__atomic_exchange_n(&evl__guard_installed, 1, __ATOMIC_ACQ_REL)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = evl__guard_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &evl__guard_old);
    }
}

static void evl__guard_teardown(evl_loop *loop) {
    int i;
    if (!loop->guard_registered) return;
    for (i = 0; i < EVL__GUARD_LOOPS; i++) {
        evl_loop *expected = loop;
        if (__atomic_compare_exchange_n(&evl__guard_loops[i], &expected, NULL, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            break;
    }
    if (loop->altstack) {
        /* Only the thread that installed the alternate stack can remove it; elsewhere it is
           left in place (and its 64 KiB with it) rather than freed under that thread. */
        stack_t cur, off;
        if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == loop->altstack) {
            memset(&off, 0, sizeof off);
            off.ss_flags = SS_DISABLE;
            if (sigaltstack(&off, NULL) == 0) munmap(loop->altstack, loop->altstack_size);
        }
        loop->altstack = NULL;
    }
}
#else
/* Without mmap there are no guard pages to watch. */
static void evl__guard_setup(evl_loop *loop) {
    (void)loop;
}

static void evl__guard_teardown(evl_loop *loop) {
    (void)loop;
}
#endif /* EVL_NO_MMAP */

/* ---- switching, announced to the sanitizers ---- */
static void evl__switch_in(evl_loop *loop, evl_task *t) {
#ifdef EVL__ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, t->stack.lo, t->stack.size);
#endif
#ifdef EVL__TSAN
    loop->tsan_loop_fiber = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
    evl__ctx_switch(&loop->ctx, &t->ctx);
#ifdef EVL__TSAN
    evl__tsan_signals_release(&loop->tsan_sigmask); /* held by evl__switch_out */
#endif
#ifdef EVL__ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* `final`: the task is done and its stack will never run again. */
static void evl__switch_out(evl_loop *loop, evl_task *t, int final) {
#ifdef EVL__ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(final ? NULL : &fake, loop->asan_stack_bottom,
                                   loop->asan_stack_size);
#else
    (void)final;
#endif
#ifdef EVL__TSAN
    /* Held until the loop's fiber runs again, so no signal is queued on this one, which may
       never run again; the hold itself runs what was queued on it so far. */
    evl__tsan_signals_hold(&loop->tsan_sigmask);
    __tsan_switch_to_fiber(loop->tsan_loop_fiber, 0);
#endif
    evl__ctx_switch(&t->ctx, &loop->ctx);
#ifdef EVL__ASAN
    __sanitizer_finish_switch_fiber(fake, &loop->asan_stack_bottom, &loop->asan_stack_size);
#endif
}

#ifdef EVL__TSAN
/* TSan makes a fiber current while it sets it up and while it tears it down: a signal that
   arrived then would be queued on it, and lost with it. */
static void *evl__tsan_fiber_new(void) {
    sigset_t old;
    void *fiber;
    evl__tsan_signals_hold(&old);
    fiber = __tsan_create_fiber(0);
    evl__tsan_signals_release(&old);
    return fiber;
}

static void evl__tsan_fiber_free(void *fiber) {
    sigset_t old;
    evl__tsan_signals_hold(&old);
    __tsan_destroy_fiber(fiber);
    evl__tsan_signals_release(&old);
}
#endif

/* ---- wait lists ---- */
static void evl__waitq_push(evl__waitq *q, evl_task *t) {
    t->wq = q;
    t->wnext = NULL;
    t->wprev = q->tail;
    if (q->tail) q->tail->wnext = t;
    else q->head = t;
    q->tail = t;
}

static void evl__waitq_remove(evl_task *t) {
    evl__waitq *q = t->wq;
    if (t->wprev) t->wprev->wnext = t->wnext;
    else q->head = t->wnext;
    if (t->wnext) t->wnext->wprev = t->wprev;
    else q->tail = t->wprev;
    t->wq = NULL;
    t->wnext = t->wprev = NULL;
}

/* ---- the task lifecycle ---- */
static void evl__task_resume(evl_loop *loop, evl_task *t);

/* Schedules a suspended task to continue with `status` (and `value`). `now`: the caller is an
   internal timer or I/O callback running on the loop's context, so the task may continue at
   once; every other wakeup goes through the ready deque, so user calls never run task code
   behind the caller's back. Only the first wakeup of a suspension counts. */
static void evl__task_wake(evl_loop *loop, evl_task *t, int status, void *value, int now) {
    if (t->state != EVL__T_SUSPENDED || t->woken) return;
    if (t->wq) evl__waitq_remove(t);
    t->woken = 1;
    t->wake_status = status;
    t->wake_value = value;
    if (now && !loop->current) evl__task_resume(loop, t);
    else evl__ring_put(loop, evl__task_run_cb, t);
}

static void evl__waitq_wake_all(evl_loop *loop, evl__waitq *q, int status) {
    while (q->head) evl__task_wake(loop, q->head, status, NULL, 0);
}

static void evl__task_timer_cb(evl_loop *loop, void *arg) {
    evl__task_wake(loop, (evl_task *)arg, 0, NULL, 1);
}

static void evl__task_deadline_cb(evl_loop *loop, void *arg) {
    evl__task_wake(loop, (evl_task *)arg, -ETIMEDOUT, NULL, 1);
}

static void evl__task_io_cb(evl_loop *loop, void *arg, int events) {
    evl__task_wake(loop, (evl_task *)arg, events, NULL, 1);
}

/* The deadline that applies to t now: inside a shield only the one set inside it. */
static evl_time evl__task_deadline(const evl_task *t) {
    return t->shield ? t->shield_deadline : t->deadline;
}

/* The current task if cancellation and its deadline allow it to suspend, else the error. */
static int evl__task_enter(evl_loop *loop, evl_task **out) {
    evl_task *t = loop->current;
    evl_time deadline;
    *out = t;
    if (!t) return -EPERM;
    if (t->cancelled && !t->shield) return -ECANCELED;
    deadline = evl__task_deadline(t);
    if (deadline != EVL_FOREVER && deadline <= evl_now(loop)) return -ETIMEDOUT;
    return 0;
}

/* Suspends t (the current task, past evl__task_enter) until it is woken, in the wait list q
   if there is one; returns the wake status. Whatever the task waited on is disarmed here. */
static int evl__task_suspend(evl_loop *loop, evl_task *t, evl__waitq *q) {
    evl_time deadline = evl__task_deadline(t);
    /* Others run meanwhile: what the task saw of an fd is old news, and the fd may be closed
       and its number reused. */
    t->drained_fd = t->kept_fd = 0;
    if (deadline != EVL_FOREVER) {
        evl_time left = deadline - evl_now(loop);
        if (evl_timer_start(loop, &t->deadline_timer, left > 0 ? left : 0, 0) < 0) {
            /* Disarm what the caller armed for this suspension, as a wakeup would (evl_sleep
               stops its own timer). */
            evl_io_stop(loop, &t->io);
            return -ENOMEM;
        }
    }
    if (q) evl__waitq_push(q, t);
    t->state = EVL__T_SUSPENDED;
    evl__switch_out(loop, t, 0);
    /* Only what this suspension armed is stopped, so that a wait touches nothing else of
       the task (evl_sleep stops its own timer). */
    if (deadline != EVL_FOREVER) evl_timer_stop(loop, &t->deadline_timer);
    if (t->io.active) evl_io_stop(loop, &t->io);
    if (t->wq) evl__waitq_remove(t);
    return t->wake_status;
}

/* Suspends t until it is woken, with neither cancellation nor any deadline able to cut the
   wait short: for what the task must see end (a running executor job it lent its stack to,
   the children of a group it waits for). */
static void evl__task_suspend_uninterruptible(evl_loop *loop, evl_task *t, evl__waitq *q) {
    evl_time saved = t->shield_deadline;
    t->shield++;
    t->shield_deadline = EVL_FOREVER;
    evl__task_suspend(loop, t, q);
    t->shield--;
    t->shield_deadline = saved;
}

static void evl__task_main(void *arg) {
    evl_task *t = (evl_task *)arg;
    evl_loop *loop = t->loop;
#ifdef EVL__ASAN
    __sanitizer_finish_switch_fiber(NULL, &loop->asan_stack_bottom, &loop->asan_stack_size);
#endif
    t->result = t->fn(loop, t->arg);
    t->state = EVL__T_DONE;
    evl__switch_out(loop, t, 1);
    EVL_ASSERT(0 && "a finished task was resumed");
}

static void evl__group_child_done(evl_loop *loop, evl_task *t);

static void evl__task_release(evl_loop *loop, evl_task *t) {
    if (t->prev) t->prev->next = t->next;
    else loop->tasks = t->next;
    if (t->next) t->next->prev = t->prev;
    /* Freed structs wait in a FIFO before reuse, so a stale pointer stays recognisably dead
       (evl_task_cancel returns -ESRCH) for as long as possible. */
    t->state = EVL__T_FREE;
    t->next = NULL;
    if (loop->task_free_tail) loop->task_free_tail->next = t;
    else loop->task_free_head = t;
    loop->task_free_tail = t;
}

/* Hands an error that no caller can receive to the exception handler, naming the task. */
static void evl__report(evl_loop *loop, const char *message, int error, evl_task *t) {
    evl_exception e;
    e.message = message;
    e.error = error;
    e.task = t;
    e.task_name = t ? evl_task_name(t) : NULL;
    e.file = t ? t->file : NULL;
    e.line = t ? t->line : 0;
    evl_call_exception_handler(loop, &e);
}

/* A task has returned (or was cancelled before it started): release what it used and tell
   whoever is interested. */
static void evl__task_finish(evl_loop *loop, evl_task *t) {
    if (t->stack.base) evl__stack_put(loop, &t->stack, evl__ctx_sp(&t->ctx));
#ifdef EVL__TSAN
    evl__tsan_fiber_free(t->tsan_fiber);
#endif
    loop->tasks_alive--;
    loop->ring_reserved--;
    if (loop->on_finish) loop->on_finish(loop, t, t->result, loop->hooks_ud);
    if (t->group) {
        evl__group_child_done(loop, t);
    } else if (t->detached) {
        if (t->result < 0) evl__report(loop, "detached task failed", t->result, t);
        evl__task_release(loop, t);
    } else {
        evl__waitq_wake_all(loop, &t->joiners, 0);
    }
    if (loop->shutdown_state == 1) evl__shutdown_task_done(loop);
}

static void evl__task_resume(evl_loop *loop, evl_task *t) {
    t->woken = 0;
    if (t->state == EVL__T_NEW && t->cancelled) {
        /* Cancelled before it ran: like asyncio, its function never starts. */
        t->result = -ECANCELED;
        t->state = EVL__T_DONE;
        evl__task_finish(loop, t);
        return;
    }
    t->state = EVL__T_RUNNING;
    __atomic_store_n(&loop->current, t, __ATOMIC_RELEASE);
    evl__switch_in(loop, t);
    __atomic_store_n(&loop->current, (evl_task *)NULL, __ATOMIC_RELEASE);
    if (t->state == EVL__T_DONE) evl__task_finish(loop, t);
}

static void evl__task_run_cb(evl_loop *loop, void *arg) {
    evl__task_resume(loop, (evl_task *)arg);
}

static evl_task *evl__task_alloc(evl_loop *loop) {
    evl_task *t = loop->task_free_head;
    if (t) {
        loop->task_free_head = t->next;
        if (!loop->task_free_head) loop->task_free_tail = NULL;
    } else {
        t = (evl_task *)evl__realloc(loop, NULL, sizeof *t);
        if (!t) return NULL;
    }
    memset(t, 0, sizeof *t);
    return t;
}

int evl_task_spawn_at(evl_loop *loop, evl_task **out, evl_task_fn fn, void *arg,
                      const evl_task_opts *opts, const char *file, int line) {
    size_t size = opts && opts->stack_size ? opts->stack_size : loop->stack_size;
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (out) *out = NULL;
    if (!fn || size < EVL__STACK_MIN) return -EINVAL;
    if (loop->debug && evl__foreign_thread(loop, "evl_task_spawn")) return -EPERM;
    /* Reserve the task's place in the ready deque first: its wakeups then never allocate. */
    if (evl__ring_fit(loop, 1) < 0) return -ENOMEM;
    t = evl__task_alloc(loop);
    if (!t) return -ENOMEM;
    err = evl__stack_get(loop, &t->stack, size);
    if (err == 0) err = evl__ctx_make(&t->ctx, t->stack.lo, t->stack.size, evl__task_main, t);
    if (err < 0) {
        /* Nothing ran on it: nothing to unpoison. */
        if (t->stack.base)
            evl__stack_put(loop, &t->stack, (unsigned char *)t->stack.lo + t->stack.size);
        evl__task_release(loop, t);
        return err;
    }
    evl__guard_setup(loop);
    t->loop = loop;
    t->fn = fn;
    t->arg = arg;
    t->detached = out == NULL;
    t->deadline = t->shield_deadline = EVL_FOREVER;
    t->state = EVL__T_NEW;
    t->id = ++loop->task_seq;
    if (loop->debug) {
        t->file = file;
        t->line = line;
    }
    if (opts && opts->name) strncpy(t->name, opts->name, sizeof t->name - 1);
    (evl_timer_init)(&t->sleep_timer, evl__task_timer_cb, t);
    (evl_timer_init)(&t->deadline_timer, evl__task_deadline_cb, t);
#ifdef EVL__TSAN
    t->tsan_fiber = evl__tsan_fiber_new();
#endif
    t->next = loop->tasks;
    t->prev = NULL;
    if (loop->tasks) loop->tasks->prev = t;
    loop->tasks = t;
    loop->tasks_alive++;
    loop->ring_reserved++;
    t->woken = 1;
    evl__ring_put(loop, evl__task_run_cb, t);
    loop->stats.tasks_spawned++;
    if (out) *out = t;
    if (loop->on_spawn) loop->on_spawn(loop, t, 0, loop->hooks_ud);
    return 0;
}

int (evl_task_spawn)(evl_loop *loop, evl_task **out, evl_task_fn fn, void *arg,
                     const evl_task_opts *opts) {
    return evl_task_spawn_at(loop, out, fn, arg, opts, NULL, 0);
}

void evl_set_task_hooks(evl_loop *loop, evl_task_hook on_spawn, evl_task_hook on_finish, void *ud) {
    EVL_ASSERT(loop);
    loop->on_spawn = on_spawn;
    loop->on_finish = on_finish;
    loop->hooks_ud = ud;
}

int evl_task_join(evl_loop *loop, evl_task *t, int *result) {
    evl_task *self;
    int err;
    EVL_ASSERT(loop);
    if (!t || t->state == EVL__T_FREE) return -ESRCH;
    if (t->detached || t->group) return -EINVAL;
    if (t->join_claimed) return -EBUSY;
    if (t->state != EVL__T_DONE) {
        if (t == loop->current) return -EDEADLK;
        err = evl__task_enter(loop, &self);
        if (err < 0) return err;
        /* The claim holds from now until this joiner has collected the result, including
           the time between t's end and this joiner's turn to run. */
        t->join_claimed = 1;
        err = evl__task_suspend(loop, self, &t->joiners);
        t->join_claimed = 0;
        if (err < 0) return err;
    }
    if (result) *result = t->result;
    evl__task_release(loop, t);
    return 0;
}

int evl_task_cancel(evl_loop *loop, evl_task *t) {
    EVL_ASSERT(loop);
    if (!t || t->state == EVL__T_FREE || t->state == EVL__T_DONE) return -ESRCH;
    t->cancelled = 1;
    if (t->state == EVL__T_SUSPENDED && !t->shield) evl__task_wake(loop, t, -ECANCELED, NULL, 0);
    return 0;
}

int evl_task_done(const evl_task *t) {
    return t && (t->state == EVL__T_DONE || t->state == EVL__T_FREE);
}

evl_task *evl_task_current(const evl_loop *loop) {
    EVL_ASSERT(loop);
    return loop->current;
}

/* The default name "task-N" is formatted on first use: spawning stays cheap. */
const char *evl_task_name(const evl_task *t) {
    if (!t) return "";
    if (!t->name[0]) snprintf(((evl_task *)t)->name, sizeof t->name, "task-%llu", t->id);
    return t->name;
}

int evl_yield(evl_loop *loop) {
    evl_task *t;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    t->state = EVL__T_SUSPENDED;
    t->woken = 1;
    t->wake_status = 0;
    evl__ring_put(loop, evl__task_run_cb, t);
    evl__switch_out(loop, t, 0);
    return t->wake_status;
}

int evl_sleep(evl_loop *loop, evl_time delay) {
    evl_task *t;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    if (delay < 0) return -EINVAL;
    err = evl_timer_start(loop, &t->sleep_timer, delay, 0);
    if (err < 0) return err;
    err = evl__task_suspend(loop, t, NULL);
    evl_timer_stop(loop, &t->sleep_timer); /* woken otherwise: cancelled, a deadline */
    return err;
}

/* Inside a shield a deadline scope works on the shield's own deadline, so the cleanup that a
   shield protects from cancellation can still be bounded in time (as a cancel scope inside a
   shielded one in Trio); the deadline from outside comes back when the last shield ends. */
evl_time evl_deadline(evl_loop *loop, evl_time at) {
    evl_task *t = loop->current;
    evl_time *slot, old;
    if (!t) return EVL_FOREVER;
    slot = t->shield ? &t->shield_deadline : &t->deadline;
    old = *slot;
    if (at < old) *slot = at;
    return old;
}

void evl_deadline_restore(evl_loop *loop, evl_time old) {
    evl_task *t = loop->current;
    if (!t) return;
    if (t->shield) t->shield_deadline = old;
    else t->deadline = old;
}

void evl_shield_begin(evl_loop *loop) {
    if (loop->current) loop->current->shield++;
}

void evl_shield_end(evl_loop *loop) {
    evl_task *t = loop->current;
    if (!t || t->shield == 0) return;
    /* Leaving the last shield drops a deadline set inside it that was never restored. */
    if (--t->shield == 0) t->shield_deadline = EVL_FOREVER;
}

/* ==== >>futures ==== */
struct evl_future {
    evl_loop *loop;
    int done, status;
    void *value;
    evl__waitq waiters;
    evl__job *callbacks;          /* on_done callbacks, each holding a ready-deque reservation */
    size_t ncallbacks, callbacks_cap;
    int ts_claimed;               /* atomic: evl_future_set_threadsafe was called */
    int ts_in_flight;             /* its post has not run yet */
    int free_requested;           /* freed while the post was in flight: free when it runs */
    int ts_status;
    void *ts_value;
    /* The executor job that completes this future, told when its user cancels (freeing 0) or
       frees it (1). It returns 1 when the job runs: the future completes when it returns. */
    int (*cancel_hook)(evl_loop *loop, void *ctx, int freeing);
    void *cancel_ctx;
};

int evl_future_new(evl_loop *loop, evl_future **out) {
    evl_future *f;
    EVL_ASSERT(loop);
    if (!out) return -EINVAL;
    f = (evl_future *)evl__realloc(loop, NULL, sizeof *f);
    *out = f;
    if (!f) return -ENOMEM;
    memset(f, 0, sizeof *f);
    f->loop = loop;
    return 0;
}

/* Completes f: its waiters wake and its callbacks are queued, in their reserved slots. */
static int evl__future_complete(evl_loop *loop, evl_future *f, int status, void *value) {
    evl_task *t;
    size_t i;
    f->done = 1;
    f->status = status;
    f->value = value;
    while ((t = f->waiters.head) != NULL) evl__task_wake(loop, t, status, value, 0);
    for (i = 0; i < f->ncallbacks; i++) {
        loop->ring_reserved--;
        evl__ring_put(loop, f->callbacks[i].cb, f->callbacks[i].arg);
    }
    f->ncallbacks = 0;
    return 0;
}

int evl_future_set(evl_loop *loop, evl_future *f, int status, void *value) {
    EVL_ASSERT(loop);
    if (!f) return -EINVAL;
    if (f->done) return -EALREADY;
    if (f->cancel_hook) return -EBUSY; /* an executor job completes it */
    return evl__future_complete(loop, f, status, value);
}

static void evl__future_free_now(evl_loop *loop, evl_future *f) {
    loop->ring_reserved -= f->ncallbacks;
    evl__free(loop, f->callbacks);
    evl__free(loop, f);
}

static void evl__future_ts_cb(evl_loop *loop, void *arg) {
    evl_future *f = (evl_future *)arg;
    f->ts_in_flight = 0;
    if (f->free_requested) evl__future_free_now(loop, f);
    else if (!f->done && !f->cancel_hook) evl__future_complete(loop, f, f->ts_status, f->ts_value);
}

int evl_future_set_threadsafe(evl_future *f, int status, void *value) {
    int err;
    if (!f) return -EINVAL;
    if (__atomic_exchange_n(&f->ts_claimed, 1, __ATOMIC_ACQ_REL)) return -EALREADY;
    f->ts_status = status;
    f->ts_value = value;
    f->ts_in_flight = 1;
    err = evl_call_soon_threadsafe(f->loop, evl__future_ts_cb, f);
    if (err < 0) {
        f->ts_in_flight = 0;
        __atomic_store_n(&f->ts_claimed, 0, __ATOMIC_RELEASE);
    }
    return err;
}

int evl_future_await(evl_loop *loop, evl_future *f, void **value) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!f) return -EINVAL;
    if (!f->done) {
        err = evl__task_enter(loop, &t);
        if (err < 0) return err;
        err = evl__task_suspend(loop, t, &f->waiters);
        if (value) *value = t->wake_value;
        return err;
    }
    if (value) *value = f->value;
    return f->status;
}

int evl_future_on_done(evl_loop *loop, evl_future *f, evl_cb cb, void *arg) {
    EVL_ASSERT(loop);
    if (!f || !cb) return -EINVAL;
    if (f->done) return (evl_call_soon)(loop, cb, arg);
    if (evl__grow(loop, (void **)&f->callbacks, &f->callbacks_cap, f->ncallbacks + 1,
                  sizeof *f->callbacks) < 0 ||
        evl__ring_fit(loop, 1) < 0)
        return -ENOMEM;
    loop->ring_reserved++;
    f->callbacks[f->ncallbacks].cb = cb;
    f->callbacks[f->ncallbacks].arg = arg;
    f->ncallbacks++;
    return 0;
}

int evl_future_cancel(evl_loop *loop, evl_future *f) {
    EVL_ASSERT(loop);
    if (!f) return -EINVAL;
    if (f->done) return -EALREADY;
    if (f->cancel_hook) {
        if (f->cancel_hook(loop, f->cancel_ctx, 0)) return 0; /* completes when its job returns */
        f->cancel_hook = NULL;
    }
    return evl__future_complete(loop, f, -ECANCELED, NULL);
}

int evl_future_done(const evl_future *f) {
    return f && f->done;
}

void evl_future_free(evl_loop *loop, evl_future *f) {
    EVL_ASSERT(loop);
    if (!f) return;
    if (f->cancel_hook) {
        f->cancel_hook(loop, f->cancel_ctx, 1);
        f->cancel_hook = NULL;
    }
    evl__waitq_wake_all(loop, &f->waiters, -ECANCELED);
    if (f->ts_in_flight) f->free_requested = 1;
    else evl__future_free_now(loop, f);
}

/* ==== >>task groups ==== */
struct evl_group {
    evl_task *children;      /* linked through gnext/gprev */
    size_t alive;
    int cancelled;           /* evl_group_cancel: newcomers are cancelled too */
    evl_group_failure failure;  /* the first failure (error 0: none yet) */
    evl__waitq waiters;
    int waiting;             /* tasks inside evl_group_wait: they keep a freed group's memory */
    int freed;               /* evl_group_free was called: the last waiter out frees it */
};

int evl_group_new(evl_loop *loop, evl_group **out) {
    evl_group *g;
    EVL_ASSERT(loop);
    if (!out) return -EINVAL;
    g = (evl_group *)evl__realloc(loop, NULL, sizeof *g);
    *out = g;
    if (!g) return -ENOMEM;
    memset(g, 0, sizeof *g);
    return 0;
}

static void evl__group_cancel_children(evl_loop *loop, evl_group *g) {
    evl_task *c;
    for (c = g->children; c; c = c->gnext) evl_task_cancel(loop, c);
}

int evl_group_spawn_task_at(evl_loop *loop, evl_group *g, evl_task **out, evl_task_fn fn,
                            void *arg, const evl_task_opts *opts, const char *file, int line) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (out) *out = NULL;
    if (!g) return -EINVAL;
    err = evl_task_spawn_at(loop, &t, fn, arg, opts, file, line);
    if (err < 0) return err;
    t->group = g;
    t->gnext = g->children;
    if (g->children) g->children->gprev = t;
    g->children = t;
    g->alive++;
    /* A group that already failed, or was cancelled, cancels newcomers too. */
    if (g->failure.error || g->cancelled) evl_task_cancel(loop, t);
    if (out) *out = t;
    return 0;
}

int evl_group_spawn_at(evl_loop *loop, evl_group *g, evl_task_fn fn, void *arg,
                       const evl_task_opts *opts, const char *file, int line) {
    return evl_group_spawn_task_at(loop, g, NULL, fn, arg, opts, file, line);
}

int (evl_group_spawn)(evl_loop *loop, evl_group *g, evl_task_fn fn, void *arg,
                      const evl_task_opts *opts) {
    return evl_group_spawn_task_at(loop, g, NULL, fn, arg, opts, NULL, 0);
}

int (evl_group_spawn_task)(evl_loop *loop, evl_group *g, evl_task **out, evl_task_fn fn,
                           void *arg, const evl_task_opts *opts) {
    return evl_group_spawn_task_at(loop, g, out, fn, arg, opts, NULL, 0);
}

void evl_group_cancel(evl_loop *loop, evl_group *g) {
    EVL_ASSERT(loop && g);
    g->cancelled = 1;
    evl__group_cancel_children(loop, g);
}

int evl_group_first_failure(const evl_group *g, evl_group_failure *out) {
    if (!g) return -EINVAL;
    if (out) *out = g->failure;
    return g->failure.error;
}

static void evl__group_unlink(evl_group *g, evl_task *t) {
    if (t->gprev) t->gprev->gnext = t->gnext;
    else g->children = t->gnext;
    if (t->gnext) t->gnext->gprev = t->gprev;
    t->gnext = t->gprev = NULL;
    t->group = NULL;
}

static void evl__group_child_done(evl_loop *loop, evl_task *t) {
    evl_group *g = t->group;
    evl__group_unlink(g, t);
    g->alive--;
    if (t->result < 0 && t->result != -ECANCELED) {
        g->failure.failures++;
        if (!g->failure.error) {
            g->failure.error = t->result;
            snprintf(g->failure.task_name, sizeof g->failure.task_name, "%s", evl_task_name(t));
            g->failure.file = t->file;
            g->failure.line = t->line;
            evl__group_cancel_children(loop, g);
        }
    }
    evl__task_release(loop, t);
    if (g->alive == 0) {
        while (g->waiters.head) evl__task_wake(loop, g->waiters.head, g->failure.error, g, 0);
    }
}

/* A waiter may be woken by the group (its result, with value g), by evl_group_free, or by
   its own cancellation or deadline; the group's memory lasts until the last waiter leaves. */
static int evl__group_wait_inner(evl_loop *loop, evl_group *g, evl_task *t, int err) {
    if (err == 0) {
        err = evl__task_suspend(loop, t, &g->waiters);
        if (g->freed || t->wake_value == g) return err;
    }
    /* The waiter was cancelled or timed out: so are the children, and it waits for them
       (unless the last one finished meanwhile). */
    if (g->alive == 0) return err;
    evl__group_cancel_children(loop, g);
    /* Woken only when the last child finishes (even if newcomers join after that) or when
       the group is freed: neither cancellation nor a deadline cuts this wait short. */
    evl__task_suspend_uninterruptible(loop, t, &g->waiters);
    return g->freed ? -ECANCELED : err;
}

int evl_group_wait(evl_loop *loop, evl_group *g) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!g) return -EINVAL;
    if (g->alive == 0) return g->failure.error;
    err = evl__task_enter(loop, &t);
    if (err == -EPERM) return err;
    g->waiting++;
    err = evl__group_wait_inner(loop, g, t, err);
    if (--g->waiting == 0 && g->freed) evl__free(loop, g);
    return err;
}

void evl_group_free(evl_loop *loop, evl_group *g) {
    EVL_ASSERT(loop);
    if (!g) return;
    /* Children still running are cancelled and become detached: they outlive the group. */
    while (g->children) {
        evl_task *c = g->children;
        evl__group_unlink(g, c);
        c->detached = 1;
        evl_task_cancel(loop, c);
    }
    evl__waitq_wake_all(loop, &g->waiters, -ECANCELED);
    g->freed = 1;
    if (g->waiting == 0) evl__free(loop, g);
}

/* ==== >>events, semaphores, queues ==== */
struct evl_event {
    int set;
    evl__waitq waiters;
};

int evl_event_new(evl_loop *loop, evl_event **out) {
    EVL_ASSERT(loop);
    if (!out) return -EINVAL;
    *out = (evl_event *)evl__realloc(loop, NULL, sizeof **out);
    if (!*out) return -ENOMEM;
    memset(*out, 0, sizeof **out);
    return 0;
}

void evl_event_set(evl_loop *loop, evl_event *e) {
    EVL_ASSERT(loop && e);
    e->set = 1;
    evl__waitq_wake_all(loop, &e->waiters, 0);
}

void evl_event_clear(evl_loop *loop, evl_event *e) {
    (void)loop;
    EVL_ASSERT(e);
    e->set = 0;
}

int evl_event_is_set(const evl_event *e) {
    return e && e->set;
}

int evl_event_wait(evl_loop *loop, evl_event *e) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!e) return -EINVAL;
    if ((err = evl__task_enter(loop, &t)) < 0) return err;
    return e->set ? 0 : evl__task_suspend(loop, t, &e->waiters);
}

void evl_event_free(evl_loop *loop, evl_event *e) {
    if (!e) return;
    evl__waitq_wake_all(loop, &e->waiters, -ECANCELED);
    evl__free(loop, e);
}

struct evl_sem {
    unsigned count;
    evl__waitq waiters;
};

int evl_sem_new(evl_loop *loop, evl_sem **out, unsigned count) {
    EVL_ASSERT(loop);
    if (!out) return -EINVAL;
    *out = (evl_sem *)evl__realloc(loop, NULL, sizeof **out);
    if (!*out) return -ENOMEM;
    memset(*out, 0, sizeof **out);
    (*out)->count = count;
    return 0;
}

int evl_sem_try_acquire(evl_loop *loop, evl_sem *s) {
    EVL_ASSERT(loop);
    if (!s) return -EINVAL;
    if (s->count == 0 || s->waiters.head) return -EAGAIN;
    s->count--;
    return 0;
}

int evl_sem_acquire(evl_loop *loop, evl_sem *s) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!s) return -EINVAL;
    if ((err = evl__task_enter(loop, &t)) < 0) return err;
    if (evl_sem_try_acquire(loop, s) == 0) return 0;
    /* A release hands its unit straight to the first waiter (FIFO, no barging). */
    return evl__task_suspend(loop, t, &s->waiters);
}

void evl_sem_release(evl_loop *loop, evl_sem *s) {
    EVL_ASSERT(loop && s);
    if (s->waiters.head) evl__task_wake(loop, s->waiters.head, 0, NULL, 0);
    else s->count++;
}

void evl_sem_free(evl_loop *loop, evl_sem *s) {
    if (!s) return;
    evl__waitq_wake_all(loop, &s->waiters, -ECANCELED);
    evl__free(loop, s);
}

struct evl_queue {
    void **items;
    size_t cap, head, len;
    evl__waitq getters, putters;   /* a waiting putter keeps its item in wait_item */
    int closed;                    /* evl_queue_close: no more puts; gets drain what is left */
};

int evl_queue_new(evl_loop *loop, evl_queue **out, size_t capacity) {
    evl_queue *q;
    EVL_ASSERT(loop);
    if (!out || capacity == 0 || capacity > ((size_t)-1) / sizeof(void *) / 2) return -EINVAL;
    q = (evl_queue *)evl__realloc(loop, NULL, sizeof *q);
    *out = q;
    if (!q) return -ENOMEM;
    memset(q, 0, sizeof *q);
    q->items = (void **)evl__realloc(loop, NULL, capacity * sizeof(void *));
    if (!q->items) {
        evl__free(loop, q);
        *out = NULL;
        return -ENOMEM;
    }
    q->cap = capacity;
    return 0;
}

static void evl__queue_append(evl_queue *q, void *item) {
    q->items[(q->head + q->len) % q->cap] = item;
    q->len++;
}

int evl_queue_try_put(evl_loop *loop, evl_queue *q, void *item) {
    EVL_ASSERT(loop);
    if (!q) return -EINVAL;
    if (q->closed) return -EPIPE;
    if (q->getters.head) {
        /* A getter waits, so the queue is empty: hand the item over directly. */
        evl__task_wake(loop, q->getters.head, 0, item, 0);
        return 0;
    }
    if (q->len == q->cap || q->putters.head) return -EAGAIN;
    evl__queue_append(q, item);
    return 0;
}

int evl_queue_put(evl_loop *loop, evl_queue *q, void *item) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!q) return -EINVAL;
    if ((err = evl__task_enter(loop, &t)) < 0) return err;
    if ((err = evl_queue_try_put(loop, q, item)) != -EAGAIN) return err;
    t->wait_item = item;
    return evl__task_suspend(loop, t, &q->putters);
}

int evl_queue_try_get(evl_loop *loop, evl_queue *q, void **item) {
    EVL_ASSERT(loop);
    if (!q || !item) return -EINVAL;
    if (q->len == 0) return q->closed ? -EPIPE : -EAGAIN;
    *item = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    if (q->putters.head) {
        /* Room now: the first waiting putter's item goes in, and it continues. */
        evl_task *p = q->putters.head;
        evl__queue_append(q, p->wait_item);
        evl__task_wake(loop, p, 0, NULL, 0);
    }
    return 0;
}

int evl_queue_get(evl_loop *loop, evl_queue *q, void **item) {
    evl_task *t;
    int err;
    EVL_ASSERT(loop);
    if (!q || !item) return -EINVAL;
    if ((err = evl__task_enter(loop, &t)) < 0) return err;
    if ((err = evl_queue_try_get(loop, q, item)) != -EAGAIN) return err;
    err = evl__task_suspend(loop, t, &q->getters);
    if (err == 0) *item = t->wake_value;
    return err;
}

size_t evl_queue_len(const evl_queue *q) {
    return q ? q->len : 0;
}

/* The end of a stream of items: waiting putters give up with -EPIPE (their items stay theirs),
   and getters are waiting only when nothing is left, so they hear -EPIPE too. */
void evl_queue_close(evl_loop *loop, evl_queue *q) {
    EVL_ASSERT(loop && q);
    q->closed = 1;
    evl__waitq_wake_all(loop, &q->putters, -EPIPE);
    evl__waitq_wake_all(loop, &q->getters, -EPIPE);
}

void evl_queue_free(evl_loop *loop, evl_queue *q) {
    if (!q) return;
    evl__waitq_wake_all(loop, &q->getters, -ECANCELED);
    evl__waitq_wake_all(loop, &q->putters, -ECANCELED);
    evl__free(loop, q->items);
    evl__free(loop, q);
}

/* ==== >>task I/O ==== */
/* Kept registrations. When a task is woken by its fd, the fd's registration stays with the
   backend, and if the same task waits on the same fd again before it suspends on anything
   else (read, write back, read again: the common case), the wait costs no system call. Until
   then only the task's own code runs, so the fd can have been closed and its number reused
   only by that code, without evl_close (which forgets the registration), and without an EOF,
   error or evl_accept in between (each of which forgets it too). Even then nothing hangs: a
   wait on a kept registration that no event has confirmed within EVL__KEPT_CHECK is
   registered from scratch, and a wakeup followed by EAGAIN (an event of an earlier file
   under the number) makes the next wait of that call register from scratch, which the
   backend's stale-event check then catches. The check is generous because a busy server's
   waits last milliseconds; it costs a kept wait that outlives it the one system call every
   wait cost before. */
#define EVL__KEPT_CHECK EVL_MSEC(100)

/* A task in a kept wait, as the ring holds it: the ring is only appended to and consumed from
   its head, so a wait that ends touches nothing but its own task (a list would write to its
   neighbours, other tasks' cold cache lines). An entry outlives the wait: the check finds out
   from the task whether it still waits, and from `id` whether the struct is still that task
   (a released struct is reused, never freed before the loop closes). */
typedef struct evl__kept {
    evl_task *task;
    unsigned long long id;
    evl_time since;
} evl__kept;

/* The ring's capacity is a power of two, as the ready deque's. */
static int evl__kept_push(evl_loop *loop, evl_task *t, evl_time since) {
    evl__kept *e;
    if (loop->kept_len == loop->kept_cap) {
        size_t i, cap = loop->kept_cap ? loop->kept_cap * 2 : 64;
        evl__kept *ring = (evl__kept *)evl__realloc(loop, NULL, cap * sizeof *ring);
        if (!ring) return -ENOMEM;
        for (i = 0; i < loop->kept_len; i++)
            ring[i] = loop->kept[(loop->kept_head + i) & (loop->kept_cap - 1)];
        evl__free(loop, loop->kept);
        loop->kept = ring;
        loop->kept_cap = cap;
        loop->kept_head = 0;
    }
    e = &loop->kept[(loop->kept_head + loop->kept_len++) & (loop->kept_cap - 1)];
    e->task = t;
    e->id = t->id;
    e->since = since;
    t->kept_queued = 1;
    return 0;
}

/* Marks t's wait as kept and unconfirmed; -ENOMEM when the ring cannot grow (the wait then
   registers from scratch instead). */
static int evl__kept_begin(evl_loop *loop, evl_task *t) {
    /* The ring's clock is read at each poll while the ring is not empty; an empty one's may
       be old. */
    if (!loop->kept_len) loop->kept_clock = evl__clock_read();
    if (!t->kept_queued && evl__kept_push(loop, t, loop->kept_clock) < 0) return -ENOMEM;
    t->kept_since = loop->kept_clock;
    t->kept_waiting = 1;
    return 0;
}

/* Before the poll: registers from scratch the kept waits no event has confirmed within
   EVL__KEPT_CHECK (within twice that for a task whose entry predates its wait), and returns
   the poll timeout shortened to the next entry due. */
static evl_time evl__kept_check(evl_loop *loop, evl_time timeout) {
    evl_time now = evl__clock_read(), left;
    loop->kept_clock = now;
    while (loop->kept_len) {
        evl__kept e = loop->kept[loop->kept_head];
        evl_task *t = e.task;
        evl__fd *s;
        int err;
        if (now - e.since < EVL__KEPT_CHECK) break;
        loop->kept_head = (loop->kept_head + 1) & (loop->kept_cap - 1);
        loop->kept_len--;
        if (t->id != e.id || t->state == EVL__T_FREE) continue; /* the struct moved on */
        t->kept_queued = 0;
        if (!t->kept_waiting) continue;
        if (now - t->kept_since < EVL__KEPT_CHECK) {
            if (evl__kept_push(loop, t, now) < 0) t->kept_waiting = 0; /* ring full: unchecked */
            continue;
        }
        t->kept_waiting = 0;
        s = &loop->fds[t->io.fd];
        err = loop->backend->modify(loop, t->io.fd, EVL__REG_UNKNOWN, s->registered);
        if (err == -EBADF) {
            /* Closed under the wait, which would never end: it ends now, as evl_close ends
               it, and the poll must not sleep before the task runs. */
            evl__task_wake(loop, t, -EBADF, NULL, 0);
            timeout = 0;
        } else if (err < 0 && evl__kept_push(loop, t, now) == 0) {
            t->kept_waiting = 1; /* out of memory: try again later */
        }
    }
    if (!loop->kept_len) return timeout;
    left = loop->kept[loop->kept_head].since + EVL__KEPT_CHECK - now;
    return timeout < 0 || timeout > left ? left : timeout;
}

/* Waits until fd has one of `events`. `keep`: the wait is task I/O's own, which may use the
   registration its last wakeup kept (when `keep` is 2) and keeps it when woken by the fd. */
static int evl__task_wait_fd(evl_loop *loop, evl_task *t, int fd, int events, int keep) {
    int err;
    /* A stopped watcher is as evl_io_init left it, but for its fd. */
    if (t->io.fd != fd || t->io.cb != evl__task_io_cb)
        (evl_io_init)(&t->io, fd, evl__task_io_cb, t);
    if (keep == 2 && t->kept_fd == fd + 1) {
        evl__fd *s = &loop->fds[fd];
        if (s->emptied && !s->watchers && !(events & ~s->registered) &&
            evl__kept_begin(loop, t) == 0)
            s->emptied = 0;
    }
    err = evl_io_start(loop, &t->io, events);
    if (err < 0) {
        t->kept_waiting = 0;
        return err;
    }
    err = evl__task_suspend(loop, t, NULL);
    t->kept_waiting = 0;
    if (keep && err > 0) t->kept_fd = fd + 1;
    return err;
}

int evl_wait_io(evl_loop *loop, int fd, int events) {
    evl_task *t;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    return evl__task_wait_fd(loop, t, fd, events, 0);
}

/* After a non-blocking call failed (errno set): 0 to try again (interrupted, or the fd became
   ready), else the error to return. `waited` says whether this call has waited already: a
   wakeup followed by EAGAIN may have been an earlier file's event, so the second wait
   registers from scratch. An error other than EAGAIN forgets the kept registration, since
   the fd is likely to be closed next. */
static int evl__io_retry(evl_loop *loop, evl_task *t, int fd, int events, int *waited) {
    int err;
    if (errno == EINTR) return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
        t->kept_fd = 0;
        return -errno;
    }
    err = evl__task_wait_fd(loop, t, fd, events, *waited ? 1 : 2);
    *waited = 1;
    return err < 0 ? err : 0;
}

/* Every task I/O call is a checkpoint (cancellation and deadline are checked first, even when
   the fd is ready), then tries the call and waits for readiness only on EAGAIN. The four
   transfers (read, write, recvfrom, sendto) each spell this loop out: one shared loop over a
   described operation cost 25 more instructions per call (callgrind: 64 -> 89 per call, for
   one-byte evl_write and evl_read in turn), on the path task I/O must keep as cheap as
   callbacks. */
/* A read that came back short on an fd the task has waited on (so one that can block: a
   socket, pipe or terminal) most likely emptied it, and the next read would fail with EAGAIN:
   until the task next suspends, the next evl_read on that fd waits for readiness first and
   saves that system call. Where the guess is wrong (data came meanwhile, a datagram socket)
   the backend reports the fd readable at once and the cost is one trip through the poll. */
ssize_t evl_read(evl_loop *loop, int fd, void *buf, size_t len) {
    evl_task *t;
    int waited = 0, err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    if (t->drained_fd == fd + 1) {
        if ((err = evl__task_wait_fd(loop, t, fd, EVL_READ, 2)) < 0) return err;
        waited = 1;
    }
    for (;;) {
        ssize_t n = evl__fault(EVL_FAULT_READ) ? -1 : read(fd, buf, len);
        if (n > 0) {
            if ((size_t)n < len && t->io.fd == fd && (t->io.events & EVL_READ))
                t->drained_fd = fd + 1;
            return n;
        }
        if (n == 0) {
            t->kept_fd = 0; /* EOF: the fd is likely to be closed next */
            return 0;
        }
        if ((err = evl__io_retry(loop, t, fd, EVL_READ, &waited)) < 0) return err;
    }
}

ssize_t evl_write(evl_loop *loop, int fd, const void *buf, size_t len) {
    evl_task *t;
    int waited = 0, err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    for (;;) {
        ssize_t n = evl__fault(EVL_FAULT_WRITE) ? -1 : write(fd, buf, len);
        if (n >= 0) return n;
        if ((err = evl__io_retry(loop, t, fd, EVL_WRITE, &waited)) < 0) return err;
    }
}

ssize_t evl_write_all(evl_loop *loop, int fd, const void *buf, size_t len) {
    const char *p = (const char *)buf;
    size_t done = 0;
    evl_task *t;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    while (done < len) {
        ssize_t n = evl_write(loop, fd, p + done, len - done);
        if (n < 0) return n;
        done += (size_t)n;
    }
    return (ssize_t)len;
}

int evl_accept(evl_loop *loop, int listen_fd, struct sockaddr *addr, socklen_t *len) {
    evl_task *t;
    int waited = 0, err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    for (;;) {
#ifdef __linux__
        int fd = evl__fault(EVL_FAULT_ACCEPT)
                     ? -1
                     : accept4(listen_fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
        int fd = evl__fault(EVL_FAULT_ACCEPT) ? -1 : accept(listen_fd, addr, len);
        if (fd >= 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
#endif
        if (fd >= 0) {
            if (t->kept_fd == fd + 1) t->kept_fd = 0; /* a new file under a kept number */
            return fd;
        }
        if (errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) {
            /* The process is out of fds: the caller gets the error, and the exception handler
               hears of it too (at most once a second), as asyncio logs it. */
            int e = -errno;
            evl_time now = evl_now(loop);
            if (now >= loop->accept_next_report) {
                loop->accept_next_report = evl__time_add(now, EVL_SEC(1));
                evl__report(loop, "accept failed: out of file descriptors", e, t);
            }
            return e;
        }
        if ((err = evl__io_retry(loop, t, listen_fd, EVL_READ, &waited)) < 0) return err;
    }
}

int evl_connect(evl_loop *loop, int fd, const struct sockaddr *addr, socklen_t len) {
    evl_task *t;
    int so_error = 0;
    socklen_t sl = sizeof so_error;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    if (!evl__fault(EVL_FAULT_CONNECT) && connect(fd, addr, len) == 0) return 0;
    if (errno != EINPROGRESS && errno != EINTR) return -errno;
    err = evl_wait_io(loop, fd, EVL_WRITE);
    if (err < 0) return err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &sl) < 0) return -errno;
    return -so_error;
}

ssize_t evl_recvfrom(evl_loop *loop, int fd, void *buf, size_t len, int flags,
                     struct sockaddr *addr, socklen_t *addrlen) {
    evl_task *t;
    int waited = 0, err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    for (;;) {
        ssize_t n = evl__fault(EVL_FAULT_READ) ? -1 : recvfrom(fd, buf, len, flags, addr, addrlen);
        if (n >= 0) return n;
        if ((err = evl__io_retry(loop, t, fd, EVL_READ, &waited)) < 0) return err;
    }
}

ssize_t evl_sendto(evl_loop *loop, int fd, const void *buf, size_t len, int flags,
                   const struct sockaddr *addr, socklen_t addrlen) {
    evl_task *t;
    int waited = 0, err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    for (;;) {
        ssize_t n = evl__fault(EVL_FAULT_WRITE) ? -1 : sendto(fd, buf, len, flags, addr, addrlen);
        if (n >= 0) return n;
        if ((err = evl__io_retry(loop, t, fd, EVL_WRITE, &waited)) < 0) return err;
    }
}

/* ==== >>tasks at close ==== */
/* Every task still alive is cancelled and gets a few non-blocking iterations to finish. */
static void evl__tasks_settle(evl_loop *loop) {
    evl_task *t;
    int i;
    for (t = loop->tasks; t; t = t->next)
        if (t->state != EVL__T_DONE) evl_task_cancel(loop, t);
    /* `running` keeps what the tasks' cleanup calls from re-entering the loop or closing it. */
    loop->running = 1;
    for (i = 0; i < 64 && loop->tasks_alive; i++) evl__iterate(loop, 0, 0);
    loop->running = 0;
}

static int evl__tasks_wait_on_jobs(const evl_loop *loop) {
    const evl_task *t;
    for (t = loop->tasks; t; t = t->next)
        if (t->job && t->state != EVL__T_DONE) return 1;
    return 0;
}

/* A task waiting for a running executor job (cancelled or shielded) cannot end before the job
   does: the loop waits for such jobs until `deadline`, so the tasks get their results and
   finish their cleanup. */
static void evl__tasks_wait_for_jobs(evl_loop *loop, evl_time deadline) {
    loop->running = 1;
    while (evl__tasks_wait_on_jobs(loop)) {
        evl_time left = deadline - evl__clock_read();
        if (left <= 0) break;
        evl__iterate(loop, left, 0);
    }
    loop->running = 0;
}

/* The tasks still alive now (they wait in a shield, ignore cancellation, or wait for a job
   that is stuck) are abandoned, and each is reported: its cleanup never runs. The stack of
   one whose job still runs goes to the job, which frees it when it returns. */
static void evl__tasks_abandon(evl_loop *loop) {
    evl_task *t;
    for (t = loop->tasks; t; t = t->next) {
        if (t->state == EVL__T_DONE) {
            if (t->result < 0)
                evl__report(loop, "joinable task freed without its result collected", t->result, t);
        } else if (t->job) {
#ifndef EVL_NO_THREADS
            evl__executor_keep_stack(t);
#endif
            evl__report(loop, "task abandoned by evl_loop_close while its executor job still "
                        "runs (its stack is freed when the job returns)", -ETIMEDOUT, t);
        } else {
            evl__report(loop, "task still running when the loop closed: abandoned, its cleanup "
                        "never runs", -ETIMEDOUT, t);
        }
    }
}

static void evl__tasks_free(evl_loop *loop) {
    evl_task *t;
    while ((t = loop->tasks) != NULL) {
        evl_timer_stop(loop, &t->sleep_timer);
        evl_timer_stop(loop, &t->deadline_timer);
        evl_io_stop(loop, &t->io);
        if (t->stack.base) evl__stack_put(loop, &t->stack, evl__ctx_sp(&t->ctx));
#ifdef EVL__TSAN
        if (t->state != EVL__T_DONE) evl__tsan_fiber_free(t->tsan_fiber);
#endif
        evl__task_release(loop, t);
    }
    while ((t = loop->task_free_head) != NULL) {
        loop->task_free_head = t->next;
        evl__free(loop, t);
    }
    loop->task_free_tail = NULL;
    evl__free(loop, loop->kept);
    loop->kept = NULL;
    loop->kept_head = loop->kept_len = loop->kept_cap = 0;
    evl__stacks_close(loop);
    evl__guard_teardown(loop);
}

/* evl_loop_close: the tasks, and the executors they may wait for, within one grace period
   (what is left of a shutdown's, if one ran). */
static void evl__tasks_close(evl_loop *loop) {
    evl_time deadline = loop->shutdown_state
                            ? loop->shutdown_deadline
                            : evl__time_add(evl__clock_read(), loop->shutdown_grace);
    /* The tasks' cleanup may not start executor jobs now: the pools are about to go. */
    loop->closing = 1;
    evl__tasks_settle(loop);
    evl__tasks_wait_for_jobs(loop, deadline);
#ifndef EVL_NO_THREADS
    evl__executors_shutdown(loop, deadline - evl__clock_read());
    evl__tasks_settle(loop); /* those the shutdown woke */
#endif
    evl__tasks_abandon(loop);
#ifndef EVL_NO_THREADS
    evl__executors_detach(loop);
#endif
    evl__tasks_free(loop);
}
#endif /* EVL_NO_TASKS */

/* ==== >>debug mode and the stall watchdog ==== */
/* In debug mode every callback and task step is timed, and one that runs past the slow
   threshold is reported with what it was and where it was registered. With a stall threshold,
   a watchdog thread watches the same steps and reports one that is still running past it,
   while the loop is stuck. Off, the drain tests one flag per callback and nothing else. */

/* A callback queued in debug mode travels with its registration site. */
typedef struct evl__sited {
    evl_cb cb;
    void *arg;
    const char *file;
    int line;
} evl__sited;

static void evl__sited_cb(evl_loop *loop, void *arg) {
    evl__sited rec = *(evl__sited *)arg;
    evl__free(loop, arg);
    rec.cb(loop, rec.arg);
}

/* "timer registered at x.c:12", or just "timer" when no site was recorded. */
static const char *evl__describe_site(char *buf, size_t size, const char *what, const char *file,
                                      int line) {
    if (file) snprintf(buf, size, "%s registered at %s:%d", what, file, line);
    else snprintf(buf, size, "%s", what);
    return buf;
}

static void evl__step_begin(evl_loop *loop, const char *what, const char *file, int line) {
    loop->step_t0 = evl__clock_read();
#ifndef EVL_NO_THREADS
    if (loop->watchdog_running) {
        __atomic_store_n(&loop->step_what, what, __ATOMIC_RELAXED);
        __atomic_store_n(&loop->step_file, file, __ATOMIC_RELAXED);
        __atomic_store_n(&loop->step_line, line, __ATOMIC_RELAXED);
        __atomic_add_fetch(&loop->step_seq, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&loop->step_started, loop->step_t0, __ATOMIC_RELEASE);
    }
#else
    (void)what;
    (void)file;
    (void)line;
#endif
}

static void evl__step_end(evl_loop *loop, const char *what, const char *file, int line) {
    evl_time took = evl__clock_read() - loop->step_t0;
#ifndef EVL_NO_THREADS
    if (loop->watchdog_running) __atomic_store_n(&loop->step_started, (evl_time)0, __ATOMIC_RELEASE);
#endif
    if (!loop->debug || took < loop->slow_threshold) return;
    loop->stats.slow_callbacks++;
    if (loop->slow_fn) {
        evl_slow_report r;
        r.what = what;
        r.file = file;
        r.line = line;
        r.duration = took;
        loop->slow_fn(loop, &r, loop->slow_ud);
    } else {
        char site[256];
        evl__log(loop, EVL_LOG_WARN, "evloop: slow %s took %.1f ms",
                 evl__describe_site(site, sizeof site, what, file, line), (double)took / 1e6);
    }
}

/* What a job of the ready deque is, for reports: a task step, a sited callback, or a plain
   callback. */
static void evl__measured_job(evl_loop *loop, evl__job j) {
    const char *what = "callback", *file = NULL;
    int line = 0;
#ifndef EVL_NO_TASKS
    if (j.cb == evl__task_run_cb) {
        evl_task *t = (evl_task *)j.arg;
        what = evl_task_name(t);
        file = t->file;
        line = t->line;
    }
#endif
    if (j.cb == evl__sited_cb) {
        file = ((evl__sited *)j.arg)->file;
        line = ((evl__sited *)j.arg)->line;
    }
    evl__step_begin(loop, what, file, line);
    j.cb(loop, j.arg);
    evl__step_end(loop, what, file, line);
}

static void evl__measured_io(evl_loop *loop, evl_io *w, int events) {
    const char *what = "I/O watcher", *file = w->file;
    int line = w->line;
#ifndef EVL_NO_TASKS
    if (w->cb == evl__task_io_cb) {
        evl_task *t = (evl_task *)w->arg;
        what = evl_task_name(t);
        file = t->file;
        line = t->line;
    }
#endif
    evl__step_begin(loop, what, file, line);
    w->cb(loop, w->arg, events);
    evl__step_end(loop, what, file, line);
}

static void evl__measured_timer(evl_loop *loop, evl_timer *t) {
    const char *what = "timer", *file = t->file;
    int line = t->line;
#ifndef EVL_NO_TASKS
    if (t->cb == evl__task_timer_cb || t->cb == evl__task_deadline_cb) {
        evl_task *task = (evl_task *)t->arg;
        what = evl_task_name(task);
        file = task->file;
        line = task->line;
    }
#endif
    evl__step_begin(loop, what, file, line);
    t->cb(loop, t->arg);
    evl__step_end(loop, what, file, line);
}

static void evl__measure_update(evl_loop *loop) {
#ifndef EVL_NO_THREADS
    loop->measure = loop->debug || loop->watchdog_running;
#else
    loop->measure = loop->debug;
#endif
}

void evl_set_slow_callback(evl_loop *loop, evl_time threshold, evl_slow_fn fn, void *ud) {
    EVL_ASSERT(loop);
    loop->slow_threshold = threshold > 0 ? threshold : EVL_MSEC(100);
    loop->slow_fn = fn;
    loop->slow_ud = ud;
}

#ifndef EVL_NO_THREADS
/* The watchdog wakes four times per threshold and reports each stuck step once. It reads
   only what the loop published with atomics; a task's name is read from the task itself,
   which the loop keeps allocated until close (the watchdog is stopped before that). */
static void *evl__watchdog_main(void *arg) {
    evl_loop *loop = (evl_loop *)arg;
    unsigned reported = 0;
    pthread_mutex_lock(&loop->watchdog_lock);
    while (!loop->watchdog_stop) {
        struct timespec until;
        evl_time started, wake = evl__clock_read() + loop->stall_threshold / 4, real;
        unsigned seq;
        until.tv_sec = (time_t)(wake / 1000000000);
        until.tv_nsec = (long)(wake % 1000000000);
        pthread_cond_timedwait(&loop->watchdog_cond, &loop->watchdog_lock, &until);
        if (loop->watchdog_stop) break;
        started = __atomic_load_n(&loop->step_started, __ATOMIC_ACQUIRE);
        seq = __atomic_load_n(&loop->step_seq, __ATOMIC_RELAXED);
        real = evl__clock_read();
        if (!started || seq == reported || real - started < loop->stall_threshold) continue;
        reported = seq;
        __atomic_add_fetch(&loop->stalls, 1, __ATOMIC_RELAXED);
        {
            const char *what = __atomic_load_n(&loop->step_what, __ATOMIC_RELAXED);
            const char *file = __atomic_load_n(&loop->step_file, __ATOMIC_RELAXED);
            int line = __atomic_load_n(&loop->step_line, __ATOMIC_RELAXED);
            char site[256];
            evl__log(loop, EVL_LOG_WARN, "evloop: loop stalled: %s has been running for %.0f ms "
                     "and has not returned", evl__describe_site(site, sizeof site, what, file, line),
                     (double)(real - started) / 1e6);
        }
    }
    pthread_mutex_unlock(&loop->watchdog_lock);
    return NULL;
}

/* The watchdog runs on the monotonic clock: pthread_cond_timedwait must use it too. */
static int evl__watchdog_start(evl_loop *loop) {
    pthread_condattr_t attr;
    int err;
    if (pthread_mutex_init(&loop->watchdog_lock, NULL) != 0) return -ENOMEM;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    err = pthread_cond_init(&loop->watchdog_cond, &attr);
    pthread_condattr_destroy(&attr);
    if (err != 0) {
        pthread_mutex_destroy(&loop->watchdog_lock);
        return -err;
    }
    err = evl__fault(EVL_FAULT_THREAD)
              ? errno
              : pthread_create(&loop->watchdog, NULL, evl__watchdog_main, loop);
    if (err != 0) {
        pthread_cond_destroy(&loop->watchdog_cond);
        pthread_mutex_destroy(&loop->watchdog_lock);
        return -err;
    }
    loop->watchdog_running = 1;
    evl__measure_update(loop);
    return 0;
}

static void evl__watchdog_stop(evl_loop *loop) {
    if (!loop->watchdog_running) return;
    pthread_mutex_lock(&loop->watchdog_lock);
    loop->watchdog_stop = 1;
    pthread_cond_signal(&loop->watchdog_cond);
    pthread_mutex_unlock(&loop->watchdog_lock);
    pthread_join(loop->watchdog, NULL);
    pthread_cond_destroy(&loop->watchdog_cond);
    pthread_mutex_destroy(&loop->watchdog_lock);
    loop->watchdog_running = 0;
    evl__measure_update(loop);
}
#endif

void evl_loop_stats(const evl_loop *loop, evl_stats *out) {
    EVL_ASSERT(loop && out);
    *out = loop->stats;
#ifndef EVL_NO_THREADS
    out->stalls = __atomic_load_n(&loop->stalls, __ATOMIC_RELAXED);
#endif
    out->timers = evl__heap_count(loop);
    out->fds = loop->fds_watched - (loop->wake_io.active ? 1 : 0);
#ifndef EVL_NO_TASKS
    out->tasks_alive = loop->tasks_alive;
#endif
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    out->executor_queue = out->executor_busy = 0;
    evl__executor_gauges(loop, out);
#endif
}

/* ==== >>loop ==== */
void evl_config_init(evl_config *cfg) {
    memset(cfg, 0, sizeof *cfg); /* zero is the default of every field */
}

static int evl__debug_from_env(void) {
    const char *s = getenv("EVLOOP_DEBUG");
    return s && *s && strcmp(s, "0") != 0;
}

/* Every default in one place (zero, or NULL, always means the default): `out` is what the
   loop runs with. `debug` comes out 0 or 1; the sizes and times come out positive. */
static void evl__config_resolve(const evl_config *cfg, evl_config *out) {
    if (cfg) *out = *cfg;
    else memset(out, 0, sizeof *out);
    if (out->debug == EVL_DEBUG_ON) out->debug = 1;
    else if (out->debug == EVL_DEBUG_OFF) out->debug = 0;
    else out->debug = evl__debug_from_env(); /* EVL_DEBUG_FROM_ENV, and -1 as before 0.2 */
    if (!out->alloc) out->alloc = evl__default_alloc;
    if (!out->log) out->log = evl__log_default;
    if (out->stack_size == 0) out->stack_size = (size_t)128 * 1024;
    if (out->executor_threads < 0) out->executor_threads = 0; /* the pool sizes itself */
    if (out->executor_queue < 0) out->executor_queue = 0;
    if (out->shutdown_grace <= 0) out->shutdown_grace = EVL_SEC(25);
    if (out->stall_threshold < 0) out->stall_threshold = 0;
}

int evl_loop_new(evl_loop **out, const evl_config *given) {
    evl_config c;
    const evl_config *cfg = &c;
    const evl__backend *backend;
    evl_loop *loop;
    int err;
    if (!out) return -EINVAL;
    *out = NULL;
    evl__config_resolve(given, &c);
    err = evl__backend_choose(cfg->backend, &backend);
    if (err < 0) return err;
    loop = (evl_loop *)cfg->alloc(cfg->alloc_ud, NULL, sizeof *loop);
    if (!loop) return -ENOMEM;
    memset(loop, 0, sizeof *loop);
    loop->alloc = cfg->alloc;
    loop->alloc_ud = cfg->alloc_ud;
    loop->backend = backend;
    loop->debug = cfg->debug;
    loop->log_fn = cfg->log;
    loop->log_ud = cfg->log_ud;
    loop->slow_threshold = EVL_MSEC(100);
    loop->virtual_clock = cfg->clock == EVL_CLOCK_VIRTUAL;
#ifndef EVL_NO_THREADS
    loop->stall_threshold = cfg->stall_threshold;
#endif
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    loop->executor_threads = cfg->executor_threads;
    loop->executor_queue = cfg->executor_queue;
#endif
    loop->shutdown_grace = cfg->shutdown_grace;
#ifndef EVL_NO_TASKS
    loop->page_size = evl__page_size();
    loop->stack_size = (cfg->stack_size + loop->page_size - 1) / loop->page_size * loop->page_size;
    loop->stack_guard = cfg->stack_guard < 0 ? EVL__GUARD_NONE
                                              : evl__stack_guard_kind(loop->page_size);
#endif
    loop->wake_rfd = loop->wake_wfd = -1;
#ifndef EVL_NO_THREADS
    if (pthread_mutex_init(&loop->inbox_lock, NULL) != 0) {
        cfg->alloc(cfg->alloc_ud, loop, 0);
        return -ENOMEM;
    }
#endif
    err = backend->init(loop);
    if (err == 0) err = evl__wakeup_open(loop);
    if (err == 0) {
        (evl_io_init)(&loop->wake_io, loop->wake_rfd, evl__wakeup_cb, NULL);
        err = evl_io_start(loop, &loop->wake_io, EVL_READ);
    }
#ifndef EVL_NO_THREADS
    if (err == 0 && cfg->stall_threshold > 0) err = evl__watchdog_start(loop);
#endif
    if (err < 0) {
        evl_loop_close(loop);
        return err;
    }
    evl__measure_update(loop);
#ifndef EVL_NO_THREADS
    loop->owner_known = 0; /* set-up above was ours: the loop's owner is its first user */
#endif
    *out = loop;
    return 0;
}

/* The loop's own handles (task internals, the wakeup) are not the user's business at close. */
static int evl__timer_is_internal(const evl_timer *t) {
#ifndef EVL_NO_TASKS
    return t->cb == evl__task_timer_cb || t->cb == evl__task_deadline_cb;
#else
    (void)t;
    return 0;
#endif
}

static int evl__io_is_internal(const evl_loop *loop, const evl_io *w) {
#ifndef EVL_NO_TASKS
    if (w->cb == evl__task_io_cb) return 1;
#endif
    return w == &loop->wake_io;
}

/* Wakes the tasks waiting on fd with -EBADF, stops its watchers and drops its registration,
   then closes it: the kernel would drop a closed fd from an epoll set without a word, and a
   task waiting on it would sleep forever. */
int evl_close(evl_loop *loop, int fd) {
    EVL_ASSERT(loop);
    if (fd < 0) return -EBADF;
    if (loop->debug && evl__foreign_thread(loop, "evl_close")) return -EPERM;
    if (fd < loop->fds_cap) {
        evl__fd *s = &loop->fds[fd];
        evl_io *w;
        while ((w = s->watchers) != NULL) {
            evl_io_stop(loop, w);
#ifndef EVL_NO_TASKS
            if (w->cb == evl__task_io_cb) evl__task_wake(loop, (evl_task *)w->arg, -EBADF, NULL, 0);
#endif
        }
        if (s->registered) loop->backend->modify(loop, fd, s->registered, 0);
        s->registered = 0;
        s->emptied = 0;
    }
    return close(fd) < 0 ? -errno : 0;
}

static int evl__job_is_internal(evl__job j) {
#ifndef EVL_NO_TASKS
    return j.cb == evl__task_run_cb;
#else
    (void)j;
    return 0;
#endif
}

/* At close, before tasks get their last iterations: the user's timers and watchers stop and
   the user's queued callbacks and posts are dropped, never run. */
static void evl__drop_user_work(evl_loop *loop) {
    evl__batch posts;
    size_t i = 0, n;
    int fd;
    while (i < evl__heap_count(loop)) {
        evl_timer *t = evl__heap_timer(loop, i);
        if (evl__timer_is_internal(t)) i++;
        else evl__heap_remove(loop, t); /* the last entry moved to i: look at i again */
    }
    for (fd = 0; fd < loop->fds_cap; fd++) {
        evl_io *w = loop->fds[fd].watchers;
        while (w) {
            evl_io *next = w->next;
            if (!evl__io_is_internal(loop, w)) evl_io_stop(loop, w);
            w = next;
        }
    }
    for (n = loop->ready.count; n > 0; n--) {
        evl__job j = evl__ring_pop(&loop->ready);
        if (evl__job_is_internal(j)) evl__ring_put(loop, j.cb, j.arg);
        else if (j.cb == evl__sited_cb) evl__free(loop, j.arg);
    }
    evl__inbox_take(loop, &posts);
    if (posts.jobs) {
        evl__free(loop, loop->inbox_spare);
        loop->inbox_spare = posts.jobs;
        loop->inbox_spare_cap = posts.cap;
    }
}

/* Debug mode: what is still alive at close is a leak in the making; say what. */
static void evl__report_leftovers(evl_loop *loop) {
    size_t timers = 0, watchers = 0, queued = 0, i;
    int fd;
    const evl_io *w;
    for (i = 0; i < evl__heap_count(loop); i++) timers += !evl__timer_is_internal(evl__heap_timer(loop, i));
    for (fd = 0; fd < loop->fds_cap; fd++)
        for (w = loop->fds[fd].watchers; w; w = w->next) watchers += !evl__io_is_internal(loop, w);
    for (i = 0; i < loop->ready.count; i++)
        queued += !evl__job_is_internal(loop->ready.jobs[(loop->ready.head + i) & (loop->ready.cap - 1)]);
    if (timers || watchers || queued)
        evl__log(loop, EVL_LOG_WARN, "evloop: closing with %zu active timer(s), %zu active I/O "
                 "watcher(s) and %zu queued callback(s) (stopped and dropped)", timers, watchers,
                 queued);
}

int evl_loop_close(evl_loop *loop) {
    int fd;
    size_t i;
    EVL_ASSERT(loop);
    if (loop->running) return -EDEADLK;
#ifndef EVL_NO_THREADS
    /* Nothing runs the loop now: whoever closes it owns it (debug-mode checks). */
    loop->owner = pthread_self();
    loop->owner_known = 1;
    evl__watchdog_stop(loop);
#endif
#ifndef EVL_NO_SIGNALS
    evl__signals_close(loop);
#endif
    evl_timer_stop(loop, &loop->shutdown_timer);
    if (loop->debug) evl__report_leftovers(loop);
    evl__drop_user_work(loop);
#ifndef EVL_NO_TASKS
    if (loop->backend_data) evl__tasks_close(loop);
#endif
    evl__close_hooks_run(loop);
    /* Callbacks queued in debug mode own a record: free those that will never run. */
    while (loop->ready.count) {
        evl__job j = evl__ring_pop(&loop->ready);
        if (j.cb == evl__sited_cb) evl__free(loop, j.arg);
    }
    /* Stop every handle still active so the caller's structs read as inactive afterwards. */
    for (i = 0; i < evl__heap_count(loop); i++) evl__heap_timer(loop, i)->slot = 0;
    for (fd = 0; fd < loop->fds_cap; fd++) {
        evl_io *w = loop->fds[fd].watchers;
        while (w) {
            evl_io *next = w->next;
            w->next = NULL;
            w->active = 0;
            w->pending = 0;
            w->revents = 0;
            w = next;
        }
    }
    if (loop->backend_data) loop->backend->destroy(loop);
    evl__wakeup_close(loop);
#ifndef EVL_NO_THREADS
    pthread_mutex_destroy(&loop->inbox_lock);
#endif
    evl__free(loop, loop->ready.jobs);
    evl__free(loop, loop->heap);
    evl__free(loop, loop->fds);
    evl__free(loop, loop->changes);
    evl__free(loop, loop->pending);
    evl__free(loop, loop->inbox);
    evl__free(loop, loop->inbox_spare);
    evl__free(loop, loop->shutdown_hooks);
    evl__free(loop, loop->close_hooks);
    loop->alloc(loop->alloc_ud, loop, 0);
    return 0;
}

const char *evl_backend_name(const evl_loop *loop) {
    EVL_ASSERT(loop);
    return loop->backend->name;
}

evl_time evl_now(const evl_loop *loop) {
    EVL_ASSERT(loop);
    if (!loop->now_valid) evl__time_update((evl_loop *)loop); /* the cache is logically const */
    return loop->now;
}

void evl_now_update(evl_loop *loop) {
    EVL_ASSERT(loop);
    evl__time_update(loop);
}

void evl_set_debug(evl_loop *loop, int on) {
    EVL_ASSERT(loop);
    loop->debug = on != 0;
    evl__measure_update(loop);
}

int evl_get_debug(const evl_loop *loop) {
    EVL_ASSERT(loop);
    return loop->debug;
}

int evl_call_soon_at(evl_loop *loop, evl_cb cb, void *arg, const char *file, int line) {
    EVL_ASSERT(loop);
    if (!cb) return -EINVAL;
    if (loop->debug && evl__foreign_thread(loop, "evl_call_soon")) return -EPERM;
    if (loop->ready.count + loop->ring_reserved >= loop->ready.cap && evl__ring_fit(loop, 1) < 0)
        return -ENOMEM;
    if (loop->debug && file) {
        /* Debug mode: keep the site with the callback (without memory, go without it). */
        evl__sited *rec = (evl__sited *)evl__realloc(loop, NULL, sizeof *rec);
        if (rec) {
            rec->cb = cb;
            rec->arg = arg;
            rec->file = file;
            rec->line = line;
            cb = evl__sited_cb;
            arg = rec;
        }
    }
    evl__ring_put(loop, cb, arg);
    return 0;
}

int (evl_call_soon)(evl_loop *loop, evl_cb cb, void *arg) {
    return evl_call_soon_at(loop, cb, arg, NULL, 0);
}

void evl_stop(evl_loop *loop) {
    EVL_ASSERT(loop);
    __atomic_store_n(&loop->stop_requested, 1, __ATOMIC_SEQ_CST);
    evl__wakeup_signal(loop);
}

void evl_loop_ref(evl_loop *loop) {
    EVL_ASSERT(loop);
    __atomic_add_fetch(&loop->refs, 1, __ATOMIC_SEQ_CST);
}

void evl_loop_unref(evl_loop *loop) {
    EVL_ASSERT(loop);
    /* The last hold may be what keeps evl_run waiting: wake it to look again. */
    if (__atomic_sub_fetch(&loop->refs, 1, __ATOMIC_SEQ_CST) == 0) evl__wakeup_signal(loop);
}

/* Something is left to wait for: evl_run keeps going. */
static int evl__loop_alive(evl_loop *loop) {
#ifndef EVL_NO_TASKS
    if (loop->tasks_alive) return 1;
#endif
#ifndef EVL_NO_SIGNALS
    if (__atomic_load_n(&loop->signals_active, __ATOMIC_SEQ_CST)) return 1;
#endif
    return loop->ready.count || evl__heap_count(loop) || loop->io_active || loop->jobs_in_flight ||
           __atomic_load_n(&loop->refs, __ATOMIC_SEQ_CST) ||
           __atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST);
}

/* The poll timeout for this iteration: 0 when there is work already, else until the first
   timer, capped by max_wait (negative: no cap). -1 means forever. */
static evl_time evl__poll_timeout(evl_loop *loop, evl_time max_wait) {
    evl_time t = max_wait < 0 ? EVL_FOREVER : max_wait;
    if (t == 0 || loop->ready.count || __atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST) ||
        __atomic_load_n(&loop->async_pending, __ATOMIC_SEQ_CST))
        return 0;
    if (evl__heap_count(loop)) {
        evl_time due;
        evl__time_update(loop);
        due = evl__heap_first(loop) - loop->now;
        if (due < t) t = due < 0 ? 0 : due;
    }
    return t == EVL_FOREVER ? -1 : t;
}

/* Polls the backend. Before a blocking poll the loop announces that it sleeps and then looks
   once more for posts, a stop, or (in evl_run) nothing left to wait for; see >>wakeup. A
   zero-timeout poll is skipped when no user fd is registered: the only fd left is the wakeup,
   and everything it could announce is read from atomics anyway. */
static int evl__loop_poll(evl_loop *loop, evl_time timeout, int exit_when_idle) {
    int err;
    if (timeout == 0 && loop->io_active == 0) return 0;
    if (timeout != 0) {
        /* An exchange, not a plain store: a read-modify-write is a full barrier however the
           CPU or an emulator implements the orderings, so this store cannot pass the loads
           below it (a lost-wakeup test once failed under qemu-aarch64 with a store here). It
           costs nothing beside the poll's system call. */
        __atomic_exchange_n(&loop->sleeping, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&loop->inbox_count, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&loop->stop_requested, __ATOMIC_SEQ_CST) ||
            __atomic_load_n(&loop->async_pending, __ATOMIC_SEQ_CST) ||
            (exit_when_idle && !evl__loop_alive(loop)))
            timeout = 0;
    }
    err = loop->backend->poll(loop, timeout);
    __atomic_store_n(&loop->sleeping, 0, __ATOMIC_SEQ_CST);
    return err;
}

/* Runs the first n queued callbacks (those queued before the drain began). */
static int evl__drain_ready(evl_loop *loop, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        evl__job j = evl__ring_pop(&loop->ready);
        if (loop->measure) evl__measured_job(loop, j);
        else j.cb(loop, j.arg);
    }
    return (int)n;
}

/* True when the next iteration would do nothing but run queued callbacks: no fd to poll,
   no timer, no post, nothing from an executor or a signal, no stop, no change to apply.
   evl_run then runs the drain without the rest of the iteration, which is exactly what the
   iteration would have done (the zero-timeout poll is skipped when no fd is watched). */
static int evl__only_callbacks(evl_loop *loop) {
    return loop->ready.count && !loop->io_active && !evl__heap_count(loop) && !loop->changes_len &&
           !__atomic_load_n(&loop->inbox_count, __ATOMIC_RELAXED) &&
           !__atomic_load_n(&loop->async_pending, __ATOMIC_RELAXED) &&
           !__atomic_load_n(&loop->stop_requested, __ATOMIC_RELAXED);
}

/* Everything other threads and signal handlers hand to the loop outside the post queue. */
static void evl__async_dispatch(evl_loop *loop) {
    /* A plain load first: the locked exchange only when there is something to take. */
    if (!__atomic_load_n(&loop->async_pending, __ATOMIC_RELAXED) ||
        !__atomic_exchange_n(&loop->async_pending, 0, __ATOMIC_SEQ_CST))
        return;
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    evl__executors_drain(loop);
#endif
#ifndef EVL_NO_SIGNALS
    evl__signals_dispatch(loop);
#endif
}

/* One iteration; returns the callbacks run or a negative errno from the backend. */
static int evl__iterate(evl_loop *loop, evl_time max_wait, int exit_when_idle) {
    evl__batch posts;
    evl_time timeout = evl__poll_timeout(loop, max_wait);
    uint64_t batch;
    int err, ran;
    loop->stats.iterations++;
    if (loop->virtual_clock && timeout != 0 && (evl__heap_count(loop) || timeout > 0)) {
        /* Virtual time: instead of sleeping, jump to the first timer (or to max_wait). Only
           a wait with neither blocks for real (for posts from other threads). */
        evl_time to = evl__heap_first(loop);
        if (timeout > 0 && timeout < to - loop->virtual_now) to = loop->virtual_now + timeout;
        if (to > loop->virtual_now) loop->virtual_now = to;
        timeout = 0;
    }
#ifndef EVL_NO_TASKS
    if (loop->kept_len) timeout = evl__kept_check(loop, timeout);
#endif
    if (loop->changes_len) evl__fd_flush_changes(loop);
    err = evl__loop_poll(loop, timeout, exit_when_idle);
    if (err < 0) return err;
    /* The timers need the time now; anything else reads the clock on demand (evl_now,
       evl_timer_start), so a loop busy with callbacks alone never pays for it. */
    if (evl__heap_count(loop)) evl__time_update(loop);
    else loop->now_valid = 0;
    /* The drain: what was queued before it began (callbacks, then posts from other threads),
       then I/O, then the due timers. Whatever these queue runs in the next iteration. */
    evl__inbox_take(loop, &posts);
    evl__async_dispatch(loop);
    batch = loop->timer_seq;
    ran = evl__drain_ready(loop, loop->ready.count);
    if (posts.len) ran += evl__batch_run(loop, &posts);
    if (loop->pending_len) ran += evl__io_dispatch(loop);
    if (evl__heap_count(loop)) ran += evl__timers_dispatch(loop, batch);
    loop->stats.callbacks += (uint64_t)ran;
    return ran;
}

/* A backend failure ends evl_run with its error, and the exception handler hears of it. */
static int evl__run_begin(evl_loop *loop) {
    if (loop->running) return -EBUSY;
    loop->running = 1;
#ifndef EVL_NO_THREADS
    loop->owner = pthread_self();
    loop->owner_known = 1;
#endif
    return 0;
}

static int evl__run_end(evl_loop *loop, int err) {
    loop->running = 0;
    loop->now_valid = 0; /* whatever the caller does next, it starts from a fresh clock */
    if (err < 0) {
        evl_exception e;
        memset(&e, 0, sizeof e);
        e.message = "backend poll failed";
        e.error = err;
        evl_call_exception_handler(loop, &e);
    }
    return err;
}

int evl_run_once(evl_loop *loop, evl_time max_wait) {
    int err;
    EVL_ASSERT(loop);
    if ((err = evl__run_begin(loop)) < 0) return err;
    err = evl__iterate(loop, max_wait, 0);
    /* A stop asked for before or during this iteration has been honoured: the iteration was
       the only one. Left set, it would make every later poll a zero-timeout one (a busy loop;
       a virtual clock that never moves) until some evl_run consumed it. libuv's uv_run clears
       its stop flag the same way in every mode. */
    __atomic_store_n(&loop->stop_requested, 0, __ATOMIC_SEQ_CST);
    return evl__run_end(loop, err);
}

int evl_run(evl_loop *loop) {
    int err = 0;
    EVL_ASSERT(loop);
    if ((err = evl__run_begin(loop)) < 0) return err;
    while (evl__loop_alive(loop)) {
        if (evl__only_callbacks(loop)) {
            int ran = evl__drain_ready(loop, loop->ready.count);
            loop->now_valid = 0;
            loop->stats.iterations++;
            loop->stats.callbacks += (uint64_t)ran;
        } else {
            err = evl__iterate(loop, EVL_FOREVER, 1);
            if (err < 0) break;
        }
        if (__atomic_load_n(&loop->stop_requested, __ATOMIC_RELAXED) &&
            __atomic_exchange_n(&loop->stop_requested, 0, __ATOMIC_SEQ_CST))
            break;
        err = 0;
    }
    if (err > 0) err = 0;
    __atomic_store_n(&loop->stop_requested, 0, __ATOMIC_SEQ_CST);
    return evl__run_end(loop, err);
}

/* ==== >>executor ==== */
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
/* A job travels from the loop to a worker and back. Workers touch only `state`, `result` and
   `cancelled` of a job (under the pool's lock, or atomically) and the done list; everything
   else belongs to the loop thread. Whatever a job was handed (its arg, and through it memory
   such as a task's stack) stays untouched by the library until the job has returned: a task
   waits for its job even when cancelled, a cancelled future completes when its job returns,
   and a stack whose task the loop abandons at close is handed to the job and freed with it. A
   job nobody waits for any more is "orphaned": whoever sees it return frees it. */
enum { EVL__JOB_QUEUED, EVL__JOB_RUNNING, EVL__JOB_DONE };

typedef struct evl__xjob {
    struct evl__xjob *next;          /* in the queue, or in the done list */
    struct evl__xjob *fnext, *fprev; /* in the pool's in-flight list (loop thread) */
    evl_executor *ex;
    evl_work_fn fn;
    void *arg, *result;
    int state;
    int cancelled;                   /* atomic: its waiter gave up; evl_executor_cancelled */
    int orphaned;                    /* nobody wants the result: free on completion */
    int delivered;                   /* the result went to the waiting task, which frees it */
    evl_future *future;              /* evl_executor_submit */
    evl_task *waiter;                /* evl_executor_run */
    evl__stack held;                 /* an abandoned task's stack: freed when the job returns */
} evl__xjob;

/* A pool's link to its loop, `loop`, is cut (under the lock) when the loop closes while jobs
   still run: the workers then free what they finish, and the last one frees the pool. */
struct evl_executor {
    evl_loop *loop;                  /* NULL once detached (read by workers under the lock) */
    pthread_mutex_t lock;
    pthread_cond_t work;             /* workers wait here for jobs */
    pthread_cond_t exited;           /* shutdown waits here for the workers to leave */
    evl__xjob *qhead, *qtail, *done;
    size_t qlen, qmax;
    int threads_max, threads, idle, busy;
    int stopping, notified;
    int abandoned;                   /* loop thread: shut down with jobs still running */
    evl__waitq room;                 /* tasks waiting for queue room (loop thread) */
    evl__xjob *in_flight;            /* loop thread: every job not yet completed */
    evl_executor *next;              /* the loop's pools, or its abandoned ones */
    evl_alloc_fn alloc;              /* the loop's allocator, for a pool that outlives it */
    void *alloc_ud;
};

/* The job this worker thread runs now, for evl_executor_cancelled. */
static __thread evl__xjob *evl__job_current;

int evl_executor_cancelled(void) {
    evl__xjob *j = evl__job_current;
    return j && __atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE);
}

/* Frees a job (and a stack it was handed) with its pool's copy of the allocator, which works
   on a worker thread and after the loop is gone. */
static void evl__job_free(evl_executor *ex, evl__xjob *j) {
    if (j->held.base) evl__stack_release(ex->alloc, ex->alloc_ud, &j->held);
    ex->alloc(ex->alloc_ud, j, 0);
}

static void evl__executor_destroy(evl_executor *ex) {
    pthread_cond_destroy(&ex->work);
    pthread_cond_destroy(&ex->exited);
    pthread_mutex_destroy(&ex->lock);
    ex->alloc(ex->alloc_ud, ex, 0);
}

/* Runs under the lock: hands a returned job to the loop, one wakeup per batch (the loop
   clears `notified` when it drains), or frees it when the loop is gone. */
static void evl__worker_finish(evl_executor *ex, evl__xjob *j) {
    j->state = EVL__JOB_DONE;
    if (!ex->loop) {
        evl__job_free(ex, j);
        return;
    }
    j->next = ex->done;
    ex->done = j;
    if (!ex->notified) {
        ex->notified = 1;
        __atomic_store_n(&ex->loop->async_pending, 1, __ATOMIC_SEQ_CST);
        evl__wakeup_signal(ex->loop);
    }
}

static void *evl__worker_main(void *arg) {
    evl_executor *ex = (evl_executor *)arg;
    int last_of_detached;
    pthread_mutex_lock(&ex->lock);
    for (;;) {
        evl__xjob *j;
        while (!ex->qhead && !ex->stopping) {
            ex->idle++;
            pthread_cond_wait(&ex->work, &ex->lock);
            ex->idle--;
        }
        if (!ex->qhead) break;
        j = ex->qhead;
        ex->qhead = j->next;
        if (!ex->qhead) ex->qtail = NULL;
        ex->qlen--;
        j->state = EVL__JOB_RUNNING;
        ex->busy++;
        pthread_mutex_unlock(&ex->lock);
        evl__job_current = j;
        j->result = j->fn(j->arg);
        evl__job_current = NULL;
        pthread_mutex_lock(&ex->lock);
        ex->busy--;
        evl__worker_finish(ex, j);
    }
    ex->threads--;
    last_of_detached = !ex->loop && ex->threads == 0;
    pthread_cond_broadcast(&ex->exited);
    pthread_mutex_unlock(&ex->lock);
    if (last_of_detached) evl__executor_destroy(ex);
    return NULL;
}

static int evl__ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The pool's lock and conditions; `exited` times out on the monotonic clock, as the shutdown
   deadline does. */
static int evl__executor_sync_init(evl_executor *ex) {
    pthread_condattr_t attr;
    int ok;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    ok = pthread_mutex_init(&ex->lock, NULL) == 0 && pthread_cond_init(&ex->work, NULL) == 0 &&
         pthread_cond_init(&ex->exited, &attr) == 0;
    pthread_condattr_destroy(&attr);
    return ok ? 0 : -ENOMEM;
}

int evl_executor_new(evl_loop *loop, evl_executor **out, int threads, int queue) {
    evl_executor *ex;
    EVL_ASSERT(loop);
    if (!out || threads < 0 || queue < 0) return -EINVAL;
    *out = NULL;
    ex = (evl_executor *)evl__realloc(loop, NULL, sizeof *ex);
    if (!ex) return -ENOMEM;
    memset(ex, 0, sizeof *ex);
    ex->loop = loop;
    ex->alloc = loop->alloc;
    ex->alloc_ud = loop->alloc_ud;
    ex->threads_max = threads ? threads : (evl__ncpu() + 4 < 32 ? evl__ncpu() + 4 : 32);
    ex->qmax = queue ? (size_t)queue : 1024;
    if (evl__executor_sync_init(ex) < 0) {
        evl__free(loop, ex);
        return -ENOMEM;
    }
    ex->next = loop->executors;
    loop->executors = ex;
    *out = ex;
    return 0;
}

/* The default pool, created on first use with the loop's configuration. */
static int evl__default_executor(evl_loop *loop, evl_executor **out) {
    if (loop->closing) return -ESHUTDOWN;
    if (!loop->default_executor) {
        int err = evl_executor_new(loop, &loop->default_executor, loop->executor_threads,
                                   loop->executor_queue);
        if (err < 0) return err;
    }
    *out = loop->default_executor;
    return 0;
}

/* Queues j, starting a worker when none is idle and the pool may grow. A full queue is
   -ENOSPC, which callers turn into waiting (evl_executor_run) or -EAGAIN (evl_executor_submit);
   a pool that has no thread and cannot start one fails with pthread_create's error, since the
   job would never run. */
static int evl__executor_enqueue(evl_executor *ex, evl__xjob *j) {
    evl_loop *loop = ex->loop;
    int err = 0;
    pthread_mutex_lock(&ex->lock);
    if (ex->stopping || loop->closing) err = -ESHUTDOWN;
    else if (ex->qlen >= ex->qmax) err = -ENOSPC;
    if (err == 0 && ex->idle <= (int)ex->qlen && ex->threads < ex->threads_max) {
        pthread_t th;
        pthread_attr_t attr;
        int started;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        started = evl__fault(EVL_FAULT_THREAD) ? errno
                                               : pthread_create(&th, &attr, evl__worker_main, ex);
        if (started == 0) ex->threads++;
        else if (ex->threads == 0) err = -started;
        pthread_attr_destroy(&attr);
    }
    if (err == 0) {
        j->state = EVL__JOB_QUEUED;
        j->next = NULL;
        if (ex->qtail) ex->qtail->next = j;
        else ex->qhead = j;
        ex->qtail = j;
        ex->qlen++;
        pthread_cond_signal(&ex->work);
    }
    pthread_mutex_unlock(&ex->lock);
    if (err == 0) {
        j->fnext = ex->in_flight;
        j->fprev = NULL;
        if (ex->in_flight) ex->in_flight->fprev = j;
        ex->in_flight = j;
        loop->jobs_in_flight++;
    }
    return err;
}

/* The jobs of an abandoned pool no longer keep evl_run going: they were uncounted then. */
static void evl__job_unlink(evl_executor *ex, evl__xjob *j) {
    if (j->fprev) j->fprev->fnext = j->fnext;
    else ex->in_flight = j->fnext;
    if (j->fnext) j->fnext->fprev = j->fprev;
    if (!ex->abandoned) ex->loop->jobs_in_flight--;
}

/* Takes j out of the queue if it has not started; returns 1 if it was still queued. */
static int evl__job_dequeue(evl_executor *ex, evl__xjob *j) {
    evl__xjob **pp;
    int found = 0;
    pthread_mutex_lock(&ex->lock);
    if (j->state == EVL__JOB_QUEUED) {
        for (pp = &ex->qhead; *pp; pp = &(*pp)->next) {
            if (*pp != j) continue;
            *pp = j->next;
            if (ex->qtail == j) {
                evl__xjob *p = ex->qhead;
                while (p && p->next) p = p->next;
                ex->qtail = p;
            }
            ex->qlen--;
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&ex->lock);
    return found;
}

/* Asks a running job to stop (evl_executor_cancelled turns 1 in it); it still runs to its
   end, and whoever waits for it keeps waiting. */
static void evl__job_cancel(evl__xjob *j) {
    __atomic_store_n(&j->cancelled, 1, __ATOMIC_RELEASE);
}

/* The future of a submitted job is cancelled (freeing 0) or freed (1). A queued job is dropped
   at once: 0, the future may complete now. A running one is asked to stop: 1, it completes
   the future when it returns (or, the future freed, is orphaned). */
static int evl__job_future_gone(evl_loop *loop, void *ctx, int freeing) {
    evl__xjob *j = (evl__xjob *)ctx;
    evl_executor *ex = j->ex;
    (void)loop;
    if (evl__job_dequeue(ex, j)) {
        evl__job_unlink(ex, j);
        evl__job_free(ex, j);
        return 0;
    }
    evl__job_cancel(j);
    if (freeing) {
        j->future = NULL;
        j->orphaned = 1;
    }
    return 1;
}

/* A job has returned: its future completes, or its task is woken (and frees it). A job that
   was asked to stop reports -ECANCELED, its result dropped. */
static void evl__job_complete(evl_loop *loop, evl_executor *ex, evl__xjob *j) {
    int status = __atomic_load_n(&j->cancelled, __ATOMIC_ACQUIRE) ? -ECANCELED : 0;
    void *value = status ? NULL : j->result;
    evl__job_unlink(ex, j);
    if (j->orphaned) {
        evl__job_free(ex, j);
    } else if (j->future) {
        evl_future *f = j->future;
        f->cancel_hook = NULL;
        evl__future_complete(loop, f, status, value);
        evl__job_free(ex, j);
    } else {
        j->delivered = 1;
        evl__task_wake(loop, j->waiter, status, value, 0);
    }
}

static void evl__executor_unlink(evl_executor **list, evl_executor *ex) {
    while (*list != ex) list = &(*list)->next;
    *list = ex->next;
}

/* A shut pool leaves the loop's list (and stops being its default: a new one starts on use). */
static void evl__executor_unlist(evl_loop *loop, evl_executor *ex) {
    evl__executor_unlink(&loop->executors, ex);
    if (loop->default_executor == ex) loop->default_executor = NULL;
}

/* Hands the completed jobs to their futures and tasks, then wakes tasks waiting for room. An
   abandoned pool whose last job came back and whose threads are gone is freed. */
static void evl__executor_drain(evl_loop *loop, evl_executor *ex) {
    evl__xjob *done, *rev = NULL;
    size_t room;
    int threads;
    pthread_mutex_lock(&ex->lock);
    done = ex->done;
    ex->done = NULL;
    ex->notified = 0;
    room = ex->qmax - ex->qlen;
    threads = ex->threads;
    pthread_mutex_unlock(&ex->lock);
    while (done) { /* the workers push in front: restore completion order */
        evl__xjob *next = done->next;
        done->next = rev;
        rev = done;
        done = next;
    }
    while (rev) {
        evl__xjob *j = rev;
        rev = j->next;
        evl__job_complete(loop, ex, j);
    }
    if (ex->abandoned) {
        /* A worker hands back its last job and leaves in one hold of the lock, so no thread
           means every job is back. */
        if (threads == 0) {
            evl__executor_unlink(&loop->executors_abandoned, ex);
            evl__executor_destroy(ex);
        }
        return;
    }
    while (room-- > 0 && ex->room.head) evl__task_wake(loop, ex->room.head, 0, NULL, 0);
}

static void evl__executors_drain(evl_loop *loop) {
    evl_executor *ex, *next;
    for (ex = loop->executors; ex; ex = ex->next) evl__executor_drain(loop, ex);
    for (ex = loop->executors_abandoned; ex; ex = next) {
        next = ex->next;
        evl__executor_drain(loop, ex);
    }
}

static evl__xjob *evl__job_new(evl_loop *loop, evl_executor *ex, evl_work_fn fn, void *arg) {
    evl__xjob *j = (evl__xjob *)evl__realloc(loop, NULL, sizeof *j);
    if (!j) return NULL;
    memset(j, 0, sizeof *j);
    j->ex = ex;
    j->fn = fn;
    j->arg = arg;
    return j;
}

static int evl__executor_listed(const evl_loop *loop, const evl_executor *ex) {
    const evl_executor *e;
    for (e = loop->executors; e; e = e->next)
        if (e == ex) return 1;
    return 0;
}

/* Waits for room in a full queue (backpressure). A shutdown of the pool meanwhile wakes us
   with an error, or leaves the pool off the loop's list. */
static int evl__executor_enqueue_waiting(evl_loop *loop, evl_executor *ex, evl_task *t,
                                         evl__xjob *j) {
    int err;
    while ((err = evl__executor_enqueue(ex, j)) == -ENOSPC) {
        if ((err = evl__task_suspend(loop, t, &ex->room)) < 0) return err;
        if (!evl__executor_listed(loop, ex)) return -ESHUTDOWN;
        if ((err = evl__task_enter(loop, &t)) < 0) return err;
    }
    return err;
}

int evl_executor_run_on(evl_loop *loop, evl_executor *ex, evl_work_fn fn, void *arg,
                        void **result) {
    evl_task *t;
    evl__xjob *j;
    int err = evl__task_enter(loop, &t);
    if (err < 0) return err;
    if (!ex || !fn) return -EINVAL;
    if (!(j = evl__job_new(loop, ex, fn, arg))) return -ENOMEM;
    j->waiter = t;
    if ((err = evl__executor_enqueue_waiting(loop, ex, t, j)) < 0) {
        evl__free(loop, j);
        return err;
    }
    t->job = j; /* from now until the job is back: evl_loop_close looks here */
    err = evl__task_suspend(loop, t, NULL);
    if (j->delivered) {
        if (err >= 0 && result) *result = t->wake_value;
    } else if (evl__job_dequeue(ex, j)) {
        /* Cancelled or out of time while queued: the job never runs. */
        evl__job_unlink(ex, j);
    } else {
        /* Cancelled or out of time while it runs: its arg may point into this very stack, so
           ask it to stop and wait for it to return, whatever happens meanwhile. Its pool may
           be freed once it is back, hence the loop's allocator below. */
        evl__job_cancel(j);
        while (!j->delivered) evl__task_suspend_uninterruptible(loop, t, NULL);
    }
    t->job = NULL;
    evl__free(loop, j);
    return err;
}

int evl_executor_run(evl_loop *loop, evl_work_fn fn, void *arg, void **result) {
    evl_executor *ex;
    int err = evl__default_executor(loop, &ex);
    return err < 0 ? err : evl_executor_run_on(loop, ex, fn, arg, result);
}

int evl_executor_submit_on(evl_loop *loop, evl_executor *ex, evl_work_fn fn, void *arg,
                           evl_future **out) {
    evl_future *f;
    evl__xjob *j;
    int err;
    EVL_ASSERT(loop);
    if (!ex || !fn || !out) return -EINVAL;
    *out = NULL;
    if ((err = evl_future_new(loop, &f)) < 0) return err;
    if (!(j = evl__job_new(loop, ex, fn, arg))) {
        evl_future_free(loop, f);
        return -ENOMEM;
    }
    j->future = f;
    if ((err = evl__executor_enqueue(ex, j)) < 0) {
        evl__free(loop, j);
        evl_future_free(loop, f);
        return err == -ENOSPC ? -EAGAIN : err;
    }
    f->cancel_hook = evl__job_future_gone;
    f->cancel_ctx = j;
    *out = f;
    return 0;
}

int evl_executor_submit(evl_loop *loop, evl_work_fn fn, void *arg, evl_future **out) {
    evl_executor *ex;
    int err = evl__default_executor(loop, &ex);
    return err < 0 ? err : evl_executor_submit_on(loop, ex, fn, arg, out);
}

/* Gives up on a job that will never run: its future or waiting task hears -ECANCELED, and it
   is freed (a waiting task frees its own). */
static void evl__job_fail(evl_loop *loop, evl_executor *ex, evl__xjob *j) {
    evl__job_cancel(j);
    j->state = EVL__JOB_DONE;
    evl__job_complete(loop, ex, j);
}

static void evl__executor_fail_queued(evl_loop *loop, evl_executor *ex, evl__xjob *queued) {
    while (queued) {
        evl__xjob *j = queued;
        queued = j->next;
        evl__job_fail(loop, ex, j);
    }
}

/* A job is stuck past the shutdown deadline: the pool's jobs are asked to stop and no longer
   keep evl_run going, and the pool moves to the abandoned list. Whoever waits for a stuck job
   keeps waiting: a task until the job returns, a future until it completes (-ECANCELED). */
static void evl__executor_abandon(evl_loop *loop, evl_executor *ex, int stuck) {
    evl__xjob *j;
    char msg[96];
    snprintf(msg, sizeof msg, "%d executor job(s) still running after the shutdown deadline",
             stuck);
    evl__report(loop, msg, -ETIMEDOUT, NULL);
    for (j = ex->in_flight; j; j = j->fnext) {
        evl__job_cancel(j);
        loop->jobs_in_flight--;
    }
    ex->abandoned = 1;
    evl__executor_unlist(loop, ex);
    ex->next = loop->executors_abandoned;
    loop->executors_abandoned = ex;
}

int evl_executor_shutdown(evl_loop *loop, evl_executor *ex, evl_time timeout) {
    evl__xjob *queued;
    struct timespec until;
    evl_time deadline = evl__time_add(evl__clock_read(), timeout > 0 ? timeout : 0);
    int stuck;
    EVL_ASSERT(loop);
    if (!ex) return -EINVAL;
    until.tv_sec = (time_t)(deadline / 1000000000);
    until.tv_nsec = (long)(deadline % 1000000000);
    pthread_mutex_lock(&ex->lock);
    ex->stopping = 1;
    queued = ex->qhead;
    ex->qhead = ex->qtail = NULL;
    ex->qlen = 0;
    pthread_cond_broadcast(&ex->work);
    while (ex->threads > 0) {
        /* Idle workers leave at once: wait for them whatever the deadline. */
        if (ex->threads > ex->busy) pthread_cond_wait(&ex->exited, &ex->lock);
        else if (pthread_cond_timedwait(&ex->exited, &ex->lock, &until) != 0) break;
    }
    stuck = ex->threads > 0 ? ex->busy : 0;
    pthread_mutex_unlock(&ex->lock);
    evl__waitq_wake_all(loop, &ex->room, -ESHUTDOWN);
    evl__executor_fail_queued(loop, ex, queued);
    if (stuck) {
        evl__executor_abandon(loop, ex, stuck);
        return -ETIMEDOUT;
    }
    evl__executor_drain(loop, ex);
    evl__executor_unlist(loop, ex);
    evl__executor_destroy(ex);
    return 0;
}

/* In a child after fork(): the pool's threads are the parent's and do not exist here, so no
   job in flight will ever return. Each fails with -ECANCELED (a waiting task frees its own).
   A pool of the program's starts again empty, with a fresh lock (the old one may have been
   held by a parent thread, hence initialised again, not used), so it stays usable; an
   abandoned pool is freed. */
static void evl__executor_after_fork(evl_loop *loop, evl_executor *ex) {
    while (ex->in_flight) evl__job_fail(loop, ex, ex->in_flight);
    ex->qhead = ex->qtail = ex->done = NULL;
    ex->qlen = 0;
    ex->threads = ex->idle = ex->busy = 0;
    ex->notified = 0;
    /* The queue is empty now: tasks waiting for room try again. */
    evl__waitq_wake_all(loop, &ex->room, 0);
}

static int evl__executors_after_fork(evl_loop *loop) {
    evl_executor *ex;
    while ((ex = loop->executors_abandoned) != NULL) {
        loop->executors_abandoned = ex->next;
        evl__executor_after_fork(loop, ex);
        ex->alloc(ex->alloc_ud, ex, 0);
    }
    for (ex = loop->executors; ex; ex = ex->next) {
        evl__executor_after_fork(loop, ex);
        if (evl__executor_sync_init(ex) < 0) return -ENOMEM;
    }
    return 0;
}

static void evl__executor_gauges(const evl_loop *loop, evl_stats *out) {
    evl_executor *ex;
    for (ex = loop->executors; ex; ex = ex->next) {
        pthread_mutex_lock(&ex->lock);
        out->executor_queue += ex->qlen;
        out->executor_busy += (size_t)ex->busy;
        pthread_mutex_unlock(&ex->lock);
    }
}

/* Shuts every pool, sharing one deadline. */
static void evl__executors_shutdown(evl_loop *loop, evl_time timeout) {
    evl_time deadline = evl__time_add(evl__clock_read(), timeout > 0 ? timeout : 0);
    while (loop->executors) {
        evl_time left = deadline - evl__clock_read();
        evl_executor_shutdown(loop, loop->executors, left > 0 ? left : 0);
    }
}

/* evl_loop_close abandons task t while its job still runs: the job keeps the task's stack
   (its arg may point there) and frees it when it returns. */
static void evl__executor_keep_stack(evl_task *t) {
    evl__xjob *j = t->job;
    j->waiter = NULL;
    j->orphaned = 1;
    j->held = t->stack;
    evl__stack_hold(&j->held);
    t->stack.base = NULL;
    t->job = NULL;
}

/* The loop closes: its abandoned pools are cut loose. What came back is freed here; what
   still runs is freed by its worker, and the last worker frees the pool. */
static void evl__executors_detach(evl_loop *loop) {
    evl_executor *ex;
    while ((ex = loop->executors_abandoned) != NULL) {
        evl__xjob *done;
        int threads;
        loop->executors_abandoned = ex->next;
        pthread_mutex_lock(&ex->lock);
        ex->loop = NULL;
        done = ex->done;
        ex->done = NULL;
        threads = ex->threads;
        pthread_mutex_unlock(&ex->lock);
        while (done) {
            evl__xjob *next = done->next;
            evl__job_free(ex, done);
            done = next;
        }
        if (threads == 0) evl__executor_destroy(ex);
    }
}
#endif /* executor */

/* ==== >>signals ==== */
#ifndef EVL_NO_SIGNALS
/* The process-wide routing table: for each signal, the loops that watch it and the
   disposition to restore when the last watcher stops. The handler only reads it (atomically)
   and writes per-loop pending flags and the loops' wakeup fds, which is async-signal-safe. */
#define EVL__SIG_LOOPS 16
typedef struct evl__sigslot {
    evl_loop *loops[EVL__SIG_LOOPS];
    int watchers;
    struct sigaction old;
} evl__sigslot;
static evl__sigslot evl__sigtab[EVL__NSIG];
#ifndef EVL_NO_THREADS
static pthread_mutex_t evl__sig_lock = PTHREAD_MUTEX_INITIALIZER;
#endif

static void evl__sig_lock_take(void) {
#ifndef EVL_NO_THREADS
    pthread_mutex_lock(&evl__sig_lock);
#endif
}

static void evl__sig_lock_give(void) {
#ifndef EVL_NO_THREADS
    pthread_mutex_unlock(&evl__sig_lock);
#endif
}

static void evl__signal_handler(int signo) {
    int saved = errno, i;
    for (i = 0; i < EVL__SIG_LOOPS; i++) {
        evl_loop *loop = __atomic_load_n(&evl__sigtab[signo].loops[i], __ATOMIC_ACQUIRE);
        if (!loop) continue;
        __atomic_store_n(&loop->sig_pending[signo], 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&loop->async_pending, 1, __ATOMIC_SEQ_CST);
        evl__wakeup_signal(loop);
    }
    errno = saved;
}

void evl_signal_init(evl_signal *s, int signo, evl_cb cb, void *arg) {
    memset(s, 0, sizeof *s);
    s->signo = signo;
    s->cb = cb;
    s->arg = arg;
}

/* Adds loop to signo's routing slots, installing the handler for the first watcher. */
static int evl__sigtab_add(evl_loop *loop, int signo) {
    evl__sigslot *slot = &evl__sigtab[signo];
    int i, free_slot = -1;
    for (i = 0; i < EVL__SIG_LOOPS; i++) {
        if (slot->loops[i] == loop) free_slot = -2;
        else if (!slot->loops[i] && free_slot == -1) free_slot = i;
    }
    if (free_slot == -1) return -ENOSPC;
    if (slot->watchers == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = evl__signal_handler;
        sa.sa_flags = SA_RESTART;
        sigfillset(&sa.sa_mask);
        if (evl__fault(EVL_FAULT_SIGACTION) || sigaction(signo, &sa, &slot->old) < 0) return -errno;
    }
    if (free_slot >= 0) __atomic_store_n(&slot->loops[free_slot], loop, __ATOMIC_RELEASE);
    slot->watchers++;
    return 0;
}

static void evl__sigtab_remove(const evl_loop *loop, int signo, int last_of_loop) {
    evl__sigslot *slot = &evl__sigtab[signo];
    int i;
    if (last_of_loop)
        for (i = 0; i < EVL__SIG_LOOPS; i++)
            if (slot->loops[i] == loop) __atomic_store_n(&slot->loops[i], (evl_loop *)NULL, __ATOMIC_RELEASE);
    if (--slot->watchers == 0) sigaction(signo, &slot->old, NULL);
}

int evl_signal_start(evl_loop *loop, evl_signal *s) {
    int err;
    EVL_ASSERT(loop);
    if (!s || !s->cb || s->signo <= 0 || s->signo >= EVL__NSIG || s->signo == SIGKILL ||
        s->signo == SIGSTOP)
        return -EINVAL;
    if (s->active) evl_signal_stop(s->loop, s);
    evl__sig_lock_take();
    err = evl__sigtab_add(loop, s->signo);
    if (err == 0) {
        s->next = loop->sig_watchers[s->signo];
        loop->sig_watchers[s->signo] = s;
        s->loop = loop;
        s->active = 1;
        __atomic_add_fetch(&loop->signals_active, 1, __ATOMIC_SEQ_CST);
    }
    evl__sig_lock_give();
    return err;
}

int evl_signal_stop(evl_loop *loop, evl_signal *s) {
    evl_signal **pp;
    EVL_ASSERT(loop);
    if (!s) return -EINVAL;
    evl__sig_lock_take();
    if (s->active && s->loop == loop) {
        for (pp = &loop->sig_watchers[s->signo]; *pp != s; pp = &(*pp)->next) {
        }
        *pp = s->next;
        s->active = 0;
        s->next = NULL;
        evl__sigtab_remove(loop, s->signo, loop->sig_watchers[s->signo] == NULL);
        __atomic_sub_fetch(&loop->signals_active, 1, __ATOMIC_SEQ_CST);
    }
    evl__sig_lock_give();
    return 0;
}

/* Runs the watchers of every signal that arrived. The table lock is held only to pick the
   next watcher, so callbacks may start and stop watchers; `seen` marks those already run. */
static void evl__signals_dispatch(evl_loop *loop) {
    int signo;
    for (signo = 1; signo < EVL__NSIG; signo++) {
        unsigned round;
        if (!__atomic_exchange_n(&loop->sig_pending[signo], 0, __ATOMIC_SEQ_CST)) continue;
        round = ++loop->sig_round;
        for (;;) {
            evl_signal *s;
            evl_cb cb = NULL;
            void *arg = NULL;
            evl__sig_lock_take();
            for (s = loop->sig_watchers[signo]; s; s = s->next) {
                if (s->seen == round) continue;
                s->seen = round;
                cb = s->cb;
                arg = s->arg;
                break;
            }
            evl__sig_lock_give();
            if (!cb) break;
            cb(loop, arg);
        }
    }
}

static void evl__signals_close(evl_loop *loop) {
    int signo;
    evl__sig_lock_take();
    for (signo = 1; signo < EVL__NSIG; signo++) {
        while (loop->sig_watchers[signo]) {
            evl_signal *s = loop->sig_watchers[signo];
            loop->sig_watchers[signo] = s->next;
            s->active = 0;
            s->next = NULL;
            evl__sigtab_remove(loop, signo, loop->sig_watchers[signo] == NULL);
        }
    }
    evl__sig_lock_give();
    loop->signals_active = 0;
}
#endif /* EVL_NO_SIGNALS */

/* ==== >>shutdown ==== */
static int evl__hook_add(evl_loop *loop, evl__job **hooks, size_t *len, size_t *cap, evl_cb cb,
                         void *arg) {
    EVL_ASSERT(loop);
    if (!cb) return -EINVAL;
    if (evl__grow(loop, (void **)hooks, cap, *len + 1, sizeof **hooks) < 0) return -ENOMEM;
    (*hooks)[*len].cb = cb;
    (*hooks)[*len].arg = arg;
    (*len)++;
    return 0;
}

int evl_on_shutdown(evl_loop *loop, evl_cb cb, void *arg) {
    return evl__hook_add(loop, &loop->shutdown_hooks, &loop->shutdown_hooks_len,
                         &loop->shutdown_hooks_cap, cb, arg);
}

int evl_on_close(evl_loop *loop, evl_cb cb, void *arg) {
    return evl__hook_add(loop, &loop->close_hooks, &loop->close_hooks_len, &loop->close_hooks_cap,
                         cb, arg);
}

/* Runs each close hook once, in registration order. */
static void evl__close_hooks_run(evl_loop *loop) {
    size_t i;
    if (loop->close_hooks_ran) return;
    loop->close_hooks_ran = 1;
    for (i = 0; i < loop->close_hooks_len; i++) loop->close_hooks[i].cb(loop, loop->close_hooks[i].arg);
}

/* The very last step: the close hooks, then the stop. */
static void evl__shutdown_close(evl_loop *loop, void *arg) {
    (void)arg;
    evl__close_hooks_run(loop);
    evl_stop(loop);
}

/* The last step of a shutdown: name the tasks that did not finish in time, shut the
   executors within what is left of the grace period, run the close hooks, stop. */
static void evl__shutdown_finish(evl_loop *loop, void *arg) {
    (void)arg;
    if (loop->shutdown_state != 1) return;
    loop->shutdown_state = 2;
    evl_timer_stop(loop, &loop->shutdown_timer);
#ifndef EVL_NO_TASKS
    {
        evl_task *t;
        for (t = loop->tasks; t; t = t->next)
            if (t->state != EVL__T_DONE)
                evl__report(loop, "task did not finish within the shutdown grace period",
                            -ETIMEDOUT, t);
    }
#endif
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    evl__executors_shutdown(loop, loop->shutdown_deadline - evl__clock_read());
#endif
    /* What the executors just delivered (futures' callbacks, tasks woken with a result) runs
       in the next drain, and this step queued behind it runs last. */
    if (evl_call_soon_at(loop, evl__shutdown_close, NULL, NULL, 0) < 0)
        evl__shutdown_close(loop, NULL);
}

/* Called as tasks finish during a shutdown: the last one ends the wait early. */
static void evl__shutdown_task_done(evl_loop *loop) {
#ifndef EVL_NO_TASKS
    if (loop->shutdown_state == 1 && loop->tasks_alive == 0 && !loop->shutdown_finish_queued) {
        loop->shutdown_finish_queued = 1;
        if (evl_call_soon_at(loop, evl__shutdown_finish, NULL, NULL, 0) < 0)
            evl__shutdown_finish(loop, NULL);
    }
#else
    (void)loop;
#endif
}

int evl_shutdown(evl_loop *loop, evl_time grace) {
    size_t i;
    EVL_ASSERT(loop);
    if (loop->shutdown_state) return -EALREADY;
    if (grace < 0) grace = 0;
    loop->shutdown_state = 1;
    loop->shutdown_deadline = evl__time_add(evl__clock_read(), grace);
    for (i = 0; i < loop->shutdown_hooks_len; i++)
        loop->shutdown_hooks[i].cb(loop, loop->shutdown_hooks[i].arg);
#ifndef EVL_NO_TASKS
    {
        evl_task *t;
        for (t = loop->tasks; t; t = t->next)
            if (t->state != EVL__T_DONE) evl_task_cancel(loop, t);
    }
#endif
    /* The grace period is real time even under the virtual clock: it bounds a real exit. */
    (evl_timer_init)(&loop->shutdown_timer, evl__shutdown_finish, NULL);
    evl_timer_start(loop, &loop->shutdown_timer, loop->virtual_clock ? 0 : grace, 0);
    evl__shutdown_task_done(loop);
    return 0;
}

/* ==== >>fork ==== */
int evl_loop_fork(evl_loop *loop) {
    int err;
#ifndef EVL_NO_SIGNALS
    int i;
#endif
    EVL_ASSERT(loop);
#ifndef EVL_NO_SIGNALS
    /* Only this loop survives in the child: other loops of the parent must not receive the
       child's signals (their wakeup fds are the parent's), and pending ones were the parent's. */
    for (i = 1; i < EVL__NSIG; i++) {
        int k, mine = 0;
        evl_signal *w;
        __atomic_store_n(&loop->sig_pending[i], 0, __ATOMIC_SEQ_CST);
        for (k = 0; k < EVL__SIG_LOOPS; k++)
            if (evl__sigtab[i].loops[k] != loop) evl__sigtab[i].loops[k] = NULL;
        /* The count must be this loop's own watchers, so its last stop restores the old
           disposition; with none, restore it now. */
        for (w = loop->sig_watchers[i]; w; w = w->next) mine++;
        if (evl__sigtab[i].watchers > 0 && mine == 0) sigaction(i, &evl__sigtab[i].old, NULL);
        evl__sigtab[i].watchers = mine;
    }
#endif
#if !defined(EVL_NO_TASKS) && !defined(EVL_NO_THREADS)
    /* The parent's workers do not exist here: their jobs fail, the pools start empty. */
    if ((err = evl__executors_after_fork(loop)) < 0) return err;
#endif
    /* New kernel objects: the parent's epoll set and wakeup fd must not be shared. */
    evl_io_stop(loop, &loop->wake_io);
    evl__wakeup_close(loop);
    loop->backend->destroy(loop);
    if ((err = loop->backend->init(loop)) < 0) return err;
    if ((err = evl__backend_reregister(loop)) < 0) return err;
    if ((err = evl__wakeup_open(loop)) < 0) return err;
    (evl_io_init)(&loop->wake_io, loop->wake_rfd, evl__wakeup_cb, NULL);
    __atomic_store_n(&loop->wake_sent, 0, __ATOMIC_SEQ_CST);
#ifndef EVL_NO_THREADS
    loop->owner = pthread_self();
    loop->owner_known = 1;
    if (pthread_mutex_init(&loop->inbox_lock, NULL) != 0) return -ENOMEM;
#endif
    return evl_io_start(loop, &loop->wake_io, EVL_READ);
}

/* ==== >>runner ==== */
#ifndef EVL_NO_TASKS
typedef struct evl__main_ctx evl__main_ctx;

/* One of evl_main's signal watchers, and the signal it watches (for the second one's exit). */
typedef struct evl__main_signal_arg {
    evl__main_ctx *m;
    int signo;
} evl__main_signal_arg;

struct evl__main_ctx {
    evl_task_fn fn;
    void *arg;
    int result, signals;
    evl_time grace;
    evl__main_signal_arg sig_args[2];
};

static int evl__main_task(evl_loop *loop, void *arg) {
    evl__main_ctx *m = (evl__main_ctx *)arg;
    m->result = m->fn(loop, m->arg);
    /* main is done: the rest of the program is wound down as after a signal. */
    evl_shutdown(loop, m->grace);
    return m->result;
}

#ifndef EVL_NO_SIGNALS
/* The second signal ends the process the way the signal itself would have, so a supervisor
   sees SIGTERM or SIGINT as the cause (128 + signo from a shell), not an exit status. */
static void evl__main_die_by(int signo) {
    sigset_t set;
    signal(signo, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, signo);
#ifndef EVL_NO_THREADS
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
#else
    sigprocmask(SIG_UNBLOCK, &set, NULL);
#endif
    raise(signo);
    /* cppcheck-suppress unreachableCode ; raise returns when the signal could not end us */
    _exit(128 + signo);
}

static void evl__main_signal(evl_loop *loop, void *arg) {
    evl__main_signal_arg *sa = (evl__main_signal_arg *)arg;
    evl__main_ctx *m = sa->m;
    if (++m->signals > 1) {
        evl__log(loop, EVL_LOG_WARN, "evloop: second signal (%d): exiting now", sa->signo);
        evl__main_die_by(sa->signo);
    }
    evl__log(loop, EVL_LOG_INFO, "evloop: signal received: shutting down (grace %.1f s)",
             (double)m->grace / 1e9);
    evl_shutdown(loop, m->grace);
}
#endif

int evl_main(const evl_config *cfg, evl_task_fn main_fn, void *arg) {
    evl_loop *loop;
    evl__main_ctx m;
    evl_task_opts opts = {"main", 0};
    evl_task *t;
    int err;
#ifndef EVL_NO_SIGNALS
    evl_signal sigint, sigterm;
#endif
    if (!main_fn) return -EINVAL;
    if ((err = evl_loop_new(&loop, cfg)) < 0) return err;
    memset(&m, 0, sizeof m);
    m.fn = main_fn;
    m.arg = arg;
    m.grace = loop->shutdown_grace;
#if !defined(EVL_NO_THREADS)
    evl__log(loop, EVL_LOG_INFO, "evloop %s: backend %s, debug %s, executor %d threads",
             EVLOOP_VERSION, loop->backend->name, loop->debug ? "on" : "off",
             loop->executor_threads ? loop->executor_threads
                                    : (evl__ncpu() + 4 < 32 ? evl__ncpu() + 4 : 32));
#else
    evl__log(loop, EVL_LOG_INFO, "evloop %s: backend %s, debug %s", EVLOOP_VERSION,
             loop->backend->name, loop->debug ? "on" : "off");
#endif
#ifndef EVL_NO_SIGNALS
    m.sig_args[0].m = m.sig_args[1].m = &m;
    m.sig_args[0].signo = SIGINT;
    m.sig_args[1].signo = SIGTERM;
    evl_signal_init(&sigint, SIGINT, evl__main_signal, &m.sig_args[0]);
    evl_signal_init(&sigterm, SIGTERM, evl__main_signal, &m.sig_args[1]);
    if ((err = evl_signal_start(loop, &sigint)) < 0 || (err = evl_signal_start(loop, &sigterm)) < 0) {
        evl_loop_close(loop);
        return err;
    }
#endif
    if ((err = evl_task_spawn_at(loop, &t, evl__main_task, &m, &opts, NULL, 0)) == 0) {
        err = evl_run(loop);
        if (err == 0) {
            int result = -ECANCELED;
            if (evl_task_done(t)) evl_task_join(loop, t, &result);
            /* Cancelled by a shutdown is how a signalled program ends: that is success. */
            err = result == -ECANCELED && loop->shutdown_state ? 0 : result;
        }
    }
#ifndef EVL_NO_SIGNALS
    evl_signal_stop(loop, &sigint);
    evl_signal_stop(loop, &sigterm);
#endif
    evl_loop_close(loop);
    return err;
}
#endif /* EVL_NO_TASKS */

#ifdef __cplusplus
}
#endif
#endif /* EVLOOP_IMPLEMENTATION */

/*
   LICENSE
   -------
   MIT License

   Copyright (c) 2026 the evloop.h authors

   Permission is hereby granted, free of charge, to any person obtaining a copy of this software
   and associated documentation files (the "Software"), to deal in the Software without
   restriction, including without limitation the rights to use, copy, modify, merge, publish,
   distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
   Software is furnished to do so, subject to the following conditions:

   The above copyright notice and this permission notice shall be included in all copies or
   substantial portions of the Software.

   THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
   BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
   NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
   DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
   OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
*/
