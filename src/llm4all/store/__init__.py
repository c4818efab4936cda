"""The one SQLite database of llm4all: chats, messages, ratings and settings.

``ChatStore()`` opens ``$LLM4ALL_HOME/llm4all.db`` (WAL, ordered migrations;
see :mod:`llm4all.store.db`) and hands out frozen dataclasses
(:mod:`llm4all.store.chats`); :func:`export_chat` turns a chat into training
data (JSON Lines) or a readable Markdown transcript.
"""

from llm4all.store.chats import Chat, ChatStore, StoredMessage, default_title
from llm4all.store.export import EXPORT_FORMATS, export_chat

__all__ = ["EXPORT_FORMATS", "Chat", "ChatStore", "StoredMessage", "default_title", "export_chat"]
