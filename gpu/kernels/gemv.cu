// y[m, n] (+)= sum_k x[m, k] * w[n, k] + bias[n] for up to 64 rows m (decode and short prompts), on tensor
// cores without shared-memory tiles: each warp streams 8 weight rows straight from global memory with
// 16-byte loads into mma.sync.m16n8k16 B fragments, and applies them to every 16-row tile of x (rows
// past M read as zero). Within each 32-wide k block the four lanes of a weight row hold 8 consecutive
// k each, and the x fragments use the same k order, so the product is exact. ksplit warps cover one group
// of 8 weight rows: they take consecutive ranges of k blocks (so each lane reads runs of contiguous
// weights) and are summed through (dynamic) shared memory in a fixed order; a block holds one group, or
// several with the fused norm. The additions behind an output depend only on (N, K, ksplit), never on M
// or the groups per block: a row's result is the same whatever the batch. f32 accumulation.
// -D MAX_M: most rows of x per launch (8, 16, 32 or 64; with 8 the upper half of the single 16-row tile is
// known to be zero and never loaded). K must be a multiple of 8.
// -D EPI_SWIGLU=1: the weight rows interleave gate and up (row 2j = gate j, row 2j + 1 = up j), and the
// output is y[m, j] = silu(gate) * up in the operand type, [M, N / 2]: what swiglu.cu computes from the same
// f32 sums, with no f32 round trip and no separate launch.
// -D EPI_ROPE=1: w is the fused q|k|v projection of a model whose rotated pairs are adjacent columns (the
// engine permutes NEOX rows at load), and the epilogue does what rope_kv.cu does: rotate q and k, write q
// (operand) to q_out [M, n_heads, head_dim] and append k, v to the caches at (slots[m], pos[m]).
// Fused RMSNorm (MAX_M == 8 only, norm_w not null): x is the f32 residual [M, K]; the block normalises its
// M rows itself, exactly as rmsnorm.cu with this block's size does (bit-identical operands: a row's result
// does not depend on which of the two paths the batch took), into shared memory, and the main loop reads
// the x fragments from there. The first weight loads are issued before the norm, so they are in flight
// while it runs: one launch instead of rmsnorm + gemv.
#include "common.cuh"

#ifndef MAX_M
#define MAX_M 16
#endif
#define MT ((MAX_M + 15) / 16)  // 16-row tiles of x
#ifndef EPI_SWIGLU
#define EPI_SWIGLU 0
#endif
#ifndef EPI_ROPE
#define EPI_ROPE 0
#endif
// k blocks in flight per warp, bounded by the registers their x fragments take (<= 128 per thread)
#ifndef PIPE
#define PIPE 0  // 1: software-pipeline the weight loads (registers for two sets of UNROLL k blocks)
#endif
#define UNROLL (PIPE ? (MT == 1 ? (MAX_M <= 8 ? 8 : 4) : (MT == 2 ? 2 : 1)) : (MT == 1 ? 8 : (MT == 2 ? 4 : 2)))
#define STAGE_PAD 32  // operands of padding per staged row (rows 64 bytes apart mod 128: no bank conflicts)

__device__ __forceinline__ void mma16816(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
#ifdef USE_BF16
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// Eight operands of row `row` of x (rows `stride` apart) from column k: global memory through the
// read-only path, or (STAGED) the fused norm's rows in shared memory.
template <bool STAGED>
__device__ __forceinline__ uint4 load_x(const dtype *__restrict__ x, int row, int stride, int k) {
    const uint4 *at = reinterpret_cast<const uint4 *>(x + (size_t)row * stride + k);
    return STAGED ? *at : __ldg(at);
}

// Rows 0..M-1 (M <= 8) of the f32 residual x [M, K], RMS-normalised with weight nw [K] into stage [M][ks]
// (operand type). Same arithmetic as rmsnorm.cu with blockDim.x threads: thread i sums squares of elements
// i, i + blockDim.x, ... in order (row_sumsq's order; the rows interleaved so their loads are in flight
// together), then block_sum's tree; x * rstd * w rounded once.
__device__ __forceinline__ void stage_normed(dtype *stage, const float *__restrict__ x, const float *__restrict__ nw,
                                             int M, int K, int ks, float eps) {
    __shared__ float s_part[8][32], s_rstd[8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float ss[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) ss[m] = 0.0f;
#pragma unroll 8
    for (int i = threadIdx.x; i < K; i += blockDim.x)
#pragma unroll
        for (int m = 0; m < 8; ++m)
            if (m < M) ss[m] = fmaf(x[(size_t)m * K + i], x[(size_t)m * K + i], ss[m]);
#pragma unroll
    for (int m = 0; m < 8; ++m) {
        const float v = warp_sum(ss[m]);
        if (m < M && lane == 0) s_part[m][warp] = v;
    }
    __syncthreads();
    if (warp == 0)
#pragma unroll
        for (int m = 0; m < 8; ++m) {
            const float total = warp_sum(lane < n_warps && m < M ? s_part[m][lane] : 0.0f);
            if (m < M && lane == 0) s_rstd[m] = rsqrtf(total / K + eps);
        }
    __syncthreads();
    const int k8 = K / 8;
    for (int idx = threadIdx.x; idx < M * k8; idx += blockDim.x) {
        const int m = idx / k8, c = (idx - m * k8) * 8;
        const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)m * K + c);
        const float4 *wr = reinterpret_cast<const float4 *>(nw + c);
        const float4 a = xr[0], b = xr[1], ga = wr[0], gb = wr[1];
        const float r = s_rstd[m];
        __align__(16) dtype h[8] = {from_f32(a.x * r * ga.x), from_f32(a.y * r * ga.y), from_f32(a.z * r * ga.z),
                                    from_f32(a.w * r * ga.w), from_f32(b.x * r * gb.x), from_f32(b.y * r * gb.y),
                                    from_f32(b.z * r * gb.z), from_f32(b.w * r * gb.w)};
        *reinterpret_cast<uint4 *>(stage + (size_t)m * ks + c) = *reinterpret_cast<const uint4 *>(h);
    }
    __syncthreads();
}

