"""From a conversation to prompt tokens, with the context-window policy.

Policy when a conversation outgrows the context window: the system prompt
(leading system messages) is always kept; the oldest other messages are
dropped, one exchange at a time, until the prompt plus the room reserved for
the answer fits. If even the newest message alone does not fit, that is a
:class:`~llm4all.errors.ContextOverflow` carrying the token counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm4all.chat.template import Message
from llm4all.errors import ContextOverflow


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    messages: tuple[Message, ...]  # the messages that made it into the prompt
    dropped: int  # how many old messages were trimmed away


def fit_messages(
    messages: Sequence[Message],
    to_tokens: Callable[[Sequence[Message]], list[int]],
    n_ctx: int,
    reserve: int,
) -> Prompt:
    """Drop the oldest non-system messages until the prompt leaves ``reserve`` tokens free.

    Example: with a tiny ``n_ctx``, ``[system, user1, asst1, user2]`` becomes
    ``[system, user2]``.
    """
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system, rest = list(messages[:head]), list(messages[head:])
    budget = n_ctx - reserve
    dropped = 0
    while True:
        tokens = to_tokens(system + rest)
        if len(tokens) <= budget:
            return Prompt(tokens, tuple(system + rest), dropped)
        if len(rest) <= 1:
            if len(tokens) < n_ctx:  # fits, with less room for the answer than asked
                return Prompt(tokens, tuple(system + rest), dropped)
            raise ContextOverflow(len(tokens), n_ctx)
        # Drop the oldest message and any assistant/tool replies that answered it.
        cut = 1
        while cut < len(rest) - 1 and rest[cut].role in ("assistant", "tool"):
            cut += 1
        rest = rest[cut:]
        dropped += cut


def answer_reserve(max_tokens: int | None, n_ctx: int) -> int:
    """Room to keep free for the answer: ``max_tokens`` if set, else a share of the context."""
    if max_tokens is not None:
        return min(max_tokens, n_ctx // 2)
    return min(1024, n_ctx // 4)
