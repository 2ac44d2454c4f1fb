/* The hardware side of the kernel's ceiling: how many 512-bit integer operations per second one
 * core sustains in the AVX-512 kernel's mix (6 adds : 6 rotates : 4 ternary-logic ops : 1 shift,
 * the proportions of pow_kernel.h), and in the easiest mix (adds only: the core's peak), on 12
 * independent chains so that latency does not limit it. Written in inline assembly so the
 * compiler cannot merge or drop operations. Compiled with -mavx512f; only called when the CPU
 * reports AVX-512F. */
#include <stdint.h>
#include <time.h>

#include "pow_core.h"

#define R12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define ADD(r) "vpaddq %%zmm12, %%zmm" #r ", %%zmm" #r "\n\t"
#define RORX(r, n) "vprorq $" #n ", %%zmm" #r ", %%zmm" #r "\n\t"
#define ROR14(r) RORX(r, 14)
#define ROR18(r) RORX(r, 18)
#define ROR41(r) RORX(r, 41)
#define ROR28(r) RORX(r, 28)
#define ROR34(r) RORX(r, 34)
#define ROR39(r) RORX(r, 39)
#define TERN(r) "vpternlogq $0x96, %%zmm13, %%zmm14, %%zmm" #r "\n\t"
#define SHR(r) "vpsrlq $7, %%zmm" #r ", %%zmm" #r "\n\t"
/* 17 operations per chain per iteration: 6 add, 6 rotate, 4 logic, 1 shift. */
#define BM_MIX_OPS_PER_ITER (12 * 17)

static double bm_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void bm_add_loop(uint64_t iters) {
    __asm__ volatile(
        "vpternlogq $0xff, %%zmm12, %%zmm12, %%zmm12\n\t"
        "1:\n\t"
        R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD)
        R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD) R12(ADD)
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : "+r"(iters)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "cc");
}

static void bm_mix_loop(uint64_t iters) {
    __asm__ volatile(
        "vpternlogq $0xff, %%zmm12, %%zmm12, %%zmm12\n\t"
        "vpaddq %%zmm12, %%zmm12, %%zmm13\n\t"
        "vpaddq %%zmm13, %%zmm12, %%zmm14\n\t"
        "1:\n\t"
        R12(ADD) R12(ROR14) R12(ADD) R12(ROR18) R12(TERN) R12(ADD) R12(ROR41) R12(TERN)
        R12(ADD) R12(ROR28) R12(ADD) R12(ROR34) R12(TERN) R12(ADD) R12(ROR39) R12(TERN) R12(SHR)
        "dec %0\n\t"
        "jnz 1b\n\t"
        "vzeroupper\n\t"
        : "+r"(iters)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13", "xmm14", "cc");
}

double bm_mix_rate_avx512(int mix, double seconds) {
    void (*loop)(uint64_t) = mix == BM_MIX_PEAK ? bm_add_loop : bm_mix_loop;
    uint64_t iters = 1000, done = 0;
    double t0 = bm_now(), dt = 0.0;
    loop(iters); /* warm up (frequency, caches) before timing */
    t0 = bm_now();
    while ((dt = bm_now() - t0) < seconds) {
        loop(iters);
        done += iters;
        if (iters < 1000000) iters *= 2;
    }
    return dt > 0 ? (double)done * BM_MIX_OPS_PER_ITER / dt : 0.0;
}
