/* matmul.cu — fully connected layer out = inp @ weight^T + bias (CUDA), both tables, and the
 * deterministic whole-GPU column reductions (dbias, and the helpers layernorm.cu / rmsnorm.cu use).
 *
 * Row-major (N,C) activations are column-major (C,N) matrices, so with cuBLAS's column-major
 * convention:
 *   forward   out^T (OC,N)  = op_T(weight as (C,OC)) * inp as (C,N)            [+ bias per row]
 *   dinp      dinp^T (C,N)  = weight as (C,OC) * dout as (OC,N)                (beta 0: overwrite)
 *   dweight   dW^T (C,OC)  += inp as (C,N) * op_T(dout as (OC,N))              (beta 1: accumulate)
 *   dbias     column sums of the fp32 dout (N,OC): two passes over the whole GPU (below)
 * Every GEMM goes through cuBLASLt (lt_gemm): fp32 table: fp32 A, B, D with
 * CUBLAS_COMPUTE_32F_FAST_TF32 (TF32 tensor cores; FM_CUDA_TF32=0: CUBLAS_COMPUTE_32F); bf16 table:
 * bf16 A, B (the "act" inputs), fp32 D, CUBLAS_COMPUTE_32F (fp32 accumulation). The forward's bias is
 * the BIAS epilogue (fp32 bias added to the fp32 accumulator) when the bias is 16-byte aligned, else a
 * bias kernel. The algorithm is chosen once per GEMM (shape, transposes, types, alignments) by
 * cuBLASLt's heuristic and cached; when cuBLASLt has no algorithm for a GEMM, cublasGemmEx with the
 * same types and compute type runs instead, and the first time for each such GEMM a line on stderr
 * says so (never silently).
 *
 * No GELU / dGELU epilogue: kernels.h's table has matmul_forward write the fp32 pre-activation and a
 * separate gelu_forward write the bf16 activation (both are read by the backward), so a fused
 * epilogue would need a new op; the table is not changed here.
 *
 * bf16 matmul_backward: kernels.h passes dout in fp32; one pass (dout_prep_k) rounds it to bf16
 * into the scratch AND writes per-row-block partial column sums of the fp32 dout (dbias), then the
 * two GEMMs read the bf16 copy. Rows are processed in chunks so that the copy stays below
 * cx->dout16_bytes (FM_CUDA_DOUT16_BYTES; the LM head's (N, Vp) dlogits are larger); dweight
 * accumulates chunk by chunk (beta 1) in a fixed order.
 *
 * Determinism: cuBLAS and cuBLASLt give bit-wise identical results run to run on the same GPU model
 * with the same algorithm and workspace (cuBLAS "Results reproducibility"); one stream, a fixed
 * workspace, and the algorithm cached per GEMM. Column sums: fixed row blocks, fixed-order sums. */
#include <stdio.h>

#include "cuda_internal.cuh"

/* ---- whole-GPU column reductions ------------------------------------------------------------- */

#define CR_TX 32 /* column groups of 4 per block: 128 columns */
#define CR_TY 8  /* row lanes per block */
#define CR_COLS (4 * CR_TX)

int fm_cuda_row_blocks(const fm_cuda_ctx *cx, int rows, int col_blocks)
{
    const int target = 2 * (cx->sm_count > 0 ? cx->sm_count : 1); /* blocks to fill the GPU */
    int rb = (target + col_blocks - 1) / (col_blocks > 0 ? col_blocks : 1);
    const int max_rb = (rows + 4 * CR_TY - 1) / (4 * CR_TY); /* at least ~4 rows per row lane */
    if (rb > max_rb) rb = max_rb;
    if (rb > 1024) rb = 1024;
    if (rb < 1) rb = 1;
    return rb;
}

