/*
 * Bitmessage proof of work on OpenCL: trial = be64(SHA512(SHA512(be64(nonce) || initial_hash))[0:8]).
 *
 * Both SHA-512 messages fit one padded 1024-bit block each, so a trial is exactly two compressions.
 * Everything that does not depend on the nonce is computed once by the host (bmnode/pow/opencl.py,
 * precompute_args) and passed as scalar kernel arguments (they live in the constant bank on GPUs);
 * padding words and round constants are literals, so the compiler folds them. Rounds are fully
 * unrolled by macros over eight rotating state names and a 16-word rolling message schedule, so no
 * private array exists that could spill to memory. Only word 0 of the second digest is used; the
 * compiler drops the rest of the last round as dead code.
 *
 * BM_ROT picks the 64-bit rotate: 0 the OpenCL builtin rotate(), 1 two 64-bit shifts, 2 NVIDIA PTX
 * funnel shifts on 32-bit halves (inline asm, NVIDIA only), 3 funnel shifts on 32-bit halves in
 * plain OpenCL C. BM_ADD (bit mask) moves 64-bit additions of the rounds (1) and of the message
 * schedule (2) onto the multiply-add pipe: x + y is written as lo(x) * one + y, hi(x) * one + ...
 * with `one` (= 1) a kernel argument the compiler cannot fold, so NVIDIA GPUs issue them as IMADs
 * beside the shifts and logic ops that saturate the integer ALU. The host checks each build
 * against hashlib before using it.
 */

#ifndef BM_ROT
#define BM_ROT 0
#endif

#if BM_ROT == 0
#define ROTR(x, n) rotate((x), (ulong)(64 - (n)))
#elif BM_ROT == 1
#define ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#elif BM_ROT == 2
/* shf.r.wrap.b32 d, lo, hi, s: low 32 bits of (hi:lo) >> s */
#define BM_SHF(d, lo, hi, s) asm("shf.r.wrap.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(lo), "r"(hi), "r"(s))
#define ROTR(x, n) bm_rotr_ptx((x), (n))
ulong bm_rotr_ptx(const ulong x, const uint n)
{
    const uint2 v = as_uint2(x);
    uint lo, hi;
    if (n < 32) {
        BM_SHF(lo, v.s0, v.s1, n);
        BM_SHF(hi, v.s1, v.s0, n);
    } else {
        BM_SHF(lo, v.s1, v.s0, n - 32);
        BM_SHF(hi, v.s0, v.s1, n - 32);
    }
    return as_ulong((uint2)(lo, hi));
}
#else
/* rotate right by n (n != 32) on the two 32-bit halves; n is a literal, the branch folds away */
#define ROTR(x, n) bm_rotr_halves((x), (n))
ulong bm_rotr_halves(const ulong x, const uint n)
{
    const uint lo = as_uint2(x).s0, hi = as_uint2(x).s1, s = n & 31;
    if (n < 32)
        return as_ulong((uint2)((lo >> s) | (hi << (32 - s)), (hi >> s) | (lo << (32 - s))));
    return as_ulong((uint2)((hi >> s) | (lo << (32 - s)), (lo >> s) | (hi << (32 - s))));
}
#endif

#ifndef BM_ADD
#define BM_ADD 0
#endif

/* x + y through two multiply-adds; `one` is the kernel argument of that name (always 1) */
ulong bm_addm(const ulong x, const ulong y, const uint one)
{
    const ulong lo = (ulong)as_uint2(x).s0 * one + y;
    return as_ulong((uint2)(as_uint2(lo).s0, as_uint2(x).s1 * one + as_uint2(lo).s1));
}
#define ADDM(x, y) bm_addm((x), (y), bm_one)
#if BM_ADD & 1
#define ADDR(x, y) ADDM(x, y)
#else
#define ADDR(x, y) ((x) + (y))
#endif
#if BM_ADD & 2
#define ADDW(x, y) ADDM(x, y)
#else
#define ADDW(x, y) ((x) + (y))
#endif

