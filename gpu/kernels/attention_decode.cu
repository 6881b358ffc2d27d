// Flash-decoding, first pass: one block per (query head, sequence, split of the context). Each of the 2
// warps takes 32 positions of the split at a time, four rows per load: lane (g, c) = (lane / 8, lane % 8)
// reads dims [c * D8, c * D8 + D8) of position 4 i + g (8-byte loads, whole 128-byte lines per load
// instead of one line per lane: the L1 requests were what bounded this kernel), its partial q.k is summed
// over the group's 8 lanes, and the 32 scores are handed to lane = position for the warp's online softmax
// (max m, sum l) once per 32 positions; value rows are accumulated the same way, four rows per load, and the
// four groups' sums added at the end. The warps are merged and the split's (m, l, unnormalised out)
// written for attention_combine (splits past the length write nothing).
// Lengths come from device memory (pos + 1) so one CUDA graph serves all steps. GQA: query head h reads
// kv head h / (n_heads / n_kv).
// -D DIRECT=1: one block per (query head, sequence) covers the whole context (at most 32 * WARPS
// positions, the caller's promise) and writes the attention output itself, no attention_combine launch.
// Its warps pair up as the 64-position splits of the two-pass form and it merges them with the same
// float operations in the same order (each pair as a two-warp block, then the splits as attention_combine),
// so the output is bit-identical to the two passes': a row's result never depends on which form its
// batch took.
// -D HEAD_DIM (a multiple of 32), -D DIRECT (0 or 1), -D WARPS (2 for the two-pass form).
#include "common.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef DIRECT
#define DIRECT 0
#endif
#ifndef WARPS
#define WARPS 2
#endif
#define D8 (HEAD_DIM / 8)  // dims of a row per lane (8 lanes per row)
#define PAIR 2             // warps per 64-position split of the two-pass form
#if HEAD_DIM % 32
#error "HEAD_DIM must be a multiple of 32 (8 lanes x whole 8-byte loads)"
#endif

// Four operands packed in 8 bytes -> four floats.
__device__ __forceinline__ void unpack4(const uint2 &u, float f[4]) {
    const dtype2 *h = reinterpret_cast<const dtype2 *>(&u);
    const float2 a = to_f32x2(h[0]), b = to_f32x2(h[1]);
    f[0] = a.x;
    f[1] = a.y;
    f[2] = b.x;
    f[3] = b.y;
}
#if DIRECT == 0 && WARPS != PAIR
#error "the two-pass form has one split of two warps per block"
#endif

extern "C" __global__ void __launch_bounds__(WARPS * 32, 1) attention_decode(
    float *__restrict__ part_out,        // [n_rows, n_heads, n_splits, HEAD_DIM]; DIRECT: dtype out
    float *__restrict__ part_ml,         // [n_rows, n_heads, n_splits, 2]; DIRECT: unused
    const dtype *__restrict__ q,         // [n_rows, n_heads, HEAD_DIM]
    const dtype *__restrict__ k_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const dtype *__restrict__ v_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const int *__restrict__ slots,       // [n_rows]
    const int *__restrict__ pos,         // [n_rows]: the query's position; keys 0..pos are attended
    int n_heads, int n_kv_heads, int max_ctx, int split_len, float scale) {
    __shared__ float s_q[HEAD_DIM];
    __shared__ float s_m[WARPS], s_l[WARPS], s_o[WARPS][HEAD_DIM];
    const int h = blockIdx.x, r = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int len = pos[r] + 1;  // slots and pos are step inputs, written by no kernel
    const int begin = split * split_len, end = min(len, begin + split_len);
    const int kvh = h / (n_heads / n_kv_heads);
    const size_t base_off = ((size_t)slots[r] * n_kv_heads + kvh) * max_ctx * HEAD_DIM;
    // the split's key and value rows into L2 while the kernel before (the q|k|v projection) still runs
    for (int t = begin + threadIdx.x; t < end; t += blockDim.x)
        for (int c = 0; c < HEAD_DIM; c += 64) {  // 128-byte lines
            asm volatile("prefetch.global.L2 [%0];" ::"l"(k_cache + base_off + (size_t)t * HEAD_DIM + c));
            asm volatile("prefetch.global.L2 [%0];" ::"l"(v_cache + base_off + (size_t)t * HEAD_DIM + c));
        }
    pdl_launch_dependents();
    pdl_wait();
    if (begin >= end) return;  // past the sequence: attention_combine does not read this split
    const dtype *qr = q + ((size_t)r * n_heads + h) * HEAD_DIM;
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) s_q[d] = to_f32(qr[d]) * scale;
    __syncthreads();

    const int g = lane >> 3, c = lane & 7;  // this lane's row of four and its dims [c * D8, c * D8 + D8)
    float qd[D8];  // this lane's dims of q, scaled
#pragma unroll
    for (int d = 0; d < D8; ++d) qd[d] = s_q[c * D8 + d];
    float m = -INFINITY, l = 0.0f, o[D8];