/* out0[c] += sum_rb part[rb*C + c]; out1 (may be NULL) the same with part + RB*C. Fixed order. */
__global__ void colreduce_finish_k(float *out0, float *out1, const float *part, int RB, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int r = 0; r < RB; r++) s += part[(size_t)r * (size_t)C + (size_t)c];
    out0[c] += s;
    if (out1) {
        const float *p1 = part + (size_t)RB * (size_t)C;
        float t = 0.0f;
        for (int r = 0; r < RB; r++) t += p1[(size_t)r * (size_t)C + (size_t)c];
        out1[c] += t;
    }
}

void fm_cuda_colreduce_finish(fm_cuda_ctx *cx, float *out0, float *out1, const float *part, int RB,
                              int C, const char *what)
{
    colreduce_finish_k<<<(unsigned)((C + 255) / 256), 256, 0, cx->stream>>>(out0, out1, part, RB, C);
    fm_cuda_check_launch(cx, what);
}

/* One pass over dout (rows, C) fp32, block (CR_TX, CR_TY), grid (ceil(C/CR_COLS), RB); each thread
 * owns 4 consecutive columns. Writes d16 (rows, C) = bf16(dout) when d16 != NULL, and part (RB, C)
 * the column sums of row block blockIdx.y when part != NULL. vec: C % 4 == 0 and dout 16-byte
 * aligned (128-bit loads, 64-bit bf16 stores). */
__global__ void dout_prep_k(fm_cuda_bf16 *d16, float *part, const float *dout, int rows, int C,
                            int vec)
{
    __shared__ float sh[CR_TY][CR_COLS + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = blockIdx.x * CR_COLS + 4 * tx;
    const int per = (rows + (int)gridDim.y - 1) / (int)gridDim.y;
    const int r0 = (int)blockIdx.y * per, r1 = min(rows, r0 + per);
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    if (c0 < C) {
        for (int r = r0 + ty; r < r1; r += CR_TY) {
            const size_t i = (size_t)r * (size_t)C + (size_t)c0;
            if (vec) {
                const float4 v = *reinterpret_cast<const float4 *>(dout + i);
                a0 += v.x, a1 += v.y, a2 += v.z, a3 += v.w;
                if (d16) fm_cuda_store4(d16 + i, v);
            } else {
                float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int j = 0; j < 4 && c0 + j < C; j++) {
                    v[j] = dout[i + (size_t)j];
                    if (d16) d16[i + (size_t)j] = fm_cuda_round_bf16(v[j]);
                }
                a0 += v[0], a1 += v[1], a2 += v[2], a3 += v[3];
            }
        }
    }
    if (!part) return; /* block-uniform */
    sh[ty][4 * tx] = a0, sh[ty][4 * tx + 1] = a1, sh[ty][4 * tx + 2] = a2, sh[ty][4 * tx + 3] = a3;
    __syncthreads();
    /* CR_TY * CR_TX = 256 threads reduce 128 columns: thread t < 128 sums column t over the lanes */
    const int t = ty * CR_TX + tx;
    const int c = blockIdx.x * CR_COLS + t;
    if (t < CR_COLS && c < C) {
        float s = 0.0f;
        for (int y = 0; y < CR_TY; y++) s += sh[y][t];
        part[(size_t)blockIdx.y * (size_t)C + (size_t)c] = s;
    }
}

/* Partials then finish for out[c] += colsum(in); d16 optionally receives bf16(in). The scratch holds
 * the partials; d16 (if any) must not be the scratch's first RB*C floats. */
static void colsum_two_pass(fm_cuda_ctx *cx, float *out, fm_cuda_bf16 *d16, float *part,
                            const float *in, int rows, int C, const char *what)
{
    const int cb = (C + CR_COLS - 1) / CR_COLS;
    const int RB = fm_cuda_row_blocks(cx, rows, cb);
    const int vec = C % 4 == 0 && fm_cuda_al16(in) && (d16 == NULL || (uintptr_t)d16 % 8u == 0);
    dout_prep_k<<<dim3((unsigned)cb, (unsigned)RB), dim3(CR_TX, CR_TY), 0, cx->stream>>>(
        d16, out ? part : NULL, in, rows, C, vec);
    fm_cuda_check_launch(cx, what);
    if (out) fm_cuda_colreduce_finish(cx, out, NULL, part, RB, C, what);
}

