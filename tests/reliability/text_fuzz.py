"""Hostile text for the tokenizers and hostile chat templates, shared by bench/fuzz_tokenizer.py and
its CI variant.

`random_text` mixes code points from every plane (lone surrogates included, ~2% of texts), the
vocabulary's own special-token texts, byte-fallback look-alikes (``<0x41>``), whitespace runs,
combining marks, ZWJ emoji, RTL marks, NUL and long repeats. `check_text` runs encode (with and
without special-token parsing), decode, a one-token-at-a-time stream decode and returns what broke.

`HOSTILE_TEMPLATES` are chat templates that try to escape the Jinja sandbox, loop forever or build
huge strings; each must be refused (`TemplateError`) or finish quickly with bounded output.
"""

from __future__ import annotations

import functools
import random

from tokenizer import Tokenizer
from tokenizer.errors import EncodeError, TokenizerError

_ALPHABETS = (
    (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
    (0x900, 0x97F), (0x300, 0x36F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
    (0xE000, 0xF8FF), (0xFE00, 0xFE0F), (0xFFF0, 0xFFFF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF),
)
_PIECES = ("\u200d", "\u200f", "\u202e", "\ufeff", "\x00", "\r\n", "\t", "  ", "\n\n\n", "<0x41>", "<0xZZ>",
           "▁", "Ġ", "'s", "'LL", "123456789", "<|", "|>", "</s", "<s >", "\U0001F469\u200d\U0001F4BB")


def random_text(rng: random.Random, specials: list[str], max_len: int = 200) -> str:
    parts: list[str] = []
    for _ in range(rng.randint(0, 12)):
        roll = rng.random()
        if roll < 0.45:
            lo, hi = rng.choice(_ALPHABETS)
            cps = [rng.randint(lo, hi) for _ in range(rng.randint(1, max_len // 8))]
            parts.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF))
        elif roll < 0.65 and specials:
            parts.append(rng.choice(specials))
        elif roll < 0.85:
            parts.append(rng.choice(_PIECES))
        elif roll < 0.95:
            parts.append(rng.choice((" ", "a", "\u0301", "🙂", "ab", "\n")) * rng.randint(1, max_len))
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))).decode("latin-1"))
    if rng.random() < 0.02:
        parts.insert(rng.randrange(len(parts) + 1), chr(rng.randint(0xD800, 0xDFFF)))
    return "".join(parts)


@functools.cache
def specials_of(tok: Tokenizer) -> list[str]:
    """Texts of the control / user-defined tokens (what `parse_special` recognises)."""
    from tokenizer.vocab import TokenType

    kinds = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
    return [t for t, k in zip(tok.vocab.tokens, tok.vocab.types, strict=True) if k in kinds and t][:300]


def missing_bytes(tok: Tokenizer) -> frozenset[int]:
    """Byte values a byte-level BPE vocab has no token for (encode drops them, as llama.cpp does)."""
    from tokenizer.bpe import _LATIN1_TO_CHARS, BPETokenizer

    if not isinstance(tok, BPETokenizer):
        return frozenset()
    return frozenset(b for b in range(256) if chr(b).translate(_LATIN1_TO_CHARS) not in tok._token_to_id)


def round_trip_expected(tok: Tokenizer, text: str, missing: frozenset[int]) -> bool:
    """Whether decode(encode(text)) must give `text` back: not when a SentencePiece vocab meets its
    own space marker (U+2581 decodes to a space), not around Phi-3's user-defined tokens (llama.cpp
    strips the whitespace after them), nor when the text has a byte the vocab lacks."""
    if tok.vocab.model == "llama" and "\u2581" in text:
        return False
    if "phi" in tok.vocab.model_name and any(t in text for t in specials_of(tok)):
        return False
    return not (missing and any(b in missing for b in text.encode("utf-8")))


def check_text(tok: Tokenizer, text: str, missing: frozenset[int] = frozenset()) -> list[str]:
    """Problems found with `text` ([] when none): crashes, ids out of range, stream != decode,
    and, for plain text (no special parsing), decode(encode(text)) != text where it must hold."""
    problems: list[str] = []
    has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    for parse_special in (False, True):
        try:
            ids = tok.encode(text, add_special=False, parse_special=parse_special)
        except EncodeError:
            if not has_surrogate:
                problems.append(f"EncodeError without a lone surrogate (parse_special={parse_special})")
            continue
        except Exception as exc:  # anything else out of encode is a crash
            problems.append(f"encode crash {type(exc).__name__}: {exc}"[:300])
            continue
        if has_surrogate:
            problems.append("a lone surrogate was encoded instead of refused")
        if any(not isinstance(i, int) or not 0 <= i < tok.vocab_size for i in ids):
            problems.append("id out of range")
            continue
        problems += check_ids(tok, ids)
        if not parse_special and round_trip_expected(tok, text, missing) and tok.decode(ids) != text:
            problems.append("round trip")
    return problems


def check_ids(tok: Tokenizer, ids: list[int]) -> list[str]:
    """decode and stream decode agree on `ids` (any ids in range) and neither crashes."""
    try:
        for skip in (False, True):
            text = tok.decode(ids, skip_special=skip)
            decoder = tok.stream_decoder(skip_special=skip)
            streamed = "".join(decoder.feed(i) for i in ids) + decoder.flush()
            if streamed != text:
                return [f"stream decode != decode (skip_special={skip})"]
    except TokenizerError as exc:
        return [f"decode refused valid ids: {exc}"[:200]]
    except Exception as exc:
        return [f"decode crash {type(exc).__name__}: {exc}"[:300]]
    return []


# (name, template): each must raise TemplateError, or render fast with output under the bound
HOSTILE_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("mro", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    ("globals", "{{ raise_exception.__globals__ }}"),
    ("func-code", "{{ strftime_now.__code__ }}"),
    ("cycler-init", "{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
    ("joiner-globals", "{{ joiner.__init__.__globals__ }}"),
    ("namespace-class", "{{ namespace.__class__.__base__.__subclasses__() }}"),
    ("lipsum-globals", "{{ lipsum.__globals__['os'].system('true') }}"),
    ("self-context", "{{ self._TemplateReference__context }}"),
    ("format-attr", "{{ '{0.__class__}'.format(messages) }}"),
    ("list-mutate", "{% set x = [] %}{{ x.append(1) }}{{ x }}"),
    ("dict-mutate", "{{ messages[0].update({'role': 'x'}) }}"),
    ("range-huge", "{% for i in range(10**9) %}x{% endfor %}"),
    ("nested-loops", "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"),
    ("recursive-macro", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    ("str-mul-huge", "{{ 'x' * 10**9 }}"),
    ("str-mul-nested", "{{ ('x' * 100000) * 100000 }}"),
    ("list-mul-huge", "{{ ([1] * 10**8) | length }}"),
    ("pow-huge", "{{ 10 ** 10 ** 8 }}"),
    ("center-huge", "{{ 'x' | center(10**9) }}"),
    ("ljust-huge", "{{ 'x'.ljust(10**9) }}"),
    ("format-width", "{{ '%1000000000d' % 1 }}"),
    ("join-huge", "{{ range(100000) | join('x' * 1000) }}"),
    ("content-mul", "{{ messages[0]['content'] * 999999999 }}"),
    ("syntax", "{% if %}"),
    ("undefined-call", "{{ nothing() }}"),
    ("zero-div", "{{ 1 / 0 }}"),
)
TEMPLATE_OUTPUT_BOUND = 1 << 22  # characters; tokenizer.chat.MAX_CHARS
