/* Buffer chain: appends, moves without copies, partial moves, drains, linearize, search, I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buffer/buf.h"
#include "buffer/recycle.h"

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (char)((i * 31 + seed) & 0xff);
    }
}

static void test_append_copyout(void **state)
{
    (void)state;
    struct msm_buf b;
    msm_buf_init(&b);
    size_t n = 3 * MSM_BUF_BLOCK + 17;
    char *src = malloc(n), *dst = malloc(n);
    fill(src, n, 1);
    msm_buf_append(&b, src, 100);
    msm_buf_append(&b, src + 100, n - 100);
    assert_int_equal(b.len, n);
    assert_int_equal(msm_buf_copyout(&b, 0, dst, n), n);
    assert_memory_equal(src, dst, n);
    assert_int_equal(msm_buf_copyout(&b, n - 10, dst, 100), 10);
    assert_memory_equal(src + n - 10, dst, 10);
    msm_buf_deinit(&b);
    free(src);
    free(dst);
}

static void test_move_and_partial(void **state)
{
    (void)state;
    struct msm_buf a, b;
    msm_buf_init(&a);
    msm_buf_init(&b);
    char src[40000], out[40000];
    fill(src, sizeof(src), 7);
    msm_buf_append(&a, src, sizeof(src));
    msm_buf_move_n(&b, &a, 12345);
    assert_int_equal(a.len, sizeof(src) - 12345);
    assert_int_equal(b.len, 12345);
    msm_buf_move(&b, &a);
    assert_int_equal(a.len, 0);
    assert_int_equal(b.len, sizeof(src));
    msm_buf_copyout(&b, 0, out, sizeof(out));
    assert_memory_equal(src, out, sizeof(src));
    /* Appending to a buffer whose tail block is shared must not modify the other view. */
    msm_buf_move_n(&a, &b, 100);
    msm_buf_append(&a, "XYZ", 3);
    msm_buf_copyout(&b, 0, out, 10);
    assert_memory_equal(src + 100, out, 10);
    msm_buf_deinit(&a);
    msm_buf_deinit(&b);
}

static void test_drain_linearize_search(void **state)
{
    (void)state;
    struct msm_buf b;
    msm_buf_init(&b);
    char big[MSM_BUF_BLOCK];
    memset(big, 'a', sizeof(big));
    msm_buf_append(&b, big, sizeof(big) - 2);
    msm_buf_append(&b, "\r\n\r\nBODY", 8);
    assert_int_equal(msm_buf_search(&b, "\r\n\r\n", 4, 0), (ssize_t)(sizeof(big) - 2));
    assert_int_equal(msm_buf_search(&b, "nope", 4, 0), -1);
    msm_buf_drain(&b, sizeof(big) - 4);
    char *p = msm_buf_linearize(&b, 8);
    assert_memory_equal(p, "aa\r\n\r\nBO", 8);
    assert_int_equal(b.len, 10);
    msm_buf_prepend(&b, "PRE", 3);
    assert_int_equal(b.len, 13);
    char out[13];
    msm_buf_copyout(&b, 0, out, 13);
    assert_memory_equal(out, "PREaa\r\n\r\nBODY", 13);
    msm_buf_drain(&b, 1000);
    assert_int_equal(b.len, 0);
    msm_buf_deinit(&b);
}

static void test_fd_io(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct msm_buf w, r;
    msm_buf_init(&w);
    msm_buf_init(&r);
    char src[50000], out[50000];
    fill(src, sizeof(src), 3);
    msm_buf_append(&w, src, sizeof(src));
    ssize_t total = 0;
    while (w.len) {
        ssize_t n = msm_buf_write_fd(&w, sv[0]);
        assert_true(n > 0);
        total += n;
        while (r.len < (size_t)total) {
            assert_true(msm_buf_read_fd(&r, sv[1], 65536) > 0);
        }
    }
    msm_buf_copyout(&r, 0, out, sizeof(out));
    assert_memory_equal(src, out, sizeof(src));
    close(sv[0]);
    assert_int_equal(msm_buf_read_fd(&r, sv[1], 100), 0); /* EOF */
    close(sv[1]);
    msm_buf_deinit(&w);
    msm_buf_deinit(&r);
}

/* Recycled memory comes back zeroed (calloc) at the size asked, whatever was written before,
 * for every size class and past the largest. */
static void test_recycle(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 24, 64, 65, 500, 1024, 2100, 8192, 8193, 20000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (int round = 0; round < 3; round++) {
            unsigned char *p = msm_recycle_calloc(sizes[i]);
            for (size_t k = 0; k < sizes[i]; k++) {
                assert_int_equal(p[k], 0);
            }
            memset(p, 0xa5, sizes[i]);
            msm_recycle_free(p, sizes[i]);
        }
    }
    msm_recycle_free(NULL, 100);
    /* More objects than a class keeps: the rest go back to malloc. */
    void *many[600];
    for (int i = 0; i < 600; i++) {
        many[i] = msm_recycle_alloc(512);
    }
    for (int i = 0; i < 600; i++) {
        msm_recycle_free(many[i], 512);
    }
    msm_recycle_thread_cleanup();
}

/* A small append to an empty buffer takes a small block; what follows still lands in order,
 * and moving / copying / draining such blocks works as with standard ones. */
static void test_small_first_block(void **state)
{
    (void)state;
    struct msm_buf b, c;
    msm_buf_init(&b);
    msm_buf_init(&c);
    size_t n = 5000;
    char *src = malloc(n), *dst = malloc(n);
    fill(src, n, 7);
    msm_buf_append(&b, src, 10);
    for (size_t off = 10; off < n; off += 333) {
        msm_buf_append(&b, src + off, off + 333 <= n ? 333 : n - off);
    }
    assert_int_equal(b.len, n);
    assert_true(b.n - b.head >= 2); /* the small block filled up */
    msm_buf_copy(&c, &b);
    msm_buf_drain(&b, 5);
    assert_int_equal(msm_buf_copyout(&b, 0, dst, n), n - 5);
    assert_memory_equal(dst, src + 5, n - 5);
    msm_buf_deinit(&b);
    assert_int_equal(msm_buf_copyout(&c, 0, dst, n), n);
    assert_memory_equal(dst, src, n);
    char *lin = msm_buf_linearize(&c, 3000);
    assert_memory_equal(lin, src, 3000);
    msm_buf_deinit(&c);
    free(src);
    free(dst);
    msm_buf_thread_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_copyout),
        cmocka_unit_test(test_move_and_partial),
        cmocka_unit_test(test_drain_linearize_search),
        cmocka_unit_test(test_fd_io),
        cmocka_unit_test(test_recycle),
        cmocka_unit_test(test_small_first_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
