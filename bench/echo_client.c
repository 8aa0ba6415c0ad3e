/* echo_client.c - the load generator of `make bench` (workloads 7 and 8a in bench/README.md).
   Its own process, pinned to its own core, so the server under test has the other one.

   Usage: echo_client load PORT CONNS SIZE SECONDS WARMUP [CPU [SERVER_PID]]
            CONNS connections to 127.0.0.1:PORT, each ping-ponging one SIZE-byte message: send
            it, read until all SIZE bytes came back, send the next. Counts the round trips that
            complete during SECONDS after a WARMUP (seconds, may be fractional) and prints
            "RESULT echo <messages per second>". With SERVER_PID, it also reads the server's
            time on CPU (the first field of /proc/SERVER_PID/task/<every thread>/schedstat,
            in ns; /proc/PID/schedstat alone is the main thread's) when the measuring window
            opens and when it closes, and prints "RESULT server_cpu <us per counted message>",
            with its own CPU time per message as "INFO client_cpu_us" and its share of the
            window on CPU as "INFO client_busy".
          echo_client idle PORT CONNS [CPU]
            opens CONNS connections that send nothing, prints "CONNECTED <n>" once the server
            has accepted them all, and holds them until a line (or EOF) arrives on stdin.
   CPU (default 1) is the core to pin to, when the machine has it. Connections are closed with
   RST (SO_LINGER 0), so no TIME_WAIT is left behind between runs. */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The core the client is pinned to, -1 when it is not (one core, or the call failed). */
static int pinned_to = -1;

static void pin(int cpu) {
    cpu_set_t set;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpu < 0 || cpu >= ncpu) return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) == 0 && sched_getaffinity(0, sizeof set, &set) == 0 &&
        CPU_COUNT(&set) == 1 && CPU_ISSET(cpu, &set))
        pinned_to = cpu;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int connect_one(int port) {
    struct sockaddr_in addr;
    int one = 1, tries, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    for (tries = 0; connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0; tries++) {
        if (errno == EINTR) continue;
        if (tries < 50 && (errno == EAGAIN || errno == ECONNREFUSED)) {
            usleep(20000);
            continue;
        }
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Nanoseconds on CPU of every thread of process pid (the sum of the first field of each
   /proc/pid/task/TID/schedstat), and how many threads were read; -1 when none could be. The
   second field, the time spent runnable but waiting for a CPU, is summed into *wait. A
   thread that exits takes its time with it, so the caller compares the thread counts. */
static long long proc_cpu_ns(int pid, int *threads, long long *wait) {
    char path[96];
    DIR *d;
    struct dirent *e;
    long long sum = 0, waited = 0;
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    if (!(d = opendir(path))) return -1;
    while ((e = readdir(d)) != NULL) {
        unsigned long long ns, wt;
        FILE *f;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.20s/schedstat", pid, e->d_name);
        if (!(f = fopen(path, "r"))) continue; /* the thread exited meanwhile */
        if (fscanf(f, "%llu %llu", &ns, &wt) == 2) {
            sum += (long long)ns;
            waited += (long long)wt;
            n++;
        }
        fclose(f);
    }
    closedir(d);
    if (threads) *threads = n;
    if (wait) *wait = waited;
    return n ? sum : -1;
}

static void close_rst(int fd) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---- load ---- */
typedef struct conn {
    int fd;
    size_t sent, recvd;
    int want_out;
} conn;

static int run_load(int port, int nconns, size_t size, double seconds, double warmup,
                    int server_pid) {
    conn *c = (conn *)calloc((size_t)nconns, sizeof *c);
    char *msg = (char *)malloc(size), *scratch = (char *)malloc(65536);
    struct epoll_event *evs = (struct epoll_event *)calloc(1024, sizeof *evs);
    int ep = epoll_create1(EPOLL_CLOEXEC), i;
    long done = 0, counted = 0;
    double t_start, t_warm, t_end, t, t_open = 0;
    long long srv0 = -1, srv1 = -1, me0 = -1, me1 = -1, sw0 = 0, sw1 = 0, mw0 = 0, mw1 = 0;
    int thr0 = 0, thr1 = 0, open = 0;
    for (i = 0; i < (int)size; i++) msg[i] = (char)('a' + i % 26);
    for (i = 0; i < nconns; i++) {
        struct epoll_event ev;
        c[i].fd = connect_one(port);
        if (c[i].fd < 0) {
            fprintf(stderr, "echo_client: connect %d of %d: %s\n", i + 1, nconns, strerror(errno));
            return 1;
        }
        fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK);
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)i;
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
    }
    t_start = now_s();
    t_warm = t_start + warmup;
    t_end = t_warm + seconds;
    /* Every connection sends its first message. */
    for (i = 0; i < nconns; i++) {
        ssize_t m = write(c[i].fd, msg, size);
        c[i].sent = m > 0 ? (size_t)m : 0;
        if (c[i].sent < size) {
            struct epoll_event ev;
            ev.events = EPOLLIN | EPOLLOUT;
            ev.data.u32 = (uint32_t)i;
            epoll_ctl(ep, EPOLL_CTL_MOD, c[i].fd, &ev);
            c[i].want_out = 1;
        }
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 1024, 100), k;
        t = now_s();
        if (t >= t_end) break;
        if (!open && t >= t_warm) {
            /* The window opens: from here on round trips are counted, and the CPU time the
               server and this client spend is charged to them. */
            open = 1;
            t_open = t;
            if (server_pid > 0) srv0 = proc_cpu_ns(server_pid, &thr0, &sw0);
            me0 = proc_cpu_ns(getpid(), NULL, &mw0);
        }
        if (n < 0 && errno != EINTR) {
            perror("echo_client: epoll_wait");
            return 1;
        }
        for (k = 0; k < n; k++) {
            conn *x = &c[evs[k].data.u32];
            int out_before = x->want_out;
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = read(x->fd, scratch, 65536);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "echo_client: the server closed a connection (%s)\n",
                            r == 0 ? "EOF" : strerror(errno));
                    return 1;
                }
                if (r > 0) {
                    x->recvd += (size_t)r;
                    if (x->recvd >= size) {
                        /* A round trip completed: count it, send the next message. */
                        done++;
                        if (t >= t_warm) counted++;
                        x->recvd = 0;
                        x->sent = 0;
                    }
                }
            }
            if (x->sent < size && (x->recvd == 0 || (evs[k].events & EPOLLOUT))) {
                ssize_t m = write(x->fd, msg + x->sent, size - x->sent);
                if (m > 0) x->sent += (size_t)m;
                else if (m < 0 && errno != EAGAIN) {
                    perror("echo_client: write");
                    return 1;
                }
            }
            x->want_out = x->sent < size;
            if (x->want_out != out_before) {
                struct epoll_event ev;
                ev.events = EPOLLIN | (x->want_out ? EPOLLOUT : 0u);
                ev.data.u32 = evs[k].data.u32;
                epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
            }
        }
    }
    if (open) {
        if (server_pid > 0) srv1 = proc_cpu_ns(server_pid, &thr1, &sw1);
        me1 = proc_cpu_ns(getpid(), NULL, &mw1);
    }
    printf("RESULT echo %.1f\nINFO round_trips_total %ld\nINFO counted %ld\n",
           (double)counted / (t - t_warm), done, counted);
    if (srv0 >= 0 && srv1 >= srv0 && counted > 0) {
        printf("RESULT server_cpu %.4f\nINFO server_cpu_ns %lld\nINFO server_threads %d\n"
               "INFO server_threads_end %d\nINFO server_busy %.4f\nINFO server_waiting %.4f\n",
               (double)(srv1 - srv0) / 1e3 / (double)counted, srv1 - srv0, thr0, thr1,
               (double)(srv1 - srv0) / 1e9 / (t - t_open), (double)(sw1 - sw0) / 1e9 / (t - t_open));
    } else if (server_pid > 0) {
        fprintf(stderr, "echo_client: no CPU time read for server pid %d\n", server_pid);
    }
    if (me0 >= 0 && me1 >= me0 && counted > 0)
        printf("INFO client_cpu_us %.4f\nINFO client_busy %.4f\nINFO client_waiting %.4f\n"
               "INFO client_pinned_to %d\n", (double)(me1 - me0) / 1e3 / (double)counted,
               (double)(me1 - me0) / 1e9 / (t - t_open), (double)(mw1 - mw0) / 1e9 / (t - t_open),
               pinned_to);
    fflush(stdout);
    for (i = 0; i < nconns; i++) close_rst(c[i].fd);
    return counted > 0 ? 0 : 1;
}

