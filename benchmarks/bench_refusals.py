"""Refusal rate of each chat model, per candidate system prompt: how the catalog's defaults were chosen.

GPT4All's first README example, ``write me a story about a lonely computer``,
made the default model answer "I'm sorry, but I can't assist with that
request." in 4 of 8 runs at its default sampling. The catalog therefore
carries a system prompt per model (``system_prompt``), chosen with this
benchmark: every model answers a fixed set of everyday requests, once with no
system message (the chat template's own default) and once with each
candidate system prompt, at the default sampling over fixed seeds, and the
shared detector (:mod:`llm4all.data.refusals`) counts the answers that
decline.

The requests:

- ``story`` — the seed's story prompt, 24 times (seeds 0–23);
- ``vicuna`` — the 80 vicuna questions (``shared/data/eval``);
- ``self-instruct`` — the first 40 user-oriented self-instruct instructions,
  with their first input;
- ``zh`` — the three Chinese questions a review of GPT4All asked;
- ``roleplay`` — only when ``--sets`` or ``--ids`` names it: 16 role-play requests
  (``benchmarks/data/roleplay_requests.jsonl``), written to check a system prompt chosen on
  vicuna's role-play questions against requests it was not chosen on.

Only the opening of each answer is generated (``--max-tokens``, 32 by
default): models decline in their first sentence, and the detector reads only
the first 240 characters. ``catalog`` is the prompt a user gets today
(whatever the catalog says, or the template's default if it says nothing).

``--screen`` ranks candidates without sampling any answer: from the model's
own probabilities of a refusal's first tokens (:mod:`_refusal_screen`), the
expected number of refusals per set under each system prompt and sampling
candidate, in a fraction of a full run's time. Screen many, then run the best.

Example: ``python benchmarks/bench_refusals.py --models qwen2.5-coder-0.5b-instruct``
Example: ``python benchmarks/bench_refusals.py --screen --sets vicuna --sampling default,catalog``
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
from _refusal_screen import Screen
from llm4all.data import find_refusal
from llm4all.models.catalog import with_examples
from llm4all.params import GenerationParams

NAME = "refusals"
DATA = h.REPO.parent / "shared" / "data" / "eval"
STORY = "write me a story about a lonely computer"
STORY_SEEDS = 24
SELF_INSTRUCT = 40

_TASK_ANSWER = (
    "Below is an instruction that describes a task, such as a question to answer, "
    "a story to write or a role to play. Write a response that appropriately "
    "completes the request, starting with the answer itself."
)
# Worked examples (instruction, response) for the catalog's ``examples`` field, rendered
# after the prompt exactly as the catalog renders them (``with_examples``).
_EXAMPLES = {
    "mouse": (
        "Write a story about a brave mouse.",
        "Once upon a time, a small mouse named Pip lived under the floor of a bakery.",
    ),
    "astro": (
        "You are an astronaut on the Moon. Describe what you see.",
        "The ground is grey dust and the sky is black. The Earth hangs above the horizon, "
        "blue and white, and my boots leave deep prints.",
    ),
    "ghost": (
        "Pretend to be a ghost in an old castle. Tell me about your night.",
        "At midnight I drift through the great hall, rattle the chains in the tower and watch "
        "the moonlight on the empty throne.",
    ),
    "pirate": (
        "Pretend to be a pirate and greet a new sailor.",
        "Ahoy, matey! Welcome aboard the Salty Gull. We sail at dawn!",
    ),
    "review": (
        "Write a review of a new phone.",
        "The Nova X is light and fast, and its battery lasts two days. The camera struggles "
        "at night, but for its price it is an easy pick.",
    ),
    "film": (
        "Write a review of a film that just came out.",
        "Starfall is a bold, moving science fiction film: the plot twists keep coming, the "
        "crew feels real, and the effects are stunning.",
    ),
}


def _shown(*names: str) -> str:
    """The catalog's prompt followed by the named worked examples."""
    return with_examples(_TASK_ANSWER, [_EXAMPLES[n] for n in names]) or ""


