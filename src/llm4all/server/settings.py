"""The server's settings: one frozen dataclass, checked once.

Generation defaults are a :class:`GenerationParams` (the one definition of
every sampling knob); load knobs are checked by building the
:class:`LoadParams` each loaded model will get, so no range is declared twice.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4all.errors import InvalidParameter
from llm4all.params import GenerationParams, LoadParams

DEFAULT_PORT = 4891  # GPT4All's API server port
# Texts per decode of an embedding model (as many as fit in n_batch tokens). Embedding
# contexts use one unified KV buffer, so each text is pooled whole however long its
# neighbours are, and n_ctx = n_batch is room for a whole decode.
EMBED_SEQS = 16
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine. Example: ``"::1" -> True``."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_names(names: str | Any) -> tuple[str, ...]:
    """``--allowed-host`` values, checked: lower case, no trailing dot; one string or many."""
    out = []
    for raw in (names,) if isinstance(names, str) else names:
        name = str(raw).strip().lower().rstrip(".")
        if not name or any(c in name for c in "/:@[] \t") or ("*" in name and name != "*"):
            raise InvalidParameter(
                "allowed_hosts",
                raw,
                "a host name without scheme or port (example.lan), .example.lan for a "
                "domain and its subdomains, or * for any",
            )
        out.append(name)
    return tuple(out)


def _folders(paths: str | Path | Any) -> tuple[Path, ...]:
    """``--docs-root`` values: existing folders, one path or many."""
    out = []
    for raw in (paths,) if isinstance(paths, str | Path) else paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise InvalidParameter("docs_roots", str(raw), "an existing folder")
        out.append(path)
    return tuple(out)


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``llm4all serve`` can be told. Example: ``ServerSettings(parallel=8)``."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    #: the model loaded at start-up and used when a request names none (None: catalog default)
    model: str | None = None
    preload: bool = True
    api_key: str | None = None
    insecure: bool = False  # allow a non-loopback bind without an API key
    cors_origins: tuple[str, ...] = ()
    #: Folders under which the web page may add LocalDocs folders (none: anywhere on a
    #: loopback server, nowhere on any other)
    docs_roots: tuple[Path, ...] = ()
    #: Host names answered beside IPs, localhost and this machine's name (``.dom`` a domain,
    #: ``*`` any); every other ``Host`` gets 403 (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    parallel: int = 4  # KV slots per chat model: requests decoded together
    ctx: int = LoadParams().n_ctx  # context window of each request
    max_loaded: int = 2  # models kept in memory at once (least recently used unloads first)
    keep_alive: float | None = 300.0  # idle seconds before a model unloads; None: never
    max_body: int = 8 * 2**20  # request body bytes
    max_tokens_cap: int | None = None  # most tokens one answer may ask for (and the default)
    max_queue: int = 64  # requests waiting for a slot, per model, before 429
    max_n: int = 8  # most choices (``n``) per request
    n_threads: int | None = None
    n_batch: int = LoadParams().n_batch
    n_gpu_layers: int = 0  # layers of each chat model on the GPU (-1: all; needs a GPU build)
    check_memory: bool = True
    #: Most bytes the loaded models may take together (None: whatever RAM is free); a load
    #: beyond it unloads idle models first, and is refused if that is not enough
    max_memory: int | None = None
    models_dir: Path | None = None  # None: the user's model store
    #: Speculative decoding per chat model: (model name, draft) pairs, the draft a model
    #: name or file, "auto" (the catalog's suggestion) or "lookup" (prompt lookup)
    drafts: tuple[tuple[str, str], ...] = ()
    #: The backend every chat model loads with (None: the one that claims it), and that
    #: backend's own flags (transformers: ``gen_config``, ``device``, ``dtype``)
    backend: str | None = None
    backend_flags: Mapping[str, Any] = field(default_factory=dict)
    defaults: GenerationParams = field(default_factory=GenerationParams)

    def __post_init__(self) -> None:
        if isinstance(self.cors_origins, str | list):
            object.__setattr__(
                self,
                "cors_origins",
                (self.cors_origins,)
                if isinstance(self.cors_origins, str)
                else tuple(self.cors_origins),
            )
        object.__setattr__(self, "docs_roots", _folders(self.docs_roots))
        object.__setattr__(self, "allowed_hosts", _host_names(self.allowed_hosts))
        self.load_params()  # range-checks parallel, ctx, threads, batch
        self.backend_options()  # an unknown backend or a bad --gen-config fails before serving
        for name in ("max_loaded", "max_body", "max_queue", "max_n", "port"):
            if getattr(self, name) < (0 if name == "port" else 1):
                raise InvalidParameter(name, getattr(self, name), "a positive number")
        if self.max_memory is not None and self.max_memory < 1:
            raise InvalidParameter("max_memory", self.max_memory, "a positive number of bytes")
        if self.max_tokens_cap is not None and self.max_tokens_cap < 1:
            raise InvalidParameter("max_tokens_cap", self.max_tokens_cap, "a value >= 1")
        if not is_loopback(self.host) and not self.api_key and not self.insecure:
            raise InvalidParameter(
                "host",
                self.host,
                "a loopback address (127.0.0.1, ::1, localhost) unless an API key is set "
                "(--api-key) or the risk is accepted with --insecure",
            )

    def load_params(self, model: str | None = None) -> LoadParams:
        """How each chat model is loaded: one KV slot per parallel request (and ``model``'s
        draft from ``drafts``: the runner speculates while a model has one stream).

        Embedding models are loaded as :func:`llm4all.embeddings.embedding_load_params`
        says (bounded by the file's own window), with ``EMBED_SEQS`` texts a decode.
        """
        try:
            return LoadParams(
                n_ctx=self.parallel * self.ctx,
                n_seq_max=self.parallel,
                n_threads=self.n_threads,
                n_batch=self.n_batch,
                n_gpu_layers=self.n_gpu_layers,
                check_memory=self.check_memory,
                draft=next((d for m, d in self.drafts if m == model and d != "lookup"), None),
                lookup=(model, "lookup") in self.drafts,
            )
        except InvalidParameter as exc:
            renamed = {"n_seq_max": "parallel", "n_ctx": "ctx"}.get(exc.field, exc.field)
            raise InvalidParameter(renamed, exc.value, exc.expected) from None

    def backend_options(self, model: str | None = None) -> Any:
        """The backend's own load options for ``model`` (None when it has no flags)."""
        if self.backend is None:
            return None
        from llm4all.engine import backend_options, get_backend

        get_backend(self.backend)  # an unknown name: InvalidParameter listing the known ones
        if not self.backend_flags:
            return None
        return backend_options(self.backend, vars(self.load_params(model)), **self.backend_flags)

    def replace(self, **changes: Any) -> ServerSettings:
        return dataclasses.replace(self, **changes)
