// Split a fused QKV row, rotate q and k (RoPE: interleaved pairs, or NEOX halves; Phi-3 frequency factors
// and attention factor), write q in the operand type and append k, v to the KV cache of the row's slot.
// KV cache per layer: [n_slots, n_kv_heads, max_ctx, head_dim]. rope_dim == 0 means no rotation (gpt2).
#include "common.cuh"

extern "C" __global__ void rope_kv(dtype *__restrict__ q_out,            // [n_rows, n_heads, head_dim]
                                   dtype *__restrict__ k_cache,          // [n_slots, n_kv, max_ctx, hd]
                                   dtype *__restrict__ v_cache,          // [n_slots, n_kv, max_ctx, hd]
                                   const float *__restrict__ qkv,        // [n_rows, (n_heads + 2 n_kv) hd]
                                   const int *__restrict__ slots,        // [n_rows]
                                   const int *__restrict__ pos,          // [n_rows]
                                   const float *__restrict__ freq_factors,  // [rope_dim / 2] or null
                                   int n_heads, int n_kv_heads, int head_dim, int rope_dim, int neox,
                                   float theta, float attn_factor, int max_ctx) {
    const int r = blockIdx.x;
    const int p = pos[r];
    const int half = head_dim / 2, rhalf = rope_dim / 2;
    const float *row = qkv + (size_t)r * (n_heads + 2 * n_kv_heads) * head_dim;
    const size_t cache_base = (size_t)slots[r] * n_kv_heads * max_ctx * head_dim + (size_t)p * head_dim;
    const float log2_theta = log2f(theta);

    // Rotated pairs of q heads then k heads.
    for (int i = threadIdx.x; i < (n_heads + n_kv_heads) * half; i += blockDim.x) {
        const int h = i / half, j = i % half;
        int d0, d1;
        bool rotate;
        if (neox) {
            rotate = j < rhalf;
            d0 = rotate ? j : rope_dim + 2 * (j - rhalf);
            d1 = rotate ? j + rhalf : d0 + 1;
        } else {
            rotate = 2 * j < rope_dim;
            d0 = 2 * j;
            d1 = d0 + 1;
        }
        const float *src = row + h * head_dim;
        float x0 = src[d0], x1 = src[d1];
        if (rotate) rope_pair(x0, x1, p, j, rope_dim, log2_theta, freq_factors, attn_factor);
        if (h < n_heads) {
            dtype *dst = q_out + ((size_t)r * n_heads + h) * head_dim;
            dst[d0] = from_f32(x0);
            dst[d1] = from_f32(x1);
        } else {
            dtype *dst = k_cache + cache_base + (size_t)(h - n_heads) * max_ctx * head_dim;
            dst[d0] = from_f32(x0);
            dst[d1] = from_f32(x1);
        }
    }
    // Values, unrotated.
    const float *v = row + (n_heads + n_kv_heads) * head_dim;
    for (int i = threadIdx.x; i < n_kv_heads * head_dim; i += blockDim.x) {
        const int h = i / head_dim, d = i % head_dim;
        v_cache[cache_base + (size_t)h * max_ctx * head_dim + d] = from_f32(v[i]);
    }
}
