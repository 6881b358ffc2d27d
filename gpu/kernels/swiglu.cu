// out[r, j] = silu(gu[r, j]) * gu[r, hidden + j]: gate and up halves of one fused projection.
#include "common.cuh"

extern "C" __global__ void swiglu(dtype *__restrict__ out,        // [n_rows, hidden]
                                  const float *__restrict__ gu,   // [n_rows, 2 * hidden]
                                  int hidden) {
    const float *g = gu + (size_t)blockIdx.x * 2 * hidden;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        const float a = g[j];
        out[(size_t)blockIdx.x * hidden + j] = from_f32(a / (1.0f + __expf(-a)) * g[hidden + j]);
    }
}
