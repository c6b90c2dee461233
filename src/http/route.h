#pragma once
/* Route configurations (envoy.config.route.v3.RouteConfiguration) compiled to plain C, and the
 * matching Envoy's router does: virtual host by :authority, then the first route whose match
 * fits the request, then its action.
 *
 * Invariants:
 * - A struct msm_route_config is immutable once built and reference-counted: inline route
 *   configs belong to their HCM config, RDS ones to the RDS manager and every snapshot that
 *   carries them. A stream keeps a reference while it uses a route.
 * - Building validates everything and rejects (NACKs) what is not implemented, naming the
 *   field: a route config never silently behaves differently from Envoy's.
 * - Matching never allocates except for regex work and never fails: bad input just does not
 *   match.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "config/matcher.h"
#include "http/hash_policy.h"
#include "http/headers.h"
#include "http/regex.h"
#include "stats/stats.h"

struct msm_http_filter_ops;

enum msm_hm_kind {
    MSM_HM_STRING = 0, /* string_match and the deprecated exact/prefix/suffix/contains/regex */
    MSM_HM_PRESENT = 1,
    MSM_HM_RANGE = 2,
};

struct msm_header_match {
    char *name;
    enum msm_hm_kind kind;
    struct msm_str_matcher sm;
    bool present;
    int64_t start, end; /* [start, end) */
    bool invert;
    bool missing_as_empty;
};

struct msm_query_match {
    char *name;
    bool present_only;
    struct msm_str_matcher sm;
};

enum msm_path_kind {
    MSM_PATH_PREFIX = 0,
    MSM_PATH_EXACT = 1,
    MSM_PATH_REGEX = 2,
    MSM_PATH_SEP_PREFIX = 3,
    MSM_PATH_CONNECT = 4, /* connect_matcher: CONNECT requests only (they have no :path) */
};

struct msm_route_match {
    enum msm_path_kind kind;
    char *path;
    size_t plen;
    struct msm_regex *re;
    bool case_sensitive;
    bool grpc;
    struct msm_header_match *hdrs;
    int n_hdrs;
    struct msm_query_match *qs;
    int n_qs;
    uint64_t fraction_num, fraction_den; /* runtime_fraction default_value; den 0 = none */
};

/* HeaderValueOption.append_action */
enum msm_hop_action {
    MSM_HOP_APPEND = 0,         /* APPEND_IF_EXISTS_OR_ADD */
    MSM_HOP_ADD_IF_ABSENT = 1,
    MSM_HOP_OVERWRITE = 2,      /* OVERWRITE_IF_EXISTS_OR_ADD */
    MSM_HOP_OVERWRITE_IF_EXISTS = 3,
};

/* A value part: literal text or a formatter variable (%DOWNSTREAM_REMOTE_ADDRESS%...). */
enum msm_hv_var {
    MSM_HV_LITERAL = 0,
    MSM_HV_DOWNSTREAM_REMOTE_ADDRESS = 1,
    MSM_HV_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT = 2,
    MSM_HV_DOWNSTREAM_LOCAL_ADDRESS = 3,
    MSM_HV_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT = 4,
    MSM_HV_DOWNSTREAM_LOCAL_PORT = 5,
    MSM_HV_UPSTREAM_REMOTE_ADDRESS = 6,
    MSM_HV_PROTOCOL = 7,
    MSM_HV_REQUEST_ID = 8,
    MSM_HV_HOSTNAME = 9,
    MSM_HV_START_TIME = 10,
};

struct msm_hv_part {
    enum msm_hv_var var;
    char *text; /* literal */
};

struct msm_header_op {
    char *name;
    struct msm_hv_part *parts;
    int n_parts;
    enum msm_hop_action action;
    bool keep_empty;
};

struct msm_header_ops {
    struct msm_header_op *add;
    int n_add;
    char **remove;
    int n_remove;
};

