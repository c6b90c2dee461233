/* YAML -> jansson tree over libyaml's event parser (see yaml.h).
 *
 * The tree is built with an explicit stack of open collections, so hostile nesting never
 * recurses here; MSM_YAML_MAX_DEPTH bounds the tree that jansson (recursive) later walks.
 * Every node carries its subtree size and height: an alias adds its anchor's size to the
 * expansion budget and must not push the tree past the depth limit. */
#include "config/yaml.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/alloc.h"

#define TAG_PREFIX "tag:yaml.org,2002:"

struct anchor {
    char *name;
    json_t *node;  /* NULL while the anchored collection is still open */
    char *text;    /* scalar anchors: the raw text, for aliases used as mapping keys */
    size_t count;  /* nodes in the subtree */
    size_t height; /* 1 for a scalar */
};

struct frame {
    json_t *node; /* the open object or array */
    char *key;    /* mapping: key waiting for its value, NULL when a key is expected */
    size_t keylen;
    size_t count;
    size_t height;
    long anchor; /* index in anchors, -1 if none */
};

struct ybuild {
    struct msm_err *err;
    struct frame stack[MSM_YAML_MAX_DEPTH];
    size_t depth;
    struct anchor *anchors;
    size_t nanchors;
    size_t capanchors;
    size_t alias_nodes;
    json_t *root;
    bool have_doc;
};

static int yfail(struct ybuild *b, yaml_mark_t mark, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int yfail(struct ybuild *b, yaml_mark_t mark, const char *fmt, ...)
{
    char msg[MSM_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return msm_err_set(b->err, "line %zu, column %zu: %s", mark.line + 1, mark.column + 1, msg);
}

/* ---- scalar resolution (YAML 1.2 core schema) --------------------------------------------- */

static bool all_of(const char *s, size_t n, const char *set)
{
    if (!n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!strchr(set, s[i]) || !s[i]) {
            return false;
        }
    }
    return true;
}

static bool is_any(const char *s, size_t n, const char *const *words)
{
    for (; *words; words++) {
        if (strlen(*words) == n && !memcmp(s, *words, n)) {
            return true;
        }
    }
    return false;
}

/* Unsigned magnitude of digits <s>[0..n) in <base>; false on overflow. */
static bool parse_mag(const char *s, size_t n, unsigned base, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = (unsigned char)s[i];
        unsigned d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        if (v > (UINT64_MAX - d) / base) {
            return false;
        }
        v = v * base + d;
    }
    *out = v;
    return true;
}

/* Integer scalar; NULL (not an integer) or a JSON integer / decimal string. */
static json_t *resolve_int(const char *s, size_t n, bool *range_err)
{
    bool neg = false;
    uint64_t mag;
    const char *p = s;
    size_t len = n;
    if (len > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
        unsigned base = p[1] == 'x' ? 16 : 8;
        if (!all_of(p + 2, len - 2, base == 16 ? "0123456789abcdefABCDEF" : "01234567")) {
            return NULL;
        }
        if (!parse_mag(p + 2, len - 2, base, &mag)) {
            *range_err = true;
            return NULL;
        }
    } else {
        if (len && (*p == '-' || *p == '+')) {
            neg = *p == '-';
            p++;
            len--;
        }
        if (!all_of(p, len, "0123456789")) {
            return NULL;
        }
        if (!parse_mag(p, len, 10, &mag)) {
            /* Beyond 64 bits: keep the digits; proto3 JSON reports the range precisely. */
            char *t = msm_xasprintf("%s%.*s", neg ? "-" : "", (int)len, p);
            json_t *j = json_string(t);
            free(t);
            return j;
        }
    }
    if (neg ? mag <= (uint64_t)INT64_MAX + 1 : mag <= (uint64_t)INT64_MAX) {
        return json_integer(neg ? (json_int_t)((uint64_t)0 - mag) : (json_int_t)mag);
    }
    char buf[32];
    snprintf(buf, sizeof(buf), "%s%" PRIu64, neg ? "-" : "", mag);
    return json_string(buf);
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool is_float_syntax(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) {
        i++;
    }
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
        digits++;
    }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
            digits++;
        }
    }
    if (!digits) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t e = ++i;
        if (i < n && (s[i] == '-' || s[i] == '+')) {
            i++;
            e++;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == e) {
            return false;
        }
    }
    return i == n;
}

