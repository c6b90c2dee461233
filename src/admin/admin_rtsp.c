/* /rtsp/sessions: the live RTSP sessions as JSON, {"sessions": [...]}, one object per client
 * session and per upstream session (id, role, stream, address, transport, age, counters), from
 * the provider the RTSP proxy installs (filters/network/rtsp_proxy/rtsp_metrics.c). No
 * provider (no RTSP proxy configured yet): an empty list. ?role=client|upstream and
 * ?stream=<name> keep the matching sessions only. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_private.h"

static msm_admin_sessions_fn *sessions_fn;
static void *sessions_arg;

void msm_admin_set_rtsp_sessions_provider(msm_admin_sessions_fn *fn, void *arg)
{
    sessions_fn = fn;
    sessions_arg = arg;
}

/* Keep the entries of <all> whose string member <key> equals <want>. */
static void filter_by(json_t *all, const char *key, const char *want)
{
    for (size_t i = json_array_size(all); i-- > 0;) {
        const char *v = json_string_value(json_object_get(json_array_get(all, i), key));
        if (!v || strcmp(v, want) != 0) {
            json_array_remove(all, i);
        }
    }
}

void msm_admin_rtsp_sessions(struct msm_server *srv, const struct msm_admin_req *rq,
                             struct msm_admin_resp *rs)
{
    (void)srv;
    json_t *list = json_array();
    if (sessions_fn) {
        sessions_fn(sessions_arg, list);
    }
    char val[256];
    if (msm_admin_query_param(rq->query, "role", val, sizeof(val))) {
        filter_by(list, "role", val);
    }
    if (msm_admin_query_param(rq->query, "stream", val, sizeof(val))) {
        filter_by(list, "stream", val);
    }
    json_t *root = json_object();
    json_object_set_new(root, "sessions", list);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text) {
        rs->status = 500;
        msm_buf_appendf(&rs->body, "cannot encode the sessions\n");
        return;
    }
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    rs->status = 200;
}
