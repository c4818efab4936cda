"""LocalDocs judged on a labelled set: fusion, citation checks, ``llm4all eval docs``.

The pure parts (weighted fusion, the citation check, the judge) are tested on
their own; the command runs on a real collection embedded with MiniLM, and
once with SmolLM2 answering (``--answers``) to check the judged rows' plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FACT
from llm4all.errors import Llm4allError
from llm4all.evaluate import docs as judge_docs
from llm4all.localdocs.context import annotate, attribute, check_citations, source_lines
from llm4all.localdocs.search import rrf, weighted_rrf


def test_weighted_rrf_lets_a_weak_list_count_less() -> None:
    keyword, vector = [1, 2, 3], [3, 2, 1]
    assert next(i for i, _ in rrf([keyword, vector], k=1)) in (1, 3)  # a tie at equal weights
    assert [i for i, _ in weighted_rrf([keyword, vector], [0.25, 1.0], k=1)] == [3, 2, 1]
    assert weighted_rrf([[1], [2]], [1.0, 1.0], k=60) == rrf([[1], [2]], k=60)
    with pytest.raises(ValueError):
        weighted_rrf([[1], [2]], [1.0])


def test_check_citations_flags_a_citation_its_excerpt_does_not_support() -> None:
    refs = [
        {"index": 1, "excerpt": "Use apt-mark hold to keep a package at its version."},
        {"index": 2, "excerpt": "The kernel image can be removed with apt purge."},
    ]
    answer = (
        "Run apt-mark hold on the package [1]. Then reinstall the kernel image [1][2]. See [3]."
    )
    found = [(c["index"], c["supported"]) for c in check_citations(answer, refs)]
    assert found == [(1, True), (1, False), (2, True), (3, False)]
    assert check_citations("No markers at all.", refs) == []
    assert check_citations("[1]", refs)[0]["supported"] is False  # a bare marker says nothing
    after = check_citations("Run apt-mark hold on it.\n[1]", refs)  # a marker after its sentence
    assert [(c["index"], c["supported"]) for c in after] == [(1, True)]


REFS = [
    {"index": 1, "path": "/d/pkg.html", "excerpt": "Use apt-mark hold to keep a package at its version."},
    {"index": 2, "path": "/d/kernel.html", "excerpt": "The kernel image can be removed with apt purge."},
]  # fmt: skip


def test_attribute_keeps_the_models_supported_markers() -> None:
    found = attribute("Run apt-mark hold on the package [1]. Reinstall the kernel [1].", REFS)
    assert [(c["index"], c["supported"], c["by"]) for c in found] == [
        (1, True, "model"),
        (1, False, "model"),
    ]  # a supported marker: nothing is attributed


def test_attribute_finds_the_source_of_an_answer_without_markers() -> None:
    found = attribute("Run apt-mark hold on the package. It is a good idea.", REFS)
    assert [(c["index"], c["sentence"], c["by"]) for c in found] == [
        (1, "Run apt-mark hold on the package.", "attribution")
    ]  # the second sentence is in no excerpt: no source
    wrong = attribute("Purge the kernel image with apt [1].", REFS)  # cites 1, excerpt 2 says it
    assert [(c["index"], c["supported"], c["by"]) for c in wrong] == [
        (1, False, "model"),
        (2, True, "attribution"),
    ]
    assert attribute("Maybe a package.", REFS) == []  # one word in common is not enough


def test_annotate_marks_the_references_and_their_source_lines() -> None:
    refs = [dict(r) for r in REFS]
    text = "Purge the kernel image with apt [1]."
    found = annotate(text, refs)
    assert found == attribute(text, refs)
    assert [c["by"] for c in refs[0]["citations"]] == ["model"]
    assert refs[1]["citations"][0]["sentence"] == text
    assert source_lines(refs) == [
        "[1] /d/pkg.html (cited, but it does not say: “Purge the kernel image with apt.”)",
        "[2] /d/kernel.html (not cited; it supports: “Purge the kernel image with apt.”)",
    ]
    annotate("Run apt-mark hold on it [1].", refs)  # again: the marks are replaced
    assert source_lines(refs) == ["[1] /d/pkg.html (cited)", "[2] /d/kernel.html"]


def test_judge_right_cited_copied() -> None:
    excerpt = " ".join(f"word{i}" for i in range(40)) + " apt-mark hold keeps a package."
    refs = [{"index": 1, "path": "/docs/faq/pkg-basics.html", "excerpt": excerpt},
            {"index": 2, "path": "/docs/faq/other.html", "excerpt": "apt-mark hold elsewhere"}]  # fmt: skip
    item = {"question": "q", "documents": ["pkg-basics.html"], "answers": ["apt-mark hold"]}
    good = judge_docs.judge("Use apt-mark hold, which keeps a package [1].", refs, item)
    assert (good["right"], good["cited"], good["copied"], good["good"]) == (True, True, False, True)
    wrong_file = judge_docs.judge("Use apt-mark hold [2].", refs, item)
    assert (wrong_file["right"], wrong_file["cited"], wrong_file["good"]) == (True, False, False)
    unmarked = judge_docs.judge("Use apt-mark hold: it keeps a package.", refs, item)
    assert (unmarked["cited"], unmarked["sourced"], unmarked["good"], unmarked["good_sourced"]) == (
        False,
        True,
        False,
        True,
    )  # the answer pipeline attributes the sentence to excerpt 1, of the labelled file
    counts = judge_docs.summarise_answers([good | {"tokens": 9}, unmarked | {"tokens": 7}])
    assert (counts["good"], counts["good_sourced"], counts["good_sourced_share"]) == (1, 2, 1.0)
    pasted = judge_docs.judge(excerpt + " [1]", refs, item)
    assert pasted["copied"] and pasted["copied_share"] == 1.0 and not pasted["good"]
    by_evidence = {"documents": ["a"], "evidence": ["dpkg --search finds the owning package"]}
    assert judge_docs.is_right("Use dpkg --search: it finds the package.", by_evidence)
    assert not judge_docs.is_right("Reinstall.", by_evidence)


def test_summarise_ranks() -> None:
    s = judge_docs.summarise_ranks([(1, True), (3, False), (None, False), (7, False)])
    assert (s["r@1"], s["r@5"], s["passage r@5"], s["questions"]) == (0.25, 0.5, 0.25, 4)
    assert s["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "line 1: not JSON"),
        ('{"documents": ["a"]}', 'needs a "question"'),
        ('{"question": "q", "documents": []}', 'needs "documents"'),
        ('{"question": "q", "documents": ["a"], "evidence": "x"}', '"evidence" must be a list'),
    ],
)
def test_bad_question_files_are_one_line_errors(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "ok", "documents": ["a"]}\n' + line + "\n")
    with pytest.raises(Llm4allError, match="q.jsonl:2: " + reason.replace("line 1: ", "")):
        judge_docs.load_questions(path)


def _questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    rows = [
        {"question": "Where is the Zorblax conference?", "documents": ["events.md"],
         "evidence": ["held in Tallinn"], "answers": ["Tallinn"]},
        {"question": "What is the name of the office cat?", "documents": ["pets.txt"],
         "evidence": ["The office cat is called Biscuit"], "answers": ["Biscuit"]},
        {"question": "Who brings the cake?", "documents": ["missing.md"]},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_eval_docs_retrieval_figures(
    notes: Path, tmp_path: Path, embedding_model_path: Path
) -> None:
    from llm4all.cli import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["docs", "add", "notes", str(notes)]).exit_code == 0
    questions = _questions(tmp_path)
    got = runner.invoke(cli, ["eval", "docs", "notes", str(questions), "--json"])
    assert got.exit_code == 0, got.output
    result = json.loads(got.output)["retrieval"]
    assert [q["file_rank"] for q in result["questions"]] == [1, 1, None]
    assert result["summary"]["r@1"] == pytest.approx(2 / 3)
    assert result["summary"]["passage r@5"] == pytest.approx(2 / 3)
    text = runner.invoke(cli, ["eval", "docs", "notes", str(questions)])
    assert text.output.startswith("retrieval (3 questions): R@1 0.667  R@5 0.667  MRR@10 0.667")
    bad = runner.invoke(cli, ["eval", "docs", "nope", str(questions)])
    assert bad.exit_code != 0 and "no LocalDocs collection named 'nope'" in str(bad.exception)


def test_cli_eval_docs_judges_answers(
    notes: Path, tmp_path: Path, embedding_model_path: Path, fast_model_path: Path
) -> None:
    from llm4all.cli import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["docs", "add", "notes", str(notes)]).exit_code == 0
    got = runner.invoke(
        cli,
        ["eval", "docs", "notes", str(_questions(tmp_path)), "--answers", "1",
         "-m", str(fast_model_path), "-n", "24", "--json"],
    )  # fmt: skip
    assert got.exit_code == 0, got.output
    answers = json.loads(got.output)["answers"]
    assert answers["summary"]["questions"] == 1 and len(answers["rows"]) == 1
    row = answers["rows"][0]
    assert 0 < row["tokens"] <= 24 and row["answer"]
    assert row["right"] == ("tallinn" in row["answer"].lower())
    assert row["good"] == (row["right"] and row["cited"] and not row["copied"])
    assert FACT  # the notes fixture's fact is what the question asks for
