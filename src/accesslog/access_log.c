/* Access log configuration (filters, formats, sinks) and emission (see access_log.h). */
#include "accesslog/access_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"

#include "accesslog/file.h"
#include "accesslog/format.h"
#include "common/alloc.h"
#include "config/matcher.h"
#include "config/pbjson.h"
#include "http/headers.h"
#include "upstream/cluster.h"

/* The deprecated FileAccessLog.format/json_format/typed_json_format and HeaderMatcher match
 * fields are still what people (and Istio's older versions) send. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* Shorter names for the generated oneof cases. */
#define HM(x) ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_##x
#define AF(x) ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_##x
#define FAL(x) ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_##x
#define SFS(x) ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_##x
#define FP_DEN(x) ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__##x

/* ---- filters -------------------------------------------------------------------------------- */

enum flt_kind {
    F_STATUS = 0,
    F_DURATION = 1,
    F_NOT_HEALTH_CHECK = 2,
    F_TRACEABLE = 3,
    F_RUNTIME = 4,
    F_AND = 5,
    F_OR = 6,
    F_HEADER = 7,
    F_RESPONSE_FLAG = 8,
};

enum cmp_op {
    CMP_EQ = 0,
    CMP_GE = 1,
    CMP_LE = 2,
};

enum hdr_kind {
    H_PRESENT = 0,
    H_STRING = 1,
};

struct flt {
    enum flt_kind kind;
    enum cmp_op op;
    uint64_t value;
    uint64_t flags;          /* F_RESPONSE_FLAG: any of these (0 = any flag at all) */
    uint32_t per_million;    /* F_RUNTIME */
    struct flt *sub;         /* F_AND / F_OR */
    int n_sub;
    char *hdr;               /* F_HEADER: lower-case name */
    enum hdr_kind hkind;
    bool present, invert;
    struct msm_str_matcher sm;
};

struct msm_access_log {
    struct flt *filter; /* NULL = log everything */
    struct msm_al_formatter *fmt;
    struct msm_al_file *file;
};

static void flt_deinit(struct flt *f)
{
    for (int i = 0; i < f->n_sub; i++) {
        flt_deinit(&f->sub[i]);
    }
    free(f->sub);
    free(f->hdr);
    if (f->kind == F_HEADER && f->hkind == H_STRING) {
        msm_str_matcher_deinit(&f->sm);
    }
}

static int cmp_from_proto(const Envoy__Config__Accesslog__V3__ComparisonFilter *c, struct flt *f,
                          struct msm_err *err)
{
    if (!c) {
        return msm_err_set(err, "comparison: required");
    }
    f->op = c->op == ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE   ? CMP_GE
            : c->op == ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE ? CMP_LE
                                                                               : CMP_EQ;
    f->value = c->value ? c->value->default_value : 0;
    return 0;
}