/* retry_on bits */
#define MSM_RETRY_5XX 0x0001u
#define MSM_RETRY_GATEWAY_ERROR 0x0002u
#define MSM_RETRY_CONNECT_FAILURE 0x0004u
#define MSM_RETRY_RETRIABLE_4XX 0x0008u
#define MSM_RETRY_REFUSED_STREAM 0x0010u
#define MSM_RETRY_RETRIABLE_STATUS_CODES 0x0020u
#define MSM_RETRY_RESET 0x0040u
#define MSM_RETRY_RETRIABLE_HEADERS 0x0080u
#define MSM_RETRY_GRPC_CANCELLED 0x0100u
#define MSM_RETRY_GRPC_DEADLINE_EXCEEDED 0x0200u
#define MSM_RETRY_GRPC_RESOURCE_EXHAUSTED 0x0400u
#define MSM_RETRY_GRPC_UNAVAILABLE 0x0800u
#define MSM_RETRY_GRPC_INTERNAL 0x1000u
#define MSM_RETRY_HTTP3_POST_CONNECT 0x2000u
#define MSM_RETRY_RESET_BEFORE_REQUEST 0x4000u

/* Parse a retry_on list ("5xx,connect-failure"); unknown tokens are ignored, as Envoy does. */
uint32_t msm_retry_on_parse(const char *s);

struct msm_retry_policy {
    uint32_t retry_on;
    uint32_t num_retries;     /* default 1 */
    uint32_t per_try_timeout_ms;
    uint32_t per_try_idle_timeout_ms;
    uint32_t *codes;
    int n_codes;
    bool previous_hosts;
    uint32_t host_selection_max_attempts;
    uint32_t backoff_base_ms, backoff_max_ms; /* 25, 250 */
};

struct msm_per_filter {
    char *name; /* the HTTP filter's name in the HCM */
    const struct msm_http_filter_ops *ops; /* NULL: accepted with no effect (disabled/no-op) */
    void *config;
    bool disabled; /* FilterConfig.disabled */
};

struct msm_per_filters {
    struct msm_per_filter *v;
    int n;
};

enum msm_route_kind {
    MSM_ROUTE_CLUSTER = 0,
    MSM_ROUTE_WEIGHTED = 1,
    MSM_ROUTE_CLUSTER_HEADER = 2,
    MSM_ROUTE_REDIRECT = 3,
    MSM_ROUTE_DIRECT = 4,
    MSM_ROUTE_NON_FORWARDING = 5,
};

struct msm_weighted_cluster {
    char *name;
    char *cluster_header;
    uint32_t weight;
    struct msm_header_ops req, resp;
    char *host_rewrite;
    struct msm_per_filters pf;
};

struct msm_redirect {
    char *scheme; /* NULL = keep */
    char *host;
    uint32_t port;
    char *path;           /* path_redirect */
    char *prefix_rewrite;
    struct msm_regex *re; /* regex_rewrite */
    char *re_sub;
    int status;           /* 301 302 303 307 308 */
    bool strip_query;
};

/* RouteAction.RequestMirrorPolicy (Envoy's ShadowPolicy): a copy of the request goes to another
 * cluster, fire and forget (filters/http/router/shadow.c). */
struct msm_mirror_policy {
    char *cluster;        /* NULL when cluster_header names it */
    char *cluster_header; /* lower-case; the first value names the cluster */
    uint64_t num, den;    /* runtime_fraction.default_value; 100/100 when absent */
    bool keep_host;       /* disable_shadow_host_suffix_append */
};

struct msm_mirror_policies {
    struct msm_mirror_policy *v;
    int n;
};

/* RouteAction.upgrade_configs: per-route switch of an upgrade type (case-insensitive; "CONNECT"
 * for CONNECT), overriding the connection manager's. */
struct msm_route_upgrade {
    char *type;
    bool enabled;
    bool connect_terminate; /* connect_config present: CONNECT ends here, raw TCP upstream */
};

