// out[r, :] = table[ids[r], :] (+ pos_table[pos[r], :] for learned positions), in f32.
#include "common.cuh"

extern "C" __global__ void embedding(float *__restrict__ out,            // [n_rows, dim]
                                     const int *__restrict__ ids,        // [n_rows]
                                     const dtype *__restrict__ table,    // [vocab, dim]
                                     const int *__restrict__ pos,        // [n_rows]
                                     const dtype *__restrict__ pos_table,  // [n_ctx, dim] or null
                                     int dim) {
    pdl_launch_dependents();
    pdl_wait();
    const int r = blockIdx.x;
    const dtype *row = table + (size_t)ids[r] * dim;
    const dtype *prow = pos_table ? pos_table + (size_t)pos[r] * dim : nullptr;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = to_f32(row[i]);
        if (prow) v += to_f32(prow[i]);
        out[(size_t)r * dim + i] = v;
    }
}
