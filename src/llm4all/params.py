"""The one definition of every knob: generation and load parameters.

The engine, the Python API, the original-API shim, the CLI flags and (later)
the server's request models all derive from these two frozen dataclasses, so a
knob is declared, documented and range-checked exactly once. Each field's
``metadata`` carries its help text and its valid range; :func:`validate`
checks a value against it and names the field when it is out of range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from llm4all.errors import InvalidParameter

#: Temperatures below this sample greedily (the one definition, for every backend): a
#: temperature of 1e-45 overflowed llama.cpp's float logits to inf, whose softmax is NaN.
MIN_TEMPERATURE = 1e-3


def _knob(default: Any, help: str, lo: float | None = None, hi: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "min": lo, "max": hi})


@dataclass(frozen=True)
class GenerationParams:
    """How to sample one answer. ``temperature=0`` means greedy (deterministic)."""

    max_tokens: int | None = _knob(
        None, "most tokens to generate (default: until end of text or context)", 1, None
    )
    temperature: float = _knob(0.7, "sampling temperature; 0 is greedy", 0.0, 5.0)
    top_k: int = _knob(40, "keep the k most likely tokens; 0 disables", 0, None)
    top_p: float = _knob(
        0.95, "nucleus sampling: keep tokens up to this probability mass", 0.0, 1.0
    )
    min_p: float = _knob(0.05, "drop tokens less likely than min_p x the top token", 0.0, 1.0)
    repeat_penalty: float = _knob(1.1, "penalty for repeating recent tokens; 1 disables", 0.0, 10.0)
    repeat_last_n: int = _knob(
        64, "how many recent tokens the penalties look at; -1 = context", -1, None
    )
    presence_penalty: float = _knob(0.0, "penalty for tokens already present", -2.0, 2.0)
    frequency_penalty: float = _knob(0.0, "penalty proportional to a token's count", -2.0, 2.0)
    seed: int | None = _knob(None, "random seed (default: random)", 0, 2**32 - 1)
    stop: tuple[str, ...] = _knob((), "strings that end the answer (not included in it)")
    grammar: str | None = _knob(None, "a GBNF grammar that constrains the output")
    json_schema: str | None = _knob(None, "a JSON schema (as text) the output must follow")

    def __post_init__(self) -> None:
        # Accept a list or a single string for stop; store a tuple (hashable, frozen).
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        validate(self)
        if self.grammar is not None and self.json_schema is not None:
            raise InvalidParameter("grammar", "…", "either grammar or json_schema, not both")

    def replace(self, **changes: Any) -> GenerationParams:
        """A copy with some fields changed. Example: ``p.replace(temperature=0)``."""
        return dataclasses.replace(self, **changes)

    @property
    def greedy(self) -> bool:
        """Whether the answer is sampled greedily: ``temperature`` under :data:`MIN_TEMPERATURE`."""
        return self.temperature < MIN_TEMPERATURE


@dataclass(frozen=True)
class LoadParams:
    """How to load a model into memory."""

    n_ctx: int = _knob(4096, "context window in tokens; 0 = the model's trained length", 0, None)
    n_threads: int | None = _knob(None, "CPU threads (default: physical cores)", 1, 1024)
    n_batch: int = _knob(512, "tokens evaluated per decode call during prompt processing", 1, None)
    n_gpu_layers: int = _knob(
        0, "layers offloaded to the GPU; -1 = all (needs a GPU build)", -1, None
    )
    n_seq_max: int = _knob(1, "sequences decoded together in one batch", 1, 256)
    seed: int | None = _knob(None, "default sampling seed", 0, 2**32 - 1)
    embedding: bool = _knob(False, "load for embeddings instead of generation")
    check_memory: bool = _knob(True, "refuse to load a model larger than the free RAM")
    lora: str | None = _knob(
        None, "a LoRA adapter (GGUF, from `llm4all train export`) applied at load"
    )
    draft: str | None = _knob(
        None, "a smaller model with the same vocabulary drafting tokens (speculative decoding)"
    )
    lookup: bool = _knob(False, "draft tokens from n-grams of the prompt (speculative decoding)")

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> LoadParams:
        return dataclasses.replace(self, **changes)


def validate(params: GenerationParams | LoadParams) -> None:
    """Raise :class:`InvalidParameter` naming the first out-of-range field."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if value is None or isinstance(value, (bool, str, tuple)):
            continue
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            raise InvalidParameter(f.name, value, "a number")
        if lo is not None and value < lo:
            raise InvalidParameter(f.name, value, _range_text(lo, hi))
        if hi is not None and value > hi:
            raise InvalidParameter(f.name, value, _range_text(lo, hi))


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"a value between {lo:g} and {hi:g}"
    if lo is not None:
        return f"a value >= {lo:g}"
    return f"a value <= {hi:g}"


def help_of(cls: type, name: str) -> str:
    """The help text of one field, for CLI options and API docs."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)
