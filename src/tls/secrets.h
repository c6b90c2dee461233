#pragma once
/* The secret manager (main thread): Envoy's SecretManager for TLS secrets.
 *
 * - Static secrets come from the bootstrap's static_resources.secrets and are referenced by
 *   name from an SdsSecretConfig without sds_config.
 * - SDS secrets are identified by (name, config source). The first TLS context that references
 *   one creates its provider and subscribes the name on that source through the xDS client
 *   (stats "sds.<name>."); providers no TLS context uses any more are unsubscribed by
 *   msm_secrets_gc.
 * - An accepted SDS update (msm_secrets_apply) validates the secret (PEM parses, the key
 *   matches the certificate), stores it, and rebuilds the context of every TLS factory that
 *   uses it: new connections use the new certificate, established ones keep theirs.
 * - Warming: a cluster or listener whose TLS factories are not warm (msm_tls_factory_warm)
 *   must stay out of snapshots; after msm_secrets_apply / msm_secrets_fetch_timeout returned
 *   > 0, owners re-check (msm_cm_secrets_changed, msm_lm_secrets_changed).
 * The process has one manager, msm_secrets (set by the server; tests set their own), which
 * TLS factories find while they are built. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "stats/stats.h"

struct msm_xds;
struct msm_xds_update;
struct msm_secret_manager;

extern struct msm_secret_manager *msm_secrets;

struct msm_secret_manager *msm_secrets_new(struct msm_stats_store *st);
/* Drop the manager's references (factories keep their providers alive). */
void msm_secrets_free(struct msm_secret_manager *sm);
/* A bootstrap static secret (envoy.extensions.transport_sockets.tls.v3.Secret). MSM_EINVAL with
 * <err> when invalid or a duplicate name. */
int msm_secrets_add_static(struct msm_secret_manager *sm, const void *secret_proto,
                           struct msm_err *err);
/* Subscribe through <x> (may be NULL: SDS references then stay unresolved); subscriptions
 * made before are sent now. */
void msm_secrets_set_xds(struct msm_secret_manager *sm, struct msm_xds *x);
/* An SDS response (type Secret). Valid secrets are applied; invalid ones are named in <err>
 * and the call returns MSM_EINVAL (NACK) after applying the valid ones. Otherwise returns the
 * number of secrets whose content changed. */
int msm_secrets_apply(struct msm_secret_manager *sm, const struct msm_xds_update *u,
                      struct msm_err *err);
/* The initial fetch of SDS secret <name> timed out: contexts waiting only for such secrets
 * count as warm (their connections fail until the secret arrives). Returns > 0 when something
 * may have finished warming. */
int msm_secrets_fetch_timeout(struct msm_secret_manager *sm, const char *name);
/* The first SDS secret referenced so far (NULL when none): without an xDS client it can never
 * arrive. */
const char *msm_secrets_first_sds(const struct msm_secret_manager *sm);
/* Unsubscribe SDS secrets no TLS context uses any more. */
void msm_secrets_gc(struct msm_secret_manager *sm);

/* For /config_dump: static and dynamic secrets with their accepted proto bytes (packed
 * envoy.extensions.transport_sockets.tls.v3.Secret; NULL while a dynamic one has not arrived:
 * warming). */
struct msm_secret_dump_item {
    const char *name;
    bool is_static;
    const char *version;
    double last_updated;
    const uint8_t *proto;
    size_t proto_len;
};
typedef void msm_secret_dump_fn(void *arg, const struct msm_secret_dump_item *it);
void msm_secrets_dump(const struct msm_secret_manager *sm, msm_secret_dump_fn *fn, void *arg);
