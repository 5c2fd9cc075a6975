/* hf_logits.c — test helper: the logits and loss of fmtrain's forward for token windows, to compare
 * with transformers (test_export.py, test_import.py) until `fmtrain eval` does it.
 * Usage: hf_logits CHECKPOINT|RUNDIR WINDOWS.i32 B T OUT.bin
 * WINDOWS: B x (T+1) int32 tokens (each window's inputs, then its last target). OUT: the mean
 * cross-entropy over the B*T positions (float64), then the logits (B, T, V) float32. */
#include <stdio.h>
#include <stdlib.h>

#include "ckpt/checkpoint.h"
#include "kernels.h"
#include "model/model.h"

#define CHECK(x)                                                                                            \
    do {                                                                                                    \
        fm_status st_ = (x);                                                                                \
        if (st_) {                                                                                          \
            fm_status_print(st_, stderr, 1);                                                                \
            return 1;                                                                                       \
        }                                                                                                   \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: hf_logits CHECKPOINT WINDOWS.i32 B T OUT.bin\n");
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]);
    fm_backend *be = NULL;
    fm_model *dec = NULL, *m = NULL;
    fm_tokenizer *tok = NULL;
    CHECK(fm_backend_create("cpu", 2, 0, &be));
    CHECK(fm_checkpoint_load_model(argv[1], be, 1, &dec, &tok, NULL, 0, NULL, 0));
    const fm_model_shape *s = fm_model_get_shape(dec);
    CHECK(fm_model_create(s, be, B, &m));
    float *p = malloc(fm_model_num_params(m) * sizeof *p);
    CHECK(fm_model_get_params(dec, p));
    CHECK(fm_model_set_params(m, p));
    int32_t *w = malloc((size_t)B * (size_t)(T + 1) * sizeof *w), *in = malloc((size_t)B * T * sizeof *in),
            *tg = malloc((size_t)B * T * sizeof *tg);
    FILE *f = fopen(argv[2], "rb");
    if (!f || fread(w, sizeof *w, (size_t)B * (size_t)(T + 1), f) != (size_t)B * (size_t)(T + 1)) return 2;
    fclose(f);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            in[b * T + t] = w[b * (T + 1) + t];
            tg[b * T + t] = w[b * (T + 1) + t + 1];
        }
    float loss = 0;
    CHECK(fm_model_forward(m, in, tg, B, T, &loss));
    int Vp = fm_model_get_padded_vocab(m), V = s->vocab_size;
    float *lg = malloc((size_t)Vp * sizeof *lg);
    FILE *o = fopen(argv[5], "wb");
    double l = loss;
    fwrite(&l, sizeof l, 1, o);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            CHECK(fm_model_logits(m, b, t, lg));
            fwrite(lg, sizeof *lg, (size_t)V, o);
        }
    fclose(o);
    free(lg);
    free(w);
    free(in);
    free(tg);
    free(p);
    fm_model_free(&m);
    fm_model_free(&dec);
    fm_tokenizer_free(&tok);
    fm_backend_free(&be);
    return 0;
}
