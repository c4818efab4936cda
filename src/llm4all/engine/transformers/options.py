"""Load options of the transformers backend, and generation configs: parsed, checked, merged.

A generation config is any set of ``transformers.GenerationConfig`` fields
(``num_beams``, ``min_new_tokens``, ``max_length``, ``repetition_penalty``,
``no_repeat_ngram_size``, ``typical_p``, …). :func:`parse_gen_config` reads
the CLI's ``KEY=VALUE`` items or a JSON/TOML file; :func:`check_gen_config`
refuses an unknown field or an invalid value in one line naming it (using
GenerationConfig's own strict validation); :func:`merge` lays llm4all's knobs
(temperature, top_p, top_k, min_p, repeat_penalty, max_tokens) over the
model's own defaults and the user's fields over both.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.errors import InvalidParameter
from llm4all.params import GenerationParams, LoadParams

if TYPE_CHECKING:
    from transformers import GenerationConfig

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TransformersOptions:
    """How the transformers backend loads a model.

    ``device``: ``auto`` (CUDA, else Apple MPS, else CPU), ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``. ``dtype``: ``auto`` (bfloat16 on a CUDA GPU that has
    it, else float16 there; float16 on MPS; float32 on the CPU) or a torch
    dtype name. On CUDA the model is placed with ``device_map="auto"`` (spread
    over every visible GPU when it does not fit on one). ``adapter``: a PEFT
    LoRA adapter folder applied on top. ``generation``: GenerationConfig
    fields every answer starts from (see :func:`check_gen_config`).
    """

    n_ctx: int = 4096  # 0: the model's trained length
    device: str = "auto"
    dtype: str = "auto"
    adapter: str | None = None
    generation: Mapping[str, Any] = field(default_factory=dict)
    check_memory: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n_ctx < 0:
            raise InvalidParameter("n_ctx", self.n_ctx, "a value >= 0")
        base = self.device.split(":", 1)[0]
        if base not in DEVICES or (":" in self.device and not self.device[5:].isdigit()):
            raise InvalidParameter("device", self.device, "auto, cpu, cuda, cuda:N or mps")
        if self.dtype not in DTYPES:
            raise InvalidParameter("dtype", self.dtype, ", ".join(DTYPES))
        object.__setattr__(self, "generation", dict(self.generation))

    def replace(self, **changes: Any) -> TransformersOptions:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_cli(
        cls,
        load: Mapping[str, Any],
        *,
        gen_config: Iterable[str] = (),
        device: str | None = None,
        dtype: str | None = None,
    ) -> TransformersOptions:
        """The options of ``llm4all run/chat --gen-config … --device … --dtype …`` and the
        load flags (``--ctx``, ``--lora`` as the adapter folder, ``--no-check-memory``);
        the generation config is checked here, before the model loads."""
        base = cls.of(LoadParams(**{k: v for k, v in load.items() if k != "n_gpu_layers"}))
        generation = parse_gen_config(gen_config)
        check_gen_config(generation)
        return base.replace(
            device=device or base.device, dtype=dtype or base.dtype, generation=generation
        )

    @classmethod
    def of(cls, options: Any) -> TransformersOptions:
        """These options from ``None``, themselves, or llama.cpp's ``LoadParams``
        (``n_ctx``, ``seed``, ``check_memory`` and ``lora`` as the adapter folder)."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if isinstance(options, LoadParams):
            return cls(
                n_ctx=options.n_ctx,
                adapter=options.lora,
                check_memory=options.check_memory,
                seed=options.seed,
            )
        raise TypeError(f"not transformers options: {options!r}")


