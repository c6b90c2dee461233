/* msm-xds-probe: drives the xDS client (xds/) from a script, for the tests in test/xds/.
 *
 *   msm-xds-probe -c BOOTSTRAP.json [--source NAME=CONFIGSOURCE_JSON]...
 *
 * Runs a main loop with msm_xds on it. The apply callback records every update and ACKs, or
 * NACKs when a rule matches. Commands, one per line on stdin:
 *   sub TYPE SOURCE PREFIX [*] [NAME...]   subscribe (replace the set). TYPE: lds cds eds rds sds
 *                                          ecds or a type URL; SOURCE: "ads" or a --source
 *                                          name; PREFIX: stat prefix ("{}" = per name) or "-";
 *                                          "*" = wildcard
 *   nack NAME MESSAGE...                   reject updates carrying NAME ("*" = any) with MESSAGE
 *   ack NAME                               drop that rule
 *   stats                                  print every stat
 *   quit                                   exit (also on end of input)
 * Events, one JSON object per line on stdout: {"event":"started"}, {"event":"update",...},
 * {"event":"ready",...}, {"event":"stats",...}, {"event":"error","msg":...},
 * {"event":"ok","cmd":...} after each command. Logs go to stderr (level from MSM_LOG_LEVEL). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "common/alloc.h"
#include "common/log.h"
#include "config/bootstrap.h"
#include "config/pbjson.h"
#include "stats/stats.h"
#include "xds/xds.h"

struct rule {
    char *name;
    char *msg;
};

struct source {
    char *name;
    Envoy__Config__Core__V3__ConfigSource *cs;
};

struct probe {
    struct ev_loop *loop;
    struct msm_xds *x;
    struct msm_stats_store *st;
    struct rule *rules;
    int n_rules;
    struct source *srcs;
    int n_srcs;
    ev_io in;
    char buf[1 << 16];
    size_t len;
};

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void emit_error(const char *msg)
{
    emit(json_pack("{s:s, s:s}", "event", "error", "msg", msg));
}

static const char *rule_for(struct probe *p, const struct msm_xds_update *u)
{
    for (int r = 0; r < p->n_rules; r++) {
        if (!strcmp(p->rules[r].name, "*")) {
            return p->rules[r].msg;
        }
        for (int i = 0; i < u->n; i++) {
            if (!strcmp(u->resources[i].name, p->rules[r].name)) {
                return p->rules[r].msg;
            }
        }
    }
    return NULL;
}

static int on_apply(void *arg, const struct msm_xds_update *u, struct msm_err *err)
{
    struct probe *p = arg;
    json_t *res = json_array();
    for (int i = 0; i < u->n; i++) {
        json_array_append_new(res, json_pack("{s:s, s:s, s:s}", "name", u->resources[i].name,
                                             "version", u->resources[i].version, "msg_type",
                                             u->resources[i].msg->descriptor->name));
    }
    json_t *rem = json_array();
    for (int i = 0; i < u->n_removed; i++) {
        json_array_append_new(rem, json_string(u->removed[i]));
    }
    const char *nack = rule_for(p, u);
    json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:o, s:o, s:s}", "event", "update", "type",
                          u->type_url, "sotw", u->sotw, "version", u->version_info, "resources",
                          res, "removed", rem, "result", nack ? "nack" : "ack");
    emit(o);
    if (nack) {
        return msm_err_set(err, "%s", nack);
    }
    return 0;
}

static void on_ready(void *arg, const char *type_url, const char *name)
{
    (void)arg;
    emit(json_pack("{s:s, s:s, s:s?}", "event", "ready", "type", type_url, "name", name));
}

static const char *type_alias(const char *t)
{
    static const struct {
        const char *alias, *url;
    } m[] = {{"lds", MSM_XDS_TYPE_LISTENER}, {"cds", MSM_XDS_TYPE_CLUSTER},
             {"eds", MSM_XDS_TYPE_ENDPOINT}, {"rds", MSM_XDS_TYPE_ROUTE},
             {"sds", MSM_XDS_TYPE_SECRET},   {"ecds", MSM_XDS_TYPE_ECDS}};
    for (size_t i = 0; i < MSM_ARRAY_SIZE(m); i++) {
        if (!strcmp(t, m[i].alias)) {
            return m[i].url;
        }
    }
    return t;
}

static void cmd_stats(struct probe *p)
{
    size_t n;
    struct msm_stat **v = msm_stats_list(p->st, &n);
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        if (v[i]->type == MSM_STAT_TEXT) {
            json_object_set_new(o, v[i]->name, json_string(v[i]->text ? v[i]->text : ""));
        } else if (v[i]->type == MSM_STAT_HISTOGRAM) {
            json_object_set_new(o, v[i]->name, json_integer((json_int_t)v[i]->hcount));
        } else {
            json_object_set_new(o, v[i]->name, json_integer((json_int_t)msm_stat_value(v[i])));
        }
    }
    msm_stats_list_free(v, n);
    emit(json_pack("{s:s, s:o}", "event", "stats", "stats", o));
}

static void cmd_sub(struct probe *p, char **tok, int nt)
{
    if (nt < 4) {
        emit_error("usage: sub TYPE SOURCE PREFIX [*] [NAME...]");
        return;
    }
    const Envoy__Config__Core__V3__ConfigSource *cs = NULL;
    if (strcmp(tok[2], "ads") != 0) {
        for (int i = 0; i < p->n_srcs; i++) {
            if (!strcmp(p->srcs[i].name, tok[2])) {
                cs = p->srcs[i].cs;
            }
        }
        if (!cs) {
            emit_error("unknown source");
            return;
        }
    }
    const char *prefix = strcmp(tok[3], "-") ? tok[3] : NULL;
    bool wildcard = false;
    const char **names = msm_xcalloc((size_t)nt, sizeof(char *));
    int n = 0;
    for (int i = 4; i < nt; i++) {
        if (!strcmp(tok[i], "*")) {
            wildcard = true;
        } else {
            names[n++] = tok[i];
        }
    }
    struct msm_err err;
    if (msm_xds_subscribe(p->x, cs, type_alias(tok[1]), names, n, wildcard, prefix, &err) < 0) {
        emit_error(err.msg);
    } else {
        emit(json_pack("{s:s, s:s}", "event", "ok", "cmd", "sub"));
    }
    free(names);
}

static void cmd_nack(struct probe *p, char **tok, int nt, const char *line)
{
    if (nt < 3) {
        emit_error("usage: nack NAME MESSAGE...");
        return;
    }
    /* The message is the rest of the line after NAME, spaces kept. */
    const char *m = strstr(line, tok[1]) + strlen(tok[1]);
    while (*m == ' ') {
        m++;
    }
    p->rules = msm_xrealloc(p->rules, sizeof(*p->rules) * (size_t)(p->n_rules + 1));
    p->rules[p->n_rules].name = msm_xstrdup(tok[1]);
    p->rules[p->n_rules].msg = msm_xstrdup(m);
    p->n_rules++;
    emit(json_pack("{s:s, s:s}", "event", "ok", "cmd", "nack"));
}

