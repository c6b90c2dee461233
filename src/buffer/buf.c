#include "buffer/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer/recycle.h"
#include "common/alloc.h"

/* Standard-size blocks are recycled through a small per-thread stack: a proxy moves one block
 * per read, and handing each back to malloc makes glibc return and re-fault the pages (one
 * madvise per 256 KiB measured under load). Bounded, so idle memory stays small. */
#define POOL_MAX 64

static _Thread_local struct msm_block *pool[POOL_MAX];
static _Thread_local int pool_n;

/* A small first block (recycled memory, buffer/recycle.h) for a small append to an empty
 * buffer: a codec encodes each header block into a buffer of its own, and a 16 KiB block per
 * header block drained the pool above within one burst of requests. */
#define SMALL_BLOCK 2048 /* bytes with the header */
#define SMALL_WANT 1024

static struct msm_block *small_block_new(void)
{
    struct msm_block *blk = msm_recycle_alloc(SMALL_BLOCK);
    blk->cap = (uint32_t)(SMALL_BLOCK - sizeof(*blk));
    blk->refs = 1;
    return blk;
}

static struct msm_block *block_new(size_t min)
{
    struct msm_block *blk;
    if (min <= MSM_BUF_BLOCK && pool_n > 0) {
        blk = pool[--pool_n];
    } else {
        size_t cap = min > MSM_BUF_BLOCK ? min : MSM_BUF_BLOCK;
        blk = msm_xmalloc(sizeof(*blk) + cap);
        blk->cap = (uint32_t)cap;
    }
    blk->refs = 1;
    return blk;
}

static void block_unref(struct msm_block *blk)
{
    if (--blk->refs != 0) {
        return;
    }
    if (blk->cap == MSM_BUF_BLOCK && pool_n < POOL_MAX) {
        pool[pool_n++] = blk;
        return;
    }
    if (blk->cap == SMALL_BLOCK - sizeof(*blk)) {
        msm_recycle_free(blk, SMALL_BLOCK);
        return;
    }
    free(blk);
}

void msm_buf_thread_cleanup(void)
{
    while (pool_n > 0) {
        free(pool[--pool_n]);
    }
    msm_recycle_thread_cleanup();
}

void msm_buf_init(struct msm_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void msm_buf_deinit(struct msm_buf *b)
{
    for (uint32_t i = b->head; i < b->n; i++) {
        block_unref(b->v[i].b);
    }
    msm_recycle_free(b->v, (size_t)b->cap * sizeof(*b->v));
    memset(b, 0, sizeof(*b));
}

/* Room for one more view at the tail, compacting consumed views first. */
static struct msm_view *push_view(struct msm_buf *b)
{
    if (b->n == b->cap) {
        if (b->head > 0) {
            memmove(b->v, b->v + b->head, (b->n - b->head) * sizeof(*b->v));
            b->n -= b->head;
            b->head = 0;
        }
        if (b->n == b->cap) {
            /* The view array is recycled memory: most buffers live for one message. */
            size_t cap = b->cap ? (size_t)b->cap * 2 : 8;
            struct msm_view *v = msm_recycle_calloc(cap * sizeof(*v));
            if (b->n) {
                memcpy(v, b->v, b->n * sizeof(*v));
            }
            msm_recycle_free(b->v, (size_t)b->cap * sizeof(*b->v));
            b->v = v;
            b->cap = (uint32_t)cap;
        }
    }
    return &b->v[b->n++];
}

static struct msm_view *tail_writable(struct msm_buf *b)
{
    if (b->n == b->head) {
        return NULL;
    }
    struct msm_view *t = &b->v[b->n - 1];
    if (t->b->refs == 1 && t->off + t->len < t->b->cap) {
        return t;
    }
    return NULL;
}

char *msm_buf_reserve(struct msm_buf *b, size_t want, size_t *avail)
{
    struct msm_view *t = tail_writable(b);
    if (!t || (t->b->cap - t->off - t->len < want && t->b->cap - t->off - t->len < 1024)) {
        bool small = want <= SMALL_WANT && b->n == b->head;
        t = push_view(b);
        t->b = small ? small_block_new() : block_new(want);
        t->off = 0;
        t->len = 0;
    }
    *avail = t->b->cap - t->off - t->len;
    return t->b->data + t->off + t->len;
}

void msm_buf_commit(struct msm_buf *b, size_t n)
{
    if (!n) {
        /* An empty view may have been pushed by reserve; drop it. */
        if (b->n > b->head && b->v[b->n - 1].len == 0) {
            block_unref(b->v[b->n - 1].b);
            b->n--;
        }
        return;
    }
    b->v[b->n - 1].len += (uint32_t)n;
    b->len += n;
}

void msm_buf_append(struct msm_buf *b, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        size_t avail;
        char *dst = msm_buf_reserve(b, n, &avail);
        size_t k = n < avail ? n : avail;
        memcpy(dst, p, k);
        msm_buf_commit(b, k);
        p += k;
        n -= k;
    }
}

