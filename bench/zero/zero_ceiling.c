/* zero_ceiling.c — the model-size ceiling per device for each [train] zero stage: for standard
 * shapes (GPT-2 and Llama families), the memory one rank needs (fm_model_memory_estimate for the
 * activations, fm_model_zero_memory for the model state, the reduce-scatter scratch of dist/comm.h)
 * at micro_batch B and sequence length T, against devices of 40, 64, 80 and 96 GB. Pure arithmetic
 * from fmtrain's own formulas (the ones --dry-run prints); docs/model.md quotes its output.
 *
 *   fmtrain-zero-ceiling [RANKS [B [T [ACT_BYTES [RESERVE_GB]]]]]
 * defaults: 8 ranks, B 1, T 2048, 4-byte (fp32) activations (the CUDA backend's today), 4 GB of each
 * device left for the CUDA context, the allocator and communication buffers. ZeRO-3 (parameters
 * sharded too, docs/parallelism.md: not implemented) is shown for comparison with its ideal state,
 * 16 P / RANKS, plus two layers of gathered parameters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm.h"
#include "model/model.h"

typedef struct named {
    const char *name;
    fm_model_shape s;
} named;

int main(int argc, char **argv)
{
    int ranks = argc > 1 ? atoi(argv[1]) : 8, B = argc > 2 ? atoi(argv[2]) : 1;
    int T = argc > 3 ? atoi(argv[3]) : 2048, e = argc > 4 ? atoi(argv[4]) : 4;
    double reserve = (argc > 5 ? atof(argv[5]) : 4.0) * 1e9;
    if (ranks < 1 || B < 1 || T < 1 || (e != 2 && e != 4)) {
        fprintf(stderr, "usage: %s [RANKS [B [T [ACT_BYTES(2|4) [RESERVE_GB]]]]]\n", argv[0]);
        return 2;
    }
    const named shapes[] = {
        {"GPT-2 124M", {12, 12, 768, 0, 50257, .arch = "gpt2"}},
        {"GPT-2 350M", {24, 16, 1024, 0, 50257, .arch = "gpt2"}},
        {"GPT-2 774M", {36, 20, 1280, 0, 50257, .arch = "gpt2"}},
        {"GPT-2 1.5B", {48, 25, 1600, 0, 50257, .arch = "gpt2"}},
        {"Llama 3.2 1B", {16, 32, 2048, 0, 128256, .arch = "llama", .n_kv_head = 8, .ffn_dim = 8192,
                          .tie_embeddings = FM_TIE_YES}},
        {"Llama 3.2 3B", {28, 24, 3072, 0, 128256, .arch = "llama", .n_kv_head = 8, .ffn_dim = 8192,
                          .tie_embeddings = FM_TIE_YES}},
        {"Llama 3.1 8B", {32, 32, 4096, 0, 128256, .arch = "llama", .n_kv_head = 8,
                          .ffn_dim = 14336}},
        {"Llama 2 13B", {40, 40, 5120, 0, 32000, .arch = "llama", .ffn_dim = 13824}},
        {"Code Llama 34B", {48, 64, 8192, 0, 32000, .arch = "llama", .n_kv_head = 8,
                            .ffn_dim = 22016}},
        {"Llama 3.1 70B", {80, 64, 8192, 0, 128256, .arch = "llama", .n_kv_head = 8,
                           .ffn_dim = 28672}},
    };
    const double dev[] = {40e9, 64e9, 80e9, 96e9};
    const char *devname[] = {"A100-40", "A100-64", "H100-80", "GH200-96"};
    printf("# per-rank GB (1e9 bytes) on %d ranks, micro_batch %d, T %d, %d-byte activations; fits "
           "= at most the device minus %.0f GB\n",
           ranks, B, T, e, reserve / 1e9);
    printf("| model | parameters | activations | zero 0 | zero 1 | zero 2 | ZeRO-3 (design) |");
    /* device columns: the lowest stage whose per-rank total fits */
    for (int d = 0; d < 4; d++) printf(" %s |", devname[d]);
    printf("\n|---|---:|---:|---:|---:|---:|---:|");
    for (int d = 0; d < 4; d++) printf("---|");
    printf("\n");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        fm_model_shape s = shapes[i].s;
        s.max_seq_len = T;
        fm_model_memory_info mem;
        fm_status st = fm_model_memory_estimate(&s, B, e, &mem);
        if (st) {
            fprintf(stderr, "%s: %s\n", shapes[i].name, fm_status_message(st));
            fm_status_free(&st);
            return 1;
        }
        double act = (double)(mem.act_bytes + mem.logits_bytes + mem.scratch_bytes);
        double tot[4];
        size_t scratch = fm_comm_reduce_scatter_scratch_for(mem.n_params_padded, ranks, 0, 0);
        for (int z = 0; z < 3; z++) {
            fm_model_zero_bytes zb;
            st = fm_model_zero_memory(&s, z, ranks, scratch, &zb);
            if (st) {
                fprintf(stderr, "%s: %s\n", shapes[i].name, fm_status_message(st));
                fm_status_free(&st);
                return 1;
            }
            /* bf16 (2-byte activations): the bf16 weight copy, whole on every rank (model.h) */
            tot[z] = (double)zb.total + (double)mem.param_copy_bytes + act;
        }
        /* ZeRO-3: every state sharded, two layers' parameters gathered at a time (prefetch) */
        double layer = (double)(mem.n_params_padded) / s.n_layer;
        tot[3] = 16.0 * (double)mem.n_params_padded / ranks + 2 * 4.0 * layer + act +
                 (double)mem.param_copy_bytes / ranks; /* the bf16 copy sharded with the weights */
        printf("| %s | %.2f B | %.1f | %.1f | %.1f | %.1f | %.1f |", shapes[i].name,
               (double)mem.n_params / 1e9, act / 1e9, tot[0] / 1e9, tot[1] / 1e9, tot[2] / 1e9,
               tot[3] / 1e9);
        for (int d = 0; d < 4; d++) {
            /* the lowest stage that fits (zero 1 and 2 hold the same bytes today, model.h) */
            double room = dev[d] - reserve;
            const char *fit = tot[0] <= room   ? "zero 0"
                              : tot[1] <= room ? "zero 1, 2"
                              : tot[3] <= room ? "ZeRO-3 only"
                                               : "no";
            printf(" %s |", fit);
        }
        printf("\n");
    }
    return 0;
}
