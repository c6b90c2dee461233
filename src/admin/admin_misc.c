/* /logging, /memory, /runtime, /certs and /drain_listeners. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/admin/v3/memory.pb-c.h"

#include "admin/admin_private.h"
#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "server/listener_manager.h"
#include "server/server.h"
#include "stats/flush.h"

/* ---- /logging -------------------------------------------------------------------------------
 * Envoy's LogsHandler: no parameter lists the loggers; ?level=<l> sets every logger;
 * ?<logger>=<l> sets one; ?paths=<a>:<l>,<b>:<l> sets several. Any error is a 404 with the
 * usage text, and the list follows in every case. Changes need POST. */

static void list_loggers(struct msm_buf *b)
{
    msm_buf_appendf(b, "active loggers:\n");
    for (int i = 0; i < MSM_LC_COUNT; i++) {
        msm_buf_appendf(b, "  %s: %s\n", msm_log_component_name((enum msm_log_component)i),
                        msm_log_level_name((enum msm_log_level)msm_log_levels[i]));
    }
    msm_buf_appendf(b, "\n");
}

/* Apply "name:level,name:level"; all-or-nothing. NULL on success, else the error. */
static const char *apply_paths(const char *paths)
{
    char *copy = msm_xstrdup(paths);
    int comps[MSM_LC_COUNT * 2], lvls[MSM_LC_COUNT * 2], n = 0;
    const char *res = NULL;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(t, ':');
        if (!colon || n >= (int)MSM_ARRAY_SIZE(comps)) {
            res = "invalid paths= value";
            goto out;
        }
        *colon = '\0';
        int c = msm_log_component_find(t), l = msm_log_level_parse(colon + 1);
        if (c < 0) {
            res = "unknown logger name";
            goto out;
        }
        if (l < 0) {
            res = "unknown logger level";
            goto out;
        }
        comps[n] = c;
        lvls[n] = l;
        n++;
    }
    if (!n) {
        res = "invalid paths= value";
        goto out;
    }
    for (int i = 0; i < n; i++) {
        msm_log_set((enum msm_log_component)comps[i], (enum msm_log_level)lvls[i]);
    }
out:
    free(copy);
    return res;
}

static const char *change_levels(const char *query)
{
    int n = msm_admin_query_count(query);
    if (n != 1) {
        return "invalid number of parameters";
    }
    char key[128], val[512];
    msm_admin_query_at(query, 0, key, sizeof(key), val, sizeof(val));
    if (!strcmp(key, "paths")) {
        return apply_paths(val);
    }
    int l = msm_log_level_parse(val);
    if (!strcmp(key, "level")) {
        if (l < 0) {
            return "unknown logger level";
        }
        msm_log_set_all((enum msm_log_level)l);
        return NULL;
    }
    int c = msm_log_component_find(key);
    if (c < 0) {
        return "unknown logger name";
    }
    if (l < 0) {
        return "unknown logger level";
    }
    msm_log_set((enum msm_log_component)c, (enum msm_log_level)l);
    return NULL;
}

void msm_admin_logging(struct msm_server *srv, const struct msm_admin_req *rq,
                       struct msm_admin_resp *rs)
{
    (void)srv;
    bool has_params = msm_admin_query_count(rq->query) > 0;
    if (has_params && strcmp(rq->method, "POST") != 0) {
        rs->status = 405;
        msm_buf_appendf(&rs->body, "Method %s not allowed, POST required.\n", rq->method);
        return;
    }
    rs->status = 200;
    if (has_params) {
        const char *e = change_levels(rq->query);
        if (e) {
            rs->status = 404;
            msm_buf_appendf(&rs->body,
                            "error: %s\n\nusage: /logging?<name>=<level> (change single level)\n"
                            "usage: /logging?paths=name1:level1,name2:level2,... (change "
                            "multiple levels)\nusage: /logging?level=<level> (change all "
                            "levels)\nlevels: trace debug info warning error critical off \n",
                            e);
        } else {
            msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "log levels changed by admin: %s", rq->query);
        }
    }
    list_loggers(&rs->body);
}

/* ---- /memory -------------------------------------------------------------------------------- */

