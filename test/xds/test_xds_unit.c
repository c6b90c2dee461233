/* Unit tests of the xDS client's pure parts (no gRPC): the string map, response decoding,
 * request packing, target resolution from a bootstrap. The protocol itself is tested against
 * the control plane in test_xds_client.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

#include "common/alloc.h"
#include "config/bootstrap.h"
#include "xds/strmap.h"
#include "xds/xds_proto.h"
#include "xds/xds_target.h"

/* ---- strmap --------------------------------------------------------------------------------- */

static void test_strmap_random_ops(void **state)
{
    (void)state;
    enum { N = 400 };
    bool ref[N] = {false};
    struct msm_strmap m;
    msm_strmap_init(&m);
    uint32_t seed = 12345;
    char key[32];
    for (int step = 0; step < 20000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        snprintf(key, sizeof(key), "name-%d", k);
        if ((seed >> 4) & 1) {
            bool added;
            msm_strmap_put(&m, key, (void *)(intptr_t)(k + 1), &added);
            assert_int_equal(added, !ref[k]);
            ref[k] = true;
        } else {
            void *v = NULL;
            bool had = msm_strmap_del(&m, key, &v);
            assert_int_equal(had, ref[k]);
            if (had) {
                assert_int_equal((intptr_t)v, k + 1);
            }
            ref[k] = false;
        }
        if (step % 997 == 0) {
            size_t count = 0;
            for (int i = 0; i < N; i++) {
                snprintf(key, sizeof(key), "name-%d", i);
                void **slot = msm_strmap_find(&m, key);
                assert_int_equal(slot != NULL, ref[i]);
                count += ref[i];
            }
            assert_int_equal(count, m.n);
        }
    }
    const char **keys = msm_strmap_sorted_keys(&m);
    for (size_t i = 1; i < m.n; i++) {
        assert_true(strcmp(keys[i - 1], keys[i]) < 0);
    }
    free(keys);
    msm_strmap_deinit(&m);
}

/* Interned names: maps holding the same name share one string; the pool forgets a name with
 * its last reference; random puts and deletes on two maps keep the pool exactly the union of
 * their keys (a missed unref or a double one shows here, and under ASan). */
static void test_names_interned(void **state)
{
    (void)state;
    assert_int_equal(msm_name_count(), 0);
    struct msm_strmap a, b;
    msm_strmap_init(&a);
    msm_strmap_init(&b);
    char key[64];
    snprintf(key, sizeof(key), "outbound|8080||svc%d.ns%d.svc.cluster.local", 1, 1);
    msm_strmap_put(&a, key, NULL, NULL);
    msm_strmap_put(&b, key, NULL, NULL);
    const char *ka = NULL, *kb = NULL;
    size_t i = 0;
    assert_true(msm_strmap_next(&a, &i, &ka, NULL));
    i = 0;
    assert_true(msm_strmap_next(&b, &i, &kb, NULL));
    assert_ptr_equal(ka, kb);
    assert_ptr_not_equal(ka, key);
    char *own = msm_name_intern(key);
    assert_ptr_equal(own, ka);
    assert_ptr_equal(msm_name_ref(own), own);
    assert_int_equal(msm_name_count(), 1);
    msm_strmap_del(&a, key, NULL);
    msm_strmap_deinit(&b);
    assert_string_equal(own, key); /* still referenced twice */
    msm_name_unref(own);
    msm_name_unref(own);
    assert_int_equal(msm_name_count(), 0);
    msm_name_unref(NULL);

    enum { N = 300 };
    bool in[2][N] = {{false}};
    struct msm_strmap *m[2] = {&a, &b};
    msm_strmap_init(&b);
    uint32_t seed = 777;
    for (int step = 0; step < 30000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N), w = (int)((seed >> 20) & 1);
        snprintf(key, sizeof(key), "cluster-%d", k);
        if ((seed >> 4) & 1) {
            msm_strmap_put(m[w], key, NULL, NULL);
            in[w][k] = true;
        } else {
            assert_int_equal(msm_strmap_del(m[w], key, NULL), in[w][k]);
            in[w][k] = false;
        }
        if (step % 1009 == 0) {
            size_t u = 0;
            for (int j = 0; j < N; j++) {
                u += in[0][j] || in[1][j];
            }
            assert_int_equal(msm_name_count(), u);
        }
    }
    msm_strmap_deinit(&a);
    msm_strmap_deinit(&b);
    assert_int_equal(msm_name_count(), 0);

    /* A borrowed map keeps the callers' pointers and interns nothing. */
    struct msm_strmap t;
    msm_strmap_init_borrowed(&t);
    char k1[] = "svc-a", k2[] = "svc-b";
    bool added;
    msm_strmap_put(&t, k1, NULL, &added);
    assert_true(added);
    msm_strmap_put(&t, k2, NULL, NULL);
    msm_strmap_put(&t, "svc-a", NULL, &added);
    assert_false(added);
    assert_int_equal(msm_name_count(), 0);
    const char *k = NULL;
    i = 0;
    while (msm_strmap_next(&t, &i, &k, NULL) && strcmp(k, "svc-a") != 0) {
    }
    assert_ptr_equal(k, k1);
    assert_true(msm_strmap_del(&t, "svc-b", NULL));
    assert_string_equal(k2, "svc-b");
    msm_strmap_deinit(&t);
    assert_false(t.borrowed);
}

