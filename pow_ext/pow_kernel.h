/* The double-SHA-512 trial kernel, written once over a small vector vocabulary and compiled
 * once per ISA: kernel_scalar.c, kernel_avx2.c and kernel_avx512.c each define a base vector
 * (see pow_vec.h, which builds V from it, one or two base vectors at a time) and include this.
 *
 * Vocabulary used here:
 *   V, LANES               a vector of LANES 64-bit words
 *   V_SET1(x)              broadcast
 *   V_ADD(a, b)            lane-wise add mod 2^64
 *   V_ROR(x, n), V_SHR(x, n)
 *   V_XOR3(a, b, c), V_CH(e, f, g), V_MAJ(a, b, c)
 *   V_LOADU(p), V_STOREU(p, v)
 *   V_IOTA()               lanes 0, 1, ..., LANES-1
 *   V_LE_MASK(a, b)        bit i set iff a[i] <= b[i] (unsigned)
 *   BM_FN(name)            name##_<isa>
 *
 * Block 1 is be64(nonce) || initial_hash || padding: W0 = nonce, W1..W8 = initial hash,
 * W9 = 2^63, W10..W14 = 0, W15 = 576 (bits). Block 2 is the 64-byte digest: W0..W7 = digest,
 * W8 = 2^63, W9..W14 = 0, W15 = 512. Both start from the IV, so round 0 reduces to two adds;
 * rounds 1..3 still see constant h (and d), folded into the per-round addend; the constant
 * message words, and the constant parts of the first schedule words, come precomputed
 * (bm_consts) or are compile-time constants. Of the final digest only word 0 is produced;
 * the compiler drops the work nothing depends on (the last e update, the other output words).
 */

#include "pow_core.h"
#include "sha512_defs.h"

#if defined(__GNUC__) || defined(__clang__)
#define BM_INLINE static inline __attribute__((always_inline))
#else
#define BM_INLINE static inline
#endif

#define S0(x) V_XOR3(V_ROR(x, 28), V_ROR(x, 34), V_ROR(x, 39))
#define S1(x) V_XOR3(V_ROR(x, 14), V_ROR(x, 18), V_ROR(x, 41))
#define s0(x) V_XOR3(V_ROR(x, 1), V_ROR(x, 8), V_SHR(x, 7))
#define s1(x) V_XOR3(V_ROR(x, 19), V_ROR(x, 61), V_SHR(x, 6))
#define C(x) V_SET1(x)
#define A(x, y) V_ADD(x, y)

/* One round; the caller rotates the names. New e lands in d, new a in h. */
#define RND(a, b, c, d, e, f, g, h, kw)                                  \
    do {                                                                 \
        V t1_ = A(A(h, kw), A(S1(e), V_CH(e, f, g)));                    \
        V t2_ = A(S0(a), V_MAJ(a, b, c));                                \
        d = A(d, t1_);                                                   \
        h = A(t1_, t2_);                                                 \
    } while (0)
/* Same, for rounds whose h is a constant already folded into kw. */
#define RNDK(a, b, c, d, e, f, g, h, kw)                                 \
    do {                                                                 \
        V t1_ = A(kw, A(S1(e), V_CH(e, f, g)));                          \
        V t2_ = A(S0(a), V_MAJ(a, b, c));                                \
        d = A(d, t1_);                                                   \
        h = A(t1_, t2_);                                                 \
    } while (0)

/* Eight rounds t0..t0+7 with the names rotated back to the start. KW(t) gives K[t] + W[t]. */
#define R8(t0, KW)                                \
    RND(a, b, c, d, e, f, g, h, KW((t0) + 0));     \
    RND(h, a, b, c, d, e, f, g, KW((t0) + 1));     \
    RND(g, h, a, b, c, d, e, f, KW((t0) + 2));     \
    RND(f, g, h, a, b, c, d, e, KW((t0) + 3));     \
    RND(e, f, g, h, a, b, c, d, KW((t0) + 4));     \
    RND(d, e, f, g, h, a, b, c, KW((t0) + 5));     \
    RND(c, d, e, f, g, h, a, b, KW((t0) + 6));     \
    RND(b, c, d, e, f, g, h, a, KW((t0) + 7))

