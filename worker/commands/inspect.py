"""`orcd inspect MODEL`: what a GGUF model is and how much memory it needs.

MODEL is a path or a catalogue name (default: the default model). Prints the architecture and its
hyper-parameters, the tokenizer, the tensor types, the parameter count, the file size and a memory
estimate for --ctx tokens x --batch sequences; --json prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

MIB = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="describe a GGUF model and its memory needs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="path or catalogue name (default: the default model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ctx", type=_positive, default=None, metavar="N",
                        help="context tokens per sequence for the estimate (default: the model's)")
    parser.add_argument("--batch", type=_positive, default=1, metavar="N", help="sequences (default 1)")
    parser.add_argument("--dtype", default="f16", choices=("f32", "f16", "bf16", "native"),
                        help="compute dtype of the weights (native: as stored in the file; default f16)")
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def describe(path: Any, ctx: int | None = None, batch: int = 1, compute_dtype: str = "f16") -> dict[str, Any]:
    """Everything `orcd inspect` reports, as a JSON-ready dict."""
    from gguf_loader import memory
    from gguf_loader.arch import ModelConfig
    from gguf_loader.reader import open_gguf

    with open_gguf(path) as gguf:
        config = ModelConfig.from_gguf(gguf)
        meta = gguf.metadata
        tokens = meta.get("tokenizer.ggml.tokens")
        estimate = memory.estimate(config, gguf, compute_dtype, ctx, batch)
        return {
            "path": str(path),
            "file_size": gguf.file_size,
            "gguf_version": gguf.version,
            "name": meta.get("general.name"),
            "architecture": config.arch,
            "config": asdict(config) | {"q_dim": config.q_dim, "kv_dim": config.kv_dim},
            "tokenizer": {
                "model": meta.get("tokenizer.ggml.model"),
                "pre": meta.get("tokenizer.ggml.pre"),
                "n_tokens": len(tokens) if isinstance(tokens, list) else 0,
                "bos_id": meta.get("tokenizer.ggml.bos_token_id"),
                "eos_id": meta.get("tokenizer.ggml.eos_token_id"),
                "chat_template": "tokenizer.chat_template" in meta,
            },
            "n_tensors": len(gguf.tensors),
            "n_params": memory.parameter_count(gguf),
            "tensor_bytes": memory.tensor_bytes(gguf),
            "tensor_types": memory.type_histogram(gguf),
            "memory": estimate.to_dict(),
        }


def run(args: argparse.Namespace) -> int:
    from gguf_loader.assets import resolve_model

    info = describe(resolve_model(args.model), args.ctx, args.batch, args.dtype)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_text(info))
    return 0


def _text(info: dict[str, Any]) -> str:
    c, tok, mem = info["config"], info["tokenizer"], info["memory"]
    rope = "none" if c["rope"] == "none" else f"{c['rope']} (theta {c['rope_theta']:g}, {c['rope_dim']} dims)"
    if c["rope_scaling"]:
        rope += f", LongRoPE factors (original context {c['rope_scaling']['original_context_length']})"
    flags = [f for f, on in (("tied embeddings", c["tied_embeddings"]), ("QKV bias", c["qkv_bias"]),
                             ("learned positions", c["learned_pos"])) if on]
    types = ", ".join(f"{name} x{h['count']} ({h['nbytes'] / MIB:.1f} MiB)"
                      for name, h in info["tensor_types"].items())
    n_params = info["n_params"]
    lines = [
        f"model         {info['path']}",
        f"name          {info['name'] or '-'}",
        f"file          {info['file_size']:,} bytes (GGUF v{info['gguf_version']}, "
        f"{info['n_tensors']} tensors)",
        f"architecture  {info['architecture']}: {c['n_layers']} layers, dim {c['dim']}, "
        f"hidden {c['hidden_dim']}, heads {c['n_heads']}/{c['n_kv_heads']} kv, head_dim {c['head_dim']}",
        f"              vocab {c['vocab_size']}, context {c['context_length']}, "
        f"{c['norm']} (eps {c['norm_eps']:g}), {c['activation']}",
        f"rope          {rope}",
        f"features      {', '.join(flags) or '-'}",
        f"tokenizer     {tok['model']} (pre {tok['pre']}), {tok['n_tokens']} tokens, bos {tok['bos_id']}, "
        f"eos {tok['eos_id']}{', chat template' if tok['chat_template'] else ''}",
        f"parameters    {n_params:,} ({info['tensor_bytes'] / max(n_params, 1):.3f} bytes/param in the file)",
        f"tensor types  {types or '- (vocabulary only)'}",
        f"memory        {mem['compute_dtype']}, ctx {mem['ctx']}, batch {mem['batch']}: "
        f"weights {mem['weight_bytes'] / MIB:.1f} MiB ({mem['bytes_per_param']:.2f} bytes/param), "
        f"KV {mem['kv_bytes'] / MIB:.1f} MiB ({mem['kv_bytes_per_token'] / 1024:.1f} KiB/token), "
        f"workspace {mem['workspace_bytes'] / MIB:.1f} MiB, total {mem['total_bytes'] / MIB:.1f} MiB",
    ]
    return "\n".join(lines)
