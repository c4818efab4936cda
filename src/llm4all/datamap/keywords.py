"""Name each cluster by its top words, weighted by class-based TF-IDF (c-TF-IDF).

All the texts of a cluster are treated as one document; a word scores high
when it is frequent in that cluster and rare across clusters (the weighting
of BERTopic: ``tf(word, cluster) * log(1 + mean words per cluster / count of
word overall)``). English stop words and words in fewer than two rows are
left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

TOP_WORDS = 5


def cluster_keywords(
    texts: Sequence[str], labels: npt.NDArray[np.int64], top: int = TOP_WORDS
) -> dict[int, list[str]]:
    """The ``top`` words of each cluster (label ≥ 0), best first.

    Example: two clusters of texts about cats and about taxes give
    ``{0: ["cat", …], 1: ["tax", …]}``.
    """
    clusters = sorted(int(c) for c in np.unique(labels) if c >= 0)
    if not clusters:
        return {}
    from sklearn.feature_extraction.text import CountVectorizer  # type: ignore[import-untyped]

    vectorizer = CountVectorizer(
        stop_words="english",
        token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b",  # words of two letters or more, no numbers
        min_df=2 if len(texts) > 20 else 1,
        max_features=50_000,
        dtype=np.float64,
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words
        return {c: [] for c in clusters}
    index = {c: i for i, c in enumerate(clusters)}
    per_cluster = np.vstack([np.asarray(counts[labels == c].sum(axis=0)) for c in clusters])
    totals = per_cluster.sum(axis=1, keepdims=True)
    tf = per_cluster / np.maximum(totals, 1)
    mean_words = totals.mean()
    idf = np.log1p(mean_words / np.maximum(per_cluster.sum(axis=0), 1))
    scores = tf * idf
    vocabulary = vectorizer.get_feature_names_out()
    result: dict[int, list[str]] = {}
    for c, i in index.items():
        best = np.argsort(-scores[i], kind="stable")[:top]
        result[c] = [str(vocabulary[j]) for j in best if scores[i, j] > 0]
    return result
