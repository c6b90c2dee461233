#pragma once
/* Type registry: every protobuf message descriptor compiled into msm-proxy (Envoy API, the
 * google.protobuf well-known types, udpa/xds, our proto/ files), looked up by full name.
 * Built lazily on first use (pthread_once), read-only afterwards: safe from any thread. */
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Descriptor of message <full_name> ("envoy.config.listener.v3.Listener", no leading dot), or
 * NULL when msm-proxy does not know that type. */
const ProtobufCMessageDescriptor *msm_types_find(const char *full_name);
/* Same with an explicit length (<name> need not be NUL-terminated). */
const ProtobufCMessageDescriptor *msm_types_findn(const char *name, size_t len);
/* Descriptor for an Any type URL: anything up to the last '/' is ignored
 * ("type.googleapis.com/envoy.config.listener.v3.Listener"). NULL when unknown. */
const ProtobufCMessageDescriptor *msm_types_find_url(const char *type_url);
/* Number of registered message types, and the <i>th one (registry order), for tests and
 * diagnostics. */
size_t msm_types_count(void);
const ProtobufCMessageDescriptor *msm_types_at(size_t i);
