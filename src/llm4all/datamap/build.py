"""The data map's pipeline: rows → vectors (cached) → 2-D layout → clusters → keywords → page.

Example::

    from llm4all.datamap import MapOptions, make_map
    with Embedder() as embedder, EmbeddingCache(path, model_key(embedder)) as cache:
        result = make_map(rows, embedder, cache, MapOptions(title="my data"))
    html.write(payload(result), Path("map.html"))

Only what the page shows is kept per row (the id, the source, the start of
the prompt and of the answer, curation's verdict), so a map of many rows
holds vectors and short texts, not whole conversations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from llm4all.data.schema import Conversation
from llm4all.datamap import html, labels
from llm4all.datamap.embed_cache import EmbeddingCache, Vectors
from llm4all.datamap.keywords import cluster_keywords
from llm4all.datamap.layout import cluster, project

EMBED_CHARS = 2_000
"""Characters of prompt + answer embedded: MiniLM reads 512 tokens, about this many characters."""

READ_BATCH = 1_024
"""Rows read before their vectors are looked up or made: bounds the texts held at once."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MapOptions:
    """How a map is made; every field has a default that suits a few hundred to 50,000 rows."""

    sample: int | None = None  # fit UMAP on this many rows and transform the rest
    seed: int = 0
    min_cluster_size: int | None = (
        None  # None: grows with the map (layout.default_min_cluster_size)
    )
    webgl: bool | None = None  # None: SVG up to html.SVG_ROWS rows, WebGL above
    title: str = "data map"


@dataclass(frozen=True, slots=True)
class MapRow:
    """What the map keeps of one row."""

    id: str
    source: str
    prompt: str
    answer: str

    @classmethod
    def of(cls, row: Conversation) -> MapRow:
        """What the map keeps of a conversation."""
        return cls(row.id, row.source, *html.shorten(row.prompt, row.response))


@dataclass
class DataMap:
    """A finished map: rows, their vectors, layout, clusters, keywords and verdicts."""

    rows: list[MapRow]
    vectors: Vectors
    coords: npt.NDArray[np.float32]
    clusters: npt.NDArray[np.int64]
    keywords: dict[int, list[str]]
    verdicts: list[labels.Verdict]
    options: MapOptions
    timings: dict[str, float] = field(default_factory=dict)


def embed_text(row: Conversation) -> str:
    """What is embedded for a row: its prompt and answer, cut to :data:`EMBED_CHARS`."""
    return (row.prompt + "\n\n" + row.response)[:EMBED_CHARS]


def embed_rows(
    conversations: Iterable[Conversation],
    embed: Callable[[Sequence[str]], Vectors],
    cache: EmbeddingCache,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[MapRow], list[labels.Verdict], Vectors]:
    """Read rows in batches, keeping their short texts, verdicts and (cached) vectors."""
    rows: list[MapRow] = []
    parts: list[Vectors] = []
    labeller = labels.Labeller()
    batch: list[Conversation] = []

    def flush() -> None:
        vectors = cache.vectors(
            [c.id for c in batch], [embed_text(c) for c in batch], embed, progress
        )
        parts.append(vectors)
        for c in batch:
            rows.append(MapRow.of(c))
            labeller.add(c)
        batch.clear()

    for conversation in conversations:
        batch.append(conversation)
        if len(batch) == READ_BATCH:
            flush()
    if batch:
        flush()
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return rows, labeller.verdicts(), vectors


def layout_map(
    rows: list[MapRow],
    vectors: Vectors,
    verdicts: list[labels.Verdict],
    options: MapOptions,
    progress: Progress | None = None,
) -> DataMap:
    """Project, cluster and name the clusters of rows whose vectors are known."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    coords = project(vectors, sample=options.sample, seed=options.seed, progress=progress)
    timings["umap_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if progress:
        progress("clustering")
    clusters = cluster(coords, min_cluster_size=options.min_cluster_size, seed=options.seed)
    timings["cluster_s"] = time.perf_counter() - start
    start = time.perf_counter()
    if progress:
        progress("naming the clusters")
    keywords = cluster_keywords([r.prompt + "\n" + r.answer for r in rows], clusters)
    timings["keywords_s"] = time.perf_counter() - start
    return DataMap(rows, vectors, coords, clusters, keywords, verdicts, options, timings)


def _field(values: list[str], order: list[str] | None = None) -> html.Field:
    names = order or sorted(set(values))
    index = {name: i for i, name in enumerate(names)}
    return html.Field(names, html.palette(len(names)), [index[v] for v in values])


def _cluster_names(result: DataMap) -> list[str]:
    return [
        f"{c}: {' '.join(result.keywords.get(c, [])[:3])}".strip() if c >= 0 else "unclustered"
        for c in range(-1, len(result.keywords))
    ]


def _centres(result: DataMap, names: list[str], most: int = 40) -> list[list[Any]]:
    centres = []
    for c in range(min(len(result.keywords), most)):
        members = result.coords[result.clusters == c]
        x, y = np.median(members, axis=0)
        centres.append([round(float(x), 3), round(float(y), 3), names[c + 1]])
    return centres


def payload(result: DataMap) -> dict[str, Any]:
    """Everything the page needs, as JSON-ready values."""
    n = len(result.rows)
    cluster_names = _cluster_names(result)
    cluster_field = html.Field(
        cluster_names,
        ["#b8bec8", *html.palette(len(cluster_names) - 1)],
        [int(c) + 1 for c in result.clusters],
    )
    rules = [v.rule for v in result.verdicts]
    rule_names = [labels.KEPT, *sorted(set(rules) - {labels.KEPT})]
    rule_field = html.Field(
        rule_names,
        ["#b8bec8", *html.palette(len(rule_names))[1:]],
        [rule_names.index(r) for r in rules],
    )
    status = html.Field(
        ["kept", "dropped", "marked keep", "marked drop"],
        ["#2ca02c", "#d62728", "#17becf", "#7b4173"],
        [0 if r == labels.KEPT else 1 for r in rules],
    )
    groups: dict[int, list[int]] = {}
    for i, v in enumerate(result.verdicts):
        if v.group >= 0:
            groups.setdefault(v.group, []).append(i)
    dropped = sum(r != labels.KEPT for r in rules)
    webgl = result.options.webgl if result.options.webgl is not None else n > html.SVG_ROWS
    return {
        "title": result.options.title,
        "summary": f"{n:,} rows · {len(result.keywords)} clusters · {dropped:,} dropped by curation",
        "n": n,
        "webgl": webgl,
        "pointSize": 7 if n <= 2_000 else 4 if n <= 20_000 else 3,
        "exportName": "keep-drop.json",
        "x": [round(float(v), 4) for v in result.coords[:, 0]],
        "y": [round(float(v), 4) for v in result.coords[:, 1]],
        "id": [r.id for r in result.rows],
        "prompt": [html.shorten(r.prompt, "", n)[0] for r in result.rows],
        "answer": [html.shorten("", r.answer, n)[1] for r in result.rows],
        "detail": [v.detail for v in result.verdicts],
        "group": [v.group for v in result.verdicts],
        "groups": [groups[g] for g in sorted(groups)],
        "fields": {
            "cluster": cluster_field.to_json(),
            "source": _field([r.source for r in result.rows]).to_json(),
            "rule": rule_field.to_json(),
            "status": status.to_json(),
        },
        "centres": _centres(result, cluster_names),
    }
