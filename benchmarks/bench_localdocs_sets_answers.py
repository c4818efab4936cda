"""End-to-end answers from documents on the labelled sets, judged as ``llm4all eval docs`` does.

Each set is indexed by LocalDocs as shipped (vectors from the benchmarks'
cache, ``_embedding_cache.py``), then the first ``--per-set`` questions of each
set are answered by each ``--model`` through ``Model.stream(…, collections=…)``
(the path every front end takes: the documents prompt, the default answer
length) at temperature 0, and judged by :func:`llm4all.evaluate.docs.judge`:
right, cited (a supported citation of an excerpt from a labelled file), copied
(verbatim runs over 40 % of an excerpt), good (all three). The machine is
shared: seconds are only comparable within one run.

Example: ``python benchmarks/bench_localdocs_sets_answers.py --per-set 6 --model qwen2.5-coder-1.5b-instruct``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import _docsets
import _harness as h
from _embedding_cache import CachedEmbedder

NAME = "localdocs_sets_answers"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(_docsets.SETS))
    p.add_argument("--per-set", type=int, default=6)
    p.add_argument("--model", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from llm4all import paths

    # the models stay where they are; only the LocalDocs database goes into a fresh home
    os.environ["LLM4ALL_MODELS"] = str(paths.models_dir())
    os.environ["LLM4ALL_HOME"] = tempfile.mkdtemp(prefix="llm4all-sets-answers-")
    from llm4all.api import Model
    from llm4all.embeddings import Embedder
    from llm4all.evaluate.docs import judge, summarise_answers
    from llm4all.localdocs import LocalDocs
    from llm4all.localdocs.context import answer_tokens

    machine, load = h.machine_info(), h.load_average()
    embedder = CachedEmbedder(Embedder("all-minilm-l6-v2", n_threads=args.threads))
    sets = args.sets.split(",")
    with LocalDocs(embedder_factory=lambda _: embedder) as docs:
        for name in sets:
            docs.add(name, [_docsets.corpus(name)])
            docs.index(name)
    results: dict[str, Any] = {}
    for model_name in args.model or ["qwen2.5-coder-1.5b-instruct"]:
        model = Model(model_name, n_threads=args.threads, n_ctx=4096)
        rows = []
        for name in sets:
            for item in _docsets.questions(name)[: args.per_set]:
                t0 = time.perf_counter()
                response = model.stream(item["question"], collections=[name], temperature=0.0,
                                        max_tokens=answer_tokens(None))  # fmt: skip
                text = response.text()
                done = response.completion
                row = {"set": name, "question": item["question"], "answer": text,
                       "tokens": done.usage.completion_tokens if done else 0,
                       "seconds": round(time.perf_counter() - t0, 1),
                       "files": [Path(r["path"]).name for r in response.sources],
                       "sources": [{k: r[k] for k in ("index", "path", "excerpt")} for r in response.sources],
                       **judge(text, response.sources, item)}  # fmt: skip
                rows.append(row)
                partial = {model_name: {"summary": summarise_answers(rows), "rows": rows}}
                h.write_json(f"{NAME}_{model_name.replace('/', '_')}.partial", False, partial)
                h.note(f"{model_name} {name}: {row['seconds']} s, right {row['right']}, "
                       f"cited {row['cited']}, copied {row['copied']}")  # fmt: skip
        results[model_name] = {
            "summary": summarise_answers(rows),
            "per_set": {s: summarise_answers([r for r in rows if r["set"] == s]) for s in sets},
            "rows": rows,
        }
        model.close()
    h.print_table(
        f"answers ({args.per_set} questions per set)",
        ["model", "good", "right", "cited right file", "copied", "median tokens"],
        [[m, *(str(r["summary"][k]) for k in ("good", "right", "cited", "copied", "median_tokens"))]
         for m, r in results.items()],
    )  # fmt: skip
    slug = "_".join(m.replace("/", "_") for m in results)
    h.write_json(f"{NAME}_{slug}", False, {"benchmark": NAME, "machine": machine, "load_before": load,
                               "load_after": h.load_average(), "per_set": args.per_set,
                               "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
