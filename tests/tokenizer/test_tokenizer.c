/* test_tokenizer.c — the byte-level BPE tokenizer: pre-split rules, round trips (King James text,
 * random bytes), deterministic training, streaming equivalence, HDF5 save/load and damage, errors.
 * The KJV text comes from FMTRAIN_KJV_TEXT (generated at build time with Debian's `bible`); tests
 * that need it are skipped when it is absent. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "data/tokenizer.h"
#include "core/util.h"

static char *kjv;
static size_t kjv_len;
static fm_tokenizer *kjv_tok; /* 4096 ids, trained once in the group setup */

#define OK(expr)                                                        \
    do {                                                                \
        fm_status st_ = (expr);                                         \
        if (st_) fm_status_print(st_, stderr, 1);                       \
        assert_null(st_);                                               \
    } while (0)

static int group_setup(void **state)
{
    (void)state;
    const char *p = getenv("FMTRAIN_KJV_TEXT");
    if (p && access(p, R_OK) == 0) {
        fm_status st = fm_util_read_file(p, &kjv, &kjv_len);
        if (st) {
            fm_status_print(st, stderr, 1);
            fm_status_free(&st);
            return -1;
        }
        double t0 = fm_util_now();
        st = fm_tokenizer_train((const uint8_t *)kjv, kjv_len, 4096, &kjv_tok);
        if (st) {
            fm_status_print(st, stderr, 1);
            fm_status_free(&st);
            return -1;
        }
        fprintf(stderr, "trained 4096 ids on %zu bytes of KJV in %.2f s\n", kjv_len, fm_util_now() - t0);
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    fm_tokenizer_free(&kjv_tok);
    free(kjv);
    return 0;
}

/* Splits text into words; returns them joined by '|' into buf. */
static void split(const char *text, char *buf, size_t size)
{
    size_t len = strlen(text), pos = 0, o = 0;
    while (pos < len) {
        size_t w = fm_tokenizer_word_length((const uint8_t *)text + pos, len - pos);
        assert_true(w >= 1);
        if (o) buf[o++] = '|';
        assert_true(o + w + 2 < size);
        memcpy(buf + o, text + pos, w);
        o += w;
        pos += w;
    }
    buf[o] = 0;
}

static void test_presplit(void **state)
{
    (void)state;
    char b[512];
    split("Hello world, it's 2024!", b, sizeof b);
    assert_string_equal(b, "Hello| world|,| it|'s| 2024|!");
    split("a  b", b, sizeof b);
    assert_string_equal(b, "a| | b");
    split("end.\n\nNext  \tx", b, sizeof b);
    assert_string_equal(b, "end|.|\n\n|Next|  \t|x");
    split("we'll they're I'm", b, sizeof b);
    assert_string_equal(b, "we|'ll| they|'re| I|'m");
    split("caf\xc3\xa9 na\xc3\xafve", b, sizeof b);
    assert_string_equal(b, "caf\xc3\xa9| na\xc3\xafve");
    split("x   ", b, sizeof b);
    assert_string_equal(b, "x|   ");
    /* the examples of docs/dataset-format.md, "How text is encoded" */
    split("\n\nA", b, sizeof b); /* GPT-2's regex: "\n", "\n", "A" */
    assert_string_equal(b, "\n\n|A");
    split("  \tA", b, sizeof b);
    assert_string_equal(b, "  \t|A");
    split("\nA", b, sizeof b);
    assert_string_equal(b, "\n|A");
    split("'sand 'S 'LL", b, sizeof b); /* contractions: lower case only */
    assert_string_equal(b, "'s|and| '|S| '|LL");
    split("don\xe2\x80\x99t \xc2\xbd", b, sizeof b); /* every byte >= 0x80 is a letter */
    assert_string_equal(b, "don\xe2\x80\x99t| \xc2\xbd");
    split(" 42 ...x", b, sizeof b);
    assert_string_equal(b, " 42| ...|x");
    /* long runs are cut at FM_TOKENIZER_MAX_WORD */
    char lng[700];
    memset(lng, 'a', 600);
    lng[600] = 0;
    assert_int_equal(fm_tokenizer_word_length((const uint8_t *)lng, 600), FM_TOKENIZER_MAX_WORD);
}

static void test_safe_cut(void **state)
{
    (void)state;
    const char *t = "one two three";
    size_t c = fm_tokenizer_safe_cut((const uint8_t *)t, strlen(t));
    assert_int_equal(c, 7); /* before " three" */
    assert_int_equal(fm_tokenizer_safe_cut((const uint8_t *)"abcdef", 6), 0);
    const char *u = "line\nNext";
    assert_int_equal(fm_tokenizer_safe_cut((const uint8_t *)u, strlen(u)), 5);
}

static void roundtrip(fm_tokenizer *tok, const uint8_t *x, size_t n)
{
    fm_tokenizer_ids ids = {0};
    OK(fm_tokenizer_encode(tok, x, n, &ids));
    for (size_t i = 0; i < ids.n; i++) assert_true(ids.ids[i] < fm_tokenizer_eot_id(tok));
    uint8_t *back = NULL;
    size_t blen = 0;
    OK(fm_tokenizer_decode(tok, ids.ids, ids.n, &back, &blen));
    assert_int_equal(blen, n);
    assert_memory_equal(back, x, n);
    free(back);
    fm_tokenizer_ids_free(&ids);
}

static void test_kjv_roundtrip(void **state)
{
    (void)state;
    if (!kjv_tok) skip();
    fm_tokenizer_ids ids = {0};
    double t0 = fm_util_now();
    OK(fm_tokenizer_encode(kjv_tok, (const uint8_t *)kjv, kjv_len, &ids));
    double dt = fm_util_now() - t0;
    fprintf(stderr, "encoded %zu bytes into %zu tokens (%.2f bytes/token) at %.1f MB/s\n", kjv_len, ids.n,
            (double)kjv_len / (double)ids.n, (double)kjv_len / dt / 1e6);
    /* a 4096-id vocabulary compresses English well beyond bytes */
    assert_true((double)kjv_len / (double)ids.n > 3.0);
    uint8_t *back = NULL;
    size_t blen = 0;
    OK(fm_tokenizer_decode(kjv_tok, ids.ids, ids.n, &back, &blen));
    assert_int_equal(blen, kjv_len);
    assert_memory_equal(back, kjv, kjv_len);
    free(back);
    /* streaming: encoding in pieces cut at safe points gives the same ids */
    fm_tokenizer_ids ids2 = {0};
    size_t pos = 0;
    while (pos < kjv_len) {
        size_t n = kjv_len - pos;
        if (n > 10000) {
            size_t c = fm_tokenizer_safe_cut((const uint8_t *)kjv + pos, 10000);
            assert_true(c > 0);
            n = c;
        }
        OK(fm_tokenizer_encode(kjv_tok, (const uint8_t *)kjv + pos, n, &ids2));
        pos += n;
    }
    assert_int_equal(ids2.n, ids.n);
    assert_memory_equal(ids2.ids, ids.ids, ids.n * sizeof *ids.ids);
    fm_tokenizer_ids_free(&ids);
    fm_tokenizer_ids_free(&ids2);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_random_bytes_roundtrip(void **state)
{
    (void)state;
    fm_tokenizer *tok = kjv_tok;
    fm_tokenizer *small = NULL;
    if (!tok) {
        const char *t = "the cat sat on the mat; the cat ate the rat. 123 456 the end";
        OK(fm_tokenizer_train((const uint8_t *)t, strlen(t), 280, &small));
        tok = small;
    }
    uint64_t s = 0x1234567;
    uint8_t buf[4096];
    for (int iter = 0; iter < 300; iter++) {
        size_t n = (size_t)(rng_next(&s) % sizeof buf);
        int mode = iter % 3;
        for (size_t i = 0; i < n; i++) {
            uint64_t r = rng_next(&s);
            if (mode == 0) buf[i] = (uint8_t)r;                               /* any byte */
            else if (mode == 1) buf[i] = " aeht\n'sd.0123\xc3\xa9"[r % 16];   /* text-like */
            else buf[i] = (r % 7 == 0) ? ' ' : (uint8_t)('a' + r % 26);        /* words */
        }
        roundtrip(tok, buf, n);
    }
    roundtrip(tok, (const uint8_t *)"", 0);
    fm_tokenizer_free(&small);
}

static void test_training_deterministic(void **state)
{
    (void)state;
    const uint8_t *text = (const uint8_t *)kjv;
    size_t len = kjv_len < 500000 ? kjv_len : 500000;
    char fallback[20000];
    if (!kjv) {
        uint64_t s = 99;
        for (size_t i = 0; i < sizeof fallback; i++)
            fallback[i] = (rng_next(&s) % 5 == 0) ? ' ' : (char)('a' + rng_next(&s) % 6);
        text = (const uint8_t *)fallback;
        len = sizeof fallback;
    }
    fm_tokenizer *a = NULL, *b = NULL;
    OK(fm_tokenizer_train(text, len, 1000, &a));
    OK(fm_tokenizer_train(text, len, 1000, &b));
    for (uint32_t id = 0; id < 1000; id++) {
        size_t la, lb;
        const uint8_t *ta = fm_tokenizer_token(a, id, &la), *tb = fm_tokenizer_token(b, id, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(ta, tb, la);
    }
    assert_null(fm_tokenizer_token(a, 1000, &(size_t){0}));
    /* the most frequent pair of "aaaa bbbb aaaa" words: ties broken by smaller ids */
    fm_tokenizer *t = NULL;
    OK(fm_tokenizer_train((const uint8_t *)"ab ab ba ba", 11, 258, &t));
    size_t l;
    const uint8_t *tk = fm_tokenizer_token(t, 256, &l);
    /* pairs: (' ',a)x1,(a,b)x2,(' ',b)x2,(b,a)x2: count 2 ties -> smallest left id ' ' (32) */
    assert_int_equal(l, 2);
    assert_memory_equal(tk, " b", 2);
    fm_tokenizer_free(&t);
    fm_tokenizer_free(&a);
    fm_tokenizer_free(&b);
}

static void test_errors(void **state)
{
    (void)state;
    fm_tokenizer *t = NULL;
    fm_status st = fm_tokenizer_train((const uint8_t *)"ab ab", 5, 100000, &t);
    assert_non_null(st);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "supports at most"));
    fm_status_free(&st);
    st = fm_tokenizer_train((const uint8_t *)"ab ab", 5, 200, &t);
    assert_int_equal(fm_status_code(st), FM_ERR_USAGE);
    fm_status_free(&st);
    OK(fm_tokenizer_train((const uint8_t *)"ab ab cd cd", 11, 258, &t));
    uint32_t bad[2] = {65, 258};
    uint8_t *txt = NULL;
    size_t len = 0;
    st = fm_tokenizer_decode(t, bad, 2, &txt, &len);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "position 1"));
    fm_status_free(&st);
    uint32_t eot = fm_tokenizer_eot_id(t);
    OK(fm_tokenizer_decode(t, &eot, 1, &txt, &len));
    assert_string_equal((char *)txt, FM_TOKENIZER_EOT_TEXT);
    free(txt);
    fm_tokenizer_free(&t);
    fm_tokenizer_free(&t); /* safe twice */
}

