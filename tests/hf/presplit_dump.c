/* presplit_dump.c — test helper: prints the words of each input record by one pre-split rule, for
 * test_presplit.py to compare with Hugging Face tokenizers.
 * Usage: presplit_dump fmtrain|gpt2|llama3 RECORDS OUT
 * RECORDS: records of a 4-byte little-endian length then that many bytes. OUT: one line per record,
 * the byte lengths of its words separated by spaces. Also checks fm_presplit_cut on every prefix
 * boundary of the record: the words of the cut prefix plus those of the rest must be the record's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/presplit.h"

static size_t words(fm_presplit r, const unsigned char *t, size_t n, size_t *out)
{
    size_t k = 0, pos = 0;
    while (pos < n) {
        size_t w = fm_presplit_next(r, t + pos, n - pos, 1, NULL);
        out[k++] = w;
        pos += w;
    }
    return k;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: presplit_dump RULE RECORDS OUT\n");
        return 2;
    }
    fm_presplit r;
    if (strcmp(argv[1], "fmtrain") == 0) r = FM_PRESPLIT_FMTRAIN;
    else if (strcmp(argv[1], "gpt2") == 0) r = FM_PRESPLIT_GPT2;
    else if (strcmp(argv[1], "llama3") == 0) r = FM_PRESPLIT_LLAMA3;
    else return 2;
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "w");
    if (!in || !out) return 2;
    unsigned char len4[4];
    int bad = 0;
    while (fread(len4, 1, 4, in) == 4) {
        size_t n = (size_t)len4[0] | (size_t)len4[1] << 8 | (size_t)len4[2] << 16 | (size_t)len4[3] << 24;
        unsigned char *t = malloc(n + 1);
        size_t *w = malloc((n + 1) * sizeof *w), *w2 = malloc((n + 1) * sizeof *w2);
        if (!t || !w || !w2 || fread(t, 1, n, in) != n) return 2;
        size_t k = words(r, t, n, w);
        for (size_t i = 0; i < k; i++) fprintf(out, "%s%zu", i ? " " : "", w[i]);
        fputc('\n', out);
        /* streaming: cut at every length and re-split both parts */
        for (size_t m = 0; m <= n && n < 4096; m += 1 + n / 64) {
            size_t c = fm_presplit_cut(r, t, m);
            size_t k1 = words(r, t, c, w2);
            size_t k2 = words(r, t + c, n - c, w2 + k1);
            if (k1 + k2 != k || memcmp(w, w2, k * sizeof *w) != 0) {
                size_t a = c > 12 ? c - 12 : 0, e = m + 4 < n ? m + 4 : n;
                fprintf(stderr, "cut %zu of prefix %zu of a %zu-byte record changes its words: ", c, m, n);
                for (size_t i = a; i < e; i++) fprintf(stderr, i == c ? "|%02x" : " %02x", t[i]);
                fprintf(stderr, "\n");
                bad = 1;
                break;
            }
        }
        free(t);
        free(w);
        free(w2);
    }
    fclose(in);
    fclose(out);
    return bad;
}
