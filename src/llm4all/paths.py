"""Where llm4all keeps its files.

Everything lives under one home folder: the platform's user data folder
(``~/.local/share/llm4all`` on Linux), or ``$LLM4ALL_HOME`` when set. Tests and
users with several setups point ``LLM4ALL_HOME`` elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """The llm4all home folder (created on first use)."""
    env = os.environ.get("LLM4ALL_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("llm4all"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Where model files live (``LLM4ALL_MODELS`` overrides it)."""
    env = os.environ.get("LLM4ALL_MODELS")
    path = Path(env).expanduser() if env else home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    """The SQLite database of chats, messages, feedback and settings."""
    return home() / "llm4all.db"
