/* The admin server: HTTP/1.1 connections (http_parser), request limits and timeouts, the
 * endpoint table and the small endpoints. Bigger endpoints live in admin_stats.c,
 * admin_clusters.c, admin_misc.c and config_dump.c. */
#include "admin/admin.h"
#include "admin/admin_private.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"
#include "config/pbutil.h"
#include "envoy/admin/v3/server_info.pb-c.h"
#include "event/deferred.h"
#include "net/conn.h"
#include "server/server.h"

#define MAX_URL 8192
#define MAX_HEADERS (64 * 1024)
#define MAX_BODY (1024 * 1024)
#define OUT_HIGH_WATERMARK (1024 * 1024)

struct admin_conn;

struct msm_admin {
    struct msm_server *srv;
    int fd;
    struct msm_address addr;
    ev_io io;
    struct admin_conn *conns;
    int n_conns;
    double request_timeout, idle_timeout, write_timeout; /* seconds */
    bool no_stream; /* test hook: render streamed responses at once (content-length) */
};

struct admin_conn {
    struct admin_conn *next, *prev;
    struct msm_admin *a;
    struct msm_conn *c;
    http_parser p;
    ev_timer timer;
    char *url;
    size_t url_len;
    size_t header_bytes;
    char *body;
    size_t body_len;
    int error_status; /* a limit was hit: answer this and close */
    bool in_request; /* bytes of a request seen, not complete yet */
    bool complete, keep_alive, closing;
    double request_start, last_activity, last_progress;
    size_t last_out_len;
    /* A streamed response in progress: reading (and parsing pipelined requests) waits. */
    const struct msm_admin_stream_ops *stream;
    void *stream_ctx;
    bool chunked;  /* HTTP/1.1 client: chunked transfer-encoding, else close at the end */
    bool peer_eof; /* the client's FIN came while streaming */
    ev_idle stream_idle;
};

/* ---- query strings ------------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decode <n> bytes of <s>; false when the result does not fit in <cap> (it is truncated). A
 * malformed %-escape is kept literally, as Envoy does. */
