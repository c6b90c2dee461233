#include "xds/xds_target.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

#include "common/alloc.h"
#include "common/log.h"
#include "config/pbjson.h"

/* Files larger than this are not certificates. */
#define MAX_PEM_FILE (4 * 1024 * 1024)

static char *read_file(const char *path, struct msm_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        msm_err_set(err, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = msm_xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            if (cap >= MAX_PEM_FILE) {
                fclose(f);
                free(buf);
                msm_err_set(err, "'%s' is larger than %d bytes", path, MAX_PEM_FILE);
                return NULL;
            }
            cap *= 2;
            buf = msm_xrealloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        msm_err_set(err, "cannot read '%s'", path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* A DataSource's bytes as a NUL-terminated string (PEM is text). NULL <ds>: NULL, no error. */
static int data_source(const Envoy__Config__Core__V3__DataSource *ds, char **out,
                       struct msm_err *err)
{
    *out = NULL;
    if (!ds) {
        return 0;
    }
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        *out = read_file(ds->filename, err);
        return *out ? 0 : MSM_EINVAL;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        *out = msm_xstrdup(ds->inline_string);
        return 0;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        *out = msm_xstrndup((const char *)ds->inline_bytes.data, ds->inline_bytes.len);
        return 0;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE: {
        const char *v = getenv(ds->environment_variable);
        if (!v) {
            return msm_err_set(err, "environment variable '%s' is not set",
                               ds->environment_variable);
        }
        *out = msm_xstrdup(v);
        return 0;
    }
    default:
        return 0;
    }
}

static const Envoy__Config__Cluster__V3__Cluster *
find_static_cluster(const Envoy__Config__Bootstrap__V3__Bootstrap *b, const char *name)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = b->static_resources;
    for (size_t i = 0; sr && i < sr->n_clusters; i++) {
        if (sr->clusters[i]->name && !strcmp(sr->clusters[i]->name, name)) {
            return sr->clusters[i];
        }
    }
    return NULL;
}

/* Append one endpoint address to the target being built in <buf>. <scheme> tracks the kind
 * so that every address of a multi-endpoint cluster has the same one. */
static int add_address(const Envoy__Config__Core__V3__Address *a, bool dns, char **target,
                       const char **scheme, struct msm_err *err)
{
    if (!a) {
        return msm_err_set(err, "endpoint without an address");
    }
    char one[600];
    const char *sch;
    if (a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE) {
        const char *p = a->pipe->path ? a->pipe->path : "";
        if (!p[0]) {
            return msm_err_set(err, "pipe address with an empty path");
        }
        if (p[0] == '@') {
            sch = "unix-abstract:";
            snprintf(one, sizeof(one), "%s", p + 1);
        } else {
            sch = "unix:";
            snprintf(one, sizeof(one), "%s", p);
        }
    } else if (a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS) {
        const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
        if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE) {
            return msm_err_set(err, "socket_address '%s' needs a port_value", sa->address);
        }
        if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP) {
            return msm_err_set(err, "socket_address '%s': only TCP can carry gRPC", sa->address);
        }
        const char *host = sa->address ? sa->address : "";
        struct in_addr a4;
        struct in6_addr a6;
        if (inet_pton(AF_INET, host, &a4) == 1) {
            sch = "ipv4:";
            snprintf(one, sizeof(one), "%s:%u", host, sa->port_value);
        } else if (inet_pton(AF_INET6, host, &a6) == 1) {
            sch = "ipv6:";
            snprintf(one, sizeof(one), "[%s]:%u", host, sa->port_value);
        } else if (dns && host[0]) {
            sch = "dns:///";
            snprintf(one, sizeof(one), "%s:%u", host, sa->port_value);
        } else {
            return msm_err_set(err, "'%s' is not an IP address (a STATIC cluster needs one; "
                                    "use STRICT_DNS or LOGICAL_DNS for a host name)",
                               host);
        }
    } else {
        return msm_err_set(err, "unsupported address kind for a gRPC target");
    }
    if (!*scheme) {
        *scheme = sch;
        *target = msm_xasprintf("%s%s", sch, one);
        return 0;
    }
    if (strcmp(*scheme, sch) != 0 || !strcmp(sch, "dns:///") || !strcmp(sch, "unix:") ||
        !strcmp(sch, "unix-abstract:")) {
        /* gRPC lists several addresses only for ipv4:/ipv6:; keep the first otherwise. */
        return 0;
    }
    char *t = msm_xasprintf("%s,%s", *target, one);
    free(*target);
    *target = t;
    return 0;
}

