"""Which prompts of a prefill batch share a packed pass (`CudaForward.prefill_packed`) and which run
alone: pure bookkeeping, no device.

A prompt is packable when it ends at or before `PACK_CTX` (its attention then fits the packed pass's
few context splits). A pass packs a run of consecutive packable prompts of at most `rows` tokens in all,
so each pass's last rows land on consecutive head rows; a prompt that runs alone ends the run. Whether a
prompt is packed depends only on its own start and length, and a packed prompt's logits do not depend
on what else is in its pass (docs/gpu.md, "Packed prefill").
"""

from __future__ import annotations

PACK_CTX = 256  # a prompt ending at or before this position can be packed with others
PACK_BUCKETS = (8, 16, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512)  # rows of a pass, padded: one
# CUDA graph each


def plan_prefill(lengths: list[int], starts: list[int], rows: int, pack_ctx: int = PACK_CTX,
                 ) -> list[range]:
    """The batch (prompt i: lengths[i] tokens from position starts[i]) as consecutive ranges of batch
    indices, in order: a range of packable prompts is one packed pass, a prompt that is not packable is
    a range of its own (`packable` tells them apart)."""
    out: list[range] = []
    first, used = 0, 0  # the open run of packable prompts: batch indices first.., `used` tokens
    for i, (n, start) in enumerate(zip(lengths, starts, strict=True)):
        if not packable(n, start, rows, pack_ctx):
            if first < i:
                out.append(range(first, i))
            out.append(range(i, i + 1))
            first, used = i + 1, 0
            continue
        if used + n > rows:
            out.append(range(first, i))
            first, used = i, 0
        used += n
    if first < len(lengths):
        out.append(range(first, len(lengths)))
    return out


def packable(n: int, start: int, rows: int, pack_ctx: int = PACK_CTX) -> bool:
    """A prompt of n tokens from `start` can share a packed pass of `rows` rows."""
    return start + n <= pack_ctx and n <= rows


def pack_bucket(n: int, rows: int) -> int:
    """The row count a packed pass of n rows is padded to: the smallest bucket >= n, at most `rows`."""
    return min(next((b for b in PACK_BUCKETS if b >= n), rows), rows)


def pack_buckets(rows: int) -> list[int]:
    """Every row count `pack_bucket` can return for passes of up to `rows` rows."""
    return sorted({pack_bucket(n, rows) for n in {*PACK_BUCKETS, rows} if n <= rows})