/* ---- idle ---- */
/* After every chunk, one byte goes out on the chunk's last connection and waits for its echo:
   accept is FIFO, so the echo proves the server has accepted the whole chunk, and the accept
   queue never overflows (an overflow drops SYNs and stalls the connect for a second). */
#define CHUNK 256
static int run_idle(int port, int nconns) {
    int *fds = (int *)calloc((size_t)nconns, sizeof *fds), i;
    char line[64];
    for (i = 0; i < nconns; i++) {
        fds[i] = connect_one(port);
        if (fds[i] < 0) {
            fprintf(stderr, "echo_client: connect %d of %d: %s\n", i + 1, nconns, strerror(errno));
            printf("CONNECTED %d\n", i);
            fflush(stdout);
            return 1;
        }
        if ((i + 1) % CHUNK == 0 || i + 1 == nconns) {
            struct pollfd p = {fds[i], POLLIN, 0};
            char b = 'x';
            if (write(fds[i], &b, 1) != 1 || poll(&p, 1, 30000) != 1 || read(fds[i], &b, 1) != 1) {
                fprintf(stderr, "echo_client: no echo from the server after %d connections\n", i + 1);
                printf("CONNECTED %d\n", i);
                fflush(stdout);
                return 1;
            }
        }
    }
    printf("CONNECTED %d\n", nconns);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        /* EOF: done as well */
    }
    for (i = 0; i < nconns; i++) close_rst(fds[i]);
    return 0;
}

int main(int argc, char **argv) {
    raise_nofile();
    if (argc >= 7 && strcmp(argv[1], "load") == 0) {
        pin(argc > 7 ? atoi(argv[7]) : 1);
        return run_load(atoi(argv[2]), atoi(argv[3]), (size_t)atol(argv[4]), atof(argv[5]),
                        atof(argv[6]), argc > 8 ? atoi(argv[8]) : 0);
    }
    if (argc >= 4 && strcmp(argv[1], "idle") == 0) {
        pin(argc > 4 ? atoi(argv[4]) : 1);
        return run_idle(atoi(argv[2]), atoi(argv[3]));
    }
    fprintf(stderr, "usage: echo_client load PORT CONNS SIZE SECONDS WARMUP [CPU [SERVER_PID]]\n"
                    "       echo_client idle PORT CONNS [CPU]\n");
    return 2;
}
