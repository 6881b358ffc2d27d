// out = gelu(x) with the tanh approximation (GPT-2's gelu_new), f32 in, operand type out.
#include "common.cuh"

extern "C" __global__ void gelu(dtype *__restrict__ out,       // [n]
                                const float *__restrict__ x,   // [n]
                                int n) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float v = x[i];
        out[i] = from_f32(0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v))));
    }
}
