/* Builds the kernel's vector type V from an ISA's base vector B, BM_INTERLEAVE (1 or 2) at a
 * time. Two independent base vectors per step give the out-of-order core a second chain of
 * rounds to overlap; each ISA file picks the factor that measured fastest (see build.py).
 *
 * The ISA file defines B, B_LANES, B_SET1, B_ADD, B_ROR, B_SHR, B_XOR3, B_CH, B_MAJ, B_LOADU,
 * B_STOREU, B_IOTA (lanes 0..B_LANES-1), B_LE_MASK and BM_INTERLEAVE, then includes this.
 */
#include <stdint.h>

#ifndef BM_INTERLEAVE
#define BM_INTERLEAVE 1
#endif

#if BM_INTERLEAVE == 1

typedef B V;
#define LANES B_LANES
#define V_SET1(c) B_SET1(c)
#define V_ADD(a, b) B_ADD(a, b)
#define V_ROR(x, n) B_ROR(x, n)
#define V_SHR(x, n) B_SHR(x, n)
#define V_XOR3(a, b, c) B_XOR3(a, b, c)
#define V_CH(a, b, c) B_CH(a, b, c)
#define V_MAJ(a, b, c) B_MAJ(a, b, c)
#define V_LOADU(p) B_LOADU(p)
#define V_STOREU(p, v) B_STOREU(p, v)
#define V_IOTA() B_IOTA()
#define V_LE_MASK(a, b) B_LE_MASK(a, b)

#elif BM_INTERLEAVE == 2

typedef struct {
    B x, y;
} V;
#define LANES (2 * B_LANES)
/* Functions, not macros, so that every operand is evaluated once (schedule words are assigned
 * inside expressions); rotate/shift counts must stay immediates, hence statement expressions. */
#define BM_VFN static inline __attribute__((always_inline))
BM_VFN V bm_v2_set1(uint64_t c) { V r = {B_SET1(c), B_SET1(c)}; return r; }
BM_VFN V bm_v2_add(V a, V b) { V r = {B_ADD(a.x, b.x), B_ADD(a.y, b.y)}; return r; }
BM_VFN V bm_v2_xor3(V a, V b, V c) { V r = {B_XOR3(a.x, b.x, c.x), B_XOR3(a.y, b.y, c.y)}; return r; }
BM_VFN V bm_v2_ch(V a, V b, V c) { V r = {B_CH(a.x, b.x, c.x), B_CH(a.y, b.y, c.y)}; return r; }
BM_VFN V bm_v2_maj(V a, V b, V c) { V r = {B_MAJ(a.x, b.x, c.x), B_MAJ(a.y, b.y, c.y)}; return r; }
BM_VFN V bm_v2_loadu(const uint64_t *p) { V r = {B_LOADU(p), B_LOADU(p + B_LANES)}; return r; }
BM_VFN void bm_v2_storeu(uint64_t *p, V v) { B_STOREU(p, v.x); B_STOREU(p + B_LANES, v.y); }
BM_VFN V bm_v2_iota(void) { V r = {B_IOTA(), B_ADD(B_IOTA(), B_SET1(B_LANES))}; return r; }
BM_VFN unsigned bm_v2_le_mask(V a, V b) { return B_LE_MASK(a.x, b.x) | (B_LE_MASK(a.y, b.y) << B_LANES); }
#define V_SET1(c) bm_v2_set1((uint64_t)(c))
#define V_ADD(a, b) bm_v2_add(a, b)
#define V_ROR(v, n) __extension__({ V v_ = (v); V r_ = {B_ROR(v_.x, n), B_ROR(v_.y, n)}; r_; })
#define V_SHR(v, n) __extension__({ V v_ = (v); V r_ = {B_SHR(v_.x, n), B_SHR(v_.y, n)}; r_; })
#define V_XOR3(a, b, c) bm_v2_xor3(a, b, c)
#define V_CH(a, b, c) bm_v2_ch(a, b, c)
#define V_MAJ(a, b, c) bm_v2_maj(a, b, c)
#define V_LOADU(p) bm_v2_loadu(p)
#define V_STOREU(p, v) bm_v2_storeu(p, v)
#define V_IOTA() bm_v2_iota()
#define V_LE_MASK(a, b) bm_v2_le_mask(a, b)

#else
#error "BM_INTERLEAVE must be 1 or 2"
#endif
