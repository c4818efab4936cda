"""The data map's pieces without a browser: the vector cache, layout, clusters, keywords,
curation verdicts and the page's text."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from llm4all.data.schema import Conversation
from llm4all.datamap import html
from llm4all.datamap.build import MapOptions, MapRow, layout_map, payload
from llm4all.datamap.embed_cache import EmbeddingCache
from llm4all.datamap.keywords import cluster_keywords
from llm4all.datamap.labels import KEPT, Labeller
from llm4all.datamap.layout import cluster, project


def _hash_vectors(texts: Sequence[str]) -> np.ndarray:
    """Vectors that depend on the text only: what the cache must give back unchanged."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8) for t in texts]
    return np.asarray(rows, dtype=np.float32) / 255


class CountingEmbed:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return _hash_vectors(texts)


def _blobs(n_per: int, seed: int = 0) -> np.ndarray:
    """Three well-separated clouds of unit vectors in 16 dimensions."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16, dtype=np.float32)[:3] * 5
    points = np.concatenate([c + rng.normal(size=(n_per, 16)) * 0.3 for c in centres])
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_the_cache_embeds_only_rows_it_has_not_seen(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    embed = CountingEmbed()
    with EmbeddingCache(path, "model-a") as cache:
        first = cache.vectors(["a", "b"], ["text a", "text b"], embed)
    assert embed.seen == ["text a", "text b"]
    with EmbeddingCache(path, "model-a") as cache:  # a new process: read back from the file
        again = cache.vectors(["a", "b", "c"], ["text a", "text b", "text c"], embed)
        assert (cache.hits, cache.misses) == (2, 1)
    assert embed.seen == ["text a", "text b", "text c"]
    np.testing.assert_array_equal(again[:2], first)
    np.testing.assert_array_equal(again, _hash_vectors(["text a", "text b", "text c"]))
    with EmbeddingCache(path, "model-a") as cache:  # a row whose text changed is embedded again
        cache.vectors(["a"], ["text a, edited"], embed)
    with EmbeddingCache(path, "model-b") as cache:  # another model has its own vectors
        cache.vectors(["a"], ["text a"], embed)
    assert embed.seen[3:] == ["text a, edited", "text a"]


def test_a_failed_batch_keeps_the_batches_before_it(tmp_path: Path) -> None:
    calls = 0

    def fails_second_time(texts: Sequence[str]) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return _hash_vectors(texts)

    ids = [str(i) for i in range(300)]  # two batches of the cache's 256
    with EmbeddingCache(tmp_path / "v.db", "m") as cache, pytest.raises(KeyboardInterrupt):
        cache.vectors(ids, ids, fails_second_time)
    with EmbeddingCache(tmp_path / "v.db", "m") as cache:
        cache.vectors(ids, ids, _hash_vectors)
        assert cache.hits == 256


@pytest.mark.slow  # UMAP's first call compiles its numba code: tens of seconds on a busy machine
def test_layout_is_seeded_and_a_sample_places_every_row() -> None:
    vectors = _blobs(60)
    a = project(vectors, seed=1)
    np.testing.assert_array_equal(a, project(vectors, seed=1))
    sampled = project(vectors, sample=90, seed=1)
    assert sampled.shape == (180, 2) and np.isfinite(sampled).all()
    labels = cluster(sampled, min_cluster_size=10)
    # Each blob is one cluster, whether its rows were fitted or transformed.
    for blob in range(3):
        found = labels[blob * 60 : (blob + 1) * 60]
        assert np.bincount(found[found >= 0]).max() >= 55


def test_clusters_are_numbered_largest_first_and_assigned_beyond_the_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    big = rng.normal(size=(120, 2)) * 0.3
    small = rng.normal(size=(40, 2)) * 0.3 + 10
    coords = np.concatenate([small, big]).astype(np.float32)
    labels = cluster(coords, min_cluster_size=10)
    assert set(labels[40:]) == {0} and set(labels[:40]) == {1}
    monkeypatch.setattr("llm4all.datamap.layout.CLUSTER_SAMPLE", 50)
    sampled = cluster(coords, min_cluster_size=5)
    assert (sampled == labels).mean() > 0.95


def test_keywords_name_each_cluster_by_its_own_words() -> None:
    texts = [f"my cat purrs and the kitten naps {i}" for i in range(5)]
    texts += [f"file the tax return before the deadline {i}" for i in range(5)]
    texts += ["something else entirely"]
    labels = np.array([0] * 5 + [1] * 5 + [-1])
    words = cluster_keywords(texts, labels, top=3)
    assert set(words) == {0, 1}
    assert set(words[0]) <= {"cat", "purrs", "kitten", "naps"}
    assert set(words[1]) <= {"file", "tax", "return", "deadline"}


def _row(prompt: str, response: str, source: str = "s") -> Conversation:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return Conversation(messages=messages, source=source)


def test_verdicts_are_curations_own_with_duplicate_groups() -> None:
    rows = [
        _row("Hi there, how are you?", "Hello there, I am fine, thanks."),
        _row("Make malware", "I'm sorry, but I can't help with that."),
        _row("hi there how are you", "hello there  I am fine thanks"),  # the first, normalised
        _row("写一首诗", "作为一个AI语言模型，我无法写诗。"),
        _row("Another question here", "A fine answer with enough words."),
        _row("Hi there, how are you?", "Hello there, I am fine, thanks."),
    ]
    labeller = Labeller()
    for row in rows:
        labeller.add(row)
    verdicts = labeller.verdicts()
    rules = [v.rule for v in verdicts]
    assert rules[:3] == [KEPT, "refusal", "exact-duplicate"] and rules[4:] == [
        KEPT,
        "exact-duplicate",
    ]
    assert rules[3] in ("refusal", "ai-disclaimer")
    assert [v.group for v in verdicts] == [0, -1, 0, -1, -1, 0]
    assert rows[0].id in verdicts[2].detail  # names the kept row it repeats


def test_the_page_carries_hostile_text_as_data() -> None:
    hostile = "</script><script>window.pwned=1</script> & <b>"
    rows = [MapRow(str(i), "src", hostile if i == 0 else f"row {i}", "answer") for i in range(3)]
    labeller = Labeller()
    for row in rows:
        labeller.add(_row(row.prompt, row.answer))
    result = layout_map(rows, _blobs(1), labeller.verdicts(), MapOptions(title="t <x>"))
    page = html.render(payload(result))
    assert "window.pwned=1</script>" not in page
    found = re.search(r'<script id="map-data" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    data = json.loads(found.group(1))
    assert data["prompt"][0] == hostile and data["title"] == "t <x>"
    assert data["n"] == 3 and len(data["x"]) == 3
    assert "http://" not in page.split("/*")[0] and 'src="http' not in page


def test_a_missing_input_is_one_line_before_any_model_loads(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "nowhere.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4all",
            "data",
            "map",
            str(missing),
            "-o",
            str(tmp_path / "m.html"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {missing}: no such file"
    assert not (tmp_path / "m.html").exists()
