/* fedrot CPU kernels: cache-blocked FWHT, fused RHT stacks, EDEN/DRIVE hot loops,
 * bit packing. Compiled at first use by fedrot/_kernels.py (cc -O3, no -ffast-math)
 * and loaded with ctypes; every entry point has a pure-torch twin that is the
 * reference.
 *
 * Bit-compatibility contract: every function performs exactly the IEEE-754 operations
 * of the torch reference path, in the same order per element. The FWHT runs the
 * butterflies (a, b) -> (a + b, a - b) of stage h = 1, 2, 4, ... in that order for
 * every element; blocking only changes WHEN an element's butterflies run, never which
 * ones or in which order, so results are bit-identical. Sign flips are sign-bit XORs
 * (== multiplication by -1.0, also for 0.0). The 1/sqrt(D) scale is one float
 * multiplication after the last stage, as in torch. No reductions are done here:
 * norms and dot products stay in torch so their summation order is torch's.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef int64_t i64;
typedef uint64_t u64;

#define GAMMA 0x9E3779B97F4A7C15ULL
#define M1 0xBF58476D1CE4E5B9ULL
#define M2 0x94D049BB133111EBULL

static inline u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * M1;
    z = (z ^ (z >> 27)) * M2;
    return z ^ (z >> 31);
}

/* Word i of the stream of `key` (see fedrot/seeds.py). */
static inline u64 word(u64 key, i64 i) { return mix64(key + (u64)(i + 1) * GAMMA); }

/* ------------------------------------------------------------------ threading */
typedef void (*range_fn)(void *ctx, i64 lo, i64 hi);
typedef struct { range_fn fn; void *ctx; i64 lo, hi; } job_t;

static void *run_job(void *p) {
    job_t *j = (job_t *)p;
    j->fn(j->ctx, j->lo, j->hi);
    return 0;
}

/* Split [0, n) into `threads` contiguous ranges; the caller's thread runs the first. */
static void parallel_for(range_fn fn, void *ctx, i64 n, int threads) {
    if (threads > n) threads = (int)n;
    if (threads <= 1) { fn(ctx, 0, n); return; }
    if (threads > 64) threads = 64;
    pthread_t tid[64];
    job_t jobs[64];
    int started[64];
    for (int t = 0; t < threads; t++) {
        jobs[t].fn = fn; jobs[t].ctx = ctx;
        jobs[t].lo = n * t / threads; jobs[t].hi = n * (t + 1) / threads;
        started[t] = 0;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], 0, run_job, &jobs[t]) == 0;
    fn(ctx, jobs[0].lo, jobs[0].hi);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], 0);
        else fn(ctx, jobs[t].lo, jobs[t].hi);
    }
}

/* ------------------------------------------- radix-8 stages with AVX2 (float) */
#if defined(__AVX2__)
#define VR8_f32 1
#define vr8_call_f32 vr8_f32
#define BF(a, b, s, d) __m256 s = _mm256_add_ps(a, b), d = _mm256_sub_ps(a, b)
static void vr8_f32(float *x, i64 groups, i64 gstride, i64 dist, i64 run, float s) {
    __m256 m = _mm256_set1_ps(s);
    for (i64 g = 0; g < groups; g++) {
        float *p = x + g * gstride;
        for (i64 j = 0; j < run; j += 8) {
            float *q = p + j;
            __m256 a0 = _mm256_loadu_ps(q), a1 = _mm256_loadu_ps(q + dist);
            __m256 a2 = _mm256_loadu_ps(q + 2 * dist), a3 = _mm256_loadu_ps(q + 3 * dist);
            __m256 a4 = _mm256_loadu_ps(q + 4 * dist), a5 = _mm256_loadu_ps(q + 5 * dist);
            __m256 a6 = _mm256_loadu_ps(q + 6 * dist), a7 = _mm256_loadu_ps(q + 7 * dist);
            BF(a0, a1, b0, b1); BF(a2, a3, b2, b3); BF(a4, a5, b4, b5); BF(a6, a7, b6, b7);
            BF(b0, b2, c0, c2); BF(b1, b3, c1, c3); BF(b4, b6, c4, c6); BF(b5, b7, c5, c7);
            BF(c0, c4, d0, d4); BF(c1, c5, d1, d5); BF(c2, c6, d2, d6); BF(c3, c7, d3, d7);
            _mm256_storeu_ps(q, _mm256_mul_ps(d0, m));
            _mm256_storeu_ps(q + dist, _mm256_mul_ps(d1, m));
            _mm256_storeu_ps(q + 2 * dist, _mm256_mul_ps(d2, m));
            _mm256_storeu_ps(q + 3 * dist, _mm256_mul_ps(d3, m));
            _mm256_storeu_ps(q + 4 * dist, _mm256_mul_ps(d4, m));
            _mm256_storeu_ps(q + 5 * dist, _mm256_mul_ps(d5, m));
            _mm256_storeu_ps(q + 6 * dist, _mm256_mul_ps(d6, m));
            _mm256_storeu_ps(q + 7 * dist, _mm256_mul_ps(d7, m));
        }
    }
}
#undef BF
#else
#define VR8_f32 0
#define vr8_call_f32(x, g, gs, d, r, s) ((void)0)
#endif
#define VR8_f64 0
#define vr8_call_f64(x, g, gs, d, r, s) ((void)0)

/* ----------------------------------------------------------- FWHT, per type */
/* Stages 1 and 2 on four operands in registers: (a0, a1, a2, a3) becomes their
 * 4-point transform, b = (a0 + a1, a0 - a1, a2 + a3, a2 - a3) then
 * (b0 + b2, b1 + b3, b0 - b2, b1 - b3). */
#define BF4(T, a0, a1, a2, a3)                                                         \
    do {                                                                               \
        T b0_ = a0 + a1, b1_ = a0 - a1, b2_ = a2 + a3, b3_ = a2 - a3;                  \
        a0 = b0_ + b2_; a2 = b0_ - b2_; a1 = b1_ + b3_; a3 = b1_ - b3_;                \
    } while (0)
/* Block sizes (elements): leaves fit L1, blocks fit L2, high-stage tiles fit L2. */
#define DEFINE_FWHT(T, SUF, UBITS, SIGNBIT, L1N, L2N, TILEN)                            \
                                                                                       \
