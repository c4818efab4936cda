"""Tool calls while streaming: content passes through, calls go out as OpenAI's deltas.

OpenAI streams a call as a first ``tool_calls`` delta with ``index``, ``id``,
``type`` and ``function.name`` (arguments ``""``), then deltas that carry only
``index`` and the next piece of ``function.arguments``. Clients rely on that
shape: the ``openai`` package's stream helpers and LangChain both join every
string they see per index, so a name or id sent twice would be doubled.

:class:`ContentSplitter` passes content through and holds back what may be a
call. :class:`CallStreamer` reads the held text as it grows: once it has seen
``{"name": "<a known tool>", "arguments": {`` it announces the call and then
sends the arguments' JSON text as the model writes it, until the object
closes. What it does not recognise it leaves alone; when the answer ends,
:func:`~llm4all.server.tools.parse` reads the whole held text and
:meth:`CallStreamer.finish` sends, whole, any call the stream did not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llm4all.chat.tools import OPEN
from llm4all.server.tools import Parsed, new_call_id

_FENCE = "```"

# Between calls: whitespace, tags, list brackets, commas and the previous call's closing brace.
_HEAD = re.compile(
    r'(?:[\s,\[\]}]|</?tool_call>|```(?:json|tool_call|tool_code)?)*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,'
    r'\s*"(?:arguments|parameters)"\s*:\s*(?=\{)'
)


class ContentSplitter:
    """While streaming: pass content through, hold back what may be a tool call.

    That is everything from ``<tool_call>`` on; the whole answer when it starts
    with ``{`` or ``[`` (a call without tags); and, anywhere in the answer, a
    JSON object that begins ``{"name"`` or a Markdown code fence whose first
    line is such an object (Qwen2.5-Coder fences its calls after a sentence).
    A fence of anything else (code) passes through once its first line shows
    it. Example: feeding ``"Sure. <tool"`` emits ``"Sure. "``; then
    ``"_call>{…}"`` emits nothing; :attr:`held` is the text for
    :func:`~llm4all.server.tools.parse` at the end.
    """

    def __init__(self, forced: bool) -> None:
        self._pending = ""
        self.held = ""
        self._in_call = forced
        self._started = forced

    def feed(self, text: str) -> str:
        if self._in_call:
            self.held += text
            return ""
        buf = self._pending + text
        self._pending = ""
        if not self._started:
            if not buf.strip():
                self._pending = buf
                return ""
            self._started = True
            if buf.lstrip().startswith(("{", "[")):
                self._in_call, self.held = True, buf
                return ""
        out: list[str] = []
        at = 0
        while True:
            cut = _candidate(buf, at)
            if cut < 0:
                break
            verdict = True if buf.startswith(OPEN, cut) else _looks_like_call(buf[cut:])
            if verdict is None:  # not enough seen yet: hold from here
                self._pending = buf[cut:]
                return "".join(out) + buf[at:cut]
            if verdict:
                self._in_call = True
                self.held = buf[cut:]
                return "".join(out) + buf[at:cut]
            out.append(buf[at : cut + 1])
            at = cut + 1
        rest = buf[at:]
        keep = max((n for n in range(1, len(OPEN)) if rest.endswith(OPEN[:n])), default=0)
        keep = max(keep, next((n for n in (2, 1) if rest.endswith(_FENCE[:n])), 0))
        self._pending = rest[len(rest) - keep :]
        return "".join(out) + rest[: len(rest) - keep]

    def flush(self) -> str:
        """Content still held back when the answer ends without a call."""
        pending, self._pending = self._pending, ""
        return pending


def _candidate(buf: str, at: int) -> int:
    """Where the next thing that may start a call is (a tag, a fence, an object), or -1."""
    found = [i for i in (buf.find(OPEN, at), buf.find(_FENCE, at), buf.find("{", at)) if i >= 0]
    return min(found) if found else -1


_LABELS = ("", "json", "tool_call", "tool_code")
_KEYS = ('"name"', '"function"')


def _looks_like_call(text: str) -> bool | None:
    """Whether ``text`` (from a fence or a brace on) begins a call; None: cannot tell yet."""
    if text.startswith(_FENCE):
        line_end = text.find("\n")
        if line_end < 0:
            return None if len(text) < 16 else False
        if text[3:line_end].strip() not in _LABELS:
            return False
        text = text[line_end + 1 :]
    text = text.lstrip()
    if text.startswith("["):
        text = text[1:].lstrip()
    if not text:
        return None
    if not text.startswith("{"):
        return False
    rest = text[1:].lstrip()
    if any(rest.startswith(key) for key in _KEYS):
        return True
    return None if any(key.startswith(rest) for key in _KEYS) else False


@dataclass
class _Call:
    id: str
    name: str
    closed: bool = False


class CallStreamer:
    """The held-back text of one choice as ``tool_calls`` delta entries, as it grows.

    Example: ``update('<tool_call>{"name": "f", "arguments": {"a"')`` gives the
    announcing entry of ``f`` and an arguments piece ``'{"a"'``; a later
    ``update`` with more text gives the next piece.
    """

    def __init__(self, known: frozenset[str], parallel: bool) -> None:
        self._known = known
        self._parallel = parallel
        self.calls: list[_Call] = []
        self._pos = 0  # the held text is read up to here
        self._depth = 0  # nesting inside the current call's arguments (0: between calls)
        self._in_string = False
        self._escaped = False
        self._stopped = False  # something unrecognised: the final parse decides

    def update(self, held: str) -> list[dict[str, Any]]:
        """Delta entries for what ``held`` (all the held text so far) adds."""
        out: list[dict[str, Any]] = []
        while not self._stopped:
            if self.calls and not self.calls[-1].closed:
                start = self._pos
                closed = self._scan(held)
                if self._pos > start:
                    piece = held[start : self._pos]
                    out.append({"index": len(self.calls) - 1, "function": {"arguments": piece}})
                if not closed:
                    break
                self.calls[-1].closed = True
            elif not self._start_call(held, out):
                break
        return out

    def _start_call(self, held: str, out: list[dict[str, Any]]) -> bool:
        if self.calls and not self._parallel:
            self._stopped = True
            return False
        head = _HEAD.match(held, self._pos)
        if head is None:
            return False  # not yet (or never: then the final parse sees it)
        try:
            name = json.loads(f'"{head.group(1)}"')
        except ValueError:
            name = None
        if name not in self._known:
            self._stopped = True
            return False
        call = _Call(new_call_id(), name)
        self.calls.append(call)
        out.append(
            {
                "index": len(self.calls) - 1,
                "id": call.id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        )
        self._pos = head.end()
        return True

    def _scan(self, held: str) -> bool:
        """Read the arguments' JSON on from ``_pos``; True once its outer object closes."""
        for i in range(self._pos, len(held)):
            c = held[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    self._pos = i + 1
                    return True
        self._pos = len(held)
        return False

    def finish(self, parsed: Parsed) -> tuple[list[dict[str, Any]], bool]:
        """Entries for the calls the stream has not sent, and whether the answer is calls.

        When the final parse agrees with what was streamed (same names, in
        order), the calls it found beyond those are sent whole. When it does
        not (an answer cut short in its arguments, or malformed after them),
        the calls already sent stand as they are: a stream cannot take back.
        """
        sent = [c.name for c in self.calls]
        found = parsed.calls
        if not sent:
            return [{"index": k, **c} for k, c in enumerate(found)], bool(found)
        if [c["function"]["name"] for c in found[: len(sent)]] != sent:
            return [], False
        return [{"index": k, **c} for k, c in enumerate(found[len(sent) :], len(sent))], True
