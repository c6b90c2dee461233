/* Round trip of every JSON fixture in $MSM_SHARED_DIR/fixtures/istio through the proto3 JSON
 * codec: strict decode, pack, encode (snake_case and camelCase), decode, pack: the bytes must be
 * identical. Then a semantic comparison of the original JSON tree against the re-encoded one,
 * driven by the message descriptors (an implementation independent of the codec's):
 * every field present with a non-default value in the original must be present and equal in
 * the output, and the output must hold no field the original did not have. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"

#define FIXTURES MSM_SHARED_DIR "/fixtures/istio"

/* Every .json file below FIXTURES must be listed: with its root message type, or with the
 * reason it is not an Envoy proto. An unlisted or missing file fails the test. */
static const struct fixture {
    const char *rel;
    const char *type; /* NULL: skipped, see why */
    const char *why;
} fixtures[] = {
    {"bootstrap/all_golden.json", "envoy.config.bootstrap.v3.Bootstrap", NULL},
    {"bootstrap/default_golden.json", "envoy.config.bootstrap.v3.Bootstrap", NULL},
    {"bootstrap/runningsds_golden.json", "envoy.config.bootstrap.v3.Bootstrap", NULL},
    {"bootstrap/stats_inclusion_golden.json", "envoy.config.bootstrap.v3.Bootstrap", NULL},
    /* istio's bootstrap template: Go text/template directives, not JSON. */
    {"bootstrap/envoy_bootstrap.json", NULL, "Go text/template source, not JSON"},
    /* istioctl test data: only the "bootstrap" member of a BootstrapConfigDump. */
    {"configdump/bootstrapdump.json", "envoy.admin.v3.BootstrapConfigDump", NULL},
    {"configdump/deathstarbench_geo_sidecar_1.18.2_config_dump.json", "envoy.admin.v3.ConfigDump",
     NULL},
    {"configdump/describe_http_config.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/describe_tls_config.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/ecds_configdump.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/endpoint_configdump.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/ossm_hello-openshift_sidecar_1.20.8_config-dump.json",
     "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/ossm_ingressgateway_1.20.8_config-dump.json", "envoy.admin.v3.ConfigDump",
     NULL},
    {"configdump/secret_istio_config_dump.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/sidecar-listeners_authz_configdump.json", "envoy.admin.v3.ConfigDump", NULL},
    {"configdump/waypoint_full_config_dump.json", "envoy.admin.v3.ConfigDump", NULL},
    /* Grafana dashboards: not Envoy protos. */
    {"dashboards/istio-extension-dashboard.json", NULL, "Grafana dashboard"},
    {"dashboards/istio-mesh-dashboard.gen.json", NULL, "Grafana dashboard"},
    {"dashboards/istio-performance-dashboard.json", NULL, "Grafana dashboard"},
    {"dashboards/istio-service-dashboard.json", NULL, "Grafana dashboard"},
    {"dashboards/istio-workload-dashboard.json", NULL, "Grafana dashboard"},
    {"dashboards/pilot-dashboard.gen.json", NULL, "Grafana dashboard"},
    {"dashboards/ztunnel-dashboard.gen.json", NULL, "Grafana dashboard"},
};

/* Types some fixtures use that the build's registry may lack, each with what makes it
 * known. While one is missing, the fixtures using it are skipped with that message (never
 * silently); any other unknown type fails the test. */
static const struct {
    const char *type;
    const char *fix;
} known_missing[] = {
    {"xds.type.matcher.v3.IPMatcher",
     "add xds/type/matcher/v3/ip.proto to cmake/envoy_api_roots.txt"},
};

/* ---- file helpers ------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = msm_xmalloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = msm_xmalloc(*len + 1);
    assert_int_equal(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* ---- semantic comparison ------------------------------------------------------------------ */

struct cmp {
    int mismatches;
    char path[2048];
};

