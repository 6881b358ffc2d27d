// Causal attention for a prompt (flash-style tiling): one block per (32 queries, head). Keys and values of
// positions 0 .. start + T - 1 are read from the KV cache (rope_kv wrote the prompt's own) in tiles of 64
// staged in shared memory; each query is owned by 4 threads that split head_dim, and the online softmax
// is updated once per 16 keys. Query t sits at position start + t. GQA as in attention_decode. -D HEAD_DIM.
#include "common.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define QB 32                 // queries per block
#define KT 64                 // keys per shared-memory tile
#define KC 16                 // keys per softmax update
#define DQ (HEAD_DIM / 4)     // dims per thread

extern "C" __global__ void __launch_bounds__(QB * 4) attention_prefill(
    dtype *__restrict__ out,             // [T, n_heads * HEAD_DIM]
    const dtype *__restrict__ q,         // [T, n_heads, HEAD_DIM]
    const dtype *__restrict__ k_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const dtype *__restrict__ v_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    int slot, int start, int T, int n_heads, int n_kv_heads, int max_ctx, float scale) {
    __shared__ __align__(16) dtype ks[KT * HEAD_DIM];
    __shared__ __align__(16) dtype vs[KT * HEAD_DIM];
    const int h = blockIdx.y, q0 = blockIdx.x * QB;
    const int qi = threadIdx.x >> 2, sub = threadIdx.x & 3;
    const int t = q0 + qi;
    const int qpos = start + t;  // this thread's query position (may be past the prompt: then unused)
    const int kvh = h / (n_heads / n_kv_heads);
    const size_t base = ((size_t)slot * n_kv_heads + kvh) * max_ctx * HEAD_DIM;
    const int kv_len = start + T;
    const int last_pos = start + min(T, q0 + QB) - 1;  // the block's last query position

    float qv[DQ], o[DQ];
#pragma unroll
    for (int i = 0; i < DQ; ++i) {
        qv[i] = t < T ? to_f32(q[((size_t)t * n_heads + h) * HEAD_DIM + sub * DQ + i]) * scale : 0.0f;
        o[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    for (int k0 = 0; k0 <= last_pos; k0 += KT) {
        // Stage KT keys and values (16-byte chunks; rows past kv_len are zero and masked below).
        for (int i = threadIdx.x; i < KT * HEAD_DIM / 8; i += blockDim.x) {
            const int r = i / (HEAD_DIM / 8), c = (i % (HEAD_DIM / 8)) * 8;
            uint4 kz = make_uint4(0, 0, 0, 0), vz = kz;
            if (k0 + r < kv_len) {
                kz = *reinterpret_cast<const uint4 *>(k_cache + base + (size_t)(k0 + r) * HEAD_DIM + c);
                vz = *reinterpret_cast<const uint4 *>(v_cache + base + (size_t)(k0 + r) * HEAD_DIM + c);
            }
            *reinterpret_cast<uint4 *>(ks + r * HEAD_DIM + c) = kz;
            *reinterpret_cast<uint4 *>(vs + r * HEAD_DIM + c) = vz;
        }
        __syncthreads();
        for (int c0 = 0; c0 < KT && k0 + c0 <= last_pos; c0 += KC) {
            float s[KC];
            float cmax = -INFINITY;
#pragma unroll
            for (int j = 0; j < KC; ++j) {
                const dtype *kr = ks + (c0 + j) * HEAD_DIM + sub * DQ;
                float acc = 0.0f;
#pragma unroll
                for (int i = 0; i < DQ; i += 2) {
                    const float2 kf = to_f32x2(*reinterpret_cast<const dtype2 *>(kr + i));
                    acc = fmaf(qv[i], kf.x, fmaf(qv[i + 1], kf.y, acc));
                }
                acc += __shfl_xor_sync(0xffffffffu, acc, 1);
                acc += __shfl_xor_sync(0xffffffffu, acc, 2);
                s[j] = (k0 + c0 + j <= qpos) ? acc : -INFINITY;
                cmax = fmaxf(cmax, s[j]);
            }
            if (cmax == -INFINITY) continue;  // every key of this chunk is in this query's future
            const float m_new = fmaxf(m, cmax);
            const float corr = __expf(m - m_new);  // 0 while m is still -inf
            l *= corr;
#pragma unroll
            for (int i = 0; i < DQ; ++i) o[i] *= corr;
#pragma unroll
            for (int j = 0; j < KC; ++j) {
                const float p = __expf(s[j] - m_new);
                l += p;
                const dtype *vr = vs + (c0 + j) * HEAD_DIM + sub * DQ;
#pragma unroll
                for (int i = 0; i < DQ; i += 2) {
                    const float2 vf = to_f32x2(*reinterpret_cast<const dtype2 *>(vr + i));
                    o[i] = fmaf(p, vf.x, o[i]);
                    o[i + 1] = fmaf(p, vf.y, o[i + 1]);
                }
            }
            m = m_new;
        }
        __syncthreads();
    }
    if (t < T) {
        dtype *dst = out + ((size_t)t * n_heads + h) * HEAD_DIM + sub * DQ;
        const float inv = 1.0f / l;
#pragma unroll
        for (int i = 0; i < DQ; ++i) dst[i] = from_f32(o[i] * inv);
    }
}
