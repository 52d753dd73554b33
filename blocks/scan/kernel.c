/* Selective scan (Mamba-1 S6) on CPU: a sequential loop over time, vectorised over channels.
 *
 * Why C: the scan's work per element of the (B, L, N, D) state volume is one exp and a few multiply-adds.
 * Every tensor-library formulation pays several passes over that volume; this loop keeps the state in
 * L1 (N x w values per work item) and runs at the speed of the vector exp. blocks/scan/compiled.py builds
 * it with -O3 -ffast-math, under which glibc declares its vector exp/log1p (libmvec) and gcc vectorises
 * the channel loops (`omp simd` with -fopenmp-simd: no OpenMP runtime is linked).
 *
 * Work item i = (batch row i / nchunk, channel chunk i % nchunk); a chunk of w channels never straddles a
 * group of D / G channels, so an item reads one B_t and one C_t row per step. An item copies its
 * channels' slices of delta, u, ... into (L, w) tiles (delta with bias and softplus applied), runs over
 * the tiles, and writes its outputs back into strided views: no transposes outside, and none at all for
 * views laid out (Bt, L, D) in memory, as the mixer's delta is and the outputs are allocated.
 * The bodies are in scan_kernel.inc, included once per dtype.
 *
 * Numerics: decays exp(dl * A) <= 1 for dl >= 0, A <= 0 only ever multiply (never divide), so nothing
 * overflows; an underflow gives exactly 0. softplus follows torch (x > 20 -> x).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* 1 when built with OpenMP (the entry points then split their items over threads themselves). */
int scan_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

typedef struct {
    int64_t b, g, d0, w; /* batch row, group, first channel, channels */
} item_t;

static item_t item_of(int64_t i, int64_t D, int64_t G, int64_t DC) {
    int64_t Dg = D / G, cpg = (Dg + DC - 1) / DC, nchunk = G * cpg;
    int64_t c = i % nchunk, k = c % cpg;
    item_t it;
    it.b = i / nchunk;
    it.g = c / cpg;
    it.d0 = it.g * Dg + k * DC;
    it.w = (Dg - k * DC < DC) ? Dg - k * DC : DC;
    return it;
}

/* The strided (Bt, D, L) views, in the order of their (batch, channel, step) strides in `st`. */
enum { V_DELTA, V_U, V_Z, V_O1, V_OUT, V_GOUT, V_DDELTA, V_DU, V_GZ, N_VIEWS };

/* exp for float, inlined so that gcc vectorises it in place: a call into libmvec per vector makes the
 * compiler spill every live vector register around it, which cost more than the exp itself. Cody-Waite
 * reduction x = n ln2 + r, |r| <= ln2 / 2, and a degree-6 polynomial for e^r (Cephes' expf coefficients):
 * within 2 ulp of expf on [-87, 88]. Below -87 it returns exactly 0 (as expf's result would be subnormal
 * or 0), so the scan never produces subnormal decays, which are slow on x86. */
static inline float exp_inline(float x) {
    x = x > 88.0f ? 88.0f : x;
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

#define T float
#define SFX _f32
#define EXP exp_inline
#define LOG1P log1pf
#include "scan_kernel.inc"
#undef T
#undef SFX
#undef EXP
#undef LOG1P

#define T double
#define SFX _f64
#define EXP exp
#define LOG1P log1p
#include "scan_kernel.inc"
