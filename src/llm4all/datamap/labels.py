"""What curation would do to each row, for colouring the map: the rule that drops it, its group.

Rows are labelled by curation's own rules, never by a copy of them, so the map
shows what ``llm4all data curate`` would remove. Rows that share a duplicate
group carry the group's number, so the map can show a group's members together.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from llm4all.data.refusals import find_refusal
from llm4all.data.schema import Conversation

KEPT = "kept"
"""The rule name of a row no rule drops."""


@dataclass(frozen=True)
class Verdict:
    """Curation's verdict on one row: the rule that drops it (or :data:`KEPT`) and why."""

    rule: str = KEPT
    detail: str = ""
    group: int = -1  # duplicate group number (0, 1, … in order of first row), -1 for none


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", " ", text).strip()


class Labeller:
    """Verdicts for rows added one at a time; holds a 12-byte key and a verdict per row.

    Refusals come from the shared detector; exact duplicates from the
    normalised prompt and answer: the first row of a group is kept, the
    others are dropped as ``exact-duplicate``, and every member carries the
    group's number.
    """

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._first: dict[bytes, int] = {}
        self._size: dict[bytes, int] = {}
        self._refusals: list[str] = []

    def add(self, row: Conversation) -> None:
        text = _normalised(row.prompt) + "\x00" + _normalised(row.response)
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()
        self._first.setdefault(key, len(self._keys))
        self._size[key] = self._size.get(key, 0) + 1
        self._keys.append(key)
        refusal = find_refusal(row.response, disclaimers=True)
        self._refusals.append(f"{refusal.reason}: {refusal.matched}" if refusal else "")

    def verdicts(self) -> list[Verdict]:
        """One verdict per row added, in order."""
        groups: dict[bytes, int] = {}
        out: list[Verdict] = []
        for i, key in enumerate(self._keys):
            group = groups.setdefault(key, len(groups)) if self._size[key] > 1 else -1
            first = self._first[key]
            if first != i:
                out.append(Verdict("exact-duplicate", f"same text as row {first + 1}", group))
            elif self._refusals[i]:
                out.append(Verdict("refusal", self._refusals[i], group))
            else:
                out.append(Verdict(KEPT, "", group))
        return out
