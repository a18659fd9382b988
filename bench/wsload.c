/* wsload: one load-generator process of bench/loadgen.py, holding its share of the websockets.

   Why C: at 100,000 deliveries/s the Python client (an asyncio protocol on uvloop) spent about
   9 us of CPU per received frame, as much as the server it measures, and on a 2-core machine
   it took half of the cores the server needs. This one reads each socket with one syscall and
   walks the frame in place.

   It speaks Hearth's wire protocol (RFC 6455, hearth.v1.msgpack or hearth.v1.json), the same as
   the reference server does. The coordinator feeds it a spec on stdin, one item per line:

       target HOST PORT PATH        encoding msgpack|json      run PREFIX     wid N
       concurrency N                quiet SECONDS
       client TOKEN ROOM [rate R PHASE | window N]   (one per connection, in order)
       end

   then commands, one per line: `go T0 DURATION DRAIN`, `drop T`, `result`, `quit`. It answers
   `{"ready": ...}` once every client has connected, authenticated and joined, and one JSON
   result line for `result` once the go (and drop) phases are over. Times are CLOCK_MONOTONIC
   seconds, shared by every process on the machine (Python's time.monotonic()).

   Build: cc -O2 -o wsload wsload.c -lm (bench/loadgen.py does it when the source is newer). */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OPEN_TIMEOUT 120.0 /* seconds for connect + upgrade + auth + join, as before */
