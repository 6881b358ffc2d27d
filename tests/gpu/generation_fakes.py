"""Small stand-ins for generation tests: a byte-level tokenizer and an engine whose "model" is a pure
function of each sequence's tokens (so batch invariance holds by construction on the engine side, and
any batch dependence a test finds comes from the sampling/runner code)."""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from gpu.errors import ContextOverflow, InvalidInput, KVCacheFull, UnknownSlot
from gpu.params import SamplingParams

EOS, BOS = 256, 257
# seeded sampling with every filter on: the runner's and the decode-ahead tests' common request
SAMPLED = SamplingParams(temperature=0.9, top_k=50, top_p=0.95, min_p=0.02, max_tokens=12, seed=1234)


def prompts(n: int) -> list[list[int]]:
    """n short byte prompts of different lengths, each starting with BOS."""
    return [[BOS] + list(f"prompt number {i}".encode())[: 4 + i] for i in range(n)]


class ByteTokenizer:
    """ids 0..255 are bytes, 256 ``<eos>`` (the only end-of-generation id), 257 ``<bos>``, then pieces."""

    def __init__(self, pieces: Sequence[str] = ("lo</", "s>!", "é")) -> None:
        self.pieces = [p.encode() for p in pieces]
        self.vocab_size = 258 + len(self.pieces)
        self.bos_id, self.eos_id, self.eot_id = BOS, EOS, None

    def piece_id(self, piece: str) -> int:
        return 258 + self.pieces.index(piece.encode())

    def token_bytes(self, token_id: int) -> bytes:
        if token_id < 256:
            return bytes([token_id])
        return {EOS: b"<eos>", BOS: b"<bos>"}.get(token_id) or self.pieces[token_id - 258]

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        body = text.encode()
        ids: list[int] = []
        while body:
            special = next((i for i, s in ((EOS, b"<eos>"), (BOS, b"<bos>")) if body.startswith(s)), None)
            if parse_special and special is not None:
                ids.append(special)
                body = body[5:]
            else:
                ids.append(body[0])
                body = body[1:]
        return ([BOS] if add_special else []) + ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    eog_ids = frozenset({EOS})

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eog_ids

    def stream_decoder(self, skip_special: bool = False, after_text: bool = False) -> ByteStreamDecoder:
        return ByteStreamDecoder(self)

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<bos>{m['role']}: {m['content']}<eos>" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")


class ByteStreamDecoder:
    def __init__(self, tokenizer: ByteTokenizer) -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def hashed_logits(vocab_size: int, scale: float = 3.0) -> Callable[[list[int]], np.ndarray]:
    """A 'model' whose next-token logits are pseudo-random but fixed by the sequence's tokens."""

    def logits(tokens: list[int]) -> np.ndarray:
        seed = zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes())
        return (np.random.default_rng(seed).normal(0.0, scale, vocab_size)).astype(np.float32)  # [vocab]

    return logits


def scripted_logits(vocab_size: int, script: Sequence[int],
                    prompt_len: int) -> Callable[[list[int]], np.ndarray]:
    """A 'model' that puts logit 10 on ``script[n]`` after n generated tokens (0 elsewhere)."""

    def logits(tokens: list[int]) -> np.ndarray:
        row = np.zeros(vocab_size, dtype=np.float32)  # [vocab]
        row[script[min(len(tokens) - prompt_len, len(script) - 1)]] = 10.0
        return row

    return logits


class FakeEngine:
    """The engine API (alloc/free/seq_len/prefill/decode) over ``logits_fn(tokens) -> [vocab]``."""

    backend = "fake"

    def __init__(self, logits_fn: Callable[[list[int]], np.ndarray], max_batch: int = 8,
                 max_context: int = 64) -> None:
        self.logits_fn = logits_fn
        self.max_batch, self.max_context = max_batch, max_context
        self.tokens: dict[int, list[int]] = {}
        self.calls: list[tuple[str, list[int]]] = []

    def alloc(self) -> int:
        free = [s for s in range(self.max_batch) if s not in self.tokens]
        if not free:
            raise KVCacheFull(f"all {self.max_batch} slots in use")
        self.tokens[free[0]] = []
        return free[0]

    def free(self, slot: int) -> None:
        if slot not in self.tokens:
            raise UnknownSlot(f"slot {slot} is not allocated")
        del self.tokens[slot]

    def seq_len(self, slot: int) -> int:
        return len(self.tokens[slot])

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> np.ndarray:
        self.calls.append(("prefill", list(slots)))
        return self._extend(slots, prompts)

    def decode(self, slots: list[int], token_ids: list[int]) -> np.ndarray:
        self.calls.append(("decode", list(slots)))
        return self._extend(slots, [[t] for t in token_ids])

    def _extend(self, slots: list[int], chunks: list[list[int]]) -> np.ndarray:
        if len(slots) != len(chunks):
            raise InvalidInput(f"{len(slots)} slots but {len(chunks)} token lists")
        rows = []
        for slot, chunk in zip(slots, chunks, strict=True):
            if slot not in self.tokens:
                raise UnknownSlot(f"slot {slot} is not allocated")
            if len(self.tokens[slot]) + len(chunk) > self.max_context:
                raise ContextOverflow(f"slot {slot} would pass max_context {self.max_context}")
            self.tokens[slot].extend(int(t) for t in chunk)
            rows.append(self.logits_fn(self.tokens[slot]))
        return np.stack(rows)  # [B, vocab]


