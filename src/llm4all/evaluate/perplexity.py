"""Ground-truth perplexity of models on reference answers (``llm4all eval perplexity``).

Each reference answer is scored after its prompt, rendered as the model
would see it in a chat: the model's own chat template (no system prompt
beyond the template's default), or for a base model llm4all's plain
transcript (``### Human:`` / ``### Assistant:``). The prompt and the answer
are tokenized apart, so the scored tokens are exactly the answer's.

A model is a GGUF run by llama.cpp (a catalog name, a store name or a path)
or, with ``backend="transformers"`` or a Hugging Face folder, the same model
in transformers (:mod:`llm4all.hf`). The per-example scores go to JSON Lines,
the summary to a table, the distribution to an overlaid histogram
(:func:`histogram`), as GPT4All's report drew it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm4all.chat.template import PLAIN_TEMPLATE, Message, render
from llm4all.errors import InvalidParameter
from llm4all.evaluate.scoring import (
    EngineScorer,
    Score,
    Scorer,
    gpt4all_variant,
    score_pair,
    summarise,
)
from llm4all.evaluate.sets import Example


@dataclass
class Subject:
    """A model opened for scoring: how it tokenizes prompts and texts, and its scorer."""

    name: str
    backend: str
    scorer: Scorer
    #: Rendered prompt tokens (BOS and generation prompt included) for messages.
    prompt_tokens: Callable[[Sequence[Message]], list[int]]
    #: Tokens of a text with nothing added (``bos=True``: with BOS, as a whole document).
    text_tokens: Callable[[str, bool], list[int]]

    def score(self, example: Example, variant: bool = False) -> Score:
        """The example's reference scored after its prompt (or GPT4All's way)."""
        if variant:
            prompt = self.text_tokens(example.gpt4all_prompt, True)
            full = self.text_tokens(f"{example.gpt4all_prompt} {example.reference}", True)
            return gpt4all_variant(self.scorer, prompt, full)
        context = self.prompt_tokens(list(example.messages))
        return score_pair(self.scorer, context, self.text_tokens(example.reference, False))


@contextmanager
def open_subject(ref: str, backend: str = "auto", n_ctx: int = 4096) -> Iterator[Subject]:
    """Open ``ref`` for scoring and close it afterwards.

    ``auto`` is transformers for a Hugging Face folder and llama.cpp otherwise.
    """
    if backend == "auto":
        backend = "transformers" if Path(ref).expanduser().is_dir() else "llamacpp"
    if backend == "llamacpp":
        with _llamacpp_subject(ref, n_ctx) as subject:
            yield subject
    elif backend == "transformers":
        yield _transformers_subject(ref, n_ctx)
    else:
        raise InvalidParameter("backend", backend, "auto, llamacpp or transformers")


@contextmanager
def _llamacpp_subject(ref: str, n_ctx: int) -> Iterator[Subject]:
    from llm4all.api import Model

    model = Model(ref, n_ctx=n_ctx)
    try:
        engine = model.engine
        scorer = EngineScorer(engine)  # a backend without token scoring fails here, in one line
        yield Subject(
            name=model.name,
            backend="llama.cpp",
            scorer=scorer,
            prompt_tokens=lambda messages: model.chat_tokens(messages),
            text_tokens=lambda text, bos: engine.tokenize(
                text, add_special=bos, parse_special=False
            ),
        )
    finally:
        model.close()


def _transformers_subject(ref: str, n_ctx: int) -> Subject:
    from llm4all import hf
    from llm4all.evaluate.scoring import HFScorer

    resolved = hf.resolve(ref)
    model, tokenizer = hf.load_model(resolved)
    template = tokenizer.chat_template if _is_chat(resolved) else None
    bos = tokenizer.bos_token or ""

    def prompt_tokens(messages: Sequence[Message]) -> list[int]:
        text = render(
            template or PLAIN_TEMPLATE,
            messages,
            bos_token=bos,
            eos_token=tokenizer.eos_token or "",
            add_generation_prompt=True,
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        add_bos = bool(bos) and _adds_bos(tokenizer) and not text.startswith(bos)
        return [tokenizer.bos_token_id, *ids] if add_bos else list(ids)

    def text_tokens(text: str, with_bos: bool) -> list[int]:
        ids = list(
            tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        )
        return [tokenizer.bos_token_id, *ids] if with_bos and _adds_bos(tokenizer) else ids

    return Subject(
        name=resolved.name,
        backend="transformers",
        scorer=HFScorer(model, n_ctx),
        prompt_tokens=prompt_tokens,
        text_tokens=text_tokens,
    )


def _is_chat(resolved: Any) -> bool:
    """Whether the model chats in its template (a base model gets the plain transcript)."""
    if resolved.gguf is None:
        return True
    from llm4all.models.gguf import read_metadata
    from llm4all.models.kinds import kind_from_metadata
    from llm4all.models.store import ModelStore

    entry = ModelStore().resolve(os.fspath(resolved.gguf), allow_download=False).entry
    if entry is not None:
        return entry.kind != "base"
    meta = read_metadata(resolved.gguf)
    kind = kind_from_metadata(meta.architecture, meta.chat_template, meta.values, resolved.name)
    return kind != "base"


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS before a text (as llama.cpp's ``add_bos`` says)."""
    if tokenizer.bos_token_id is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