#define BS0(x) (ROTR(x, 28) ^ ROTR(x, 34) ^ ROTR(x, 39))
#define BS1(x) (ROTR(x, 14) ^ ROTR(x, 18) ^ ROTR(x, 41))
#define SG0(x) (ROTR(x, 1) ^ ROTR(x, 8) ^ ((x) >> 7))
#define SG1(x) (ROTR(x, 19) ^ ROTR(x, 61) ^ ((x) >> 6))
/* sigma0 of a literal, folded by the compiler */
#define SG0C(x) ((((x) >> 1) | ((x) << 63)) ^ (((x) >> 8) | ((x) << 56)) ^ ((x) >> 7))
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

/* one round; afterwards h holds the new a and d the new e (the caller rotates the names) */
#define RND(a, b, c, d, e, f, g, h, kw) do { \
    const ulong t1_ = ADDR(ADDR(ADDR(h, BS1(e)), CH(e, f, g)), kw); \
    (d) = ADDR(d, t1_); \
    (h) = ADDR(ADDR(t1_, BS0(a)), MAJ(a, b, c)); \
} while (0)

/* round 0 of a block: the state is the IV, so plain additions let the compiler fold it */
#define RND0(a, b, c, d, e, f, g, h, kw) do { \
    const ulong t1_ = ((h) + BS1(e) + CH(e, f, g)) + (kw); \
    (d) = (d) + t1_; \
    (h) = t1_ + (BS0(a) + MAJ(a, b, c)); \
} while (0)

/* rounds 1..3 of block 1: h is still a constant IV word, already added into kw by the host */
#define RNDH(a, b, c, d, e, f, g, h, kw) do { \
    const ulong t1_ = ADDR(ADDR(BS1(e), CH(e, f, g)), kw); \
    (d) = ADDR(d, t1_); \
    (h) = ADDR(ADDR(t1_, BS0(a)), MAJ(a, b, c)); \
} while (0)

/* W[t] = sigma1(W[t-2]) + W[t-7] + sigma0(W[t-15]) + W[t-16], in place over W[t-16] */
#define WU(w16, w15, w7, w2) ((w16) = ADDW(ADDW(ADDW(w16, SG1(w2)), w7), SG0(w15)))

/* the nonce-independent values, in the order precompute_args() returns them */
#define BM_PRE_PARAMS \
    const ulong kh1, const ulong kh2, const ulong kh3, const ulong kw4, const ulong kw5, \
    const ulong kw6, const ulong kw7, const ulong kw8, const ulong c16, const ulong c17, \
    const ulong c18, const ulong c19, const ulong c20, const ulong c21, const ulong c22, \
    const ulong c23, const ulong c24, const ulong kc17, const ulong kc19, const ulong kc21, \
    const ulong c32, const ulong c34, const ulong c36

