"""Shared pieces of istiod's output (shapes of Istio 1.20 sidecars, as Envoy dumps them: proto3
JSON, snake_case, @type on every Any)."""

T = "type.googleapis.com/"
TYPED_STRUCT = T + "udpa.type.v1.TypedStruct"
MAX32 = 4294967295

ADS = {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}

ALPN_MTLS_HTTP = ["istio-http/1.0", "istio-http/1.1", "istio-h2"]
ALPN_PLAIN_HTTP = ["http/1.1", "h2c"]
ALPN_MTLS_TCP_MX = ["istio-peer-exchange", "istio"]
ALPN_ALL_ISTIO = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]


def sds(name):
    """An SDS secret reference served by pilot-agent on the bootstrap's sds-grpc cluster."""
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                "set_node_on_first_message_only": True,
                "transport_api_version": "V3",
            },
            "initial_fetch_timeout": "0s",
            "resource_api_version": "V3",
        },
    }


def upstream_tls(sans, sni):
    """Istio mutual TLS towards a sidecar: SPIFFE SANs of the destination's service accounts."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": T + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "tls_certificate_sds_secret_configs": [sds("default")],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_subject_alt_names": [{"exact": s} for s in sans]
                    },
                    "validation_context_sds_secret_config": sds("ROOTCA"),
                },
            },
            "sni": sni,
        },
    }


RAW_BUFFER_MATCH = {
    "name": "tlsMode-disabled",
    "match": {},
    "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {"@type": T + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
    },
}


def downstream_tls(alpn, trust_domain):
    """The inbound side of Istio mutual TLS (client certificate required, any SPIFFE identity of
    the trust domain; authorization is RBAC's job)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": T + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": {},
                "alpn_protocols": list(alpn),
                "tls_certificate_sds_secret_configs": [sds("default")],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_subject_alt_names": [{"prefix": "spiffe://%s/" % trust_domain}]
                    },
                    "validation_context_sds_secret_config": sds("ROOTCA"),
                },
            },
            "require_client_certificate": True,
        },
    }


def circuit_breakers(conn_pool=None):
    th = {
        "max_connections": MAX32,
        "max_pending_requests": MAX32,
        "max_requests": MAX32,
        "max_retries": MAX32,
        "track_remaining": True,
    }
    if conn_pool:
        tcp = conn_pool.get("tcp") or {}
        http = conn_pool.get("http") or {}
        if "maxConnections" in tcp:
            th["max_connections"] = int(tcp["maxConnections"])
        if "http1MaxPendingRequests" in http:
            th["max_pending_requests"] = int(http["http1MaxPendingRequests"])
        if "http2MaxRequests" in http:
            th["max_requests"] = int(http["http2MaxRequests"])
        if "maxRetries" in http:
            th["max_retries"] = int(http["maxRetries"])
    return {"thresholds": [th]}


def mx_network():
    """istio.metadata_exchange as a network filter (TypedStruct, as 1.20 sends it)."""
    return {
        "name": "istio.metadata_exchange",
        "typed_config": {
            "@type": TYPED_STRUCT,
            "type_url": T + "envoy.tcp.metadataexchange.config.MetadataExchange",
            "value": {"protocol": "istio-peer-exchange", "enable_discovery": True},
        },
    }


def stats_network(inbound):
    tc = {"@type": T + "stats.PluginConfig"}
    if inbound:
        tc["disable_host_header_fallback"] = True
    return {"name": "istio.stats", "typed_config": tc}


def tcp_proxy(stat_prefix, cluster=None, weighted=None):
    tc = {
        "@type": T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_prefix,
    }
    if weighted:
        tc["weighted_clusters"] = {"clusters": [{"name": n, "weight": w} for n, w in weighted]}
    else:
        tc["cluster"] = cluster
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": tc}


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def http_protocol_options(protocol, idle=False):
    """typed_extension_protocol_options for a cluster of that port protocol, or None."""
    o = {"@type": T + HTTP_PROTOCOL_OPTIONS}
    if idle:
        o["common_http_protocol_options"] = {"idle_timeout": "300s"}
    if protocol == "auto":
        o["use_downstream_protocol_config"] = {
            "http_protocol_options": {},
            "http2_protocol_options": {},
        }
    elif protocol == "http2":
        o["explicit_http_config"] = {"http2_protocol_options": {}}
    else:
        return None
    return {HTTP_PROTOCOL_OPTIONS: o}


def _tag_md(tag, key):
    return {
        "tag": tag,
        "metadata": {
            "kind": {"request": {}},
            "metadata_key": {"key": "envoy.filters.http.rbac", "path": [{"key": key}]},
        },
    }


