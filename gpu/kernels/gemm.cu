// y[m, n] (+)= sum_k a[m, k] * w[n, k] + bias[n] on tensor cores (mma.sync m16n8k16, f32 accumulate), for
// prefill and batched decode. Tiles of BM x BN move through shared memory in BK-wide slices, STAGES deep
// (cp.async ring, one barrier per slice); WM x WN warps each own a (BM / WM) x (BN / WN) piece, fed by
// ldmatrix.x4 from padded rows (conflict-free). grid = (ceil(N / BN), ceil(M / BM), splits).
//
// Arithmetic order: every output element accumulates its 16-wide k steps in ascending k, from its own row
// of a and column of w only, so the tile shape, BK and the number of rows M leave its bits unchanged.
// Split-K (gridDim.z > 1, chosen by the launcher from N and K only): block z covers k in
// [z * k_len, min(K, (z + 1) * k_len)) and writes its raw sums to part[z, m, n]; gemm_reduce.cu then adds
// the partials in ascending z, the residual and the bias (no floating-point atomics). Without a split the
// epilogue writes y = (accumulate ? y : 0) + acc + bias. M and N are free; K must be a multiple of 8.
#include "tensor_core.cuh"

#ifndef BM
#define BM 128
#endif
#ifndef BN
#define BN 128
#endif
#ifndef WM
#define WM 2
#endif
#ifndef WN
#define WN 4
#endif
#ifndef BK
#define BK 32
#endif
#ifndef STAGES
#define STAGES 4
#endif
#define LDS (BK + 8)  // padded smem row (halves): 80 or 144 bytes, 16-byte aligned, ldmatrix conflict-free
#define N_THREADS (WM * WN * 32)
#define TM (BM / WM)  // rows of one warp's piece
#define TN (BN / WN)  // columns of one warp's piece
#define MI (TM / 16)
#define NI (TN / 8)
#define STAGE_HALVES ((BM + BN) * LDS)
static_assert(TM % 16 == 0 && TN % 16 == 0, "a warp's piece is a whole number of 16 x 16 blocks");
static_assert(BK % 16 == 0 && STAGES >= 2, "BK a multiple of 16, at least two stages");

#define CH (BK / 8)             // 16-byte chunks per row of a slice
#define RPI (N_THREADS / CH)    // rows of a slice that one pass of the block's threads covers
static_assert(N_THREADS % CH == 0 && BM % RPI == 0 && BN % RPI == 0, "whole passes over the tile rows");

// y = (accumulate ? y : 0) + v + bias for the columns gn, gn + 1 (gn + 1 only when < N) of one row.
__device__ __forceinline__ void finish_pair(float *__restrict__ row, const float *__restrict__ bias, int gn, int N,
                                            float v0, float v1, int accumulate) {
    const bool even = (N & 1) == 0, two = gn + 1 < N;
    float p0 = 0.0f, p1 = 0.0f;
    if (accumulate) {
        if (even) {
            const float2 p = *reinterpret_cast<const float2 *>(row + gn);
            p0 = p.x;
            p1 = p.y;
        } else {
            p0 = row[gn];
            p1 = two ? row[gn + 1] : 0.0f;
        }
    }
    v0 = p0 + v0 + (bias ? bias[gn] : 0.0f);
    v1 = p1 + v1 + (bias && two ? bias[gn + 1] : 0.0f);
    if (even) {
        *reinterpret_cast<float2 *>(row + gn) = make_float2(v0, v1);
    } else {
        row[gn] = v0;
        if (two) row[gn + 1] = v1;
    }
}