static void test_hdf5_save_load(void **state)
{
    (void)state;
    char path[] = "/tmp/fm_tok_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *text = "the quick brown fox jumps over the lazy dog; the dog sleeps. the fox runs!";
    fm_tokenizer *t = NULL, *u = NULL;
    OK(fm_tokenizer_train((const uint8_t *)text, strlen(text), 290, &t));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    OK(fm_tokenizer_save(t, f, "tokenizer"));
    assert_true(fm_tokenizer_exists(f, "tokenizer"));
    assert_false(fm_tokenizer_exists(f, "nothing"));
    /* damaged copy: a merge that refers to a later id */
    OK(fm_tokenizer_save(t, f, "damaged"));
    hid_t ds = H5Dopen2(f, "damaged/merges", H5P_DEFAULT);
    uint32_t m[2] = {289, 289};
    hsize_t start[2] = {0, 0}, cnt[2] = {1, 2};
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(2, cnt, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
    assert_true(H5Dwrite(ds, H5T_NATIVE_UINT32, ms, fs, H5P_DEFAULT, m) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    /* damaged token bytes */
    OK(fm_tokenizer_save(t, f, "badbytes"));
    ds = H5Dopen2(f, "badbytes/token_bytes", H5P_DEFAULT);
    uint8_t zero = 'Z';
    hsize_t one = 1, at = 3;
    fs = H5Dget_space(ds);
    ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, NULL, &one, NULL);
    assert_true(H5Dwrite(ds, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, &zero) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    H5Fclose(f);

    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    OK(fm_tokenizer_load(f, "tokenizer", &u));
    assert_int_equal(fm_tokenizer_vocab_size(u), 290);
    fm_tokenizer_ids a = {0}, b = {0};
    OK(fm_tokenizer_encode(t, (const uint8_t *)text, strlen(text), &a));
    OK(fm_tokenizer_encode(u, (const uint8_t *)text, strlen(text), &b));
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof *a.ids);
    fm_tokenizer *bad = NULL;
    fm_status st = fm_tokenizer_load(f, "damaged", &bad);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    assert_non_null(strstr(fm_status_message(st), "merge 0"));
    fm_status_free(&st);
    st = fm_tokenizer_load(f, "badbytes", &bad);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    /* token 3 now reads "Z", the bytes of token 90 */
    assert_non_null(strstr(fm_status_message(st), "tokens 3 and 90 have the same bytes"));
    fm_status_free(&st);
    st = fm_tokenizer_load(f, "nothing", &bad);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    assert_null(bad);
    H5Fclose(f);
    fm_tokenizer_ids_free(&a);
    fm_tokenizer_ids_free(&b);
    fm_tokenizer_free(&t);
    fm_tokenizer_free(&u);
    unlink(path);
}

/* HDF5 prints its error stack through the automatic handler; fmtrain's entry points switch it off
 * around their calls and restore it (data/h5util.h), so a failure inside them prints nothing and the
 * caller's handler is still installed afterwards. */
static int h5_prints;
static herr_t count_prints(hid_t stack, void *data)
{
    (void)stack;
    (void)data;
    h5_prints++;
    return 0;
}

static void test_hdf5_error_stack_quiet(void **state)
{
    (void)state;
    char path[] = "/tmp/fm_tok_quiet_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    const char *text = "an error stack is for developers; users get one line that names the file";
    fm_tokenizer *t = NULL;
    OK(fm_tokenizer_train((const uint8_t *)text, strlen(text), 280, &t));
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    OK(fm_tokenizer_save(t, f, "tokenizer"));

    H5E_auto2_t saved_func = NULL;
    void *saved_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &saved_func, &saved_data);
    int marker = 0;
    H5Eset_auto2(H5E_DEFAULT, count_prints, &marker);
    /* control: the same failing call made directly reaches the handler */
    h5_prints = 0;
    hid_t g = H5Gcreate2(f, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(g < 0);
    assert_int_equal(h5_prints, 1);
    /* inside fmtrain: an fm_status, nothing printed */
    h5_prints = 0;
    fm_status st = fm_tokenizer_save(t, f, "tokenizer"); /* the group exists already */
    assert_int_equal(fm_status_code(st), FM_ERR_IO);
    assert_non_null(strstr(fm_status_message(st), "tokenizer group 'tokenizer'"));
    fm_status_free(&st);
    assert_false(fm_tokenizer_exists(f, "no/such/group"));
    fm_tokenizer *u = NULL;
    st = fm_tokenizer_load(f, "no/such/group", &u);
    assert_int_equal(fm_status_code(st), FM_ERR_INPUT);
    fm_status_free(&st);
    assert_int_equal(h5_prints, 0);
    /* and the caller's handler is back */
    H5E_auto2_t func = NULL;
    void *data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    assert_true(func == count_prints);
    assert_ptr_equal(data, &marker);

    H5Eset_auto2(H5E_DEFAULT, saved_func, saved_data);
    H5Fclose(f);
    fm_tokenizer_free(&t);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presplit),
        cmocka_unit_test(test_safe_cut),
        cmocka_unit_test(test_kjv_roundtrip),
        cmocka_unit_test(test_random_bytes_roundtrip),
        cmocka_unit_test(test_training_deterministic),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_hdf5_save_load),
        cmocka_unit_test(test_hdf5_error_stack_quiet),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
