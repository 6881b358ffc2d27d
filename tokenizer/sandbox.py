"""The Jinja environment chat templates run in: HF's sandbox, plus bounds on size and time.

`ImmutableSandboxedEnvironment` stops attribute escapes and mutation but not a template that asks for
a billion characters (``{{ 'x' * 10**9 }}``, ``'x'|center(10**9)``) or loops for ever. Here:
- `*`, `**`, `%`, `+` and `~` are checked before they run: no result past `max_chars` items, no
  huge powers, no format width or precision past `max_chars`; values read through attributes or
  items are measured too (a namespace that doubles a string each loop stops at the limit);
- string methods and every filter refuse integer arguments past `max_chars`, `replace`/`join` refuse
  results past it, and every result is measured (filters are also never constant-folded, so the
  checks hold at compile time too);
- `lipsum` is gone;
- `deadline()` stops a render that runs past its time (a line tracer; skipped while a debugger or
  coverage tool owns `sys.settrace`).
A refusal is a `jinja2.exceptions.SecurityError`.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_NUMBER = re.compile(r"\d+")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class RenderTimeout(BaseException):
    """Raised inside a render past its deadline (a BaseException, so template code cannot swallow it)."""


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to a call that checks the joined size (autoescape stays off here)."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with every size-amplifying operation checked against `max_chars`."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, max_chars: int, **options: Any) -> None:
        super().__init__(**options)
        self.max_chars = max_chars
        self.globals.pop("lipsum", None)
        self.filters = {name: self._bounded_filter(f) for name, f in self.filters.items()}

    # operators --------------------------------------------------------------------------------
    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            seq, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                self._check_size(len(seq) * max(times, 0), "repetition")
        elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() > 1 << 16:
                raise SecurityError(f"power {left}**{right} is too large")
        elif op == "%" and isinstance(left, str):
            self._check_format(left)
        elif op == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            self._check_size(len(left) + len(right), "+")
        return super().call_binop(context, op, left, right)

    def concat_bounded(self, values: tuple) -> str:
        parts = [str(v) for v in values]
        self._check_size(sum(map(len, parts)), "~")
        return "".join(parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        value = super().getattr(obj, attribute)
        self._check_result(value, f"attribute {attribute}")
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        self._check_result(value, "item")
        return value

    # calls ------------------------------------------------------------------------------------
    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # the sandbox hands str.format out wrapped (functools.wraps keeps the bound method)
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                __self._check_ints(args, kwargs, f"str.{name}")
            elif (
                name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str)
            ):
                __self._check_size(_replaced_size(owner, args[0], args[1]), "str.replace")
            elif name == "join" and args:
                __self._check_join(owner, args[0])
            elif name in ("format", "format_map"):
                __self._check_format(owner)
        result = super().call(__context, __obj, *args, **kwargs)
        __self._check_result(result, name or type(__obj).__name__)
        return result

    def _bounded_filter(self, func: Callable) -> Callable:
        name = getattr(func, "__name__", "filter")

        @jinja2.pass_context  # also keeps the compiler from folding a constant call at compile time
        @functools.wraps(func)
        def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
            self._check_ints(args, kwargs, f"filter {name}")
            if name in ("do_format", "format") and isinstance(value, str):
                self._check_format(value)
            if name.endswith("replace") and len(args) >= 2 and isinstance(value, str):
                self._check_size(_replaced_size(value, str(args[0]), str(args[1])), "filter replace")
            if name.endswith("join"):
                self._check_join(str(args[0]) if args else "", value)
            result = _call_filter(func, context, value, *args, **kwargs)
            self._check_result(result, f"filter {name}")
            return result

        return bounded

    # checks -----------------------------------------------------------------------------------
    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise SecurityError(f"{what} would make {size} items, over the {self.max_chars} limit")

    def _check_ints(self, args: tuple, kwargs: dict, what: str) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and abs(value) > self.max_chars:
                raise SecurityError(f"{what}: argument {value} is over the {self.max_chars} limit")

    def _check_format(self, fmt: str) -> None:
        if any(int(n) > self.max_chars for n in _NUMBER.findall(fmt) if len(n) >= 7):
            raise SecurityError(
                f"format string {fmt[:40]!r} asks for a width over the {self.max_chars} limit"
            )

    def _check_join(self, sep: str, items: Any) -> None:
        if isinstance(items, list | tuple) and isinstance(sep, str):
            size = len(sep) * max(len(items) - 1, 0) + sum(len(x) for x in items if isinstance(x, Sized))
            self._check_size(size, "join")

    def _check_result(self, result: Any, what: str) -> None:
        if isinstance(result, str | list | tuple | dict):
            self._check_size(len(result), what)


def _call_filter(func: Callable, context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a filter the way Jinja would, with the first argument its `pass_*` decorator asks for."""
    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    first = {"context": context, "eval_context": context.eval_ctx, "environment": context.environment}
    if pass_arg in first:
        return func(first[pass_arg], value, *args, **kwargs)
    return func(value, *args, **kwargs)


def _replaced_size(text: str, old: str, new: str) -> int:
    count = len(text) + 1 if old == "" else text.count(old)
    return len(text) + count * (len(new) - len(old))


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise `RenderTimeout` in the code run inside once `seconds` of wall time have passed."""
    if sys.gettrace() is not None:  # a debugger or coverage tool is tracing: leave it alone
        yield
        return
    end = time.monotonic() + seconds
    clock = time.monotonic

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if clock() > end:
            raise RenderTimeout()
        return tracer

    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(None)
