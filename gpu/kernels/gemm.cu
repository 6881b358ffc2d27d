// y[m, n] (+)= sum_k a[m, k] * w[n, k] + bias[n] on tensor cores (wmma 16x16x16, f32 accumulate), for
// prefill and batched decode. Tiles of BM x BN with BK = 32, double-buffered through cp.async; WM x WN warps
// each own a (BM / WM) x (BN / WN) piece; grid = (ceil(N / BN), ceil(M / BM)). K is not split, so the
// result is deterministic. M and N are free; K must be a multiple of 8.
#include "common.cuh"
#include <mma.h>
using namespace nvcuda;

#ifndef BM
#define BM 64
#endif
#ifndef BN
#define BN 64
#endif
#ifndef WM
#define WM 2
#endif
#ifndef WN
#define WN 2
#endif
#define BK 32
#define LDS (BK + 8)  // padded smem row (halves): 80 bytes, keeps 16-byte alignment and spreads banks
#define N_THREADS (WM * WN * 32)
#define FM (BM / WM / 16)
#define FN (BN / WN / 16)

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = pred ? 16 : 0;  // 0 source bytes: the 16 destination bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void load_tile(dtype *as, dtype *ws, const dtype *a, const dtype *w, int M, int N,
                                          int K, int m0, int n0, int k0) {
    for (int i = threadIdx.x; i < (BM + BN) * (BK / 8); i += N_THREADS) {
        const int r = i / (BK / 8), c = (i % (BK / 8)) * 8;
        const bool is_a = r < BM;
        const int rr = is_a ? r : r - BM;
        const int g = (is_a ? m0 : n0) + rr;
        const bool ok = g < (is_a ? M : N) && k0 + c < K;
        const dtype *src = is_a ? a : w;
        cp_async16((is_a ? as : ws) + rr * LDS + c, ok ? src + (size_t)g * K + k0 + c : src, ok);
    }
}

extern "C" __global__ void __launch_bounds__(N_THREADS) gemm(float *__restrict__ y,           // [M, N]
                                                             const dtype *__restrict__ a,     // [M, K]
                                                             const dtype *__restrict__ w,     // [N, K]
                                                             const float *__restrict__ bias,  // [N] or null
                                                             int M, int N, int K, int accumulate) {
    __shared__ __align__(128) dtype smem[2 * (BM + BN) * LDS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    const int n_tiles = (K + BK - 1) / BK;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    load_tile(smem, smem + BM * LDS, a, w, M, N, K, m0, n0, 0);
    asm volatile("cp.async.commit_group;\n" ::);
    for (int t = 0; t < n_tiles; ++t) {
        dtype *as = smem + (t & 1) * (BM + BN) * LDS;  // this tile: [BM, LDS] then [BN, LDS]
        dtype *ws = as + BM * LDS;
        if (t + 1 < n_tiles) {
            dtype *next = smem + ((t + 1) & 1) * (BM + BN) * LDS;
            load_tile(next, next + BM * LDS, a, w, M, N, K, m0, n0, (t + 1) * BK);
            asm volatile("cp.async.commit_group;\n" ::);
            asm volatile("cp.async.wait_group 1;\n" ::);
        } else {
            asm volatile("cp.async.wait_group 0;\n" ::);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, dtype, wmma::row_major> fa[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, dtype, wmma::col_major> fb[FN];
#pragma unroll
            for (int i = 0; i < FM; ++i)
                wmma::load_matrix_sync(fa[i], as + (wm * FM * 16 + i * 16) * LDS + kk, LDS);
#pragma unroll
            for (int j = 0; j < FN; ++j)
                wmma::load_matrix_sync(fb[j], ws + (wn * FN * 16 + j * 16) * LDS + kk, LDS);
#pragma unroll
            for (int i = 0; i < FM; ++i)
#pragma unroll
                for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
        }
        __syncthreads();
    }

    // Epilogue: each warp stages one 16x16 fragment at a time in (now free) shared memory.
    float *stage = reinterpret_cast<float *>(smem) + warp * 256;
#pragma unroll
    for (int i = 0; i < FM; ++i) {
#pragma unroll
        for (int j = 0; j < FN; ++j) {
            wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            const int r = lane >> 1, c0 = (lane & 1) * 8;
            const int gm = m0 + wm * FM * 16 + i * 16 + r;
#pragma unroll
            for (int c = 0; c < 8; ++c) {
                const int gn = n0 + wn * FN * 16 + j * 16 + c0 + c;
                if (gm < M && gn < N) {
                    float *out = y + (size_t)gm * N + gn;
                    *out = (accumulate ? *out : 0.0f) + stage[r * 16 + c0 + c] + (bias ? bias[gn] : 0.0f);
                }
            }
            __syncwarp();
        }
    }
}
