"""Generation and load parameters: one definition, range-checked, naming the field."""

from __future__ import annotations

import pytest

from llm4all.errors import InvalidParameter
from llm4all.params import GenerationParams, LoadParams


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("min_p", -1.0),
        ("top_k", -3),
        ("max_tokens", 0),
        ("repeat_penalty", -1.0),
        ("presence_penalty", 3.0),
        ("seed", -1),
        ("temperature", float("nan")),
    ],
)
def test_out_of_range_names_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidParameter) as info:
        GenerationParams(**{field: value})
    assert info.value.field == field
    assert field in str(info.value)


def test_stop_accepts_a_string_or_list() -> None:
    assert GenerationParams(stop="END").stop == ("END",)
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_grammar_and_schema_are_exclusive() -> None:
    with pytest.raises(InvalidParameter):
        GenerationParams(grammar='root ::= "a"', json_schema="{}")


def test_load_params_checked() -> None:
    with pytest.raises(InvalidParameter, match="n_seq_max"):
        LoadParams(n_seq_max=0)
    assert LoadParams(n_ctx=0).n_ctx == 0  # 0 means "the model's trained length"


def test_replace_validates() -> None:
    p = GenerationParams()
    assert p.replace(temperature=0).greedy
    with pytest.raises(InvalidParameter):
        p.replace(top_p=2)
