/* onednn.c — the CPU backend's matrix products through oneDNN's matmul primitive (built when CMake
 * finds oneDNN: FM_HAVE_ONEDNN; cmake/FmDependencies.cmake), and the description of the GEMM library.
 *
 * What it is: fm_cpu_dnnl_gemm, one row-major product C (M,N) [+]= op(A) op(B) [+ bias] in fp32 or
 * with bf16 inputs (fp32 accumulation and output), for matmul.c. Transposed operands are described
 * by strides (no copies: the model's weights are (out, in), i.e. the transposed B of every forward),
 * the bias is the primitive's bias argument (added to the fp32 accumulator), and accumulation into C
 * (the weight gradients) is a sum post-op.
 *
 * Primitives are created once per shape and kept in a per-backend cache (FM_DNNL_CACHE entries,
 * least recently used evicted): the key is everything the primitive depends on (M, N, K,
 * transposes, leading dimensions, data type, bias, accumulation), and each entry keeps its memory
 * objects, whose data handles are set per call. A training step uses about 20 shapes.
 *
 * Threads: Debian's oneDNN (and the Spack/EasyBuild builds fmtrain documents) use the OpenMP
 * threading runtime: a primitive runs as one `omp parallel` region of omp_get_max_threads() threads
 * in the same libgomp as fmtrain's kernels, i.e. on the rank's one OpenMP pool (docs/performance.md).
 * fm_cpu_dnnl_gemm sets the calling thread's OpenMP default to be->threads before executing, so the
 * primitive uses exactly the backend's threads. It is never called inside a parallel region.
 *
 * Scratchpad: user-managed (dnnl_scratchpad_mode_user) — one buffer per backend, grown to the largest
 * need of the cached primitives, handed to each execution. With the library-managed default a
 * primitive must run in the thread that created it (oneDNN built without DNNL_ENABLE_CONCURRENT_EXEC,
 * as Debian's is); a user scratchpad has no such rule.
 *
 * Determinism: oneDNN documents run-to-run bit-identical results for a fixed environment (same
 * library, CPU, thread count, environment) for most primitives, the exceptions being implementations
 * with atomics (its `deterministic` attribute, which excludes them, is a later 3.x addition); results
 * may change with the thread count. tests/kernels (kernels_backend_ops, kernels_cpu), tests/model and
 * tests/train (train_bf16) check run-to-run identity for fmtrain's shapes in both precisions.
 *
 * Errors (primitive creation, out of memory, execution) are recorded with fm_cpu_fail and returned by
 * the backend's next sync() (kernels do not fail, kernels.h).
 *
 * Supports the oneDNN 2.x C API (Debian 12: 2.6.3) and 3.x (Spack, EasyBuild, PyPI's onednn-devel). */
#define _POSIX_C_SOURCE 200809L

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#if FM_HAVE_ONEDNN

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#if DNNL_VERSION_MAJOR >= 3
#define FM_DNNL_V3 1
typedef dnnl_memory_desc_t fm_md;       /* a handle */
#define FM_MD_PTR(md) (md)
#else
#define FM_DNNL_V3 0
typedef dnnl_memory_desc_t fm_md;       /* a struct */
#define FM_MD_PTR(md) (&(md))
#endif

#define FM_DNNL_CACHE 64 /* primitives per backend */

/* the cache key: what a primitive depends on */
typedef struct gemm_key {
    int M, N, K, trans_a, trans_b, lda, ldb, ldc, bf16, accumulate, bias;
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    int used;             /* slot in use */
    unsigned long long t; /* last use (LRU) */
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, bias, scratch; /* bias, scratch may be NULL */
    size_t scratch_bytes;
    char impl[48]; /* oneDNN's implementation name ("brg:avx512_core_bf16") */
} gemm_entry;

struct fm_cpu_dnnl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_entry cache[FM_DNNL_CACHE];
    unsigned long long clock;
    void *scratch; /* user scratchpad shared by the primitives (one runs at a time) */
    size_t scratch_bytes;
};

