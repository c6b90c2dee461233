#include "server/accept.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "event/deferred.h"
#include "filter/manager.h"
#include "net/inspect.h"
#include "net/inspect_tls.h"
#include "net/listener.h"
#include "server/worker.h"

/* From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, which clash with the
 * libc socket headers. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* The largest first flight we look at (a ClientHello may span several records). */
#define PEEK_MAX (64 * 1024)

MSM_STATS_STRUCT(msm_tls_inspector_stats, MSM_TLS_INSPECTOR_STATS);
MSM_STATS_INIT_FN(msm_tls_inspector_stats, MSM_TLS_INSPECTOR_STATS)
MSM_STATS_STRUCT(msm_http_inspector_stats, MSM_HTTP_INSPECTOR_STATS);
MSM_STATS_INIT_FN(msm_http_inspector_stats, MSM_HTTP_INSPECTOR_STATS)

/* The inspectors' stats: global names as in Envoy ("tls_inspector.*", "http_inspector.*"),
 * handles held per worker loop. */
struct inspector_stats {
    struct msm_tls_inspector_stats tls;
    struct msm_http_inspector_stats http;
};

static const int stats_key;

static void *stats_create(struct ev_loop *loop)
{
    (void)loop;
    struct inspector_stats *s = MSM_NEW(struct inspector_stats);
    msm_tls_inspector_stats_init(msm_stats, "tls_inspector.", &s->tls);
    msm_http_inspector_stats_init(msm_stats, "http_inspector.", &s->http);
    return s;
}

static void stats_destroy(void *state)
{
    struct inspector_stats *s = state;
    msm_tls_inspector_stats_deinit(&s->tls);
    msm_http_inspector_stats_deinit(&s->http);
    free(s);
}

struct msm_pending {
    struct msm_pending *next, *prev;
    struct msm_worker *w;
    struct msm_listener_cfg *l; /* reference */
    int fd;
    struct msm_address local, remote;
    ev_io io;
    ev_timer timer;   /* listener_filters_timeout */
    ev_timer backoff; /* undecided with no new bytes: wait before peeking again */
    double backoff_s;
    size_t last_len;
    bool want_tls, want_http;
    struct inspector_stats *st;
    const char *transport; /* NULL until decided */
    const char *alpn[1];
    int n_alpn;
    bool tls_hello;            /* <hello> holds the ClientHello's SNI and ALPN */
    struct msm_tls_hello hello;
    uint8_t *buf;
};

/* SO_ORIGINAL_DST: the destination before iptables REDIRECT/TPROXY rewrote it. */
static bool original_dst(int fd, int family, struct msm_address *out)
{
    out->len = sizeof(out->sa);
    int rc;
    if (family == AF_INET) {
        rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &out->sa, &out->len);
    } else if (family == AF_INET6) {
        rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &out->sa, &out->len);
    } else {
        return false;
    }
    out->pipe_mode = 0;
    return rc == 0;
}

/* The listener a redirected connection belongs to: exact ip:port first, then a wildcard
 * address of the same family with that port. */
static struct msm_listener_cfg *find_listener(const struct msm_snapshot *s,
                                              const struct msm_address *dst)
{
    struct msm_listener_cfg *wild = NULL;
    for (int i = 0; s && i < s->n_listeners; i++) {
        struct msm_listener_cfg *l = s->listeners[i].cfg;
        if (l->addr.sa.ss_family != dst->sa.ss_family ||
            msm_address_port(&l->addr) != msm_address_port(dst)) {
            continue;
        }
        if (msm_address_eq(&l->addr, dst)) {
            return l;
        }
        if (!wild && msm_address_is_any(&l->addr)) {
            wild = l;
        }
    }
    return wild;
}

static bool lf_enabled(const struct msm_listener_cfg *l, enum msm_lf_kind k, uint32_t dport)
{
    for (int i = 0; i < l->n_lfs; i++) {
        if (l->lfs[i].kind == k && msm_listener_filter_enabled(&l->lfs[i], dport)) {
            return true;
        }
    }
    return false;
}

/* Match the chain and start the session; takes ownership of <fd>. */
static void finish(struct msm_worker *w, struct msm_listener_cfg *l, int fd,
                   const struct msm_address *local, const struct msm_address *remote,
                   const char *transport, const char *const *alpn, int n_alpn, const char *sni)
{
    struct msm_conn_meta meta = {.local = local, .remote = remote, .direct_remote = remote,
                                 .transport = transport ? transport : "raw_buffer",
                                 .alpn = alpn, .n_alpn = n_alpn, .sni = sni};
    const struct msm_filter_chain *chain = msm_listener_match(l, &meta);
    if (!chain) {
        msm_stat_inc(l->stats.no_filter_chain_match);
        msm_log(MSM_LOG_DEBUG, MSM_LC_CONN_HANDLER, "listener '%s': no filter chain matched",
                l->name);
        close(fd);
        return;
    }
    struct msm_conn *c = msm_conn_accepted(w->loop, fd, local, remote);
    msm_log(MSM_LOG_DEBUG, MSM_LC_CONN_HANDLER, "[C%llu] new connection on listener '%s'%s%s",
            c->id, l->name, n_alpn ? " alpn " : "", n_alpn ? alpn[0] : "");
    msm_session_new(w, c, l, chain);
}

