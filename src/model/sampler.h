/* sampler.h — text generation: the sampling policy on top of a decode model's KV cache (model.h).
 *
 * What it is: what sampling is, and nothing of the model: the choice of the next token from the
 * logits (greedy, or softmax(logits / temperature) over the top-k tokens with a seeded random
 * stream, core/rng.h), the prompt prefill, and the window slide when the cache is full. Every
 * logit comes from fm_model_decode, i.e. the model's own forward through its backend, so sampling
 * works for any model family on any backend with fp32 activations.
 * What it is not: no forward pass of its own, no batching (one sequence), no beam search.
 *
 * Legend: maxT the model's max_seq_len, V vocabulary, Vp padded vocabulary.
 * Memory (host): Vp logits, V (value, index) pairs for top-k, maxT context tokens; the model's
 * memory is the decode model's (fm_model_memory).
 *
 * Window: a model sees at most maxT tokens (GPT-2's learned positions stop there). When the context
 * reaches maxT tokens the cache is rebuilt from the last maxT/2 (positions restart at 0), so long
 * outputs keep going with a shorter context.
 *
 * Determinism: the same model, prompt, options and backend thread count give the same tokens. The
 * random stream of a seed is fm_rng_next's; one draw per sampled token.
 */
#ifndef FM_SAMPLER_H
#define FM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "core/status.h"

typedef struct fm_sampler fm_sampler;

/* Creates a sampler over `model`, a decode model (FM_MODEL_DECODE, any family, max_batch >= 1) on a
 * backend with fp32 activations. The model is not owned and must outlive the sampler; its caches
 * are the sampler's to reset. Errors: a training model or non-fp32 activations (FM_ERR_INTERNAL),
 * host allocation (with the byte count). */
fm_status fm_sampler_create(fm_model *model, fm_sampler **out);
void fm_sampler_free(fm_sampler **s);

/* Sampling parameters. */
typedef struct fm_sampler_options {
    int n_tokens;       /* tokens to generate (>= 0) */
    double temperature; /* 0 = greedy (argmax); otherwise softmax(logits / temperature) */
    int top_k;          /* keep only the k most likely tokens (0 = all of V) */
    uint64_t seed;      /* random stream for sampling; same seed, same output */
} fm_sampler_options;

/* Called after each generated token; a non-NULL status stops generation and is returned. */
typedef fm_status (*fm_sampler_token_fn)(void *ctx, int32_t token);

/* Resets the model's cache, feeds prompt[0..n_prompt) in one decode call (n_prompt >= 1; only its
 * last maxT tokens are used), then generates opts->n_tokens tokens, one decode call each, calling
 * `on_token` (may be NULL) for each and storing them in `out` (room for opts->n_tokens, may be
 * NULL). Slides the window as described above.
 * Errors: empty prompt, bad options (FM_ERR_USAGE), a token out of range (FM_ERR_INPUT), the
 * model's errors, on_token's. */
fm_status fm_sampler_generate(fm_sampler *s, const int32_t *prompt, int n_prompt,
                              const fm_sampler_options *opts, fm_sampler_token_fn on_token,
                              void *ctx, int32_t *out);

#endif /* FM_SAMPLER_H */
