#pragma once
/* Asynchronous DNS on a libev loop (c-ares). Main thread only: workers never resolve. */
#include <ev.h>
#include <stdint.h>

#include "net/address.h"
#include "upstream/cluster.h"

struct msm_dns;

/* Result: <addrs> (port 0) and the smallest TTL seen (seconds), or status < 0 with a message. */
typedef void msm_dns_cb(void *arg, int status, const char *errmsg, const struct msm_address *addrs,
                        int n, uint32_t ttl);

struct msm_dns *msm_dns_new(struct ev_loop *loop);
/* Cancels outstanding queries (their callbacks run with an error first). */
void msm_dns_free(struct msm_dns *d);
/* Resolve <name> by <family> policy (Envoy's DnsLookupFamily). A literal IP answers at once.
 * <cb> always runs exactly once, from the loop (never from inside this call). */
void msm_dns_resolve(struct msm_dns *d, const char *name, enum msm_dns_family family,
                     msm_dns_cb *cb, void *arg);
