/* ref_dump.c — the C side of the PyTorch comparisons (tests/reference/test_gpt2.py, test_llama.py).
 *
 * Builds a model (GPT-2 or Llama, by --config) with fmtrain's model on the CPU backend, initialises it
 * from a seed, and writes to one HDF5 file (serial, default driver):
 *   /config            attributes: arch, the resolved shape (n_kv_head, ffn_dim, rope_theta, norm_eps,
 *                      tie_embeddings too), batch, AdamW hyper-parameters, steps
 *   /batch/tokens      (B,T) int32      /batch/targets (B,T) int32
 *   /params/<name>     initial parameters, our layout (model.h), e.g. /params/h.0.attn.c_attn.weight,
 *                      with attributes hf_name (Hugging Face's name) and hf_rows (its rows: V for a
 *                      vocabulary matrix padded to Vp) from the tensor table
 *   /logits            (B,T,Vp) of the first forward
 *   /loss              scalar, mean cross-entropy of the first forward
 *   /grads/<name>      gradients of that loss (one backward, loss_scale 1)
 *   /grad_norms        (steps) global gradient norm before each AdamW step
 *   /losses            (steps+1) loss before each of `steps` AdamW steps (with clipping) and after the last
 * The same fixed batch is used at every step.
 *
 * Usage: fm_reference_dump --config NAME --out FILE [--threads N] [--steps N]
 * NAME: tiny, gpt2 (GPT-2 shapes); llama_mha, llama_gqa2, llama_gqa4 (small Llamas with odd sizes,
 * T not a power of two: multi-head, grouped-query 2:1 untied, 4:1 tied).
 */
#define _POSIX_C_SOURCE 200809L

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "model/model.h"
#include "train/optimizer.h"

typedef struct ref_config {
    const char *name;
    fm_model_shape shape;
    int B, T;
} ref_config;

static const ref_config configs[] = {
    {"tiny", {2, 2, 64, 32, 100, .arch = "gpt2"}, 4, 32},
    {"gpt2", {12, 12, 768, 1024, 50257, .arch = "gpt2"}, 2, 64},
    /* L, NH, C, maxT, V, arch, NKV, F, rope_theta, norm_eps, tie (0: the family's default) */
    {"llama_mha", {2, 3, 36, 32, 150, "llama", 0, 0, 0.0, 0.0, FM_TIE_DEFAULT}, 2, 19},
    {"llama_gqa2", {2, 4, 40, 48, 211, "llama", 2, 75, 10000.0, 1e-5, FM_TIE_NO}, 3, 29},
    {"llama_gqa4", {3, 8, 96, 64, 300, "llama", 2, 200, 500000.0, 1e-6, FM_TIE_YES}, 2, 45},
};

static const uint64_t SEED = 1337;
static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.95f, EPS = 1e-8f, WD = 0.1f;
static const double CLIP = 1.0;

static fm_status h5_check(herr_t rc, const char *what, const char *path)
{
    if (rc < 0) return FM_ERR(FM_ERR_IO, "%s: HDF5 failed to write %s", path, what);
    return NULL;
}

/* Writes dataset `name` (rank 0..3) of floats or int32s. */
static fm_status h5_write(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const void *data, const char *path)
{
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
    if (space < 0) return FM_ERR(FM_ERR_IO, "%s: H5Screate for %s", path, name);
    hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0) {
        H5Sclose(space);
        return FM_ERR(FM_ERR_IO, "%s: H5Dcreate2 %s", path, name);
    }
    herr_t rc = H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    H5Sclose(space);
    return h5_check(rc, name, path);
}

static fm_status h5_attr_int(hid_t loc, const char *name, long long v, const char *path)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_LLONG, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_LLONG, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return h5_check(rc, name, path);
}

static fm_status h5_attr_str(hid_t loc, const char *name, const char *v, const char *path)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(v) + 1);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    H5Tclose(type);
    return h5_check(rc, name, path);
}

static fm_status h5_attr_double(hid_t loc, const char *name, double v, const char *path)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, H5T_NATIVE_DOUBLE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_DOUBLE, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return h5_check(rc, name, path);
}

