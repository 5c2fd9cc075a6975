/* rng.h — fmtrain's one source of pseudo-random numbers: splitmix64 (Steele, Lea, Flood 2014).
 *
 * What it is: a 64-bit counter-based generator small enough to reason about. The stream of a seed s is
 * mix64(s + k*G) for k = 1, 2, ... (G the golden-ratio constant), so any draw can also be computed
 * alone, in any order, on any thread — which is what makes weight initialisation independent of the
 * thread count, and data order and sampling identical on every machine.
 * Users: model initialisation (fm_rng_normal_at), the data reader's permutation keys, the dataset
 * splitter, text sampling, and fm_comm_hash64 (the finaliser alone).
 * What it is not: not cryptographic; not for anything an attacker chooses.
 *
 * Changing any function here changes trained weights, data order and samples: the tests pin values. */
#ifndef FM_RNG_H
#define FM_RNG_H

#include <stdint.h>

#define FM_RNG_GOLDEN UINT64_C(0x9E3779B97F4A7C15) /* 2^64 / golden ratio, the stream's increment */

/* The splitmix64 finaliser: a bijection of 64-bit words that spreads every input bit over the output. */
static inline uint64_t fm_rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* The next 64 random bits of the stream whose state is *state (advances the state by G). */
static inline uint64_t fm_rng_next(uint64_t *state)
{
    *state += FM_RNG_GOLDEN;
    return fm_rng_mix64(*state);
}

/* A uniform double in [0, 1) from the next draw (its top 53 bits). */
static inline double fm_rng_uniform(uint64_t *state)
{
    return (double)(fm_rng_next(state) >> 11) * 0x1.0p-53;
}

/* A standard normal number for index i of the stream whose state starts at `key`: Box-Muller on draws
 * 2i and 2i+1 of that stream (counter-based: any index is computed alone). */
double fm_rng_normal_at(uint64_t key, uint64_t i);

#endif /* FM_RNG_H */
