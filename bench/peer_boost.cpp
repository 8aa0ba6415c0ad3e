// peer_boost.cpp - Boost.Context's raw context switch, the peer of evloop's evl__ctx_switch in
// `make bench` (workload 3a in bench/README.md): two contexts bouncing, no scheduler involved.
//
// Usage: peer_boost switch N      prints "RESULT switch <ns per switch>"
#include <boost/context/detail/fcontext.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace ctx = boost::context::detail;

static double now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

// The other context: jump back to whoever jumped here, forever.
static void bounce(ctx::transfer_t t) {
    for (;;) t = ctx::jump_fcontext(t.fctx, nullptr);
}

int main(int argc, char **argv) {
    if (argc < 3 || std::strcmp(argv[1], "switch") != 0) {
        std::fprintf(stderr, "usage: peer_boost switch N\n");
        return 2;
    }
    long n = std::atol(argv[2]);
    static char stack[65536];
    ctx::fcontext_t other = ctx::make_fcontext(stack + sizeof stack, sizeof stack, bounce);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) other = ctx::jump_fcontext(other, nullptr).fctx;
    double ns = (now_ns() - t0) / (double)(2 * n);  // two switches per round trip
    std::printf("RESULT switch %.3f\n", ns);
    return 0;
}
