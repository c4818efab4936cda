"""The refusal detector shared by curation and the refusal benchmark."""

from __future__ import annotations

import pytest

from llm4all.data import find_refusal, is_refusal

REFUSALS = [
    "I'm sorry, but I can't assist with that request.",  # the default model, issue 21
    "I’m sorry, but I cannot write that story.",  # curly apostrophe
    "Sorry, I can't help with that.",
    "I am unable to provide medical advice. Please consult a doctor.",
    "I apologize, but as an AI I have no opinions.",
    "I must respectfully decline to write this.",
    "抱歉，我无法回答这个问题。",
    "我不能提供这方面的帮助。",
]
ANSWERS = [
    "Once upon a time, in a quiet lab, there lived a lonely computer named Max.",
    "I'm sorry to hear that you're stressed. Here are five things that help: …",
    "I can't wait to tell you: the capital of France is Paris.",
    "In the 1970s I was a teenager. I couldn't help but love computers.",  # idioms
    "I can't help but smile when I think of that old computer.",
    "Sure! Here is a Python function:\n\ndef fib(n): ...",
    "1. 医生\n2. 程序员\n3. 教师",
    "Here is the list. " + "x" * 300 + " I cannot assist with anything else.",  # not the opening
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_found(text: str) -> None:
    assert is_refusal(text), text


@pytest.mark.parametrize("text", ANSWERS)
def test_answers_are_not_refusals(text: str) -> None:
    assert not is_refusal(text), find_refusal(text)


def test_ai_disclaimers_are_reported_only_when_asked() -> None:
    text = "As an AI language model, I don't have feelings, but here is a poem: …"
    assert find_refusal(text) is None
    found = find_refusal(text, disclaimers=True)
    assert found is not None and found.reason == "ai-disclaimer"
    assert found.matched == "as an ai language model"