static fm_status dnnl_err(dnnl_status_t s, const char *what)
{
    return FM_ERR(FM_ERR_DEVICE, "CPU backend: oneDNN %s failed: %s; this oneDNN build (%s) may not "
                  "support it on this CPU: configure fmtrain with -DFMTRAIN_ONEDNN=OFF to use CBLAS, "
                  "or use [runtime] precision = fp32",
                  what, dnnl_status2str(s), fm_cpu_dnnl_info());
}

#define DNNL_TRY_GOTO(st, label, call, what)                                                       \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            (st) = dnnl_err(s_, what);                                                             \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

fm_status fm_cpu_dnnl_create(fm_cpu_dnnl **out)
{
    *out = NULL;
    fm_cpu_dnnl *d = calloc(1, sizeof *d);
    FM_CHECK_ALLOC(d, sizeof *d);
    fm_status st = NULL;
    DNNL_TRY_GOTO(st, fail, dnnl_engine_create(&d->engine, dnnl_cpu, 0), "engine creation");
    DNNL_TRY_GOTO(st, fail, dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags),
                  "stream creation");
    *out = d;
    return NULL;
fail:
    fm_cpu_dnnl_free(&d);
    return st;
}

static void entry_clear(gemm_entry *e)
{
    if (e->prim) dnnl_primitive_destroy(e->prim);
    dnnl_memory_t *mems[] = {&e->a, &e->b, &e->c, &e->bias, &e->scratch};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (*mems[i]) dnnl_memory_destroy(*mems[i]);
    memset(e, 0, sizeof *e);
}

void fm_cpu_dnnl_free(fm_cpu_dnnl **pd)
{
    if (!pd || !*pd) return;
    fm_cpu_dnnl *d = *pd;
    for (int i = 0; i < FM_DNNL_CACHE; i++)
        if (d->cache[i].used) entry_clear(&d->cache[i]);
    if (d->stream) dnnl_stream_destroy(d->stream);
    if (d->engine) dnnl_engine_destroy(d->engine);
    free(d->scratch);
    free(d);
    *pd = NULL;
}

/* a 2-D memory descriptor (rows, cols) with strides (rs, cs) */
static dnnl_status_t md_2d(fm_md *md, int rows, int cols, dnnl_data_type_t dt, int rs, int cs)
{
    const dnnl_dims_t dims = {rows, cols}, strides = {rs, cs};
#if FM_DNNL_V3
    return dnnl_memory_desc_create_with_strides(md, 2, dims, dt, strides);
#else
    return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
#endif
}

static void md_free(fm_md *md)
{
#if FM_DNNL_V3
    if (*md) dnnl_memory_desc_destroy(*md);
    *md = NULL;
#else
    (void)md;
#endif
}

/* Creates the primitive of key k (and its memory objects) into e. */
static fm_status entry_create(fm_cpu_dnnl *d, const gemm_key *k, gemm_entry *e)
{
    memset(e, 0, sizeof *e);
    const dnnl_data_type_t in = k->bf16 ? dnnl_bf16 : dnnl_f32;
    fm_md a, b, c, bias;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&c, 0, sizeof c);
    memset(&bias, 0, sizeof bias);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    fm_status st = NULL;
    /* A (M,K): row-major with row stride lda, or stored transposed (K,M) */
    DNNL_TRY_GOTO(st, done, md_2d(&a, k->M, k->K, in, k->trans_a ? 1 : k->lda, k->trans_a ? k->lda : 1),
                  "memory descriptor");
    DNNL_TRY_GOTO(st, done, md_2d(&b, k->K, k->N, in, k->trans_b ? 1 : k->ldb, k->trans_b ? k->ldb : 1),
                  "memory descriptor");
    DNNL_TRY_GOTO(st, done, md_2d(&c, k->M, k->N, dnnl_f32, k->ldc, 1), "memory descriptor");
    if (k->bias) DNNL_TRY_GOTO(st, done, md_2d(&bias, 1, k->N, dnnl_f32, k->N, 1), "memory descriptor");
    DNNL_TRY_GOTO(st, done, dnnl_primitive_attr_create(&attr), "attribute creation");
    DNNL_TRY_GOTO(st, done, dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user),
                  "scratchpad mode");
    if (k->accumulate) {
        DNNL_TRY_GOTO(st, done, dnnl_post_ops_create(&po), "post-op creation");
#if FM_DNNL_V3
        DNNL_TRY_GOTO(st, done, dnnl_post_ops_append_sum(po, 1.0f, 0, dnnl_data_type_undef), "sum post-op");
#else
        DNNL_TRY_GOTO(st, done, dnnl_post_ops_append_sum(po, 1.0f), "sum post-op");
#endif
        DNNL_TRY_GOTO(st, done, dnnl_primitive_attr_set_post_ops(attr, po), "post-op");
    }
