"""The datalake payload (GPT4All's clients' shapes accepted, bad ones refused naming the field)
and the service's rate limiter: pure functions, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalake_helpers import GPT4ALL_OLD, chat_payload
from llm4all.datalake.payload import LIMITS, PayloadError, parse_payload
from llm4all.datalake.service import RateLimiter


def test_gpt4all_older_client_payload_is_read_as_sent() -> None:
    payload = parse_payload(json.dumps(GPT4ALL_OLD))
    answer = payload.conversation[1]
    assert answer.stopped is True and answer.rating == "negative"
    assert answer.edited_content is not None and answer.edited_content.startswith("Soft rain")
    assert payload.attribution == "EliteHacker#42"
    assert payload.template == GPT4ALL_OLD["prompt_template"]
    assert payload.chat_template is None


def test_newer_client_with_chat_template_and_unknown_keys() -> None:
    data = chat_payload(attribution="Ada", some_future_key={"x": 1})
    payload = parse_payload(data)
    assert payload.template == data["chat_template"] and payload.prompt_template is None
    assert payload.attribution == "Ada"
    # neither template field is fine too: GPT4All's newest client omits one for some models
    del data["chat_template"]
    assert parse_payload(data).template is None


def test_content_hash_ignores_ids_and_key_order_but_not_ratings() -> None:
    base = chat_payload()
    digest = parse_payload(base).content_hash()
    reordered = json.loads(json.dumps(dict(reversed(list(base.items())))))
    assert parse_payload(reordered).content_hash() == digest
    assert parse_payload({**base, "ingest_id": "other", "submitter_id": "x"}).content_hash() == (
        digest
    )
    assert parse_payload(chat_payload(rating="negative")).content_hash() != digest
    assert parse_payload(chat_payload(answer="Paris.")).content_hash() != digest


def test_missing_ingest_id_is_derived_from_the_content() -> None:
    one = parse_payload(chat_payload(ingest_id=None))
    two = parse_payload(chat_payload(ingest_id=None))
    other = parse_payload(chat_payload(ingest_id=None, answer="Lyon."))
    assert one.effective_ingest_id() == two.effective_ingest_id()
    assert one.effective_ingest_id() != other.effective_ingest_id()


def _with(**changes: Any) -> dict[str, Any]:
    return {**chat_payload(), **changes}


def _turns(*turns: dict[str, Any]) -> dict[str, Any]:
    return _with(conversation=list(turns))


USER = {"content": "Hi", "role": "user"}
ANSWER = {"content": "Hello!", "role": "assistant"}

REFUSED = [
    (_with(submitter_id=None), "submitter_id"),
    ({k: v for k, v in chat_payload().items() if k != "agent_id"}, "agent_id: is required"),
    (_with(submitter_id="has space"), "submitter_id: must be printable ASCII"),
    (_with(submitter_id="x" * (LIMITS.id_chars + 1)), "submitter_id: is 129 characters"),
    (_with(agent_id="   "), "agent_id: is empty"),
    (_with(conversation=[]), "conversation: is empty"),
    (_with(conversation="hello"), "conversation"),
    (_turns(USER, {"content": "x", "role": "bot"}), "conversation[1].role: must be"),
    (_turns(USER), "conversation: has no assistant answer"),
    (_turns(ANSWER, USER, ANSWER), "must start with a user message"),
    (_turns({"content": "  \n", "role": "user"}, ANSWER), "conversation[0].content: is empty"),
    (_turns(USER, {"content": "", "role": "assistant"}), "conversation[1].content: is empty"),
    (_turns(USER, ANSWER, {"content": "s", "role": "system"}, USER), "system message may only"),
    (_turns({**USER, "rating": "positive"}, ANSWER), "only an assistant message can be rated"),
    (_turns(USER, {**ANSWER, "rating": "great"}), "conversation[1].rating: must be"),
    (_turns({"content": "a\x00b", "role": "user"}, ANSWER), "contains control characters"),
    (_turns({"content": "\ud800", "role": "user"}, ANSWER), "unpaired surrogate"),
    (_turns({"content": "x" * (LIMITS.content_chars + 1), "role": "user"}, ANSWER), "over the"),
    (_turns(*[USER, ANSWER] * (LIMITS.messages // 2 + 1)), "messages, over the limit"),
    (_with(chat_template="t" * (LIMITS.template_chars + 1)), "chat_template: is"),
]


@pytest.mark.parametrize(("data", "named"), REFUSED, ids=[n for _, n in REFUSED])
def test_each_bad_payload_is_refused_naming_the_problem(data: dict[str, Any], named: str) -> None:
    with pytest.raises(PayloadError) as refused:
        parse_payload(data)
    assert named in str(refused.value), refused.value.problems
    assert "\n" not in str(refused.value)  # one line


def test_an_empty_assistant_answer_with_an_edit_is_kept() -> None:
    data = _turns(USER, {"content": "", "role": "assistant", "edited_content": "Hello!"})
    assert parse_payload(data).conversation[1].edited_content == "Hello!"


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(PayloadError, match="body: "):
        parse_payload(body)


def test_rate_limiter_spends_a_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(rate_per_minute=60, burst=2)
    assert [limiter.take("a", now=0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(1.0)  # one token a second
    assert limiter.take("b", now=0.0) == 0.0  # buckets are per key
    assert limiter.take("a", now=0.5) == pytest.approx(0.5)
    assert limiter.take("a", now=1.0) == 0.0


def test_rate_limiter_forgets_idle_keys_past_its_size() -> None:
    limiter = RateLimiter(rate_per_minute=60, burst=1, max_keys=10)
    for n in range(10):
        limiter.take(f"k{n}", now=0.0)
    limiter.take("late", now=100.0)  # everyone else has refilled by now
    assert len(limiter._buckets) == 1


_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    str.strip
)
_payloads = st.fixed_dictionaries(
    {
        "submitter_id": st.from_regex(r"[A-Za-z0-9-]{1,40}", fullmatch=True),
        "agent_id": _text,
        "conversation": st.lists(
            st.tuples(_text, _text, st.sampled_from([None, "positive", "negative"])),
            min_size=1,
            max_size=4,
        ).map(
            lambda pairs: [
                turn
                for question, answer, rating in pairs
                for turn in (
                    {"content": question, "role": "user"},
                    {"content": answer, "role": "assistant", "rating": rating},
                )
            ]
        ),
    },
    optional={"chat_template": _text, "attribution": _text, "ingest_id": st.uuids().map(str)},
)


@settings(max_examples=60, deadline=None)
@given(_payloads)
def test_a_payload_survives_its_own_json_with_the_same_hash(data: dict[str, Any]) -> None:
    payload = parse_payload(data)
    again = parse_payload(json.dumps(payload.model_dump(mode="json"), ensure_ascii=False))
    assert again == payload and again.content_hash() == payload.content_hash()
