"""Conversations to token ids and loss labels, the held-out split, batches, held-out loss.

Two ways to turn a conversation into text (``TrainConfig.format``):

- ``chat``: the base model's own chat template (what ``llm4all chat`` renders
  at inference, so a tuned model is asked the way it was taught); every
  assistant turn is trained on, including the template's end-of-turn token.
- ``plain``: GPT4All's run: the prompt (every message before the last
  answer, one per line), a newline, the answer, and EOS.

With ``mask_prompt`` only the answer tokens carry loss (label ``-100``
elsewhere), as GPT4All did. The split is by a hash of each row's id and the
seed, so a row stays on its side when the data is reordered or grows.

:func:`heldout_loss` is the one held-out-loss computation: the trainer reports
it and ``llm4all eval`` calls it for a run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.data.schema import Conversation
from llm4all.errors import Llm4allError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE = -100
"""The label of a token that carries no loss (PyTorch's cross-entropy ``ignore_index``)."""


class NoUsableRows(Llm4allError, ValueError):
    """The training data has no row that can be trained on."""


@dataclass(frozen=True)
class Example:
    """One encoded conversation."""

    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def read_conversations(
    paths: Sequence[str], fmt: str = "", max_rows: int = 0
) -> tuple[list[Conversation], int]:
    """Every usable conversation (a prompt and an answer) in ``paths``, and how many rows were bad.

    Bad rows (reported by the readers with file and line) are skipped and counted.
    """
    from llm4all.data.formats import RowProblem, read_many

    rows: list[Conversation] = []
    problems = 0
    for row in read_many([Path(p) for p in paths], fmt or None):
        if isinstance(row, RowProblem):
            problems += 1
            continue
        if row.response.strip() and any(m["role"] != "assistant" for m in row.messages):
            rows.append(row)
        if max_rows and len(rows) >= max_rows:
            break
    return rows, problems


def split_heldout(
    rows: Sequence[Conversation], fraction: float, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """``(train, heldout)``: a row is held out when the hash of its id and the seed says so.

    Example: ``split_heldout(rows, 0.05, 42)`` holds out about 5 % of ``rows``.
    """
    train: list[Conversation] = []
    heldout: list[Conversation] = []
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{row.id}".encode()).digest()
        (heldout if int.from_bytes(digest[:8], "big") < fraction * 2**64 else train).append(row)
    if fraction > 0 and not heldout and len(train) > 1:
        heldout.append(train.pop())  # a tiny set still gets a held-out loss
    return train, heldout


def encode(
    row: Conversation,
    tokenizer: PreTrainedTokenizerBase,
    *,
    format: str = "chat",
    mask_prompt: bool = True,
    max_length: int = 512,
) -> Example | None:
    """Token ids and labels of one conversation; None when no answer token fits."""
    if format == "plain":
        ids, labels = _encode_plain(row, tokenizer, mask_prompt)
    else:
        ids, labels = _encode_chat(row, tokenizer, mask_prompt)
    ids, labels = ids[:max_length], labels[:max_length]
    if not any(label != IGNORE for label in labels[1:]):
        return None
    return Example(ids, labels)


def _encode_plain(
    row: Conversation, tokenizer: PreTrainedTokenizerBase, mask_prompt: bool
) -> tuple[list[int], list[int]]:
    last = max(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
    prompt = "\n".join(m["content"] for m in row.messages[:last]) + "\n"
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    answer_ids = list(
        tokenizer(row.messages[last]["content"], add_special_tokens=False)["input_ids"]
    )
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    prompt_labels = [IGNORE] * len(prompt_ids) if mask_prompt else list(prompt_ids)
    return prompt_ids + answer_ids, prompt_labels + answer_ids


def _encode_chat(
    row: Conversation, tokenizer: PreTrainedTokenizerBase, mask_prompt: bool
) -> tuple[list[int], list[int]]:
    messages = [{"role": m["role"], "content": m["content"]} for m in row.messages]
    text = _render(tokenizer, messages, generation_prompt=False)
    spans = []  # character ranges of the assistant turns in ``text``
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], generation_prompt=True))
        end = len(_render(tokenizer, messages[: i + 1], generation_prompt=False))
        spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    if not mask_prompt:
        return ids, list(ids)
    labels = [
        token if any(s <= begin < e for s, e in spans) else IGNORE
        for token, (begin, _end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return ids, labels


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation_prompt: bool
) -> str:
    if not messages:
        return ""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return str(text)


def encode_all(
    rows: Iterable[Conversation], tokenizer: PreTrainedTokenizerBase, **options: Any
) -> list[Example]:
    """Every row that yields an :class:`Example` (see :func:`encode`)."""
    examples = (encode(row, tokenizer, **options) for row in rows)
    return [e for e in examples if e is not None]


def check_chat_template(tokenizer: PreTrainedTokenizerBase, base: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise NoUsableRows(
            f'{base} has no chat template; set format = "plain" in the config to train it'
        )


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest example (right padding; pads carry no loss)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pad_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def token_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy of a batch's labelled tokens and how many there are.

    Summed per token (not averaged per batch), so batches of unequal length
    weigh by their tokens, as a perplexity over a whole set must.
    """
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = batch["labels"][:, 1:].contiguous()
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        shifted.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((shifted != IGNORE).sum())


def heldout_loss(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Conversation],
    *,
    format: str = "chat",
    mask_prompt: bool = True,
    max_length: int = 512,
    batch_size: int = 4,
) -> float:
    """Mean cross-entropy (nats per answer token) of ``rows``; ``exp()`` of it is the perplexity.

    The same encoding as training (:func:`encode`). Example:
    ``math.exp(heldout_loss(model, tok, rows))`` is the held-out perplexity.
    """
    import torch

    examples = encode_all(
        rows, tokenizer, format=format, mask_prompt=mask_prompt, max_length=max_length
    )
    if not examples:
        return math.nan
    was_training = model.training
    model.eval()  # type: ignore[no-untyped-call]
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_id_of(tokenizer))
            loss, n = token_loss_sum(model, {k: v.to(device) for k, v in batch.items()})
            total += float(loss)
            count += n
    if was_training:
        model.train()
    return total / count if count else math.nan