void msm_buf_copy(struct msm_buf *dst, const struct msm_buf *src)
{
    for (uint32_t i = src->head; i < src->n; i++) {
        const struct msm_view *sv = &src->v[i];
        if (!sv->len) {
            continue;
        }
        struct msm_view *v = push_view(dst);
        *v = *sv;
        v->b->refs++;
        dst->len += sv->len;
    }
}

void msm_buf_appendf(struct msm_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = msm_xvasprintf(fmt, ap);
    va_end(ap);
    msm_buf_append(b, s, strlen(s));
    free(s);
}

void msm_buf_prepend(struct msm_buf *b, const void *data, size_t n)
{
    if (!n) {
        return;
    }
    struct msm_buf tmp;
    msm_buf_init(&tmp);
    msm_buf_append(&tmp, data, n);
    msm_buf_move(&tmp, b);
    msm_buf_deinit(b);
    *b = tmp;
}

void msm_buf_move(struct msm_buf *dst, struct msm_buf *src)
{
    if (dst->len == 0 && dst->n == dst->head) {
        /* Fast path: swap storage. */
        struct msm_buf t = *dst;
        *dst = *src;
        *src = t;
        src->head = src->n = 0;
        src->len = 0;
        return;
    }
    for (uint32_t i = src->head; i < src->n; i++) {
        *push_view(dst) = src->v[i];
    }
    dst->len += src->len;
    src->head = src->n = 0;
    src->len = 0;
}

void msm_buf_move_n(struct msm_buf *dst, struct msm_buf *src, size_t n)
{
    if (n >= src->len) {
        msm_buf_move(dst, src);
        return;
    }
    while (n) {
        struct msm_view *h = &src->v[src->head];
        if (h->len <= n) {
            *push_view(dst) = *h;
            dst->len += h->len;
            src->len -= h->len;
            n -= h->len;
            src->head++;
            continue;
        }
        struct msm_view *d = push_view(dst);
        /* push_view may have moved src's array only if dst == src, which callers never do. */
        d->b = h->b;
        d->b->refs++;
        d->off = h->off;
        d->len = (uint32_t)n;
        dst->len += n;
        h->off += (uint32_t)n;
        h->len -= (uint32_t)n;
        src->len -= n;
        n = 0;
    }
}

void msm_buf_drain(struct msm_buf *b, size_t n)
{
    if (n > b->len) {
        n = b->len;
    }
    b->len -= n;
    while (n) {
        struct msm_view *h = &b->v[b->head];
        if (h->len <= n) {
            n -= h->len;
            block_unref(h->b);
            b->head++;
        } else {
            h->off += (uint32_t)n;
            h->len -= (uint32_t)n;
            n = 0;
        }
    }
    if (b->head == b->n) {
        b->head = b->n = 0;
    }
}

