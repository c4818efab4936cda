"""The transformers backend's engine: a Hugging Face causal LM in this process (torch).

Loading: a Hugging Face folder as it is, a GGUF dequantized once by
:mod:`llm4all.hf`; device and dtype chosen by :func:`choose_device` (CUDA →
bfloat16 or float16 with ``device_map="auto"``, Apple MPS → float16, else CPU
float32), the size checked against free memory first, a PEFT LoRA adapter
folder applied on top. A failure at any step frees what was loaded.

Generation: ``model.generate`` runs on a worker thread with a streamer that
hands each new token id to the caller's iterator, which turns ids into text
(decoding the whole answer so far, so a character split across tokens never
shows as U+FFFD), applies stop strings (:class:`~llm4all.engine.textstream.StopMatcher`)
and asks ``should_continue`` before each token; a stopping criterion reading
the same flag ends ``generate`` within a token. Beam search cannot stream
(transformers refuses a streamer with ``num_beams > 1``): the whole answer
comes as one chunk and a warning says so. Every ``GenerationConfig`` field
passes through (:mod:`llm4all.engine.transformers.options`).
"""

from __future__ import annotations

import gc
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4all.engine.base import (
    Capabilities,
    ChatInput,
    Chunk,
    Engine,
    FinishReason,
    ModelInfo,
    PromptInput,
    ScoredChunk,
    ShouldContinue,
    Timings,
    TokenLogprob,
    Usage,
)
from llm4all.engine.refs import ModelRef
from llm4all.engine.textstream import StopMatcher
from llm4all.engine.transformers.options import TransformersOptions, check_gen_config, merge
from llm4all.errors import (
    ContextOverflow,
    InsufficientMemory,
    InvalidParameter,
    ModelLoadError,
    Unsupported,
)
from llm4all.params import GenerationParams

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BACKEND = "transformers"
#: Bytes per parameter of each dtype (for the memory check before loading).
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: What a model of N bytes of weights needs besides them (activations, KV cache, torch).
_OVERHEAD = 1.2
_END = object()


def choose_device(device: str, dtype: str) -> tuple[str, str]:
    """``(device, dtype)`` for the options: ``auto`` resolved, a missing device refused.

    Example on a CPU-only machine: ``choose_device("auto", "auto")`` → ``("cpu", "float32")``;
    ``choose_device("cuda", "auto")`` raises "no CUDA GPU here".
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
            raise InvalidParameter(
                "device", device, f"a device this machine has: no CUDA GPU here ({build})"
            )
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise InvalidParameter(
                "device", device, f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise InvalidParameter("device", device, "a device this machine has: no Apple MPS here")
    if dtype == "auto":
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device == "mps":
            dtype = "float16"
        else:
            dtype = "float32"
    return device, dtype


def weights_bytes(folder: Path) -> tuple[int, str]:
    """The size of a folder's weight files and the dtype they are stored in."""
    files = list(folder.glob("*.safetensors")) or list(folder.glob("pytorch_model*.bin"))
    size = sum(f.stat().st_size for f in files)
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        config = {}
    stored = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return size, stored


def check_memory(folder: Path, device: str, dtype: str) -> int:
    """Raise :class:`InsufficientMemory` if the model in ``dtype`` will not fit; the bytes needed."""
    size, stored = weights_bytes(folder)
    needed = int(size * _DTYPE_BYTES.get(dtype, 4) / _DTYPE_BYTES.get(stored, 4) * _OVERHEAD)
    if device.startswith("cuda"):
        import torch

        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        if needed > free:
            raise InsufficientMemory(needed, int(free))
        return needed
    from llm4all.models import ensure_fits_in_ram

    ensure_fits_in_ram(int(needed / 1.2))  # it adds its own overhead
    return needed


