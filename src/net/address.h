#pragma once
/* Socket addresses as Envoy's config.core.v3.Address describes them: IPv4/IPv6 socket addresses
 * and unix `pipe` paths (with Linux abstract sockets for a leading '@'). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"

struct msm_address {
    struct sockaddr_storage sa;
    socklen_t len;
    uint32_t pipe_mode; /* pipe.mode (file permission bits), 0 = leave as created */
};

#define MSM_ADDRSTRLEN 128

static inline int msm_address_family(const struct msm_address *a)
{
    return a->sa.ss_family;
}

/* "1.2.3.4" / "::1" and a port into <out>; MSM_EINVAL with <err> on a malformed IP. Envoy
 * requires literal IPs where no resolution happens (listeners, STATIC clusters). */
int msm_address_from_ip(const char *ip, uint32_t port, struct msm_address *out,
                        struct msm_err *err);
/* A unix socket path; "@name" is an abstract socket. */
int msm_address_from_pipe(const char *path, uint32_t mode, struct msm_address *out,
                          struct msm_err *err);
/* "1.2.3.4:80", "[::1]:80", "/path" or "@abstract". */
void msm_address_str(const struct msm_address *a, char *buf, size_t n);
/* Just the IP ("1.2.3.4", "::1"), or the path for pipes. */
void msm_address_ip_str(const struct msm_address *a, char *buf, size_t n);
uint32_t msm_address_port(const struct msm_address *a);
void msm_address_set_port(struct msm_address *a, uint32_t port);
bool msm_address_eq(const struct msm_address *a, const struct msm_address *b);
bool msm_address_is_any(const struct msm_address *a);
/* Envoy's stat-name form: the address string with ':' replaced by '_' ("0.0.0.0_15001"). */
void msm_address_stat_name(const struct msm_address *a, char *buf, size_t n);
