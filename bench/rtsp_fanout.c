/* RTSP fan-out benchmark: one ~4 Mbit/s H.264-like RTP stream to N UDP subscribers through one
 * relay worker, for two relays measured in the same run:
 *   ideal  an in-process loop: recvmmsg from the source, sendmmsg to every subscriber (one
 *          socket, batches of up to 1024 messages), nothing else: the ceiling;
 *   msm    a real msm-proxy (--concurrency 1) with rtsp_proxy + fan-out, the source behind a
 *          minimal RTSP camera in this process, N real RTSP sessions (DESCRIBE/SETUP/PLAY).
 * For each relay it finds the largest N with under 0.1 % loss that it keeps up with (median
 * one-way latency under --max-p50-ms, default 50: a relay slower than the stream queues in its
 * socket buffers for seconds before it loses anything), by a sweep and then bisection, and
 * reports one-way latency (source send -> subscriber receive) p50/p99 at that N. p99 includes
 * the fan-out of a whole keyframe burst (8x a P frame, sent back to back like cameras do), so it
 * grows with N for any relay.
 *
 * Tricks that keep the measuring side cheaper than the relay: subscriber i is 127.1.x.y:P
 * (its RTSP connection comes from that address), and ONE socket bound to 0.0.0.0:P receives for
 * all of them with recvmmsg, telling them apart by IP_PKTINFO. A classic BPF filter on that
 * socket keeps one subscriber in --sample (default 16; every packet still goes through the
 * kernel's UDP delivery up to the filter): loss and latency are measured on that sample, so the
 * receiving core is not the bottleneck of a 2-vCPU machine. Every packet carries its send time
 * (CLOCK_MONOTONIC) and the source's sequence number.
 *
 * Loopback only; stops by itself. Not a test: it measures.
 * Then, at fixed N (--latency-n, default 100,400), both relays again for latency and CPU per
 * packet at equal load: p99 added latency = p99(msm) - p99(ideal) at the same N.
 *
 * Usage: rtsp_fanout --proxy PATH [--seconds S] [--max N] [--relay-cpu C] [--tool-cpu C]
 *                    [--only ideal|msm] [--n N] [--mbps M] [--latency-n N,N...]
 *                    [--sample K] [--max-p50-ms MS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PKT 1200
#define FPS 25
#define GOP 50
#define BATCH 64
#define FAN_MSGS 1024
#define HIST_US 200000
#define MAX_SUBS 8000

static double opt_seconds = 4.0;
static int opt_max = 4000;
static int relay_cpu = 1, tool_cpu = 0;
static const char *proxy_path;
static double opt_mbps = 4.0;
static int opt_sample = 16; /* power of two dividing 256 */
static double opt_max_p50_ms = 50; /* keeping up: a relay that falls behind queues, then drops */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
    if (cpu < 0) {
        return;
    }
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof(s), &s);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static struct sockaddr_in sin4(uint32_t ip_host_order, uint16_t port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(ip_host_order);
    a.sin_port = htons(port);
    return a;
}

static uint32_t sub_ip(int i)
{
    return (127u << 24) | (1u << 16) | (uint32_t)(i + 1); /* 127.1.0.1 ... */
}

/* ---- the source: a paced H.264-like stream ------------------------------------------------- */

struct source {
    int fd;
    struct sockaddr_in to;
    atomic_bool run, sending;
    atomic_uint next_seq;
    pthread_t th;
};

static void *source_main(void *arg)
{
    struct source *s = arg;
    pin(tool_cpu);
    uint8_t pkt[PKT];
    memset(pkt, 0x5a, sizeof(pkt));
    double bytes_per_gop = opt_mbps * 1e6 / 8 * GOP / FPS;
    double p_bytes = bytes_per_gop / (GOP - 1 + 8); /* I frames 8x a P frame */
    uint32_t ts = 0;
    uint64_t frame = 0;
    double t0 = now_s();
    while (atomic_load(&s->run)) {
        double due = t0 + (double)frame / FPS;
        double wait = due - now_s();
        if (wait > 0) {
            struct timespec d = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&d, NULL);
        }
        double fb = frame % GOP == 0 ? 8 * p_bytes : p_bytes;
        int n = (int)(fb / (PKT - 12)) + 1;
        if (atomic_load(&s->sending)) {
            for (int i = 0; i < n; i++) {
                uint32_t seq = atomic_fetch_add(&s->next_seq, 1);
                pkt[0] = 0x80;
                pkt[1] = (uint8_t)(96 | (i == n - 1 ? 0x80 : 0));
                pkt[2] = (uint8_t)(seq >> 8);
                pkt[3] = (uint8_t)seq;
                pkt[4] = (uint8_t)(ts >> 24);
                pkt[5] = (uint8_t)(ts >> 16);
                pkt[6] = (uint8_t)(ts >> 8);
                pkt[7] = (uint8_t)ts;
                memcpy(pkt + 8, "\x12\x34\x56\x78", 4);
                uint64_t t = now_ns();
                memcpy(pkt + 12, &t, 8);
                memcpy(pkt + 20, &seq, 4); /* full 32-bit sequence for the receivers */
                sendto(s->fd, pkt, PKT, 0, (struct sockaddr *)&s->to, sizeof(s->to));
            }
        }
        ts += 90000 / FPS;
        frame++;
    }
    return NULL;
}