static void flip_##SUF(T *x, i64 n, u64 key, i64 g) {                                  \
    /* x[i] *= -1 where bit (g + i) of key's stream is 1 */                            \
    UBITS *u = (UBITS *)x;                                                             \
    i64 i = 0;                                                                         \
    while (i < n) {                                                                    \
        i64 j = g + i, w = j >> 6, b = j & 63;                                         \
        i64 m = 64 - b; if (m > n - i) m = n - i;                                      \
        u64 bits = word(key, w) >> b;                                                  \
        for (i64 t = 0; t < m; t++)                                                    \
            u[i + t] ^= (UBITS)((bits >> t) & 1) << SIGNBIT;                           \
        i += m;                                                                        \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* Stages h, 2h, ..., (2^r)h (r = 1..3) on groups of 2^r * h consecutive operands at   \
 * distance `dist`, `run` contiguous columns each; groups are `gstride` apart. The     \
 * result is multiplied by `s` (1 except after the last stage; x * 1 == x exactly). */ \
static void r8_##SUF(T *x, i64 groups, i64 gstride, i64 dist, i64 run, T s) {          \
    for (i64 g = 0; g < groups; g++) {                                                 \
        T *restrict p0 = x + g * gstride, *restrict p1 = p0 + dist;                    \
        T *restrict p2 = p0 + 2 * dist, *restrict p3 = p0 + 3 * dist;                  \
        T *restrict p4 = p0 + 4 * dist, *restrict p5 = p0 + 5 * dist;                  \
        T *restrict p6 = p0 + 6 * dist, *restrict p7 = p0 + 7 * dist;                  \
        for (i64 j = 0; j < run; j++) {                                                \
            T a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j];                          \
            T a4 = p4[j], a5 = p5[j], a6 = p6[j], a7 = p7[j];                          \
            BF4(T, a0, a1, a2, a3);                                                    \
            BF4(T, a4, a5, a6, a7);                                                    \
            p0[j] = (a0 + a4) * s; p4[j] = (a0 - a4) * s;                              \
            p1[j] = (a1 + a5) * s; p5[j] = (a1 - a5) * s;                              \
            p2[j] = (a2 + a6) * s; p6[j] = (a2 - a6) * s;                              \
            p3[j] = (a3 + a7) * s; p7[j] = (a3 - a7) * s;                              \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
static void r4_##SUF(T *x, i64 groups, i64 gstride, i64 dist, i64 run, T s) {          \
    for (i64 g = 0; g < groups; g++) {                                                 \
        T *restrict p0 = x + g * gstride, *restrict p1 = p0 + dist;                    \
        T *restrict p2 = p0 + 2 * dist, *restrict p3 = p0 + 3 * dist;                  \
        for (i64 j = 0; j < run; j++) {                                                \
            T a0 = p0[j], a1 = p1[j], a2 = p2[j], a3 = p3[j];                          \
            BF4(T, a0, a1, a2, a3);                                                    \
            p0[j] = a0 * s; p2[j] = a2 * s; p1[j] = a1 * s; p3[j] = a3 * s;            \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
static void r2_##SUF(T *x, i64 groups, i64 gstride, i64 dist, i64 run, T s) {          \
    for (i64 g = 0; g < groups; g++) {                                                 \
        T *restrict p0 = x + g * gstride, *restrict p1 = p0 + dist;                    \
        for (i64 j = 0; j < run; j++) {                                                \
            T a0 = p0[j], a1 = p1[j];                                                  \
            p0[j] = (a0 + a1) * s; p1[j] = (a0 - a1) * s;                              \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
static void radix_##SUF(T *x, i64 groups, i64 gstride, i64 dist, i64 run, int r,      \
                        int scale_on, T s) {                                           \
    T m = scale_on ? s : (T)1;                                                         \
    if (r == 3 && VR8_##SUF && run % 8 == 0) vr8_call_##SUF(x, groups, gstride, dist, run, m); \
    else if (r == 3) r8_##SUF(x, groups, gstride, dist, run, m);                       \
    else if (r == 2) r4_##SUF(x, groups, gstride, dist, run, m);                       \
    else r2_##SUF(x, groups, gstride, dist, run, m);                                   \
}                                                                                      \
                                                                                       \
/* All stages over `rows` rows of width `run` (row stride `rs`), starting with the     \
 * stage whose operands are `rs` apart: radix 8 while possible, then 4 or 2. */        \
static void stages_##SUF(T *x, i64 rows, i64 rs, i64 run, int scale_on, T s) {         \
    i64 h = 1;                                                                         \
    while (h < rows) {                                                                 \
        int r = 3;                                                                     \
        while ((h << r) > rows) r--;                                                   \
        int last = (h << r) == rows;                                                   \
        for (i64 o = 0; o < h; o++) /* h interleaved sets of operand rows */          \
            radix_##SUF(x + o * rs, rows / (h << r), (h << r) * rs, h * rs, run, r,    \
                        scale_on && last, s);                                          \
        h <<= r;                                                                       \
    }                                                                                  \
}                                                                                      \
                                                                                       \
static void leaf_##SUF(T *x, i64 n, int scale_on, T s);                                \
                                                                                       \
/* Unnormalized-or-scaled transform of n contiguous elements, cache-blocked. */         \
static void rec_##SUF(T *x, i64 n, int scale_on, T s, u64 key, int sign_on, i64 g) {   \
    if (n <= L1N) {                                                                    \
        if (sign_on) flip_##SUF(x, n, key, g);                                         \
        leaf_##SUF(x, n, scale_on, s);                                                 \
        return;                                                                        \
    }                                                                                  \
    i64 B = n <= L2N ? L1N : L2N, rows = n / B;                                        \
    for (i64 b = 0; b < rows; b++) rec_##SUF(x + b * B, B, 0, s, key, sign_on, g + b * B); \
    i64 W = TILEN / rows; if (W < 16) W = 16; if (W > B) W = B;                        \
    for (i64 c = 0; c < B; c += W) stages_##SUF(x + c, rows, B, W, scale_on, s);       \
}                                                                                      \
                                                                                       \
typedef struct { T *x; i64 n, B, rows, W; int scale_on; T s; u64 key; int sign_on;     \
                 i64 g; } big_##SUF;                                                   \
static void big_low_##SUF(void *c, i64 lo, i64 hi) {                                   \
    big_##SUF *a = (big_##SUF *)c;                                                     \
    for (i64 b = lo; b < hi; b++)                                                      \
        rec_##SUF(a->x + b * a->B, a->B, 0, a->s, a->key, a->sign_on, a->g + b * a->B); \
}                                                                                      \
static void big_high_##SUF(void *c, i64 lo, i64 hi) {                                  \
    big_##SUF *a = (big_##SUF *)c;                                                     \
    for (i64 t = lo; t < hi; t++)                                                      \
        stages_##SUF(a->x + t * a->W, a->rows, a->B, a->W, a->scale_on, a->s);         \
}                                                                                      \
                                                                                       \
/* One row of n elements: optional sign flip first, then the scaled transform;        \
 * multi-threaded over blocks and tiles when threads > 1 and the row is large. */      \
static void row_##SUF(T *x, i64 n, T s, u64 key, int sign_on, i64 g, int threads) {    \
    if (threads <= 1 || n <= L2N) { rec_##SUF(x, n, 1, s, key, sign_on, g); return; }  \
    big_##SUF a;                                                                       \
    a.x = x; a.n = n; a.B = L2N; a.rows = n / L2N; a.scale_on = 1; a.s = s;            \
    a.key = key; a.sign_on = sign_on; a.g = g;                                         \
    a.W = TILEN / a.rows; if (a.W < 16) a.W = 16; if (a.W > a.B) a.W = a.B;            \
    parallel_for(big_low_##SUF, &a, a.rows, threads);                                  \
    parallel_for(big_high_##SUF, &a, a.B / a.W, threads);                              \
}                                                                                      \
                                                                                       \
typedef struct { T *x; i64 size, offset; const u64 *keys; int k, inverse; T s; } rows_##SUF; \
static void rows_fn_##SUF(void *c, i64 lo, i64 hi) {                                   \
    rows_##SUF *a = (rows_##SUF *)c;                                                   \
    for (i64 r = lo; r < hi; r++) {                                                    \
        T *x = a->x + r * a->size;                                                     \
        i64 g = a->offset + r * a->size;                                               \
        if (a->k == 0) {                                                               \
            rec_##SUF(x, a->size, 1, a->s, 0, 0, g);                                   \
        } else if (!a->inverse) {                                                      \
            for (int l = 0; l < a->k; l++) rec_##SUF(x, a->size, 1, a->s, a->keys[l], 1, g); \
        } else {                                                                       \
            for (int l = a->k - 1; l >= 0; l--)                                        \
                rec_##SUF(x, a->size, 1, a->s, l + 1 < a->k ? a->keys[l + 1] : 0,      \
                          l + 1 < a->k, g);                                            \
            if (a->k > 0) flip_##SUF(x, a->size, a->keys[0], g);                       \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* In place over `rows` contiguous rows of `size`: k = 0 is a plain FWHT; k > 0 is an  \
 * RHT stack (forward: per key, flip signs then FWHT; inverse: keys reversed, FWHT     \
 * then flip). Bit i of row r uses stream bit offset + r*size + i. */                  \
void fedrot_rht_##SUF(T *x, i64 rows, i64 size, i64 offset, const u64 *keys, int k,   \
                      int inverse, T s, int threads) {                                 \
    if (rows == 1 || size > L2N) {                                                     \
        for (i64 r = 0; r < rows; r++) {                                               \
            T *xr = x + r * size;                                                      \
            i64 g = offset + r * size;                                                 \
            if (k == 0) { row_##SUF(xr, size, s, 0, 0, g, threads); continue; }       \
            if (!inverse) {                                                            \
                for (int l = 0; l < k; l++) row_##SUF(xr, size, s, keys[l], 1, g, threads); \
            } else {                                                                   \
                for (int l = k - 1; l >= 0; l--)                                       \
                    row_##SUF(xr, size, s, l + 1 < k ? keys[l + 1] : 0, l + 1 < k, g, threads); \
                flip_##SUF(xr, size, keys[0], g);                                      \
            }                                                                          \
        }                                                                              \
        return;                                                                        \
    }                                                                                  \
    rows_##SUF a;                                                                      \
    a.x = x; a.size = size; a.offset = offset; a.keys = keys; a.k = k;                 \
    a.inverse = inverse; a.s = s;                                                      \
    parallel_for(rows_fn_##SUF, &a, rows, threads);                                    \
}

/* Leaves: stages 1, 2, 4 on groups of 8 in registers, then radix-8 stages. */
/* Stages 1, 2, 4 on each group of 8 consecutive elements (n a multiple of 8). */
#define DEFINE_LEAF_LOW(T, SUF)                                                        \
static void leaf_low_##SUF(T *x, i64 n) {                                              \
    for (i64 i = 0; i < n; i += 8) {                                                   \
        T *p = x + i;                                                                  \
        T b0 = p[0] + p[1], b1 = p[0] - p[1], b2 = p[2] + p[3], b3 = p[2] - p[3];      \
        T b4 = p[4] + p[5], b5 = p[4] - p[5], b6 = p[6] + p[7], b7 = p[6] - p[7];      \
        T c0 = b0 + b2, c2 = b0 - b2, c1 = b1 + b3, c3 = b1 - b3;                      \
        T c4 = b4 + b6, c6 = b4 - b6, c5 = b5 + b7, c7 = b5 - b7;                      \
        p[0] = c0 + c4; p[4] = c0 - c4; p[1] = c1 + c5; p[5] = c1 - c5;                \
        p[2] = c2 + c6; p[6] = c2 - c6; p[3] = c3 + c7; p[7] = c3 - c7;                \
    }                                                                                  \
}
#if defined(__AVX2__)
/* Stages 1, 2, 4 inside one vector of 8 floats. In lane i of the upper element of a
 * pair, t holds the lower element a and v the upper b, so t - v is a - b. */
static inline __m256 low3_f32(__m256 v) {
    __m256 t = _mm256_permute_ps(v, 0xB1); /* swap neighbours */
    v = _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xAA);
    t = _mm256_permute_ps(v, 0x4E); /* swap pairs */
    v = _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xCC);
    t = _mm256_permute2f128_ps(v, v, 0x01); /* swap halves */
    return _mm256_blend_ps(_mm256_add_ps(v, t), _mm256_sub_ps(t, v), 0xF0);
}
static void leaf_low_f32(float *x, i64 n) {
    for (i64 i = 0; i < n; i += 8) _mm256_storeu_ps(x + i, low3_f32(_mm256_loadu_ps(x + i)));
}
#define HAVE_LEAF64 1
/* Stages 1 .. 32 on groups of 64 floats: 3 in-vector stages per vector, then 3
 * stages across the 8 vectors; times s on the way out. */
static void leaf64_f32(float *x, i64 n, float s) {
    __m256 m = _mm256_set1_ps(s);
    for (i64 i = 0; i < n; i += 64) {
        float *p = x + i;
        __m256 a0 = low3_f32(_mm256_loadu_ps(p)), a1 = low3_f32(_mm256_loadu_ps(p + 8));
        __m256 a2 = low3_f32(_mm256_loadu_ps(p + 16)), a3 = low3_f32(_mm256_loadu_ps(p + 24));
        __m256 a4 = low3_f32(_mm256_loadu_ps(p + 32)), a5 = low3_f32(_mm256_loadu_ps(p + 40));
        __m256 a6 = low3_f32(_mm256_loadu_ps(p + 48)), a7 = low3_f32(_mm256_loadu_ps(p + 56));
        __m256 b0 = _mm256_add_ps(a0, a1), b1 = _mm256_sub_ps(a0, a1);
        __m256 b2 = _mm256_add_ps(a2, a3), b3 = _mm256_sub_ps(a2, a3);
        __m256 b4 = _mm256_add_ps(a4, a5), b5 = _mm256_sub_ps(a4, a5);
        __m256 b6 = _mm256_add_ps(a6, a7), b7 = _mm256_sub_ps(a6, a7);
        __m256 c0 = _mm256_add_ps(b0, b2), c2 = _mm256_sub_ps(b0, b2);
        __m256 c1 = _mm256_add_ps(b1, b3), c3 = _mm256_sub_ps(b1, b3);
        __m256 c4 = _mm256_add_ps(b4, b6), c6 = _mm256_sub_ps(b4, b6);
        __m256 c5 = _mm256_add_ps(b5, b7), c7 = _mm256_sub_ps(b5, b7);
        _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_add_ps(c0, c4), m));
        _mm256_storeu_ps(p + 32, _mm256_mul_ps(_mm256_sub_ps(c0, c4), m));
        _mm256_storeu_ps(p + 8, _mm256_mul_ps(_mm256_add_ps(c1, c5), m));
        _mm256_storeu_ps(p + 40, _mm256_mul_ps(_mm256_sub_ps(c1, c5), m));
        _mm256_storeu_ps(p + 16, _mm256_mul_ps(_mm256_add_ps(c2, c6), m));
        _mm256_storeu_ps(p + 48, _mm256_mul_ps(_mm256_sub_ps(c2, c6), m));
        _mm256_storeu_ps(p + 24, _mm256_mul_ps(_mm256_add_ps(c3, c7), m));
        _mm256_storeu_ps(p + 56, _mm256_mul_ps(_mm256_sub_ps(c3, c7), m));
    }
}
#else
DEFINE_LEAF_LOW(float, f32)
#endif
DEFINE_LEAF_LOW(double, f64)