static void cmd_ack(struct probe *p, char **tok, int nt)
{
    for (int i = 0; nt >= 2 && i < p->n_rules; i++) {
        if (!strcmp(p->rules[i].name, tok[1])) {
            free(p->rules[i].name);
            free(p->rules[i].msg);
            p->rules[i] = p->rules[--p->n_rules];
            i--;
        }
    }
    emit(json_pack("{s:s, s:s}", "event", "ok", "cmd", "ack"));
}

static void run_line(struct probe *p, char *line)
{
    char *copy = msm_xstrdup(line);
    char *tok[4096];
    int nt = 0;
    for (char *s = strtok(copy, " \t\r"); s && nt < 4096; s = strtok(NULL, " \t\r")) {
        tok[nt++] = s;
    }
    if (nt == 0) {
        free(copy);
        return;
    }
    if (!strcmp(tok[0], "sub")) {
        cmd_sub(p, tok, nt);
    } else if (!strcmp(tok[0], "nack")) {
        cmd_nack(p, tok, nt, line);
    } else if (!strcmp(tok[0], "ack")) {
        cmd_ack(p, tok, nt);
    } else if (!strcmp(tok[0], "stats")) {
        cmd_stats(p);
    } else if (!strcmp(tok[0], "quit")) {
        ev_break(p->loop, EVBREAK_ALL);
    } else {
        emit_error("unknown command");
    }
    free(copy);
}