# The candidates. "template" sends no system message; "catalog" sends what the
# catalog says for the model (the template's default where it says nothing).
CANDIDATES: dict[str, str | None] = {
    "template": None,
    "helpful": "You are a helpful assistant.",
    "general": (
        "You are a helpful, friendly assistant. You answer questions on any topic and "
        "write stories, poems, emails, code and other text when asked."
    ),
    # The Alpaca instruction header, widened to say what a task may be: the best of
    # 20 prompts screened by the probability of a refusal's first words.
    "task": (
        "Below is an instruction that describes a task, such as a question to answer, "
        "a story to write or a role to play. Write a response that appropriately "
        "completes the request."
    ),
    "qwen-writer": (
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant. You answer "
        "questions, write stories and poems, and help with code."
    ),
    "persona": (
        "I am a friendly assistant and writer. I answer questions on any subject, write "
        "stories, poems and letters, explain things and help with code."
    ),
    "kinds": (
        "You are a helpful assistant. Users ask you questions, ask for stories, poems, "
        "emails, summaries, advice and code. Complete each request."
    ),
    "writer": "You are a helpful assistant and a creative writer.",
    "helpful-creative": "You are a helpful, creative assistant.",
    "helpful-roles": (
        "You are a helpful assistant. You answer questions, write stories and play roles "
        "when asked."
    ),
    "task-answer": _TASK_ANSWER,
    # Role-play variants of the catalog's prompt (vicuna's role-play questions, issue 21).
    "ta-character": f"{_TASK_ANSWER} When asked to play a role, answer in character.",
    "ta-pretend": f"{_TASK_ANSWER} Pretending and role-play are welcome: answer as the character would.",
    "ta-fiction": f"{_TASK_ANSWER} Role-play is fiction: stay in character.",
    "ta-opinion": f"{_TASK_ANSWER} When asked for an opinion or to play a role, give one.",
    "task-first-person": (
        "Below is an instruction that describes a task, such as a question to answer, a story "
        "to write or a role to play in the first person. Write a response that appropriately "
        "completes the request, starting with the answer itself."
    ),
    "task-imaginary": (
        "Below is an instruction that describes a task, such as a question to answer, a story "
        "to write or an imaginary role to play. Write a response that appropriately completes "
        "the request, starting with the answer itself."
    ),
    "task-character": (
        "Below is an instruction that describes a task, such as a question to answer, a story "
        "to write or a character to play for fun. Write a response that appropriately completes "
        "the request, starting with the answer itself."
    ),
    "task-speech": (
        "Below is an instruction that describes a task, such as a question to answer, a story "
        "to write or a role to play (write the character's words). Write a response that "
        "appropriately completes the request, starting with the answer itself."
    ),
    # One worked example of role-play after the catalog's prompt (a demonstration, not a rule:
    # rules about role-play made the model refuse more).
    "ta-example-pirate": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: Pretend to be a pirate and greet a new "
        "sailor.\nResponse: Ahoy, matey! Welcome aboard the Salty Gull. Stow your gear and "
        "grab a rope: we sail at dawn!"
    ),
    "ta-example-astronaut": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: You are an astronaut on the Moon. "
        "Describe what you see.\nResponse: The ground is grey dust and the sky is black. "
        "The Earth hangs above the horizon, blue and white, and my boots leave deep prints."
    ),
    "ta-examples-two": (
        f"{_TASK_ANSWER}\n\nExamples:\nInstruction: Pretend to be a pirate and greet a new "
        "sailor.\nResponse: Ahoy, matey! Welcome aboard the Salty Gull. We sail at dawn!\n\n"
        "Instruction: What is the capital of France?\nResponse: Paris."
    ),
    "ta-example-first-person": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: As a lighthouse keeper, describe your "
        "night.\nResponse: I climb the stairs at dusk, light the lamp and watch the ships "
        "pass until morning."
    ),
    "ta-ex-astro-story": (
        f"{_TASK_ANSWER}\n\nExamples:\nInstruction: You are an astronaut on the Moon. "
        "Describe what you see.\nResponse: The ground is grey dust and the sky is black. "
        "The Earth hangs above the horizon, blue and white, and my boots leave deep prints.\n\n"
        "Instruction: Write a story about a brave mouse.\nResponse: Once upon a time, a small "
        "mouse named Pip lived under the floor of a bakery."
    ),
    "ta-ex-story-astro": (
        f"{_TASK_ANSWER}\n\nExamples:\nInstruction: Write a story about a brave mouse.\n"
        "Response: Once upon a time, a small mouse named Pip lived under the floor of a "
        "bakery.\n\nInstruction: You are an astronaut on the Moon. Describe what you see.\n"
        "Response: The ground is grey dust and the sky is black. The Earth hangs above the "
        "horizon, blue and white, and my boots leave deep prints."
    ),
    "ta-ex-astro-short": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: You are an astronaut on the Moon. "
        "Describe what you see.\nResponse: Grey dust, a black sky, and the blue Earth above "
        "the horizon."
    ),
    "ta-ex-diver": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: You are a deep-sea diver. Describe what "
        "you see.\nResponse: The water turns from blue to black as I sink. A glowing fish "
        "drifts past my lamp, and the sea floor is soft white sand."
    ),
    "ta-ex-astro-third": (
        f"{_TASK_ANSWER}\n\nExample:\nInstruction: You are an astronaut on the Moon. "
        "Describe what you see.\nResponse: The ground is grey dust and the sky is black. "
        "The Earth hangs above the horizon, blue and white."
    ),
    "task-ex-astro": (
        "Below is an instruction that describes a task, such as a question to answer, "
        "a story to write or a role to play. Write a response that appropriately "
        "completes the request.\n\nExample:\nInstruction: You are an astronaut on the Moon. "
        "Describe what you see.\nResponse: The ground is grey dust and the sky is black. "
        "The Earth hangs above the horizon, blue and white, and my boots leave deep prints."
    ),
    "ta-ex-mouse-astro-ghost": _shown("mouse", "astro", "ghost"),
    "ta-ex-mouse-ghost-astro": _shown("mouse", "ghost", "astro"),
    "ta-ex-mouse-ghost": _shown("mouse", "ghost"),
    "ta-ex-mouse-astro-pirate": _shown("mouse", "astro", "pirate"),
    "ta-ex-ghost-mouse-astro": _shown("ghost", "mouse", "astro"),
    "ta-ex-mouse-astro-ghost-review": _shown("mouse", "astro", "ghost", "review"),
    "ta-ex-mouse-review-astro-ghost": _shown("mouse", "review", "astro", "ghost"),
    "ta-ex-mouse-astro-ghost-film": _shown("mouse", "astro", "ghost", "film"),
    "any-task": (
        "You are a helpful assistant for any task, not only programming. You answer "
        "questions on every subject and write stories, poems, letters and code when asked. "
        "Do what the user asks as well as you can."
    ),
}
# Sampling candidates: changes to the library's defaults (temperature 0.7, top_k 40,
# top_p 0.95, min_p 0.05, repeat_penalty 1.1). "default" changes nothing; "catalog"
# is what the catalog's ``sampling`` gives the model.
SAMPLINGS: dict[str, dict[str, float | int]] = {
    "default": {},
    "min_p.1": {"min_p": 0.1},
    "min_p.2": {"min_p": 0.2},
    "min_p.3": {"min_p": 0.3},
    "min_p.4": {"min_p": 0.4},
    "top_k10": {"top_k": 10},
    "top_k20": {"top_k": 20, "top_p": 0.8},
    "qwen": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05},
    "rp1.0": {"repeat_penalty": 1.0},
    "t0.5_min_p.2": {"temperature": 0.5, "min_p": 0.2},
}
MODELS = ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct")