static void pending_free(struct msm_pending *p, bool close_fd)
{
    struct msm_worker *w = p->w;
    ev_io_stop(w->loop, &p->io);
    ev_timer_stop(w->loop, &p->timer);
    ev_timer_stop(w->loop, &p->backoff);
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        w->pending = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
    msm_stat_dec(p->l->stats.downstream_pre_cx_active);
    if (close_fd) {
        close(p->fd);
    }
    msm_listener_cfg_unref(p->l);
    free(p->buf);
    free(p);
}

static void pending_done(struct msm_pending *p)
{
    struct msm_worker *w = p->w;
    struct msm_listener_cfg *l = msm_listener_cfg_ref(p->l);
    int fd = p->fd;
    struct msm_address local = p->local, remote = p->remote;
    const char *transport = p->transport;
    const char *alpn[MSM_TLS_ALPN_MAX] = {p->alpn[0]};
    int n_alpn = p->n_alpn;
    /* The TLS inspector's SNI and ALPN list, copied out of <p> before it is freed. */
    struct msm_tls_hello hello;
    bool tls = p->tls_hello;
    if (tls) {
        hello = p->hello;
        n_alpn = hello.n_alpn;
        for (int i = 0; i < n_alpn; i++) {
            alpn[i] = hello.alpn_buf + (p->hello.alpn[i] - p->hello.alpn_buf);
        }
    }
    pending_free(p, false);
    finish(w, l, fd, &local, &remote, transport, alpn, n_alpn,
           tls && hello.has_sni ? hello.sni : NULL);
    msm_listener_cfg_unref(l);
}

static void on_peek(struct ev_loop *loop, ev_io *io, int revents);

/* Run the inspectors over the bytes peeked so far. Returns true when every inspector decided. */
static bool inspect(struct msm_pending *p, size_t n)
{
    if (p->want_tls && !p->transport) {
        /* tls_inspector: a complete, well-formed ClientHello is "tls" with its SNI and ALPN
         * list; anything else is raw_buffer. */
        enum msm_inspect_result r = msm_tls_inspect(p->buf, n, &p->hello);
        if (r == MSM_INSPECT_NEED_MORE) {
            return false;
        }
        p->tls_hello = r == MSM_INSPECT_YES;
        struct msm_tls_inspector_stats *ts = &p->st->tls;
        msm_stat_record(ts->bytes_processed, n);
        if (p->tls_hello) {
            msm_stat_inc(ts->tls_found);
            msm_stat_inc(p->hello.has_sni ? ts->sni_found : ts->sni_not_found);
            msm_stat_inc(p->hello.n_alpn ? ts->alpn_found : ts->alpn_not_found);
        } else {
            msm_stat_inc(p->hello.too_large ? ts->client_hello_too_large : ts->tls_not_found);
        }
        p->transport = p->tls_hello ? "tls" : "raw_buffer";
    }
    if (!p->transport) {
        p->transport = "raw_buffer";
    }
    if (p->want_http && !strcmp(p->transport, "raw_buffer") && !p->n_alpn) {
        const char *alpn = NULL;
        enum msm_inspect_result r = msm_http_inspect(p->buf, n, &alpn);
        if (r == MSM_INSPECT_NEED_MORE && n < MSM_HTTP_INSPECT_MAX) {
            return false;
        }
        struct msm_http_inspector_stats *hs = &p->st->http;
        if (r == MSM_INSPECT_YES) {
            p->alpn[0] = alpn;
            p->n_alpn = 1;
            msm_stat_inc(!strcmp(alpn, "h2c")        ? hs->http2_found
                         : !strcmp(alpn, "http/1.0") ? hs->http10_found
                                                     : hs->http11_found);
        } else {
            msm_stat_inc(hs->http_not_found);
        }
        p->want_http = false;
    }
    return true;
}

static void on_backoff(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct msm_pending *p = MSM_CONTAINER_OF(t, struct msm_pending, backoff);
    ev_io_start(loop, &p->io);
}

/* The peer closed (or the socket failed) before the inspectors decided. */
static void closed_early(struct msm_pending *p)
{
    if (p->want_http && (!p->transport || !strcmp(p->transport, "raw_buffer"))) {
        msm_stat_inc(p->st->http.read_error);
    }
    msm_stat_inc(p->l->stats.downstream_listener_filter_remote_close);
    pending_free(p, true);
}

