#pragma once
/* The admin HTTP/1.1 server on the bootstrap's admin address (main thread). Endpoints are a
 * table of {path, method rule, handler}; handlers write a body into a buffer and return the
 * HTTP status. The rest of Envoy's admin API arrives with the observability work. */
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include "buffer/buf.h"
#include "common/err.h"

struct msm_server;
struct msm_admin;

struct msm_admin_req {
    const char *method;
    const char *path;  /* without the query */
    const char *query; /* raw query string, "" when none */
    const char *body;
    size_t body_len;
};

struct msm_admin_resp {
    int status;
    const char *content_type; /* default text/plain; charset=UTF-8 */
    struct msm_buf body;
};

/* NULL with an empty <err> when the bootstrap has no admin (admin disabled, as in Envoy);
 * NULL with a message when it cannot bind. */
struct msm_admin *msm_admin_new(struct msm_server *srv, struct msm_err *err);
void msm_admin_free(struct msm_admin *a);
int msm_admin_validate(const Envoy__Config__Bootstrap__V3__Bootstrap *b, struct msm_err *err);
/* Query parameter lookup: returns true when <name> is present; <val> gets its decoded value
 * ("" for a bare flag). */
bool msm_admin_query_param(const char *query, const char *name, char *val, size_t n);
/* Dispatch one request (exposed for tests). */
void msm_admin_handle(struct msm_server *srv, const struct msm_admin_req *rq,
                      struct msm_admin_resp *rs);
