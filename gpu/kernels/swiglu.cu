// out[r, j] = silu(gu[r, 2j]) * gu[r, 2j + 1]: gate and up interleaved in one fused projection (the engine
// interleaves the weight rows at load, so gemv.cu can apply the same function in its epilogue).
#include "common.cuh"

extern "C" __global__ void swiglu(dtype *__restrict__ out,        // [n_rows, hidden]
                                  const float *__restrict__ gu,   // [n_rows, hidden, 2]
                                  int hidden) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // grid: (ceil(hidden / blockDim), n_rows)
    if (j >= hidden) return;
    const float *g = gu + (size_t)blockIdx.y * 2 * hidden;
    const float a = g[2 * j];
    out[(size_t)blockIdx.y * hidden + j] = from_f32(a / (1.0f + __expf(-a)) * g[2 * j + 1]);
}