/* The generic schedule word t (t >= 16) in the rolling window W[16], and its round addend. */
#define WGEN(t) (W[(t) & 15] = A(A(s1(W[((t) - 2) & 15]), W[((t) - 7) & 15]), \
                                 A(s0(W[((t) - 15) & 15]), W[(t) & 15])))
#define KWGEN(t) A(WGEN(t), C(BM_K512[t]))
/* Addend from an already computed window word. */
#define KWW(t) A(W[(t) & 15], C(BM_K512[t]))

/* Rounds 0..3 of a block that starts from the IV: round 0 is two adds of W0; in rounds 1..3,
 * b, c, d, f, g, h are still IV words. kw1..kw3 already include the constant h. */
#define FIRST4(w0, kw1, kw2, kw3)                                          \
    do {                                                                   \
        h = A(w0, C(k->a0));                                               \
        d = A(w0, C(k->e0));                                               \
        a = C(BM_IV0); b = C(BM_IV1); c = C(BM_IV2);                       \
        e = C(BM_IV4); f = C(BM_IV5);                                      \
        RNDK(h, a, b, c, d, e, f, g, kw1);                                 \
        RNDK(g, h, a, b, c, d, e, f, kw2);                                 \
        RNDK(f, g, h, a, b, c, d, e, kw3);                                 \
    } while (0)

#define B1KW(t) C(k->kw[t])

