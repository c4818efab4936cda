"""A real datalake service (uvicorn on 127.0.0.1, a free port) for tests, and payloads to send it.

``running_datalake(settings)`` serves :func:`llm4all.datalake.service.create_app`
in a background thread; ``chat_payload(...)`` builds a valid GPT4All-style
payload. Helper modules of the sharing tests may use both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from llm4all.datalake.service import ServiceSettings, create_app
from server_helpers import serving

TOKEN = "test-admin-token"

#: What GPT4All's older chat client posted (its QML built this JSON): ``prompt_template``,
#: ``stopped`` as the string "true", the attribution under ``network/attribution``.
GPT4ALL_OLD = {
    "conversation": [
        {"content": "Write me a haiku about rain.", "role": "user"},
        {
            "content": "Rain on the window",
            "role": "assistant",
            "rating": "negative",
            "edited_content": "Soft rain on the roof\nthe gutters hum to themselves\nnight has no edges",
            "stopped": "true",
        },
    ],
    "prompt_template": "### Human:\n%1\n### Assistant:\n",
    "source": "gpt4all-chat",
    "agent_id": "ggml-gpt4all-j-v1.3-groovy.bin",
    "submitter_id": "6a1f5a4e-4a4b-4f7e-9a3c-1d2e3f4a5b6c",
    "ingest_id": "0b9d2a57-7c4f-4d0e-8f4a-2a3b4c5d6e7f",
    "network/attribution": "EliteHacker#42",
}


@dataclass
class LiveDatalake:
    url: str  # http://127.0.0.1:PORT
    app: FastAPI

    @property
    def ingest_url(self) -> str:
        return self.url + "/v1/ingest/chat"

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def running_datalake(settings: ServiceSettings) -> Iterator[LiveDatalake]:
    app = create_app(settings)
    with serving(app, timeout=30) as url:
        yield LiveDatalake(url, app)


def chat_payload(
    submitter: str = "submitter-1",
    ingest_id: str | None = "chat-1",
    answer: str = "Paris is the capital of France.",
    rating: str | None = "positive",
    **extra: Any,
) -> dict[str, Any]:
    """A valid payload as GPT4All's newer client sends it (``chat_template``, no ``prompt_template``)."""
    assistant: dict[str, Any] = {"content": answer, "role": "assistant"}
    if rating:
        assistant["rating"] = rating
    payload: dict[str, Any] = {
        "source": "llm4all",
        "submitter_id": submitter,
        "agent_id": "qwen2.5-coder-0.5b-instruct",
        "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        "conversation": [{"content": "What is the capital of France?", "role": "user"}, assistant],
    }
    if ingest_id is not None:
        payload["ingest_id"] = ingest_id
    payload.update(extra)
    return payload
