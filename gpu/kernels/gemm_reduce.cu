// The fixed-order reduction of split-K gemm (gemm.cu with gridDim.z = splits): y[m, n] =
// (accumulate ? y[m, n] : 0) + (((part[0, m, n] + part[1, m, n]) + ...) + part[splits - 1, m, n]) + bias[n].
// The partials are summed in ascending split index, so the result is deterministic and each element's
// arithmetic depends on neither M nor the element's place. Four consecutive elements per thread (16-byte
// loads and stores) when N % 4 == 0, else one.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) gemm_reduce(float *__restrict__ y,           // [M, N]
                                                              const float *__restrict__ part,  // [splits, M, N]
                                                              const float *__restrict__ bias,  // [N] or null
                                                              int M, int N, int splits, int accumulate) {
    const size_t mn = (size_t)M * N;
    const size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((N & 3) == 0) {
        const size_t i = t * 4;
        if (i >= mn) return;
        float4 v = __ldcs(reinterpret_cast<const float4 *>(part + i));
        for (int s = 1; s < splits; ++s) {
            const float4 p = __ldcs(reinterpret_cast<const float4 *>(part + (size_t)s * mn + i));
            v.x += p.x;
            v.y += p.y;
            v.z += p.z;
            v.w += p.w;
        }
        float4 prev = make_float4(0.0f, 0.0f, 0.0f, 0.0f), b = prev;
        if (accumulate) prev = *reinterpret_cast<const float4 *>(y + i);
        if (bias) b = *reinterpret_cast<const float4 *>(bias + i % N);
        *reinterpret_cast<float4 *>(y + i) =
            make_float4(prev.x + v.x + b.x, prev.y + v.y + b.y, prev.z + v.z + b.z, prev.w + v.w + b.w);
    } else {
        if (t >= mn) return;
        float v = __ldcs(part + t);
        for (int s = 1; s < splits; ++s) v += __ldcs(part + (size_t)s * mn + t);
        y[t] = (accumulate ? y[t] : 0.0f) + v + (bias ? bias[t % N] : 0.0f);
    }
}
