#pragma once
/* HTTP header maps: an ordered list of (name, value) pairs, names lower-cased, shared by the
 * HTTP/1 and HTTP/2 codecs, the connection manager, the route matcher and HTTP filters.
 *
 * Invariants:
 * - Names are stored lower-case (HTTP/2 requires it; HTTP/1 input is folded on insertion), and
 *   name and value are NUL-terminated copies owned by the map. Codecs reject NUL, CR and LF in
 *   values before insertion, so a value is a C string.
 * - Requests and responses carry HTTP/2-style pseudo-headers whatever the codec (":method",
 *   ":path", ":authority", ":scheme" / ":status"), as Envoy does: the HTTP/1 codec builds them
 *   from the request or status line and the Host header, and emits them back as such.
 * - <bytes> is the sum of name and value lengths (limit accounting).
 * - The entry array and the string chunks come from per-thread recycled memory
 *   (buffer/recycle.h): a request builds and drops about half a dozen maps.
 * A map belongs to one thread (the stream's worker).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct msm_hdr {
    char *name;  /* lower-case */
    char *value;
    uint32_t nlen, vlen;
};

struct msm_hdrs_chunk;

struct msm_hdrs {
    struct msm_hdr *v;
    uint32_t n, cap;
    size_t bytes;
    /* Storage of the names and values: bump-allocated chunks freed with the map (a removed or
     * replaced entry's bytes stay until then). A map lives for one message. */
    struct msm_hdrs_chunk *chunks;
};

void msm_hdrs_init(struct msm_hdrs *h);
void msm_hdrs_deinit(struct msm_hdrs *h);
/* Append a header; <name> is lower-cased. */
void msm_hdrs_add(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                  size_t vlen);
void msm_hdrs_addz(struct msm_hdrs *h, const char *name, const char *value);
/* Value of the first header called <name> (lower-case), or NULL. */
const char *msm_hdrs_get(const struct msm_hdrs *h, const char *name);
const struct msm_hdr *msm_hdrs_find(const struct msm_hdrs *h, const char *name);
int msm_hdrs_count(const struct msm_hdrs *h, const char *name);
/* Replace every <name> header by one with <value> (appended when absent; pseudo-headers are
 * inserted before the first regular header). */
void msm_hdrs_set(struct msm_hdrs *h, const char *name, const char *value);
void msm_hdrs_setn(struct msm_hdrs *h, const char *name, const char *value, size_t vlen);
/* Remove every <name> header; returns how many were removed. */
int msm_hdrs_remove(struct msm_hdrs *h, const char *name);
/* Remove every header whose name starts with <prefix>. */
int msm_hdrs_remove_prefix(struct msm_hdrs *h, const char *prefix);
/* Append a copy of every header of <src> to <dst>. */
void msm_hdrs_copy(struct msm_hdrs *dst, const struct msm_hdrs *src);
/* Move everything from <src> into the empty <dst>; <src> becomes empty. */
void msm_hdrs_move(struct msm_hdrs *dst, struct msm_hdrs *src);
/* Heap-allocated map, empty. Free with msm_hdrs_free. */
struct msm_hdrs *msm_hdrs_new(void);
void msm_hdrs_free(struct msm_hdrs *h);

/* Does the comma-separated header <value> contain token <tok> (case-insensitive)? */
bool msm_http_token_in_list(const char *value, const char *tok);
/* RFC 7230 token characters (header names, methods). */
bool msm_http_is_token(const char *s, size_t n);
/* Field value: no NUL, CR or LF; other controls but HTAB rejected too (Envoy/nghttp2). */
bool msm_http_valid_value(const char *s, size_t n);
/* Canonical reason phrase of <code> ("Not Found"), "Unknown" when none. */
const char *msm_http_reason(int code);
/* Parse a non-negative decimal without sign or spaces into *out; false on garbage/overflow. */
bool msm_http_parse_u64(const char *s, size_t n, uint64_t *out);
