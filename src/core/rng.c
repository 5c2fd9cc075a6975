/* rng.c — see rng.h. */
#include "core/rng.h"

#include <math.h>

double fm_rng_normal_at(uint64_t key, uint64_t i)
{
    const uint64_t a = fm_rng_mix64(key + (2 * i + 1) * FM_RNG_GOLDEN);
    const uint64_t b = fm_rng_mix64(key + (2 * i + 2) * FM_RNG_GOLDEN);
    const double u1 = ((double)(a >> 11) + 1.0) * 0x1.0p-53; /* (0, 1]: log(u1) is finite */
    const double u2 = (double)(b >> 11) * 0x1.0p-53;         /* [0, 1) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}