/* ---- decoding ----------------------------------------------------------------------------- */

#define CDS "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define LDS "type.googleapis.com/envoy.config.listener.v3.Listener"

/* An Any holding a Cluster named <name> (value malloc'ed; free with free_any). */
static Google__Protobuf__Any *cluster_any(const char *name, const char *type_url)
{
    /* The init function, not the INIT macro: the macro names deprecated fields. */
    Envoy__Config__Cluster__V3__Cluster c;
    envoy__config__cluster__v3__cluster__init(&c);
    c.name = (char *)name;
    Google__Protobuf__Any *a = msm_xmalloc(sizeof(*a));
    google__protobuf__any__init(a);
    a->type_url = (char *)type_url;
    a->value.len = protobuf_c_message_get_packed_size(&c.base);
    a->value.data = msm_xmalloc(a->value.len + 1);
    protobuf_c_message_pack(&c.base, a->value.data);
    return a;
}

static void free_any(Google__Protobuf__Any *a)
{
    free(a->value.data);
    free(a);
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = msm_xmalloc(*len + 1);
    protobuf_c_message_pack(m, b);
    return b;
}

static struct msm_xds_decoded *sotw(const char *type_url, Google__Protobuf__Any **res, size_t n)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse r =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    r.version_info = "v7";
    r.nonce = "n7";
    r.type_url = (char *)type_url;
    r.resources = res;
    r.n_resources = n;
    size_t len;
    uint8_t *b = pack(&r.base, &len);
    struct msm_err err;
    struct msm_xds_decoded *d = msm_xds_decode(false, b, len, &err);
    free(b);
    assert_non_null(d);
    return d;
}

/* <res> in a SotW response, decoded eagerly (<*eager>) and lazily (returned). */
static struct msm_xds_decoded *sotw_both(Google__Protobuf__Any **res, size_t n,
                                         struct msm_xds_decoded **eager)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse r =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    r.version_info = "v1";
    r.nonce = "n1";
    r.type_url = CDS;
    r.resources = res;
    r.n_resources = n;
    size_t len;
    uint8_t *b = pack(&r.base, &len);
    struct msm_err err;
    *eager = msm_xds_decode(false, b, len, &err);
    struct msm_xds_decoded *d = msm_xds_decode_ex(false, b, len, true, NULL, NULL, &err);
    free(b);
    assert_non_null(*eager);
    assert_non_null(d);
    return d;
}

