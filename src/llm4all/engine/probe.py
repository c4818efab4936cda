"""Prove that a model file loads before the process that needs it loads it.

llama.cpp trusts its input: some corrupt files make it end the whole process
(a failed ``GGML_ASSERT``, a division by zero) instead of returning an error,
and a server or a chat would die with it. So before the first native load of
a file, :func:`check_model_file` runs the static checks of
:mod:`llm4all.models.validate`, then loads the file in a child process that
decodes a short English sentence and reports whether the numbers make sense:
finite logits, and a next-token loss well below chance (a file whose weights
were scrambled loads fine and then talks nonsense). A child killed by a signal
becomes a :class:`ModelLoadError` that names the signal and llama.cpp's last
words. The outcome, good or bad, is remembered under the model store (by
device, inode, size, mtime and llama.cpp version: a hard link shares it, an
edited file or a new llama.cpp is proven again), so later loads cost a
``stat`` and a small read, and a client naming a bad model again costs no child.

Run as ``python -m llm4all.engine.probe FILE`` it is that child: one JSON line out.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm4all.errors import ModelLoadError

log = logging.getLogger(__name__)

#: Bumped when the proof changes, so that files are proven again.
PROOF_VERSION = 1
#: The sentence the child decodes: plain English that any text model predicts far
#: better than chance.
PROOF_TEXT = (
    "The capital of France is Paris. Water boils at one hundred degrees Celsius "
    "at sea level, and the sun rises in the east."
)
#: A mean next-token loss above this share of ln(vocabulary) is no better than guessing.
#: Measured (loss / ln(vocabulary)): SmolLM2, Qwen2.5-Coder-0.5B, Gemma-3-270m 0.21-0.25;
#: zeroed output norm 1.0.
GARBAGE_SHARE = 0.6
PROOF_TIMEOUT_S = float(os.environ.get("LLM4ALL_PROOF_TIMEOUT", "600"))
_CTX = 128
_ABORT_LINE = re.compile(r"^\S+\.(?:c|cc|cpp|h|hpp|cu|m):\d+: (.+)$")


def check_model_file(path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` is known (or now proven) to load and work."""
    from llm4all.models.gguf import read_metadata
    from llm4all.models.validate import check_model

    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelLoadError(str(path), "no such file") from None
    except OSError as exc:
        raise ModelLoadError(str(path), exc.strerror or "cannot read the file") from None
    record = _record_path(st)
    known = _recall(record, st)
    if known is None:
        check_model(read_metadata(path))
        t0 = time.perf_counter()
        known = _prove_in_child(path)
        log.info("proved %s in %.2f s: %s", path.name, time.perf_counter() - t0, known)
        transient = known.pop("transient", False)
        if not transient:
            _remember(record, st, path, known)
    if "error" in known:
        raise ModelLoadError(str(path), str(known["error"]))


def _record_path(st: os.stat_result) -> Path:
    from llm4all import paths

    return paths.models_dir() / ".proven" / f"{st.st_dev}-{st.st_ino}.json"


def _stamp(st: os.stat_result) -> dict[str, int | str]:
    from llama_cpp import __version__  # a newer llama.cpp may load what an older one could not

    return {
        "version": PROOF_VERSION,
        "llama_cpp": __version__,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _recall(record: Path, st: os.stat_result) -> dict[str, Any] | None:
    """The remembered outcome of proving this very file, if any."""
    try:
        data = json.loads(record.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in _stamp(st).items()):
        return None
    proof = data.get("proof")
    return proof if isinstance(proof, dict) else None


def _remember(record: Path, st: os.stat_result, path: Path, result: dict[str, Any]) -> None:
    data = _stamp(st) | {"path": str(path), "proof": result}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        _forget_deleted(record.parent)
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data) + "\n", "utf-8")
        os.replace(tmp, record)
    except OSError as exc:  # a read-only store: prove again next time
        log.warning("cannot record the proof of %s: %s", path, exc)


def _forget_deleted(folder: Path) -> None:
    """Drop the records of files that are gone, so the folder does not grow forever."""
    for old in folder.glob("*.json"):
        try:
            if not Path(json.loads(old.read_bytes())["path"]).exists():
                old.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            old.unlink(missing_ok=True)


