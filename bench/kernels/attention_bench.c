/* attention_bench.c — `fmtrain-attention-bench`: speed of the CPU attention kernels alone.
 *
 * GPT-2 124M attention shape (C=768, NH=12, hs=64), batch B, for each T given: forward and backward
 * once for warm-up, then R times, timed with the process CPU clock (robust on a shared machine; with
 * P > 1 threads it adds the threads' times) and the wall clock. GFLOP/s count the useful causal FLOPs:
 * forward 2*B*T*T*C (QK^T and PV over the lower triangle), backward twice that (dV, dP, dQ, dK); the
 * backward's recomputation of the scores is not counted.
 *
 * Usage: fmtrain-attention-bench [threads P=1] [batch B=4] [reps R=5] [T ...=64 256 1024] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cpu/cpu_kernels.h"

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const int P = argc > 1 ? atoi(argv[1]) : 1, B = argc > 2 ? atoi(argv[2]) : 4;
    const int R = argc > 3 ? atoi(argv[3]) : 5, C = 768, NH = 12;
    int Ts[16] = {64, 256, 1024}, nT = 3;
    if (argc > 4) {
        nT = 0;
        for (int i = 4; i < argc && nT < 16; i++) Ts[nT++] = atoi(argv[i]);
    }
    if (P < 1 || B < 1 || R < 1) {
        fprintf(stderr, "usage: fmtrain-attention-bench [threads] [batch] [reps] [T ...]\n");
        return 2;
    }
    fm_backend *be = NULL;
    fm_status st = fm_backend_create("cpu", P, -1, &be);
    if (st) {
        fm_status_print(st, stderr, 0);
        fm_status_free(&st);
        return 1;
    }
    printf("attention C=%d NH=%d B=%d threads=%d, mean of %d reps\n", C, NH, B, P, R);
    for (int k = 0; k < nT; k++) {
        const int T = Ts[k];
        if (T < 1) continue;
        const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
        float *qkv = malloc(nq * 4), *dqkv = malloc(nq * 4), *out = malloc(no * 4);
        float *dout = malloc(no * 4), *lse = malloc((size_t)B * NH * T * 4);
        if (!qkv || !dqkv || !out || !dout || !lse) return 1;
        for (size_t i = 0; i < nq; i++) qkv[i] = (float)((i * 2654435761u) % 1000u) / 1000.0f - 0.5f;
        for (size_t i = 0; i < no; i++) dout[i] = (float)((i * 40503u) % 1000u) / 1000.0f - 0.5f;
        fm_cpu_attention_forward(be, out, lse, qkv, B, T, C, NH, NH);
        fm_cpu_attention_backward(be, dqkv, dout, qkv, out, lse, B, T, C, NH, NH);
        double c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w0 = clock_s(CLOCK_MONOTONIC);
        for (int r = 0; r < R; r++) fm_cpu_attention_forward(be, out, lse, qkv, B, T, C, NH, NH);
        double c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w1 = clock_s(CLOCK_MONOTONIC);
        for (int r = 0; r < R; r++)
            fm_cpu_attention_backward(be, dqkv, dout, qkv, out, lse, B, T, C, NH, NH);
        double c2 = clock_s(CLOCK_PROCESS_CPUTIME_ID), w2 = clock_s(CLOCK_MONOTONIC);
        const double ff = 2.0 * B * (double)T * T * C;
        const double cf = (c1 - c0) / R, cb = (c2 - c1) / R, wf = (w1 - w0) / R, wb = (w2 - w1) / R;
        printf("T=%5d  forward %8.2f ms cpu (%5.1f GFLOP/s) %8.2f ms wall   backward %8.2f ms cpu "
               "(%5.1f GFLOP/s) %8.2f ms wall\n",
               T, 1e3 * cf, ff / cf * 1e-9, 1e3 * wf, 1e3 * cb, 2.0 * ff / cb * 1e-9, 1e3 * wb);
        free(qkv), free(dqkv), free(out), free(dout), free(lse);
    }
    fm_backend_free(&be);
    return 0;
}
