/* resp.c - a Redis-protocol (RESP2) key-value server in the callback style: I/O watchers and
   timers, the way redis's own ae loop is written.

   Usage: resp [PORT]     (default 6380; 0 picks a free port)
   It prints "listening on PORT" once ready. Try it:
       ./build/examples/resp &
       redis-cli -p 6380 set greeting hello; redis-cli -p 6380 get greeting
       redis-benchmark -p 6380 -t ping_inline,ping_mbulk,set,get,incr -q

   Commands: PING [msg], ECHO, SET key value [EX s|PX ms], GET, DEL key..., INCR, EXPIRE,
   PEXPIRE, TTL, PTTL, EXISTS key..., DBSIZE, FLUSHALL, SELECT 0, QUIT, and what redis-cli and
   redis-benchmark send on connecting (CONFIG GET, COMMAND, HELLO, CLIENT SETNAME/SETINFO).
   Requests come as multibulk arrays or as inline lines (words split on blanks, no quoting),
   pipelined: every complete request in a read is run and the replies leave in one write.
   Limits: an inline line or a length header 64 KiB, a bulk string 16 MiB, a request 64 MiB:
   past them the client gets "-ERR Protocol error: ..." and is closed. A client that lets more
   than 64 MiB of replies pile up unread is dropped. SIGINT / SIGTERM shut down gracefully. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Lets the compiler check the arguments of our printf-like functions against their format. */
#ifdef __GNUC__
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

#define LINE_MAX_BYTES (64 * 1024)
#define BULK_MAX (16 * 1024 * 1024)
#define REQUEST_MAX (64 * 1024 * 1024)
#define REPLY_MAX (64 * 1024 * 1024)
#define ARGS_MAX (1024 * 1024)
#define READ_CHUNK (16 * 1024)
#define TTL_MAX_MS (INT64_MAX / EVL_MSEC(1) / 4) /* keeps now + ttl far from overflowing */

/* ---- the key store: a chained hash table; a key with a TTL owns a timer that deletes it ---- */
typedef struct entry {
    struct entry *next;
    uint64_t hash;
    evl_time expires; /* 0: no TTL */
    evl_timer expiry;
    char *val;
    size_t vlen, klen;
    char key[];
} entry;

static struct {
    entry **buckets;
    size_t mask, count;
    evl_loop *loop;
} db;

