"""Time to first token over a long chat: does turn 20 cost what turn 1 costs?

One chat of short user messages (answers capped at 32 tokens, greedy) runs
through llm4all's ``ChatSession``, which keeps the KV cache of the
conversation and evaluates only the new tokens of each turn. The reference is
the same chat through llm4all with the KV cache forgotten before every turn,
so that each turn re-evaluates the whole conversation from scratch. Peers:
llama-cpp-python's ``create_chat_completion`` with the growing message list,
and gpt4all 2.8.2's ``chat_session`` (ChatML spelled out as its template).

Example: ``python benchmarks/bench_multiturn.py --quick``
"""

from __future__ import annotations

from typing import Any

import _harness as h

NAME = "multiturn"
CONTENDERS = ("llm4all", "llm4all-fresh", "hl", "gpt4all")
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
MESSAGES = [
    "Hi! My name is Ada and I like sailing.",
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Give me a word that rhymes with cat.",
    "What is two plus three?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "Name a musical instrument with strings.",
    "What is the opposite of hot?",
    "Which animal is known as the king of the jungle?",
    "What is frozen water called?",
    "How many days are in a week?",
    "What do you call a baby dog?",
    "Which ocean is the largest?",
    "What gas do plants take in?",
    "What is the first letter of the alphabet?",
    "What shape has three sides?",
    "Do you remember my name and my hobby?",
]
TURNS = (1, 5, 10, 20)
QUICK_TURNS = (1, 3, 5)
TARGET = 1.5


def main() -> None:
    p = h.parser(__doc__.splitlines()[0], rounds=3)
    p.add_argument("--max-tokens", type=int, default=32, help="answer length cap per turn")
    args = p.parse_args()
    turns = TURNS
    if args.quick:
        args.rounds, args.max_tokens, turns = 1, 8, QUICK_TURNS
    messages = MESSAGES[: max(turns)]
    bench = h.Bench.start(NAME, args, CONTENDERS)
    runs = bench.run("chat", system=SYSTEM, messages=messages, max_tokens=args.max_tokens)
    for result in (r for rs in runs.values() for r in rs if "error" not in r):
        result["last_over_first"] = result["ttft_s"][-1] / result["ttft_s"][0]  # within one process
    settings = {
        "max_tokens": args.max_tokens,
        "turns": list(turns),
        "system": SYSTEM,
        "messages": messages,
    }
    bench.save(settings, {**report(runs, turns), "runs": runs})


def report(runs: dict[str, list[dict[str, Any]]], turns: tuple[int, ...]) -> dict[str, Any]:
    rows, summaries = [], {}
    last = turns[-1]
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        per_turn = {t: h.summary([r["ttft_s"][t - 1] for r in ok]) for t in turns}
        summaries[name] = {
            "ttft_s": {str(t): v for t, v in per_turn.items()},
            "last_over_first": h.figure(rs, "last_over_first"),
        }
        rows.append(
            [
                h.LABELS[name],
                *(h.fmt(per_turn[t], 0, 1000) for t in turns),
                h.fmt(summaries[name]["last_over_first"], 2),
            ]
        )
    headers = ["contender", *(f"turn {t}" for t in turns), f"turn {last} / turn 1"]
    h.print_table("Time to first token by turn, ms - median (min-max)", headers, rows)
    mine = summaries.get("llm4all", {})
    fresh = summaries.get("llm4all-fresh", {}).get("ttft_s", {}).get(str(last), {})
    if mine and fresh.get("n"):
        mine["vs_fresh_at_last"] = mine["ttft_s"][str(last)]["median"] / fresh["median"]
        h.note(
            f"llm4all turn {last}: {mine['vs_fresh_at_last']:.2f} x the time without prefix reuse"
        )
    targets = {
        f"llm4all turn {last} <= {TARGET} x turn 1": h.at_most(mine.get("last_over_first"), TARGET)
    }
    return {"summary": summaries, "targets": h.print_targets(targets)}


if __name__ == "__main__":
    main()
