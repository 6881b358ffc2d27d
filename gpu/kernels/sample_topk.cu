// The first pass of sampling (gpu/ops/sample.py, docs/sampling.md): one block per CHUNK ids of a row, so a
// row of 151,936 logits is read once by 38 blocks instead of ten times by one.
//
// Each block of grid (n_chunks, n_rows):
// 1. applies the penalties to the ids of its chunk (an id's first occurrence in the row's window applies
//    them with its count; skipped when repetition 1, presence 0 and frequency 0, where they change nothing);
//    a window entry -(j + 1) stands for fed[j], a token an earlier step picked on the device (decode ahead);
// 2. keys its chunk into shared memory, key = (order-preserving logit bits << 24) | (2^24 - 1 - id), 0 for
//    -inf (and NaN), as sample.cu: keys are distinct and sort as the candidate order;
// 3. writes the chunk's largest key, finite count and NaN/+inf flag (chunk_best, chunk_info);
// 4. for a sampled row with 0 < top_k <= CAP and top_k * n_chunks <= MERGE_CAP (sample.cu's split path),
//    writes the chunk's top_k largest keys (all its finite keys, zero-padded, if it has no more) to
//    cand[row, chunk * top_k ...]: the row's top-k set is then the top-k of these candidates, found exactly
//    by sample.cu. The chunk's k-th key comes from a radix select on 11-bit digits in shared memory that
//    stops as soon as the digit's bucket holds exactly the keys still needed.
// Every value written is a pure function of the chunk: a row's results never depend on the batch.
#include "sample_keys.cuh"

#define CHUNK 4096
#define THREADS 256

// Window entry q: a token id, or for -(j + 1) the token fed[j] (-1, a failed pick, matches no id).
__device__ __forceinline__ int window_id(const int *__restrict__ win, int q, const int *__restrict__ fed) {
    const int t = win[q];
    return t >= 0 ? t : (fed ? fed[-t - 1] : -1);
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
    const int *__restrict__ fed,           // tokens negative window entries stand for, or null
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
            const int id = window_id(win, j, fed);
            if (id < c0 || id >= c0 + len) continue;
            int count = 0;
            bool first = true;
            for (int q = 0; q < n_win; ++q) {
                if (window_id(win, q, fed) == id) {
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
