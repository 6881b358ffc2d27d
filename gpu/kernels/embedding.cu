// out[r, :] = table[id, :] (+ pos_table[pos[r], :] for learned positions), in f32, where id = ids[r], or,
// for ids[r] = -(j + 1), fed[j]: the token a previous step picked on the device for this row's sequence
// (a negative fed id, a failed pick, reads row 0; its row's output is discarded).
#include "common.cuh"

extern "C" __global__ void embedding(float *__restrict__ out,            // [n_rows, dim]
                                     const int *__restrict__ ids,        // [n_rows]
                                     const int *__restrict__ fed,        // [>= max j + 1] or null
                                     const dtype *__restrict__ table,    // [vocab, dim]
                                     const int *__restrict__ pos,        // [n_rows]
                                     const dtype *__restrict__ pos_table,  // [n_ctx, dim] or null
                                     int dim) {
    pdl_launch_dependents();
    pdl_wait();
    const int r = blockIdx.x;
    int id = ids[r];
    if (id < 0) id = fed ? max(fed[-id - 1], 0) : 0;
    const dtype *row = table + (size_t)id * dim;
    const dtype *prow = pos_table ? pos_table + (size_t)pos[r] * dim : nullptr;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = to_f32(row[i]);
        if (prow) v += to_f32(prow[i]);
        out[(size_t)r * dim + i] = v;
    }
}
