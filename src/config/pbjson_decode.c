/* proto3 JSON -> protobuf-c message (see pbjson.h).
 *
 * Invariant while decoding: the message under construction is always in a state that
 * protobuf_c_message_free_unpacked() can free. Repeated arrays are allocated at their final
 * size with the count advanced one element at a time, a oneof case is set only once its member
 * holds a valid value, and sub-messages are attached only when complete. So any error path just
 * frees the outermost message. */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/base64.h"
#include "common/log.h"
#include "config/pbjson-private.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

struct dec {
    const struct msm_pbjson_opts *opts;
    struct msm_err *err;
    int depth;
    unsigned unknown;          /* unknown fields skipped (allow_unknown_fields) */
    char first_unknown[160];   /* path of the first one, for the debug log */
    size_t plen;
    char path[1024];           /* field path of the value being decoded */
};

/* Any scalar or pointer a field can hold; decoded values land here before being stored. */
union slot {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
    int e;
    char *s;
    ProtobufCBinaryData bytes;
    ProtobufCMessage *msg;
};

static ProtobufCMessage *dec_message(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                     const json_t *j);

/* ---- paths and errors --------------------------------------------------------------------- */

static size_t path_push(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append to the path; returns the mark to restore with path_pop(). Truncates silently. */
static size_t path_push(struct dec *d, const char *fmt, ...)
{
    size_t mark = d->plen;
    if (d->plen + 1 < sizeof(d->path)) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->path + d->plen, sizeof(d->path) - d->plen, fmt, ap);
        va_end(ap);
        if (n > 0) {
            d->plen += (size_t)n;
            if (d->plen >= sizeof(d->path)) {
                d->plen = sizeof(d->path) - 1;
            }
        }
    }
    return mark;
}

static size_t path_field(struct dec *d, const ProtobufCFieldDescriptor *f)
{
    char name[128];
    msm__json_name(f, false, name, sizeof(name));
    return path_push(d, "%s%s", d->plen ? "." : "", name);
}

static void path_pop(struct dec *d, size_t mark)
{
    d->plen = mark;
    d->path[mark] = '\0';
}

