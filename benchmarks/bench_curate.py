"""Curation at GPT4All's scale, and near-duplicate detection: MinHash against embeddings.

Three parts (results as JSON under ``benchmarks/results/``, tables in
``docs/training-data.md``)::

    python benchmarks/bench_curate.py scale [--sizes 10000,50000,437605]
    python benchmarks/bench_curate.py neardup
    python benchmarks/bench_curate.py walkthrough

- ``scale``: synthetic sets made from the shared training data
  (``../shared/data/train``, 15,245 rows, shuffled) by concatenating perturbed copies:
  the first copy as is, then per row 2 % exact copies, 8 % light edits (one
  word changed in prompt and answer: near duplicates) and 90 % heavy edits
  (a third of the words replaced: new rows). Each size is curated with every
  default rule on by ``llm4all data curate`` in a fresh process; wall time,
  rows/s and the process's peak RSS (``wait4``) are recorded, with the load.
- ``neardup``: a labelled sample of row pairs, made by construction from the
  shared data: near duplicates (a word or two changed, spacing and case
  changed, a sentence dropped, a word added to the prompt) and non-duplicates
  that are hard (two rows of one P3 template, two toolformer rows of one tool,
  the most similar other role-play row by embedding) or easy (random pairs).
  Each pair is scored by MinHash (the curation rule's estimated Jaccard, the
  lower of prompt and answer) and by all-MiniLM-L6-v2 embeddings (the lower
  cosine of prompt and answer); precision and recall at each method's default
  and best threshold, and each method's speed in rows/s.
- ``walkthrough``: the default curation of the shared data, counts per rule
  and source, for the docs' walk-through.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared" / "data" / "train"
RESULTS = BENCH / "results"
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from llm4all.data.formats import read_many  # noqa: E402
from llm4all.data.schema import Conversation  # noqa: E402

GPT4ALL_ROWS = 437_605
SEED = 12


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def shared_rows() -> list[Conversation]:
    if not SHARED.is_dir():
        sys.exit(f"the shared training data is missing: {SHARED}")
    return [r for r in read_many([SHARED]) if isinstance(r, Conversation)]


# -- synthetic sets --------------------------------------------------------------------------------


def _edit(text: str, rng: random.Random, vocabulary: list[str], share: float) -> str:
    words = text.split(" ")
    if len(words) < 2:
        return f"{text} {rng.choice(vocabulary)}"
    count = max(1, round(len(words) * share))
    for index in rng.sample(range(len(words)), min(count, len(words))):
        words[index] = rng.choice(vocabulary)
    return " ".join(words)


def synthetic(rows: list[Conversation], size: int, path: Path) -> dict[str, int]:
    """Write ``size`` rows in GPT4All's JSONL; returns how many of each kind."""
    rng = random.Random(SEED)
    vocabulary = sorted({w for r in rows[:3000] for w in r.response.split() if w.isalpha()})
    kinds = {"original": 0, "exact": 0, "light": 0, "heavy": 0}
    with path.open("w", encoding="utf-8") as out:
        for index in range(size):
            base = rows[index % len(rows)]
            prompt, response = base.prompt, base.response
            if index < len(rows):
                kind = "original"
            else:
                draw = rng.random()
                kind = "exact" if draw < 0.02 else "light" if draw < 0.10 else "heavy"
                if kind == "light":
                    prompt, response = (
                        _edit(prompt, rng, vocabulary, 0),
                        _edit(response, rng, vocabulary, 0),
                    )
                elif kind == "heavy":
                    prompt = _edit(prompt, rng, vocabulary, 0.33)
                    response = _edit(response, rng, vocabulary, 0.33)
            kinds[kind] += 1
            record = {"prompt": prompt, "response": response, "source": base.source}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return kinds


