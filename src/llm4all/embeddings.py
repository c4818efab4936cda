"""Text embeddings: ``Embedder`` (llm4all's own) and ``Embed4All`` (the original API).

Example::

    from llm4all import Embedder
    with Embedder() as embedder:                 # all-MiniLM-L6-v2, built on first use
        vectors = embedder.embed(["The cat sat.", "A feline was seated."])
        query = embedder.embed_query("where did the cat sit?")

An embedder is an embedding GGUF loaded through the engine for mean-pooled,
L2-normalised vectors, many texts per ``llama_decode``. It knows its model's
task prefixes from the catalog (nomic-embed-text wants ``search_document: ``
before a document and ``search_query: `` before a query) and adds them. A text
longer than the model's window is either cut (``long_text_mode="truncate"``)
or split into windows whose vectors are averaged, weighted by their token
counts (``"mean"``, the default, as in GPT4All).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from llm4all.engine import Engine, load_engine
from llm4all.errors import Llm4allError
from llm4all.params import LoadParams

log = logging.getLogger(__name__)

#: The model LocalDocs and ``Embed4All()`` use unless told otherwise (GPT4All's default too).
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
#: Tokens per ``llama_decode`` and sequences in it: attention in a BERT batch costs
#: the square of the batch, so a moderate batch beats a huge one.
BATCH_TOKENS = 1024
MAX_SEQUENCES = 16

LongTextMode = Literal["mean", "truncate"]
Task = Literal["document", "query"]
Vectors = npt.NDArray[np.float32]


class EmbeddingCancelled(Llm4allError):
    """A ``cancel_cb`` asked to stop embedding."""

    def __init__(self) -> None:
        super().__init__("operation was canceled")


class Embedder:
    """An embedding model, loaded once; see the module docstring.

    ``model`` is a catalog name, a store file name or a GGUF path (default
    :data:`DEFAULT_EMBEDDING_MODEL`); a catalog model not yet in the store is
    fetched (and, for MiniLM, converted) when ``allow_download``.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        allow_download: bool = True,
        progress: Any = None,
        n_threads: int | None = None,
        batch_tokens: int = BATCH_TOKENS,
        max_sequences: int = MAX_SEQUENCES,
    ) -> None:
        from llm4all.models import ModelStore, remotes

        remote = remotes.get(str(model)) if model is not None else None
        if remote is not None:  # an embedding model behind an endpoint (models add-remote)
            self._load_remote(remote.name)
            return
        resolved = ModelStore().resolve(
            str(model or DEFAULT_EMBEDDING_MODEL), allow_download=allow_download, progress=progress
        )
        self.path = resolved.path
        self.name = resolved.entry.name if resolved.entry else resolved.path.stem
        self.prefixes: dict[str, str] = dict(resolved.entry.prefixes) if resolved.entry else {}
        self.matryoshka = bool(resolved.entry and resolved.entry.matryoshka)
        params = embedding_load_params(
            self.path, batch_tokens=batch_tokens, max_sequences=max_sequences, n_threads=n_threads
        )
        window = _trained_window(self.path)
        self.engine: Engine = load_engine(self.path, params)
        self.max_tokens = min(window, self.engine.info.n_ctx, params.n_batch)

    def _load_remote(self, name: str) -> None:
        from llm4all.engine import resolve

        ref = resolve(name)
        self.engine = load_engine(ref, LoadParams(embedding=True))
        self.name, self.path = name, Path(name)
        self.prefixes, self.matryoshka = {}, False
        self.max_tokens = self.engine.info.n_ctx or 512  # the remote splits nothing for us

    @classmethod
    def from_engine(
        cls,
        engine: Engine,
        name: str,
        prefixes: dict[str, str] | None = None,
        *,
        matryoshka: bool = False,
        path: Path | None = None,
    ) -> Embedder:
        """Wrap an engine already loaded with ``embedding=True`` (the server, other backends).

        With the model file's ``path`` the window is the one :class:`Embedder`
        would use itself, so both give the same vectors for a long text.
        """
        self = cls.__new__(cls)
        self.engine, self.name, self.path = engine, name, path or Path(name)
        self.prefixes, self.matryoshka = dict(prefixes or {}), matryoshka
        window = _trained_window(path) if path is not None and path.is_file() else None
        n_batch = getattr(getattr(engine, "params", None), "n_batch", None)
        limits = [n for n in (window, engine.info.n_ctx, n_batch) if n]
        self.max_tokens = min(limits) if limits else 512
        return self

    @property
    def dim(self) -> int:
        """Dimensions of a full-size vector."""
        return self.engine.info.n_embd

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without the model's special tokens."""
        return len(self.engine.tokenize(text, add_special=False, parse_special=False))

    def task_prefix(self, task: str | None) -> str:
        """What goes before an input for ``task``: nomic, "query" → "search_query: "; MiniLM → ""."""
        name = self.prefixes.get(task) if task else None
        return f"{name}: " if name else ""

    def embed_array(
        self,
        texts: Sequence[str],
        *,
        prefix: str = "",
        dimensionality: int | None = None,
        long_text_mode: LongTextMode = "mean",
        cancel: Callable[[int], bool] | None = None,
    ) -> Vectors:
        """One L2-normalised float32 row per text; ``prefix`` is put before each text as is."""
        if long_text_mode not in ("mean", "truncate"):
            raise ValueError(
                f"Long text mode must be one of 'mean' or 'truncate', got {long_text_mode!r}"
            )
        pieces, owners, weights = self._split(texts, prefix, long_text_mode)
        raw = self._embed_pieces(pieces, cancel)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, owners, raw * np.asarray(weights, dtype=np.float32)[:, None])
        return _normalise(self._cut(out, dimensionality))

    def _embed_pieces(self, pieces: list[str], cancel: Callable[[int], bool] | None) -> Vectors:
        step = MAX_SEQUENCES * 8
        rows: list[list[float]] = []
        for start in range(0, len(pieces), step):
            if cancel is not None and cancel(min(step, len(pieces) - start)):
                raise EmbeddingCancelled
            rows.extend(self.engine.embed(pieces[start : start + step]))
        return np.asarray(rows, dtype=np.float32).reshape(len(pieces), self.dim)

    def _split(
        self, texts: Sequence[str], prefix: str, mode: LongTextMode
    ) -> tuple[list[str], list[int], list[int]]:
        """Inputs that fit the window, the text each came from, and its token count."""
        if not self.engine.capabilities.tokens:  # a remote endpoint handles long texts itself
            return [prefix + t for t in texts], list(range(len(texts))), [1] * len(texts)
        room = self.max_tokens - 2 - (self.count_tokens(prefix) if prefix else 0)  # [CLS] … [SEP]
        pieces: list[str] = []
        owners: list[int] = []
        weights: list[int] = []
        for i, text in enumerate(texts):
            tokens = self.engine.tokenize(text, add_special=False, parse_special=False)
            if len(tokens) <= room:
                windows = [text]
                counts = [max(1, len(tokens))]
            else:
                cut = range(0, len(tokens), room) if mode == "mean" else range(0, 1)
                windows = [self.engine.detokenize(tokens[s : s + room]) for s in cut]
                counts = [len(tokens[s : s + room]) for s in cut]
            pieces.extend(prefix + w for w in windows)
            owners.extend([i] * len(windows))
            weights.extend(counts)
        return pieces, owners, weights

    def _cut(self, vectors: Vectors, dimensionality: int | None) -> Vectors:
        if dimensionality is None or dimensionality == self.dim:
            return vectors
        if not self.matryoshka or not 0 < dimensionality < self.dim:
            raise ValueError(
                f"{self.name} makes {self.dim}-dimensional vectors and cannot be cut to "
                f"{dimensionality} (only Matryoshka models such as nomic-embed-text-v1.5 can)"
            )
        return vectors[:, :dimensionality]

    def embed(
        self,
        texts: Sequence[str],
        *,
        task: Task | None = "document",
        dimensionality: int | None = None,
        long_text_mode: LongTextMode = "mean",
    ) -> list[list[float]]:
        """Vectors for ``texts`` as lists, with the model's prefix for ``task`` (if it has one)."""
        vectors = self.embed_array(
            texts,
            prefix=self.task_prefix(task),
            dimensionality=dimensionality,
            long_text_mode=long_text_mode,
        )
        rows: list[list[float]] = vectors.tolist()
        return rows

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Vectors for passages to be searched (the model's document prefix, if any)."""
        return self.embed_array(texts, prefix=self.task_prefix("document"))

    def embed_query(self, text: str) -> Vectors:
        """The vector of one search query (the model's query prefix, if any), shape ``(dim,)``."""
        vector: Vectors = self.embed_array([text], prefix=self.task_prefix("query"))[0]
        return vector

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim})"


