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
``smollm2-135m-instruct`` (llama), ``gemma-3-270m`` (gemma3, loaded as
``gemma3_text``) and ``qwen2.5-coder-0.5b-instruct`` (qwen2) were rebuilt,
trained and exported; the embedding model ``all-minilm-l6-v2`` (bert) is
refused with a one-line error. :func:`gguf_template` finds the GGUF whose
header an export of a Hugging Face folder can use.

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
#: Part of a rebuilt folder's name: raised when what a rebuild writes changes (2: no GGUF
#: quantization_config left in config.json), so older folders are rebuilt.
_FOLDER_VERSION = 2


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
        _cache_root(resolved.path, store.root)
        / f"{sha256[:24]}-{resolved.path.stat().st_size}-{_FOLDER_VERSION}"
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


#: transformers' model type → llama.cpp's architecture name, where they differ.
_GGUF_ARCHITECTURE = {"gemma3_text": "gemma3", "gemma2_text": "gemma2"}


def gguf_template(model: HFModel, store: ModelStore | None = None) -> Path | None:
    """A GGUF of the same model as ``model``: its header can describe the model's weights.

    For a model rebuilt from a GGUF, that GGUF. For a Hugging Face folder: the
    GGUF it was rebuilt from (``llm4all-source.json``), else a GGUF in the model
    store with the same architecture, layer count, width and vocabulary (token
    by token), in any quantization; None when there is none.
    """
    if model.gguf is not None:
        return model.gguf
    source = model.folder / _SOURCE_FILE
    if source.is_file():
        recorded = Path(json.loads(source.read_text("utf-8")).get("gguf", ""))
        if recorded.is_file():
            return recorded
    config = json.loads((model.folder / "config.json").read_text("utf-8"))
    config = config.get("text_config", config)
    kind = str(config.get("model_type", ""))
    architecture = _GGUF_ARCHITECTURE.get(kind, kind)
    if store is None:
        from llm4all.models.store import ModelStore

        store = ModelStore()
    from llm4all.models.gguf import read_metadata

    tokens: list[str] | None = None
    for candidate in sorted(store.root.glob("*.gguf")):
        try:
            meta = read_metadata(candidate)
        except ModelLoadError:
            continue
        same_shape = (
            meta.architecture == architecture
            and meta.values.get(f"{architecture}.block_count") == config.get("num_hidden_layers")
            and meta.embedding_length == config.get("hidden_size")
            and meta.values.get("general.type", "model") == "model"
        )
        if not same_shape:
            continue
        if tokens is None:
            tokens = _folder_tokens(model.folder)
        if _gguf_tokens(candidate) == tokens:
            return candidate
    return None


def _folder_tokens(folder: Path) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    return [token for token, _id in by_id]


