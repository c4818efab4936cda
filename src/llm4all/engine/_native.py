"""Thin owners of llama.cpp's native handles (model, context, batch, sampler).

This is the only module that calls llama-cpp-python's low-level ctypes API.
Each wrapper frees its handle exactly once, through an ``ExitStack`` owned by
:class:`NativeModel`, so an engine that fails half-way through loading leaks
nothing. llama.cpp's own log is routed into Python logging here, once.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import llama_cpp as ll

from llm4all.errors import GrammarError, ModelLoadError
from llm4all.params import GenerationParams, LoadParams

log = logging.getLogger(__name__)
native_log = logging.getLogger("llm4all.llama_cpp")

# ggml_log_level: NONE=0 DEBUG=1 INFO=2 WARN=3 ERROR=4 CONT=5 (continues the last line)
_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
}
_last_level = logging.DEBUG
_errors: list[str] = []  # llama.cpp's error lines since the last load began
_init_lock = threading.Lock()
_initialised = False


@ll.llama_log_callback  # type: ignore[untyped-decorator]
def _log_callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_level
    lvl = _LEVELS.get(level, _last_level)
    _last_level = lvl
    message = text.decode("utf-8", errors="replace").rstrip()
    if lvl >= logging.ERROR and message:
        _errors.append(message)
    if message and native_log.isEnabledFor(lvl):
        native_log.log(lvl, "%s", message)


def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log into logging."""
    global _initialised
    with _init_lock:
        if _initialised:
            return
        ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _initialised = True


