#include "upstream/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"

struct sockw {
    struct sockw *next;
    struct msm_dns *d;
    ev_io io;
};

struct msm_dns {
    struct ev_loop *loop;
    ares_channel ch;
    struct sockw *socks;
    ev_timer timer;
    bool ok;
};

struct query {
    struct msm_dns *d;
    enum msm_dns_family family;
    msm_dns_cb *cb;
    void *arg;
    char *name;
    /* the result, always delivered from the loop (c-ares may answer synchronously) */
    int status;
    char errmsg[160];
    struct msm_address lit;
    struct msm_address *addrs;
    int n;
    uint32_t ttl;
};

static void arm_timer(struct msm_dns *d)
{
    struct timeval tv, *tp = ares_timeout(d->ch, NULL, &tv);
    ev_timer_stop(d->loop, &d->timer);
    if (tp) {
        ev_timer_set(&d->timer, (double)tp->tv_sec + tp->tv_usec / 1e6, 0);
        ev_timer_start(d->loop, &d->timer);
    }
}

static void on_sock(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct sockw *s = MSM_CONTAINER_OF(w, struct sockw, io);
    struct msm_dns *d = s->d;
    ares_socket_t fd = w->fd;
    ares_process_fd(d->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    arm_timer(d);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_dns *d = MSM_CONTAINER_OF(w, struct msm_dns, timer);
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer(d);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct msm_dns *d = data;
    struct sockw **pp = &d->socks, *s = NULL;
    while (*pp) {
        if ((*pp)->io.fd == fd) {
            s = *pp;
            break;
        }
        pp = &(*pp)->next;
    }
    if (!readable && !writable) {
        if (s) {
            ev_io_stop(d->loop, &s->io);
            *pp = s->next;
            free(s);
        }
        return;
    }
    if (!s) {
        s = MSM_NEW(struct sockw);
        s->d = d;
        s->next = d->socks;
        d->socks = s;
        ev_io_init(&s->io, on_sock, fd, 0);
    }
    ev_io_stop(d->loop, &s->io);
    ev_io_set(&s->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(d->loop, &s->io);
}

struct msm_dns *msm_dns_new(struct ev_loop *loop)
{
    static int lib_init;
    if (!lib_init) {
        ares_library_init(ARES_LIB_INIT_ALL);
        lib_init = 1;
    }
    struct msm_dns *d = MSM_NEW(struct msm_dns);
    d->loop = loop;
    ev_timer_init(&d->timer, on_timer, 0, 0);
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = d;
    int rc = ares_init_options(&d->ch, &o, ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        msm_log(MSM_LOG_ERROR, MSM_LC_DNS, "c-ares init failed: %s", ares_strerror(rc));
        d->ok = false;
    } else {
        d->ok = true;
    }
    return d;
}

void msm_dns_free(struct msm_dns *d)
{
    if (!d) {
        return;
    }
    if (d->ok) {
        ares_destroy(d->ch); /* runs pending callbacks with ARES_EDESTRUCTION */
    }
    ev_timer_stop(d->loop, &d->timer);
    while (d->socks) {
        struct sockw *s = d->socks;
        d->socks = s->next;
        ev_io_stop(d->loop, &s->io);
        free(s);
    }
    free(d);
}

static void query_free(struct query *q)
{
    free(q->addrs);
    free(q->name);
    free(q);
}

static void deliver_deferred(void *p)
{
    struct query *q = p;
    if (q->status == 0 && q->addrs) {
        q->cb(q->arg, 0, NULL, q->addrs, q->n, q->ttl);
    } else if (q->status == 0) {
        q->cb(q->arg, 0, NULL, &q->lit, 1, 0);
    } else {
        q->cb(q->arg, q->status, q->errmsg, NULL, 0, 0);
    }
    query_free(q);
}

static bool family_ok(int fam, enum msm_dns_family f)
{
    if (f == MSM_DNS_V4_ONLY) {
        return fam == AF_INET;
    }
    if (f == MSM_DNS_V6_ONLY) {
        return fam == AF_INET6;
    }
    return true;
}

static void on_result(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct query *q = arg;
    if (status == ARES_EDESTRUCTION) {
        /* The resolver is being freed: outstanding queries are dropped without callback. */
        if (res) {
            ares_freeaddrinfo(res);
        }
        query_free(q);
        return;
    }
    if (status != ARES_SUCCESS || !res) {
        q->status = MSM_ENOTFOUND;
        snprintf(q->errmsg, sizeof(q->errmsg), "%s: %s", q->name, ares_strerror(status));
        if (res) {
            ares_freeaddrinfo(res);
        }
        msm_defer(q->d->loop, deliver_deferred, q);
        return;
    }
    int n4 = 0, n6 = 0;
    for (struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next) {
        if (nd->ai_family == AF_INET) {
            n4++;
        } else if (nd->ai_family == AF_INET6) {
            n6++;
        }
    }
    /* Which family to keep: AUTO prefers v6, V4_PREFERRED prefers v4, ALL keeps both. */
    int want = 0;
    switch (q->family) {
    case MSM_DNS_AUTO: want = n6 ? AF_INET6 : AF_INET; break;
    case MSM_DNS_V4_PREFERRED: want = n4 ? AF_INET : AF_INET6; break;
    case MSM_DNS_V4_ONLY: want = AF_INET; break;
    case MSM_DNS_V6_ONLY: want = AF_INET6; break;
    case MSM_DNS_ALL: want = 0; break;
    }
    struct msm_address *v = msm_xcalloc((size_t)(n4 + n6 + 1), sizeof(*v));
    int n = 0;
    uint32_t ttl = UINT32_MAX;
    for (struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next) {
        if ((want && nd->ai_family != want) || !family_ok(nd->ai_family, q->family)) {
            continue;
        }
        if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6) {
            continue;
        }
        memcpy(&v[n].sa, nd->ai_addr, (size_t)nd->ai_addrlen);
        v[n].len = (socklen_t)nd->ai_addrlen;
        msm_address_set_port(&v[n], 0);
        /* c-ares may return duplicates (one per socket type); keep each address once. */
        bool dup = false;
        for (int i = 0; i < n && !dup; i++) {
            dup = msm_address_eq(&v[i], &v[n]);
        }
        if (dup) {
            continue;
        }
        if (nd->ai_ttl >= 0 && (uint32_t)nd->ai_ttl < ttl) {
            ttl = (uint32_t)nd->ai_ttl;
        }
        n++;
    }
    ares_freeaddrinfo(res);
    if (!n) {
        q->status = MSM_ENOTFOUND;
        snprintf(q->errmsg, sizeof(q->errmsg), "%s: no address of the requested family",
                 q->name);
        free(v);
    } else {
        q->addrs = v;
        q->n = n;
        q->ttl = ttl == UINT32_MAX ? 0 : ttl;
    }
    msm_defer(q->d->loop, deliver_deferred, q);
}

void msm_dns_resolve(struct msm_dns *d, const char *name, enum msm_dns_family family,
                     msm_dns_cb *cb, void *arg)
{
    struct query *q = MSM_NEW(struct query);
    q->d = d;
    q->family = family;
    q->cb = cb;
    q->arg = arg;
    q->name = msm_xstrdup(name);
    if (msm_address_from_ip(name, 0, &q->lit, NULL) == 0) {
        if (!family_ok(q->lit.sa.ss_family, family)) {
            q->status = MSM_ENOTFOUND;
            snprintf(q->errmsg, sizeof(q->errmsg), "%s: address family excluded by "
                                                   "dns_lookup_family", name);
        }
        msm_defer(d->loop, deliver_deferred, q);
        return;
    }
    if (!d->ok) {
        q->status = MSM_ENOTFOUND;
        snprintf(q->errmsg, sizeof(q->errmsg), "%s: resolver unavailable", name);
        msm_defer(d->loop, deliver_deferred, q);
        return;
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family == MSM_DNS_V4_ONLY   ? AF_INET
                      : family == MSM_DNS_V6_ONLY ? AF_INET6
                                                  : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(d->ch, name, NULL, &hints, on_result, q);
    arm_timer(d);
}