// One warp's k range of its 8 weight rows.
struct Span {
    const dtype *wr;  // this lane's weight row
    int k_end, t, g, M;
};

// This lane's weights at column k (zero past the range).
__device__ __forceinline__ uint4 load_w(const Span &sp, int k) {
    return k < sp.k_end ? __ldcs(reinterpret_cast<const uint4 *>(sp.wr + k)) : make_uint4(0, 0, 0, 0);
}

// UNROLL k blocks from kb: every load issued before the mma's. LOAD_W: load this pass's weights (else wv
// holds them already); with PIPE the next pass's weights are also put in flight and left in wv. x rows are
// xs[row * stride + k] (global memory, or with STAGED the fused norm's rows in shared memory).
template <bool LOAD_W, bool STAGED>
__device__ __forceinline__ void pass(float (&acc)[MT][4], uint4 (&wv)[UNROLL], const Span &sp, const dtype *xs,
                                     int stride, int kb) {
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 wn[UNROLL], xa[UNROLL][MT], xb[UNROLL][MT];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int k = kb + u * 32 + 8 * sp.t;
        if (PIPE) wn[u] = load_w(sp, k + UNROLL * 32);
        if (LOAD_W) wv[u] = load_w(sp, k);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const int r0 = mt * 16 + sp.g, r1 = r0 + 8;
            xa[u][mt] = (k < sp.k_end && r0 < sp.M) ? load_x<STAGED>(xs, r0, stride, k) : zero;
            xb[u][mt] = (MAX_M > 8 && k < sp.k_end && r1 < sp.M) ? load_x<STAGED>(xs, r1, stride, k) : zero;
        }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        if (kb + u * 32 >= sp.k_end) break;  // warp-uniform
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            mma16816(acc[mt], xa[u][mt].x, xb[u][mt].x, xa[u][mt].y, xb[u][mt].y, wv[u].x, wv[u].y);
            mma16816(acc[mt], xa[u][mt].z, xb[u][mt].z, xa[u][mt].w, xb[u][mt].w, wv[u].z, wv[u].w);
        }
    }
    if (PIPE) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) wv[u] = wn[u];
    }
}

