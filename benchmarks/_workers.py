"""Benchmark workers: one contender doing one task in a process of its own.

The harness starts ``python _workers.py TASK CONTENDER SPEC_JSON OUT_JSON``;
the worker loads the model, runs the task and writes its figures to
``OUT_JSON``. Every contender gets the same model file, thread count, context
size, prompt and greedy decoding (temperature 0, no repeat penalty).

Contenders:

- ``raw``: the ceiling. A minimal loop over llama-cpp-python's low-level API:
  ``llama_decode`` of one token, the native greedy sampler, batch of 1.
- ``hl``: llama-cpp-python's high-level ``Llama`` (what a Python user would pick).
- ``gpt4all``: the original project's ``gpt4all==2.8.2`` wheel.
- ``llm4all`` / ``llm4all-fresh``: llm4all's public API; ``-fresh`` forgets the
  KV cache before every chat turn (the "no prefix reuse" reference).

Only the standard library is imported at the top so that a cold-start worker
pays for exactly what its contender needs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

#: Prompt-processing batch for everyone; gpt4all 2.8.2 caps its own at 128.
N_BATCH = 512
GPT4ALL_MAX_BATCH = 128


class Contender:
    """One way of running the model. ``generated`` counts the tokens of the last stream."""

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        self.generated = 0

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        """Plain completion of ``prompt`` (no chat template), greedy; yields text pieces."""
        raise NotImplementedError

    def prompt_tokens(self, prompt: str) -> int:
        raise NotImplementedError

    def start_chat(self, system: str) -> None:
        raise NotImplementedError

    def say(self, text: str, max_tokens: int) -> Iterator[str]:
        """Send one user message of the chat; yields the answer's pieces."""
        raise NotImplementedError


_QUIET: list[Any] = []  # the ctypes callback must outlive every native log call


def quiet_llama() -> Any:
    """Import llama_cpp with llama.cpp's own log silenced (it writes to stderr)."""
    import llama_cpp as ll

    if not _QUIET:
        _QUIET.append(ll.llama_log_callback(lambda level, text, data: None))
        ll.llama_log_set(_QUIET[0], ctypes.c_void_p(0))
        ll.llama_backend_init()
    return ll


def tokenize(ll: Any, vocab: Any, text: str) -> list[int]:
    """``text`` in tokens, special tokens parsed, BOS added where the model wants it."""
    data = text.encode()
    buf = (ll.llama_token * (len(data) + 8))()
    n = ll.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    return list(buf[:n])


def vocab_tokenizer(path: str) -> Any:
    """A tokenize function for ``path`` from its vocabulary alone (no weights loaded)."""
    ll = quiet_llama()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(path.encode(), params)
    vocab = ll.llama_model_get_vocab(model)
    return lambda text: tokenize(ll, vocab, text)


class RawLlamaCpp(Contender):
    """llama.cpp through llama-cpp-python's low-level ctypes API, nothing else."""

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        super().__init__(path, threads, n_ctx)
        self.ll = ll = quiet_llama()
        self.model = ll.llama_model_load_from_file(path.encode(), ll.llama_model_default_params())
        cparams = ll.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, N_BATCH, N_BATCH
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.sampler = ll.llama_sampler_init_greedy()
        self.one = (ll.llama_token * 1)()
        self.buf = ctypes.create_string_buffer(256)

    def prompt_tokens(self, prompt: str) -> int:
        return len(tokenize(self.ll, self.vocab, prompt))

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        ll = self.ll
        ll.llama_memory_clear(ll.llama_get_memory(self.ctx), True)
        tokens = tokenize(ll, self.vocab, prompt)
        for start in range(0, len(tokens), N_BATCH):
            part = tokens[start : start + N_BATCH]
            arr = (ll.llama_token * len(part))(*part)  # must outlive the decode call
            self._decode(ll.llama_batch_get_one(arr, len(part)))
        self.generated = 0
        while self.generated < max_tokens:
            token = ll.llama_sampler_sample(self.sampler, self.ctx, -1)
            if ll.llama_vocab_is_eog(self.vocab, token):
                return
            self.generated += 1
            n = ll.llama_token_to_piece(self.vocab, token, self.buf, len(self.buf), 0, False)
            yield self.buf.raw[:n].decode("utf-8", "replace")
            if self.generated < max_tokens:
                self.one[0] = token
                self._decode(ll.llama_batch_get_one(self.one, 1))

    def _decode(self, batch: Any) -> None:
        rc = self.ll.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed: {rc}")