/* Writes every tensor of `flat` (host copy of the layout) under group `group`. */
static fm_status write_tensors(hid_t file, const char *group, const fm_model *m, const float *flat,
                               const char *path)
{
    hid_t g = H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return FM_ERR(FM_ERR_IO, "%s: cannot create group %s", path, group);
    fm_status st = NULL;
    for (int i = 0; i < fm_model_num_tensors(m) && !st; i++) {
        const fm_model_tensor_info *t = fm_model_tensor(m, i);
        hsize_t dims[2] = {(hsize_t)t->shape[0], (hsize_t)t->shape[1]};
        st = h5_write(g, t->name, H5T_NATIVE_FLOAT, t->ndim, dims, flat + t->offset, path);
        if (st) break;
        hid_t ds = H5Dopen2(g, t->name, H5P_DEFAULT);
        if (ds < 0) {
            st = FM_ERR(FM_ERR_IO, "%s: cannot reopen %s", path, t->name);
            break;
        }
        st = h5_attr_str(ds, "hf_name", t->hf_name, path);
        if (!st) st = h5_attr_int(ds, "hf_rows", t->hf_transposed ? t->hf_shape[1] : t->hf_shape[0], path);
        H5Dclose(ds);
    }
    H5Gclose(g);
    return st;
}

/* Deterministic batch: B sequences of T+1 tokens from splitmix64; targets are tokens shifted by one. */
static void make_batch(int B, int T, int V, int32_t *tokens, int32_t *targets)
{
    uint64_t s = 0x5eed;
    for (int b = 0; b < B; b++) {
        int32_t prev = 0;
        for (int t = 0; t <= T; t++) {
            s += UINT64_C(0x9E3779B97F4A7C15);
            uint64_t z = s;
            z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
            z ^= z >> 31;
            int32_t tok = (int32_t)(z % (uint64_t)V);
            if (t > 0) {
                tokens[b * T + t - 1] = prev;
                targets[b * T + t - 1] = tok;
            }
            prev = tok;
        }
    }
}

