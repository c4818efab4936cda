"""Does an exported GGUF compute what the merged transformers model computes?

Teacher forcing: the same token ids go through both models, and at every
position each model's most likely next token (top-1) is compared. A faithful
F16 export scores near 100 % (ties and float16 rounding flip a few positions);
quantizing costs more (Q4_K_M: 88 % on the docs' demonstration).

Example: ``top1_agreement(merged, tok, Path("m-f16.gguf"), heldout_texts(run, tok))``
→ ``(0.999, 959)``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_TEXTS = 8
MAX_TOKENS = 256


def heldout_texts(run: Path, tokenizer: Any, limit: int = MAX_TEXTS) -> list[list[int]]:
    """Token ids of up to ``limit`` held-out conversations of a run (training rows if none)."""
    from llm4all.train.config import TrainConfig
    from llm4all.train.data import encode_all, read_conversations, split_heldout

    info = json.loads((run / "run.json").read_text("utf-8"))
    config = TrainConfig(**info["config"])
    rows, _problems = read_conversations(config.data, config.data_format, config.max_rows)
    train, held = split_heldout(rows, config.heldout_fraction, config.seed)
    examples = encode_all(
        (held or train)[:limit],
        tokenizer,
        format=config.format,
        mask_prompt=False,
        max_length=min(config.max_length, MAX_TOKENS),
    )
    return [e.input_ids for e in examples]


def top1_agreement(
    model: Any, tokenizer: Any, gguf: Path, texts: Sequence[Sequence[int]]
) -> tuple[float, int]:
    """The share of positions where ``gguf`` in llama.cpp and ``model`` pick the same next token."""
    import torch

    from llm4all.engine.llamacpp import LlamaCppEngine
    from llm4all.params import LoadParams

    longest = max(len(t) for t in texts)
    same = total = 0
    engine = LlamaCppEngine(gguf, LoadParams(n_ctx=longest + 16, n_batch=min(longest + 16, 512)))
    try:
        for ids in texts:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([list(ids)])).logits[0]
            theirs = logits[:-1].argmax(dim=-1).tolist()
            ours: list[int] = []
            engine.token_logprobs(list(ids), 1, best=ours)
            same += sum(1 for a, b in zip(theirs, ours, strict=True) if a == b)
            total += len(theirs)
    finally:
        engine.close()
    return (same / total if total else 0.0), total
