/* tcp_bench: a loopback-only TCP load tool for benchmarking msm-proxy against peers.
 *
 * Self-contained (libc + pthreads), epoll based, non-blocking. Every mode stops by itself
 * after its duration, and every address must be on loopback (127.0.0.0/8), or, with
 * --allow-netns, in 10.0.0.0/8 (bench/mesh: pods as network namespaces on a private bridge).
 *
 * Modes (tcp_bench MODE [options]):
 *   sink        accept connections, read and discard; prints the received rate at exit.
 *   echo        accept connections, write back what arrives; with --close-after B it closes a
 *               connection (server first, so the TIME_WAIT stays on the server side) once B
 *               bytes were echoed.
 *   throughput  --conns N connections stream --size byte writes for --duration s; the bytes are
 *               counted where they arrive: with --sink-port P the tool runs its own sink on P
 *               (the proxy's upstream) and measures received bytes, without it sent bytes.
 *   connrate    --conns C concurrent slots, each: connect, send --size bytes, read the echo up
 *               to EOF (the server closes first), close, repeat; reports connections/s.
 *   latency     --conns K connections each ping-pong a --size byte message (closed loop);
 *               reports RTT percentiles from a log-linear histogram (~0.1% resolution).
 *
 * Measurements skip a --warmup period first. Results go to stdout as one line:
 *   RESULT mode=... key=value ...
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define SINK_READ_BUF (256 * 1024)
#define ECHO_BUF 16384
#define SERVER_DEFAULT_DURATION 900.0
#define POLL_MS 50

/* ---- options and shared state ---------------------------------------------------------------- */

struct opts {
    const char *mode;
    const char *host;
    int port;
    int sink_port;
    int conns;
    int threads;
    int size;
    long close_after;
    double duration;
    double warmup;
    bool allow_netns; /* also accept 10.0.0.0/8 (network namespaces on this machine) */
};

static struct opts g_opt;
static int g_stop;      /* set once: all loops end */
static int g_measuring; /* latency: record samples only inside the window */
static struct sockaddr_in g_addr;
static uint64_t g_start_ns;

static bool stopped(void)
{
    return __atomic_load_n(&g_stop, __ATOMIC_RELAXED) != 0;
}

static void on_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
}

static void die(const char *what)
{
    fprintf(stderr, "tcp_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
    /* Sleep in short steps so a signal ends the run promptly. */
    uint64_t end = now_ns() + (uint64_t)(s * 1e9);
    while (!stopped()) {
        uint64_t t = now_ns();
        if (t >= end) {
            return;
        }
        uint64_t step = end - t < 20000000ull ? end - t : 20000000ull;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step};
        nanosleep(&ts, NULL);
    }
}

/* This process's CPU time since start, in % of one core (all threads). */
static double self_cpu_pct(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double wall = (double)(now_ns() - g_start_ns) / 1e9;
    return wall > 0 ? cpu * 100 / wall : 0;
}

static void add_u64(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static uint64_t load_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* ---- sockets --------------------------------------------------------------------------------- */

static void set_addr(struct sockaddr_in *sa, const char *host, int port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "tcp_bench: bad IPv4 address '%s'\n", host);
        exit(2);
    }
    /* Benchmarks only ever target this machine: loopback, or (--allow-netns) the private
     * addresses bench/mesh gives its network namespaces. */
    uint32_t first = ntohl(sa->sin_addr.s_addr) >> 24;
    if (first != 127 && !(g_opt.allow_netns && first == 10)) {
        fprintf(stderr, "tcp_bench: refusing non-loopback address '%s'\n", host);
        exit(2);
    }
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int listen_on(const char *host, int port)
{
    struct sockaddr_in sa;
    set_addr(&sa, host, port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket");
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        die("bind");
    }
    if (listen(fd, 4096) < 0) {
        die("listen");
    }
    return fd;
}

/* Blocking connect, then non-blocking for the epoll loop. Returns -1 on failure. */
static int connect_blocking(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die("socket");
    }
    set_nodelay(fd);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return fd;
}

