#include "config/bootstrap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/log.h"
#include "config/merge.h"
#include "config/pbjson.h"
#include "config/yaml.h"

/* Bootstraps are small; refuse absurd sizes instead of exhausting memory. */
#define MAX_BOOTSTRAP_BYTES (64 * 1024 * 1024)

static char *read_file(const char *path, size_t *len, struct msm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        msm_err_set(err, "unable to read file: %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size > MAX_BOOTSTRAP_BYTES) {
        fclose(f);
        msm_err_set(err, "%s: file is larger than %d bytes", path, MAX_BOOTSTRAP_BYTES);
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = msm_xmalloc(cap + 1);
    for (;;) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            break;
        }
        if (n == cap) {
            if (cap >= MAX_BOOTSTRAP_BYTES) {
                fclose(f);
                free(buf);
                msm_err_set(err, "%s: file is larger than %d bytes", path, MAX_BOOTSTRAP_BYTES);
                return NULL;
            }
            cap *= 2;
            buf = msm_xrealloc(buf, cap + 1);
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        msm_err_set(err, "unable to read file: %s", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

Envoy__Config__Bootstrap__V3__Bootstrap *msm_bootstrap_parse(const char *name, const char *text,
                                                             size_t len, bool allow_unknown,
                                                             struct msm_err *err)
{
    const ProtobufCMessageDescriptor *d = &envoy__config__bootstrap__v3__bootstrap__descriptor;
    struct msm_pbjson_opts jo = {.allow_unknown_fields = allow_unknown};
    ProtobufCMessage *m = NULL;
    if (ends_with(name, ".pb")) {
        m = protobuf_c_message_unpack(d, NULL, len, (const uint8_t *)text);
        if (!m) {
            msm_err_set(err, "%s: not a valid binary envoy.config.bootstrap.v3.Bootstrap", name);
        }
        return (void *)m;
    }
    if (ends_with(name, ".pb_text")) {
        msm_err_set(err, "%s: text-format protobuf bootstraps are not supported; use JSON or "
                         "YAML", name);
        return NULL;
    }
    bool yaml = ends_with(name, ".yaml") || ends_with(name, ".yml");
    if (!yaml) {
        struct msm_err jerr;
        m = msm_pbjson_decode_text(d, text, len, &jo, &jerr);
        if (m) {
            return (void *)m;
        }
        /* JSON that parsed but did not fit the schema is the real error; otherwise try YAML,
         * as Envoy does for files without a known extension. */
        json_error_t je;
        json_t *probe = json_loadb(text, len, JSON_DECODE_ANY, &je);
        if (probe || ends_with(name, ".json")) {
            json_decref(probe);
            msm_err_set(err, "%s: %s", name, jerr.msg);
            return NULL;
        }
    }
    json_t *j = msm_yaml_load(text, len, err);
    if (!j) {
        msm_err_prefix(err, "%s", name);
        return NULL;
    }
    jo.lenient_scalars = true;
    m = msm_pbjson_decode(d, j, &jo, err);
    json_decref(j);
    if (!m) {
        msm_err_prefix(err, "%s", name);
    }
    return (void *)m;
}

static void apply_node_overrides(Envoy__Config__Bootstrap__V3__Bootstrap *b,
                                 const struct msm_options *o)
{
    if (!o->service_cluster && !o->service_node && !o->service_zone) {
        return;
    }
    if (!b->node) {
        b->node = msm_xmalloc(sizeof(*b->node));
        envoy__config__core__v3__node__init(b->node);
    }
    Envoy__Config__Core__V3__Node *n = b->node;
    if (o->service_cluster) {
        if (n->cluster != protobuf_c_empty_string) {
            free(n->cluster);
        }
        n->cluster = msm_xstrdup(o->service_cluster);
    }
    if (o->service_node) {
        if (n->id != protobuf_c_empty_string) {
            free(n->id);
        }
        n->id = msm_xstrdup(o->service_node);
    }
    if (o->service_zone) {
        if (!n->locality) {
            n->locality = msm_xmalloc(sizeof(*n->locality));
            envoy__config__core__v3__locality__init(n->locality);
        }
        if (n->locality->zone != protobuf_c_empty_string) {
            free(n->locality->zone);
        }
        n->locality->zone = msm_xstrdup(o->service_zone);
    }
}

Envoy__Config__Bootstrap__V3__Bootstrap *msm_bootstrap_load(const struct msm_options *o,
                                                            struct msm_err *err)
{
    Envoy__Config__Bootstrap__V3__Bootstrap *b = NULL;
    if (!o->config_path && !o->config_yaml) {
        msm_err_set(err, "At least one of --config-path or --config-yaml or Options::configProto() "
                         "should be non-empty");
        return NULL;
    }
    if (o->config_path) {
        size_t len = 0;
        char *text = read_file(o->config_path, &len, err);
        if (!text) {
            return NULL;
        }
        b = msm_bootstrap_parse(o->config_path, text, len, o->allow_unknown_static_fields, err);
        free(text);
        if (!b) {
            return NULL;
        }
    }
    if (o->config_yaml) {
        Envoy__Config__Bootstrap__V3__Bootstrap *y = msm_bootstrap_parse(
            "--config-yaml.yaml", o->config_yaml, strlen(o->config_yaml),
            o->allow_unknown_static_fields, err);
        if (!y) {
            if (b) {
                protobuf_c_message_free_unpacked(&b->base, NULL);
            }
            return NULL;
        }
        if (!b) {
            b = y;
        } else {
            int rc = msm_pb_merge(&b->base, &y->base, err);
            protobuf_c_message_free_unpacked(&y->base, NULL);
            if (rc < 0) {
                msm_err_prefix(err, "--config-yaml");
                protobuf_c_message_free_unpacked(&b->base, NULL);
                return NULL;
            }
        }
    }
    apply_node_overrides(b, o);
    return b;
}
