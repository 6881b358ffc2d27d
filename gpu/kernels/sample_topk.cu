// The first pass of sampling (gpu/ops/sample.py, docs/sampling.md): one block per CHUNK ids of a row, so a
// row of 151,936 logits is read once by 38 blocks instead of ten times by one.
//
// Each block of grid (n_chunks, n_rows):
// 1. applies the penalties to the ids of its chunk (an id's first occurrence in the row's window applies
//    them with its count; skipped when repetition 1, presence 0 and frequency 0, where they change nothing);
// 2. keys its chunk into shared memory, key = (order-preserving logit bits << 24) | (2^24 - 1 - id), 0 for
//    -inf (and NaN), as sample.cu: keys are distinct and sort as the candidate order;
// 3. writes the chunk's largest key, finite count and NaN/+inf flag (chunk_best, chunk_info);
// 4. for a sampled row with 0 < top_k <= CAP and top_k * n_chunks <= MERGE_CAP (sample.cu's split path),
//    writes the chunk's top_k largest keys (all its finite keys, zero-padded, if it has no more) to
//    cand[row, chunk * top_k ...]: the row's top-k set is then the top-k of these candidates, found exactly
//    by sample.cu. The chunk's k-th key comes from a radix select on 11-bit digits in shared memory that
//    stops as soon as the digit's bucket holds exactly the keys still needed.
// Every value written is a pure function of the chunk: a row's results never depend on the batch.
#include "common.cuh"

#define CHUNK 4096
#define THREADS 256
#define CAP 1024
#define MERGE_CAP 4096
#define ID_BITS 24
#define KEY_BITS 56
#define RADIX 11
#define ID_MASK ((1u << ID_BITS) - 1u)

typedef unsigned long long u64;

__device__ __forceinline__ u64 make_key(float v, int i) {
    unsigned bits = __float_as_uint(v);
    bits = bits == 0x80000000u ? 0u : bits;                       // -0 is 0: ties with +0, as in numpy
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // monotone in v
    return ((u64)bits << ID_BITS) | (u64)(ID_MASK - (unsigned)i);
}

