"""GGUF files from a Hugging Face repository, named as ollama and GPT4All name them.

``hf.co/USER/REPO:Q4_K_M`` names the file of that quantization,
``hf.co/USER/REPO`` the default one (:data:`DEFAULT_QUANTS`, best first) and
``hf.co/USER/REPO/PATH.gguf`` one file. ``huggingface.co/…`` and the page's
``https://huggingface.co/USER/REPO/blob/main/FILE.gguf`` address work too.

The file list comes from the hub's tree API, the one ``HfApi.list_repo_tree``
reads: ``GET /api/models/{repo}/tree/{revision}?recursive=True``, paged with
``Link: <…>; rel="next"``. Each entry has ``path`` and ``size``, and files
kept in Git LFS (every GGUF) have ``lfs.oid``: the sha256 of the content,
which the download is checked against. The file itself is
``/{repo}/resolve/{revision}/{path}``, fetched by
:func:`llm4all.models.sources.fetch_url` (resume, free-space check, size and
sha256).

The hub is ``$LLM4ALL_HF_ENDPOINT``, else ``$HF_ENDPOINT`` (huggingface_hub's
variable), else https://huggingface.co; ``$HF_TOKEN`` is sent as a bearer
token, for private and gated repositories. Split GGUFs
(``…-00001-of-00003.gguf``) are not supported yet: they are refused with a
clear message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from llm4all.errors import DownloadError, ModelNotFound, QuantizationNotFound

if TYPE_CHECKING:
    import httpx

DEFAULT_ENDPOINT = "https://huggingface.co"
#: The quantization ``hf.co/USER/REPO`` means, best first (ollama's default is Q4_K_M too).
DEFAULT_QUANTS = (
    "Q4_K_M", "Q4_K_S", "Q4_K_L", "Q4_K_XL", "IQ4_XS", "IQ4_NL", "Q4_0", "Q4_1",
    "Q5_K_M", "Q5_K_S", "Q5_K_L", "Q5_0", "Q6_K", "Q6_K_L", "Q8_0",
    "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_XS",
    "BF16", "F16", "F32",
)  # fmt: skip
_PREFIX = re.compile(r"^(?:https?://)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEB_PATH = re.compile(r"^(?:blob|resolve)/([^/]+)/(.+)$")
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(I?Q[1-8](?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class HubRef:
    """What a ``hf.co/…`` name asks for: a repository and a quantization or a file."""

    repo: str
    quant: str | None = None
    path: str | None = None
    revision: str = "main"

    @property
    def name(self) -> str:
        """The name as typed, normalised. Example: ``hf.co/bartowski/X-GGUF:Q4_K_M``."""
        if self.path:
            return f"hf.co/{self.repo}/{self.path}"
        return f"hf.co/{self.repo}" + (f":{self.quant}" if self.quant else "")


@dataclass(frozen=True)
class HubFile:
    """One file of a repository, as the tree API lists it."""

    path: str
    size: int
    sha256: str | None  # lfs.oid; None for a file kept in plain git

    @property
    def filename(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def quant(self) -> str | None:
        """The quantization in the file name. Example: ``SmolLM2-Q4_K_M.gguf`` → ``Q4_K_M``."""
        return quantization_of(self.filename)

    def model_name(self, repo: str) -> str:
        """The store's name for it: ``hf.co/REPO:QUANT``, or ``hf.co/REPO/PATH`` without a quant."""
        return f"hf.co/{repo}:{self.quant}" if self.quant else f"hf.co/{repo}/{self.path}"


def parse_ref(text: str) -> HubRef | None:
    """The repository reference in ``text``, or None when it is not a ``hf.co/`` name.

    Example: ``parse_ref("hf.co/u/r:q4_k_m")`` → ``HubRef("u/r", "Q4_K_M")``.
    """
    if not _PREFIX.match(text):
        return None
    rest = _PREFIX.sub("", text.strip()).strip("/")
    parts = rest.split("/", 2)
    if len(parts) < 2:
        raise ModelNotFound(text)
    repo, tail = "/".join(parts[:2]), parts[2] if len(parts) == 3 else ""
    quant = None
    if not tail and ":" in repo:
        repo, _, quant = repo.partition(":")
    if not _REPO.fullmatch(repo) or (quant is not None and not quant):
        raise ModelNotFound(text)
    if quant is not None and quant.lower() == "latest":  # ollama's tag for "the default"
        quant = None
    revision = "main"
    web = _WEB_PATH.match(tail)
    if web:  # a page or download address copied from the browser
        revision, tail = web[1], web[2]
    return HubRef(repo, quant.upper() if quant else None, tail or None, revision)


