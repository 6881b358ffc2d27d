// y[m, n] (+)= sum_k x[m, k] * w[n, k] + bias[n] for up to 64 rows m (decode and short prompts), on tensor
// cores without shared-memory tiles: each warp streams 8 weight rows straight from global memory into
// mma.sync.m16n8k16 B fragments, and applies them to every 16-row tile of x (rows past M read as zero).
// Within each 64-wide k chunk the four lanes of a weight row hold 16 consecutive k each (two 16-byte loads
// of operands, or one of Q8_0 quants: the same bytes with half the load instructions), as two halves of 8
// that feed two 32-wide mma steps, and the x fragments use the same k order, so the product is exact. A
// block of ksplit warps covers one group of 8 weight rows: its warps take consecutive ranges of k chunks (so
// each lane reads runs of contiguous weights) and are summed through (dynamic) shared memory in a fixed
// order. The additions behind an output depend only on (N, K, ksplit), never on M: a row's result is the
// same whatever the batch. f32 accumulation.
// -D MAX_M: most rows of x per launch (8, 16, 32 or 64; with 8 the upper half of the single 16-row tile is
// known to be zero and never loaded). K must be a multiple of 8.
// -D EPI_SWIGLU=1: the weight rows interleave gate and up (row 2j = gate j, row 2j + 1 = up j), and the
// output is y[m, j] = silu(gate) * up in the operand type, [M, N / 2]: what swiglu.cu computes from the same
// f32 sums, with no f32 round trip and no separate launch.
// -D EPI_ROPE=1: w is the fused q|k|v projection of a model whose rotated pairs are adjacent columns (the
// engine permutes NEOX rows at load), and the epilogue does what rope_kv.cu does: rotate q and k, write q
// (operand) to q_out [M, n_heads, head_dim] and append k, v to the caches at (slots[m], pos[m]).
// -D PRELOAD=1: the first UNROLL k chunks of weights are loaded before the programmatic wait (weights are
// written by no kernel), so they stream while the kernel before ends; the same loads, so the same bits.
// -D WQ8=1: w is Q8_0 (q8.cuh): quants int8 [N, K] and w_scales f16 [N, K / 32] (K % 32 == 0). A lane reads
// its 16 quants of a k chunk (16 bytes, within one Q8_0 block) and the block's scale, and dequantises them
// into the fragments the f16 weights would give: the same bits as the dequantised matrix, for about half
// the bytes.
#include "q8.cuh"
#include "tensor_core.cuh"

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
// 64-wide k chunks in flight per warp, bounded by the registers their x fragments take (<= 128 per thread)
#ifndef PIPE
#define PIPE 0  // 1: software-pipeline the weight loads (registers for two sets of UNROLL k chunks)
#endif
#ifndef UNROLL
#define UNROLL (PIPE ? (MT == 1 ? (MAX_M <= 8 ? 4 : 2) : 1) : (MT == 1 ? 4 : (MT == 2 ? 2 : 1)))
#endif
// -D LOAD: how weights are read: 2 (default) ld.global.cs (evict first) with a 256-byte L2 prefetch: the
// other three 64-byte pieces of a lane quad's 256-byte run are fetched with the first (H200, bench/
// gemv_bandwidth.py: Phi-3-mini's projections 4-10% faster than without; ld.global.nc with the same
// prefetch measured about as fast); 0 ld.global.cs alone (the earlier kernel, an A/B switch)
#ifndef LOAD
#define LOAD 2
#endif
#ifndef WQ8
#define WQ8 0
#endif
#ifndef PRELOAD
#define PRELOAD 0  // 1: the first weights are loaded before the programmatic wait
#endif
#if LOAD != 0 && LOAD != 2
#error "LOAD is 0 or 2"
#endif

#if WQ8
typedef int8_t wtype;
struct wraw {  // one lane's part of a k chunk as stored: 16 quants (of one Q8_0 block) and the block's scale
    uint4 q;
    __half d;
};
#else
typedef dtype wtype;
struct wraw {  // one lane's part of a k chunk: operands k..k+7 and k+8..k+15
    uint4 lo, hi;
};
#endif

