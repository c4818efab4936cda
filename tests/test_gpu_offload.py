"""GPU offload: asked for on a build without it is a clear one-line error; reported where it runs.

This machine has no GPU and llama-cpp-python from PyPI is a CPU build, so the
tests check the message and the plumbing (the knob reaches llama.cpp's load,
the report says "cpu"); a GPU build skips the CPU-only checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm4all.engine import gpu
from llm4all.server import ServerSettings

CPU_ONLY = gpu.offload_backend() is None
needs_cpu_build = pytest.mark.skipif(not CPU_ONLY, reason="this llama.cpp build has GPU offload")

CUDA_INFO = (
    "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : SSE3 = 1 | AVX2 = 1 | "
)


def test_backends_named_in_system_info() -> None:
    assert gpu.gpu_backends(CUDA_INFO) == ["CUDA"]
    assert gpu.gpu_backends("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ") == ["Metal"]
    assert gpu.gpu_backends("CPU : SSE3 = 1 | AVX = 1 | LLAMAFILE = 1 | OPENMP = 1 | ") == []


def test_describe() -> None:
    assert gpu.describe(0, 30, "CUDA") == "cpu"
    assert gpu.describe(-1, 30, "CUDA") == "CUDA (30/30 layers)"
    assert gpu.describe(12, 30, "Vulkan") == "Vulkan (12/30 layers)"
    assert gpu.describe(99, 30, "Metal") == "Metal (30/30 layers)"
    assert gpu.describe(5, 30, None) == "cpu"


@needs_cpu_build
def test_layers_on_a_cpu_build_are_refused() -> None:
    gpu.check_offload(0)  # the CPU: fine
    for layers in (1, -1):
        with pytest.raises(gpu.GPUUnavailable) as caught:
            gpu.check_offload(layers)
        message = str(caught.value)
        assert "\n" not in message and "CPU-only" in message and "GGML_CUDA" in message
        assert caught.value.field == "n_gpu_layers"


def test_server_settings_carry_the_layers() -> None:
    assert ServerSettings().load_params().n_gpu_layers == 0
    assert ServerSettings(n_gpu_layers=-1).load_params().n_gpu_layers == -1
    with pytest.raises(ValueError, match="n_gpu_layers"):
        ServerSettings(n_gpu_layers=-2)


@needs_cpu_build
def test_cli_gpu_layers_is_one_line(fast_model_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4all",
            "run",
            "-m",
            str(fast_model_path),
            "--gpu-layers",
            "8",
            "hi",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"),
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "n_gpu_layers=8" in lines[0] and "CPU-only" in lines[0]


def test_cpu_model_reports_cpu(fast_model: object) -> None:
    assert fast_model.info.device == "cpu"  # type: ignore[attr-defined]
    assert fast_model.info.backend == "llamacpp"  # type: ignore[attr-defined]
