/* ckpt_test_util.h — synthetic tensor tables and buffers shared by the checkpoint tests, the test
 * driver and the benchmark. Header-only (static functions). */
#ifndef FM_CKPT_TEST_UTIL_H
#define FM_CKPT_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/checkpoint_file.h"

/* A synthetic set of three groups (params, adam_m, adam_v) sharing one tensor table. */
typedef struct ckpt_synth {
    fm_checkpoint_tensor *table;
    int ntensors;
    size_t numel;
    float *buf[3];
    fm_checkpoint_group groups[3];
} ckpt_synth;

static uint64_t ckpt_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Value of element i of group g for pattern `seed`: any bit pattern of a finite float. */
static float ckpt_value(uint64_t seed, int g, size_t i)
{
    uint64_t h = ckpt_mix(seed * 1000003ull + (uint64_t)g * 0x100000001b3ull + i);
    return (float)((double)(h >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static void ckpt_add(ckpt_synth *s, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    fm_checkpoint_tensor *t = &s->table[s->ntensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    size_t n = 1;
    for (int k = 0; k < ndim; k++) n *= (size_t)t->shape[k];
    t->offset = s->numel;
    s->numel += n;
}

/* A GPT-2-shaped table in the model's layer-major layout: vocab V (padded to 128), C, L layers,
 * maxT positions. 2-D tensors (rows, cols), 1-D for vectors. */
static int ckpt_synth_gpt2(ckpt_synth *s, int V, int C, int L, int maxT, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    int Vp = (V + 127) / 128 * 128;
    s->table = calloc((size_t)(4 + 12 * L), sizeof *s->table);
    if (!s->table) return -1;
    ckpt_add(s, "wte.weight", 2, Vp, C, 0);
    ckpt_add(s, "wpe.weight", 2, maxT, C, 0);
    ckpt_add(s, "ln_f.weight", 1, C, 0, 0);
    ckpt_add(s, "ln_f.bias", 1, C, 0, 0);
    for (int l = 0; l < L; l++) {
        char n[96];
#define CKPT_T(suffix, nd, a, b)                          \
    snprintf(n, sizeof n, "h.%d.%s", l, suffix);          \
    ckpt_add(s, n, nd, a, b, 0)
        CKPT_T("ln_1.weight", 1, C, 0);
        CKPT_T("ln_1.bias", 1, C, 0);
        CKPT_T("attn.c_attn.weight", 2, 3 * C, C);
        CKPT_T("attn.c_attn.bias", 1, 3 * C, 0);
        CKPT_T("attn.c_proj.weight", 2, C, C);
        CKPT_T("attn.c_proj.bias", 1, C, 0);
        CKPT_T("ln_2.weight", 1, C, 0);
        CKPT_T("ln_2.bias", 1, C, 0);
        CKPT_T("mlp.c_fc.weight", 2, 4 * C, C);
        CKPT_T("mlp.c_fc.bias", 1, 4 * C, 0);
        CKPT_T("mlp.c_proj.weight", 2, C, 4 * C);
        CKPT_T("mlp.c_proj.bias", 1, C, 0);
#undef CKPT_T
    }
    static const char *names[3] = {"params", "adam_m", "adam_v"};
    for (int g = 0; g < 3; g++) {
        s->buf[g] = malloc(s->numel * sizeof(float));
        if (!s->buf[g]) return -1;
        if (seed) {
#pragma omp parallel for schedule(static)
            for (long long i = 0; i < (long long)s->numel; i++)
                s->buf[g][i] = ckpt_value(seed, g, (size_t)i);
        } else {
            memset(s->buf[g], 0, s->numel * sizeof(float));
        }
        s->groups[g].name = names[g];
        s->groups[g].tensors = s->table;
        s->groups[g].ntensors = s->ntensors;
        s->groups[g].data = s->buf[g];
        s->groups[g].numel = s->numel;
    }
    return 0;
}

/* Index of the first element that differs from pattern `seed`, or -1 when all match. */
static long long ckpt_synth_check(const ckpt_synth *s, uint64_t seed)
{
    for (int g = 0; g < 3; g++)
        for (size_t i = 0; i < s->numel; i++) {
            float want = ckpt_value(seed, g, i);
            if (memcmp(&want, &s->buf[g][i], sizeof want) != 0) return (long long)(g * s->numel + i);
        }
    return -1;
}

static void ckpt_synth_free(ckpt_synth *s)
{
    for (int g = 0; g < 3; g++) free(s->buf[g]);
    free(s->table);
    memset(s, 0, sizeof *s);
}

#endif /* FM_CKPT_TEST_UTIL_H */
