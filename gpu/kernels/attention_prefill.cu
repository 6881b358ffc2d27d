// Causal attention for a prompt on tensor cores (flash-attention 2): one block per (64 queries, head), two
// groups of 4 warps, each warp 16 query rows; group 0 takes the key tiles 0, 2, 4, .. and group 1 the tiles
// 1, 3, 5, .. (the critical path of the last query block, which sees the most keys, is halved), and group 1's
// partial softmax state is merged into group 0's at the end in shared memory (fixed order: deterministic).
// Keys and values of positions 0 .. start + T - 1 come from the KV cache (rope_kv wrote the prompt's own) in
// tiles of 64, double-buffered per group through cp.async (a group's next tile loads while it uses this
// one); S = Q K^T and O += P V are mma.sync m16n8k16 (f16 or bf16 operands, f32 accumulation) with operands
// from ldmatrix; the online softmax runs in f32 on the accumulators (exp2, the scale folded in), and P is
// rounded to the operand type for P V. Query t sits at position start + t; key j is visible to it when
// j <= start + t. A warp skips the tiles wholly in its future; blocks of the last queries (the most keys) are
// scheduled first. GQA as in attention_decode. -D HEAD_DIM (a multiple of 16). Dynamic shared memory:
// SMEM_BYTES (per group 2 stages of a K and a V tile; the launcher raises the block's limit).
#include "tensor_core.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define BQ 64                   // queries per block (16 per warp)
#define KT 64                   // keys per tile
#define N_WARPS (BQ / 16)       // warps of one group
#define G_THREADS (N_WARPS * 32)
#define N_THREADS (2 * G_THREADS)
#define LDS (HEAD_DIM + 8)      // padded shared row (halves): 16-byte aligned, ldmatrix rows hit all banks
#define DK (HEAD_DIM / 16)      // k-steps of Q K^T; pairs of 8-wide d-tiles of P V
#define NT (KT / 8)             // 8-key n-tiles of S
#define ND (HEAD_DIM / 8)       // 8-wide d-tiles of O
#define TILE (KT * LDS)         // one K or V tile in shared memory (halves)
#define STAGE (2 * TILE)        // K then V
// group g's stage s at smem + (2 g + s) STAGE; the Q tile goes first into group 0's stage 1
#define SMEM_BYTES (4 * STAGE * 2)

__device__ __forceinline__ uint32_t pack2(float x, float y) {
    dtype2 v;
#ifdef USE_BF16
    v = __floats2bfloat162_rn(x, y);
#else
    v = __floats2half2_rn(x, y);
#endif
    return *reinterpret_cast<uint32_t *>(&v);
}

// Rows r0 .. r0 + 63 of one head's cache (rows at or past `rows` zero-filled) into a [64, LDS] tile, by the
// G_THREADS threads of one group (tid: the thread's index in its group).
__device__ __forceinline__ void load_rows(dtype *dst, const dtype *src, int r0, int rows, int tid) {
    for (int i = tid; i < 64 * (HEAD_DIM / 8); i += G_THREADS) {
        const int r = i / (HEAD_DIM / 8), c = (i % (HEAD_DIM / 8)) * 8;
        const bool ok = r0 + r < rows;
        cp_async16(dst + r * LDS + c, ok ? src + (size_t)(r0 + r) * HEAD_DIM + c : src, ok);
    }
}

// Barrier of one group's G_THREADS threads (ids 1, 2; __syncthreads is 0).
__device__ __forceinline__ void group_sync(int grp) {
    if (grp == 0)
        asm volatile("bar.sync 1, %0;\n" ::"n"(G_THREADS) : "memory");
    else
        asm volatile("bar.sync 2, %0;\n" ::"n"(G_THREADS) : "memory");
}