static bool url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    if (!cap) {
        return n == 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (k + 1 >= cap) {
            out[k] = '\0';
            return false;
        }
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (s[i] == '+') {
            out[k++] = ' ';
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return true;
}

/* The <i>th "key[=value]" segment of <query>: start and length; false past the end. */
static bool segment(const char *query, int i, const char **seg, size_t *len)
{
    const char *p = query;
    int k = 0;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t l = amp ? (size_t)(amp - p) : strlen(p);
        if (l) {
            if (k == i) {
                *seg = p;
                *len = l;
                return true;
            }
            k++;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

int msm_admin_query_count(const char *query)
{
    int n = 0;
    const char *seg;
    size_t len;
    while (segment(query, n, &seg, &len)) {
        n++;
    }
    return n;
}

bool msm_admin_query_at(const char *query, int i, char *key, size_t kn, char *val, size_t vn)
{
    const char *seg;
    size_t len;
    if (!segment(query, i, &seg, &len)) {
        return false;
    }
    const char *eq = memchr(seg, '=', len);
    size_t klen = eq ? (size_t)(eq - seg) : len;
    url_decode(seg, klen, key, kn);
    if (eq) {
        url_decode(eq + 1, len - klen - 1, val, vn);
    } else if (vn) {
        val[0] = '\0';
    }
    return true;
}

int msm_admin_query_get(const char *query, const char *name, char *val, size_t n)
{
    const char *seg;
    size_t len;
    for (int i = 0; segment(query, i, &seg, &len); i++) {
        const char *eq = memchr(seg, '=', len);
        size_t klen = eq ? (size_t)(eq - seg) : len;
        char key[256];
        if (!url_decode(seg, klen, key, sizeof(key)) || strcmp(key, name) != 0) {
            continue;
        }
        if (val && n) {
            if (!eq) {
                val[0] = '\0';
            } else if (!url_decode(eq + 1, len - klen - 1, val, n)) {
                return MSM_ELIMIT;
            }
        }
        return 1;
    }
    return 0;
}

bool msm_admin_query_param(const char *query, const char *name, char *val, size_t n)
{
    return msm_admin_query_get(query, name, val, n) != 0;
}

/* ---- certificates provider ------------------------------------------------------------------ */

static msm_admin_certs_fn *certs_fn;
static void *certs_arg;

void msm_admin_set_certs_provider(msm_admin_certs_fn *fn, void *arg)
{
    certs_fn = fn;
    certs_arg = arg;
}

void msm_admin_get_certs(json_t *certificates)
{
    if (certs_fn) {
        certs_fn(certs_arg, certificates);
    }
}

/* ---- small handlers ------------------------------------------------------------------------- */

static void h_ready(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs)
{
    (void)rq;
    rs->status = srv->state == MSM_STATE_LIVE ? 200 : 503;
    msm_buf_appendf(&rs->body, "%s\n", msm_server_state_name(srv->state));
}

static Google__Protobuf__Duration *dur(Google__Protobuf__Duration *d, double secs)
{
    google__protobuf__duration__init(d);
    d->seconds = (int64_t)secs;
    d->nanos = (int32_t)((secs - (double)d->seconds) * 1e9);
    return d;
}

/* envoy.admin.v3.ServerInfo, printed through the proto3 JSON codec like every admin output. */
static void h_server_info(struct msm_server *srv, const struct msm_admin_req *rq,
                          struct msm_admin_resp *rs)
{
    (void)rq;
    const struct msm_options *o = srv->opts;
    double up = ev_now(srv->loop) - srv->start_time;
    Google__Protobuf__Duration d_up, d_all, d_drain, d_parent, d_flush;
    Envoy__Admin__V3__CommandLineOptions cl = ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__INIT;
    cl.base_id = o->base_id;
    cl.use_dynamic_base_id = o->use_dynamic_base_id;
    cl.concurrency = o->concurrency;
    cl.config_path = o->config_path ? o->config_path : "";
    cl.config_yaml = o->config_yaml ? o->config_yaml : "";
    cl.allow_unknown_static_fields = o->allow_unknown_static_fields;
    cl.reject_unknown_dynamic_fields = o->reject_unknown_dynamic_fields;
    cl.ignore_unknown_dynamic_fields = o->ignore_unknown_dynamic_fields;
    cl.admin_address_path = o->admin_address_path ? o->admin_address_path : "";
    cl.local_address_ip_version = o->local_address_ip_version == MSM_IP_V6
                                      ? ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__IP_VERSION__v6
                                      : ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__IP_VERSION__v4;
    cl.log_level = (char *)msm_log_level_name((enum msm_log_level)o->log_level);
    cl.component_log_level = o->component_log_level ? o->component_log_level : "";
    cl.log_format = o->log_format ? o->log_format : MSM_LOG_DEFAULT_FORMAT;
    cl.log_format_escaped = o->log_format_escaped;
    cl.log_path = o->log_path ? o->log_path : "";
    cl.service_cluster = o->service_cluster ? o->service_cluster : "";
    cl.service_node = o->service_node ? o->service_node : "";
    cl.service_zone = o->service_zone ? o->service_zone : "";
    cl.file_flush_interval = dur(&d_flush, o->file_flush_interval_msec / 1000.0);
    cl.drain_time = dur(&d_drain, o->drain_time_s);
    cl.drain_strategy = o->drain_strategy == MSM_DRAIN_IMMEDIATE
                            ? ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__DRAIN_STRATEGY__Immediate
                            : ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__DRAIN_STRATEGY__Gradual;
    cl.parent_shutdown_time = dur(&d_parent, o->parent_shutdown_time_s);
    cl.mode = o->mode == MSM_MODE_VALIDATE    ? ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__MODE__Validate
              : o->mode == MSM_MODE_INIT_ONLY ? ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__MODE__InitOnly
                                              : ENVOY__ADMIN__V3__COMMAND_LINE_OPTIONS__MODE__Serve;
    cl.disable_hot_restart = o->disable_hot_restart;
    cl.restart_epoch = o->restart_epoch;
    cl.cpuset_threads = o->cpuset_threads;
    cl.enable_core_dump = o->enable_core_dump;
    Envoy__Admin__V3__ServerInfo si = ENVOY__ADMIN__V3__SERVER_INFO__INIT;
    char version[64];
    snprintf(version, sizeof(version), "msm-proxy/%s/RELEASE/OpenSSL", MSM_VERSION);
    si.version = version;
    si.state = (Envoy__Admin__V3__ServerInfo__State)srv->state;
    si.uptime_current_epoch = dur(&d_up, (double)(int64_t)up);
    si.uptime_all_epochs = dur(&d_all, (double)(int64_t)up);
    si.hot_restart_version = "disabled";
    si.command_line_options = &cl;
    si.node = srv->bootstrap->node; /* borrowed */
    struct msm_err err;
    /* Envoy prints /server_info with default values (state LIVE is enum value 0). */
    struct msm_pbjson_enc_opts eo = {.always_print_primitive_fields = true};
    char *text = msm_pbjson_encode_text(&si.base, &eo, true, &err);
    if (!text) {
        rs->status = 500;
        msm_buf_appendf(&rs->body, "cannot encode server_info: %s\n", err.msg);
        return;
    }
    msm_buf_append(&rs->body, text, strlen(text));
    msm_buf_append(&rs->body, "\n", 1);
    free(text);
    rs->content_type = "application/json";
    rs->status = 200;
}

static void h_quit(struct msm_server *srv, const struct msm_admin_req *rq,
                   struct msm_admin_resp *rs)
{
    (void)rq;
    msm_buf_appendf(&rs->body, "OK\n");
    rs->status = 200;
    msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "shutting down from admin handle");
    msm_server_shutdown(srv, true);
}

static void h_healthcheck(struct msm_server *srv, const struct msm_admin_req *rq,
                          struct msm_admin_resp *rs)
{
    srv->healthcheck_failed = !strcmp(rq->path, "/healthcheck/fail");
    msm_buf_appendf(&rs->body, "OK\n");
    rs->status = 200;
}

static void h_index(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs);
static void h_help(struct msm_server *srv, const struct msm_admin_req *rq,
                   struct msm_admin_resp *rs);

enum method_rule {
    M_ANY = 0,  /* GET, HEAD or POST */
    M_POST = 1, /* mutates server state: POST only, as Envoy */
};

struct endpoint {
    const char *path;
    const char *help;
    enum method_rule rule;
    msm_admin_handler *fn;
};

static const struct endpoint endpoints[] = {
    {"/", "Admin home page", M_ANY, h_index},
    {"/certs", "print certs on machine", M_ANY, msm_admin_certs},
    {"/clusters", "upstream cluster status", M_ANY, msm_admin_clusters},
    {"/config_dump", "dump current Envoy configs (experimental)", M_ANY, msm_admin_config_dump},
    {"/drain_listeners", "drain listeners", M_POST, msm_admin_drain_listeners},
    {"/healthcheck/fail", "cause the server to fail health checks", M_POST, h_healthcheck},
    {"/healthcheck/ok", "cause the server to pass health checks", M_POST, h_healthcheck},
    {"/help", "print out list of admin commands", M_ANY, h_help},
    {"/listeners", "print listener info", M_ANY, msm_admin_listeners},
    {"/logging", "query/change logging levels", M_ANY, msm_admin_logging},
    {"/memory", "print current allocation/heap usage", M_ANY, msm_admin_memory},
    {"/quitquitquit", "exit the server", M_POST, h_quit},
    {"/ready", "print server state, return 200 if LIVE, otherwise return 503", M_ANY, h_ready},
    {"/reset_counters", "reset all counters to zero", M_POST, msm_admin_reset_counters},
    {"/rtsp/sessions", "live RTSP sessions with their media counters (JSON)", M_ANY,
     msm_admin_rtsp_sessions},
    {"/runtime", "print runtime values", M_ANY, msm_admin_runtime},
    {"/server_info", "print server version/status information", M_ANY, h_server_info},
    {"/stats", "print server stats", M_ANY, msm_admin_stats},
    {"/stats/prometheus", "print server stats in prometheus format", M_ANY,
     msm_admin_stats_prometheus},
};

static void list_endpoints(struct msm_buf *b)
{
    msm_buf_appendf(b, "admin commands are:\n");
    for (size_t i = 0; i < MSM_ARRAY_SIZE(endpoints); i++) {
        msm_buf_appendf(b, "  %s: %s\n", endpoints[i].path, endpoints[i].help);
    }
}

static void h_help(struct msm_server *srv, const struct msm_admin_req *rq,
                   struct msm_admin_resp *rs)
{
    (void)srv;
    (void)rq;
    list_endpoints(&rs->body);
    rs->status = 200;
}

/* The home page: links for the read-only endpoints, forms for the POST ones. */
static void h_index(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs)
{
    (void)srv;
    (void)rq;
    msm_buf_appendf(&rs->body, "<!DOCTYPE html>\n<html><head><title>msm-proxy admin</title>"
                               "</head><body>\n<h1>msm-proxy admin</h1>\n<table>\n");
    for (size_t i = 1; i < MSM_ARRAY_SIZE(endpoints); i++) {
        const struct endpoint *e = &endpoints[i];
        if (e->rule == M_POST) {
            msm_buf_appendf(&rs->body, "<tr><td><form action=\"%s\" method=\"post\"><button>%s"
                                       "</button></form></td><td>%s</td></tr>\n",
                            e->path + 1, e->path, e->help);
        } else {
            msm_buf_appendf(&rs->body, "<tr><td><a href=\"%s\">%s</a></td><td>%s</td></tr>\n",
                            e->path + 1, e->path, e->help);
        }
    }
    msm_buf_appendf(&rs->body, "</table>\n</body></html>\n");
    rs->content_type = "text/html; charset=UTF-8";
    rs->status = 200;
}

void msm_admin_handle(struct msm_server *srv, const struct msm_admin_req *rq,
                      struct msm_admin_resp *rs)
{
    for (size_t i = 0; i < MSM_ARRAY_SIZE(endpoints); i++) {
        const struct endpoint *e = &endpoints[i];
        if (strcmp(e->path, rq->path) != 0) {
            continue;
        }
        bool get = !strcmp(rq->method, "GET") || !strcmp(rq->method, "HEAD");
        bool post = !strcmp(rq->method, "POST");
        if ((e->rule == M_POST && !post) || (e->rule == M_ANY && !get && !post)) {
            rs->status = 405;
            msm_buf_appendf(&rs->body, "Method %s not allowed, %s required.\n", rq->method,
                            e->rule == M_POST ? "POST" : "GET");
            return;
        }
        e->fn(srv, rq, rs);
        return;
    }
    rs->status = 404;
    msm_buf_appendf(&rs->body, "invalid path. ");
    list_endpoints(&rs->body);
}

/* ---- HTTP/1.1 connections ------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void ac_reset(struct admin_conn *ac)
{
    free(ac->url);
    free(ac->body);
    ac->url = ac->body = NULL;
    ac->url_len = ac->body_len = 0;
    ac->header_bytes = 0;
    ac->complete = false;
    ac->in_request = false;
}

static void ac_free(void *p)
{
    struct admin_conn *ac = p;
    ac_reset(ac);
    free(ac);
}

static int on_begin(http_parser *p)
{
    struct admin_conn *ac = p->data;
    ac->in_request = true;
    ac->request_start = ev_now(ac->a->srv->loop);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->url_len + len > MAX_URL) {
        ac->error_status = 414;
        return 1;
    }
    ac->url = msm_xrealloc(ac->url, ac->url_len + len + 1);
    memcpy(ac->url + ac->url_len, at, len);
    ac->url_len += len;
    ac->url[ac->url_len] = '\0';
    return 0;
}

static int on_header_bytes(http_parser *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    (void)at;
    ac->header_bytes += len;
    if (ac->header_bytes > MAX_HEADERS) {
        ac->error_status = 431;
        return 1;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct admin_conn *ac = p->data;
    if (p->content_length != ULLONG_MAX && p->content_length > MAX_BODY) {
        ac->error_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->body_len + len > MAX_BODY) {
        ac->error_status = 413;
        return 1;
    }
    ac->body = msm_xrealloc(ac->body, ac->body_len + len + 1);
    memcpy(ac->body + ac->body_len, at, len);
    ac->body_len += len;
    ac->body[ac->body_len] = '\0';
    return 0;
}

static int on_complete(http_parser *p)
{
    struct admin_conn *ac = p->data;
    ac->complete = true;
    ac->in_request = false;
    ac->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_begin,
    .on_url = on_url,
    .on_header_field = on_header_bytes,
    .on_header_value = on_header_bytes,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

void msm_admin_resp_finish(struct msm_admin_resp *rs)
{
    if (!rs->stream) {
        return;
    }
    while (rs->stream->next(rs->stream_ctx, &rs->body, SIZE_MAX)) {
    }
    rs->stream->free(rs->stream_ctx);
    rs->stream = NULL;
    rs->stream_ctx = NULL;
}

/* Append <part> to <out> as one chunk (or as is without chunking); empties <part>. */
static void put_chunk(struct admin_conn *ac, struct msm_buf *out, struct msm_buf *part)
{
    if (!part->len) {
        return;
    }
    if (ac->chunked) {
        msm_buf_appendf(out, "%zx\r\n", part->len);
    }
    msm_buf_move(out, part);
    if (ac->chunked) {
        msm_buf_append(out, "\r\n", 2);
    }
}

static void process(struct admin_conn *ac, bool end_stream);

/* The stream is complete (or abandoned): release it and go back to reading requests. */
static void stream_end(struct admin_conn *ac)
{
    ev_idle_stop(ac->a->srv->loop, &ac->stream_idle);
    ac->stream->free(ac->stream_ctx);
    ac->stream = NULL;
    ac->stream_ctx = NULL;
    if (!ac->c || ac->closing) {
        return;
    }
    msm_conn_read_disable(ac->c, false);
    if (!ac->keep_alive || !ac->chunked) {
        ac->closing = true;
        msm_conn_close(ac->c, MSM_CLOSE_FLUSH);
        return;
    }
    process(ac, ac->peer_eof); /* pipelined requests that waited */
}

/* One slice of a streamed response per loop iteration, while the output is below the high
 * watermark (on_watermark restarts it). */
static void on_stream_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct admin_conn *ac = MSM_CONTAINER_OF(w, struct admin_conn, stream_idle);
    if (!ac->c || ac->closing || (ac->c->flags & MSM_CONN_F_ABOVE_WM)) {
        ev_idle_stop(loop, w);
        return;
    }
    struct msm_buf part, out;
    msm_buf_init(&part);
    msm_buf_init(&out);
    bool more = ac->stream->next(ac->stream_ctx, &part, MSM_ADMIN_STREAM_SLICE);
    put_chunk(ac, &out, &part);
    if (!more && ac->chunked) {
        msm_buf_append(&out, "0\r\n\r\n", 5);
    }
    if (out.len) {
        msm_conn_write(ac->c, &out, false);
    }
    msm_buf_deinit(&out);
    msm_buf_deinit(&part);
    if (!ac->stream || !ac->c) {
        return; /* the write failed and closed the connection (stream_end ran) */
    }
    if (!more) {
        stream_end(ac);
    } else if (ac->c->flags & MSM_CONN_F_ABOVE_WM) {
        ev_idle_stop(loop, w);
    }
}

static void respond(struct admin_conn *ac, struct msm_admin_resp *rs, bool head)
{
    if (rs->stream && (head || ac->a->no_stream)) {
        msm_admin_resp_finish(rs);
    }
    bool streamed = rs->stream != NULL;
    ac->chunked = streamed && ac->p.http_major == 1 && ac->p.http_minor >= 1;
    if (streamed && !ac->chunked) {
        ac->keep_alive = false; /* HTTP/1.0: the end of the body is the end of the connection */
    }
    struct msm_buf out;
    msm_buf_init(&out);
    msm_buf_appendf(&out,
                    "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncache-control: no-cache, max-age=0\r\n"
                    "x-content-type-options: nosniff\r\n",
                    rs->status, reason(rs->status),
                    rs->content_type ? rs->content_type : "text/plain; charset=UTF-8");
    if (!streamed) {
        msm_buf_appendf(&out, "content-length: %zu\r\n", rs->body.len);
    } else if (ac->chunked) {
        msm_buf_appendf(&out, "transfer-encoding: chunked\r\n");
    }
    msm_buf_appendf(&out, "%s\r\n", ac->keep_alive ? "" : "connection: close\r\n");
    if (streamed) {
        put_chunk(ac, &out, &rs->body);
        ac->stream = rs->stream;
        ac->stream_ctx = rs->stream_ctx;
        rs->stream = NULL;
        rs->stream_ctx = NULL;
        msm_conn_read_disable(ac->c, true);
        ev_idle_start(ac->a->srv->loop, &ac->stream_idle);
    } else if (!head) {
        msm_buf_move(&out, &rs->body);
    }
    msm_conn_write(ac->c, &out, false);
    msm_buf_deinit(&out);
    if (!ac->keep_alive && !streamed) {
        ac->closing = true;
        msm_conn_close(ac->c, MSM_CLOSE_FLUSH);
    }
}

/* Answer with an error status and close the connection. */
static void respond_error(struct admin_conn *ac, int status, const char *msg)
{
    struct msm_admin_resp rs = {.status = status};
    msm_buf_init(&rs.body);
    msm_buf_appendf(&rs.body, "%s\n", msg);
    ac->keep_alive = false;
    respond(ac, &rs, false);
    msm_buf_deinit(&rs.body);
}

static void dispatch(struct admin_conn *ac)
{
    struct msm_admin_req rq = {.method = http_method_str(ac->p.method), .query = "",
                               .body = ac->body, .body_len = ac->body_len};
    if (!ac->url) {
        ac->url = msm_xstrdup("/");
    }
    char *url = ac->url;
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        rq.query = q + 1;
    }
    char *frag = strchr(q ? q + 1 : url, '#');
    if (frag) {
        *frag = '\0';
    }
    rq.path = url;
    struct msm_admin_resp rs = {.status = 500};
    msm_buf_init(&rs.body);
    msm_admin_handle(ac->a->srv, &rq, &rs);
    respond(ac, &rs, !strcmp(rq.method, "HEAD"));
    if (rs.stream) { /* not taken over (cannot happen today): do not leak it */
        rs.stream->free(rs.stream_ctx);
    }
    msm_buf_deinit(&rs.body);
}

