/* Filter-chain selection in Envoy's order and CIDR matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "net/listener.h"

static struct msm_address addr(const char *ip, uint32_t port)
{
    struct msm_address a;
    assert_int_equal(msm_address_from_ip(ip, port, &a, NULL), 0);
    return a;
}

static void test_cidr(void **state)
{
    (void)state;
    struct msm_cidr c;
    assert_int_equal(msm_cidr_parse("10.1.0.0", 16, &c, NULL), 0);
    struct msm_address a = addr("10.1.200.3", 1), b = addr("10.2.0.1", 1);
    assert_true(msm_cidr_contains(&c, &a));
    assert_false(msm_cidr_contains(&c, &b));
    struct msm_address m = addr("::ffff:10.1.2.3", 1);
    assert_true(msm_cidr_contains(&c, &m)); /* IPv4-mapped peer */
    assert_int_equal(msm_cidr_parse("fd00::", 8, &c, NULL), 0);
    struct msm_address v6 = addr("fd12::1", 1);
    assert_true(msm_cidr_contains(&c, &v6));
    assert_false(msm_cidr_contains(&c, &a));
    assert_int_equal(msm_cidr_parse("10.0.0.0", 33, &c, NULL), MSM_EINVAL);
    assert_int_equal(msm_cidr_parse("bogus", 8, &c, NULL), MSM_EINVAL);
    assert_int_equal(msm_cidr_parse("10.1.2.3", 29, &c, NULL), 0);
    struct msm_address in = addr("10.1.2.7", 1), out = addr("10.1.2.8", 1);
    assert_true(msm_cidr_contains(&c, &in));
    assert_false(msm_cidr_contains(&c, &out));
}

static struct msm_filter_chain *chain(const char *name)
{
    struct msm_filter_chain *c = MSM_NEW(struct msm_filter_chain);
    c->name = msm_xstrdup(name);
    return c;
}

static void add_cidr(struct msm_cidr **v, int *n, const char *ip, uint32_t len)
{
    *v = msm_xrealloc(*v, (size_t)(*n + 1) * sizeof(**v));
    assert_int_equal(msm_cidr_parse(ip, len, &(*v)[*n], NULL), 0);
    (*n)++;
}

static const char *pick(struct msm_listener_cfg *l, const char *dst, uint32_t dport,
                        const char *src, uint32_t sport, const char *sni)
{
    struct msm_address d = addr(dst, dport), s = addr(src, sport);
    struct msm_conn_meta m = {.local = &d, .remote = &s, .direct_remote = &s,
                              .transport = "raw_buffer", .sni = sni};
    const struct msm_filter_chain *c = msm_listener_match(l, &m);
    return c ? c->name : "none";
}

static void test_match_order(void **state)
{
    (void)state;
    struct msm_listener_cfg l;
    memset(&l, 0, sizeof(l));
    struct msm_filter_chain *port80 = chain("port80");
    port80->match.has_dport = true;
    port80->match.dport = 80;
    struct msm_filter_chain *port80_src = chain("port80-src");
    port80_src->match.has_dport = true;
    port80_src->match.dport = 80;
    add_cidr(&port80_src->match.src, &port80_src->match.n_src, "192.168.0.0", 16);
    struct msm_filter_chain *wide = chain("wide");
    add_cidr(&wide->match.prefix, &wide->match.n_prefix, "10.0.0.0", 8);
    struct msm_filter_chain *narrow = chain("narrow");
    add_cidr(&narrow->match.prefix, &narrow->match.n_prefix, "10.1.0.0", 16);
    struct msm_filter_chain *sni = chain("sni");
    sni->match.server_names = msm_xcalloc(1, sizeof(char *));
    sni->match.server_names[0] = msm_xstrdup("*.example.com");
    sni->match.n_server_names = 1;
    struct msm_filter_chain *dflt = chain("default");
    struct msm_filter_chain *v[] = {port80, port80_src, wide, narrow, sni};
    l.chains = v;
    l.n_chains = 5;

    /* Destination port first: an exact port beats everything else. */
    assert_string_equal(pick(&l, "10.1.1.1", 80, "192.168.1.1", 5, NULL), "port80-src");
    assert_string_equal(pick(&l, "10.1.1.1", 80, "172.16.0.1", 5, NULL), "port80");
    /* Longest destination prefix wins. */
    assert_string_equal(pick(&l, "10.1.1.1", 81, "1.1.1.1", 5, NULL), "narrow");
    assert_string_equal(pick(&l, "10.9.1.1", 81, "1.1.1.1", 5, NULL), "wide");
    /* Unmatched destination: only chains without a prefix remain; SNI narrows further. */
    assert_string_equal(pick(&l, "20.0.0.1", 81, "1.1.1.1", 5, "a.example.com"), "sni");
    assert_string_equal(pick(&l, "20.0.0.1", 81, "1.1.1.1", 5, "example.org"), "none");
    /* With a default chain, a miss falls to it. */
    l.default_chain = dflt;
    assert_string_equal(pick(&l, "20.0.0.1", 81, "1.1.1.1", 5, NULL), "default");
    /* A specific port whose later criteria fail does not fall back to wildcard chains. */
    port80->match.source_type = 2; /* external only */
    assert_string_equal(pick(&l, "10.1.1.1", 80, "127.0.0.1", 5, NULL), "default");

    for (size_t i = 0; i < 5; i++) {
        struct msm_chain_match *m = &v[i]->match;
        free(m->prefix);
        free(m->src);
        if (m->server_names) {
            free(m->server_names[0]);
            free(m->server_names);
        }
        free(v[i]->name);
        free(v[i]);
    }
    free(dflt->name);
    free(dflt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_match_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
