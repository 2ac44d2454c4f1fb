/* Per-job precomputation, run-time ISA selection and the multi-threaded search driver.
 *
 * Threads claim chunks of CHUNK consecutive nonces from a shared counter, in increasing order,
 * and scan each in sub-blocks of SUB nonces, checking the stop flag and the best solution so
 * far between sub-blocks. A thread drops any chunk that starts after the best solution found,
 * and stops at the first solution inside its chunk; so when the job ends, every nonce before
 * the reported one has been tested: the answer is the smallest solution in the range whatever
 * the thread count (threads still scanning earlier chunks finish them, at most CHUNK nonces).
 */
#define _GNU_SOURCE
#include "pow_core.h"
#include "sha512_defs.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK UINT64_C(16384)
#define SUB UINT64_C(1024)

/* ------------------------------------------------------------------ precomputation */

static uint64_t load_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

void bm_consts_init(bm_consts *c, const uint8_t initial_hash[64], uint64_t target) {
    uint64_t w[16];
    memset(c, 0, sizeof *c);
    c->target = target;
    /* Block 1 message words (W0, the nonce, is left out). */
    w[0] = 0;
    for (int i = 0; i < 8; i++) w[1 + i] = load_be64(initial_hash + 8 * i);
    w[9] = UINT64_C(0x8000000000000000);
    for (int i = 10; i < 15; i++) w[i] = 0;
    w[15] = 72 * 8;

    /* Round 0 from the IV: T1 = const + W0, so a1 = W0 + a0 and e1 = W0 + e0. */
    uint64_t t1 = BM_IV7 + BM_BSIG1(BM_IV4) + BM_CH(BM_IV4, BM_IV5, BM_IV6) + BM_K512[0];
    uint64_t t2 = BM_BSIG0(BM_IV0) + BM_MAJ(BM_IV0, BM_IV1, BM_IV2);
    c->a0 = t1 + t2;
    c->e0 = BM_IV3 + t1;

    for (int t = 1; t < 16; t++) c->kw[t] = BM_K512[t] + w[t];
    /* In rounds 1..3, h is still an IV word (IV6, IV5, IV4). */
    c->kw[1] += BM_IV6;
    c->kw[2] += BM_IV5;
    c->kw[3] += BM_IV4;

    /* Schedule words 16..24 of block 1 minus their nonce-dependent terms (W10..W14 = 0). */
    c->p16 = w[9] + BM_SSIG0(w[1]);                          /* W16 = W0 + p16 */
    c->c17 = BM_SSIG1(w[15]) + BM_SSIG0(w[2]) + w[1];         /* W17 */
    c->p18 = BM_SSIG0(w[3]) + w[2];                          /* W18 = s1(W16) + p18 */
    c->c19 = BM_SSIG1(c->c17) + BM_SSIG0(w[4]) + w[3];        /* W19 */
    c->p20 = BM_SSIG0(w[5]) + w[4];                          /* W20 = s1(W18) + p20 */
    c->c21 = BM_SSIG1(c->c19) + BM_SSIG0(w[6]) + w[5];        /* W21 */
    c->p22 = w[15] + BM_SSIG0(w[7]) + w[6];                  /* W22 = s1(W20) + p22 */
    c->p23 = BM_SSIG1(c->c21) + BM_SSIG0(w[8]) + w[7];        /* W23 = W16 + p23 */
    c->p24 = c->c17 + BM_SSIG0(w[9]) + w[8];                 /* W24 = s1(W22) + p24 */
    c->kw17 = BM_K512[17] + c->c17;
    c->kw19 = BM_K512[19] + c->c19;
    c->kw21 = BM_K512[21] + c->c21;
    c->s0_17 = BM_SSIG0(c->c17);
    c->s0_19 = BM_SSIG0(c->c19);
    c->s0_21 = BM_SSIG0(c->c21);
}

/* ------------------------------------------------------------------ ISA selection */

