"""The registry of remote models: a name for a model on an OpenAI-compatible endpoint.

``llm4all models add-remote big --base-url http://gpu:8000/v1 --model Qwen/Qwen2.5-72B
--api-key-env VLLM_KEY`` stores one entry in ``remotes.json`` in the llm4all
home folder; from then on ``big`` is a model name like any other (``llm4all
chat -m big``, ``llm4all.Model("big")``, the server and the web UI).

Only the *name* of the environment variable that holds the API key is stored;
the key itself is read when a request is sent and is never written anywhere.
The file is rewritten whole through a temporary file and ``os.replace``, so a
crash mid-write leaves the old registry, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llm4all import paths
from llm4all.errors import InvalidParameter, Llm4allError

FILE_NAME = "remotes.json"
KINDS = ("chat", "embedding")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Remote:
    """One registered remote model."""

    name: str
    base_url: str
    model: str  # the id the endpoint serves it as (vLLM's --served-model-name)
    api_key_env: str | None = None
    timeout: float = 60.0  # seconds to wait for the next byte of an answer
    kind: str = "chat"  # or "embedding": a model for /v1/embeddings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RemoteRegistryError(Llm4allError):
    """``remotes.json`` cannot be read (it is left as it is)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}; fix or remove the file")


def registry_path() -> Path:
    return paths.home() / FILE_NAME


def load(path: Path | None = None) -> dict[str, Remote]:
    """Every registered remote by name (an empty registry when the file does not exist)."""
    path = path or registry_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RemoteRegistryError(path, f"not readable JSON ({exc})") from None
    known = {f.name for f in fields(Remote)}
    try:
        return {
            name: Remote(**{k: v for k, v in entry.items() if k in known} | {"name": name})
            for name, entry in raw.get("remotes", {}).items()
        }
    except (AttributeError, TypeError) as exc:
        raise RemoteRegistryError(path, f"not a registry of remotes ({exc})") from None


def get(name: str, path: Path | None = None) -> Remote | None:
    """The remote registered as ``name``, or None."""
    return load(path).get(name)


def validate(remote: Remote) -> None:
    """Raise :class:`InvalidParameter` naming the first field that cannot work."""
    if not _NAME.match(remote.name):
        raise InvalidParameter(
            "name", remote.name, "letters, digits and . _ : - (at most 64, not starting with one)"
        )
    url = urlsplit(remote.base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidParameter("base_url", remote.base_url, "an http:// or https:// URL")
    if url.username or url.password or url.query:
        raise InvalidParameter(
            "base_url",
            "…",
            "a URL without credentials or a query (give the key with --api-key-env)",
        )
    if not remote.model.strip():
        raise InvalidParameter("model", remote.model, "the model id the endpoint serves")
    if remote.api_key_env is not None and not _ENV_VAR.match(remote.api_key_env):
        raise InvalidParameter(
            "api_key_env", remote.api_key_env, "the NAME of an environment variable, not a key"
        )
    if remote.kind not in KINDS:
        raise InvalidParameter("kind", remote.kind, " or ".join(KINDS))
    if not remote.timeout > 0:
        raise InvalidParameter("timeout", remote.timeout, "a number of seconds > 0")


def add(remote: Remote, *, replace: bool = False, path: Path | None = None) -> None:
    """Register ``remote`` (``replace``: over an existing entry of the same name)."""
    validate(remote)
    path = path or registry_path()
    remotes = load(path)
    if remote.name in remotes and not replace:
        raise InvalidParameter(
            "name", remote.name, "a new name (it is registered already; --replace overwrites it)"
        )
    remotes[remote.name] = remote
    _write(path, remotes)


def remove(name: str, path: Path | None = None) -> Remote | None:
    """Forget the remote called ``name``; the entry removed, or None if there was none."""
    path = path or registry_path()
    remotes = load(path)
    gone = remotes.pop(name, None)
    if gone is not None:
        _write(path, remotes)
    return gone


def _write(path: Path, remotes: dict[str, Remote]) -> None:
    entries = {
        name: {k: v for k, v in r.to_dict().items() if k != "name"}
        for name, r in sorted(remotes.items())
    }
    text = json.dumps({"remotes": entries}, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".remotes-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