class HighLevel(Contender):
    """llama-cpp-python's ``Llama`` class: ``create_completion`` / ``create_chat_completion``."""

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        super().__init__(path, threads, n_ctx)
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_batch=N_BATCH,
            n_ubatch=N_BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.messages: list[dict[str, str]] = []

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.llm.tokenize(prompt.encode(), add_bos=True, special=True))

    def _count(self, _ids: Any, _logits: Any) -> bool:
        self.generated += 1  # once per sampled token (end of text too), and once more at the end
        return False

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        from llama_cpp import StoppingCriteriaList

        self.generated = 0
        chunks = self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            stream=True,
            stopping_criteria=StoppingCriteriaList([self._count]),
        )
        reason = None
        for chunk in chunks:
            reason = chunk["choices"][0]["finish_reason"] or reason
            yield chunk["choices"][0]["text"]
        self.generated = min(self.generated - 1 - (reason == "stop"), max_tokens)

    def start_chat(self, system: str) -> None:
        self.messages = [{"role": "system", "content": system}]

    def say(self, text: str, max_tokens: int) -> Iterator[str]:
        self.messages.append({"role": "user", "content": text})
        answer = []
        chunks = self.llm.create_chat_completion(
            self.messages,
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.0,
            stream=True,
        )
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:  # the first chunk only announces the role
                answer.append(piece)
                yield piece
        self.messages.append({"role": "assistant", "content": "".join(answer)})


class Gpt4All(Contender):
    """The ``gpt4all==2.8.2`` wheel (its own llama.cpp build from mid-2024)."""

    # ChatML, the format of both Qwen2.5 and SmolLM2; gpt4all wants it spelled out.
    TEMPLATE = "<|im_start|>user\n{0}<|im_end|>\n<|im_start|>assistant\n{1}<|im_end|>\n"

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        super().__init__(path, threads, n_ctx)
        with contextlib.redirect_stdout(sys.stderr):
            from gpt4all import GPT4All

            self.g = GPT4All(
                model_name=os.path.basename(path),
                model_path=os.path.dirname(path),
                allow_download=False,
                device="cpu",
                n_threads=threads,
                n_ctx=n_ctx,
            )
        self._session: Any = None

    def prompt_tokens(self, prompt: str) -> int:
        return -1  # the wheel does not expose its tokenizer

    def _count(self, _token_id: int, _text: str) -> bool:
        self.generated += 1
        return True

    def _generate(self, prompt: str, max_tokens: int) -> Iterator[str]:
        self.generated = 0
        yield from self.g.generate(
            prompt,
            max_tokens=max_tokens,
            temp=0.0,
            top_k=1,
            repeat_penalty=1.0,
            n_batch=GPT4ALL_MAX_BATCH,
            streaming=True,
            callback=self._count,
        )

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        return self._generate(prompt, max_tokens)

    def start_chat(self, system: str) -> None:
        block = f"<|im_start|>system\n{system}<|im_end|>\n"
        self._session = self.g.chat_session(system_prompt=block, prompt_template=self.TEMPLATE)
        self._session.__enter__()

    def say(self, text: str, max_tokens: int) -> Iterator[str]:
        return self._generate(text, max_tokens)