/* ---- the subscribers: one socket receives for all ----------------------------------------- */

struct receiver {
    int fd;
    uint16_t port;
    int nsubs;
    atomic_bool run;
    atomic_uint lo, hi; /* window of source sequence numbers that count */
    uint64_t *rx;       /* per subscriber, in the window */
    uint64_t *hist;     /* one-way latency, 1 us buckets */
    uint64_t hist_over;
    uint64_t total;
    pthread_t th;
};

static void *receiver_main(void *arg)
{
    struct receiver *r = arg;
    pin(tool_cpu);
    static uint8_t bufs[BATCH][PKT + 64];
    static char cbufs[BATCH][64];
    struct mmsghdr msg[BATCH];
    struct iovec iov[BATCH];
    while (atomic_load(&r->run)) {
        struct pollfd pfd = {r->fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        for (;;) {
            for (int i = 0; i < BATCH; i++) {
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = sizeof(bufs[i]);
                memset(&msg[i].msg_hdr, 0, sizeof(msg[i].msg_hdr));
                msg[i].msg_hdr.msg_iov = &iov[i];
                msg[i].msg_hdr.msg_iovlen = 1;
                msg[i].msg_hdr.msg_control = cbufs[i];
                msg[i].msg_hdr.msg_controllen = sizeof(cbufs[i]);
            }
            int n = recvmmsg(r->fd, msg, BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0) {
                break;
            }
            uint64_t t = now_ns();
            uint32_t lo = atomic_load(&r->lo), hi = atomic_load(&r->hi);
            for (int i = 0; i < n; i++) {
                if (msg[i].msg_len < 24) {
                    continue;
                }
                r->total++;
                uint32_t seq;
                uint64_t sent;
                memcpy(&sent, bufs[i] + 12, 8);
                memcpy(&seq, bufs[i] + 20, 4);
                if (seq < lo || seq > hi) {
                    continue;
                }
                int sub = -1;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg[i].msg_hdr); c;
                     c = CMSG_NXTHDR(&msg[i].msg_hdr, c)) {
                    if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                        struct in_pktinfo pi;
                        memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                        sub = (int)(ntohl(pi.ipi_addr.s_addr) - sub_ip(0));
                    }
                }
                if (sub < 0 || sub >= r->nsubs || (sub + 1) % opt_sample) {
                    continue;
                }
                r->rx[sub]++;
                uint64_t us = (t - sent) / 1000;
                if (us < HIST_US) {
                    r->hist[us]++;
                } else {
                    r->hist_over++;
                }
            }
        }
    }
    return NULL;
}

static double hist_q(const struct receiver *r, double q)
{
    uint64_t total = r->hist_over;
    for (int i = 0; i < HIST_US; i++) {
        total += r->hist[i];
    }
    if (!total) {
        return -1;
    }
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    for (int i = 0; i < HIST_US; i++) {
        seen += r->hist[i];
        if (seen > want) {
            return i;
        }
    }
    return HIST_US;
}

/* ---- the ideal relay --------------------------------------------------------------------- */

struct ideal {
    int fd;
    uint16_t port;
    int nsubs;
    uint16_t dport;
    atomic_bool run;
    pthread_t th;
    clockid_t cpu;
};

