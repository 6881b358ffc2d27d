"""Hostile chat templates fail fast with TemplateError; ordinary filters and methods still work."""

from __future__ import annotations

import sys
import time
import tracemalloc

import pytest

from tokenizer import TemplateError
from tokenizer.chat import ChatTemplate

MESSAGES = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ messages[0].content * 999999999 }}",
        "{{ (range(10)|list) * 10**8 }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x'.center(1000000000) }}",
        "{{ 'x'.zfill(999999999) }}",
        "{{ 7 ** 99999999 }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '{:1000000000}'.format(1) }}",
        "{{ '%s'|format(1)|indent(1000000000) }}",
        "{{ ('x' * 1000)|replace('x', 'x' * 5000) }}",
        "{{ ('x' * 4000).replace('', 'y' * 2000) }}",
        "{{ (['x' * 4000] * 1000)|join('y' * 4000) }}",
        "{{ lipsum(1000000) }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s=['x']) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set a = 'x' * 3000000 %}{{ a ~ a ~ a }}",
    ],
)
def test_size_bombs_are_refused(source):
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            ChatTemplate(source).render(MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # refused before the big value was built


@pytest.mark.skipif(sys.gettrace() is not None, reason="a debugger or coverage tracer is active: no deadline")
def test_endless_loop_hits_the_deadline():
    source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    start = time.monotonic()
    with pytest.raises(TemplateError, match="ran past 0.2 s"):
        ChatTemplate(source, max_seconds=0.2).render(MESSAGES)
    assert time.monotonic() - start < 2.0
    assert sys.gettrace() is None  # the deadline tracer is removed


def test_ordinary_filters_and_methods_still_work():
    source = (
        "{{ messages|length }}|{{ 'a,b'|replace(',', ';') }}|{{ ['a', 'b']|join(', ') }}|{{ '%05d' % 42 }}|"
        "{{ '{:>3}'.format('x') }}|{{ 'x'.center(3) }}|{{ 'AbC'|lower }}|"
        "{{ messages|map(attribute='role')|join(',') }}|"
        "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ 'a\\nb'|indent(2) }}|"
        "{{ messages[0]|tojson }}|{{ 'x' * 3 }}|{{ 2 ** 10 }}|{{ 'a' ~ 1 ~ none }}|{{ 1 + 2 }}{{ [1] + [2] }}"
    )
    assert ChatTemplate(source).render(MESSAGES) == (
        "2|a;b|a, b|00042|  x| x |abc|user,assistant|1|a\n  b|"
        '{"role": "user", "content": "hello"}|xxx|1024|a1None|3[1, 2]'
    )