DEFINE_FWHT(float, f32, uint32_t, 31, 4096, 65536, 131072)
DEFINE_FWHT(double, f64, uint64_t, 63, 2048, 32768, 65536)

#define DEFINE_LEAF(T, SUF)                                                            \
static void leaf_##SUF(T *x, i64 n, int scale_on, T s) {                               \
    i64 h0 = 8;                                                                        \
    if (n < 8) {                                                                       \
        stages_##SUF(x, n, 1, 1, scale_on, s);                                         \
        if (scale_on && n == 1) x[0] *= s;                                             \
        return;                                                                        \
    }                                                                                  \
    if (LEAF64_##SUF && n >= 64) {                                                     \
        leaf64_call_##SUF(x, n, scale_on && n == 64 ? s : (T)1);                       \
        h0 = 64;                                                                       \
    } else {                                                                           \
        leaf_low_##SUF(x, n);                                                          \
    }                                                                                  \
    if (n == 8) {                                                                      \
        if (scale_on) for (int i = 0; i < 8; i++) x[i] *= s;                           \
        return;                                                                        \
    }                                                                                  \
    i64 h = h0;                                                                        \
    while (h < n) {                                                                    \
        int r = 3;                                                                     \
        while ((h << r) > n) r--;                                                      \
        radix_##SUF(x, n / (h << r), h << r, h, h, r, scale_on && (h << r) == n, s);   \
        h <<= r;                                                                       \
    }                                                                                  \
}
#ifdef HAVE_LEAF64
#define LEAF64_f32 1
#define leaf64_call_f32 leaf64_f32
#else
#define LEAF64_f32 0
#define leaf64_call_f32(x, n, s) ((void)0)
#endif
#define LEAF64_f64 0
#define leaf64_call_f64(x, n, s) ((void)0)
DEFINE_LEAF(float, f32)
DEFINE_LEAF(double, f64)

