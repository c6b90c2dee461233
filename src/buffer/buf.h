#pragma once
/* Buffer chains: a byte queue made of views onto reference-counted blocks.
 *
 * Invariants:
 * - Bytes are appended at the tail and consumed at the head; moving a whole buffer into another
 *   (msm_buf_move) moves views, never bytes: the proxy path does no per-byte copies.
 * - A block is writable only through the view that owns its tail (refs == 1); shared blocks
 *   are read-only.
 * - len is always the sum of the views' lengths.
 * A buffer belongs to one thread (the connection's worker).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define MSM_BUF_BLOCK 16384

struct msm_block {
    uint32_t refs;
    uint32_t cap;
    char data[];
};

struct msm_view {
    struct msm_block *b;
    uint32_t off, len;
};

struct msm_buf {
    struct msm_view *v;
    uint32_t head; /* first live view */
    uint32_t n;    /* one past the last live view */
    uint32_t cap;
    size_t len;
};

void msm_buf_init(struct msm_buf *b);
void msm_buf_deinit(struct msm_buf *b);
void msm_buf_append(struct msm_buf *b, const void *data, size_t n);
void msm_buf_appendf(struct msm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Move all of <src> to the tail of <dst>; <src> becomes empty. */
void msm_buf_move(struct msm_buf *dst, struct msm_buf *src);
/* Move the first <n> bytes of <src> to <dst> (n <= src->len). */
void msm_buf_move_n(struct msm_buf *dst, struct msm_buf *src, size_t n);
/* Append a copy of <src> to <dst> without copying bytes: the views share <src>'s blocks, which
 * become read-only for both (retry buffers, mirrors). <src> is unchanged. */
void msm_buf_copy(struct msm_buf *dst, const struct msm_buf *src);
/* Prepend data (rare: protocol preambles). */
void msm_buf_prepend(struct msm_buf *b, const void *data, size_t n);
void msm_buf_drain(struct msm_buf *b, size_t n);
/* Copy up to <n> bytes from offset <off> into <out>; returns bytes copied. */
size_t msm_buf_copyout(const struct msm_buf *b, size_t off, void *out, size_t n);
/* Make the first <n> bytes contiguous and return a pointer to them (n <= len). */
char *msm_buf_linearize(struct msm_buf *b, size_t n);
/* Find <needle> starting at <from>; returns offset or -1. */
ssize_t msm_buf_search(const struct msm_buf *b, const void *needle, size_t nlen, size_t from);

/* I/O. read: up to <max> bytes from <fd> into the tail; returns bytes read, 0 on EOF, or
 * -errno (-EAGAIN when nothing is available). write: as much as the socket takes; returns bytes
 * written or -errno. */
ssize_t msm_buf_read_fd(struct msm_buf *b, int fd, size_t max);
ssize_t msm_buf_write_fd(struct msm_buf *b, int fd);
/* Fill <iov> with up to <max> views from the head; returns count. */
int msm_buf_iov(const struct msm_buf *b, struct iovec *iov, int max);
/* Reserve <want> bytes of contiguous writable tail space (may add a block); returns pointer and
 * sets *avail; commit what was written with msm_buf_commit. */
char *msm_buf_reserve(struct msm_buf *b, size_t want, size_t *avail);
void msm_buf_commit(struct msm_buf *b, size_t n);
/* Free this thread's recycled blocks and objects (buffer/recycle.h), at thread exit. */
void msm_buf_thread_cleanup(void);