def _prove_in_child(path: Path) -> dict[str, Any]:
    """What the child says: a report, or ``{"error": why}`` (``transient`` when worth retrying)."""
    cmd = [sys.executable, "-m", "llm4all.engine.probe", str(path)]
    # No gdb backtrace from ggml_abort: it takes seconds and says nothing to a user.
    env = os.environ | {"GGML_NO_BACKTRACE": "1"}
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", timeout=PROOF_TIMEOUT_S, env=env
        )
    except subprocess.TimeoutExpired:
        why = f"loading it did not finish within {PROOF_TIMEOUT_S:.0f} s"
        return {"error": why, "transient": True}
    if done.returncode < 0:
        number = -done.returncode
        why = last_words(done.stderr)
        return {
            "error": f"{why + ' ' if why else ''}(the loader crashed with signal "
            f"{_signal_name(number)})",
            # SIGKILL is the out-of-memory killer's (or a user's): the file may be fine.
            "transient": number == signal.SIGKILL,
        }
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = last_words(done.stderr) or f"the loader exited with code {done.returncode}"
        return {"error": why, "transient": True}
    return dict(report) if isinstance(report, dict) else {"error": "no report", "transient": True}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def last_words(stderr: str) -> str:
    """The line of a crashed loader's output that says why.

    Example: ``"/x/llama-model.cpp:571: GGML_ASSERT(n <= 512) failed\n#0 ..."``
    → ``"GGML_ASSERT(n <= 512) failed"``.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:  # ggml_abort writes "file:line: message"
        if match := _ABORT_LINE.match(line):
            return match[1][:300]
    for marker in ("terminate called", "error", "Error"):
        hit = next((line for line in lines if marker in line), None)
        if hit is not None:
            return hit[:300]
    return ""


# -- the child ---------------------------------------------------------------------------


def prove(path: Path) -> dict[str, Any]:
    """Load ``path``, decode :data:`PROOF_TEXT`, check the numbers (runs in the child)."""
    import llama_cpp as ll

    from llm4all.engine._native import NativeModel
    from llm4all.models.gguf import read_metadata
    from llm4all.models.kinds import kind_from_metadata
    from llm4all.params import LoadParams

    meta = read_metadata(path)
    # A decoder made for embeddings (a pooling type in its header) is proven as one:
    # its language-model head may be untrained.
    embedding = (
        kind_from_metadata(meta.architecture, meta.chat_template, meta.values) == "embedding"
    )
    params = LoadParams(n_ctx=_CTX, n_batch=_CTX, embedding=embedding, check_memory=False)
    native = NativeModel(path, params, n_threads=min(4, os.cpu_count() or 1))
    try:
        # Not past the trained window: an encoder's position table ends there (a GGML_ASSERT).
        window = min(_CTX - 1, int(ll.llama_model_n_ctx_train(native.model)))
        tokens = native.tokenize(PROOF_TEXT, True, False)[:window]
        if len(tokens) < 2:
            return {"error": "its tokenizer turns a plain English sentence into no tokens"}
        native.batch.clear()
        for pos, token in enumerate(tokens):
            native.batch.add(token, pos, 0, True)
        native.decode()
        return _check_embedding(native) if embedding else _check_logits(native, tokens)
    finally:
        native.close()


def _check_logits(native: Any, tokens: list[int]) -> dict[str, Any]:
    import llama_cpp as ll
    import numpy as np

    n_vocab = int(ll.llama_vocab_n_tokens(native.vocab))
    logits = np.ctypeslib.as_array(ll.llama_get_logits(native.ctx), (len(tokens), n_vocab))
    if not np.isfinite(logits).all():
        return {"error": "its weights give non-finite numbers (NaN or infinity): a corrupt file"}
    shifted = logits[:-1] - logits[:-1].max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(tokens) - 1), tokens[1:]].mean())
    chance = math.log(n_vocab)
    if loss > GARBAGE_SHARE * chance:
        return {
            "error": f"it predicts plain English no better than chance (loss {loss:.1f} nats, "
            f"chance {chance:.1f}): its weights are scrambled or it is not a text model"
        }
    return {"kind": "text", "loss": round(loss, 3), "chance": round(chance, 3)}


def _check_embedding(native: Any) -> dict[str, Any]:
    import llama_cpp as ll
    import numpy as np

    n_embd = int(ll.llama_model_n_embd(native.model))
    vector = np.ctypeslib.as_array(ll.llama_get_embeddings_seq(native.ctx, 0), (n_embd,))
    if not np.isfinite(vector).all() or not np.abs(vector).sum() > 0:
        return {"error": "its weights give an empty or non-finite embedding: a corrupt file"}
    return {"kind": "embedding"}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(message)s")
    try:
        report = prove(Path(argv[0]))
    except ModelLoadError as exc:
        report = {"error": exc.reason}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
