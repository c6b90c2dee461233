/* RouteConfiguration building (src/http/route.c, hash_policy.c) from arbitrary proto3 JSON, as
 * RDS and inline route configs reach it: every field's validation (matchers, regexes, rewrites,
 * retry and mirror policies, hash policies, per-filter configs, durations), then, for a
 * configuration that builds, route selection and every route's hash policy on a fixed request
 * (headers, cookies, a query string, a grpc-timeout). Invariants: no crash, no leak; a refused
 * configuration has a reason; a selected route is one of the configuration's; a hash policy
 * gives the same answer twice. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/pbjson.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "http/route.h"
#include "net/address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_cookie(void *ctx, const char *v, size_t len)
{
    (void)ctx;
    if (!len || memchr(v, '\r', len) || memchr(v, '\n', len)) {
        abort(); /* a Set-Cookie line the codecs would refuse to send */
    }
}

static void check_routes(const struct msm_route_config *rc)
{
    struct msm_hdrs h;
    msm_hdrs_init(&h);
    msm_hdrs_addz(&h, ":method", "POST");
    msm_hdrs_addz(&h, ":path", "/svc.Api/Call?u=alice&x=1");
    msm_hdrs_addz(&h, ":authority", "api.example.com:8080");
    msm_hdrs_addz(&h, "content-type", "application/grpc");
    msm_hdrs_addz(&h, "grpc-timeout", "250m");
    msm_hdrs_addz(&h, "cookie", "a=1; session=\"s-42\"");
    msm_hdrs_addz(&h, "x-user", "bob");
    struct msm_address remote, local;
    struct msm_err err;
    if (msm_address_from_ip("10.1.2.3", 4567, &remote, &err) < 0 ||
        msm_address_from_ip("10.0.0.1", 8080, &local, &err) < 0) {
        abort();
    }
    const struct msm_hash_input in = {.req = &h, .remote = &remote, .local = &local};
    for (uint64_t rnd = 0; rnd < 2; rnd++) {
        const struct msm_route *r = msm_route_select(rc, &h, rnd);
        bool ours = !r;
        for (int i = 0; i < rc->n_vhosts && !ours; i++) {
            ours = r >= rc->vhosts[i].routes && r < rc->vhosts[i].routes + rc->vhosts[i].n_routes;
        }
        if (!ours) {
            abort();
        }
    }
    for (int i = 0; i < rc->n_vhosts; i++) {
        for (int k = 0; k < rc->vhosts[i].n_routes; k++) {
            const struct msm_hash_policy *hp = &rc->vhosts[i].routes[k].hash;
            uint64_t a = 0, b = 0;
            bool x = msm_hash_policy_eval(hp, &in, on_cookie, NULL, &a);
            bool y = msm_hash_policy_eval(hp, &in, on_cookie, NULL, &b);
            if (x != y || a != b || (x && !a)) {
                abort();
            }
        }
    }
    msm_hdrs_deinit(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384) {
        return 0;
    }
    struct msm_err err = {{0}};
    ProtobufCMessage *m = msm_pbjson_decode_text(
        &envoy__config__route__v3__route_configuration__descriptor, (const char *)data, size,
        NULL, &err);
    if (!m) {
        return 0;
    }
    err.msg[0] = '\0';
    struct msm_route_config *rc = msm_route_config_new(m, NULL, &err);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!rc) {
        if (!err.msg[0]) {
            abort(); /* a refusal must say why (it is the NACK's text) */
        }
        return 0;
    }
    check_routes(rc);
    msm_route_config_unref(rc);
    return 0;
}
