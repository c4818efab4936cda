"""End-to-end answers from documents on the labelled sets, judged as ``llm4all eval docs`` does.

Each set is indexed by LocalDocs as shipped (vectors from the benchmarks'
cache, ``_embedding_cache.py``), then the first ``--per-set`` questions of each
set are answered by each ``--model`` through ``Model.stream(…, collections=…)``
(the path every front end takes: the documents prompt, the default answer
length) at temperature 0, and judged by :func:`llm4all.evaluate.docs.judge`:
right, cited (a supported citation of an excerpt from a labelled file), copied
(verbatim runs over 40 % of an excerpt), good (all three), and sourced /
good_sourced (the same, counting the sentence the answer pipeline attributes to
an excerpt when the model cited none). ``--prompt`` names wordings of
``llm4all.localdocs.context.PROMPTS`` to compare; the questions are taken in
turn across the sets, every model and wording answering each, so a run stopped
early (the results file is rewritten after every answer) compares them on the
same questions. The machine is shared: seconds are only comparable within one run.

The citation step (``DocumentsPrompt.cite``) only appends `` [n]`` to an answer
that ended citing nothing, and answers are greedy, so a wording with the step
also gives the same wording without it: the answer less the step's marker
(``Response.step_marker``). Those rows are added as ``<wording>-no-step``
(``"derived": true``) unless that wording is asked for itself (``--prompt
shipped --prompt shipped-no-step`` generates both).

Example: ``python benchmarks/bench_localdocs_sets_answers.py --per-set 18 --model qwen2.5-coder-1.5b-instruct --prompt shipped --prompt end-cite``;
``--rejudge results/FILE.json`` judges a results file's answers again with the current judge.
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
    p.add_argument("--prompt", action="append", default=[],
                   help="a wording of llm4all.localdocs.context.PROMPTS (repeatable)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="", help="suffix of the results file")
    p.add_argument("--rejudge", type=Path, help="judge a results file's answers again, and stop")
    args = p.parse_args()
    if args.rejudge:
        rejudge(args.rejudge)
        return
    from llm4all import paths

    # the models stay where they are; only the LocalDocs database goes into a fresh home
    os.environ["LLM4ALL_MODELS"] = str(paths.models_dir())
    os.environ["LLM4ALL_HOME"] = tempfile.mkdtemp(prefix="llm4all-sets-answers-")
    from llm4all.api import Model
    from llm4all.embeddings import Embedder
    from llm4all.evaluate.docs import judge
    from llm4all.localdocs import LocalDocs, context

    machine, load = h.machine_info(), h.load_average()
    embedder = CachedEmbedder(Embedder("all-minilm-l6-v2", n_threads=args.threads))
    sets = args.sets.split(",")
    asked = args.prompt or ["shipped"]
    derived = {w: f"{w}-no-step" for w in asked
               if context.PROMPTS[w].cite and f"{w}-no-step" not in asked}  # fmt: skip
    prompts = [*asked, *derived.values()]
    model_names = args.model or ["qwen2.5-coder-1.5b-instruct"]
    with LocalDocs(embedder_factory=lambda _: embedder) as docs:
        for name in sets:
            docs.add(name, [_docsets.corpus(name)])
            docs.index(name)
    models = {m: Model(m, n_threads=args.threads, n_ctx=4096) for m in model_names}
    # interleaved (question by question across the sets, every model and wording on each), so
    # that a run stopped early leaves the same questions for every model and wording
    order = [(name, item) for i in range(args.per_set) for name in sets
             for item in _docsets.questions(name)[i : i + 1]]  # fmt: skip
    rows: list[dict[str, Any]] = []
    slug = args.name or "_".join(m.replace("/", "_") for m in model_names)

    def results() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in model_names:
            for w in prompts:
                mine = [r for r in rows if r["model"] == m and r["prompt"] == w]
                out[f"{m} / {w}"] = {
                    "model": m, "prompt": w,
                    "summary": summary(mine),
                    "per_set": {s: summary([r for r in mine if r["set"] == s])
                                for s in sets},
                }  # fmt: skip
        return out

    def save() -> None:
        h.write_json(f"{NAME}_{slug}", False, {"benchmark": NAME, "machine": machine,
                     "load_before": load, "load_after": h.load_average(),
                     "per_set": args.per_set, "prompts": prompts,
                     "questions_done": len(rows) // max(1, len(models) * len(prompts)),

                     "results": results(), "rows": rows})  # fmt: skip

    for name, item in order:
        for model_name, model in models.items():
            for wording in asked:
                context.PROMPT = context.PROMPTS[wording]
                t0 = time.perf_counter()
                response = model.stream(item["question"], collections=[name], temperature=0.0,
                                        max_tokens=context.answer_tokens(None))  # fmt: skip
                text = response.text()
                done = response.completion
                row = {"set": name, "model": model_name, "prompt": wording,
                       "question": item["question"], "answer": text,
                       "tokens": done.usage.completion_tokens if done else 0,
                       "seconds": round(time.perf_counter() - t0, 1),
                       "step_marker": response.step_marker,
                       "files": [Path(r["path"]).name for r in response.sources],
                       "sources": [{k: r[k] for k in ("index", "path", "excerpt")}
                                   for r in response.sources],
                       **judge(text, response.sources, item)}  # fmt: skip
                rows.append(row)
                if wording in derived:  # the same answer without the step's marker
                    marker = response.step_marker
                    bare = text[: len(text) - len(marker)]
                    rows.append(row | {"prompt": derived[wording], "derived": True,
                                       "answer": bare, "step_marker": "",
                                       "tokens": row["tokens"] - (len(model.engine.tokenize(
                                           marker, add_special=False)) if marker else 0),
                                       **judge(bare, response.sources, item)})  # fmt: skip
                save()
                h.note(f"{model_name} / {wording} {name}: {row['seconds']} s, right {row['right']}, "
                       f"cited {row['cited']}, copied {row['copied']}, good {row['good']}")  # fmt: skip
    for model in models.values():
        model.close()
    table(results())
    save()


def rejudge(path: Path) -> None:
    """Judge the rows of a results file again with the current judge (no generation)."""
    import json

    from llm4all.evaluate.docs import judge

    data = json.loads(path.read_text("utf-8"))
    items = {q["question"]: q for s in _docsets.SETS for q in _docsets.questions(s)}
    rows = data.get("rows") or [r | {"model": m, "prompt": "shipped"}
                                for m, res in data["results"].items() for r in res["rows"]]  # fmt: skip
    for row in rows:
        row.update(judge(row["answer"], row["sources"], items[row["question"]]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['model']} / {row['prompt']}", []).append(row)
    data["rows"] = rows
    data["results"] = {k: {"model": g[0]["model"], "prompt": g[0]["prompt"],
                           "summary": summary(g),
                           "per_set": {s: summary([r for r in g if r["set"] == s])
                                       for s in dict.fromkeys(r["set"] for r in g)}}
                       for k, g in groups.items()}  # fmt: skip
    out = path.with_name(path.stem + "_rejudged.json")
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    table(data["results"])
    h.note(f"wrote {out}")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``summarise_answers`` of the rows, and how many got their marker from the citation step."""
    from llm4all.evaluate.docs import summarise_answers

    return summarise_answers(rows) | {"stepped": sum(bool(r.get("step_marker")) for r in rows)}


def table(results: dict[str, Any]) -> None:
    keys = ("questions", "good", "good_sourced", "right", "cited", "sourced", "copied",
            "stepped", "median_tokens")  # fmt: skip
    h.print_table("answers", ["model / prompt", *keys],
                  [[k, *(str(r["summary"].get(c, "")) for c in keys)] for k, r in results.items()])  # fmt: skip


if __name__ == "__main__":
    main()