class TransformersEngine(Engine):
    """A causal LM loaded by transformers. One generation at a time (a lock)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        info: ModelInfo,
        options: TransformersOptions,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        self.options = options
        self.capabilities = Capabilities(
            tokens=True,
            chat=bool(tokenizer.chat_template),  # ChatInput rendered with the tokenizer's template
            logprobs=True,
            scoring=True,
            gpu_offload=False,  # the whole model goes to the device; there are no layer counts
        )
        self.lock = threading.Lock()
        self.base_config: GenerationConfig = _base_config(model)
        self.generation: dict[str, Any] = dict(options.generation)
        self.last_note: str | None = None  # what the last answer could not do (beams: no streaming)
        self._closed = False
        ids = model.generation_config.eos_token_id
        ids = ids if ids is not None else tokenizer.eos_token_id
        self.eos_ids: frozenset[int] = frozenset(
            ids if isinstance(ids, list) else ([] if ids is None else [int(ids)])
        )

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, ref: ModelRef, options: TransformersOptions) -> TransformersEngine:
        """Load ``ref`` (a Hugging Face folder, or a GGUF transformers dequantizes)."""
        from llm4all import hf

        if ref.path is None:
            raise InvalidParameter("model", ref.name, "a Hugging Face folder or a GGUF file")
        check_gen_config(options.generation)  # a bad field fails before anything loads
        device, dtype = choose_device(options.device, options.dtype)
        if options.adapter is not None:
            _check_adapter(Path(options.adapter).expanduser())
        found = hf.resolve(ref.path)
        name = ref.entry.name if ref.entry is not None else found.name
        if options.check_memory:
            check_memory(found.folder, device, dtype)
        model: Any = None
        try:
            model, tokenizer = _load(found.folder, device, dtype, options.adapter)
            info = _info(model, tokenizer, found.folder, name, device, dtype, options)
            engine = cls(model, tokenizer, info, options)
        except BaseException:
            del model
            _free(device)
            raise
        log.info("loaded %s with transformers on %s (%s)", name, device, dtype)
        return engine

    # -- tokens --------------------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        encoded = self.tokenizer(
            text, add_special_tokens=add_special, split_special_tokens=not parse_special
        )
        return list(encoded["input_ids"])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(
            self.tokenizer.decode(
                list(tokens), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    def _text(self, tokens: Sequence[int]) -> str:
        """An answer's text: special tokens (an end-of-turn marker) shown as nothing."""
        return str(
            self.tokenizer.decode(
                list(tokens), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def prompt_tokens(self, prompt: PromptInput) -> list[int]:
        """Token ids of a prompt: ids as given, text tokenized, a chat rendered by the template."""
        if isinstance(prompt, ChatInput):
            self.capabilities.require("chat", "a chat prompt (this model has no chat template)")
            text = self.tokenizer.apply_chat_template(
                list(prompt.messages),
                tools=list(prompt.tools) or None,
                add_generation_prompt=True,
                tokenize=False,
            )
            return self.tokenize(str(text), add_special=False)
        return super().prompt_tokens(prompt)

    # -- generation ----------------------------------------------------------------------
    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams,
        *,
        should_continue: ShouldContinue | None = None,
        slot: int = 0,
        logprobs: int | None = None,
        gen_config: Mapping[str, Any] | None = None,
        knobs: bool = True,
    ) -> Iterator[Chunk]:
        """Stream an answer; ``gen_config`` adds GenerationConfig fields for this answer.

        ``knobs=False`` ignores llm4all's sampling knobs in ``params`` (the model's
        own defaults, as the original ``GPT4AllGPU`` had); stop strings still apply.
        """
        if self._closed:
            raise RuntimeError("the model was closed")
        self.check_params(params)
        tokens = self.prompt_tokens(prompt)
        if not tokens:
            raise InvalidParameter("prompt", "", "at least one token")
        self.check_fits(len(tokens))
        user = {**self.generation, **(gen_config or {})}
        config = merge(
            self.base_config, params if knobs else None, user, self.info.n_ctx - len(tokens)
        )
        beams = (config.num_beams or 1) > 1
        if beams and logprobs is not None:
            raise Unsupported("log-probabilities with beam search", "logprobs", BACKEND)
        seed = params.seed if params.seed is not None else self.options.seed
        run = _Run(self, tokens, config, params.stop, should_continue, logprobs, seed)
        return run.beams() if beams else run.stream()

    # -- scoring -------------------------------------------------------------------------
    def token_logprobs(self, tokens: Sequence[int], first: int = 1) -> list[float]:
        """Teacher-forced log-probabilities (nats) of ``tokens[first:]`` (float32 logits)."""
        from llm4all.evaluate.scoring import HFScorer

        if not 1 <= first <= len(tokens):
            raise InvalidParameter("first", first, f"1..{len(tokens)}")
        if len(tokens) > self.info.n_ctx:
            raise ContextOverflow(len(tokens), self.info.n_ctx)
        with self.lock:
            return HFScorer(self.model, self.info.n_ctx).logprobs(tokens, first)

    def top_tokens(self, tokens: Sequence[int], first: int = 1) -> list[int]:
        """The most likely next token at each of the positions that predict ``tokens[first:]``."""
        import torch

        with self.lock, torch.no_grad():
            ids = torch.tensor([list(tokens)], device=self.model.device)
            logits = self.model(input_ids=ids).logits[0, first - 1 : -1]
            return [int(x) for x in logits.argmax(-1).tolist()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        device = str(self.model.device)
        with self.lock:
            del self.model
        _free(device)


class _Run:
    """One answer: the worker thread running ``generate`` and the iterator reading it."""

    def __init__(
        self,
        engine: TransformersEngine,
        tokens: list[int],
        config: GenerationConfig,
        stops: Sequence[str],
        should_continue: ShouldContinue | None,
        logprobs: int | None,
        seed: int | None,
    ) -> None:
        self.engine = engine
        self.tokens = tokens
        self.config = config
        self.stops = tuple(stops)
        self.go_on = should_continue or (lambda: True)
        self.logprobs = logprobs
        self.seed = seed if seed is not None else random.getrandbits(32)
        self.cancel = threading.Event()
        self.items: queue.Queue[Any] = queue.Queue()
        self.scores: queue.Queue[Any] = queue.Queue()
        self.start = 0.0

    def _kwargs(self) -> dict[str, Any]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        ids = torch.tensor([self.tokens], device=self.engine.model.device)
        pad = self.engine.tokenizer.pad_token_id
        if pad is None and self.engine.eos_ids:
            pad = min(self.engine.eos_ids)
        if self.config.pad_token_id is None:
            self.config.pad_token_id = pad
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "generation_config": self.config,
            "stopping_criteria": StoppingCriteriaList([_Cancelled(self.cancel)]),
        }
        if self.logprobs is not None:
            kwargs["logits_processor"] = LogitsProcessorList([_Recorder(self.scores)])
        return kwargs

    def _work(self, streamer: Any | None) -> Any:
        import torch

        torch.manual_seed(self.seed)
        kwargs = self._kwargs()
        if streamer is not None:
            kwargs["streamer"] = streamer
        with torch.no_grad():
            return self.engine.model.generate(**kwargs)  # type: ignore[operator]

    # -- streaming (greedy and sampling) --------------------------------------------------
    def stream(self) -> Iterator[Chunk]:
        engine = self.engine
        with engine.lock:
            self.start = time.perf_counter()
            engine.last_note = None
            worker = threading.Thread(target=self._thread, name="llm4all-transformers", daemon=True)
            worker.start()
            try:
                yield from self._read()
            finally:
                self.cancel.set()
                worker.join()

    def _thread(self) -> None:
        try:
            self._work(_Streamer(self.items))
        except BaseException as exc:  # handed to the reader
            self.items.put(exc)
        finally:
            self.items.put(_END)

    def _read(self) -> Iterator[Chunk]:
        engine = self.engine
        matcher = StopMatcher(self.stops)
        out: list[int] = []
        shown = ""
        first: float | None = None
        reason: FinishReason | None = None
        while True:
            if not self.go_on():
                self.cancel.set()
                reason = "cancelled"
                break
            item = self.items.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise _generation_error(item) from item
            token = int(item)
            if first is None:
                first = time.perf_counter()
            if token in engine.eos_ids:
                reason = "stop"
                self._drain_score()
                break
            out.append(token)
            text = engine._text(out)
            piece = text[len(shown) :] if not text.endswith("\ufffd") else ""
            if piece:
                shown = text
            result = matcher.feed(piece)
            scored = self._score(token)
            yield self._chunk(result.text, token, scored)
            if result.stopped:
                self.cancel.set()
                reason = "stop"
                break
        if reason is None:
            held = matcher.flush()
            if held:
                yield Chunk(held) if self.logprobs is None else ScoredChunk(held)
            reason = "length"
        yield self._final(reason, len(out), first)

    def _chunk(self, text: str, token: int, scored: TokenLogprob | None) -> Chunk:
        if scored is None:
            return Chunk(text, (token,))
        return ScoredChunk(text, (token,), logprobs=(scored,))

    def _score(self, token: int) -> TokenLogprob | None:
        if self.logprobs is None:
            return None
        row = self.scores.get()
        logp = row.log_softmax(-1)
        top: tuple[tuple[int, float], ...] = ()
        if self.logprobs > 0:
            values, ids = logp.topk(self.logprobs)
            top = tuple(
                (int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)
            )
        tok = self.engine.tokenizer
        return TokenLogprob(
            token,
            float(logp[token]),
            top,
            piece=self.engine.token_bytes(token),
            top_pieces=tuple(str(tok.decode([i])).encode("utf-8") for i, _ in top),
        )

    def _drain_score(self) -> None:
        if self.logprobs is not None:
            self.scores.get()

    def _final(
        self, reason: FinishReason, n: int, first: float | None, whole: bool = False
    ) -> Chunk:
        """The last chunk. ``whole``: the answer came at once (beam search), so its first
        token came at the end and the decode speed is the answer's average."""
        now = time.perf_counter()
        first = first or now
        timings = Timings(
            prompt_seconds=first - self.start,
            time_to_first_token=first - self.start,
            generation_seconds=(now - self.start if whole else now - first) if n > 1 else 0.0,
            completion_tokens=n,
        )
        kind = Chunk if self.logprobs is None else ScoredChunk
        return kind("", finish_reason=reason, usage=Usage(len(self.tokens), n), timings=timings)

    # -- beam search: no streaming ---------------------------------------------------------
    def beams(self) -> Iterator[Chunk]:
        engine = self.engine
        with engine.lock:
            self.start = time.perf_counter()
            note = (
                f"beam search (num_beams={self.config.num_beams}) cannot stream token by token: "
                "the whole answer comes at once"
            )
            engine.last_note = note
            log.warning(note)
            if not self.go_on():
                yield self._final("cancelled", 0, None)
                return
            if self.stops:
                self.config.stop_strings = list(self.stops)
            try:
                import torch

                torch.manual_seed(self.seed)
                kwargs = self._kwargs()
                kwargs["tokenizer"] = engine.tokenizer  # stop_strings needs it
                with torch.no_grad():
                    output = engine.model.generate(**kwargs)  # type: ignore[operator]
            except Exception as exc:
                raise _generation_error(exc) from exc
            new = [int(t) for t in output[0, len(self.tokens) :].tolist()]
            ended = bool(new) and new[-1] in engine.eos_ids
            while new and new[-1] in engine.eos_ids:  # the end marker and any padding after it
                new.pop()
            first = time.perf_counter()
            text = engine._text(new)
            matcher = StopMatcher(self.stops)
            result = matcher.feed(text)
            text = result.text if result.stopped else text
            if text or new:
                yield Chunk(text, tuple(new))
            reason: FinishReason = "stop" if ended or result.stopped else "length"
            yield self._final(reason, len(new), first, whole=True)


class _Streamer:
    """A transformers streamer handing each new token id to a queue (the prompt skipped)."""

    def __init__(self, items: queue.Queue[Any]) -> None:
        self.items = items
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.items.put(int(token))

    def end(self) -> None:
        return None


class _Cancelled:
    """A stopping criterion: True once the reader has cancelled (a stop string, should_continue)."""

    def __init__(self, flag: threading.Event) -> None:
        self.flag = flag

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _Recorder:
    """A logits processor that keeps each step's scores (after the penalties) for log-probs."""

    def __init__(self, rows: queue.Queue[Any]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.rows.put(scores[0].detach().float().cpu())
        return scores


def _generation_error(exc: BaseException) -> Exception:
    """transformers' complaint about a config (found only at generate time) as one line."""
    if isinstance(exc, (ValueError, TypeError)):
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        return InvalidParameter("gen-config", "…", f"settings transformers accepts: {text}")
    if isinstance(exc, Exception):
        return exc
    return RuntimeError(str(exc))


def _base_config(model: Any) -> GenerationConfig:
    """The model's own generation defaults (its generation_config.json), as a fresh copy."""
    import copy

    config: GenerationConfig = copy.deepcopy(model.generation_config)
    return config


def _check_adapter(folder: Path) -> None:
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(
            str(folder), "not a PEFT adapter folder (it has no adapter_config.json)"
        )


def _load(folder: Path, device: str, dtype: str, adapter: str | None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a folder on ``device`` in ``dtype``, the adapter applied."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from llm4all.hf import _torch_dtype

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # llm4all shows its own progress

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if device == "cuda":
        kwargs["device_map"] = "auto"  # across every visible GPU when one is not enough
    elif device != "cpu":
        kwargs["device_map"] = device
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise ModelLoadError(str(folder), _first_line(exc)) from exc
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(Path(adapter).expanduser()))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(adapter, f"the adapter does not fit: {_first_line(exc)}") from exc
    model.eval()
    return model, tokenizer


def _info(
    model: Any,
    tokenizer: Any,
    folder: Path,
    name: str,
    device: str,
    dtype: str,
    options: TransformersOptions,
) -> ModelInfo:
    config = model.config
    trained = int(getattr(config, "max_position_embeddings", 0) or 0)
    n_ctx = options.n_ctx or trained or 4096
    if trained:
        n_ctx = min(n_ctx, trained)
    probe = tokenizer("a")["input_ids"]
    bos_id = tokenizer.bos_token_id
    where = device
    if device == "cuda":
        placed = sorted({str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()})
        where = f"cuda {'+'.join(placed) if placed else '0'} ({dtype})"
    elif device != "cpu":
        where = f"{device} ({dtype})"
    size, _ = weights_bytes(folder)
    return ModelInfo(
        name=name,
        architecture=str(getattr(config, "model_type", "unknown")),
        n_ctx_train=trained,
        n_ctx=n_ctx,
        n_vocab=int(getattr(config, "vocab_size", 0) or len(tokenizer)),
        n_params=int(model.num_parameters()),
        size_bytes=size,
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        bos_token=str(tokenizer.bos_token or ""),
        eos_token=str(tokenizer.eos_token or ""),
        add_bos=bool(probe) and bos_id is not None and probe[0] == bos_id,
        n_embd=int(getattr(config, "hidden_size", 0) or 0),
        metadata={
            "general.name": name,
            "general.architecture": str(getattr(config, "model_type", "unknown")),
            "transformers.folder": str(folder),
            "transformers.dtype": dtype,
            "transformers.adapter": options.adapter or "",
        },
        backend=BACKEND,
        device=where,
    )


def _free(device: str) -> None:
    """Give back what a failed or closed model held (Python objects, then the GPU's cache)."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]
