// out[r, :] = table[id, :] (+ pos_table[pos[r], :] for learned positions), in f32, where id = ids[r], or,
// for ids[r] = -(j + 1), fed[j]: the token a previous step picked on the device for this row's sequence
// (a negative fed id, a failed pick, reads row 0; its row's output is discarded).
// -D TABLE_Q8=1: the token table is Q8_0 (q8.cuh): int8 [vocab, dim] and table_scales f16 [vocab, dim / 32];
// each value is rounded to the operand type as the dequantised table would hold it.
#include "q8.cuh"
#ifndef TABLE_Q8
#define TABLE_Q8 0
#endif
#if TABLE_Q8
typedef int8_t table_t;
#else
typedef dtype table_t;
#endif

extern "C" __global__ void embedding(float *__restrict__ out,            // [n_rows, dim]
                                     const int *__restrict__ ids,        // [n_rows]
                                     const int *__restrict__ fed,        // [>= max j + 1] or null
                                     const table_t *__restrict__ table,  // [vocab, dim]
                                     const __half *__restrict__ table_scales,  // [vocab, dim / 32] (Q8)
                                     const int *__restrict__ pos,        // [n_rows]
                                     const dtype *__restrict__ pos_table,  // [n_ctx, dim] or null
                                     int dim) {
    pdl_launch_dependents();
    pdl_wait();
    const int r = blockIdx.x;
    int id = ids[r];
    if (id < 0) id = fed ? max(fed[-id - 1], 0) : 0;
    const table_t *row = table + (size_t)id * dim;
    const dtype *prow = pos_table ? pos_table + (size_t)pos[r] * dim : nullptr;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
#if TABLE_Q8
        float v = to_f32(dequant1(row[i], table_scales[(size_t)id * (dim / 32) + i / 32]));
#else
        float v = to_f32(row[i]);
#endif
        if (prow) v += to_f32(prow[i]);
        out[(size_t)r * dim + i] = v;
    }
}
