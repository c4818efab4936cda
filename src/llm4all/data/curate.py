"""Curation: read any training-data format, drop what the rules say, write the rest.

One streaming pass (rows are read, judged and written one at a time; only
ids, hashes and signatures stay in memory), in input order, so the same
input and settings always give the same output, byte for byte.

A keep/drop list (made on the data map, or by hand) is applied first: ids in
``drop`` go (counted as ``map-drop``), ids in ``keep`` stay whatever the
rules say (and still count as seen for the duplicate rules). The file is
either JSON ``{"keep": [ids], "drop": [ids]}`` or plain text with one id to
drop per line (``#`` comments; ``keep ID`` lines keep).

Example::

    stats = curate([Path("train/")], Path("curated.jsonl"), CurateConfig())
    Path("report.md").write_text(to_markdown(stats))
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from llm4all.data.formats import DataFormatError, RowProblem, input_files, read_rows, write_rows
from llm4all.data.report import CurationStats
from llm4all.data.rules import DEFAULT_RULES, Rule, RuleSettings, build_rules
from llm4all.data.schema import Conversation


@dataclass(frozen=True)
class CurateConfig:
    """Which rules run, their settings, the keep/drop list and the input format."""

    rules: tuple[str, ...] = DEFAULT_RULES
    settings: RuleSettings = field(default_factory=RuleSettings)
    keep_drop: Path | None = None
    fmt: str | None = None


def read_keep_drop(path: Path) -> tuple[set[str], set[str]]:
    """(keep, drop) ids from a keep/drop file; raises DataFormatError if it is neither form."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(str(path), f"not JSON ({error.msg})") from None
        lists = [data.get(k, []) for k in ("keep", "drop")]
        if not all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in lists):
            raise DataFormatError(str(path), "'keep' and 'drop' must be lists of ids")
        return set(lists[0]), set(lists[1])
    keep, drop = set(), set()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("keep "):
            keep.add(line[5:].strip())
        elif line:
            drop.add(line.removeprefix("drop ").strip())
    return keep, drop


class Curator:
    """Judges rows one at a time, in order. Example: ``Curator(build_rules(RuleSettings())).judge(row)``"""

    def __init__(
        self, rules: list[Rule], keep: Iterable[str] = (), drop: Iterable[str] = ()
    ) -> None:
        self.rules = rules
        self.keep_ids, self.drop_ids = set(keep), set(drop)

    def judge(self, row: Conversation) -> tuple[str, str] | None:
        """(rule, detail) when the row goes, None when it stays; kept rows are remembered."""
        if row.id in self.drop_ids and row.id not in self.keep_ids:
            return "map-drop", "dropped on the data map"
        if row.id not in self.keep_ids:
            for rule in self.rules:
                detail = rule.check(row)
                if detail is not None:
                    return rule.name, detail
        for rule in self.rules:
            rule.keep(row)
        return None


def _open_partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def curate(
    inputs: Iterable[Path],
    output: Path,
    config: CurateConfig,
    *,
    dropped: Path | None = None,
    on_row: Callable[[CurationStats], None] | None = None,
) -> CurationStats:
    """Curate ``inputs`` (files or folders) into ``output`` (``.jsonl`` or ``.parquet``).

    ``dropped``, when given, receives the removed rows (schema JSONL, with
    ``meta.dropped = {"rule", "detail"}``), so nothing is lost. ``on_row`` is
    called after every row (progress). The output appears only when the run
    is complete (written beside it, then renamed).
    """
    files = input_files(inputs)
    output = Path(output)
    for path in [output, *([dropped] if dropped else [])]:
        if any(path.resolve() == f.resolve() for f in files):
            raise DataFormatError(str(path), "is also an input; write the output elsewhere")
    keep, drop = read_keep_drop(config.keep_drop) if config.keep_drop else (set(), set())
    curator = Curator(build_rules(config.settings, config.rules), keep, drop)
    stats = CurationStats(
        rules=[rule.name for rule in curator.rules],
        inputs=[str(f) for f in files],
        output=str(output),
        settings={k: v for k, v in asdict(config.settings).items() if v not in (None, ())},
    )
    started = time.perf_counter()
    partial = _open_partial(output)
    dropped_out: IO[str] | None = None
    try:
        if dropped:
            dropped_out = _open_partial(dropped).open("w", encoding="utf-8")
        rows = _judged(files, config.fmt, curator, stats, dropped_out, on_row)
        write_rows(rows, partial)
        if dropped_out:
            dropped_out.close()
            os.replace(_open_partial(dropped), dropped)  # type: ignore[arg-type]
        os.replace(partial, output)
    finally:
        if dropped_out and not dropped_out.closed:
            dropped_out.close()
        for leftover in [partial, *([_open_partial(dropped)] if dropped else [])]:
            leftover.unlink(missing_ok=True)
    stats.seconds = time.perf_counter() - started
    return stats


def _judged(
    files: list[Path],
    fmt: str | None,
    curator: Curator,
    stats: CurationStats,
    dropped_out: IO[str] | None,
    on_row: Callable[[CurationStats], None] | None,
) -> Iterator[Conversation]:
    """The kept rows, in order; counts everything and writes dropped rows on the side."""
    for path in files:
        for row in read_rows(path, fmt):
            if isinstance(row, RowProblem):
                stats.problem(str(row))
                continue
            forced = row.id in curator.keep_ids
            verdict = curator.judge(row)
            stats.count(row, *(verdict or (None, "")))
            if verdict is None:
                stats.forced_keep += forced
                yield row
            elif dropped_out is not None:
                meta: dict[str, Any] = {
                    **row.meta,
                    "dropped": {"rule": verdict[0], "detail": verdict[1]},
                }
                record = {**row.to_dict(), "meta": meta}
                dropped_out.write(json.dumps(record, ensure_ascii=False) + "\n")
            if on_row is not None:
                on_row(stats)
