/* protobuf-c message -> proto3 JSON (see pbjson.h), and the JSON text serializer.
 *
 * Field presence mirrors protobuf_c_message_pack() exactly, so what is printed is what would be
 * on the wire: repeated fields when non-empty, oneof members when their case is set, optional
 * scalars when has_ is set, strings/messages when non-NULL (and not the default pointer), proto3
 * implicit-presence scalars when non-zero. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "config/pbjson-private.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

struct enc {
    bool camel;
    bool print_defaults; /* always_print_primitive_fields */
    struct msm_err *err;
    int depth;
    size_t plen;
    char path[1024];
};

static json_t *enc_message(struct enc *e, const ProtobufCMessage *m);

/* ---- paths and errors --------------------------------------------------------------------- */

static size_t path_push(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t path_push(struct enc *e, const char *fmt, ...)
{
    size_t mark = e->plen;
    if (e->plen + 1 < sizeof(e->path)) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(e->path + e->plen, sizeof(e->path) - e->plen, fmt, ap);
        va_end(ap);
        if (n > 0) {
            e->plen += (size_t)n;
            if (e->plen >= sizeof(e->path)) {
                e->plen = sizeof(e->path) - 1;
            }
        }
    }
    return mark;
}

static void path_pop(struct enc *e, size_t mark)
{
    e->plen = mark;
    e->path[mark] = '\0';
}

static void fail(struct enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct enc *e, const char *fmt, ...)
{
    char msg[MSM_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A long path is cut on the left so that the reason always fits. */
    size_t ml = strlen(msg);
    size_t room = ml + 8 < MSM_ERR_LEN ? MSM_ERR_LEN - 8 - ml : 0;
    const char *path = e->path;
    const char *cut = "";
    if (e->plen > room) {
        path += e->plen - room;
        cut = "...";
    }
    if (e->plen) {
        msm_err_set(e->err, "%s%s: %s", cut, path, msg);
    } else {
        msm_err_set(e->err, "%s", msg);
    }
}

/* ---- strings ------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at <s> (at most <n> bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) {
        return 1;
    }
    size_t len;
    uint32_t cp;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

/* JSON string of C string <s>; invalid UTF-8 bytes become U+FFFD (protobuf-c does not validate
 * strings on unpack, jansson requires valid UTF-8). */
static json_t *jstr(const char *s)
{
    if (!s) {
        return json_string("");
    }
    size_t n = strlen(s);
    json_t *j = json_stringn(s, n);
    if (j) {
        return j;
    }
    char *buf = msm_xmalloc(n * 3 + 1);
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l) {
            memcpy(buf + o, p + i, l);
            o += l;
            i += l;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j ? j : json_string("");
}

/* ---- scalars ------------------------------------------------------------------------------ */

static json_t *enc_double(double v)
{
    if (isnan(v)) {
        return json_string("NaN");
    }
    if (isinf(v)) {
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    }
    return json_real(v);
}

static json_t *enc_float(float v)
{
    char buf[32];
    if (!isfinite(v)) {
        return enc_double(v);
    }
    /* The shortest decimal that reads back as this float, stored as the nearest double, so
     * 0.1f prints as 0.1 (as protobuf's SimpleFtoa does) rather than 0.10000000149011612. */
    msm__format_float(v, buf, sizeof(buf));
    return json_real(strtod(buf, NULL));
}

/* A default instance of <desc>, encoded (map values that are absent sub-messages). */
static json_t *enc_default(struct enc *e, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = msm__msg_new(desc);
    json_t *j = enc_message(e, m);
    protobuf_c_message_free_unpacked(m, NULL);
    return j;
}

/* One value of field <f>'s type at <p>. NULL only on error (Any, depth). */
static json_t *enc_scalar(struct enc *e, const ProtobufCFieldDescriptor *f, const void *p)
{
    char buf[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)p);
        return json_string(buf);
    case PROTOBUF_C_TYPE_FLOAT:
        return enc_float(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return enc_double(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        if (msm__is_null_value_enum(f->descriptor)) {
            return json_null();
        }
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return ev ? json_string(ev->name) : json_integer(v);
    }
    case PROTOBUF_C_TYPE_STRING:
        return jstr(*(char *const *)p);
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *s = msm_base64_encode(b->data, b->len);
        json_t *j = json_string(s);
        free(s);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? enc_message(e, sub) : enc_default(e, f->descriptor);
    }
    }
    return json_null();
}