static void mismatch(struct cmp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void mismatch(struct cmp *c, const char *fmt, ...)
{
    if (++c->mismatches <= 40) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  mismatch at %s: ", c->path[0] ? c->path : "(root)");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

static size_t push(struct cmp *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t push(struct cmp *c, const char *fmt, ...)
{
    size_t mark = strlen(c->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->path + mark, sizeof(c->path) - mark, fmt, ap);
    va_end(ap);
    return mark;
}

/* JSON name of a field (trailing '_' of renamed fields dropped), optionally lowerCamelCase. */
static void field_name(const ProtobufCFieldDescriptor *f, bool camel, char *out)
{
    size_t n = strlen(f->name);
    if (n > 1 && f->name[n - 1] == '_') {
        n--;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (camel && f->name[i] == '_' && i + 1 < n) {
            out[o++] = (char)(f->name[i + 1] >= 'a' && f->name[i + 1] <= 'z'
                                  ? f->name[i + 1] - 32
                                  : f->name[i + 1]);
            i++;
        } else {
            out[o++] = f->name[i];
        }
    }
    out[o] = '\0';
}

static const ProtobufCFieldDescriptor *lookup(const ProtobufCMessageDescriptor *d, const char *k)
{
    char a[256], b[256];
    for (unsigned i = 0; i < d->n_fields; i++) {
        field_name(&d->fields[i], false, a);
        field_name(&d->fields[i], true, b);
        if (!strcmp(a, k) || !strcmp(b, k)) {
            return &d->fields[i];
        }
    }
    return NULL;
}

static const char *wkt(const ProtobufCMessageDescriptor *d)
{
    return strncmp(d->name, "google.protobuf.", 16) == 0 ? d->name + 16 : "";
}

static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) {
        return false;
    }
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t n = strlen(e->short_name);
    return n > 5 && !strcmp(e->short_name + n - 5, "Entry") && e->n_fields == 2 &&
           !strcmp(e->fields[0].name, "key") && !strcmp(e->fields[1].name, "value");
}

/* Number held by a JSON number or numeric string; false if neither. */
static bool num(const json_t *j, long double *out)
{
    if (json_is_integer(j)) {
        *out = (long double)json_integer_value(j);
        return true;
    }
    if (json_is_real(j)) {
        *out = json_real_value(j);
        return true;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        if (!strcmp(s, "NaN")) {
            *out = NAN;
            return true;
        }
        if (!strcmp(s, "Infinity") || !strcmp(s, "-Infinity")) {
            *out = s[0] == '-' ? -INFINITY : INFINITY;
            return true;
        }
        *out = strtold(s, &end);
        return *s && !*end;
    }
    return false;
}

/* Duration "1.5s" as nanoseconds (long double is exact enough for config values). */
static bool duration_ns(const json_t *j, long double *out)
{
    if (!json_is_string(j)) {
        return false;
    }
    const char *s = json_string_value(j);
    size_t n = strlen(s);
    if (!n || s[n - 1] != 's') {
        return false;
    }
    char buf[64];
    snprintf(buf, sizeof(buf), "%.*s", (int)(n - 1), s);
    char *end;
    *out = strtold(buf, &end) * 1e9L;
    return !*end;
}

/* Timestamp text with the fraction's trailing zeros removed. */
static void ts_norm(const char *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s", s);
    char *dot = strchr(out, '.');
    if (!dot) {
        return;
    }
    char *z = dot + strspn(dot + 1, "0123456789") + 1;
    char tail[16];
    snprintf(tail, sizeof(tail), "%s", z);
    char *e = z;
    while (e > dot + 1 && e[-1] == '0') {
        e--;
    }
    if (e == dot + 1) {
        e = dot;
    }
    snprintf(e, cap - (size_t)(e - out), "%s", tail);
}

static void b64_norm(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 1 < cap; s++) {
        if (*s == '=') {
            continue;
        }
        out[o++] = *s == '-' ? '+' : *s == '_' ? '/' : *s;
    }
    out[o] = '\0';
}

/* Plain JSON comparison (Struct/Value): numbers numerically. */
static void cmp_plain(struct cmp *c, const json_t *a, const json_t *b)
{
    long double x, y;
    if (json_is_number(a) && json_is_number(b)) {
        num(a, &x);
        num(b, &y);
        if (x != y) {
            mismatch(c, "number %Lg != %Lg", x, y);
        }
        return;
    }
    if (json_typeof(a) != json_typeof(b)) {
        mismatch(c, "JSON type differs (%d vs %d)", json_typeof(a), json_typeof(b));
        return;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            size_t m = push(c, "[\"%s\"]", k);
            const json_t *w = json_object_get(b, k);
            if (!w) {
                mismatch(c, "missing in output");
            } else {
                cmp_plain(c, v, w);
            }
            c->path[m] = '\0';
        }
        if (json_object_size(a) != json_object_size(b)) {
            mismatch(c, "object sizes differ (%zu vs %zu)", json_object_size(a),
                     json_object_size(b));
        }
        return;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) {
            mismatch(c, "array sizes differ");
            return;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            size_t m = push(c, "[%zu]", i);
            cmp_plain(c, json_array_get(a, i), json_array_get(b, i));
            c->path[m] = '\0';
        }
        return;
    }
    if (!json_equal((json_t *)a, (json_t *)b)) {
        mismatch(c, "values differ");
    }
}

