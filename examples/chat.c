/* chat.c - a line-based chat room over TCP, written with tasks.

   Usage: chat [PORT]     (default 7001; 0 picks a free port)
   It prints "listening on PORT" once ready. Try it: ./build/examples/chat & then, in two
   terminals, nc 127.0.0.1 7001 (or telnet) and type.

   Each client has a reader task (its lines, its commands) and a writer task that drains the
   client's bounded queue of outgoing lines. A broadcast never waits for a stalled client: one
   whose queue is full while its socket is full too is too slow to keep up and is disconnected,
   so one stalled reader cannot make the server grow or hold up the room. Lines are at most 4096 bytes; a longer one gets an error and the
   connection is closed. Commands: /nick NAME, /who, /quit. SIGINT / SIGTERM (through evl_main)
   tell every client "server shutting down, goodbye" before closing its socket. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>

/* Lets the compiler check the arguments of our printf-like functions against their format. */
#ifdef __GNUC__
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

#define LINE_MAX_BYTES 4096
#define QUEUE_LINES 256
#define NAME_MAX_BYTES 32
#define BATCH_MAX 64 /* lines a writer sends with one writev */
#define SEND_BUFFER (64 * 1024) /* kernel memory per client: a stalled one fills its queue soon */

/* A line on its way to one or more clients: shared, freed by its last recipient. */
typedef struct message {
    int refs;
    size_t len;
    char text[];
} message;

typedef struct client {
    int fd;
    int dropped; /* disconnected by a broadcast that found its queue full */
    int stalled; /* its writer waits for room in the socket, or has ended: it takes no lines */
    char name[NAME_MAX_BYTES + 1];
    evl_queue *outbox;
    evl_task *reader, *writer;
    struct client *prev, *next;
} client;

static client *room;     /* clients whose reader runs */
static client *starting; /* clients whose reader has yet to start: a shutdown may cancel it
                            first, and a task cancelled before it started never runs */
static int shutting_down;
static unsigned guests;

static message *message_new(const char *fmt, ...) PRINTF_LIKE(1, 2);
static message *message_new(const char *fmt, ...) {
    va_list ap;
    message *m;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !(m = malloc(sizeof *m + (size_t)n + 1))) return NULL;
    va_start(ap, fmt);
    vsnprintf(m->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    m->refs = 1;
    m->len = (size_t)n;
    return m;
}

static void message_unref(message *m) {
    if (m && --m->refs == 0) free(m);
}

/* Queues m for c without waiting. A full queue means c does not read: it is dropped. */
static void deliver(evl_loop *loop, client *c, message *m) {
    if (!m || c->dropped) return;
    m->refs++;
    if (evl_queue_try_put(loop, c->outbox, m) < 0) {
        m->refs--;
        c->dropped = 1;
        evl_task_cancel(loop, c->reader); /* its reader announces it and closes */
    }
}

/* Sends m to everyone in the room but `except`, then drops the creator's reference. */
static void broadcast(evl_loop *loop, client *except, message *m) {
    client *c;
    for (c = room; c; c = c->next)
        if (c != except) deliver(loop, c, m);
    message_unref(m);
}

/* Waits until every client whose writer can write has room in its queue: a burst (hundreds of
   readers ready at once, each announcing a join or a leave, or one read holding hundreds of
   lines) would otherwise fill the queues of clients that keep up but whose writers have not
   run yet, and drop them. A stalled client is not waited for: its queue fills and it is
   dropped. Called before a line is handled, so no broadcast is more than one line ahead. */
static int wait_for_room(evl_loop *loop) {
    for (;;) {
        client *c = room;
        int err;
        while (c && (c->stalled || evl_queue_len(c->outbox) < QUEUE_LINES / 2)) c = c->next;
        if (!c || shutting_down) return 0;
        if ((err = evl_yield(loop)) < 0) return err;
    }
}

static void tell(evl_loop *loop, client *c, message *m) {
    deliver(loop, c, m);
    message_unref(m);
}

/* Best effort, never waits: for the last lines to a client that is being closed. */
static void send_now(int fd, const char *text, size_t len) {
    if (write(fd, text, len) < 0) { /* the client is closed either way */ }
}

/* Writes m, waiting for room. It writes before it checks for cancellation (unlike
   evl_write_all), so a line taken from the queue just before the client was closed still goes
   out when the socket has room. */
/* Writes a batch of queued lines with as few writev calls as the socket allows; while the
   socket is full the client counts as stalled (a broadcast does not wait for it). */
