/* Tag extraction (Envoy's TagProducerImpl, TagExtractor{Re2,StdRegex,Tokens,Fixed}Impl). */
#include "stats/tags.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <stdint.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/metrics/v3/stats.pb-c.h"

#include "common/alloc.h"
#include "server/options.h"

/* A 256-bit set of the adjacent character pairs of s[0..len): a name that lacks a pair of a
 * pre-check substring cannot contain it, so most strstr calls are skipped after one pass. */
static void bigrams(const char *s, size_t len, uint64_t bg[4])
{
    bg[0] = bg[1] = bg[2] = bg[3] = 0;
    for (size_t i = 1; i < len; i++) {
        unsigned h = ((unsigned char)s[i - 1] * 31u + (unsigned char)s[i]) & 255u;
        bg[h >> 6] |= (uint64_t)1 << (h & 63);
    }
}

enum ex_kind {
    EX_REGEX = 0,
    EX_TOKENS = 1,
    EX_FIXED = 2,
};

struct extractor {
    enum ex_kind kind;
    char *name;
    char *prefix; /* first token this extractor is limited to, or NULL */
    size_t prefix_len;
    /* EX_REGEX */
    pcre2_code *re;
    int ncap;
    char *substr;   /* the name must contain it (cheap pre-check), or NULL */
    uint64_t substr_bg[4]; /* the character pairs of <substr> (see bigrams) */
    char *negative; /* a value that does not count as a match, or NULL */
    bool re2;       /* RE2 semantics: an empty group 2 falls back to group 1 */
    /* EX_TOKENS */
    char **tok;
    int ntok;
    int match_index;
    /* EX_FIXED */
    char *value;
    bool shared_name; /* another extractor has the same tag name */
};

struct span {
    size_t start, end;
};

struct msm_tag_producer {
    struct extractor *ex;
    int n;
    size_t cap;
    pcre2_match_data *md;
    struct span *rm; /* removal intervals of the current extraction: one per extractor */
    bool plain;      /* msm_tag_producer_set_plain */
};

/* ---- Envoy's built-in extractors ------------------------------------------------------------
 * From source/common/config/well_known_names.cc (TagNameValues), with Envoy's placeholders
 * expanded: <TAG_VALUE> = [^\.]+, <ADDRESS> = IPv4 or [IPv6] plus _port, <CIPHER> = [\w-]+,
 * <TLS_VERSION> = TLSv\d\.\d, <ROUTE_CONFIG_NAME> = [\w-\.]+ (written [\w\-.] for PCRE2),
 * <LISTENER_OR_CLUSTER_WITH_NAME> = (?:listener|cluster)\..*? */

#define ADDR "(?:(?:\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}|\\[[a-fA-F_\\d]+\\])_\\d+)"

struct re_desc {
    const char *name, *regex, *substr, *negative;
};