struct msm_route {
    char *name;
    struct msm_route_match m;
    enum msm_route_kind kind;
    char *cluster;
    char *cluster_header;
    struct msm_weighted_cluster *wc;
    int n_wc;
    uint64_t total_weight;
    char *wc_header; /* random value from a header */
    int cluster_not_found_code; /* 503 or 404 */
    bool has_timeout;
    uint32_t timeout_ms;   /* default 15 s; 0 = none */
    uint32_t idle_timeout_ms;
    bool has_idle_timeout; /* route.idle_timeout set: overrides stream_idle_timeout (0 = off) */
    struct msm_route_upgrade *upgrades;
    int n_upgrades;
    /* Stream duration (Envoy's "new timeouts", RouteAction.max_stream_duration present): the
     * connection manager's timer (hcm_stream.c). has_msd: max_stream_duration set (0 = none);
     * has_grpc_max: grpc_timeout_header_max set, a grpc-timeout header then sets the duration
     * (capped unless 0, minus grpc_offset_ms). */
    bool new_timeouts;
    bool has_msd, has_grpc_max;
    uint32_t max_stream_duration_ms, grpc_max_ms, grpc_offset_ms;
    /* The deprecated max_grpc_timeout / grpc_timeout_offset (Istio <= 1.18 sets them): without
     * new timeouts, a gRPC request's route timeout comes from its grpc-timeout (router.c). */
    bool has_max_grpc;
    uint32_t max_grpc_ms, grpc_timeout_offset_ms;
    const struct msm_retry_policy *retry; /* route's, else the vhost's; NULL = none */
    struct msm_retry_policy *own_retry;
    char *prefix_rewrite;
    struct msm_regex *regex_rewrite;
    char *regex_sub;
    char *host_rewrite;
    bool auto_host_rewrite;
    char *host_rewrite_header;
    bool append_xfh;
    struct msm_redirect redir;
    int direct_status;
    char *direct_body;
    size_t direct_body_len;
    bool has_direct_body;
    struct msm_header_ops req, resp;
    struct msm_per_filters pf;
    char *decorator;
    struct msm_hash_policy hash; /* hash_policy: for RING_HASH / MAGLEV clusters */
    uint32_t buffer_limit; /* per_request_buffer_limit_bytes, 0 = listener's */
    struct msm_vhost *vh;  /* back-pointer (the owning virtual host) */
    struct msm_mirror_policies own_mirrors;
    /* The mirror policies in force: the most specific non-empty list of the route, its
     * virtual host, the route configuration (not merged, as Envoy); NULL = none. */
    const struct msm_mirror_policies *mirrors;
};

enum msm_domain_kind {
    MSM_DOM_EXACT = 0,
    MSM_DOM_SUFFIX = 1, /* "*.example.com", "*-bar.example.com" */
    MSM_DOM_PREFIX = 2, /* "example.*" */
    MSM_DOM_ANY = 3,    /* "*" */
};

struct msm_vhost {
    char *name;
    char **domains;
    int n_domains;
    struct msm_route *routes;
    int n_routes;
    struct msm_header_ops req, resp;
    struct msm_retry_policy *retry;
    struct msm_per_filters pf;
    bool include_attempt_count;
    bool include_attempt_count_in_response;
    bool include_is_timeout_retry; /* x-envoy-is-timeout-retry on retried requests */
    int require_tls; /* 0 none, 1 external only, 2 all */
    uint32_t buffer_limit;
    char *stat_prefix; /* "vhost.<name>." */
    struct msm_mirror_policies mirrors;
};

struct msm_domain_entry {
    char *key; /* exact host, suffix or prefix (lower-case) */
    size_t len;
    enum msm_domain_kind kind;
    struct msm_vhost *vh;
};

struct msm_route_config {
    atomic_int refs;
    char *name;
    struct msm_vhost *vhosts;
    int n_vhosts;
    struct msm_domain_entry *domains; /* exact first, then suffixes and prefixes by length */
    int n_domains;
    struct msm_vhost *any;
    struct msm_header_ops req, resp;
    char **internal_only;
    int n_internal_only;
    bool ignore_port;
    bool most_specific_wins;
    bool any_disabled_filter; /* some typed_per_filter_config entry is FilterConfig{disabled} */
    uint32_t max_direct_body;
    struct msm_per_filters pf;
    struct msm_mirror_policies mirrors;
};

