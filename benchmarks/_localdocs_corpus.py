"""The LocalDocs benchmarks' corpus: Debian's ``manpages`` package, rendered to plain text.

The Linux man-pages overview pages (sections 4, 5 and 7: ``epoll(7)``,
``resolv.conf(5)``, ``capabilities(7)``, …) are a real documentation set whose
pages each answer their own questions, which makes a labelled
question → document set possible (``data/manpages_questions.jsonl``). On a
fresh machine the package is fetched with ``apt-get download`` (no root
needed), unpacked with ``dpkg-deb -x`` and rendered with ``groff``; the text
files are cached under ``$TMPDIR/llm4all-bench/``. Character-set tables
(``iso_8859-1(7)`` and friends), ``.so`` alias pages, pages identical to one
already rendered (``procfs(5)`` is ``proc(5)``) and ``bpf-helpers(7)`` are left out.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _harness as h

PACKAGE = "manpages"
CACHE = Path(tempfile.gettempdir()) / "llm4all-bench" / "manpages-text"
QUESTIONS = h.BENCH_DIR / "data" / "manpages_questions.jsonl"
_TABLES = re.compile(r"^(iso[-_]8859|cp125|koi8|latin\d|armscii|tis-620|charsets)")
# bpf-helpers(7) is a 200 kB reference of one subsystem that no question is about: it
# would double the benchmark's embedding time for nothing.
_LEFT_OUT = {"bpf-helpers.7"}


def questions() -> list[dict[str, Any]]:
    """The labelled questions: ``{"question": …, "documents": ["epoll.7", …]}``."""
    return [json.loads(line) for line in QUESTIONS.read_text("utf-8").splitlines() if line]


def corpus() -> Path:
    """The folder of rendered pages (``NAME.SECTION.txt``), fetched and rendered if missing."""
    if CACHE.is_dir() and any(CACHE.glob("*.txt")):
        return CACHE
    for tool in ("apt-get", "dpkg-deb", "groff"):
        if shutil.which(tool) is None:
            h.note(
                f"skipped: the LocalDocs corpus needs {tool} (Debian's {PACKAGE} package, rendered)"
            )
            sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        h.note(f"fetching Debian's {PACKAGE} package with apt-get download…")
        got = subprocess.run(
            ["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            h.note(f"skipped: apt-get download {PACKAGE} failed: {got.stderr.strip()[-300:]}")
            sys.exit(0)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), f"{tmp}/x"], check=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        seen: set[bytes] = set()
        pages = sorted(Path(tmp, "x/usr/share/man").glob("man*/*.gz"))
        n = sum(_render(page, seen) for page in pages)
    h.note(f"rendered {n} pages into {CACHE}")
    return CACHE


def _render(page: Path, seen: set[bytes]) -> bool:
    source = gzip.decompress(page.read_bytes())
    name = page.name.removesuffix(".gz")
    if source.lstrip().startswith(b".so ") or _TABLES.match(name) or name in _LEFT_OUT:
        return False
    body = source.split(b"\n", 1)[-1]  # the first line (.TH) names the page itself
    if body in seen:
        return False
    seen.add(body)
    cmd = ["groff", "-t", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-rLL=100n"]
    text = subprocess.run(cmd, input=source, capture_output=True, check=False).stdout
    if not text.strip():
        return False
    (CACHE / f"{name}.txt").write_bytes(text)
    return True


def document_of(path: str) -> str:
    """The label of a corpus file. Example: ``".../epoll.7.txt" -> "epoll.7"``."""
    return Path(path).name.removesuffix(".txt")