/* ------------------------------------------------------------ bit packing */
/* Code i of width w occupies stream bits i*w .. i*w+w-1 (LSB first); bit j is bit
 * j % 8 of byte j / 8 (fedrot/bitpack.py). `codes` holds n values of `esize` bytes
 * (1: uint8/bool, 8: int64); `out` receives ceil(n*w/8) bytes, unused bits zero. */
static inline u64 code_at(const void *codes, int esize, i64 i) {
    return esize == 1 ? ((const uint8_t *)codes)[i] : (u64)((const int64_t *)codes)[i];
}

void fedrot_pack(const void *codes, int esize, i64 n, int w, uint8_t *out) {
    u64 mask = w == 64 ? ~0ULL : (1ULL << w) - 1, acc = 0;
    int nb = 0;
    i64 i = 0, o = 0;
#if defined(__BMI2__)
    if (esize == 1 && 8 % w == 0) {
        u64 sel = w == 1 ? 0x0101010101010101ULL : w == 2 ? 0x0303030303030303ULL
                : w == 4 ? 0x0F0F0F0F0F0F0F0FULL : ~0ULL;
        for (; i + 8 <= n; i += 8) {
            u64 x; memcpy(&x, (const uint8_t *)codes + i, 8);
            u64 v = _pext_u64(x, sel);
            memcpy(out + o, &v, (size_t)w); /* 8 codes of w bits = w bytes */
            o += w;
        }
    }
#endif
    for (; i < n; i++) {
        acc |= (code_at(codes, esize, i) & mask) << nb;
        nb += w;
        while (nb >= 8) { out[o++] = (uint8_t)acc; acc >>= 8; nb -= 8; }
    }
    if (nb > 0) out[o] = (uint8_t)acc;
}

/* Code with stream index `i` (absolute), read byte by byte. */
static inline u64 get_code(const uint8_t *data, i64 i, int w) {
    i64 bit = i * w, byte = bit >> 3;
    int sh = (int)(bit & 7), need = (sh + w + 7) >> 3;
    u64 v = 0;
    for (int b = 0; b < need; b++) v |= (u64)data[byte + b] << (8 * b);
    return (v >> sh) & ((1ULL << w) - 1);
}

/* Codes start .. start+n-1 of the stream; esize 1 (uint8) or 8 (int64) output. */
void fedrot_unpack(const uint8_t *data, i64 start, i64 n, int w, void *out, int esize) {
    i64 i = 0;
#if defined(__BMI2__)
    if (8 % w == 0 && (start * w) % 8 == 0) {
        u64 sel = w == 1 ? 0x0101010101010101ULL : w == 2 ? 0x0303030303030303ULL
                : w == 4 ? 0x0F0F0F0F0F0F0F0FULL : ~0ULL;
        const uint8_t *src = data + start * w / 8;
        for (; i + 8 <= n; i += 8) {
            u64 v = 0; memcpy(&v, src + i / 8 * w, (size_t)w);
            u64 x = _pdep_u64(v, sel);
            if (esize == 1) memcpy((uint8_t *)out + i, &x, 8);
            else for (int t = 0; t < 8; t++) ((int64_t *)out)[i + t] = (int64_t)((x >> (8 * t)) & 0xFF);
        }
    }
#endif
    for (; i < n; i++) {
        u64 c = get_code(data, start + i, w);
        if (esize == 1) ((uint8_t *)out)[i] = (uint8_t)c;
        else ((int64_t *)out)[i] = (int64_t)c;
    }
}

