#pragma once
/* YAML -> JSON tree (jansson), for bootstrap files and --config-yaml.
 *
 * One document only. Plain scalars are typed by the YAML 1.2 core schema: null (null, Null,
 * NULL, ~, empty), bool (true/True/TRUE, false/...), int (decimal with optional sign, 0x hex,
 * 0o octal), float (decimal/exponent forms, .inf, -.inf, .nan). Quoted and block scalars are
 * strings, as are plain scalars tagged "!" or "!!str"; "!!int", "!!float", "!!bool", "!!null"
 * force a type. Since JSON has no such numbers, .inf/.nan become the strings "Infinity",
 * "-Infinity" and "NaN" (what proto3 JSON expects), and integers beyond 64 bits or outside
 * int64 become decimal strings (proto3 JSON accepts numeric strings for every number field).
 * Mapping keys must be scalars and are taken as their text; duplicate keys are an error.
 * Anchors and aliases are supported (aliases are deep copies), with a budget on the total
 * number of nodes that alias expansion may create (billion-laughs safe) and a nesting limit. */
#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

/* Total nodes alias expansion may add to one document. */
#define MSM_YAML_MAX_ALIAS_NODES 100000
/* Nesting limit of collections. */
#define MSM_YAML_MAX_DEPTH 256

/* Parse <len> bytes of YAML at <text> (need not be NUL-terminated). Returns a new reference
 * owned by the caller (json null for an empty stream), or NULL with <err> set to
 * "line L, column C: <reason>". */
json_t *msm_yaml_load(const char *text, size_t len, struct msm_err *err);