static const struct re_desc default_regexes[] = {
    {"envoy.response_code", "_rq(_(\\d{3}))$", "_rq_", NULL},
    {"envoy.response_code_class", "_rq_((\\d))xx$", "_rq_", NULL},
    {"envoy.dynamo_partition_id",
     "^http\\.[^\\.]+\\.dynamodb\\.table\\.[^\\.]+\\.capacity\\.[^\\.]+"
     "(\\.__partition_id=(\\w{7}))$",
     ".dynamodb.table.", NULL},
    {"envoy.dynamo_operation",
     "^http\\.[^\\.]+\\.dynamodb.(?:operation|table\\.[^\\.]+\\.capacity)(\\.([^\\.]+))(?:\\.|$)",
     ".dynamodb.", NULL},
    {"envoy.dynamo_table", "^http\\.[^\\.]+\\.dynamodb.(?:table|error)\\.(([^\\.]+)\\.)",
     ".dynamodb.", NULL},
    {"envoy.ssl_cipher", "^listener\\..*?\\.ssl\\.ciphers(\\.([\\w-]+))$", ".ssl.ciphers.", NULL},
    {"envoy.ssl_curve", "^(?:listener|cluster)\\..*?\\.ssl\\.curves(\\.([\\w-]+))$",
     ".ssl.curves.", NULL},
    {"envoy.ssl_sigalg", "^(?:listener|cluster)\\..*?\\.ssl\\.sigalgs(\\.([\\w-]+))$",
     ".ssl.sigalgs.", NULL},
    {"envoy.ssl_version", "^(?:listener|cluster)\\..*?\\.ssl\\.versions(\\.(TLSv\\d\\.\\d))$",
     ".ssl.versions.", NULL},
    {"cipher_suite", "^cluster\\.[^\\.]+\\.ssl\\.ciphers(\\.([\\w-]+))$", ".ssl.ciphers.", NULL},
    {"envoy.http_conn_manager_prefix", "^listener\\..*?\\.http\\.(([^\\.]+)\\.)", ".http.", NULL},
    {"envoy.worker_id",
     "^(?:listener\\.(?:" ADDR "|[^\\.]+)\\.|server\\.|listener_manager\\.)worker_((\\d+)\\.)",
     "worker_", NULL},
    {"envoy.listener_address", "^listener\\.((" ADDR "|[^\\.]+)\\.)", NULL, "admin"},
    {"envoy.rds_route_config", "^http\\.[^\\.]+\\.rds\\.(([\\w\\-.]+)\\.)\\w+?$", ".rds.", NULL},
};

struct tok_desc {
    const char *name, *pattern;
};

static const struct tok_desc default_tokens[] = {
    {"envoy.mongo_callsite", "mongo.*.collection.*.callsite.$.query.**"},
    {"envoy.mongo_collection", "mongo.*.collection.$.**.query.*"},
    {"envoy.mongo_cmd", "mongo.*.cmd.$.**"},
    {"envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"},
    {"envoy.http_user_agent", "http.*.user_agent.$.**"},
    {"envoy.virtual_cluster", "vhost.*.vcluster.$.**"},
    {"envoy.fault_downstream_cluster", "http.*.fault.$.**"},
    {"envoy.grpc_bridge_service", "cluster.*.grpc.$.**"},
    {"envoy.tcp_prefix", "tcp.$.**"},
    {"envoy.udp_prefix", "udp.$.**"},
    {"envoy.clientssl_prefix", "auth.clientssl.$.**"},
    {"envoy.ratelimit_prefix", "ratelimit.$.**"},
    {"envoy.cluster_name", "cluster.$.**"},
    {"envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"},
    {"envoy.ext_authz_prefix", "http.*.ext_authz.$.**"},
    {"envoy.http_conn_manager_prefix", "http.$.**"},
    {"envoy.virtual_host", "vhost.$.**"},
    {"envoy.mongo_prefix", "mongo.$.**"},
    {"envoy.route", "vhost.*.route.$.**"},
    {"envoy.thrift_prefix", "thrift.$.**"},
    {"envoy.redis_prefix", "redis.$.**"},
    {"envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"},
    {"envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"},
    {"envoy.local_listener_ratelimit_prefix", "listener_local_ratelimit.$.**"},
    {"envoy.dns_filter_prefix", "dns_filter.$.**"},
};

/* msm's own extractors, always on (whatever use_all_default_tags says: Istio's bootstrap turns
 * Envoy's defaults off, and our media stats must still reach Prometheus as one family per
 * metric). The stream extractor runs first: it needs the prefix token still in the name.
 * Per-session stats are "rtsp.<prefix>.session.<id>.<role>.<stream>.<stat>"
 * (msm_rtsp_session_<stat>{msm_rtsp_prefix, msm_rtsp_session, msm_rtsp_role, msm_rtsp_stream});
 * their stream extractor shares the tag name, the first one that matches wins. */
