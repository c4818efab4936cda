"""Text from files and folders made safe for one terminal line.

A file name may hold a newline, an escape sequence or a right-to-left override;
printed as it is, it splits a listing across lines or rewrites the screen.
Every name or excerpt a command prints goes through :func:`printable`.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, line/paragraph separators, bidi embeddings, overrides and
# isolates, and the lone surrogates Python uses for undecodable bytes in file names.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with its control characters written as escapes, so it stays on one line.

    Example: ``printable("a\\nb.txt") == "a\\\\nb.txt"``.
    """
    return _UNPRINTABLE.sub(
        lambda m: m[0].encode("unicode_escape", "backslashreplace").decode(), text
    )
