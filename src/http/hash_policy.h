#pragma once
/* RouteAction.hash_policy: the request hash that RING_HASH and MAGLEV clusters pick a host with
 * (Envoy's Http::HashPolicyImpl). Istio's DestinationRule consistentHash becomes these:
 * httpHeaderName -> header, httpCookie -> cookie (with ttl: generated), useSourceIp ->
 * connection_properties.source_ip, httpQueryParameterName -> query_parameter.
 *
 * Invariants:
 * - Config is immutable, built with the route (main thread), evaluated by workers.
 * - Values hash exactly as Envoy's (XXH64, seed 0; a header's values sorted and chained; each
 *   policy's hash folded into the previous one rotated left by one; a terminal policy that
 *   produced a hash ends the list), so msm-proxy and Envoy sidecars send one key to the same
 *   host of the same ring.
 * - A generated cookie's value is Envoy's: 16 hex digits of XXH64 of the downstream
 *   connection's "<remote><local>" addresses, the same for every stream of a connection.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct msm_hdrs;
struct msm_address;
struct msm_regex;

enum msm_hash_kind {
    MSM_HASH_HEADER = 0,
    MSM_HASH_COOKIE = 1,
    MSM_HASH_SOURCE_IP = 2,
    MSM_HASH_QUERY = 3,
    MSM_HASH_FILTER_STATE = 4, /* no filter state objects here: never produces a hash */
};

struct msm_hash_cookie_attr {
    char *name;
    char *value; /* "" = a bare attribute */
};

struct msm_hash_method {
    enum msm_hash_kind kind;
    bool terminal;
    char *name; /* header (lower-case), cookie or query parameter name, filter state key */
    /* header: regex_rewrite */
    struct msm_regex *re;
    char *re_sub;
    /* cookie: generated when absent and ttl is set (0 = a session cookie) */
    bool has_ttl;
    int64_t ttl_s;
    char *path;
    struct msm_hash_cookie_attr *attrs;
    int n_attrs;
};

struct msm_hash_policy {
    struct msm_hash_method *v;
    int n;
};

/* <p> is an array of <n> envoy.config.route.v3.RouteAction.HashPolicy. NACK reason in <err>
 * (prefixed "hash_policy[i]"). <out> is left for msm_hash_policy_deinit either way. */
int msm_hash_policy_from_proto(const void *const *p, size_t n, struct msm_hash_policy *out,
                               struct msm_err *err);
void msm_hash_policy_deinit(struct msm_hash_policy *hp);

/* The downstream side a hash may use. */
struct msm_hash_input {
    const struct msm_hdrs *req;
    const struct msm_address *remote, *local; /* NULL when unknown */
};

/* Called for a cookie to generate: <set_cookie> is the whole Set-Cookie value. */
typedef void (*msm_hash_cookie_cb)(void *ctx, const char *set_cookie, size_t len);

/* The request's hash: true with <*hash> when some policy produced one (a hash of 0 is given as
 * 1: 0 means "no hash" to the load balancers), false otherwise. Generated cookies go to
 * <cookie_cb> (may be NULL: none generated, as Envoy without a callback). */
bool msm_hash_policy_eval(const struct msm_hash_policy *hp, const struct msm_hash_input *in,
                          msm_hash_cookie_cb cookie_cb, void *ctx, uint64_t *hash);
