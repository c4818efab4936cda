"""What every benchmark shares: the machine, the contenders, the statistics, the output.

How we measure (see ``docs/benchmarks.md``): every contender runs in a fresh
process (``_workers.py``), the contenders take turns (A B C A B C … for N
rounds, the starting contender rotating), each figure is the median with its
min–max, and every figure is also given as a ratio to a reference measured in
the same run. The machine's read bandwidth is measured in the same run too, so
that decode speed can be stated as a share of what the memory allows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC = REPO / "src"
RESULTS = BENCH_DIR / "results"
WORKER = BENCH_DIR / "_workers.py"
if (SRC / "llm4all").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the checkout, not an installed copy

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
FAST_MODEL = "smollm2-135m-instruct"
LABELS = {
    "raw": "raw llama.cpp",
    "hl": "llama-cpp-python high-level",
    "gpt4all": "gpt4all 2.8.2",
    "llm4all": "llm4all",
    "llm4all-fresh": "llm4all, no prefix reuse",
    "llm4all-cli": "llm4all run (CLI)",
}
GiB = 2**30


# -- command line -----------------------------------------------------------------
def parser(description: str, rounds: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke test: under a minute, {FAST_MODEL} unless --model, 1 round",
    )
    p.add_argument("--model", help=f"catalog name, file name or path (default: {DEFAULT_MODEL})")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every contender")
    p.add_argument(
        "--rounds", type=int, default=rounds, help="interleaved rounds (default: %(default)s)"
    )
    p.add_argument("--ctx", type=int, default=2048, help="context window for every contender")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="CONTENDER",
        help="leave a contender out (repeatable)",
    )
    return p


def resolve_model(name: str | None, quick: bool) -> Path:
    """The model file: through llm4all's model store (pulled if needed), or a plain path."""
    name = name or (FAST_MODEL if quick else DEFAULT_MODEL)
    if Path(name).expanduser().is_file():
        return Path(name).expanduser().resolve()
    from llm4all.models import ModelStore

    note(f"resolving {name} in the model store (pulled if missing)…")
    return ModelStore().resolve(name, allow_download=True).path


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the machine --------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version_of(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": version_of("llama_cpp_python"),
        "gpt4all": version_of("gpt4all"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _bandwidth_worker(barrier: Any, queue: Any, n_bytes: int, repeats: int) -> None:
    import numpy as np

    data = np.ones(n_bytes // 8, dtype=np.int64)  # touched once: pages are real
    data.sum()
    for _ in range(repeats):
        barrier.wait()
        t0 = time.perf_counter()
        data.sum()
        queue.put((t0, time.perf_counter()))
        barrier.wait()


def read_bandwidth(workers: int, total: int = GiB, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: ``workers`` processes sum ``total`` bytes of int64s between them.

    Processes, not threads: numpy's sum holds the GIL. Best of ``repeats``.
    """
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_bandwidth_worker, args=(barrier, queue, total // workers, repeats))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    times = [queue.get(timeout=120) for _ in range(workers * repeats)]
    for p in procs:
        p.join()
    best = min(
        max(end for _, end in times[r * workers : (r + 1) * workers])
        - min(start for start, _ in times[r * workers : (r + 1) * workers])
        for r in range(repeats)
    )
    return total / best / 1e9


def bandwidth(threads: int, quick: bool) -> dict[str, float]:
    total = GiB // 4 if quick else GiB
    return {f"{n}_thread": round(read_bandwidth(n, total), 2) for n in sorted({1, threads})}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def prime_page_cache(path: Path) -> None:
    """Read the model once so that no contender pays for the disk."""
    with path.open("rb") as f:
        while f.read(16 * 2**20):
            pass


def tokenizer(model: Path) -> Callable[[str], list[int]]:
    """``model``'s tokenizer as a function (vocabulary only: no weights are loaded)."""
    from _workers import vocab_tokenizer

    return vocab_tokenizer(str(model))  # type: ignore[no-any-return]


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpt4all_model(path: Path) -> Path | None:
    """A file gpt4all 2.8.2 can load: ``path`` itself, or a copy with a pre-tokenizer it knows.

    Its llama.cpp predates the ``smollm`` pre-tokenizer; ``starcoder`` has the
    same split rules, so a copy renamed to it tokenizes identically.
    """
    from gguf import GGUFReader

    field = GGUFReader(str(path)).get_field("tokenizer.ggml.pre")
    if field is None or field.contents() != "smollm":
        return path
    patched = Path(tempfile.gettempdir()) / "llm4all-bench" / f"{path.stem}.starcoder-pre.gguf"
    if not patched.is_file() or patched.stat().st_mtime < path.stat().st_mtime:
        patched.parent.mkdir(parents=True, exist_ok=True)
        note(f"gpt4all: writing a copy with pre-tokenizer 'starcoder' to {patched}")
        cmd = [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--pre-tokenizer",
            "starcoder",
            "--force",
            str(path),
            str(patched),
        ]
        if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
            return None
    return patched


def available(wanted: Sequence[str], skip: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The contenders that can run here, and a note for each one left out."""
    notes: dict[str, str] = {}
    names = []
    for name in wanted:
        if name in skip:
            notes[name] = "skipped (--skip)"
        elif name == "gpt4all" and not have("gpt4all"):
            notes[name] = "skipped: gpt4all is not installed (pip install gpt4all==2.8.2)"
        else:
            names.append(name)
    for name, why in notes.items():
        note(f"{LABELS.get(name, name)}: {why}")
    return names, notes


# -- processes ----------------------------------------------------------------------
@dataclass
class ProcResult:
    rc: int
    wall_s: float
    first_byte_s: float | None
    peak_rss_mb: float
    stdout: str
    stderr: str


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


def spawn(cmd: Sequence[str], timeout: float = 600) -> ProcResult:
    """Run ``cmd``; time its first byte on stdout and read its own peak RSS (``wait4``)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=child_env())
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        assert proc.stdout is not None
        first = proc.stdout.read(1)
        t_first = time.perf_counter() - t0 if first else None
        rest = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    return ProcResult(
        proc.returncode,
        wall,
        t_first,
        usage.ru_maxrss / 1024,
        (first + rest).decode("utf-8", "replace"),
        stderr,
    )


def run_worker(
    task: str, contender: str, spec: dict[str, Any], timeout: float = 600
) -> dict[str, Any]:
    """One contender, one task, one fresh process; the worker's figures plus its peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(WORKER), task, contender, json.dumps(spec), str(out)]
        proc = spawn(cmd, timeout)
        if proc.rc != 0 or not out.is_file():
            tail = proc.stderr.strip().splitlines()[-3:]
            return {"error": f"exit {proc.rc}: " + " | ".join(tail)}
        result: dict[str, Any] = json.loads(out.read_text())
    result.update(
        peak_rss_mb=round(proc.peak_rss_mb, 1), wall_s=proc.wall_s, first_byte_s=proc.first_byte_s
    )
    return result


def interleave(
    names: Sequence[str], rounds: int, run_one: Callable[[str], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Run the contenders in turns, the starting one rotating each round."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        order = list(names[r % len(names) :]) + list(names[: r % len(names)])
        for name in order:
            note(f"round {r + 1}/{rounds}: {LABELS.get(name, name)} (load {load_average()})")
            result = run_one(name)
            if "error" in result:
                note(f"  failed: {result['error']}")
            runs[name].append(result)
    return runs


# -- statistics and verdicts -----------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max. Example: ``summary([3, 1, 2]) -> {median: 2, min: 1, max: 3, n: 3}``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def figure(runs: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    return summary([r[key] for r in runs if "error" not in r and r.get(key) is not None])


def paired(runs: dict[str, list[dict[str, Any]]], key: str, a: str, b: str) -> dict[str, float]:
    """Per-round ratios ``a / b`` of ``key``: each pair ran back to back, so drift cancels."""
    values = [
        ra[key] / rb[key]
        for ra, rb in zip(runs.get(a, []), runs.get(b, []), strict=False)
        if "error" not in ra and "error" not in rb and ra.get(key) and rb.get(key)
    ]
    return summary(values)


def at_least(s: dict[str, float] | None, threshold: float) -> bool | None:
    """Whether a summary's median reaches ``threshold`` (None when nothing was measured)."""
    return None if not s or not s.get("n") else s["median"] >= threshold


def at_most(s: dict[str, float] | None, threshold: float) -> bool | None:
    return None if not s or not s.get("n") else s["median"] <= threshold


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_targets(targets: dict[str, bool | None]) -> dict[str, str]:
    """Print PASS/FAIL per target; the same as a dict for the JSON."""
    verdicts = {name: verdict(ok) for name, ok in targets.items()}
    print_table("Targets", ["target", "verdict"], list(verdicts.items()))
    return verdicts


def fmt(s: dict[str, float], digits: int = 1, scale: float = 1.0) -> str:
    """``median (min–max)``."""
    if not s.get("n"):
        return "–"
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


# -- output -------------------------------------------------------------------------
def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}\n" + " | ".join(headers))
        for row in rows:
            print(" | ".join(row))
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(160, Console().width)).print(table)


def write_json(name: str, quick: bool, payload: dict[str, Any]) -> Path:
    """``results/NAME.json`` (``NAME.quick.json`` for smoke runs, which are not kept)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    note(f"wrote {path.relative_to(REPO)}")
    return path


# -- one benchmark run ----------------------------------------------------------------
@dataclass
class Bench:
    """The set-up every benchmark shares: model, machine, contenders, and the JSON at the end."""

    name: str
    args: argparse.Namespace
    model: Path
    machine: dict[str, Any]
    names: list[str]
    notes: dict[str, str]
    gpt4all_path: Path | None
    load_before: float

    @classmethod
    def start(cls, name: str, args: argparse.Namespace, contenders: Sequence[str]) -> Bench:
        model = resolve_model(args.model, args.quick)
        machine = machine_info()
        note(
            f"{name}: {model.name} ({model.stat().st_size / 1e6:.0f} MB), {args.threads} threads, "
            f"{machine['cpu']} ({machine['logical_cores']} logical cores), load {load_average()}"
        )
        names, notes = available(contenders, args.skip)
        g4a = gpt4all_model(model) if "gpt4all" in names else None
        if "gpt4all" in names and g4a is None:
            names.remove("gpt4all")
            notes["gpt4all"] = "skipped: could not patch the pre-tokenizer for gpt4all"
        prime_page_cache(model)
        return cls(name, args, model, machine, names, notes, g4a, load_average())

    def path_for(self, contender: str) -> Path:
        return self.gpt4all_path if contender == "gpt4all" and self.gpt4all_path else self.model

    def spec(self, contender: str, **task: Any) -> dict[str, Any]:
        """What a worker needs: model file, threads, context size, and the task's own fields."""
        base = {
            "model": str(self.path_for(contender)),
            "threads": self.args.threads,
            "n_ctx": self.args.ctx,
        }
        return {**base, **task}

    def run(self, task: str, **fields: Any) -> dict[str, list[dict[str, Any]]]:
        """``task`` for every contender, interleaved over the rounds."""
        return interleave(
            self.names, self.args.rounds, lambda c: run_worker(task, c, self.spec(c, **fields))
        )

    def save(self, settings: dict[str, Any], results: dict[str, Any]) -> Path:
        payload = {
            "benchmark": self.name,
            "quick": self.args.quick,
            "machine": self.machine,
            "model": {"file": self.model.name, "bytes": self.model.stat().st_size},
            "settings": {
                "threads": self.args.threads,
                "rounds": self.args.rounds,
                "n_ctx": self.args.ctx,
                **settings,
            },
            "load_before": self.load_before,
            "load_after": load_average(),
            "notes": self.notes,
            **results,
        }
        note(f"load average: {self.load_before} before, {payload['load_after']} after")
        return write_json(self.name, self.args.quick, payload)
