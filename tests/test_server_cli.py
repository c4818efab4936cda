"""``llm4all serve`` as a user runs it: a real process, a real port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refuses_to_bind_beyond_loopback_without_a_key() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llm4all", "serve", "--host", "0.0.0.0", "--no-preload"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "--api-key" in proc.stderr and "--insecure" in proc.stderr


@pytest.mark.slow
def test_serve_answers_and_stops_cleanly(fast_model_path: Path) -> None:
    port = _free_port()
    cmd = [
        *(sys.executable, "-m", "llm4all", "serve", "--model", str(fast_model_path)),
        *("--port", str(port), "--threads", "1", "--parallel", "2", "--ctx", "512"),
        *("--temp", "0", "--log-level", "warning"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.1)
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
        assert answer["usage"]["completion_tokens"] <= 4
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), err  # uvicorn re-raises SIGTERM after a clean shutdown
    assert f"http://127.0.0.1:{port}/v1" in err