#if FM_DNNL_V3
    DNNL_TRY_GOTO(st, done,
                  dnnl_matmul_primitive_desc_create(&pd, d->engine, a, b, k->bias ? bias : NULL, c,
                                                    attr),
                  "matmul primitive descriptor");
#else
    dnnl_matmul_desc_t desc;
    DNNL_TRY_GOTO(st, done, dnnl_matmul_desc_init(&desc, &a, &b, k->bias ? &bias : NULL, &c),
                  "matmul descriptor");
    DNNL_TRY_GOTO(st, done, dnnl_primitive_desc_create(&pd, &desc, attr, d->engine, NULL),
                  "matmul primitive descriptor");
#endif
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(e->impl, sizeof e->impl, "%s", impl);
    DNNL_TRY_GOTO(st, done, dnnl_primitive_create(&e->prim, pd), "matmul primitive creation");
    DNNL_TRY_GOTO(st, done, dnnl_memory_create(&e->a, FM_MD_PTR(a), d->engine, DNNL_MEMORY_NONE),
                  "memory object");
    DNNL_TRY_GOTO(st, done, dnnl_memory_create(&e->b, FM_MD_PTR(b), d->engine, DNNL_MEMORY_NONE),
                  "memory object");
    DNNL_TRY_GOTO(st, done, dnnl_memory_create(&e->c, FM_MD_PTR(c), d->engine, DNNL_MEMORY_NONE),
                  "memory object");
    if (k->bias)
        DNNL_TRY_GOTO(st, done,
                      dnnl_memory_create(&e->bias, FM_MD_PTR(bias), d->engine, DNNL_MEMORY_NONE),
                      "memory object");
    {
#if FM_DNNL_V3
        const_dnnl_memory_desc_t smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
#else
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
#endif
        e->scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
        if (e->scratch_bytes)
            DNNL_TRY_GOTO(st, done, dnnl_memory_create(&e->scratch, smd, d->engine, DNNL_MEMORY_NONE),
                          "scratchpad memory object");
    }
    e->key = *k;
    e->used = 1;
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    md_free(&a), md_free(&b), md_free(&c), md_free(&bias);
    if (st) entry_clear(e);
    return st;
}

/* The cached primitive of key k, created on first use (the least recently used entry makes room). */
static fm_status lookup(fm_cpu_dnnl *d, const gemm_key *k, gemm_entry **out)
{
    gemm_entry *victim = &d->cache[0];
    for (int i = 0; i < FM_DNNL_CACHE; i++) {
        gemm_entry *e = &d->cache[i];
        if (e->used && memcmp(&e->key, k, sizeof *k) == 0) {
            e->t = ++d->clock;
            *out = e;
            return NULL;
        }
        if (!e->used ? victim->used : (victim->used && e->t < victim->t)) victim = e;
    }
    if (victim->used) entry_clear(victim);
    FM_TRY(entry_create(d, k, victim));
    victim->t = ++d->clock;
    if (victim->scratch_bytes > d->scratch_bytes) {
        const size_t bytes = (victim->scratch_bytes + 63u) / 64u * 64u;
        void *p = aligned_alloc(64, bytes);
        if (!p) {
            entry_clear(victim);
            return FM_ERR(FM_ERR_NOMEM, "CPU backend: out of memory allocating %zu bytes of oneDNN "
                          "scratchpad", bytes);
        }
        free(d->scratch);
        d->scratch = p;
        d->scratch_bytes = bytes;
    }
    *out = victim;
    return NULL;
}