static void ep_add(int ep, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl add");
    }
}

static void ep_mod(int ep, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0) {
        fprintf(stderr, "tcp_bench: pthread_create failed\n");
        exit(1);
    }
    return t;
}

/* ---- servers: sink and echo ------------------------------------------------------------------ */

enum { K_LISTENER = 1, K_CONN = 2 };

struct sconn {
    int kind;
    int fd;
    uint32_t off, have; /* echo: pending bytes in buf[off..off+have) */
    uint64_t total;     /* echo: bytes echoed */
    char buf[];
};

struct server {
    bool echo;
    int port;
    long close_after;
    uint64_t rx_bytes;
    uint64_t accepted;
    /* Set once the listeners exist: callers may connect after this. */
    int ready;
};

struct server_thread {
    struct server *srv;
    int lfd;
};

static void sconn_close(struct sconn *c)
{
    close(c->fd);
    free(c);
}

static void server_accept(struct server *srv, int ep, int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return; /* EAGAIN, or EMFILE: try again on the next event */
        }
        set_nodelay(fd);
        struct sconn *c = calloc(1, sizeof(*c) + (srv->echo ? ECHO_BUF : 0));
        if (!c) {
            close(fd);
            return;
        }
        c->kind = K_CONN;
        c->fd = fd;
        ep_add(ep, fd, EPOLLIN, c);
        add_u64(&srv->accepted, 1);
    }
}

/* Returns false when the connection was closed. */
static bool echo_flush(struct server *srv, int ep, struct sconn *c)
{
    while (c->have) {
        ssize_t w = send(c->fd, c->buf + c->off, c->have, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                ep_mod(ep, c->fd, EPOLLOUT, c);
                return true;
            }
            sconn_close(c);
            return false;
        }
        c->off += (uint32_t)w;
        c->have -= (uint32_t)w;
        c->total += (uint64_t)w;
    }
    c->off = 0;
    if (srv->close_after && c->total >= (uint64_t)srv->close_after) {
        sconn_close(c);
        return false;
    }
    return true;
}

static void echo_event(struct server *srv, int ep, struct sconn *c, uint32_t events)
{
    if (events & EPOLLOUT) {
        if (!echo_flush(srv, ep, c)) {
            return;
        }
        if (c->have) {
            return;
        }
        ep_mod(ep, c->fd, EPOLLIN, c);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->have) {
        return;
    }
    ssize_t r = read(c->fd, c->buf, ECHO_BUF);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (r <= 0) {
        sconn_close(c);
        return;
    }
    add_u64(&srv->rx_bytes, (uint64_t)r);
    c->have = (uint32_t)r;
    echo_flush(srv, ep, c);
}

static void sink_event(struct server *srv, struct sconn *c, char *scratch)
{
    /* Bounded loop per event, for fairness between connections. */
    for (int i = 0; i < 16; i++) {
        ssize_t r = read(c->fd, scratch, SINK_READ_BUF);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (r <= 0) {
            sconn_close(c);
            return;
        }
        add_u64(&srv->rx_bytes, (uint64_t)r);
        if (r < SINK_READ_BUF) {
            return;
        }
    }
}

static void *server_main(void *arg)
{
    struct server_thread *st = arg;
    struct server *srv = st->srv;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1");
    }
    struct sconn lst = {.kind = K_LISTENER, .fd = st->lfd};
    ep_add(ep, st->lfd, EPOLLIN, &lst);
    char *scratch = srv->echo ? NULL : malloc(SINK_READ_BUF);
    struct epoll_event evs[MAX_EVENTS];
    while (!stopped()) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, POLL_MS);
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (c->kind == K_LISTENER) {
                server_accept(srv, ep, c->fd);
            } else if (srv->echo) {
                echo_event(srv, ep, c, evs[i].events);
            } else {
                sink_event(srv, c, scratch);
            }
        }
    }
    /* Connections still open are released by process exit. */
    free(scratch);
    close(ep);
    return NULL;
}