static int header_from_proto(const Envoy__Config__Route__V3__HeaderMatcher *h, struct flt *f,
                             struct msm_err *err)
{
    if (!h || !h->name || !h->name[0]) {
        return msm_err_set(err, "header_filter.header.name: required");
    }
    f->hdr = msm_xstrdup(h->name);
    for (char *p = f->hdr; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    f->invert = h->invert_match;
    switch (h->header_match_specifier_case) {
    case HM(_NOT_SET):
        f->hkind = H_PRESENT;
        f->present = true;
        return 0;
    case HM(PRESENT_MATCH):
        f->hkind = H_PRESENT;
        f->present = h->present_match;
        return 0;
    case HM(STRING_MATCH):
        f->hkind = H_STRING;
        if (msm_str_matcher_from_proto(h->string_match, &f->sm, err) < 0) {
            return MSM_EINVAL;
        }
        return 0;
    case HM(EXACT_MATCH):
    case HM(PREFIX_MATCH):
    case HM(SUFFIX_MATCH):
    case HM(CONTAINS_MATCH): {
        f->hkind = H_STRING;
        f->sm.kind = h->header_match_specifier_case ==
                             HM(EXACT_MATCH)
                         ? MSM_STR_EXACT
                     : h->header_match_specifier_case ==
                             HM(PREFIX_MATCH)
                         ? MSM_STR_PREFIX
                     : h->header_match_specifier_case ==
                             HM(SUFFIX_MATCH)
                         ? MSM_STR_SUFFIX
                         : MSM_STR_CONTAINS;
        const char *s = h->exact_match; /* the union: every one of them is a char * */
        f->sm.s = msm_xstrdup(s ? s : "");
        return 0;
    }
    default:
        return msm_err_set(err, "header_filter: only present_match and string matchers are "
                                "supported");
    }
}

static int flt_from_proto(const Envoy__Config__Accesslog__V3__AccessLogFilter *p, struct flt *f,
                          int depth, struct msm_err *err)
{
    memset(f, 0, sizeof(*f));
    if (depth > 16) {
        return msm_err_set(err, "filter: nested too deeply");
    }
    const Envoy__Config__Accesslog__V3__AndFilter *list = NULL;
    switch (p->filter_specifier_case) {
    case AF(STATUS_CODE_FILTER):
        f->kind = F_STATUS;
        return cmp_from_proto(p->status_code_filter->comparison, f, err);
    case AF(DURATION_FILTER):
        f->kind = F_DURATION;
        return cmp_from_proto(p->duration_filter->comparison, f, err);
    case AF(NOT_HEALTH_CHECK_FILTER):
        f->kind = F_NOT_HEALTH_CHECK;
        return 0;
    case AF(TRACEABLE_FILTER):
        f->kind = F_TRACEABLE;
        return 0;
    case AF(RUNTIME_FILTER): {
        f->kind = F_RUNTIME;
        const Envoy__Type__V3__FractionalPercent *fp = p->runtime_filter->percent_sampled;
        uint64_t num = fp ? fp->numerator : 0;
        uint64_t den = !fp ? 100
                       : fp->denominator == FP_DEN(TEN_THOUSAND)
                           ? 10000
                       : fp->denominator == FP_DEN(MILLION)
                           ? 1000000
                           : 100;
        f->per_million = (uint32_t)(num >= den ? 1000000 : num * (1000000 / den));
        return 0;
    }
    case AF(AND_FILTER):
        f->kind = F_AND;
        list = p->and_filter;
        break;
    case AF(OR_FILTER):
        f->kind = F_OR;
        list = (const Envoy__Config__Accesslog__V3__AndFilter *)(const void *)p->or_filter;
        break;
    case AF(HEADER_FILTER):
        f->kind = F_HEADER;
        return header_from_proto(p->header_filter->header, f, err);
    case AF(RESPONSE_FLAG_FILTER):
        f->kind = F_RESPONSE_FLAG;
        for (size_t i = 0; i < p->response_flag_filter->n_flags; i++) {
            int b = msm_response_flag_parse(p->response_flag_filter->flags[i]);
            if (b < 0) {
                return msm_err_set(err, "response_flag_filter.flags[%zu]: unknown flag '%s'", i,
                                   p->response_flag_filter->flags[i]);
            }
            f->flags |= 1ull << b;
        }
        return 0;
    default:
        return msm_err_set(err, "filter: this access log filter type is not supported (case "
                                "%d)", (int)p->filter_specifier_case);
    }
    f->sub = msm_xcalloc(list->n_filters + 1, sizeof(*f->sub));
    for (size_t i = 0; i < list->n_filters; i++) {
        f->n_sub = (int)i + 1;
        if (flt_from_proto(list->filters[i], &f->sub[i], depth + 1, err) < 0) {
            msm_err_prefix(err, "filters[%zu]", i);
            return MSM_EINVAL;
        }
    }
    return 0;
}

static bool cmp(enum cmp_op op, uint64_t a, uint64_t b)
{
    switch (op) {
    case CMP_GE: return a >= b;
    case CMP_LE: return a <= b;
    default: return a == b;
    }
}

static bool flt_eval(const struct flt *f, const struct msm_stream_info *si, double now)
{
    switch (f->kind) {
    case F_STATUS: return cmp(f->op, si->response_code, f->value);
    case F_DURATION: {
        double end = si->end > 0 ? si->end : now;
        return cmp(f->op, (uint64_t)((end - si->start) * 1000.0), f->value);
    }
    case F_NOT_HEALTH_CHECK: return !si->health_check;
    case F_TRACEABLE: return false;
    case F_RUNTIME: return msm_random() % 1000000 < f->per_million;
    case F_AND:
        for (int i = 0; i < f->n_sub; i++) {
            if (!flt_eval(&f->sub[i], si, now)) {
                return false;
            }
        }
        return true;
    case F_OR:
        for (int i = 0; i < f->n_sub; i++) {
            if (flt_eval(&f->sub[i], si, now)) {
                return true;
            }
        }
        return false;
    case F_HEADER: {
        const char *v = si->request_headers ? msm_hdrs_get(si->request_headers, f->hdr) : NULL;
        bool m = f->hkind == H_PRESENT ? (v != NULL) == f->present
                                       : v && msm_str_matcher_match(&f->sm, v, strlen(v));
        return m != f->invert;
    }
    case F_RESPONSE_FLAG:
        return f->flags ? (si->response_flags & f->flags) != 0 : si->response_flags != 0;
    }
    return true;
}

/* ---- loggers -------------------------------------------------------------------------------- */

/* A DataSource's text (text_format_source). NULL with <err>. */
static char *data_source(const Envoy__Config__Core__V3__DataSource *d, struct msm_err *err)
{
    switch (d->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        return msm_xstrdup(d->inline_string);
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        return msm_xstrndup((const char *)d->inline_bytes.data, d->inline_bytes.len);
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        FILE *f = fopen(d->filename, "r");
        if (!f) {
            msm_err_set(err, "text_format_source.filename: cannot read '%s'", d->filename);
            return NULL;
        }
        char *buf = msm_xmalloc(65537);
        size_t n = fread(buf, 1, 65536, f);
        fclose(f);
        buf[n] = '\0';
        return buf;
    }
    default: msm_err_set(err, "text_format_source: inline_string, inline_bytes or filename "
                              "required");
        return NULL;
    }
}

