#pragma once
/* /certs (main thread): one envoy.admin.v3.Certificate per built TLS context (listener filter
 * chains and clusters), with the details of its trusted CA (first certificate of the bundle)
 * and of its certificate (leaf), from inline, static or SDS material. Registered by the server
 * with msm_admin_set_certs_provider. */
#include <jansson.h>

void msm_tls_admin_certs(void *arg, json_t *certificates);