static const struct tok_desc msm_tokens[] = {
    {"msm.rtsp_stream", "rtsp.*.stream.$.**"},
    {"msm.rtsp_prefix", "rtsp.$.**"},
    {"msm.rtsp_session", "rtsp.*.session.$.*.*.*"},
    {"msm.rtsp_role", "rtsp.*.session.*.$.*.*"},
    {"msm.rtsp_stream", "rtsp.*.session.*.*.$.*"},
};

/* ---- building ------------------------------------------------------------------------------- */

/* Envoy's extractRegexPrefix: "^word\." (or "^word(?=\.)", or "^word$") limits a regex to names
 * whose first token is "word". */
static char *regex_prefix(const char *re)
{
    if (re[0] != '^') {
        return NULL;
    }
    size_t i = 1;
    while (re[i] && (isalnum((unsigned char)re[i]) || re[i] == '_')) {
        i++;
    }
    if (i == 1 || !re[i]) {
        return NULL;
    }
    bool last = !re[i + 1];
    if ((!last && (!strncmp(re + i, "\\.", 2) || !strncmp(re + i, "(?=\\.)", 6))) ||
        (last && re[i] == '$')) {
        return msm_xstrndup(re + 1, i - 1);
    }
    return NULL;
}

static struct extractor *add(struct msm_tag_producer *p, enum ex_kind kind, const char *name)
{
    p->ex = msm_xgrow(p->ex, sizeof(*p->ex), &p->cap, (size_t)p->n + 1);
    struct extractor *e = &p->ex[p->n++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->name = msm_xstrdup(name);
    return e;
}

static int add_regex(struct msm_tag_producer *p, const char *name, const char *regex,
                     const char *substr, const char *negative, bool re2, struct msm_err *err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, 0, &code, &off,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return msm_err_set(err, "tag '%s': invalid regex '%s' at offset %zu: %s", name, regex,
                           (size_t)off, (const char *)msg);
    }
    uint32_t ncap = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &ncap);
    if (ncap < 1) {
        pcre2_code_free(re);
        return msm_err_set(err, "tag '%s': regex '%s' needs at least one capture group", name,
                           regex);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: falls back to the interpreter */
    struct extractor *e = add(p, EX_REGEX, name);
    e->re = re;
    e->ncap = (int)ncap;
    e->re2 = re2;
    e->prefix = regex_prefix(regex);
    e->prefix_len = e->prefix ? strlen(e->prefix) : 0;
    e->substr = substr && substr[0] ? msm_xstrdup(substr) : NULL;
    if (e->substr) {
        bigrams(e->substr, strlen(e->substr), e->substr_bg);
    }
    e->negative = negative ? msm_xstrdup(negative) : NULL;
    return 0;
}

static void add_tokens(struct msm_tag_producer *p, const char *name, const char *pattern)
{
    struct extractor *e = add(p, EX_TOKENS, name);
    char *copy = msm_xstrdup(pattern);
    size_t cap = 0;
    for (char *save = NULL, *t = strtok_r(copy, ".", &save); t; t = strtok_r(NULL, ".", &save)) {
        e->tok = msm_xgrow(e->tok, sizeof(char *), &cap, (size_t)e->ntok + 1);
        if (!strcmp(t, "$")) {
            e->match_index = e->ntok;
        }
        e->tok[e->ntok++] = msm_xstrdup(t);
    }
    free(copy);
    const char *first = e->tok[0];
    if (strcmp(first, "$") && strcmp(first, "*") && strcmp(first, "**")) {
        e->prefix = msm_xstrdup(first);
        e->prefix_len = strlen(first);
    }
    /* Cheap pre-check: a literal token after one that consumes a name token ('$', '*' or a
     * literal; '**' may consume none) must be in the name as ".tok". */
    int best = -1;
    bool consumed = false;
    for (int k = 0; k < e->ntok; k++) {
        const char *t = e->tok[k];
        bool literal = strcmp(t, "$") && strcmp(t, "*") && strcmp(t, "**");
        if (literal && consumed && (best < 0 || strlen(t) > strlen(e->tok[best]))) {
            best = k;
        }
        consumed = consumed || strcmp(t, "**") != 0;
    }
    if (best > 0) {
        size_t l = strlen(e->tok[best]);
        e->substr = msm_xmalloc(l + 2);
        e->substr[0] = '.';
        memcpy(e->substr + 1, e->tok[best], l + 1);
        bigrams(e->substr, l + 1, e->substr_bg);
    }
}