extern "C" __global__ void __launch_bounds__(N_THREADS) gemm(float *__restrict__ y,           // [M, N]
                                                             const dtype *__restrict__ a,     // [M, K]
                                                             const dtype *__restrict__ w,     // [N, K]
                                                             const float *__restrict__ bias,  // [N] or null
                                                             float *__restrict__ part,  // [splits, M, N]
                                                             int M, int N, int K, int k_len, int accumulate) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    dtype *smem = reinterpret_cast<dtype *>(smem_raw);  // STAGES x ([BM, LDS] a, then [BN, LDS] w)
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int k_begin = blockIdx.z * k_len;
    const int k_end = min(K, k_begin + k_len);
    const int n_tiles = (k_end - k_begin + BK - 1) / BK;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    // This thread's 16-byte chunks of a slice: column lcol of rows lrow + i * RPI of the a tile, then of the
    // w tile; rows past M / N and columns past k_end are zero-filled (they add exact zeros to the sums).
    const int lrow = threadIdx.x / CH, lcol = (threadIdx.x % CH) * 8;
    const dtype *a_src = a + (size_t)(m0 + lrow) * K + lcol;
    const dtype *w_src = w + (size_t)(n0 + lrow) * K + lcol;
    const int a_left = M - m0 - lrow, w_left = N - n0 - lrow;
    auto load = [&](dtype *st, int k0) {
        const bool k_ok = k0 + lcol < k_end;
#pragma unroll
        for (int i = 0; i < BM / RPI; ++i) {
            const bool ok = k_ok && i * RPI < a_left;
            cp_async16(st + (lrow + i * RPI) * LDS + lcol, ok ? a_src + (size_t)(i * RPI) * K + k0 : a, ok);
        }
#pragma unroll
        for (int i = 0; i < BN / RPI; ++i) {
            const bool ok = k_ok && i * RPI < w_left;
            cp_async16(st + (BM + lrow + i * RPI) * LDS + lcol, ok ? w_src + (size_t)(i * RPI) * K + k0 : w, ok);
        }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < n_tiles) load(smem + s * STAGE_HALVES, k_begin + s * BK);
        asm volatile("cp.async.commit_group;\n" ::);
    }

    // ldmatrix row addresses of this lane: a (16 x 16 blocks: rows lane % 16, k half lane / 16) and w (two
    // 8-column blocks x two k halves: rows lane % 8 + 8 * (lane / 16), k half (lane / 8) % 2)
    const int a_off = (wm * TM + (lane & 15)) * LDS + (lane >> 4) * 8;
    const int w_off = BM * LDS + (wn * TN + (lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8;

    for (int t = 0; t < n_tiles; ++t) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2));
        __syncthreads();  // slice t landed for every thread; the stage refilled below was read by all
        const int next = t + STAGES - 1;
        if (next < n_tiles) load(smem + (next % STAGES) * STAGE_HALVES, k_begin + next * BK);
        asm volatile("cp.async.commit_group;\n" ::);

        const dtype *st = smem + (t % STAGES) * STAGE_HALVES;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[MI][4], bf[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) ldmatrix_x4(af[i], st + a_off + i * 16 * LDS + kk);
#pragma unroll
            for (int j = 0; j < NI; j += 2) {
                unsigned r[4];
                ldmatrix_x4(r, st + w_off + j * 8 * LDS + kk);
                bf[j][0] = r[0];
                bf[j][1] = r[1];
                bf[j + 1][0] = r[2];
                bf[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) mma16816(acc[i][j], af[i], bf[j][0], bf[j][1]);
        }
    }
    asm volatile("cp.async.wait_group 0;\n" ::);

    // Epilogue straight from the accumulators: lane holds columns 2 * (lane % 4) + {0, 1} of rows lane / 4
    // and lane / 4 + 8 of each 16 x 8 block (8-byte stores when N is even).
    const int row0 = m0 + wm * TM + (lane >> 2), col0 = n0 + wn * TN + (lane & 3) * 2;
    if (gridDim.z == 1) {
#pragma unroll
        for (int i = 0; i < MI; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int gm = row0 + i * 16 + h * 8;
                if (gm >= M) continue;
#pragma unroll
                for (int j = 0; j < NI; ++j) {
                    const int gn = col0 + j * 8;
                    if (gn < N)
                        finish_pair(y + (size_t)gm * N, bias, gn, N, acc[i][j][2 * h], acc[i][j][2 * h + 1],
                                    accumulate);
                }
            }
        return;
    }

    // split-K: this block's raw sums to part[z]
    const size_t mn = (size_t)M * N;
    float *mine = part + blockIdx.z * mn;
    const bool even = (N & 1) == 0;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int gm = row0 + i * 16 + h * 8;
            if (gm >= M) continue;
#pragma unroll
            for (int j = 0; j < NI; ++j) {
                const int gn = col0 + j * 8;
                if (gn >= N) continue;
                float *p = mine + (size_t)gm * N + gn;
                if (even) {
                    *reinterpret_cast<float2 *>(p) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                } else {
                    p[0] = acc[i][j][2 * h];
                    if (gn + 1 < N) p[1] = acc[i][j][2 * h + 1];
                }
            }
        }
}
