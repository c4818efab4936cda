"""Saving an answer while it streams, so that a killed program keeps what was said.

An :class:`AnswerRecorder` follows one assistant answer: the message is
created at its first text, rewritten at most every :data:`SAVE_EVERY` seconds
while it grows, and completed with its stats by :meth:`AnswerRecorder.finish`.
A process killed outright (``kill -9``, a crash) therefore loses at most the
text of the last :data:`SAVE_EVERY` seconds.

The rewrites while the answer grows commit without waiting for the disk
(``ChatStore.update_message(durable=False)``: a fraction of a millisecond
instead of an fsync of several), so the token loop does not notice them; they
survive the program's death, and the final save makes the whole answer
durable. An answer stopped before its first word is not stored at all (no
empty message), and a rate that cannot be measured is left empty, never 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from llm4all.store.chats import ChatStore, StoredMessage

#: Seconds between saves of a growing answer: the most a hard kill can lose.
SAVE_EVERY = 0.5


class AnswerRecorder:
    """One assistant answer of a stored chat, saved as it grows.

    Example: ``rec = AnswerRecorder(store, chat.id); rec.add("Paris", 1); rec.finish("stop")``
    """

    def __init__(
        self,
        store: ChatStore,
        chat_id: str,
        *,
        model: str | None = None,
        prompt_tokens: int | None = None,
        sources: Sequence[Mapping[str, Any]] | None = None,
        every: float = SAVE_EVERY,
    ) -> None:
        self.store, self.chat_id, self.model = store, chat_id, model
        self.prompt_tokens, self.sources, self.every = prompt_tokens, sources, every
        self.started = time.perf_counter()
        self.pieces: list[str] = []
        self.tokens = 0
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.message: StoredMessage | None = None
        self._saved_at = 0.0
        self._saved_text = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, text: str, n_tokens: int = 0) -> None:
        """Note new text (and the tokens behind it); save when the last save is old enough."""
        now = time.perf_counter()
        if n_tokens:
            self.tokens += n_tokens
            self.first_token = self.first_token or now
            self.last_token = now
        if text:
            self.pieces.append(text)
            if self.message is None or now - self._saved_at >= self.every:
                self._save(self.text, durable=False)

    def finish(self, finish_reason: str, **stats: Any) -> StoredMessage | None:
        """Save the whole answer with its stats; None when a stopped answer had no text.

        ``stats`` are :meth:`ChatStore.add_message`'s keywords (``completion_tokens``,
        ``tokens_per_second``, …); those missing, None or a 0 rate (an answer stopped
        before the engine reported them) are measured here.
        """
        if finish_reason == "cancelled" and not self.text and self.message is None:
            return None
        given = {k: v for k, v in stats.items() if v is not None}
        if not given.get("tokens_per_second"):
            given.pop("tokens_per_second", None)
        measured = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "tokens_per_second": self.tokens_per_second(),
            "time_to_first_token": self.first_token - self.started if self.first_token else None,
        }
        # The sources again: by now the answer's citations were checked into them.
        sources = {"sources": self.sources} if self.sources else {}
        return self._save(self.text, finish_reason=finish_reason, **(measured | given | sources))

    def tokens_per_second(self) -> float | None:
        """The decode rate so far (the first token excluded, as the engine counts it)."""
        if self.first_token is None or self.last_token is None or self.tokens <= 1:
            return None
        elapsed = self.last_token - self.first_token
        return (self.tokens - 1) / elapsed if elapsed > 0 else None

    def _save(self, text: str, durable: bool = True, **stats: Any) -> StoredMessage:
        self._saved_at = time.perf_counter()
        if self.message is None:  # one durable commit (an fsync) per answer, at its first word
            self.message = self.store.add_message(
                self.chat_id,
                "assistant",
                text,
                model=self.model,
                **({"sources": self.sources or None} | stats),
            )
        elif stats or text != self._saved_text:
            self.message = self.store.update_message(
                self.message.id, content=text, durable=durable, **stats
            )
        self._saved_text = text
        return self.message