static int fail(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Set the error to "<path>: <message>"; returns MSM_EINVAL. */
static int fail(struct dec *d, const char *fmt, ...)
{
    char msg[MSM_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A long path is cut on the left so that the reason always fits. */
    size_t ml = strlen(msg);
    size_t room = ml + 8 < MSM_ERR_LEN ? MSM_ERR_LEN - 8 - ml : 0;
    const char *path = d->path;
    const char *cut = "";
    if (d->plen > room) {
        path += d->plen - room;
        cut = "...";
    }
    if (d->plen) {
        return msm_err_set(d->err, "%s%s: %s", cut, path, msg);
    }
    return msm_err_set(d->err, "%s", msg);
}

static const char *jtype(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

static const char *type_name(ProtobufCType t)
{
    static const char *const names[] = {
        [PROTOBUF_C_TYPE_INT32] = "int32",     [PROTOBUF_C_TYPE_SINT32] = "sint32",
        [PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
        [PROTOBUF_C_TYPE_SINT64] = "sint64",   [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
        [PROTOBUF_C_TYPE_UINT32] = "uint32",   [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
        [PROTOBUF_C_TYPE_UINT64] = "uint64",   [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
        [PROTOBUF_C_TYPE_FLOAT] = "float",     [PROTOBUF_C_TYPE_DOUBLE] = "double",
        [PROTOBUF_C_TYPE_BOOL] = "bool",       [PROTOBUF_C_TYPE_ENUM] = "enum",
        [PROTOBUF_C_TYPE_STRING] = "string",   [PROTOBUF_C_TYPE_BYTES] = "bytes",
        [PROTOBUF_C_TYPE_MESSAGE] = "message",
    };
    return (unsigned)t < MSM_ARRAY_SIZE(names) && names[t] ? names[t] : "?";
}

/* Short printable form of a scalar JSON value for error messages. */
static void jtext(const json_t *j, char *buf, size_t cap)
{
    if (json_is_integer(j)) {
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    } else if (json_is_real(j)) {
        msm__format_double(json_real_value(j), buf, cap);
    } else if (json_is_string(j)) {
        snprintf(buf, cap, "\"%.40s%s\"", json_string_value(j),
                 json_string_length(j) > 40 ? "..." : "");
    } else {
        snprintf(buf, cap, "%s", jtype(j));
    }
}

/* A JSON string as a C string; rejects embedded NULs (protobuf-c strings are C strings). */
static int jstring(struct dec *d, const json_t *j, const char **out)
{
    const char *s = json_string_value(j);
    *out = s;
    if (strlen(s) != json_string_length(j)) {
        return fail(d, "string contains a NUL character");
    }
    return 0;
}

/* ---- scalars ------------------------------------------------------------------------------ */

/* Integer of <j> (number, or string holding a number) into sign + magnitude. */
static int dec_int_mag(struct dec *d, const json_t *j, ProtobufCType t, bool *neg, uint64_t *mag,
                       char *txt, size_t txtcap)
{
    double v;
    jtext(j, txt, txtcap);
    if (json_is_integer(j)) {
        json_int_t x = json_integer_value(j);
        *neg = x < 0;
        *mag = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
        return 0;
    }
    if (json_is_real(j)) {
        v = json_real_value(j);
    } else if (json_is_string(j)) {
        const char *s;
        if (jstring(d, j, &s) < 0) {
            return MSM_EINVAL;
        }
        const char *p = s + (*s == '-');
        if (*p >= '0' && *p <= '9' && strspn(p, "0123456789") == strlen(p)) {
            uint64_t m = 0;
            for (; *p; p++) {
                if (m > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
                    return fail(d, "value %s out of range for %s", txt, type_name(t));
                }
                m = m * 10 + (uint64_t)(*p - '0');
            }
            *neg = *s == '-';
            *mag = m;
            return 0;
        }
        if (!msm__is_json_number(s)) {
            return fail(d, "invalid %s value %s", type_name(t), txt);
        }
        errno = 0;
        v = strtod(s, NULL);
        if (errno == ERANGE && isinf(v)) {
            return fail(d, "value %s out of range for %s", txt, type_name(t));
        }
    } else {
        return fail(d, "expected %s (a number or numeric string), got %s", type_name(t),
                    jtype(j));
    }
    if (!isfinite(v) || v != floor(v)) {
        return fail(d, "value %s is not an integer (%s)", txt, type_name(t));
    }
    if (fabs(v) >= 18446744073709551616.0) {
        return fail(d, "value %s out of range for %s", txt, type_name(t));
    }
    *neg = v < 0;
    *mag = (uint64_t)fabs(v);
    return 0;
}

static int dec_signed(struct dec *d, const json_t *j, ProtobufCType t, int64_t min, int64_t max,
                      int64_t *out)
{
    bool neg;
    uint64_t mag;
    char txt[64];
    int rc = dec_int_mag(d, j, t, &neg, &mag, txt, sizeof(txt));
    if (rc < 0) {
        return rc;
    }
    if (neg ? mag > (uint64_t)0 - (uint64_t)min : mag > (uint64_t)max) {
        return fail(d, "value %s out of range for %s", txt, type_name(t));
    }
    *out = neg ? (int64_t)((uint64_t)0 - mag) : (int64_t)mag;
    return 0;
}

static int dec_unsigned(struct dec *d, const json_t *j, ProtobufCType t, uint64_t max,
                        uint64_t *out)
{
    bool neg;
    uint64_t mag;
    char txt[64];
    int rc = dec_int_mag(d, j, t, &neg, &mag, txt, sizeof(txt));
    if (rc < 0) {
        return rc;
    }
    if ((neg && mag) || mag > max) {
        return fail(d, "value %s out of range for %s", txt, type_name(t));
    }
    *out = mag;
    return 0;
}

static int dec_double(struct dec *d, const json_t *j, ProtobufCType t, double *out)
{
    char txt[64];
    jtext(j, txt, sizeof(txt));
    if (json_is_integer(j)) {
        *out = (double)json_integer_value(j);
    } else if (json_is_real(j)) {
        *out = json_real_value(j);
    } else if (json_is_string(j)) {
        const char *s;
        if (jstring(d, j, &s) < 0) {
            return MSM_EINVAL;
        }
        if (!strcmp(s, "NaN")) {
            *out = NAN;
            return 0;
        }
        if (!strcmp(s, "Infinity")) {
            *out = INFINITY;
            return 0;
        }
        if (!strcmp(s, "-Infinity")) {
            *out = -INFINITY;
            return 0;
        }
        if (!msm__is_json_number(s)) {
            return fail(d, "invalid %s value %s", type_name(t), txt);
        }
        errno = 0;
        *out = strtod(s, NULL);
        if (errno == ERANGE && isinf(*out)) {
            return fail(d, "value %s out of range for %s", txt, type_name(t));
        }
    } else {
        return fail(d, "expected %s (a number or numeric string), got %s", type_name(t),
                    jtype(j));
    }
    /* Out of range for float: what would round to infinity (FLT_MAX printed in 9 digits,
     * 3.40282347e+38, is above FLT_MAX yet rounds to it). */
    if (t == PROTOBUF_C_TYPE_FLOAT && isfinite(*out) && isinf((float)*out)) {
        return fail(d, "value %s out of range for float", txt);
    }
    return 0;
}

/* Returns 1 (nothing stored) for an unknown name under allow_unknown_fields. */
static int dec_enum(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *j, int *out)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (json_is_null(j) && msm__is_null_value_enum(ed)) {
        *out = 0;
        return 0;
    }
    if (json_is_string(j)) {
        const char *s;
        if (jstring(d, j, &s) < 0) {
            return MSM_EINVAL;
        }
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
        if (!ev) {
            if (d->opts->allow_unknown_fields) {
                d->unknown++;
                if (d->unknown == 1) {
                    snprintf(d->first_unknown, sizeof(d->first_unknown), "%s=%s", d->path, s);
                }
                return 1;
            }
            return fail(d, "unknown value \"%.64s\" for enum %s", s, ed->name);
        }
        *out = ev->value;
        return 0;
    }
    if (json_is_integer(j) || json_is_real(j)) {
        int64_t v = 0;
        int rc = dec_signed(d, j, PROTOBUF_C_TYPE_INT32, INT32_MIN, INT32_MAX, &v);
        if (rc < 0) {
            return rc;
        }
        *out = (int)v;
        return 0;
    }
    return fail(d, "expected a name or number for enum %s, got %s", ed->name, jtype(j));
}

static int dec_string(struct dec *d, const json_t *j, char **out)
{
    char buf[64];
    if (json_is_string(j)) {
        const char *s;
        if (jstring(d, j, &s) < 0) {
            return MSM_EINVAL;
        }
        *out = msm_xstrndup(s, json_string_length(j));
        return 0;
    }
    if (d->opts->lenient_scalars && (json_is_number(j) || json_is_boolean(j))) {
        if (json_is_integer(j)) {
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        } else if (json_is_real(j)) {
            msm__format_double(json_real_value(j), buf, sizeof(buf));
        } else {
            snprintf(buf, sizeof(buf), "%s", json_is_true(j) ? "true" : "false");
        }
        *out = msm_xstrdup(buf);
        return 0;
    }
    return fail(d, "expected a string, got %s", jtype(j));
}

static int dec_bytes(struct dec *d, const json_t *j, ProtobufCBinaryData *out)
{
    if (!json_is_string(j)) {
        return fail(d, "expected a base64 string, got %s", jtype(j));
    }
    if (msm_base64_decode(json_string_value(j), json_string_length(j), MSM_BASE64_URL,
                          &out->data, &out->len)) {
        char txt[64];
        jtext(j, txt, sizeof(txt));
        return fail(d, "invalid base64 %s", txt);
    }
    return 0;
}

/* Decode one value of field <f>'s type (a single element for repeated fields) into <out>.
 * Returns 0 when stored, 1 when skipped (unknown enum name, allow_unknown_fields), <0 on
 * error (nothing stored, nothing leaked). */
static int dec_value(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *j,
                     union slot *out)
{
    int rc;
    int64_t s = 0;
    uint64_t u = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        rc = dec_signed(d, j, f->type, INT32_MIN, INT32_MAX, &s);
        out->i32 = (int32_t)s;
        return rc;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return dec_signed(d, j, f->type, INT64_MIN, INT64_MAX, &out->i64);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = dec_unsigned(d, j, f->type, UINT32_MAX, &u);
        out->u32 = (uint32_t)u;
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return dec_unsigned(d, j, f->type, UINT64_MAX, &out->u64);
    case PROTOBUF_C_TYPE_FLOAT: {
        double v = 0;
        rc = dec_double(d, j, f->type, &v);
        out->f = (float)v;
        return rc;
    }
    case PROTOBUF_C_TYPE_DOUBLE:
        return dec_double(d, j, f->type, &out->d);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j)) {
            return fail(d, "expected true or false, got %s", jtype(j));
        }
        out->b = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        return dec_enum(d, f, j, &out->e);
    case PROTOBUF_C_TYPE_STRING:
        return dec_string(d, j, &out->s);
    case PROTOBUF_C_TYPE_BYTES:
        return dec_bytes(d, j, &out->bytes);
    case PROTOBUF_C_TYPE_MESSAGE:
        out->msg = dec_message(d, f->descriptor, j);
        return out->msg ? 0 : MSM_EINVAL;
    }
    return fail(d, "unsupported field type %d", (int)f->type);
}

/* Store decoded <v> into the singular member of <f> at <base>, replacing what was there and
 * setting the has_ flag of optional (proto2 / proto3 `optional`) scalars. */
static void store_singular(char *base, const ProtobufCFieldDescriptor *f, union slot *v)
{
    void *member = base + f->offset;
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *old = *(char **)member;
        if (old && old != f->default_value) {
            free(old);
        }
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        const ProtobufCBinaryData *def = f->default_value;
        void *old = ((ProtobufCBinaryData *)member)->data;
        if (old && (!def || def->data != old)) {
            free(old);
        }
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage *old = *(ProtobufCMessage **)member;
        if (old) {
            protobuf_c_message_free_unpacked(old, NULL);
        }
    }
    memcpy(member, v, msm__elem_size(f->type));
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
        f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
}

/* ---- fields ------------------------------------------------------------------------------- */

static bool is_value_msg(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_MESSAGE && msm__wkt_kind(f->descriptor) == MSM__WKT_VALUE;
}

/* JSON null stands for a value (not "unset") for google.protobuf.Value and NullValue. */
static bool null_is_value(const ProtobufCFieldDescriptor *f)
{
    return is_value_msg(f) ||
           (f->type == PROTOBUF_C_TYPE_ENUM && msm__is_null_value_enum(f->descriptor));
}

static int dec_repeated(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                        const json_t *j)
{
    char *base = (char *)m;
    size_t *np = (size_t *)(base + f->quantifier_offset);
    void **arrp = (void **)(base + f->offset);
    if (!json_is_array(j)) {
        return fail(d, "expected an array, got %s", jtype(j));
    }
    size_t n = json_array_size(j);
    if (!n || *np) {
        return 0; /* *np: impossible, each field is decoded once (see dec_fields) */
    }
    size_t es = msm__elem_size(f->type);
    char *arr = msm_xcalloc(n, es);
    *arrp = arr;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(j, i);
        size_t mark = path_push(d, "[%zu]", i);
        union slot v;
        int rc;
        if (json_is_null(e) && !null_is_value(f)) {
            rc = fail(d, "null is not allowed in a repeated field");
        } else {
            rc = dec_value(d, f, e, &v);
        }
        if (rc < 0) {
            return rc;
        }
        path_pop(d, mark);
        if (rc == 0) {
            memcpy(arr + *np * es, &v, es);
            (*np)++;
        }
    }
    if (!*np) {
        free(arr);
        *arrp = NULL;
    }
    return 0;
}

/* Map key text <key> as the entry's key field <kf>. */
static int dec_map_key(struct dec *d, const ProtobufCFieldDescriptor *kf, const char *key,
                       union slot *out)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        out->s = msm_xstrdup(key);
        return 0;
    }
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0) {
            return fail(d, "invalid bool map key \"%.64s\"", key);
        }
        out->b = !strcmp(key, "true");
        return 0;
    }
    const char *p = key + (*key == '-');
    if (!*p || strspn(p, "0123456789") != strlen(p)) {
        return fail(d, "invalid %s map key \"%.64s\"", type_name(kf->type), key);
    }
    json_t *tmp = json_string(key);
    int rc = tmp ? dec_value(d, kf, tmp, out) : fail(d, "invalid map key");
    json_decref(tmp);
    return rc;
}

