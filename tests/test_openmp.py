"""OpenMP threads spin only briefly by default, in every command and in the Python API.

libgomp prints the settings it took when ``OMP_DISPLAY_ENV=VERBOSE`` is set,
so each test reads what the real library in a real process decided: the spin
count (300 by llm4all's default; 300,000 is libgomp's own, 0 when passive).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llm4all.engine.openmp import apply_default

LLM4ALL = Path(sys.executable).with_name("llm4all")


def test_apply_default_sets_a_short_spin_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    assert apply_default(env) and env == {"GOMP_SPINCOUNT": "300"}
    for users in ({"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(users)
        assert not apply_default(env) and env == users


def _libgomp_settings(cmd: list[str], **env: str) -> dict[str, str]:
    """Run ``cmd`` with libgomp reporting its settings; ``{"OMP_WAIT_POLICY": ..., ...}``."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    }
    environ.update(OMP_DISPLAY_ENV="VERBOSE", **env)
    proc = subprocess.run(
        cmd, env=environ, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", proc.stderr, re.M))


def _run(model: Path) -> list[str]:
    return [str(LLM4ALL), "run", "hi", "-m", str(model), "--max-tokens", "1", "--temp", "0"]


@pytest.mark.slow
def test_a_command_loads_the_model_with_a_short_spin(fast_model_path: Path) -> None:
    settings = _libgomp_settings(_run(fast_model_path))
    assert settings["GOMP_SPINCOUNT"] == "300"


@pytest.mark.slow
def test_the_python_api_loads_the_model_with_a_short_spin(fast_model_path: Path) -> None:
    code = f"import llm4all; llm4all.Model({str(fast_model_path)!r}, n_ctx=256).close()"
    settings = _libgomp_settings([sys.executable, "-c", code])
    assert settings["GOMP_SPINCOUNT"] == "300"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("users", "expected"),
    [
        ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}),
        ({"GOMP_SPINCOUNT": "1000"}, {"GOMP_SPINCOUNT": "1000"}),
    ],
)
def test_a_users_own_setting_is_kept(
    fast_model_path: Path, users: dict[str, str], expected: dict[str, str]
) -> None:
    settings = _libgomp_settings(_run(fast_model_path), **users)
    assert settings.items() >= expected.items()
