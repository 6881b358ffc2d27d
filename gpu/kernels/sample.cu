// Sampling on the device, one block of 1024 threads per row, as gpu/sampling.py's Sampler (docs/sampling.md):
// penalties -> greedy | top-k -> top-p -> min-p -> temperature -> inverse-CDF draw with philox_uniform.
//
// Every id gets a 56-bit key, (order-preserving logit bits << 24) | (2^24 - 1 - id): keys are distinct and
// sort exactly as the candidate order (logit descending, id ascending), so each filter keeps the keys above
// a bound. Top-k finds the k-th largest key by radix select (7 passes, 8 bits each, integer histograms).
// The survivors of top-k and min-p are compacted into shared memory; when at most CAP of them remain
// (always with top_k <= CAP) they are sorted (bitonic) and thread 0 runs top-p and the draw in float64 in
// candidate order, as numpy does. More than CAP (top_k = 0 or > CAP, and a min-p that keeps > CAP) takes
// the slow exact path: top-p's bound and the draw are found by bisection on the key (56 block-wide sums
// each). All sums have a fixed order, so a row's token never depends on the batch.
// The logits row is modified in place (penalties). ids[row] = -1: NaN/+inf logits or no finite logit.
#include "common.cuh"

#define CAP 1024
#define ID_BITS 24
#define KEY_BITS 56
#define ID_MASK ((1u << ID_BITS) - 1u)

typedef unsigned long long u64;

__device__ __forceinline__ u64 make_key(float v, int i) {
    unsigned bits = __float_as_uint(v);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // monotone in v
    return ((u64)bits << ID_BITS) | (u64)(ID_MASK - (unsigned)i);
}

__device__ __forceinline__ float key_value(u64 key) {
    unsigned bits = (unsigned)(key >> ID_BITS);
    bits = (bits & 0x80000000u) ? (bits & 0x7fffffffu) : ~bits;
    return __uint_as_float(bits);
}

__device__ __forceinline__ int key_id(u64 key) { return (int)(ID_MASK - (unsigned)(key & ID_MASK)); }

// philox_uniform(seed, step) of gpu/sampling.py: Philox4x32-10, key (seed lo, seed hi), counter (step, 0, 0, 0).
__device__ double philox_uniform(unsigned seed_lo, unsigned seed_hi, unsigned step) {
    unsigned c0 = step, c1 = 0u, c2 = 0u, c3 = 0u, k0 = seed_lo, k1 = seed_hi;
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const unsigned hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return (double)(c0 >> 8) * (1.0 / 16777216.0);
}

__device__ double block_sum_d(double v) {
    __shared__ double part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();  // part[] may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ u64 block_max_u64(u64 v) {
    __shared__ u64 part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, v, o);
        v = other > v ? other : v;
    }
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? part[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const u64 other = __shfl_xor_sync(0xffffffffu, v, o);
        v = other > v ? other : v;
    }
    return v;
}

// Sum over finite ids with key >= lo and key >= c and logit >= thr of exp(l - l0) (inv_t 0) or
// exp((l - l0) * inv_t), in float64; every thread gets the total.
__device__ double member_sum(const float *row, int vocab, u64 lo, u64 c, double thr, double l0, double inv_t) {
    const u64 bound = lo > c ? lo : c;
    double s = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (!(v > -INFINITY) || make_key(v, i) < bound || (double)v < thr) continue;
        s += inv_t > 0.0 ? exp(((double)v - l0) * inv_t) : exp((double)v - l0);
    }
    return block_sum_d(s);
}

// The largest key c with member_sum(c) / scale >= target (> target if strict); 0 if there is none.
__device__ u64 search(const float *row, int vocab, u64 lo, double thr, double l0, double inv_t, double scale,
                      double target, bool strict) {
    u64 p = 0ull;
    for (int b = KEY_BITS - 1; b >= 0; --b) {
        const u64 c = p | (1ull << b);
        const double s = member_sum(row, vocab, lo, c, thr, l0, inv_t) / scale;
        if (strict ? s > target : s >= target) p = c;
    }
    return p;
}

