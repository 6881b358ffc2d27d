// Sampling on the device, one block of 1024 threads per row, as gpu/sampling.py's Sampler (docs/sampling.md):
// penalties -> greedy | top-k -> top-p -> min-p -> temperature -> inverse-CDF draw with philox_uniform.
// Runs after sample_topk.cu, which applied the penalties and left per chunk of CHUNK ids the largest key,
// the finite count, a NaN/+inf flag and (split path) the chunk's top_k keys.
//
// Every id gets a 56-bit key, (order-preserving logit bits << 24) | (2^24 - 1 - id): keys are distinct and
// sort exactly as the candidate order (logit descending, id ascending), so each filter keeps the keys above
// a bound.
// Split path (0 < top_k <= CAP and top_k * n_chunks <= MERGE_CAP: top_k <= 107 at vocab 151,936): the
// row's top-k set is the top-k of the chunks' candidates, found by a radix select on them in shared memory
// (no pass over the row); it is sorted (each key's rank counted in parallel), and thread 0 runs top-p (over
// the whole top-k set), min-p and the draw in float64 in candidate order, as numpy does, on exponentials
// computed in parallel.
// Other sampled rows (top_k = 0 or larger) take the full-row path: top-k by radix select over the row (7
// passes, 8 bits each), the survivors of top-k and min-p compacted into shared memory; when at most CAP of
// them remain they are sorted and drawn from as above. More than CAP (top_k = 0 or > CAP, and a min-p
// that keeps > CAP) takes the slow exact path: top-p's bound and the draw are found by bisection on the key
// (56 block-wide sums each). All sums have a fixed order, so a row's token never depends on the batch.
// ids[row] = -1: NaN/+inf logits or no finite logit.
#include "sample_keys.cuh"

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

// The chosen token of row r: to ids (device) and, when given, to host_ids (mapped pinned memory: the host
// reads it once the kernel is done, no copy queued after it).
__device__ __forceinline__ void put_id(int *ids, int *host_ids, int r, int id) {
    ids[r] = id;
    if (host_ids) host_ids[r] = id;
}