class Llm4all(Contender):
    """llm4all through its public API: ``Model.stream`` and ``ChatSession.send``."""

    fresh = False

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        super().__init__(path, threads, n_ctx)
        from llm4all import Model

        self.model = Model(path, n_ctx=n_ctx, n_threads=threads, n_batch=N_BATCH)
        self.session: Any = None

    def prompt_tokens(self, prompt: str) -> int:
        return self.model.count_tokens(prompt)

    def stream(self, prompt: str, max_tokens: int) -> Iterator[str]:
        response = self.model.stream(
            prompt, raw=True, temperature=0, max_tokens=max_tokens, repeat_penalty=1.0
        )
        yield from response
        assert response.completion is not None
        self.generated = response.completion.usage.completion_tokens

    def start_chat(self, system: str) -> None:
        self.session = self.model.chat(system_prompt=system, temperature=0, repeat_penalty=1.0)

    def say(self, text: str, max_tokens: int) -> Iterator[str]:
        if self.fresh:
            self.model.engine.reset()  # type: ignore[attr-defined]
        return iter(self.session.send(text, max_tokens=max_tokens))


class Llm4allFresh(Llm4all):
    fresh = True


CONTENDERS: dict[str, type[Contender]] = {
    "raw": RawLlamaCpp,
    "hl": HighLevel,
    "gpt4all": Gpt4All,
    "llm4all": Llm4all,
    "llm4all-fresh": Llm4allFresh,
}
WARMUP_PROMPT = "Once upon a time"


def timed_stream(pieces: Iterator[str]) -> dict[str, Any]:
    """Drain a stream; first and last piece times relative to the call."""
    t0 = time.perf_counter()
    first = last = None
    text = []
    for piece in pieces:
        last = time.perf_counter()
        if first is None:
            first = last
        text.append(piece)
    end = time.perf_counter()
    return {
        "ttft_s": (first if first is not None else end) - t0,
        "span_s": (last - first) if first is not None and last is not None else 0.0,
        "total_s": end - t0,
        "text": "".join(text),
    }


def task_decode(c: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    for _ in c.stream(WARMUP_PROMPT, 4):  # threads spun up, weights paged in
        pass
    out = timed_stream(c.stream(spec["prompt"], spec["max_tokens"]))
    n = c.generated
    out["tokens"] = n
    # The first token carries the prompt; decode speed is the rest.
    out["decode_tps"] = (n - 1) / out["span_s"] if n > 1 and out["span_s"] > 0 else 0.0
    out["text"] = out["text"][:200]
    return out


def task_prefill(c: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    for _ in c.stream(WARMUP_PROMPT, 2):
        pass
    n_prompt = c.prompt_tokens(spec["prompt"])
    out = timed_stream(c.stream(spec["prompt"], 1))
    out["prompt_tokens"] = n_prompt if n_prompt > 0 else spec["prompt_tokens"]
    # Prompt processing ends when the first token is out (one sampling step rides along).
    out["prefill_tps"] = out["prompt_tokens"] / out["ttft_s"]
    del out["text"]
    return out


def task_chat(c: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    for _ in c.stream(WARMUP_PROMPT, 2):  # turn 1 should not pay for thread start-up
        pass
    c.start_chat(spec["system"])
    ttft, total, answers = [], [], []
    for message in spec["messages"]:
        out = timed_stream(c.say(message, spec["max_tokens"]))
        ttft.append(out["ttft_s"])
        total.append(out["total_s"])
        answers.append(out["text"][:80])
    return {"ttft_s": ttft, "total_s": total, "answers": answers}


def task_first(c: Contender, spec: dict[str, Any]) -> dict[str, Any]:
    """Cold start: the first piece goes to stdout the moment it exists."""
    for piece in c.stream(spec["prompt"], spec["max_tokens"]):
        sys.stdout.write(piece or " ")
        sys.stdout.flush()
    sys.stdout.write("\n")
    return {"tokens": c.generated}


TASKS = {"decode": task_decode, "prefill": task_prefill, "chat": task_chat, "first": task_first}


def main(argv: list[str]) -> int:
    task, name, spec_json, out_path = argv
    spec = json.loads(spec_json)
    t0 = time.perf_counter()
    contender = CONTENDERS[name](spec["model"], spec["threads"], spec["n_ctx"])
    result = {"load_s": time.perf_counter() - t0, **TASKS[task](contender, spec)}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)  # skip native destructors: some wheels crash while unloading


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
