"""The forward pass on the device: the same loop as `gpu.model.Transformer`, composed of the kernels
of `gpu/ops`, over preallocated scratch buffers and a KV cache of `n_slots` x `max_context` per layer.

Inputs of a step (token ids, positions, slots) live in device buffers, so the decode step can be
captured once per batch size as a CUDA graph and replayed. The residual stream is float32; norms
write the operand type that the projections read; projections accumulate in float32 and add the
residual in their epilogue.

Prefill comes in two forms. A packed pass runs several short prompts (each ending before position
`PACK_CTX`) as one set of rows: every kernel but attention is per row already, and attention is the
decode kernel, per row over its own slot's cache up to its own position. Its projections always use
the tensor-core gemm, whose rows do not depend on the other rows, so a prompt's logits are the same
whatever it is packed with. A longer prompt runs alone in chunks with the tiled causal attention.
Either way each prompt's last hidden row goes to `x_last`, and one head pass turns those rows into
`logits[:B]`, where the decode step's sampler finds them.
"""

from __future__ import annotations

import os

import numpy as np

from .cuda_weights import DeviceWeights
from .errors import UnsupportedModel
from .ops import blocks
from .ops.attention_decode import SPLIT_LEN, attention_decode, n_splits
from .ops.attention_prefill import attention_prefill
from .ops.embedding import embedding
from .ops.gather_rows import gather_rows
from .ops.gelu import gelu
from .ops.gemm import gemm
from .ops.gemv import MAX_ROWS as GEMV_ROWS
from .ops.gemv import RopeKV, gemv
from .ops.layernorm import layernorm
from .ops.linear import linear
from .ops.rmsnorm import rmsnorm
from .ops.rope_kv import rope_kv
from .ops.swiglu import swiglu
from .prefill_plan import PACK_CTX
from .runtime import Runtime

# decode projections (gemv) that load their first weights before the programmatic wait, streaming them while
# the kernel before ends: q|k|v (after rmsnorm), o (after attention), down (after gate/up), where the matrix
# is at most PRELOAD_MAX_BYTES. Measured on H100s (docs/gpu.md): faster for all three of Qwen2.5-0.5B's
# (0.85-8.7 MB), slower for its gate/up (9.3 MB Q8_0, under the ffn rmsnorm) and for Phi-3-mini's 10-57 MB
# matrices: many blocks' loads issued early slow the kernel still running. $ORCD_GEMV_PRELOAD: an A/B switch
PRELOAD = frozenset(os.environ.get("ORCD_GEMV_PRELOAD", "qkv,o,down").split(","))
PRELOAD_MAX_BYTES = 9_000_000


def pack_splits(max_context: int) -> int:
    """Context splits of the decode attention that cover positions below PACK_CTX."""
    return blocks(min(PACK_CTX, max_context), SPLIT_LEN)


