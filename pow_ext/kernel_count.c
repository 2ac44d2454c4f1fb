/* Operation counts of the trial kernel: the same source (pow_kernel.h) compiled over a scalar
 * "vector" whose every operation also bumps a per-class counter. Used by the benchmarks to state
 * how many vector operations one trial costs (and so this CPU's ceiling); never used to search.
 * The count includes the few operations whose result is dead (the compiled kernels drop them). */
#include <stdint.h>

#include "pow_core.h"
#include "sha512_defs.h"

static _Thread_local uint64_t bm_nops[BM_OPCLASS_COUNT];

static inline uint64_t bm_cnt(int cls, uint64_t v) {
    bm_nops[cls]++;
    return v;
}

typedef uint64_t B;
#define B_LANES 1
#define B_SET1(x) ((uint64_t)(x))
#define B_ADD(a, b) bm_cnt(BM_OP_ADD, (a) + (b))
#define B_ROR(x, n) bm_cnt(BM_OP_ROTATE, BM_ROR64(x, n))
#define B_SHR(x, n) bm_cnt(BM_OP_SHIFT, (x) >> (n))
#define B_XOR3(a, b, c) bm_cnt(BM_OP_LOGIC, (a) ^ (b) ^ (c))
#define B_CH(e, f, g) bm_cnt(BM_OP_LOGIC, (g) ^ ((e) & ((f) ^ (g))))
#define B_MAJ(a, b, c) bm_cnt(BM_OP_LOGIC, ((a) & (b)) | ((c) & ((a) | (b))))
#define B_LOADU(p) (*(p))
#define B_STOREU(p, v) (*(p) = (v))
#define B_IOTA() ((uint64_t)0)
#define B_LE_MASK(a, b) ((unsigned)((a) <= (b)))
#define BM_FN(name) name##_count
#define BM_INTERLEAVE 1

#include "pow_vec.h"
#include "pow_kernel.h"

uint64_t bm_kernel_op_counts(uint64_t out[BM_OPCLASS_COUNT]) {
    static const uint8_t ih[64] = {1};
    bm_consts c;
    bm_consts_init(&c, ih, 0);
    for (int i = 0; i < BM_OPCLASS_COUNT; i++) bm_nops[i] = 0;
    uint64_t trial = trial_vec_count(&c, 0);
    for (int i = 0; i < BM_OPCLASS_COUNT; i++) out[i] = bm_nops[i];
    return trial;
}
