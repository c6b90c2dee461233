#include "admin/admin.h"
#include "admin/admin_private.h"

#include <errno.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <http_parser.h>
#include <pcre2.h>
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

#define MAX_REQUEST (1024 * 1024)

struct admin_conn;

struct msm_admin {
    struct msm_server *srv;
    int fd;
    struct msm_address addr;
    ev_io io;
    struct admin_conn *conns;
};

struct admin_conn {
    struct admin_conn *next, *prev;
    struct msm_admin *a;
    struct msm_conn *c;
    http_parser p;
    char *url;
    size_t url_len;
    char *body;
    size_t body_len;
    bool complete, keep_alive, closing;
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

static void url_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
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
}

bool msm_admin_query_param(const char *query, const char *name, char *val, size_t n)
{
    size_t nl = strlen(name);
    const char *p = query;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char key[256];
        url_decode(p, klen, key, sizeof(key));
        if (strlen(key) == nl && !memcmp(key, name, nl)) {
            if (val && n) {
                if (eq) {
                    url_decode(eq + 1, len - klen - 1, val, n);
                } else {
                    val[0] = '\0';
                }
            }
            return true;
        }
        p = amp ? amp + 1 : NULL;
    }
    return false;
}

/* ---- handlers ------------------------------------------------------------------------------- */

typedef void admin_handler(struct msm_server *srv, const struct msm_admin_req *rq,
                           struct msm_admin_resp *rs);

static void h_ready(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs)
{
    (void)rq;
    rs->status = srv->state == MSM_STATE_LIVE ? 200 : 503;
    msm_buf_appendf(&rs->body, "%s\n", msm_server_state_name(srv->state));
}

static void fmt_quantile(struct msm_buf *b, double v)
{
    if (isnan(v)) {
        msm_buf_append(b, "nan", 3);
    } else {
        msm_buf_appendf(b, "%g", v);
    }
}