def quantization_of(filename: str) -> str | None:
    """The last quantization label in a file name (upper case), or None."""
    found = _QUANT.findall(filename)
    return found[-1].upper() if found else None


def endpoint() -> str:
    """The hub's base address."""
    base = os.environ.get("LLM4ALL_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT")
    return (base or DEFAULT_ENDPOINT).rstrip("/")


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer $HF_TOKEN`` when a token is set."""
    token = os.environ.get("HF_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def download_url(ref: HubRef, file: HubFile) -> str:
    return f"{endpoint()}/{ref.repo}/resolve/{quote(ref.revision, safe='')}/{quote(file.path)}"


def list_files(ref: HubRef, client: httpx.Client) -> list[HubFile]:
    """Every file of the repository at ``ref.revision`` (all pages of the tree API).

    ``client`` carries :func:`auth_headers`.
    """
    import httpx

    url: str | None = (
        f"{endpoint()}/api/models/{ref.repo}/tree/{quote(ref.revision, safe='')}?recursive=True"
    )
    files: list[HubFile] = []
    while url is not None:
        try:
            resp = client.get(url)
        except httpx.HTTPError as exc:
            raise DownloadError(ref.name, f"cannot reach {endpoint()} ({exc})") from None
        _check_status(ref, resp)
        try:
            files += [_file(item) for item in resp.json() if item.get("type") == "file"]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise DownloadError(ref.name, f"{endpoint()} answered with an unknown format") from None
        url = resp.links.get("next", {}).get("url")
    return files


def _file(item: dict[str, Any]) -> HubFile:
    lfs = item.get("lfs") or {}
    oid = str(lfs.get("oid") or lfs.get("sha256") or "").lower()
    sha = oid if re.fullmatch(r"[0-9a-f]{64}", oid) else None
    return HubFile(str(item["path"]), int(lfs.get("size") or item["size"]), sha)


def _check_status(ref: HubRef, resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    where = f"{endpoint()}/{ref.repo}"
    if resp.status_code in (401, 403):
        reason = (
            f"HF_TOKEN was refused (HTTP {resp.status_code}); if the model is gated, "
            f"accept its terms at {where}"
            if auth_headers()
            else f"{where} does not exist, or it is private or gated: check the name, "
            "or set HF_TOKEN to an access token that can read it"
        )
    elif resp.status_code == 404:
        reason = f"{where} does not exist (or has no revision {ref.revision!r})"
    else:
        reason = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
    raise DownloadError(ref.name, reason)


def choose_file(ref: HubRef, files: list[HubFile]) -> HubFile:
    """The GGUF file ``ref`` names; refuses missing quantizations and split files clearly."""
    ggufs = [
        f for f in files if f.path.lower().endswith(".gguf") and "mmproj" not in f.filename.lower()
    ]
    if ref.path is not None:
        exact = [f for f in files if f.path.lower() == ref.path.lower()]
        if not exact:
            raise ModelNotFound(ref.name, [f.model_name(ref.repo) for f in ggufs][:3])
        return _single(ref, exact)
    if not ggufs:
        raise DownloadError(
            ref.name,
            "the repository has no GGUF files; llm4all runs GGUF models "
            "(look for a repository of the model whose name ends in -GGUF)",
        )
    by_quant: dict[str, list[HubFile]] = {}
    for f in sorted(ggufs, key=lambda f: f.path):
        by_quant.setdefault(f.quant or f.path, []).append(f)
    if ref.quant is not None:
        if ref.quant not in by_quant:
            raise QuantizationNotFound(f"hf.co/{ref.repo}", ref.quant, _ordered(by_quant))
        return _single(ref, by_quant[ref.quant])
    return _single(ref, by_quant[_ordered(by_quant)[0]])


def _ordered(by_quant: dict[str, list[HubFile]]) -> list[str]:
    """The quantizations on offer, the default's preference order first."""
    rank = {q: i for i, q in enumerate(DEFAULT_QUANTS)}
    return sorted(by_quant, key=lambda q: (rank.get(q, len(rank)), q))


def _single(ref: HubRef, files: list[HubFile]) -> HubFile:
    whole = [f for f in files if not _SHARD.search(f.filename)]
    if whole:
        return whole[0]
    shard = _SHARD.search(files[0].filename)
    assert shard is not None
    raise DownloadError(
        ref.name,
        f"{files[0].filename} is one of {int(shard[2])} parts of a split GGUF, "
        "which llm4all cannot pull yet; pick another quantization, or download the parts, "
        "join them with llama.cpp's llama-gguf-split --merge and use `llm4all models add`",
    )