static void *ideal_main(void *arg)
{
    struct ideal *x = arg;
    pin(relay_cpu);
    pthread_getcpuclockid(pthread_self(), &x->cpu);
    static uint8_t bufs[32][2048];
    struct mmsghdr in[32];
    struct iovec iniov[32];
    static struct mmsghdr out[FAN_MSGS];
    static struct iovec oiov[FAN_MSGS];
    struct sockaddr_in *dst = calloc((size_t)x->nsubs, sizeof(*dst));
    for (int i = 0; i < x->nsubs; i++) {
        dst[i] = sin4(sub_ip(i), x->dport);
    }
    while (atomic_load(&x->run)) {
        struct pollfd pfd = {x->fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        for (int i = 0; i < 32; i++) {
            iniov[i].iov_base = bufs[i];
            iniov[i].iov_len = sizeof(bufs[i]);
            memset(&in[i].msg_hdr, 0, sizeof(in[i].msg_hdr));
            in[i].msg_hdr.msg_iov = &iniov[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(x->fd, in, 32, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            continue;
        }
        int k = 0;
        for (int s = 0; s < x->nsubs; s++) {
            for (int i = 0; i < n; i++) {
                oiov[k].iov_base = bufs[i];
                oiov[k].iov_len = in[i].msg_len;
                memset(&out[k].msg_hdr, 0, sizeof(out[k].msg_hdr));
                out[k].msg_hdr.msg_name = &dst[s];
                out[k].msg_hdr.msg_namelen = sizeof(dst[s]);
                out[k].msg_hdr.msg_iov = &oiov[k];
                out[k].msg_hdr.msg_iovlen = 1;
                k++;
            }
            if (k + n > FAN_MSGS || s == x->nsubs - 1) {
                int off = 0;
                while (off < k) {
                    int r = sendmmsg(x->fd, out + off, (unsigned)(k - off), MSG_DONTWAIT);
                    if (r > 0) {
                        off += r;
                    } else if (r < 0 && errno == EINTR) {
                        continue;
                    } else if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
                        break;
                    } else {
                        off++;
                    }
                }
                k = 0;
            }
        }
    }
    free(dst);
    return NULL;
}

static int udp_socket(uint32_t ip, uint16_t port, int buf)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        die("socket");
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (buf) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
    }
    struct sockaddr_in a = sin4(ip, port);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        die("bind");
    }
    return fd;
}

static uint16_t local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

/* ---- a minimal RTSP camera for the msm target -------------------------------------------- */

struct camera {
    int lfd;
    uint16_t port;
    uint16_t rtp_port;
    struct source *src;
    atomic_bool run;
    pthread_t th;
};

static int read_request(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) {
            return -1;
        }
        n += (size_t)r;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n")) {
            return (int)n;
        }
    }
    return -1;
}

