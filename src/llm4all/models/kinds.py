"""What a model file is for: chat, base (plain text completion) or embedding.

A catalog model's kind is written in the catalog. For any other file it is
read from the GGUF metadata: an embedding architecture (or a pooling type)
makes an embedding model; a file without a chat template, or whose name,
fine-tune or type says "base", is a base model; anything else is a chat
model. Base models complete text as given (``llm4all run``, ``/v1/completions``)
and chat in a plain transcript (:data:`llm4all.chat.template.PLAIN_TEMPLATE`).

Example: ``kind_from_metadata("llama", None, {})`` → ``"base"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from llm4all.models.catalog import Kind

#: Encoder architectures that llama.cpp runs for embeddings only.
EMBEDDING_ARCHITECTURES = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder"}
)
#: Metadata keys whose text may say that a model is a base (pretrained, not tuned) one.
_NAME_KEYS = ("general.type", "general.finetune", "general.name")
_SAYS_BASE = re.compile(r"(?<![a-z0-9])base(?![a-z0-9])", re.IGNORECASE)


def kind_from_metadata(
    architecture: str,
    chat_template: str | None,
    values: Mapping[str, object],
    file_name: str = "",
) -> Kind:
    """The kind of a model that is not in the catalog, from its GGUF metadata.

    ``values`` are the file's metadata key/values (either the GGUF reader's or
    llama.cpp's, which gives every value as a string).
    Example: ``kind_from_metadata("qwen2", "{{...}}", {"general.name": "Qwen2.5 0.5B Base"})``
    → ``"base"``.
    """
    if architecture in EMBEDDING_ARCHITECTURES or f"{architecture}.pooling_type" in values:
        return "embedding"
    if not chat_template:
        return "base"
    names = [str(values.get(key) or "") for key in _NAME_KEYS] + [file_name]
    if any(_SAYS_BASE.search(name) for name in names):
        return "base"
    return "chat"
