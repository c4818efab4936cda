"""OpenMP's waiting policy, chosen before llama.cpp is loaded.

llama-cpp-python is built with OpenMP (GNU libgomp). Within each token the
worker threads meet at barriers, and by default libgomp lets a waiting thread
spin for a while before it sleeps. When the other cores are busy, the spinning
threads take the time slices the working thread needs, and generation slows
down several times over; sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) costs
little on an idle machine. The figures are in docs/benchmarks.md.

libgomp reads its environment once, when the library is loaded, so the default
is set when ``llm4all.engine`` is imported, before any backend imports
``llama_cpp``. A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins.
It is set in ``os.environ``, so processes started afterwards inherit it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

#: The default; measured against libgomp's own and ACTIVE in benchmarks/bench_omp.py.
WAIT_POLICY = "PASSIVE"
#: The environment variables through which a user chooses libgomp's waiting themselves.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_default(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``OMP_WAIT_POLICY`` unless the user chose; whether it was set.

    Example: ``apply_default({"OMP_WAIT_POLICY": "ACTIVE"})`` keeps ACTIVE, returns False.
    """
    if any(name in environ for name in USER_SETTINGS):
        return False
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    if "llama_cpp" in sys.modules:  # libgomp has read its environment already
        log.debug("llama_cpp was imported before llm4all: OMP_WAIT_POLICY has no effect")
    return True
