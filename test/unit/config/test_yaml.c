/* YAML -> JSON: core-schema typing, anchors and aliases, limits, errors; YAML into protos. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "config/pbjson.h"
#include "config/types.h"
#include "config/yaml.h"

/* <yaml> loads and prints (compact, protobuf number style) as <want>. */
static void expect_json(const char *yaml, const char *want)
{
    struct msm_err err = {{0}};
    json_t *j = msm_yaml_load(yaml, strlen(yaml), &err);
    if (!j) {
        fail_msg("load failed: %s", err.msg);
    }
    char *s = msm_pbjson_dumps(j, false);
    assert_string_equal(s, want);
    free(s);
    json_decref(j);
}

static void expect_error(const char *yaml, const char *want)
{
    struct msm_err err = {{0}};
    json_t *j = msm_yaml_load(yaml, strlen(yaml), &err);
    if (j) {
        char *s = msm_pbjson_dumps(j, false);
        fail_msg("load succeeded (%s), expected error \"%s\"", s, want);
    }
    assert_string_equal(err.msg, want);
}

static void test_typed_scalars(void **state)
{
    (void)state;
    expect_json("a: 1\nb: -12\nc: +12\nd: 0x1F\ne: 0o17\nf: 017\ng: 1.5\nh: .5\ni: 1e3\n"
                "j: -1.25E-2\nk: 1.\n",
                "{\"a\":1,\"b\":-12,\"c\":12,\"d\":31,\"e\":15,\"f\":17,\"g\":1.5,\"h\":0.5,"
                "\"i\":1000,\"j\":-0.0125,\"k\":1}");
    expect_json("a: .inf\nb: -.Inf\nc: .NaN\nd: +.INF\n",
                "{\"a\":\"Infinity\",\"b\":\"-Infinity\",\"c\":\"NaN\",\"d\":\"Infinity\"}");
    expect_json("a: ~\nb:\nc: null\nd: Null\ne: NULL\nf: nULL\n",
                "{\"a\":null,\"b\":null,\"c\":null,\"d\":null,\"e\":null,\"f\":\"nULL\"}");
    expect_json("a: true\nb: True\nc: FALSE\nd: yes\ne: on\nf: tRUE\n",
                "{\"a\":true,\"b\":true,\"c\":false,\"d\":\"yes\",\"e\":\"on\",\"f\":\"tRUE\"}");
    /* quoted and block scalars are strings */
    expect_json("a: \"80\"\nb: '1.0'\nc: |\n  x: 1\nd: >-\n  folded\n  text\ne: 'true'\n",
                "{\"a\":\"80\",\"b\":\"1.0\",\"c\":\"x: 1\\n\",\"d\":\"folded text\","
                "\"e\":\"true\"}");
    /* not numbers in the core schema */
    expect_json("a: 1_000\nb: -0x10\nc: 0b11\nd: 1:30\ne: 0x\nf: .\ng: 1e\nh: 12abc\n",
                "{\"a\":\"1_000\",\"b\":\"-0x10\",\"c\":\"0b11\",\"d\":\"1:30\",\"e\":\"0x\","
                "\"f\":\".\",\"g\":\"1e\",\"h\":\"12abc\"}");
    /* beyond int64: decimal strings, which proto3 JSON reads back exactly */
    expect_json("a: 9223372036854775807\nb: 9223372036854775808\nc: -9223372036854775808\n"
                "d: 0xFFFFFFFFFFFFFFFF\ne: 123456789012345678901234567890\n",
                "{\"a\":9223372036854775807,\"b\":\"9223372036854775808\","
                "\"c\":-9223372036854775808,\"d\":\"18446744073709551615\","
                "\"e\":\"123456789012345678901234567890\"}");
    /* explicit tags */
    expect_json("a: !!str 12\nb: !!int \"12\"\nc: !!float '2'\nd: ! 12\ne: !!bool \"true\"\n"
                "f: !!null ''\n",
                "{\"a\":\"12\",\"b\":12,\"c\":2,\"d\":\"12\",\"e\":true,\"f\":null}");
    expect_error("a: !!int x\n", "line 1, column 4: \"x\" is not a valid int");
    expect_error("a: !foo bar\n", "line 1, column 4: unsupported tag !foo");
    expect_error("a: !!set {x}\n", "line 1, column 4: unsupported tag tag:yaml.org,2002:set");
    expect_error("a: 0x1FFFFFFFFFFFFFFFF\n", "line 1, column 4: integer 0x1FFFFFFFFFFFFFFFF out "
                                               "of range");
    /* keys are their text */
    expect_json("80: a\ntrue: b\n~: c\n1.50: d\n", "{\"80\":\"a\",\"true\":\"b\",\"~\":\"c\","
                                                   "\"1.50\":\"d\"}");
    expect_json("- 1\n- [a, {b: c}]\n- {}\n- []\n", "[1,[\"a\",{\"b\":\"c\"}],{},[]]");
    expect_json("plain text", "\"plain text\"");
    expect_json("", "null");
    expect_json("# only a comment\n", "null");
    expect_json("--- 5\n...\n", "5");
    expect_json("s: \"\\u00e9\\t\\x41\"\n", "{\"s\":\"\xc3\xa9\\tA\"}");
}

