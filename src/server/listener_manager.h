#pragma once
/* The listener manager (main thread): static and dynamic (LDS) listeners, their sockets, and
 * what a config update does to them.
 *
 * - Add: the listener config is built and validated first; a bind_to_port listener gets its
 *   sockets at once (a bind failure rejects the listener), then it is published.
 * - Modify (same name, different proto): the new config replaces the old in the next
 *   snapshot; the socket is kept when the address is unchanged. Connections keep the filter
 *   chain they started with; workers drain (close after --drain-time-s) connections whose
 *   filter chain no longer exists, and keep those whose chain is unchanged (Envoy's in-place
 *   filter chain update).
 * - Remove: stops accepting; its connections drain for --drain-time-s.
 * Static listeners cannot be modified or removed through LDS. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "config/snapshot.h"

struct msm_server;
struct msm_listener_manager;

enum msm_lm_result {
    MSM_LM_ADDED = 0,
    MSM_LM_MODIFIED = 1,
    MSM_LM_UNCHANGED = 2,
};

struct msm_listener_manager *msm_lm_new(struct msm_server *srv, int n_workers);
void msm_lm_free(struct msm_listener_manager *lm);
/* From an envoy.config.listener.v3.Listener. enum msm_lm_result, or negative with <err>. */
int msm_lm_add(struct msm_listener_manager *lm, const void *listener_proto, const char *version,
               bool is_static, bool validate_only, struct msm_err *err);
int msm_lm_remove(struct msm_listener_manager *lm, const char *name);
/* Every served listener; a listener waiting for TLS secrets (warming) is left out, or served
 * in the version it replaces. */
void msm_lm_fill_snapshot(struct msm_listener_manager *lm, struct msm_snapshot *s);
/* TLS secrets or RDS route configurations arrived (or timed out): warming listeners whose
 * dependencies are all ready now replace their previous version. Returns how many (publish a
 * snapshot when > 0). */
int msm_lm_secrets_changed(struct msm_listener_manager *lm);
/* The RDS route configurations the listeners need (their HCMs' rds), de-duplicated by name:
 * up to <max> borrowed pointers into <out> (valid until the listeners change); returns how
 * many there are. Listeners whose names are not ready (src/http/rds.h) are warming. */
struct msm_filter_rds_dep;
int msm_lm_rds_deps(const struct msm_listener_manager *lm, const struct msm_filter_rds_dep **out,
                    int max);
/* Listeners still waiting for an RDS route configuration (start-up waits for none). */
int msm_lm_rds_pending(const struct msm_listener_manager *lm);
/* Listeners still waiting for TLS secrets. */
int msm_lm_warming(const struct msm_listener_manager *lm);
int msm_lm_count(const struct msm_listener_manager *lm);
char **msm_lm_dynamic_names(const struct msm_listener_manager *lm, int *n);
/* Stop listening (new connections are refused) without closing the fds (drain). */
void msm_lm_stop_listening(struct msm_listener_manager *lm);

struct msm_lm_dump_item {
    const char *name;
    bool is_static;
    const char *version;
    double last_updated;
    const uint8_t *proto;
    size_t proto_len;
    const struct msm_listen_socket *sock;
    const struct msm_address *addr; /* as configured (port 0 unresolved); sock has the bound one */
};
typedef void msm_lm_dump_fn(void *arg, const struct msm_lm_dump_item *it);
void msm_lm_dump(const struct msm_listener_manager *lm, msm_lm_dump_fn *fn, void *arg);

/* /drain_listeners: stop serving every listener (<inbound_only>: those with traffic_direction
 * INBOUND); their sockets close once the workers took the next snapshot (publish one), and
 * later LDS versions of them stay stopped. Existing connections are not touched. Returns how
 * many listeners were stopped. Main thread. */
int msm_lm_stop_listeners(struct msm_listener_manager *lm, bool inbound_only);
/* Sum of the listeners' downstream_cx_active (server.total_connections). */
uint64_t msm_lm_total_connections(const struct msm_listener_manager *lm);