def _run_measured(command: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of the child, and its stdout."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {text}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, text


def scale(sizes: list[int], workdir: Path) -> dict[str, Any]:
    rows = shared_rows()
    random.Random(SEED).shuffle(rows)  # every size gets the mix of sources
    results = []
    for size in sizes:
        data = workdir / f"synthetic_{size}.jsonl"
        kinds = synthetic(rows, size, data)
        out = workdir / f"curated_{size}.jsonl"
        load_before = _load()
        command = [sys.executable, "-m", "llm4all", "data", "curate", str(data), "-o", str(out)]
        seconds, cpu, rss, text = _run_measured(command)
        kept = sum(1 for _ in out.open(encoding="utf-8"))
        entry = {
            "rows": size,
            "kinds": kinds,
            "kept": kept,
            "seconds": round(seconds, 1),
            "rows_per_s": round(size / seconds),
            "cpu_seconds": round(cpu, 1),
            "rows_per_cpu_s": round(size / cpu),
            "peak_rss_mib": rss,
            "load_before": load_before,
            "load_after": _load(),
            "output": text.strip().splitlines(),
        }
        print(json.dumps(entry), flush=True)
        results.append(entry)
        data.unlink()
        out.unlink()
    return {"scale": results}


# -- the labelled near-duplicate sample ------------------------------------------------------------


def _pair(a: Conversation, prompt: str, response: str) -> tuple[tuple[str, str], tuple[str, str]]:
    return (a.prompt, a.response), (prompt, response)


def labelled_pairs(rows: list[Conversation], per_kind: int) -> list[dict[str, Any]]:
    """Pairs with a label made by construction (see the module docstring)."""
    rng = random.Random(SEED)
    long_rows = [r for r in rows if len(r.response.split()) >= 12 and len(r.prompt.split()) >= 6]
    vocabulary = sorted({w for r in long_rows[:2000] for w in r.response.split() if w.isalpha()})
    by_source: dict[str, list[Conversation]] = {}
    for row in long_rows:
        by_source.setdefault(row.source, []).append(row)
    pairs: list[dict[str, Any]] = []

    def add(kind: str, duplicate: bool, a: tuple[str, str], b: tuple[str, str]) -> None:
        pairs.append({"kind": kind, "duplicate": duplicate, "a": a, "b": b})

    for row in rng.sample(long_rows, per_kind):
        add(
            "two words changed",
            True,
            *_pair(
                row,
                _edit(row.prompt, rng, vocabulary, 0),
                _edit(_edit(row.response, rng, vocabulary, 0), rng, vocabulary, 0),
            ),
        )
    for row in rng.sample(long_rows, per_kind):
        add(
            "spacing and case",
            True,
            *_pair(row, row.prompt.upper(), "  ".join(row.response.split(" "))),
        )
    for row in rng.sample([r for r in long_rows if r.response.count(". ") >= 3], per_kind):
        sentences = row.response.split(". ")
        del sentences[rng.randrange(len(sentences))]
        add("a sentence dropped", True, *_pair(row, row.prompt, ". ".join(sentences)))
    for row in rng.sample(long_rows, per_kind):
        add(
            "prompt reworded a little",
            True,
            *_pair(row, f"Please, {row.prompt} Thanks!", row.response),
        )
    p3 = [
        s
        for s in by_source
        if s not in ("gpteacher_roleplay", "gpteacher_toolformer")
        and len(by_source[s]) > 10
        and "self_instruct" not in s
        and "davinci" not in s
    ]
    for _ in range(per_kind):
        a, b = rng.sample(by_source[rng.choice(p3)], 2)
        add("one P3 template", False, (a.prompt, a.response), (b.prompt, b.response))
    tools = by_source["gpteacher_toolformer"]
    heads: dict[str, list[Conversation]] = {}
    for row in tools:
        heads.setdefault(row.prompt.split("\n")[1], []).append(row)
    groups = [g for g in heads.values() if len(g) > 10]
    for _ in range(per_kind):
        a, b = rng.sample(rng.choice(groups), 2)
        if a.response != b.response:
            add("one toolformer tool", False, (a.prompt, a.response), (b.prompt, b.response))
    for _ in range(per_kind):
        a, b = rng.sample(long_rows, 2)
        add("random", False, (a.prompt, a.response), (b.prompt, b.response))
    return pairs


def _nearest_roleplay_pairs(
    rows: list[Conversation], embedder: Any, count: int
) -> list[dict[str, Any]]:
    """The most similar other role-play row by embedding: same topic, not the same row."""
    import numpy as np

    roleplay = [r for r in rows if r.source == "gpteacher_roleplay"][:1500]
    vectors = embedder.embed_array([f"{r.prompt}\n{r.response}" for r in roleplay])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    best = similarity.max(axis=1)
    pairs = []
    for index in np.argsort(-best)[: count * 2 : 2]:
        other = int(similarity[index].argmax())
        a, b = roleplay[int(index)], roleplay[other]
        if a.response != b.response:
            pairs.append(
                {
                    "kind": "nearest role-play row",
                    "duplicate": False,
                    "a": (a.prompt, a.response),
                    "b": (b.prompt, b.response),
                }
            )
    return pairs


def _scores(
    pairs: list[dict[str, Any]], method: str, embedder: Any
) -> tuple[list[float], float, float]:
    """Each pair's similarity by ``method``, and the rows/s it ran at (wall, CPU)."""
    import numpy as np

    from llm4all.data.neardup import NearDuplicates

    index = NearDuplicates()  # set up (imports, permutations) before the clock starts
    texts = [t for p in pairs for t in (*p["a"], *p["b"])]
    started, cpu = time.perf_counter(), time.process_time()
    if method == "minhash":
        signatures = [index.signature(p, r) for p, r in zip(texts[0::2], texts[1::2], strict=True)]
        scores = [
            index.similarity(signatures[2 * i], signatures[2 * i + 1]) for i in range(len(pairs))
        ]
    else:
        vectors = embedder.embed_array(texts)
        cosine = [float(np.dot(vectors[i], vectors[i + 2])) for i in range(0, len(texts), 4)]
        answers = [float(np.dot(vectors[i + 1], vectors[i + 3])) for i in range(0, len(texts), 4)]
        scores = [min(a, b) for a, b in zip(cosine, answers, strict=True)]
    rows = 2 * len(pairs)
    return scores, rows / (time.perf_counter() - started), rows / (time.process_time() - cpu)


def _quality(
    pairs: list[dict[str, Any]], scores: list[float], threshold: float
) -> dict[str, float]:
    found = [s >= threshold for s in scores]
    truth = [bool(p["duplicate"]) for p in pairs]
    tp = sum(f and t for f, t in zip(found, truth, strict=True))
    precision = tp / sum(found) if any(found) else 1.0
    recall = tp / sum(truth)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold,
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
    }