/* Scratch floats the partials of colsum_two_pass need for (rows, C), rounded to 64 floats. */
static size_t colsum_part_floats(const fm_cuda_ctx *cx, int rows, int C)
{
    const int RB = fm_cuda_row_blocks(cx, rows, (C + CR_COLS - 1) / CR_COLS);
    return ((size_t)RB * (size_t)C + 63u) / 64u * 64u;
}

void fm_cuda_colsum_acc(fm_cuda_ctx *cx, float *out, const float *in, int rows, int C)
{
    if (rows <= 0 || C <= 0) return;
    float *part = (float *)fm_cuda_scratch(cx, colsum_part_floats(cx, rows, C) * sizeof(float),
                                           "column sums");
    if (!part) return;
    colsum_two_pass(cx, out, NULL, part, in, rows, C, "column sums");
}

/* ---- GEMMs through cuBLASLt ---------------------------------------------------------------- */

/* out (N,OC) += bias (OC) per row */
__global__ void bias_add_k(float *out, const float *bias, int OC, size_t total)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % (size_t)OC];
}

/* Largest power of two (<= 256) dividing the address: the alignment cuBLASLt may assume. */
static int ptr_align(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

static int key_equal(const fm_cuda_gemm_key *a, const fm_cuda_gemm_key *b)
{
    return a->m == b->m && a->n == b->n && a->k == b->k && a->ta == b->ta && a->tb == b->tb &&
           a->lda == b->lda && a->ldb == b->ldb && a->ldd == b->ldd && a->bf16 == b->bf16 &&
           a->bias == b->bias && a->accumulate == b->accumulate && a->align_a == b->align_a &&
           a->align_b == b->align_b && a->align_d == b->align_d && a->align_bias == b->align_bias;
}

/* The compute type of this instance's GEMMs. */
static cublasComputeType_t compute_type(const fm_cuda_ctx *cx)
{
    return cx->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

/* D (m,n) col-major = op(A) op(B) [+ beta D] [+ bias], A (ta ? k x m : m x k) with lda, B (tb ? n x k :
 * k x n) with ldb; A and B bf16 when cx->precision is bf16, else fp32; D fp32. Through cuBLASLt when
 * it has an algorithm (cached per key), else cublasGemmEx (reported once per key). `bias` (m) fp32 or
 * NULL: the BIAS epilogue when 16-byte aligned, else a kernel after the GEMM. */
static void gemm(fm_cuda_ctx *cx, int m, int n, int k, int ta, int tb, const void *A, int lda,
                 const void *B, int ldb, float *D, int ldd, const float *bias, int accumulate,
                 const char *what)
{
    const int bf16 = cx->precision == FM_PRECISION_BF16;
    const cudaDataType_t ab_t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t ct = compute_type(cx);
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const int fuse_bias = bias != NULL && ptr_align(bias) >= 16;

    fm_cuda_gemm_key key;
    memset(&key, 0, sizeof key);
    key.m = m, key.n = n, key.k = k, key.ta = ta, key.tb = tb;
    key.lda = lda, key.ldb = ldb, key.ldd = ldd, key.bf16 = bf16, key.bias = fuse_bias;
    key.accumulate = accumulate;
    key.align_a = ptr_align(A), key.align_b = ptr_align(B), key.align_d = ptr_align(D);
    key.align_bias = fuse_bias ? ptr_align(bias) : 0;

    fm_cuda_lt_entry *e = NULL;
    for (int i = 0; i < FM_CUDA_LT_CACHE; i++)
        if (cx->lt_cache[i].used && key_equal(&cx->lt_cache[i].key, &key)) {
            e = &cx->lt_cache[i];
            break;
        }

    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = fuse_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    const cudaDataType_t bias_t = CUDA_R_32F;
    int done = 0, fresh = 0;
    const char *why = "no algorithm from cublasLtMatmulAlgoGetHeuristic";
    if (e && !e->ok) goto fallback; /* known: no cuBLASLt algorithm for this GEMM */
    if (cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) !=
            CUBLAS_STATUS_SUCCESS) {
        why = "creating the cuBLASLt matmul descriptor failed";
        goto fallback;
    }
    if (fuse_bias &&
        (cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) !=
             CUBLAS_STATUS_SUCCESS ||
         cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_t,
                                        sizeof bias_t) != CUBLAS_STATUS_SUCCESS)) {
        why = "setting the cuBLASLt bias epilogue failed";
        goto fallback;
    }
    if (cublasLtMatrixLayoutCreate(&la, ab_t, (uint64_t)(ta ? k : m), (uint64_t)(ta ? m : k),
                                   (int64_t)lda) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&lb, ab_t, (uint64_t)(tb ? n : k), (uint64_t)(tb ? k : n),
                                   (int64_t)ldb) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, (uint64_t)m, (uint64_t)n, (int64_t)ldd) !=
            CUBLAS_STATUS_SUCCESS) {
        why = "creating the cuBLASLt matrix layouts failed";
        goto fallback;
    }
    if (!e) {
        e = &cx->lt_cache[cx->lt_next];
        cx->lt_next = (cx->lt_next + 1) % FM_CUDA_LT_CACHE;
        e->used = 1;
        e->key = key;
        e->ok = 0;
        fresh = 1;
        const uint64_t wsb = cx->workspace_bytes;
        const uint32_t a32 = (uint32_t)key.align_a, b32 = (uint32_t)key.align_b,
                       d32 = (uint32_t)key.align_d;
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                                 sizeof wsb) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                 &a32, sizeof a32) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                 &b32, sizeof b32) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                 &d32, sizeof d32) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                 &d32, sizeof d32) == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoGetHeuristic(cx->lt, op, la, lb, ld, ld, pref, 1, &res, &nres) ==
                CUBLAS_STATUS_SUCCESS &&
            nres > 0) {
            e->algo = res.algo;
            e->ok = 1;
        }
    }
    if (!e->ok) goto fallback;
    {
        const cublasStatus_t s = cublasLtMatmul(cx->lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld,
                                                &e->algo, cx->workspace, cx->workspace_bytes,
                                                cx->stream);
        if (s == CUBLAS_STATUS_SUCCESS) {
            done = 1;
            fm_cuda_debug_sync(cx, what);
        } else {
            e->ok = 0; /* never again for this GEMM: the fallback runs now and from now on */
            fresh = 1;
            why = cublasGetStatusString(s);
        }
    }