/* Parse and answer the requests in the input; a streamed response pauses this until it ends. */
static void process(struct admin_conn *ac, bool end_stream)
{
    struct msm_conn *c = ac->c;
    while (c->in.len && !ac->closing && !ac->stream) {
        size_t n = c->in.len;
        char *data = msm_buf_linearize(&c->in, n);
        size_t used = http_parser_execute(&ac->p, &settings, data, n);
        msm_buf_drain(&c->in, used);
        if (HTTP_PARSER_ERRNO(&ac->p) == HPE_PAUSED) {
            http_parser_pause(&ac->p, 0);
        } else if (HTTP_PARSER_ERRNO(&ac->p) != HPE_OK) {
            char msg[128];
            snprintf(msg, sizeof(msg), "bad request: %s",
                     http_errno_description(HTTP_PARSER_ERRNO(&ac->p)));
            int st = ac->error_status ? ac->error_status
                     : HTTP_PARSER_ERRNO(&ac->p) == HPE_HEADER_OVERFLOW ? 431
                                                                          : 400;
            respond_error(ac, st, st == 400 ? msg : reason(st));
            return;
        }
        if (!ac->complete) {
            break;
        }
        dispatch(ac);
        ac_reset(ac);
    }
    if (end_stream && ac->stream) {
        ac->peer_eof = true;
    } else if (end_stream && !ac->closing) {
        msm_conn_close(c, MSM_CLOSE_FLUSH);
    }
}