def neardup(per_kind: int) -> dict[str, Any]:
    from llm4all.embeddings import Embedder

    rows = shared_rows()
    embedder = Embedder("all-minilm-l6-v2", n_threads=2)
    pairs = labelled_pairs(rows, per_kind) + _nearest_roleplay_pairs(rows, embedder, per_kind)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "duplicates": sum(p["duplicate"] for p in pairs),
        "load_before": _load(),
    }
    for method, default in (("minhash", 0.7), ("embedding", 0.95)):
        scores, speed, cpu_speed = _scores(pairs, method, embedder)
        grid = [round(0.3 + 0.01 * i, 2) for i in range(70)]
        best = max(
            (_quality(pairs, scores, t) for t in grid), key=lambda q: (q["f1"], q["threshold"])
        )
        per_kind_found: dict[str, str] = {}
        for kind in dict.fromkeys(p["kind"] for p in pairs):
            chosen = [s >= default for s, p in zip(scores, pairs, strict=True) if p["kind"] == kind]
            per_kind_found[kind] = f"{sum(chosen)}/{len(chosen)}"
        out[method] = {
            "default": _quality(pairs, scores, default),
            "best": best,
            "flagged_per_kind_at_default": per_kind_found,
            "by_threshold": [_quality(pairs, scores, t / 100) for t in range(50, 100, 5)],
            "rows_per_s": round(speed, 1),
            "rows_per_cpu_s": round(cpu_speed, 1),
            "cpu_minutes_for_437605_rows": round(GPT4ALL_ROWS / cpu_speed / 60, 1),
        }
    out["load_after"] = _load()
    embedder.close()
    print(json.dumps(out, indent=1))
    return {"neardup": out}


def walkthrough(workdir: Path) -> dict[str, Any]:
    out = workdir / "curated.jsonl"
    command = [
        sys.executable,
        "-m",
        "llm4all",
        "data",
        "curate",
        str(SHARED),
        "-o",
        str(out),
        "--dropped",
        str(workdir / "dropped.jsonl"),
    ]
    seconds, cpu, rss, text = _run_measured(command)
    print(text)
    report = (workdir / "curated.report.md").read_text(encoding="utf-8")
    print(report.split("## Examples")[0])
    return {
        "walkthrough": {
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "peak_rss_mib": rss,
            "output": text.splitlines(),
            "load": _load(),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=["scale", "neardup", "walkthrough"])
    parser.add_argument("--sizes", default=f"10000,50000,{GPT4ALL_ROWS}")
    parser.add_argument("--per-kind", type=int, default=40, help="neardup: pairs of each kind")
    parser.add_argument(
        "--workdir", type=Path, help="where the synthetic sets go (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.part == "scale":
            result = scale([int(s) for s in args.sizes.split(",")], workdir)
        elif args.part == "neardup":
            result = neardup(args.per_kind)
        else:
            result = walkthrough(workdir)
    result["cpus"] = os.cpu_count()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"curate_{args.part}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