static void cmp_msg(struct cmp *c, const ProtobufCMessageDescriptor *d, const json_t *a,
                    const json_t *b, const char *skip);

static int enum_number(const ProtobufCFieldDescriptor *f, const json_t *j, bool *ok)
{
    *ok = true;
    if (json_is_integer(j)) {
        return (int)json_integer_value(j);
    }
    if (json_is_string(j)) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, json_string_value(j));
        if (v) {
            return v->value;
        }
    }
    *ok = false;
    return 0;
}

static void cmp_value(struct cmp *c, const ProtobufCFieldDescriptor *f, const json_t *a,
                      const json_t *b)
{
    long double x, y;
    bool oka, okb;
    char sa[4096], sb[4096];
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        cmp_msg(c, f->descriptor, a, b, NULL);
        return;
    case PROTOBUF_C_TYPE_ENUM: {
        int ea = enum_number(f, a, &oka), eb = enum_number(f, b, &okb);
        if (!oka || !okb || ea != eb) {
            mismatch(c, "enum differs");
        }
        return;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(a) || json_is_true(a) != json_is_true(b)) {
            mismatch(c, "bool differs");
        }
        return;
    case PROTOBUF_C_TYPE_STRING:
        if (!json_equal((json_t *)a, (json_t *)b)) {
            mismatch(c, "string differs: \"%s\" vs \"%s\"", json_string_value(a),
                     json_string_value(b));
        }
        return;
    case PROTOBUF_C_TYPE_BYTES:
        b64_norm(json_string_value(a) ? json_string_value(a) : "", sa, sizeof(sa));
        b64_norm(json_string_value(b) ? json_string_value(b) : "", sb, sizeof(sb));
        if (strcmp(sa, sb) != 0) {
            mismatch(c, "bytes differ");
        }
        return;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!num(a, &x) || !num(b, &y)) {
            mismatch(c, "not a number");
        } else if (!(x == y || (isnan(x) && isnan(y)) ||
                     (f->type == PROTOBUF_C_TYPE_FLOAT && fabsl(x - y) <= 1e-6L * fabsl(x)))) {
            mismatch(c, "number %Lg != %Lg", x, y);
        }
        return;
    default: /* integers: numbers or numeric strings, compared exactly */
        if (!num(a, &x) || !num(b, &y) || x != y) {
            mismatch(c, "integer differs");
        }
        if (json_is_string(b) != (f->type == PROTOBUF_C_TYPE_INT64 ||
                                  f->type == PROTOBUF_C_TYPE_UINT64 ||
                                  f->type == PROTOBUF_C_TYPE_SINT64 ||
                                  f->type == PROTOBUF_C_TYPE_FIXED64 ||
                                  f->type == PROTOBUF_C_TYPE_SFIXED64)) {
            mismatch(c, "64-bit integers must be strings, others numbers");
        }
        return;
    }
}

/* Original value <a> of field <f> is its default (the encoder may omit it). */
static bool is_default(const ProtobufCFieldDescriptor *f, const json_t *a)
{
    long double x;
    bool ok;
    if (json_is_null(a)) {
        return true;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return (json_is_array(a) && !json_array_size(a)) ||
               (json_is_object(a) && !json_object_size(a));
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        return false; /* a set oneof member is printed whatever its value */
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        return false;
    case PROTOBUF_C_TYPE_ENUM:
        return enum_number(f, a, &ok) == 0 && ok;
    case PROTOBUF_C_TYPE_BOOL:
        return json_is_false(a);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
        return json_is_string(a) && !json_string_length(a);
    default:
        return num(a, &x) && x == 0;
    }
}

