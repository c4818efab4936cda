"""``FILE.model.json``: what the store knows about a file beyond its bytes, and its names.

A local model's sidecar records what ``models add`` or a ``hf.co/`` pull read
from its header and where it came from (architecture, parameters,
quantization, kind, source, sha256, ``hub``), and ``names``: every name the
file answers to, first one first (``models add FILE --name other`` adds one,
``models rm other`` drops one). A catalog file's sidecar holds only its other
names. Sidecars written before ``names`` have a single ``name``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm4all.models.sources import write_json_atomic


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".model.json")


def read(path: Path) -> dict[str, Any]:
    """The sidecar of the model file ``path`` ({} when it has none or it is unreadable)."""
    try:
        data = json.loads(sidecar_path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def names(sidecar: Mapping[str, Any]) -> list[str]:
    """The names a sidecar records. Example: ``names({"name": "x"})`` → ``["x"]``."""
    found = sidecar.get("names") or ([sidecar["name"]] if sidecar.get("name") else [])
    return [str(n) for n in found]


def add_name(path: Path, name: str, **facts: Any) -> None:
    """Give ``path`` one more name (last), recording ``facts`` too."""
    data = read(path) | facts
    data["names"] = list(dict.fromkeys([*names(data), name]))
    data.pop("name", None)
    write_json_atomic(sidecar_path(path), data)


def drop_name(path: Path, name: str) -> None:
    data = read(path)
    data["names"] = [n for n in names(data) if n.lower() != name.lower()]
    data.pop("name", None)
    write_json_atomic(sidecar_path(path), data)


def now() -> str:
    """When something was added, as the sidecar records it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