static void ac_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct admin_conn *ac = ctx;
    ac->last_activity = ev_now(c->loop);
    process(ac, end_stream);
}

static void ac_unlink(struct admin_conn *ac)
{
    struct msm_admin *a = ac->a;
    if (ac->prev) {
        ac->prev->next = ac->next;
    } else {
        a->conns = ac->next;
    }
    if (ac->next) {
        ac->next->prev = ac->prev;
    }
    ac->next = ac->prev = NULL;
    a->n_conns--;
}

static void ac_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct admin_conn *ac = ctx;
    (void)c;
    (void)ev;
    struct msm_admin *a = ac->a;
    ev_timer_stop(a->srv->loop, &ac->timer);
    ac_unlink(ac);
    ac->c = NULL;
    if (ac->stream) { /* the client went away (or timed out) mid-stream */
        stream_end(ac);
    }
    msm_defer(a->srv->loop, ac_free, ac);
}

/* Too many responses waiting for a client that does not read: stop reading its requests. */
static void ac_on_watermark(struct msm_conn *c, void *ctx, bool above)
{
    struct admin_conn *ac = ctx;
    msm_conn_read_disable(c, above);
    if (!above && ac->stream && !ac->closing) {
        ev_idle_start(c->loop, &ac->stream_idle); /* the client caught up: render more */
    }
}

