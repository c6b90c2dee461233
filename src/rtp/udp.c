/* UDP sockets and port pairs of the RTP engine (see rtp.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "event/deferred.h"
#include "rtp/rtp.h"

void msm_rtp_port_range_init(struct msm_rtp_port_range *r, uint32_t start, uint32_t end)
{
    r->start = (start + 1) & ~1u;
    r->end = end;
    atomic_init(&r->cursor, 0);
}

uint32_t msm_rtp_port_range_pairs(const struct msm_rtp_port_range *r)
{
    if (r->end <= r->start + 1) {
        return 0;
    }
    return (r->end - r->start) / 2;
}

static int bind_port(int family, uint16_t port)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_any;
        s6->sin6_port = htons(port);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
        s4->sin_port = htons(port);
        len = sizeof(*s4);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    /* Room for bursts (a keyframe is a few hundred packets); the kernel caps at rmem_max. */
    int sz = 1 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    return fd;
}

int msm_rtp_pair_open(struct msm_rtp_port_range *r, int family, int fds[2], uint16_t *port)
{
    uint32_t pairs = msm_rtp_port_range_pairs(r);
    for (uint32_t i = 0; i < pairs; i++) {
        uint32_t k = atomic_fetch_add(&r->cursor, 1) % pairs;
        uint32_t p = r->start + 2 * k;
        if (p + 1 > 65535) {
            continue;
        }
        int a = bind_port(family, (uint16_t)p);
        if (a == -EADDRINUSE || a == -EACCES) {
            continue;
        }
        if (a < 0) {
            return a;
        }
        int b = bind_port(family, (uint16_t)(p + 1));
        if (b == -EADDRINUSE || b == -EACCES) {
            close(a);
            continue;
        }
        if (b < 0) {
            close(a);
            return b;
        }
        fds[0] = a;
        fds[1] = b;
        *port = (uint16_t)p;
        return 0;
    }
    return MSM_ELIMIT;
}

/* Receive slots: one set per loop (worker), shared by every socket of that loop, freed with
 * the loop. */
struct rx_slots {
    struct mmsghdr msg[MSM_UDP_BATCH];
    struct iovec iov[MSM_UDP_BATCH];
    struct msm_udp_pkt pkt[MSM_UDP_BATCH];
    uint8_t buf[MSM_UDP_BATCH][MSM_UDP_MTU];
};

static const char slots_key;

static void *slots_create(struct ev_loop *loop)
{
    (void)loop;
    return msm_xcalloc(1, sizeof(struct rx_slots));
}

/* Reads up to 4 batches per readiness event so one busy socket cannot starve the others. */
static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_udp_sock *s = MSM_CONTAINER_OF(w, struct msm_udp_sock, io);
    struct rx_slots *x = s->slots;
    for (int round = 0; round < 4 && s->fd >= 0; round++) {
        for (int i = 0; i < MSM_UDP_BATCH; i++) {
            x->iov[i].iov_base = x->buf[i];
            x->iov[i].iov_len = MSM_UDP_MTU;
            memset(&x->msg[i].msg_hdr, 0, sizeof(x->msg[i].msg_hdr));
            x->msg[i].msg_hdr.msg_iov = &x->iov[i];
            x->msg[i].msg_hdr.msg_iovlen = 1;
            x->msg[i].msg_hdr.msg_name = &x->pkt[i].from;
            x->msg[i].msg_hdr.msg_namelen = sizeof(x->pkt[i].from);
        }
        int n = recvmmsg(s->fd, x->msg, MSM_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            return; /* EAGAIN, or an ICMP error reported on the socket: nothing to read */
        }
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (x->msg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                s->truncated++;
                continue;
            }
            x->pkt[k].data = x->buf[i];
            x->pkt[k].len = x->msg[i].msg_len;
            if (k != i) {
                x->pkt[k].from = x->pkt[i].from;
            }
            x->pkt[k].fromlen = x->msg[i].msg_hdr.msg_namelen;
            k++;
        }
        if (k) {
            s->on_recv(s, x->pkt, k);
        }
        if (n < MSM_UDP_BATCH) {
            return;
        }
    }
}

void msm_udp_sock_start(struct msm_udp_sock *s, struct ev_loop *loop, int fd,
                        msm_udp_recv_fn *on_recv, void *ctx)
{
    s->fd = fd;
    s->loop = loop;
    s->slots = msm_loop_local(loop, &slots_key, slots_create, free);
    s->on_recv = on_recv;
    s->ctx = ctx;
    ev_io_init(&s->io, on_readable, fd, EV_READ);
    ev_io_start(loop, &s->io);
}

void msm_udp_sock_close(struct msm_udp_sock *s)
{
    if (s->fd < 0) {
        return;
    }
    ev_io_stop(s->loop, &s->io);
    close(s->fd);
    s->fd = -1;
}

int msm_udp_sendmmsg(int fd, struct mmsghdr *msgs, int n)
{
    int i = 0, ok = 0;
    while (i < n) {
        int r = sendmmsg(fd, msgs + i, (unsigned)(n - i), MSG_DONTWAIT);
        if (r > 0) {
            i += r;
            ok += r;
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            return ok; /* socket buffer full: the rest is dropped, nothing waits */
        }
        /* An error for this one destination (ECONNREFUSED from an earlier ICMP,
         * EHOSTUNREACH...): skip that datagram and go on with the others. */
        i++;
    }
    return ok;
}

int msm_udp_sendto(int fd, const void *p, size_t n, const struct sockaddr *to, socklen_t tolen)
{
    ssize_t r;
    do {
        r = sendto(fd, p, n, MSG_DONTWAIT, to, tolen);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

bool msm_sockaddr_ip_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
    }
    return false;
}

uint16_t msm_sockaddr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    }
    if (a->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    }
    return 0;
}

void msm_sockaddr_set_port(struct sockaddr_storage *a, uint16_t port)
{
    if (a->ss_family == AF_INET) {
        ((struct sockaddr_in *)a)->sin_port = htons(port);
    } else if (a->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
    }
}

bool msm_sockaddr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return msm_sockaddr_ip_eq(a, b) && msm_sockaddr_port(a) == msm_sockaddr_port(b);
}

socklen_t msm_sockaddr_len(const struct sockaddr_storage *a)
{
    return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}