/* Lazy decoding (what the proxy's client does for clusters, assignments and listeners): names
 * from the bytes, one message unpacked at a time, and every wire error protobuf-c would report
 * found before anything is applied. */
static void test_decode_lazy(void **state)
{
    (void)state;
    Google__Protobuf__Any *a[2] = {cluster_any("a", CDS), cluster_any("b", CDS)};
    struct msm_xds_decoded *e, *d = sotw_both(a, 2, &e);
    assert_null(d->error);
    assert_true(msm_xds_decoded_lazy(d));
    assert_false(msm_xds_decoded_lazy(e));
    assert_int_equal(d->n, 2);
    assert_string_equal(d->res[0].name, "a");
    assert_string_equal(d->res[1].name, "b");
    assert_null(d->res[0].msg);
    assert_int_equal(d->res[0].len, a[0]->value.len);
    struct msm_err err;
    const Envoy__Config__Cluster__V3__Cluster *c = (const void *)msm_xds_decoded_msg(d, 0, &err);
    assert_non_null(c);
    assert_string_equal(c->name, "a");
    c = (const void *)msm_xds_decoded_msg(d, 1, &err);
    assert_string_equal(c->name, "b");
    assert_null(d->res[0].msg); /* one at a time */
    msm_xds_decoded_release(d, 1);
    assert_null(msm_xds_decoded_msg(d, 1, &err));
    c = (const void *)msm_xds_decoded_msg(d, 0, &err);
    assert_string_equal(c->name, "a");
    msm_xds_decoded_free(d);
    msm_xds_decoded_free(e);

    /* Wire errors: each is an error of the whole response either way. A string field sent as
     * a varint, a group, a length past the end, a one-byte tag 0, an unterminated varint. Then
     * what protobuf-c accepts: an unknown field of each wire type and its quirks. */
    static const struct {
        uint8_t b[12];
        size_t n;
        bool ok;
    } cases[] = {
        {{0x08, 0x01}, 2, false},                          /* name (1) as varint */
        {{0xa3, 0x3e, 0xa4, 0x3e}, 4, false},              /* group, field 1000 */
        {{0x0a, 0x05, 'a'}, 3, false},                     /* name: length past the end */
        {{0x00, 0x01}, 2, false},                          /* tag 0 */
        {{0x0a, 0x01, 'x', 0xa8, 0x3e, 0x80}, 6, false},   /* unterminated varint */
        {{0x0a, 0x01, 'x', 0xa8, 0x3e, 0x05}, 6, true},    /* unknown varint (1000) */
        {{0xa9, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8}, 10, true},  /* unknown 64-bit */
        {{0xad, 0x3e, 1, 2, 3, 4}, 6, true},               /* unknown 32-bit */
        {{0xaa, 0x3e, 0x02, 'h', 'i'}, 5, true},           /* unknown length-delimited */
        {{0xb9, 0x02, 1, 2, 3, 4, 5, 6, 7, 8}, 10, true},  /* a bool (39) as 64-bit: protobuf-c */
        {{0x80, 0x00, 0x01}, 3, true},                     /* field 0 in a 2-byte tag: likewise */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Google__Protobuf__Any bad = GOOGLE__PROTOBUF__ANY__INIT;
        bad.type_url = CDS;
        bad.value.data = (uint8_t *)cases[i].b;
        bad.value.len = cases[i].n;
        Google__Protobuf__Any *one[1] = {&bad};
        d = sotw_both(one, 1, &e);
        if (cases[i].ok) {
            assert_null(e->error);
            assert_null(d->error);
            assert_non_null(msm_xds_decoded_msg(d, 0, &err));
        } else {
            assert_non_null(e->error);
            assert_non_null(d->error);
            assert_int_equal(d->n, 0);
        }
        msm_xds_decoded_free(d);
        msm_xds_decoded_free(e);
    }
    free_any(a[0]);
    free_any(a[1]);
}

