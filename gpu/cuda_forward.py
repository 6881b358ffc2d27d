"""The forward pass on the device: the same loop as `gpu.model.Transformer`, composed of the kernels
of `gpu/ops`, over preallocated scratch buffers and a KV cache of `n_slots` x `max_context` per layer.

Inputs of a step (token ids, positions, slots) live in device buffers, so the decode step can be
captured once per batch size as a CUDA graph and replayed. The residual stream is float32; norms
write the operand type that the projections read; projections accumulate in float32 and add the
residual in their epilogue.
"""

from __future__ import annotations

import numpy as np

from .cuda_weights import DeviceWeights
from .errors import UnsupportedModel
from .ops.attention_decode import attention_decode, n_splits
from .ops.attention_prefill import attention_prefill
from .ops.embedding import embedding
from .ops.gelu import gelu
from .ops.gemv import MAX_ROWS as GEMV_ROWS
from .ops.gemv import RopeKV, gemv
from .ops.layernorm import layernorm
from .ops.linear import linear
from .ops.rmsnorm import rmsnorm
from .ops.rope_kv import rope_kv
from .ops.swiglu import swiglu
from .runtime import Runtime


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
        self.inputs = rt.empty((3, rows), np.int32, "scratch")  # token ids, positions, slots
        self.ids, self.pos, self.slots = self.inputs[0], self.inputs[1], self.inputs[2]
        self.best = rt.empty((max_rows,), np.uint64, "scratch")  # greedy picks, packed (decode_greedy)
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
        self.logits = rt.empty((max_rows, c.vocab_size), f32, "logits")
        self._logits_all = None  # [prefill_chunk, vocab], made on the first teacher-forced call

    # --- inputs ----------------------------------------------------------------------------------
    def set_inputs(self, host: np.ndarray) -> None:
        """Copy host [3, rows] int32 (pinned: ids, positions, slots) into the device inputs, one copy."""
        import pycuda.driver as cuda

        cuda.memcpy_htod_async(self.inputs.gpudata, host, self.rt.stream)

    # --- steps -----------------------------------------------------------------------------------
    def decode(self, n: int) -> None:
        """One token for each of the n rows (inputs set); logits[:n] hold the next-token logits."""
        slots, pos = self.slots[:n], self.pos[:n]
        part_out, part_ml = self.part_out[:n], self.part_ml[:n]

        def attend(i, q, att):
            attention_decode(self.rt, att, q, self.k_cache[i], self.v_cache[i], slots, pos, part_out, part_ml)

        self._body(n, attend)
        self._head(self.x[:n], self.h[:n], self.logits[:n])

    def prefill(self, n: int, slot: int, start: int, all_logits: bool):
        """n tokens of one sequence at positions start.. (inputs set); returns the logits view:
        [n, vocab] when all_logits, else [1, vocab] for the last token."""

        def attend(i, q, att):
            attention_prefill(self.rt, att, q, self.k_cache[i], self.v_cache[i], slot, start)

        self._body(n, attend)
        if not all_logits:
            self._head(self.x[n - 1 : n], self.h[:1], self.logits[:1])
            return self.logits[:1]
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

    def _body(self, n: int, attend) -> None:
        rt, c, w = self.rt, self.cfg, self.w
        x, h, qkv, q, att = self.x[:n], self.h[:n], self.qkv[:n], self.q[:n], self.att[:n]
        gu, act = self.gu[:n], self.act[:n]
        rope_dim = c.rope_dim if w.rope != "none" else 0
        embedding(rt, x, self.ids[:n], w.token_embd, self.pos[:n], w.pos_embd)
        for i, layer in enumerate(w.layers):
            self._norm(h, x, layer.attn_norm, layer.attn_norm_bias)
            if n <= GEMV_ROWS:  # q|k|v projection with RoPE and the cache append in its epilogue
                gemv(rt, None, h, layer.wqkv, layer.bqkv, rope=RopeKV(
                    q, self.k_cache[i], self.v_cache[i], self.slots[:n], self.pos[:n], rope_dim,
                    c.rope_theta, w.rope_factors, w.attn_factor))
            else:
                linear(rt, qkv, h, layer.wqkv, layer.bqkv)  # [n, q_dim + 2 kv_dim]
                rope_kv(rt, q, self.k_cache[i], self.v_cache[i], qkv, self.slots[:n], self.pos[:n],
                        rope=w.rope, rope_dim=rope_dim, theta=c.rope_theta, freq_factors=w.rope_factors,
                        attn_factor=w.attn_factor)
            attend(i, q, att)  # [n, q_dim]
            linear(rt, x, att, layer.wo, layer.bo, accumulate=True)  # x += attention output
            self._norm(h, x, layer.ffn_norm, layer.ffn_norm_bias)
            if c.activation == "swiglu" and n <= GEMV_ROWS:  # silu(gate) * up in the gemv's epilogue
                gemv(rt, act, h, layer.w_up, layer.b_up, swiglu=True)  # [n, hidden]
            else:
                linear(rt, gu, h, layer.w_up, layer.b_up)  # [n, 2 hidden (gate, up interleaved) | hidden]
                if c.activation == "swiglu":
                    swiglu(rt, act, gu)
                else:
                    gelu(rt, act, gu)
            linear(rt, x, act, layer.w_down, layer.b_down, accumulate=True)  # x += feed-forward output

    def _head(self, x, h, logits) -> None:
        self._norm(h, x, self.w.output_norm, self.w.output_norm_bias)
        linear(self.rt, logits, h, self.w.output)
