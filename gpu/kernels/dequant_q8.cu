// out[n, k] = d[n, k / 32] * q[n, k], rounded to the operand type (q8.cuh): a Q8_0 matrix expanded for the
// tensor-core gemm (prompts longer than gemv takes). Each thread writes 8 operands (16 bytes).
#include "q8.cuh"

extern "C" __global__ void dequant_q8(dtype *__restrict__ out,          // [N, K]
                                      const int8_t *__restrict__ q,     // [N, K]
                                      const __half *__restrict__ scales,  // [N, K / 32]
                                      long long n_groups) {              // N * K / 8
    pdl_wait();  // the kernel before may still read `out` (the previous matrix's copy)
    pdl_launch_dependents();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // a group of 8 operands
    if (i >= n_groups) return;
    const uint2 quants = __ldg(reinterpret_cast<const uint2 *>(q) + i);
    reinterpret_cast<uint4 *>(out)[i] = dequant8(quants, __ldg(scales + i / 4));  // 4 groups a block
}
