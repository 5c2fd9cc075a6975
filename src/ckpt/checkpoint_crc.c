/* checkpoint_crc.c — CRC-32 (zlib's polynomial, identical results to zlib's crc32) for checkpoint
 * checksums, fast enough not to slow a checkpoint down.
 *
 * zlib's table-driven crc32 runs at about 1.5 GB/s per core, which would cost as much as the write
 * itself on a fast file system. On x86-64 CPUs with PCLMULQDQ this file folds 64 bytes per step with
 * carry-less multiplication (Gopal et al., "Fast CRC Computation for Generic Polynomials Using
 * PCLMULQDQ Instruction", Intel 2009; the constants are the bit-reflected ones for the CRC-32
 * polynomial 0x04C11DB7 used by zlib, Linux's crc32-pclmul and Chromium's zlib), about 10x faster;
 * the tail (< 16 bytes) and CPUs without the instruction use zlib. Long buffers are also split into
 * 4 MiB chunks computed by the OpenMP threads and joined with crc32_combine. The test suite compares
 * every path with zlib's crc32 on random data of many lengths and alignments.
 */
#include <stdlib.h>
#include <zlib.h>

#include "ckpt/checkpoint_file.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FM_CHECKPOINT_NO_PCLMUL)
#define FM_CRC_HAVE_PCLMUL 1
#include <immintrin.h>

/* CRC of len bytes (len >= 64, a multiple of 16), in zlib's convention (crc = previous result). */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_pclmul(uint32_t crc,
                                                                        const unsigned char *buf,
                                                                        size_t len)
{
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5k0 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

    x1 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)~crc));
    x0 = k1k2;
    buf += 64;
    len -= 64;
    while (len >= 64) { /* fold four 128-bit lanes by 512 bits */
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        y5 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x00));
        y6 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x10));
        y7 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x20));
        y8 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x30));
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
        buf += 64;
        len -= 64;
    }
    /* Fold the four lanes into one. */
    x0 = k3k4;
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    while (len >= 16) { /* remaining 16-byte blocks */
        x2 = _mm_loadu_si128((const __m128i *)(const void *)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }
    /* 128 -> 64 bits. */
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = k5k0;
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    /* Barrett reduction to 32 bits. */
    x0 = poly;
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return ~(uint32_t)_mm_extract_epi32(x1, 1);
}

static int have_pclmul(void)
{
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}
#endif

/* CRC of one piece (any length) continuing from `crc`, on the calling thread. */
static uint32_t crc_piece(uint32_t crc, const unsigned char *b, size_t n, int fast)
{
#ifdef FM_CRC_HAVE_PCLMUL
    if (fast && n >= 64) {
        size_t body = n & ~(size_t)15;
        crc = crc32_pclmul(crc, b, body);
        b += body;
        n -= body;
    }
#else
    (void)fast;
#endif
    while (n > 0) { /* zlib takes uInt lengths */
        size_t c = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        crc = (uint32_t)crc32(crc, b, (uInt)c);
        b += c;
        n -= c;
    }
    return crc;
}

#define FM_CRC_CHUNK ((size_t)4 << 20)

uint32_t fm_checkpoint_crc32_serial(const void *p, size_t n, int use_simd)
{
    int fast = 0;
#ifdef FM_CRC_HAVE_PCLMUL
    fast = use_simd && have_pclmul();
#else
    (void)use_simd;
#endif
    return crc_piece(0, p, n, fast);
}

uint32_t fm_checkpoint_crc32(const void *p, size_t n)
{
    const unsigned char *b = p;
    int fast = 0;
#ifdef FM_CRC_HAVE_PCLMUL
    fast = have_pclmul();
#endif
    size_t nchunks = (n + FM_CRC_CHUNK - 1) / FM_CRC_CHUNK;
    if (nchunks <= 1) return crc_piece(0, b, n, fast);
    uLong *parts = malloc(nchunks * sizeof *parts);
    if (!parts) return crc_piece(0, b, n, fast); /* one thread */
    long long nc = (long long)nchunks;
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < nc; i++) {
        size_t len = (size_t)i + 1 < nchunks ? FM_CRC_CHUNK : n - (size_t)i * FM_CRC_CHUNK;
        parts[i] = crc_piece(0, b + (size_t)i * FM_CRC_CHUNK, len, fast);
    }
    uLong c = parts[0];
    for (size_t i = 1; i < nchunks; i++) {
        size_t len = i + 1 < nchunks ? FM_CRC_CHUNK : n - i * FM_CRC_CHUNK;
        c = crc32_combine(c, parts[i], (z_off_t)len);
    }
    free(parts);
    return (uint32_t)c;
}