def embedding_load_params(
    path: Path,
    *,
    batch_tokens: int = BATCH_TOKENS,
    max_sequences: int = MAX_SEQUENCES,
    n_threads: int | None = None,
    check_memory: bool = True,
) -> LoadParams:
    """How to load ``path`` for embeddings, bounded whatever the model.

    The KV cache is one buffer shared by the texts of a decode (``kv_unified``)
    and cleared between decodes, so ``n_ctx = n_batch`` holds any decode; a
    text longer than that is split (or cut). A decoder (a chat model asked
    for embeddings) computes logits for every token of a decode, so its batch
    is cut to keep them small: Qwen2.5 with a batch of its 32k window (capped
    at 8,192) reserved 4.9 GiB.
    """
    from llm4all.engine.footprint import embedding_batch
    from llm4all.models import read_metadata

    wanted = max(batch_tokens, _trained_window(path))
    try:
        n_batch = embedding_batch(read_metadata(path), wanted)
    except Llm4allError:  # the load itself will say what is wrong with the file
        n_batch = batch_tokens
    return LoadParams(
        embedding=True,
        n_ctx=n_batch,
        n_batch=n_batch,
        n_seq_max=max_sequences,
        n_threads=n_threads,
        check_memory=check_memory,
    )


def _trained_window(path: Path) -> int:
    from llm4all.models import read_metadata

    try:
        return max(8, min(int(read_metadata(path).context_length or 512), 8192))
    except Exception:  # a file the reader does not understand still loads in llama.cpp
        return 512


