#pragma once
/* Transport sockets: what sits between a connection's fd and its byte buffers (haproxy xprt,
 * Envoy TransportSocket). raw_buffer moves bytes as they are; TLS (src/tls/) encrypts.
 *
 * A connection (net/conn.c) always calls through c->tr->ops. Contract of each slot (worker
 * thread of the connection; <c> is the connection that owns <t>):
 * - name: the transport protocol ("raw_buffer", "tls").
 * - handshake (optional; NULL = none): make progress on the handshake. 0 when done,
 *   MSM_EAGAIN when waiting for the socket (t->want says for what: EV_READ and/or EV_WRITE),
 *   any other negative code when it failed (c->close_detail says why). The connection calls it
 *   after connect() succeeded (client) or once reading starts (server) until it returns 0; no
 *   application byte moves before that.
 * - read: read at most <max> bytes into c->in. Bytes read (> 0), 0 at the end of the stream
 *   (FIN or close_notify), -EAGAIN when nothing is available (t->want tells what the transport
 *   waits for when it is not EV_READ), or another negative code on error (c->close_detail may
 *   be set). After bytes were read, t->drained may say that another read would only find
 *   EAGAIN (the transport holds nothing and the socket was empty): the connection stops there
 *   (the fd's level-triggered readiness brings it back for anything that came since).
 * - write: write as much of c->out as the socket takes, draining what was written. Bytes
 *   written (>= 0), -EAGAIN when nothing could be written, or another negative code.
 * - shutdown_write (optional): the write side ends after c->out was flushed: send what the
 *   protocol needs (close_notify) before shutdown(SHUT_WR). 0 done, MSM_EAGAIN to retry when
 *   writable.
 * - has_pending (optional): bytes are readable from the transport without the fd becoming
 *   readable (TLS records read ahead or decrypted ahead); the connection then schedules a read
 *   itself whenever it may read (after a read stopped by its budget, a resume after
 *   read_disable, the handshake's end). False when what the transport holds is an incomplete
 *   record and the socket was empty (only the fd can bring the rest: no busy loop).
 * - close (optional): the fd is about to be closed; <abortive> when it is closed on an error.
 *   TLS sends close_notify (best effort) when not abortive.
 * - info (optional): what the handshake established (NULL before it completed).
 * - free: release <t> (from the connection's deferred free).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct msm_conn;
struct msm_transport;

/* What a TLS handshake established, for filters (RBAC principals, metadata exchange). Owned by
 * the transport; valid until the connection is freed. */
struct msm_tls_info {
    bool peer_cert_presented;
    bool peer_cert_validated; /* chain verified against a trusted CA */
    char **uri_sans, **dns_sans;
    int n_uri_sans, n_dns_sans;
    char *peer_subject; /* RFC 2253 */
    char *local_uri_san; /* first URI SAN of the certificate we presented; NULL none */
    char *sni;          /* requested server name: sent (client) or received (server); NULL none */
    char *alpn;         /* negotiated application protocol; NULL none */
    const char *version; /* "TLSv1.3" */
    const char *cipher;  /* "TLS_AES_128_GCM_SHA256" */
};

struct msm_transport_ops {
    const char *name;
    int (*handshake)(struct msm_transport *t, struct msm_conn *c);
    ssize_t (*read)(struct msm_transport *t, struct msm_conn *c, size_t max);
    ssize_t (*write)(struct msm_transport *t, struct msm_conn *c);
    int (*shutdown_write)(struct msm_transport *t, struct msm_conn *c);
    bool (*has_pending)(const struct msm_transport *t);
    void (*close)(struct msm_transport *t, struct msm_conn *c, bool abortive);
    const struct msm_tls_info *(*info)(const struct msm_transport *t);
    void (*free)(struct msm_transport *t);
};

struct msm_transport {
    const struct msm_transport_ops *ops;
    /* EV_READ / EV_WRITE the last blocked operation waits for; 0 = the natural direction. */
    int want;
    bool drained; /* see read; never set by the shared raw_buffer transport */
};

/* The shared raw_buffer transport (stateless; every connection starts with it). */
extern struct msm_transport msm_transport_raw;