static void on_peek(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct msm_pending *p = MSM_CONTAINER_OF(io, struct msm_pending, io);
    ssize_t n;
    do {
        n = recv(p->fd, p->buf, PEEK_MAX, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
    }
    if (n <= 0) {
        closed_early(p);
        return;
    }
    if (inspect(p, (size_t)n) || (size_t)n >= PEEK_MAX) {
        pending_done(p);
        return;
    }
    /* Undecided: a peer that sent a few bytes and closed stays readable with the same bytes
     * (a peek never sees the end of the stream behind them); ask for the hang-up itself. */
    struct pollfd pfd = {.fd = p->fd, .events = POLLRDHUP};
    if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        closed_early(p);
        return;
    }
    /* Undecided and the socket stays readable with the same bytes: level-triggered polling
     * would spin, so wait a little (1 ms doubling to 50 ms) before peeking again. */
    if ((size_t)n == p->last_len) {
        p->backoff_s = p->backoff_s < 0.001 ? 0.001 : p->backoff_s * 2;
        if (p->backoff_s > 0.05) {
            p->backoff_s = 0.05;
        }
    } else {
        p->backoff_s = 0;
    }
    p->last_len = (size_t)n;
    if (p->backoff_s > 0) {
        ev_io_stop(loop, io);
        ev_timer_set(&p->backoff, p->backoff_s, 0);
        ev_timer_start(loop, &p->backoff);
    }
}

static void on_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct msm_pending *p = MSM_CONTAINER_OF(t, struct msm_pending, timer);
    msm_stat_inc(p->l->stats.downstream_pre_cx_timeout);
    if (!p->l->continue_on_lf_timeout) {
        pending_free(p, true);
        return;
    }
    if (!p->transport) {
        p->transport = "raw_buffer";
    }
    pending_done(p);
}

void msm_accept_start(struct msm_worker *w, struct msm_listener_cfg *l, int fd,
                      const struct msm_address *listen_addr, const struct msm_address *remote)
{
    struct msm_address local;
    int fam = listen_addr->sa.ss_family;
    if ((fam == AF_INET || fam == AF_INET6) && !msm_address_is_any(listen_addr) &&
        msm_address_port(listen_addr) != 0) {
        /* Bound to one address and port: that is the connection's local address, no need to
         * ask the kernel (one syscall per connection less). */
        local = *listen_addr;
    } else {
        local.len = sizeof(local.sa);
        local.pipe_mode = 0;
        if (getsockname(fd, (struct sockaddr *)&local.sa, &local.len) < 0) {
            local = *listen_addr;
        }
    }
    bool want_orig = l->use_original_dst ||
                     lf_enabled(l, MSM_LF_ORIGINAL_DST, msm_address_port(&local));
    struct msm_address orig;
    if (want_orig && original_dst(fd, local.sa.ss_family, &orig)) {
        local = orig;
        if (l->use_original_dst) {
            struct msm_listener_cfg *target = find_listener(w->snap, &orig);
            if (target) {
                l = target;
            }
        }
    }
    uint32_t dport = msm_address_port(&local);
    bool want_tls = lf_enabled(l, MSM_LF_TLS_INSPECTOR, dport);
    bool want_http = lf_enabled(l, MSM_LF_HTTP_INSPECTOR, dport);
    if (!want_tls && !want_http) {
        finish(w, l, fd, &local, remote, NULL, NULL, 0, NULL);
        return;
    }
    struct msm_pending *p = MSM_NEW(struct msm_pending);
    p->w = w;
    p->l = msm_listener_cfg_ref(l);
    p->fd = fd;
    p->local = local;
    p->remote = *remote;
    p->want_tls = want_tls;
    p->want_http = want_http;
    p->st = msm_loop_local(w->loop, &stats_key, stats_create, stats_destroy);
    p->buf = msm_xmalloc(PEEK_MAX);
    p->next = w->pending;
    if (w->pending) {
        w->pending->prev = p;
    }
    w->pending = p;
    msm_stat_inc(l->stats.downstream_pre_cx_active);
    ev_io_init(&p->io, on_peek, fd, EV_READ);
    ev_io_start(w->loop, &p->io);
    ev_timer_init(&p->backoff, on_backoff, 0, 0);
    ev_timer_init(&p->timer, on_timeout, l->lf_timeout_ms / 1000.0, 0);
    if (l->lf_timeout_ms) {
        ev_timer_start(w->loop, &p->timer);
    }
}

void msm_accept_close_all(struct msm_worker *w)
{
    while (w->pending) {
        pending_free(w->pending, true);
    }
}