# -- a run over many examples --------------------------------------------------------------


def evaluate(
    subject: Subject,
    examples: Sequence[Example],
    out: Path,
    *,
    variant: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Score every example, writing one JSON line per example to ``out`` as it goes."""
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as sink:
        for done, example in enumerate(examples, 1):
            score = subject.score(example, variant)
            row = {
                "id": example.id,
                "line": example.line,
                "model": subject.name,
                "backend": subject.backend,
                "method": "gpt4all" if variant else "ground-truth",
                "perplexity": _finite(score.perplexity),
                "loss": _finite(score.loss),
                "tokens": score.n_tokens,
            }
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            rows.append(row)
            if progress is not None:
                progress(done)
    return rows


def _finite(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def summary_row(name: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary table's row for one model's per-example rows."""
    scores = [Score((r["loss"] or math.nan) * r["tokens"], r["tokens"]) for r in rows]
    s = summarise(scores)
    return {
        "model": name,
        "examples": s.n,
        "tokens": s.tokens,
        "mean": round(s.mean_ppl, 3),
        "median": round(s.median_ppl, 3),
        "corpus": round(s.corpus_ppl, 3),
        "loss": round(s.mean_loss, 4),
    }


def markdown_table(summaries: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a Markdown table."""
    head = "| model | examples | scored tokens | mean ppl | median ppl | corpus ppl |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        lines.append(
            f"| {s['model']} | {s['examples']} | {s['tokens']} | {s['mean']:.2f} | "
            f"{s['median']:.2f} | {s['corpus']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def histogram(per_model: Mapping[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Overlaid per-example perplexity histograms of several models (PNG).

    As GPT4All's figure: one translucent histogram per model on shared bins,
    here outlined too, on logarithmic bins (perplexities span 1 to millions).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = [v for vs in per_model.values() for v in vs if math.isfinite(v) and v > 0]
    if not values:
        raise InvalidParameter("perplexities", "none", "at least one finite value")
    low, high = max(min(values), 1.0), max(max(values), 1.0 + 1e-6)
    bins = [float(b) for b in np.geomspace(low, high * 1.0001, 40)]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for index, (name, vs) in enumerate(per_model.items()):
        finite = [v for v in vs if math.isfinite(v) and v > 0]
        colour = f"C{index}"  # a light fill and a clear outline: four models stay readable
        ax.hist(finite, bins=bins, histtype="stepfilled", alpha=0.2, color=colour)
        label = f"{name} (median {np.median(finite):.1f})"
        ax.hist(finite, bins=bins, histtype="step", linewidth=1.6, color=colour, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("perplexity of the reference answer (log scale)")
    ax.set_ylabel("examples")
    ax.set_title(title or "Ground-truth perplexity")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