def _gguf_tokens(path: Path) -> list[str]:
    from transformers.integrations.gguf.reader import read_gguf_metadata

    metadata, _names = read_gguf_metadata(str(path), ("tokenizer.ggml.tokens",))
    return list(metadata.get("tokenizer.ggml.tokens", []))


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
    """Dequantize ``gguf`` with transformers and save it as a plain HF folder at ``folder``.

    transformers' GGUF reader for these architectures (``gguf.GGUFReader``)
    parses every header value into numpy views, one per part: for Qwen's
    151,646 tokens and 151,387 merges that is about a minute of CPU per read,
    and loading a model and its tokenizer read the header three times. So the
    model is loaded from a copy of the file without the tokenizer's arrays
    (:func:`_without_vocabulary`; the vocabulary size goes in as a number), and
    the tokenizer from the original file through transformers' own fast header
    reader (its class chosen here, as ``AutoTokenizer`` would, which skips
    ``AutoTokenizer``'s slow config read).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    architecture = gguf_architecture(gguf)
    if not can_dequantize(architecture):
        raise ModelLoadError(
            str(gguf),
            f"transformers cannot load the {architecture} architecture from a GGUF; "
            "use a Hugging Face folder of this model instead",
        )
    log.info("dequantizing %s for transformers (once; cached in %s)", gguf.name, folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        slim = _without_vocabulary(gguf, tmp / "slim.gguf")
        try:
            config = AutoConfig.from_pretrained(tmp, gguf_file=slim.name)
            loaded = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=slim.name, config=config)
            tokenizer = _tokenizer_class(config.model_type).from_pretrained(
                gguf.parent, gguf_file=gguf.name
            )
        except (OSError, ValueError, KeyError, NotImplementedError) as exc:
            raise ModelLoadError(
                str(gguf), f"transformers cannot load it: {_first_line(exc)}"
            ) from exc
        slim.unlink()
        # save_pretrained refuses a model loaded from a GGUF: rebuild it from its config.
        # The weights are plain floats now: without GGUF's quantization_config, which would
        # make transformers refuse to save a model later loaded from this folder.
        plain = loaded.config.to_dict()
        plain.pop("quantization_config", None)
        config = type(loaded.config).from_dict(plain)
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        model.load_state_dict(loaded.state_dict())
        del loaded
        if chat_template:
            tokenizer.chat_template = chat_template
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


def _tokenizer_class(model_type: str) -> Any:
    """The tokenizer class ``AutoTokenizer`` picks for a GGUF of this model type."""
    from transformers.models.auto.tokenization_auto import (
        TOKENIZER_MAPPING_NAMES,
        tokenizer_class_from_name,
    )
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    name = TOKENIZER_MAPPING_NAMES.get(model_type)
    found = tokenizer_class_from_name(name) if name else None
    return found or TokenizersBackend


#: The header arrays of a GGUF's vocabulary (what makes reading a big one slow).
_VOCABULARY_KEYS = frozenset(
    {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
     "tokenizer.ggml.scores"}
)  # fmt: skip
#: Bytes of each fixed-size GGUF value type (8 is a string, 9 an array).
_WIDTHS = {0: 1, 1: 1, 7: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


def _without_vocabulary(gguf: Path, out: Path) -> Path:
    """Copy ``gguf`` to ``out`` without its vocabulary arrays; ``ARCH.vocab_size`` says how many.

    Every other header value, the tensor table and the tensor data are copied
    byte for byte (tensor offsets count from the aligned data section, so they
    stay valid). Example: Qwen2.5-Coder-0.5B's header shrinks from 7.4 MB to 8 kB.
    """
    import mmap
    import struct

    with gguf.open("rb") as src, mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        if magic != b"GGUF":
            raise ModelLoadError(str(gguf), "not a GGUF file")
        pos = 24
        kept: list[bytes] = []
        values: dict[str, bytes] = {}
        n_vocab = 0
        for _ in range(n_kv):
            start = pos
            key, pos = _gguf_string(buf, pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos, count = _skip_value(buf, pos + 4, kind)
            if key in _VOCABULARY_KEYS:
                n_vocab = count if key == "tokenizer.ggml.tokens" else n_vocab
                continue
            if key in ("general.architecture", "general.alignment"):
                values[key] = buf[start:pos]
            kept.append(buf[start:pos])
        table_start = pos
        for _ in range(n_tensors):
            _name, pos = _gguf_string(buf, pos)
            (dims,) = struct.unpack_from("<I", buf, pos)
            pos += 4 + 8 * dims + 4 + 8
        table = buf[table_start:pos]
        alignment = _alignment(values.get("general.alignment"))
        data_start = -(-pos // alignment) * alignment
        architecture = gguf_architecture(gguf)
        extra: list[bytes] = []
        size_key = f"{architecture}.vocab_size".encode()
        if n_vocab and not any(entry[8 : 8 + len(size_key)] == size_key for entry in kept):
            extra.append(
                struct.pack("<Q", len(size_key)) + size_key + struct.pack("<II", _UINT32, n_vocab)
            )
        with out.open("wb") as sink:
            sink.write(struct.pack("<4sIQQ", magic, version, n_tensors, len(kept) + len(extra)))
            for entry in (*kept, *extra):
                sink.write(entry)
            sink.write(table)
            sink.write(b"\0" * (-sink.tell() % alignment))
            for chunk in range(data_start, len(buf), 1 << 26):
                sink.write(buf[chunk : chunk + (1 << 26)])
    return out


def _gguf_string(buf: Any, pos: int) -> tuple[str, int]:
    import struct

    (length,) = struct.unpack_from("<Q", buf, pos)
    return bytes(buf[pos + 8 : pos + 8 + length]).decode("utf-8", "replace"), pos + 8 + length


def _skip_value(buf: Any, pos: int, kind: int) -> tuple[int, int]:
    """``(position after the value, its number of elements)`` for a value of type ``kind`` at ``pos``."""
    import struct

    if kind in _WIDTHS:
        return pos + _WIDTHS[kind], 1
    if kind == _STRING:
        (length,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + length, 1
    if kind != _ARRAY:
        raise ModelLoadError("GGUF", f"unknown header value type {kind}")
    item, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if item in _WIDTHS:
        return pos + _WIDTHS[item] * count, count
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        if item == _STRING:
            pos += 8 + unpack(buf, pos)[0]
        else:
            pos, _n = _skip_value(buf, pos, item)
    return pos, count


def _alignment(entry: bytes | None) -> int:
    """The value of a raw ``general.alignment`` header entry (32, llama.cpp's default, if none)."""
    import struct

    if entry is None:
        return 32
    return int(struct.unpack_from("<I", entry, len(entry) - 4)[0])


def forget(gguf: Path) -> int:
    """Delete the folders rebuilt from ``gguf`` (when it leaves the store); how many went.

    They are found by the source each records, in the store's ``.hf`` beside the
    file and in the cache for files outside the store.
    """
    gone = 0
    target = gguf.resolve()
    for root in (gguf.parent / ".hf", paths.home() / "cache" / "hf"):
        for source in root.glob(f"*/{_SOURCE_FILE}"):
            try:
                recorded = json.loads(source.read_text("utf-8")).get("gguf")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(recorded, str) and Path(recorded).resolve() == target:
                shutil.rmtree(source.parent, ignore_errors=True)
                gone += 1
    return gone


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
