// out[r, j] = silu(gu[r, j]) * gu[r, hidden + j]: gate and up halves of one fused projection.
#include "common.cuh"

extern "C" __global__ void swiglu(dtype *__restrict__ out,        // [n_rows, hidden]
                                  const float *__restrict__ gu,   // [n_rows, 2 * hidden]
                                  int hidden) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // grid: (ceil(hidden / blockDim), n_rows)
    if (j >= hidden) return;
    const float *g = gu + (size_t)blockIdx.y * 2 * hidden;
    const float a = g[j];
    out[(size_t)blockIdx.y * hidden + j] = from_f32(a / (1.0f + __expf(-a)) * g[hidden + j]);
}
