/* bench_tokenizer.c — measures byte-level BPE training time and encode/decode throughput on one
 * core. Usage: bench_tokenizer TEXT_FILE [VOCAB_SIZE (default 4096)] [REPEATS (default 5)]
 * Encode is timed twice: "cold" (fresh tokenizer, empty word cache) and "warm" (best of REPEATS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "core/util.h"

static int fail(fm_status st)
{
    fm_status_print(st, stderr, 1);
    int code = fm_status_exit_code(st);
    fm_status_free(&st);
    return code;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TEXT_FILE [VOCAB_SIZE] [REPEATS]\n", argv[0]);
        return 2;
    }
    unsigned vocab = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 4096;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    char *text = NULL;
    size_t len = 0;
    fm_status st = fm_util_read_file(argv[1], &text, &len);
    if (st) return fail(st);
    const uint8_t *t = (const uint8_t *)text;
    fm_tokenizer *tok = NULL;
    double t0 = fm_util_now();
    st = fm_tokenizer_train(t, len, vocab, &tok);
    if (st) return fail(st);
    double train_s = fm_util_now() - t0;
    printf("input            %s (%.2f MB)\n", argv[1], (double)len / 1e6);
    printf("train            vocab %u in %.3f s (%.1f MB/s)\n", vocab, train_s, (double)len / 1e6 / train_s);

    fm_tokenizer_ids ids = {0};
    t0 = fm_util_now();
    if ((st = fm_tokenizer_encode(tok, t, len, &ids))) return fail(st);
    double cold = fm_util_now() - t0;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        ids.n = 0;
        t0 = fm_util_now();
        if ((st = fm_tokenizer_encode(tok, t, len, &ids))) return fail(st);
        double dt = fm_util_now() - t0;
        if (dt < best) best = dt;
    }
    printf("encode (cold)    %.1f MB/s\n", (double)len / 1e6 / cold);
    printf("encode (warm)    %.1f MB/s (best of %d)\n", (double)len / 1e6 / best, reps);
    printf("tokens           %zu (%.2f bytes/token)\n", ids.n, (double)len / (double)ids.n);
    uint8_t *back = NULL;
    size_t blen = 0;
    t0 = fm_util_now();
    if ((st = fm_tokenizer_decode(tok, ids.ids, ids.n, &back, &blen))) return fail(st);
    double dec = fm_util_now() - t0;
    printf("decode           %.1f MB/s\n", (double)blen / 1e6 / dec);
    int ok = blen == len && memcmp(back, t, len) == 0;
    printf("round trip       %s\n", ok ? "identical" : "DIFFERENT");
    free(back);
    fm_tokenizer_ids_free(&ids);
    fm_tokenizer_free(&tok);
    free(text);
    return ok ? 0 : 1;
}