/* Trial values of LANES nonces: SHA512(SHA512(be64(n) || ih))[0:8] as big-endian words. */
BM_INLINE V BM_FN(trial_vec)(const bm_consts *k, V n) {
    V a, b, c, d, e, f, g, h;
    V W[16];

    /* ---- block 1 ---- */
    FIRST4(n, B1KW(1), B1KW(2), B1KW(3));
    RND(e, f, g, h, a, b, c, d, B1KW(4));
    RND(d, e, f, g, h, a, b, c, B1KW(5));
    RND(c, d, e, f, g, h, a, b, B1KW(6));
    RND(b, c, d, e, f, g, h, a, B1KW(7));
    R8(8, B1KW);
    /* Schedule words 16..37: only W16 and what follows from it vary with the nonce. */
    W[0] = A(n, C(k->p16));                                               /* 16 */
    RND(a, b, c, d, e, f, g, h, KWW(16));
    RND(h, a, b, c, d, e, f, g, C(k->kw17));                               /* 17: constant */
    W[2] = A(s1(W[0]), C(k->p18));                                        /* 18 */
    RND(g, h, a, b, c, d, e, f, KWW(18));
    RND(f, g, h, a, b, c, d, e, C(k->kw19));                               /* 19: constant */
    W[4] = A(s1(W[2]), C(k->p20));                                        /* 20 */
    RND(e, f, g, h, a, b, c, d, KWW(20));
    RND(d, e, f, g, h, a, b, c, C(k->kw21));                               /* 21: constant */
    W[6] = A(s1(W[4]), C(k->p22));                                        /* 22 */
    RND(c, d, e, f, g, h, a, b, KWW(22));
    W[7] = A(W[0], C(k->p23));                                            /* 23 */
    RND(b, c, d, e, f, g, h, a, KWW(23));
    W[8] = A(s1(W[6]), C(k->p24));                                        /* 24 */
    RND(a, b, c, d, e, f, g, h, KWW(24));
    W[9] = A(A(s1(W[7]), W[2]), C(UINT64_C(0x8000000000000000)));        /* 25 */
    RND(h, a, b, c, d, e, f, g, KWW(25));
    W[10] = A(s1(W[8]), C(k->c19));                                       /* 26 */
    RND(g, h, a, b, c, d, e, f, KWW(26));
    W[11] = A(s1(W[9]), W[4]);                                            /* 27 */
    RND(f, g, h, a, b, c, d, e, KWW(27));
    W[12] = A(s1(W[10]), C(k->c21));                                      /* 28 */
    RND(e, f, g, h, a, b, c, d, KWW(28));
    W[13] = A(s1(W[11]), W[6]);                                           /* 29 */
    RND(d, e, f, g, h, a, b, c, KWW(29));
    W[14] = A(A(s1(W[12]), W[7]), C(BM_SSIG0(UINT64_C(576))));            /* 30 */
    RND(c, d, e, f, g, h, a, b, KWW(30));
    W[15] = A(A(s1(W[13]), W[8]), A(s0(W[0]), C(UINT64_C(576))));         /* 31 */
    RND(b, c, d, e, f, g, h, a, KWW(31));
    W[0] = A(A(s1(W[14]), W[9]), A(C(k->s0_17), W[0]));                   /* 32 */
    RND(a, b, c, d, e, f, g, h, KWW(32));
    W[1] = A(A(s1(W[15]), W[10]), A(s0(W[2]), C(k->c17)));                /* 33 */
    RND(h, a, b, c, d, e, f, g, KWW(33));
    W[2] = A(A(s1(W[0]), W[11]), A(C(k->s0_19), W[2]));                   /* 34 */
    RND(g, h, a, b, c, d, e, f, KWW(34));
    W[3] = A(A(s1(W[1]), W[12]), A(s0(W[4]), C(k->c19)));                 /* 35 */
    RND(f, g, h, a, b, c, d, e, KWW(35));
    W[4] = A(A(s1(W[2]), W[13]), A(C(k->s0_21), W[4]));                   /* 36 */
    RND(e, f, g, h, a, b, c, d, KWW(36));
    W[5] = A(A(s1(W[3]), W[14]), A(s0(W[6]), C(k->c21)));                 /* 37 */
    RND(d, e, f, g, h, a, b, c, KWW(37));
    RND(c, d, e, f, g, h, a, b, KWGEN(38));
    RND(b, c, d, e, f, g, h, a, KWGEN(39));
    R8(40, KWGEN);
    R8(48, KWGEN);
    R8(56, KWGEN);
    R8(64, KWGEN);
    R8(72, KWGEN);

    /* ---- block 2: the 64-byte digest of block 1 ---- */
    W[0] = A(a, C(BM_IV0));
    W[1] = A(b, C(BM_IV1));
    W[2] = A(c, C(BM_IV2));
    W[3] = A(d, C(BM_IV3));
    W[4] = A(e, C(BM_IV4));
    W[5] = A(f, C(BM_IV5));
    W[6] = A(g, C(BM_IV6));
    W[7] = A(h, C(BM_IV7));
    FIRST4(W[0], A(W[1], C(BM_IV6 + BM_K512[1])), A(W[2], C(BM_IV5 + BM_K512[2])),
           A(W[3], C(BM_IV4 + BM_K512[3])));
    RND(e, f, g, h, a, b, c, d, KWW(4));
    RND(d, e, f, g, h, a, b, c, KWW(5));
    RND(c, d, e, f, g, h, a, b, KWW(6));
    RND(b, c, d, e, f, g, h, a, KWW(7));
    RND(a, b, c, d, e, f, g, h, C(BM_K512[8] + UINT64_C(0x8000000000000000)));
    RND(h, a, b, c, d, e, f, g, C(BM_K512[9]));
    RND(g, h, a, b, c, d, e, f, C(BM_K512[10]));
    RND(f, g, h, a, b, c, d, e, C(BM_K512[11]));
    RND(e, f, g, h, a, b, c, d, C(BM_K512[12]));
    RND(d, e, f, g, h, a, b, c, C(BM_K512[13]));
    RND(c, d, e, f, g, h, a, b, C(BM_K512[14]));
    RND(b, c, d, e, f, g, h, a, C(BM_K512[15] + UINT64_C(512)));
    W[0] = A(s0(W[1]), W[0]);                                                         /* 16 */
    RND(a, b, c, d, e, f, g, h, KWW(16));
    W[1] = A(A(s0(W[2]), W[1]), C(BM_SSIG1(UINT64_C(512))));                          /* 17 */
    RND(h, a, b, c, d, e, f, g, KWW(17));
    W[2] = A(A(s1(W[0]), s0(W[3])), W[2]);                                            /* 18 */
    RND(g, h, a, b, c, d, e, f, KWW(18));
    W[3] = A(A(s1(W[1]), s0(W[4])), W[3]);                                            /* 19 */
    RND(f, g, h, a, b, c, d, e, KWW(19));
    W[4] = A(A(s1(W[2]), s0(W[5])), W[4]);                                            /* 20 */
    RND(e, f, g, h, a, b, c, d, KWW(20));
    W[5] = A(A(s1(W[3]), s0(W[6])), W[5]);                                            /* 21 */
    RND(d, e, f, g, h, a, b, c, KWW(21));
    W[6] = A(A(s1(W[4]), s0(W[7])), A(W[6], C(UINT64_C(512))));                      /* 22 */
    RND(c, d, e, f, g, h, a, b, KWW(22));
    W[7] = A(A(s1(W[5]), W[0]), A(W[7], C(BM_SSIG0(UINT64_C(0x8000000000000000))))); /* 23 */
    RND(b, c, d, e, f, g, h, a, KWW(23));
    W[8] = A(A(s1(W[6]), W[1]), C(UINT64_C(0x8000000000000000)));                    /* 24 */
    RND(a, b, c, d, e, f, g, h, KWW(24));
    W[9] = A(s1(W[7]), W[2]);                                                         /* 25 */
    RND(h, a, b, c, d, e, f, g, KWW(25));
    W[10] = A(s1(W[8]), W[3]);                                                        /* 26 */
    RND(g, h, a, b, c, d, e, f, KWW(26));
    W[11] = A(s1(W[9]), W[4]);                                                        /* 27 */
    RND(f, g, h, a, b, c, d, e, KWW(27));
    W[12] = A(s1(W[10]), W[5]);                                                       /* 28 */
    RND(e, f, g, h, a, b, c, d, KWW(28));
    W[13] = A(s1(W[11]), W[6]);                                                       /* 29 */
    RND(d, e, f, g, h, a, b, c, KWW(29));
    W[14] = A(A(s1(W[12]), W[7]), C(BM_SSIG0(UINT64_C(512))));                       /* 30 */
    RND(c, d, e, f, g, h, a, b, KWW(30));
    W[15] = A(A(s1(W[13]), W[8]), A(s0(W[0]), C(UINT64_C(512))));                    /* 31 */
    RND(b, c, d, e, f, g, h, a, KWW(31));
    R8(32, KWGEN);
    R8(40, KWGEN);
    R8(48, KWGEN);
    R8(56, KWGEN);
    R8(64, KWGEN);
    R8(72, KWGEN);
    /* Only output word 0 is the trial value. */
    return A(a, C(BM_IV0));
}