/* Start <threads> server threads, each with its own SO_REUSEPORT listener. */
static pthread_t *server_start(struct server *srv, int threads)
{
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    struct server_thread *st = calloc((size_t)threads, sizeof(*st));
    if (!t || !st) {
        die("calloc");
    }
    for (int i = 0; i < threads; i++) {
        st[i].srv = srv;
        st[i].lfd = listen_on(g_opt.host, srv->port);
    }
    for (int i = 0; i < threads; i++) {
        t[i] = spawn(server_main, &st[i]);
    }
    __atomic_store_n(&srv->ready, 1, __ATOMIC_RELEASE);
    return t;
}

static int run_server(bool echo)
{
    struct server srv = {.echo = echo, .port = g_opt.port, .close_after = g_opt.close_after};
    pthread_t *t = server_start(&srv, g_opt.threads);
    uint64_t t0 = now_ns();
    sleep_s(g_opt.duration);
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < g_opt.threads; i++) {
        pthread_join(t[i], NULL);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    uint64_t rx = load_u64(&srv.rx_bytes);
    printf("RESULT mode=%s port=%d secs=%.1f accepted=%llu rx_bytes=%llu rx_gbps=%.3f\n",
           g_opt.mode, g_opt.port, secs, (unsigned long long)load_u64(&srv.accepted),
           (unsigned long long)rx, (double)rx * 8 / secs / 1e9);
    free(t);
    return 0;
}

/* ---- throughput ------------------------------------------------------------------------------ */

struct tput_thread {
    int count; /* this thread's share of the connections */
    uint64_t tx_bytes;
    uint64_t errors;
};

static void *tput_main(void *arg)
{
    struct tput_thread *tt = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1");
    }
    char *buf = malloc((size_t)g_opt.size);
    if (!buf) {
        die("malloc");
    }
    memset(buf, 'x', (size_t)g_opt.size);
    int *fds = calloc((size_t)tt->count, sizeof(int));
    int live = 0;
    for (int i = 0; i < tt->count; i++) {
        fds[i] = connect_blocking();
        if (fds[i] < 0) {
            add_u64(&tt->errors, 1);
            continue;
        }
        ep_add(ep, fds[i], EPOLLOUT, &fds[i]);
        live++;
    }
    struct epoll_event evs[MAX_EVENTS];
    while (!stopped() && live) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, POLL_MS);
        for (int i = 0; i < n; i++) {
            int *fdp = evs[i].data.ptr;
            for (int k = 0; k < 16; k++) {
                ssize_t w = send(*fdp, buf, (size_t)g_opt.size, MSG_NOSIGNAL);
                if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                    break;
                }
                if (w <= 0) {
                    add_u64(&tt->errors, 1);
                    close(*fdp);
                    *fdp = -1;
                    live--;
                    break;
                }
                add_u64(&tt->tx_bytes, (uint64_t)w);
                if (w < g_opt.size) {
                    break;
                }
            }
        }
    }
    for (int i = 0; i < tt->count; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    free(fds);
    free(buf);
    close(ep);
    return NULL;
}

static uint64_t tput_tx(struct tput_thread *tt, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++) {
        s += load_u64(&tt[i].tx_bytes);
    }
    return s;
}