class CudaForward:
    """Scratch, KV cache and the layer loop for up to `max_rows` rows per step."""

    def __init__(self, rt: Runtime, config, weights: DeviceWeights, n_slots: int, max_context: int,
                 max_rows: int, prefill_chunk: int):
        if config.norm not in ("rmsnorm", "layernorm") or config.activation not in ("swiglu", "gelu"):
            raise UnsupportedModel(f"{config.arch}: norm {config.norm!r} / activation {config.activation!r}")
        self.rt, self.cfg, self.w = rt, config, weights
        self.max_context, self.max_rows = max_context, max_rows
        c, op, f32 = config, rt.operand, np.float32
        cache_shape = (n_slots, c.n_kv_heads, max_context, c.head_dim)
        self.k_cache = [rt.empty(cache_shape, op, "kv_cache") for _ in range(c.n_layers)]
        self.v_cache = [rt.empty(cache_shape, op, "kv_cache") for _ in range(c.n_layers)]
        rows = max(max_rows, prefill_chunk)
        self.rows = rows
        self.inputs = rt.empty((4, rows), np.int32, "scratch")  # token ids, positions, slots, last rows
        self.ids, self.pos, self.slots, self.last = (self.inputs[i] for i in range(4))
        self.best = rt.empty((max_rows,), np.uint64, "scratch")  # greedy picks, packed (decode_greedy)
        self.fed = rt.empty((max_rows,), np.int32, "sampling")  # tokens picked by the last launched step:
        # an input id -(j + 1) embeds fed[j] (CudaEngine.launch_decode)
        self.x = rt.empty((rows, c.dim), f32, "scratch")  # residual stream
        self.h = rt.empty((rows, c.dim), op, "scratch")  # normed
        self.qkv = rt.empty((rows, c.qkv_dim), f32, "scratch")
        self.q = rt.empty((rows, c.n_heads, c.head_dim), op, "scratch")
        self.att = rt.empty((rows, c.q_dim), op, "scratch")
        self.gu = rt.empty((rows, c.ffn_in_dim), f32, "scratch")
        self.act = rt.empty((rows, c.hidden_dim), op, "scratch")
        splits = n_splits(max_context)
        self.part_out = rt.empty((max_rows, c.n_heads, splits, c.head_dim), f32, "scratch")
        self.part_ml = rt.empty((max_rows, c.n_heads, splits, 2), f32, "scratch")
        self.pack_splits = pack_splits(max_context)
        self.pack_part_out = rt.empty((rows, c.n_heads, self.pack_splits, c.head_dim), f32, "scratch")
        self.pack_part_ml = rt.empty((rows, c.n_heads, self.pack_splits, 2), f32, "scratch")
        self.x_last = rt.empty((max_rows, c.dim), f32, "scratch")  # each prompt's last row, for the head
        self.logits = rt.empty((max_rows, c.vocab_size), f32, "logits")
        self._logits_all = None  # [prefill_chunk, vocab], made on the first teacher-forced call

    # --- inputs ----------------------------------------------------------------------------------
    def set_inputs(self, host: np.ndarray) -> None:
        """Copy host [4, rows] int32 (pinned: ids, positions, slots, last rows) into the device inputs."""
        import pycuda.driver as cuda

        cuda.memcpy_htod_async(self.inputs.gpudata, host, self.rt.stream)

    # --- steps -----------------------------------------------------------------------------------
    def decode(self, n: int, direct_ctx: int = 0) -> None:
        """One token for each of the n rows (inputs set); logits[:n] hold the next-token logits. direct_ctx:
        the one-pass attention covering that many positions (every position below it; the same result, one
        launch less a layer); 0: the two-pass attention."""
        slots, pos = self.slots[:n], self.pos[:n]
        part_out, part_ml = self.part_out[:n], self.part_ml[:n]

        def attend(i, q, att):
            attention_decode(self.rt, att, q, self.k_cache[i], self.v_cache[i], slots, pos, part_out, part_ml,
                             direct_ctx=direct_ctx)

        self._body(n, attend, packed=False)
        self._head(self.x[:n], self.h[:n], self.logits[:n])

    def prefill(self, n: int) -> None:
        """n tokens of one sequence (inputs set: the slot in every row, positions start..start+n-1), causal
        tiled attention; reads only device inputs, so graph-capturable per n."""

        def attend(i, q, att):
            attention_prefill(self.rt, att, q, self.k_cache[i], self.v_cache[i], self.slots[:n], self.pos[:n])

        self._body(n, attend, packed=False)

    def prefill_packed(self, n: int) -> None:
        """n rows of packed short prompts (inputs set: per-row ids, positions < PACK_CTX, slots); the
        last hidden rows stay in x until `gather_last`. Reads only device inputs: graph-capturable."""
        part_out, part_ml = self.pack_part_out[:n], self.pack_part_ml[:n]

        def attend(i, q, att):
            attention_decode(self.rt, att, q, self.k_cache[i], self.v_cache[i], self.slots[:n], self.pos[:n],
                             part_out, part_ml, splits=self.pack_splits)

        self._body(n, attend, packed=True)

    def gather_last(self, n_prompts: int, out_row: int) -> None:
        """x_last[out_row : out_row + n_prompts] = x[last[:n_prompts]]: a packed pass's last rows."""
        gather_rows(self.rt, self.x_last[out_row : out_row + n_prompts], self.x, self.last[:n_prompts])

    def keep_last(self, row: int, out_row: int) -> None:
        """x_last[out_row] = x[row]: the last row of a prompt prefilled alone."""
        import pycuda.driver as cuda

        size = self.x.strides[0]  # bytes per row
        dest, src = int(self.x_last.gpudata) + out_row * size, int(self.x.gpudata) + row * size
        cuda.memcpy_dtod_async(dest, src, size, self.rt.stream)

    def head_last(self, n_prompts: int):
        """logits[:n_prompts] of the rows in x_last; returns that device view [n_prompts, vocab]."""
        self._head(self.x_last[:n_prompts], self.h[:n_prompts], self.logits[:n_prompts])
        return self.logits[:n_prompts]

    def head_all(self, n: int):
        """Logits of all n rows of the last `prefill` (teacher forcing); the device view [n, vocab]."""
        if self._logits_all is None:
            self._logits_all = self.rt.empty((self.rows, self.cfg.vocab_size), np.float32, "logits")
        self._head(self.x[:n], self.h[:n], self._logits_all[:n])
        return self._logits_all[:n]

    # --- the layer loop ----------------------------------------------------------------------------
    def _norm(self, out, x, weight, bias) -> None:
        if self.cfg.norm == "rmsnorm":
            rmsnorm(self.rt, out, x, weight, self.cfg.norm_eps)
        else:
            layernorm(self.rt, out, x, weight, bias, self.cfg.norm_eps)

    def _body(self, n: int, attend, packed: bool) -> None:
        """The layers over n rows; `packed` takes the gemm for every projection (rows independent of n)."""
        rt, c, w = self.rt, self.cfg, self.w
        project = gemm if packed else linear
        fused = n <= GEMV_ROWS and not packed  # gemv with RoPE / SwiGLU in its epilogue

        def early(site: str, matrix) -> dict:  # gemv's preload, where this pass projects with gemv
            small = matrix.nbytes <= PRELOAD_MAX_BYTES
            return {"preload": True} if fused and site in PRELOAD and small else {}

        x, h, qkv, q, att = self.x[:n], self.h[:n], self.qkv[:n], self.q[:n], self.att[:n]
        gu, act = self.gu[:n], self.act[:n]
        rope_dim = c.rope_dim if w.rope != "none" else 0
        embedding(rt, x, self.ids[:n], w.token_embd, self.pos[:n], w.pos_embd, fed=self.fed)
        for i, layer in enumerate(w.layers):
            self._norm(h, x, layer.attn_norm, layer.attn_norm_bias)
            if fused:  # q|k|v projection with RoPE and the cache append in its epilogue
                gemv(rt, None, h, layer.wqkv, layer.bqkv, rope=RopeKV(
                    q, self.k_cache[i], self.v_cache[i], self.slots[:n], self.pos[:n], rope_dim,
                    c.rope_theta, w.rope_factors, w.attn_factor), **early("qkv", layer.wqkv))
            else:
                project(rt, qkv, h, layer.wqkv, layer.bqkv)  # [n, q_dim + 2 kv_dim]
                rope_kv(rt, q, self.k_cache[i], self.v_cache[i], qkv, self.slots[:n], self.pos[:n],
                        rope=w.rope, rope_dim=rope_dim, theta=c.rope_theta, freq_factors=w.rope_factors,
                        attn_factor=w.attn_factor)
            attend(i, q, att)  # [n, q_dim]
            project(rt, x, att, layer.wo, layer.bo, accumulate=True, **early("o", layer.wo))  # x += attention
            self._norm(h, x, layer.ffn_norm, layer.ffn_norm_bias)
            if c.activation == "swiglu" and fused:  # silu(gate) * up in the gemv's epilogue
                gemv(rt, act, h, layer.w_up, layer.b_up, swiglu=True)  # [n, hidden]
            else:
                project(rt, gu, h, layer.w_up, layer.b_up)  # [n, 2 hidden (gate, up interleaved) | hidden]
                if c.activation == "swiglu":
                    swiglu(rt, act, gu)
                else:
                    gelu(rt, act, gu)
            project(rt, x, act, layer.w_down, layer.b_down, accumulate=True,
                    **early("down", layer.w_down))  # x += feed-forward output

    def _head(self, x, h, logits) -> None:
        self._norm(h, x, self.w.output_norm, self.w.output_norm_bias)
        linear(self.rt, logits, h, self.w.output)
