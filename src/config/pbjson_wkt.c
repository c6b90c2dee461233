/* proto3 JSON helpers: well-known type detection, JSON field names, Duration/Timestamp/
 * FieldMask text forms, protobuf's number formatting, depth-checked unpack and Any unpacking
 * (with TypedStruct). */
#include <ctype.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/pbwire.h"
#include "config/pbjson-private.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "udpa/type/v1/typed_struct.pb-c.h"
#include "xds/type/v3/typed_struct.pb-c.h"

/* ---- type classification ------------------------------------------------------------------ */

enum msm__wkt msm__wkt_kind(const ProtobufCMessageDescriptor *desc)
{
    static const struct {
        const char *name;
        enum msm__wkt kind;
    } wkts[] = {
        {"Any", MSM__WKT_ANY},           {"Duration", MSM__WKT_DURATION},
        {"Timestamp", MSM__WKT_TIMESTAMP}, {"FieldMask", MSM__WKT_FIELD_MASK},
        {"Struct", MSM__WKT_STRUCT},     {"Value", MSM__WKT_VALUE},
        {"ListValue", MSM__WKT_LIST_VALUE}, {"DoubleValue", MSM__WKT_WRAPPER},
        {"FloatValue", MSM__WKT_WRAPPER}, {"Int64Value", MSM__WKT_WRAPPER},
        {"UInt64Value", MSM__WKT_WRAPPER}, {"Int32Value", MSM__WKT_WRAPPER},
        {"UInt32Value", MSM__WKT_WRAPPER}, {"BoolValue", MSM__WKT_WRAPPER},
        {"StringValue", MSM__WKT_WRAPPER}, {"BytesValue", MSM__WKT_WRAPPER},
    };
    if (!desc->package_name || strcmp(desc->package_name, "google.protobuf") != 0) {
        return MSM__WKT_NONE;
    }
    for (size_t i = 0; i < MSM_ARRAY_SIZE(wkts); i++) {
        if (!strcmp(desc->short_name, wkts[i].name)) {
            /* A wrapper is only special with its expected shape: one field "value" = 1. */
            if (wkts[i].kind == MSM__WKT_WRAPPER &&
                (desc->n_fields != 1 || desc->fields[0].id != 1 ||
                 desc->fields[0].label == PROTOBUF_C_LABEL_REPEATED)) {
                return MSM__WKT_NONE;
            }
            if (wkts[i].kind == MSM__WKT_FIELD_MASK &&
                (desc->n_fields != 1 || desc->fields[0].label != PROTOBUF_C_LABEL_REPEATED ||
                 desc->fields[0].type != PROTOBUF_C_TYPE_STRING)) {
                return MSM__WKT_NONE;
            }
            return wkts[i].kind;
        }
    }
    return MSM__WKT_NONE;
}

bool msm__is_null_value_enum(const ProtobufCEnumDescriptor *ed)
{
    return ed && !strcmp(ed->name, "google.protobuf.NullValue");
}

bool msm__is_typed_struct(const ProtobufCMessageDescriptor *desc)
{
    return !strcmp(desc->name, "udpa.type.v1.TypedStruct") ||
           !strcmp(desc->name, "xds.type.v3.TypedStruct");
}

/* ---- names -------------------------------------------------------------------------------- */

size_t msm__json_name(const ProtobufCFieldDescriptor *f, bool camel, char *buf, size_t cap)
{
    size_t n = strlen(f->name);
    if (n > 1 && f->name[n - 1] == '_') {
        n--; /* `base_` is the preprocessing's rename of `base` */
    }
    size_t o = 0;
    bool up = false;
    for (size_t i = 0; i < n; i++) {
        char c = f->name[i];
        if (camel && c == '_') {
            up = true;
            continue;
        }
        if (up) {
            c = (char)toupper((unsigned char)c);
            up = false;
        }
        if (o + 1 < cap) {
            buf[o] = c;
        }
        o++;
    }
    if (cap) {
        buf[o < cap ? o : cap - 1] = '\0';
    }
    return o;
}

/* <key> equals the lowerCamelCase form of the first <n> characters of <name>. */
static bool camel_eq(const char *name, size_t n, const char *key)
{
    bool up = false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '_') {
            up = true;
            continue;
        }
        if (up) {
            c = (char)toupper((unsigned char)c);
            up = false;
        }
        if (*key++ != c) {
            return false;
        }
    }
    return *key == '\0';
}

const ProtobufCFieldDescriptor *msm__find_json_field(const ProtobufCMessageDescriptor *desc,
                                                     const char *key)
{
    size_t klen = strlen(key);
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f && !(klen > 1 && key[klen - 1] == '_')) {
        return f;
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const char *name = desc->fields[i].name;
        size_t n = strlen(name);
        if (n > 1 && name[n - 1] == '_') {
            n--;
        }
        if ((n == klen && !memcmp(name, key, n)) || camel_eq(name, n, key)) {
            return &desc->fields[i];
        }
    }
    return NULL;
}