// Exclusive prefix sum of v over the block (thread order); *total gets the sum. Syncs.
__device__ unsigned block_exscan(unsigned v, unsigned *total) {
    __shared__ unsigned warp_sums[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    unsigned incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    unsigned before = 0u, all = 0u;
    for (int w = 0; w < n_warps; ++w) {
        const unsigned s = warp_sums[w];
        before += w < warp ? s : 0u;
        all += s;
    }
    *total = all;
    return before + incl - v;
}

// The rank-th largest (from 1) of the n keys in shared memory (0 keys are never counted): the key lo with
// exactly `rank` keys >= lo. rank must be <= the number of nonzero keys. hist: 2^RADIX counters.
__device__ u64 select_kth(const u64 *keys, int n, unsigned rank, unsigned *hist) {
    __shared__ unsigned s_digit, s_need, s_count;
    const int tid = threadIdx.x, nt = blockDim.x;
    u64 prefix = 0ull, mask = 0ull;
    unsigned need = rank;
    for (int done = 0; done < KEY_BITS;) {
        const int w = KEY_BITS - done < RADIX ? KEY_BITS - done : RADIX;
        const int shift = KEY_BITS - done - w;
        const unsigned nb = 1u << w;
        for (unsigned b = tid; b < nb; b += nt) hist[b] = 0u;
        __syncthreads();
        for (int i = tid; i < n; i += nt) {
            const u64 k = keys[i];
            if (k != 0ull && (k & mask) == prefix) atomicAdd(&hist[(unsigned)(k >> shift) & (nb - 1u)], 1u);
        }
        __syncthreads();
        // thread t owns the digits nb-1-t*per ... nb-per-t*per (descending); find the bucket of rank `need`
        const unsigned per = (nb + nt - 1) / nt, first = (unsigned)tid * per;
        unsigned mine = 0u;
        for (unsigned q = 0; q < per && first + q < nb; ++q) mine += hist[nb - 1u - (first + q)];
        unsigned total;
        unsigned before = block_exscan(mine, &total);
        if (before < need && need <= before + mine) {
            for (unsigned q = 0; q < per && first + q < nb; ++q) {
                const unsigned c = hist[nb - 1u - (first + q)];
                if (before + c >= need) {
                    s_digit = nb - 1u - (first + q);
                    s_need = need - before;
                    s_count = c;
                    break;
                }
                before += c;
            }
        }
        __syncthreads();
        prefix |= (u64)s_digit << shift;
        mask |= (u64)(nb - 1u) << shift;
        need = s_need;
        done += w;
        const bool all_in = s_need == s_count;  // every key of this bucket is among the rank largest
        __syncthreads();                         // s_* are rewritten by the next digit
        if (all_in) break;
    }
    return prefix;
}

extern "C" __global__ void __launch_bounds__(THREADS) sample_topk(
    float *__restrict__ logits,            // [n_rows, vocab], penalised in place
    const double *__restrict__ fparams,    // [n_rows, 6] temperature, top_p, min_p, repetition, presence, frequency
    const unsigned *__restrict__ iparams,  // [n_rows, 4] top_k, seed lo, seed hi, step
    const int *__restrict__ window,        // [n_rows, width] penalty window ids
    const int *__restrict__ window_len,    // [n_rows] ids used in each window row
    u64 *__restrict__ cand,                // [n_rows, MERGE_CAP] each chunk's top_k keys (split path rows)
    u64 *__restrict__ chunk_best,          // [n_rows, n_chunks] the chunk's largest finite key, 0 if none
    unsigned *__restrict__ chunk_info,     // [n_rows, n_chunks] finite count | NaN/+inf seen << 31
    int vocab, int width) {
    __shared__ u64 s_keys[CHUNK];
    __shared__ unsigned s_hist[1 << RADIX];
    __shared__ u64 s_best[THREADS / 32];
    __shared__ unsigned s_finite[THREADS / 32], s_count;
    const int c = blockIdx.x, r = blockIdx.y, n_chunks = gridDim.x, tid = threadIdx.x;
    const int c0 = c * CHUNK, len = vocab - c0 < CHUNK ? vocab - c0 : CHUNK;
    float *row = logits + (size_t)r * vocab;
    const double *fp = fparams + (size_t)r * 6;
    const double temperature = fp[0], repeat = fp[3], presence = fp[4], frequency = fp[5];
    const unsigned top_k = iparams[(size_t)r * 4];

    // 1. penalties on this chunk's ids
    if (!(repeat == 1.0 && presence == 0.0 && frequency == 0.0)) {
        const int *win = window + (size_t)r * width;
        const int n_win = window_len[r];
        for (int j = tid; j < n_win; j += THREADS) {
            const int id = win[j];
            if (id < c0 || id >= c0 + len) continue;
            int count = 0;
            bool first = true;
            for (int q = 0; q < n_win; ++q) {
                if (win[q] == id) {
                    ++count;
                    first = first && q >= j;
                }
            }
            if (!first) continue;
            double v = row[id];
            v = v <= 0.0 ? v * repeat : v / repeat;
            row[id] = (float)(v - count * frequency - presence);
        }
        __syncthreads();  // the block's own global writes are visible to it after the barrier
    }

    // 2-3. keys, the chunk's best key, finite count and NaN/+inf flag
    u64 best = 0ull;
    unsigned finite = 0u;
    int bad = 0;
#pragma unroll 4
    for (int i = tid; i < len; i += THREADS) {
        const float v = row[c0 + i];
        bad |= !(v < INFINITY);  // NaN or +inf
        const bool fin = v > -INFINITY && v < INFINITY;
        const u64 k = fin ? make_key(v, c0 + i) : 0ull;
        finite += fin ? 1u : 0u;
        s_keys[i] = k;
        best = k > best ? k : best;
    }
    const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, best, o);
        best = other > best ? other : best;
        finite += __shfl_xor_sync(0xffffffffu, finite, o);
    }
    if (lane == 0) {
        s_best[warp] = best;
        s_finite[warp] = finite;
    }
    bad = __syncthreads_or(bad);
    best = 0ull;
    finite = 0u;
    for (int w = 0; w < THREADS / 32; ++w) {
        best = s_best[w] > best ? s_best[w] : best;
        finite += s_finite[w];
    }
    if (tid == 0) {
        chunk_best[(size_t)r * n_chunks + c] = best;
        chunk_info[(size_t)r * n_chunks + c] = finite | (bad ? 0x80000000u : 0u);
    }

    // 4. the chunk's top_k keys for rows on sample.cu's split path
    if (bad || temperature == 0.0 || top_k == 0u || top_k > CAP || top_k * (unsigned)n_chunks > MERGE_CAP) return;
    u64 *out = cand + (size_t)r * MERGE_CAP + (size_t)c * top_k;
    const u64 lo = finite > top_k ? select_kth(s_keys, len, top_k, s_hist) : 1ull;
    if (tid == 0) s_count = 0u;
    __syncthreads();
    for (int i = tid; i < len; i += THREADS) {
        const u64 k = s_keys[i];
        if (k >= lo) out[atomicAdd(&s_count, 1u)] = k;  // any order: sample.cu selects by key
    }
    __syncthreads();
    for (unsigned j = s_count + tid; j < top_k; j += THREADS) out[j] = 0ull;
}
