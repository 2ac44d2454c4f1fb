/* Native proof-of-work search: per-job constants, the ISA kernels and the threaded driver.
 *
 * One trial is uint64_be(SHA512(SHA512(be64(nonce) || initial_hash))[0:8]) <= target.
 * Both SHA-512 calls are single-block compressions starting from the IV; everything that does
 * not depend on the nonce is computed once per job into bm_consts.
 */
#ifndef BM_POW_CORE_H
#define BM_POW_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ISA identifiers (bit positions in bm_supported_isas()). */
#define BM_ISA_SCALAR 0
#define BM_ISA_AVX2 1
#define BM_ISA_AVX512 2
#define BM_ISA_COUNT 3

/* Nonce-independent values of one job (see pow_kernel.h for how each is used). */
typedef struct bm_consts {
    uint64_t target;
    uint64_t a0, e0;       /* state words a and e after round 0 of either block, minus W0 */
    uint64_t kw[16];       /* block 1, rounds 1..15: K[t] + W[t] (+ the constant h of rounds 1..3) */
    uint64_t p16, p18, p20, p22, p23, p24; /* constant parts of block 1 schedule words 16..24 */
    uint64_t c17, c19, c21;          /* block 1 schedule words 17, 19, 21 (fully constant) */
    uint64_t kw17, kw19, kw21;       /* K[t] + those words */
    uint64_t s0_17, s0_19, s0_21;    /* sigma0 of those words (used by words 32, 34, 36) */
} bm_consts;

/* One found nonce. */
typedef struct bm_hit {
    uint64_t nonce;
    uint64_t trial;
} bm_hit;

/* Kernel entry points of one ISA.
 * scan: tests nonces nonce0 .. nonce0+n-1 (n >= 1, no wrap past 2^64-1) in order and returns 1
 *       with the smallest qualifying nonce in *hit, or 0 when none qualifies.
 * trials: trial values of arbitrary nonces. */
typedef int (*bm_scan_fn)(const bm_consts *c, uint64_t nonce0, uint64_t n, bm_hit *hit);
typedef void (*bm_trials_fn)(const bm_consts *c, const uint64_t *nonces, size_t n, uint64_t *out);

int bm_scan_scalar(const bm_consts *c, uint64_t nonce0, uint64_t n, bm_hit *hit);
void bm_trials_scalar(const bm_consts *c, const uint64_t *nonces, size_t n, uint64_t *out);
#ifdef BM_SIMD_X86
int bm_scan_avx2(const bm_consts *c, uint64_t nonce0, uint64_t n, bm_hit *hit);
void bm_trials_avx2(const bm_consts *c, const uint64_t *nonces, size_t n, uint64_t *out);
int bm_scan_avx512(const bm_consts *c, uint64_t nonce0, uint64_t n, bm_hit *hit);
void bm_trials_avx512(const bm_consts *c, const uint64_t *nonces, size_t n, uint64_t *out);
#endif

/* Fills c for this initial hash (64 bytes) and target. */
void bm_consts_init(bm_consts *c, const uint8_t initial_hash[64], uint64_t target);

/* Bit mask of the ISAs this build and this CPU support (bit BM_ISA_x). */
unsigned bm_supported_isas(void);
/* Lanes (nonces per kernel call) of an ISA, 0 if unknown. */
unsigned bm_isa_lanes(int isa);

/* Trial values with one ISA's kernel; returns 0, or -1 when the ISA is not supported. */
int bm_trial_values(int isa, const uint8_t initial_hash[64], const uint64_t *nonces, size_t n, uint64_t *out);

/* A multi-threaded search over nonces first .. last (inclusive). */
typedef struct bm_job bm_job;

/* NULL on bad arguments (unsupported ISA, nthreads < 1, last < first) or out of memory. */
bm_job *bm_job_new(int isa, const uint8_t initial_hash[64], uint64_t target, uint64_t first,
                   uint64_t last, int nthreads);
/* Starts the threads; returns how many started (0: none could be created). Call once. */
int bm_job_start(bm_job *j);
/* Waits up to timeout_ms for every thread to finish; 1 when finished, 0 on timeout. */
int bm_job_wait(bm_job *j, unsigned timeout_ms);
/* Asks every thread to stop at its next check (every few thousand nonces). */
void bm_job_cancel(bm_job *j);
/* Joins the threads (waits for them). Idempotent. */
void bm_job_join(bm_job *j);
/* Trials done so far, summed over threads. */
uint64_t bm_job_trials(const bm_job *j);
/* 1 and the smallest solution found, or 0. Meaningful once the job has finished. */
int bm_job_result(bm_job *j, bm_hit *hit);
/* Cancels, joins and frees. NULL is allowed. */
void bm_job_free(bm_job *j);

/* ---- measuring the ceiling (benchmarks only) ---- */

/* Classes of vector operation the kernel is made of. */
enum { BM_OP_ADD, BM_OP_ROTATE, BM_OP_SHIFT, BM_OP_LOGIC, BM_OPCLASS_COUNT };
/* Operations of each class in one trial of one lane (kernel_count.c); returns that trial's value. */
uint64_t bm_kernel_op_counts(uint64_t out[BM_OPCLASS_COUNT]);
/* Mixes of bm_vector_mix_rate: the kernel's proportions, or adds only (the core's peak). */
enum { BM_MIX_KERNEL, BM_MIX_PEAK };
/* 512-bit operations per second one core sustains in that mix, measured for about `seconds`
 * (probe_avx512.c); -1 when the build or the CPU lacks AVX-512. */
double bm_vector_mix_rate(int isa, int mix, double seconds);
double bm_mix_rate_avx512(int mix, double seconds);

#ifdef __cplusplus
}
#endif
#endif
