"""Training and evaluation data: readers, curation rules, the data map.

So far: :mod:`llm4all.data.refusals`, the one refusal detector that the
curation rules and the refusal benchmark share.
"""

from llm4all.data.refusals import find_refusal, is_refusal

__all__ = ["find_refusal", "is_refusal"]