/* ---- fields ------------------------------------------------------------------------------- */

static json_t *enc_map_key(const ProtobufCFieldDescriptor *kf, const void *p)
{
    char buf[32];
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING:
        return jstr(*(char *const *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_string(*(const protobuf_c_boolean *)p ? "true" : "false");
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(buf, sizeof(buf), "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, sizeof(buf), "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)p);
        break;
    default:
        snprintf(buf, sizeof(buf), "?");
        break;
    }
    return json_string(buf);
}

static json_t *enc_map(struct enc *e, const ProtobufCFieldDescriptor *f, size_t n,
                       ProtobufCMessage *const *entries)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    const ProtobufCFieldDescriptor *vf = &ed->fields[1];
    json_t *obj = json_object();
    for (size_t i = 0; i < n; i++) {
        const char *ent = (const char *)entries[i];
        if (!ent) {
            continue;
        }
        json_t *k = enc_map_key(kf, ent + kf->offset);
        size_t mark = path_push(e, "[\"%.64s\"]", json_string_value(k));
        json_t *v = enc_scalar(e, vf, ent + vf->offset);
        if (!v) {
            json_decref(k);
            json_decref(obj);
            return NULL;
        }
        path_pop(e, mark);
        json_object_setn_new_nocheck(obj, json_string_value(k), json_string_length(k), v);
        json_decref(k);
    }
    return obj;
}

static json_t *enc_field(struct enc *e, const ProtobufCMessage *m,
                         const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        return enc_scalar(e, f, base + f->offset);
    }
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)(base + f->offset);
    if (msm__is_map_field(m->descriptor, f)) {
        return enc_map(e, f, n, (ProtobufCMessage *const *)arr);
    }
    size_t es = msm__elem_size(f->type);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push(e, "[%zu]", i);
        json_t *v = enc_scalar(e, f, arr + i * es);
        if (!v) {
            json_decref(a);
            return NULL;
        }
        path_pop(e, mark);
        json_array_append_new(a, v);
    }
    return a;
}

/* A field without presence: proto3 implicit scalars, repeated and map fields. */
static bool no_presence(const ProtobufCFieldDescriptor *f)
{
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return true;
    }
    return f->label == PROTOBUF_C_LABEL_NONE && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
           f->type != PROTOBUF_C_TYPE_MESSAGE;
}

static json_t *enc_fields(struct enc *e, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    json_t *obj = json_object();
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (!msm__field_present(m, f) && !(e->print_defaults && no_presence(f))) {
            continue;
        }
        char name[128];
        msm__json_name(f, e->camel, name, sizeof(name));
        size_t mark = path_push(e, "%s%s", e->plen ? "." : "", name);
        json_t *v = enc_field(e, m, f);
        if (!v) {
            json_decref(obj);
            return NULL;
        }
        path_pop(e, mark);
        json_object_set_new_nocheck(obj, name, v);
    }
    return obj;
}

/* ---- well-known types --------------------------------------------------------------------- */

static json_t *enc_any(struct enc *e, const Google__Protobuf__Any *a)
{
    if (!a->type_url || !a->type_url[0]) {
        if (a->value.len) {
            fail(e, "google.protobuf.Any with %zu bytes of value but no type_url", a->value.len);
            return NULL;
        }
        return json_object();
    }
    const ProtobufCMessageDescriptor *desc = msm_types_find_url(a->type_url);
    if (!desc) {
        fail(e, "unknown type \"%.200s\" in google.protobuf.Any", a->type_url);
        return NULL;
    }
    struct msm_err uerr;
    ProtobufCMessage *inner = msm_pb_unpack(desc, a->value.data, a->value.len, &uerr);
    if (!inner) {
        fail(e, "google.protobuf.Any: %s", uerr.msg);
        return NULL;
    }
    json_t *j = enc_message(e, inner);
    /* A Value with no kind has no JSON form: leave "value" out, which decodes back to it. */
    bool no_value = msm__wkt_kind(desc) == MSM__WKT_VALUE &&
                    ((const Google__Protobuf__Value *)inner)->kind_case ==
                        GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET;
    protobuf_c_message_free_unpacked(inner, NULL);
    if (!j) {
        return NULL;
    }
    json_t *obj = json_object();
    json_object_set_new_nocheck(obj, "@type", jstr(a->type_url));
    if (no_value) {
        json_decref(j);
    } else if (msm__wkt_kind(desc) != MSM__WKT_NONE) {
        json_object_set_new_nocheck(obj, "value", j);
    } else {
        json_object_update(obj, j);
        json_decref(j);
    }
    return obj;
}