static void *camera_main(void *arg)
{
    struct camera *c = arg;
    pin(tool_cpu);
    while (atomic_load(&c->run)) {
        struct pollfd pfd = {c->lfd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        int fd = accept(c->lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        char req[8192], resp[4096];
        for (;;) {
            struct pollfd q = {fd, POLLIN, 0};
            if (!atomic_load(&c->run)) {
                break;
            }
            if (poll(&q, 1, 100) <= 0) {
                continue;
            }
            if (read_request(fd, req, sizeof(req)) < 0) {
                break;
            }
            int cseq = 0;
            char *cs = strcasestr(req, "CSeq:");
            if (cs) {
                cseq = atoi(cs + 5);
            }
            int n;
            if (!strncmp(req, "DESCRIBE", 8)) {
                char sdp[512];
                int sl = snprintf(sdp, sizeof(sdp),
                                  "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 "
                                  "127.0.0.1\r\nt=0 0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\n"
                                  "a=rtpmap:96 H264/90000\r\na=control:stream=0\r\n");
                n = snprintf(resp, sizeof(resp),
                             "RTSP/1.0 200 OK\r\nCSeq: %d\r\nContent-Base: rtsp://127.0.0.1:%u/"
                             "cam/\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n"
                             "%s", cseq, c->port, sl, sdp);
            } else if (!strncmp(req, "SETUP", 5)) {
                char *cp = strstr(req, "client_port=");
                int a = cp ? atoi(cp + 12) : 0;
                c->src->to = sin4(0x7f000001, (uint16_t)a);
                n = snprintf(resp, sizeof(resp),
                             "RTSP/1.0 200 OK\r\nCSeq: %d\r\nSession: 12345678;timeout=60\r\n"
                             "Transport: RTP/AVP;unicast;client_port=%d-%d;server_port=%u-%u;"
                             "ssrc=12345678\r\n\r\n", cseq, a, a + 1, c->rtp_port,
                             c->rtp_port + 1);
            } else if (!strncmp(req, "PLAY", 4)) {
                n = snprintf(resp, sizeof(resp),
                             "RTSP/1.0 200 OK\r\nCSeq: %d\r\nSession: 12345678\r\nRange: npt=0-"
                             "\r\nRTP-Info: url=rtsp://127.0.0.1:%u/cam/stream=0;seq=%u;"
                             "rtptime=0\r\n\r\n", cseq, c->port,
                             atomic_load(&c->src->next_seq) & 0xffff);
                atomic_store(&c->src->sending, true);
            } else if (!strncmp(req, "TEARDOWN", 8)) {
                atomic_store(&c->src->sending, false);
                n = snprintf(resp, sizeof(resp), "RTSP/1.0 200 OK\r\nCSeq: %d\r\n\r\n", cseq);
            } else {
                n = snprintf(resp, sizeof(resp), "RTSP/1.0 200 OK\r\nCSeq: %d\r\nPublic: "
                             "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n", cseq);
            }
            if (send(fd, resp, (size_t)n, MSG_NOSIGNAL) < 0) {
                break;
            }
        }
        atomic_store(&c->src->sending, false);
        close(fd);
    }
    return NULL;
}

/* One RTSP subscriber of the msm target: connect from 127.1.x.y, DESCRIBE/SETUP/PLAY. */
static int rtsp_subscribe(int i, uint16_t proxy_port, uint16_t rx_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in me = sin4(sub_ip(i), 0), to = sin4(0x7f000001, proxy_port);
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0 ||
        connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    char req[512], resp[8192], session[64] = "";
    const char *fmt[3] = {"DESCRIBE rtsp://127.0.0.1:%u/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n",
                          "SETUP rtsp://127.0.0.1:%u/cam/stream=0 RTSP/1.0\r\nCSeq: 2\r\n"
                          "Transport: RTP/AVP;unicast;client_port=%u-%u\r\n\r\n",
                          "PLAY rtsp://127.0.0.1:%u/cam RTSP/1.0\r\nCSeq: 3\r\n"
                          "Session: %s\r\n\r\n"};
    for (int k = 0; k < 3; k++) {
        int n = k == 1   ? snprintf(req, sizeof(req), fmt[1], proxy_port, rx_port, rx_port + 1)
                : k == 2 ? snprintf(req, sizeof(req), fmt[2], proxy_port, session)
                         : snprintf(req, sizeof(req), fmt[0], proxy_port);
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) < 0 ||
            read_request(fd, resp, sizeof(resp)) < 0 || strncmp(resp, "RTSP/1.0 200", 12) != 0) {
            close(fd);
            return -1;
        }
        char *cl = strcasestr(resp, "Content-Length:");
        if (cl) { /* drain the SDP body */
            int blen = atoi(cl + 15);
            char *body = strstr(resp, "\r\n\r\n") + 4;
            int have = (int)strlen(body);
            while (have < blen) {
                ssize_t r = recv(fd, resp, sizeof(resp), 0);
                if (r <= 0) {
                    close(fd);
                    return -1;
                }
                have += (int)r;
            }
        }
        char *s = strcasestr(resp, "Session:");
        if (s && k == 1) {
            sscanf(s + 8, " %63[^;\r\n]", session);
        }
    }
    return fd;
}

/* ---- one trial ----------------------------------------------------------------------------- */

struct result {
    int n;
    double loss;
    double p50_us, p99_us;
    double relay_cpu;
    uint64_t expected, received; /* of the sampled subscribers */
    uint64_t sent;               /* packets the relay had to send to all subscribers */
};

