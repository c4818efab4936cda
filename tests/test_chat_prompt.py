"""Chat templates (sandboxed) and the context-window trimming policy."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from llm4all.chat.prompt import answer_reserve, fit_messages
from llm4all.chat.template import AFTER_TOOL_RESULTS, PLAIN_TEMPLATE, Message, render
from llm4all.errors import ContextOverflow, TemplateError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_render_chatml() -> None:
    text = render(CHATML, [Message("system", "Be brief."), Message("user", "Hi")])
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_plain_template_for_base_models() -> None:
    assert render(PLAIN_TEMPLATE, [Message("user", "Hi")]).endswith("### Assistant:\n")


def test_template_raise_exception_becomes_template_error() -> None:
    tpl = (
        "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="first must be user"):
        render(tpl, [Message("assistant", "x")])


def test_template_is_sandboxed() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        render(evil, [Message("user", "x")])


def test_after_tool_results_the_model_is_asked_to_use_them() -> None:
    # Qwen2.5-Coder-1.5B called the same tool again after its result, every time (issue 22).
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}
    msgs = [
        Message("user", "Q?"),
        Message("assistant", "", (call,)),
        Message("tool", "42", (), "c1"),
    ]
    text = render(CHATML, msgs)
    assert text.endswith(
        f"<|im_start|>tool\n42<|im_end|>\n<|im_start|>user\n{AFTER_TOOL_RESULTS}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert AFTER_TOOL_RESULTS not in render(CHATML, msgs[:2])
    assert AFTER_TOOL_RESULTS not in render(CHATML, msgs, add_generation_prompt=False)
    strict = (  # a template that wants a tool result right before the answer
        "{% if messages[-1].role == 'user' and messages|length > 1 %}"
        "{{ raise_exception('no user turn after a tool result') }}{% endif %}" + CHATML
    )
    assert render(strict, msgs).endswith("<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n")


def test_broken_template_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="does not compile"):
        render("{% for %}", [Message("user", "x")])


def test_unknown_role_rejected() -> None:
    with pytest.raises(ValueError, match="role"):
        Message("wizard", "x")  # type: ignore[arg-type]


def _word_tokens(messages: Sequence[Message]) -> list[int]:
    return [0] * sum(len(m.content.split()) + 2 for m in messages)


def test_fit_keeps_everything_when_it_fits() -> None:
    msgs = [
        Message("system", "s"),
        Message("user", "a b"),
        Message("assistant", "c"),
        Message("user", "d"),
    ]
    prompt = fit_messages(msgs, _word_tokens, n_ctx=100, reserve=10)
    assert prompt.messages == tuple(msgs) and prompt.dropped == 0


def test_fit_drops_oldest_turns_and_keeps_system() -> None:
    msgs = [
        Message("system", "sys"),
        Message("user", "one two three four"),
        Message("assistant", "five six seven"),
        Message("user", "eight"),
    ]
    prompt = fit_messages(msgs, _word_tokens, n_ctx=12, reserve=4)
    assert [m.content for m in prompt.messages] == ["sys", "eight"]
    assert prompt.dropped == 2


def test_fit_raises_when_newest_message_alone_is_too_long() -> None:
    msgs = [Message("system", "sys"), Message("user", " ".join(["w"] * 50))]
    with pytest.raises(ContextOverflow) as info:
        fit_messages(msgs, _word_tokens, n_ctx=20, reserve=5)
    assert info.value.n_ctx == 20 and info.value.prompt_tokens == 55


def test_answer_reserve() -> None:
    assert answer_reserve(100, 4096) == 100
    assert answer_reserve(None, 4096) == 1024
    assert answer_reserve(5000, 2048) == 1024