def supports_gpu_offload() -> bool:
    init_backend()
    return bool(ll.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's build summary: its backends (``CUDA : …``, ``CPU : AVX2 = 1 …``)."""
    init_backend()
    return bytes(ll.llama_print_system_info()).decode("utf-8", "replace")


class NativeModel:
    """A loaded model and one context on it, freed together by :meth:`close`."""

    def __init__(self, path: Path, params: LoadParams, n_threads: int) -> None:
        init_backend()
        self._stack = ExitStack()
        try:
            self._load(path, params, n_threads)
        except BaseException:
            self._stack.close()
            raise

    def _load(self, path: Path, params: LoadParams, n_threads: int) -> None:
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = params.n_gpu_layers
        if not path.is_file():
            raise ModelLoadError(str(path), "no such file")
        _errors.clear()
        model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(str(path), _load_failure_reason())
        self._stack.callback(ll.llama_model_free, model)
        self.model = model
        self.vocab = ll.llama_model_get_vocab(model)

        n_batch = native_batch(params)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = params.n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = params.n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        if params.embedding:
            cparams.embeddings = True
            # Split per-sequence KV streams pool only the last part of texts of unequal
            # length in a shared batch; one unified buffer pools each text whole.
            cparams.kv_unified = True
            cparams.pooling_type = ll.LLAMA_POOLING_TYPE_MEAN
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            raise ModelLoadError(str(path), "llama.cpp could not create a context (out of memory?)")
        self._stack.callback(ll.llama_free, ctx)
        self.ctx = ctx
        if params.lora:
            self._apply_lora(Path(params.lora))
        self.memory = ll.llama_get_memory(ctx)
        # Each sequence gets its own share of the cells: n_ctx / n_seq_max tokens.
        self.n_ctx = int(ll.llama_n_ctx_seq(ctx))
        # llama.cpp caps the batch at the n_ctx asked for, but pads n_ctx (128 -> 256): a
        # decode of more tokens than its cap ends the process (GGML_ASSERT n_tokens_all).
        self.n_batch = min(n_batch, int(ll.llama_n_batch(ctx)))
        self.batch = Batch(n_batch, params.n_seq_max)
        self._stack.callback(self.batch.free)

    def _apply_lora(self, path: Path) -> None:
        """Apply a GGUF LoRA adapter at full scale (llama.cpp frees it with the model)."""
        if not path.is_file():
            raise ModelLoadError(str(path), "no such LoRA adapter file")
        _errors.clear()
        adapter = ll.llama_adapter_lora_init(self.model, str(path).encode())
        if not adapter:
            raise ModelLoadError(str(path), "not a LoRA adapter of this model" + _detail())
        adapters = (ll.llama_adapter_lora_p_ctypes * 1)(adapter)
        if ll.llama_set_adapters_lora(self.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)) != 0:
            raise ModelLoadError(str(path), "llama.cpp could not apply the LoRA adapter")

    def close(self) -> None:
        self._stack.close()

    # -- metadata ---------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        buf = ctypes.create_string_buffer(4096)
        for i in range(ll.llama_model_meta_count(self.model)):
            n = ll.llama_model_meta_key_by_index(self.model, i, buf, len(buf))
            key = buf.value.decode("utf-8", "replace") if n >= 0 else ""
            if not key or (
                key.startswith("tokenizer.ggml.")
                and key.endswith(("tokens", "merges", "scores", "token_type"))
            ):
                continue
            size = ll.llama_model_meta_val_str_by_index(self.model, i, None, 0)
            if size < 0:
                continue
            vbuf = ctypes.create_string_buffer(size + 1)
            ll.llama_model_meta_val_str_by_index(self.model, i, vbuf, size + 1)
            out[key] = vbuf.value.decode("utf-8", "replace")
        return out

    def sizes(self) -> dict[str, int]:
        """The model's counts: trained context, vocabulary, parameters, embedding width."""
        return {
            "n_ctx_train": int(ll.llama_model_n_ctx_train(self.model)),
            "n_vocab": int(ll.llama_vocab_n_tokens(self.vocab)),
            "n_params": int(ll.llama_model_n_params(self.model)),
            "n_embd": int(ll.llama_model_n_embd(self.model)),
        }

    def n_layers(self) -> int:
        """How many repeating layers the model has (what ``n_gpu_layers`` counts)."""
        return int(ll.llama_model_n_layer(self.model))

    def special_tokens(self) -> tuple[str, str, bool]:
        """(BOS text, end-of-turn or EOS text, whether BOS is added)."""
        bos = int(ll.llama_vocab_bos(self.vocab))
        eos = int(ll.llama_vocab_eos(self.vocab))
        eot = int(ll.llama_vocab_eot(self.vocab))
        add_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        return self.token_text(bos), self.token_text(eot if eot >= 0 else eos), add_bos

    def chat_template(self) -> str | None:
        raw = ll.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", "replace") if raw else None

    # -- tokens -----------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:  # buffer too small: -n is the size needed
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    # -- KV cache ---------------------------------------------------------------
    def forget(self, seq_id: int, from_pos: int) -> bool:
        """Drop KV entries of ``seq_id`` from position ``from_pos`` on."""
        return bool(ll.llama_memory_seq_rm(self.memory, seq_id, from_pos, -1))

    def copy_seq(self, src: int, dst: int) -> None:
        """Copy every KV cell of sequence ``src`` into ``dst`` (``dst`` cleared first)."""
        self.forget(dst, 0)
        ll.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def clear_memory(self) -> None:
        ll.llama_memory_clear(self.memory, True)

    def set_threads(self, n: int) -> None:
        ll.llama_set_n_threads(self.ctx, n, n)

    def logits(self, index: int) -> Any:
        """The logits at batch ``index``, as a NumPy view (valid until the next decode)."""
        import numpy as np

        n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        return np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, index), (n_vocab,))

    def sequence_embedding(self, seq_id: int, n_embd: int) -> Any:
        """The pooled embedding of sequence ``seq_id`` after a decode, as a NumPy view."""
        import numpy as np

        return np.ctypeslib.as_array(ll.llama_get_embeddings_seq(self.ctx, seq_id), (n_embd,))

    def decode(self) -> None:
        rc = ll.llama_decode(self.ctx, self.batch.raw)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} (KV cache full or aborted)")

    # -- scoring ----------------------------------------------------------------
    def token_logprobs(
        self, tokens: Sequence[int], first: int = 1, best: list[int] | None = None
    ) -> list[float]:
        """Log-probability (nats) of each of ``tokens[first:]`` given all tokens before it.

        Teacher forcing on sequence 0, which is cleared first and holds ``tokens``
        afterwards. The caller keeps ``len(tokens) <= n_ctx`` and ``first >= 1``.
        ``best``, when given, receives the most likely token at each scored position
        (the export's top-1 agreement check).
        Example: ``token_logprobs([bos, a, b], first=1)`` → ``[log p(a|bos), log p(b|bos a)]``.
        """
        import numpy as np

        n_vocab = int(ll.llama_vocab_n_tokens(self.vocab))
        self.forget(0, 0)
        out: list[float] = []
        # At most SCORE_BATCH rows of logits at a time: 256 x 152k floats is 155 MB.
        step = min(self.n_batch, SCORE_BATCH)
        for start in range(0, len(tokens), step):
            part = range(start, min(start + step, len(tokens)))
            self.batch.clear()
            for pos in part:  # the logits at pos score the token at pos + 1
                self.batch.add(tokens[pos], pos, 0, first - 1 <= pos < len(tokens) - 1)
            self.decode()
            scored = [pos + 1 for pos in part if first - 1 <= pos < len(tokens) - 1]
            if not scored:
                continue
            # Rows come in batch order, only for the positions that asked for logits.
            rows = np.ctypeslib.as_array(ll.llama_get_logits(self.ctx), (len(scored), n_vocab))
            targets = np.asarray([tokens[i] for i in scored])
            if best is not None:
                best.extend(rows.argmax(axis=1).tolist())
            for lo in range(0, len(scored), 64):  # exp() of 64 rows at a time bounds the memory
                chunk = rows[lo : lo + 64]
                peak = chunk.max(axis=1)
                norm = np.log(np.exp(chunk - peak[:, None]).sum(axis=1, dtype=np.float64)) + peak
                picked = chunk[np.arange(len(chunk)), targets[lo : lo + 64]]
                out.extend((picked - norm).tolist())
        return out


