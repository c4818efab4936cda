"""Small real things for the model tests: a tiny GGUF file, a catalog entry, a progress recorder."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from llm4all.models.catalog import CatalogEntry, Source

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"


def write_tiny_gguf(
    path: Path,
    *,
    arch: str = "llama",
    chat_template: str | None = CHAT_TEMPLATE,
    context_length: int = 256,
    rows: int = 64,
) -> Path:
    """A real, valid GGUF file (two F32 tensors) written with the gguf package."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny test model")
    writer.add_context_length(context_length)
    writer.add_embedding_length(8)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b"])
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.arange(rows * 8, dtype=np.float32).reshape(rows, 8))
    writer.add_tensor("output.weight", np.ones((rows, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def sha256_of(data: bytes | Path) -> str:
    raw = data.read_bytes() if isinstance(data, Path) else data
    return hashlib.sha256(raw).hexdigest()


def make_entry(
    name: str,
    filename: str,
    data: bytes,
    sources: tuple[Source, ...],
    *,
    sha256: str | bool | None = True,
    kind: str = "chat",
    default: bool = False,
) -> CatalogEntry:
    """A catalog entry for ``data``; ``sha256=True`` pins the real checksum."""
    return CatalogEntry(
        name=name,
        filename=filename,
        size=len(data),
        sha256=sha256_of(data) if sha256 is True else (sha256 or None),
        sources=sources,
        architecture="llama",
        parameters="1K",
        quantization="F32",
        context_length=256,
        chat_template=None,
        system_prompt=None,
        description=f"test model {name}",
        license="MIT",
        kind=kind,  # type: ignore[arg-type]
        default=default,
        url="",
    )


@dataclass
class RecordingProgress:
    """A Progress that remembers what it was told."""

    events: list[tuple[str, object]] = field(default_factory=list)

    def start(self, total: int | None, description: str) -> None:
        self.events.append(("start", (total, description)))

    def advance(self, n: int) -> None:
        self.events.append(("advance", n))

    def done(self) -> None:
        self.events.append(("done", None))

    @property
    def advanced(self) -> int:
        return sum(int(v) for k, v in self.events if k == "advance")  # type: ignore[call-overload]

    @property
    def totals(self) -> list[object]:
        return [v[0] for k, v in self.events if k == "start"]  # type: ignore[index]


def same_inode(a: Path, b: Path) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino
