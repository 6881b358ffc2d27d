"""Chat templates: the GGUF's `tokenizer.chat_template` rendered as Hugging Face's apply_chat_template does.

Jinja2's `ImmutableSandboxedEnvironment` (bounded in size and time, see sandbox.py) with
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension and the ``{% generation %}`` block,
HF's `tojson` filter, and the globals `raise_exception` and `strftime_now`. The template sees
`messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools` and `documents` (None unless
given) plus any extra keyword. Any failure — syntax, a `raise_exception`, an undefined operation, a
sandbox violation, output past `max_chars`, a render past `max_seconds` — is a `TemplateError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes

from .errors import TemplateError
from .sandbox import BoundedEnvironment, RenderTimeout, deadline

MAX_CHARS = 1 << 22  # 4 Mi characters: far beyond any context window
MAX_SECONDS = 2.0  # real templates render in milliseconds


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (HF marks assistant text with it); renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment(max_chars: int) -> BoundedEnvironment:
    env = BoundedEnvironment(
        max_chars,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = env._bounded_filter(_tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template and the special-token texts it is rendered with.

    max_chars bounds the output and every intermediate string or list; max_seconds the render's time.
    """

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        max_chars: int = MAX_CHARS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.max_chars = max_chars
        self.max_seconds = max_seconds
        try:
            self._template = _environment(max_chars).from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template line {exc.lineno}: {exc.message}") from None
        except Exception as exc:  # constant folding at compile time can fail like a render
            raise TemplateError(f"chat template does not compile: {type(exc).__name__}: {exc}") from None

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra: Any
    ) -> str:
        """The prompt for `messages` (``[{"role": ..., "content": ...}, ...]``)."""
        context = {
            "messages": _plain_messages(messages),
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            "documents": None,
            **extra,
        }
        chunks: list[str] = []
        size = 0
        try:
            with deadline(self.max_seconds):
                for chunk in self._template.generate(**context):
                    size += len(chunk)
                    if size > self.max_chars:
                        raise TemplateError(f"chat template output passed {self.max_chars} characters")
                    chunks.append(chunk)
        except TemplateError:
            raise
        except RenderTimeout:
            raise TemplateError(f"chat template ran past {self.max_seconds} s") from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"chat template broke the sandbox rules: {exc}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"chat template failed: {exc.message or type(exc).__name__}") from None
        except Exception as exc:  # a template can raise what Python can (TypeError, ZeroDivisionError...)
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None
        return "".join(chunks)


def _plain_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise TemplateError(f"message {n} must be a mapping with a string 'role'")
        out.append(dict(message))
    return out


def render_plain(messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
    """The fallback for a model without a template: ``role: content`` lines, then ``assistant:``.

    >>> render_plain([{"role": "user", "content": "Hi"}])
    'user: Hi\\nassistant:'
    """
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in _plain_messages(messages)]
    if add_generation_prompt:
        lines.append("assistant:")
    return "\n".join(lines) + ("" if add_generation_prompt else "\n")