static void add_fixed(struct msm_tag_producer *p, const char *name, const char *value)
{
    struct extractor *e = add(p, EX_FIXED, name);
    e->value = msm_xstrdup(value ? value : "");
}

/* Built-in extractors called <name>; how many were added. */
static int add_defaults_named(struct msm_tag_producer *p, const char *name)
{
    int found = 0;
    for (size_t i = 0; i < MSM_ARRAY_SIZE(default_regexes); i++) {
        const struct re_desc *d = &default_regexes[i];
        if (!name || !strcmp(d->name, name)) {
            /* The built-in regexes are valid; a failure here is a bug caught by the tests. */
            if (add_regex(p, d->name, d->regex, d->substr, d->negative, true, NULL) == 0) {
                found++;
            }
        }
    }
    for (size_t i = 0; i < MSM_ARRAY_SIZE(default_tokens); i++) {
        if (!name || !strcmp(default_tokens[i].name, name)) {
            add_tokens(p, default_tokens[i].name, default_tokens[i].pattern);
            found++;
        }
    }
    return found;
}

struct msm_tag_producer *msm_tag_producer_new(const void *stats_config,
                                              const struct msm_stats_tag *cli, int n_cli,
                                              struct msm_err *err)
{
    const Envoy__Config__Metrics__V3__StatsConfig *sc = stats_config;
    struct msm_tag_producer *p = MSM_NEW(struct msm_tag_producer);
    if (!sc || !sc->use_all_default_tags || sc->use_all_default_tags->value) {
        add_defaults_named(p, NULL);
    }
    for (size_t i = 0; i < MSM_ARRAY_SIZE(msm_tokens); i++) {
        add_tokens(p, msm_tokens[i].name, msm_tokens[i].pattern);
    }
    for (int i = 0; i < n_cli; i++) {
        add_fixed(p, cli[i].name, cli[i].value);
    }
    for (size_t i = 0; sc && i < sc->n_stats_tags; i++) {
        const Envoy__Config__Metrics__V3__TagSpecifier *t = sc->stats_tags[i];
        const char *name = t->tag_name ? t->tag_name : "";
        if (!name[0]) {
            msm_err_set(err, "stats_config.stats_tags[%zu]: tag_name cannot be empty", i);
            goto fail;
        }
        if (t->tag_value_case ==
            ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_FIXED_VALUE) {
            add_fixed(p, name, t->fixed_value);
            continue;
        }
        const char *re = t->tag_value_case ==
                                 ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_REGEX
                             ? t->regex
                             : NULL;
        if (!re || !re[0]) {
            if (!add_defaults_named(p, name)) {
                msm_err_set(err, "stats_config.stats_tags[%zu]: No regex specified for tag "
                                 "specifier and no default regex for name: '%s'", i, name);
                goto fail;
            }
            continue;
        }
        if (add_regex(p, name, re, NULL, NULL, false, err) < 0) {
            msm_err_prefix(err, "stats_config.stats_tags[%zu]", i);
            goto fail;
        }
    }
    for (int i = 0; i < p->n; i++) {
        for (int j = 0; j < p->n; j++) {
            if (i != j && !strcmp(p->ex[i].name, p->ex[j].name)) {
                p->ex[i].shared_name = true;
            }
        }
    }
    p->md = pcre2_match_data_create(16, NULL);
    p->rm = msm_xcalloc((size_t)p->n + 1, sizeof(*p->rm));
    return p;
fail:
    msm_tag_producer_free(p);
    return NULL;
}

