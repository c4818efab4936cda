"""The one error hierarchy of llm4all.

Every error a user can cause or meet derives from :class:`Llm4allError` and
carries structured fields, so that the two edges that translate errors (the
CLI's one-line message and the HTTP layer's OpenAI-style JSON) need no string
parsing. ``str(error)`` is always one complete sentence a user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence


class Llm4allError(Exception):
    """Base class of every error llm4all raises on purpose."""


class ModelNotFound(Llm4allError):
    """A model name matched nothing in the catalog, the store or the file system."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = (
            f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if suggestions
            else "; any GGUF on Hugging Face can be pulled as hf.co/USER/REPO"
        )
        super().__init__(f"unknown model {name!r}{hint} (see `llm4all models list`)")


class ModelNotInstalled(Llm4allError):
    """A catalog model is known but its file is not in the store and downloads are off."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"model {name!r} is not installed; run `llm4all models pull {name}`")


class ModelLoadError(Llm4allError):
    """A model file could not be loaded (corrupt, truncated, not a GGUF, unsupported)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot load model {path}: {reason}")


class InsufficientMemory(Llm4allError):
    """Loading the model would need more RAM than the machine has free."""

    def __init__(self, needed_bytes: int, available_bytes: int) -> None:
        self.needed_bytes = needed_bytes
        self.available_bytes = available_bytes
        super().__init__(
            f"model needs about {needed_bytes / 2**30:.1f} GiB of RAM "
            f"but only {available_bytes / 2**30:.1f} GiB is available; close other programs, "
            "pick a smaller model, or pass --no-check-memory (check_memory=False) to try anyway"
        )


class ChecksumMismatch(Llm4allError):
    """A downloaded or assembled file did not match its catalog size or sha256."""

    def __init__(self, path: str, expected: str, actual: str, removed: bool = True) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.removed = removed
        tail = "; the file was removed, pull it again" if removed else ""
        super().__init__(f"checksum mismatch for {path}: expected {expected}, got {actual}{tail}")


class DownloadError(Llm4allError):
    """A model source failed to deliver its file (HTTP error, pip failure, no space)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"download from {source} failed: {reason}")


class QuantizationNotFound(ModelNotFound):
    """A Hugging Face repository has GGUF files, but none of the quantization asked for."""

    def __init__(self, repo: str, quant: str, available: Sequence[str]) -> None:
        self.repo = repo
        self.quant = quant
        self.available = list(available)
        Llm4allError.__init__(
            self,
            f"{repo} has no {quant} file; it has {', '.join(self.available)} "
            f"(e.g. `llm4all models pull {repo}:{self.available[0]}`)",
        )
        self.name = f"{repo}:{quant}"
        self.suggestions = [f"{repo}:{q}" for q in self.available]


def _done_so_far(have: int, total: int | None) -> str:
    """Example: ``_done_so_far(200e6, 490e6)`` → ``"at 41 % (200 of 490 MB)"``."""

    def mb(n: float) -> str:
        return f"{n / 1e6:.0f}" if n >= 10e6 else f"{n / 1e6:.1f}"

    if not total:
        return f"after {mb(have)} MB"
    return f"at {100 * have // total} % ({mb(have)} of {mb(total)} MB)"


class DownloadIncomplete(DownloadError):
    """The connection closed before the whole file came; what came is kept for a resume."""

    def __init__(self, source: str, have: int, total: int | None) -> None:
        self.have = have
        self.total = total
        super().__init__(
            source,
            f"the connection closed {_done_so_far(have, total)}; "
            "run the same command again to resume",
        )


class DownloadInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a download; the part is kept and the same command resumes it.

    A ``KeyboardInterrupt`` (not an :class:`Llm4allError`), so that code which
    catches ``Exception`` still lets Ctrl-C through; the CLI prints its message
    instead of "aborted".
    """

    def __init__(self, name: str, have: int, total: int | None) -> None:
        self.name = name
        self.have = have
        self.total = total
        super().__init__(
            f"{name}: interrupted {_done_so_far(have, total)}; run the same command again to resume"
        )


class InsufficientDisk(DownloadError):
    """There is not enough free space for a download."""

    def __init__(self, path: str, needed_bytes: int, free_bytes: int) -> None:
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        super().__init__(
            path,
            f"needs {needed_bytes / 2**20:.0f} MiB of free disk but only "
            f"{free_bytes / 2**20:.0f} MiB is free",
        )


class ContextOverflow(Llm4allError):
    """A prompt does not fit in the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window holds {n_ctx}; "
            "shorten it or load the model with a larger n_ctx"
        )


class InvalidParameter(Llm4allError, ValueError):
    """A generation or load parameter is out of range; ``field`` names it."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"invalid {field}={value!r}: expected {expected}")


class TemplateError(Llm4allError):
    """A chat template failed to render (or the model has none and no override)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"chat template error: {reason}")


class GrammarError(Llm4allError):
    """A grammar or JSON schema could not be compiled into a sampler."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid grammar: {reason}")


class Unsupported(InvalidParameter):
    """The engine lacks a capability a request needs (a grammar on a remote, say)."""

    def __init__(self, what: str, capability: str, backend: str = "this backend") -> None:
        self.what = what
        self.capability = capability
        Llm4allError.__init__(self, f"{what} is not supported by {backend}")
        self.field, self.value, self.expected = capability, what, f"a backend with {capability}"


class ChatNotFound(Llm4allError):
    """A stored chat id does not exist."""

    def __init__(self, chat_id: str) -> None:
        self.chat_id = chat_id
        super().__init__(f"no chat with id {chat_id!r} (see `llm4all chats list`)")


class StoreError(Llm4allError):
    """The SQLite store could not be opened or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"database {path}: {reason}")


class StorageBusy(StoreError):
    """Another writer held a database's lock for longer than the busy timeout; retry later."""

    def __init__(self, path: str, waited_s: float) -> None:
        self.waited_s = waited_s
        super().__init__(
            path,
            f"the database is locked: another program kept writing to it for over "
            f"{waited_s:g} s; try again",
        )


class StorageFull(StoreError):
    """The disk that holds a database is full (or the database reached its size limit)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "the database or its disk is full; free some space and try again")


class CollectionNotFound(Llm4allError):
    """No LocalDocs collection has this name (or it was removed while in use)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no LocalDocs collection named {name!r} (see `llm4all docs ls`)")


class AmbiguousChatId(ChatNotFound):
    """A chat id prefix matches more than one chat; ``matches`` lists some of them."""

    def __init__(self, prefix: str, matches: Sequence[str]) -> None:
        super().__init__(prefix)
        self.matches = list(matches)
        shown = ", ".join(self.matches[:5])
        self.args = (f"chat id {prefix!r} is ambiguous: it matches {shown}; type more of the id",)


class MessageNotFound(Llm4allError):
    """A stored message id does not exist."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"no message with id {message_id!r}")
