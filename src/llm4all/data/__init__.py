"""Training and evaluation data: readers, curation rules, the data map.

- :mod:`llm4all.data.schema`: the one conversation format (:class:`Conversation`).
- :mod:`llm4all.data.formats`: every training-data format read into it
  (:func:`read_rows`, :func:`read_many`), JSONL and Parquet written
  (:func:`write_rows`).
- :mod:`llm4all.data.rules`, :mod:`llm4all.data.curate`,
  :mod:`llm4all.data.report`: the curation rules, the streaming run and its report.
- :mod:`llm4all.data.refusals`: the one refusal detector that the curation
  rules and the refusal benchmark share.
"""

from llm4all.data.curate import CurateConfig, Curator, curate
from llm4all.data.formats import FORMATS, RowProblem, read_many, read_rows, write_rows
from llm4all.data.refusals import find_refusal, is_refusal
from llm4all.data.rules import DEFAULT_RULES, RULE_NAMES, RuleSettings
from llm4all.data.schema import Conversation

__all__ = [
    "DEFAULT_RULES",
    "FORMATS",
    "RULE_NAMES",
    "Conversation",
    "CurateConfig",
    "Curator",
    "RowProblem",
    "RuleSettings",
    "curate",
    "find_refusal",
    "is_refusal",
    "read_many",
    "read_rows",
    "write_rows",
]