extern "C" __global__ void __launch_bounds__(1024) sample(
    int *__restrict__ ids,                // [n_rows] chosen token, -1 on error
    int *__restrict__ host_ids,           // [n_rows] the same, in mapped host memory, or null
    const float *__restrict__ logits,     // [n_rows, vocab], penalised by sample_topk
    const double *__restrict__ fparams,   // [n_rows, 6] temperature, top_p, min_p, repetition, presence, frequency
    const unsigned *__restrict__ iparams, // [n_rows, 4] top_k, seed lo, seed hi, step
    const u64 *__restrict__ cand,         // [n_rows, MERGE_CAP] each chunk's top_k keys (split path rows)
    const u64 *__restrict__ chunk_best,   // [n_rows, n_chunks] each chunk's largest finite key
    const unsigned *__restrict__ chunk_info,  // [n_rows, n_chunks] finite count | NaN/+inf seen << 31
    double *__restrict__ draws,           // [n_rows] the row's uniform (debug), or null
    int vocab, int n_chunks) {
    __shared__ u64 s_buf[MERGE_CAP];  // split path: the candidates; then the sorted list and its weights
    __shared__ u64 s_keys[CAP];       // also the select's histogram (2^RADIX counters) before the list
    __shared__ unsigned s_hist[256];
    __shared__ unsigned s_count, s_digit, s_need;
    __shared__ unsigned s_finite[32];
    const int r = blockIdx.x, tid = threadIdx.x;
    const float *row = logits + (size_t)r * vocab;
    const double *fp = fparams + (size_t)r * 6;
    const unsigned *ip = iparams + (size_t)r * 4;
    const double temperature = fp[0], top_p = fp[1], min_p = fp[2];
    const unsigned top_k = ip[0];

    // 1-2. the chunks' best keys, finite counts and NaN/+inf flags (penalties were applied by sample_topk)
    u64 best = 0ull;
    unsigned finite = 0u;
    int bad = 0;
    for (int c = tid; c < n_chunks; c += blockDim.x) {
        const u64 b = chunk_best[(size_t)r * n_chunks + c];
        const unsigned info = chunk_info[(size_t)r * n_chunks + c];
        best = b > best ? b : best;
        finite += info & 0x7fffffffu;
        bad |= (int)(info >> 31);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) finite += __shfl_xor_sync(0xffffffffu, finite, o);
    if ((tid & 31) == 0) s_finite[tid >> 5] = finite;
    best = block_max_u64(best);  // syncs: s_finite is visible
    finite = 0u;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) finite += s_finite[w];
    const unsigned n_finite = finite;
    bad = __syncthreads_or(bad);
    const double u = philox_uniform(ip[1], ip[2], ip[3]);
    if (tid == 0 && draws) draws[r] = u;
    if (bad || n_finite == 0u) {
        if (tid == 0) put_id(ids, host_ids, r, -1);
        return;
    }
    if (temperature == 0.0) {
        if (tid == 0) put_id(ids, host_ids, r, key_id(best));
        return;
    }
    const double l0 = key_value(best);
    const double thr = min_p > 0.0 ? l0 + log(min_p) : -INFINITY;
    unsigned n_list;
    double z_full = 0.0;
    bool list_is_topk;  // the list holds the whole top-k set (else only its min-p survivors)

    if (top_k > 0u && top_k <= CAP && top_k * (unsigned)n_chunks <= MERGE_CAP) {
        // 3s. split path: the top-k set = the top n_topk of the chunks' candidates
        const unsigned n_topk = top_k < n_finite ? top_k : n_finite;
        const int m = (int)(top_k * (unsigned)n_chunks);
        for (int i = tid; i < m; i += blockDim.x) s_buf[i] = cand[(size_t)r * MERGE_CAP + i];
        __syncthreads();
        const u64 lo = select_kth(s_buf, m, n_topk, (unsigned *)s_keys);
        if (tid == 0) s_count = 0u;
        __syncthreads();
        for (int i = tid; i < m; i += blockDim.x) {
            const u64 k = s_buf[i];
            if (k >= lo) s_keys[atomicAdd(&s_count, 1u)] = k;  // exactly n_topk keys
        }
        __syncthreads();
        n_list = s_count;
        list_is_topk = true;
    } else {
        list_is_topk = false;
        // 3. top-k: lo = the k-th largest key, by radix select over the row on 8-bit digits from the top
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

        // 4. compact the survivors of top-k and min-p
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
        n_list = s_count;
        // top-p normalises over the whole top-k set; sum it on the full row unless the list holds that set
        list_is_topk = n_list == n_topk;
        const bool full_z = top_p < 1.0 && (!list_is_topk || n_list > CAP);
        z_full = full_z ? member_sum(row, vocab, lo, 0ull, -INFINITY, l0, 0.0) : 0.0;

        if (n_list > CAP) {  // slow exact path: bisection on the key
            if (top_p < 1.0) {
                const u64 p = search(row, vocab, lo, thr, l0, 0.0, z_full, top_p, false);
                lo = p > lo ? p : lo;
            }
            const double w = member_sum(row, vocab, lo, 0ull, thr, l0, 1.0 / temperature);
            const u64 pick = search(row, vocab, lo, thr, l0, 1.0 / temperature, 1.0, u * w, true);
            if (tid == 0) put_id(ids, host_ids, r, key_id(pick));
            return;
        }
    }

    // 5-6. sort the list by key, descending (each key's rank = how many keys exceed it; keys are distinct),
    // with each candidate's weights: e = exp(l - l0) (top-p), t = exp(l / T - l0 / T) (the draw)
    u64 *sorted = s_buf;  // s_buf's candidates are no longer read
    double *e = (double *)(s_buf + CAP), *t = (double *)(s_buf + 2 * CAP);
    if (tid < (int)n_list) {
        const u64 k = s_keys[tid];
        unsigned rank = 0u;
        for (unsigned j = 0; j < n_list; ++j) rank += s_keys[j] > k ? 1u : 0u;
        sorted[rank] = k;
        const double v = (double)key_value(k);
        e[rank] = exp(v - l0);
        t[rank] = exp(v / temperature - l0 / temperature);
    }
    __syncthreads();

    // 7. top-p, min-p and the draw, in candidate order
    if (tid != 0) return;
    unsigned n = n_list;
    if (list_is_topk && min_p > 0.0) {  // min-p keeps the prefix with logit >= thr (the full-row path's
        unsigned keep = 0u;             // list holds only those already)
        while (keep < n && (double)key_value(sorted[keep]) >= thr) ++keep;
        n = keep;
    }
    if (top_p < 1.0) {
        double z = z_full;
        if (list_is_topk) {
            z = 0.0;
            for (unsigned i = 0; i < n_list; ++i) z += e[i];
        }
        double cum = 0.0;
        for (unsigned i = 0; i < n; ++i) {
            cum += e[i] / z;
            if (cum >= top_p) {
                n = i + 1u;
                break;
            }
        }
    }
    double w = 0.0;
    for (unsigned i = 0; i < n; ++i) w += t[i];
    const double target = u * w;
    double cum = 0.0;
    unsigned pick = n - 1u;
    for (unsigned i = 0; i < n; ++i) {
        cum += t[i];
        if (cum > target) {
            pick = i;
            break;
        }
    }
    put_id(ids, host_ids, r, key_id(sorted[pick]));
}