static int cluster_target(const Envoy__Config__Cluster__V3__Cluster *c, struct msm_xds_target *t,
                          struct msm_err *err)
{
    bool dns = false;
    if (c->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE) {
        switch (c->type) {
        case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC:
            break;
        case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS:
        case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS:
            dns = true;
            break;
        default:
            return msm_err_set(err, "cluster type %d cannot carry xDS: use STATIC, STRICT_DNS "
                                    "or LOGICAL_DNS", (int)c->type);
        }
    } else if (c->cluster_discovery_type_case != 0) {
        return msm_err_set(err, "a custom cluster_type cannot carry xDS");
    }
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla = c->load_assignment;
    const char *scheme = NULL;
    for (size_t i = 0; cla && i < cla->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = cla->endpoints[i];
        for (size_t j = 0; j < le->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *lb = le->lb_endpoints[j];
            if (lb->host_identifier_case !=
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                continue;
            }
            if (add_address(lb->endpoint->address, dns, &t->target, &scheme, err) < 0) {
                msm_err_prefix(err, "load_assignment.endpoints[%zu].lb_endpoints[%zu]", i, j);
                return MSM_EINVAL;
            }
        }
    }
    if (!t->target) {
        return msm_err_set(err, "cluster has no endpoint");
    }
    return 0;
}

