// Greedy token ids on the device, so only ids travel back to the host. Each block reduces a slice of a
// row of logits to its largest value (first index on ties) and folds it into best[row] with a 64-bit
// atomicMax on (order-preserving value bits << 32 | ~index): max is order-independent, so the result is
// deterministic. best[] must be zeroed first; the index is ~(best & 0xffffffff).
#include "common.cuh"

__device__ __forceinline__ unsigned long long pack(float v, int i) {
    unsigned bits = __float_as_uint(v);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // monotone in v
    return ((unsigned long long)bits << 32) | (unsigned)(~i);
}

extern "C" __global__ void __launch_bounds__(256) argmax(unsigned long long *__restrict__ best,  // [n_rows]
                                                         const float *__restrict__ logits,  // [n_rows, vocab]
                                                         int vocab) {
    pdl_launch_dependents();
    pdl_wait();
    __shared__ unsigned long long s_best[8];
    const float *row = logits + (size_t)blockIdx.y * vocab;
    unsigned long long b = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < vocab; i += gridDim.x * blockDim.x) {
        const unsigned long long k = pack(row[i], i);
        b = k > b ? k : b;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long other = __shfl_xor_sync(0xffffffffu, b, o);
        b = other > b ? other : b;
    }
    if ((threadIdx.x & 31) == 0) s_best[threadIdx.x >> 5] = b;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) b = s_best[w] > b ? s_best[w] : b;
        atomicMax(best + blockIdx.y, b);
    }
}