extern "C" __global__ void __launch_bounds__(512) gemv(
    void *__restrict__ y,                  // [M, N] f32 (see EPI_SWIGLU; unused with EPI_ROPE)
    const void *__restrict__ x_in,         // [M, K] operand, or f32 with norm_w
    const dtype *__restrict__ w,           // [N, K]
    const float *__restrict__ bias,        // [N] or null
    int M, int N, int K, int ksplit, int accumulate,
    // EPI_ROPE only (null / 0 otherwise):
    dtype *__restrict__ q_out,             // [M, n_heads, head_dim]
    dtype *__restrict__ k_cache,           // [n_slots, n_kv, max_ctx, head_dim]
    dtype *__restrict__ v_cache,           // [n_slots, n_kv, max_ctx, head_dim]
    const int *__restrict__ slots,         // [M]
    const int *__restrict__ pos,           // [M]
    const float *__restrict__ freq_factors,  // [rope_dim / 2] or null
    int n_heads, int n_kv_heads, int head_dim, int rope_dim, float theta, float attn_factor, int max_ctx,
    const float *__restrict__ norm_w,      // [K]: fused RMSNorm of x (MAX_M == 8), or null
    float eps) {
    // [n_warps][MT][4][32] when ksplit > 1, then the staged rows [M][ks]
    extern __shared__ float partial[];
    const int ks = K + STAGE_PAD;
    dtype *stage = reinterpret_cast<dtype *>(partial + (ksplit > 1 ? (blockDim.x >> 5) * MT * 4 * 32 : 0));
    // blockDim.x == 32 * ksplit * groups: warp w takes part w % ksplit of K for the group of 8 weight rows
    // w / ksplit (groups > 1 only with the fused norm: its rows are staged once for several groups)
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int part = warp % ksplit, grp = warp / ksplit;
    const int g = lane >> 2, t = lane & 3;
    const int n0 = (blockIdx.x * (blockDim.x / (32 * ksplit)) + grp) * 8;  // this warp's 8 weight rows
    const int n = n0 + g;  // the weight row this lane loads
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][i] = 0.0f;

    const dtype *wr = w + (size_t)min(n, N - 1) * K;  // rows past N repeat the last; never written
    const int per_part = ((K + 31) / 32 + ksplit - 1) / ksplit;  // k blocks per warp
    const int k_end = min(K, (part + 1) * per_part * 32);
    const int k_begin = part * per_part * 32;
    const Span sp{wr, k_end, t, g, M};
    uint4 wv[UNROLL];
    if (MAX_M == 8 && norm_w != nullptr) {  // fused norm: the first weights are in flight while it runs
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) wv[u] = load_w(sp, k_begin + u * 32 + 8 * t);
        stage_normed(stage, reinterpret_cast<const float *>(x_in), norm_w, M, K, ks, eps);
        if (n0 < N) {
            pass<false, true>(acc, wv, sp, stage, ks, k_begin);
            for (int kb = k_begin + UNROLL * 32; kb < k_end; kb += UNROLL * 32)
                pass<!PIPE, true>(acc, wv, sp, stage, ks, kb);
        }
    } else if (n0 < N) {
        const dtype *x = reinterpret_cast<const dtype *>(x_in);
        if (PIPE)
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) wv[u] = load_w(sp, k_begin + u * 32 + 8 * t);
        for (int kb = k_begin; kb < k_end; kb += UNROLL * 32) pass<!PIPE, false>(acc, wv, sp, x, K, kb);
    }
    if (ksplit > 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) partial[((warp * MT + mt) * 4 + i) * 32 + lane] = acc[mt][i];
        __syncthreads();
        if (part != 0) return;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float s = 0.0f;
                for (int p = 0; p < ksplit; ++p) s += partial[(((grp * ksplit + p) * MT + mt) * 4 + i) * 32 + lane];
                acc[mt][i] = s;
            }
    }
    if (n0 >= N) return;
    // accumulator layout: acc[mt][0..1] = rows mt*16 + g, cols 2t, 2t+1; acc[mt][2..3] = rows + 8
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int m = mt * 16 + g + (i >> 1) * 8, col = n0 + 2 * t + (i & 1);
            if (m >= M || col >= N) continue;
            const float v = acc[mt][i] + (bias ? bias[col] : 0.0f);
#if EPI_SWIGLU
            if (i & 1) {  // (gate, up) = (cols 2j, 2j + 1) sit in this lane's pair
                const float a = acc[mt][i - 1] + (bias ? bias[col - 1] : 0.0f);
                reinterpret_cast<dtype *>(y)[(size_t)m * (N / 2) + col / 2] = from_f32(a / (1.0f + __expf(-a)) * v);
            }
#elif EPI_ROPE
            if (i & 1) {  // the pair (col - 1, col) of one head
                float x0 = acc[mt][i - 1] + (bias ? bias[col - 1] : 0.0f), x1 = v;
                const int c0 = col - 1, q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
                const int d = c0 % head_dim;
                if (c0 < q_dim + kv_dim && d < rope_dim)
                    rope_pair(x0, x1, pos[m], d / 2, rope_dim, log2f(theta), freq_factors, attn_factor);
                dtype *dst;
                if (c0 < q_dim) {
                    dst = q_out + (size_t)m * q_dim + c0;
                } else {
                    const int kv_col = c0 < q_dim + kv_dim ? c0 - q_dim : c0 - q_dim - kv_dim;
                    const size_t at = (((size_t)slots[m] * n_kv_heads + kv_col / head_dim) * max_ctx + pos[m]) * head_dim + d;
                    dst = (c0 < q_dim + kv_dim ? k_cache : v_cache) + at;
                }
                dst[0] = from_f32(x0);
                dst[1] = from_f32(x1);
            }
#else
            float *out = reinterpret_cast<float *>(y) + (size_t)m * N + col;
            *out = (accumulate ? *out : 0.0f) + v;
#endif
        }
}
