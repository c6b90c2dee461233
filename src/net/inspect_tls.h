#pragma once
/* envoy.filters.listener.tls_inspector as a pure function over peeked bytes (see
 * net/inspect.h): is this the start of a TLS connection, and which server name and ALPN
 * protocols does its ClientHello carry? Never consumes, never allocates. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/inspect.h"

/* The largest ClientHello handshake message looked at (Envoy's max_client_hello_size default);
 * a larger one is MSM_INSPECT_NO with too_large set. */
#define MSM_TLS_CLIENT_HELLO_MAX (64 * 1024)
#define MSM_TLS_ALPN_MAX 16

struct msm_tls_hello {
    bool too_large;            /* NO because the ClientHello exceeds MSM_TLS_CLIENT_HELLO_MAX */
    bool has_sni;
    char sni[256];             /* host_name of the server_name extension ("" when none) */
    int n_alpn;                /* ALPN protocols offered, in the client's order */
    const char *alpn[MSM_TLS_ALPN_MAX]; /* point into alpn_buf */
    bool alpn_truncated;       /* more (or longer) protocols than fit were offered */
    char alpn_buf[1024];
};

/* Envoy's tls_inspector stats ("tls_inspector." + name). */
#define MSM_TLS_INSPECTOR_STATS(C, G, H)                                                          \
    C(client_hello_too_large) C(tls_found) C(tls_not_found) C(alpn_found) C(alpn_not_found)       \
    C(sni_found) C(sni_not_found) H(bytes_processed)

/* Look at the first <len> bytes of a connection:
 * - MSM_INSPECT_NEED_MORE: a TLS handshake record so far; the ClientHello is not complete yet.
 * - MSM_INSPECT_NO: not TLS (another protocol, SSLv2, or a malformed ClientHello: what a TLS
 *   server would reject), or a ClientHello larger than MSM_TLS_CLIENT_HELLO_MAX (too_large).
 * - MSM_INSPECT_YES: a well-formed ClientHello; <out> has its SNI and ALPN list.
 * The ClientHello may span several records. <out> is written in every case (no SNI and no
 * ALPN unless YES). */
enum msm_inspect_result msm_tls_inspect(const uint8_t *data, size_t len,
                                        struct msm_tls_hello *out);
