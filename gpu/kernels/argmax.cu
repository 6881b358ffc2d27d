// ids[r] = the index of the largest logits[r, :] (the first one on ties, as numpy's argmax): greedy
// decoding on the device, so only token ids travel back to the host.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(1024) argmax(int *__restrict__ ids,             // [n_rows]
                                                          const float *__restrict__ logits,  // [n_rows, vocab]
                                                          int vocab) {
    __shared__ float s_val[32];
    __shared__ int s_idx[32];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int idx = vocab;  // past the end: loses every tie
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (v > best) {  // i grows, so the first maximum of this thread's share is kept
            best = v;
            idx = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, best, o);
        const int j = __shfl_xor_sync(0xffffffffu, idx, o);
        if (v > best || (v == best && j < idx)) {
            best = v;
            idx = j;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        s_val[warp] = best;
        s_idx[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? s_val[lane] : -INFINITY;
        idx = lane < (int)(blockDim.x >> 5) ? s_idx[lane] : vocab;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float v = __shfl_xor_sync(0xffffffffu, best, o);
            const int j = __shfl_xor_sync(0xffffffffu, idx, o);
            if (v > best || (v == best && j < idx)) {
                best = v;
                idx = j;
            }
        }
        if (lane == 0) ids[blockIdx.x] = idx < vocab ? idx : 0;
    }
}
