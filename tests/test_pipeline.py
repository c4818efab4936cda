"""The one answer pipeline (``llm4all.answer``): every front end builds the same prompt.

The same request through the Python API (``ChatSession``), the OpenAI route
and the web UI's route must reach the engine as the same prompt tokens; bad
parameters fail before any model is loaded.
"""

from __future__ import annotations

import subprocess
import sys


def test_chat_rejects_bad_params_before_loading_the_model() -> None:
    # A model that does not exist: reaching the loader would be a different error.
    for flag, value, field in (("--temp", "9", "temperature"), ("--ctx", "-5", "n_ctx")):
        res = subprocess.run(
            [sys.executable, "-m", "llm4all", "chat", "-m", "no-such-model-xyz", flag, value],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 1
        assert field in res.stderr and "no-such-model" not in res.stderr, res.stderr
