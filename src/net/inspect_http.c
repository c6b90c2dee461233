#include <stdbool.h>
#include <string.h>

#include "net/inspect.h"

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* The methods http-parser accepts, as Envoy's inspector does. */
static const char *const methods[] = {
    "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK",
    "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND",
    "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE",
};

/* Could <s> (len n, no space yet) still become a known method, or is it one? */
static int method_state(const uint8_t *s, size_t n, int complete)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t ml = strlen(methods[i]);
        if (complete ? (ml == n && !memcmp(methods[i], s, n))
                     : (n <= ml && !memcmp(methods[i], s, n))) {
            return 1;
        }
    }
    return 0;
}

enum msm_inspect_result msm_http_inspect(const uint8_t *d, size_t len, const char **alpn)
{
    size_t pl = sizeof(h2_preface) - 1;
    size_t k = len < pl ? len : pl;
    if (k && !memcmp(d, h2_preface, k)) {
        if (len < pl) {
            return MSM_INSPECT_NEED_MORE;
        }
        *alpn = "h2c";
        return MSM_INSPECT_YES;
    }
    /* Method token. */
    size_t i = 0;
    while (i < len && d[i] != ' ') {
        i++;
    }
    if (i == len) {
        if (len > 16 || !method_state(d, len, 0)) {
            return MSM_INSPECT_NO;
        }
        return MSM_INSPECT_NEED_MORE;
    }
    if (!method_state(d, i, 1)) {
        return MSM_INSPECT_NO;
    }
    /* Request target: non-empty, no controls or spaces. */
    size_t t = ++i;
    while (i < len && d[i] != ' ') {
        if (d[i] < 0x21 || d[i] == 0x7f) {
            return MSM_INSPECT_NO;
        }
        i++;
    }
    if (i == len) {
        return len > MSM_HTTP_INSPECT_MAX ? MSM_INSPECT_NO : MSM_INSPECT_NEED_MORE;
    }
    if (i == t) {
        return MSM_INSPECT_NO;
    }
    /* Version and the end of the line. */
    i++;
    static const char v10[] = "HTTP/1.0\r\n", v11[] = "HTTP/1.1\r\n";
    size_t rest = len - i, vl = sizeof(v10) - 1;
    size_t cmp = rest < vl ? rest : vl;
    bool is10 = !memcmp(d + i, v10, cmp), is11 = !memcmp(d + i, v11, cmp);
    /* A bare LF after the version is accepted too (lenient parsers do). */
    if (!is10 && !is11 && rest >= vl - 1 &&
        (!memcmp(d + i, "HTTP/1.0\n", vl - 1) || !memcmp(d + i, "HTTP/1.1\n", vl - 1))) {
        *alpn = d[i + 7] == '0' ? "http/1.0" : "http/1.1";
        return MSM_INSPECT_YES;
    }
    if (!is10 && !is11) {
        return MSM_INSPECT_NO;
    }
    if (rest < vl) {
        return MSM_INSPECT_NEED_MORE;
    }
    *alpn = is10 ? "http/1.0" : "http/1.1";
    return MSM_INSPECT_YES;
}