static int run_throughput(void)
{
    struct server sink = {.echo = false, .port = g_opt.sink_port};
    pthread_t *st = NULL;
    if (g_opt.sink_port) {
        st = server_start(&sink, 1);
    }
    int nt = g_opt.threads < g_opt.conns ? g_opt.threads : g_opt.conns;
    struct tput_thread *tt = calloc((size_t)nt, sizeof(*tt));
    pthread_t *t = calloc((size_t)nt, sizeof(*t));
    for (int i = 0; i < nt; i++) {
        tt[i].count = g_opt.conns / nt + (i < g_opt.conns % nt ? 1 : 0);
        t[i] = spawn(tput_main, &tt[i]);
    }
    sleep_s(g_opt.warmup);
    uint64_t rx0 = load_u64(&sink.rx_bytes), tx0 = tput_tx(tt, nt), t0 = now_ns();
    sleep_s(g_opt.duration);
    uint64_t rx1 = load_u64(&sink.rx_bytes), tx1 = tput_tx(tt, nt), t1 = now_ns();
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
    uint64_t errors = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
        errors += tt[i].errors;
    }
    if (st) {
        pthread_join(st[0], NULL);
    }
    double secs = (double)(t1 - t0) / 1e9;
    /* Without our own sink, sent bytes are the best we have (bounded by socket buffers). */
    uint64_t bytes = g_opt.sink_port ? rx1 - rx0 : tx1 - tx0;
    printf("RESULT mode=throughput conns=%d secs=%.2f bytes=%llu gbps=%.3f tx_gbps=%.3f "
           "measured_at=%s sink_conns=%llu tool_cpu_pct=%.0f errors=%llu\n",
           g_opt.conns, secs, (unsigned long long)bytes, (double)bytes * 8 / secs / 1e9,
           (double)(tx1 - tx0) * 8 / secs / 1e9, g_opt.sink_port ? "sink" : "sender",
           (unsigned long long)load_u64(&sink.accepted), self_cpu_pct(),
           (unsigned long long)errors);
    free(tt);
    free(t);
    free(st);
    return errors ? 1 : 0;
}

/* ---- connection rate ------------------------------------------------------------------------- */

struct slot {
    int fd;
    int got;
    bool sent;
};

struct cr_thread {
    int slots;
    uint64_t done;
    uint64_t errors;
};

static void slot_open(int ep, struct slot *s, struct cr_thread *ct)
{
    for (;;) {
        s->got = 0;
        s->sent = false;
        s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0) {
            die("socket");
        }
        set_nodelay(s->fd);
        int r = connect(s->fd, (struct sockaddr *)&g_addr, sizeof(g_addr));
        if (r == 0 || errno == EINPROGRESS) {
            /* Edge-triggered: one OUT event when connected, then IN events. */
            ep_add(ep, s->fd, EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, s);
            return;
        }
        add_u64(&ct->errors, 1);
        close(s->fd);
        s->fd = -1;
        if (stopped()) {
            return;
        }
        if (errno == EADDRNOTAVAIL || errno == ECONNREFUSED) {
            usleep(1000); /* out of ports or not listening: back off, don't spin */
        }
    }
}

static void slot_fail(int ep, struct slot *s, struct cr_thread *ct)
{
    add_u64(&ct->errors, 1);
    close(s->fd);
    slot_open(ep, s, ct);
}

static void slot_event(int ep, struct slot *s, struct cr_thread *ct, const char *msg,
                       uint32_t events)
{
    if ((events & EPOLLOUT) && !s->sent) {
        ssize_t w = send(s->fd, msg, (size_t)g_opt.size, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            return;
        }
        if (w != g_opt.size) {
            slot_fail(ep, s, ct);
            return;
        }
        s->sent = true;
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) || !s->sent) {
        return;
    }
    char buf[4096];
    for (;;) {
        ssize_t r = read(s->fd, buf, sizeof(buf));
        if (r < 0 && errno == EAGAIN) {
            return;
        }
        if (r < 0) {
            slot_fail(ep, s, ct);
            return;
        }
        if (r == 0) {
            /* The server closed after echoing: one full exchange. */
            if (s->got != g_opt.size) {
                slot_fail(ep, s, ct);
                return;
            }
            close(s->fd);
            add_u64(&ct->done, 1);
            slot_open(ep, s, ct);
            return;
        }
        s->got += (int)r;
    }
}

