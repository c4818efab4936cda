"""The remote backend: models served by an OpenAI-compatible endpoint (vLLM, ollama, …).

Registered like every backend, through the ``llm4all.backends`` entry-point
group (``remote = "llm4all.engine.remote:backend"``). It knows the names in
the registry of remotes (:mod:`llm4all.models.remotes`, filled by ``llm4all
models add-remote``) before the model store is asked, and loads a
``ModelRef`` of kind ``remote``. This module stays light: httpx and the
engine are imported when a remote model is first loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm4all.engine.refs import ModelRef
from llm4all.engine.registry import Backend
from llm4all.params import LoadParams

if TYPE_CHECKING:
    from llm4all.engine.remote.engine import RemoteEngine
    from llm4all.models.remotes import Remote


def ref_of(remote: Remote) -> ModelRef:
    """The model reference of a registered remote."""
    return ModelRef.remote(
        remote.name,
        remote.base_url,
        remote.model,
        remote.api_key_env,
        timeout=remote.timeout,
        kind=remote.kind,
    )


def _resolve(name: str) -> ModelRef | None:
    from llm4all.models import remotes

    found = remotes.get(name)
    return ref_of(found) if found is not None else None


def load(ref: ModelRef, options: Any = None) -> RemoteEngine:
    """A :class:`RemoteEngine` for ``ref`` (checked against the endpoint's model list)."""
    from llm4all.engine.remote.client import Endpoint
    from llm4all.engine.remote.engine import RemoteEngine
    from llm4all.errors import InvalidParameter

    if ref.base_url is None or ref.model is None:
        raise InvalidParameter("model", ref.name, "a remote with a base URL and a model id")
    endpoint = Endpoint(
        ref.base_url, ref.model, ref.api_key_env, timeout=float(ref.extra.get("timeout", 60.0))
    )
    embedding = ref.extra.get("kind") == "embedding" or bool(
        isinstance(options, LoadParams) and options.embedding
    )
    return RemoteEngine(ref.name, endpoint, embedding=embedding)


#: Any OpenAI-compatible endpoint; claims references of kind ``remote``.
backend = Backend(
    "remote",
    load,
    lambda ref: ref.kind == "remote",
    LoadParams,
    resolve=_resolve,
    description="a model behind an OpenAI-compatible endpoint (vLLM, ollama, llm4all serve, …)",
    priority=10,
)

__all__ = ["backend", "load", "ref_of"]