static fm_status run(const ref_config *rc, const char *path, int threads, int steps)
{
    fm_status st = NULL;
    fm_backend *be = NULL;
    fm_model *m = NULL;
    fm_optimizer *opt = NULL;
    float *host = NULL, *logits = NULL, *losses = NULL, *norms = NULL;
    int32_t *tokens = NULL, *targets = NULL;
    hid_t file = -1;
    const int B = rc->B, T = rc->T, V = rc->shape.vocab_size;

    FM_TRY_GOTO(st, done, fm_backend_create("cpu", threads, -1, &be));
    FM_TRY_GOTO(st, done, fm_model_create(&rc->shape, be, B, &m));
    FM_TRY_GOTO(st, done, fm_model_init_weights(m, SEED));
    FM_TRY_GOTO(st, done, fm_optimizer_create(m, &opt));
    fm_model_memory_info mem;
    fm_model_memory(m, &mem);
    fm_model_memory_print(&mem, stdout);

    const int Vp = fm_model_get_padded_vocab(m);
    const size_t np = fm_model_num_params(m);
    host = malloc(np * sizeof(float));
    logits = malloc((size_t)B * T * Vp * sizeof(float));
    losses = calloc((size_t)steps + 1, sizeof(float));
    norms = calloc((size_t)steps + 1, sizeof(float));
    tokens = malloc((size_t)B * T * sizeof(int32_t));
    targets = malloc((size_t)B * T * sizeof(int32_t));
    if (!host || !logits || !losses || !norms || !tokens || !targets) {
        st = FM_ERR(FM_ERR_NOMEM, "out of memory");
        goto done;
    }
    make_batch(B, T, V, tokens, targets);

    file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        st = FM_ERR(FM_ERR_IO, "%s: cannot create HDF5 file", path);
        goto done;
    }
    hid_t cfg = H5Gcreate2(file, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (cfg < 0) {
        st = FM_ERR(FM_ERR_IO, "%s: cannot create group config", path);
        goto done;
    }
    const fm_model_shape *sh = fm_model_get_shape(m); /* resolved: the family's defaults filled in */
    const struct {
        const char *k;
        long long v;
    } ints[] = {{"n_layer", sh->n_layer}, {"n_head", sh->n_head},
                {"d_model", sh->d_model}, {"max_seq_len", sh->max_seq_len},
                {"vocab_size", V}, {"padded_vocab", Vp}, {"B", B}, {"T", T}, {"steps", steps},
                {"threads", threads}, {"n_kv_head", sh->n_kv_head}, {"ffn_dim", sh->ffn_dim},
                {"tie_embeddings", sh->tie_embeddings == FM_TIE_YES}};
    const struct {
        const char *k;
        double v;
    } dbls[] = {{"lr", LR}, {"beta1", BETA1}, {"beta2", BETA2}, {"eps", EPS},
                {"weight_decay", WD}, {"clip", CLIP}, {"rope_theta", sh->rope_theta},
                {"norm_eps", sh->norm_eps}};
    st = h5_attr_str(cfg, "arch", fm_model_arch(m), path);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] && !st; i++)
        st = h5_attr_int(cfg, ints[i].k, ints[i].v, path);
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0] && !st; i++)
        st = h5_attr_double(cfg, dbls[i].k, dbls[i].v, path);
    H5Gclose(cfg);
    if (st) goto done;

    hid_t bg = H5Gcreate2(file, "batch", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t bt[2] = {(hsize_t)B, (hsize_t)T};
    st = h5_write(bg, "tokens", H5T_NATIVE_INT32, 2, bt, tokens, path);
    if (!st) st = h5_write(bg, "targets", H5T_NATIVE_INT32, 2, bt, targets, path);
    H5Gclose(bg);
    if (st) goto done;

    FM_TRY_GOTO(st, done, fm_model_get_params(m, host));
    FM_TRY_GOTO(st, done, write_tensors(file, "params", m, host, path));

    const fm_adamw_params hp = {LR, BETA1, BETA2, EPS, WD};
    for (int s = 0; s <= steps; s++) {
        FM_TRY_GOTO(st, done, fm_model_forward(m, tokens, targets, B, T, &losses[s]));
        printf("step %2d loss %.7f\n", s, (double)losses[s]);
        if (s == steps) break;
        if (s == 0) {
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    FM_TRY_GOTO(st, done,
                                fm_model_logits(m, b, t, logits + ((size_t)b * T + t) * Vp));
            hsize_t ld[3] = {(hsize_t)B, (hsize_t)T, (hsize_t)Vp};
            FM_TRY_GOTO(st, done, h5_write(file, "logits", H5T_NATIVE_FLOAT, 3, ld, logits, path));
            FM_TRY_GOTO(st, done, h5_write(file, "loss", H5T_NATIVE_FLOAT, 0, NULL, &losses[0], path));
        }
        FM_TRY_GOTO(st, done, fm_model_backward(m, 1.0f, NULL, NULL));
        if (s == 0) {
            FM_TRY_GOTO(st, done, fm_model_get_grads(m, host));
            FM_TRY_GOTO(st, done, write_tensors(file, "grads", m, host, path));
        }
        double norm = 0.0;
        FM_TRY_GOTO(st, done, fm_optimizer_grad_norm(opt, &norm));
        norms[s] = (float)norm;
        FM_TRY_GOTO(st, done, fm_optimizer_step(opt, &hp, fm_optimizer_clip_scale(norm, CLIP)));
    }
    hsize_t nl = (hsize_t)steps + 1, nn = (hsize_t)steps;
    FM_TRY_GOTO(st, done, h5_write(file, "losses", H5T_NATIVE_FLOAT, 1, &nl, losses, path));
    FM_TRY_GOTO(st, done, h5_write(file, "grad_norms", H5T_NATIVE_FLOAT, 1, &nn, norms, path));
done:
    if (file >= 0 && H5Fclose(file) < 0 && !st) st = FM_ERR(FM_ERR_IO, "%s: H5Fclose failed", path);
    free(host);
    free(logits);
    free(losses);
    free(norms);
    free(tokens);
    free(targets);
    fm_optimizer_free(&opt);
    fm_model_free(&m);
    fm_backend_free(&be);
    return st;
}

int main(int argc, char **argv)
{
    const char *config = "tiny", *out = NULL;
    int threads = 2, steps = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--config") == 0)
            config = argv[i + 1];
        else if (strcmp(argv[i], "--out") == 0)
            out = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--steps") == 0)
            steps = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "fm_reference_dump: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const ref_config *rc = NULL;
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        if (strcmp(configs[i].name, config) == 0) rc = &configs[i];
    if (!rc || !out || threads < 1 || steps < 1) {
        fprintf(stderr, "usage: fm_reference_dump --config tiny|gpt2|llama_mha|llama_gqa2|llama_gqa4 "
                        "--out FILE [--threads N] [--steps N]\n");
        return 2;
    }
    fm_status st = run(rc, out, threads, steps);
    if (st) {
        fm_status_print(st, stderr, 1);
        int code = fm_status_exit_code(st);
        fm_status_free(&st);
        return code;
    }
    return 0;
}
