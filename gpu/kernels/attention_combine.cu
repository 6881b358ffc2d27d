// Flash-decoding, second pass: merge the splits' (m, l, unnormalised out) of one (sequence, head) into
// the attention output in the operand type. Only the splits that hold positions 0..pos are read.
#include "common.cuh"

extern "C" __global__ void attention_combine(dtype *__restrict__ out,             // [n_rows, n_heads * hd]
                                             const float *__restrict__ part_out,  // [n_rows, n_heads, S, hd]
                                             const float *__restrict__ part_ml,   // [n_rows, n_heads, S, 2]
                                             const int *__restrict__ pos,         // [n_rows]
                                             int n_splits, int split_len, int head_dim) {
    pdl_launch_dependents();
    pdl_wait();
    const size_t rh = (size_t)blockIdx.y * gridDim.x + blockIdx.x;  // row * n_heads + head
    const int used = min(n_splits, pos[blockIdx.y] / split_len + 1);
    const float *ml = part_ml + rh * n_splits * 2;
    float m_all = -INFINITY;
    for (int s = 0; s < used; ++s) m_all = fmaxf(m_all, ml[2 * s]);
    float l_all = 0.0f;
    for (int s = 0; s < used; ++s) l_all += ml[2 * s + 1] * __expf(ml[2 * s] - m_all);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < used; ++s) acc += part_out[(rh * n_splits + s) * head_dim + d] * __expf(ml[2 * s] - m_all);
        out[rh * head_dim + d] = from_f32(acc / l_all);
    }
}