static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p) {
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t start_proxy(uint16_t port, uint16_t admin, uint16_t cam_port, const char *dir)
{
    char cfg[4096], path[256];
    snprintf(path, sizeof(path), "%s/rtsp-fanout-bench.yaml", dir);
    snprintf(cfg, sizeof(cfg),
             "admin: {address: {socket_address: {address: 127.0.0.1, port_value: %u}}}\n"
             "static_resources:\n"
             "  listeners:\n"
             "  - name: rtsp\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: %u}}\n"
             "    filter_chains:\n"
             "    - filters:\n"
             "      - name: msm.filters.network.rtsp_proxy\n"
             "        typed_config:\n"
             "          \"@type\": type.googleapis.com/msm.extensions.filters.network.rtsp_proxy"
             ".v1.RtspProxy\n"
             "          stat_prefix: bench\n"
             "          upstream_transport: UDP\n"
             "          rtp_port_range: {start: 41000, end: 41100}\n"
             "      - name: envoy.filters.network.tcp_proxy\n"
             "        typed_config:\n"
             "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy"
             ".v3.TcpProxy\n"
             "          stat_prefix: bench\n"
             "          cluster: camera\n"
             "  clusters:\n"
             "  - name: camera\n"
             "    connect_timeout: 1s\n"
             "    type: STATIC\n"
             "    load_assignment:\n"
             "      cluster_name: camera\n"
             "      endpoints:\n"
             "      - lb_endpoints:\n"
             "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %u}}}"
             "\n", admin, port, cam_port);
    FILE *f = fopen(path, "w");
    if (!f) {
        die("config");
    }
    fputs(cfg, f);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        pin(relay_cpu);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(proxy_path, proxy_path, "-c", path, "--concurrency", "1", "-l", "error",
              (char *)NULL);
        _exit(127);
    }
    /* ready when the listener accepts */
    for (int i = 0; i < 200; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = sin4(0x7f000001, port);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok) {
            return pid;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fprintf(stderr, "msm-proxy did not start\n");
    exit(1);
}

static uint16_t free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin4(0x7f000001, 0);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    uint16_t p = local_port(fd);
    close(fd);
    return p;
}