void msm_admin_memory(struct msm_server *srv, const struct msm_admin_req *rq,
                      struct msm_admin_resp *rs)
{
    (void)srv;
    (void)rq;
    struct msm_memory_usage u;
    msm_memory_usage(&u);
    Envoy__Admin__V3__Memory m = ENVOY__ADMIN__V3__MEMORY__INIT;
    m.allocated = u.allocated;
    m.heap_size = u.heap_size;
    m.pageheap_unmapped = u.pageheap_unmapped;
    m.pageheap_free = u.pageheap_free;
    m.total_thread_cache = u.thread_cache;
    m.total_physical_bytes = u.physical;
    struct msm_pbjson_enc_opts eo = {.always_print_primitive_fields = true};
    struct msm_err err;
    char *text = msm_pbjson_encode_text(&m.base, &eo, true, &err);
    if (!text) {
        rs->status = 500;
        msm_buf_appendf(&rs->body, "%s\n", err.msg);
        return;
    }
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    rs->status = 200;
}

/* ---- /runtime ------------------------------------------------------------------------------- *
 * {"entries": {key: {"final_value", "layer_values": [one per layer, "" when absent]}},
 *  "layers": [names]} from the bootstrap's layered_runtime (static layers carry values; admin,
 * disk and RTDS layers have none here). Static layer Structs are flattened with '.' as Envoy
 * does. */

static char *value_string(const Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: return msm_xstrdup(v->string_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return msm_xstrdup(v->bool_value ? "true" : "false");
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE: {
        char tmp[64];
        double d = v->number_value;
        if (d == (double)(long long)d) {
            snprintf(tmp, sizeof(tmp), "%lld", (long long)d);
        } else {
            snprintf(tmp, sizeof(tmp), "%g", d);
        }
        return msm_xstrdup(tmp);
    }
    default: return NULL;
    }
}

/* entries[key].layer_values[layer] = value, for every leaf of <st>. */
static void walk_layer(json_t *entries, const Google__Protobuf__Struct *st, const char *prefix,
                       int layer, int nlayers, int depth)
{
    for (size_t i = 0; st && i < st->n_fields && depth < 32; i++) {
        const Google__Protobuf__Struct__FieldsEntry *f = st->fields[i];
        char *key = prefix[0] ? msm_xasprintf("%s.%s", prefix, f->key) : msm_xstrdup(f->key);
        const Google__Protobuf__Value *v = f->value;
        if (v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE) {
            walk_layer(entries, v->struct_value, key, layer, nlayers, depth + 1);
            free(key);
            continue;
        }
        char *s = v ? value_string(v) : NULL;
        if (s) {
            json_t *e = json_object_get(entries, key);
            if (!e) {
                e = json_object();
                json_t *lv = json_array();
                for (int k = 0; k < nlayers; k++) {
                    json_array_append_new(lv, json_string(""));
                }
                json_object_set_new(e, "final_value", json_string(""));
                json_object_set_new(e, "layer_values", lv);
                json_object_set_new(entries, key, e);
            }
            json_array_set_new(json_object_get(e, "layer_values"), (size_t)layer,
                               json_string(s));
            json_object_set_new(e, "final_value", json_string(s));
            free(s);
        }
        free(key);
    }
}

void msm_admin_runtime(struct msm_server *srv, const struct msm_admin_req *rq,
                       struct msm_admin_resp *rs)
{
    (void)rq;
    const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr = srv->bootstrap->layered_runtime;
    json_t *layers = json_array();
    json_t *entries = json_object();
    if (!lr) {
        json_array_append_new(layers, json_string("base"));
        json_array_append_new(layers, json_string("admin"));
    }
    int nl = lr ? (int)lr->n_layers : 0;
    for (int i = 0; i < nl; i++) {
        json_array_append_new(layers, json_string(lr->layers[i]->name ? lr->layers[i]->name
                                                                      : ""));
    }
    for (int i = 0; i < nl; i++) {
        const Envoy__Config__Bootstrap__V3__RuntimeLayer *l = lr->layers[i];
        if (l->layer_specifier_case ==
            ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_STATIC_LAYER) {
            walk_layer(entries, l->static_layer, "", i, nl, 0);
        }
    }
    /* Sorted keys: jansson keeps insertion order, so rebuild. */
    size_t n = json_object_size(entries);
    const char **keys = msm_xcalloc(n + 1, sizeof(char *));
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(entries, key, v) {
        keys[k++] = key;
    }
    for (size_t a = 1; a < k; a++) {
        for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *t = keys[b];
            keys[b] = keys[b - 1];
            keys[b - 1] = t;
        }
    }
    json_t *sorted = json_object();
    for (size_t i = 0; i < k; i++) {
        json_object_set(sorted, keys[i], json_object_get(entries, keys[i]));
    }
    free(keys);
    json_t *root = json_object();
    json_object_set_new(root, "entries", sorted);
    json_object_set_new(root, "layers", layers);
    json_decref(entries);
    char *text = msm_pbjson_dumps(root, true);
    json_decref(root);
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    rs->status = 200;
}

