"""OpenMP's waiting, chosen before llama.cpp is loaded.

llama-cpp-python is built with OpenMP (GNU libgomp). Within each token the
worker threads meet at barriers, hundreds of times, and by default libgomp
lets a waiting thread spin 300,000 times before it sleeps. When the other
cores are busy, the spinning threads take the time slices the working thread
needs, and generation slows down many times over. Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``) cures that but halves the speed on an idle
machine, where every barrier then costs a wake-up. A short spin
(``GOMP_SPINCOUNT=300``) keeps both: as fast as libgomp's default when the
machine is idle, as fast as PASSIVE when it is busy (docs/benchmarks.md).

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

#: The default spin count; measured against PASSIVE, ACTIVE, libgomp's own (300,000)
#: and other counts on an idle and a busy machine in benchmarks/bench_omp.py.
SPIN_COUNT = "300"
#: The environment variables through which a user chooses libgomp's waiting themselves.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def apply_default(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` unless the user chose how threads wait; whether it was set.

    Example: ``apply_default({"OMP_WAIT_POLICY": "ACTIVE"})`` keeps ACTIVE, returns False.
    """
    if any(name in environ for name in USER_SETTINGS):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    if "llama_cpp" in sys.modules:  # libgomp has read its environment already
        log.debug("llama_cpp was imported before llm4all: GOMP_SPINCOUNT has no effect")
    return True