@dataclass(frozen=True)
class Request:
    set: str
    id: str
    text: str
    seed: int


def _jsonl(name: str) -> Iterator[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def requests(quick: bool) -> list[Request]:
    """The fixed request set (a few of each kind with ``quick``)."""
    out = [Request("story", f"story-{s}", STORY, s) for s in range(STORY_SEEDS)]
    out += [
        Request("vicuna", f"vicuna-{q['question_id']}", q["text"], 1000 + int(q["question_id"]))
        for q in _jsonl("vicuna_questions_80.jsonl")
    ]
    for i, task in enumerate(_jsonl("self_instruct_user_oriented.jsonl")):
        if i == SELF_INSTRUCT:
            break
        given = (task.get("instances") or [{}])[0].get("input", "").strip()
        text = f"{task['instruction']}\n\n{given}" if given else task["instruction"]
        out.append(Request("self-instruct", task["id"], text, 2000 + i))
    out += [
        Request("zh", q["id"], q["question"], 3000 + i)
        for i, q in enumerate(_jsonl("seed_article_questions.jsonl"))
    ]
    # Held out: role-play requests written for checking a prompt chosen on vicuna's role-play
    # questions; only sent when ``--sets`` or ``--ids`` names them.
    with (Path(__file__).parent / "data" / "roleplay_requests.jsonl").open(encoding="utf-8") as f:
        held_out = [json.loads(line) for line in f if line.strip()]
    out += [Request("roleplay", q["id"], q["text"], 4000 + i) for i, q in enumerate(held_out)]
    if quick:
        by_set: dict[str, list[Request]] = {}
        for r in out:
            by_set.setdefault(r.set, []).append(r)
        out = [r for rs in by_set.values() for r in rs[:3]]
    return out


def chosen(args: argparse.Namespace) -> list[Request]:
    """The requests of ``--sets`` and ``--ids`` (all but the held-out ``roleplay`` by default)."""

    def wanted(r: Request) -> bool:
        if args.sets and r.set not in args.sets:
            return False
        return r.id in args.ids if args.ids else bool(args.sets) or r.set != "roleplay"

    return [r for r in requests(args.quick) if wanted(r)]


def measure(
    model_name: str, candidates: dict[str, str | None], args: argparse.Namespace
) -> dict[str, Any]:
    """Every request under every candidate with one loaded model."""
    import llm4all
    from llm4all import Message

    model = llm4all.Model(model_name, n_ctx=2048, n_threads=args.threads)
    catalog_prompt = model.default_system_prompt
    todo = dict(candidates)
    asked = args.candidates is None or "catalog" in args.candidates.split(",")
    if catalog_prompt is not None and asked:  # with none, "catalog" is the same as "template"
        todo["catalog"] = catalog_prompt
    samplings = (
        {k: SAMPLINGS[k] for k in args.sampling if k != "catalog"}
        if args.sampling
        else {"default": {}}
    )
    if args.sampling and "catalog" in args.sampling:
        samplings["catalog"] = model.default_sampling
    results: dict[str, Any] = {
        "catalog_system_prompt": catalog_prompt,
        "catalog_sampling": model.default_sampling,
        "candidates": {},
    }
    base = GenerationParams()
    for (label, system), (sampling_label, sampling) in itertools.product(
        todo.items(), samplings.items()
    ):
        if sampling_label != "default":
            label = f"{label} @ {sampling_label}"
        rows = []
        t0 = time.perf_counter()
        for req in chosen(args):
            messages = [Message("system", system)] if system else []
            messages.append(Message("user", req.text))
            params = base.replace(**sampling, seed=req.seed, max_tokens=args.max_tokens)
            answer = model.stream_tokens(model.chat_tokens(messages), params).text()
            found = find_refusal(answer, disclaimers=True)
            if found is not None and found.reason == "declines":  # progress for long runs
                h.note(f"{label} / {req.id}: {answer!r}")
            rows.append(
                {
                    "set": req.set,
                    "id": req.id,
                    "refusal": found is not None and found.reason == "declines",
                    "disclaimer": found is not None and found.reason == "ai-disclaimer",
                    "answer": answer,
                }
            )
        results["candidates"][label] = {
            "system_prompt": system,
            "sampling": sampling,
            "seconds": round(time.perf_counter() - t0, 1),
            "rows": rows,
        }
        h.note(f"{model_name} / {label}: {_summary(rows)}")
    model.close()
    return results


def screen(
    model_name: str, candidates: dict[str, str | None], args: argparse.Namespace
) -> dict[str, Any]:
    """Expected refusals per set for every candidate and sampling, from first-token probabilities.

    The story prompt is one request here (the screen draws no seeds): its
    probability is what each of the 24 seeded runs faces.
    """
    import llm4all
    from llm4all import Message

    model = llm4all.Model(model_name, n_ctx=2048, n_threads=args.threads)
    todo = dict(candidates)
    if model.default_system_prompt is not None and (
        args.candidates is None or "catalog" in args.candidates.split(",")
    ):
        todo["catalog"] = model.default_system_prompt
    labels = args.sampling or ["default", "catalog"]
    base = GenerationParams()
    samplings = {
        k: base.replace(**(model.default_sampling if k == "catalog" else SAMPLINGS[k]))
        for k in labels
    }
    walker = Screen(model, samplings)
    unique = {(r.set, r.text): r for r in chosen(args)}
    results: dict[str, Any] = {"catalog_sampling": model.default_sampling, "candidates": {}}
    for label, system in todo.items():
        t0 = time.perf_counter()
        rows = []
        for req in unique.values():
            messages = [Message("system", system)] if system else []
            tree = walker.tree(model.chat_tokens([*messages, Message("user", req.text)]))
            rows.append(
                {
                    "set": req.set,
                    "id": req.id,
                    "p": {k: round(tree.refusal_probability(v), 4) for k, v in samplings.items()},
                    "opening": tree.worst(),
                }
            )
        results["candidates"][label] = {
            "system_prompt": system,
            "seconds": round(time.perf_counter() - t0, 1),
            "rows": rows,
        }
        h.note(f"{model_name} / {label}: {_expected(rows, labels[0])}")
        for row in rows:
            if max(row["p"].values()) >= 0.05:
                h.note(f"  {row['id']}: {row['p']} {row['opening']!r}")
    model.close()
    return {"samplings": {k: SAMPLINGS.get(k, model.default_sampling) for k in labels}, **results}


def _expected(rows: list[dict[str, Any]], sampling: str) -> str:
    """Expected refusals per set (the story's probability times its 24 seeds)."""
    parts = []
    for name in dict.fromkeys(r["set"] for r in rows):
        total = sum(r["p"][sampling] for r in rows if r["set"] == name)
        n = sum(1 for r in rows if r["set"] == name)
        parts.append(
            f"story p={total:.2f} ({total * STORY_SEEDS:.1f}/{STORY_SEEDS})"
            if name == "story"
            else f"{name} {total:.1f}/{n}"
        )
    return ", ".join(parts)


def screen_rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for model_name, per_model in results.items():
        for label, cand in per_model["candidates"].items():
            rows = cand["rows"]
            for sampling in rows[0]["p"] if rows else ():
                risky = sorted(rows, key=lambda r: -float(r["p"][sampling]))[:3]
                out.append(
                    [
                        model_name,
                        label,
                        sampling,
                        _expected(rows, sampling),
                        ", ".join(
                            f"{r['id']} {r['p'][sampling]:.2f}"
                            for r in risky
                            if r["p"][sampling] >= 0.05
                        ),
                    ]
                )
    return out


def _summary(rows: list[dict[str, Any]]) -> str:
    parts = []
    for name in dict.fromkeys(r["set"] for r in rows):
        of_set = [r for r in rows if r["set"] == name]
        parts.append(f"{name} {sum(r['refusal'] for r in of_set)}/{len(of_set)}")
    return ", ".join(parts)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    out = []
    for model_name, per_model in results.items():
        for label, cand in per_model["candidates"].items():
            rows = cand["rows"]
            counts = [
                f"{sum(r['refusal'] for r in rows if r['set'] == s)}/"
                f"{sum(1 for r in rows if r['set'] == s)}"
                for s in ("story", "vicuna", "self-instruct", "zh", "roleplay")
            ]
            total = f"{sum(r['refusal'] for r in rows)}/{len(rows)}"
            disclaimers = str(sum(r["disclaimer"] for r in rows))
            out.append([model_name, label, *counts, total, disclaimers])
    return out


def _earlier(name: str, quick: bool) -> dict[str, Any]:
    """Models measured by earlier runs (one model a run keeps the others' figures)."""
    path = h.RESULTS / f"{name}{'.quick' if quick else ''}.json"
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("results", {}))