#define OPEN_ATTEMPTS 5
#define HIST_SCALE 200.0 /* buckets of 0.5 %: int(log(microseconds) * 200), as loadgen.Hist */
#define HIST_N 6000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) die("out of memory");
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Growable bytes, counters by name, histograms */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void buf_printf(Buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_put(b, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

typedef struct {
    char *name[64];
    long count[64];
    int n;
} Counter;

static void count(Counter *c, const char *name, size_t len) {
    for (int i = 0; i < c->n; i++)
        if (strlen(c->name[i]) == len && memcmp(c->name[i], name, len) == 0) {
            c->count[i]++;
            return;
        }
    if (c->n == 64) return; /* a run never has this many kinds of error */
    c->name[c->n] = strndup(name, len);
    c->count[c->n++] = 1;
}

typedef struct {
    long b[HIST_N];
    double max;
} Hist;

static void hist_add(Hist *h, double seconds) {
    double us = seconds * 1e6;
    int k = us > 1.0 ? (int)(log(us) * HIST_SCALE) : 0;
    h->b[k < HIST_N ? k : HIST_N - 1]++;
    if (seconds > h->max) h->max = seconds;
}

/* A JSON string of text we made or checked (names, ids, error codes): no escaping needed. */
static void json_counter(Buf *o, const char *key, const Counter *c) {
    buf_printf(o, "\"%s\": {", key);
    for (int i = 0; i < c->n; i++) buf_printf(o, "%s\"%s\": %ld", i ? ", " : "", c->name[i], c->count[i]);
    buf_put(o, "}", 1);
}

static void json_hist(Buf *o, const char *key, const Hist *h) {
    buf_printf(o, "\"%s\": {\"b\": {", key);
    int first = 1;
    for (int k = 0; k < HIST_N; k++)
        if (h->b[k]) {
            buf_printf(o, "%s\"%d\": %ld", first ? "" : ", ", k, h->b[k]);
            first = 0;
        }
    buf_printf(o, "}, \"max\": %.9f}", h->max);
}

/* ---------------------------------------------------------------------------------------- */
/* Reading the server's frames: one cursor over msgpack or JSON, walked in place */

typedef struct {
    const uint8_t *p, *end;
    int json;
} Cur;

typedef struct {
    const char *s;
    size_t n;
} Str;

static int str_is(Str s, const char *lit) { return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0; }

static void js_ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int mp_be(Cur *c, int n, uint64_t *v) {
    if (c->end - c->p < n) return 0;
    *v = 0;
    for (int i = 0; i < n; i++) *v = (*v << 8) | *c->p++;
    return 1;
}

/* Skip one value; 0 when the frame is malformed. */
static int skip(Cur *c);

static int js_skip_str(Cur *c) {
    if (c->p >= c->end || *c->p != '"') return 0;
    for (c->p++; c->p < c->end; c->p++) {
        if (*c->p == '\\') c->p++;
        else if (*c->p == '"') {
            c->p++;
            return 1;
        }
    }
    return 0;
}

static int skip(Cur *c) {
    if (c->json) {
        js_ws(c);
        if (c->p >= c->end) return 0;
        uint8_t ch = *c->p;
        if (ch == '"') return js_skip_str(c);
        if (ch == '{' || ch == '[') {
            uint8_t close = ch == '{' ? '}' : ']';
            c->p++;
            js_ws(c);
            if (c->p < c->end && *c->p == close) {
                c->p++;
                return 1;
            }
            for (;;) {
                if (ch == '{') {
                    js_ws(c);
                    if (!js_skip_str(c)) return 0;
                    js_ws(c);
                    if (c->p >= c->end || *c->p++ != ':') return 0;
                }
                if (!skip(c)) return 0;
                js_ws(c);
                if (c->p >= c->end) return 0;
                if (*c->p == ',') {
                    c->p++;
                    continue;
                }
                if (*c->p++ == close) return 1;
                return 0;
            }
        }
        while (c->p < c->end && !strchr(",}] \n\r\t", *c->p)) c->p++; /* number, true, false, null */
        return 1;
    }
    if (c->p >= c->end) return 0;
    uint8_t t = *c->p++;
    uint64_t n = 0;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 1;
    if ((t & 0xe0) == 0xa0) n = t & 0x1f;
    else if ((t & 0xf0) == 0x80 || (t & 0xf0) == 0x90) {
        uint64_t items = (t & 0x0f) * ((t & 0xf0) == 0x80 ? 2 : 1);
        for (uint64_t i = 0; i < items; i++)
            if (!skip(c)) return 0;
        return 1;
    } else
        switch (t) {
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: case 0xca: n = 4; break;
        case 0xcf: case 0xd3: case 0xcb: n = 8; break;
        case 0xd9: case 0xc4: if (!mp_be(c, 1, &n)) return 0; break;
        case 0xda: case 0xc5: if (!mp_be(c, 2, &n)) return 0; break;
        case 0xdb: case 0xc6: if (!mp_be(c, 4, &n)) return 0; break;
        case 0xd4: n = 2; break;
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xc7: if (!mp_be(c, 1, &n)) return 0; n += 1; break;
        case 0xc8: if (!mp_be(c, 2, &n)) return 0; n += 1; break;
        case 0xc9: if (!mp_be(c, 4, &n)) return 0; n += 1; break;
        case 0xdc: case 0xde: case 0xdd: case 0xdf: {
            uint64_t items;
            if (!mp_be(c, (t == 0xdc || t == 0xde) ? 2 : 4, &items)) return 0;
            if (t == 0xde || t == 0xdf) items *= 2;
            for (uint64_t i = 0; i < items; i++)
                if (!skip(c)) return 0;
            return 1;
        }
        default: return 0;
        }
    if ((uint64_t)(c->end - c->p) < n) return 0;
    c->p += n;
    return 1;
}

static int read_str(Cur *c, Str *out) {
    if (c->json) {
        js_ws(c);
        const uint8_t *start = c->p + 1;
        if (c->p < c->end && *c->p != '"') return skip(c); /* not a string: left unset */
        if (!js_skip_str(c)) return 0;
        out->s = (const char *)start, out->n = (size_t)(c->p - 1 - start); /* escapes left as they are */
        return 1;
    }
    if (c->p >= c->end) return 0;
    uint8_t t = *c->p;
    uint64_t n;
    if ((t & 0xe0) == 0xa0) {
        c->p++;
        n = t & 0x1f;
    } else if (t == 0xd9 || t == 0xda || t == 0xdb) {
        c->p++;
        if (!mp_be(c, t == 0xd9 ? 1 : t == 0xda ? 2 : 4, &n)) return 0;
    } else
        return skip(c); /* not a string: left unset */
    if ((uint64_t)(c->end - c->p) < n) return 0;
    out->s = (const char *)c->p, out->n = n;
    c->p += n;
    return 1;
}

static int read_int(Cur *c, long *out) {
    if (c->json) {
        js_ws(c);
        char *e;
        long v = strtol((const char *)c->p, &e, 10); /* a NUL follows the bytes read: see on_bytes() */
        if (e == (const char *)c->p || (*e == '.' || *e == 'e' || *e == 'E')) return skip(c); /* not an int */
        c->p = (const uint8_t *)e;
        *out = v;
        return 1;
    }
    if (c->p >= c->end) return 0;
    uint8_t t = *c->p;
    uint64_t v;
    if (t <= 0x7f || t >= 0xe0) {
        c->p++;
        *out = (int8_t)t;
        return 1;
    }
    if (t < 0xcc || t > 0xd3) return skip(c); /* not an int */
    c->p++;
    int n = 1 << ((t - 0xcc) & 3);
    if (!mp_be(c, n, &v)) return 0;
    *out = (long)v;
    if (t >= 0xd0 && n < 8 && v >> (8 * n - 1)) *out -= 1L << (8 * n); /* a negative int */
    return 1;
}

/* Maps and arrays: begin, then next() until it says 0. A msgpack container knows its length;
   a JSON one ends at its bracket. */
typedef struct {
    Cur *c;
    long left; /* msgpack: entries left; JSON: -1 before the first, then 0 */
    int ok;
} It;

static int begin(It *it, Cur *c, int map) {
    it->c = c, it->ok = 1;
    if (c->json) {
        js_ws(c);
        if (c->p >= c->end || *c->p != (map ? '{' : '[')) return it->ok = 0;
        c->p++;
        it->left = -1;
        return 1;
    }
    if (c->p >= c->end) return it->ok = 0;
    uint8_t t = *c->p++;
    uint64_t n;
    if (map && (t & 0xf0) == 0x80) n = t & 0x0f;
    else if (!map && (t & 0xf0) == 0x90) n = t & 0x0f;
    else if (t == (map ? 0xde : 0xdc)) {
        if (!mp_be(c, 2, &n)) return it->ok = 0;
    } else if (t == (map ? 0xdf : 0xdd)) {
        if (!mp_be(c, 4, &n)) return it->ok = 0;
    } else
        return it->ok = 0;
    it->left = (long)n;
    return 1;
}

/* The next entry: for a map, its key in *key and the cursor on its value. The caller reads or
   skips the value before calling next() again. */
static int next(It *it, Str *key) {
    Cur *c = it->c;
    if (!it->ok) return 0;
    if (c->json) {
        js_ws(c);
        if (c->p >= c->end) return it->ok = 0;
        if (*c->p == '}' || *c->p == ']') {
            c->p++;
            return 0;
        }
        if (it->left == 0) {
            if (*c->p != ',') return it->ok = 0;
            c->p++;
        }
        it->left = 0;
        if (key) {
            if (!read_str(c, key)) return it->ok = 0;
            js_ws(c);
            if (c->p >= c->end || *c->p++ != ':') return it->ok = 0;
        }
        return 1;
    }
    if (it->left == 0) return 0;
    it->left--;
    if (key && !read_str(c, key)) return it->ok = 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Writing our frames: a few keys of strings and ints */

typedef struct {
    uint8_t b[2048];
    size_t n;
    int json, fields;
} Out;

static void out_raw(Out *o, const void *s, size_t n) {
    if (o->n + n > sizeof o->b) die("a frame of ours is too large");
    memcpy(o->b + o->n, s, n);
    o->n += n;
}

static void out_begin(Out *o, int json, int fields) {
    o->n = 0, o->json = json, o->fields = 0;
    uint8_t h = (uint8_t)(0x80 | fields);
    out_raw(o, json ? (const void *)"{" : (const void *)&h, 1);
}

static void mp_str(Out *o, const char *s, size_t n) {
    uint8_t h[3];
    if (n < 32) h[0] = (uint8_t)(0xa0 | n), out_raw(o, h, 1);
    else if (n < 256) h[0] = 0xd9, h[1] = (uint8_t)n, out_raw(o, h, 2);
    else h[0] = 0xda, h[1] = (uint8_t)(n >> 8), h[2] = (uint8_t)n, out_raw(o, h, 3);
    out_raw(o, s, n);
}

static void out_key(Out *o, const char *key) {
    if (o->json) {
        if (o->fields) out_raw(o, ",", 1);
        out_raw(o, "\"", 1), out_raw(o, key, strlen(key)), out_raw(o, "\":", 2);
    } else
        mp_str(o, key, strlen(key));
    o->fields++;
}

static void out_str(Out *o, const char *key, const char *s, size_t n) {
    out_key(o, key);
    if (o->json) out_raw(o, "\"", 1), out_raw(o, s, n), out_raw(o, "\"", 1);
    else mp_str(o, s, n);
}

static void out_int(Out *o, const char *key, long v) {
    out_key(o, key);
    if (o->json) {
        char t[32];
        out_raw(o, t, (size_t)snprintf(t, sizeof t, "%ld", v));
    } else if (v >= 0 && v < 128) {
        out_raw(o, (uint8_t[]){(uint8_t)v}, 1);
    } else {
        uint8_t h[9] = {0xd3};
        for (int i = 0; i < 8; i++) h[1 + i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
        out_raw(o, h, 9);
    }
}

static void out_end(Out *o) {
    if (o->json) out_raw(o, "}", 1);
}

/* ---------------------------------------------------------------------------------------- */
/* Clients */

enum { ST_IDLE, ST_CONNECTING, ST_UPGRADING, ST_AUTHING, ST_JOINING, ST_OPEN, ST_CLOSING, ST_RETRY };
enum { SEND_NONE, SEND_RATE, SEND_WINDOW };

typedef struct {
    long fid;
    double t;
} Pending;

typedef struct {
    char *id;
    size_t len;
    long acked, max_seq;
} Room;

typedef struct {
    int idx, fd, state, room;
    char *token;
    /* sending */
    int send_kind, window;
    double rate, phase, next_send;
    int sending;
    Pending pend[64];
    int pend_n;
    /* protocol */
    long next_id, auth_id, join_id, last;
    int has_last, close_code, upgraded_once;
    /* opening */
    int resume, attempt, in_open;
    double retry_at, deadline, t_connected, t_upgraded, t_authed;
    /* bytes held over */
    uint8_t *in, *out;
    size_t in_n, in_cap, out_n, out_cap;
    int want_out;
} Client;

static struct {
    char host[64], path[256], run[64];
    int port, json, wid, concurrency;
    double quiet;
    struct sockaddr_in addr;
    Client *c;
    int nc, *senders, nsenders; /* senders: the indices of the clients that send */
    Room *rooms;
    int nrooms;
    int ep;
    /* an open_all: clients waiting for a slot, and how many are still being opened */
    int *queue, qhead, qlen, opening, open_left, open_phase; /* 0 none, 1 initial, 2 resume */
    double open_t0;
    /* go */
    int go_active, drop_active, want_result, senders_done;
    double t0, t_end, drain, deadline, next_due;
    /* stats */
    long received, replayed, gaps, dups, sent, pending;
    double last_arrival;
    Counter errors, closes, connect_errors;
    Hist lat, ack;
    Buf phases;
    int nphases;
} G;

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint32_t rand32(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static void set_events(Client *c, int want_out) {
    if (c->fd < 0 || c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)c->idx};
    epoll_ctl(G.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

static void write_bytes(Client *c, const uint8_t *p, size_t n) {
    if (c->fd < 0) return;
    if (c->out_n == 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) w = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : (ssize_t)n; /* lost: read sees it */
        p += w, n -= (size_t)w;
        if (n == 0) return;
    }
    if (c->out_n + n > c->out_cap) c->out = xrealloc(c->out, c->out_cap = (c->out_n + n) * 2);
    memcpy(c->out + c->out_n, p, n);
    c->out_n += n;
    set_events(c, 1);
}

static void flush_out(Client *c) {
    ssize_t w = send(c->fd, c->out, c->out_n, MSG_NOSIGNAL);
    if (w < 0) w = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : (ssize_t)c->out_n;
    memmove(c->out, c->out + w, c->out_n - (size_t)w);
    c->out_n -= (size_t)w;
    if (c->out_n == 0) set_events(c, 0);
}

/* One masked frame (clients must mask). */
static void send_frame(Client *c, int opcode, const uint8_t *payload, size_t n) {
    uint8_t f[2048 + 14];
    size_t h = 2;
    if (n + 14 > sizeof f) die("a frame of ours is too large");
    f[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) f[1] = (uint8_t)(0x80 | n);
    else f[1] = 0x80 | 126, f[2] = (uint8_t)(n >> 8), f[3] = (uint8_t)n, h = 4;
    uint32_t m = rand32();
    memcpy(f + h, &m, 4);
    const uint8_t *mask = f + h;
    for (size_t i = 0; i < n; i++) f[h + 4 + i] = payload[i] ^ mask[i & 3];
    write_bytes(c, f, h + 4 + n);
}

static void send_out(Client *c, Out *o) {
    out_end(o);
    send_frame(c, G.json ? 0x1 : 0x2, o->b, o->n);
}

static int room_is(int room, Str s) { return s.n == G.rooms[room].len && memcmp(s.s, G.rooms[room].id, s.n) == 0; }

static void send_one(Client *c, double now) {
    Out o;
    char text[32], cid[128];
    if (c->pend_n == (int)(sizeof c->pend / sizeof c->pend[0])) return; /* far behind: wait for acks */
    long fid = ++c->next_id;
    Room *r = &G.rooms[c->room];
    c->pend[c->pend_n++] = (Pending){fid, now};
    G.pending++, G.sent++;
    int tn = snprintf(text, sizeof text, "%.9f", now);
    int cn = snprintf(cid, sizeof cid, "%s%d.%d.%ld", G.run, G.wid, c->idx, fid);
    out_begin(&o, G.json, 5);
    out_int(&o, "id", fid);
    out_str(&o, "op", "send", 4);
    out_str(&o, "room", r->id, r->len);
    out_str(&o, "text", text, (size_t)tn);
    out_str(&o, "client_id", cid, (size_t)cn);
    send_out(c, &o);
}

static void track(Client *c, long seq) {
    long last = c->has_last ? c->last : 0;
    if (seq <= last) {
        G.dups++;
        return;
    }
    G.gaps += seq - last - 1;
    c->last = seq, c->has_last = 1;
}

static void close_fd(Client *c) {
    if (c->fd >= 0) {
        epoll_ctl(G.ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1, c->in_n = c->out_n = 0, c->want_out = 0;
}

static void count_close(Client *c, int code) {
    if (c->close_code) return;
    c->close_code = code;
    char t[16];
    count(&G.closes, t, (size_t)snprintf(t, sizeof t, "%d", code));
}

static void start_next_open(double now);

static void open_finished(Client *c, int ok, double now) {
    c->in_open = 0;
    G.opening--, G.open_left--;
    if (ok && G.open_phase == 2) {
        double t0 = G.open_t0;
        buf_printf(&G.phases, "%s[%.6f, %.6f, %.6f, %.6f]", G.nphases++ ? ", " : "", c->t_connected - t0,
                   c->t_upgraded - t0, c->t_authed - t0, now - t0);
    }
    start_next_open(now);
}

static void open_failed(Client *c, const char *why, size_t n, double now) {
    count(&G.connect_errors, why, n);
    close_fd(c);
    G.pending -= c->pend_n, c->pend_n = 0;
    if (++c->attempt < OPEN_ATTEMPTS) {
        c->state = ST_RETRY;
        c->retry_at = now + 0.2 * c->attempt;
    } else {
        c->state = ST_IDLE;
        open_finished(c, 0, now);
    }
}

static void connect_client(Client *c, double now) {
    c->close_code = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        char t[64];
        open_failed(c, t, (size_t)snprintf(t, sizeof t, "OSError:socket %s", strerror(errno)), now);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio's transports do */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)c->idx};
    c->want_out = 1;
    epoll_ctl(G.ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->state = ST_CONNECTING;
    c->deadline = now + OPEN_TIMEOUT;
    if (connect(c->fd, (struct sockaddr *)&G.addr, sizeof G.addr) < 0 && errno != EINPROGRESS) {
        char t[64];
        open_failed(c, t, (size_t)snprintf(t, sizeof t, "OSError:connect %s", strerror(errno)), now);
    }
}

static void start_next_open(double now) {
    while (G.opening < G.concurrency && G.qhead < G.qlen) {
        Client *c = &G.c[G.queue[G.qhead++]];
        G.opening++;
        c->in_open = 1, c->attempt = 0;
        connect_client(c, now);
    }
}

static void open_all(int *idx, int n, int resume, double t0, int phase) {
    G.queue = xrealloc(G.queue, sizeof(int) * (size_t)(n ? n : 1));
    memcpy(G.queue, idx, sizeof(int) * (size_t)n);
    G.qhead = 0, G.qlen = n, G.open_left = n, G.open_phase = phase, G.open_t0 = t0;
    for (int i = 0; i < n; i++) G.c[idx[i]].resume = resume;
    start_next_open(now_s());
}

static void on_connected(Client *c, double now) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        char t[64];
        open_failed(c, t, (size_t)snprintf(t, sizeof t, "OSError:connect %s", strerror(err)), now);
        return;
    }
    c->t_connected = now;
    char req[1024], key[25];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 22; i++) key[i] = b64[rand32() % 64];
    memcpy(key + 22, "==", 3); /* 16 random bytes, base64: 22 characters and the padding */
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     G.path, G.host, G.port, key, G.json ? "hearth.v1.json" : "hearth.v1.msgpack");
    c->state = ST_UPGRADING;
    set_events(c, 0);
    write_bytes(c, (const uint8_t *)req, (size_t)n);
}

static void send_auth(Client *c) {
    Out o;
    c->auth_id = ++c->next_id;
    out_begin(&o, G.json, 3);
    out_int(&o, "id", c->auth_id);
    out_str(&o, "op", "auth", 4);
    out_str(&o, "token", c->token, strlen(c->token));
    send_out(c, &o);
}

static void send_join(Client *c) {
    Out o;
    Room *r = &G.rooms[c->room];
    c->join_id = ++c->next_id;
    out_begin(&o, G.json, c->resume ? 4 : 3);
    out_int(&o, "id", c->join_id);
    out_str(&o, "op", "join", 4);
    out_str(&o, "room", r->id, r->len);
    if (c->resume) out_int(&o, "since", c->has_last ? c->last : 0);
    send_out(c, &o);
}

/* The join reply: replayed events first, then the room's seq (a hole the server did not fill
   is a gap). */
static int apply_join(Client *c, Cur *res) {
    It m, a, e;
    Str k;
    long seq = -1;
    if (!begin(&m, res, 1)) return 0;
    while (next(&m, &k)) {
        if (str_is(k, "seq")) {
            if (!read_int(res, &seq)) return 0;
        } else if (str_is(k, "events")) {
            if (!begin(&a, res, 0)) return 0;
            while (next(&a, NULL)) {
                long eseq = -1;
                Str ev = {0};
                if (!begin(&e, res, 1)) return 0;
                while (next(&e, &k)) {
                    if (str_is(k, "seq")) {
                        if (!read_int(res, &eseq)) return 0;
                    } else if (str_is(k, "ev")) {
                        if (!read_str(res, &ev)) return 0;
                    } else if (!skip(res))
                        return 0;
                }
                if (eseq >= 0) {
                    track(c, eseq);
                    G.replayed += str_is(ev, "message");
                }
            }
            if (!a.ok) return 0;
        } else if (!skip(res))
            return 0;
    }
    if (!m.ok || seq < 0) return 0;
    if (!c->has_last) c->last = seq, c->has_last = 1;
    else if (seq > c->last) G.gaps += seq - c->last, c->last = seq;
    return 1;
}

static void on_ack(Client *c, int i, int ok, Cur *res, Str code, double now) {
    Room *r = &G.rooms[c->room];
    double t = c->pend[i].t;
    memmove(c->pend + i, c->pend + i + 1, sizeof(Pending) * (size_t)(c->pend_n - i - 1));
    c->pend_n--, G.pending--;
    if (ok) {
        It m;
        Str k;
        long seq = -1;
        r->acked++;
        hist_add(&G.ack, now - t);
        if (begin(&m, res, 1))
            while (next(&m, &k))
                if (str_is(k, "seq") ? !read_int(res, &seq) : !skip(res)) break;
        if (seq > r->max_seq) r->max_seq = seq;
    } else
        count(&G.errors, code.s ? code.s : "None", code.s ? code.n : 4);
    if (c->send_kind == SEND_WINDOW && c->sending && now < G.t_end && c->state == ST_OPEN) send_one(c, now);
}

static void on_frame(Client *c, const uint8_t *p, size_t n, double now) {
    Cur cur = {p, p + n, G.json};
    It m;
    Str k, ev = {0}, room = {0}, cid = {0}, text = {0}, code = {0};
    long seq = -1, id = -1;
    int has_result = 0, has_error = 0;
    Cur res = {0};
    if (!begin(&m, &cur, 1)) return;
    while (next(&m, &k)) {
        int ok = 1;
        if (str_is(k, "ev")) ok = read_str(&cur, &ev);
        else if (str_is(k, "room")) ok = read_str(&cur, &room);
        else if (str_is(k, "seq")) ok = read_int(&cur, &seq);
        else if (str_is(k, "client_id")) ok = read_str(&cur, &cid);
        else if (str_is(k, "text")) ok = read_str(&cur, &text);
        else if (str_is(k, "id")) ok = read_int(&cur, &id);
        else if (str_is(k, "result")) {
            has_result = 1, res = cur;
            ok = skip(&cur);
            res.end = cur.p;
        } else if (str_is(k, "error")) {
            It e;
            has_error = 1;
            if ((ok = begin(&e, &cur, 1)))
                while (next(&e, &k))
                    if (str_is(k, "code") ? !read_str(&cur, &code) : !skip(&cur)) break;
            ok = e.ok;
        } else
            ok = skip(&cur);
        if (!ok) return;
    }
    if (ev.s) {
        if (str_is(ev, "message") && seq >= 0 && room_is(c->room, room)) {
            size_t rl = strlen(G.run);
            track(c, seq);
            if (cid.n >= rl && memcmp(cid.s, G.run, rl) == 0 && text.n < 40) {
                char t[48];
                memcpy(t, text.s, text.n);
                t[text.n] = 0;
                G.received++;
                G.last_arrival = now;
                hist_add(&G.lat, now - strtod(t, NULL));
            }
        }
        return;
    }
    if (!has_result && !has_error) return;
    for (int i = 0; i < c->pend_n; i++)
        if (c->pend[i].fid == id) {
            on_ack(c, i, has_result, &res, code, now);
            return;
        }
    if (id == c->auth_id && c->state == ST_AUTHING) {
        if (!has_result) {
            char t[96];
            open_failed(c, t, (size_t)snprintf(t, sizeof t, "RuntimeError:auth: %.*s", (int)code.n, code.s), now);
            return;
        }
        c->t_authed = now;
        c->state = ST_JOINING;
        send_join(c);
    } else if (id == c->join_id && c->state == ST_JOINING) {
        if (!has_result) {
            char t[96];
            open_failed(c, t, (size_t)snprintf(t, sizeof t, "RuntimeError:join: %.*s", (int)code.n, code.s), now);
            return;
        }
        if (!apply_join(c, &res)) {
            open_failed(c, "RuntimeError:join: unreadable reply", 35, now);
            return;
        }
        c->state = ST_OPEN;
        open_finished(c, 1, now);
    }
}

/* Hand on every whole frame in p[0..n); return where the first partial one starts. */
static size_t frames(Client *c, const uint8_t *p, size_t n, double now) {
    size_t pos = 0;
    while (n - pos >= 2 && c->fd >= 0) {
        int opcode = p[pos] & 0x0f;
        uint64_t size = p[pos + 1] & 0x7f;
        size_t at = pos + 2;
        if (size == 126) {
            if (n - at < 2) break;
            size = (uint64_t)p[at] << 8 | p[at + 1], at += 2;
        } else if (size == 127) {
            if (n - at < 8) break;
            size = 0;
            for (int i = 0; i < 8; i++) size = size << 8 | p[at + i];
            at += 8;
        }
        if (size > n - at) break;
        pos = at + size;
        if (opcode == 0x1 || opcode == 0x2) on_frame(c, p + at, size, now); /* never masked nor fragmented */
        else if (opcode == 0x9) send_frame(c, 0xA, p + at, size);
        else if (opcode == 0x8) { /* answer the close; the server then closes the TCP connection */
            int code = size >= 2 ? (p[at] << 8 | p[at + 1]) : 1005;
            send_frame(c, 0x8, p + at, size >= 2 ? 2 : 0);
            count_close(c, code);
            if (c->state != ST_OPEN && c->in_open) {
                open_failed(c, "ConnectionError:closed", 22, now);
                break;
            }
            c->state = ST_CLOSING;
        }
    }
    return pos;
}

/* Bytes arrived: the upgrade's answer, then frames. Frames are parsed in the read buffer
   itself; only a partial frame at its end is copied, to wait for the rest. A NUL follows the
   bytes so that strtol on a JSON number never runs past them. */
static void on_bytes(Client *c, uint8_t *p, size_t n, double now) {
    if (c->in_n) {
        if (c->in_n + n + 1 > c->in_cap) c->in = xrealloc(c->in, c->in_cap = (c->in_n + n) * 2 + 1);
        memcpy(c->in + c->in_n, p, n);
        c->in_n += n;
        p = c->in, n = c->in_n;
    }
    p[n] = 0;
    size_t used = 0;
    if (c->state == ST_UPGRADING) {
        uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) {
            used = 0;
            goto keep;
        }
        if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
            char t[96];
            uint8_t *eol = memmem(p, n, "\r\n", 2);
            int len = (int)(eol - p) < 60 ? (int)(eol - p) : 60;
            for (int i = 0; i < len; i++)
                if (p[i] == '"' || p[i] == '\\' || p[i] < 0x20) p[i] = ' ';
            open_failed(c, t, (size_t)snprintf(t, sizeof t, "HandshakeFailed:%.*s", len, (char *)p), now);
            return;
        }
        c->t_upgraded = now;
        c->upgraded_once = 1;
        c->state = ST_AUTHING;
        send_auth(c);
        used = (size_t)(end + 4 - p);
    }
    used += frames(c, p + used, n - used, now);
    if (c->fd < 0) return;
keep:
    if (used < n) {
        size_t left = n - used;
        if (p != c->in) {
            if (left + 1 > c->in_cap) c->in = xrealloc(c->in, c->in_cap = left * 2 + 1);
            memcpy(c->in, p + used, left);
        } else
            memmove(c->in, c->in + used, left);
        c->in_n = left;
    } else
        c->in_n = 0;
}

static void on_lost(Client *c, double now) {
    if (c->upgraded_once) count_close(c, 1006);
    if (c->in_open) {
        open_failed(c, "ConnectionError:closed", 22, now);
        return;
    }
    close_fd(c);
    c->state = ST_IDLE;
}

static uint8_t rbuf[1 << 16];

static void on_event(Client *c, uint32_t events, double now) {
    if (c->state == ST_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, now);
        return;
    }
    if ((events & EPOLLOUT) && c->out_n) flush_out(c);
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    for (;;) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf - 1, 0);
        if (r > 0) {
            on_bytes(c, rbuf, (size_t)r, now);
            if (c->fd < 0 || r < (ssize_t)sizeof rbuf - 1) return;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        on_lost(c, now);
        return;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Phases and the result */

static void say(Buf *b) {
    buf_put(b, "\n", 1);
    fwrite(b->p, 1, b->n, stdout);
    fflush(stdout);
    free(b->p);
}

static void say_result(void) {
    Buf o = {0};
    buf_printf(&o, "{\"received\": %ld, \"replayed\": %ld, \"gaps\": %ld, \"dups\": %ld, \"sent\": %ld, ",
               G.received, G.replayed, G.gaps, G.dups, G.sent);
    buf_put(&o, "\"acked\": {", 10);
    int first = 1;
    for (int r = 0; r < G.nrooms; r++)
        if (G.rooms[r].acked) buf_printf(&o, "%s\"%s\": %ld", first ? "" : ", ", G.rooms[r].id, G.rooms[r].acked), first = 0;
    buf_put(&o, "}, \"max_seq\": {", 15);
    first = 1;
    for (int r = 0; r < G.nrooms; r++)
        if (G.rooms[r].max_seq > 0)
            buf_printf(&o, "%s\"%s\": %ld", first ? "" : ", ", G.rooms[r].id, G.rooms[r].max_seq), first = 0;
    buf_put(&o, "}, ", 3);
    json_counter(&o, "errors", &G.errors);
    buf_put(&o, ", ", 2);
    json_counter(&o, "closes", &G.closes);
    buf_put(&o, ", ", 2);
    json_hist(&o, "lat", &G.lat);
    buf_put(&o, ", ", 2);
    json_hist(&o, "ack", &G.ack);
    buf_put(&o, ", \"phases\": [", 13);
    if (G.phases.n) buf_put(&o, G.phases.p, G.phases.n);
    buf_put(&o, "], \"min_last\": {", 16);
    long *min_last = calloc((size_t)G.nrooms, sizeof(long));
    char *has = calloc((size_t)G.nrooms, 1);
    int open = 0;
    for (int i = 0; i < G.nc; i++) {
        Client *c = &G.c[i];
        open += c->state == ST_OPEN;
        if (c->has_last && (!has[c->room] || c->last < min_last[c->room])) min_last[c->room] = c->last, has[c->room] = 1;
    }
    first = 1;
    for (int r = 0; r < G.nrooms; r++)
        if (has[r]) buf_printf(&o, "%s\"%s\": %ld", first ? "" : ", ", G.rooms[r].id, min_last[r]), first = 0;
    free(min_last), free(has);
    buf_put(&o, "}, ", 3);
    json_counter(&o, "connect_errors", &G.connect_errors);
    buf_printf(&o, ", \"open\": %d}", open);
    say(&o);
}

static void start_go(double t0, double duration, double drain) {
    G.t0 = t0, G.t_end = t0 + duration, G.drain = drain, G.go_active = 1, G.senders_done = 0;
    G.next_due = t0;
    for (int i = 0; i < G.nsenders; i++) {
        Client *c = &G.c[G.senders[i]];
        c->sending = 1;
        c->next_send = c->send_kind == SEND_RATE ? t0 + c->phase / c->rate : t0;
    }
}

/* Senders due now send; returns the next time one is due. Rate senders that fall more than a
   second behind start again from now rather than burst. */
static double fire_senders(double now) {
    double due = INFINITY;
    for (int i = 0; i < G.nsenders; i++) {
        Client *c = &G.c[G.senders[i]];
        if (!c->sending) continue;
        if (c->state != ST_OPEN || c->next_send >= G.t_end) {
            c->sending = c->send_kind == SEND_WINDOW && c->state == ST_OPEN && now < G.t_end;
            continue;
        }
        if (c->next_send <= now) {
            if (c->send_kind == SEND_WINDOW) { /* the window opens at t0; acks keep it full */
                for (int k = 0; k < c->window; k++) send_one(c, now);
                c->next_send = INFINITY;
                continue;
            }
            if (now - c->next_send > 1.0) c->next_send = now;
            send_one(c, now);
            c->next_send += 1.0 / c->rate;
        }
        if (c->next_send < due) due = c->next_send;
    }
    return due;
}

static void tick_go(double now) {
    if (!G.go_active || now < G.t0) return;
    if (now >= G.next_due) G.next_due = fire_senders(now);
    if (now < G.t_end) return;
    if (!G.senders_done) {
        G.senders_done = 1;
        for (int i = 0; i < G.nsenders; i++) G.c[G.senders[i]].sending = 0;
        G.deadline = now + G.drain;
    }
    double quiet = G.quiet < G.drain ? G.quiet : G.drain;
    double idle = now - (G.last_arrival > G.t_end ? G.last_arrival : G.t_end);
    if (now >= G.deadline || (G.pending == 0 && idle >= quiet)) G.go_active = 0;
}

static void drop_and_resume(double t) {
    int *idx = malloc(sizeof(int) * (size_t)(G.nc ? G.nc : 1)), n = 0;
    for (int i = 0; i < G.nc; i++) {
        Client *c = &G.c[i];
        if (c->send_kind != SEND_NONE) continue;
        close_fd(c); /* the network goes away: no close handshake, and no close is counted */
        c->state = ST_IDLE, c->close_code = 0, c->upgraded_once = 0;
        idx[n++] = i;
    }
    G.drop_active = 1;
    open_all(idx, n, 1, t, 2);
    free(idx);
}

static void scan_opening(double now) {
    for (int i = 0; i < G.nc; i++) {
        Client *c = &G.c[i];
        if (!c->in_open) continue;
        if (c->state == ST_RETRY && now >= c->retry_at) connect_client(c, now);
        else if (c->state != ST_RETRY && now >= c->deadline) open_failed(c, "TimeoutError:", 13, now);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The spec and the commands */

static int find_room(const char *id) {
    for (int r = G.nrooms - 1; r >= 0; r--)
        if (strcmp(G.rooms[r].id, id) == 0) return r;
    G.rooms = xrealloc(G.rooms, sizeof(Room) * (size_t)(G.nrooms + 1));
    G.rooms[G.nrooms] = (Room){strdup(id), strlen(id), 0, 0};
    return G.nrooms++;
}

static void check_plain(const char *what, const char *s) {
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20) die("%s holds a character we do not escape", what);
}

static void read_spec(void) {
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        char a[4096], b[1024], kind[16];
        double x, y;
        if (strncmp(line, "end", 3) == 0) return;
        if (sscanf(line, "target %63s %d %255s", G.host, &G.port, G.path) == 3) continue;
        if (sscanf(line, "encoding %15s", kind) == 1) {
            G.json = strcmp(kind, "json") == 0;
            continue;
        }
        if (sscanf(line, "run %63s", G.run) == 1 || sscanf(line, "wid %d", &G.wid) == 1 ||
            sscanf(line, "concurrency %d", &G.concurrency) == 1 || sscanf(line, "quiet %lf", &G.quiet) == 1)
            continue;
        int got = sscanf(line, "client %4095s %1023s %15s %lf %lf", a, b, kind, &x, &y);
        if (got < 2) die("a spec line we do not know: %s", line);
        check_plain("a token", a), check_plain("a room id", b);
        G.c = xrealloc(G.c, sizeof(Client) * (size_t)(G.nc + 1));
        Client *c = &G.c[G.nc];
        *c = (Client){.idx = G.nc, .fd = -1, .token = strdup(a), .room = find_room(b)};
        if (got >= 4 && strcmp(kind, "rate") == 0) c->send_kind = SEND_RATE, c->rate = x, c->phase = got == 5 ? y : 0;
        else if (got >= 4 && strcmp(kind, "window") == 0) c->send_kind = SEND_WINDOW, c->window = (int)x;
        if (c->window > (int)(sizeof c->pend / sizeof c->pend[0])) die("a window of at most 64");
        if (c->send_kind != SEND_NONE) {
            G.senders = xrealloc(G.senders, sizeof(int) * (size_t)(G.nsenders + 1));
            G.senders[G.nsenders++] = G.nc;
        }
        G.nc++;
    }
    die("the spec ended before `end`");
}

static void on_command(char *line) {
    double a, b, c;
    if (sscanf(line, "go %lf %lf %lf", &a, &b, &c) == 3) start_go(a, b, c);
    else if (sscanf(line, "drop %lf", &a) == 1) drop_and_resume(a);
    else if (strncmp(line, "result", 6) == 0) G.want_result = 1;
    else if (strncmp(line, "quit", 4) == 0) exit(0);
    else die("a command we do not know: %s", line);
}

int main(void) {
    /* The generator stands in for phones on other machines: here it shares the cores with the
       server, and as a batch task it does not preempt a server in the middle of its writes. */
    struct sched_param sp = {0};
    sched_setscheduler(0, SCHED_BATCH, &sp);
    G.concurrency = 200, G.quiet = 1.0;
    read_spec();
    if (strcmp(G.host, "localhost") == 0) strcpy(G.host, "127.0.0.1");
    G.addr.sin_family = AF_INET;
    G.addr.sin_port = htons((uint16_t)G.port);
    if (inet_pton(AF_INET, G.host, &G.addr.sin_addr) != 1) die("not an IPv4 address: %s", G.host);
    rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)(now_s() * 1e9);
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(G.ep, EPOLL_CTL_ADD, 0, &sev);

    int *all = malloc(sizeof(int) * (size_t)(G.nc ? G.nc : 1));
    for (int i = 0; i < G.nc; i++) all[i] = i;
    open_all(all, G.nc, 0, 0, 1);
    free(all);

    char cmd[4096];
    size_t cmd_n = 0;
    struct epoll_event evs[512];
    double next_scan = 0;
    for (;;) {
        double now = now_s(), wait = 0.05;
        if (G.go_active) {
            double until = (now < G.t0 ? G.t0 : G.next_due) - now;
            if (until < wait) wait = until > 0 ? until : 0;
        }
        int n = epoll_wait(G.ep, evs, 512, (int)ceil(wait * 1000)), commands = 0;
        now = now_s();
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == UINT32_MAX) {
                commands = 1;
                continue;
            }
            Client *c = &G.c[evs[i].data.u32];
            if (c->fd >= 0) on_event(c, evs[i].events, now);
        }
        if (commands) { /* after the sockets' events: a drop must not meet their stale ones */
            ssize_t r = read(0, cmd + cmd_n, sizeof cmd - 1 - cmd_n);
            if (r == 0) exit(0); /* the coordinator is gone */
            cmd_n += r > 0 ? (size_t)r : 0;
            char *nl;
            while ((nl = memchr(cmd, '\n', cmd_n))) {
                *nl = 0;
                on_command(cmd);
                cmd_n -= (size_t)(nl + 1 - cmd);
                memmove(cmd, nl + 1, cmd_n);
            }
        }
        tick_go(now);
        if (G.opening && now >= next_scan) {
            scan_opening(now);
            next_scan = now + 0.05;
        }
        if (G.open_phase && G.open_left == 0) {
            if (G.open_phase == 1) {
                Buf o = {0};
                int ready = 0;
                for (int i = 0; i < G.nc; i++) ready += G.c[i].state == ST_OPEN;
                buf_printf(&o, "{\"ready\": %d, ", ready);
                json_counter(&o, "connect_errors", &G.connect_errors);
                buf_put(&o, "}", 1);
                say(&o);
            } else
                G.drop_active = 0;
            G.open_phase = 0;
        }
        if (G.want_result && !G.go_active && !G.drop_active && !G.open_phase) {
            G.want_result = 0;
            say_result();
        }
    }
}
