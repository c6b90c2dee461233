/* envoy.filters.network.rbac: allow or deny a connection by its peer identity (mTLS SPIFFE
 * SANs), addresses, ports and SNI, before any byte reaches the next filter. Evaluated on the
 * first byte (ONE_TIME_ON_FIRST_BYTE) or on every read (CONTINUOUS); shadow rules are evaluated
 * and counted without effect. A denied connection is closed at once.
 *
 * Also io.istio.network.authn (istio_authn): Istio inserts it before RBAC to publish the peer's
 * principal as filter state; here RBAC reads the peer principal from the connection's TLS
 * information directly, so that filter has nothing left to do and passes through.
 *
 * The decision is made when the connection starts (after the TLS handshake: the filter chain
 * starts then), not on the first byte as Envoy does: everything RBAC looks at is known at that
 * point, and a denied connection then never reaches the next filters (tcp_proxy would already
 * have connected upstream). CONTINUOUS re-checks on every read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"

#include "accesslog/stream_info.h"
#include "common/alloc.h"
#include "common/log.h"
#include "filter/network.h"
#include "net/conn.h"
#include "net/transport.h"
#include "filters/network/rbac/rbac.h"
#include "rbac/rbac.h"

struct rbac_cfg {
    struct msm_rbac_filter_cfg r;
    bool continuous;
};

struct rbac_f {
    struct rbac_cfg *cfg;
    struct msm_filter_handle *h;
};

static void cfg_free(void *p)
{
    struct rbac_cfg *c = p;
    if (!c) {
        return;
    }
    msm_rbac_filter_cfg_deinit(&c->r);
    free(c);
}

static int cfg_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                   struct msm_err *err)
{
    const Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *p = (const void *)msg;
    if (!p->stat_prefix[0]) {
        return msm_err_set(err, "stat_prefix: must not be empty");
    }
    struct rbac_cfg *c = MSM_NEW(struct rbac_cfg);
    if (msm_rbac_filter_cfg_build(&c->r, p->rules, p->shadow_rules,
                                  p->matcher || p->shadow_matcher, false, err) < 0) {
        free(c);
        return MSM_EINVAL;
    }
    c->continuous = p->enforcement_type ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__CONTINUOUS;
    /* Envoy's names: <stat_prefix>rbac.allowed, ... and <stat_prefix>rbac.<shadow
     * prefix>shadow_allowed (Istio: "tcp.rbac.allowed", "tcp.rbac.istio_dry_run_allow_..."). */
    msm_rbac_filter_cfg_stats(&c->r, ctx->stats, p->stat_prefix, "",
                              p->shadow_rules_stat_prefix);
    *out = c;
    return 0;
}

static void *filter_new(void *config, struct msm_filter_handle *h)
{
    struct rbac_f *f = MSM_NEW(struct rbac_f);
    f->cfg = config;
    f->h = h;
    return f;
}

static void filter_free(void *p)
{
    free(p);
}

/* Fill <c> from the connection (TLS peer info when the transport is TLS). */
static void ctx_of(struct msm_conn *conn, struct msm_rbac_ctx *c)
{
    memset(c, 0, sizeof(*c));
    c->local = &conn->local;
    c->remote = &conn->remote;
    c->direct_remote = &conn->remote;
    const struct msm_tls_info *t = msm_conn_tls_info(conn);
    if (t) {
        c->uri_sans = (const char *const *)t->uri_sans;
        c->n_uri_sans = t->n_uri_sans;
        c->dns_sans = (const char *const *)t->dns_sans;
        c->n_dns_sans = t->n_dns_sans;
        c->subject = t->peer_subject;
        c->peer_validated = t->peer_cert_presented && t->peer_cert_validated;
        c->sni = t->sni;
    }
}

/* Evaluate shadow and enforced rules; false when the connection was denied and closed. */
static bool check(struct rbac_f *f)
{
    struct msm_conn *conn = msm_filter_conn(f->h);
    struct msm_rbac_ctx c;
    ctx_of(conn, &c);
    const char *policy = NULL;
    if (f->cfg->r.shadow) {
        bool ok = msm_rbac_allowed(f->cfg->r.shadow, &c, &policy);
        msm_stat_inc(ok ? f->cfg->r.shadow_allowed : f->cfg->r.shadow_denied);
    }
    if (!f->cfg->r.rules) {
        return true;
    }
    if (msm_rbac_allowed(f->cfg->r.rules, &c, &policy)) {
        msm_stat_inc(f->cfg->r.allowed);
        return true;
    }
    msm_stat_inc(f->cfg->r.denied);
    msm_log(MSM_LOG_DEBUG, MSM_LC_RBAC, "[C%llu] rbac: connection denied%s%s", conn->id,
            policy ? ", matched policy " : "", policy ? policy : "");
    struct msm_stream_info *si = msm_filter_stream_info(f->h);
    if (si) { /* Envoy's responseDetail(), for %CONNECTION_TERMINATION_DETAILS% */
        msm_si_set_termination_details(si, "rbac_access_denied_matched_policy[%s]",
                                       policy && policy[0] ? policy : "none");
    }
    msm_filter_close(f->h, MSM_CLOSE_NOFLUSH);
    return false;
}

static enum msm_filter_status on_new_connection(void *p)
{
    return check(p) ? MSM_FILTER_CONTINUE : MSM_FILTER_STOP;
}

static enum msm_filter_status on_data(void *p, struct msm_buf *data, bool end_stream)
{
    (void)end_stream;
    struct rbac_f *f = p;
    if (!f->cfg->continuous || check(f)) {
        return MSM_FILTER_CONTINUE;
    }
    msm_buf_drain(data, data->len);
    return MSM_FILTER_STOP;
}

const struct msm_network_filter_ops msm_rbac_network_ops = {
    .name = "envoy.filters.network.rbac",
    .config_type = "envoy.extensions.filters.network.rbac.v3.RBAC",
    .config_new = cfg_new,
    .config_free = cfg_free,
    .filter_new = filter_new,
    .on_new_connection = on_new_connection,
    .on_data = on_data,
    .filter_free = filter_free,
};

/* ---- io.istio.network.authn ------------------------------------------------------------- */

static int authn_cfg_new(const ProtobufCMessage *msg, struct msm_factory_ctx *ctx, void **out,
                         struct msm_err *err)
{
    (void)msg;
    (void)ctx;
    (void)err;
    *out = NULL;
    return 0;
}

static void authn_cfg_free(void *p)
{
    (void)p;
}

static char authn_instance; /* stateless filter: one shared, never-freed instance */

static void *authn_new(void *config, struct msm_filter_handle *h)
{
    (void)config;
    (void)h;
    return &authn_instance;
}

const struct msm_network_filter_ops msm_istio_authn_ops = {
    .name = "io.istio.network.authn",
    .config_type = "io.istio.network.authn.Config",
    .config_new = authn_cfg_new,
    .config_free = authn_cfg_free,
    .filter_new = authn_new,
};
