"""Any model reference as a Hugging Face transformers model: catalog name, GGUF file or HF folder.

Training, export, evaluation and the transformers backend all start from a
model the user names the way llm4all names models everywhere else. This module
turns that name into a folder transformers loads with ``from_pretrained``:

- a Hugging Face folder (``config.json`` and weights) is used as it is;
- a GGUF (a catalog name, a store name or a path, resolved by
  :meth:`~llm4all.models.store.ModelStore.resolve`) is dequantized by
  transformers (``gguf_file=``). transformers' ``save_pretrained`` refuses a
  model loaded that way, so the model is rebuilt from its config with the
  state dict copied in and saved once (float32), keyed by the GGUF's sha256
  and size: beside the model store's files (``MODELS/.hf/``) for a model of
  the store, else under ``$LLM4ALL_HOME/cache/hf/``; later loads read that folder (fast, no
  dequantizing). A catalog entry's chat template override goes into the
  saved tokenizer, so training and chat use the same template.

Which catalog models transformers dequantizes (transformers 5.x, gguf 0.19):
``smollm2-135m-instruct`` (llama) and ``gemma-3-270m`` (gemma3, loaded as
``gemma3_text``) were loaded and generate; ``qwen2.5-coder-*`` (qwen2) is in
transformers' GGUF table but was not run here; the embedding model
``all-minilm-l6-v2`` (bert) is refused with a one-line error.

Example: ``model, tokenizer = load_model("smollm2-135m-instruct")``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all import paths
from llm4all.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from llm4all.models.store import ModelStore

log = logging.getLogger(__name__)

#: Files that make a folder a Hugging Face model (one of the weight files must be there too).
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
#: What a rebuilt folder records about the GGUF it came from.
_SOURCE_FILE = "llm4all-source.json"


@dataclass(frozen=True)
class HFModel:
    """A model as a folder transformers loads, and where it came from."""

    folder: Path
    name: str
    #: The GGUF the folder was rebuilt from (None for a Hugging Face folder).
    gguf: Path | None = None
    #: The GGUF's sha256 (None for a Hugging Face folder).
    sha256: str | None = None


def resolve(ref: str | os.PathLike[str], store: ModelStore | None = None) -> HFModel:
    """The Hugging Face folder of a catalog name, store name, GGUF path or HF folder.

    A GGUF is dequantized and saved as a folder on first use (cached by sha256).
    Raises :class:`ModelLoadError` for a folder that is not a model or a GGUF
    whose architecture transformers cannot dequantize.
    """
    path = Path(os.fspath(ref)).expanduser()
    if path.is_dir():
        check_hf_folder(path)
        return HFModel(path.resolve(), path.resolve().name)
    if store is None:
        from llm4all.models.store import ModelStore

        store = ModelStore()
    resolved = store.resolve(os.fspath(ref))
    sha256 = _sha256_of(resolved.path)
    folder = (
        _cache_root(resolved.path, store.root) / f"{sha256[:24]}-{resolved.path.stat().st_size}"
    )
    if not (folder / _SOURCE_FILE).is_file():
        _rebuild(resolved.path, folder, resolved.chat_template, sha256)
    return HFModel(folder, resolved.name, resolved.path, sha256)


def load_model(
    ref: str | os.PathLike[str] | HFModel,
    *,
    dtype: str = "float32",
    store: ModelStore | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for any model reference (see :func:`resolve`), in ``dtype``.

    Example: ``model, tok = load_model("smollm2-135m-instruct")``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = ref if isinstance(ref, HFModel) else resolve(ref, store)
    try:
        tokenizer = AutoTokenizer.from_pretrained(hf.folder)
        model = AutoModelForCausalLM.from_pretrained(hf.folder, dtype=_torch_dtype(dtype))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(str(hf.folder), _first_line(exc)) from exc
    return model, tokenizer


def check_hf_folder(folder: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``folder`` holds a Hugging Face model."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(str(folder), "not a Hugging Face model folder (it has no config.json)")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise ModelLoadError(
            str(folder), "a Hugging Face folder without weights (no model.safetensors)"
        )


def gguf_architecture(path: Path) -> str:
    """The architecture a GGUF's header names (``llama``, ``qwen2``, ``gemma3``…)."""
    from llm4all.models.gguf import read_metadata

    return read_metadata(path).architecture or "unknown"


def can_dequantize(architecture: str) -> bool:
    """Whether transformers can load a GGUF of this architecture."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return architecture in GGUF_CONFIG_MAPPING and architecture not in _NOT_CAUSAL_LM


#: Architectures transformers reads from GGUF but not as a causal language model.
_NOT_CAUSAL_LM = frozenset({"bert", "nomic-bert", "t5encoder"})


def _rebuild(gguf: Path, folder: Path, chat_template: str | None, sha256: str) -> None:
    """Dequantize ``gguf`` with transformers and save it as a plain HF folder at ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    architecture = gguf_architecture(gguf)
    if not can_dequantize(architecture):
        raise ModelLoadError(
            str(gguf),
            f"transformers cannot load the {architecture} architecture from a GGUF; "
            "use a Hugging Face folder of this model instead",
        )
    log.info("dequantizing %s for transformers (once; cached in %s)", gguf.name, folder)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise ModelLoadError(str(gguf), f"transformers cannot load it: {_first_line(exc)}") from exc
    # save_pretrained refuses a model loaded from a GGUF: rebuild it from its config.
    model = AutoModelForCausalLM.from_config(loaded.config)  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    if chat_template:
        tokenizer.chat_template = chat_template
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf), "sha256": sha256, "architecture": architecture}
        (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", "utf-8")
        if folder.exists():  # another process finished first; theirs is as good
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cache_root(gguf: Path, store_root: Path) -> Path:
    """Where rebuilt folders of ``gguf`` live: the store's ``.hf`` for its own models."""
    in_store = gguf.resolve().parent == store_root.resolve()
    root = store_root / ".hf" if in_store else paths.home() / "cache" / "hf"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sha256_of(path: Path) -> str:
    """The file's sha256: the store's cached verification when current, else hashed now."""
    from llm4all.models.sources import cached_verification, hash_file

    cached = cached_verification(path)
    if cached is not None and cached.sha256:
        return cached.sha256
    return hash_file(path)


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r} (float32, bfloat16, float16)")
    return dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
