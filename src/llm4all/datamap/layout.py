"""From vectors to a picture: UMAP to two dimensions, HDBSCAN clusters on the picture.

The clusters are found on the 2-D layout rather than on the 384-D vectors, so
a cluster is what the eye sees as one island; this is also what makes
clustering cheap (a k-d tree in two dimensions).

A large map is made from a sample: UMAP is fitted on ``sample`` rows chosen
at random (seeded) and every other row is placed among its most similar
fitted rows (:func:`place`). HDBSCAN runs
on at most :data:`CLUSTER_SAMPLE` points and the rest take the cluster of
their nearest clustered neighbour. Both are deterministic for one seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Coords = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

CLUSTER_SAMPLE = 50_000
"""The most points HDBSCAN itself sees; the rest are assigned by nearest neighbour."""

PLACE_NEIGHBOURS = 10
"""Fitted rows whose positions place a row that was not fitted."""

_PLACE_CHUNK = 2_000  # rows per similarity matrix: 2,000 x 10,000 floats is 80 MB


def project(
    vectors: npt.NDArray[np.float32],
    *,
    sample: int | None = None,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    progress: Callable[[str], None] | None = None,
) -> Coords:
    """Two coordinates per row, from UMAP with the cosine metric.

    With ``sample`` smaller than the row count, UMAP is fitted on that many
    rows and the rest are placed by :func:`place`. Example: ``project(v).shape == (len(v), 2)``.
    """
    n = len(vectors)
    if n < 4:  # too few for a neighbour graph: a line is as good a picture
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32)
    import umap  # type: ignore[import-untyped]

    fit_rows = np.arange(n)
    if sample is not None and sample < n:
        fit_rows = np.sort(
            np.random.default_rng(seed).choice(n, size=max(sample, 4), replace=False)
        )
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(fit_rows) - 1),
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        init="spectral" if len(fit_rows) > 50 else "random",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # seeded UMAP is 1 thread
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        if progress:
            progress(f"UMAP: fitting on {len(fit_rows):,} rows")
        fitted = reducer.fit_transform(vectors[fit_rows])
        coords = np.zeros((n, 2), dtype=np.float32)
        coords[fit_rows] = fitted
    rest = np.setdiff1d(np.arange(n), fit_rows)
    if len(rest):
        if progress:
            progress(f"placing the other {len(rest):,} rows among their nearest fitted rows")
        coords[rest] = place(vectors[rest], vectors[fit_rows], fitted)
    return coords


def place(
    vectors: npt.NDArray[np.float32],
    fitted_vectors: npt.NDArray[np.float32],
    fitted: Coords,
    k: int = PLACE_NEIGHBOURS,
) -> Coords:
    """Put each row at the similarity-weighted mean position of its ``k`` most similar fitted rows.

    Vectors are unit length, so a dot product is the cosine. One matrix
    product per chunk of rows: far cheaper than UMAP's ``transform``, which
    optimises every new point for many epochs (it took longer for 40,000 rows
    than fitting them did).
    """
    k = min(k, len(fitted_vectors))
    out = np.empty((len(vectors), 2), dtype=np.float32)
    for start in range(0, len(vectors), _PLACE_CHUNK):
        similarity = vectors[start : start + _PLACE_CHUNK] @ fitted_vectors.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.maximum(np.take_along_axis(similarity, nearest, axis=1), 1e-6)
        out[start : start + _PLACE_CHUNK] = np.einsum(
            "rk,rkd->rd", weights, fitted[nearest]
        ) / weights.sum(axis=1, keepdims=True)
    return out


def default_min_cluster_size(n: int) -> int:
    """How many rows make a cluster: grows with the map so a big map has tens, not thousands.

    Example: ``default_min_cluster_size(400) == 10``, ``default_min_cluster_size(50_000) == 112``.
    """
    return max(10, round(math.sqrt(n) / 2))


def cluster(coords: Coords, *, min_cluster_size: int | None = None, seed: int = 0) -> Labels:
    """A cluster number per row (0, 1, …, largest first), -1 for rows in no cluster."""
    n = len(coords)
    size = min_cluster_size or default_min_cluster_size(n)
    if n < max(size, 2):
        return np.full(n, -1, dtype=np.int64)
    from sklearn.cluster import HDBSCAN  # type: ignore[import-untyped]

    rows = np.arange(n)
    if n > CLUSTER_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=CLUSTER_SAMPLE, replace=False))
    found = HDBSCAN(min_cluster_size=size, min_samples=min(size, 10), copy=True).fit_predict(
        coords[rows]
    )
    labels = np.full(n, -1, dtype=np.int64)
    labels[rows] = found
    if len(rows) < n:
        from sklearn.neighbors import KNeighborsClassifier  # type: ignore[import-untyped]

        rest = np.setdiff1d(np.arange(n), rows)
        nearest = KNeighborsClassifier(n_neighbors=1).fit(coords[rows], found)
        labels[rest] = nearest.predict(coords[rest])
    return _largest_first(labels)


def _largest_first(labels: Labels) -> Labels:
    """Renumber clusters by size, largest 0, so colours and legends are stable and readable."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    mapping = np.full(int(labels.max(initial=-1)) + 2, -1, dtype=np.int64)
    mapping[order + 1] = np.arange(len(order))
    renumbered: Labels = mapping[labels + 1]
    return renumbered