static void *cr_main(void *arg)
{
    struct cr_thread *ct = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1");
    }
    char *msg = malloc((size_t)g_opt.size);
    memset(msg, 'c', (size_t)g_opt.size);
    struct slot *slots = calloc((size_t)ct->slots, sizeof(*slots));
    for (int i = 0; i < ct->slots; i++) {
        slot_open(ep, &slots[i], ct);
    }
    struct epoll_event evs[MAX_EVENTS];
    while (!stopped()) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, POLL_MS);
        for (int i = 0; i < n && !stopped(); i++) {
            slot_event(ep, evs[i].data.ptr, ct, msg, evs[i].events);
        }
    }
    for (int i = 0; i < ct->slots; i++) {
        if (slots[i].fd >= 0) {
            close(slots[i].fd);
        }
    }
    free(slots);
    free(msg);
    close(ep);
    return NULL;
}

static uint64_t cr_done(struct cr_thread *ct, int n, uint64_t *errors)
{
    uint64_t s = 0, e = 0;
    for (int i = 0; i < n; i++) {
        s += load_u64(&ct[i].done);
        e += load_u64(&ct[i].errors);
    }
    *errors = e;
    return s;
}

static int run_connrate(void)
{
    int nt = g_opt.threads < g_opt.conns ? g_opt.threads : g_opt.conns;
    struct cr_thread *ct = calloc((size_t)nt, sizeof(*ct));
    pthread_t *t = calloc((size_t)nt, sizeof(*t));
    for (int i = 0; i < nt; i++) {
        ct[i].slots = g_opt.conns / nt + (i < g_opt.conns % nt ? 1 : 0);
        t[i] = spawn(cr_main, &ct[i]);
    }
    sleep_s(g_opt.warmup);
    uint64_t e0, e1;
    uint64_t d0 = cr_done(ct, nt, &e0), t0 = now_ns();
    sleep_s(g_opt.duration);
    uint64_t d1 = cr_done(ct, nt, &e1), t1 = now_ns();
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
    }
    double secs = (double)(t1 - t0) / 1e9;
    printf("RESULT mode=connrate conns=%d size=%d secs=%.2f done=%llu cps=%.0f tool_cpu_pct=%.0f "
           "errors=%llu\n",
           g_opt.conns, g_opt.size, secs, (unsigned long long)(d1 - d0), (double)(d1 - d0) / secs,
           self_cpu_pct(), (unsigned long long)(e1 - e0));
    free(ct);
    free(t);
    return 0;
}

/* ---- latency --------------------------------------------------------------------------------- */

/* Log-linear histogram of nanoseconds: exact below 2048 ns, then 1024 sub-buckets per power of
 * two (relative error < 0.1%). */
#define H_MANT 10
#define H_LINEAR (2u << H_MANT)
#define H_BUCKETS (H_LINEAR + 54u * (1u << H_MANT))

struct hist {
    uint64_t count, sum, max;
    uint64_t b[H_BUCKETS];
};

static uint32_t h_index(uint64_t v)
{
    if (v < H_LINEAR) {
        return (uint32_t)v;
    }
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - H_MANT;
    uint64_t mant = v >> shift; /* in [1024, 2048) */
    return H_LINEAR + (uint32_t)(shift - 1) * (1u << H_MANT) + (uint32_t)(mant - (1u << H_MANT));
}

/* Midpoint of bucket <i>. */
static uint64_t h_value(uint32_t i)
{
    if (i < H_LINEAR) {
        return i;
    }
    uint32_t shift = (i - H_LINEAR) / (1u << H_MANT) + 1;
    uint64_t mant = (i - H_LINEAR) % (1u << H_MANT) + (1u << H_MANT);
    return (mant << shift) + ((1ull << shift) >> 1);
}

static void h_record(struct hist *h, uint64_t v)
{
    h->b[h_index(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max) {
        h->max = v;
    }
}

static uint64_t h_quantile(const struct hist *h, double q)
{
    if (!h->count) {
        return 0;
    }
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count) {
        rank = h->count - 1;
    }
    uint64_t seen = 0;
    for (uint32_t i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            return h_value(i) < h->max ? h_value(i) : h->max;
        }
    }
    return h->max;
}

struct pconn {
    int fd;
    int got;
    uint64_t t0;
};