/* out[r, j] = table[code(start + r*size + j)] * scales[r] (float32, two roundings as
 * torch: the lookup is exact, then one multiplication). */
void fedrot_dequant_f32(const uint8_t *data, i64 start, i64 rows, i64 size, int w,
                        const float *table, const float *scales, float *out) {
    uint8_t buf[4096];
    for (i64 r = 0; r < rows; r++) {
        float s = scales[r];
        for (i64 j = 0; j < size; j += 4096) {
            i64 m = size - j < 4096 ? size - j : 4096;
            fedrot_unpack(data, start + r * size + j, m, w, buf, 1);
            float *o = out + r * size + j;
            for (i64 t = 0; t < m; t++) o[t] = table[buf[t]] * s;
        }
    }
}

/* EDEN quantization of rows of y: z = y * srow[r]; q = #{boundaries < z} (torch.
 * bucketize, right=False); codes[i] = q; prod[i] = centroids[q] * y[i]. */
void fedrot_eden_quant_f32(const float *y, i64 rows, i64 size, const float *srow,
                           const float *bnd, int nb, const float *cent,
                           uint8_t *codes, float *prod) {
    for (i64 r = 0; r < rows; r++) {
        float s = srow[r];
        const float *yr = y + r * size;
        uint8_t *cr = codes + r * size;
        float *pr = prod + r * size;
        if (nb == 1) {
            float b0 = bnd[0], c0 = cent[0], c1 = cent[1];
            for (i64 j = 0; j < size; j++) {
                float z = yr[j] * s;
                int q = z > b0;
                cr[j] = (uint8_t)q;
                pr[j] = (q ? c1 : c0) * yr[j];
            }
            continue;
        }
        if (nb <= 15) { /* count of boundaries < z, branch-free */
#define EQ_ROW(NB)                                                                     \
            for (i64 j = 0; j < size; j++) {                                           \
                float z = yr[j] * s;                                                   \
                int q = 0;                                                             \
                for (int b = 0; b < NB; b++) q += bnd[b] < z;                          \
                cr[j] = (uint8_t)q;                                                    \
                pr[j] = cent[q] * yr[j];                                               \
            }
            if (nb == 3) { EQ_ROW(3) } /* constant counts unroll */
            else if (nb == 7) { EQ_ROW(7) }
            else if (nb == 15) { EQ_ROW(15) }
            else { EQ_ROW(nb) }
#undef EQ_ROW
            continue;
        }
        for (i64 j = 0; j < size; j++) {
            float z = yr[j] * s;
            int lo = 0, len = nb; /* branch-free bisection: lo = #{boundaries < z} */
            while (len > 0) {
                int half = len >> 1;
                int go = bnd[lo + half] < z;
                lo = go ? lo + half + 1 : lo;
                len = go ? len - half - 1 : half;
            }
            cr[j] = (uint8_t)lo;
            pr[j] = cent[lo] * yr[j];
        }
    }
}

/* ------------------------------------------------------------------ QUIC-FL */
/* See fedrot/codecs/quic_fl.py. h_i = word(hkey, i) >> (64 - l) (shared_h); the
 * private uniform is ((word(ukey, i) >> 11) * 2**-53) (private_uniforms). */

/* Server: acc[i] (+)= w_c * est_c[i] over clients c in order, where est_c[i] =
 * table[code_c(i) << l | h_c(i)] * norms_c[piece(i)], replaced by the exact float32
 * value at client c's outlier indices (sorted, strictly increasing, < padded). The
 * first client writes acc = est * w (torch mul_), the others acc = fma(est, w, acc)
 * (torch add_(est, alpha=w) in its vectorized path). Per element the clients are
 * visited in the reference's order; blocks of QAGG_BLK coordinates keep acc in L1. */
#define QAGG_BLK 2048
typedef struct {
    i64 n, npieces, padded;
    const uint8_t *const *codes;
    const u64 *hkeys;
    const float *const *norms;
    const i64 *const *oidx;
    const float *const *ovals;
    const i64 *nout;
    const float *weights;
    int bits, l;
    const float *table;
    const i64 *pstart; /* npieces + 1 boundaries */
    float *acc;
    int plain; /* one client, acc = est exactly (a decode, no weight) */
} qagg_t;

static i64 lower_bound_i64(const i64 *a, i64 n, i64 v) {
    i64 lo = 0, len = n;
    while (len > 0) {
        i64 half = len >> 1;
        if (a[lo + half] < v) { lo += half + 1; len -= half + 1; } else len = half;
    }
    return lo;
}

/* Codes t .. t+7 of the block (w bits each, W bytes) into bytes cb[t .. t+7]. */
#if defined(__BMI2__)
#define QAGG_UNPACK8(W)                                                                \
    for (; t + 8 <= m; t += 8) {                                                       \
        u64 v = 0;                                                                     \
        memcpy(&v, src + t / 8 * (W), (W));                                            \
        u64 x = _pdep_u64(v, sel); /* code q into byte q */                            \
        memcpy(cb + t, &x, 8);                                                         \
    }
#else
#define QAGG_UNPACK8(W)                                                                \
    for (; t + 8 <= m; t += 8) {                                                       \
        u64 v = 0;                                                                     \
        memcpy(&v, src + t / 8 * (W), (W));                                            \
        for (int q = 0; q < 8; q++) cb[t + q] = (uint8_t)((v >> (q * (W))) & cmask);   \
    }
#endif

