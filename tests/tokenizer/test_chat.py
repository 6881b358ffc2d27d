"""Chat templates: the real SmolLM2 / Qwen coder / Phi-3 templates, the sandbox, the fallback format."""

from __future__ import annotations

import os

import pytest

from tokenizer import TemplateError, load_tokenizer
from tokenizer.chat import ChatTemplate, render_plain

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
]
# Both models use ChatML: <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, then the assistant header.
CHATML = (
    "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n4.<|im_end|>\n"
)
GENERATION_PROMPT = "<|im_start|>assistant\n"


@pytest.mark.parametrize("model", ["smollm2", "qwen_coder"])
def test_system_user_assistant(model, request):
    tok = request.getfixturevalue(model)
    assert tok.render_chat(CONVERSATION) == CHATML + GENERATION_PROMPT
    assert tok.render_chat(CONVERSATION, add_generation_prompt=False) == CHATML


def test_default_system_prompts(smollm2, qwen_coder):
    user = [{"role": "user", "content": "Hi"}]
    assert smollm2.render_chat(user) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n" + GENERATION_PROMPT
    )
    assert qwen_coder.render_chat(user) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n" + GENERATION_PROMPT
    )


def test_rendered_prompt_tokenizes_with_control_tokens(qwen_coder):
    ids = qwen_coder.encode(qwen_coder.render_chat(CONVERSATION), parse_special=True)
    assert ids[0] == 151644 and ids.count(151644) == 4 and ids.count(151645) == 3  # <|im_start|>, <|im_end|>
    assert ids[-3:] == [151644, 77091, 198]  # <|im_start|> "assistant" "\n"


def test_qwen_tool_call_and_tool_response(qwen_coder):
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny"},
    ]
    text = qwen_coder.chat_template.render(messages, add_generation_prompt=False, tools=[tool])
    assert text == (
        "<|im_start|>system\nS\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query."
        "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}'
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nParis?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    )


def test_bos_token_variable(vocab_tokenizer):
    phi3 = vocab_tokenizer("phi-3")
    text = phi3.render_chat([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])
    assert text == "<s><|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n"


def test_plain_fallback_without_template(llama_spm):
    assert llama_spm.chat_template is None
    assert llama_spm.render_chat(CONVERSATION) == (
        "system: You are a terse assistant.\nuser: What is 2+2?\nassistant: 4.\nassistant:"
    )
    assert render_plain(CONVERSATION[1:2], add_generation_prompt=False) == "user: What is 2+2?\n"


def test_hf_globals_and_filters():
    tpl = ChatTemplate(
        "{{ messages[0] | tojson }}|{{ strftime_now('%Y') | length }}|"
        "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.role }}{% endfor %}"
        "{% generation %}G{% endgeneration %}"
    )
    out = tpl.render([{"role": "user", "content": "é"}, {"role": "bot"}])
    assert out == '{"role": "user", "content": "é"}|4|botG'


@pytest.mark.parametrize(
    "source, words",
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
        ("{{ messages.append(1) }}", "sandbox"),
        ("{% set _ = messages[0].update({'role': 'x'}) %}", "sandbox"),
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{{ missing.attribute }}", "undefined"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
    ],
)
def test_render_failures_are_template_errors(source, words):
    with pytest.raises(TemplateError, match=words):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_syntax_error_names_the_line():
    with pytest.raises(TemplateError, match="line 2"):
        ChatTemplate("ok\n{% for %}")


def test_output_is_bounded():
    tpl = ChatTemplate("{% for i in range(1000) %}{{ 'x' * 10 }}{% endfor %}", max_chars=5000)
    with pytest.raises(TemplateError, match="5000 characters"):
        tpl.render([])


def test_messages_must_have_roles():
    with pytest.raises(TemplateError, match="message 1"):
        ChatTemplate("{{ messages }}").render([{"role": "user"}, {"content": "no role"}])


def test_broken_template_in_metadata_fails_at_use_not_at_load():
    metadata = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a"],
        "tokenizer.ggml.merges": [],
        "tokenizer.chat_template": "{% if %}",
    }
    tok = load_tokenizer(metadata)  # still good for plain text
    assert tok.encode("a") == [0] and tok.chat_template is None
    with pytest.raises(TemplateError, match="does not compile"):
        tok.render_chat([{"role": "user", "content": "a"}])


@pytest.mark.skipif(not os.environ.get("ORCD_DEV_ORACLE"), reason="dev-only oracle: set ORCD_DEV_ORACLE=1")
@pytest.mark.parametrize("model", ["smollm2", "qwen_coder"])
def test_matches_transformers_apply_chat_template(model, request):
    from transformers import AutoTokenizer

    path = request.getfixturevalue({"smollm2": "smollm2_path", "qwen_coder": "qwen_path"}[model])
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok = request.getfixturevalue(model)
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[:2]):
        for prompt in (True, False):
            expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            assert tok.render_chat(messages, add_generation_prompt=prompt) == expected


@pytest.mark.skipif(not os.environ.get("ORCD_DEV_ORACLE"), reason="dev-only oracle: set ORCD_DEV_ORACLE=1")
def test_tools_match_transformers(qwen_path, qwen_coder):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(qwen_path.parent), gguf_file=qwen_path.name)
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    messages = [
        {"role": "user", "content": "Paris?"},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "warm"},
    ]
    expected = hf.apply_chat_template(messages, tools=[tool], tokenize=False, add_generation_prompt=True)
    assert qwen_coder.chat_template.render(messages, add_generation_prompt=True, tools=[tool]) == expected
