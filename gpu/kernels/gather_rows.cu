// out[i, :] = x[rows[i], :] in f32: the last position of each prompt of a packed prefill, for the head.
#include "common.cuh"

extern "C" __global__ void gather_rows(float *__restrict__ out,       // [n_out, dim]
                                       const float *__restrict__ x,   // [n_rows, dim]
                                       const int *__restrict__ rows,  // [n_out]
                                       int dim) {
    const float *src = x + (size_t)rows[blockIdx.x] * dim;
    float *dst = out + (size_t)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}