static void qagg_range(void *p, i64 blo, i64 bhi) {
    const qagg_t *a = (const qagg_t *)p;
    float estb[QAGG_BLK];
    uint32_t hb[QAGG_BLK];
    uint8_t cb[QAGG_BLK];
    const int w = a->bits, sh = 64 - a->l, l = a->l;
    const u64 cmask = (1ULL << w) - 1;
#if defined(__BMI2__)
    const u64 sel = cmask * 0x0101010101010101ULL; /* low w bits of every byte */
#endif
    for (i64 b = blo; b < bhi; b++) {
        i64 b0 = b * QAGG_BLK, b1 = b0 + QAGG_BLK < a->padded ? b0 + QAGG_BLK : a->padded;
        i64 m = b1 - b0;
        i64 p0 = lower_bound_i64(a->pstart, a->npieces + 1, b0 + 1) - 1; /* piece of b0 */
        float *acc = a->acc + b0;
        for (i64 c = 0; c < a->n; c++) {
            const u64 key = a->hkeys[c];
            float *est = a->plain ? acc : estb;
            for (i64 t = 0; t < m; t++) hb[t] = (uint32_t)(word(key, b0 + t) >> sh);
            /* b0 is a multiple of 8, so 8 codes start at byte b0*w/8 and take w bytes */
            const uint8_t *src = a->codes[c] + b0 / 8 * w;
            i64 t = 0;
            /* a constant-size load per width: a variable-size memcpy into v would
             * go through the stack and stall the store-to-load forwarding */
            switch (w) {
            case 1: QAGG_UNPACK8(1); break;
            case 2: QAGG_UNPACK8(2); break;
            case 3: QAGG_UNPACK8(3); break;
            default: QAGG_UNPACK8(4); break;
            }
            for (; t < m; t++) cb[t] = (uint8_t)get_code(a->codes[c], b0 + t, w);
            const float *nrm = a->norms[c];
            for (i64 pc = p0, s0 = b0; s0 < b1; pc++) {
                i64 s1 = a->pstart[pc + 1] < b1 ? a->pstart[pc + 1] : b1;
                float sc = nrm[pc];
                for (i64 i = s0; i < s1; i++)
                    est[i - b0] = a->table[((uint32_t)cb[i - b0] << l) | hb[i - b0]] * sc;
                s0 = s1;
            }
            const i64 *oi = a->oidx[c];
            i64 no = a->nout[c];
            if (no) {
                i64 k = lower_bound_i64(oi, no, b0);
                for (; k < no && oi[k] < b1; k++) est[oi[k] - b0] = a->ovals[c][k];
            }
            if (a->plain) continue;
            const float wt = a->weights[c];
            if (c == 0) for (i64 i = 0; i < m; i++) acc[i] = est[i] * wt;
            else for (i64 i = 0; i < m; i++) acc[i] = fmaf(est[i], wt, acc[i]);
        }
    }
}

/* weights NULL: a decode, n must be 1 and acc = est exactly (the torch path's
 * receiver, scale_pieces_ and est[idx] = values, bit for bit). */
void fedrot_quic_agg_f32(i64 n, const uint8_t *const *codes, const u64 *hkeys,
                         const float *const *norms, const i64 *const *oidx,
                         const float *const *ovals, const i64 *nout, const float *weights,
                         int bits, int l, const float *table, i64 npieces,
                         const i64 *pstart, i64 padded, float *acc, int threads) {
    qagg_t a;
    a.n = n; a.npieces = npieces; a.padded = padded; a.codes = codes; a.hkeys = hkeys;
    a.norms = norms; a.oidx = oidx; a.ovals = ovals; a.nout = nout; a.weights = weights;
    a.bits = bits; a.l = l; a.table = table; a.pstart = pstart; a.acc = acc;
    a.plain = weights == NULL;
    parallel_for(qagg_range, &a, (padded + QAGG_BLK - 1) / QAGG_BLK, threads);
}

/* Client: for each of the n normalized coordinates z (float32), outliers |z| > T
 * (compared in float64) get code 0 and their index listed; the others get the
 * LP-optimal sender's message (fedrot.codecs.quic_fl.sender) in float64:
 * j = #{means <= z} - 1 clamped to [0, last]; x = levels[j, h]; jj = min(j, last-1);
 * p = (z - means[jj]) / (means[jj+1] - means[jj]); x += movers[jj] == h && u < p &&
 * j < last (jj = j there). `means` has nm + 1 entries, the last +inf. `grid` (ng + 1
 * entries, each in 0..nm-1) accelerates the search: grid[g] estimates j for z in grid
 * cell g of [g0, g0 + ng / ginv); the walk that follows makes j exact whatever the
 * estimate. Chunks of QSEND_CH coordinates run in parallel; each lists its outliers
 * at its own offset, compacted afterwards. */
#define QSEND_CH 65536
typedef struct {
    const float *z;
    i64 n;
    double T;
    u64 hkey, ukey;
    int l;
    const double *means;
    i64 nm;
    const uint8_t *levels; /* nm x 2**l */
    const uint8_t *movers; /* nm - 1 */
    const int32_t *grid;
    i64 ng;
    double g0, ginv;
    uint8_t *codes;
    i64 *oidx, *counts;
} qsend_t;

static void qsend_range(void *p, i64 clo, i64 chi) {
    const qsend_t *a = (const qsend_t *)p;
    uint32_t hb[512];
    double ub[512];
    const int sh = 64 - a->l, H = 1 << a->l;
    const i64 last = a->nm - 1;
    const double *means = a->means;
    for (i64 ch = clo; ch < chi; ch++) {
        i64 lo = ch * QSEND_CH, hi = lo + QSEND_CH < a->n ? lo + QSEND_CH : a->n;
        i64 cnt = 0;
        i64 *oi = a->oidx + lo;
        for (i64 s = lo; s < hi; s += 512) {
            i64 m = hi - s < 512 ? hi - s : 512;
            for (i64 t = 0; t < m; t++) hb[t] = (uint32_t)(word(a->hkey, s + t) >> sh);
            for (i64 t = 0; t < m; t++)
                ub[t] = (double)(i64)(word(a->ukey, s + t) >> 11) * 0x1p-53;
            for (i64 t = 0; t < m; t++) {
                i64 i = s + t;
                double z = (double)a->z[i];
                if (fabs(z) > a->T) { a->codes[i] = 0; oi[cnt++] = i; continue; }
                double gf = (z - a->g0) * a->ginv;
                i64 g = gf > 0.0 ? (gf < (double)a->ng ? (i64)gf : a->ng) : 0; /* NaN: 0 */
                i64 j = a->grid[g];
                j += means[j + 1] <= z; /* a cell holds at most one mean, usually */
                while (means[j + 1] <= z) j++; /* means[nm] is +inf */
                while (j >= 0 && means[j] > z) j--;
                if (j < 0) j = 0;
                uint32_t h = hb[t];
                int x = a->levels[j * H + h];
                /* only the mover column can move; p is needed for it alone */
                if (j < last && a->movers[j] == h) {
                    double mlo = means[j], mhi = means[j + 1];
                    x += ub[t] < (z - mlo) / (mhi - mlo);
                }
                a->codes[i] = (uint8_t)x;
            }
        }
        a->counts[ch] = cnt;
    }
}

i64 fedrot_quic_send_f32(const float *z, i64 n, double T, u64 hkey, u64 ukey, int l,
                         const double *means, i64 nm, const uint8_t *levels,
                         const uint8_t *movers, const int32_t *grid, i64 ng, double g0,
                         double ginv, uint8_t *codes, i64 *oidx, i64 *counts,
                         int threads) {
    qsend_t a;
    a.z = z; a.n = n; a.T = T; a.hkey = hkey; a.ukey = ukey; a.l = l; a.means = means;
    a.nm = nm; a.levels = levels; a.movers = movers; a.grid = grid; a.ng = ng;
    a.g0 = g0; a.ginv = ginv; a.codes = codes; a.oidx = oidx; a.counts = counts;
    if (n <= 0) return 0;
    i64 nch = (n + QSEND_CH - 1) / QSEND_CH;
    parallel_for(qsend_range, &a, nch, threads);
    i64 total = counts[0];
    for (i64 ch = 1; ch < nch; ch++) {
        memmove(oidx + total, oidx + ch * QSEND_CH, (size_t)counts[ch] * sizeof(i64));
        total += counts[ch];
    }
    return total;
}