extern "C" __global__ void __launch_bounds__(1024) sample(
    int *__restrict__ ids,                // [n_rows] chosen token, -1 on error
    float *__restrict__ logits,           // [n_rows, vocab], penalised in place
    const double *__restrict__ fparams,   // [n_rows, 6] temperature, top_p, min_p, repetition, presence, frequency
    const unsigned *__restrict__ iparams, // [n_rows, 4] top_k, seed lo, seed hi, step
    const int *__restrict__ window,       // [n_rows, width] penalty window ids (prompt + output tail)
    const int *__restrict__ window_len,   // [n_rows] ids used in each window row
    double *__restrict__ draws,           // [n_rows] the row's uniform (debug), or null
    int vocab, int width) {
    __shared__ u64 s_keys[CAP];
    __shared__ unsigned s_hist[256];
    __shared__ unsigned s_count, s_digit, s_need;
    __shared__ int s_bad;
    const int r = blockIdx.x, tid = threadIdx.x;
    float *row = logits + (size_t)r * vocab;
    const double *fp = fparams + (size_t)r * 6;
    const unsigned *ip = iparams + (size_t)r * 4;
    const double temperature = fp[0], top_p = fp[1], min_p = fp[2];
    const double repeat = fp[3], presence = fp[4], frequency = fp[5];
    const unsigned top_k = ip[0];

    // 1. penalties: the first occurrence of each id in the window applies them with the id's count
    const int *win = window + (size_t)r * width;
    const int n_win = window_len[r];
    for (int j = tid; j < n_win; j += blockDim.x) {
        const int id = win[j];
        if (id < 0 || id >= vocab) continue;
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
    if (tid == 0) s_bad = 0;
    __syncthreads();

    // 2. the best key (argmax, lowest id on ties), finite count, NaN/+inf check
    u64 best = 0ull;
    double finite = 0.0;
    for (int i = tid; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (!(v < INFINITY)) s_bad = 1;  // NaN or +inf
        if (v > -INFINITY) finite += 1.0;
        const u64 k = make_key(v, i);
        best = k > best ? k : best;
    }
    best = block_max_u64(best);
    const unsigned n_finite = (unsigned)block_sum_d(finite);  // syncs: s_bad is visible
    const double u = philox_uniform(ip[1], ip[2], ip[3]);
    if (tid == 0 && draws) draws[r] = u;
    if (s_bad || n_finite == 0u) {
        if (tid == 0) ids[r] = -1;
        return;
    }
    if (temperature == 0.0) {
        if (tid == 0) ids[r] = key_id(best);
        return;
    }
    const double l0 = key_value(best);

    // 3. top-k: lo = the k-th largest key, by radix select on 8-bit digits from the top
    u64 lo = 0ull;
    const unsigned n_topk = (top_k > 0u && top_k < n_finite) ? top_k : n_finite;
    if (n_topk < n_finite) {
        u64 prefix = 0ull, mask = 0ull;
        unsigned need = top_k;  // rank, from 1, among keys matching prefix
        for (int shift = KEY_BITS - 8; shift >= 0; shift -= 8) {
            if (tid < 256) s_hist[tid] = 0u;
            __syncthreads();
            for (int i = tid; i < vocab; i += blockDim.x) {
                const float v = row[i];
                if (!(v > -INFINITY)) continue;
                const u64 k = make_key(v, i);
                if ((k & mask) == prefix) atomicAdd(&s_hist[(unsigned)(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid < 32) {  // lane l owns digits 255 - 8l ... 248 - 8l
                unsigned c[8], total = 0u;
#pragma unroll
                for (int q = 0; q < 8; ++q) {
                    c[q] = s_hist[255 - (tid * 8 + q)];
                    total += c[q];
                }
                unsigned incl = total;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    const unsigned t = __shfl_up_sync(0xffffffffu, incl, o);
                    if (tid >= o) incl += t;
                }
                unsigned before = incl - total;
                if (before < need && need <= incl) {
                    for (int q = 0; q < 8; ++q) {
                        if (before + c[q] >= need) {
                            s_digit = 255u - (unsigned)(tid * 8 + q);
                            s_need = need - before;
                            break;
                        }
                        before += c[q];
                    }
                }
            }
            __syncthreads();
            prefix |= (u64)s_digit << shift;
            mask |= 255ull << shift;
            need = s_need;
        }
        lo = prefix;
    }

    // 4. min-p bound, then compact the survivors of top-k and min-p
    const double thr = min_p > 0.0 ? l0 + log(min_p) : -INFINITY;
    if (tid == 0) s_count = 0u;
    __syncthreads();
    for (int i = tid; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (!(v > -INFINITY) || (double)v < thr) continue;
        const u64 k = make_key(v, i);
        if (k < lo) continue;
        const unsigned slot = atomicAdd(&s_count, 1u);
        if (slot < CAP) s_keys[slot] = k;
    }
    __syncthreads();
    const unsigned n_list = s_count;
    // top-p normalises over the whole top-k set; sum it on the full row unless the list holds that set
    const bool full_z = top_p < 1.0 && (n_list < n_topk || n_list > CAP);
    const double z_full = full_z ? member_sum(row, vocab, lo, 0ull, -INFINITY, l0, 0.0) : 0.0;

    if (n_list > CAP) {  // slow exact path: bisection on the key
        if (top_p < 1.0) {
            const u64 p = search(row, vocab, lo, thr, l0, 0.0, z_full, top_p, false);
            lo = p > lo ? p : lo;
        }
        const double w = member_sum(row, vocab, lo, 0ull, thr, l0, 1.0 / temperature);
        const u64 pick = search(row, vocab, lo, thr, l0, 1.0 / temperature, 1.0, u * w, true);
        if (tid == 0) ids[r] = key_id(pick);
        return;
    }

    // 5. sort the list by key, descending (bitonic, padded with 0 keys to a power of two)
    unsigned n_sort = 2u;
    while (n_sort < n_list) n_sort <<= 1;
    if (tid >= (int)n_list && tid < (int)n_sort) s_keys[tid] = 0ull;
    __syncthreads();
    for (unsigned k = 2u; k <= n_sort; k <<= 1) {
        for (unsigned j = k >> 1; j > 0u; j >>= 1) {
            const unsigned i = (unsigned)tid, ixj = i ^ j;
            if (i < n_sort && ixj > i) {
                const u64 a = s_keys[i], b = s_keys[ixj];
                if ((i & k) == 0u ? a < b : a > b) {
                    s_keys[i] = b;
                    s_keys[ixj] = a;
                }
            }
            __syncthreads();
        }
    }

    // 6. top-p, temperature and the draw, in candidate order (min-p was applied by the compaction)
    if (tid != 0) return;
    unsigned n = n_list;
    if (top_p < 1.0) {
        double z = z_full;
        if (!full_z) {
            z = 0.0;
            for (unsigned i = 0; i < n; ++i) z += exp((double)key_value(s_keys[i]) - l0);
        }
        double cum = 0.0;
        for (unsigned i = 0; i < n; ++i) {
            cum += exp((double)key_value(s_keys[i]) - l0) / z;
            if (cum >= top_p) {
                n = i + 1u;
                break;
            }
        }
    }
    double w = 0.0;
    for (unsigned i = 0; i < n; ++i) w += exp((double)key_value(s_keys[i]) / temperature - l0 / temperature);
    const double target = u * w;
    double cum = 0.0;
    unsigned pick = n - 1u;
    for (unsigned i = 0; i < n; ++i) {
        cum += exp((double)key_value(s_keys[i]) / temperature - l0 / temperature);
        if (cum > target) {
            pick = i;
            break;
        }
    }
    ids[r] = key_id(s_keys[pick]);
}