static struct msm_al_formatter *
sfs_formatter(const Envoy__Config__Core__V3__SubstitutionFormatString *s, struct msm_err *err)
{
    if (s->n_formatters) {
        msm_err_set(err, "log_format.formatters: formatter extensions are not supported");
        return NULL;
    }
    switch (s->format_case) {
    case SFS(TEXT_FORMAT):
        return msm_al_formatter_text(s->text_format, s->omit_empty_values, err);
    case SFS(TEXT_FORMAT_SOURCE): {
        char *text = data_source(s->text_format_source, err);
        if (!text) {
            return NULL;
        }
        struct msm_al_formatter *f = msm_al_formatter_text(text, s->omit_empty_values, err);
        free(text);
        return f;
    }
    case SFS(JSON_FORMAT):
        return msm_al_formatter_json(s->json_format, true, s->omit_empty_values, err);
    default:
        return msm_al_formatter_text(NULL, s->omit_empty_values, err);
    }
}

static struct msm_al_formatter *
file_formatter(const Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *p,
               struct msm_err *err)
{
    switch (p->access_log_format_case) {
    case FAL(FORMAT):
        return msm_al_formatter_text(p->format[0] ? p->format : NULL, false, err);
    case FAL(JSON_FORMAT):
        return msm_al_formatter_json(p->json_format, false, false, err);
    case FAL(TYPED_JSON_FORMAT):
        return msm_al_formatter_json(p->typed_json_format, true, false, err);
    case FAL(LOG_FORMAT):
        return sfs_formatter(p->log_format, err);
    default: return msm_al_formatter_text(NULL, false, err);
    }
}

