// Flash-decoding, first pass: one block per (query head, sequence, split of the context). Each of the 4
// warps walks its share of the split's positions, one position at a time (lanes over head_dim), keeping an
// online softmax (max m, sum l, unnormalised output); the warps are merged and the split's (m, l, out)
// written for attention_combine. Reads lengths from device memory (pos + 1) so one CUDA graph serves all
// steps. GQA: query head h reads kv head h / (n_heads / n_kv_heads). -D HEAD_DIM.
#include "common.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define DPL ((HEAD_DIM + 31) / 32)  // dims per lane
#define WARPS 4

extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_decode(
    float *__restrict__ part_out,        // [n_rows, n_heads, n_splits, HEAD_DIM]
    float *__restrict__ part_ml,         // [n_rows, n_heads, n_splits, 2]
    const dtype *__restrict__ q,         // [n_rows, n_heads, HEAD_DIM]
    const dtype *__restrict__ k_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const dtype *__restrict__ v_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const int *__restrict__ slots,       // [n_rows]
    const int *__restrict__ pos,         // [n_rows]: the query's position; keys 0..pos are attended
    int n_heads, int n_kv_heads, int max_ctx, int split_len, float scale) {
    __shared__ float s_m[WARPS], s_l[WARPS], s_o[WARPS][HEAD_DIM];
    const int h = blockIdx.x, r = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int len = pos[r] + 1;
    const int begin = split * split_len, end = min(len, begin + split_len);
    const size_t part = ((size_t)r * n_heads + h) * n_splits + split;

    const int kvh = h / (n_heads / n_kv_heads);
    const size_t base = ((size_t)slots[r] * n_kv_heads + kvh) * max_ctx * HEAD_DIM;
    const dtype *qr = q + ((size_t)r * n_heads + h) * HEAD_DIM;
    float qv[DPL], o[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        qv[i] = d < HEAD_DIM ? to_f32(qr[d]) * scale : 0.0f;
        o[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int t = begin + warp; t < end; t += WARPS) {
        const dtype *kr = k_cache + base + (size_t)t * HEAD_DIM;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
            const int d = lane + 32 * i;
            if (d < HEAD_DIM) s += qv[i] * to_f32(kr[d]);
        }
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new), e = __expf(s - m_new);
        l = l * corr + e;
        const dtype *vr = v_cache + base + (size_t)t * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
            const int d = lane + 32 * i;
            o[i] = o[i] * corr + (d < HEAD_DIM ? e * to_f32(vr[d]) : 0.0f);
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i)
        if (lane + 32 * i < HEAD_DIM) s_o[warp][lane + 32 * i] = o[i];
    __syncthreads();
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) m_all = fmaxf(m_all, s_m[w]);
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w)
            if (s_l[w] > 0.0f) acc += s_o[w][d] * __expf(s_m[w] - m_all);
        part_out[part * HEAD_DIM + d] = acc;
    }
    if (threadIdx.x == 0) {
        float l_all = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w)
            if (s_l[w] > 0.0f) l_all += s_l[w] * __expf(s_m[w] - m_all);
        part_ml[part * 2] = m_all;
        part_ml[part * 2 + 1] = l_all;
    }
}