static void cmp_field(struct cmp *c, const ProtobufCFieldDescriptor *f, const json_t *a,
                      const json_t *b)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        cmp_value(c, f, a, b);
        return;
    }
    if (is_map(f)) {
        const ProtobufCFieldDescriptor *vf =
            &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[1];
        const char *k;
        json_t *v;
        if (!json_is_object(a) || !json_is_object(b)) {
            mismatch(c, "map is not an object");
            return;
        }
        json_object_foreach((json_t *)a, k, v) {
            size_t m = push(c, "[\"%s\"]", k);
            const json_t *w = json_object_get(b, k);
            if (!w) {
                mismatch(c, "map entry missing in output");
            } else {
                cmp_value(c, vf, v, w);
            }
            c->path[m] = '\0';
        }
        if (json_object_size(a) != json_object_size(b)) {
            mismatch(c, "map sizes differ");
        }
        return;
    }
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b)) {
        mismatch(c, "repeated field lengths differ");
        return;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        size_t m = push(c, "[%zu]", i);
        cmp_value(c, f, json_array_get(a, i), json_array_get(b, i));
        c->path[m] = '\0';
    }
}

static void cmp_msg(struct cmp *c, const ProtobufCMessageDescriptor *d, const json_t *a,
                    const json_t *b, const char *skip)
{
    const char *w = wkt(d);
    long double x, y;
    char ta[128], tb[128];
    if (!strcmp(w, "Duration")) {
        if (!duration_ns(a, &x) || !duration_ns(b, &y) || x != y) {
            mismatch(c, "duration differs");
        }
        return;
    }
    if (!strcmp(w, "Timestamp")) {
        ts_norm(json_string_value(a) ? json_string_value(a) : "", ta, sizeof(ta));
        ts_norm(json_string_value(b) ? json_string_value(b) : "", tb, sizeof(tb));
        if (strcmp(ta, tb) != 0) {
            mismatch(c, "timestamp differs: %s vs %s", ta, tb);
        }
        return;
    }
    if (!strcmp(w, "Struct") || !strcmp(w, "Value") || !strcmp(w, "ListValue")) {
        cmp_plain(c, a, b);
        return;
    }
    if (!strcmp(w, "FieldMask")) {
        if (!json_equal((json_t *)a, (json_t *)b)) {
            mismatch(c, "field mask differs");
        }
        return;
    }
    if (strlen(w) > 5 && !strcmp(w + strlen(w) - 5, "Value")) { /* wrappers */
        cmp_value(c, &d->fields[0], a, b);
        return;
    }
    if (!json_is_object(a) || !json_is_object(b)) {
        mismatch(c, "expected objects for %s", d->name);
        return;
    }
    if (!strcmp(w, "Any")) {
        const json_t *ta_j = json_object_get(a, "@type"), *tb_j = json_object_get(b, "@type");
        if (!ta_j && !tb_j && !json_object_size(a) && !json_object_size(b)) {
            return; /* empty Any */
        }
        if (!ta_j || !tb_j || !json_equal((json_t *)ta_j, (json_t *)tb_j)) {
            mismatch(c, "@type differs");
            return;
        }
        const ProtobufCMessageDescriptor *in = msm_types_find_url(json_string_value(ta_j));
        if (!in) {
            mismatch(c, "unknown @type %s", json_string_value(ta_j));
            return;
        }
        if (wkt(in)[0] && strcmp(wkt(in), "Empty") != 0) {
            size_t m = push(c, ".value");
            cmp_msg(c, in, json_object_get(a, "value"), json_object_get(b, "value"), NULL);
            c->path[m] = '\0';
            return;
        }
        cmp_msg(c, in, a, b, "@type");
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v) {
        if (skip && !strcmp(k, skip)) {
            continue;
        }
        size_t m = push(c, "%s%s", c->path[0] ? "." : "", k);
        const ProtobufCFieldDescriptor *f = lookup(d, k);
        char name[256];
        if (!f) {
            mismatch(c, "field unknown to %s", d->name);
        } else {
            field_name(f, false, name);
            const json_t *out = json_object_get(b, name);
            if (!out) {
                if (!is_default(f, v)) {
                    mismatch(c, "non-default value missing in output");
                }
            } else {
                cmp_field(c, f, v, out);
            }
        }
        c->path[m] = '\0';
    }
    json_object_foreach((json_t *)b, k, v) {
        if (skip && !strcmp(k, skip)) {
            continue;
        }
        const ProtobufCFieldDescriptor *f = lookup(d, k);
        char camel[256];
        if (f) {
            field_name(f, true, camel);
        }
        if (!f || (!json_object_get(a, k) && !json_object_get(a, camel))) {
            size_t m = push(c, "%s%s", c->path[0] ? "." : "", k);
            mismatch(c, "output has a field the original does not");
            c->path[m] = '\0';
        }
    }
}

