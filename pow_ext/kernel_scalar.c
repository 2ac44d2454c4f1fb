/* Portable scalar kernel: nonces in 64-bit general registers. Built everywhere. */
#include <stdint.h>

#include "sha512_defs.h"

typedef uint64_t B;
#define B_LANES 1
#define B_SET1(x) ((uint64_t)(x))
#define B_ADD(a, b) ((a) + (b))
#define B_ROR(x, n) BM_ROR64(x, n)
#define B_SHR(x, n) ((x) >> (n))
#define B_XOR3(a, b, c) ((a) ^ (b) ^ (c))
#define B_CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define B_MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))
#define B_LOADU(p) (*(p))
#define B_STOREU(p, v) (*(p) = (v))
#define B_IOTA() ((uint64_t)0)
#define B_LE_MASK(a, b) ((unsigned)((a) <= (b)))
#define BM_FN(name) name##_scalar
#ifndef BM_INTERLEAVE
#define BM_INTERLEAVE 1
#endif

#include "pow_vec.h"
#include "pow_kernel.h"
