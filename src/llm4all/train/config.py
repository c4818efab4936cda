"""The one description of a fine-tuning run: :class:`TrainConfig`, read from TOML or YAML.

Every knob is a field with a default and a help text (its ``metadata``); the
commented example ``llm4all train --print-config`` writes, the type checks of
:func:`load_config` and the docs all derive from it, so nothing is declared
twice. A config file is flat (``key = value``); an unknown key or a value of
the wrong type is a :class:`ConfigError` that names the key and the file's line.

Defaults are for a small run on a CPU (SmolLM2-135M, minutes, not days);
GPT4All's own LoRA run (r=8, alpha=32, dropout=0.1, AdamW, cosine, lr 5e-5,
warm-up 100 steps, max length 1024) is the template, with three changes for
short runs: lr 2e-4 and 10 warm-up steps (a run of a few hundred steps barely
moves an adapter at 5e-5 after 100 warm-up steps) and max length 512 (the
attention cost of 1024 tokens on two cores, for answers that are mostly shorter).

Example: ``load_config(Path("run.toml")).lora_r`` → ``8``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llm4all.errors import Llm4allError

Format = Literal["chat", "plain"]
Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Precision = Literal["no", "bf16", "fp16"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """A LoRA fine-tuning run (see the module docstring for why the defaults are what they are)."""

    base: str = field(
        default="smollm2-135m-instruct",
        metadata=_help(
            "base model: a catalog name, a model in the store, a GGUF path or a Hugging Face folder"
        ),
    )
    data: list[str] = field(
        default_factory=list,
        metadata=_help("training data: files or folders in any format `llm4all data` reads"),
    )
    data_format: str = field(
        default="", metadata=_help("the data's format when detection is not wanted ('' = detect)")
    )
    format: Format = field(
        default="chat",
        metadata=_help(
            "chat: the base model's chat template; plain: prompt + newline + response + EOS"
        ),
    )
    mask_prompt: bool = field(
        default=True, metadata=_help("train on the answers only (prompt tokens carry no loss)")
    )
    max_length: int = field(
        default=512, metadata=_help("longest example in tokens; longer ones are cut at the end")
    )
    max_rows: int = field(
        default=0, metadata=_help("use at most this many rows of the data (0 = all)")
    )
    heldout_fraction: float = field(
        default=0.05, metadata=_help("share of the rows held out for the held-out loss")
    )
    lora_r: int = field(default=8, metadata=_help("LoRA rank"))
    lora_alpha: int = field(
        default=32, metadata=_help("LoRA alpha (the update is scaled by alpha / r)")
    )
    lora_dropout: float = field(default=0.1, metadata=_help("dropout on the LoRA path"))
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata=_help("module names that get an adapter ('all-linear' for every linear layer)"),
    )
    optimizer: Optimizer = field(default="adamw", metadata=_help("adamw or sgd"))
    learning_rate: float = field(default=2e-4, metadata=_help("peak learning rate"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    lr_schedule: Schedule = field(
        default="cosine", metadata=_help("learning-rate schedule after the warm-up")
    )
    warmup_steps: int = field(default=10, metadata=_help("optimizer steps of linear warm-up"))
    epochs: float = field(
        default=1.0, metadata=_help("passes over the training rows (ignored when max_steps > 0)")
    )
    max_steps: int = field(
        default=0, metadata=_help("stop after this many optimizer steps (0 = use epochs)")
    )
    batch_size: int = field(default=4, metadata=_help("examples per forward pass (per device)"))
    grad_accum: int = field(default=4, metadata=_help("forward passes per optimizer step"))
    precision: Precision = field(
        default="no", metadata=_help("mixed precision: no (float32, CPU), bf16 or fp16 (GPU)")
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=_help("recompute activations to save memory")
    )
    checkpoint_every: int = field(
        default=50, metadata=_help("save a checkpoint every this many optimizer steps")
    )
    keep_checkpoints: int = field(default=2, metadata=_help("how many recent checkpoints to keep"))
    eval_every: int = field(
        default=0, metadata=_help("held-out loss every this many steps (0 = at the end only)")
    )
    seed: int = field(
        default=42,
        metadata=_help("seed for the split, the shuffling and the adapter's initialisation"),
    )
    output: str = field(
        default="runs/lora", metadata=_help("folder of the run (checkpoints, loss curve, adapter)")
    )
    name: str = field(
        default="", metadata=_help("the exported model's name ('' = the output folder's name)")
    )

    def __post_init__(self) -> None:
        checks = {
            "max_length": self.max_length >= 8,
            "heldout_fraction": 0.0 <= self.heldout_fraction < 1.0,
            "lora_r": self.lora_r >= 1,
            "lora_dropout": 0.0 <= self.lora_dropout < 1.0,
            "learning_rate": self.learning_rate > 0,
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "checkpoint_every": self.checkpoint_every >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
        }
        for key in ("max_rows", "max_steps", "warmup_steps", "eval_every"):
            checks[key] = getattr(self, key) >= 0
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{key} = {getattr(self, key)!r} is out of range", key=key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(Llm4allError, ValueError):
    """A config file or value is wrong; ``key`` and ``line`` say where."""

    def __init__(self, message: str, key: str | None = None, line: int | None = None) -> None:
        self.key = key
        self.line = line
        super().__init__(message)


def load_config(path: Path, **overrides: Any) -> TrainConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config; ``overrides`` win.

    Relative data paths and the output folder are taken relative to the file's folder.
    """
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    values = _parse(path, text)
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        where = f"{path}:{_line_of(text, key)}"
        if key not in hints:
            raise ConfigError(
                f"{where}: unknown key {key!r}{_did_you_mean(key)}", key, _line_of(text, key)
            )
        problem = _type_problem(value, hints[key])
        if problem:
            raise ConfigError(f"{where}: {key} must be {problem}", key, _line_of(text, key))
    values = _relative_to(values, path.resolve().parent) | overrides
    try:
        return TrainConfig(**values)
    except ConfigError as exc:
        line = _line_of(text, exc.key) if exc.key in values else None
        raise ConfigError(f"{path}:{line or '?'}: {exc}", exc.key, line) from None


