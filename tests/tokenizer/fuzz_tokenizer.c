/* fuzz_tokenizer.c — libFuzzer harness: arbitrary bytes through the tokenizer.
 * Checks decode(encode(x)) == x with a tokenizer trained once on fixed text, with one trained on the
 * input itself (when it allows), that encoding in safe-cut pieces equals encoding whole, and that
 * decoding arbitrary ids either succeeds or fails cleanly (never reads out of bounds). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"

static fm_tokenizer *base;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

static void roundtrip(fm_tokenizer *tok, const uint8_t *x, size_t n)
{
    fm_tokenizer_ids ids = {0}, ids2 = {0};
    if (fm_tokenizer_encode(tok, x, n, &ids)) die("encode failed");
    uint8_t *back = NULL;
    size_t blen = 0;
    if (fm_tokenizer_decode(tok, ids.ids, ids.n, &back, &blen)) die("decode of encode failed");
    if (blen != n || memcmp(back, x, n) != 0) die("decode(encode(x)) != x");
    free(back);
    /* streaming equivalence */
    size_t pos = 0;
    while (pos < n) {
        size_t k = n - pos;
        if (k > 64) {
            size_t c = fm_tokenizer_safe_cut(x + pos, 64);
            k = c ? c : k;
        }
        if (fm_tokenizer_encode(tok, x + pos, k, &ids2)) die("encode failed");
        pos += k;
    }
    if (ids2.n != ids.n || (ids.n && memcmp(ids.ids, ids2.ids, ids.n * sizeof *ids.ids) != 0))
        die("encoding in safe-cut pieces differs from encoding whole");
    fm_tokenizer_ids_free(&ids);
    fm_tokenizer_ids_free(&ids2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base) {
        static const char text[] =
            "In the beginning God created the heaven and the earth. And the earth was without form, "
            "and void; and darkness was upon the face of the deep. 1:1 1:2 it's we'll they're "
            "caf\xc3\xa9 na\xc3\xafve \t\n\n  x += 42; return (a[i] * b) / 3.14;";
        if (fm_tokenizer_train((const uint8_t *)text, sizeof text - 1, 330, &base)) die("base training");
    }
    roundtrip(base, data, size);
    /* decode arbitrary ids */
    size_t nid = size / 4;
    uint32_t *ids = malloc((nid ? nid : 1) * sizeof *ids);
    for (size_t i = 0; i < nid; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = v % 400; /* some >= vocab */
    }
    uint8_t *txt = NULL;
    size_t len = 0;
    fm_status st = fm_tokenizer_decode(base, ids, nid, &txt, &len);
    if (st) fm_status_free(&st);
    else free(txt);
    free(ids);
    /* train on the input itself */
    if (size > 0 && size < 4096) {
        fm_tokenizer *t = NULL;
        st = fm_tokenizer_train(data, size, 257 + data[0] % 32, &t);
        if (st) fm_status_free(&st);
        else {
            roundtrip(t, data, size);
            fm_tokenizer_free(&t);
        }
    }
    return 0;
}