void msm_tag_producer_free(struct msm_tag_producer *p)
{
    if (!p) {
        return;
    }
    for (int i = 0; i < p->n; i++) {
        struct extractor *e = &p->ex[i];
        free(e->name);
        free(e->prefix);
        pcre2_code_free(e->re);
        free(e->substr);
        free(e->negative);
        for (int k = 0; k < e->ntok; k++) {
            free(e->tok[k]);
        }
        free(e->tok);
        free(e->value);
    }
    free(p->ex);
    pcre2_match_data_free(p->md);
    free(p->rm);
    free(p);
}

void msm_tag_producer_set_plain(struct msm_tag_producer *p, bool plain)
{
    if (p) {
        p->plain = plain;
    }
}

int msm_tag_producer_count(const struct msm_tag_producer *p)
{
    return p ? p->n : 0;
}

void msm_tags_free(struct msm_tag *tags, int n)
{
    for (int i = 0; i < n; i++) {
        free(tags[i].name);
        free(tags[i].value);
    }
    free(tags);
}

/* ---- extraction ----------------------------------------------------------------------------- */

#define STACK_TOKENS 32

struct ctx {
    const char *name;
    size_t len;
    /* tokens of <name>, split at '.', computed on first use (on the stack when few) */
    const char **tok;
    size_t *toklen;
    int ntok;
    const char *tok_s[STACK_TOKENS];
    size_t toklen_s[STACK_TOKENS];
    uint64_t bg[4]; /* bigrams of <name> */
    bool plain;     /* no bigram pre-filter */
    /* removal intervals and output tags: room for one per extractor (the caller's) */
    struct span *rm;
    size_t nrm;
    struct msm_tag_ref *tags;
    size_t ntags;
    pcre2_match_data *md; /* the producer's or a scratch's */
};

static void tokenize(struct ctx *c)
{
    if (c->tok) {
        return;
    }
    int n = 1;
    for (size_t i = 0; i < c->len; i++) {
        n += c->name[i] == '.';
    }
    if (n <= STACK_TOKENS) {
        c->tok = c->tok_s;
        c->toklen = c->toklen_s;
    } else {
        c->tok = msm_xcalloc((size_t)n, sizeof(*c->tok));
        c->toklen = msm_xcalloc((size_t)n, sizeof(*c->toklen));
    }
    const char *s = c->name;
    const char *end = c->name + c->len;
    for (int k = 0; k < n; k++) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        c->tok[k] = s;
        c->toklen[k] = dot ? (size_t)(dot - s) : (size_t)(end - s);
        s = dot ? dot + 1 : end;
    }
    c->ntok = n;
}

/* Does the name contain <e>'s pre-check substring (true when it has none)? */
static bool has_substr(const struct extractor *e, const struct ctx *c)
{
    if (!e->substr) {
        return true;
    }
    for (int i = 0; i < 4 && !c->plain; i++) {
        if (e->substr_bg[i] & ~c->bg[i]) {
            return false;
        }
    }
    return strstr(c->name, e->substr) != NULL;
}

static void push_tag(struct ctx *c, const char *name, const char *v, size_t vlen)
{
    c->tags[c->ntags].name = name;
    c->tags[c->ntags].value = v;
    c->tags[c->ntags].value_len = vlen;
    c->ntags++;
}

static void push_rm(struct ctx *c, size_t start, size_t end)
{
    if (end <= start) {
        return;
    }
    c->rm[c->nrm].start = start;
    c->rm[c->nrm].end = end;
    c->nrm++;
}

