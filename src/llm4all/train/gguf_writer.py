"""Write a fine-tuned model as GGUF: the merged model, or the adapter alone as a GGUF LoRA.

The base model's own GGUF is the template. Its header (architecture and
hyper-parameters, the tokenizer's vocabulary, merges and special tokens, the
chat template) is copied key by key, so the exported file tokenizes and
renders prompts exactly as the base did; its tensor list says which tensors
to write, in which order and shape. Each tensor's values come from the
transformers state dict through the same name map transformers uses to read
GGUF (``get_gguf_hf_weights_map``), undoing what it undid on reading: the
rotary permutation of llama's Q and K rows and gemma's ``norm - 1``.

A GGUF LoRA is what llama.cpp's ``convert_lora_to_gguf.py`` writes:
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``,
and per adapted weight ``NAME.lora_a`` (r × in) and ``NAME.lora_b`` (out × r).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

if TYPE_CHECKING:
    import torch

#: Keys of the base's header that describe the old file, not the new one.
_SKIPPED_KEYS = (
    "GGUF.",
    "general.architecture",
    "general.file_type",
    "general.quantization_version",
)
_OUTTYPES = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
}
OUTTYPES = tuple(_OUTTYPES)


def hf_names(model: Any, architecture: str) -> dict[str, str]:
    """GGUF tensor name → the model's state-dict name, as transformers maps them."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config={})  # type: ignore[no-untyped-call]
    mapping: dict[str, str] = get_gguf_hf_weights_map(model, processor)
    return mapping


def to_gguf_layout(
    name: str, values: np.ndarray[Any, Any], architecture: str, config: Any
) -> np.ndarray[Any, Any]:
    """A transformers tensor in the layout llama.cpp expects (the inverse of transformers' reader)."""
    if architecture == "llama" and (".attn_q." in name or ".attn_k." in name):
        heads = int(config.num_attention_heads)
        if ".attn_k." in name:
            heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return permute_rotary(values, heads)
    if architecture in ("gemma2", "gemma3") and name.endswith("norm.weight"):
        return values + 1
    return values


def permute_rotary(weights: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """HF's rotary layout (halves) → GGUF's (interleaved pairs), per head, on the rows.

    Example: for one head of 4 rows ``[a, b, c, d]`` → ``[a, c, b, d]``.
    """
    shape = weights.shape
    return (
        weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )


def write_merged(
    model: Any,
    base_gguf: Path,
    out: Path,
    *,
    outtype: str = "f16",
    name: str = "",
    chat_template: str | None = None,
) -> Path:
    """Write ``model`` (a merged transformers model of ``base_gguf``'s architecture) as GGUF."""
    reader = gguf.GGUFReader(base_gguf)
    architecture = str(reader.fields["general.architecture"].contents())
    qtype, ftype = _OUTTYPES[outtype]
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    names = hf_names(model, architecture)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(tmp, architecture)
    _copy_header(reader, writer, name=name, chat_template=chat_template)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor in reader.tensors:
        source = names.get(tensor.name)
        if source is None or source not in state:  # e.g. rope_freqs: not a weight of the model
            writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=tensor.tensor_type)
            continue
        values = to_gguf_layout(tensor.name, state[source], architecture, model.config)
        data, dtype = _encode(values, qtype)
        writer.add_tensor(tensor.name, data, raw_dtype=dtype)
    _finish(writer, tmp, out)
    return out


def write_lora(
    adapter: Mapping[str, torch.Tensor],
    model: Any,
    base_gguf: Path,
    out: Path,
    *,
    alpha: float,
    name: str = "",
) -> Path:
    """Write peft adapter weights (``…q_proj.lora_A.weight`` → ``blk.N.attn_q.weight.lora_a``) as a GGUF LoRA.

    ``model`` is the (unmerged) base transformers model, for the name map and the head counts.
    """
    reader = gguf.GGUFReader(base_gguf)
    architecture = str(reader.fields["general.architecture"].contents())
    to_gguf = {hf: g for g, hf in hf_names(model, architecture).items()}
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(tmp, architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("general.name", name or out.stem)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for target, a, b in _lora_pairs(adapter):
        gguf_name = to_gguf.get(target + ".weight")
        if gguf_name is None:
            raise ValueError(f"no GGUF tensor for the adapted module {target}")
        b_np = to_gguf_layout(gguf_name, b.float().cpu().numpy(), architecture, model.config)
        writer.add_tensor(gguf_name + ".lora_a", a.float().cpu().numpy().astype(np.float32))
        writer.add_tensor(gguf_name + ".lora_b", b_np.astype(np.float32))
    _finish(writer, tmp, out)
    return out


def _lora_pairs(
    adapter: Mapping[str, torch.Tensor],
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(module, A, B)`` per adapted module; ``module`` as named in the base model's state dict."""
    pattern = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight$")
    for key, a in adapter.items():
        found = pattern.match(key)
        if found is None:
            continue
        b = adapter[key.replace(".lora_A", ".lora_B")]
        yield found.group(1), a, b


def _copy_header(
    reader: gguf.GGUFReader, writer: gguf.GGUFWriter, *, name: str, chat_template: str | None
) -> None:
    for key, field in reader.fields.items():
        if key.startswith(_SKIPPED_KEYS):
            continue
        if key == "general.name" and name:
            continue
        if key == "tokenizer.chat_template" and chat_template:
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
    if name:
        writer.add_name(name)
    if chat_template:
        writer.add_chat_template(chat_template)


def _encode(
    values: np.ndarray[Any, Any], qtype: gguf.GGMLQuantizationType
) -> tuple[np.ndarray[Any, Any], gguf.GGMLQuantizationType]:
    """1-D tensors stay F32 (llama.cpp wants norms in F32); Q8_0 needs rows of 32."""
    if values.ndim <= 1 or qtype == gguf.GGMLQuantizationType.F32:
        return values.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.Q8_0 and values.shape[-1] % 32 == 0:
        return gguf.quants.quantize(values.astype(np.float32), qtype), qtype
    return values.astype(np.float16), gguf.GGMLQuantizationType.F16


def _finish(writer: gguf.GGUFWriter, tmp: Path, out: Path) -> None:
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
