"""``GPT4AllGPU``: the original GPU interface, on llm4all's transformers backend (extra ``gpu``).

The nomic-era class loaded a LLaMA checkpoint with transformers in float16,
``device_map="auto"``, applied a LoRA, and answered with any Hugging Face
generation config::

    from llm4all.gpt4all import GPT4AllGPU     # was: from nomic.gpt4all import GPT4AllGPU
    m = GPT4AllGPU(LLAMA_PATH)
    config = {'num_beams': 2, 'min_new_tokens': 10, 'max_length': 100,
              'repetition_penalty': 2.0}
    out = m.generate('write me a story about a lonely computer', config)

Here ``LLAMA_PATH`` is any model llm4all's transformers backend loads (a
Hugging Face folder, a GGUF, a catalog name), ``lora_path`` an optional PEFT
adapter folder, and ``generate`` returns the text after the prompt. See
``docs/gpt4all-compat.md`` for what differs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llm4all.params import GenerationParams


class GPT4AllGPU:
    """A Hugging Face causal LM with the original ``generate(prompt, generate_config)``.

    ``device``/``dtype``: as the transformers backend chooses them (CUDA with
    bfloat16 or float16 and ``device_map="auto"``, else MPS, else CPU float32)
    unless given. ``n_ctx``: the context window (0: the model's trained length).
    """

    def __init__(
        self,
        llama_path: str | os.PathLike[str],
        lora_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        n_ctx: int = 0,
    ) -> None:
        from llm4all.engine import ModelRef, load_engine, resolve
        from llm4all.engine.transformers import TransformersOptions
        from llm4all.engine.transformers.engine import TransformersEngine

        options = TransformersOptions(
            n_ctx=n_ctx,
            device=device,
            dtype=dtype,
            adapter=None if lora_path is None else os.fspath(lora_path),
        )
        path = os.fspath(llama_path)
        # A path as it is; else a catalog or store name.
        ref = ModelRef.file(path) if os.path.exists(path) else resolve(path, allow_download=False)
        engine = load_engine(ref, options, "transformers")
        assert isinstance(engine, TransformersEngine)
        self.engine: TransformersEngine = engine
        self.model = engine.model  # the transformers model, as the original exposed it
        self.tokenizer = engine.tokenizer

    def generate(self, prompt: str, generate_config: Mapping[str, Any] | None = None) -> str:
        """The model's continuation of ``prompt`` (the prompt itself not included).

        ``generate_config``: any ``transformers.GenerationConfig`` fields; the
        model's own defaults otherwise (as ``model.generate`` had them). An
        unknown or invalid field raises :class:`~llm4all.errors.InvalidParameter`
        (a ``ValueError``) naming it.
        """
        from llm4all.engine import collect

        config = dict(generate_config or {})
        stream = self.engine.generate(
            prompt, GenerationParams(temperature=0), gen_config=config, knobs=False
        )
        return collect(stream).text

    def close(self) -> None:
        """Free the model's memory (also when the object is garbage collected)."""
        self.engine.close()

    def __enter__(self) -> GPT4AllGPU:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
