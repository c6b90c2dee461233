/* Route matching on arbitrary requests against a route configuration that uses every match
 * kind (prefix, path, separated prefix, regex, headers of every kind, query parameters,
 * case-insensitive, fraction), wildcard domains and rewrites; plus HCM path normalization.
 * The input is split on '\n' into authority, path and then header name/value pairs.
 * Invariants: no crash; a selected route is one of the configuration's; rewrite and redirect
 * of the selected route produce strings; normalization output starts with '/'; the first
 * route's hash_policy (every method) gives the same hash twice, and a generated cookie's line
 * starts with its name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/pbjson.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "filters/network/http_connection_manager/hcm.h"
#include "http/route.h"
#include "net/address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CONFIG[] =
    "{\"name\":\"f\",\"virtual_hosts\":["
    "{\"name\":\"a\",\"domains\":[\"*.example.com\",\"api.*\",\"x:80\"],\"routes\":["
    "{\"match\":{\"prefix\":\"/p\",\"headers\":[{\"name\":\"h1\",\"string_match\":{\"exact\":\"v\"}},"
    "{\"name\":\"h2\",\"range_match\":{\"start\":-5,\"end\":5}},{\"name\":\"h3\","
    "\"present_match\":false,\"invert_match\":true}]},\"route\":{\"cluster\":\"c\","
    "\"prefix_rewrite\":\"/q\",\"hash_policy\":["
    "{\"header\":{\"header_name\":\"h1\",\"regex_rewrite\":{\"pattern\":{\"regex\":\"(a+)+\"},"
    "\"substitution\":\"\\\\1\"}}},{\"cookie\":{\"name\":\"s\",\"ttl\":\"5s\",\"path\":\"/\","
    "\"attributes\":[{\"name\":\"SameSite\",\"value\":\"Lax\"}]}},"
    "{\"query_parameter\":{\"name\":\"k\"},\"terminal\":true},"
    "{\"connection_properties\":{\"source_ip\":true}},{\"header\":{\"header_name\":\"host\"}}]}},"
    "{\"match\":{\"safe_regex\":{\"regex\":\"/(a+)+b\"}},\"route\":{\"cluster\":\"c\","
    "\"regex_rewrite\":{\"pattern\":{\"regex\":\"a\"},\"substitution\":\"\\\\0\\\\0$\"}}},"
    "{\"match\":{\"path_separated_prefix\":\"/sep\",\"case_sensitive\":false},"
    "\"redirect\":{\"prefix_rewrite\":\"/x\",\"port_redirect\":99}},"
    "{\"match\":{\"path\":\"/exact\",\"query_parameters\":[{\"name\":\"k\",\"string_match\":"
    "{\"safe_regex\":{\"regex\":\"[0-9]*\"}}}]},\"direct_response\":{\"status\":200}},"
    "{\"match\":{\"prefix\":\"/\",\"runtime_fraction\":{\"default_value\":{\"numerator\":5}}},"
    "\"route\":{\"weighted_clusters\":{\"clusters\":[{\"name\":\"c\",\"weight\":1},"
    "{\"name\":\"d\",\"weight\":2}]}}}]},"
    "{\"name\":\"b\",\"domains\":[\"*\"],\"routes\":[{\"match\":{\"prefix\":\"\"},"
    "\"redirect\":{\"regex_rewrite\":{\"pattern\":{\"regex\":\".*\"},\"substitution\":\"/\"}}}]}]}";

static struct msm_route_config *rc;

static void on_cookie(void *ctx, const char *v, size_t len)
{
    (void)ctx;
    if (len < 3 || memcmp(v, "s=\"", 3) != 0) {
        abort();
    }
}

static void check_hash(const struct msm_hdrs *h)
{
    static struct msm_address remote, local;
    if (!msm_address_family(&remote)) {
        struct msm_err err;
        if (msm_address_from_ip("::1", 1, &remote, &err) < 0 ||
            msm_address_from_ip("10.0.0.1", 80, &local, &err) < 0) {
            abort();
        }
    }
    const struct msm_hash_input in = {.req = h, .remote = &remote, .local = &local};
    const struct msm_hash_policy *hp = &rc->vhosts[0].routes[0].hash;
    uint64_t a = 0, b = 0;
    bool x = msm_hash_policy_eval(hp, &in, on_cookie, NULL, &a);
    bool y = msm_hash_policy_eval(hp, &in, on_cookie, NULL, &b);
    if (x != y || a != b || !x || !a) {
        abort(); /* source_ip always hashes */
    }
}

static void init(void)
{
    struct msm_err err;
    ProtobufCMessage *m = msm_pbjson_decode_text(
        &envoy__config__route__v3__route_configuration__descriptor, CONFIG, sizeof(CONFIG) - 1,
        NULL, &err);
    if (!m) {
        abort();
    }
    rc = msm_route_config_new(m, NULL, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!rc) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!rc) {
        init();
    }
    if (size > 4096) {
        return 0;
    }
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    char *save = NULL;
    char *tok = strtok_r(s, "\n", &save);
    int field = 0;
    const char *name = NULL;
    const char *path = "/";
    while (tok) {
        if (field == 0) {
            msm_hdrs_addz(&h, ":authority", tok);
        } else if (field == 1) {
            path = tok;
            msm_hdrs_addz(&h, ":path", tok);
        } else if (field % 2 == 0) {
            name = tok;
        } else {
            msm_hdrs_addz(&h, name, tok);
        }
        field++;
        tok = strtok_r(NULL, "\n", &save);
    }
    uint64_t rnd = size ? data[0] : 0;
    const struct msm_route *r = msm_route_select(rc, &h, rnd);
    if (r) {
        bool ours = false;
        for (int i = 0; i < rc->n_vhosts; i++) {
            ours = ours || (r >= rc->vhosts[i].routes &&
                            r < rc->vhosts[i].routes + rc->vhosts[i].n_routes);
        }
        if (!ours) {
            abort();
        }
        free(msm_route_rewrite_path(r, path));
        if (r->kind == MSM_ROUTE_REDIRECT) {
            free(msm_route_redirect_location(r, &h, rnd & 1));
        }
        if (r->kind == MSM_ROUTE_WEIGHTED) {
            int k = msm_route_pick_weighted(r, rnd);
            if (k < 0 || k >= r->n_wc) {
                abort();
            }
        }
    }
    check_hash(&h);
    char *np = msm_hcm_normalize_path(path, true, rnd & 2);
    if (np && np[0] != '/') {
        abort();
    }
    free(np);
    msm_hdrs_deinit(&h);
    free(s);
    return 0;
}