static int dec_map(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                   const json_t *j)
{
    char *base = (char *)m;
    size_t *np = (size_t *)(base + f->quantifier_offset);
    ProtobufCMessage ***arrp = (ProtobufCMessage ***)(base + f->offset);
    if (!json_is_object(j)) {
        return fail(d, "expected an object (map), got %s", jtype(j));
    }
    size_t n = json_object_size(j);
    if (!n || *np) {
        return 0;
    }
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    const ProtobufCFieldDescriptor *vf = &ed->fields[1];
    *arrp = msm_xcalloc(n, sizeof(ProtobufCMessage *));
    for (void *it = json_object_iter((json_t *)j); it;
         it = json_object_iter_next((json_t *)j, it)) {
        const char *key = json_object_iter_key(it);
        const json_t *val = json_object_iter_value(it);
        size_t mark = path_push(d, "[\"%.64s\"]", key);
        if (strlen(key) != json_object_iter_key_len(it)) {
            return fail(d, "map key contains a NUL character");
        }
        ProtobufCMessage *e = msm__msg_new(ed);
        union slot v;
        int rc = dec_map_key(d, kf, key, &v);
        if (rc == 0) {
            store_singular((char *)e, kf, &v);
            if (json_is_null(val) && !null_is_value(vf)) {
                rc = fail(d, "map value cannot be null");
            } else {
                rc = dec_value(d, vf, val, &v);
            }
        }
        if (rc < 0) {
            protobuf_c_message_free_unpacked(e, NULL);
            return rc;
        }
        path_pop(d, mark);
        if (rc == 1) {
            protobuf_c_message_free_unpacked(e, NULL); /* unknown enum value: entry dropped */
            continue;
        }
        store_singular((char *)e, vf, &v);
        (*arrp)[(*np)++] = e;
    }
    if (!*np) {
        free(*arrp);
        *arrp = NULL;
    }
    return 0;
}