#pragma unroll
    for (int d = 0; d < D8; ++d) o[d] = 0.0f;
    for (int base = begin + warp * 32; base < end; base += WARPS * 32) {
        float sc[8];  // position base + 4 i + g's score, the same in the group's 8 lanes
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int t = base + 4 * i + g;
            float acc = 0.0f;
            if (t < end) {
                const uint2 *kr = reinterpret_cast<const uint2 *>(k_cache + base_off + (size_t)t * HEAD_DIM + c * D8);
#pragma unroll
                for (int u = 0; u < D8 / 4; ++u) {
                    float kf[4];
                    unpack4(kr[u], kf);
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc = fmaf(qd[4 * u + e], kf[e], acc);
                }
            }
            acc += __shfl_xor_sync(0xffffffffu, acc, 1);
            acc += __shfl_xor_sync(0xffffffffu, acc, 2);
            acc += __shfl_xor_sync(0xffffffffu, acc, 4);
            sc[i] = acc;
        }
        const int t = base + lane;  // lane = position: its score sits in group lane % 4 at i = lane / 4
        float s = -INFINITY;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float v = __shfl_sync(0xffffffffu, sc[i], (lane & 3) * 8);
            if ((lane >> 2) == i && t < end) s = v;
        }
        const float m_new = fmaxf(m, warp_max(s));  // finite: position `base` is valid
        const float corr = __expf(m - m_new);       // 0 while m is still -inf
        const float p = t < end ? __expf(s - m_new) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int d = 0; d < D8; ++d) o[d] *= corr;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int j = 4 * i + g;
            const float pj = __shfl_sync(0xffffffffu, p, j);
            if (base + j < end) {  // rows past the length may hold anything (never 0 * NaN)
                const uint2 *vr = reinterpret_cast<const uint2 *>(v_cache + base_off + (size_t)(base + j) * HEAD_DIM + c * D8);
#pragma unroll
                for (int u = 0; u < D8 / 4; ++u) {
                    float vf[4];
                    unpack4(vr[u], vf);
#pragma unroll
                    for (int e = 0; e < 4; ++e) o[4 * u + e] = fmaf(pj, vf[e], o[4 * u + e]);
                }
            }
        }
        m = m_new;
    }
#pragma unroll
    for (int d = 0; d < D8; ++d) {  // the four groups' sums (positions 4 i + g), the same in every group
        o[d] += __shfl_xor_sync(0xffffffffu, o[d], 8);
        o[d] += __shfl_xor_sync(0xffffffffu, o[d], 16);
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
    if (g == 0)
#pragma unroll
        for (int d = 0; d < D8; ++d) s_o[warp][c * D8 + d] = o[d];
    __syncthreads();
#if DIRECT
    // attention_combine over the splits 0..used-1, each split's (m, l, out) made as its two-warp block makes
    // them; loops unrolled over every split (guarded by `used`) so split_m stays in registers
    constexpr int SPLITS = WARPS / PAIR;
    const int used = (len - 1) / (PAIR * 32) + 1;
    float split_m[SPLITS];
    float m_all = -INFINITY;
#pragma unroll
    for (int sp = 0; sp < SPLITS; ++sp) {
        float ms = -INFINITY;
#pragma unroll
        for (int w = 0; w < PAIR; ++w) ms = fmaxf(ms, s_m[sp * PAIR + w]);
        split_m[sp] = ms;
        if (sp < used) m_all = fmaxf(m_all, ms);
    }
    float l_all = 0.0f;
#pragma unroll
    for (int sp = 0; sp < SPLITS; ++sp) {
        if (sp >= used) break;
        float ls = 0.0f;
#pragma unroll
        for (int w = 0; w < PAIR; ++w) {
            const int ww = sp * PAIR + w;
            if (s_l[ww] > 0.0f) ls += s_l[ww] * __expf(s_m[ww] - split_m[sp]);
        }
        l_all += ls * __expf(split_m[sp] - m_all);
    }
    dtype *out = reinterpret_cast<dtype *>(part_out) + ((size_t)r * n_heads + h) * HEAD_DIM;
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int sp = 0; sp < SPLITS; ++sp) {
            if (sp >= used) break;
            float os = 0.0f;
#pragma unroll
            for (int w = 0; w < PAIR; ++w) {
                const int ww = sp * PAIR + w;
                if (s_l[ww] > 0.0f) os += s_o[ww][d] * __expf(s_m[ww] - split_m[sp]);
            }
            acc += os * __expf(split_m[sp] - m_all);
        }
        out[d] = from_f32(acc / l_all);
    }
#else
    const int n_splits = gridDim.z;
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, s_m[w]);
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w)
            if (s_l[w] > 0.0f) acc += s_o[w][d] * __expf(s_m[w] - m_all);
        part_out[(((size_t)r * n_heads + h) * n_splits + split) * HEAD_DIM + d] = acc;
    }
    if (threadIdx.x == 0) {
        const size_t part = ((size_t)r * n_heads + h) * n_splits + split;
        float l_all = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w)
            if (s_l[w] > 0.0f) l_all += s_l[w] * __expf(s_m[w] - m_all);
        part_ml[part * 2] = m_all;
        part_ml[part * 2 + 1] = l_all;
    }
#endif
}
