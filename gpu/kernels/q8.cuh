// Q8_0 weights as the engine keeps them: quants int8 [N, K] and one f16 scale per 32-wide block of a row,
// scales [N, K / 32] (the GGUF block's d). dequant8 turns eight quants of one block into eight operands,
// each the exact product d * q rounded once to the operand type: the values the loader's numpy
// dequantisation (d * q in f32, then to_operand) gives, so Q8 and dequantised weights compute the same bits.
#pragma once
#include "common.cuh"

// One weight: d * q rounded to the operand type.
__device__ __forceinline__ dtype dequant1(int8_t q, __half d) {
#ifdef USE_BF16
    return __float2bfloat16((float)q * __half2float(d));
#else
    return __hmul(__int2half_rn(q), d);
#endif
}

#ifdef USE_BF16
__device__ __forceinline__ uint4 dequant8(uint2 q, __half d) {
    const float s = __half2float(d);
    const int8_t *b = reinterpret_cast<const int8_t *>(&q);
    uint4 out;
    unsigned *o = reinterpret_cast<unsigned *>(&out);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const dtype2 v = __floats2bfloat162_rn((float)b[2 * i] * s, (float)b[2 * i + 1] * s);
        o[i] = *reinterpret_cast<const unsigned *>(&v);
    }
    return out;
}
#else
// int8 -> f16 without conversions: the byte xor 0x80 is q + 128, placed under the exponent of 1024 it
// reads as 1024 + q + 128, and subtracting 1152 leaves q exactly; one f16 multiply rounds d * q.
__device__ __forceinline__ unsigned q2_to_half2(unsigned biased, unsigned selector, __half2 d2) {
    const unsigned bits = __byte_perm(biased, 0x64646464u, selector);
    __half2 v = *reinterpret_cast<const __half2 *>(&bits);
    v = __hmul2(__hsub2(v, __float2half2_rn(1152.0f)), d2);
    return *reinterpret_cast<const unsigned *>(&v);
}

__device__ __forceinline__ uint4 dequant8(uint2 q, __half d) {
    const __half2 d2 = __half2half2(d);
    const unsigned lo = q.x ^ 0x80808080u, hi = q.y ^ 0x80808080u;
    return make_uint4(q2_to_half2(lo, 0x5140, d2), q2_to_half2(lo, 0x7362, d2), q2_to_half2(hi, 0x5140, d2),
                      q2_to_half2(hi, 0x7362, d2));
}
#endif