static bool extract_regex(const struct extractor *e, struct ctx *c)
{
    if (!has_substr(e, c)) {
        return false;
    }
    int rc = pcre2_match(e->re, (PCRE2_SPTR)c->name, c->len, 0, 0, c->md, NULL);
    if (rc < 0) {
        return false;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    if (ov[2] == PCRE2_UNSET) {
        return false;
    }
    size_t rs = ov[2], re = ov[3];
    size_t vs = rs, ve = re;
    if (e->ncap >= 2 && rc > 2 && ov[4] != PCRE2_UNSET) {
        vs = ov[4];
        ve = ov[5];
    } else if (e->ncap >= 2 && !e->re2) {
        vs = ve = rs; /* std::regex: an unmatched group 2 is an empty value */
    }
    if (e->re2) {
        if (re == rs) {
            return false;
        }
        if (ve == vs) {
            vs = rs;
            ve = re;
        }
    }
    if (e->negative && strlen(e->negative) == ve - vs &&
        !memcmp(e->negative, c->name + vs, ve - vs)) {
        return false;
    }
    push_tag(c, e->name, c->name + vs, ve - vs);
    push_rm(c, rs, re);
    return true;
}

/* TagExtractorTokensImpl::searchTags: '*' matches one token, '**' any number, '$' one token that
 * becomes the value. */
static bool search_tokens(const struct extractor *e, const struct ctx *c, int in, int pat,
                          size_t ch, size_t *start, int *match)
{
    for (; in < c->ntok && pat < e->ntok; in++, pat++) {
        if (pat == e->match_index) {
            *start = ch;
            *match = in;
            ch += c->toklen[in] + 1;
            continue;
        }
        const char *want = e->tok[pat];
        if (!strcmp(want, "**")) {
            if (pat == e->ntok - 1) {
                pat = e->ntok;
                in = c->ntok;
                break;
            }
            pat++;
            for (; in < c->ntok; in++) {
                if (search_tokens(e, c, in, pat, ch, start, match)) {
                    return true;
                }
                ch += c->toklen[in] + 1;
            }
            return false;
        }
        if (strcmp(want, "*") &&
            (strlen(want) != c->toklen[in] || memcmp(want, c->tok[in], c->toklen[in]))) {
            return false;
        }
        ch += c->toklen[in] + 1;
    }
    return pat == e->ntok && in == c->ntok;
}

static bool extract_tokens(const struct extractor *e, struct ctx *c)
{
    if (!has_substr(e, c)) {
        return false;
    }
    tokenize(c);
    size_t start = 0;
    int match = c->ntok;
    if (!search_tokens(e, c, 0, 0, 0, &start, &match) || match >= c->ntok) {
        return false;
    }
    size_t vlen = c->toklen[match];
    size_t end = start + vlen;
    if (match < c->ntok - 1) {
        end++; /* "ab." at the start or "cd." in the middle */
    } else if (start > 0) {
        start--; /* ".ef" at the end */
    }
    push_tag(c, e->name, c->tok[match], vlen);
    push_rm(c, start, end);
    return true;
}

static bool extract(struct msm_tag_producer *p, const struct extractor *e, struct ctx *c)
{
    switch (e->kind) {
    case EX_REGEX: return extract_regex(e, c);
    case EX_TOKENS: return extract_tokens(e, c);
    case EX_FIXED: push_tag(c, e->name, e->value, strlen(e->value)); return true;
    }
    return false;
}

static bool name_done(const struct ctx *c, const char *name)
{
    for (size_t i = 0; i < c->ntags; i++) {
        if (!strcmp(c->tags[i].name, name)) {
            return true;
        }
    }
    return false;
}

static void run(struct msm_tag_producer *p, const struct extractor *e, struct ctx *c)
{
    if (e->shared_name && name_done(c, e->name)) {
        return;
    }
    extract(p, e, c);
}

/* <name> without the union of the removal intervals, into <out>; returns its length. */
static size_t remove_spans(const struct ctx *c, char *out)
{
    /* a handful of intervals: insertion sort by start, then copy the gaps */
    struct span *rm = c->rm;
    for (size_t i = 1; i < c->nrm; i++) {
        struct span x = rm[i];
        size_t j = i;
        for (; j > 0 && rm[j - 1].start > x.start; j--) {
            rm[j] = rm[j - 1];
        }
        rm[j] = x;
    }
    size_t k = 0, at = 0;
    for (size_t r = 0; r < c->nrm; r++) {
        if (rm[r].start > at) {
            memcpy(out + k, c->name + at, rm[r].start - at);
            k += rm[r].start - at;
        }
        if (rm[r].end > at) {
            at = rm[r].end;
        }
    }
    if (at < c->len) {
        memcpy(out + k, c->name + at, c->len - at);
        k += c->len - at;
    }
    out[k] = '\0';
    return k;
}

struct msm_tag_scratch {
    pcre2_match_data *md;
    struct span *rm;
};

struct msm_tag_scratch *msm_tag_scratch_new(const struct msm_tag_producer *p)
{
    struct msm_tag_scratch *sc = MSM_NEW(struct msm_tag_scratch);
    sc->md = pcre2_match_data_create(16, NULL);
    sc->rm = msm_xcalloc((size_t)(p ? p->n : 0) + 1, sizeof(*sc->rm));
    return sc;
}

void msm_tag_scratch_free(struct msm_tag_scratch *sc)
{
    if (!sc) {
        return;
    }
    pcre2_match_data_free(sc->md);
    free(sc->rm);
    free(sc);
}

int msm_tag_producer_produce_refs(struct msm_tag_producer *p, const char *name, size_t len,
                                  char *out, size_t *out_len, struct msm_tag_ref *tags)
{
    return msm_tag_producer_produce_refs_on(p, NULL, name, len, out, out_len, tags);
}

int msm_tag_producer_produce_refs_on(struct msm_tag_producer *p, struct msm_tag_scratch *sc,
                                     const char *name, size_t len, char *out, size_t *out_len,
                                     struct msm_tag_ref *tags)
{
    struct span rm_none[1];
    struct ctx c = {.name = name, .len = len, .tags = tags, .rm = p ? p->rm : rm_none};
    if (p) {
        c.md = sc ? sc->md : p->md;
        c.rm = sc ? sc->rm : p->rm;
    }
    c.plain = p && p->plain;
    if (!c.plain) {
        bigrams(name, len, c.bg);
    }
    if (p) {
        const char *dot = memchr(name, '.', len);
        size_t flen = dot ? (size_t)(dot - name) : 0;
        for (int i = 0; i < p->n; i++) {
            if (!p->ex[i].prefix) {
                run(p, &p->ex[i], &c);
            }
        }
        for (int i = 0; dot && i < p->n; i++) {
            const char *pre = p->ex[i].prefix;
            if (pre && p->ex[i].prefix_len == flen && !memcmp(pre, name, flen)) {
                run(p, &p->ex[i], &c);
            }
        }
    }
    if (c.plain) {
        size_t k = 0;
        for (size_t i = 0; i < c.len; i++) {
            bool removed = false;
            for (size_t r = 0; r < c.nrm && !removed; r++) {
                removed = i >= c.rm[r].start && i < c.rm[r].end;
            }
            if (!removed) {
                out[k++] = name[i];
            }
        }
        out[k] = '\0';
        *out_len = k;
    } else {
        *out_len = remove_spans(&c, out);
    }
    if (c.tok != c.tok_s) {
        free(c.tok);
        free(c.toklen);
    }
    return (int)c.ntags;
}

char *msm_tag_producer_produce(struct msm_tag_producer *p, const char *name,
                               struct msm_tag **tags, int *n)
{
    size_t len = strlen(name), out_len = 0;
    char *out = msm_xmalloc(len + 1);
    int max = p ? p->n : 0;
    struct msm_tag_ref *refs = msm_xcalloc((size_t)max + 1, sizeof(*refs));
    int k = msm_tag_producer_produce_refs(p, name, len, out, &out_len, refs);
    *tags = k ? msm_xcalloc((size_t)k, sizeof(**tags)) : NULL;
    for (int i = 0; i < k; i++) {
        (*tags)[i].name = msm_xstrdup(refs[i].name);
        (*tags)[i].value = msm_xstrndup(refs[i].value, refs[i].value_len);
    }
    free(refs);
    *n = k;
    return out;
}