static void h_stats(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs)
{
    bool usedonly = msm_admin_query_param(rq->query, "usedonly", NULL, 0);
    char filter[512] = "";
    bool has_filter = msm_admin_query_param(rq->query, "filter", filter, sizeof(filter));
    pcre2_code *re = NULL;
    pcre2_match_data *md = NULL;
    if (has_filter && filter[0]) {
        /* Envoy takes an RE2 regex matched anywhere in the name (partial match). */
        int ec;
        PCRE2_SIZE eo;
        re = pcre2_compile((PCRE2_SPTR)filter, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
        if (!re) {
            rs->status = 400;
            msm_buf_appendf(&rs->body, "Invalid re2 regex\n");
            return;
        }
        md = pcre2_match_data_create_from_pattern(re, NULL);
    }
    size_t n = 0;
    struct msm_stat **v = msm_stats_list(srv->stats, &n);
    static const double qs[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
    /* Envoy prints counters and gauges (sorted together), then histograms. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            struct msm_stat *s = v[i];
            bool hist = s->type == MSM_STAT_HISTOGRAM;
            if (hist != (pass == 1) || s->type == MSM_STAT_TEXT) {
                continue;
            }
            if (usedonly && !atomic_load(&s->used)) {
                continue;
            }
            if (re && pcre2_match(re, (PCRE2_SPTR)s->name, PCRE2_ZERO_TERMINATED, 0, 0, md,
                                  NULL) < 0) {
                continue;
            }
            if (!hist) {
                msm_buf_appendf(&rs->body, "%s: %llu\n", s->name,
                                (unsigned long long)msm_stat_value(s));
                continue;
            }
            if (!atomic_load(&s->hcount)) {
                msm_buf_appendf(&rs->body, "%s: No recorded values\n", s->name);
                continue;
            }
            msm_buf_appendf(&rs->body, "%s:", s->name);
            for (size_t q = 0; q < MSM_ARRAY_SIZE(qs); q++) {
                double x = msm_stat_quantile(s, qs[q]);
                msm_buf_appendf(&rs->body, " P%g(", qs[q] * 100);
                fmt_quantile(&rs->body, x);
                msm_buf_append(&rs->body, ",", 1);
                fmt_quantile(&rs->body, x);
                msm_buf_append(&rs->body, ")", 1);
            }
            msm_buf_append(&rs->body, "\n", 1);
        }
    }
    msm_stats_list_free(v, n);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    rs->status = 200;
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

struct endpoint {
    const char *path;
    const char *help;
    bool post_only; /* mutating endpoints need POST, as in Envoy */
    admin_handler *fn;
};

static const struct endpoint endpoints[] = {
    {"/", "admin home page", false, h_index},
    {"/config_dump", "dump current Envoy configs (experimental)", false, msm_admin_config_dump},
    {"/healthcheck/fail", "cause the server to fail health checks", true, h_healthcheck},
    {"/healthcheck/ok", "cause the server to pass health checks", true, h_healthcheck},
    {"/quitquitquit", "exit the server", true, h_quit},
    {"/ready", "print server state, return 200 if LIVE, otherwise return 503", false, h_ready},
    {"/server_info", "print server version/status information", false, h_server_info},
    {"/stats", "print server stats", false, h_stats},
};

static void h_index(struct msm_server *srv, const struct msm_admin_req *rq,
                    struct msm_admin_resp *rs)
{
    (void)srv;
    (void)rq;
    msm_buf_appendf(&rs->body, "admin commands are:\n");
    for (size_t i = 0; i < MSM_ARRAY_SIZE(endpoints); i++) {
        msm_buf_appendf(&rs->body, "  %s: %s\n", endpoints[i].path, endpoints[i].help);
    }
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
        if ((e->post_only && !post) || (!e->post_only && !get && !post)) {
            rs->status = 405;
            msm_buf_appendf(&rs->body, "Method %s not allowed, %s required.\n", rq->method,
                            e->post_only ? "POST" : "GET");
            return;
        }
        e->fn(srv, rq, rs);
        return;
    }
    rs->status = 404;
    msm_buf_appendf(&rs->body, "invalid path. admin commands are:\n");
    for (size_t i = 0; i < MSM_ARRAY_SIZE(endpoints); i++) {
        msm_buf_appendf(&rs->body, "  %s: %s\n", endpoints[i].path, endpoints[i].help);
    }
}

/* ---- HTTP/1.1 connections ------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
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
    ac->complete = false;
}

static void ac_free(void *p)
{
    struct admin_conn *ac = p;
    ac_reset(ac);
    free(ac);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->url_len + len > 8192) {
        return 1;
    }
    ac->url = msm_xrealloc(ac->url, ac->url_len + len + 1);
    memcpy(ac->url + ac->url_len, at, len);
    ac->url_len += len;
    ac->url[ac->url_len] = '\0';
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct admin_conn *ac = p->data;
    if (ac->body_len + len > MAX_REQUEST) {
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
    ac->keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static void respond(struct admin_conn *ac, struct msm_admin_resp *rs, bool head)
{
    struct msm_buf out;
    msm_buf_init(&out);
    msm_buf_appendf(&out,
                    "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncache-control: no-cache, max-age=0\r\n"
                    "x-content-type-options: nosniff\r\ncontent-length: %zu\r\n%s\r\n",
                    rs->status, reason(rs->status),
                    rs->content_type ? rs->content_type : "text/plain; charset=UTF-8",
                    rs->body.len, ac->keep_alive ? "" : "connection: close\r\n");
    if (!head) {
        msm_buf_move(&out, &rs->body);
    }
    msm_conn_write(ac->c, &out, false);
    msm_buf_deinit(&out);
    if (!ac->keep_alive) {
        ac->closing = true;
        msm_conn_close(ac->c, MSM_CLOSE_FLUSH);
    }
}

static void dispatch(struct admin_conn *ac)
{
    struct msm_admin_req rq = {.method = http_method_str(ac->p.method), .query = "",
                               .body = ac->body, .body_len = ac->body_len};
    char *url = ac->url ? ac->url : msm_xstrdup("/");
    if (!ac->url) {
        ac->url = url;
    }
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        rq.query = q + 1;
    }
    rq.path = url;
    struct msm_admin_resp rs = {.status = 500};
    msm_buf_init(&rs.body);
    msm_admin_handle(ac->a->srv, &rq, &rs);
    respond(ac, &rs, !strcmp(rq.method, "HEAD"));
    msm_buf_deinit(&rs.body);
}

static void ac_on_read(struct msm_conn *c, void *ctx, bool end_stream)
{
    struct admin_conn *ac = ctx;
    while (c->in.len && !ac->closing) {
        size_t n = c->in.len;
        char *data = msm_buf_linearize(&c->in, n);
        size_t used = http_parser_execute(&ac->p, &settings, data, n);
        msm_buf_drain(&c->in, used);
        if (HTTP_PARSER_ERRNO(&ac->p) == HPE_PAUSED) {
            http_parser_pause(&ac->p, 0);
        } else if (HTTP_PARSER_ERRNO(&ac->p) != HPE_OK) {
            struct msm_admin_resp rs = {.status = 400};
            msm_buf_init(&rs.body);
            msm_buf_appendf(&rs.body, "bad request: %s\n",
                            http_errno_description(HTTP_PARSER_ERRNO(&ac->p)));
            ac->keep_alive = false;
            respond(ac, &rs, false);
            msm_buf_deinit(&rs.body);
            return;
        }
        if (!ac->complete) {
            break;
        }
        dispatch(ac);
        ac_reset(ac);
    }
    if (end_stream && !ac->closing) {
        msm_conn_close(c, MSM_CLOSE_FLUSH);
    }
}

static void ac_on_event(struct msm_conn *c, void *ctx, enum msm_conn_event ev)
{
    struct admin_conn *ac = ctx;
    (void)c;
    (void)ev;
    struct msm_admin *a = ac->a;
    if (ac->prev) {
        ac->prev->next = ac->next;
    } else {
        a->conns = ac->next;
    }
    if (ac->next) {
        ac->next->prev = ac->prev;
    }
    msm_defer(a->srv->loop, ac_free, ac);
}

static const struct msm_conn_handler admin_handler_vt = {
    .on_read = ac_on_read,
    .on_event = ac_on_event,
};

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
        msm_conn_enable_half_close(ac->c, true);
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
    ev_io_stop(a->srv->loop, &a->io);
    while (a->conns) {
        msm_conn_close(a->conns->c, MSM_CLOSE_NOFLUSH); /* unlinks through ac_on_event */
    }
    close(a->fd);
    free(a);
}