static void test_anchors(void **state)
{
    (void)state;
    expect_json("base: &b {x: 1, y: [1, 2]}\ncopy: *b\nlist: [*b, *b]\n",
                "{\"base\":{\"x\":1,\"y\":[1,2]},\"copy\":{\"x\":1,\"y\":[1,2]},"
                "\"list\":[{\"x\":1,\"y\":[1,2]},{\"x\":1,\"y\":[1,2]}]}");
    expect_json("a: &n 5\nb: *n\n", "{\"a\":5,\"b\":5}");
    /* an anchor may be redefined; aliases use the latest definition */
    expect_json("a: &x 1\nb: *x\nc: &x 2\nd: *x\n", "{\"a\":1,\"b\":1,\"c\":2,\"d\":2}");
    /* alias as a key (scalar anchors only) */
    expect_json("k: &key name\n*key : v\n", "{\"k\":\"name\",\"name\":\"v\"}");
    /* copies are independent: the tree is a tree */
    struct msm_err err;
    const char *y = "a: &b {x: 1}\nb: *b\n";
    json_t *j = msm_yaml_load(y, strlen(y), &err);
    assert_non_null(j);
    assert_ptr_not_equal(json_object_get(j, "a"), json_object_get(j, "b"));
    json_decref(j);
    expect_error("a: *nope\n", "line 1, column 4: unknown anchor *nope");
    expect_error("a: &r [1, *r]\n", "line 1, column 11: alias *r refers to an enclosing node");
    expect_error("a: &m {x: 1}\n*m : 2\n",
                 "line 2, column 1: mapping keys must be scalars (alias *m)");
}

static void test_billion_laughs(void **state)
{
    (void)state;
    const char *lol = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                      "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                      "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                      "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                      "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                      "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                      "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
                      "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
                      "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    struct msm_err err;
    json_t *j = msm_yaml_load(lol, strlen(lol), &err);
    assert_null(j);
    assert_non_null(strstr(err.msg, "alias expansion exceeds 100000 nodes"));
    /* a modest use of aliases stays fine */
    const char *ok = "a: &a [1,2,3,4,5,6,7,8,9]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                     "c: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
    j = msm_yaml_load(ok, strlen(ok), &err);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "c")), 9);
    json_decref(j);
    /* deep aliases cannot build a tree deeper than the limit */
    char *deep = msm_xmalloc(8192);
    size_t o = (size_t)sprintf(deep, "a: &a ");
    for (int i = 0; i < 200; i++) {
        deep[o++] = '[';
    }
    for (int i = 0; i < 200; i++) {
        deep[o++] = ']';
    }
    o += (size_t)sprintf(deep + o, "\nb: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                                   "[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                                   "]]]]]]]]]]]]]]]\n");
    j = msm_yaml_load(deep, o, &err);
    assert_null(j);
    assert_non_null(strstr(err.msg, "nesting deeper than 256 levels"));
    free(deep);
}

static void test_structure_errors(void **state)
{
    (void)state;
    expect_error("a: 1\n---\nb: 2\n", "line 2, column 1: multiple YAML documents are not "
                                      "supported");
    expect_error("a: 1\nb: 2\na: 3\n", "line 3, column 4: duplicate key \"a\"");
    expect_error("? [a]\n: 1\n", "line 1, column 3: mapping keys must be scalars");
    expect_error("? {a: 1}\n: 1\n", "line 1, column 3: mapping keys must be scalars");
    expect_error("a: [1, 2\n",
                 "line 2, column 1: did not find expected ',' or ']' while parsing a flow "
                 "sequence");
    expect_error("a:\n  - b\n c: 1\n",
                 "line 3, column 2: did not find expected key while parsing a block mapping");
    expect_error("a: \"\\xff\xff\"\n",
                 "byte 9: invalid leading UTF-8 octet");
    /* hostile nesting is refused without recursion */
    char *deep = msm_xmalloc(100001);
    memset(deep, '[', 100000);
    deep[100000] = '\0';
    struct msm_err err;
    assert_null(msm_yaml_load(deep, 100000, &err));
    assert_non_null(strstr(err.msg, "nesting deeper than 256 levels"));
    free(deep);
}

static void test_yaml_to_proto(void **state)
{
    (void)state;
    const char *y = "node:\n  id: 80          # YAML int where a string is expected\n"
                    "  cluster: true\n"
                    "  metadata: {ISTIO_VERSION: 1.20, n: 3}\n"
                    "admin:\n  address:\n    socket_address: {address: 127.0.0.1, "
                    "port_value: 15000}\n"
                    "stats_flush_interval: 5s\n";
    struct msm_err err;
    json_t *j = msm_yaml_load(y, strlen(y), &err);
    assert_non_null(j);
    const ProtobufCMessageDescriptor *d = msm_types_find("envoy.config.bootstrap.v3.Bootstrap");
    ProtobufCMessage *m = msm_pbjson_decode(d, j, NULL, &err);
    assert_null(m);
    assert_string_equal(err.msg, "node.id: expected a string, got a number");
    struct msm_pbjson_opts yaml_opts = {.lenient_scalars = true};
    m = msm_pbjson_decode(d, j, &yaml_opts, &err);
    if (!m) {
        fail_msg("%s", err.msg);
    }
    char *s = msm_pbjson_encode_text(m, NULL, false, &err);
    assert_string_equal(s, "{\"node\":{\"id\":\"80\",\"cluster\":\"true\",\"metadata\":{"
                           "\"ISTIO_VERSION\":1.2,\"n\":3}},\"stats_flush_interval\":\"5s\","
                           "\"admin\":{\"address\":{\"socket_address\":{\"address\":\"127.0.0.1\","
                           "\"port_value\":15000}}}}");
    free(s);
    protobuf_c_message_free_unpacked(m, NULL);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_typed_scalars),    cmocka_unit_test(test_anchors),
        cmocka_unit_test(test_billion_laughs),   cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_yaml_to_proto),
    };
    return cmocka_run_group_tests_name("config_yaml", tests, NULL, NULL);
}
