/* AVX-512 kernel: 8 nonces per vector, native 64-bit rotates (vprorq) and three-input logic
 * (vpternlogq) for Ch, Maj and the three-way xors. Compiled with -mavx512f (see build.py); only
 * called when the CPU reports AVX-512F. */
#include <immintrin.h>
#include <stdint.h>

typedef __m512i B;
#define B_LANES 8
#define B_SET1(x) _mm512_set1_epi64((long long)(x))
#define B_ADD(a, b) _mm512_add_epi64(a, b)
#define B_ROR(x, n) _mm512_ror_epi64(x, n)
#define B_SHR(x, n) _mm512_srli_epi64(x, n)
/* vpternlogq truth tables, index (a << 2) | (b << 1) | c: xor3 0x96, a ? b : c 0xCA, majority 0xE8. */
#define B_XOR3(a, b, c) _mm512_ternarylogic_epi64(a, b, c, 0x96)
#define B_CH(e, f, g) _mm512_ternarylogic_epi64(e, f, g, 0xCA)
#define B_MAJ(a, b, c) _mm512_ternarylogic_epi64(a, b, c, 0xE8)
#define B_LOADU(p) _mm512_loadu_si512((const void *)(p))
#define B_STOREU(p, v) _mm512_storeu_si512((void *)(p), v)
#define B_IOTA() _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0)
#define B_LE_MASK(a, b) ((unsigned)_mm512_cmple_epu64_mask(a, b))
#define BM_FN(name) name##_avx512
#ifndef BM_INTERLEAVE
#define BM_INTERLEAVE 2
#endif

#include "pow_vec.h"
#include "pow_kernel.h"