/* out = trial value of nonce n; uses the BM_PRE_PARAMS names */
#define BM_TRIAL(out, n) do {                                                                                 \
    ulong a = 0x6a09e667f3bcc908UL, b = 0xbb67ae8584caa73bUL, c = 0x3c6ef372fe94f82bUL, d = 0xa54ff53a5f1d36f1UL, e = 0x510e527fade682d1UL, f = 0x9b05688c2b3e6c1fUL, g = 0x1f83d9abfb41bd6bUL, h = 0x5be0cd19137e2179UL;\
    ulong w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12, w13, w14, w15;                               \
    /* block 1: W0 = nonce, W1..W8 = initial hash (folded into the pre-computed args),    */                  \
    /* W9 = 0x80 padding, W10..W14 = 0, W15 = 576 bits                                     */                 \
    RND0(a,b,c,d,e,f,g,h, 0x428a2f98d728ae22UL + (n));                                                        \
    RNDH(h,a,b,c,d,e,f,g, kh1);                                                                               \
    RNDH(g,h,a,b,c,d,e,f, kh2);                                                                               \
    RNDH(f,g,h,a,b,c,d,e, kh3);                                                                               \
    RND(e,f,g,h,a,b,c,d, kw4);                                                                                \
    RND(d,e,f,g,h,a,b,c, kw5);                                                                                \
    RND(c,d,e,f,g,h,a,b, kw6);                                                                                \
    RND(b,c,d,e,f,g,h,a, kw7);                                                                                \
    RND(a,b,c,d,e,f,g,h, kw8);                                                                                \
    RND(h,a,b,c,d,e,f,g, 0x12835b0145706fbeUL + 0x8000000000000000UL);                                        \
    RND(g,h,a,b,c,d,e,f, 0x243185be4ee4b28cUL);                                                               \
    RND(f,g,h,a,b,c,d,e, 0x550c7dc3d5ffb4e2UL);                                                               \
    RND(e,f,g,h,a,b,c,d, 0x72be5d74f27b896fUL);                                                               \
    RND(d,e,f,g,h,a,b,c, 0x80deb1fe3b1696b1UL);                                                               \
    RND(c,d,e,f,g,h,a,b, 0x9bdc06a725c71235UL);                                                               \
    RND(b,c,d,e,f,g,h,a, 0xc19bf174cf692694UL + 576UL);                                                       \
    w0 = (n) + c16;                                                                                           \
    RND(a,b,c,d,e,f,g,h, 0xe49b69c19ef14ad2UL + w0);                                                          \
    RND(h,a,b,c,d,e,f,g, kc17);                                                                               \
    w2 = SG1(w0) + c18;                                                                                       \
    RND(g,h,a,b,c,d,e,f, 0x0fc19dc68b8cd5b5UL + w2);                                                          \
    RND(f,g,h,a,b,c,d,e, kc19);                                                                               \
    w4 = SG1(w2) + c20;                                                                                       \
    RND(e,f,g,h,a,b,c,d, 0x2de92c6f592b0275UL + w4);                                                          \
    RND(d,e,f,g,h,a,b,c, kc21);                                                                               \
    w6 = SG1(w4) + c22;                                                                                       \
    RND(c,d,e,f,g,h,a,b, 0x5cb0a9dcbd41fbd4UL + w6);                                                          \
    w7 = w0 + c23;                                                                                            \
    RND(b,c,d,e,f,g,h,a, 0x76f988da831153b5UL + w7);                                                          \
    w8 = SG1(w6) + c24;                                                                                       \
    RND(a,b,c,d,e,f,g,h, 0x983e5152ee66dfabUL + w8);                                                          \
    w9 = SG1(w7) + w2 + 0x8000000000000000UL;                                                                 \
    RND(h,a,b,c,d,e,f,g, 0xa831c66d2db43210UL + w9);                                                          \
    w10 = SG1(w8) + c19;                                                                                      \
    RND(g,h,a,b,c,d,e,f, 0xb00327c898fb213fUL + w10);                                                         \
    w11 = SG1(w9) + w4;                                                                                       \
    RND(f,g,h,a,b,c,d,e, 0xbf597fc7beef0ee4UL + w11);                                                         \
    w12 = SG1(w10) + c21;                                                                                     \
    RND(e,f,g,h,a,b,c,d, 0xc6e00bf33da88fc2UL + w12);                                                         \
    w13 = SG1(w11) + w6;                                                                                      \
    RND(d,e,f,g,h,a,b,c, 0xd5a79147930aa725UL + w13);                                                         \
    w14 = SG1(w12) + w7 + SG0C(576UL);                                                                        \
    RND(c,d,e,f,g,h,a,b, 0x06ca6351e003826fUL + w14);                                                         \
    w15 = SG1(w13) + w8 + SG0(w0) + 576UL;                                                                    \
    RND(b,c,d,e,f,g,h,a, 0x142929670a0e6e70UL + w15);                                                         \
    w0 = SG1(w14) + w9 + c32 + w0;                                                                            \
    RND(a,b,c,d,e,f,g,h, 0x27b70a8546d22ffcUL + w0);                                                          \
    w1 = SG1(w15) + w10 + SG0(w2) + c17;                                                                      \
    RND(h,a,b,c,d,e,f,g, 0x2e1b21385c26c926UL + w1);                                                          \
    w2 = SG1(w0) + w11 + c34 + w2;                                                                            \
    RND(g,h,a,b,c,d,e,f, 0x4d2c6dfc5ac42aedUL + w2);                                                          \
    w3 = SG1(w1) + w12 + SG0(w4) + c19;                                                                       \
    RND(f,g,h,a,b,c,d,e, 0x53380d139d95b3dfUL + w3);                                                          \
    w4 = SG1(w2) + w13 + c36 + w4;                                                                            \
    RND(e,f,g,h,a,b,c,d, 0x650a73548baf63deUL + w4);                                                          \
    w5 = SG1(w3) + w14 + SG0(w6) + c21;                                                                       \
    RND(d,e,f,g,h,a,b,c, 0x766a0abb3c77b2a8UL + w5);                                                          \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x81c2c92e47edaee6UL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x92722c851482353bUL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0xa2bfe8a14cf10364UL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0xa81a664bbc423001UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0xc24b8b70d0f89791UL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0xc76c51a30654be30UL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0xd192e819d6ef5218UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0xd69906245565a910UL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0xf40e35855771202aUL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0x106aa07032bbd1b8UL + w15);                                   \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0x19a4c116b8d2d0c8UL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0x1e376c085141ab53UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0x2748774cdf8eeb99UL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0x34b0bcb5e19b48a8UL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x391c0cb3c5c95a63UL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x4ed8aa4ae3418acbUL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x5b9cca4f7763e373UL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x682e6ff3d6b2b8a3UL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0x748f82ee5defb2fcUL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0x78a5636f43172f60UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0x84c87814a1f0ab72UL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0x8cc702081a6439ecUL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0x90befffa23631e28UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0xa4506cebde82bde9UL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0xbef9a3f7b2c67915UL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0xc67178f2e372532bUL + w15);                                   \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0xca273eceea26619cUL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0xd186b8c721c0c207UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0xeada7dd6cde0eb1eUL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0xf57d4f7fee6ed178UL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x06f067aa72176fbaUL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x0a637dc5a2c898a6UL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x113f9804bef90daeUL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x1b710b35131c471bUL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0x28db77f523047d84UL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0x32caab7b40c72493UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0x3c9ebe0a15c9bebcUL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0x431d67c49c100d4cUL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0x4cc5d4becb3e42b6UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0x597f299cfc657e2aUL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0x5fcb6fab3ad6faecUL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0x6c44198c4a475817UL + w15);                                   \
    /* block 2: W0..W7 = first digest, W8 = 0x80 padding, W9..W14 = 0, W15 = 512 bits */                      \
    w0 = 0x6a09e667f3bcc908UL + a;                                                                            \
    w1 = 0xbb67ae8584caa73bUL + b;                                                                            \
    w2 = 0x3c6ef372fe94f82bUL + c;                                                                            \
    w3 = 0xa54ff53a5f1d36f1UL + d;                                                                            \
    w4 = 0x510e527fade682d1UL + e;                                                                            \
    w5 = 0x9b05688c2b3e6c1fUL + f;                                                                            \
    w6 = 0x1f83d9abfb41bd6bUL + g;                                                                            \
    w7 = 0x5be0cd19137e2179UL + h;                                                                            \
    w8 = 0x8000000000000000UL; w9 = 0; w10 = 0; w11 = 0; w12 = 0; w13 = 0; w14 = 0; w15 = 512UL;              \
    a = 0x6a09e667f3bcc908UL;                                                                                 \
    b = 0xbb67ae8584caa73bUL;                                                                                 \
    c = 0x3c6ef372fe94f82bUL;                                                                                 \
    d = 0xa54ff53a5f1d36f1UL;                                                                                 \
    e = 0x510e527fade682d1UL;                                                                                 \
    f = 0x9b05688c2b3e6c1fUL;                                                                                 \
    g = 0x1f83d9abfb41bd6bUL;                                                                                 \
    h = 0x5be0cd19137e2179UL;                                                                                 \
    RND0(a,b,c,d,e,f,g,h, 0x428a2f98d728ae22UL + w0);                                                         \
    RND(h,a,b,c,d,e,f,g, 0x7137449123ef65cdUL + w1);                                                          \
    RND(g,h,a,b,c,d,e,f, 0xb5c0fbcfec4d3b2fUL + w2);                                                          \
    RND(f,g,h,a,b,c,d,e, 0xe9b5dba58189dbbcUL + w3);                                                          \
    RND(e,f,g,h,a,b,c,d, 0x3956c25bf348b538UL + w4);                                                          \
    RND(d,e,f,g,h,a,b,c, 0x59f111f1b605d019UL + w5);                                                          \
    RND(c,d,e,f,g,h,a,b, 0x923f82a4af194f9bUL + w6);                                                          \
    RND(b,c,d,e,f,g,h,a, 0xab1c5ed5da6d8118UL + w7);                                                          \
    RND(a,b,c,d,e,f,g,h, 0xd807aa98a3030242UL + w8);                                                          \
    RND(h,a,b,c,d,e,f,g, 0x12835b0145706fbeUL + w9);                                                          \
    RND(g,h,a,b,c,d,e,f, 0x243185be4ee4b28cUL + w10);                                                         \
    RND(f,g,h,a,b,c,d,e, 0x550c7dc3d5ffb4e2UL + w11);                                                         \
    RND(e,f,g,h,a,b,c,d, 0x72be5d74f27b896fUL + w12);                                                         \
    RND(d,e,f,g,h,a,b,c, 0x80deb1fe3b1696b1UL + w13);                                                         \
    RND(c,d,e,f,g,h,a,b, 0x9bdc06a725c71235UL + w14);                                                         \
    RND(b,c,d,e,f,g,h,a, 0xc19bf174cf692694UL + w15);                                                         \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0xe49b69c19ef14ad2UL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0xefbe4786384f25e3UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0x0fc19dc68b8cd5b5UL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0x240ca1cc77ac9c65UL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x2de92c6f592b0275UL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x4a7484aa6ea6e483UL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x5cb0a9dcbd41fbd4UL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x76f988da831153b5UL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0x983e5152ee66dfabUL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0xa831c66d2db43210UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0xb00327c898fb213fUL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0xbf597fc7beef0ee4UL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0xc6e00bf33da88fc2UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0xd5a79147930aa725UL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0x06ca6351e003826fUL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0x142929670a0e6e70UL + w15);                                   \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0x27b70a8546d22ffcUL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0x2e1b21385c26c926UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0x4d2c6dfc5ac42aedUL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0x53380d139d95b3dfUL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x650a73548baf63deUL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x766a0abb3c77b2a8UL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x81c2c92e47edaee6UL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x92722c851482353bUL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0xa2bfe8a14cf10364UL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0xa81a664bbc423001UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0xc24b8b70d0f89791UL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0xc76c51a30654be30UL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0xd192e819d6ef5218UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0xd69906245565a910UL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0xf40e35855771202aUL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0x106aa07032bbd1b8UL + w15);                                   \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0x19a4c116b8d2d0c8UL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0x1e376c085141ab53UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0x2748774cdf8eeb99UL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0x34b0bcb5e19b48a8UL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x391c0cb3c5c95a63UL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x4ed8aa4ae3418acbUL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x5b9cca4f7763e373UL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x682e6ff3d6b2b8a3UL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0x748f82ee5defb2fcUL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0x78a5636f43172f60UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0x84c87814a1f0ab72UL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0x8cc702081a6439ecUL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0x90befffa23631e28UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0xa4506cebde82bde9UL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0xbef9a3f7b2c67915UL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0xc67178f2e372532bUL + w15);                                   \
    WU(w0, w1, w9, w14); RND(a,b,c,d,e,f,g,h, 0xca273eceea26619cUL + w0);                                     \
    WU(w1, w2, w10, w15); RND(h,a,b,c,d,e,f,g, 0xd186b8c721c0c207UL + w1);                                    \
    WU(w2, w3, w11, w0); RND(g,h,a,b,c,d,e,f, 0xeada7dd6cde0eb1eUL + w2);                                     \
    WU(w3, w4, w12, w1); RND(f,g,h,a,b,c,d,e, 0xf57d4f7fee6ed178UL + w3);                                     \
    WU(w4, w5, w13, w2); RND(e,f,g,h,a,b,c,d, 0x06f067aa72176fbaUL + w4);                                     \
    WU(w5, w6, w14, w3); RND(d,e,f,g,h,a,b,c, 0x0a637dc5a2c898a6UL + w5);                                     \
    WU(w6, w7, w15, w4); RND(c,d,e,f,g,h,a,b, 0x113f9804bef90daeUL + w6);                                     \
    WU(w7, w8, w0, w5); RND(b,c,d,e,f,g,h,a, 0x1b710b35131c471bUL + w7);                                      \
    WU(w8, w9, w1, w6); RND(a,b,c,d,e,f,g,h, 0x28db77f523047d84UL + w8);                                      \
    WU(w9, w10, w2, w7); RND(h,a,b,c,d,e,f,g, 0x32caab7b40c72493UL + w9);                                     \
    WU(w10, w11, w3, w8); RND(g,h,a,b,c,d,e,f, 0x3c9ebe0a15c9bebcUL + w10);                                   \
    WU(w11, w12, w4, w9); RND(f,g,h,a,b,c,d,e, 0x431d67c49c100d4cUL + w11);                                   \
    WU(w12, w13, w5, w10); RND(e,f,g,h,a,b,c,d, 0x4cc5d4becb3e42b6UL + w12);                                  \
    WU(w13, w14, w6, w11); RND(d,e,f,g,h,a,b,c, 0x597f299cfc657e2aUL + w13);                                  \
    WU(w14, w15, w7, w12); RND(c,d,e,f,g,h,a,b, 0x5fcb6fab3ad6faecUL + w14);                                  \
    WU(w15, w0, w8, w13); RND(b,c,d,e,f,g,h,a, 0x6c44198c4a475817UL + w15);                                   \
    (out) = 0x6a09e667f3bcc908UL + a;                                                                         \
} while (0)                                                                                                   