extern "C" __global__ void __launch_bounds__(N_THREADS, 1) attention_prefill(
    dtype *__restrict__ out,             // [T, n_heads * HEAD_DIM]
    const dtype *__restrict__ q,         // [T, n_heads, HEAD_DIM]
    const dtype *__restrict__ k_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const dtype *__restrict__ v_cache,   // [n_slots, n_kv, max_ctx, HEAD_DIM]
    const int *__restrict__ slots,       // [T]: slots[0] is the sequence's slot
    const int *__restrict__ pos,         // [T]: pos[0] is the first query's position (start)
    int T, int n_heads, int n_kv_heads, int max_ctx, float scale) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const int slot = slots[0], start = pos[0];  // from device memory: one CUDA graph serves every chunk
    dtype *smem = reinterpret_cast<dtype *>(smem_raw);
    const int grp = threadIdx.x / G_THREADS, tid = threadIdx.x % G_THREADS;
    const int warp = tid >> 5, lane = threadIdx.x & 31;  // warp: its 16 query rows in the block
    const int g = lane >> 2, tq = lane & 3;  // accumulator row (and row + 8) and column pair of this lane
    const int h = blockIdx.x;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;  // heaviest query blocks first
    const int kvh = h / (n_heads / n_kv_heads);
    const size_t base = ((size_t)slot * n_kv_heads + kvh) * max_ctx * HEAD_DIM;
    const dtype *kb = k_cache + base, *vb = v_cache + base;
    const int kv_len = start + T;
    const int n_tiles = (start + min(T, q0 + BQ) - 1) / KT + 1;  // up to the block's last query position

    // This lane's two query positions (padding rows past T act as the last query; they are not written)
    // and the warp's last one (-1: the warp holds no query, it only helps to load).
    const int w0 = q0 + warp * 16;
    const int pos0 = start + min(w0 + g, T - 1), pos1 = start + min(w0 + g + 8, T - 1);
    const int warp_last = w0 < T ? start + min(w0 + 15, T - 1) : -1;
    const int warp_first = start + w0;
    const float sl = scale * 1.4426950408889634f;  // scores in log2 units

    // Q tile (rows past T zero) into group 0's stage 1, each group's first tile (grp) into its stage 0.
    dtype *gbuf = smem + grp * 2 * STAGE;
    dtype *qs = smem + STAGE;
    for (int i = threadIdx.x; i < BQ * (HEAD_DIM / 8); i += N_THREADS) {
        const int r = i / (HEAD_DIM / 8), c = (i % (HEAD_DIM / 8)) * 8;
        const bool ok = q0 + r < T;
        cp_async16(qs + r * LDS + c, ok ? q + ((size_t)(q0 + r) * n_heads + h) * HEAD_DIM + c : q, ok);
    }
    const int n_mine = (n_tiles - grp + 1) / 2;  // tiles grp, grp + 2, ..
    if (n_mine > 0) {
        load_rows(gbuf, kb, grp * KT, kv_len, tid);
        load_rows(gbuf + TILE, vb, grp * KT, kv_len, tid);
    }
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
    uint32_t qa[DK][4];
#pragma unroll
    for (int kk = 0; kk < DK; ++kk)  // A fragments: rows +0/+8 by lane bit 3, k +0/+8 by lane bit 4
        ldmatrix_x4(qa[kk],
                qs + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + kk * 16 + (lane >> 4) * 8);
    __syncthreads();  // group 0's stage 1 is free for its second tile

    float o[ND][4];
#pragma unroll
    for (int j = 0; j < ND; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

    // ldmatrix lane offsets: K (non-transposed, B of Q K^T) and V (transposed, B of P V)
    const int k_row = (lane & 7) + (lane >> 4) * 8, k_col = ((lane >> 3) & 1) * 8;
    const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;

    for (int i = 0; i < n_mine; ++i) {
        const int k0 = (grp + 2 * i) * KT;
        if (i + 1 < n_mine) {  // the group's next tile into its other stage (free since the end of i - 1)
            dtype *next = gbuf + ((i + 1) & 1) * STAGE;
            load_rows(next, kb, k0 + 2 * KT, kv_len, tid);
            load_rows(next + TILE, vb, k0 + 2 * KT, kv_len, tid);
            asm volatile("cp.async.commit_group;\n" ::);
            asm volatile("cp.async.wait_group 1;\n" ::);  // tile i is in
        } else {
            asm volatile("cp.async.wait_group 0;\n" ::);
        }
        group_sync(grp);
        const dtype *ks = gbuf + (i & 1) * STAGE, *vs = ks + TILE;
        if (k0 <= warp_last) {  // else every key of the tile is in the future of this warp's queries
            float s[NT][4];
#pragma unroll
            for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < DK; ++kk) {
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    uint32_t b[4];
                    ldmatrix_x4(b, ks + (np * 16 + k_row) * LDS + kk * 16 + k_col);
                    mma16816(s[2 * np], qa[kk], b[0], b[1]);
                    mma16816(s[2 * np + 1], qa[kk], b[2], b[3]);
                }
            }
            if (k0 + KT - 1 > warp_first) {  // the tile reaches past some query of this warp: mask
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const int key = k0 + n * 8 + tq * 2;
                    if (key > pos0) s[n][0] = -INFINITY;
                    if (key + 1 > pos0) s[n][1] = -INFINITY;
                    if (key > pos1) s[n][2] = -INFINITY;
                    if (key + 1 > pos1) s[n][3] = -INFINITY;
                }
            }
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
                mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            // a row may have seen no key yet (group 1, or a tile past its position): max -inf, then 0 is used
            // as the reference, so that p = exp2(-inf) = 0 and the correction of the old -inf max is 0
            const float u0 = mx0 == -INFINITY ? 0.0f : mx0, u1 = mx1 == -INFINITY ? 0.0f : mx1;
            const float c0 = exp2f((m0 - u0) * sl), c1 = exp2f((m1 - u1) * sl);  // 0 while m is -inf
            m0 = mx0;
            m1 = mx1;
            const float b0 = u0 * sl, b1 = u1 * sl;
            l0 *= c0;
            l1 *= c1;
