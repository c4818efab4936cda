"""``llm4all train export RUN``: a finished run as GGUF files in the model store.

1. The adapter is merged into its base in transformers (peft ``merge_and_unload``).
2. The merged model is written as GGUF F16 or Q8_0 with the ``gguf`` package
   (:mod:`llm4all.train.gguf_writer`), its header copied from the base's GGUF:
   tokenizer, special tokens and the chat template the run trained with.
3. llama.cpp's own quantizer makes a Q4_K_M (or any ``--quantize`` type) of it.
4. The adapter alone is written as a GGUF LoRA, for ``llm4all run -m BASE --lora FILE``.
5. The quantized model (and the F16 one, as ``NAME-f16``) is added to the model
   store with a catalog-like record: name, base, data, date, sha256.
6. With ``check``, the F16 GGUF in llama.cpp and the merged model in
   transformers must agree on the top-1 next token at >= 95 % of the positions
   of held-out texts (teacher-forced); the figure is reported, and again for
   the quantized file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.errors import Llm4allError
from llm4all.train.trainer import RESULT

if TYPE_CHECKING:
    from llm4all.models.store import ModelStore

log = logging.getLogger(__name__)

AGREEMENT_MIN = 0.95
"""The share of positions where the F16 GGUF's top-1 token must match transformers'."""


class UnfinishedRun(Llm4allError, ValueError):
    """The folder is not a finished training run."""


@dataclass
class Exported:
    """What an export wrote and measured."""

    name: str
    files: dict[str, Path] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)
    positions: int = 0

    def summary(self) -> list[str]:
        lines = [f"{kind:>8}  {path}" for kind, path in self.files.items()]
        for kind, share in self.agreement.items():
            if kind in ("f16", "q8_0") and share < AGREEMENT_MIN:
                lines.append(
                    f"warning: {kind} agrees below {AGREEMENT_MIN:.0%}: the export is suspect"
                )
            lines.append(
                f"top-1 agreement with transformers, {kind}: {share:.1%} of {self.positions} positions"
            )
        if self.registered:
            lines.append("added to the models: " + ", ".join(self.registered))
            lines.append(f"try: llm4all chat -m {self.registered[0]}")
        return lines


def read_result(run: Path) -> dict[str, Any]:
    """The finished run's ``result.json``; :class:`UnfinishedRun` when there is none."""
    path = run / "adapter" / RESULT
    if not run.is_dir():
        raise UnfinishedRun(f"{run} is not a training run (no such folder)")
    if not path.is_file():
        raise UnfinishedRun(
            f"{run} is not a finished run (no adapter/{RESULT}); "
            "finish it with `llm4all train CONFIG --resume` first"
        )
    result: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return result


def export_run(
    run: Path,
    *,
    outtype: str = "f16",
    quantize: str | None = "Q4_K_M",
    name: str | None = None,
    register: bool = True,
    check: bool = True,
    progress: Callable[[str], None] | None = None,
    store: ModelStore | None = None,
) -> Exported:
    """Export a finished run (see the module docstring); files go to ``RUN/export/``."""
    from peft import PeftModel

    from llm4all import hf
    from llm4all.train.gguf_writer import write_lora, write_merged

    say = progress or (lambda _text: None)
    result = read_result(run)
    name = name or result["config"].get("name") or run.resolve().name
    base = hf.resolve(result["base"])
    header = hf.gguf_template(base)
    if header is None:
        raise UnfinishedRun(
            f"export needs a GGUF of the base for the header (tokenizer, hyper-parameters); "
            f"{result['base']} is a Hugging Face folder and no model in the store has its "
            "architecture, shape and vocabulary: add one (`llm4all models add FILE`, any "
            "quantization) or convert the folder with llama.cpp's convert_hf_to_gguf.py"
        )
    out = run / "export"
    out.mkdir(exist_ok=True)
    exported = Exported(name)
    say(f"merging the adapter into {result['base']}")
    model, tokenizer = hf.load_model(base)
    tuned = PeftModel.from_pretrained(model, run / "adapter")
    adapter_state = {k: v.detach().clone() for k, v in tuned.state_dict().items() if "lora_" in k}
    alpha = float(getattr(tuned.peft_config["default"], "lora_alpha", 0))
    merged = tuned.merge_and_unload()
    merged.eval()
    template = result.get("chat_template")
    say(f"writing {outtype.upper()} GGUF")
    main = write_merged(
        merged,
        header,
        out / f"{name}-{outtype}.gguf",
        outtype=outtype,
        name=name,
        chat_template=template,
    )
    exported.files[outtype] = main
    say("writing the adapter as a GGUF LoRA")
    exported.files["lora"] = write_lora(
        adapter_state,
        merged,
        header,
        out / f"{name}-lora.gguf",
        alpha=alpha,
        name=f"{name} (LoRA of {result['base']})",
    )
    if quantize:
        from llm4all.engine._native import quantize_model

        say(f"quantizing to {quantize} with llama.cpp")
        exported.files[quantize.lower()] = quantize_model(
            main, out / f"{name}-{quantize.lower()}.gguf", quantize
        )
    if check:
        from llm4all.train.agreement import heldout_texts, top1_agreement

        texts = heldout_texts(run, tokenizer)
        for kind in (outtype, quantize.lower() if quantize else None):
            if kind is None:
                continue
            say(
                f"checking top-1 agreement of {kind} with transformers on {len(texts)} held-out texts"
            )
            share, positions = top1_agreement(merged, tokenizer, exported.files[kind], texts)
            exported.agreement[kind], exported.positions = share, positions
    if register:
        exported.registered = _register(exported, name, result, base.sha256, quantize, store)
    return exported


def _register(
    exported: Exported,
    name: str,
    result: dict[str, Any],
    base_sha256: str | None,
    quantize: str | None,
    store: ModelStore | None,
) -> list[str]:
    """Add the quantized file as NAME and the unquantized one as NAME-f16 (or -q8_0)."""
    from llm4all.models import sidecar
    from llm4all.models.store import ModelStore

    store = store or ModelStore()
    facts = {
        "base": result["base"],
        "base_sha256": base_sha256,
        "data": result["data"],
        "trained": result["finished"],
        "steps": result["steps"],
        "heldout_loss": result.get("heldout_loss_after"),
    }
    order = [(quantize.lower(), name)] if quantize else []
    main_kind = next(
        k for k in exported.files if k not in ("lora", quantize.lower() if quantize else "")
    )
    order.append((main_kind, f"{name}-{main_kind}" if quantize else name))
    names = []
    for kind, model_name in order:
        installed = store.add(exported.files[kind], model_name, check=True)
        sidecar.add_name(installed.path, model_name, **facts)
        names.append(model_name)
    return names