/*
 * Search `limit` nonces from `base`. Work item `gid` tries offsets gid, gid + G, gid + 2G, ...
 * (G = global size, at most `npw` of them), so every item walks upwards and the smallest offset
 * that meets the target is kept with atomic_min in best[slot]: the host gets the smallest solution
 * of the launch. An item stops once its next offset passes best[slot] (read before each hash and
 * used after it, so the load's latency hides behind the hash); a launch whose `seq` is later than
 * one that already found a nonce (stop[0]) returns at once.
 */
__kernel void bm_search(BM_PRE_PARAMS, const ulong base, const ulong target, const uint limit,
                        const uint npw, const uint seq, const uint slot,
                        volatile __global uint *best, volatile __global uint *stop, const uint one)
{
    const uint bm_one = one;
    if (stop[0] < seq)
        return;
    const uint gsz = (uint)get_global_size(0);
    uint off = (uint)get_global_id(0);
    for (uint i = 0; i < npw && off < limit; i++, off += gsz) {
        const uint seen = best[slot];
        ulong trial;
        BM_TRIAL(trial, base + (ulong)off);
        if (trial <= target) {
            atomic_min(&best[slot], off);
            atomic_min(&stop[0], seq);
            break;
        }
        if (seen <= off)
            break;
    }
}

/* Trial values of arbitrary nonces, for self-tests. */
__kernel void bm_trials(BM_PRE_PARAMS, __global const ulong *nonces, __global ulong *out, const uint count,
                        const uint one)
{
    const uint bm_one = one;
    const uint gid = (uint)get_global_id(0);
    if (gid < count) {
        ulong trial;
        BM_TRIAL(trial, nonces[gid]);
        out[gid] = trial;
    }
}