fallback:
    if (!done) {
        if (fresh || !e) {
            cx->lt_fallbacks++;
            fprintf(stderr,
                    "fmtrain: CUDA backend: %s: cuBLASLt cannot run the %s GEMM m=%d n=%d k=%d "
                    "(op %c%c, ld %d %d %d, alignments %d %d %d, bias %d): %s; using cublasGemmEx "
                    "for this shape from now on (reported once per shape; GEMM fallbacks so far: "
                    "%d)\n",
                    what, bf16 ? "bf16" : (cx->tf32 ? "TF32" : "fp32"), m, n, k, ta ? 'T' : 'N',
                    tb ? 'T' : 'N', lda, ldb, ldd, key.align_a, key.align_b, key.align_d,
                    fuse_bias, why, cx->lt_fallbacks);
            if (!e) { /* descriptor failure before caching: cache the failure too */
                e = &cx->lt_cache[cx->lt_next];
                cx->lt_next = (cx->lt_next + 1) % FM_CUDA_LT_CACHE;
                e->used = 1;
                e->key = key;
                e->ok = 0;
            }
        }
        fm_cuda_check_blas(cx,
                           cublasGemmEx(cx->blas, opa, opb, m, n, k, &alpha, A, ab_t, lda, B, ab_t,
                                        ldb, &beta, D, CUDA_R_32F, ldd, ct, CUBLAS_GEMM_DEFAULT),
                           what);
    }
    if (bias && !(done && fuse_bias)) {
        const size_t total = (size_t)m * (size_t)n;
        bias_add_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(D, bias, m, total);
        fm_cuda_check_launch(cx, what);
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
}

