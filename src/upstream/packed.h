#pragma once
/* Resources kept as received for /config_dump (clusters, assignments), stored compactly: each
 * is encoded against a reference, the bytes of an earlier resource of the same kind (Istio's
 * clusters differ in their names and little else), as literal runs and copies from the
 * reference. ~1 KB clusters keep ~0.2 KB. Main thread only (the cluster manager's). */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The reference: refcounted, shared by every resource encoded against it. */
struct msm_packed_ref;

/* Per kind of resource: the current reference, replaced when resources stop looking like it. */
struct msm_packed_kind {
    struct msm_packed_ref *ref;
};

/* One stored resource. */
struct msm_packed {
    uint8_t *data;              /* encoded, or the bytes themselves when <ref> is NULL */
    size_t len;                 /* of <data> */
    size_t raw_len;             /* of the resource */
    struct msm_packed_ref *ref; /* a reference held, or NULL */
};

/* Store <len> bytes at <bytes> into <out> (any previous content freed first). */
void msm_packed_set(struct msm_packed_kind *k, struct msm_packed *out, const uint8_t *bytes,
                    size_t len);
/* The resource's bytes: <p>'s own when stored as is, else decoded into a new buffer put in
 * <*tmp> (free() it after use; NULL when nothing was allocated). NULL only on a corrupt
 * encoding (never expected: logged by the caller). */
const uint8_t *msm_packed_get(const struct msm_packed *p, uint8_t **tmp);
void msm_packed_clear(struct msm_packed *p);
void msm_packed_kind_deinit(struct msm_packed_kind *k);
