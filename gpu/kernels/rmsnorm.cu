// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w, f32 in, operand type out.
#include "common.cuh"

extern "C" __global__ void rmsnorm(dtype *__restrict__ out,       // [n_rows, dim]
                                   const float *__restrict__ x,   // [n_rows, dim]
                                   const float *__restrict__ w,   // [dim]
                                   int dim, float eps) {
    pdl_launch_dependents();
    pdl_wait();
    const float *xr = x + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    const float rstd = rsqrtf(block_sum(ss) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = from_f32(xr[i] * rstd * w[i]);
}
