#pragma once
/* Protocol-buffer wire primitives for code that walks encoded messages without unpacking them
 * (xDS response checks, the packed copies kept for /config_dump, proto-JSON's Any handling). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Read the varint at p[*i] (len bytes in all) into *out and advance *i. False when it is
 * truncated or longer than 10 bytes; bits beyond 64 are dropped, as protobuf-c does. */
static inline bool msm_pb_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < 10 && *i < len; k++) {
        uint8_t b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << (7 * k);
        if (!(b & 0x80)) {
            *out = v;
            return true;
        }
    }
    return false;
}

/* Write <v> as a varint at <o> (room for 10 bytes); returns the bytes written. */
static inline size_t msm_pb_put_varint(uint8_t *o, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        o[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    o[n++] = (uint8_t)v;
    return n;
}
