#pragma once
/* A stream connection (TCP or unix) owned by one worker loop.
 *
 * States: CONNECTING -> OPEN -> (read side closed / write side shut) -> CLOSED.
 * - Reading: bytes land in <in>; the handler's on_read runs after each read batch with
 *   end_stream=true once the peer's FIN arrived (half-close enabled) — it then owns what is in
 *   <in> (it usually moves it elsewhere). Without half-close, a FIN closes the connection.
 * - Writing: msm_conn_write moves bytes into <out> (no copy) and flushes as the socket allows;
 *   end_stream shuts the write side once <out> is empty. <out> crossing the high watermark
 *   calls on_watermark(above=true), and dropping to the low watermark calls it with false.
 * - Closing: msm_conn_close stops all I/O (after flushing <out> with MSM_CLOSE_FLUSH), closes
 *   the fd, calls on_event once with the close reason, and frees the connection later
 *   (deferred), so callers may close from inside any callback. After close no handler callback
 *   runs again. The owner must not touch the connection after on_event(close).
 * - Transport (net/transport.h): bytes go through c->tr (raw_buffer unless
 *   msm_conn_set_transport installed another). A transport with a handshake runs it before any
 *   application byte moves: a client connection reports CONNECTED only once the handshake is
 *   done (connect_timeout covers TCP connect and handshake; a failed handshake is
 *   CONNECT_FAILED); an accepted connection reports CONNECTED to its handler when its handshake
 *   is done (a failure or the handshake timeout closes it with LOCAL_CLOSE). Writes made during
 *   the handshake wait in <out>.
 */
#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffer/buf.h"
#include "event/deferred.h"
#include "net/address.h"
#include "net/transport.h"

enum msm_conn_event {
    MSM_CONN_CONNECTED = 0,
    MSM_CONN_REMOTE_CLOSE = 1,   /* peer reset/closed, or read/write error */
    MSM_CONN_LOCAL_CLOSE = 2,    /* msm_conn_close */
    MSM_CONN_CONNECT_FAILED = 3, /* connect() refused/unreachable */
    MSM_CONN_CONNECT_TIMEOUT = 4,
};

enum msm_close_type {
    MSM_CLOSE_NOFLUSH = 0,
    MSM_CLOSE_FLUSH = 1, /* write what is buffered first (bounded by a no-progress timeout) */
};

struct msm_conn;

struct msm_conn_handler {
    void (*on_read)(struct msm_conn *c, void *ctx, bool end_stream);
    void (*on_event)(struct msm_conn *c, void *ctx, enum msm_conn_event ev);
    void (*on_watermark)(struct msm_conn *c, void *ctx, bool above); /* optional */
};

#define MSM_CONN_F_CONNECTING 0x01u
#define MSM_CONN_F_READ_EOF 0x02u     /* FIN received */
#define MSM_CONN_F_WRITE_EOF 0x04u    /* end_stream queued */
#define MSM_CONN_F_WRITE_SHUT 0x08u   /* shutdown(SHUT_WR) done */
#define MSM_CONN_F_CLOSING 0x10u      /* flush then close */
#define MSM_CONN_F_CLOSED 0x20u
#define MSM_CONN_F_HALF_CLOSE 0x40u   /* FIN is delivered as end_stream, not a close */
#define MSM_CONN_F_ABOVE_WM 0x80u
#define MSM_CONN_F_IN_CALLBACK 0x100u
#define MSM_CONN_F_HANDSHAKE 0x200u   /* transport handshake in progress */
#define MSM_CONN_F_TIMED_OUT 0x400u   /* closed by the handshake timeout */
#define MSM_CONN_F_CLIENT 0x800u      /* made by msm_conn_connect */
#define MSM_CONN_F_WRITE_NOW 0x1000u  /* writes leave at once, not coalesced per round */

struct msm_conn {
    struct ev_loop *loop;
    unsigned long long id;
    int fd;
    uint32_t flags;
    int read_disable; /* nesting count; reading resumes at 0 */
    ev_io io;
    struct msm_ready ready; /* this round's io events, queued (event/deferred.h) */
    int ready_revents;      /* their events; 0 = not queued */
    struct msm_ready flush; /* this round's writes, coalesced */
    bool flush_queued;
    ev_timer timer; /* connect timeout, then flush-close timeout */
    struct msm_buf in, out;
    uint32_t high_wm, low_wm; /* 0 = no watermarks */
    const struct msm_conn_handler *h;
    void *ctx;
    struct msm_address local, remote;
    uint64_t rx_bytes, tx_bytes;
    double connect_start; /* ev_now at connect, for upstream_cx_connect_ms */
    const char *close_detail; /* short reason for logs (static string) */
    struct msm_transport *tr; /* never NULL: &msm_transport_raw by default */
};

/* Wrap an accepted, non-blocking <fd>. Returns a connection that reads once
 * msm_conn_start_reading is called. Ownership of <fd> passes to the connection. */
struct msm_conn *msm_conn_accepted(struct ev_loop *loop, int fd, const struct msm_address *local,
                                   const struct msm_address *remote);
/* Start a non-blocking connect to <to>, from <bind> when non-NULL (upstream_bind_config).
 * timeout_ms 0 = none. Returns NULL with -errno in *rc when the socket cannot even be created
 * (EMFILE...); connect errors are reported through on_event(CONNECT_FAILED) later. */
struct msm_conn *msm_conn_connect(struct ev_loop *loop, const struct msm_address *to,
                                  const struct msm_address *bind, uint32_t timeout_ms,
                                  const struct msm_conn_handler *h, void *ctx, int *rc);
void msm_conn_set_handler(struct msm_conn *c, const struct msm_conn_handler *h, void *ctx);
void msm_conn_set_watermarks(struct msm_conn *c, uint32_t high);
void msm_conn_enable_half_close(struct msm_conn *c, bool on);
/* Writes to <c> leave at once instead of after the round of callbacks (event/deferred.h): for a
 * byte stream that writes once per read (tcp_proxy), where coalescing saves no system call and
 * holds each connection's data until every ready connection of the round was read. */
void msm_conn_write_now(struct msm_conn *c, bool on);
void msm_conn_start_reading(struct msm_conn *c);
/* Nestable: each disable needs one enable. */
void msm_conn_read_disable(struct msm_conn *c, bool disable);
/* Move all of <data> into the write buffer; <end_stream> half-closes after it is flushed. */
void msm_conn_write(struct msm_conn *c, struct msm_buf *data, bool end_stream);
void msm_conn_close(struct msm_conn *c, enum msm_close_type how);
bool msm_conn_is_closed(const struct msm_conn *c);
/* Install transport <t> (ownership passes to the connection) before any byte moved: right after
 * msm_conn_connect, or after msm_conn_accepted and before msm_conn_start_reading. For an
 * accepted connection, <handshake_timeout_ms> (0 = none) bounds the handshake. */
void msm_conn_set_transport(struct msm_conn *c, struct msm_transport *t,
                            uint32_t handshake_timeout_ms);
/* What the TLS handshake established; NULL for raw connections and before the handshake. */
const struct msm_tls_info *msm_conn_tls_info(const struct msm_conn *c);
int msm_set_nonblock(int fd);
