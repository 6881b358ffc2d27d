// Shared device helpers: the operand type (f16, or bf16 with -DUSE_BF16), conversions, warp reductions.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

#ifdef USE_BF16
typedef __nv_bfloat16 dtype;
typedef __nv_bfloat162 dtype2;
__device__ __forceinline__ float to_f32(dtype x) { return __bfloat162float(x); }
__device__ __forceinline__ dtype from_f32(float x) { return __float2bfloat16(x); }
__device__ __forceinline__ float2 to_f32x2(dtype2 x) { return __bfloat1622float2(x); }
#else
typedef __half dtype;
typedef __half2 dtype2;
__device__ __forceinline__ float to_f32(dtype x) { return __half2float(x); }
__device__ __forceinline__ dtype from_f32(float x) { return __float2half_rn(x); }
__device__ __forceinline__ float2 to_f32x2(dtype2 x) { return __half22float2(x); }
#endif

// Eight operands packed in 16 bytes -> eight floats.
__device__ __forceinline__ void unpack8(const uint4 &u, float f[8]) {
    const dtype2 *h = reinterpret_cast<const dtype2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 v = to_f32x2(h[i]);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Programmatic dependent launch (sm_90). A kernel launched with the programmatic-serialization attribute
// (the engine's CUDA graphs, `Runtime.programmatic`) may start while the kernel before it still runs:
// pdl_launch_dependents() lets the next kernel start, pdl_wait() blocks until the previous kernel has
// finished and its writes are visible. Before pdl_wait() a kernel may read only what no kernel writes
// (weights) and may write nothing. Launched without the attribute both are no-ops.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // partial[] may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < n_warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}

// RoPE of one pair (x0, x1) with frequency index j at position pos: theta^(-2j/rope_dim), divided by the
// Phi-3 factor of j when given, cos and sin scaled by attn_factor. rope_kv.cu and gemv.cu's epilogue share
// it, so prefill and decode rotate identically.
__device__ __forceinline__ void rope_pair(float &x0, float &x1, int pos, int j, int rope_dim, float log2_theta,
                                          const float *__restrict__ freq_factors, float attn_factor) {
    float inv_freq = exp2f(-(2.0f * j / rope_dim) * log2_theta);
    if (freq_factors) inv_freq /= freq_factors[j];
    float s, c;
    sincosf((float)pos * inv_freq, &s, &c);
    c *= attn_factor;
    s *= attn_factor;
    const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    x0 = y0;
    x1 = y1;
}