static json_t *resolve_float(const char *s, size_t n)
{
    static const char *const inf[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", NULL};
    static const char *const ninf[] = {"-.inf", "-.Inf", "-.INF", NULL};
    static const char *const nan[] = {".nan", ".NaN", ".NAN", NULL};
    if (is_any(s, n, inf)) {
        return json_string("Infinity");
    }
    if (is_any(s, n, ninf)) {
        return json_string("-Infinity");
    }
    if (is_any(s, n, nan)) {
        return json_string("NaN");
    }
    if (!is_float_syntax(s, n)) {
        return NULL;
    }
    char *t = msm_xstrndup(s, n);
    errno = 0;
    double v = strtod(t, NULL);
    free(t);
    if (isinf(v)) {
        return json_string(v > 0 ? "Infinity" : "-Infinity");
    }
    return json_real(v);
}

static json_t *resolve_null(const char *s, size_t n)
{
    static const char *const words[] = {"null", "Null", "NULL", "~", NULL};
    return !n || is_any(s, n, words) ? json_null() : NULL;
}

static json_t *resolve_bool(const char *s, size_t n)
{
    static const char *const t[] = {"true", "True", "TRUE", NULL};
    static const char *const f[] = {"false", "False", "FALSE", NULL};
    if (is_any(s, n, t)) {
        return json_true();
    }
    return is_any(s, n, f) ? json_false() : NULL;
}

/* JSON value of a scalar event; NULL with the error set. */
static json_t *scalar_value(struct ybuild *b, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    bool range = false;
    json_t *j = NULL;
    const char *want = NULL;
    if (tag && !strcmp(tag, "!")) {
        tag = TAG_PREFIX "str";
    }
    if (!tag) {
        if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
            tag = TAG_PREFIX "str";
        } else {
            j = resolve_null(s, n);
            if (!j) {
                j = resolve_bool(s, n);
            }
            if (!j) {
                j = resolve_int(s, n, &range);
            }
            if (!j && !range) {
                j = resolve_float(s, n);
            }
            if (range) {
                yfail(b, ev->start_mark, "integer %.40s out of range", s);
                return NULL;
            }
            if (j) {
                return j;
            }
            tag = TAG_PREFIX "str";
        }
    }
    if (!strncmp(tag, TAG_PREFIX, strlen(TAG_PREFIX))) {
        want = tag + strlen(TAG_PREFIX);
    }
    if (want && !strcmp(want, "str")) {
        j = json_stringn(s, n);
        if (!j) {
            yfail(b, ev->start_mark, "invalid UTF-8 in scalar");
        }
        return j;
    }
    if (want && !strcmp(want, "null")) {
        j = resolve_null(s, n);
    } else if (want && !strcmp(want, "bool")) {
        j = resolve_bool(s, n);
    } else if (want && !strcmp(want, "int")) {
        j = resolve_int(s, n, &range);
    } else if (want && !strcmp(want, "float")) {
        j = resolve_int(s, n, &range);
        if (!j && !range) {
            j = resolve_float(s, n);
        }
    } else {
        yfail(b, ev->start_mark, "unsupported tag %.60s", tag);
        return NULL;
    }
    if (!j) {
        yfail(b, ev->start_mark, "\"%.40s\" is not a valid %s", s, want);
    }
    return j;
}

/* ---- tree building ------------------------------------------------------------------------ */

static struct frame *top(struct ybuild *b)
{
    return b->depth ? &b->stack[b->depth - 1] : NULL;
}