bool msm__is_map_field(const ProtobufCMessageDescriptor *parent,
                       const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) {
        return false;
    }
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || strcmp(e->fields[0].name, "key") != 0 ||
        e->fields[1].id != 2 || strcmp(e->fields[1].name, "value") != 0 ||
        e->fields[0].label == PROTOBUF_C_LABEL_REPEATED ||
        e->fields[1].label == PROTOBUF_C_LABEL_REPEATED) {
        return false;
    }
    /* protoc names the entry <FieldInCamelCase>Entry and nests it in the parent. */
    size_t plen = strlen(parent->name);
    if (strncmp(e->name, parent->name, plen) != 0 || e->name[plen] != '.' ||
        strcmp(e->name + plen + 1, e->short_name) != 0) {
        return false;
    }
    const char *s = e->short_name;
    bool up = true;
    for (const char *p = f->name; *p; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        char c = up ? (char)toupper((unsigned char)*p) : *p;
        up = false;
        if (*s++ != c) {
            return false;
        }
    }
    return !strcmp(s, "Entry");
}

size_t msm__elem_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    }
    return sizeof(ProtobufCBinaryData);
}

ProtobufCMessage *msm__msg_new(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = msm_xmalloc(desc->sizeof_message);
    protobuf_c_message_init(desc, m);
    return m;
}

/* ---- presence ----------------------------------------------------------------------------- */

static bool is_zeroish(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)p == 0;
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_STRING:
        return !*(char *const *)p || !**(char *const *)p;
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return !*(void *const *)p;
    }
    return true;
}

bool msm__field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    const void *member = base + f->offset;
    const void *q = base + f->quantifier_offset;
    bool ptr_type = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return *(const size_t *)q > 0;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *)q != f->id) {
            return false;
        }
        return !ptr_type ||
               (*(void *const *)member && *(void *const *)member != f->default_value);
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return true;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (ptr_type) {
            return *(void *const *)member && *(void *const *)member != f->default_value;
        }
        return *(const protobuf_c_boolean *)q;
    default:
        return !is_zeroish(f, member);
    }
}

/* ---- Duration ----------------------------------------------------------------------------- */

#define DURATION_MAX_SECONDS 315576000000LL

static const char *parse_digits(const char *p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i])) {
            return NULL;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return p + n;
}

/* Optional '.' and 1-9 fraction digits at <*pp>, scaled to nanoseconds. */
static int parse_fraction(const char **pp, int32_t *nanos)
{
    const char *p = *pp;
    int32_t ns = 0;
    if (*p == '.') {
        int nd = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            if (nd == 9) {
                return -1;
            }
            ns = ns * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (!nd) {
            return -1;
        }
        for (; nd < 9; nd++) {
            ns *= 10;
        }
    }
    *nanos = ns;
    *pp = p;
    return 0;
}

int msm__duration_parse(const char *s, int64_t *secs, int32_t *nanos)
{
    const char *p = s;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    if (!isdigit((unsigned char)*p)) {
        return -1;
    }
    int64_t sec = 0;
    while (isdigit((unsigned char)*p)) {
        sec = sec * 10 + (*p - '0');
        if (sec > DURATION_MAX_SECONDS) {
            return -1;
        }
        p++;
    }
    int32_t ns;
    if (parse_fraction(&p, &ns) < 0 || p[0] != 's' || p[1] != '\0') {
        return -1;
    }
    *secs = neg ? -sec : sec;
    *nanos = neg ? -ns : ns;
    return 0;
}

static void format_nanos(char *buf, size_t cap, uint32_t ns)
{
    if (ns == 0) {
        buf[0] = '\0';
    } else if (ns % 1000000 == 0) {
        snprintf(buf, cap, ".%03u", ns / 1000000);
    } else if (ns % 1000 == 0) {
        snprintf(buf, cap, ".%06u", ns / 1000);
    } else {
        snprintf(buf, cap, ".%09u", ns);
    }
}

void msm__duration_format(int64_t secs, int32_t nanos, char *buf, size_t cap)
{
    /* Normalized through 128 bits so that invalid input (mixed signs, |nanos| >= 1e9, from
     * arbitrary binary) still prints a well-formed value. */
    __int128 total = (__int128)secs * 1000000000 + nanos;
    bool neg = total < 0;
    unsigned __int128 mag = neg ? (unsigned __int128)(-total) : (unsigned __int128)total;
    char frac[16];
    format_nanos(frac, sizeof(frac), (uint32_t)(mag % 1000000000));
    snprintf(buf, cap, "%s%llu%ss", neg ? "-" : "", (unsigned long long)(mag / 1000000000), frac);
}

