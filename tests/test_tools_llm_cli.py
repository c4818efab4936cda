"""simonw's ``llm`` CLI with ``--functions`` against a real ``llm4all serve`` (issue 22).

Before, the 0.5B model called ``now({'properties': {}, 'type': 'object'})``
until ``llm``'s chain limit. Here the real CLI, in a subprocess, reaches the
server on 127.0.0.1 through an ``extra-openai-models.yaml`` in its own
``LLM_USER_PATH`` (under ``tmp_path``), runs the tool the model calls and
sends the result back; the loop must end in an answer made from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server_helpers import DEFAULT, fast_settings, running

pytest.importorskip("llm")

FUNCTIONS = """
def get_weather(city: str) -> str:
    "Current weather in a city"
    return f"{city}: 12 C, rain"
"""


def _llm() -> str:
    exe = shutil.which("llm", path=os.path.dirname(sys.executable)) or shutil.which("llm")
    if exe is None:
        pytest.skip("the llm command is not installed")
    return exe


@pytest.mark.slow
def test_llm_functions_agent_loop_completes(default_model_path: Path, tmp_path: Path) -> None:
    exe = _llm()
    settings = fast_settings(default_model_path.parent, model=DEFAULT, ctx=4096, parallel=1)
    with running(settings) as live:
        (tmp_path / "extra-openai-models.yaml").write_text(
            f"- model_id: local\n  model_name: {DEFAULT}\n"
            f"  api_base: {live.base_url}\n  supports_tools: true\n"
        )
        env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "x"}
        run = subprocess.run(
            [
                exe,
                "-m",
                "local",
                "-n",
                "--td",
                "--functions",
                FUNCTIONS,
                "-o",
                "temperature",
                "0",
                "What's the weather in Oslo?",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stderr
    # --td writes each call and its result to stderr; the answer is stdout.
    assert run.stderr.count("Tool call: get_weather({'city': 'Oslo'})") == 1, run.stderr
    assert "12" in run.stdout or "rain" in run.stdout.lower(), run.stdout