def _normalise(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


class Embed4All:
    """The original GPT4All embedding API: ``Embed4All().embed("text")``.

    ``model_name`` defaults to all-MiniLM-L6-v2 (GPT4All's own default, under
    the same file name). Keyword arguments the original passes on to
    ``GPT4All`` are accepted; ``model_path`` and ``allow_download`` are honoured.
    """

    MIN_DIMENSIONALITY = 64

    def __init__(
        self,
        model_name: str | None = None,
        *,
        n_threads: int | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        if device not in (None, "cpu"):
            log.warning("Embed4All: device=%r is not supported here; using the CPU", device)
        model: str | Path = model_name or DEFAULT_EMBEDDING_MODEL
        model_path = kwargs.pop("model_path", None)
        if model_name and model_path and (Path(model_path) / model_name).is_file():
            model = Path(model_path) / model_name
        allow = bool(kwargs.pop("allow_download", True))
        if kwargs:
            log.info("Embed4All: ignoring %s", ", ".join(sorted(kwargs)))
        self.embedder = Embedder(model, allow_download=allow, n_threads=n_threads)

    def embed(
        self,
        text: str | list[str],
        *,
        prefix: str | None = None,
        dimensionality: int | None = None,
        long_text_mode: str = "mean",
        return_dict: bool = False,
        atlas: bool = False,
        cancel_cb: Callable[[list[int], str], bool] | None = None,
    ) -> Any:
        """One vector for a string, a list of vectors for a list (see GPT4All's docs).

        ``prefix`` is the task name without the colon (``"search_query"``); by
        default the model's document prefix, if it has one. With
        ``return_dict`` the result is ``{"embeddings": …, "n_prompt_tokens": n}``.
        """
        if not text or (isinstance(text, list) and not all(text)):
            raise ValueError("text must not be None or empty")
        _check_dimensionality(dimensionality, self.MIN_DIMENSIONALITY)
        if long_text_mode not in ("mean", "truncate"):
            raise ValueError(
                f"Long text mode must be one of 'mean' or 'truncate', got {long_text_mode!r}"
            )
        texts = [text] if isinstance(text, str) else list(text)
        e = self.embedder
        head = e.task_prefix("document") if prefix is None else (f"{prefix}: " if prefix else "")
        n_tokens = sum(len(e.engine.tokenize(head + t)) for t in texts)
        if atlas and long_text_mode == "mean" and n_tokens > 8192 * len(texts):
            raise ValueError("a text is longer than 8192 tokens, which Atlas does not accept")
        cancel = (lambda n: bool(cancel_cb([n], "cpu"))) if cancel_cb is not None else None
        vectors = e.embed_array(
            texts,
            prefix=head,
            dimensionality=dimensionality,
            long_text_mode=long_text_mode,  # type: ignore[arg-type]
            cancel=cancel,
        ).tolist()
        result = vectors[0] if isinstance(text, str) else vectors
        return {"embeddings": result, "n_prompt_tokens": n_tokens} if return_dict else result

    def close(self) -> None:
        self.embedder.close()

    def __enter__(self) -> Embed4All:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_dimensionality(dimensionality: int | None, minimum: int) -> None:
    if dimensionality is None:
        return
    if dimensionality <= 0:
        raise ValueError(f"Dimensionality must be None or a positive integer, got {dimensionality}")
    if dimensionality < minimum:
        warnings.warn(
            f"Dimensionality {dimensionality} is less than the suggested minimum of {minimum}."
            " Performance may be degraded.",
            stacklevel=3,
        )