/* ---- Timestamp ---------------------------------------------------------------------------- */

#define TIMESTAMP_MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define TIMESTAMP_MAX_SECONDS 253402300799LL   /* 9999-12-31T23:59:59Z */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int y, int m)
{
    static const unsigned char dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

int msm__timestamp_parse(const char *s, int64_t *secs, int32_t *nanos)
{
    int y, mo, d, h, mi, se;
    const char *p = s;
    if (!(p = parse_digits(p, 4, &y)) || *p++ != '-' || !(p = parse_digits(p, 2, &mo)) ||
        *p++ != '-' || !(p = parse_digits(p, 2, &d)) || (*p != 'T' && *p != 't')) {
        return -1;
    }
    p++;
    if (!(p = parse_digits(p, 2, &h)) || *p++ != ':' || !(p = parse_digits(p, 2, &mi)) ||
        *p++ != ':' || !(p = parse_digits(p, 2, &se))) {
        return -1;
    }
    int32_t ns;
    if (parse_fraction(&p, &ns) < 0) {
        return -1;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (!(p = parse_digits(p, 2, &oh)) || *p++ != ':' || !(p = parse_digits(p, 2, &om)) ||
            oh > 23 || om > 59) {
            return -1;
        }
        off = sign * (int64_t)(oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (*p != '\0' || y < 1 || mo < 1 || mo > 12 || d < 1 || (unsigned)d > days_in_month(y, mo) ||
        h > 23 || mi > 59 || se > 59) {
        return -1;
    }
    int64_t t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
    t -= off;
    if (t < TIMESTAMP_MIN_SECONDS || t > TIMESTAMP_MAX_SECONDS) {
        return -1;
    }
    *secs = t;
    *nanos = ns;
    return 0;
}

void msm__timestamp_format(int64_t secs, int32_t nanos, char *buf, size_t cap)
{
    __int128 total = (__int128)secs * 1000000000 + nanos;
    __int128 s = total / 1000000000;
    __int128 ns = total % 1000000000;
    if (ns < 0) {
        ns += 1000000000;
        s -= 1;
    }
    __int128 days = s / 86400;
    __int128 rem = s % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days((int64_t)days, &y, &m, &d);
    char frac[16];
    format_nanos(frac, sizeof(frac), (uint32_t)ns);
    snprintf(buf, cap, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u%sZ", y, m, d,
             (unsigned)(rem / 3600), (unsigned)(rem % 3600 / 60), (unsigned)(rem % 60), frac);
}

/* ---- numbers ------------------------------------------------------------------------------ */

void msm__format_double(double v, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.*g", DBL_DIG, v);
    if (strtod(buf, NULL) != v) {
        snprintf(buf, cap, "%.*g", DBL_DIG + 2, v);
    }
}

void msm__format_float(float v, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.*g", FLT_DIG, (double)v);
    if (strtof(buf, NULL) != v) {
        snprintf(buf, cap, "%.*g", FLT_DIG + 3, (double)v);
    }
}

bool msm__is_json_number(const char *s)
{
    const char *p = s;
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (isdigit((unsigned char)*p)) {
        while (isdigit((unsigned char)*p)) {
            p++;
        }
    } else {
        return false;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
    }
    return *p == '\0';
}

/* ---- FieldMask paths ---------------------------------------------------------------------- */

char *msm__snake_to_camel(const char *s)
{
    char *out = msm_xmalloc(strlen(s) + 1);
    size_t o = 0;
    bool up = false;
    for (; *s; s++) {
        if (*s == '_') {
            up = true;
            continue;
        }
        out[o++] = up ? (char)toupper((unsigned char)*s) : *s;
        up = false;
    }
    out[o] = '\0';
    return out;
}

char *msm__camel_to_snake(const char *s)
{
    char *out = msm_xmalloc(strlen(s) * 2 + 1);
    size_t o = 0;
    for (; *s; s++) {
        if (isupper((unsigned char)*s)) {
            out[o++] = '_';
            out[o++] = (char)tolower((unsigned char)*s);
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return out;
}

/* ---- unpacking ---------------------------------------------------------------------------- */

/* False when sub-messages of <desc> in <p> nest deeper than the limit. Malformed wire data
 * stops the scan (true): protobuf-c's own parser then rejects it. */
static bool wire_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                          int depth)
{
    if (depth > MSM_PBJSON_MAX_DEPTH) {
        return false;
    }
    size_t i = 0;
    while (i < len) {
        uint64_t tag, v;
        if (!msm_pb_varint(p, len, &i, &tag)) {
            return true;
        }
        switch (tag & 7) {
        case 0:
            if (!msm_pb_varint(p, len, &i, &v)) {
                return true;
            }
            break;
        case 1:
            if (len - i < 8) {
                return true;
            }
            i += 8;
            break;
        case 5:
            if (len - i < 4) {
                return true;
            }
            i += 4;
            break;
        case 2: {
            if (!msm_pb_varint(p, len, &i, &v) || v > len - i) {
                return true;
            }
            uint64_t id = tag >> 3;
            const ProtobufCFieldDescriptor *f =
                id <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)id)
                                 : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                !wire_depth_ok(f->descriptor, p + i, (size_t)v, depth + 1)) {
                return false;
            }
            i += (size_t)v;
            break;
        }
        default:
            return true;
        }
    }
    return true;
}

ProtobufCMessage *msm_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                size_t len, struct msm_err *err)
{
    return msm_pb_unpack_with(desc, NULL, data, len, err);
}