typedef struct {
    bm_scan_fn scan;
    bm_trials_fn trials;
    unsigned lanes;
} bm_isa_impl;

static const bm_isa_impl IMPLS[BM_ISA_COUNT] = {
    {bm_scan_scalar, bm_trials_scalar, 1},
#ifdef BM_SIMD_X86
    {bm_scan_avx2, bm_trials_avx2, 4},
    {bm_scan_avx512, bm_trials_avx512, 8},
#else
    {NULL, NULL, 0},
    {NULL, NULL, 0},
#endif
};

unsigned bm_supported_isas(void) {
    unsigned m = 1u << BM_ISA_SCALAR;
#ifdef BM_SIMD_X86
    /* libgcc/compiler-rt check CPUID and that the OS saves the wider registers (XCR0). */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) m |= 1u << BM_ISA_AVX2;
    if (__builtin_cpu_supports("avx512f")) m |= 1u << BM_ISA_AVX512;
#endif
    return m;
}

static int isa_ok(int isa) {
    return isa >= 0 && isa < BM_ISA_COUNT && (bm_supported_isas() >> isa) & 1u;
}

unsigned bm_isa_lanes(int isa) {
    return (isa >= 0 && isa < BM_ISA_COUNT) ? IMPLS[isa].lanes : 0;
}

int bm_trial_values(int isa, const uint8_t initial_hash[64], const uint64_t *nonces, size_t n, uint64_t *out) {
    bm_consts c;
    if (!isa_ok(isa)) return -1;
    bm_consts_init(&c, initial_hash, 0);
    IMPLS[isa].trials(&c, nonces, n, out);
    return 0;
}

double bm_vector_mix_rate(int isa, int mix, double seconds) {
#ifdef BM_SIMD_X86
    if (isa == BM_ISA_AVX512 && isa_ok(isa)) return bm_mix_rate_avx512(mix, seconds);
#endif
    (void)isa;
    (void)mix;
    (void)seconds;
    return -1.0;
}

/* ------------------------------------------------------------------ threaded search */

typedef struct {
    _Alignas(64) _Atomic uint64_t trials; /* written by its own thread only */
    char pad[64 - sizeof(uint64_t)];
} bm_counter;

typedef struct {
    bm_job *job;
    int index;
} bm_worker;

struct bm_job {
    bm_consts c;
    bm_scan_fn scan;
    uint64_t first, span;       /* nonces first .. first + span */
    uint64_t nchunks;           /* span / CHUNK + 1 */
    _Atomic uint64_t next_chunk;
    _Atomic uint64_t best;      /* offset from first of the smallest solution; UINT64_MAX: none */
    _Atomic int stop;
    int found;                  /* under mu */
    bm_hit hit;                 /* under mu */
    int nthreads, started, running, joined;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    bm_worker *workers;
    bm_counter *counters;
};

static void record_hit(bm_job *j, const bm_hit *h) {
    uint64_t off = h->nonce - j->first;
    pthread_mutex_lock(&j->mu);
    if (!j->found || off < atomic_load(&j->best)) {
        j->found = 1;
        j->hit = *h;
        atomic_store(&j->best, off);
    }
    pthread_mutex_unlock(&j->mu);
}