static struct result trial(const char *target, int n)
{
    struct result res = {.n = n};
    struct receiver rx = {0};
    rx.fd = udp_socket(0, 0, 64 << 20);
    int one = 1;
    setsockopt(rx.fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    if (opt_sample > 1) {
        /* keep datagrams whose destination's last byte is a multiple of the sample */
        struct sock_filter code[] = {
            BPF_STMT(BPF_LD | BPF_B | BPF_ABS, (uint32_t)(SKF_NET_OFF + 19)),
            BPF_STMT(BPF_ALU | BPF_AND | BPF_K, (uint32_t)(opt_sample - 1)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, 0xffff),
            BPF_STMT(BPF_RET | BPF_K, 0),
        };
        struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
        if (setsockopt(rx.fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0) {
            die("SO_ATTACH_FILTER");
        }
    }
    rx.port = local_port(rx.fd);
    rx.nsubs = n;
    rx.rx = calloc((size_t)n, sizeof(uint64_t));
    rx.hist = calloc(HIST_US, sizeof(uint64_t));
    atomic_store(&rx.lo, UINT32_MAX);
    atomic_store(&rx.hi, 0);
    atomic_store(&rx.run, true);
    pthread_create(&rx.th, NULL, receiver_main, &rx);

    struct source src = {0};
    src.fd = udp_socket(0x7f000001, 0, 8 << 20);
    atomic_store(&src.run, true);

    struct ideal id = {0};
    struct camera cam = {0};
    pid_t proxy = 0;
    int *subs = NULL;
    double cpu0 = 0;
    bool ideal = !strcmp(target, "ideal");
    if (ideal) {
        id.fd = udp_socket(0x7f000001, 0, 64 << 20);
        id.nsubs = n;
        id.dport = rx.port;
        src.to = sin4(0x7f000001, local_port(id.fd));
        atomic_store(&id.run, true);
        pthread_create(&id.th, NULL, ideal_main, &id);
        atomic_store(&src.sending, true);
    } else {
        cam.lfd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(cam.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = sin4(0x7f000001, 0);
        if (bind(cam.lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(cam.lfd, 16) < 0) {
            die("camera");
        }
        cam.port = local_port(cam.lfd);
        cam.rtp_port = local_port(src.fd);
        cam.src = &src;
        atomic_store(&cam.run, true);
        pthread_create(&cam.th, NULL, camera_main, &cam);
        uint16_t pport = free_tcp_port(), admin = free_tcp_port();
        proxy = start_proxy(pport, admin, cam.port, "/tmp");
        subs = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) {
            subs[i] = rtsp_subscribe(i, pport, rx.port);
            if (subs[i] < 0) {
                fprintf(stderr, "subscriber %d could not subscribe\n", i);
                n = i;
                rx.nsubs = n;
                break;
            }
        }
    }
    pthread_create(&src.th, NULL, source_main, &src);
    usleep(1000000); /* warm-up */
    uint32_t lo = atomic_load(&src.next_seq);
    atomic_store(&rx.lo, lo);
    atomic_store(&rx.hi, UINT32_MAX);
    struct timespec c0;
    if (ideal) {
        clock_gettime(id.cpu, &c0);
    } else {
        cpu0 = proc_cpu_s(proxy);
    }
    double t0 = now_s();
    usleep((useconds_t)(opt_seconds * 1e6));
    uint32_t hi = atomic_load(&src.next_seq) - 1;
    atomic_store(&rx.hi, hi);
    double el = now_s() - t0;
    if (ideal) {
        struct timespec c1;
        clock_gettime(id.cpu, &c1);
        res.relay_cpu =
            ((double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9) / el;
    } else {
        res.relay_cpu = (proc_cpu_s(proxy) - cpu0) / el;
    }
    usleep(300000); /* in flight */
    atomic_store(&src.run, false);
    pthread_join(src.th, NULL);
    atomic_store(&rx.run, false);
    pthread_join(rx.th, NULL);
    uint64_t sampled = 0;
    for (int i = 0; i < n; i++) {
        sampled += (i + 1) % opt_sample == 0;
    }
    res.expected = (uint64_t)(hi - lo + 1) * sampled;
    res.sent = (uint64_t)(hi - lo + 1) * (uint64_t)n;
    for (int i = 0; i < n; i++) {
        res.received += rx.rx[i];
    }
    res.loss = res.expected ? 1.0 - (double)res.received / (double)res.expected : 1.0;
    if (res.loss < 0) {
        res.loss = 0;
    }
    res.p50_us = hist_q(&rx, 0.50);
    res.p99_us = hist_q(&rx, 0.99);
    if (ideal) {
        atomic_store(&id.run, false);
        pthread_join(id.th, NULL);
        close(id.fd);
    } else {
        for (int i = 0; i < n; i++) {
            close(subs[i]);
        }
        free(subs);
        kill(proxy, SIGTERM);
        waitpid(proxy, NULL, 0);
        atomic_store(&cam.run, false);
        pthread_join(cam.th, NULL);
        close(cam.lfd);
    }
    close(src.fd);
    close(rx.fd);
    free(rx.rx);
    free(rx.hist);
    return res;
}

static double us_per_pkt(const struct result *r)
{
    double pps = (double)r->sent / opt_seconds;
    return pps > 0 ? r->relay_cpu * 1e6 / pps : 0;
}

static void print_result(const char *target, const struct result *r)
{
    printf("%-5s N=%5d loss=%.4f%% (%llu/%llu) p50=%.0fus p99=%.0fus relay_cpu=%.0f%% "
           "pps_out=%.0f cpu_per_pkt=%.2fus\n", target, r->n, r->loss * 100,
           (unsigned long long)r->received, (unsigned long long)r->expected, r->p50_us,
           r->p99_us, r->relay_cpu * 100, (double)r->sent / opt_seconds, us_per_pkt(r));
    fflush(stdout);
}

/* Largest N with loss < 0.1 % for each target: a doubling sweep, then bisection to ~5 %; the
 * targets' trials alternate, so a busy moment of the machine hits both alike. */
struct search {
    const char *target;
    int lo, hi, next;
    bool done;
    struct result best;
};

static void search_step(struct search *x)
{
    struct result r = trial(x->target, x->next);
    print_result(x->target, &r);
    bool ok = r.loss < 0.001 && r.p50_us >= 0 && r.p50_us < opt_max_p50_ms * 1000;
    if (ok) {
        x->best = r;
        x->lo = x->next;
    } else {
        x->hi = x->next;
    }
    if (!x->hi) {
        x->next *= 2;
        x->done = x->next > opt_max;
        return;
    }
    if (x->hi - x->lo <= x->lo / 20 + 1) {
        x->done = true;
        return;
    }
    x->next = (x->lo + x->hi) / 2;
}

static void find_max(struct search *xs, int n)
{
    bool any = true;
    while (any) {
        any = false;
        for (int i = 0; i < n; i++) {
            if (!xs[i].done) {
                search_step(&xs[i]);
                any = true;
            }
        }
    }
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    const char *latency_n = "100,400";
    int fixed = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--proxy") && i + 1 < argc) {
            proxy_path = argv[++i];
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            opt_seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--max") && i + 1 < argc) {
            opt_max = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--relay-cpu") && i + 1 < argc) {
            relay_cpu = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--tool-cpu") && i + 1 < argc) {
            tool_cpu = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--n") && i + 1 < argc) {
            fixed = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--max-p50-ms") && i + 1 < argc) {
            opt_max_p50_ms = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--sample") && i + 1 < argc) {
            opt_sample = atoi(argv[++i]);
            if (opt_sample < 1 || opt_sample > 256 || (opt_sample & (opt_sample - 1))) {
                fprintf(stderr, "--sample: a power of two from 1 to 256\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--latency-n") && i + 1 < argc) {
            latency_n = argv[++i];
        } else if (!strcmp(argv[i], "--mbps") && i + 1 < argc) {
            opt_mbps = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s --proxy PATH [--seconds S] [--max N] [--relay-cpu C] "
                    "[--tool-cpu C] [--only ideal|msm] [--n N] [--mbps M] [--latency-n LIST] "
                    "[--sample K] [--max-p50-ms MS]\n", argv[0]);
            return 2;
        }
    }
    if (opt_max > MAX_SUBS) {
        opt_max = MAX_SUBS;
    }
    if (!proxy_path && (!only || strcmp(only, "ideal"))) {
        fprintf(stderr, "--proxy PATH is required for the msm target\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *targets[2] = {"ideal", "msm"};
    struct result best[2];
    memset(best, 0, sizeof(best));
    struct search xs[2];
    int nx = 0;
    for (int t = 0; t < 2; t++) {
        if (only && strcmp(only, targets[t])) {
            continue;
        }
        if (fixed) {
            best[t] = trial(targets[t], fixed);
            print_result(targets[t], &best[t]);
        } else {
            memset(&xs[nx], 0, sizeof(xs[nx]));
            xs[nx].target = targets[t];
            xs[nx].next = 100;
            nx++;
        }
    }
    find_max(xs, nx);
    for (int i = 0; i < nx; i++) {
        best[strcmp(xs[i].target, "ideal") ? 1 : 0] = xs[i].best;
    }
    /* Equal load: latency and CPU per packet of both relays at the same N, interleaved. */
    char lat_lines[16][256];
    int nlat = 0;
    if (!only && !fixed) {
        char list[256];
        snprintf(list, sizeof(list), "%s", latency_n);
        for (char *tok = strtok(list, ","); tok && nlat < 16; tok = strtok(NULL, ",")) {
            int n = atoi(tok);
            if (n <= 0) {
                continue;
            }
            struct result a = trial("ideal", n), b = trial("msm", n);
            print_result("ideal", &a);
            print_result("msm", &b);
            snprintf(lat_lines[nlat++], sizeof(lat_lines[0]),
                     "RESULT at N=%d: p99 ideal=%.0fus msm=%.0fus added=%.0fus; p50 ideal=%.0fus "
                     "msm=%.0fus; cpu/pkt ideal=%.2fus msm=%.2fus; loss ideal=%.4f%% msm=%.4f%%",
                     n, a.p99_us, b.p99_us, b.p99_us - a.p99_us, a.p50_us, b.p50_us,
                     us_per_pkt(&a), us_per_pkt(&b), a.loss * 100, b.loss * 100);
        }
    }
    printf("\nRESULT stream=%.1fMbit/s seconds=%.1f criterion: loss<0.1%% and p50<%.0fms, "
           "sample 1/%d subscribers\n", opt_mbps, opt_seconds, opt_max_p50_ms, opt_sample);
    for (int t = 0; t < 2; t++) {
        if (!best[t].n) {
            continue;
        }
        printf("RESULT %-5s max_subscribers=%d loss=%.4f%% p50_us=%.0f p99_us=%.0f "
               "relay_cpu=%.0f%% pps_out=%.0f cpu_per_pkt=%.2fus\n", targets[t], best[t].n,
               best[t].loss * 100, best[t].p50_us, best[t].p99_us, best[t].relay_cpu * 100,
               (double)best[t].sent / opt_seconds, us_per_pkt(&best[t]));
    }
    if (best[0].n && best[1].n) {
        printf("RESULT ratio msm/ideal subscribers=%.2f\n", (double)best[1].n / best[0].n);
    }
    for (int i = 0; i < nlat; i++) {
        printf("%s\n", lat_lines[i]);
    }
    return 0;
}