static int dec_field(struct dec *d, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                     const json_t *j)
{
    char *base = (char *)m;
    if (json_is_null(j) && (f->label == PROTOBUF_C_LABEL_REPEATED || !null_is_value(f))) {
        return 0; /* null: the field stays unset */
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (msm__is_map_field(m->descriptor, f)) {
            return dec_map(d, m, f, j);
        }
        return dec_repeated(d, m, f, j);
    }
    union slot v;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *casep = (uint32_t *)(base + f->quantifier_offset);
        if (*casep && *casep != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(m->descriptor, *casep);
            char a[128], b[128];
            msm__json_name(other ? other : f, false, a, sizeof(a));
            msm__json_name(f, false, b, sizeof(b));
            return fail(d, "oneof conflict: \"%s\" and \"%s\" are both set", a, b);
        }
        int rc = dec_value(d, f, j, &v);
        if (rc) {
            return rc < 0 ? rc : 0;
        }
        memcpy(base + f->offset, &v, msm__elem_size(f->type));
        *casep = f->id;
        return 0;
    }
    int rc = dec_value(d, f, j, &v);
    if (rc) {
        return rc < 0 ? rc : 0;
    }
    store_singular(base, f, &v);
    return 0;
}

/* Decode the members of JSON object <obj> into <m>, skipping key <skip> (Any's "@type"). */
static int dec_fields(struct dec *d, ProtobufCMessage *m, const json_t *obj, const char *skip)
{
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    uint8_t *seen = msm_xcalloc(desc->n_fields + 1, 1);
    int rc = 0;
    for (void *it = json_object_iter((json_t *)obj); it && !rc;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        if (skip && !strcmp(key, skip)) {
            continue;
        }
        const ProtobufCFieldDescriptor *f = NULL;
        if (strlen(key) == json_object_iter_key_len(it)) {
            f = msm__find_json_field(desc, key);
        }
        if (!f) {
            if (d->opts->allow_unknown_fields) {
                d->unknown++;
                if (d->unknown == 1) {
                    snprintf(d->first_unknown, sizeof(d->first_unknown), "%s%s%s", d->path,
                             d->plen ? "." : "", key);
                }
                continue;
            }
            rc = fail(d, "unknown field \"%.64s\" in %s", key, desc->name);
            break;
        }
        size_t idx = (size_t)(f - desc->fields);
        size_t mark = path_field(d, f);
        if (seen[idx]) {
            rc = fail(d, "field given twice (original and lowerCamelCase names)");
            break;
        }
        seen[idx] = 1;
        rc = dec_field(d, m, f, json_object_iter_value(it));
        if (!rc) {
            path_pop(d, mark);
        }
    }
    free(seen);
    return rc;
}