struct lat_thread {
    int count;
    uint64_t errors;
    struct hist *h;
};

static bool ping(struct pconn *p, const char *msg)
{
    p->got = 0;
    p->t0 = now_ns();
    return send(p->fd, msg, (size_t)g_opt.size, MSG_NOSIGNAL) == g_opt.size;
}

static void *lat_main(void *arg)
{
    struct lat_thread *lt = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die("epoll_create1");
    }
    char *msg = malloc((size_t)g_opt.size);
    char *buf = malloc((size_t)g_opt.size);
    memset(msg, 'p', (size_t)g_opt.size);
    struct pconn *pc = calloc((size_t)lt->count, sizeof(*pc));
    int live = 0;
    for (int i = 0; i < lt->count; i++) {
        pc[i].fd = connect_blocking();
        if (pc[i].fd < 0) {
            lt->errors++;
            continue;
        }
        ep_add(ep, pc[i].fd, EPOLLIN, &pc[i]);
        if (!ping(&pc[i], msg)) {
            lt->errors++;
        }
        live++;
    }
    struct epoll_event evs[MAX_EVENTS];
    while (!stopped() && live) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, POLL_MS);
        for (int i = 0; i < n; i++) {
            struct pconn *p = evs[i].data.ptr;
            ssize_t r = read(p->fd, buf, (size_t)(g_opt.size - p->got));
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
                continue;
            }
            if (r <= 0) {
                lt->errors++;
                close(p->fd);
                p->fd = -1;
                live--;
                continue;
            }
            p->got += (int)r;
            if (p->got < g_opt.size) {
                continue;
            }
            if (__atomic_load_n(&g_measuring, __ATOMIC_RELAXED)) {
                h_record(lt->h, now_ns() - p->t0);
            }
            if (!ping(p, msg)) {
                lt->errors++;
            }
        }
    }
    for (int i = 0; i < lt->count; i++) {
        if (pc[i].fd >= 0) {
            close(pc[i].fd);
        }
    }
    free(pc);
    free(msg);
    free(buf);
    close(ep);
    return NULL;
}

static int run_latency(void)
{
    int nt = g_opt.threads < g_opt.conns ? g_opt.threads : g_opt.conns;
    struct lat_thread *lt = calloc((size_t)nt, sizeof(*lt));
    pthread_t *t = calloc((size_t)nt, sizeof(*t));
    for (int i = 0; i < nt; i++) {
        lt[i].count = g_opt.conns / nt + (i < g_opt.conns % nt ? 1 : 0);
        lt[i].h = calloc(1, sizeof(struct hist));
        if (!lt[i].h) {
            die("calloc");
        }
        t[i] = spawn(lat_main, &lt[i]);
    }
    sleep_s(g_opt.warmup);
    __atomic_store_n(&g_measuring, 1, __ATOMIC_RELAXED);
    uint64_t t0 = now_ns();
    sleep_s(g_opt.duration);
    __atomic_store_n(&g_measuring, 0, __ATOMIC_RELAXED);
    uint64_t t1 = now_ns();
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELAXED);
    struct hist *h = calloc(1, sizeof(*h));
    uint64_t errors = 0;
    for (int i = 0; i < nt; i++) {
        pthread_join(t[i], NULL);
        errors += lt[i].errors;
        h->count += lt[i].h->count;
        h->sum += lt[i].h->sum;
        if (lt[i].h->max > h->max) {
            h->max = lt[i].h->max;
        }
        for (uint32_t k = 0; k < H_BUCKETS; k++) {
            h->b[k] += lt[i].h->b[k];
        }
        free(lt[i].h);
    }
    double secs = (double)(t1 - t0) / 1e9;
    printf("RESULT mode=latency conns=%d size=%d secs=%.2f n=%llu rps=%.0f mean_us=%.2f "
           "p50_us=%.2f p90_us=%.2f p99_us=%.2f p999_us=%.2f max_us=%.2f tool_cpu_pct=%.0f "
           "errors=%llu\n",
           g_opt.conns, g_opt.size, secs, (unsigned long long)h->count, (double)h->count / secs,
           h->count ? (double)h->sum / (double)h->count / 1e3 : 0.0,
           (double)h_quantile(h, 0.50) / 1e3, (double)h_quantile(h, 0.90) / 1e3,
           (double)h_quantile(h, 0.99) / 1e3, (double)h_quantile(h, 0.999) / 1e3,
           (double)h->max / 1e3, self_cpu_pct(), (unsigned long long)errors);
    free(h);
    free(lt);
    free(t);
    return errors ? 1 : 0;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void)
{
    fprintf(stderr,
            "usage: tcp_bench MODE [options]\n"
            "  MODE: sink | echo | throughput | connrate | latency\n"
            "  --host A         loopback IPv4 address (default 127.0.0.1)\n"
            "  --port P         port to listen on (sink, echo) or connect to (clients)\n"
            "  --sink-port P    throughput: run a sink on P and count the bytes it receives\n"
            "  --conns N        connections (throughput, latency) or concurrent slots (connrate)\n"
            "  --duration S     measured seconds (clients, default 5) or lifetime (servers, "
            "default 900)\n"
            "  --warmup S       seconds before measuring (default 1)\n"
            "  --size B         write size (throughput, default 65536) or message size (default "
            "64)\n"
            "  --threads N      threads (default 1)\n"
            "  --close-after B  echo: close a connection once B bytes were echoed\n"
            "  --allow-netns    also accept 10.0.0.0/8 addresses (network namespaces on this "
            "machine)\n");
    exit(2);
}

