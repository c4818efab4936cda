"""Chunking, rank fusion and the keyword query: pure functions, tested directly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llm4all.localdocs.chunking import chunk_blocks, split_sentences
from llm4all.localdocs.loaders import Block
from llm4all.localdocs.search import fts_query, query_terms, rrf, within_budget


def words(text: str) -> int:
    return len(text.split())


def test_docstring_example() -> None:
    chunks = chunk_blocks([Block("text", "One. Two. Three.", "")], words, max_tokens=2, overlap=1)
    assert [c.text for c in chunks] == ["One. Two.", "Two. Three."]


def test_a_heading_starts_a_new_chunk_and_is_kept_as_its_heading() -> None:
    blocks = [
        Block("heading", "Install", "Install", None, 1, 1),
        Block("text", "Run the installer.", "Install", None, 3, 3),
        Block("heading", "Usage", "Usage", None, 5, 5),
        Block("text", "Call it.", "Usage", None, 7, 8),
    ]
    chunks = chunk_blocks(blocks, words, max_tokens=100, overlap=10)
    assert [(c.text, c.heading, c.line_start, c.line_end) for c in chunks] == [
        ("Run the installer.", "Install", 3, 3),
        ("Call it.", "Usage", 7, 8),
    ]


def test_small_paragraphs_of_one_section_are_packed_together() -> None:
    blocks = [Block("text", f"Paragraph {i} here.", "S", None, 2 * i, 2 * i) for i in range(1, 5)]
    chunks = chunk_blocks(blocks, words, max_tokens=7, overlap=0)
    assert [c.text for c in chunks] == [
        "Paragraph 1 here.\n\nParagraph 2 here.",
        "Paragraph 3 here.\n\nParagraph 4 here.",
    ]
    assert [(c.line_start, c.line_end) for c in chunks] == [(2, 4), (6, 8)]


def test_pages_are_never_mixed() -> None:
    blocks = [Block("text", "first page", "", 1), Block("text", "second page", "", 2)]
    assert [(c.text, c.page) for c in chunk_blocks(blocks, words, 50, 5)] == [
        ("first page", 1),
        ("second page", 2),
    ]


def test_long_code_is_cut_at_lines_with_their_own_line_numbers() -> None:
    code = "\n".join(f"x{i} = {i}" for i in range(10))
    chunks = chunk_blocks([Block("code", code, "def f", None, 20, 29)], words, 9, 3)
    assert all(c.n_tokens <= 9 for c in chunks)
    assert chunks[0].text.splitlines()[0] == "x0 = 0"
    assert (chunks[0].line_start, chunks[0].line_end) == (20, 22)
    assert chunks[1].text.startswith("x2 = 2")  # the overlap repeats the last line
    assert chunks[-1].line_end == 29


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_blocks([Block("text", text, "")], words, max_tokens=10, overlap=0)
    assert [c.n_tokens for c in chunks] == [10, 10, 5]
    assert " ".join(c.text for c in chunks) == text


@given(
    st.lists(
        st.text(alphabet="abc .\n", min_size=1, max_size=80).filter(str.strip),
        min_size=1,
        max_size=8,
    ),
    st.integers(2, 30),
    st.integers(0, 10),
)
def test_every_word_survives_and_chunks_respect_the_limit(
    texts: list[str], max_tokens: int, overlap: int
) -> None:
    overlap = min(overlap, max_tokens - 1)
    blocks = [Block("text", t, "H") for t in texts]
    chunks = chunk_blocks(blocks, words, max_tokens, overlap)
    assert all(c.n_tokens <= max_tokens for c in chunks)
    # Every input word appears, in order, in the chunks (overlap only repeats words).
    produced = iter([w for c in chunks for w in c.text.split()])
    assert all(any(w == o for o in produced) for t in texts for w in t.split())


def test_split_sentences() -> None:
    assert split_sentences("A b. C d! E") == ["A b.", "C d!", "E"]
    assert split_sentences("Steps:\n- one\n- two") == ["Steps:", "- one", "- two"]


def test_rrf_fuses_by_reciprocal_rank() -> None:
    fused = rrf([[1, 2], [2, 3]], k=1)
    assert [i for i, _ in fused] == [2, 1, 3]
    assert fused[0][1] == 1 / 3 + 1 / 2
    assert rrf([]) == []
    # k = 60: agreeing lists beat a single first place.
    assert rrf([[7, 8], [9, 8]])[0][0] == 8


def test_fts_query_quotes_words_and_drops_stopwords() -> None:
    assert fts_query("How do I mount a USB disk?") == '"mount" OR "usb" OR "disk"'
    assert fts_query('say "hi" OR NOT') == '"say" OR "hi" OR "not"'
    assert fts_query("the") == '"the"'  # only stopwords: keep them
    assert fts_query("?!") is None


def test_query_terms_and_the_keyword_budget() -> None:
    assert query_terms("How do I mount a USB disk? USB!") == ["mount", "usb", "disk"]
    assert fts_query(["a", "b"]) == '"a" OR "b"' and fts_query([]) is None
    assert within_budget({"a": 900, "b": 5, "c": 50}, 100) == ["b", "c"]
    assert within_budget({"a": 900, "b": 0}, 100) == ["a"]  # the rarest word always stays
    assert within_budget({}, 100) == []