/* ---- well-known types --------------------------------------------------------------------- */

static ProtobufCMessage *dec_any(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                 const json_t *j)
{
    if (!json_is_object(j)) {
        fail(d, "expected an object for google.protobuf.Any, got %s", jtype(j));
        return NULL;
    }
    Google__Protobuf__Any *any = (Google__Protobuf__Any *)msm__msg_new(desc);
    const json_t *tj = json_object_get(j, "@type");
    if (!tj) {
        if (json_object_size(j)) {
            fail(d, "google.protobuf.Any without \"@type\"");
            goto fail;
        }
        return &any->base;
    }
    const char *type_url;
    if (!json_is_string(tj)) {
        fail(d, "\"@type\" must be a string, got %s", jtype(tj));
        goto fail;
    }
    if (jstring(d, tj, &type_url) < 0) {
        goto fail;
    }
    const ProtobufCMessageDescriptor *inner_desc = msm_types_find_url(type_url);
    if (!inner_desc) {
        fail(d, "unknown type \"%.200s\" in \"@type\"", type_url);
        goto fail;
    }
    ProtobufCMessage *inner;
    if (msm__wkt_kind(inner_desc) != MSM__WKT_NONE) {
        /* Well-known types with a JSON form of their own sit under "value". */
        for (void *it = json_object_iter((json_t *)j); it;
             it = json_object_iter_next((json_t *)j, it)) {
            const char *k = json_object_iter_key(it);
            if (strcmp(k, "@type") != 0 && strcmp(k, "value") != 0) {
                fail(d, "unknown field \"%.64s\" in google.protobuf.Any holding %s", k,
                     inner_desc->name);
                goto fail;
            }
        }
        const json_t *vj = json_object_get(j, "value");
        if (vj) {
            inner = dec_message(d, inner_desc, vj);
        } else {
            inner = msm__msg_new(inner_desc);
        }
    } else {
        /* Some printers (Java's) put Empty under "value": {}; accept that form too. */
        const json_t *ev = json_object_get(j, "value");
        bool empty_value = !strcmp(inner_desc->name, "google.protobuf.Empty") && ev &&
                           json_is_object(ev) && !json_object_size(ev) &&
                           json_object_size(j) == 2;
        inner = msm__msg_new(inner_desc);
        if (!empty_value && dec_fields(d, inner, j, "@type") < 0) {
            protobuf_c_message_free_unpacked(inner, NULL);
            inner = NULL;
        }
    }
    if (!inner) {
        goto fail;
    }
    size_t n = protobuf_c_message_get_packed_size(inner);
    if (n) {
        any->value.data = msm_xmalloc(n);
        any->value.len = protobuf_c_message_pack(inner, any->value.data);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    any->type_url = msm_xstrdup(type_url);
    return &any->base;
fail:
    protobuf_c_message_free_unpacked(&any->base, NULL);
    return NULL;
}

static ProtobufCMessage *dec_duration(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                      const json_t *j)
{
    int64_t s;
    int32_t ns;
    const char *str;
    if (!json_is_string(j)) {
        fail(d, "expected a duration string such as \"1.5s\", got %s", jtype(j));
        return NULL;
    }
    if (jstring(d, j, &str) < 0) {
        return NULL;
    }
    if (msm__duration_parse(str, &s, &ns) < 0) {
        fail(d, "invalid duration \"%.64s\" (expected e.g. \"1.5s\", at most 9 fractional "
                "digits, within +-315576000000s)", str);
        return NULL;
    }
    Google__Protobuf__Duration *m = (Google__Protobuf__Duration *)msm__msg_new(desc);
    m->seconds = s;
    m->nanos = ns;
    return &m->base;
}

static ProtobufCMessage *dec_timestamp(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                       const json_t *j)
{
    int64_t s;
    int32_t ns;
    const char *str;
    if (!json_is_string(j)) {
        fail(d, "expected an RFC 3339 timestamp string, got %s", jtype(j));
        return NULL;
    }
    if (jstring(d, j, &str) < 0) {
        return NULL;
    }
    if (msm__timestamp_parse(str, &s, &ns) < 0) {
        fail(d, "invalid timestamp \"%.64s\" (expected RFC 3339, e.g. "
                "\"2024-01-02T03:04:05.678Z\", years 0001-9999)", str);
        return NULL;
    }
    Google__Protobuf__Timestamp *m = (Google__Protobuf__Timestamp *)msm__msg_new(desc);
    m->seconds = s;
    m->nanos = ns;
    return &m->base;
}

/* FieldMask: "a.fooBar,b" -> paths ["a.foo_bar", "b"]; generic over the descriptor because
 * field_mask.proto may not be compiled in. */
static ProtobufCMessage *dec_field_mask(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                        const json_t *j)
{
    const char *str;
    if (!json_is_string(j)) {
        fail(d, "expected a field mask string, got %s", jtype(j));
        return NULL;
    }
    if (jstring(d, j, &str) < 0) {
        return NULL;
    }
    ProtobufCMessage *m = msm__msg_new(desc);
    const ProtobufCFieldDescriptor *f = &desc->fields[0];
    if (!*str) {
        return m;
    }
    size_t n = 1;
    for (const char *p = str; *p; p++) {
        n += *p == ',';
    }
    char **paths = msm_xcalloc(n, sizeof(char *));
    *(char ***)((char *)m + f->offset) = paths;
    size_t *np = (size_t *)((char *)m + f->quantifier_offset);
    const char *p = str;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        char *seg = msm_xstrndup(p, len);
        paths[(*np)++] = msm__camel_to_snake(seg);
        free(seg);
        p += len + (p[len] == ',');
    }
    return m;
}

