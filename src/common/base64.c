#include "common/base64.h"

#include <stdlib.h>

#include "common/alloc.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *msm_base64_encode(const uint8_t *data, size_t len)
{
    char *out = msm_xmalloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)data[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= data[i + 2];
        }
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int value_of(unsigned char c, unsigned flags)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || (c == '-' && (flags & MSM_BASE64_URL))) {
        return 62;
    }
    if (c == '/' || (c == '_' && (flags & MSM_BASE64_URL))) {
        return 63;
    }
    return -1;
}

int msm_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    size_t n = len;
    size_t pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if ((pad && len % 4 != 0 && !(flags & MSM_BASE64_PARTIAL_PAD)) || n % 4 == 1) {
        return -1; /* a lone sixth of a byte, or padding that does not end a group */
    }
    size_t cap = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    uint8_t *buf = cap ? msm_xmalloc(cap) : NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    int last = 0;
    for (size_t i = 0; i < n; i++) {
        last = value_of((unsigned char)s[i], flags);
        if (last < 0) {
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)last;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    if ((flags & MSM_BASE64_STRICT_TAIL) && (last & ((1 << bits) - 1))) {
        free(buf);
        return -1;
    }
    *out = buf;
    *outlen = o;
    return 0;
}
