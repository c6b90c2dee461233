#include "net/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "common/fmt.h"

int msm_address_from_ip(const char *ip, uint32_t port, struct msm_address *out,
                        struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    if (port > 65535) {
        return msm_err_set(err, "port %u out of range", port);
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->sa;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
        return 0;
    }
    /* Strip an optional scope ("fe80::1%eth0") which inet_pton does not take. */
    char tmp[INET6_ADDRSTRLEN + 32];
    snprintf(tmp, sizeof(tmp), "%s", ip);
    char *pct = strchr(tmp, '%');
    if (pct) {
        *pct = '\0';
    }
    if (inet_pton(AF_INET6, tmp, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
        return 0;
    }
    return msm_err_set(err, "malformed IP address: '%s'", ip);
}

int msm_address_from_pipe(const char *path, uint32_t mode, struct msm_address *out,
                          struct msm_err *err)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_un *un = (struct sockaddr_un *)&out->sa;
    size_t n = strlen(path);
    if (n == 0) {
        return msm_err_set(err, "pipe path is empty");
    }
    if (n >= sizeof(un->sun_path)) {
        return msm_err_set(err, "pipe path '%s' is longer than %zu bytes", path,
                           sizeof(un->sun_path) - 1);
    }
    if (mode > 0777) {
        return msm_err_set(err, "pipe mode %o is not a permission mask", mode);
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') {
        if (mode) {
            return msm_err_set(err, "pipe '%s': abstract sockets take no mode", path);
        }
        un->sun_path[0] = '\0';
        out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        out->len = (socklen_t)sizeof(*un);
    }
    out->pipe_mode = mode;
    return 0;
}

void msm_address_ip_str(const struct msm_address *a, char *buf, size_t n)
{
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a->sa;
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a->sa;
    const struct sockaddr_un *un = (const struct sockaddr_un *)&a->sa;
    switch (a->sa.ss_family) {
    case AF_INET:
        inet_ntop(AF_INET, &v4->sin_addr, buf, (socklen_t)n);
        return;
    case AF_INET6:
        inet_ntop(AF_INET6, &v6->sin6_addr, buf, (socklen_t)n);
        return;
    case AF_UNIX: {
        size_t plen = a->len > offsetof(struct sockaddr_un, sun_path)
                          ? a->len - offsetof(struct sockaddr_un, sun_path)
                          : 0;
        if (plen && un->sun_path[0] == '\0') {
            snprintf(buf, n, "@%.*s", (int)(plen - 1), un->sun_path + 1);
        } else {
            snprintf(buf, n, "%.*s", (int)strnlen(un->sun_path, sizeof(un->sun_path)),
                     un->sun_path);
        }
        return;
    }
    default:
        snprintf(buf, n, "<unset>");
    }
}


/* Bounded copy of the <len> bytes at <s> with a NUL, truncating as snprintf does. */
static void copy_out(char *buf, size_t n, const char *s, size_t len)
{
    if (!n) {
        return;
    }
    if (len >= n) {
        len = n - 1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
}

/* Formatted by hand rather than with snprintf/inet_ntop: the router and the connection manager
 * format addresses on every request (%UPSTREAM_HOST%, header values). */
void msm_address_str(const struct msm_address *a, char *buf, size_t n)
{
    char t[MSM_ADDRSTRLEN + 8];
    char *p = t;
    switch (a->sa.ss_family) {
    case AF_INET: {
        const uint8_t *ip = (const uint8_t *)&((const struct sockaddr_in *)&a->sa)->sin_addr;
        for (int i = 0; i < 4; i++) {
            p += msm_fmt_u64(p, ip[i]);
            *p++ = i < 3 ? '.' : ':';
        }
        p += msm_fmt_u64(p, msm_address_port(a));
        copy_out(buf, n, t, (size_t)(p - t));
        return;
    }
    case AF_INET6:
        *p++ = '[';
        msm_address_ip_str(a, p, MSM_ADDRSTRLEN);
        p += strlen(p);
        *p++ = ']';
        *p++ = ':';
        p += msm_fmt_u64(p, msm_address_port(a));
        copy_out(buf, n, t, (size_t)(p - t));
        return;
    default:
        msm_address_ip_str(a, buf, n);
    }
}

uint32_t msm_address_port(const struct msm_address *a)
{
    if (a->sa.ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    }
    if (a->sa.ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    }
    return 0;
}

void msm_address_set_port(struct msm_address *a, uint32_t port)
{
    if (a->sa.ss_family == AF_INET) {
        ((struct sockaddr_in *)&a->sa)->sin_port = htons((uint16_t)port);
    } else if (a->sa.ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)&a->sa)->sin6_port = htons((uint16_t)port);
    }
}

bool msm_address_eq(const struct msm_address *a, const struct msm_address *b)
{
    if (a->sa.ss_family != b->sa.ss_family) {
        return false;
    }
    /* Same bytes as comparing the strings (inet_ntop's form is canonical), without them. */
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->sa;
        return x->sin_addr.s_addr == y->sin_addr.s_addr && x->sin_port == y->sin_port;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->sa;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->sa;
        return !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) &&
               x->sin6_port == y->sin6_port;
    }
    char x[MSM_ADDRSTRLEN], y[MSM_ADDRSTRLEN];
    msm_address_str(a, x, sizeof(x));
    msm_address_str(b, y, sizeof(y));
    return !strcmp(x, y);
}

bool msm_address_is_any(const struct msm_address *a)
{
    if (a->sa.ss_family == AF_INET) {
        return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    if (a->sa.ss_family == AF_INET6) {
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    }
    return false;
}

void msm_address_stat_name(const struct msm_address *a, char *buf, size_t n)
{
    msm_address_str(a, buf, n);
    for (char *p = buf; *p; p++) {
        if (*p == ':') {
            *p = '_';
        }
    }
}
