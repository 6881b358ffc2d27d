// y[m, n] (+)= sum_k x[m, k] * w[n, k] + bias[n] for up to 64 rows m (decode): memory-bound, each weight
// row streamed once with 16-byte loads and applied to every row of x. A block of 8 warps covers
// 8 / ksplit weight rows; the ksplit warps of a row take interleaved shares of K and are summed through
// shared memory. f32 accumulation. The order of the additions for an output depends only on (N, K,
// ksplit), never on M, so a row's result is the same whatever the batch (batch invariance).
// -D MAX_M: most rows of x per launch (1, 2, 4, 8, 16, 32 or 64). K must be a multiple of 8.
#include "common.cuh"

#ifndef MAX_M
#define MAX_M 1
#endif
#define UNROLL (MAX_M <= 8 ? 4 : 2)

__device__ __forceinline__ void fma_chunk(float (&acc)[MAX_M], const uint4 &wv, const uint4 *xr, int n_chunks,
                                          int c, int M) {
    float wf[8];
    unpack8(wv, wf);
#pragma unroll
    for (int m = 0; m < MAX_M; ++m) {
        if (m < M) {
            float xf[8];
            unpack8(__ldg(xr + (size_t)m * n_chunks + c), xf);
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[m] = fmaf(wf[i], xf[i], acc[m]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) gemv(float *__restrict__ y,          // [M, N]
                                                       const dtype *__restrict__ x,    // [M, K]
                                                       const dtype *__restrict__ w,    // [N, K]
                                                       const float *__restrict__ bias, // [N] or null
                                                       int M, int N, int K, int ksplit, int accumulate) {
    __shared__ float partial[8][MAX_M];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * (8 / ksplit) + warp / ksplit;
    const int part = warp % ksplit;
    float acc[MAX_M];
#pragma unroll
    for (int m = 0; m < MAX_M; ++m) acc[m] = 0.0f;

    if (row < N) {
        const int n_chunks = K >> 3;  // 16-byte chunks per row
        const int step = 32 * ksplit;
        const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)row * K);
        const uint4 *xr = reinterpret_cast<const uint4 *>(x);
        int c = part * 32 + lane;
        for (; c + (UNROLL - 1) * step < n_chunks; c += UNROLL * step) {
            uint4 wv[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) wv[u] = __ldcs(wr + c + u * step);
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) fma_chunk(acc, wv[u], xr, n_chunks, c + u * step, M);
        }
        for (; c < n_chunks; c += step) fma_chunk(acc, __ldcs(wr + c), xr, n_chunks, c, M);
    }
#pragma unroll
    for (int m = 0; m < MAX_M; ++m) acc[m] = warp_sum(acc[m]);  // every lane holds every row's sum
    if (ksplit > 1) {
#pragma unroll
        for (int m = 0; m < MAX_M; ++m)
            if (lane == (m & 31)) partial[warp][m] = acc[m];
        __syncthreads();
    }
    if (row >= N || part != 0) return;
    const float b = bias ? bias[row] : 0.0f;
#pragma unroll
    for (int m = 0; m < MAX_M; ++m) {
        if (m < M && lane == (m & 31)) {
            float s = acc[m];
            if (ksplit > 1) {
                s = 0.0f;
                for (int p = 0; p < ksplit; ++p) s += partial[warp + p][m];
            }
            float *out = y + (size_t)m * N + row;
            *out = (accumulate ? *out : 0.0f) + s + b;
        }
    }
}