static void test_decode_sotw(void **state)
{
    (void)state;
    Google__Protobuf__Any *a[2] = {cluster_any("a", CDS), cluster_any("b", CDS)};
    struct msm_xds_decoded *d = sotw(CDS, a, 2);
    assert_null(d->error);
    assert_int_equal(d->n, 2);
    assert_string_equal(d->res[0].name, "a");
    assert_string_equal(d->res[1].name, "b");
    assert_string_equal(d->res[1].version, "v7");
    assert_string_equal(d->nonce, "n7");
    assert_string_equal(d->version_info, "v7");
    assert_string_equal(d->res[0].msg->descriptor->name, "envoy.config.cluster.v3.Cluster");
    msm_xds_decoded_free(d);

    /* A mismatched Any type: NACK reason as Envoy words it, and nothing decoded. */
    Google__Protobuf__Any *m[2] = {a[0], cluster_any("x", LDS)};
    d = sotw(CDS, m, 2);
    assert_non_null(d->error);
    assert_non_null(strstr(d->error, "resources[1]: type URL " LDS " embedded in an individual "
                                     "Any does not match the message-wide type URL " CDS));
    assert_int_equal(d->n, 0);
    assert_string_equal(d->nonce, "n7");
    msm_xds_decoded_free(d);
    free_any(m[1]);

    /* Duplicate names. */
    Google__Protobuf__Any *dup[2] = {a[0], a[0]};
    d = sotw(CDS, dup, 2);
    assert_non_null(d->error);
    assert_string_equal(d->error, "duplicate resource name 'a' in one DiscoveryResponse");
    msm_xds_decoded_free(d);

    /* Bytes that do not parse as the type. */
    Google__Protobuf__Any bad = GOOGLE__PROTOBUF__ANY__INIT;
    uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    bad.type_url = CDS;
    bad.value.data = junk;
    bad.value.len = sizeof(junk);
    Google__Protobuf__Any *b1[1] = {&bad};
    d = sotw(CDS, b1, 1);
    assert_non_null(d->error);
    assert_true(!strncmp(d->error, "resources[0]: ", 14));
    msm_xds_decoded_free(d);

    /* Unknown response type. */
    d = sotw("type.googleapis.com/no.Such", NULL, 0);
    assert_string_equal(d->error, "unknown type URL 'type.googleapis.com/no.Such'");
    msm_xds_decoded_free(d);
    free_any(a[0]);
    free_any(a[1]);
}

static void test_decode_sotw_wrapped(void **state)
{
    (void)state;
    Google__Protobuf__Any *inner = cluster_any("inner", CDS);
    Envoy__Service__Discovery__V3__Resource w = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    w.name = "wrapped";
    w.version = "rv";
    w.resource = inner;
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
    a.type_url = "type.googleapis.com/envoy.service.discovery.v3.Resource";
    a.value.data = pack(&w.base, &a.value.len);
    Envoy__Service__Discovery__V3__Resource hb = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    hb.name = "heartbeat";
    Google__Protobuf__Any h = GOOGLE__PROTOBUF__ANY__INIT;
    h.type_url = a.type_url;
    h.value.data = pack(&hb.base, &h.value.len);
    Google__Protobuf__Any *v[2] = {&a, &h};
    struct msm_xds_decoded *d = sotw(CDS, v, 2);
    assert_null(d->error);
    assert_int_equal(d->n, 1); /* the heartbeat carries nothing */
    assert_string_equal(d->res[0].name, "wrapped");
    assert_string_equal(d->res[0].version, "rv");
    msm_xds_decoded_free(d);
    free(a.value.data);
    free(h.value.data);
    free_any(inner);
}

