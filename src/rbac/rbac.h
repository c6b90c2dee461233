#pragma once
/* Role-based access control (envoy.config.rbac.v3.RBAC): the policy engine shared by the network
 * filter (envoy.filters.network.rbac) and the HTTP filter.
 *
 * A policy matches when any of its permissions AND any of its principals match. ALLOW: the
 * request is allowed iff some policy matches; DENY: iff none matches; LOG: always allowed.
 * Everything is compiled into an immutable tree at config time; evaluation is read-only and
 * thread-safe. A rule the engine cannot enforce is a config error (NACK), never ignored:
 * conditions (CEL), generic matchers and metadata other than Istio's istio_authn request
 * claims. */
#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "net/address.h"

struct msm_hdrs;

enum msm_rbac_action {
    MSM_RBAC_ALLOW = 0,
    MSM_RBAC_DENY = 1,
    MSM_RBAC_LOG = 2,
};

/* What a check sees about a connection (and, for HTTP, a request). */
struct msm_rbac_ctx {
    const struct msm_address *local;         /* destination (after original_dst) */
    const struct msm_address *remote;        /* source (remote_ip, source_ip) */
    const struct msm_address *direct_remote; /* the peer of the socket */
    const char *sni;                         /* requested server name, NULL = none */
    /* mTLS peer: URI SANs (first = io.istio.peer_principal), DNS SANs, subject; validated */
    const char *const *uri_sans;
    int n_uri_sans;
    const char *const *dns_sans;
    int n_dns_sans;
    const char *subject;
    bool peer_validated;
    /* HTTP only (NULL for L4) */
    const struct msm_hdrs *headers;
    const char *path; /* :path without the query string */
    /* istio_authn request claims lookup ("request.auth.claims" "iss", ...): NULL = none */
    const char *(*claim)(void *arg, const char *const *path, int n);
    void *claim_arg;
};

struct msm_rbac;

/* <proto> is an Envoy__Config__Rbac__V3__RBAC. <http>: header/url_path rules are allowed (in a
 * network filter they are an error, as Envoy rejects them). */
struct msm_rbac *msm_rbac_from_proto(const void *proto, bool http, struct msm_err *err);
void msm_rbac_free(struct msm_rbac *r);
enum msm_rbac_action msm_rbac_action(const struct msm_rbac *r);

/* What the network and the HTTP RBAC filters (and HTTP's per-route override) share: the rules,
 * the shadow rules and Envoy's four counters. One owner: the filter config. */
struct msm_stat;
struct msm_stats_store;
struct msm_rbac_filter_cfg {
    struct msm_rbac *rules;  /* NULL: no enforcement */
    struct msm_rbac *shadow; /* NULL: none */
    struct msm_stat *allowed, *denied, *shadow_allowed, *shadow_denied; /* NULL per route */
};
/* <rules>/<shadow> are Envoy__Config__Rbac__V3__RBAC (either may be NULL); <has_matcher>: the
 * config uses matcher/shadow_matcher, which is refused. MSM_EINVAL with "rules: ..." or
 * "shadow_rules: ..." in <err>, <c> left empty. */
int msm_rbac_filter_cfg_build(struct msm_rbac_filter_cfg *c, const void *rules,
                              const void *shadow, bool has_matcher, bool http,
                              struct msm_err *err);
/* Envoy's names: <sp>rbac.<rp>allowed / denied, <sp>rbac.<shp>shadow_allowed / shadow_denied. */
void msm_rbac_filter_cfg_stats(struct msm_rbac_filter_cfg *c, struct msm_stats_store *st,
                               const char *sp, const char *rp, const char *shp);
void msm_rbac_filter_cfg_deinit(struct msm_rbac_filter_cfg *c);
/* Evaluate; returns true when allowed. <policy> gets the name of the matched policy (or NULL). */
bool msm_rbac_allowed(const struct msm_rbac *r, const struct msm_rbac_ctx *c,
                      const char **policy);
