/* AVX2 kernel: 4 nonces per vector. Compiled with -mavx2 (see build.py); only called when the
 * CPU reports AVX2. */
#include <immintrin.h>
#include <stdint.h>

typedef __m256i B;
#define B_LANES 4
#define B_SET1(x) _mm256_set1_epi64x((long long)(x))
#define B_ADD(a, b) _mm256_add_epi64(a, b)
/* Rotate by a byte multiple is one shuffle; other amounts are two shifts and an or. */
#define B_ROR(x, n) ((n) == 8 ? _mm256_shuffle_epi8(x, bm_ror8_mask())                   \
                              : _mm256_or_si256(_mm256_srli_epi64(x, n), _mm256_slli_epi64(x, 64 - (n))))
#define B_SHR(x, n) _mm256_srli_epi64(x, n)
#define B_XOR3(a, b, c) _mm256_xor_si256(_mm256_xor_si256(a, b), c)
#define B_CH(e, f, g) _mm256_xor_si256(g, _mm256_and_si256(e, _mm256_xor_si256(f, g)))
#define B_MAJ(a, b, c) _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, _mm256_or_si256(a, b)))
#define B_LOADU(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define B_STOREU(p, v) _mm256_storeu_si256((__m256i *)(void *)(p), v)
#define B_IOTA() _mm256_set_epi64x(3, 2, 1, 0)
/* Unsigned a <= b: not (a > b) after flipping the sign bits, as AVX2 only compares signed. */
#define B_LE_MASK(a, b) bm_le_mask(a, b)
#define BM_FN(name) name##_avx2
#ifndef BM_INTERLEAVE
#define BM_INTERLEAVE 1
#endif

static inline __m256i bm_ror8_mask(void) {
    /* Byte i of each 64-bit lane takes byte (i + 1) mod 8 of the same lane. */
    return _mm256_set_epi8(8, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1,
                           8, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1);
}

static inline unsigned bm_le_mask(__m256i a, __m256i b) {
    const __m256i sign = _mm256_set1_epi64x((long long)UINT64_C(0x8000000000000000));
    __m256i gt = _mm256_cmpgt_epi64(_mm256_xor_si256(a, sign), _mm256_xor_si256(b, sign));
    return (~(unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(gt))) & 0xFu;
}

#include "pow_vec.h"
#include "pow_kernel.h"