static bool expecting_key(struct ybuild *b)
{
    struct frame *f = top(b);
    return f && json_is_object(f->node) && !f->key;
}

/* Attach <node> (reference stolen) of <count> nodes and <height> to the open collection. */
static int attach(struct ybuild *b, json_t *node, size_t count, size_t height, yaml_mark_t mark)
{
    struct frame *f = top(b);
    if (!f) {
        if (b->root) {
            json_decref(node);
            return yfail(b, mark, "more than one root node");
        }
        b->root = node;
        return 0;
    }
    f->count += count;
    if (height + 1 > f->height) {
        f->height = height + 1;
    }
    if (json_is_array(f->node)) {
        json_array_append_new(f->node, node);
        return 0;
    }
    if (json_object_getn(f->node, f->key, f->keylen)) {
        json_decref(node);
        return yfail(b, mark, "duplicate key \"%.64s\"", f->key);
    }
    json_object_setn_new_nocheck(f->node, f->key, f->keylen, node);
    free(f->key);
    f->key = NULL;
    return 0;
}

static int set_key(struct ybuild *b, const char *s, size_t n, yaml_mark_t mark)
{
    struct frame *f = top(b);
    json_t *check = json_stringn(s, n);
    if (!check) {
        return yfail(b, mark, "invalid UTF-8 in mapping key");
    }
    json_decref(check);
    f->key = msm_xstrndup(s, n);
    f->keylen = n;
    return 0;
}

static long add_anchor(struct ybuild *b, const char *name)
{
    b->anchors = msm_xgrow(b->anchors, sizeof(*b->anchors), &b->capanchors, b->nanchors + 1);
    struct anchor *a = &b->anchors[b->nanchors];
    memset(a, 0, sizeof(*a));
    a->name = msm_xstrdup(name);
    return (long)b->nanchors++;
}

static struct anchor *find_anchor(struct ybuild *b, const char *name)
{
    for (size_t i = b->nanchors; i-- > 0;) {
        if (!strcmp(b->anchors[i].name, name)) {
            return &b->anchors[i];
        }
    }
    return NULL;
}

static int on_scalar(struct ybuild *b, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (expecting_key(b)) {
        if (ev->data.scalar.anchor) {
            long idx = add_anchor(b, (const char *)ev->data.scalar.anchor);
            struct anchor *a = &b->anchors[idx];
            a->text = msm_xstrndup(s, n);
            a->node = json_stringn(s, n);
            a->count = a->height = 1;
        }
        return set_key(b, s, n, ev->start_mark);
    }
    json_t *j = scalar_value(b, ev);
    if (!j) {
        return MSM_EINVAL;
    }
    if (ev->data.scalar.anchor) {
        long idx = add_anchor(b, (const char *)ev->data.scalar.anchor);
        struct anchor *a = &b->anchors[idx];
        a->text = msm_xstrndup(s, n);
        a->node = json_incref(j);
        a->count = a->height = 1;
    }
    return attach(b, j, 1, 1, ev->start_mark);
}

static int on_alias(struct ybuild *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    struct anchor *a = find_anchor(b, name);
    if (!a) {
        return yfail(b, ev->start_mark, "unknown anchor *%.64s", name);
    }
    if (!a->node) {
        return yfail(b, ev->start_mark, "alias *%.64s refers to an enclosing node", name);
    }
    if (expecting_key(b)) {
        if (!a->text) {
            return yfail(b, ev->start_mark, "mapping keys must be scalars (alias *%.64s)", name);
        }
        return set_key(b, a->text, strlen(a->text), ev->start_mark);
    }
    b->alias_nodes += a->count;
    if (b->alias_nodes > MSM_YAML_MAX_ALIAS_NODES) {
        return yfail(b, ev->start_mark, "alias expansion exceeds %d nodes",
                     MSM_YAML_MAX_ALIAS_NODES);
    }
    if (b->depth + a->height > MSM_YAML_MAX_DEPTH) {
        return yfail(b, ev->start_mark, "nesting deeper than %d levels", MSM_YAML_MAX_DEPTH);
    }
    return attach(b, json_deep_copy(a->node), a->count, a->height, ev->start_mark);
}