static uint64_t hash_of(const char *s, size_t n) { /* FNV-1a */
    uint64_t h = 1469598103934665603ULL;
    while (n--) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

/* The link that points at the key's entry, or at the NULL ending its chain. */
static entry **db_slot(const char *key, size_t klen, uint64_t h) {
    entry **p = &db.buckets[h & db.mask];
    while (*p && !((*p)->hash == h && (*p)->klen == klen && memcmp((*p)->key, key, klen) == 0))
        p = &(*p)->next;
    return p;
}

static void db_unlink(entry **p) {
    entry *e = *p;
    *p = e->next;
    evl_timer_stop(db.loop, &e->expiry);
    free(e->val);
    free(e);
    db.count--;
}

/* Finds a live key. The timer of a key that expired may not have fired yet in this
   iteration, so the deadline is checked here too (lazy expiry). */
static entry **db_lookup(const char *key, size_t klen) {
    entry **p = db_slot(key, klen, hash_of(key, klen));
    if (*p && (*p)->expires && (*p)->expires <= evl_now(db.loop)) {
        db_unlink(p);
        return db_slot(key, klen, hash_of(key, klen));
    }
    return p;
}

/* Doubles the table when it holds more keys than buckets. On failure it keeps the old one:
   longer chains are slower, not wrong. */
static void db_grow(void) {
    size_t i, n = (db.mask + 1) * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return;
    for (i = 0; i <= db.mask; i++)
        while (db.buckets[i]) {
            entry *e = db.buckets[i];
            db.buckets[i] = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(db.buckets);
    db.buckets = b;
    db.mask = n - 1;
}

static void on_expire(evl_loop *loop, void *arg) {
    entry *e = (entry *)arg;
    (void)loop;
    db_unlink(db_slot(e->key, e->klen, e->hash));
}

static void db_set_ttl(entry *e, evl_time ttl) {
    e->expires = evl_now(db.loop) + ttl;
    /* If the timer cannot start (no memory for the heap), lazy expiry still hides the key. */
    evl_timer_start(db.loop, &e->expiry, ttl, 0);
}

/* Stores a copy of the value under key (a new key, or a new value without TTL); NULL when out
   of memory. */
static entry *db_put(const char *key, size_t klen, const char *val, size_t vlen) {
    uint64_t h = hash_of(key, klen);
    entry **p = db_slot(key, klen, h), *e = *p;
    char *copy = malloc(vlen + 1);
    if (!copy) return NULL;
    memcpy(copy, val, vlen);
    if (!e) {
        if (!(e = calloc(1, sizeof *e + klen))) return free(copy), NULL;
        e->hash = h;
        e->klen = klen;
        memcpy(e->key, key, klen);
        evl_timer_init(&e->expiry, on_expire, e);
        *p = e;
        if (++db.count > db.mask + 1) db_grow();
    } else {
        free(e->val);
        e->expires = 0;
        evl_timer_stop(db.loop, &e->expiry);
    }
    e->val = copy;
    e->vlen = vlen;
    return e;
}

static void db_flush(void) {
    size_t i;
    for (i = 0; i <= db.mask; i++)
        while (db.buckets[i]) db_unlink(&db.buckets[i]);
}

/* ---- clients: a request parser that resumes where the last read stopped, and replies ---- */
typedef struct arg {
    size_t off, len; /* offsets into the input buffer, which may move when it grows */
} arg;

/* A client closed after an error must not lose the error line: closing a socket with unread
   input sends a reset, and a reset makes the peer's kernel discard what it has not read yet.
   So the replies go out, then a FIN, and the input is discarded until the peer closes. */
enum { RUNNING, CLOSING, DRAINING };

typedef struct client {
    int fd, events;
    evl_io io;
    char *in;
    size_t in_len, in_cap, pos, start; /* pos: first unparsed byte; start: the request's first */
    long long multibulk, bulk;  /* args still to come (0: between requests); next bulk's length
                                   (-1: its header is still to come) */
    arg *argv;
    size_t argc, argv_cap;
    char *out;
    size_t out_len, out_cap, out_sent;
    int closing;  /* RUNNING, CLOSING (send the replies, then close) or DRAINING */
    int overflow; /* replies past REPLY_MAX: the client is dropped */
    struct client *prev, *next;
} client;

static client *clients; /* every connection, for the shutdown */
static evl_io listener;
static evl_timer accept_pause;

#define ARG(i) (c->in + c->argv[i].off)
#define ARGLEN(i) (c->argv[i].len)
#define reply_lit(c, s) reply(c, s, sizeof s - 1)

static void reply(client *c, const void *data, size_t len) {
    if (c->overflow) return;
    if (c->out_len - c->out_sent + len > REPLY_MAX) {
        c->overflow = 1;
        return;
    }
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        char *p;
        if (c->out_sent) { /* drop what was sent before growing */
            memmove(c->out, c->out + c->out_sent, c->out_len - c->out_sent);
            c->out_len -= c->out_sent;
            c->out_sent = 0;
        }
        while (cap < c->out_len + len) cap *= 2;
        if (cap != c->out_cap) {
            if (!(p = realloc(c->out, cap))) {
                c->overflow = 1;
                return;
            }
            c->out = p;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void reply_int(client *c, long long v) {
    char buf[32];
    reply(c, buf, (size_t)snprintf(buf, sizeof buf, ":%lld\r\n", v));
}

static void reply_bulk(client *c, const char *s, size_t n) {
    char buf[32];
    reply(c, buf, (size_t)snprintf(buf, sizeof buf, "$%zu\r\n", n));
    reply(c, s, n);
    reply_lit(c, "\r\n");
}

static void reply_error(client *c, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void reply_error(client *c, const char *fmt, ...) {
    char buf[256];
    int n;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof buf - 3) n = (int)sizeof buf - 3;
    memcpy(buf + n, "\r\n", 2);
    reply(c, buf, (size_t)n + 2);
}

/* A copy of argument i fit to be quoted in an error line: short, printable, no CRLF. */
static const char *printable_arg(client *c, size_t i, char *buf, size_t size) {
    size_t k, n = ARGLEN(i) < size - 1 ? ARGLEN(i) : size - 1;
    for (k = 0; k < n; k++) buf[k] = ARG(i)[k] >= 32 && ARG(i)[k] < 127 ? ARG(i)[k] : ' ';
    buf[n] = 0;
    return buf;
}

/* Strict decimal: an optional '-' and 1..19 digits, nothing else, no overflow. */
static int parse_ll(const char *s, size_t n, long long *out) {
    int neg = n > 0 && s[0] == '-';
    unsigned long long v = 0;
    size_t i = (size_t)neg;
    if (n == (size_t)neg || n - (size_t)neg > 19) return 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > (unsigned long long)INT64_MAX + (unsigned long long)neg) return 0;
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
}

/* ---- commands ---- */
static void cmd_ping(client *c) {
    if (c->argc > 2) reply_lit(c, "-ERR wrong number of arguments for 'ping' command\r\n");
    else if (c->argc == 2) reply_bulk(c, ARG(1), ARGLEN(1));
    else reply_lit(c, "+PONG\r\n");
}

static void cmd_echo(client *c) { reply_bulk(c, ARG(1), ARGLEN(1)); }

static void cmd_get(client *c) {
    entry *e = *db_lookup(ARG(1), ARGLEN(1));
    if (e) reply_bulk(c, e->val, e->vlen);
    else reply_lit(c, "$-1\r\n");
}

/* Reads a TTL argument in `unit` milliseconds into nanoseconds; 0 and a reply when invalid. */
static int parse_ttl(client *c, size_t i, long long unit, evl_time *ttl, int positive) {
    long long v;
    if (!parse_ll(ARG(i), ARGLEN(i), &v)) {
        reply_lit(c, "-ERR value is not an integer or out of range\r\n");
        return 0;
    }
    if ((positive && v <= 0) || v > TTL_MAX_MS / unit || v < -TTL_MAX_MS / unit) {
        char name[16];
        reply_error(c, "-ERR invalid expire time in '%s' command",
                    printable_arg(c, 0, name, sizeof name));
        return 0;
    }
    *ttl = EVL_MSEC(v * unit);
    return 1;
}

static void cmd_set(client *c) {
    evl_time ttl = 0;
    size_t i;
    entry *e;
    for (i = 3; i < c->argc; i += 2) {
        int ex = ARGLEN(i) == 2 && strncasecmp(ARG(i), "ex", 2) == 0;
        int px = ARGLEN(i) == 2 && strncasecmp(ARG(i), "px", 2) == 0;
        if (!(ex || px) || i + 1 == c->argc) {
            reply_lit(c, "-ERR syntax error\r\n");
            return;
        }
        if (!parse_ttl(c, i + 1, ex ? 1000 : 1, &ttl, 1)) return;
    }
    if (!(e = db_put(ARG(1), ARGLEN(1), ARG(2), ARGLEN(2)))) {
        reply_lit(c, "-ERR out of memory\r\n");
        return;
    }
    if (ttl) db_set_ttl(e, ttl);
    reply_lit(c, "+OK\r\n");
}

static void cmd_del(client *c) {
    long long n = 0;
    size_t i;
    for (i = 1; i < c->argc; i++) {
        entry **p = db_lookup(ARG(i), ARGLEN(i));
        if (*p) db_unlink(p), n++;
    }
    reply_int(c, n);
}

static void cmd_exists(client *c) {
    long long n = 0;
    size_t i;
    for (i = 1; i < c->argc; i++) n += *db_lookup(ARG(i), ARGLEN(i)) != NULL;
    reply_int(c, n);
}

/* INCR keeps the key's TTL, as redis does. */
static void cmd_incr(client *c) {
    entry *e = *db_lookup(ARG(1), ARGLEN(1));
    long long v = 0;
    char num[24];
    size_t n;
    if (e && !parse_ll(e->val, e->vlen, &v)) {
        reply_lit(c, "-ERR value is not an integer or out of range\r\n");
        return;
    }
    if (v == INT64_MAX) {
        reply_lit(c, "-ERR increment or decrement would overflow\r\n");
        return;
    }
    n = (size_t)snprintf(num, sizeof num, "%lld", ++v);
    if (e && e->vlen >= n) {
        memcpy(e->val, num, n);
        e->vlen = n;
    } else if (e) {
        char *p = realloc(e->val, n);
        if (!p) {
            reply_lit(c, "-ERR out of memory\r\n");
            return;
        }
        memcpy(p, num, n);
        e->val = p;
        e->vlen = n;
    } else if (!db_put(ARG(1), ARGLEN(1), num, n)) {
        reply_lit(c, "-ERR out of memory\r\n");
        return;
    }
    reply_int(c, v);
}

/* EXPIRE (seconds) and PEXPIRE (milliseconds); a TTL that is not positive deletes the key. */
static void expire_in(client *c, long long unit) {
    entry **p = db_lookup(ARG(1), ARGLEN(1));
    evl_time ttl;
    if (!parse_ttl(c, 2, unit, &ttl, 0)) return;
    if (!*p) {
        reply_lit(c, ":0\r\n");
        return;
    }
    if (ttl <= 0) db_unlink(p);
    else db_set_ttl(*p, ttl);
    reply_lit(c, ":1\r\n");
}
static void cmd_expire(client *c) { expire_in(c, 1000); }
static void cmd_pexpire(client *c) { expire_in(c, 1); }

/* TTL and PTTL: -2 for a missing key, -1 for a key without TTL, else the time left, rounded. */
static void ttl_in(client *c, long long unit) {
    entry *e = *db_lookup(ARG(1), ARGLEN(1));
    if (!e) reply_lit(c, ":-2\r\n");
    else if (!e->expires) reply_lit(c, ":-1\r\n");
    else reply_int(c, (e->expires - evl_now(db.loop) + EVL_MSEC(unit) / 2) / EVL_MSEC(unit));
}
static void cmd_ttl(client *c) { ttl_in(c, 1000); }
static void cmd_pttl(client *c) { ttl_in(c, 1); }

static void cmd_dbsize(client *c) { reply_int(c, (long long)db.count); }

static void cmd_flushall(client *c) {
    db_flush();
    reply_lit(c, "+OK\r\n");
}

static void cmd_select(client *c) {
    if (ARGLEN(1) == 1 && ARG(1)[0] == '0') reply_lit(c, "+OK\r\n");
    else reply_lit(c, "-ERR DB index is out of range\r\n");
}

static void cmd_quit(client *c) {
    reply_lit(c, "+OK\r\n");
    c->closing = CLOSING;
}

/* redis-benchmark reads "save" and "appendonly" at start; every other setting is unknown. */
static void cmd_config(client *c) {
    if (ARGLEN(1) != 3 || strncasecmp(ARG(1), "get", 3) != 0 || c->argc != 3)
        reply_lit(c, "-ERR only CONFIG GET parameter is supported\r\n");
    else if (ARGLEN(2) == 4 && strncasecmp(ARG(2), "save", 4) == 0)
        reply_lit(c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    else if (ARGLEN(2) == 10 && strncasecmp(ARG(2), "appendonly", 10) == 0)
        reply_lit(c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    else reply_lit(c, "*0\r\n");
}

static void cmd_command(client *c) { reply_lit(c, "*0\r\n"); }

/* An error makes clients fall back to RESP2, which is all this server speaks. */
static void cmd_hello(client *c) { reply_lit(c, "-NOPROTO this server speaks RESP2 only\r\n"); }

static void cmd_client(client *c) {
    if ((ARGLEN(1) == 7 && strncasecmp(ARG(1), "setname", 7) == 0) ||
        (ARGLEN(1) == 7 && strncasecmp(ARG(1), "setinfo", 7) == 0))
        reply_lit(c, "+OK\r\n");
    else reply_lit(c, "-ERR only CLIENT SETNAME and SETINFO are supported\r\n");
}

/* The table, most frequent first. Arity as redis counts it: N exactly N arguments with the
   name, -N at least N. */
static const struct command {
    const char *name;
    int arity;
    void (*fn)(client *c);
} commands[] = {
    {"get", 2, cmd_get},         {"set", -3, cmd_set},         {"incr", 2, cmd_incr},
    {"ping", -1, cmd_ping},      {"echo", 2, cmd_echo},        {"del", -2, cmd_del},
    {"exists", -2, cmd_exists},  {"expire", 3, cmd_expire},    {"pexpire", 3, cmd_pexpire},
    {"ttl", 2, cmd_ttl},         {"pttl", 2, cmd_pttl},        {"dbsize", 1, cmd_dbsize},
    {"flushall", -1, cmd_flushall}, {"select", 2, cmd_select}, {"quit", -1, cmd_quit},
    {"config", -2, cmd_config},  {"command", -1, cmd_command}, {"hello", -1, cmd_hello},
    {"client", -2, cmd_client},  {NULL, 0, NULL}};

static void execute(client *c) {
    const struct command *cmd;
    char name[48];
    for (cmd = commands; cmd->name; cmd++)
        if (strlen(cmd->name) == ARGLEN(0) && strncasecmp(cmd->name, ARG(0), ARGLEN(0)) == 0) break;
    if (!cmd->name)
        reply_error(c, "-ERR unknown command '%s'", printable_arg(c, 0, name, sizeof name));
    else if (cmd->arity > 0 ? c->argc != (size_t)cmd->arity : c->argc < (size_t)-cmd->arity)
        reply_error(c, "-ERR wrong number of arguments for '%s' command", cmd->name);
    else cmd->fn(c);
}

/* ---- the request parser ---- */
static int protocol_error(client *c, const char *what) {
    reply_error(c, "-ERR Protocol error: %s", what);
    c->closing = CLOSING;
    return -1;
}

static int push_arg(client *c, size_t off, size_t len) {
    if (c->argc == c->argv_cap) {
        size_t cap = c->argv_cap ? c->argv_cap * 2 : 8;
        arg *a = realloc(c->argv, cap * sizeof *a);
        if (!a) return protocol_error(c, "out of memory");
        c->argv = a;
        c->argv_cap = cap;
    }
    c->argv[c->argc].off = off;
    c->argv[c->argc++].len = len;
    return 0;
}

/* An inline request: one line, words split on blanks. 1 parsed, 0 incomplete, -1 error. */
static int parse_inline(client *c) {
    char *p = c->in + c->pos, *nl = memchr(p, '\n', c->in_len - c->pos), *end, *s;
    if (nl ? nl - p > LINE_MAX_BYTES : c->in_len - c->pos > LINE_MAX_BYTES)
        return protocol_error(c, "too big inline request");
    if (!nl) return 0;
    end = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    for (s = p;;) {
        char *word;
        while (s < end && (*s == ' ' || *s == '\t')) s++;
        if (s == end) break;
        for (word = s; s < end && *s != ' ' && *s != '\t';) s++;
        if (push_arg(c, (size_t)(word - c->in), (size_t)(s - word)) < 0) return -1;
    }
    c->pos = (size_t)(nl + 1 - c->in);
    return 1;
}

/* A "*N" or "$N" header line at pos, N in [min, max]. 1 parsed, 0 incomplete, -1 error. */
static int parse_header(client *c, char kind, long long min, long long max, long long *n) {
    char *p = c->in + c->pos, *nl = memchr(p, '\n', c->in_len - c->pos), msg[40];
    if (c->pos == c->in_len) return 0;
    if (*p != kind) {
        snprintf(msg, sizeof msg, "expected '%c', got '%c'", kind, *p >= 32 && *p < 127 ? *p : '?');
        return protocol_error(c, msg);
    }
    if (nl ? nl - p > LINE_MAX_BYTES : c->in_len - c->pos > LINE_MAX_BYTES)
        return protocol_error(c, kind == '*' ? "too big mbulk count string" : "too big bulk count string");
    if (!nl) return 0;
    if (nl[-1] != '\r' || !parse_ll(p + 1, (size_t)(nl - 1 - (p + 1)), n) || *n < min || *n > max)
        return protocol_error(c, kind == '*' ? "invalid multibulk length" : "invalid bulk length");
    c->pos = (size_t)(nl + 1 - c->in);
    return 1;
}

/* Parses the next request into argv, resuming a multibulk request where the last read ended.
   1 parsed (argc 0: an empty request), 0 incomplete, -1 protocol error. */
static int parse_request(client *c) {
    long long n;
    int r;
    if (c->multibulk == 0) {
        if (c->pos == c->in_len) return 0;
        c->argc = 0;
        if (c->in[c->pos] != '*') return parse_inline(c);
        if ((r = parse_header(c, '*', LLONG_MIN, ARGS_MAX, &n)) <= 0) return r;
        if (n <= 0) return 1;
        c->multibulk = n;
        c->bulk = -1;
    }
    while (c->multibulk > 0) {
        if (c->bulk < 0 && (r = parse_header(c, '$', 0, BULK_MAX, &c->bulk)) <= 0) return r;
        if (c->in_len - c->pos < (size_t)c->bulk + 2) return 0;
        if (memcmp(c->in + c->pos + c->bulk, "\r\n", 2) != 0)
            return protocol_error(c, "missing CRLF after bulk string");
        if (push_arg(c, c->pos, (size_t)c->bulk) < 0) return -1;
        c->pos += (size_t)c->bulk + 2;
        c->bulk = -1;
        c->multibulk--;
    }
    return 1;
}

/* Runs every complete request in the buffer, then moves the unfinished one to the front. */
static void process_input(client *c) {
    size_t i;
    while (!c->closing && !c->overflow && parse_request(c) > 0) {
        if (c->argc > 0) execute(c);
        c->start = c->pos;
    }
    if (c->in_len - c->start > REQUEST_MAX && !c->closing) protocol_error(c, "request too big");
    if (c->start == 0) return;
    memmove(c->in, c->in + c->start, c->in_len - c->start);
    for (i = 0; c->multibulk && i < c->argc; i++) c->argv[i].off -= c->start;
    c->in_len -= c->start;
    c->pos -= c->start;
    c->start = 0;
    if (c->in_len == 0) { /* an idle client keeps no buffer */
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* ---- connections ---- */
static void client_close(evl_loop *loop, client *c) {
    evl_io_stop(loop, &c->io);
    close(c->fd);
    if (c->prev) c->prev->next = c->next;
    else clients = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->in);
    free(c->out);
    free(c->argv);
    free(c);
}

static int client_watch(evl_loop *loop, client *c, int events) {
    if (events == c->events) return 0;
    c->events = events;
    return evl_io_start(loop, &c->io, events);
}

/* Sends what it can; watches for room if some is left. -1 once the client is closed. */
static int client_flush(evl_loop *loop, client *c) {
    if (c->overflow) {
        fprintf(stderr, "resp: dropping a client with over %d MiB of unread replies\n", REPLY_MAX >> 20);
        return client_close(loop, c), -1;
    }
    while (c->out_sent < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) return client_close(loop, c), -1;
        c->out_sent += (size_t)n;
    }
    if (c->out_sent == c->out_len) {
        free(c->out); /* an idle client keeps no buffer */
        c->out = NULL;
        c->out_len = c->out_sent = c->out_cap = 0;
        if (c->closing == CLOSING) {
            shutdown(c->fd, SHUT_WR);
            c->closing = DRAINING;
        }
    }
    if (client_watch(loop, c, (c->closing == CLOSING ? 0 : EVL_READ) | (c->out_len ? EVL_WRITE : 0)) < 0)
        return client_close(loop, c), -1;
    return 0;
}

static int client_read(evl_loop *loop, client *c) {
    ssize_t n;
    if (c->in_cap - c->in_len < READ_CHUNK) {
        size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
        char *p;
        while (cap - c->in_len < READ_CHUNK) cap *= 2;
        if (!(p = realloc(c->in, cap))) return client_close(loop, c), -1;
        c->in = p;
        c->in_cap = cap;
    }
    n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (n <= 0) return client_close(loop, c), -1; /* gone, perhaps in mid-request */
    c->in_len += (size_t)n;
    process_input(c);
    return client_flush(loop, c);
}

static void client_drain(evl_loop *loop, client *c) {
    char sink[4096];
    ssize_t n = read(c->fd, sink, sizeof sink);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        client_close(loop, c);
}

static void on_client(evl_loop *loop, void *arg, int events) {
    client *c = (client *)arg;
    if (c->closing == DRAINING) client_drain(loop, c);
    else if ((events & EVL_READ) && c->closing == RUNNING) client_read(loop, c);
    else if (events & EVL_WRITE) client_flush(loop, c);
}

static void client_open(evl_loop *loop, int fd) {
    static const char full[] = "-ERR max number of clients reached\r\n";
    int one = 1;
    client *c = calloc(1, sizeof *c);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c) {
        c->fd = fd;
        evl_io_init(&c->io, fd, on_client, c);
        if (client_watch(loop, c, EVL_READ) == 0) {
            if ((c->next = clients)) clients->prev = c;
            clients = c;
            return;
        }
        free(c); /* out of memory, or past FD_SETSIZE under select */
    }
    if (write(fd, full, sizeof full - 1) < 0) { /* best effort: the client is refused anyway */ }
    close(fd);
}

static void on_accept_resume(evl_loop *loop, void *arg) {
    (void)arg;
    evl_io_start(loop, &listener, EVL_READ);
}

static void on_accept(evl_loop *loop, void *arg, int events) {
    int i, fd;
    (void)arg, (void)events;
    for (i = 0; i < 64; i++) { /* a bounded batch, so a connection storm does not starve I/O */
        if ((fd = accept(listener.fd, NULL, NULL)) >= 0) {
            client_open(loop, fd);
        } else {
            /* Out of fds, the pending connection stays readable: pause instead of spinning. */
            if (errno == EMFILE || errno == ENFILE) {
                evl_io_stop(loop, &listener);
                evl_timer_start(loop, &accept_pause, EVL_MSEC(100), 0);
            }
            return;
        }
    }
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
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) return close(fd), -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("listening on %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

/* Idle connections cost one fd each: take every fd the hard limit allows. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? 65536 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---- graceful shutdown ---- */
static void on_signal(evl_loop *loop, void *arg) {
    (void)arg;
    fprintf(stderr, "resp: signal received, shutting down\n");
    evl_shutdown(loop, EVL_SEC(5));
}

/* The first step of the shutdown: stop accepting, send what is pending, close every client. */
static void on_shutdown(evl_loop *loop, void *arg) {
    (void)arg;
    evl_io_stop(loop, &listener);
    evl_timer_stop(loop, &accept_pause);
    close(listener.fd);
    while (clients) {
        client *c = clients;
        if (c->out_sent < c->out_len && write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent) < 0) {
            /* best effort: the client is closed either way */
        }
        client_close(loop, c);
    }
}

int main(int argc, char **argv) {
    evl_loop *loop;
    evl_signal sigint, sigterm;
    size_t keys;
    int fd, err;
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN); /* a peer gone away is an error from write, not a fatal signal */
    if ((fd = listen_on(argc > 1 ? atoi(argv[1]) : 6380)) < 0) {
        perror("resp: listen");
        return 1;
    }
    db.mask = 1023;
    if (!(db.buckets = calloc(db.mask + 1, sizeof *db.buckets)) ||
        (err = evl_loop_new(&loop, NULL)) < 0) {
        fprintf(stderr, "resp: cannot start: %s\n", db.buckets ? evl_strerror(err) : "out of memory");
        return 1;
    }
    db.loop = loop;
    evl_io_init(&listener, fd, on_accept, NULL);
    evl_timer_init(&accept_pause, on_accept_resume, NULL);
    evl_signal_init(&sigint, SIGINT, on_signal, NULL);
    evl_signal_init(&sigterm, SIGTERM, on_signal, NULL);
    if ((err = evl_io_start(loop, &listener, EVL_READ)) < 0 ||
        (err = evl_signal_start(loop, &sigint)) < 0 || (err = evl_signal_start(loop, &sigterm)) < 0 ||
        (err = evl_on_shutdown(loop, on_shutdown, NULL)) < 0) {
        fprintf(stderr, "resp: cannot start: %s\n", evl_strerror(err));
        return 1;
    }
    err = evl_run(loop);
    keys = db.count;
    db_flush();
    free(db.buckets);
    evl_loop_close(loop);
    printf("resp: shut down cleanly (%zu keys dropped)\n", keys);
    return err < 0 ? 1 : 0;
}
