"""LocalDocs on ``/v1/chat/completions``: the ``collections`` extension field.

A request may name LocalDocs collections (``"collections": ["notes"]``, an
llm4all extension; with the ``openai`` package, ``extra_body=``). The names
are checked here (an unknown one is a 400) and the collections of the
server's llm4all home opened (once, on ``app.state.localdocs``); the answer
pipeline (:func:`llm4all.answer.prepare`) then searches the last user message
in them, with the earlier user messages, and words the turn as ``ChatSession``
and the web UI do. An answer without ``max_tokens`` is bounded to
:data:`~llm4all.localdocs.context.ANSWER_TOKENS`. The response carries the
references in a top-level ``references`` list (in the last chunk of a
stream), numbered as the model was asked to cite them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from llm4all.localdocs import LocalDocs


async def collections_of(
    request: Request, collections: list[str] | None
) -> tuple[list[str], LocalDocs | None]:
    """The named collections (checked, without repeats) and the LocalDocs they live in."""
    if not collections:
        return [], None
    from llm4all.server.ui_docs import check_collections, localdocs_of

    names = await asyncio.to_thread(check_collections, request, collections, 400)
    docs = await asyncio.to_thread(localdocs_of, request)
    return names, docs