__device__ __forceinline__ uint4 load16(const void *p) {
#if LOAD == 2
    uint4 v;
    asm volatile("ld.global.cs.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
#else
    return __ldcs(reinterpret_cast<const uint4 *>(p));
#endif
}

// This lane's stored weights of row `row` (quants or operands; scales [K / 32] for Q8) at columns k..k+15,
// k < k_end (operands past k_end read as zero; Q8 chunks never straddle it: K % 32 == 0).
__device__ __forceinline__ wraw load_w(const wtype *row, const __half *row_scales, int k, int k_end) {
    wraw v;
#if WQ8
    v.q = load16(row + k);
    v.d = __ldg(row_scales + k / 32);
#else
    v.lo = load16(row + k);
    v.hi = k + 8 < k_end ? load16(row + k + 8) : make_uint4(0, 0, 0, 0);
#endif
    return v;
}

// The B fragment (8 operands at k + 8 h .. k + 8 h + 7) of stored weights.
__device__ __forceinline__ uint4 fragment(const wraw &v, int h) {
#if WQ8
    return dequant8(h ? make_uint2(v.q.z, v.q.w) : make_uint2(v.q.x, v.q.y), v.d);
#else
    return h ? v.hi : v.lo;
#endif
}

// Eight operands of row `row` of x from column k.
__device__ __forceinline__ uint4 load_x(const dtype *__restrict__ x, int row, int K, int k) {
    return __ldg(reinterpret_cast<const uint4 *>(x + (size_t)row * K + k));
}

extern "C" __global__ void __launch_bounds__(512) gemv(
    void *__restrict__ y,                  // [M, N] f32 (see EPI_SWIGLU; unused with EPI_ROPE)
    const dtype *__restrict__ x,           // [M, K]
    const void *__restrict__ w,            // [N, K] operands, or int8 quants with WQ8
    const __half *__restrict__ w_scales,   // [N, K / 32] with WQ8, else null
    const float *__restrict__ bias,        // [N] or null
    int M, int N, int K, int ksplit, int accumulate,
    // EPI_ROPE only (null / 0 otherwise):
    dtype *__restrict__ q_out,             // [M, n_heads, head_dim]
    dtype *__restrict__ k_cache,           // [n_slots, n_kv, max_ctx, head_dim]
    dtype *__restrict__ v_cache,           // [n_slots, n_kv, max_ctx, head_dim]
    const int *__restrict__ slots,         // [M]
    const int *__restrict__ pos,           // [M]
    const float *__restrict__ freq_factors,  // [rope_dim / 2] or null
    int n_heads, int n_kv_heads, int head_dim, int rope_dim, float theta, float attn_factor, int max_ctx) {
    extern __shared__ float partial[];  // [ksplit][MT][4][32] when ksplit > 1
    const int part = threadIdx.x >> 5, lane = threadIdx.x & 31;  // blockDim.x == 32 * ksplit
    const int g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * 8;  // this block's 8 weight rows (n0 < N: the grid covers N)
    const int n = n0 + g;  // the weight row this lane loads
    const int row = min(n, N - 1);  // rows past N repeat the last; never written
    const wtype *wr = reinterpret_cast<const wtype *>(w) + (size_t)row * K;
    const __half *wd = WQ8 ? w_scales + (size_t)row * (K / 32) : nullptr;
    const int per_part = ((K + 63) / 64 + ksplit - 1) / ksplit;  // k chunks per warp
    const int k_end = min(K, (part + 1) * per_part * 64);
    const int k_begin = part * per_part * 64;
    const wraw none = {};
    // the first UNROLL k chunks' weights: with PIPE the pipeline's first stage, with PRELOAD issued before
    // the programmatic wait (weights are written by no kernel), so they stream while the kernel before ends
    wraw wv[UNROLL];
    if (PIPE || PRELOAD) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int k = k_begin + u * 64 + 16 * t;
            wv[u] = k < k_end ? load_w(wr, wd, k, k_end) : none;
        }
    }
    // Programmatic launch (common.cuh): wait for the kernel that writes x (and reads y) before reading x; let
    // the next kernel start only once the weights are streamed (below). Letting the next kernel in at the
    // start measured slower: its waiting blocks slowed this one's main loop.
    pdl_wait();
    float acc[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][i] = 0.0f;

    {  // the main loop
        const uint4 zero = make_uint4(0, 0, 0, 0);
        // every load of UNROLL k chunks is issued before their mma's; with PIPE the weights of the next
        // UNROLL k chunks are also in flight while these are used
        for (int kc = k_begin; kc < k_end; kc += UNROLL * 64) {
            wraw wn[UNROLL];
            uint4 xa[UNROLL][2][MT], xb[UNROLL][2][MT];
            const bool loaded = PRELOAD && !PIPE && kc == k_begin;  // wv holds these chunks already
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int k = kc + u * 64 + 16 * t;
                const int kn = PIPE ? k + UNROLL * 64 : k;
                if (!loaded) {
                    wn[u] = kn < k_end ? load_w(wr, wd, kn, k_end) : none;
                    if (!PIPE) wv[u] = wn[u];
                }
#pragma unroll
                for (int h = 0; h < 2; ++h)
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        const int r0 = mt * 16 + g, r1 = r0 + 8, kh = k + 8 * h;
                        xa[u][h][mt] = (kh < k_end && r0 < M) ? load_x(x, r0, K, kh) : zero;
                        xb[u][h][mt] = (MAX_M > 8 && kh < k_end && r1 < M) ? load_x(x, r1, K, kh) : zero;
                    }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                if (kc + u * 64 >= k_end) break;  // warp-uniform
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const uint4 b = fragment(wv[u], h);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        const uint4 &a0 = xa[u][h][mt], &a1 = xb[u][h][mt];
                        const unsigned lo[4] = {a0.x, a1.x, a0.y, a1.y};
                        const unsigned hi[4] = {a0.z, a1.z, a0.w, a1.w};
                        mma16816(acc[mt], lo, b.x, b.y);
                        mma16816(acc[mt], hi, b.z, b.w);
                    }
                }
            }
            if (PIPE) {
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) wv[u] = wn[u];
            }
        }
    }
    pdl_launch_dependents();  // the next kernel may be scheduled now: only the sums and stores remain
    if (ksplit > 1) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) partial[((part * MT + mt) * 4 + i) * 32 + lane] = acc[mt][i];
        __syncthreads();
        if (part != 0) return;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float s = 0.0f;
                for (int p = 0; p < ksplit; ++p) s += partial[((p * MT + mt) * 4 + i) * 32 + lane];
                acc[mt][i] = s;
            }
    }
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
