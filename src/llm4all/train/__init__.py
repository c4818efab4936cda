"""Fine-tuning: LoRA training on llm4all's conversation data, and export to GGUF.

- :mod:`~llm4all.train.config`: :class:`TrainConfig`, the one description of a run;
- :mod:`~llm4all.train.data`: conversations to token ids and labels, the held-out
  split, :func:`~llm4all.train.data.heldout_loss`;
- :mod:`~llm4all.train.trainer`: the loop (transformers + peft + accelerate);
- :mod:`~llm4all.train.checkpoint`: atomic checkpoints and ``--resume``;
- :mod:`~llm4all.train.curve`: the loss curve (CSV, JSON, PNG);
- :mod:`~llm4all.train.export`: merge, GGUF, quantize, register in the model store.

Nothing here is imported by the rest of llm4all; torch, transformers and peft
(extra ``train``) are imported inside functions.
"""
