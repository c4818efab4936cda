"""How much RAM a model needs: one estimate, used everywhere a number is shown or checked.

The catalog, ``models list``, the web UI and the check before loading all call
:func:`memory_needed`, so one file never shows two different figures. The
estimate depends only on the file's size (weights are mapped whole; the KV
cache and compute buffers at the default context are a share of it plus a
fixed margin), so it is the same for a model that is installed and one that
is only in the catalog.
"""

from __future__ import annotations

import psutil

from llm4all.errors import InsufficientMemory

#: Loading needs the file plus this share of it (KV cache, compute buffers) plus a fixed margin.
RAM_OVERHEAD_FACTOR = 1.2
RAM_OVERHEAD_BYTES = 200 * 2**20


def memory_needed(size_bytes: int) -> int:
    """RAM a model file of this size needs to load. Example: 1 GB → about 1.4 GB."""
    return int(size_bytes * RAM_OVERHEAD_FACTOR) + RAM_OVERHEAD_BYTES


def ram_gib(size_bytes: int) -> float:
    """:func:`memory_needed` in GiB, one decimal, as lists show it. Example: 491 MB → 0.7."""
    return round(memory_needed(size_bytes) / 2**30, 1)


def ensure_fits_in_ram(size_bytes: int, *, available: int | None = None) -> int:
    """Raise :class:`InsufficientMemory` unless a model of this size fits in free RAM.

    Returns the bytes it will need. ``available`` overrides psutil (for tests).
    """
    needed = memory_needed(size_bytes)
    free = psutil.virtual_memory().available if available is None else available
    if needed > free:
        raise InsufficientMemory(needed, int(free))
    return needed
