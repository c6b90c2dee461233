/* /stats (text, ?format=json|prometheus, ?usedonly, ?filter=<regex>, ?type=,
 * ?histogram_buckets=), /stats/prometheus (?usedonly, ?filter, ?text_readouts) and
 * /reset_counters. Parameter errors are 400 with Envoy's messages. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_private.h"
#include "admin/stats_render.h"
#include "common/alloc.h"
#include "server/server.h"

/* Parse the query into <q>; 0, or a negative value after writing a 400 into <rs>. The filter
 * regex is compiled into q->filter (free with pcre2_code_free). */
static int parse_query(const struct msm_admin_req *rq, struct msm_stats_query *q,
                       struct msm_admin_resp *rs)
{
    memset(q, 0, sizeof(*q));
    q->types = MSM_SR_ALL;
    char *val = msm_xmalloc(MSM_ADMIN_MAX_PARAM);
    int rc = 0;
    q->usedonly = msm_admin_query_param(rq->query, "usedonly", NULL, 0);
    q->text_readouts = msm_admin_query_param(rq->query, "text_readouts", NULL, 0);
    int got = msm_admin_query_get(rq->query, "type", val, MSM_ADMIN_MAX_PARAM);
    if (got == 1) {
        static const struct {
            const char *name;
            unsigned bits;
        } types[] = {{"All", MSM_SR_ALL},
                     {"Counters", MSM_SR_COUNTERS},
                     {"Gauges", MSM_SR_GAUGES},
                     {"Histograms", MSM_SR_HISTOGRAMS},
                     {"TextReadouts", MSM_SR_TEXT}};
        q->types = 0;
        for (size_t i = 0; i < MSM_ARRAY_SIZE(types); i++) {
            if (!strcmp(val, types[i].name)) {
                q->types = types[i].bits;
            }
        }
        if (!q->types) {
            msm_buf_appendf(&rs->body, "invalid &type= param: '%s'; usage: "
                                       "type=(All|Counters|Gauges|Histograms|TextReadouts)\n",
                            val);
            rc = -1;
            goto out;
        }
    }
    got = msm_admin_query_get(rq->query, "histogram_buckets", val, MSM_ADMIN_MAX_PARAM);
    if (got == 1) {
        if (!strcmp(val, "cumulative")) {
            q->buckets = MSM_SR_BUCKETS_CUMULATIVE;
        } else if (!strcmp(val, "disjoint")) {
            q->buckets = MSM_SR_BUCKETS_DISJOINT;
        } else if (strcmp(val, "none") != 0 && strcmp(val, "unset") != 0) {
            msm_buf_appendf(&rs->body, "usage: /stats?histogram_buckets=(cumulative|disjoint|"
                                       "none)\n");
            rc = -1;
            goto out;
        }
    }
    got = msm_admin_query_get(rq->query, "filter", val, MSM_ADMIN_MAX_PARAM);
    if (got == MSM_ELIMIT) {
        msm_buf_appendf(&rs->body, "filter= is longer than %d bytes\n", MSM_ADMIN_MAX_PARAM);
        rc = -1;
        goto out;
    }
    if (got == 1 && val[0]) {
        /* Envoy: an RE2 regex matched anywhere in the full stat name. */
        int ec;
        PCRE2_SIZE eo;
        q->filter = pcre2_compile((PCRE2_SPTR)val, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo,
                                  NULL);
        if (!q->filter) {
            msm_buf_appendf(&rs->body, "Invalid re2 regex\n");
            rc = -1;
            goto out;
        }
        pcre2_jit_compile(q->filter, PCRE2_JIT_COMPLETE);
    }
out:
    free(val);
    if (rc < 0) {
        rs->status = 400;
    }
    return rc;
}

/* A streamed render: owns the query's compiled filter. */
struct stats_stream {
    struct msm_stats_render *r;
    pcre2_code *filter;
};

static bool stream_next(void *ctx, struct msm_buf *out, size_t hint)
{
    struct stats_stream *ss = ctx;
    return msm_stats_render_next(ss->r, out, hint);
}

static void stream_free(void *ctx)
{
    struct stats_stream *ss = ctx;
    msm_stats_render_free(ss->r);
    pcre2_code_free(ss->filter);
    free(ss);
}

static const struct msm_admin_stream_ops stats_stream_ops = {
    .next = stream_next,
    .free = stream_free,
};

/* Answer 200 with a streamed render of <q> (takes its filter). */
static void stream(struct msm_server *srv, struct msm_stats_query *q, enum msm_sr_format fmt,
                   struct msm_admin_resp *rs)
{
    struct stats_stream *ss = MSM_NEW(struct stats_stream);
    ss->filter = q->filter;
    q->filter = NULL;
    struct msm_stats_query sq = *q;
    sq.filter = ss->filter;
    ss->r = msm_stats_render_new(srv->stats, &sq, fmt);
    rs->stream = &stats_stream_ops;
    rs->stream_ctx = ss;
    rs->status = 200;
}

static void prometheus(struct msm_server *srv, struct msm_stats_query *q,
                       struct msm_admin_resp *rs)
{
    stream(srv, q, MSM_SR_FMT_PROMETHEUS, rs);
    rs->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

void msm_admin_stats(struct msm_server *srv, const struct msm_admin_req *rq,
                     struct msm_admin_resp *rs)
{
    struct msm_stats_query q;
    if (parse_query(rq, &q, rs) < 0) {
        return;
    }
    char fmt[32] = "text";
    if (msm_admin_query_get(rq->query, "format", fmt, sizeof(fmt)) < 0) {
        fmt[0] = '?';
    }
    if (!strcmp(fmt, "json")) {
        stream(srv, &q, MSM_SR_FMT_JSON, rs);
        rs->content_type = "application/json";
    } else if (!strcmp(fmt, "prometheus")) {
        prometheus(srv, &q, rs);
    } else if (!strcmp(fmt, "text") || !strcmp(fmt, "html") || !strcmp(fmt, "active-html")) {
        stream(srv, &q, MSM_SR_FMT_TEXT, rs);
    } else {
        msm_buf_appendf(&rs->body, "usage: /stats?format=(html|active-html|json|prometheus|"
                                   "text)\n");
        rs->status = 400;
    }
    pcre2_code_free(q.filter);
}

void msm_admin_stats_prometheus(struct msm_server *srv, const struct msm_admin_req *rq,
                                struct msm_admin_resp *rs)
{
    struct msm_stats_query q;
    if (parse_query(rq, &q, rs) < 0) {
        return;
    }
    prometheus(srv, &q, rs);
    pcre2_code_free(q.filter);
}

void msm_admin_reset_counters(struct msm_server *srv, const struct msm_admin_req *rq,
                              struct msm_admin_resp *rs)
{
    (void)rq;
    msm_stats_reset_counters(srv->stats);
    msm_buf_appendf(&rs->body, "OK\n");
    rs->status = 200;
}