static int cluster_tls(const Envoy__Config__Cluster__V3__Cluster *c, struct msm_xds_target *t,
                       struct msm_err *err)
{
    const Envoy__Config__Core__V3__TransportSocket *ts = c->transport_socket;
    if (!ts || ts->config_type_case != ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG) {
        return 0;
    }
    const ProtobufCMessageDescriptor *want =
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor;
    const char *url = ts->typed_config->type_url ? ts->typed_config->type_url : "";
    const char *slash = strrchr(url, '/');
    const char *tname = slash ? slash + 1 : url;
    if (!strcmp(tname, "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer")) {
        return 0;
    }
    if (strcmp(tname, want->name) != 0) {
        return msm_err_set(err, "transport_socket %s is not supported for xDS (raw_buffer or "
                                "UpstreamTlsContext)", tname);
    }
    ProtobufCMessage *m = msm_pb_any_unpack(ts->typed_config, want, NULL, err);
    if (!m) {
        msm_err_prefix(err, "transport_socket");
        return MSM_EINVAL;
    }
    const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *u = (const void *)m;
    const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext *ctc =
        u->common_tls_context;
    int rc = 0;
    t->tls = true;
    if (u->sni && u->sni[0]) {
        t->sni = msm_xstrdup(u->sni);
    }
    if (ctc && (ctc->n_tls_certificate_sds_secret_configs ||
                ctc->validation_context_type_case ==
                    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG)) {
        rc = msm_err_set(err, "transport_socket: SDS secrets cannot secure the xDS connection "
                              "itself; use inline or file certificates");
        goto out;
    }
    if (ctc && ctc->n_tls_certificates) {
        const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc =
            ctc->tls_certificates[0];
        if ((rc = data_source(tc->certificate_chain, &t->cert_pem, err)) < 0 ||
            (rc = data_source(tc->private_key, &t->key_pem, err)) < 0) {
            msm_err_prefix(err, "transport_socket: tls_certificates[0]");
            goto out;
        }
        if (!t->cert_pem != !t->key_pem) {
            rc = msm_err_set(err, "transport_socket: tls_certificates[0] needs both "
                                  "certificate_chain and private_key");
            goto out;
        }
    }
    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc = NULL;
    if (ctc && ctc->validation_context_type_case ==
                   ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT) {
        vc = ctc->validation_context;
    } else if (ctc && ctc->validation_context_type_case ==
                          ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT) {
        vc = ctc->combined_validation_context->default_validation_context;
    }
    if (vc && (rc = data_source(vc->trusted_ca, &t->root_pem, err)) < 0) {
        msm_err_prefix(err, "transport_socket: validation_context.trusted_ca");
        goto out;
    }
    if (!t->root_pem) {
        /* Envoy would not verify the server at all; gRPC always does. */
        msm_log(MSM_LOG_WARN, MSM_LC_XDS, "xds cluster '%s': no trusted_ca, the control plane's "
                "certificate is verified against gRPC's default roots", c->name);
    }
out:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

static void cluster_keepalive(const Envoy__Config__Cluster__V3__Cluster *c,
                              struct msm_xds_target *t)
{
    const Envoy__Config__Core__V3__TcpKeepalive *ka =
        c->upstream_connection_options ? c->upstream_connection_options->tcp_keepalive : NULL;
    if (!ka) {
        return;
    }
    /* Linux defaults for unset fields, as Envoy leaves them to the kernel. */
    uint32_t time_s = ka->keepalive_time ? ka->keepalive_time->value : 7200;
    uint32_t intvl_s = ka->keepalive_interval ? ka->keepalive_interval->value : 75;
    uint32_t probes = ka->keepalive_probes ? ka->keepalive_probes->value : 9;
    if (time_s == 0) {
        time_s = 1;
    }
    uint64_t to = (uint64_t)intvl_s * (probes ? probes : 1) * 1000;
    t->keepalive_time_ms = time_s > 2000000 ? 2000000000 : (int)(time_s * 1000);
    t->keepalive_timeout_ms = to > 2000000000 ? 2000000000 : (int)to;
}

static int resolve_envoy_grpc(const Envoy__Config__Bootstrap__V3__Bootstrap *b,
                              const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *eg,
                              struct msm_xds_target *t, struct msm_err *err)
{
    const char *name = eg->cluster_name ? eg->cluster_name : "";
    const Envoy__Config__Cluster__V3__Cluster *c = find_static_cluster(b, name);
    if (!c) {
        return msm_err_set(err, "envoy_grpc.cluster_name '%s': no such static cluster in the "
                                "bootstrap", name);
    }
    if (cluster_target(c, t, err) < 0 || cluster_tls(c, t, err) < 0) {
        msm_err_prefix(err, "envoy_grpc.cluster_name '%s'", name);
        return MSM_EINVAL;
    }
    cluster_keepalive(c, t);
    if (eg->authority && eg->authority[0]) {
        t->authority = msm_xstrdup(eg->authority);
    }
    t->desc = msm_xasprintf("cluster '%s' (%s%s)", name, t->target, t->tls ? ", TLS" : "");
    t->stat_cluster = msm_xstrdup(c->alt_stat_name && c->alt_stat_name[0] ? c->alt_stat_name
                                                                          : name);
    return 0;
}

static int resolve_google_grpc(const Envoy__Config__Core__V3__GrpcService__GoogleGrpc *gg,
                               struct msm_xds_target *t, struct msm_err *err)
{
    if (!gg->target_uri || !gg->target_uri[0]) {
        return msm_err_set(err, "google_grpc.target_uri is empty");
    }
    t->target = msm_xstrdup(gg->target_uri);
    const Envoy__Config__Core__V3__GrpcService__GoogleGrpc__ChannelCredentials *cc =
        gg->channel_credentials;
    if (cc && cc->credential_specifier_case ==
                  ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__GOOGLE_GRPC__CHANNEL_CREDENTIALS__CREDENTIAL_SPECIFIER_SSL_CREDENTIALS) {
        const Envoy__Config__Core__V3__GrpcService__GoogleGrpc__SslCredentials *sc =
            cc->ssl_credentials;
        t->tls = true;
        if (data_source(sc->root_certs, &t->root_pem, err) < 0 ||
            data_source(sc->cert_chain, &t->cert_pem, err) < 0 ||
            data_source(sc->private_key, &t->key_pem, err) < 0) {
            msm_err_prefix(err, "google_grpc.channel_credentials.ssl_credentials");
            return MSM_EINVAL;
        }
    } else if (cc && cc->credential_specifier_case ==
                         ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__GOOGLE_GRPC__CHANNEL_CREDENTIALS__CREDENTIAL_SPECIFIER_GOOGLE_DEFAULT) {
        return msm_err_set(err, "google_grpc.channel_credentials.google_default is not "
                                "supported");
    }
    if (gg->n_call_credentials) {
        return msm_err_set(err, "google_grpc.call_credentials are not supported");
    }
    t->desc = msm_xasprintf("google_grpc '%s'%s", t->target, t->tls ? " (TLS)" : "");
    return 0;
}

int msm_xds_target_resolve(const Envoy__Config__Bootstrap__V3__Bootstrap *b,
                           const Envoy__Config__Core__V3__GrpcService *gs,
                           struct msm_xds_target *out, struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    int rc;
    if (gs->target_specifier_case == ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC) {
        rc = resolve_envoy_grpc(b, gs->envoy_grpc, out, err);
    } else if (gs->target_specifier_case ==
               ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_GOOGLE_GRPC) {
        rc = resolve_google_grpc(gs->google_grpc, out, err);
    } else {
        rc = msm_err_set(err, "grpc_service needs envoy_grpc or google_grpc");
    }
    if (rc == 0 && gs->n_initial_metadata) {
        out->md_keys = msm_xcalloc(gs->n_initial_metadata, sizeof(char *));
        out->md_vals = msm_xcalloc(gs->n_initial_metadata, sizeof(char *));
        for (size_t i = 0; i < gs->n_initial_metadata; i++) {
            const Envoy__Config__Core__V3__HeaderValue *h = gs->initial_metadata[i];
            out->md_keys[out->n_md] = msm_xstrdup(h->key ? h->key : "");
            out->md_vals[out->n_md] = msm_xstrdup(h->value ? h->value : "");
            out->n_md++;
        }
    }
    if (rc < 0) {
        msm_xds_target_deinit(out);
    }
    return rc;
}

void msm_xds_target_deinit(struct msm_xds_target *t)
{
    free(t->target);
    free(t->desc);
    free(t->authority);
    free(t->stat_cluster);
    free(t->root_pem);
    free(t->cert_pem);
    free(t->key_pem);
    free(t->sni);
    for (int i = 0; i < t->n_md; i++) {
        free(t->md_keys[i]);
        free(t->md_vals[i]);
    }
    free(t->md_keys);
    free(t->md_vals);
    memset(t, 0, sizeof(*t));
}

static char *dup_or_null(const char *s)
{
    return s ? msm_xstrdup(s) : NULL;
}

void msm_xds_target_copy(struct msm_xds_target *dst, const struct msm_xds_target *src)
{
    *dst = *src;
    dst->target = dup_or_null(src->target);
    dst->desc = dup_or_null(src->desc);
    dst->authority = dup_or_null(src->authority);
    dst->stat_cluster = dup_or_null(src->stat_cluster);
    dst->root_pem = dup_or_null(src->root_pem);
    dst->cert_pem = dup_or_null(src->cert_pem);
    dst->key_pem = dup_or_null(src->key_pem);
    dst->sni = dup_or_null(src->sni);
    dst->md_keys = src->n_md ? msm_xcalloc((size_t)src->n_md, sizeof(char *)) : NULL;
    dst->md_vals = src->n_md ? msm_xcalloc((size_t)src->n_md, sizeof(char *)) : NULL;
    for (int i = 0; i < src->n_md; i++) {
        dst->md_keys[i] = msm_xstrdup(src->md_keys[i]);
        dst->md_vals[i] = msm_xstrdup(src->md_vals[i]);
    }
}