#pragma unroll
            for (int j = 0; j < ND; ++j) {
                o[j][0] *= c0;
                o[j][1] *= c0;
                o[j][2] *= c1;
                o[j][3] *= c1;
            }
            uint32_t pa[KT / 16][4];
#pragma unroll
            for (int n = 0; n < NT; ++n) {
                const float p0 = exp2f(fmaf(s[n][0], sl, -b0)), p1 = exp2f(fmaf(s[n][1], sl, -b0));
                const float p2 = exp2f(fmaf(s[n][2], sl, -b1)), p3 = exp2f(fmaf(s[n][3], sl, -b1));
                l0 += p0 + p1;
                l1 += p2 + p3;
                // A fragment of P for keys 16 (n / 2) ..: n even -> a0 (row g), a1 (row g + 8); odd -> a2, a3
                pa[n >> 1][(n & 1) * 2] = pack2(p0, p1);
                pa[n >> 1][(n & 1) * 2 + 1] = pack2(p2, p3);
            }
#pragma unroll
            for (int kj = 0; kj < KT / 16; ++kj) {
#pragma unroll
                for (int dp = 0; dp < DK; ++dp) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, vs + (kj * 16 + v_row) * LDS + dp * 16 + v_col);
                    mma16816(o[2 * dp], pa[kj], b[0], b[1]);
                    mma16816(o[2 * dp + 1], pa[kj], b[2], b[3]);
                }
            }
        }
        group_sync(grp);  // every warp of the group is done with this stage before its tile i + 2 lands
    }

    // Merge: group 1 leaves (m, l, o) of each of its lanes in shared memory (thread-major columns: no bank
    // conflicts), group 0's same lane folds them into its own. Group 0 saw tile 0, so its maxima are finite.
    float *xch = reinterpret_cast<float *>(smem_raw);  // [4 * ND + 4][G_THREADS]
    __syncthreads();  // both groups are done with their tiles
    if (grp == 1) {
#pragma unroll
        for (int j = 0; j < ND; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) xch[(4 * j + e) * G_THREADS + tid] = o[j][e];
        xch[(4 * ND + 0) * G_THREADS + tid] = m0;
        xch[(4 * ND + 1) * G_THREADS + tid] = m1;
        xch[(4 * ND + 2) * G_THREADS + tid] = l0;
        xch[(4 * ND + 3) * G_THREADS + tid] = l1;
    }
    __syncthreads();
    if (grp == 1 || warp_last < 0) return;
    {
        const float n0 = xch[(4 * ND + 0) * G_THREADS + tid], n1 = xch[(4 * ND + 1) * G_THREADS + tid];
        const float mm0 = fmaxf(m0, n0), mm1 = fmaxf(m1, n1);
        const float a0 = exp2f((m0 - mm0) * sl), a1 = exp2f((m1 - mm1) * sl);
        const float e0 = exp2f((n0 - mm0) * sl), e1 = exp2f((n1 - mm1) * sl);  // 0 if group 1 saw no key
        l0 = l0 * a0 + xch[(4 * ND + 2) * G_THREADS + tid] * e0;
        l1 = l1 * a1 + xch[(4 * ND + 3) * G_THREADS + tid] * e1;
#pragma unroll
        for (int j = 0; j < ND; ++j) {
            o[j][0] = o[j][0] * a0 + xch[(4 * j + 0) * G_THREADS + tid] * e0;
            o[j][1] = o[j][1] * a0 + xch[(4 * j + 1) * G_THREADS + tid] * e0;
            o[j][2] = o[j][2] * a1 + xch[(4 * j + 2) * G_THREADS + tid] * e1;
            o[j][3] = o[j][3] * a1 + xch[(4 * j + 3) * G_THREADS + tid] * e1;
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
    const int r0 = w0 + g, r1 = w0 + g + 8;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
        const int c = h * HEAD_DIM + j * 8 + tq * 2;
        if (r0 < T) *reinterpret_cast<uint32_t *>(out + (size_t)r0 * n_heads * HEAD_DIM + c) =
            pack2(o[j][0] * i0, o[j][1] * i0);
        if (r1 < T) *reinterpret_cast<uint32_t *>(out + (size_t)r1 * n_heads * HEAD_DIM + c) =
            pack2(o[j][2] * i1, o[j][3] * i1);
    }
}
