/* matmul.cu — fully connected layer out = inp @ weight^T + bias (CUDA, fp32).
 *
 * Row-major (N,C) activations are column-major (C,N) matrices, so with cuBLAS's column-major
 * convention:
 *   forward   out^T (OC,N)  = op_T(weight as (C,OC)) * inp as (C,N)            [+ bias per row]
 *   dinp      dinp^T (C,N)  = weight as (C,OC) * dout as (OC,N)                (beta 0: overwrite)
 *   dweight   dW^T (C,OC)  += inp as (C,N) * op_T(dout as (OC,N))              (beta 1: accumulate)
 *   dbias     column sums of dout (N,OC), fm_cuda_colsum_acc (fixed order)
 * Forward goes through cuBLASLt with the BIAS epilogue (bias fused into the GEMM) when cuBLASLt offers
 * an algorithm for the shape and the pointers' alignment; otherwise cublasSgemm plus a bias kernel.
 * Compute type is CUBLAS_COMPUTE_32F (full fp32, no TF32). cuBLAS and cuBLASLt give bit-wise
 * identical results run to run on the same GPU model with the same workspace (cuBLAS "Results
 * reproducibility"); we use one stream and a fixed workspace. */
#include "cuda_internal.cuh"

#define COLSUM_Y 16

/* out[c] += sum_r in[r*C + c]: block (32, COLSUM_Y), grid ceil(C/32) */
__global__ void colsum_acc_k(float *out, const float *in, int rows, int C)
{
    __shared__ float sh[COLSUM_Y][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * 32 + tx;
    float a = 0.0f;
    if (c < C)
        for (int r = ty; r < rows; r += COLSUM_Y) a += in[(size_t)r * (size_t)C + (size_t)c];
    sh[ty][tx] = a;
    __syncthreads();
    if (ty == 0 && c < C) {
        float s = 0.0f;
        for (int y = 0; y < COLSUM_Y; y++) s += sh[y][tx];
        out[c] += s;
    }
}

void fm_cuda_colsum_acc(fm_cuda_ctx *cx, float *out, const float *in, int rows, int C)
{
    if (rows <= 0 || C <= 0) return;
    colsum_acc_k<<<(unsigned)((C + 31) / 32), dim3(32, COLSUM_Y), 0, cx->stream>>>(out, in, rows, C);
    fm_cuda_check_launch(cx, "matmul (column sums)");
}

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

/* Returns 1 when cuBLASLt computed out (bias fused when given); 0 when the caller must fall back. */
static int lt_forward(fm_cuda_ctx *cx, float *out, const float *inp, const float *weight,
                      const float *bias, int N, int C, int OC)
{
    const int aa = ptr_align(weight), ab = ptr_align(inp), ad = ptr_align(out);
    /* the bias epilogue reads the vector with vector loads in some algorithms: keep it 16-byte aligned */
    if (bias && ptr_align(bias) < 16) return 0;
    const int has_bias = bias != NULL;

    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    int done = 0;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    if (cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        goto cleanup;
    if (cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) !=
            CUBLAS_STATUS_SUCCESS)
        goto cleanup;
    if (has_bias && cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                   sizeof bias) != CUBLAS_STATUS_SUCCESS)
        goto cleanup;
    /* A = weight stored (C rows, OC cols) column-major, used transposed; B = inp (C, N); D = out (OC, N) */
    if (cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, (uint64_t)C, (uint64_t)OC, (int64_t)C) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, (uint64_t)C, (uint64_t)N, (int64_t)C) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, (uint64_t)OC, (uint64_t)N, (int64_t)OC) !=
            CUBLAS_STATUS_SUCCESS)
        goto cleanup;

    {
        fm_cuda_lt_entry *e = NULL;
        for (int i = 0; i < FM_CUDA_LT_CACHE; i++) {
            fm_cuda_lt_entry *c = &cx->lt_cache[i];
            if (c->used && c->N == N && c->C == C && c->OC == OC && c->bias == has_bias &&
                c->align_a == aa && c->align_b == ab && c->align_d == ad) {
                e = c;
                break;
            }
        }
        if (!e) {
            e = &cx->lt_cache[cx->lt_next];
            cx->lt_next = (cx->lt_next + 1) % FM_CUDA_LT_CACHE;
            e->used = 1;
            e->N = N;
            e->C = C;
            e->OC = OC;
            e->bias = has_bias;
            e->align_a = aa;
            e->align_b = ab;
            e->align_d = ad;
            e->ok = 0;
            const uint64_t wsb = cx->workspace_bytes;
            const uint32_t a32 = (uint32_t)aa, b32 = (uint32_t)ab, d32 = (uint32_t)ad;
            cublasLtMatmulHeuristicResult_t res;
            int nres = 0;
            if (cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
                cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &wsb, sizeof wsb) == CUBLAS_STATUS_SUCCESS &&
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
        if (!e->ok) goto cleanup;
        const float alpha = 1.0f, beta = 0.0f;
        cublasStatus_t s = cublasLtMatmul(cx->lt, op, &alpha, weight, la, inp, lb, &beta, out, ld, out,
                                          ld, &e->algo, cx->workspace, cx->workspace_bytes, cx->stream);
        if (s == CUBLAS_STATUS_SUCCESS)
            done = 1;
        else
            e->ok = 0; /* never again for this shape: the fallback runs now and from now on */
    }
cleanup:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return done;
}

void fm_cuda_matmul_forward(fm_backend *be, float *out, const float *inp, const float *weight,
                            const float *bias, int N, int C, int OC)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || OC <= 0) return;
    if (lt_forward(cx, out, inp, weight, bias, N, C, OC)) return;
    const float alpha = 1.0f, beta = 0.0f;
    fm_cuda_check_blas(cx,
                       cublasSgemm(cx->blas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &alpha, weight, C,
                                   inp, C, &beta, out, OC),
                       "matmul_forward (cublasSgemm)");
    if (bias) {
        const size_t total = (size_t)N * (size_t)OC;
        bias_add_k<<<fm_cuda_grid(cx, total, 256), 256, 0, cx->stream>>>(out, bias, OC, total);
        fm_cuda_check_launch(cx, "matmul_forward (bias)");
    }
}

void fm_cuda_matmul_backward(fm_backend *be, float *dinp, float *dweight, float *dbias,
                             const float *dout, const float *inp, const float *weight, int N, int C,
                             int OC)
{
    fm_cuda_ctx *cx = FM_CUDA_CX(be);
    if (N <= 0 || C <= 0 || OC <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    if (dinp)
        fm_cuda_check_blas(cx,
                           cublasSgemm(cx->blas, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C,
                                       dout, OC, &zero, dinp, C),
                           "matmul_backward dinp (cublasSgemm)");
    fm_cuda_check_blas(cx,
                       cublasSgemm(cx->blas, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout,
                                   OC, &one, dweight, C),
                       "matmul_backward dweight (cublasSgemm)");
    if (dbias) fm_cuda_colsum_acc(cx, dbias, dout, N, OC);
}