def _parse(path: Path, text: str) -> dict[str, Any]:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped]

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: not valid YAML ({_first_line(exc)})") from None
    else:
        try:
            loaded = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config is a table of key = value lines")
    return loaded


def _line_of(text: str, key: str | None) -> int | None:
    """The first line that sets ``key`` (TOML ``key =`` or YAML ``key:``), 1-based."""
    if key is None:
        return None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=:]")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the type ``hint`` (None when it does)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        return None if value in choices else "one of " + ", ".join(map(repr, choices))
    if origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if isinstance(value, str):  # one file or module is a list of one
            return None
        return None if ok else "a list of strings"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    return None


def _relative_to(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = dict(values)
    for key in ("data", "lora_targets"):
        if isinstance(out.get(key), str):
            out[key] = [out[key]]
    if "data" in out:
        out["data"] = [str(folder / Path(p).expanduser()) for p in out["data"]]
    if "output" in out:
        out["output"] = str(folder / Path(out["output"]).expanduser())
    if isinstance(out.get("epochs"), int):
        out["epochs"] = float(out["epochs"])
    if isinstance(out.get("learning_rate"), int):
        out["learning_rate"] = float(out["learning_rate"])
    return out


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, [f.name for f in dataclasses.fields(TrainConfig)], 1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def config_template(config: TrainConfig | None = None) -> str:
    """A commented TOML config with every field (its help, then its value).

    Example: ``tomllib.loads(config_template())`` equals ``TrainConfig().to_dict()``.
    """
    config = config or TrainConfig()
    lines = [
        "# llm4all train CONFIG: a LoRA fine-tuning run. Every key is optional.",
        "# Paths are relative to this file's folder.",
        "",
    ]
    for f in dataclasses.fields(TrainConfig):
        lines.append(f"# {f.metadata['help']}")
        lines.append(f"{f.name} = {_toml_value(getattr(config, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)