int BM_FN(bm_scan)(const bm_consts *k, uint64_t nonce0, uint64_t n, bm_hit *hit) {
    const V iota = V_IOTA();
    const V target = C(k->target);
    for (uint64_t i = 0; i < n; i += LANES) {
        V tv = BM_FN(trial_vec)(k, A(C(nonce0 + i), iota));
        unsigned m = V_LE_MASK(tv, target);
        if (m) {
            uint64_t left = n - i;
            if (left < LANES) m &= (1u << left) - 1u; /* lanes past the range do not count */
            if (m) {
                uint64_t out[LANES];
                unsigned lane = (unsigned)__builtin_ctz(m);
                V_STOREU(out, tv);
                hit->nonce = nonce0 + i + lane;
                hit->trial = out[lane];
                return 1;
            }
        }
    }
    return 0;
}

void BM_FN(bm_trials)(const bm_consts *k, const uint64_t *nonces, size_t n, uint64_t *out) {
    uint64_t buf[LANES];
    for (size_t i = 0; i < n; i += LANES) {
        size_t m = n - i < LANES ? n - i : LANES;
        for (size_t j = 0; j < LANES; j++) buf[j] = j < m ? nonces[i + j] : 0;
        V tv = BM_FN(trial_vec)(k, V_LOADU(buf));
        V_STOREU(buf, tv);
        for (size_t j = 0; j < m; j++) out[i + j] = buf[j];
    }
}