/* Collect into <out> (a JSON object used as a set) every "@type" / TypedStruct "type_url"
 * below <j> that the registry does not know. */
static void unknown_types(const json_t *j, json_t *out)
{
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            unknown_types(json_array_get(j, i), out);
        }
        return;
    }
    if (!json_is_object(j)) {
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
        if ((!strcmp(k, "@type") || !strcmp(k, "type_url")) && json_is_string(v) &&
            !msm_types_find_url(json_string_value(v))) {
            const char *t = strrchr(json_string_value(v), '/');
            json_object_set_new(out, t ? t + 1 : json_string_value(v), json_true());
        }
        unknown_types(v, out);
    }
}

/* ---- the test ----------------------------------------------------------------------------- */

static void test_fixture(void **state)
{
    const struct fixture *fx = *state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", FIXTURES, fx->rel);
    if (!fx->type) {
        print_message("skipped %s: %s\n", fx->rel, fx->why);
        return;
    }
    const ProtobufCMessageDescriptor *desc = msm_types_find(fx->type);
    assert_non_null(desc);
    size_t len = 0;
    char *text = read_file(path, &len);
    assert_non_null(text);
    json_error_t jerr;
    json_t *orig = json_loadb(text, len, 0, &jerr);
    assert_non_null(orig);

    json_t *unknown = json_object();
    unknown_types(orig, unknown);
    if (json_object_size(unknown)) {
        const char *t;
        json_t *v;
        int expected = 0;
        json_object_foreach(unknown, t, v) {
            const char *fix = NULL;
            for (size_t i = 0; i < sizeof(known_missing) / sizeof(known_missing[0]); i++) {
                if (!strcmp(known_missing[i].type, t)) {
                    fix = known_missing[i].fix;
                }
            }
            print_error("%s uses type %s unknown to the registry%s%s\n", fx->rel, t,
                        fix ? ": " : "", fix ? fix : "");
            expected += fix != NULL;
        }
        bool skip_it = expected == (int)json_object_size(unknown);
        json_decref(unknown);
        json_decref(orig);
        free(text);
        if (skip_it) {
            skip();
        }
        fail_msg("%s: types unknown to the registry (see above)", fx->rel);
    }
    json_decref(unknown);

    struct msm_err err = {{0}};
    ProtobufCMessage *m1 = msm_pbjson_decode(desc, orig, NULL, &err);
    if (!m1) {
        fail_msg("%s: strict decode failed: %s", fx->rel, err.msg);
    }
    size_t n1, n2, n3;
    uint8_t *b1 = pack(m1, &n1);

    /* snake_case text round trip */
    json_t *enc = msm_pbjson_encode(m1, NULL, &err);
    if (!enc) {
        fail_msg("%s: encode failed: %s", fx->rel, err.msg);
    }
    char *out = msm_pbjson_dumps(enc, true);
    ProtobufCMessage *m2 = msm_pbjson_decode_text(desc, out, strlen(out), NULL, &err);
    if (!m2) {
        fail_msg("%s: decode of the encoded text failed: %s", fx->rel, err.msg);
    }
    uint8_t *b2 = pack(m2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);

    /* lowerCamelCase names decode to the same bytes */
    struct msm_pbjson_enc_opts camel = {.camel_case = true};
    char *out_camel = msm_pbjson_encode_text(m1, &camel, false, &err);
    assert_non_null(out_camel);
    ProtobufCMessage *m3 = msm_pbjson_decode_text(desc, out_camel, strlen(out_camel), NULL, &err);
    if (!m3) {
        fail_msg("%s: decode of camelCase text failed: %s", fx->rel, err.msg);
    }
    uint8_t *b3 = pack(m3, &n3);
    assert_int_equal(n1, n3);
    assert_memory_equal(b1, b3, n1);

    /* the same message read back by protobuf-c encodes to the same JSON */
    ProtobufCMessage *m4 = protobuf_c_message_unpack(desc, NULL, n1, b1);
    assert_non_null(m4);
    json_t *enc4 = msm_pbjson_encode(m4, NULL, &err);
    assert_non_null(enc4);
    assert_true(json_equal(enc, enc4));

    struct cmp c = {0};
    cmp_msg(&c, desc, orig, enc, NULL);
    if (c.mismatches) {
        fail_msg("%s: %d semantic mismatch(es) between the fixture and the re-encoded JSON",
                 fx->rel, c.mismatches);
    }
    print_message("%s: %zu bytes of protobuf, %zu of JSON\n", fx->rel, n1, strlen(out));

    json_decref(enc4);
    protobuf_c_message_free_unpacked(m4, NULL);
    free(b3);
    protobuf_c_message_free_unpacked(m3, NULL);
    free(out_camel);
    free(b2);
    protobuf_c_message_free_unpacked(m2, NULL);
    free(out);
    json_decref(enc);
    free(b1);
    protobuf_c_message_free_unpacked(m1, NULL);
    json_decref(orig);
    free(text);
}