void fm_cpu_dnnl_gemm(fm_backend *be, const fm_cpu_gemm *g, const void *A, const void *B,
                      const float *bias, float *C)
{
    fm_cpu_ctx *cx = be->impl;
    fm_cpu_dnnl *d = cx->dnnl;
    if (g->M <= 0 || g->N <= 0) return;
    if (g->K <= 0) { /* an empty sum: C = 0 (+ bias), or C unchanged when accumulating */
        if (g->accumulate) return;
        for (int i = 0; i < g->M; i++)
            for (int j = 0; j < g->N; j++) C[(size_t)i * g->ldc + j] = bias ? bias[j] : 0.0f;
        return;
    }
    const gemm_key k = {g->M, g->N, g->K, g->trans_a, g->trans_b, g->lda, g->ldb, g->ldc, g->bf16,
                        g->accumulate, bias != NULL};
    gemm_entry *e = NULL;
    fm_status st = lookup(d, &k, &e);
    if (st) {
        fm_cpu_fail(be, st);
        return;
    }
    dnnl_exec_arg_t args[5];
    int n = 0;
    dnnl_memory_set_data_handle(e->a, (void *)A);
    dnnl_memory_set_data_handle(e->b, (void *)B);
    dnnl_memory_set_data_handle(e->c, C);
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, e->a};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, e->b};
    args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->c};
    if (bias) {
        dnnl_memory_set_data_handle(e->bias, (void *)bias);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bias};
    }
    if (e->scratch) {
        dnnl_memory_set_data_handle(e->scratch, d->scratch);
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
    }
    /* the primitive's parallel region takes the calling thread's OpenMP default: the rank's pool */
    if (omp_get_max_threads() != be->threads) omp_set_num_threads(be->threads);
    dnnl_status_t s = dnnl_primitive_execute(e->prim, d->stream, n, args);
    if (s == dnnl_success) s = dnnl_stream_wait(d->stream);
    if (s != dnnl_success) fm_cpu_fail(be, dnnl_err(s, "matmul execution"));
}

fm_status fm_cpu_dnnl_probe_bf16(fm_backend *be)
{
    fm_cpu_ctx *cx = be->impl;
    const gemm_key k = {16, 16, 16, 0, 1, 16, 16, 16, 1, 0, 1};
    gemm_entry *e = NULL;
    FM_TRY(lookup(cx->dnnl, &k, &e));
    return NULL;
}

int fm_cpu_dnnl_bf16_native(void)
{
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    /* the ISA values are nested bit sets: avx512_core_bf16 (and AMX, which contains it) have native
     * bf16 dot products (vdpbf16ps); below that oneDNN emulates bf16 and fp32 is faster */
    return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
           (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

const char *fm_cpu_dnnl_impl(fm_backend *be, const fm_cpu_gemm *g, int with_bias)
{
    fm_cpu_ctx *cx = be->impl;
    const gemm_key k = {g->M, g->N, g->K, g->trans_a, g->trans_b, g->lda, g->ldb, g->ldc, g->bf16,
                        g->accumulate, with_bias};
    for (int i = 0; i < FM_DNNL_CACHE; i++)
        if (cx->dnnl->cache[i].used && memcmp(&cx->dnnl->cache[i].key, &k, sizeof k) == 0)
            return cx->dnnl->cache[i].impl;
    return NULL;
}

typedef struct gemm_info {
    pthread_once_t once;
    char text[320];
} gemm_info;
static gemm_info g_info = {PTHREAD_ONCE_INIT, {0}}; /* written once, read-only afterwards */

static void info_fill(void)
{
    const dnnl_version_t *v = dnnl_version();
    const char *rt = v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" :
                     v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB (not fmtrain's pool)" :
                     v->cpu_runtime == DNNL_RUNTIME_SEQ ? "sequential" : "other";
    snprintf(g_info.text, sizeof g_info.text,
             "oneDNN %d.%d.%d (%s runtime, CPU ISA %s, bf16 %s); matmul primitives on the rank's "
             "OpenMP pool",
             v->major, v->minor, v->patch, rt, dnnl_cpu_isa2str(dnnl_get_effective_cpu_isa()),
             fm_cpu_dnnl_bf16_native() ? "native" : "emulated");
}

const char *fm_cpu_dnnl_info(void)
{
    pthread_once(&g_info.once, info_fill);
    return g_info.text;
}

#endif /* FM_HAVE_ONEDNN */
