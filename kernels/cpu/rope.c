/* rope.c — rotary position embedding (RoPE) on the q and k heads of a fused qkv, in place, forward and
 * backward (CPU). Hugging Face's LlamaRotaryEmbedding / rotate_half convention: the pairs of a head
 * are (j, j + hs/2), j < hs/2, rotated by a = p * inv_j at position p, with
 *   inv_j = 1 / theta^(2j/hs)   in fp32 (the exponent 2j/hs an fp32 division, as torch computes it),
 *   a     = p * inv_j           an fp32 product (as torch's fp32 matmul of positions and inv_freq),
 *   cos a, sin a                 computed in double from that fp32 angle and rounded to fp32,
 * so that a model trained here sees exactly the rotation Hugging Face applies at export, at every
 * position (the fp32 angle, not a more precise one, is the definition).
 * Backward applies the rotation by -a to the gradient (the rotation's transpose).
 *
 * Work: rows (b, t) in parallel; each thread computes inv_j once per call and cos/sin once per row
 * (shared by the NH + NKV rotated heads of the row) in its scratch (fm_cpu_ctx: 3 floats per pair,
 * processed in chunks of pairs when hs/2 does not fit). Element-wise: identical for any thread
 * count. */
#include <math.h>
#include <omp.h>

#include "cpu_internal.h"
#include "cpu_kernels.h"

/* Rotates pairs (j, j+hs/2) of the first NH + NKV heads of each row of x (B,T,W) by sign * a. */
static void rope_apply(fm_backend *be, float *x, int B, int T, int C, int NH, int NKV, int pos0,
                       float theta, float sign)
{
    const fm_cpu_ctx *cx = fm_cpu_cx(be);
    const int hs = C / NH, half = hs / 2, W = (NH + 2 * NKV) * hs, nrot = NH + NKV;
    const long rows = (long)B * T;
    if (rows <= 0 || half <= 0) return;
    const int cap = (int)(cx->scratch_floats / 3); /* pairs per chunk */
    const int nt = fm_cpu_team(be->threads, (size_t)rows * (size_t)nrot * (size_t)hs,
                               FM_CPU_ELEMWISE_SERIAL);
#pragma omp parallel num_threads(nt)
    {
        float *inv = cx->scratch + (size_t)omp_get_thread_num() * cx->scratch_floats;
        float *cs = inv + cap, *sn = cs + cap;
        for (int j0 = 0; j0 < half; j0 += cap) {
            const int nj = half - j0 < cap ? half - j0 : cap;
            for (int j = 0; j < nj; j++) {
                const float e = (float)(2 * (j0 + j)) / (float)hs;
                inv[j] = 1.0f / (float)pow((double)theta, (double)e);
            }
#pragma omp for schedule(static)
            for (long r = 0; r < rows; r++) {
                const float p = (float)(pos0 + (int)(r % T));
                for (int j = 0; j < nj; j++) {
                    const double a = (double)(p * inv[j]);
                    cs[j] = (float)cos(a);
                    sn[j] = sign * (float)sin(a);
                }
                float *row = x + (size_t)r * (size_t)W;
                for (int hh = 0; hh < nrot; hh++) {
                    float *lo = row + (size_t)hh * hs + j0, *hi = lo + half;
#pragma omp simd
                    for (int j = 0; j < nj; j++) {
                        const float a = lo[j], b = hi[j];
                        lo[j] = a * cs[j] - b * sn[j];
                        hi[j] = b * cs[j] + a * sn[j];
                    }
                }
            }
        }
    }
}

/* qkv (B,T,W) in place: q and k heads rotated by the angles of positions pos0.. */
void fm_cpu_rope_forward(fm_backend *be, float *qkv, int B, int T, int C, int NH, int NKV, int pos0,
                         float theta)
{
    rope_apply(be, qkv, B, T, C, NH, NKV, pos0, theta, 1.0f);
}

/* dqkv (B,T,W) in place: the q and k parts rotated back (by -a) */
void fm_cpu_rope_backward(fm_backend *be, float *dqkv, int B, int T, int C, int NH, int NKV,
                          int pos0, float theta)
{
    rope_apply(be, dqkv, B, T, C, NH, NKV, pos0, theta, -1.0f);
}
