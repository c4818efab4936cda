"""Pure translations between the original API's conventions and llm4all's.

Prompt formats (2.8-style ``{0}``/``{1}`` prompt templates, the 1.x
``chat_completion`` instruction prompt), sampling keywords (``temp``,
``n_predict``, the nomic-era ``decoder_config``) and catalog entries in the
shape of ``models3.json``. Nothing here loads a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llm4all.chat.template import Message
from llm4all.models import CatalogEntry, UrlSource
from llm4all.params import GenerationParams

log = logging.getLogger(__name__)

ResponseCallbackType = Callable[[int, str], bool]
ConfigType = dict[str, Any]
MessageType = dict[str, str]

#: The nomic-era model names; they now mean llm4all's default model.
NOMIC_MODELS = frozenset({"gpt4all-lora-quantized", "gpt4all-lora-unfiltered-quantized"})
#: 1.x generate() keywords with no meaning here (the engine manages the context and batch).
LEGACY_KWARGS = frozenset(
    {"logits_size", "tokens_size", "n_past", "n_ctx", "context_erase", "n_batch"}
)
#: nomic-era decoder_config keys → GenerationParams fields.
_DECODER_KEYS = {
    "temp": "temperature", "top_k": "top_k", "top_p": "top_p", "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n", "n_predict": "max_tokens", "seed": "seed",
}  # fmt: skip
#: The instruction header of the 1.x ``chat_completion`` prompt, byte for byte (the
#: indentation came from a triple-quoted string in the 1.x source).
V1_PROMPT_HEADER = (
    "### Instruction: \n"
    "            The prompt below is a question to answer, a task to complete, or a conversation \n"
    "            to respond to; decide which and write an appropriate response.\n"
    "            \n### Prompt: "
)
#: Where a 1.x answer ends: the next ``### `` header. The 1.x models were trained to
#: end their turn with an end token first; today's chat models write the next header.
V1_STOPS = ("\n### ",)
#: 1.x ``prompt_model``'s sampling defaults, which ``chat_completion`` used.
V1_SAMPLING: dict[str, Any] = {
    "max_tokens": 128, "temp": 0.1, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
    "repeat_penalty": 1.2, "repeat_last_n": 10, "n_predict": None,
}  # fmt: skip
_USER, _ANSWER = "\x00user\x00", "\x00answer\x00"


def empty_response_callback(token_id: int, response: str) -> bool:
    """The default callback: keep generating."""
    return True


def append_extension_if_missing(model_name: str) -> str:
    """Example: ``append_extension_if_missing("orca-mini")`` → ``"orca-mini.gguf"``."""
    return model_name if model_name.endswith((".bin", ".gguf")) else model_name + ".gguf"


def models3_entry(entry: CatalogEntry) -> ConfigType:
    """A catalog entry in the shape of one element of GPT4All's ``models3.json``.

    ``md5sum`` and ``promptTemplate`` are None: the catalog pins sha256
    (``sha256sum``) and chat sessions use the model's own chat template.
    """
    config: ConfigType = {
        "name": entry.name,
        "filename": entry.filename,
        "filesize": str(entry.size),
        "ramrequired": f"{entry.ram_required_gb:g}",
        "parameters": entry.parameters,
        "quant": entry.quantization.lower(),
        "type": entry.architecture,
        "description": entry.description,
        "url": next((s.url for s in entry.sources if isinstance(s, UrlSource)), None),
        "md5sum": None,
        "sha256sum": entry.sha256,
        "systemPrompt": entry.system_prompt or "",
        "promptTemplate": None,
        "contextLength": entry.context_length,
        "license": entry.license,
    }
    if entry.chat_template:
        config["chatTemplate"] = entry.chat_template
    if entry.kind == "embedding":
        config["embeddingModel"] = True
    return config


def split_prompt_template(template: str) -> tuple[str, str, str]:
    """Cut a 2.8-style prompt template into (before the user text, before the answer, after it).

    ``{0}`` is the user's message and ``{1}`` the answer (``models3.json``'s
    ``%1``/``%2`` are accepted too). Example: ``split_prompt_template("Q: {0}\\nA: {1}\\n")``
    → ``("Q: ", "\\nA: ", "\\n")``.
    """
    if "{0}" not in template and "%1" in template:
        escaped = template.replace("{", "{{").replace("}", "}}")
        template = escaped.replace("%1", "{0}", 1).replace("%2", "{1}", 1)
    try:
        text = template.format(_USER, _ANSWER)
    except (IndexError, KeyError, ValueError) as exc:
        raise ValueError(
            f"bad prompt template {template!r} ({exc!r}): use {{0}} for the user's message, "
            "{1} for the answer and {{ }} for literal braces"
        ) from None
    before, found, rest = text.partition(_USER)
    if not found:
        raise ValueError(f"the prompt template {template!r} has no {{0}} for the user's message")
    between, _, after = rest.partition(_ANSWER)
    return before, between, after


def template_segments(template: str, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """A chat in a 2.8-style prompt template, as (text, parse_special) pieces in order.

    The system message goes in as it is, each user message inside the template,
    each answer followed by the template's tail; only template and system text
    may contain special tokens. Example: ``template_segments("Q: {0}\\nA: ",
    [Message("user", "Hi")])`` → ``[("Q: ", True), ("Hi", False), ("\\nA: ", True)]``.
    """
    before, between, after = split_prompt_template(template)
    pieces: list[tuple[str, bool]] = []
    for m in messages:
        if m.role == "system":
            pieces.append((m.content, True))
        elif m.role == "user":
            pieces += [(before, True), (m.content, False), (between, True)]
        elif m.role == "assistant":
            pieces += [(m.content, False), (after, True)]
    return [p for p in pieces if p[0]]


def v1_prompt(
    messages: Sequence[Mapping[str, str]], header: bool = True, footer: bool = True
) -> str:
    """The prompt the 1.x ``chat_completion`` built: system text, instruction, the turns.

    Example: ``v1_prompt([{"role": "user", "content": "Hi"}], header=False)`` → ``"\\nHi\\n### Response:"``.
    """
    text = "".join(m["content"] + "\n" for m in messages if m["role"] == "system")
    text += V1_PROMPT_HEADER if header else ""
    for m in messages:
        if m["role"] == "user":
            text += "\n" + m["content"]
        elif m["role"] == "assistant":
            text += "\n### Response: " + m["content"]
    return text + ("\n### Response:" if footer else "")


def sampling_params(
    *, max_tokens: int, temp: float, top_k: int, top_p: float, min_p: float,
    repeat_penalty: float, repeat_last_n: int, n_predict: int | None,
) -> GenerationParams | None:  # fmt: skip
    """The original's sampling keywords as GenerationParams; None when nothing is to be generated."""
    limit = n_predict if n_predict is not None else max_tokens
    if limit <= 0:
        return None
    return GenerationParams(
        max_tokens=limit, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
        repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
    )  # fmt: skip


def decoder_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A nomic-era ``decoder_config`` as GenerationParams keywords (unknown keys are ignored)."""
    unknown = sorted(set(config) - set(_DECODER_KEYS))
    if unknown:
        log.warning("decoder_config keys ignored: %s", ", ".join(unknown))
    return {_DECODER_KEYS[k]: v for k, v in config.items() if k in _DECODER_KEYS}