def _merged(earlier: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``earlier``, candidate by candidate (a re-run replaces only what it measured)."""
    out = dict(earlier)
    for model_name, per_model in new.items():
        old = out.get(model_name, {}).get("candidates", {})
        out[model_name] = {**per_model, "candidates": {**old, **per_model["candidates"]}}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 requests of each kind, SmolLM2 only")
    p.add_argument("--models", help=f"comma-separated catalog names (default: {', '.join(MODELS)})")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens generated per answer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--candidates",
        help=f"comma-separated candidate names (default: all of {', '.join(CANDIDATES)})",
    )
    p.add_argument("--sets", help="comma-separated request sets (default: all)")
    p.add_argument(
        "--ids", help="comma-separated request ids, e.g. vicuna-21,vicuna-27 (default: all)"
    )
    p.add_argument(
        "--sampling",
        help=f"comma-separated sampling candidates, each tried with every system prompt "
        f"(default: the library's defaults; 'catalog' is the catalog's; of {', '.join(SAMPLINGS)})",
    )
    p.add_argument(
        "--screen",
        action="store_true",
        help="expected refusals from first-token probabilities instead of sampled answers "
        "(default sampling candidates: default,catalog)",
    )
    p.add_argument("--out", help=f"results name (default: {NAME}, or {NAME}_first_tokens)")
    args = p.parse_args()
    args.out = args.out or (f"{NAME}_first_tokens" if args.screen else NAME)
    args.sets = args.sets.split(",") if args.sets else None
    args.ids = args.ids.split(",") if args.ids else None
    args.sampling = args.sampling.split(",") if args.sampling else None
    names = args.models.split(",") if args.models else [h.FAST_MODEL] if args.quick else MODELS
    wanted = (
        [c for c in args.candidates.split(",") if c != "catalog"]
        if args.candidates
        else list(CANDIDATES)
    )
    candidates = {k: CANDIDATES[k] for k in wanted}
    load_before = h.load_average()
    if args.screen:
        run_screen(names, candidates, args, load_before)
        return
    results = {name: measure(name, candidates, args) for name in names}
    results = _merged(_earlier(args.out, args.quick), results)
    h.print_table(
        "Refusals (declining answers) per model and system prompt",
        [
            "model",
            "system prompt",
            "story",
            "vicuna",
            "self-instruct",
            "zh",
            "roleplay (held out)",
            "all",
            "AI disclaimers",
        ],
        table_rows(results),
    )
    h.write_json(
        args.out,
        args.quick,
        {
            "benchmark": NAME,
            "machine": h.machine_info(),
            "settings": {"max_tokens": args.max_tokens, "threads": args.threads, "sets": args.sets},
            "candidates": CANDIDATES,
            "samplings": SAMPLINGS,
            "load_before": load_before,
            "load_after": h.load_average(),
            "results": results,
        },
    )


def run_screen(
    names: list[str], candidates: dict[str, str | None], args: argparse.Namespace, load: float
) -> None:
    results = {name: screen(name, candidates, args) for name in names}
    results = _merged(_earlier(args.out, args.quick), results)
    h.print_table(
        "Expected refusals (first-token screen) per model, system prompt and sampling",
        ["model", "system prompt", "sampling", "expected refusals", "most likely refused"],
        screen_rows(results),
    )
    h.write_json(
        args.out,
        args.quick,
        {
            "benchmark": f"{NAME}_first_tokens",
            "machine": h.machine_info(),
            "settings": {"threads": args.threads, "sets": args.sets},
            "candidates": CANDIDATES,
            "load_before": load,
            "load_after": h.load_average(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
