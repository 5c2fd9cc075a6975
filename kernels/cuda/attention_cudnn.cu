/* attention_cudnn.cu — cuDNN 9 SDPA graphs for the bf16 attention (contract: attention_cudnn.cuh).
 * Uses the cuDNN frontend's graph API (third_party/cudnn_frontend, header-only): one SDPA node
 * (forward, with Stats) or one SDPA backward node per graph, io bf16, intermediate and compute fp32. */
#include <stdio.h>
#include <string.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include <cudnn.h>
#include <cudnn_frontend.h>

#include "attention_cudnn.cuh"

namespace fe = cudnn_frontend;

/* tensor uids of both graphs */
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_DO, UID_DQ, UID_DK, UID_DV };

typedef std::array<int, 6> graph_key; /* kind, B, T, NH, NKV, hs */

struct fm_cuda_cudnn {
    cudnnHandle_t handle = nullptr;
    int init_failed = 0;       /* cudnnCreate failed: every graph is unsupported */
    void *ws = nullptr;        /* workspace of the largest plan built so far */
    size_t ws_bytes = 0;
    std::map<graph_key, std::shared_ptr<fe::graph::Graph>> graphs; /* nullptr: unsupported */
};

static std::shared_ptr<fe::graph::Tensor_attributes>
att_tensor(fe::graph::Graph &g, const char *name, int uid, int64_t b, int64_t h, int64_t t, int64_t d,
           int64_t row)
{
    /* (b, h, t, d) with rows of `row` elements: strides (t row, d, row, 1) */
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_uid(uid)
                        .set_dim({b, h, t, d})
                        .set_stride({t * row, d, row, 1})
                        .set_data_type(fe::DataType_t::BFLOAT16));
}

/* Builds the graph of `kind` for the shape; on failure returns nullptr and sets *why. */
static std::shared_ptr<fe::graph::Graph> build_graph(fm_cuda_cudnn *st, int kind, int B, int T,
                                                     int NH, int NKV, int hs, std::string *why)
{
    const int64_t C = (int64_t)NH * hs, W = (int64_t)(NH + 2 * NKV) * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    auto g = std::make_shared<fe::graph::Graph>();
    g->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    auto Q = att_tensor(*g, "Q", UID_Q, B, NH, T, hs, W);
    auto K = att_tensor(*g, "K", UID_K, B, NKV, T, hs, W);
    auto V = att_tensor(*g, "V", UID_V, B, NKV, T, hs, W);
    if (kind == FM_CUDNN_FWD) {
        auto opt = fe::graph::SDPA_attributes()
                       .set_name("fmtrain_attention_forward")
                       .set_generate_stats(true)
                       .set_causal_mask(true)
                       .set_attn_scale(scale);
        auto [O, stats] = g->sdpa(Q, K, V, opt);
        O->set_output(true).set_uid(UID_O).set_dim({B, NH, T, hs}).set_stride({T * C, hs, C, 1});
        O->set_data_type(fe::DataType_t::BFLOAT16);
        stats->set_output(true)
            .set_uid(UID_STATS)
            .set_data_type(fe::DataType_t::FLOAT)
            .set_dim({B, NH, T, 1})
            .set_stride({(int64_t)NH * T, T, 1, 1});
    } else {
        auto O = att_tensor(*g, "O", UID_O, B, NH, T, hs, C);
        auto dO = att_tensor(*g, "dO", UID_DO, B, NH, T, hs, C);
        auto stats = g->tensor(fe::graph::Tensor_attributes()
                                   .set_name("Stats")
                                   .set_uid(UID_STATS)
                                   .set_dim({B, NH, T, 1})
                                   .set_stride({(int64_t)NH * T, T, 1, 1})
                                   .set_data_type(fe::DataType_t::FLOAT));
        auto opt = fe::graph::SDPA_backward_attributes()
                       .set_name("fmtrain_attention_backward")
                       .set_causal_mask(true)
                       .set_deterministic_algorithm(true)
                       .set_attn_scale(scale);
        auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, stats, opt);
        dQ->set_output(true).set_uid(UID_DQ).set_dim({B, NH, T, hs}).set_stride({T * W, hs, W, 1});
        dK->set_output(true).set_uid(UID_DK).set_dim({B, NKV, T, hs}).set_stride({T * W, hs, W, 1});
        dV->set_output(true).set_uid(UID_DV).set_dim({B, NKV, T, hs}).set_stride({T * W, hs, W, 1});
        dQ->set_data_type(fe::DataType_t::BFLOAT16);
        dK->set_data_type(fe::DataType_t::BFLOAT16);
        dV->set_data_type(fe::DataType_t::BFLOAT16);
    }
    auto ok = [why](fe::error_t r) {
        if (r.is_good()) return true;
        *why = r.get_message();
        return false;
    };
    if (!ok(g->validate()) || !ok(g->build_operation_graph(st->handle)) ||
        !ok(g->create_execution_plans({fe::HeurMode_t::A})) || !ok(g->check_support(st->handle)) ||
        !ok(g->build_plans(st->handle)))
        return nullptr;
    return g;
}

