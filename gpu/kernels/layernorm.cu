// out[r, :] = (x - mean) / sqrt(var + eps) * w + b, f32 in, operand type out.
#include "common.cuh"

extern "C" __global__ void layernorm(dtype *__restrict__ out,      // [n_rows, dim]
                                     const float *__restrict__ x,  // [n_rows, dim]
                                     const float *__restrict__ w,  // [dim]
                                     const float *__restrict__ b,  // [dim]
                                     int dim, float eps) {
    pdl_launch_dependents();
    pdl_wait();
    const float *xr = x + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
    const float mean = block_sum(s) / dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (xr[i] - mean) * (xr[i] - mean);
    const float rstd = rsqrtf(block_sum(ss) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = from_f32((xr[i] - mean) * rstd * w[i] + b[i]);
}
