// Sampler keys and the k-th-largest search, shared by sample_topk.cu and sample.cu (docs/gpu.md, "Sampling
// on the GPU"): every id's 56-bit key, (order-preserving logit bits << 24) | (2^24 - 1 - id), sorts exactly
// as the candidate order (logit descending, id ascending); select_kth finds the k-th largest key of a set in
// shared memory by radix select on RADIX-bit digits.
#pragma once
#include "common.cuh"

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