static const struct msm_conn_handler admin_handler_vt = {
    .on_read = ac_on_read,
    .on_event = ac_on_event,
    .on_watermark = ac_on_watermark,
};

/* Once a second: slow or stuck clients. */
static void ac_on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct admin_conn *ac = MSM_CONTAINER_OF(w, struct admin_conn, timer);
    struct msm_admin *a = ac->a;
    double now = ev_now(loop);
    if (ac->closing || !ac->c) {
        return;
    }
    struct msm_conn *c = ac->c;
    if (c->out.len != ac->last_out_len || !c->out.len) {
        ac->last_out_len = c->out.len;
        ac->last_progress = now;
    }
    if (c->out.len && now - ac->last_progress > a->write_timeout) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_ADMIN, "admin: client stopped reading, closing");
        ac->closing = true;
        msm_conn_close(c, MSM_CLOSE_NOFLUSH);
        return;
    }
    if (ac->in_request && now - ac->request_start > a->request_timeout) {
        msm_log(MSM_LOG_DEBUG, MSM_LC_ADMIN, "admin: request not complete in time, closing");
        respond_error(ac, 408, "request timeout");
        return;
    }
    if (!ac->in_request && !ac->stream && !c->out.len && !c->in.len &&
        now - ac->last_activity > a->idle_timeout) {
        ac->closing = true;
        msm_conn_close(c, MSM_CLOSE_NOFLUSH);
    }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct msm_admin *a = MSM_CONTAINER_OF(w, struct msm_admin, io);
    for (int i = 0; i < 32; i++) {
        struct msm_address remote;
        remote.len = sizeof(remote.sa);
        int fd = accept4(a->fd, (struct sockaddr *)&remote.sa, &remote.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;
        }
        if (a->n_conns >= MSM_ADMIN_MAX_CONNS) {
            msm_log(MSM_LOG_WARN, MSM_LC_ADMIN, "admin: %d connections open, refusing another",
                    a->n_conns);
            close(fd);
            continue;
        }
        struct admin_conn *ac = MSM_NEW(struct admin_conn);
        ac->a = a;
        ac->c = msm_conn_accepted(loop, fd, &a->addr, &remote);
        http_parser_init(&ac->p, HTTP_REQUEST);
        ac->p.data = ac;
        ac->next = a->conns;
        if (a->conns) {
            a->conns->prev = ac;
        }
        a->conns = ac;
        a->n_conns++;
        ac->last_activity = ac->last_progress = ev_now(loop);
        ev_timer_init(&ac->timer, ac_on_timer, 1.0, 1.0);
        ev_idle_init(&ac->stream_idle, on_stream_idle);
        ev_timer_start(loop, &ac->timer);
        msm_conn_enable_half_close(ac->c, true);
        msm_conn_set_watermarks(ac->c, OUT_HIGH_WATERMARK);
        msm_conn_set_handler(ac->c, &admin_handler_vt, ac);
        msm_conn_start_reading(ac->c);
    }
}

