#pragma once
/* The admin HTTP/1.1 server on the bootstrap's admin address (main thread), with Envoy's admin
 * endpoints (see the table in admin.c and docs/admin.md). Handlers write a body into a buffer
 * and return the HTTP status; they run on the main loop and never block.
 *
 * Bounds (bad input never crashes or stalls the main loop): URL <= 8 KiB (414), headers
 * <= 64 KiB (431), body <= 1 MiB (413), malformed requests 400 and close; a request must be
 * complete within MSM_ADMIN_REQUEST_TIMEOUT_MS of its first byte (408 and close), an idle
 * keep-alive connection is closed after MSM_ADMIN_IDLE_TIMEOUT_MS, a client that stops reading
 * its response is dropped after MSM_ADMIN_WRITE_TIMEOUT_MS without progress, reading pauses while
 * more than 1 MiB of responses wait, and at most MSM_ADMIN_MAX_CONNS connections are served.
 *
 * Streamed responses (big bodies: /stats, /stats/prometheus): a handler may hand back a
 * producer instead of a whole body. The server then calls it once per loop iteration, each call
 * appending about MSM_ADMIN_STREAM_SLICE bytes (or doing a bounded step of preparation), and
 * sends each part as an HTTP/1.1 chunk (HTTP/1.0 clients: no length, close at the end). It
 * renders nothing while the connection's output is above the 1 MiB high watermark, so a slow
 * client holds at most ~2 MiB; the main loop serves other requests between calls. */
#include <jansson.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "buffer/buf.h"
#include "common/err.h"

#define MSM_ADMIN_REQUEST_TIMEOUT_MS 10000
#define MSM_ADMIN_IDLE_TIMEOUT_MS 300000
#define MSM_ADMIN_WRITE_TIMEOUT_MS 60000
#define MSM_ADMIN_MAX_CONNS 128

struct msm_server;
struct msm_admin;

struct msm_admin_req {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* raw query string, "" when none */
    const char *body;
    size_t body_len;
};

#define MSM_ADMIN_STREAM_SLICE (1024 * 1024)

/* A streamed body. <next> appends the next part to <out> (about <hint> bytes; may append
 * nothing while it prepares) and returns true while more follows, false after the last part.
 * <free> releases the producer (also when the client went away mid-stream). Main thread. */
struct msm_admin_stream_ops {
    bool (*next)(void *ctx, struct msm_buf *out, size_t hint);
    void (*free)(void *ctx);
};

struct msm_admin_resp {
    int status;
    const char *content_type; /* default text/plain; charset=UTF-8 */
    struct msm_buf body;      /* the whole body, or the first bytes of a streamed one */
    const struct msm_admin_stream_ops *stream; /* NULL: <body> is everything */
    void *stream_ctx;
};

/* NULL with an empty <err> when the bootstrap has no admin (admin disabled, as in Envoy);
 * NULL with a message when it cannot bind. */
struct msm_admin *msm_admin_new(struct msm_server *srv, struct msm_err *err);
void msm_admin_free(struct msm_admin *a);
int msm_admin_validate(const Envoy__Config__Bootstrap__V3__Bootstrap *b, struct msm_err *err);
/* Query parameter lookup: returns true when <name> is present; <val> gets its decoded value
 * ("" for a bare flag; truncated to <n> - 1 bytes). */
bool msm_admin_query_param(const char *query, const char *name, char *val, size_t n);
/* Render the rest of a streamed response into <rs->body> at once (tests, non-streaming
 * callers); no-op for a plain response. */
void msm_admin_resp_finish(struct msm_admin_resp *rs);
/* Dispatch one request (exposed for tests). */
void msm_admin_handle(struct msm_server *srv, const struct msm_admin_req *rq,
                      struct msm_admin_resp *rs);

/* /certs: the TLS code registers a provider that appends one envoy.admin.v3.Certificate JSON
 * object (proto3 JSON, snake_case: {"ca_cert": [...], "cert_chain": [...]}) per certificate
 * context to <certificates> (a JSON array). Without a provider /certs prints no certificate.
 * Main thread; <arg> is passed back. */
typedef void msm_admin_certs_fn(void *arg, json_t *certificates);
void msm_admin_set_certs_provider(msm_admin_certs_fn *fn, void *arg);
void msm_admin_get_certs(json_t *certificates);

/* /rtsp/sessions: the RTSP proxy registers a provider that appends one JSON object per live
 * RTSP session (client and upstream) to <sessions> (a JSON array); without one the list is
 * empty. Main thread; <arg> is passed back. */
typedef void msm_admin_sessions_fn(void *arg, json_t *sessions);
void msm_admin_set_rtsp_sessions_provider(msm_admin_sessions_fn *fn, void *arg);
