/* peer.c - a second private copy of the library (built with -DEVLOOP_STATIC, like a library
   that embeds evloop.h), linked into smoke.c's program, itself built with its own
   EVLOOP_STATIC copy: the two copies must not collide at link time and must both work. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"

int smoke_peer(void);

static void peer_tick(evl_loop *loop, void *arg) {
    (void)loop;
    *(int *)arg += 1;
}

int smoke_peer(void) {
    evl_loop *loop;
    evl_timer t;
    int fired = 0;
    if (evl_loop_new(&loop, NULL) != 0) return 1;
    evl_timer_init(&t, peer_tick, &fired);
    if (evl_timer_start(loop, &t, EVL_MSEC(1), 0) != 0) return 2;
    if (evl_run(loop) != 0) return 3;
    if (evl_loop_close(loop) != 0) return 4;
    return fired == 1 ? 0 : 5;
}
