"""Evaluating models: ground-truth perplexity and side-by-side answers (``llm4all eval``).

- :mod:`~llm4all.evaluate.scoring`: teacher-forced scoring of reference answers
  (any backend that gives token log-probabilities), GPT4All's variant, summaries.
- :mod:`~llm4all.evaluate.sets`: the shipped sets (self-instruct, vicuna80, seed)
  and data files read into examples and questions.
- :mod:`~llm4all.evaluate.perplexity`: models opened for scoring, runs over a set,
  the summary table and the histogram.
- :mod:`~llm4all.evaluate.compare`: every model answers every question; the seed
  checks and a local judge's pairwise verdicts; the HTML/Markdown report.
"""

from llm4all.evaluate.scoring import Score, Summary, score_pair, summarise
from llm4all.evaluate.sets import EvalDataError, Example, Question, load_examples, load_questions

__all__ = [
    "EvalDataError",
    "Example",
    "Question",
    "Score",
    "Summary",
    "load_examples",
    "load_questions",
    "score_pair",
    "summarise",
]