int msm_admin_validate(const Envoy__Config__Bootstrap__V3__Bootstrap *b, struct msm_err *err)
{
    if (!b->admin || !b->admin->address) {
        return 0;
    }
    struct msm_address a;
    if (msm_pb_address(b->admin->address, &a, err) < 0) {
        msm_err_prefix(err, "admin.address");
        return MSM_EINVAL;
    }
    return 0;
}

/* Test hook: MSM_ADMIN_TIMEOUTS_MS="request,idle,write" shortens the timeouts (integration
 * tests of slow clients); ignored unless all three parse as positive numbers. */
static void load_timeouts(struct msm_admin *a)
{
    a->request_timeout = MSM_ADMIN_REQUEST_TIMEOUT_MS / 1000.0;
    a->idle_timeout = MSM_ADMIN_IDLE_TIMEOUT_MS / 1000.0;
    a->write_timeout = MSM_ADMIN_WRITE_TIMEOUT_MS / 1000.0;
    const char *env = getenv("MSM_ADMIN_TIMEOUTS_MS");
    unsigned r, i, w;
    if (env && sscanf(env, "%u,%u,%u", &r, &i, &w) == 3 && r && i && w) {
        a->request_timeout = r / 1000.0;
        a->idle_timeout = i / 1000.0;
        a->write_timeout = w / 1000.0;
    }
    /* Test hook: MSM_ADMIN_STREAM=0 sends streamed bodies whole, with a content-length (the
     * reference the streamed output is compared with). */
    env = getenv("MSM_ADMIN_STREAM");
    a->no_stream = env && !strcmp(env, "0");
}