static json_t *enc_field_mask(const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    char *const *paths = *(char **const *)((const char *)m + f->offset);
    size_t len = 1;
    char **camel = msm_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        camel[i] = msm__snake_to_camel(paths[i] ? paths[i] : "");
        len += strlen(camel[i]) + 1;
    }
    char *out = msm_xmalloc(len);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(camel[i]);
        if (i) {
            out[o++] = ',';
        }
        memcpy(out + o, camel[i], l);
        o += l;
        free(camel[i]);
    }
    out[o] = '\0';
    free(camel);
    json_t *j = jstr(out);
    free(out);
    return j;
}

static json_t *enc_value(struct enc *e, const Google__Protobuf__Value *v);

static json_t *enc_struct(struct enc *e, const Google__Protobuf__Struct *s)
{
    json_t *obj = json_object();
    for (size_t i = 0; i < s->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *ent = s->fields[i];
        if (!ent) {
            continue;
        }
        json_t *k = jstr(ent->key);
        size_t mark = path_push(e, "[\"%.64s\"]", json_string_value(k));
        json_t *v = ent->value ? enc_value(e, ent->value) : json_null();
        if (!v) {
            json_decref(k);
            json_decref(obj);
            return NULL;
        }
        path_pop(e, mark);
        json_object_setn_new_nocheck(obj, json_string_value(k), json_string_length(k), v);
        json_decref(k);
    }
    return obj;
}

static json_t *enc_list(struct enc *e, const Google__Protobuf__ListValue *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n_values; i++) {
        size_t mark = path_push(e, "[%zu]", i);
        json_t *v = l->values[i] ? enc_value(e, l->values[i]) : json_null();
        if (!v) {
            json_decref(a);
            return NULL;
        }
        path_pop(e, mark);
        json_array_append_new(a, v);
    }
    return a;
}

static json_t *enc_value(struct enc *e, const Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return enc_double(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return jstr(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return json_boolean(v->bool_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        if (!v->struct_value) {
            return json_object();
        }
        return enc_message(e, &v->struct_value->base);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        if (!v->list_value) {
            return json_array();
        }
        return enc_message(e, &v->list_value->base);
    default:
        return json_null();
    }
}

/* ---- messages ----------------------------------------------------------------------------- */

static json_t *enc_message(struct enc *e, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    enum msm__wkt kind = msm__wkt_kind(desc);
    char buf[64];
    json_t *j = NULL;
    if (kind == MSM__WKT_VALUE) {
        return enc_value(e, (const Google__Protobuf__Value *)m);
    }
    if (e->depth >= MSM_PBJSON_MAX_DEPTH) {
        fail(e, "nested deeper than %d levels", MSM_PBJSON_MAX_DEPTH);
        return NULL;
    }
    e->depth++;
    switch (kind) {
    case MSM__WKT_ANY:
        j = enc_any(e, (const Google__Protobuf__Any *)m);
        break;
    case MSM__WKT_DURATION: {
        const Google__Protobuf__Duration *d = (const Google__Protobuf__Duration *)m;
        msm__duration_format(d->seconds, d->nanos, buf, sizeof(buf));
        j = json_string(buf);
        break;
    }
    case MSM__WKT_TIMESTAMP: {
        const Google__Protobuf__Timestamp *t = (const Google__Protobuf__Timestamp *)m;
        msm__timestamp_format(t->seconds, t->nanos, buf, sizeof(buf));
        j = json_string(buf);
        break;
    }
    case MSM__WKT_FIELD_MASK:
        j = enc_field_mask(m);
        break;
    case MSM__WKT_STRUCT:
        j = enc_struct(e, (const Google__Protobuf__Struct *)m);
        break;
    case MSM__WKT_LIST_VALUE:
        j = enc_list(e, (const Google__Protobuf__ListValue *)m);
        break;
    case MSM__WKT_WRAPPER:
        j = enc_scalar(e, &desc->fields[0], (const char *)m + desc->fields[0].offset);
        break;
    case MSM__WKT_VALUE:
    case MSM__WKT_NONE:
        j = enc_fields(e, m);
        break;
    }
    e->depth--;
    return j;
}

json_t *msm_pbjson_encode(const ProtobufCMessage *msg, const struct msm_pbjson_enc_opts *opts,
                          struct msm_err *err)
{
    if (!msg) {
        msm_err_set(err, "no message to encode");
        return NULL;
    }
    struct enc *e = MSM_NEW(struct enc);
    e->camel = opts && opts->camel_case;
    e->print_defaults = opts && opts->always_print_primitive_fields;
    e->err = err;
    json_t *j = enc_message(e, msg);
    free(e);
    return j;
}

/* ---- text --------------------------------------------------------------------------------- */

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->p = msm_xgrow(b->p, 1, &b->cap, b->len + n + 1);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void dump_string(struct sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[8];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(ubuf, sizeof(ubuf), "\\u%04x", c);
                esc = ubuf;
            }
            break;
        }
        if (esc) {
            sb_put(b, s + i - run, run);
            run = 0;
            sb_str(b, esc);
        } else {
            run++;
        }
    }
    sb_put(b, s + n - run, run);
    sb_put(b, "\"", 1);
}

