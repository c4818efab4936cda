"""LocalDocs on ``/v1/chat/completions``: the ``collections`` extension field.

A request may name LocalDocs collections (``"collections": ["notes"]``, an
llm4all extension; with the ``openai`` package, ``extra_body=``). The last
user message is searched in them (with the earlier user messages, so that a
follow-up question finds what the conversation is about), and its text
becomes the numbered excerpts and the question, worded as ``ChatSession`` and
the web UI word it (:func:`llm4all.localdocs.documents_turn`); an answer
without ``max_tokens`` is bounded to
:data:`~llm4all.localdocs.context.ANSWER_TOKENS`. The response carries the
references in a top-level ``references`` list (in the last chunk of a
stream), numbered as the model was asked to cite them.

The collections are those of the server's llm4all home, opened once on
``app.state.localdocs``. Searching embeds the question, so it runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from fastapi import Request

from llm4all.chat.template import Message
from llm4all.server.errors import ApiError


async def with_documents(
    request: Request, messages: list[Message], collections: list[str] | None
) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """``messages`` with excerpts in the last user turn, and the references (None: not asked)."""
    if collections is None:
        return messages, None
    from llm4all.localdocs import documents_turn
    from llm4all.server.ui_docs import check_collections, localdocs_of

    names = await asyncio.to_thread(check_collections, request, collections, 400)
    if not names:
        return messages, []
    docs = await asyncio.to_thread(localdocs_of, request)
    at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
    if at is None:
        raise ApiError(400, "collections needs a user message to search for", param="collections")
    earlier = [m.content for m in messages[:at] if m.role == "user"]
    content, references = await asyncio.to_thread(
        documents_turn, messages[at].content, names, earlier, localdocs=docs
    )
    asked = dataclasses.replace(messages[at], content=content)
    return [*messages[:at], asked, *messages[at + 1 :]], references
