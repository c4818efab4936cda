"""``POST /v1/embeddings``: texts in, L2-normalised vectors out.

The named model is loaded for embeddings (``LoadParams(embedding=True)``,
mean pooling unless the file says otherwise) and its :class:`~llm4all.Embedder`
does the work in a worker thread, many texts per decode: the model's task
prefix (``task``, an llm4all extension: "document" by default, as
``Embedder.embed``, or "query") and long texts split into windows whose
vectors are averaged, so HTTP and Python give the same vectors. Token-id
inputs are turned back into text with the model's own tokenizer. ``encoding_format="base64"``
(what the ``openai`` package asks for by default) packs little-endian
float32s, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

from fastapi import APIRouter, Request

from llm4all.api import Model
from llm4all.server.completions import check_vocab
from llm4all.server.errors import ApiError
from llm4all.server.manager import Loaded
from llm4all.server.schemas import EmbeddingList, EmbeddingRequest

router = APIRouter()
MAX_INPUTS = 2048  # OpenAI's limit per request


def input_texts(model: Model, given: str | list[Any]) -> list[str]:
    """The request's inputs as texts (token-id lists detokenized)."""
    if isinstance(given, str):
        items: list[Any] = [given]
    elif given and all(isinstance(x, int) for x in given):
        items = [given]
    else:
        items = list(given)
    if not items or len(items) > MAX_INPUTS:
        raise ApiError(400, f"input must hold 1 to {MAX_INPUTS} items", param="input")
    for x in items:
        if not isinstance(x, str):
            check_vocab(model, x, "input")
    texts = [x if isinstance(x, str) else model.engine.detokenize(x) for x in items]
    if any(not t for t in texts):
        raise ApiError(400, "input must not contain empty strings", param="input")
    return texts


def _encode(vector: list[float], fmt: str | None) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def _count(model: Model, texts: list[str]) -> list[int]:
    """Token counts (a long text is split by the Embedder, not refused)."""
    if not model.engine.capabilities.tokens:
        return [model.engine.count_tokens(t) for t in texts]
    counts = [len(model.tokenize(t)) for t in texts]
    for i, n in enumerate(counts):
        if n == 0:  # a control character, say, which this model's tokenizer drops
            raise ApiError(400, f"input {i} has no tokens for this model", param="input")
    return counts


@router.post("/v1/embeddings", response_model=EmbeddingList)
async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
    """Create embeddings (OpenAI-compatible)."""
    async with request.app.state.manager.lease(body.model, "embedding") as loaded:
        return await asyncio.to_thread(_embed, loaded, body)


def _embed(loaded: Loaded, body: EmbeddingRequest) -> dict[str, Any]:
    model, embedder = loaded.model, loaded.embedder
    assert embedder is not None
    texts = input_texts(model, body.input)
    tokens = sum(_count(model, texts))
    dims = body.dimensions
    if (
        dims is not None
        and dims != embedder.dim
        and not (embedder.matryoshka and dims < embedder.dim)
    ):
        raise ApiError(
            400,
            f"{loaded.name} makes {embedder.dim}-dimensional embeddings; "
            f"dimensions={dims} is not supported",
            param="dimensions",
        )
    vectors = embedder.embed(texts, task=body.task, dimensionality=dims)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": loaded.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