static int on_start(struct ybuild *b, const yaml_event_t *ev, bool mapping)
{
    const char *anchor = (const char *)(mapping ? ev->data.mapping_start.anchor
                                                : ev->data.sequence_start.anchor);
    const char *tag = (const char *)(mapping ? ev->data.mapping_start.tag
                                             : ev->data.sequence_start.tag);
    if (expecting_key(b)) {
        return yfail(b, ev->start_mark, "mapping keys must be scalars");
    }
    if (tag && strcmp(tag, "!") != 0 &&
        strcmp(tag, mapping ? TAG_PREFIX "map" : TAG_PREFIX "seq") != 0) {
        return yfail(b, ev->start_mark, "unsupported tag %.60s", tag);
    }
    if (b->depth >= MSM_YAML_MAX_DEPTH) {
        return yfail(b, ev->start_mark, "nesting deeper than %d levels", MSM_YAML_MAX_DEPTH);
    }
    struct frame *f = &b->stack[b->depth++];
    memset(f, 0, sizeof(*f));
    f->node = mapping ? json_object() : json_array();
    f->count = 1;
    f->height = 1;
    f->anchor = anchor ? add_anchor(b, anchor) : -1;
    return 0;
}

static int on_end(struct ybuild *b, const yaml_event_t *ev)
{
    struct frame f = *top(b);
    b->depth--;
    if (f.anchor >= 0) {
        struct anchor *a = &b->anchors[f.anchor];
        a->node = json_incref(f.node);
        a->count = f.count;
        a->height = f.height;
    }
    return attach(b, f.node, f.count, f.height, ev->start_mark);
}

static int on_event(struct ybuild *b, const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (b->have_doc) {
            return yfail(b, ev->start_mark, "multiple YAML documents are not supported");
        }
        b->have_doc = true;
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, ev, false);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, ev, true);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return b->depth ? on_end(b, ev) : yfail(b, ev->start_mark, "unbalanced end event");
    default:
        return 0;
    }
}

static void ybuild_free(struct ybuild *b)
{
    while (b->depth) {
        struct frame *f = &b->stack[--b->depth];
        json_decref(f->node);
        free(f->key);
    }
    for (size_t i = 0; i < b->nanchors; i++) {
        free(b->anchors[i].name);
        free(b->anchors[i].text);
        json_decref(b->anchors[i].node);
    }
    free(b->anchors);
}

json_t *msm_yaml_load(const char *text, size_t len, struct msm_err *err)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    struct ybuild *b = MSM_NEW(struct ybuild);
    b->err = err;
    if (!yaml_parser_initialize(&parser)) {
        msm_err_set(err, "cannot initialize the YAML parser");
        free(b);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = 0;
    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            if (parser.error == YAML_READER_ERROR) {
                /* reader errors (encoding) carry an offset, not a mark */
                rc = msm_err_set(err, "byte %zu: %s", parser.problem_offset + 1,
                                 parser.problem ? parser.problem : "invalid input");
                break;
            }
            const char *ctx = parser.context ? parser.context : "";
            rc = msm_err_set(err, "line %zu, column %zu: %s%s%s", parser.problem_mark.line + 1,
                             parser.problem_mark.column + 1,
                             parser.problem ? parser.problem : "YAML syntax error",
                             *ctx ? " " : "", ctx);
            break;
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        rc = on_event(b, &ev);
        yaml_event_delete(&ev);
        if (rc < 0 || end) {
            break;
        }
    }
    yaml_parser_delete(&parser);
    json_t *root = NULL;
    if (rc == 0) {
        root = b->root ? b->root : json_null();
        b->root = NULL;
    }
    json_decref(b->root);
    ybuild_free(b);
    free(b);
    return root;
}
