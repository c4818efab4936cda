"""Turning a stream of token bytes into safe text: pure, backend-independent.

Two problems sit between "a token was sampled" and "text can be shown":

* a UTF-8 character may be split across tokens (common in Chinese and emoji),
  so bytes are fed to an incremental decoder that holds back an incomplete
  character instead of emitting U+FFFD;
* a stop string may be split across tokens, so text that could still become
  the start of a stop string is held back until it either completes the stop
  (and is dropped, with everything after it) or is proven harmless.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass


class Utf8Stream:
    """Bytes in, complete characters out. Example: ``feed(b"\\xe4\\xbd") -> ""``."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Whatever is left; an unfinished character becomes U+FFFD only here."""
        return self._decoder.decode(b"", final=True)


@dataclass
class StopResult:
    text: str  # safe to emit now
    stopped: bool  # a stop string was found; generation should end


class StopMatcher:
    """Find stop strings across chunk boundaries without leaking them.

    Example: with stop ``("\\nUser:",)``, feeding ``"Hi\\nUs"`` emits ``"Hi"``
    and holds ``"\\nUs"``; feeding ``"er:"`` next ends the stream with no text.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self._done = False

    def feed(self, text: str) -> StopResult:
        if self._done:
            return StopResult("", True)
        if not self._stops:
            return StopResult(text, False)
        buf = self._held + text
        cut = _first_stop(buf, self._stops)
        if cut is not None:
            self._held = ""
            self._done = True
            return StopResult(buf[:cut], True)
        keep = _longest_partial_stop(buf, self._stops)
        self._held = buf[len(buf) - keep :] if keep else ""
        return StopResult(buf[: len(buf) - keep], False)

    def flush(self) -> str:
        """Text held back when the stream ends without completing a stop."""
        held, self._held = self._held, ""
        return "" if self._done else held


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


def _longest_partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best
