"""A fake Hugging Face hub on a real 127.0.0.1 server: the tree API and resolve URLs.

:func:`publish` makes a :class:`servers.FileServer` answer for a repository the
way huggingface.co does: ``GET /api/models/{repo}/tree/main?recursive=True``
lists its files (``type``, ``oid``, ``size``, ``path`` and, for GGUF files, the
Git LFS pointer ``lfs: {oid: sha256, size, pointerSize}``), paged with a
``Link: <next>; rel="next"`` header, and ``/{repo}/resolve/main/{path}``
serves the bytes (with Range).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any

from servers import FileServer


def tree_entries(files: dict[str, bytes], wrong_sha: frozenset[str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    folders = sorted({str(p) for path in files for p in PurePosixPath(path).parents} - {"."})
    for folder in folders:
        entries.append({"type": "directory", "oid": "d" * 40, "size": 0, "path": folder})
    for path, data in files.items():
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        entry: dict[str, Any] = {"type": "file", "oid": blob, "size": len(data), "path": path}
        if path.endswith(".gguf"):
            sha = "0" * 64 if path in wrong_sha else hashlib.sha256(data).hexdigest()
            entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 135}
        entries.append(entry)
    return entries


def publish(
    server: FileServer,
    repo: str,
    files: dict[str, bytes],
    *,
    wrong_sha: frozenset[str] = frozenset(),
    page_size: int | None = None,
) -> None:
    """Serve ``files`` (path in the repo → bytes) as the repository ``repo``."""
    entries = tree_entries(files, wrong_sha)
    size = page_size or len(entries) or 1
    pages = [entries[i : i + size] for i in range(0, max(len(entries), 1), size)]
    first = f"/api/models/{repo}/tree/main?recursive=True"
    paths = [first] + [f"{first}&cursor={n}" for n in range(1, len(pages))]
    for n, (path, page) in enumerate(zip(paths, pages, strict=True)):
        server.files[path] = json.dumps(page).encode()
        if n + 1 < len(paths):
            server.headers[path] = {"Link": f'<{server.url(paths[n + 1])}>; rel="next"'}
    for path, data in files.items():
        server.files[f"/{repo}/resolve/main/{path}"] = data