/* ---- /certs --------------------------------------------------------------------------------- */

void msm_admin_certs(struct msm_server *srv, const struct msm_admin_req *rq,
                     struct msm_admin_resp *rs)
{
    (void)srv;
    (void)rq;
    json_t *certs = json_array();
    msm_admin_get_certs(certs);
    json_t *root = json_object();
    json_object_set_new(root, "certificates", certs);
    char *text = msm_pbjson_dumps(root, true);
    json_decref(root);
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    rs->status = 200;
}

/* ---- /drain_listeners -----------------------------------------------------------------------
 * Envoy's ListenersHandler::handlerDrainListeners:
 * - no ?graceful: stop the listeners now (?inboundonly: only traffic_direction INBOUND); the
 *   process keeps running, existing connections go on;
 * - ?graceful: the server enters DRAINING (server.state 1, /ready 503) and the listeners are
 *   stopped after --drain-time-s, unless ?skip_exit; a second call while draining is ignored;
 * - ?skip_exit without ?graceful is a 400.
 * Nothing here exits the process: pilot-agent sends SIGTERM/SIGKILL itself. */

static struct {
    ev_timer timer;
    struct msm_server *srv;
    bool active, inbound_only;
} drain;

static void stop_listeners(struct msm_server *srv, bool inbound_only)
{
    int n = msm_lm_stop_listeners(srv->lmgr, inbound_only);
    msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "admin: stopped %d %slistener(s)", n,
            inbound_only ? "inbound " : "");
    if (srv->state == MSM_STATE_LIVE || srv->state == MSM_STATE_DRAINING) {
        msm_server_publish(srv);
    }
}

static void on_drain_done(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    drain.active = false;
    msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "admin: graceful drain period over");
    stop_listeners(drain.srv, drain.inbound_only);
}

void msm_admin_drain_stop(struct msm_server *srv)
{
    if (drain.active && drain.srv == srv) {
        ev_timer_stop(srv->loop, &drain.timer);
        drain.active = false;
    }
}

void msm_admin_drain_listeners(struct msm_server *srv, const struct msm_admin_req *rq,
                               struct msm_admin_resp *rs)
{
    bool inbound = msm_admin_query_param(rq->query, "inboundonly", NULL, 0);
    bool graceful = msm_admin_query_param(rq->query, "graceful", NULL, 0);
    bool skip_exit = msm_admin_query_param(rq->query, "skip_exit", NULL, 0);
    if (skip_exit && !graceful) {
        msm_buf_appendf(&rs->body, "skip_exit requires graceful\n");
        rs->status = 400;
        return;
    }
    if (!graceful) {
        stop_listeners(srv, inbound);
    } else if (srv->state != MSM_STATE_DRAINING && !drain.active) {
        msm_server_set_draining(srv);
        if (!skip_exit) {
            drain.srv = srv;
            drain.inbound_only = inbound;
            drain.active = true;
            ev_timer_init(&drain.timer, on_drain_done, (double)srv->opts->drain_time_s, 0);
            ev_timer_start(srv->loop, &drain.timer);
        }
        msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "admin: graceful drain of %s listeners started "
                "(%us%s)", inbound ? "inbound" : "all", srv->opts->drain_time_s,
                skip_exit ? ", listeners kept" : "");
    }
    msm_buf_appendf(&rs->body, "OK\n");
    rs->status = 200;
}