static ProtobufCMessage *dec_value_wkt(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                       const json_t *j);

static ProtobufCMessage *dec_struct(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                    const json_t *j)
{
    if (!json_is_object(j)) {
        fail(d, "expected an object for google.protobuf.Struct, got %s", jtype(j));
        return NULL;
    }
    Google__Protobuf__Struct *m = (Google__Protobuf__Struct *)msm__msg_new(desc);
    size_t n = json_object_size(j);
    if (!n) {
        return &m->base;
    }
    m->fields = msm_xcalloc(n, sizeof(*m->fields));
    const ProtobufCMessageDescriptor *ed = desc->fields[0].descriptor;
    const ProtobufCMessageDescriptor *vd = ed->fields[1].descriptor;
    for (void *it = json_object_iter((json_t *)j); it;
         it = json_object_iter_next((json_t *)j, it)) {
        const char *key = json_object_iter_key(it);
        size_t mark = path_push(d, "[\"%.64s\"]", key);
        if (strlen(key) != json_object_iter_key_len(it)) {
            fail(d, "key contains a NUL character");
            goto fail;
        }
        ProtobufCMessage *v = dec_value_wkt(d, vd, json_object_iter_value(it));
        if (!v) {
            goto fail;
        }
        path_pop(d, mark);
        Google__Protobuf__Struct__FieldsEntry *e =
            (Google__Protobuf__Struct__FieldsEntry *)msm__msg_new(ed);
        e->key = msm_xstrdup(key);
        e->value = (Google__Protobuf__Value *)v;
        m->fields[m->n_fields++] = e;
    }
    return &m->base;
fail:
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return NULL;
}

