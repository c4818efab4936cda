"""What curation would do to each row, for colouring the map: the rule that drops it, its group.

Rows are judged by curation's own :class:`~llm4all.data.curate.Curator` with
its default rules, in input order, exactly as ``llm4all data curate`` judges
them, so the map shows what curation would remove and why. A row dropped as
an exact or near duplicate names the kept row it repeats; the kept row and its
repeats form a duplicate group, which the map shows together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llm4all.data.schema import Conversation

KEPT = "kept"
"""The rule name of a row no rule drops."""

DUPLICATE_RULES = ("exact-duplicate", "near-duplicate")
_REPEATS = re.compile(r"\b([0-9a-f]{16})\b")  # the kept row's id in a duplicate's detail


@dataclass(frozen=True)
class Verdict:
    """Curation's verdict on one row: the rule that drops it (or :data:`KEPT`) and why."""

    rule: str = KEPT
    detail: str = ""
    group: int = -1  # duplicate group number (0, 1, … in order of first row), -1 for none


class Labeller:
    """Verdicts for rows added one at a time, in order; holds a few strings per row.

    ``curator`` defaults to curation's default rules and settings.
    """

    def __init__(self, curator: Any = None) -> None:
        if curator is None:
            from llm4all.data.curate import Curator
            from llm4all.data.rules import RuleSettings, build_rules

            curator = Curator(build_rules(RuleSettings()))
        self.curator = curator
        self._judged: list[tuple[str, str, str]] = []  # (rule, detail, group key)

    def add(self, row: Conversation) -> None:
        verdict = self.curator.judge(row)
        rule, detail = verdict if verdict is not None else (KEPT, "")
        repeats = _REPEATS.search(detail) if rule in DUPLICATE_RULES else None
        self._judged.append((rule, detail, repeats.group(1) if repeats else row.id))

    def verdicts(self) -> list[Verdict]:
        """One verdict per row added, in order."""
        sizes: dict[str, int] = {}
        for _, _, key in self._judged:
            sizes[key] = sizes.get(key, 0) + 1
        groups: dict[str, int] = {}
        out = []
        for rule, detail, key in self._judged:
            group = groups.setdefault(key, len(groups)) if sizes[key] > 1 else -1
            out.append(Verdict(rule, detail, group))
        return out