class DeviceSamplingEngine:
    """An engine with ``decode_mixed`` and ``prefill_mixed`` (as CudaEngine's) over another: device rows'
    tokens are picked by ``gpu.sampling.Sampler`` after the bans, -1 on a sampling failure;
    ``mixed_calls`` / ``prefill_calls`` record, per decode / prefill call, which rows were left to the
    host (True)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.mixed_calls: list[list[bool]] = []
        self.prefill_calls: list[list[bool]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def decode_mixed(self, slots, token_ids, params_list, steps, histories, banned=None):
        logits = self.inner.decode(slots, token_ids)  # [B, vocab]
        return self._pick(logits, self.mixed_calls, params_list, steps, histories, banned)

    def prefill_mixed(self, slots, prompts, params_list, steps, histories, banned=None):
        logits = self.inner.prefill(slots, prompts)  # [B, vocab]
        return self._pick(logits, self.prefill_calls, params_list, steps, histories, banned)

    @staticmethod
    def _pick(logits, calls, params_list, steps, histories, banned):
        from gpu.errors import SamplingError
        from gpu.sampling import Sampler

        host = [p is None for p in params_list]
        calls.append(host)
        ids = np.full(len(params_list), -1, dtype=np.int32)  # [B]
        for i, params in enumerate(params_list):
            if params is None:
                continue
            assert params.seed is not None and not (params.logit_bias or params.ignore_eos or params.logprobs)
            row = logits[i].copy()  # [vocab]
            row[list(banned[i] if banned else ())] = -np.inf
            try:
                ids[i] = Sampler(params).sample(row, histories[i], steps[i])
            except SamplingError:
                pass
        return ids, (logits if any(host) else None)


class AheadEngine(DeviceSamplingEngine):
    """DeviceSamplingEngine plus ``launch_decode`` (as CudaEngine's): the step runs at once but its ids come
    back through the returned pick's ``ids()``; a None token feeds the slot the token the last launch
    picked for it, which its history (ending before that token) gets too, as the device's penalty window
    does. ``events`` records ("launch", slots) and ("read", launch number) in order."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.fed: dict[int, int] = {}
        self.events: list[tuple[str, object]] = []

    def launch_decode(self, slots, token_ids, params_list, steps, histories, banned=None):
        tokens, full = [], []
        for slot, token, history in zip(slots, token_ids, histories, strict=True):
            if token is None:
                if slot not in self.fed:
                    raise InvalidInput(f"slot {slot}: nothing to feed")
                token = max(self.fed[slot], 0)
                history = [*history, token]
            tokens.append(token)
            full.append(history)
        ids, _ = self.decode_mixed(slots, tokens, params_list, steps, full, banned)
        self.fed = dict(zip(slots, ids.tolist(), strict=True))
        number = sum(kind == "launch" for kind, _ in self.events)
        self.events.append(("launch", list(slots)))
        return _Pick(self.events, number, ids)

    def free(self, slot: int) -> None:
        self.fed.pop(slot, None)
        self.inner.free(slot)

    def prefill_mixed(self, slots, prompts, params_list, steps, histories, banned=None):
        for slot in slots:
            self.fed.pop(slot, None)
        return super().prefill_mixed(slots, prompts, params_list, steps, histories, banned)


class _Pick:
    def __init__(self, events: list, number: int, ids: np.ndarray) -> None:
        self.events, self.number, self._ids = events, number, ids

    def ids(self) -> np.ndarray:
        self.events.append(("read", self.number))
        return self._ids
