#pragma once
/* Base64 (RFC 4648), the one implementation: proto3 JSON `bytes` fields (both alphabets) and
 * Istio's x-envoy-peer-metadata header (Envoy's decodeWithoutPadding rules). Input comes from
 * the network and config files: every character is checked, nothing is assumed. */
#include <stddef.h>
#include <stdint.h>

/* Standard alphabet, padded; malloc'ed and NUL-terminated. */
char *msm_base64_encode(const uint8_t *data, size_t len);

#define MSM_BASE64_URL 1u         /* also accept '-' and '_' (the URL-safe alphabet) */
#define MSM_BASE64_PARTIAL_PAD 2u /* '=' may be short of a 4-character group ("QQ=") */
#define MSM_BASE64_STRICT_TAIL 4u /* bits of the last character past the data must be zero */

/* Decode <len> characters of <s> (up to two trailing '=', optional). 0 with the bytes in *out
 * (malloc'ed; NULL when *outlen is 0), or -1 with *out NULL and *outlen 0. */
int msm_base64_decode(const char *s, size_t len, unsigned flags, uint8_t **out, size_t *outlen);
