"""Schemathesis against ``/openapi.json``: whatever it sends, the server never answers 5xx."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from llm4all.server import ServerSettings, create_app
from server_helpers import LiveServer, fast_settings, running

schemathesis = pytest.importorskip("schemathesis")
EXAMPLES = int(os.environ.get("LLM4ALL_SCHEMATHESIS_EXAMPLES", "40"))  # per operation
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture(scope="module")
def live(fast_model_path: Path) -> Iterator[LiveServer]:
    # Small caps keep every generated request fast: answers of at most 4 tokens, n <= 2.
    config = fast_settings(fast_model_path.parent, ctx=512, max_tokens_cap=4, max_n=2)
    with running(config) as server:
        yield server


def _spec() -> dict[str, Any]:
    """The app's own OpenAPI document (no model is loaded to build it)."""
    with tempfile.TemporaryDirectory() as empty:
        app = create_app(ServerSettings(preload=False, models_dir=Path(empty)))
        return app.openapi()


# The OpenAI API and the health check (the web UI's /api/ has tests of its own).
schema = schemathesis.openapi.from_dict(_spec()).include(path_regex=r"^/(v1/|health)")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case: Any, live: LiveServer) -> None:
    case.call_and_validate(base_url=live.url, checks=[not_a_server_error])