static void test_decode_delta(void **state)
{
    (void)state;
    Google__Protobuf__Any *a = cluster_any("a", CDS);
    Envoy__Service__Discovery__V3__Resource r1 = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    r1.name = "a";
    r1.version = "1";
    r1.resource = a;
    Envoy__Service__Discovery__V3__Resource r2 = ENVOY__SERVICE__DISCOVERY__V3__RESOURCE__INIT;
    r2.name = "ttl-only"; /* heartbeat: skipped */
    Envoy__Service__Discovery__V3__Resource *rs[2] = {&r1, &r2};
    char *removed[2] = {"gone1", "gone2"};
    Envoy__Service__Discovery__V3__DeltaDiscoveryResponse r =
        ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
    r.system_version_info = "sys";
    r.type_url = CDS;
    r.nonce = "dn";
    r.resources = rs;
    r.n_resources = 2;
    r.removed_resources = removed;
    r.n_removed_resources = 2;
    size_t len;
    uint8_t *b = pack(&r.base, &len);
    struct msm_err err;
    struct msm_xds_decoded *d = msm_xds_decode(true, b, len, &err);
    assert_non_null(d);
    assert_null(d->error);
    assert_int_equal(d->n, 1);
    assert_string_equal(d->res[0].name, "a");
    assert_string_equal(d->res[0].version, "1");
    assert_int_equal(d->n_removed, 2);
    assert_string_equal(d->removed[1], "gone2");
    assert_string_equal(d->version_info, "sys");
    msm_xds_decoded_free(d);
    /* The same bytes are not a valid SotW response type-wise, but garbage is refused. */
    uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_null(msm_xds_decode(true, garbage, sizeof(garbage), &err));
    assert_non_null(strstr(err.msg, "malformed envoy.service.discovery.v3.DeltaDiscoveryResponse"));
    free(b);
    free_any(a);
}

/* ---- packing -------------------------------------------------------------------------------- */