static int send_batch(evl_loop *loop, client *c, message **batch, int n) {
    struct iovec iov[BATCH_MAX];
    int i, first = 0;
    for (i = 0; i < n; i++) {
        iov[i].iov_base = batch[i]->text;
        iov[i].iov_len = batch[i]->len;
    }
    while (first < n) {
        ssize_t w = writev(c->fd, iov + first, n - first);
        int err;
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        if (w < 0) {
            c->stalled = 1;
            err = evl_wait_io(loop, c->fd, EVL_WRITE);
            c->stalled = 0;
            if (err < 0) return err;
            continue;
        }
        for (; first < n && (size_t)w >= iov[first].iov_len; first++) w -= (ssize_t)iov[first].iov_len;
        if (first < n) {
            iov[first].iov_base = (char *)iov[first].iov_base + w;
            iov[first].iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* The writer: drains the outbox until cancelled (the client leaves, or the server stops),
   taking whatever has piled up at once, so a burst of broadcasts costs one writev per client
   rather than one write per line. */
static int writer_main(evl_loop *loop, void *arg) {
    client *c = (client *)arg;
    void *item;
    static const char goodbye[] = "server shutting down, goodbye\n";
    while (evl_queue_get(loop, c->outbox, &item) == 0) {
        message *batch[BATCH_MAX];
        int i, n = 1, err;
        batch[0] = (message *)item;
        while (n < BATCH_MAX && evl_queue_try_get(loop, c->outbox, &item) == 0)
            batch[n++] = (message *)item;
        err = send_batch(loop, c, batch, n);
        for (i = 0; i < n; i++) message_unref(batch[i]);
        if (err < 0) break;
    }
    c->stalled = 1; /* from here on, nobody waits for this writer */
    while (evl_queue_try_get(loop, c->outbox, &item) == 0) {
        message *m = (message *)item;
        send_now(c->fd, m->text, m->len);
        message_unref(m);
    }
    if (shutting_down) send_now(c->fd, goodbye, sizeof goodbye - 1);
    return 0;
}

static int name_valid(const char *s, size_t n) {
    size_t i;
    if (n == 0 || n > NAME_MAX_BYTES) return 0;
    for (i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static client *find_by_name(const char *s, size_t n) {
    client *c;
    for (c = room; c; c = c->next)
        if (strlen(c->name) == n && memcmp(c->name, s, n) == 0) return c;
    return NULL;
}

static void cmd_nick(evl_loop *loop, client *c, const char *name, size_t n) {
    char old[NAME_MAX_BYTES + 1];
    if (!name_valid(name, n)) {
        tell(loop, c, message_new("* a name is 1 to %d letters, digits, '_' or '-'\n", NAME_MAX_BYTES));
    } else if (find_by_name(name, n)) {
        tell(loop, c, message_new("* the name %.*s is taken\n", (int)n, name));
    } else {
        memcpy(old, c->name, sizeof old);
        memcpy(c->name, name, n);
        c->name[n] = 0;
        tell(loop, c, message_new("* you are now %s\n", c->name));
        broadcast(loop, c, message_new("* %s is now known as %s\n", old, c->name));
    }
}

static void cmd_who(evl_loop *loop, client *c) {
    size_t len = 0;
    client *o;
    char *list;
    for (o = room; o; o = o->next) len += strlen(o->name) + 2;
    if (!(list = malloc(len + 1))) return;
    for (len = 0, o = room; o; o = o->next)
        len += (size_t)sprintf(list + len, "%s%s", len ? ", " : "", o->name);
    tell(loop, c, message_new("* online: %s\n", list));
    free(list);
}

/* One line from c. Returns 1 when c is to leave (it asked, or it was cancelled). */
static int handle_line(evl_loop *loop, client *c, char *line, size_t n) {
    if (n > 0 && line[n - 1] == '\r') n--;
    if (n == 0) return 0;
    if (wait_for_room(loop) < 0) return 1;
    if (n > 6 && memcmp(line, "/nick ", 6) == 0) cmd_nick(loop, c, line + 6, n - 6);
    else if (n == 4 && memcmp(line, "/who", 4) == 0) cmd_who(loop, c);
    else if (n == 5 && memcmp(line, "/quit", 5) == 0) {
        tell(loop, c, message_new("* bye\n"));
        return 1;
    } else if (line[0] == '/') tell(loop, c, message_new("* commands: /nick NAME, /who, /quit\n"));
    else broadcast(loop, c, message_new("<%s> %.*s\n", c->name, (int)n, line));
    return 0;
}

/* Reads lines until the client leaves, sends a line too long, or is cancelled. */
static void read_lines(evl_loop *loop, client *c) {
    char buf[LINE_MAX_BYTES + 1]; /* a full line and its newline */
    size_t len = 0;
    for (;;) {
        char *start = buf, *nl;
        ssize_t n = evl_read(loop, c->fd, buf + len, sizeof buf - len);
        if (n <= 0) return; /* gone, or cancelled (dropped, or the server stops) */
        len += (size_t)n;
        while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
            if (handle_line(loop, c, start, (size_t)(nl - start))) return;
            start = nl + 1;
        }
        len -= (size_t)(start - buf);
        memmove(buf, start, len);
        if (len == sizeof buf) {
            tell(loop, c, message_new("* error: lines are limited to %d bytes; closing\n", LINE_MAX_BYTES));
            return;
        }
    }
}

/* Closes without losing the last lines: closing a socket with unread input sends a reset, and
   a reset makes the peer's kernel discard what it received but the client has not read yet
   (the error line, the goodbye). So: send FIN first, discard what still arrives for up to a
   second, then close. A cancelled task (dropped, or the server stops) closes at once. */
static void close_gently(evl_loop *loop, int fd) {
    char sink[4096];
    evl_time old;
    shutdown(fd, SHUT_WR);
    old = evl_deadline(loop, evl_now(loop) + EVL_SEC(1));
    while (evl_read(loop, fd, sink, sizeof sink) > 0) continue;
    evl_deadline_restore(loop, old);
    close(fd);
}

static void list_add(client **list, client *c) {
    c->prev = NULL;
    if ((c->next = *list)) c->next->prev = c;
    *list = c;
}

static void list_remove(client **list, client *c) {
    if (c->prev) c->prev->next = c->next;
    else *list = c->next;
    if (c->next) c->next->prev = c->prev;
}

static void client_free(evl_loop *loop, client *c) {
    void *item;
    while (evl_queue_try_get(loop, c->outbox, &item) == 0) message_unref((message *)item);
    evl_queue_free(loop, c->outbox);
    free(c);
}

/* The reader task owns the client: it starts the writer, and when the client is done it
   stops the writer, waits for it (shielded: the reader may itself be cancelled), closes. */
static int client_main(evl_loop *loop, void *arg) {
    client *c = (client *)arg;
    evl_task_opts opts = {"writer", 64 * 1024};
    c->reader = evl_task_current(loop);
    list_remove(&starting, c);
    if (evl_task_spawn(loop, &c->writer, writer_main, c, &opts) == 0) {
        list_add(&room, c);
        tell(loop, c, message_new("* welcome, %s! commands: /nick NAME, /who, /quit\n", c->name));
        if (wait_for_room(loop) == 0) {
            broadcast(loop, c, message_new("* %s joined\n", c->name));
            read_lines(loop, c);
        }
        list_remove(&room, c);
        evl_shield_begin(loop); /* a dropped client's reader is cancelled, and still announces it */
        wait_for_room(loop);
        evl_shield_end(loop);
        if (c->dropped) broadcast(loop, NULL, message_new("* %s was too slow and has been disconnected\n", c->name));
        else if (!shutting_down) broadcast(loop, NULL, message_new("* %s left\n", c->name));
        evl_task_cancel(loop, c->writer);
        evl_shield_begin(loop);
        evl_task_join(loop, c->writer, NULL);
        evl_shield_end(loop);
        close_gently(loop, c->fd);
    } else {
        close(c->fd);
    }
    client_free(loop, c);
    return 0;
}

static void client_start(evl_loop *loop, int fd) {
    evl_task_opts opts = {"reader", 64 * 1024};
    int one = 1, sndbuf = SEND_BUFFER;
    client *c = calloc(1, sizeof *c);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (c && evl_queue_new(loop, &c->outbox, QUEUE_LINES) == 0) {
        c->fd = fd;
        snprintf(c->name, sizeof c->name, "guest%u", ++guests);
        if (evl_task_spawn(loop, NULL, client_main, c, &opts) == 0) {
            list_add(&starting, c);
            return;
        }
        evl_queue_free(loop, c->outbox);
    }
    free(c);
    close(fd);
}

static int listen_on(int port) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1024) < 0) return close(fd), -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

/* Runs first in a shutdown, before the tasks are cancelled: the writers then say goodbye. */
static void on_shutdown(evl_loop *loop, void *arg) {
    (void)loop, (void)arg;
    shutting_down = 1;
}

/* Runs last in a shutdown: frees the clients whose reader was cancelled before it started. */
static void on_close(evl_loop *loop, void *arg) {
    (void)arg;
    while (starting) {
        client *c = starting;
        list_remove(&starting, c);
        close(c->fd);
        client_free(loop, c);
    }
}

/* The main task accepts until the shutdown cancels it. */
static int serve(evl_loop *loop, void *arg) {
    int lfd = (int)(intptr_t)arg, fd, err = 0;
    if ((err = evl_on_shutdown(loop, on_shutdown, NULL)) < 0 || (err = evl_on_close(loop, on_close, NULL)) < 0)
        return err;
    while (!shutting_down) {
        if ((fd = evl_accept(loop, lfd, NULL, NULL)) >= 0) {
            client_start(loop, fd);
        } else if (fd == -EMFILE || fd == -ENFILE) {
            evl_sleep(loop, EVL_MSEC(100)); /* out of fds: wait for some clients to leave */
        } else {
            err = fd == -ECANCELED ? 0 : fd;
            break;
        }
    }
    close(lfd);
    return err;
}

int main(int argc, char **argv) {
    evl_config cfg;
    int lfd, err;
    signal(SIGPIPE, SIG_IGN); /* a client gone away is an error from write, not a fatal signal */
    if ((lfd = listen_on(argc > 1 ? atoi(argv[1]) : 7001)) < 0) {
        perror("chat: listen");
        return 1;
    }
    evl_config_init(&cfg);
    cfg.shutdown_grace = EVL_SEC(5);
    if ((err = evl_main(&cfg, serve, (void *)(intptr_t)lfd)) < 0) {
        fprintf(stderr, "chat: %s\n", evl_strerror(err));
        return 1;
    }
    printf("chat: shut down cleanly\n");
    return 0;
}