static double arg_num(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        usage();
    }
    char *end;
    double v = strtod(argv[++*i], &end);
    if (*end || v < 0) {
        fprintf(stderr, "tcp_bench: bad number '%s' for %s\n", argv[*i], argv[*i - 1]);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    g_start_ns = now_ns();
    g_opt = (struct opts){.mode = argv[1], .host = "127.0.0.1", .threads = 1, .duration = -1,
                          .warmup = 1, .size = -1};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--host") && i + 1 < argc) {
            g_opt.host = argv[++i];
        } else if (!strcmp(a, "--port")) {
            g_opt.port = (int)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--sink-port")) {
            g_opt.sink_port = (int)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--conns")) {
            g_opt.conns = (int)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--duration")) {
            g_opt.duration = arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--warmup")) {
            g_opt.warmup = arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--size")) {
            g_opt.size = (int)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--threads")) {
            g_opt.threads = (int)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--close-after")) {
            g_opt.close_after = (long)arg_num(argc, argv, &i);
        } else if (!strcmp(a, "--allow-netns")) {
            g_opt.allow_netns = true;
        } else {
            usage();
        }
    }
    bool server = !strcmp(g_opt.mode, "sink") || !strcmp(g_opt.mode, "echo");
    if (g_opt.duration < 0) {
        g_opt.duration = server ? SERVER_DEFAULT_DURATION : 5;
    }
    if (g_opt.size < 0) {
        g_opt.size = !strcmp(g_opt.mode, "throughput") ? 65536 : 64;
    }
    if (g_opt.conns <= 0) {
        g_opt.conns = 1;
    }
    if (g_opt.threads <= 0 || g_opt.size <= 0 || g_opt.port <= 0 || g_opt.port > 65535) {
        usage();
    }
    set_addr(&g_addr, g_opt.host, g_opt.port);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (!strcmp(g_opt.mode, "sink")) {
        return run_server(false);
    }
    if (!strcmp(g_opt.mode, "echo")) {
        return run_server(true);
    }
    if (!strcmp(g_opt.mode, "throughput")) {
        return run_throughput();
    }
    if (!strcmp(g_opt.mode, "connrate")) {
        return run_connrate();
    }
    if (!strcmp(g_opt.mode, "latency")) {
        return run_latency();
    }
    usage();
    return 2;
}