/* ------------------------------------------------------------ seeded streams */
/* Uniform u_i = (word(key, start + i) >> 40) * 2**-24 (float32, exact: see
 * fedrot.seeds.uniforms_torch). Masks compare it with p in float32, as torch does
 * for a float32 tensor and a Python float (p rounded to float32 first). */
#define STREAM_CH 65536
typedef struct {
    u64 key;
    i64 start, n;
    float p;
    float *u;
    bool *mask;
    i64 *counts;
} stream_t;

static inline float uniform_at(u64 key, i64 i) {
    return (float)(word(key, i) >> 40) * 0x1p-24f;
}

static void uniforms_range(void *c, i64 lo, i64 hi) {
    const stream_t *a = (const stream_t *)c;
    i64 i0 = lo * STREAM_CH, i1 = hi * STREAM_CH < a->n ? hi * STREAM_CH : a->n;
    for (i64 i = i0; i < i1; i++) a->u[i] = uniform_at(a->key, a->start + i);
}

static void mask_range(void *c, i64 lo, i64 hi) {
    const stream_t *a = (const stream_t *)c;
    for (i64 ch = lo; ch < hi; ch++) {
        i64 i0 = ch * STREAM_CH, i1 = i0 + STREAM_CH < a->n ? i0 + STREAM_CH : a->n;
        i64 cnt = 0;
        for (i64 i = i0; i < i1; i++) {
            bool m = uniform_at(a->key, a->start + i) < a->p;
            a->mask[i] = m;
            cnt += m;
        }
        a->counts[ch] = cnt;
    }
}

/* out[i] = u_{start+i} for i < n. */
void fedrot_uniforms_f32(u64 key, i64 start, i64 n, float *out, int threads) {
    stream_t a;
    a.key = key; a.start = start; a.n = n; a.p = 0; a.u = out; a.mask = 0; a.counts = 0;
    parallel_for(uniforms_range, &a, (n + STREAM_CH - 1) / STREAM_CH, threads);
}

/* out[i] = u_{start+i} < p for i < n; returns the number of ones.
 * `counts` has one slot per STREAM_CH coordinates. */
i64 fedrot_mask_f32(u64 key, i64 start, i64 n, float p, bool *out, i64 *counts,
                    int threads) {
    stream_t a;
    i64 nch = (n + STREAM_CH - 1) / STREAM_CH, total = 0;
    a.key = key; a.start = start; a.n = n; a.p = p; a.u = 0; a.mask = out;
    a.counts = counts;
    parallel_for(mask_range, &a, nch, threads);
    for (i64 ch = 0; ch < nch; ch++) total += counts[ch];
    return total;
}

/* ------------------------------------------------------------- Hadamard-SQ */
/* Stochastic min-max quantization of rows of y (fedrot/codecs/hadamard_sq.py):
 * t = (y - lo[r]) * inv[r]; b = floor(t); level = b + (u < t - b), clamped to
 * [0, top]; u is uniform offset + r*size + j of `key`'s stream. float32 throughout,
 * one rounding per operation, as torch. */
typedef struct {
    const float *y, *lo, *inv;
    i64 size, offset;
    u64 key;
    int top;
    uint8_t *codes;
} hsq_t;

static void hsq_rows(void *c, i64 r0, i64 r1) {
    const hsq_t *a = (const hsq_t *)c;
    const float topf = (float)a->top;
    for (i64 r = r0; r < r1; r++) {
        const float *yr = a->y + r * a->size;
        uint8_t *cr = a->codes + r * a->size;
        const float lo = a->lo[r], inv = a->inv[r];
        const i64 g = a->offset + r * a->size;
        for (i64 j = 0; j < a->size; j++) {
            float t = (yr[j] - lo) * inv;
            float b = floorf(t);
            float lev = b + (float)(uniform_at(a->key, g + j) < t - b);
            lev = lev < 0.0f ? 0.0f : lev;
            lev = lev > topf ? topf : lev;
            cr[j] = (uint8_t)(int)lev;
        }
    }
}

void fedrot_hsq_quant_f32(const float *y, i64 rows, i64 size, i64 offset, u64 key,
                          const float *lo, const float *inv, int top, uint8_t *codes,
                          int threads) {
    hsq_t a;
    a.y = y; a.lo = lo; a.inv = inv; a.size = size; a.offset = offset; a.key = key;
    a.top = top; a.codes = codes;
    parallel_for(hsq_rows, &a, rows, threads);
}

/* ------------------------------------------------------ fractional-bit EDEN */
/* #{boundaries < z} (torch.bucketize, right=False) over nb sorted boundaries. */
static inline int bucket_of(float z, const float *bnd, int nb) {
    int lo = 0, len = nb;
    while (len > 0) {
        int half = len >> 1;
        int go = bnd[lo + half] < z;
        lo = go ? lo + half + 1 : lo;
        len = go ? len - half - 1 : half;
    }
    return lo;
}

static inline int count_below(float z, const float *bnd, int nb) {
    int q = 0;
    for (int b = 0; b < nb; b++) q += bnd[b] < z;
    return q;
}

/* Rows of y with two quantizers chosen per coordinate by hi[i] (true: the ceil-bit
 * one): z = y * srow[r]; q = bucket(z) of the chosen boundaries; codes[i] = q;
 * prod[i] = centroid[q] * y[i] (the torch path's where(hi, ...) per element). Both
 * buckets are computed and one selected, without a branch on the random mask. */
/* One row; NLO / NHI > 0 are the boundary counts as compile-time constants (the
 * counting loops unroll), 0 means the runtime counts with bisection. */
#define EQ2_ROW(NLO, NHI)                                                              \
    for (i64 j = j0; j < j1; j++) {                                                    \
        float z = y[j] * s;                                                            \
        int ql = NLO ? count_below(z, bnd_lo, NLO) : bucket_of(z, bnd_lo, nb_lo);      \
        int qh = NHI ? count_below(z, bnd_hi, NHI) : bucket_of(z, bnd_hi, nb_hi);      \
        int h = hi[j];                                                                 \
        float cl = cent_lo[ql], ch = cent_hi[qh];                                      \
        codes[j] = (uint8_t)(h ? qh : ql);                                             \
        prod[j] = (h ? ch : cl) * y[j];                                                \
    }
