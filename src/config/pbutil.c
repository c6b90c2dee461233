#include "config/pbutil.h"

#include "envoy/config/core/v3/address.pb-c.h"

int msm_pb_address(const Envoy__Config__Core__V3__Address *a, struct msm_address *out,
                   struct msm_err *err)
{
    if (!a) {
        return msm_err_set(err, "address is required");
    }
    switch (a->address_case) {
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS: {
        const Envoy__Config__Core__V3__SocketAddress *s = a->socket_address;
        if (s->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP) {
            return msm_err_set(err, "socket_address.protocol: only TCP is supported here");
        }
        if (s->resolver_name && s->resolver_name[0]) {
            return msm_err_set(err, "socket_address.resolver_name '%s': custom resolvers are not "
                                    "supported", s->resolver_name);
        }
        if (s->port_specifier_case ==
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT) {
            return msm_err_set(err, "socket_address.named_port needs a resolver; not supported");
        }
        uint32_t port = s->port_specifier_case ==
                                ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE
                            ? s->port_value
                            : 0;
        if (port > 65535) {
            /* Checked here so the message names the field that is wrong. */
            return msm_err_set(err, "socket_address.port_value: %u is out of range (max 65535)",
                               port);
        }
        int rc = msm_address_from_ip(s->address, port, out, err);
        if (rc < 0) {
            msm_err_prefix(err, "socket_address.address");
        }
        return rc;
    }
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE: {
        int rc = msm_address_from_pipe(a->pipe->path, a->pipe->mode, out, err);
        if (rc < 0) {
            msm_err_prefix(err, "pipe");
        }
        return rc;
    }
    case ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_ENVOY_INTERNAL_ADDRESS:
        return msm_err_set(err, "envoy_internal_address: internal listeners are not supported");
    default:
        return msm_err_set(err, "address: one of socket_address or pipe is required");
    }
}