def tracing(node):
    return {
        "client_sampling": {"value": 100},
        "random_sampling": {"value": node.sampling},
        "overall_sampling": {"value": 100},
        "custom_tags": [
            _tag_md(
                "istio.authorization.dry_run.allow_policy.name",
                "istio_dry_run_allow_shadow_effective_policy_id",
            ),
            _tag_md(
                "istio.authorization.dry_run.allow_policy.result",
                "istio_dry_run_allow_shadow_engine_result",
            ),
            _tag_md(
                "istio.authorization.dry_run.deny_policy.name",
                "istio_dry_run_deny_shadow_effective_policy_id",
            ),
            _tag_md(
                "istio.authorization.dry_run.deny_policy.result",
                "istio_dry_run_deny_shadow_engine_result",
            ),
            {"tag": "istio.canonical_revision", "literal": {"value": node.canonical_revision}},
            {"tag": "istio.canonical_service", "literal": {"value": node.canonical_name}},
            {"tag": "istio.mesh_id", "literal": {"value": node.mesh_id}},
            {"tag": "istio.namespace", "literal": {"value": node.namespace}},
        ],
    }


def http_filters(inbound, rbac_filters=()):
    """The HCM http_filters chain istiod 1.20 sends a sidecar (RBAC after metadata exchange)."""
    if inbound:
        mx = {
            "downstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "downstream_propagation": [{"istio_headers": {}}],
        }
    else:
        mx = {
            "upstream_discovery": [{"istio_headers": {}}, {"workload_discovery": {}}],
            "upstream_propagation": [{"istio_headers": {}}],
        }
    out = [
        {
            "name": "istio.metadata_exchange",
            "typed_config": {
                "@type": TYPED_STRUCT,
                "type_url": T + "io.istio.http.peer_metadata.Config",
                "value": mx,
            },
        }
    ]
    out += list(rbac_filters)
    out.append(
        {
            "name": "envoy.filters.http.grpc_stats",
            "typed_config": {
                "@type": T + "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
                "emit_filter_state": True,
                "stats_for_all_methods": False,
            },
        }
    )
    if not inbound:
        out.append(
            {
                "name": "istio.alpn",
                "typed_config": {
                    "@type": T + "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
                    "alpn_override": [
                        {"alpn_override": ["istio-http/1.0", "istio", "http/1.0"]},
                        {
                            "upstream_protocol": "HTTP11",
                            "alpn_override": ["istio-http/1.1", "istio", "http/1.1"],
                        },
                        {
                            "upstream_protocol": "HTTP2",
                            "alpn_override": ["istio-h2", "istio", "h2"],
                        },
                    ],
                },
            }
        )
    out.append(
        {
            "name": "envoy.filters.http.fault",
            "typed_config": {"@type": T + "envoy.extensions.filters.http.fault.v3.HTTPFault"},
        }
    )
    out.append(
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": T + "envoy.extensions.filters.http.cors.v3.Cors"},
        }
    )
    out.append(
        {
            "name": "istio.stats",
            "typed_config": dict(
                {"@type": T + "stats.PluginConfig"},
                **({"disable_host_header_fallback": True} if inbound else {})
            ),
        }
    )
    out.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": T + "envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    return out


def hcm(node, stat_prefix, inbound, rds=None, route_config=None, rbac_filters=()):
    tc = {
        "@type": T
        + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
    }
    if rds is not None:
        tc["rds"] = {"config_source": dict(ADS), "route_config_name": rds}
    else:
        tc["route_config"] = route_config
    tc["http_filters"] = http_filters(inbound, rbac_filters)
    tc["tracing"] = tracing(node)
    if inbound:
        tc["server_name"] = "istio-envoy"
    tc["use_remote_address"] = False
    if inbound:
        tc["forward_client_cert_details"] = "APPEND_FORWARD"
        tc["set_current_client_cert_details"] = {"subject": True, "dns": True, "uri": True}
    tc["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    tc["stream_idle_timeout"] = "0s"
    tc["normalize_path"] = True
    tc["request_id_extension"] = {
        "typed_config": {
            "@type": T + "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "use_request_id_for_trace_sampling": True,
        }
    }
    tc["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": tc}


def listener_filter(kind, disabled_port=None):
    names = {
        "tls_inspector": "TlsInspector",
        "http_inspector": "HttpInspector",
        "original_dst": "OriginalDst",
    }
    f = {
        "name": "envoy.filters.listener." + kind,
        "typed_config": {
            "@type": T + "envoy.extensions.filters.listener.%s.v3.%s" % (kind, names[kind])
        },
    }
    if disabled_port:
        f["filter_disabled"] = {
            "destination_port_range": {"start": disabled_port, "end": disabled_port + 1}
        }
    return f


def socket_address(addr, port):
    return {"socket_address": {"address": addr, "port_value": port}}


DEFAULT_RETRY = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": T + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": "5",
    "retriable_status_codes": [503],
}