void fedrot_eden_quant2_f32(const float *y, i64 rows, i64 size, const float *srow,
                            const bool *hi, const float *bnd_lo, int nb_lo,
                            const float *cent_lo, const float *bnd_hi, int nb_hi,
                            const float *cent_hi, uint8_t *codes, float *prod) {
    for (i64 r = 0; r < rows; r++) {
        const float s = srow[r];
        const i64 j0 = r * size, j1 = j0 + size;
        if (nb_lo == 1 && nb_hi == 3) { EQ2_ROW(1, 3) }
        else if (nb_lo == 3 && nb_hi == 7) { EQ2_ROW(3, 7) }
        else if (nb_lo == 7 && nb_hi == 15) { EQ2_ROW(7, 15) }
        else { EQ2_ROW(0, 0) }
    }
}
#undef EQ2_ROW

/* Codes where sel[i] is true, in order, packed with w1 bits into out1; the others with
 * w0 bits into out0 (the layout of fedrot.bitpack.pack on codes[sel], codes[~sel]).
 * out1/out0 are zeroed by the caller and sized for their counts PLUS 8 bytes: every
 * step stores 8 bytes of each accumulator unconditionally (no branch on sel). */
void fedrot_pack_split(const uint8_t *codes, const bool *sel, i64 n, int w1,
                       uint8_t *out1, int w0, uint8_t *out0) {
    u64 acc1 = 0, acc0 = 0;
    u64 nb1 = 0, nb0 = 0;
    i64 o1 = 0, o0 = 0;
    for (i64 i = 0; i < n; i++) {
        u64 s1 = sel[i], s0 = s1 ^ 1, c = codes[i];
        acc1 |= (c & (0 - s1)) << nb1;
        acc0 |= (c & (0 - s0)) << nb0;
        nb1 += (u64)w1 & (0 - s1);
        nb0 += (u64)w0 & (0 - s0);
        memcpy(out1 + o1, &acc1, 8);
        memcpy(out0 + o0, &acc0, 8);
        o1 += (i64)(nb1 >> 3); acc1 >>= nb1 & ~7ULL; nb1 &= 7;
        o0 += (i64)(nb0 >> 3); acc0 >>= nb0 & ~7ULL; nb0 &= 7;
    }
}

/* The inverse of fedrot_pack_split, looked up in tables: out[i] = t1[next w1-bit code
 * of data1] where sel[i], else t0[next w0-bit code of data0] (fractional EDEN's
 * c[sel] = t1[unpack(data1)], c[~sel] = t0[unpack(data0)]; lookups are exact). Both
 * codes are read at every step (no branch on sel), so data1/data0 carry 8 bytes of
 * slack past their streams and the tables hold 2**w1 / 2**w0 entries. */
void fedrot_dequant_split_f32(const uint8_t *data1, int w1, const float *t1,
                              const uint8_t *data0, int w0, const float *t0,
                              const bool *sel, i64 n, float *out) {
    i64 k1 = 0, k0 = 0;
    for (i64 i = 0; i < n; i++) {
        i64 s = sel[i];
        float v1 = t1[get_code(data1, k1, w1)], v0 = t0[get_code(data0, k0, w0)];
        out[i] = s ? v1 : v0;
        k1 += s;
        k0 += 1 - s;
    }
}

/* out[k++] = src[i] for every i with sel[i] (torch's src[sel]); m is the number of
 * True values and out holds m + 1 floats: every step stores (no branch on sel), at
 * most at out[m]. */
void fedrot_compress_f32(const float *src, const bool *sel, i64 n, i64 m, float *out) {
    i64 k = 0;
    for (i64 i = 0; i < n; i++) {
        out[k < m ? k : m] = src[i];
        k += sel[i];
    }
}

/* out[i] = sel[i] ? src[k++] : +0 (torch's out = zeros(n); out[sel] = src) with m >= 1
 * values in src; the read index stays below m (no branch on sel). */
void fedrot_expand_f32(const float *src, i64 m, const bool *sel, i64 n, float *out) {
    i64 k = 0;
    for (i64 i = 0; i < n; i++) {
        i64 s = sel[i];
        float v = src[k < m ? k : m - 1];
        out[i] = s ? v : 0.0f;
        k += s;
    }
}

/* ------------------------------------------- streamed per-client aggregation */
/* One client's DRIVE/EDEN decode added into a running sum, piece by piece while the
 * piece is in cache: buf = table[code] * scales[r] (fedrot_dequant_f32), the inverse
 * RHT stack of rows_fn_f32 (keys reversed, FWHT then signs), then for the first d
 * padded positions acc = buf * wt (first client, torch mul_) or
 * acc = fma(buf, wt, acc) (torch add_(x, alpha=wt)). Rows in parallel; returns 0,
 * or -1 when a scratch buffer cannot be allocated (acc then partly written). */
typedef struct {
    const uint8_t *data;
    i64 start, size, offset, d;
    int w, k, first;
    const float *table, *scales;
    const u64 *keys;
    float s, wt;
    float *acc;
    int failed;
} dqacc_t;

static void dqacc_rows(void *c, i64 r0, i64 r1) {
    dqacc_t *a = (dqacc_t *)c;
    const i64 size = a->size;
    float *buf = (float *)malloc((size_t)size * sizeof(float));
    if (!buf) { a->failed = 1; return; }
    for (i64 r = r0; r < r1; r++) {
        const i64 g = a->offset + r * size;
        i64 m = a->d - g < size ? a->d - g : size;
        if (m <= 0) continue;
        fedrot_dequant_f32(a->data, a->start + r * size, 1, size, a->w, a->table,
                           a->scales + r, buf);
        for (int l = a->k - 1; l >= 0; l--)
            rec_f32(buf, size, 1, a->s, l + 1 < a->k ? a->keys[l + 1] : 0, l + 1 < a->k, g);
        flip_f32(buf, size, a->keys[0], g);
        float *acc = a->acc + g;
        const float wt = a->wt;
        if (a->first) for (i64 j = 0; j < m; j++) acc[j] = buf[j] * wt;
        else for (i64 j = 0; j < m; j++) acc[j] = fmaf(buf[j], wt, acc[j]);
    }
    free(buf);
}

int fedrot_dequant_acc_f32(const uint8_t *data, i64 start, i64 rows, i64 size,
                           i64 offset, i64 d, int w, const float *table,
                           const float *scales, const u64 *keys, int k, float s,
                           float wt, int first, float *acc, int threads) {
    dqacc_t a;
    if (k < 1) return -1;
    a.data = data; a.start = start; a.size = size; a.offset = offset; a.d = d;
    a.w = w; a.k = k; a.first = first; a.table = table; a.scales = scales;
    a.keys = keys; a.s = s; a.wt = wt; a.acc = acc; a.failed = 0;
    parallel_for(dqacc_rows, &a, rows, threads);
    return a.failed ? -1 : 0;
}