static ProtobufCMessage *dec_list(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                  const json_t *j)
{
    if (!json_is_array(j)) {
        fail(d, "expected an array for google.protobuf.ListValue, got %s", jtype(j));
        return NULL;
    }
    Google__Protobuf__ListValue *m = (Google__Protobuf__ListValue *)msm__msg_new(desc);
    size_t n = json_array_size(j);
    if (!n) {
        return &m->base;
    }
    m->values = msm_xcalloc(n, sizeof(*m->values));
    const ProtobufCMessageDescriptor *vd = desc->fields[0].descriptor;
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_push(d, "[%zu]", i);
        ProtobufCMessage *v = dec_value_wkt(d, vd, json_array_get(j, i));
        if (!v) {
            protobuf_c_message_free_unpacked(&m->base, NULL);
            return NULL;
        }
        path_pop(d, mark);
        m->values[m->n_values++] = (Google__Protobuf__Value *)v;
    }
    return &m->base;
}

static ProtobufCMessage *dec_value_wkt(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                       const json_t *j)
{
    const char *s;
    ProtobufCMessage *sub;
    Google__Protobuf__Value *m = (Google__Protobuf__Value *)msm__msg_new(desc);
    switch (json_typeof(j)) {
    case JSON_NULL:
        m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        m->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        m->bool_value = json_is_true(j);
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        m->number_value = json_number_value(j);
        break;
    case JSON_STRING:
        if (jstring(d, j, &s) < 0) {
            goto fail;
        }
        m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        m->string_value = msm_xstrdup(s);
        break;
    case JSON_OBJECT:
    case JSON_ARRAY:
        sub = dec_message(d,
                          json_is_object(j) ? desc->fields[4].descriptor
                                            : desc->fields[5].descriptor,
                          j);
        if (!sub) {
            goto fail;
        }
        if (json_is_object(j)) {
            m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
            m->struct_value = (Google__Protobuf__Struct *)sub;
        } else {
            m->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
            m->list_value = (Google__Protobuf__ListValue *)sub;
        }
        break;
    }
    return &m->base;
fail:
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return NULL;
}

