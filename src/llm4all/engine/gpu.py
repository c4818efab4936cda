"""GPU offload in the llama.cpp backend: is there a GPU build, which one, and what was asked.

llama-cpp-python from PyPI compiles llama.cpp for the CPU. Built with
``CMAKE_ARGS="-DGGML_CUDA=on"`` (or Vulkan, Metal, HIP, SYCL) it can put
``n_gpu_layers`` of a model on a GPU. A CPU-only build silently ignores that
knob, so asking for layers there would look like a GPU run and be a CPU one:
:func:`check_offload` makes it a one-line error instead, before anything loads.
:func:`describe` is what ``models info``, ``--stats`` and ``/health`` report.
"""

from __future__ import annotations

import re

from llm4all.errors import InvalidParameter

#: llama.cpp's system-info names of the backends that are not the CPU's.
_GPU_BACKENDS = (
    "CUDA",
    "Metal",
    "Vulkan",
    "HIP",
    "ROCm",
    "SYCL",
    "Kompute",
    "OpenCL",
    "CANN",
    "MUSA",
)
_SECTION = re.compile(r"(?:^|\|\s*)([A-Za-z][A-Za-z0-9_]*) : ")

INSTALL_HINT = (
    'reinstall llama-cpp-python for your GPU, e.g. CMAKE_ARGS="-DGGML_CUDA=on" pip install '
    "--force-reinstall --no-cache-dir llama-cpp-python (docs/scale-out.md, GPU offload)"
)


class GPUUnavailable(InvalidParameter):
    """GPU layers were asked for, but this llama.cpp build has no GPU offload."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, value, "0 (CPU)")
        self.args = (
            f"{field}={value!r} asks for GPU offload, but this llama-cpp-python build is "
            f"CPU-only; {INSTALL_HINT}, or leave it at 0",
        )


def gpu_backends(system_info: str) -> list[str]:
    """The GPU backends named in llama.cpp's system info (empty for a CPU build).

    Example: ``gpu_backends("CUDA : ARCHS = 890 | CPU : AVX2 = 1 | ")`` → ``["CUDA"]``.
    """
    names = _SECTION.findall(system_info)
    return [n for n in names if n.upper() in {b.upper() for b in _GPU_BACKENDS}]


def offload_backend() -> str | None:
    """The GPU backend this llama.cpp build offloads to ("CUDA", "Metal", …), or None."""
    from llm4all.engine import _native  # loads llama.cpp

    if not _native.supports_gpu_offload():
        return None
    found = gpu_backends(_native.system_info())
    return found[0] if found else "GPU"


def check_offload(n_gpu_layers: int, field: str = "n_gpu_layers") -> None:
    """Raise :class:`GPUUnavailable` when layers are asked for and the build cannot offload."""
    if n_gpu_layers != 0 and offload_backend() is None:
        raise GPUUnavailable(field, n_gpu_layers)


def describe(n_gpu_layers: int, n_layers: int, backend: str | None) -> str:
    """Where a loaded model runs, for reports.

    Example: ``describe(-1, 24, "CUDA")`` → ``"CUDA (24/24 layers)"``;
    ``describe(0, 24, "CUDA")`` → ``"cpu"``.
    """
    if n_gpu_layers == 0 or backend is None:
        return "cpu"
    # llama.cpp counts the output layer as one more: n_layers + 1 offloads everything.
    on_gpu = n_layers if n_gpu_layers < 0 else min(n_gpu_layers, n_layers)
    return f"{backend} ({on_gpu}/{n_layers} layers)" if n_layers else backend
