"""Scrubbing a chat before it is shared: e-mail addresses, phone numbers, file paths and
the names of the LocalDocs documents its answers cited.

Pure functions over text. Each finding is replaced by a placeholder that says
what stood there (``[email]``, ``[phone]``, ``[path]``, ``[document]``), so the
preview shows exactly what was taken out and a trainer still sees a sentence
that reads. Scrubbing is a help, not a guarantee: it finds what has a shape
(an address, a number written like a phone number, an absolute path) and the
names the chat's own sources carry; a person's name typed in a message is
not found. The preview is what the user checks.

The patterns are conservative where a false hit would ruin code answers:

- phone numbers need a leading ``+`` or at least nine digits in two or more
  groups (so ``2026-12-02``, ``192.168.1.10``, ``x = 1234567`` and version
  numbers stay);
- paths must be absolute (``/…/…``, ``~/…``, ``C:\\…``, ``\\\\server\\share``)
  and start a word, so ``and/or``, ``1/2`` and the path of a URL stay.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

PLACEHOLDERS = {
    "document": "[document]",
    "path": "[path]",
    "email": "[email]",
    "phone": "[phone]",
}

EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PATH_PART = r"[^\s/\\:*?\"'<>|()\[\]{},;]+"
PATH = re.compile(
    # POSIX: /a/b or ~/a; Windows: C:\a or C:/a; UNC: \\server\share
    rf"(?<![\w:/.~\\])(?:~?/(?:{_PATH_PART}/)+(?:{_PATH_PART})?|~/{_PATH_PART}"
    rf"|[A-Za-z]:[\\/](?:{_PATH_PART}[\\/])*{_PATH_PART}"
    rf"|\\\\{_PATH_PART}(?:\\{_PATH_PART})+)"
)
_GROUP_SEP = r"[ .\-\u00a0]"
PHONE = re.compile(
    rf"(?<![\w+.\-])(?:\+\d{{8,15}}|(?:\+\d{{1,3}}{_GROUP_SEP}?)?(?:\(\d{{1,4}}\){_GROUP_SEP}?)?"
    rf"\d{{2,4}}(?:{_GROUP_SEP}\d{{2,4}}){{1,5}})(?![\w.\-]?\d)"
)
MIN_PHONE_DIGITS = 9  # without a leading +: fewer is a date, a time, a version, a sum
MAX_PHONE_DIGITS = 15  # E.164's longest
#: Source keys whose values name a document (LocalDocs excerpts carry some of these).
SOURCE_NAME_KEYS = ("path", "file", "title", "collection")
#: Document names shorter than this are not searched for (a 2-letter title would eat words).
MIN_NAME_LENGTH = 4


@dataclass
class Findings:
    """What scrubbing replaced, by kind. Example: ``Findings({"email": 2})``."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] += n

    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line. Example: ``"2 e-mail addresses, 1 path"``; ``"nothing"`` when empty."""
        words = {
            "email": ("e-mail address", "e-mail addresses"),
            "phone": ("phone number", "phone numbers"),
            "path": ("path", "paths"),
            "document": ("document name", "document names"),
        }
        parts = [
            f"{n} {words[kind][n != 1]}" for kind in PLACEHOLDERS if (n := self.counts.get(kind, 0))
        ]
        return ", ".join(parts) or "nothing"


def document_names(sources: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names a chat's LocalDocs sources give their documents: full paths, file names
    and file names without their suffix, longest first (so the longest match wins).

    Example: ``document_names([{"path": "/n/Pay 2026.pdf"}])`` ->
    ``["/n/Pay 2026.pdf", "Pay 2026.pdf", "Pay 2026"]``.
    """
    names: set[str] = set()
    for source in sources:
        for key in SOURCE_NAME_KEYS:
            value = source.get(key)
            if not isinstance(value, str) or not value.strip():
                continue
            value = value.strip()
            names.add(value)
            for pure in (PurePosixPath(value), PureWindowsPath(value)):
                names.update((pure.name, pure.stem))
    return sorted((n for n in names if len(n) >= MIN_NAME_LENGTH), key=lambda n: (-len(n), n))


def scrub_text(text: str, names: Iterable[str] = (), findings: Findings | None = None) -> str:
    """``text`` with document names, paths, e-mail addresses and phone numbers replaced.

    Example: ``scrub_text("Mail ada@example.org or call +44 20 7946 0958")`` ->
    ``"Mail [email] or call [phone]"``.
    """
    findings = findings if findings is not None else Findings()
    wanted = [n for n in names if n]
    if wanted:
        pattern = re.compile("|".join(re.escape(n) for n in wanted), re.IGNORECASE)
        text, n = pattern.subn(PLACEHOLDERS["document"], text)
        findings.add("document", n)
    text, n = EMAIL.subn(PLACEHOLDERS["email"], text)
    findings.add("email", n)

    def path(match: re.Match[str]) -> str:
        found = match.group(0)
        kept = found.rstrip(".")  # a sentence's full stop is not part of the path
        findings.add("path")
        return PLACEHOLDERS["path"] + found[len(kept) :]

    text = PATH.sub(path, text)

    def phone(match: re.Match[str]) -> str:
        found = match.group(0)
        digits = sum(ch.isdigit() for ch in found)
        least = 8 if found.startswith(("+", "(")) else MIN_PHONE_DIGITS
        if not least <= digits <= MAX_PHONE_DIGITS:
            return found
        findings.add("phone")
        return PLACEHOLDERS["phone"]

    return PHONE.sub(phone, text)