static void *worker_main(void *arg) {
    bm_worker *w = (bm_worker *)arg;
    bm_job *j = w->job;
    bm_counter *ctr = &j->counters[w->index];
    uint64_t done = 0;
    for (;;) {
        if (atomic_load_explicit(&j->stop, memory_order_relaxed)) break;
        uint64_t k = atomic_fetch_add(&j->next_chunk, 1);
        if (k >= j->nchunks) break;
        uint64_t off = k * CHUNK; /* <= span, no overflow */
        uint64_t end = j->span - off < CHUNK - 1 ? j->span : off + CHUNK - 1; /* inclusive */
        if (off > atomic_load_explicit(&j->best, memory_order_relaxed)) break;
        for (;;) {
            if (atomic_load_explicit(&j->stop, memory_order_relaxed) ||
                off > atomic_load_explicit(&j->best, memory_order_relaxed))
                goto out;
            uint64_t n = end - off < SUB - 1 ? end - off + 1 : SUB;
            bm_hit h;
            int f = j->scan(&j->c, j->first + off, n, &h);
            done += f ? (h.nonce - (j->first + off) + 1) : n;
            atomic_store_explicit(&ctr->trials, done, memory_order_relaxed);
            if (f) {
                record_hit(j, &h);
                break;
            }
            if (end - off < n) break; /* chunk finished */
            off += n;
        }
    }
out:
    pthread_mutex_lock(&j->mu);
    j->running--;
    if (j->running == 0) pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

bm_job *bm_job_new(int isa, const uint8_t initial_hash[64], uint64_t target, uint64_t first,
                   uint64_t last, int nthreads) {
    if (!isa_ok(isa) || nthreads < 1 || last < first) return NULL;
    bm_job *j = (bm_job *)calloc(1, sizeof *j);
    if (!j) return NULL;
    bm_consts_init(&j->c, initial_hash, target);
    j->scan = IMPLS[isa].scan;
    j->first = first;
    j->span = last - first;
    j->nchunks = j->span / CHUNK + 1;
    atomic_init(&j->next_chunk, 0);
    atomic_init(&j->best, UINT64_MAX);
    atomic_init(&j->stop, 0);
    j->nthreads = nthreads;
    j->threads = (pthread_t *)calloc((size_t)nthreads, sizeof *j->threads);
    j->workers = (bm_worker *)calloc((size_t)nthreads, sizeof *j->workers);
    void *mem = NULL;
    if (posix_memalign(&mem, 64, (size_t)nthreads * sizeof(bm_counter)) == 0) {
        memset(mem, 0, (size_t)nthreads * sizeof(bm_counter));
        j->counters = (bm_counter *)mem;
    }
    if (!j->threads || !j->workers || !j->counters) {
        free(j->threads);
        free(j->workers);
        free(j->counters);
        free(j);
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&j->mu, NULL);
    return j;
}

int bm_job_start(bm_job *j) {
    if (j->started) return j->started;
    /* Workers block every signal: the interpreter's handlers belong to its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->nthreads; i++) {
        j->workers[i].job = j;
        j->workers[i].index = i;
        if (pthread_create(&j->threads[i], NULL, worker_main, &j->workers[i]) != 0) break;
        j->started++;
        j->running++;
    }
    pthread_mutex_unlock(&j->mu);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (j->started == 0) j->joined = 1;
    return j->started;
}

int bm_job_wait(bm_job *j, unsigned timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (j->running > 0) {
        if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT) break;
    }
    int finished = j->running == 0;
    pthread_mutex_unlock(&j->mu);
    return finished;
}

void bm_job_cancel(bm_job *j) { atomic_store(&j->stop, 1); }

void bm_job_join(bm_job *j) {
    if (j->joined) return;
    for (int i = 0; i < j->started; i++) pthread_join(j->threads[i], NULL);
    j->joined = 1;
}

uint64_t bm_job_trials(const bm_job *j) {
    uint64_t s = 0;
    for (int i = 0; i < j->nthreads; i++)
        s += atomic_load_explicit(&j->counters[i].trials, memory_order_relaxed);
    return s;
}

int bm_job_result(bm_job *j, bm_hit *hit) {
    pthread_mutex_lock(&j->mu);
    int f = j->found;
    if (f) *hit = j->hit;
    pthread_mutex_unlock(&j->mu);
    return f;
}

void bm_job_free(bm_job *j) {
    if (!j) return;
    bm_job_cancel(j);
    bm_job_join(j);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->threads);
    free(j->workers);
    free(j->counters);
    free(j);
}
