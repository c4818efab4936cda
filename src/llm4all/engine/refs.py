"""A model reference: what to load, before any backend has looked at it.

A user names a model in one of four ways, and a :class:`ModelRef` says which:

- ``catalog``: a catalog name (``qwen2.5-coder-0.5b-instruct``), resolved to a
  file in the model store (downloaded first if allowed);
- ``file``: a model file (a GGUF) anywhere on disk or in the store;
- ``folder``: a model folder (a Hugging Face checkpoint, for backends that read one);
- ``remote``: an OpenAI-compatible endpoint (``base_url`` plus the endpoint's
  ``model`` id and the *name* of the environment variable holding its key;
  the key itself is never stored).

Backends say which references they take (:attr:`Backend.claims
<llm4all.engine.registry.Backend.claims>`); :func:`llm4all.engine.resolve`
turns a name into a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RefKind = Literal["catalog", "file", "folder", "remote"]


@dataclass(frozen=True)
class ModelRef:
    """What to load. Example: ``ModelRef.file("/m/smollm2.gguf")``."""

    kind: RefKind
    name: str  # how the user and the chat store name it
    path: Path | None = None  # catalog, file, folder: where it is on disk
    base_url: str | None = None  # remote: ``http://host:8000/v1``
    model: str | None = None  # remote: the endpoint's model id
    api_key_env: str | None = None  # remote: the environment variable that holds the key
    backend: str | None = None  # a backend asked for by name (None: the first that claims it)
    entry: Any = field(default=None, compare=False, repr=False)  # the catalog entry, if any
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # backend-specific

    @classmethod
    def file(cls, path: str | Path, name: str | None = None, entry: Any = None) -> ModelRef:
        p = Path(path)
        kind: RefKind = "folder" if p.is_dir() else ("catalog" if entry is not None else "file")
        return cls(kind, name or (entry.name if entry is not None else p.name), p, entry=entry)

    @classmethod
    def remote(
        cls,
        name: str,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        **extra: Any,
    ) -> ModelRef:
        return cls(
            "remote",
            name,
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            extra=dict(extra),
        )

    @property
    def is_local(self) -> bool:
        return self.kind != "remote"

    def describe(self) -> str:
        """One line for messages: the path, or the endpoint and model id."""
        if self.kind == "remote":
            return f"{self.model} at {self.base_url}"
        return str(self.path)