/* The comparison must notice a dropped field, a changed value and an invented field. */
static void test_comparator_detects_changes(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *desc = msm_types_find("envoy.config.bootstrap.v3.Bootstrap");
    json_error_t jerr;
    json_t *orig = json_load_file(FIXTURES "/bootstrap/default_golden.json", 0, &jerr);
    assert_non_null(orig);
    struct msm_err err;
    ProtobufCMessage *m = msm_pbjson_decode(desc, orig, NULL, &err);
    assert_non_null(m);
    json_t *enc = msm_pbjson_encode(m, NULL, &err);
    assert_non_null(enc);
    struct cmp c = {0};
    cmp_msg(&c, desc, orig, enc, NULL);
    assert_int_equal(c.mismatches, 0);

    json_t *mut = json_deep_copy(enc);
    json_object_del(json_object_get(mut, "node"), "id");
    memset(&c, 0, sizeof(c));
    cmp_msg(&c, desc, orig, mut, NULL);
    assert_true(c.mismatches > 0);
    json_decref(mut);

    mut = json_deep_copy(enc);
    json_t *admin = json_object_get(mut, "admin");
    json_t *port = json_object_get(json_object_get(json_object_get(admin, "address"),
                                                   "socket_address"), "port_value");
    assert_non_null(port);
    json_integer_set(port, json_integer_value(port) + 1);
    memset(&c, 0, sizeof(c));
    cmp_msg(&c, desc, orig, mut, NULL);
    assert_true(c.mismatches > 0);
    json_decref(mut);

    mut = json_deep_copy(enc);
    json_object_set_new(json_object_get(mut, "node"), "user_agent_name", json_string("x"));
    memset(&c, 0, sizeof(c));
    cmp_msg(&c, desc, orig, mut, NULL);
    assert_true(c.mismatches > 0);
    json_decref(mut);

    json_decref(enc);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(orig);
}

/* Every .json file under <dir> must be in fixtures[]. */
static void walk(const char *dir, const char *rel, int *unlisted, int *found)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char p[1024], r[1024];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            walk(p, r, unlisted, found);
            continue;
        }
        size_t n = strlen(r);
        if (n < 5 || strcmp(r + n - 5, ".json") != 0) {
            continue;
        }
        bool listed = false;
        for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
            listed |= !strcmp(fixtures[i].rel, r);
        }
        (*found)++;
        if (!listed) {
            print_error("fixture %s is not classified in test_fixtures.c\n", r);
            (*unlisted)++;
        }
    }
    closedir(d);
}

static void test_all_fixtures_classified(void **state)
{
    (void)state;
    int unlisted = 0, found = 0;
    walk(FIXTURES, "", &unlisted, &found);
    assert_int_equal(unlisted, 0);
    /* and every listed file exists */
    assert_int_equal(found, (int)(sizeof(fixtures) / sizeof(fixtures[0])));
}

int main(void)
{
    size_t n = sizeof(fixtures) / sizeof(fixtures[0]);
    struct CMUnitTest *tests = msm_xcalloc(n + 2, sizeof(*tests));
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_all_fixtures_classified);
    tests[1] = (struct CMUnitTest)cmocka_unit_test(test_comparator_detects_changes);
    for (size_t i = 0; i < n; i++) {
        tests[i + 2].name = fixtures[i].rel;
        tests[i + 2].test_func = test_fixture;
        tests[i + 2].initial_state = (void *)&fixtures[i];
    }
    int rc = _cmocka_run_group_tests("config_fixtures", tests, n + 2, NULL, NULL);
    free(tests);
    return rc;
}