static void log_free(struct msm_access_log *l)
{
    if (!l) {
        return;
    }
    if (l->filter) {
        flt_deinit(l->filter);
        free(l->filter);
    }
    msm_al_formatter_free(l->fmt);
    msm_al_file_unref(l->file);
    free(l);
}

static struct msm_access_log *log_from_proto(const Envoy__Config__Accesslog__V3__AccessLog *p,
                                             struct msm_err *err)
{
    struct msm_access_log *l = MSM_NEW(struct msm_access_log);
    if (p->filter) {
        l->filter = MSM_NEW(struct flt);
        if (flt_from_proto(p->filter, l->filter, 0, err) < 0) {
            msm_err_prefix(err, "filter");
            goto fail;
        }
    }
    if (p->config_type_case != ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG ||
        !p->typed_config) {
        msm_err_set(err, "typed_config: required (access logger '%s')", p->name);
        goto fail;
    }
    ProtobufCMessage *m = msm_pb_any_unpack(p->typed_config, NULL, NULL, err);
    if (!m) {
        msm_err_prefix(err, "typed_config");
        goto fail;
    }
    const char *type = m->descriptor->name;
    const char *path = NULL;
    if (!strcmp(type, "envoy.extensions.access_loggers.file.v3.FileAccessLog")) {
        const Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *fp = (const void *)m;
        l->fmt = file_formatter(fp, err);
        path = fp->path;
    } else if (!strcmp(type, "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog") ||
               !strcmp(type, "envoy.extensions.access_loggers.stream.v3.StderrAccessLog")) {
        const Envoy__Extensions__AccessLoggers__Stream__V3__StdoutAccessLog *sp = (const void *)m;
        l->fmt = sp->log_format ? sfs_formatter(sp->log_format, err)
                                : msm_al_formatter_text(NULL, false, err);
        path = strstr(type, "Stdout") ? "/dev/stdout" : "/dev/stderr";
    } else {
        msm_err_set(err, "access logger '%s' (%s) is not supported (file, stdout and stderr "
                         "are)", p->name, type);
        protobuf_c_message_free_unpacked(m, NULL);
        goto fail;
    }
    if (l->fmt) {
        l->file = msm_al_file_open(path, err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (!l->fmt || !l->file) {
        msm_err_prefix(err, "typed_config");
        goto fail;
    }
    return l;
fail:
    log_free(l);
    return NULL;
}

int msm_access_logs_build(void *const *protos, size_t n, struct msm_access_logs *out,
                          struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!n) {
        return 0;
    }
    out->v = msm_xcalloc(n, sizeof(*out->v));
    for (size_t i = 0; i < n; i++) {
        struct msm_access_log *l = log_from_proto(protos[i], err);
        if (!l) {
            msm_err_prefix(err, "access_log[%zu]", i);
            msm_access_logs_deinit(out);
            return MSM_EINVAL;
        }
        out->v[out->n++] = l;
    }
    return 0;
}

void msm_access_logs_deinit(struct msm_access_logs *l)
{
    for (int i = 0; i < l->n; i++) {
        log_free(l->v[i]);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void msm_access_logs_emit(const struct msm_access_logs *l, const struct msm_stream_info *si,
                          double now)
{
    struct msm_al_line line = {0};
    for (int i = 0; i < l->n; i++) {
        const struct msm_access_log *a = l->v[i];
        if (a->filter && !flt_eval(a->filter, si, now)) {
            continue;
        }
        msm_al_line_reset(&line);
        msm_al_format(a->fmt, si, now, &line);
        if (line.len) {
            msm_al_file_write(a->file, line.p, line.len);
        }
    }
    msm_al_line_free(&line);
}
