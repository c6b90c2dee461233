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
 * - <filter> has one bit per name present (a one-hash Bloom filter over a mix of the length and
 *   three bytes): a lookup of a name whose bit is clear returns at once without a scan (most
 *   lookups miss: the connection manager and the router strip a dozen x-envoy-* names from
 *   every request). A set bit only means "scan"; removals leave it set.
 * - The entry array and the string chunks come from per-thread recycled memory
 *   (buffer/recycle.h): a request builds and drops about half a dozen maps.
 * A map belongs to one thread (the stream's worker).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
    uint64_t filter;
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
/* Append a header whose <name> is already lower-case, copied as is: the HTTP/2 codecs, whose
 * nghttp2 session (HTTP messaging on) resets a stream with an upper-case name before any
 * callback. */
void msm_hdrs_add_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen);
/* msm_hdrs_add_lc at the end, for a sender that already puts pseudo-headers first: nghttp2
 * (HTTP messaging on) resets a stream whose pseudo-header follows a regular one, before any
 * callback for it. Also the cheap add of a regular lower-case name known to be absent. */
void msm_hdrs_append_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                        size_t vlen);
/* The filter bit of a name (see <filter>): a multiplicative mix of the length and the second,
 * middle and last bytes, where well-known names differ (x-envoy-* share a prefix). Inline, so
 * that for a constant name the bit is a constant and a lookup that misses costs a test. */
static inline uint64_t msm_hdrs_name_bit(const char *name, size_t nlen)
{
    if (!nlen) {
        return 1;
    }
    uint32_t x = (uint32_t)nlen * 0x9e3779b1u ^ (uint8_t)name[nlen - 1] * 0x85ebca6bu ^
                 (uint8_t)name[nlen >> 1] * 0xc2b2ae35u ^ (uint8_t)name[nlen > 1] * 0x27d4eb2fu;
    return (uint64_t)1 << (x >> 26);
}
/* The scans behind the lookups below, for <name> of <nlen> bytes. */
const struct msm_hdr *msm_hdrs_findn(const struct msm_hdrs *h, const char *name, size_t nlen);
int msm_hdrs_countn(const struct msm_hdrs *h, const char *name, size_t nlen);
int msm_hdrs_removen(struct msm_hdrs *h, const char *name, size_t nlen);
/* First header called <name> (lower-case), or NULL. */
static inline const struct msm_hdr *msm_hdrs_find(const struct msm_hdrs *h, const char *name)
{
    size_t nlen = strlen(name);
    return h->filter & msm_hdrs_name_bit(name, nlen) ? msm_hdrs_findn(h, name, nlen) : NULL;
}
/* Value of the first header called <name> (lower-case), or NULL. */
static inline const char *msm_hdrs_get(const struct msm_hdrs *h, const char *name)
{
    const struct msm_hdr *e = msm_hdrs_find(h, name);
    return e ? e->value : NULL;
}
static inline int msm_hdrs_count(const struct msm_hdrs *h, const char *name)
{
    size_t nlen = strlen(name);
    return h->filter & msm_hdrs_name_bit(name, nlen) ? msm_hdrs_countn(h, name, nlen) : 0;
}
/* Replace every <name> header by one with <value> (appended when absent; pseudo-headers are
 * inserted before the first regular header). */
void msm_hdrs_set_nv(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen);
/* msm_hdrs_set_nv for a <name> already lower-case (a literal): appended without folding. The
 * per-request headers of the connection manager and the router. */
void msm_hdrs_set_lc(struct msm_hdrs *h, const char *name, size_t nlen, const char *value,
                     size_t vlen);
/* Inline, for a constant lower-case <name> (a literal): its length is folded at compile time
 * and it is copied without folding (msm_hdrs_set_lc). */
static inline void msm_hdrs_setn(struct msm_hdrs *h, const char *name, const char *value,
                                 size_t vlen)
{
    msm_hdrs_set_lc(h, name, strlen(name), value, vlen);
}
static inline void msm_hdrs_set(struct msm_hdrs *h, const char *name, const char *value)
{
    msm_hdrs_set_nv(h, name, strlen(name), value, strlen(value));
}
/* Remove every <name> header; returns how many were removed. */
static inline int msm_hdrs_remove(struct msm_hdrs *h, const char *name)
{
    size_t nlen = strlen(name);
    return h->filter & msm_hdrs_name_bit(name, nlen) ? msm_hdrs_removen(h, name, nlen) : 0;
}
/* Remove every header whose name starts with <prefix>. */
int msm_hdrs_remove_prefix(struct msm_hdrs *h, const char *prefix);
/* Append a copy of every header of <src> to <dst> (one allocation when <dst> is empty). */
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
/* The grpc-timeout header value ("10S", "250m": at most 8 digits and a unit) in milliseconds,
 * rounded up; false when malformed. */
bool msm_grpc_timeout_ms(const char *v, uint64_t *ms);
/* The gRPC status for an HTTP status, as Envoy's Grpc::Utility::httpToGrpcStatus (gRPC's
 * "HTTP to gRPC status code mapping"). */
int msm_grpc_status_of_http(int status);
/* A gRPC content-type, as Envoy's Grpc::Common::hasGrpcContentType: "application/grpc" alone
 * or followed by "+<codec>" (here also ";<parameters>"); not gRPC-Web. NULL: false. */
bool msm_http_is_grpc_content_type(const char *ct);
/* The first ":status" of <h> as a number, <dflt> when there is none: three digits (what every
 * codec produces) without strtol, anything else as atoi reads it. For the per-response readers
 * (router, connection manager, HTTP/1 encoder). */
int msm_hdrs_status(const struct msm_hdrs *h, int dflt);