def parse_gen_config(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items and JSON/TOML files into one dict (later items win).

    A value is read as JSON when it parses (``2``, ``2.0``, ``true``, ``[1, 2]``),
    else kept as text. Example: ``parse_gen_config(["num_beams=2", "early_stopping=true"])``
    → ``{"num_beams": 2, "early_stopping": True}``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" in item:
            key, _, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not key:
                raise InvalidParameter("gen-config", item, "KEY=VALUE or a .json/.toml file")
            try:
                out[key] = json.loads(text)
            except ValueError:
                out[key] = text
            continue
        out.update(_read_file(Path(item).expanduser()))
    return out


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvalidParameter("gen-config", str(path), "KEY=VALUE or a .json/.toml file")
    try:
        text = path.read_text("utf-8")
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise InvalidParameter("gen-config", str(path), f"a JSON or TOML table ({first})") from None
    if not isinstance(data, dict):
        raise InvalidParameter("gen-config", str(path), "a JSON object or TOML table")
    return data


def known_fields() -> frozenset[str]:
    """Every field a ``transformers.GenerationConfig`` has."""
    from transformers import GenerationConfig

    fields = GenerationConfig().to_dict()  # type: ignore[no-untyped-call]
    return frozenset(fields) - {"transformers_version"}


#: Fields llm4all owns: its stop handling and streaming depend on them.
_OWN = {
    "return_dict_in_generate": "llm4all reads the tokens itself",
    "output_scores": "use logprobs",
    "output_logits": "use logprobs",
    "num_return_sequences": "one answer per request",
}


def check_gen_config(fields: Mapping[str, Any]) -> GenerationConfig:
    """A strict ``GenerationConfig`` of ``fields``, or a one-line error naming the bad one."""
    from transformers import GenerationConfig

    known = known_fields()
    for key, value in fields.items():
        if key in _OWN and value not in (None, False, 1):
            raise InvalidParameter(key, value, f"not set ({_OWN[key]})")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InvalidParameter(key, value, f"a transformers GenerationConfig field{hint}")
    for key, value in fields.items():
        _check_range(key, value)
    try:
        config = GenerationConfig(**dict(fields))  # type: ignore[no-untyped-call]
        config.validate(strict=True)
    except (ValueError, TypeError) as exc:
        raise _invalid(fields, exc) from None
    return config


#: Ranges GenerationConfig itself leaves to generate() (where they fail mid-way, or never):
#: field -> (type, lowest, highest, open at the lowest).
_RANGES: dict[str, tuple[type, float | None, float | None, bool]] = {
    "num_beams": (int, 1, None, False),
    "num_beam_groups": (int, 1, None, False),
    "max_length": (int, 1, None, False),
    "max_new_tokens": (int, 1, None, False),
    "min_length": (int, 0, None, False),
    "min_new_tokens": (int, 0, None, False),
    "no_repeat_ngram_size": (int, 0, None, False),
    "encoder_no_repeat_ngram_size": (int, 0, None, False),
    "top_k": (int, 0, None, False),
    "repetition_penalty": (float, 0, None, True),
    "encoder_repetition_penalty": (float, 0, None, True),
    "temperature": (float, 0, None, True),
    "top_p": (float, 0, 1, True),
    "min_p": (float, 0, 1, False),
    "typical_p": (float, 0, 1, True),
    "epsilon_cutoff": (float, 0, 1, False),
    "eta_cutoff": (float, 0, 1, False),
    "length_penalty": (float, None, None, False),
    "diversity_penalty": (float, None, None, False),
    "do_sample": (bool, None, None, False),
    "renormalize_logits": (bool, None, None, False),
    "use_cache": (bool, None, None, False),
}


def _check_range(key: str, value: Any) -> None:
    if value is None or key not in _RANGES:
        return
    kind, lo, hi, open_lo = _RANGES[key]
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidParameter(key, value, "true or false")
        return
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or (kind is int and not isinstance(value, int)):
        raise InvalidParameter(key, value, "an integer" if kind is int else "a number")
    below = lo is not None and (value <= lo if open_lo else value < lo)
    if below or (hi is not None and value > hi):
        low = "" if lo is None else (f"> {lo:g}" if open_lo else f">= {lo:g}")
        high = "" if hi is None else f"<= {hi:g}"
        raise InvalidParameter(key, value, "a value " + " and ".join(x for x in (low, high) if x))


def _invalid(fields: Mapping[str, Any], exc: BaseException) -> InvalidParameter:
    """The field a GenerationConfig error message names (the first of ``fields`` it quotes)."""
    message = " ".join((str(exc).strip() or type(exc).__name__).split())
    named = [k for k in fields if f"`{k}`" in message or f"'{k}'" in message or k in message]
    key = named[0] if named else ", ".join(fields) or "generation config"
    message = message.replace("GenerationConfig is invalid: - ", "")
    cut = message.find(". ", 20)
    if cut > 0:
        message = message[: cut + 1]
    return InvalidParameter(key, fields.get(key, "…"), f"a valid value: {message}")


def knob_fields(params: GenerationParams) -> dict[str, Any]:
    """llm4all's knobs as GenerationConfig fields.

    Greedy (temperature 0) is ``do_sample=False``; otherwise ``do_sample=True``
    with temperature, top_k (0: off), top_p (1: off) and min_p (0: off).
    ``repeat_penalty`` is ``repetition_penalty`` (transformers applies it over
    the whole sequence, llama.cpp over the last ``repeat_last_n`` tokens);
    ``max_tokens`` is ``max_new_tokens``. Stop strings and the seed are the
    engine's own (it streams and seeds torch itself).
    """
    out: dict[str, Any] = {}
    if params.greedy:
        out.update(do_sample=False, temperature=None, top_k=None, top_p=None, min_p=None)
    else:
        out.update(
            do_sample=True,
            temperature=params.temperature,
            top_k=params.top_k or None,
            top_p=params.top_p if params.top_p < 1.0 else None,
            min_p=params.min_p or None,
        )
    out["repetition_penalty"] = params.repeat_penalty if params.repeat_penalty != 1.0 else None
    if params.max_tokens is not None:
        out["max_new_tokens"] = params.max_tokens
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(params, name):
            raise InvalidParameter(name, getattr(params, name), "0 with the transformers backend")
    return out


_SAMPLING = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def merge(
    base: GenerationConfig,
    params: GenerationParams | None,
    user: Mapping[str, Any],
    room: int,
) -> GenerationConfig:
    """The config of one answer: the model's defaults, llm4all's knobs, the user's fields.

    ``params=None`` keeps the model's defaults (the original ``GPT4AllGPU`` did).
    A user config that asks for beams (``num_beams``) without ``do_sample`` gets
    beam *search* (deterministic), whatever llm4all's temperature is; a length
    the user gives (``max_length``, ``max_new_tokens``) wins over ``max_tokens``.
    ``room``: the most new tokens the context leaves.
    """
    fields = base.to_dict()
    fields.pop("transformers_version", None)
    if params is not None:
        knobs = knob_fields(params)
        if "num_beams" in user and "do_sample" not in user:
            knobs.update(
                do_sample=False, **dict.fromkeys(("temperature", "top_k", "top_p", "min_p"))
            )
        if "max_length" in user or "max_new_tokens" in user:
            knobs.pop("max_new_tokens", None)
        fields.update(knobs)
    fields.update(user)
    if not fields.get("do_sample"):
        for name in _SAMPLING:
            if name not in user:
                fields[name] = None
    has_length = fields.get("max_new_tokens") is not None or "max_length" in user
    if not has_length and params is not None:
        fields["max_new_tokens"] = max(1, room)
    config = check_gen_config({k: v for k, v in fields.items() if k in user or v is not None})
    return config