struct msm_admin *msm_admin_new(struct msm_server *srv, struct msm_err *err)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *b = srv->bootstrap;
    err->msg[0] = '\0';
    if (!b->admin || !b->admin->address) {
        msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "no admin address given, admin is disabled");
        return NULL;
    }
    struct msm_admin *a = MSM_NEW(struct msm_admin);
    a->srv = srv;
    a->fd = -1;
    load_timeouts(a);
    if (msm_pb_address(b->admin->address, &a->addr, err) < 0) {
        msm_err_prefix(err, "admin.address");
        free(a);
        return NULL;
    }
    a->fd = socket(a->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (a->fd >= 0 && a->addr.sa.ss_family != AF_UNIX) {
        setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    }
    if (a->addr.sa.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->addr.sa;
        if (un->sun_path[0]) {
            unlink(un->sun_path);
        }
    }
    if (a->fd < 0 || bind(a->fd, (struct sockaddr *)&a->addr.sa, a->addr.len) < 0 ||
        listen(a->fd, 128) < 0) {
        char s[MSM_ADDRSTRLEN];
        msm_address_str(&a->addr, s, sizeof(s));
        msm_err_set(err, "cannot bind the admin address %s: %s", s, strerror(errno));
        if (a->fd >= 0) {
            close(a->fd);
        }
        free(a);
        return NULL;
    }
    a->addr.len = sizeof(a->addr.sa);
    getsockname(a->fd, (struct sockaddr *)&a->addr.sa, &a->addr.len);
    char s[MSM_ADDRSTRLEN];
    msm_address_str(&a->addr, s, sizeof(s));
    msm_log(MSM_LOG_INFO, MSM_LC_ADMIN, "admin address: %s", s);
    if (srv->opts->admin_address_path) {
        FILE *f = fopen(srv->opts->admin_address_path, "w");
        if (f) {
            fprintf(f, "%s\n", s);
            fclose(f);
        } else {
            msm_log(MSM_LOG_ERROR, MSM_LC_ADMIN, "cannot write admin address to %s: %s",
                    srv->opts->admin_address_path, strerror(errno));
        }
    }
    ev_io_init(&a->io, on_accept, a->fd, EV_READ);
    ev_io_start(srv->loop, &a->io);
    return a;
}

void msm_admin_free(struct msm_admin *a)
{
    if (!a) {
        return;
    }
    msm_admin_drain_stop(a->srv);
    ev_io_stop(a->srv->loop, &a->io);
    while (a->conns) {
        msm_conn_close(a->conns->c, MSM_CLOSE_NOFLUSH); /* unlinks through ac_on_event */
    }
    close(a->fd);
    free(a);
}