def native_batch(params: LoadParams) -> int:
    """The batch size llama.cpp gets: for embeddings, a multiple of ``n_seq_max``.

    A mean-pooled batch of 16 sequences and 300 tokens fails a ``GGML_ASSERT``
    (``ggml_can_mul_mat``) while llama.cpp builds its graph, ending the process.
    Example: ``n_batch=1365, n_seq_max=16, embedding=True`` → 1360.
    """
    if not params.embedding:
        return params.n_batch
    return max(params.n_seq_max, params.n_batch // params.n_seq_max * params.n_seq_max)


#: Most positions one decode of :meth:`NativeModel.token_logprobs` asks logits for.
SCORE_BATCH = 256


class Batch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens."""

    def __init__(self, capacity: int, n_seq_max: int) -> None:
        self.capacity = capacity
        self.raw = ll.llama_batch_init(capacity, 0, n_seq_max)
        self._freed = False

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, want_logits: bool) -> int:
        """Append one token; returns its index (the index to sample from)."""
        i: int = self.raw.n_tokens
        if i >= self.capacity:
            raise OverflowError("batch is full")
        self.raw.token[i] = token
        self.raw.pos[i] = pos
        self.raw.n_seq_id[i] = 1
        self.raw.seq_id[i][0] = seq_id
        self.raw.logits[i] = want_logits
        self.raw.n_tokens = i + 1
        return i

    def free(self) -> None:
        if not self._freed:
            ll.llama_batch_free(self.raw)
            self._freed = True


class Sampler:
    """llama.cpp's native sampler chain built from :class:`GenerationParams`.

    A grammar is kept out of the chain (see :meth:`_sample_constrained`).
    """

    def __init__(self, native: NativeModel, params: GenerationParams, seed: int) -> None:
        self._chain: Any = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        self._grammar: Any = None
        self._candidates: Any = None  # the token data array a grammar request samples from
        try:
            self._build(native, params, seed)
        except BaseException:
            self.free()
            raise

    def _add(self, sampler: Any) -> None:
        ll.llama_sampler_chain_add(self._chain, sampler)

    def _build(self, native: NativeModel, params: GenerationParams, seed: int) -> None:
        grammar = grammar_text(params)
        if grammar is not None:
            self._grammar = _init_grammar(native, grammar)
            if not self._grammar:
                raise GrammarError("llama.cpp rejected the grammar (see the log with --debug)")
        n_vocab = ll.llama_vocab_n_tokens(native.vocab)
        if self._grammar is not None:
            self._candidates = (ll.llama_token_data * n_vocab)()
        # A window longer than the context sees nothing more, but llama.cpp allocates it
        # whole: a request's repeat_last_n of 4.6e15 grew a server by 2.9 GB (found by fuzzing).
        last_n = native.n_ctx if params.repeat_last_n == -1 else params.repeat_last_n
        last_n = min(last_n, native.n_ctx)
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            self._add(
                ll.llama_sampler_init_penalties(
                    n_vocab,
                    last_n,
                    params.repeat_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if params.greedy:  # params.py's one definition (MIN_TEMPERATURE)
            self._add(ll.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(ll.llama_sampler_init_top_k(min(params.top_k, n_vocab)))  # an int32 in C
        if params.top_p < 1.0:
            self._add(ll.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            self._add(ll.llama_sampler_init_min_p(params.min_p, 1))
        self._add(ll.llama_sampler_init_temp(params.temperature))
        self._add(ll.llama_sampler_init_dist(seed))

    def sample(self, native: NativeModel, index: int) -> int:
        """Sample (and accept) a token from the logits at batch ``index``."""
        if self._grammar is None:
            return int(ll.llama_sampler_sample(self._chain, native.ctx, index))
        return self._sample_constrained(native, index)

    def _sample_constrained(self, native: NativeModel, index: int) -> int:
        """The grammar masks, the chain picks, and only an allowed token is accepted.

        llama.cpp ends the process (``std::terminate``) when a grammar is made to
        accept a token it forbids, and the chain can pick one: NaN logits (from a
        ``repeat_penalty`` of 0 times a masked -inf, say) break its sorting. So a
        forbidden pick becomes the most likely allowed token, and where the grammar
        allows nothing at all the answer ends (end of text, not accepted).
        """
        import numpy as np

        n_vocab = len(self._candidates)
        data = np.ctypeslib.as_array(self._candidates)  # id, logit, p per token
        data["id"] = np.arange(n_vocab, dtype=np.int32)
        data["logit"] = np.ctypeslib.as_array(
            ll.llama_get_logits_ith(native.ctx, index), (n_vocab,)
        )
        data["p"] = 0.0
        cur = ll.llama_token_data_array(self._candidates, n_vocab, -1, False)
        ll.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        masked = data["logit"].copy()  # by token id: the grammar does not reorder
        ll.llama_sampler_apply(self._chain, ctypes.byref(cur))  # may reorder and reallocate
        token = int(cur.data[cur.selected].id) if 0 <= cur.selected < cur.size else -1
        if not (0 <= token < n_vocab and np.isfinite(masked[token])):
            best = int(np.argmax(masked))
            if not np.isfinite(masked[best]):  # nothing allowed: end here, accepting nothing
                ends = [ll.llama_vocab_eos(native.vocab), ll.llama_vocab_eot(native.vocab)]
                if max(ends) < 0:
                    raise GrammarError("the grammar allows no next token")
                return int(max(ends) if min(ends) < 0 else ends[0])
            token = best
        ll.llama_sampler_accept(self._grammar, token)
        ll.llama_sampler_accept(self._chain, token)
        return token

    def free(self) -> None:
        if self._chain is not None:
            ll.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            ll.llama_sampler_free(self._grammar)
        self._grammar = None


def _init_grammar(native: NativeModel, grammar: str) -> Any:
    """llama.cpp's grammar sampler; a lazy one for a grammar headed by its trigger.

    A lazy grammar (``chat.tools.call_grammar``: a tool call's arguments) lets
    everything through until its trigger regex matches the answer so far, then
    constrains from the regex's first group on (llama.cpp's lazy grammars, as
    its server uses for tool calls).
    """
    from llm4all.chat.tools import LAZY_HEADER

    if not grammar.startswith(LAZY_HEADER):
        return ll.llama_sampler_init_grammar(native.vocab, grammar.encode(), b"root")
    first, _, body = grammar.partition("\n")
    patterns = (ctypes.c_char_p * 1)(first[len(LAZY_HEADER) :].encode())
    return ll.llama_sampler_init_grammar_lazy_patterns(
        native.vocab, body.encode(), b"root", patterns, 1, None, 0
    )


def grammar_text(params: GenerationParams) -> str | None:
    """The GBNF grammar for these params: given directly or compiled from a JSON schema."""
    if params.grammar is not None:
        return params.grammar
    if params.json_schema is None:
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if params.json_schema.strip() in ("", "{}"):
        return str(JSON_GBNF)  # any JSON value (OpenAI's json_object mode)
    try:
        return str(json_schema_to_gbnf(params.json_schema))
    except Exception as exc:  # the converter raises bare Exceptions/ValueErrors
        raise GrammarError(f"cannot convert the JSON schema: {exc}") from exc


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the shared prefix of two token lists. Example: ``([1,2,3],[1,2,4]) -> 2``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def quantize_model(source: Path, dest: Path, ftype: str, n_threads: int = 0) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer (``ftype``: Q4_K_M, Q5_K_M, Q8_0…).

    Written under a temporary name and renamed, so ``dest`` is whole or absent.
    """
    code = getattr(ll, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}", None)
    if code is None:
        raise ModelLoadError(str(source), f"llama.cpp has no quantization type {ftype!r}")
    init_backend()
    params = ll.llama_model_quantize_default_params()
    params.ftype = code
    params.nthread = n_threads
    tmp = dest.with_name(dest.name + ".part")
    _errors.clear()
    try:
        if ll.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params)):
            raise ModelLoadError(str(source), "llama.cpp could not quantize it" + _detail())
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _detail() -> str:
    return f" ({_errors[0].split(': ', 1)[-1]})" if _errors else ""


def _load_failure_reason() -> str:
    # The first error line names the cause; llama.cpp prefixes it with a function name.
    detail = _errors[0].split(": ", 1)[-1] if _errors else ""
    generic = "not a valid GGUF model, truncated, or an unsupported architecture"
    return f"{generic} ({detail})" if detail else generic
