"""Q8_0 matrices kept quantised on the device (numpy side, no PyCUDA): which tensors of a GGUF file stay
Q8_0, and their blocks as one structured numpy record each, so the loader's row operations (fusing
q|k|v and gate|up, interleaving gate/up rows, permuting NEOX rows) apply to them as to float rows.

A tensor stays Q8_0 when it is Q8_0 in the file, is read by the projections or the embedding gather, and
every tensor fused with it is Q8_0 too; the rest is dequantised at load as before. On the device a matrix
is its quants int8 [N, K] and scales f16 [N, K / 32] (gpu/kernels/q8.cuh): 1.0625 bytes a weight.
"""

from __future__ import annotations

import numpy as np

from gguf_loader.constants import GGMLType
from gguf_loader.tensor_tables import GLOBAL_TENSORS, LAYER_TENSORS

BLOCK = np.dtype([("d", "<f2"), ("q", "i1", (32,))])  # one GGUF Q8_0 block: 32 weights of a row, 34 bytes
BLOCK_WEIGHTS = 32
BYTES_PER_WEIGHT = BLOCK.itemsize / BLOCK_WEIGHTS  # 1.0625
# fields fused into one device matrix (gpu/cuda_weights.py): they stay Q8_0 together or not at all
FUSED = (("wq", "wk", "wv"), ("w_gate", "w_up"))
MATRICES = frozenset({"wq", "wk", "wv", "wqkv", "wo", "w_gate", "w_up", "w_gate_up", "w_down"})
GLOBAL_MATRICES = frozenset({"token_embd", "output"})  # the gather reads Q8_0 rows too


def q8_groups(gguf, config) -> list[list[str]]:
    """Tensor names that stay Q8_0, one list per device matrix (fused parts in row order)."""
    def is_q8(name: str) -> bool:
        info = gguf.tensors.get(name)
        return info is not None and info.ggml_type == GGMLType.Q8_0 and len(info.shape) == 2

    groups = [[s.name] for s in GLOBAL_TENSORS[config.arch] if s.field in GLOBAL_MATRICES and is_q8(s.name)]
    specs = {s.field: s for s in LAYER_TENSORS[config.arch] if s.field in MATRICES}
    fused = [tuple(f for f in group if f in specs) for group in FUSED]
    fused = [group for group in fused if len(group) > 1]
    singles = [(f,) for f in specs if not any(f in group for group in fused)]
    for i in range(config.n_layers):
        for fields in (*fused, *singles):
            names = [specs[f].name.format(i=i) for f in fields]
            if all(is_q8(name) for name in names):
                groups.append(names)
    return groups


def expansion_weights(gguf, groups: list[list[str]]) -> int:
    """Operands in gemm's expansion buffer (gpu/ops/dequant_q8.py) for these `q8_groups`: the largest
    Q8_0 layer matrix, a group's weights summed (its fused matrix); 0 when no layer matrix stays Q8_0."""
    layer = [sum(gguf.tensors[n].n_elements for n in g) for g in groups if g[0].startswith("blk.")]
    return max(layer, default=0)


def as_blocks(raw: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A Q8_0 tensor's bytes -> its blocks [rows, cols / 32] (a view)."""
    rows, cols = shape
    return np.asarray(raw).view(BLOCK).reshape(rows, cols // BLOCK_WEIGHTS)


def split(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """blocks [N, K / 32] -> (quants int8 [N, K], scales f16 [N, K / 32]), both contiguous."""
    n = blocks.shape[0]
    return np.ascontiguousarray(blocks["q"]).reshape(n, -1), np.ascontiguousarray(blocks["d"])
