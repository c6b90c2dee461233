/* Fuzz the TLS inspector (src/net/inspect_tls.c): any bytes, whole and as a prefix. Checks the
 * output's invariants, and that a ClientHello found in a prefix is found, identical, in the
 * whole input (the inspector never looks past the hello). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/inspect_tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct msm_tls_hello *h, enum msm_inspect_result r)
{
    if (r != MSM_INSPECT_NEED_MORE && r != MSM_INSPECT_NO && r != MSM_INSPECT_YES) {
        abort();
    }
    if (memchr(h->sni, 0, sizeof(h->sni)) == NULL || (h->has_sni && !h->sni[0])) {
        abort();
    }
    if (h->n_alpn < 0 || h->n_alpn > MSM_TLS_ALPN_MAX) {
        abort();
    }
    for (int i = 0; i < h->n_alpn; i++) {
        const char *a = h->alpn[i];
        if (a < h->alpn_buf || a >= h->alpn_buf + sizeof(h->alpn_buf) || !a[0] ||
            !memchr(a, 0, (size_t)(h->alpn_buf + sizeof(h->alpn_buf) - a))) {
            abort();
        }
    }
    if (r != MSM_INSPECT_YES && (h->has_sni || h->n_alpn)) {
        abort(); /* SNI/ALPN only come with a complete hello */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct msm_tls_hello whole, part;
    enum msm_inspect_result r = msm_tls_inspect(data, size, &whole);
    check(&whole, r);
    enum msm_inspect_result rp = msm_tls_inspect(data, size / 2, &part);
    check(&part, rp);
    if (rp == MSM_INSPECT_YES &&
        (r != MSM_INSPECT_YES || strcmp(part.sni, whole.sni) != 0 || part.n_alpn != whole.n_alpn)) {
        abort();
    }
    return 0;
}