static void on_stdin(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct probe *p = MSM_CONTAINER_OF(w, struct probe, in);
    ssize_t r = read(0, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    p->len += (size_t)r;
    p->buf[p->len] = '\0';
    char *start = p->buf, *nl;
    while ((nl = strchr(start, '\n'))) {
        *nl = '\0';
        run_line(p, start);
        start = nl + 1;
    }
    p->len -= (size_t)(start - p->buf);
    memmove(p->buf, start, p->len);
    if (p->len >= sizeof(p->buf) - 1) {
        emit_error("line too long");
        p->len = 0;
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = msm_xmalloc(cap);
    size_t got;
    while ((got = fread(b + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            b = msm_xrealloc(b, cap);
        }
    }
    fclose(f);
    *len = n;
    return b;
}

int main(int argc, char **argv)
{
    const char *cfg = NULL;
    struct probe p;
    memset(&p, 0, sizeof(p));
    const char *lvl = getenv("MSM_LOG_LEVEL");
    msm_log_set_all(lvl && msm_log_level_parse(lvl) >= 0 ? msm_log_level_parse(lvl)
                                                        : MSM_LOG_INFO);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            cfg = argv[++i];
        } else if (!strcmp(argv[i], "--source") && i + 1 < argc) {
            char *eq = strchr(argv[++i], '=');
            if (!eq) {
                fprintf(stderr, "--source NAME=JSON\n");
                return 2;
            }
            struct msm_err err;
            ProtobufCMessage *m =
                msm_pbjson_decode_text(&envoy__config__core__v3__config_source__descriptor,
                                       eq + 1, strlen(eq + 1), NULL, &err);
            if (!m) {
                fprintf(stderr, "--source: %s\n", err.msg);
                return 2;
            }
            p.srcs = msm_xrealloc(p.srcs, sizeof(*p.srcs) * (size_t)(p.n_srcs + 1));
            p.srcs[p.n_srcs].name = msm_xstrndup(argv[i], (size_t)(eq - argv[i]));
            p.srcs[p.n_srcs].cs = (Envoy__Config__Core__V3__ConfigSource *)m;
            p.n_srcs++;
        } else {
            fprintf(stderr, "usage: %s -c BOOTSTRAP [--source NAME=JSON]...\n", argv[0]);
            return 2;
        }
    }
    if (!cfg) {
        fprintf(stderr, "-c BOOTSTRAP is required\n");
        return 2;
    }
    size_t len;
    char *text = slurp(cfg, &len);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", cfg);
        return 2;
    }
    struct msm_err err;
    Envoy__Config__Bootstrap__V3__Bootstrap *b = msm_bootstrap_parse(cfg, text, len, false, &err);
    free(text);
    if (!b) {
        fprintf(stderr, "bootstrap: %s\n", err.msg);
        return 2;
    }
    p.loop = ev_default_loop(0);
    p.st = msm_stats_store_new();
    p.x = msm_xds_new(p.loop, b, on_apply, &p, p.st, &err);
    protobuf_c_message_free_unpacked(&b->base, NULL);
    int rc = 0;
    if (!p.x) {
        emit(json_pack("{s:s, s:s}", "event", "fatal", "msg", err.msg[0] ? err.msg : "no xDS"));
        rc = 3;
        goto out;
    }
    msm_xds_set_ready_cb(p.x, on_ready, &p);
    if (msm_xds_start(p.x) < 0) {
        emit(json_pack("{s:s, s:s}", "event", "fatal", "msg", "cannot start"));
        rc = 3;
        goto out;
    }
    emit(json_pack("{s:s}", "event", "started"));
    ev_io_init(&p.in, on_stdin, 0, EV_READ);
    ev_io_start(p.loop, &p.in);
    ev_run(p.loop, 0);
    ev_io_stop(p.loop, &p.in);
out:
    msm_xds_free(p.x);
    msm_stats_store_free(p.st);
    for (int i = 0; i < p.n_rules; i++) {
        free(p.rules[i].name);
        free(p.rules[i].msg);
    }
    free(p.rules);
    for (int i = 0; i < p.n_srcs; i++) {
        free(p.srcs[i].name);
        protobuf_c_message_free_unpacked(&p.srcs[i].cs->base, NULL);
    }
    free(p.srcs);
    ev_loop_destroy(p.loop);
    emit(json_pack("{s:s}", "event", "exit"));
    return rc;
}
