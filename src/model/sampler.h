/* sampler.h — text generation with a KV cache over a GPT-2 model's weights (host-side).
 *
 * What it is: an incremental forward pass that processes ONE new token per call and keeps every
 * layer's keys and values of the tokens seen so far (the KV cache), so generating n tokens costs
 * n single-token passes instead of n passes over the whole prefix. It runs on the host (plain C with
 * cblas_sgemv) from a host copy of the parameters, so it works with any backend and never disturbs a
 * model's training buffers. The arithmetic is model.h's GPT-2 exactly: same layout, LayerNorm eps
 * 1e-5, tanh GELU, causal attention scaled by 1/sqrt(hs), tied LM head. Its logits for position t
 * equal fm_model_forward's logits for position t (tested to float rounding).
 * What it is not: no batching, no beam search.
 *
 * Legend: L layers, C d_model, NH heads, hs = C/NH, maxT the model's max_seq_len, V vocabulary.
 * Memory: the parameters (4 bytes each) + K and V caches 2 * L * maxT * C floats + a few C-sized rows.
 *
 * Window: learned position embeddings stop at maxT. When generation reaches maxT tokens the cache is
 * rebuilt from the last maxT/2 tokens (positions restart at 0), so long outputs keep going with a
 * shorter context (fm_sampler_generate does this; feed() itself reports a full cache as an error).
 */
#ifndef FM_SAMPLER_H
#define FM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "core/status.h"

typedef struct fm_sampler fm_sampler;

/* Creates a sampler holding a host copy of `model`'s current parameters (the model may be freed
 * afterwards). Errors: host allocation (with the byte count), download failure. */
fm_status fm_sampler_create(fm_model *model, fm_sampler **out);
void fm_sampler_free(fm_sampler **s);

/* Empties the KV cache (the next token is at position 0). */
void fm_sampler_reset(fm_sampler *s);

/* Tokens in the cache (the position the next fed token takes). */
int fm_sampler_position(const fm_sampler *s);
int fm_sampler_max_seq_len(const fm_sampler *s);
int fm_sampler_vocab_size(const fm_sampler *s);

/* Appends `token` (in [0,V)) at the next position and, when `logits` is not NULL, writes the V
 * logits predicting the token after it. Errors: token out of range (FM_ERR_INPUT), cache full
 * (FM_ERR_USAGE: position == maxT; reset or let fm_sampler_generate slide the window). */
fm_status fm_sampler_feed(fm_sampler *s, int32_t token, float *logits);

/* Sampling parameters. */
typedef struct fm_sampler_options {
    int n_tokens;       /* tokens to generate (>= 0) */
    double temperature; /* 0 = greedy (argmax); otherwise softmax(logits / temperature) */
    int top_k;          /* keep only the k most likely tokens (0 = all of V) */
    uint64_t seed;      /* random stream for sampling; same seed, same output */
} fm_sampler_options;

/* Called after each generated token; a non-NULL status stops generation and is returned. */
typedef fm_status (*fm_sampler_token_fn)(void *ctx, int32_t token);

/* Resets the cache, feeds prompt[0..n_prompt) (n_prompt >= 1; only its last maxT tokens are used),
 * then generates opts->n_tokens tokens, calling `on_token` (may be NULL) for each and storing them in
 * `out` (room for opts->n_tokens, may be NULL). Slides the window as described above.
 * Errors: empty prompt, bad options (FM_ERR_USAGE), a token out of range. */
fm_status fm_sampler_generate(fm_sampler *s, const int32_t *prompt, int n_prompt,
                              const fm_sampler_options *opts, fm_sampler_token_fn on_token,
                              void *ctx, int32_t *out);

#endif /* FM_SAMPLER_H */
