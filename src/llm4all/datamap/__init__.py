"""The data map: every row of a training set embedded, laid out in 2-D, clustered and drawn.

``llm4all data map IN… -o map.html`` is the command; the pieces are
:mod:`~llm4all.datamap.embed_cache` (vectors on disk),
:mod:`~llm4all.datamap.layout` (UMAP, HDBSCAN), :mod:`~llm4all.datamap.keywords`
(c-TF-IDF), :mod:`~llm4all.datamap.labels` (curation's verdicts),
:mod:`~llm4all.datamap.html` (one offline page) and
:mod:`~llm4all.datamap.build`, which runs them in order.
"""

from llm4all.datamap.build import DataMap, MapOptions, embed_rows, layout_map, payload
from llm4all.datamap.embed_cache import EmbeddingCache, default_path, model_key

__all__ = [
    "DataMap",
    "EmbeddingCache",
    "MapOptions",
    "default_path",
    "embed_rows",
    "layout_map",
    "model_key",
    "payload",
]
