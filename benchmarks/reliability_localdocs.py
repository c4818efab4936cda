"""LocalDocs under concurrent commands: real ``llm4all docs`` processes racing on fresh homes.

Issue 17 (item 2) found that ``llm4all docs add a DIR & llm4all docs index &
wait`` on a fresh home printed a traceback in about 4 runs of 10, and that two
indexers on the same new files crashed with ``FOREIGN KEY constraint failed``.
Each round here, on a fresh ``LLM4ALL_HOME`` with its own folder of files:

1. **fresh**: ``docs add a DIR``, ``docs index``, ``docs add a DIR`` and
   ``docs index a`` start at once (nothing exists yet);
2. **watch**: ``docs watch a`` runs while files change (2 edited, 1 deleted,
   2 created) and ``docs index a`` and ``docs add a DIR`` run at once;
   the watcher is then stopped with SIGINT, as a user's Ctrl-C;
3. **settle**: one ``docs index a`` alone; what it still had to re-read is
   counted (a racing run may store an older version of a file that changed
   under it: the next run re-reads it, nothing is lost or doubled).

Counted per round: processes that died by a signal, tracebacks (any process,
any output), one-line errors (allowed only for ``docs index a``/``watch a``
before the collection exists), the database's ``integrity_check``, FTS5's
integrity check and ``foreign_key_check``, every file of the folder indexed
exactly once (no other rows, no duplicate chunks, every chunk one vector).

    python benchmarks/reliability_localdocs.py              # 10 rounds, ~5 min on 2 busy cores
    python benchmarks/reliability_localdocs.py --rounds 2   # a quicker look

Results go to ``benchmarks/results/reliability_localdocs.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SRC = BENCH_DIR.parent / "src"
RESULTS = BENCH_DIR / "results"
if (SRC / "llm4all").is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))  # measure the checkout, not an installed copy

CLI = [sys.executable, "-m", "llm4all"]
WORDS = ["river", "stone", "lamp", "harbour", "garden", "ledger", "copper", "violin", "meadow"]


def corpus(folder: Path, rng: random.Random) -> None:
    """Eight notes (Markdown, text, one without extension) and a binary file."""
    folder.mkdir(parents=True)
    for i in range(8):
        name = f"GUIDE-{i}" if i == 7 else f"note{i}.{'md' if i % 2 else 'txt'}"
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(30)) + f". Fact {i}.{j}."
            for j in range(rng.randint(3, 8))
        ]
        (folder / name).write_text(f"# Note {i}\n\n" + "\n\n".join(paragraphs) + "\n")
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 8)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    return {"args": proc.args[len(CLI) :], "rc": proc.returncode, "stdout": out, "stderr": err}


def classify(result: dict[str, Any]) -> str:
    """ok, signal (died by one), traceback, allowed (a one-line error that is expected), error."""
    text = result["stdout"] + result["stderr"]
    if "Traceback" in text:
        return "traceback"
    if result["rc"] < 0:
        return "signal"
    if result["rc"] in (0, 130):
        return "ok"
    early = "no LocalDocs collection named 'a'" in result["stderr"]
    return "allowed" if early and result["args"][1] in ("index", "watch") else "error"


def check_database(path: Path, folder: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        fts_ok = True
        try:
            conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError:
            fts_ok = False
        rows = conn.execute("SELECT path, state FROM files").fetchall()
        texts = sorted(str(p) for p in folder.iterdir() if p.suffix != ".bin")
        documents = sorted(p for p, s in rows if s != "skipped")
        return {
            "integrity_check": conn.execute("PRAGMA integrity_check").fetchone()[0],
            "fts_integrity": fts_ok,
            "foreign_key_violations": len(conn.execute("PRAGMA foreign_key_check").fetchall()),
            "files_expected": len(texts),
            "files_indexed": sum(1 for _, s in rows if s == "indexed"),
            "files_once": documents == texts,
            "states": dict(Counter(s for _, s in rows)),
            "duplicate_chunks": conn.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM chunks GROUP BY file_id, ordinal"
                " HAVING COUNT(*) > 1)"
            ).fetchone()[0],
            "chunks_without_vector": conn.execute(
                "SELECT COUNT(*) FROM chunks c LEFT JOIN vectors v ON v.chunk_id = c.id"
                " WHERE v.chunk_id IS NULL"
            ).fetchone()[0],
            "chunk_counts_match": conn.execute(
                "SELECT COUNT(*) FROM files f WHERE n_chunks !="
                " (SELECT COUNT(*) FROM chunks c WHERE c.file_id = f.id)"
            ).fetchone()[0]
            == 0,
        }
    finally:
        conn.close()


def one_round(number: int, root: Path, models: str) -> dict[str, Any]:
    rng = random.Random(number)
    home, folder = root / f"round{number}" / "home", root / f"round{number}" / "docs"
    corpus(folder, rng)
    env = {
        **os.environ,
        "LLM4ALL_HOME": str(home),
        "LLM4ALL_MODELS": models,
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(SRC),
    }
    began = time.monotonic()
    fresh = [
        start(a, env)
        for a in (
            ["docs", "add", "a", str(folder)],
            ["docs", "index"],
            ["docs", "add", "a", str(folder)],
            ["docs", "index", "a"],
        )
    ]
    results = [finish(p) for p in fresh]
    watch = start(["docs", "watch", "a", "--interval", "0.3"], env)
    time.sleep(rng.uniform(0.5, 3.0))  # the watcher may still be starting, or scanning
    (folder / "note0.txt").write_text("# Note 0\n\nThe copper lamp was moved to the harbour.\n")
    (folder / "note1.md").write_text("# Note 1\n\nThe violin is kept in the orchard.\n")
    (folder / "note2.txt").unlink()
    (folder / "late-a.md").write_text("# Late\n\nThe ledger is in the garden shed.\n")
    (folder / "late-b").write_text("The meadow lantern is blue.\n")
    racing = [start(["docs", "index", "a"], env), start(["docs", "add", "a", str(folder)], env)]
    results += [finish(p) for p in racing]
    time.sleep(1.0)
    watch.send_signal(signal.SIGINT)
    results.append(finish(watch))
    settle = finish(start(["docs", "index", "a"], env))
    results.append(settle)
    reread = 0
    for line in settle["stderr"].splitlines():
        if line.startswith("a: ") and "new or changed" in line:
            reread = int(line.split("(")[1].split()[0])
    kinds = Counter(classify(r) for r in results)
    problems = [
        {"args": r["args"], "rc": r["rc"], "stderr_tail": r["stderr"][-600:]}
        for r in results
        if classify(r) not in ("ok", "allowed")
    ]
    return {
        "round": number,
        "seconds": round(time.monotonic() - began, 1),
        "processes": len(results),
        "outcomes": dict(kinds),
        "problems": problems,
        "settle_reread": reread,
        "database": check_database(home / "localdocs.db", folder),
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    for r in rounds:
        outcomes.update(r["outcomes"])
    db = [r["database"] for r in rounds]
    return {
        "rounds": len(rounds),
        "processes": sum(r["processes"] for r in rounds),
        "crashes_by_signal": outcomes["signal"],
        "tracebacks": outcomes["traceback"],
        "other_errors": outcomes["error"],
        "expected_one_line_errors": outcomes["allowed"],
        "databases_intact": sum(
            d["integrity_check"] == "ok" and d["fts_integrity"] and not d["foreign_key_violations"]
            for d in db
        ),
        "all_files_indexed_once": sum(
            d["files_once"]
            and d["files_indexed"] == d["files_expected"]
            and not d["duplicate_chunks"]
            and not d["chunks_without_vector"]
            and d["chunk_counts_match"]
            for d in db
        ),
        "files_reread_by_settling_run": sum(r["settle_reread"] for r in rounds),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS / "reliability_localdocs.json")
    args = p.parse_args()
    from llm4all import paths
    from llm4all.models import ModelStore

    models = str(paths.models_dir())
    ModelStore(Path(models)).resolve("all-minilm-l6-v2", allow_download=True)  # pulled once
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="llm4all-reliability-") as tmp:
        for n in range(args.rounds):
            result = one_round(n, Path(tmp), models)
            rounds.append(result)
            print(
                f"round {n}: {result['outcomes']} db={result['database']['integrity_check']} "
                f"once={result['database']['files_once']} reread={result['settle_reread']} "
                f"({result['seconds']} s)",
                flush=True,
            )
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "summary": summarize(rounds),
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