static ProtobufCMessage *dec_wrapper(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                     const json_t *j)
{
    const ProtobufCFieldDescriptor *f = &desc->fields[0];
    union slot v;
    if (json_is_null(j)) {
        fail(d, "null is not a valid %s", desc->name);
        return NULL;
    }
    int rc = dec_value(d, f, j, &v);
    if (rc < 0) {
        return NULL;
    }
    ProtobufCMessage *m = msm__msg_new(desc);
    if (rc == 0) {
        store_singular((char *)m, f, &v);
    }
    return m;
}

/* ---- messages ----------------------------------------------------------------------------- */

static ProtobufCMessage *dec_message(struct dec *d, const ProtobufCMessageDescriptor *desc,
                                     const json_t *j)
{
    enum msm__wkt kind = msm__wkt_kind(desc);
    ProtobufCMessage *m = NULL;
    if (kind == MSM__WKT_VALUE) {
        return dec_value_wkt(d, desc, j); /* its Struct/ListValue count the depth */
    }
    if (d->depth >= MSM_PBJSON_MAX_DEPTH) {
        fail(d, "nested deeper than %d levels", MSM_PBJSON_MAX_DEPTH);
        return NULL;
    }
    d->depth++;
    switch (kind) {
    case MSM__WKT_ANY:
        m = dec_any(d, desc, j);
        break;
    case MSM__WKT_DURATION:
        m = dec_duration(d, desc, j);
        break;
    case MSM__WKT_TIMESTAMP:
        m = dec_timestamp(d, desc, j);
        break;
    case MSM__WKT_FIELD_MASK:
        m = dec_field_mask(d, desc, j);
        break;
    case MSM__WKT_STRUCT:
        m = dec_struct(d, desc, j);
        break;
    case MSM__WKT_LIST_VALUE:
        m = dec_list(d, desc, j);
        break;
    case MSM__WKT_WRAPPER:
        m = dec_wrapper(d, desc, j);
        break;
    case MSM__WKT_VALUE:
    case MSM__WKT_NONE:
        if (!json_is_object(j)) {
            fail(d, "expected an object for %s, got %s", desc->name, jtype(j));
            break;
        }
        m = msm__msg_new(desc);
        if (dec_fields(d, m, j, NULL) < 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            m = NULL;
        }
        break;
    }
    d->depth--;
    return m;
}

ProtobufCMessage *msm_pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                    const struct msm_pbjson_opts *opts, struct msm_err *err)
{
    static const struct msm_pbjson_opts strict;
    struct dec *d = MSM_NEW(struct dec);
    d->opts = opts ? opts : &strict;
    d->err = err;
    ProtobufCMessage *m = NULL;
    if (!json) {
        msm_err_set(err, "no JSON value to decode as %s", desc->name);
    } else {
        m = dec_message(d, desc, json);
    }
    if (m && d->unknown) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_CONFIG,
                "%s: ignored %u unknown field(s) or enum value(s), first: %s", desc->name,
                d->unknown, d->first_unknown);
    }
    free(d);
    return m;
}

ProtobufCMessage *msm_pbjson_decode_text(const ProtobufCMessageDescriptor *desc,
                                         const char *text, size_t len,
                                         const struct msm_pbjson_opts *opts, struct msm_err *err)
{
    json_error_t jerr;
    json_t *json = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!json) {
        msm_err_set(err, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    ProtobufCMessage *m = msm_pbjson_decode(desc, json, opts, err);
    json_decref(json);
    return m;
}