/* Filters of the HCM that will use this route config: per-filter configs are compiled by the
 * filter their name maps to. NULL/0 = look filters up by per-route config type only. */
struct msm_route_build_ctx {
    const char *const *filter_names;
    const struct msm_http_filter_ops *const *filter_ops;
    int n_filters;
    bool validate_only;
};

/* Build from an envoy.config.route.v3.RouteConfiguration (<proto>). NULL with <err> naming the
 * field ("virtual_hosts[0].routes[2].route.retry_policy.retry_priority: not supported"). */
struct msm_route_config *msm_route_config_new(const void *proto,
                                              const struct msm_route_build_ctx *ctx,
                                              struct msm_err *err);
struct msm_route_config *msm_route_config_ref(struct msm_route_config *rc);
void msm_route_config_unref(struct msm_route_config *rc);

/* --- matching (any thread) ------------------------------------------------------------------- */

/* The first value of query parameter <name> (case-sensitive, not decoded) in <path>'s query
 * string: <*val> points into <path>, <*vlen> is 0 for a parameter without "=". */
bool msm_http_query_param(const char *path, const char *name, const char **val, size_t *vlen);
/* The virtual host for request headers <req> (":authority"), or NULL. */
const struct msm_vhost *msm_route_vhost(const struct msm_route_config *rc,
                                        const struct msm_hdrs *req);
/* The first route of <vh> matching <req>; <rnd> drives runtime_fraction. NULL = no route. */
const struct msm_route *msm_route_match(const struct msm_vhost *vh, const struct msm_hdrs *req,
                                        uint64_t rnd);
/* Both at once: NULL when no virtual host or no route matches. */
const struct msm_route *msm_route_select(const struct msm_route_config *rc,
                                         const struct msm_hdrs *req, uint64_t rnd);
bool msm_header_match(const struct msm_header_match *m, const struct msm_hdrs *h);
/* The route's switch for upgrade type <type> (case-insensitive), or NULL. */
const struct msm_route_upgrade *msm_route_upgrade_find(const struct msm_route *r,
                                                       const char *type);
/* Weighted cluster for random value <rnd> (index into route->wc). */
int msm_route_pick_weighted(const struct msm_route *r, uint64_t rnd);

/* Path rewriting for <r> applied to request path <path> (with query): prefix_rewrite or
 * regex_rewrite. Returns a new string, or NULL when the route rewrites nothing. */
char *msm_route_rewrite_path(const struct msm_route *r, const char *path);
/* The Location of a redirect route for request <req>; <tls> says the downstream scheme. */
char *msm_route_redirect_location(const struct msm_route *r, const struct msm_hdrs *req,
                                  bool tls);

/* Values for formatter variables in header ops. */
struct msm_hv_ctx {
    const char *downstream_remote; /* "ip:port" */
    const char *downstream_local;
    const char *upstream_remote;
    const char *protocol; /* "HTTP/1.1" */
    const char *request_id;
};
/* Apply <ops> to <h>. */
void msm_header_ops_apply(const struct msm_header_ops *ops, struct msm_hdrs *h,
                          const struct msm_hv_ctx *vc);

/* Helpers shared with HTTP filters (fault, cors) that parse Envoy matchers themselves. */
int msm_header_match_from_proto(const void *header_matcher, struct msm_header_match *out,
                                struct msm_err *err);
void msm_header_match_deinit(struct msm_header_match *m);
/* Per-filter config named <name> of the most specific level (weighted cluster, route, vhost,
 * route config), or NULL; <disabled> is set when that level disables the filter. */
const struct msm_per_filter *msm_route_per_filter(const struct msm_route_config *rc,
                                                  const struct msm_route *r, int wc,
                                                  const char *name);