static void dump_indent(struct sbuf *b, bool pretty, int level)
{
    if (pretty) {
        sb_put(b, "\n", 1);
        for (int i = 0; i < level; i++) {
            sb_put(b, " ", 1); /* protobuf's printer (and /config_dump) indents by 1 space */
        }
    }
}

static void dump(struct sbuf *b, const json_t *j, bool pretty, int level)
{
    char buf[40];
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        if (!json_object_size(j)) {
            sb_str(b, "{}");
            break;
        }
        sb_put(b, "{", 1);
        bool first = true;
        for (void *it = json_object_iter((json_t *)j); it;
             it = json_object_iter_next((json_t *)j, it)) {
            if (!first) {
                sb_put(b, ",", 1);
            }
            first = false;
            dump_indent(b, pretty, level + 1);
            dump_string(b, json_object_iter_key(it), json_object_iter_key_len(it));
            sb_str(b, pretty ? ": " : ":");
            dump(b, json_object_iter_value(it), pretty, level + 1);
        }
        dump_indent(b, pretty, level);
        sb_put(b, "}", 1);
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (!n) {
            sb_str(b, "[]");
            break;
        }
        sb_put(b, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) {
                sb_put(b, ",", 1);
            }
            dump_indent(b, pretty, level + 1);
            dump(b, json_array_get(j, i), pretty, level + 1);
        }
        dump_indent(b, pretty, level);
        sb_put(b, "]", 1);
        break;
    }
    case JSON_STRING:
        dump_string(b, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        sb_str(b, buf);
        break;
    case JSON_REAL:
        msm__format_double(json_real_value(j), buf, sizeof(buf));
        if (!strcmp(buf, "-0")) {
            snprintf(buf, sizeof(buf), "-0.0"); /* "-0" would read back as the integer 0 */
        }
        sb_str(b, buf);
        break;
    case JSON_TRUE:
        sb_str(b, "true");
        break;
    case JSON_FALSE:
        sb_str(b, "false");
        break;
    case JSON_NULL:
        sb_str(b, "null");
        break;
    }
}

char *msm_pbjson_dumps(const json_t *json, bool pretty)
{
    struct sbuf b = {0};
    sb_put(&b, "", 0);
    if (json) {
        dump(&b, json, pretty, 0);
    } else {
        sb_str(&b, "null");
    }
    return b.p;
}

char *msm_pbjson_encode_text(const ProtobufCMessage *msg, const struct msm_pbjson_enc_opts *opts,
                             bool pretty, struct msm_err *err)
{
    json_t *j = msm_pbjson_encode(msg, opts, err);
    if (!j) {
        return NULL;
    }
    char *s = msm_pbjson_dumps(j, pretty);
    json_decref(j);
    return s;
}