size_t msm_buf_copyout(const struct msm_buf *b, size_t off, void *out, size_t n)
{
    char *o = out;
    size_t done = 0;
    for (uint32_t i = b->head; i < b->n && done < n; i++) {
        const struct msm_view *v = &b->v[i];
        if (off >= v->len) {
            off -= v->len;
            continue;
        }
        size_t k = v->len - off;
        if (k > n - done) {
            k = n - done;
        }
        memcpy(o + done, v->b->data + v->off + off, k);
        done += k;
        off = 0;
    }
    return done;
}

char *msm_buf_linearize(struct msm_buf *b, size_t n)
{
    if (n > b->len) {
        n = b->len;
    }
    if (b->n == b->head) {
        return NULL;
    }
    struct msm_view *h = &b->v[b->head];
    if (h->len >= n) {
        return h->b->data + h->off;
    }
    struct msm_block *blk = block_new(n);
    msm_buf_copyout(b, 0, blk->data, n);
    msm_buf_drain(b, n);
    /* Put the new block in front. */
    if (b->head == 0) {
        push_view(b);
        memmove(b->v + 1, b->v, (b->n - 1) * sizeof(*b->v));
    } else {
        b->head--;
    }
    b->v[b->head] = (struct msm_view){.b = blk, .off = 0, .len = (uint32_t)n};
    b->len += n;
    return blk->data;
}

ssize_t msm_buf_search(const struct msm_buf *b, const void *needle, size_t nlen, size_t from)
{
    if (!nlen || b->len < nlen) {
        return -1;
    }
    /* Simple scan with a small window: protocols search for short delimiters in short heads. */
    const char *nd = needle;
    char win[256];
    if (nlen > sizeof(win)) {
        return -1;
    }
    for (size_t off = from; off + nlen <= b->len; off++) {
        if (msm_buf_copyout(b, off, win, 1) == 1 && win[0] == nd[0]) {
            if (msm_buf_copyout(b, off, win, nlen) == nlen && !memcmp(win, nd, nlen)) {
                return (ssize_t)off;
            }
        }
    }
    return -1;
}

int msm_buf_iov(const struct msm_buf *b, struct iovec *iov, int max)
{
    int k = 0;
    for (uint32_t i = b->head; i < b->n && k < max; i++) {
        iov[k].iov_base = b->v[i].b->data + b->v[i].off;
        iov[k].iov_len = b->v[i].len;
        k++;
    }
    return k;
}

ssize_t msm_buf_read_fd(struct msm_buf *b, int fd, size_t max)
{
    size_t avail;
    char *p = msm_buf_reserve(b, max < MSM_BUF_BLOCK ? max : MSM_BUF_BLOCK, &avail);
    if (avail > max) {
        avail = max;
    }
    ssize_t r;
    do {
        /* recv rather than read: a socket's read goes through the VFS layer first (measured:
         * about 1 % of the proxy's CPU per request); read stays for other descriptors. */
        r = recv(fd, p, avail, 0);
        if (r < 0 && errno == ENOTSOCK) {
            r = read(fd, p, avail);
        }
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        msm_buf_commit(b, 0);
        return -e;
    }
    msm_buf_commit(b, (size_t)r);
    return r;
}

ssize_t msm_buf_write_fd(struct msm_buf *b, int fd)
{
    ssize_t total = 0;
    while (b->len) {
        struct iovec iov[64];
        int k = msm_buf_iov(b, iov, 64);
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};
        ssize_t w;
        do {
            /* MSG_NOSIGNAL: a peer that went away is an error return, never SIGPIPE. One view
             * (most writes) goes with send, which spares the kernel the iovec import. */
            w = k == 1 ? send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                       : sendmsg(fd, &mh, MSG_NOSIGNAL);
            if (w < 0 && errno == ENOTSOCK) {
                w = writev(fd, iov, k);
            }
        } while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (total) {
                return total;
            }
            return -errno;
        }
        msm_buf_drain(b, (size_t)w);
        total += w;
        if (w == 0) {
            break;
        }
    }
    return total;
}
