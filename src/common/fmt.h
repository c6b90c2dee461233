#pragma once
/* Decimal formatting without printf, for output written per request or per stat (header
 * values, addresses, admin bodies). */
#include <stddef.h>
#include <stdint.h>

/* Write <v> in decimal and a NUL to <out> (21 bytes fit any value); returns the length. */
static inline size_t msm_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}