ProtobufCMessage *msm_pb_unpack_with(const ProtobufCMessageDescriptor *desc,
                                     ProtobufCAllocator *allocator, const uint8_t *data,
                                     size_t len, struct msm_err *err)
{
    if (!wire_depth_ok(desc, data, len, 1)) {
        msm_err_set(err, "%s: messages nested deeper than %d levels", desc->name,
                    MSM_PBJSON_MAX_DEPTH);
        return NULL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, allocator, len, data);
    if (!m) {
        msm_err_set(err, "%s: cannot parse %zu bytes of protobuf", desc->name, len);
    }
    return m;
}

/* TypedStruct (either package): decode its Struct as JSON into its type_url's message. */
static ProtobufCMessage *typed_struct_unpack(const ProtobufCMessage *ts_msg,
                                             const ProtobufCMessageDescriptor *expect,
                                             const struct msm_pbjson_opts *opts,
                                             struct msm_err *err)
{
    const char *type_url;
    const ProtobufCMessage *value;
    if (!strcmp(ts_msg->descriptor->name, "udpa.type.v1.TypedStruct")) {
        const Udpa__Type__V1__TypedStruct *ts = (const Udpa__Type__V1__TypedStruct *)ts_msg;
        type_url = ts->type_url;
        value = ts->value ? &ts->value->base : NULL;
    } else {
        const Xds__Type__V3__TypedStruct *ts = (const Xds__Type__V3__TypedStruct *)ts_msg;
        type_url = ts->type_url;
        value = ts->value ? &ts->value->base : NULL;
    }
    const ProtobufCMessageDescriptor *desc = msm_types_find_url(type_url);
    if (!desc) {
        msm_err_set(err, "%s: unknown type \"%s\"", ts_msg->descriptor->name, type_url);
        return NULL;
    }
    if (expect && strcmp(desc->name, expect->name) != 0) {
        msm_err_set(err, "%s carries %s where %s is expected", ts_msg->descriptor->name,
                    desc->name, expect->name);
        return NULL;
    }
    json_t *json;
    if (value) {
        json = msm_pbjson_encode(value, NULL, err);
        if (!json) {
            msm_err_prefix(err, "%s (in %s)", desc->name, ts_msg->descriptor->name);
            return NULL;
        }
    } else {
        json = json_object();
    }
    ProtobufCMessage *m = msm_pbjson_decode(desc, json, opts, err);
    json_decref(json);
    if (!m) {
        msm_err_prefix(err, "%s (in %s)", desc->name, ts_msg->descriptor->name);
    }
    return m;
}

ProtobufCMessage *msm_pb_any_unpack(const Google__Protobuf__Any *any,
                                    const ProtobufCMessageDescriptor *expect,
                                    const struct msm_pbjson_opts *opts, struct msm_err *err)
{
    if (!any || !any->type_url || !any->type_url[0]) {
        msm_err_set(err, "Any without a type_url");
        return NULL;
    }
    const ProtobufCMessageDescriptor *desc = msm_types_find_url(any->type_url);
    if (!desc) {
        msm_err_set(err, "unknown type \"%s\"", any->type_url);
        return NULL;
    }
    if (msm__is_typed_struct(desc)) {
        ProtobufCMessage *ts = msm_pb_unpack(desc, any->value.data, any->value.len, err);
        if (!ts) {
            return NULL;
        }
        ProtobufCMessage *m = typed_struct_unpack(ts, expect, opts, err);
        protobuf_c_message_free_unpacked(ts, NULL);
        return m;
    }
    if (expect && strcmp(desc->name, expect->name) != 0) {
        msm_err_set(err, "type %s where %s is expected", desc->name, expect->name);
        return NULL;
    }
    return msm_pb_unpack(desc, any->value.data, any->value.len, err);
}