/* ---- the ops --------------------------------------------------------------------------------- */

/* out (N,OC) fp32; inp (N,C), weight (OC,C) act (fp32 or bf16 by the instance); bias (OC) or NULL */
static void matmul_forward(fm_backend *be, float *out, const void *inp, const void *weight,
                           const float *bias, int N, int C, int OC)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || OC <= 0) return;
    if (C <= 0) { /* an empty product: out = bias (or 0) */
        fm_cuda_check(cx, cudaMemsetAsync(out, 0, (size_t)N * (size_t)OC * sizeof(float), cx->stream),
                      "matmul_forward");
        if (bias) {
            const size_t total = (size_t)N * (size_t)OC;
            bias_add_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, bias, OC, total);
            fm_cuda_check_launch(cx, "matmul_forward (bias)");
        }
        return;
    }
    gemm(cx, OC, N, C, 1, 0, weight, C, inp, C, out, OC, bias, 0, "matmul_forward");
}

void fm_cuda_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC)
{
    matmul_forward(be, out, inp, weight, bias, N, C, OC);
}

void fm_cuda_matmul_forward_bf16(fm_backend *be, float *out, const float *inp, const float *weight,
                                 const float *bias, int N, int C, int OC)
{
    matmul_forward(be, out, inp, weight, bias, N, C, OC);
}

void fm_cuda_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp, const float *weight, int N, int C,
                             int OC)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0 || OC <= 0) return;
    if (dinp) gemm(cx, C, N, OC, 0, 0, weight, C, dout, OC, dinp, C, NULL, 0, "matmul_backward dinp");
    gemm(cx, C, OC, N, 0, 1, inp, C, dout, OC, dweight, C, NULL, 1, "matmul_backward dweight");
    if (dbias) fm_cuda_colsum_acc(cx, dbias, dout, N, OC);
}

/* bf16 table: dout fp32 rounded to bf16 chunk by chunk (with the dbias partials in the same pass),
 * inp and weight bf16; dinp, dweight, dbias fp32 */
void fm_cuda_matmul_backward_bf16(fm_backend *be, float *dinp, float *dweight, float *dbias,
                                  const float *dout, const float *inp, const float *weight, int N,
                                  int C, int OC)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0 || OC <= 0) return;
    const fm_cuda_bf16 *x16 = (const fm_cuda_bf16 *)inp;
    /* rows per chunk: the bf16 copy of dout below FM_CUDA_DOUT16_BYTES (a multiple of 8 rows) */
    size_t rows = cx->dout16_bytes / ((size_t)OC * sizeof(fm_cuda_bf16));
    if (rows >= (size_t)N) rows = (size_t)N;
    else rows = rows >= 8 ? rows / 8 * 8 : 1;
    const int R = (int)rows;
    const size_t part_floats = dbias ? colsum_part_floats(cx, R, OC) : 0;
    const size_t bytes = part_floats * sizeof(float) + (size_t)R * (size_t)OC * sizeof(fm_cuda_bf16);
    char *scr = (char *)fm_cuda_scratch(cx, bytes, "matmul_backward");
    if (!scr) return;
    float *part = (float *)scr;
    fm_cuda_bf16 *d16 = (fm_cuda_bf16 *)(scr + part_floats * sizeof(float));
    for (int r0 = 0; r0 < N; r0 += R) {
        const int nr = N - r0 < R ? N - r0 : R;
        colsum_two_pass(cx, dbias, d16, part, dout + (size_t)r0 * (size_t)OC, nr, OC,
                        "matmul_backward (dout to bf16, dbias)");
        if (dinp)
            gemm(cx, C, nr, OC, 0, 0, weight, C, d16, OC, dinp + (size_t)r0 * (size_t)C, C, NULL, 0,
                 "matmul_backward dinp");
        gemm(cx, C, OC, nr, 0, 1, x16 + (size_t)r0 * (size_t)C, C, d16, OC, dweight, C, NULL, 1,
             "matmul_backward dweight");
    }
}