static void test_pack_sotw_nack(void **state)
{
    (void)state;
    const char *names[] = {"x", "y"};
    Envoy__Config__Core__V3__Node node;
    envoy__config__core__v3__node__init(&node);
    node.id = "node-1";
    char msg[5000];
    memset(msg, 'e', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    msg[0] = (char)0xff; /* not UTF-8: replaced */
    struct msm_xds_req r = {.type_url = CDS, .version_info = "v1", .names = names, .n_names = 2,
                            .nonce = "n2", .error = msg, .node = &node};
    size_t len;
    uint8_t *b = msm_xds_pack_request(false, &r, &len);
    Envoy__Service__Discovery__V3__DiscoveryRequest *q =
        envoy__service__discovery__v3__discovery_request__unpack(NULL, len, b);
    assert_non_null(q);
    assert_string_equal(q->version_info, "v1");
    assert_string_equal(q->response_nonce, "n2");
    assert_int_equal(q->n_resource_names, 2);
    assert_non_null(q->node);
    assert_string_equal(q->node->id, "node-1");
    assert_non_null(q->error_detail);
    assert_int_equal(q->error_detail->code, 13);
    assert_int_equal(strlen(q->error_detail->message), MSM_XDS_MAX_ERROR_DETAIL);
    assert_int_equal(q->error_detail->message[0], '?');
    envoy__service__discovery__v3__discovery_request__free_unpacked(q, NULL);
    free(b);
}

static void test_pack_delta_initial(void **state)
{
    (void)state;
    const char *sub[] = {"a"}, *unsub[] = {"b"}, *kn[] = {"a"}, *kv[] = {"7"};
    struct msm_xds_req r = {.type_url = CDS, .names = sub, .n_names = 1, .unsub = unsub,
                            .n_unsub = 1, .irv_names = kn, .irv_versions = kv, .n_irv = 1};
    size_t len;
    uint8_t *b = msm_xds_pack_request(true, &r, &len);
    Envoy__Service__Discovery__V3__DeltaDiscoveryRequest *q =
        envoy__service__discovery__v3__delta_discovery_request__unpack(NULL, len, b);
    assert_non_null(q);
    assert_int_equal(q->n_resource_names_subscribe, 1);
    assert_int_equal(q->n_resource_names_unsubscribe, 1);
    assert_int_equal(q->n_initial_resource_versions, 1);
    assert_string_equal(q->initial_resource_versions[0]->value, "7");
    assert_null(q->error_detail);
    assert_null(q->node);
    assert_string_equal(q->response_nonce, "");
    envoy__service__discovery__v3__delta_discovery_request__free_unpacked(q, NULL);
    free(b);
}

/* ---- targets ---------------------------------------------------------------------------------- */

static Envoy__Config__Bootstrap__V3__Bootstrap *boot(const char *clusters)
{
    char *text = msm_xasprintf("{\"static_resources\": {\"clusters\": [%s]}}", clusters);
    struct msm_err err;
    Envoy__Config__Bootstrap__V3__Bootstrap *b =
        msm_bootstrap_parse("t.json", text, strlen(text), false, &err);
    if (!b) {
        fail_msg("bootstrap: %s", err.msg);
    }
    free(text);
    return b;
}

static int resolve(const char *clusters, const char *name, struct msm_xds_target *t,
                   struct msm_err *err)
{
    Envoy__Config__Bootstrap__V3__Bootstrap *b = boot(clusters);
    Envoy__Config__Core__V3__GrpcService__EnvoyGrpc eg =
        ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__ENVOY_GRPC__INIT;
    eg.cluster_name = (char *)name;
    Envoy__Config__Core__V3__GrpcService gs = ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__INIT;
    gs.target_specifier_case = ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC;
    gs.envoy_grpc = &eg;
    int rc = msm_xds_target_resolve(b, &gs, t, err);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    return rc;
}

#define EP(addr) "{\"endpoint\": {\"address\": " addr "}}"
#define CL(name, type, eps, extra)                                                                \
    "{\"name\": \"" name "\", \"type\": \"" type "\", \"load_assignment\": {\"cluster_name\": \"" \
    name "\", \"endpoints\": [{\"lb_endpoints\": [" eps "]}]}" extra "}"

static void expect_target(const char *clusters, const char *target)
{
    struct msm_xds_target t;
    struct msm_err err;
    if (resolve(clusters, "x", &t, &err) < 0) {
        fail_msg("resolve: %s", err.msg);
    }
    assert_string_equal(t.target, target);
    msm_xds_target_deinit(&t);
}

static void expect_error(const char *clusters, const char *name, const char *substr)
{
    struct msm_xds_target t;
    struct msm_err err;
    assert_true(resolve(clusters, name, &t, &err) < 0);
    if (!strstr(err.msg, substr)) {
        fail_msg("error '%s' lacks '%s'", err.msg, substr);
    }
}

static void test_targets(void **state)
{
    (void)state;
    expect_target(CL("x", "STATIC", EP("{\"pipe\": {\"path\": \"./etc/istio/proxy/XDS\"}}"), ""),
                  "unix:./etc/istio/proxy/XDS");
    expect_target(CL("x", "STATIC", EP("{\"pipe\": {\"path\": \"@abstract\"}}"), ""),
                  "unix-abstract:abstract");
    expect_target(CL("x", "STATIC",
                     EP("{\"socket_address\": {\"address\": \"10.0.0.1\", \"port_value\": 15010}}")
                     "," EP("{\"socket_address\": {\"address\": \"10.0.0.2\", \"port_value\": "
                            "15010}}"), ""),
                  "ipv4:10.0.0.1:15010,10.0.0.2:15010");
    expect_target(CL("x", "STATIC",
                     EP("{\"socket_address\": {\"address\": \"::1\", \"port_value\": 15012}}"), ""),
                  "ipv6:[::1]:15012");
    expect_target(CL("x", "STRICT_DNS",
                     EP("{\"socket_address\": {\"address\": \"istiod.istio-system.svc\", "
                        "\"port_value\": 15012}}"), ""),
                  "dns:///istiod.istio-system.svc:15012");
    expect_error(CL("x", "STATIC",
                    EP("{\"socket_address\": {\"address\": \"istiod\", \"port_value\": 1}}"), ""),
                 "x", "is not an IP address");
    expect_error(CL("x", "STATIC", EP("{\"pipe\": {\"path\": \"/p\"}}"), ""), "y",
                 "envoy_grpc.cluster_name 'y': no such static cluster");
    expect_error("{\"name\": \"x\", \"type\": \"EDS\"}", "x", "cannot carry xDS");
    expect_error(CL("x", "STATIC", "", ""), "x", "cluster has no endpoint");
}

static void test_target_tls_and_keepalive(void **state)
{
    (void)state;
    const char *c = CL("x", "STATIC",
                       EP("{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 1}}"),
                       ", \"upstream_connection_options\": {\"tcp_keepalive\": {"
                       "\"keepalive_time\": 300, \"keepalive_interval\": 10, "
                       "\"keepalive_probes\": 3}}, \"transport_socket\": {\"name\": \"tls\", "
                       "\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions."
                       "transport_sockets.tls.v3.UpstreamTlsContext\", \"sni\": \"istiod\", "
                       "\"common_tls_context\": {\"tls_certificates\": [{\"certificate_chain\": "
                       "{\"inline_string\": \"CERT\"}, \"private_key\": {\"inline_string\": "
                       "\"KEY\"}}], \"validation_context\": {\"trusted_ca\": {\"inline_string\": "
                       "\"CA\"}}}}}");
    struct msm_xds_target t;
    struct msm_err err;
    assert_int_equal(resolve(c, "x", &t, &err), 0);
    assert_true(t.tls);
    assert_string_equal(t.sni, "istiod");
    assert_string_equal(t.root_pem, "CA");
    assert_string_equal(t.cert_pem, "CERT");
    assert_string_equal(t.key_pem, "KEY");
    assert_int_equal(t.keepalive_time_ms, 300000);
    assert_int_equal(t.keepalive_timeout_ms, 30000);
    struct msm_xds_target copy;
    msm_xds_target_copy(&copy, &t);
    assert_string_equal(copy.desc, t.desc);
    msm_xds_target_deinit(&copy);
    msm_xds_target_deinit(&t);

    const char *sds = CL("x", "STATIC",
                         EP("{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 1}}"),
                         ", \"transport_socket\": {\"name\": \"tls\", \"typed_config\": {\"@type\": "
                         "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "UpstreamTlsContext\", \"common_tls_context\": {"
                         "\"tls_certificate_sds_secret_configs\": [{\"name\": \"default\"}]}}}");
    expect_error(sds, "x", "SDS secrets cannot secure the xDS connection");
    const char *missing = CL("x", "STATIC",
                             EP("{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 1}}"),
                             ", \"transport_socket\": {\"name\": \"tls\", \"typed_config\": {"
                             "\"@type\": \"type.googleapis.com/envoy.extensions.transport_sockets."
                             "tls.v3.UpstreamTlsContext\", \"common_tls_context\": {"
                             "\"validation_context\": {\"trusted_ca\": {\"filename\": "
                             "\"/nonexistent/ca.pem\"}}}}}");
    expect_error(missing, "x", "cannot open '/nonexistent/ca.pem'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strmap_random_ops),
        cmocka_unit_test(test_names_interned),
        cmocka_unit_test(test_decode_sotw),
        cmocka_unit_test(test_decode_sotw_wrapped),
        cmocka_unit_test(test_decode_delta),
        cmocka_unit_test(test_decode_lazy),
        cmocka_unit_test(test_pack_sotw_nack),
        cmocka_unit_test(test_pack_delta_initial),
        cmocka_unit_test(test_targets),
        cmocka_unit_test(test_target_tls_and_keepalive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
