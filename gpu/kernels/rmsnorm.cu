// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w, f32 in, operand type out; one block per row.
// The block size is part of the result (the order of the sum of squares, see row_sumsq): the launcher
// uses the block size of the gemv that reads `out`, whose fused norm computes the same bits.
#include "common.cuh"

extern "C" __global__ void rmsnorm(dtype *__restrict__ out,       // [n_rows, dim]
                                   const float *__restrict__ x,   // [n_rows, dim]
                                   const float *__restrict__ w,   // [dim]
                                   int dim, float eps) {
    const float *xr = x + (size_t)blockIdx.x * dim;
    const float rstd = rsqrtf(block_sum(row_sumsq(xr, dim, threadIdx.x, blockDim.x)) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = from_f32(xr[i] * rstd * w[i]);
}