const void *fm_cuda_cudnn_graph(fm_cuda_ctx *cx, fm_cuda_cudnn **stp, int kind, int B, int T, int NH,
                                int NKV, int hs)
{
    if (!*stp) {
        fm_cuda_cudnn *st = new (std::nothrow) fm_cuda_cudnn();
        if (!st) {
            fm_cuda_fail(cx, "attention (cuDNN)", "out of host memory for the cuDNN state");
            return nullptr;
        }
        const cudnnStatus_t s = cudnnCreate(&st->handle);
        if (s == CUDNN_STATUS_SUCCESS) (void)cudnnSetStream(st->handle, cx->stream);
        if (s != CUDNN_STATUS_SUCCESS) {
            st->handle = nullptr;
            st->init_failed = 1;
            fprintf(stderr,
                    "fmtrain: CUDA attention: cudnnCreate failed (%s; cuDNN library %zu, built with "
                    "%d): the bf16 attention uses the built-in kernels (slower). Put the cuDNN 9 "
                    "libraries (libcudnn*.so.9) on LD_LIBRARY_PATH to use cuDNN.\n",
                    cudnnGetErrorString(s), cudnnGetVersion(), CUDNN_VERSION);
        }
        *stp = st;
    }
    fm_cuda_cudnn *st = *stp;
    if (st->init_failed) return nullptr;
    const graph_key key = {kind, B, T, NH, NKV, hs};
    auto it = st->graphs.find(key);
    if (it != st->graphs.end()) return it->second.get();
    std::string why;
    std::shared_ptr<fe::graph::Graph> g;
    try {
        g = build_graph(st, kind, B, T, NH, NKV, hs, &why);
    } catch (const std::exception &ex) { /* the frontend may throw (e.g. std::bad_alloc) */
        why = ex.what();
        g = nullptr;
    }
    if (g) {
        int64_t ws = 0;
        fe::error_t e = g->get_workspace_size(ws);
        if (!e.is_good()) {
            why = e.get_message();
            g = nullptr;
        } else if (ws > 0 && (size_t)ws > st->ws_bytes) {
            if (st->ws) fm_cuda_check(cx, cudaFree(st->ws), "attention (cuDNN workspace free)");
            st->ws = nullptr;
            st->ws_bytes = 0;
            cudaError_t ce = cudaMalloc(&st->ws, (size_t)ws);
            if (ce != cudaSuccess) {
                char d[256];
                snprintf(d, sizeof d, "allocating the cuDNN workspace of %lld bytes failed: %s "
                                      "(lower the micro-batch size)",
                         (long long)ws, cudaGetErrorString(ce));
                (void)cudaGetLastError();
                fm_cuda_fail(cx, "attention (cuDNN)", d);
                st->ws = nullptr;
                return nullptr;
            }
            st->ws_bytes = (size_t)ws;
        }
    }
    if (!g)
        fprintf(stderr,
                "fmtrain: CUDA attention %s B=%d T=%d NH=%d NKV=%d head size %d: cuDNN %zu cannot "
                "run it (%s); this shape uses the built-in kernels (slower)\n",
                kind == FM_CUDNN_FWD ? "forward" : "backward", B, T, NH, NKV, hs,
                cudnnGetVersion(), why.c_str());
    st->graphs[key] = g;
    return g.get();
}

static void run(fm_cuda_ctx *cx, fm_cuda_cudnn *st, const void *gp,
                std::unordered_map<int64_t, void *> &pack, const char *what)
{
    const fe::graph::Graph *g = (const fe::graph::Graph *)gp;
    fe::error_t e = g->execute(st->handle, pack, st->ws);
    if (!e.is_good()) {
        char d[384];
        snprintf(d, sizeof d, "cuDNN SDPA execution failed: %.300s", e.get_message().c_str());
        fm_cuda_fail(cx, what, d);
        return;
    }
    fm_cuda_check_launch(cx, what);
}

void fm_cuda_cudnn_forward(fm_cuda_ctx *cx, fm_cuda_cudnn *st, const void *g, void *out16, float *lse,
                           const void *qkv16, int B, int T, int NH, int NKV, int hs)
{
    (void)B, (void)T;
    const size_t C = (size_t)NH * hs, KW = (size_t)NKV * hs;
    char *q = (char *)const_cast<void *>(qkv16);
    std::unordered_map<int64_t, void *> pack = {
        {UID_Q, q}, {UID_K, q + 2 * C}, {UID_V, q + 2 * (C + KW)}, {UID_O, out16}, {UID_STATS, lse}};
    run(cx, st, g, pack, "attention_forward (cuDNN SDPA)");
}

void fm_cuda_cudnn_backward(fm_cuda_ctx *cx, fm_cuda_cudnn *st, const void *g, void *dqkv16,
                            const void *dout16, const void *qkv16, const void *out16,
                            const float *lse, int B, int T, int NH, int NKV, int hs)
{
    (void)B, (void)T;
    const size_t C = (size_t)NH * hs, KW = (size_t)NKV * hs; /* byte offsets: 2 per element */
    char *q = (char *)const_cast<void *>(qkv16), *dq = (char *)dqkv16;
    std::unordered_map<int64_t, void *> pack = {
        {UID_Q, q},
        {UID_K, q + 2 * C},
        {UID_V, q + 2 * (C + KW)},
        {UID_O, const_cast<void *>(out16)},
        {UID_DO, const_cast<void *>(dout16)},
        {UID_STATS, const_cast<float *>(lse)},
        {UID_DQ, dq},
        {UID_DK, dq + 2 * C},
        {UID_DV, dq + 2 * (C + KW)}};
    run(cx, st, g, pack, "attention_backward (cuDNN SDPA)");
}

void fm_cuda_cudnn_free(fm_cuda_cudnn **stp)
{
    fm_cuda_cudnn *st = *stp;
    if (!st) return;
    st->graphs.clear();
    if (st->ws) (void)cudaFree(st->ws);
    if (st->handle) (void)cudnnDestroy(st->handle);
    delete st;
    *stp = nullptr;
}
