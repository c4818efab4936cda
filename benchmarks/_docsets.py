"""Labelled LocalDocs sets beyond the manpages: Debian documentation, fetched and unpacked.

Each set is a folder of real documentation files as a user would index them
(HTML pages, a PDF manual, plain-text how-tos), fetched with ``apt-get
download`` (no root needed) and unpacked with ``dpkg-deb -x`` into
``$TMPDIR/llm4all-bench/docsets/<set>/``; the files are copied as shipped, so
LocalDocs' own loaders read them. The versions are Debian 12's (bookworm);
another release may move an evidence string, which ``check`` reports.

| set | package(s) | files | kind |
| --- | --- | --- | --- |
| ``debian-faq`` | debian-faq | 17 HTML chapters | a FAQ: one question per section, long pages |
| ``pam`` | libpam-doc | 52 HTML pages of the System Administrators' Guide | many short, similar pages (one per PAM module) |
| ``guides`` | maint-guide, git-doc | a PDF manual (typeset from its text, see :func:`render_pdf`) and 16 plain-text how-tos | mixed types: pages of one long PDF among short texts |

Questions: ``data/<set>_questions.jsonl``, ``{"question", "documents": [file names],
"evidence": [short strings of those files]}``; how they were written is in
``data/README.md``.

Example: ``python benchmarks/_docsets.py check`` fetches every set and checks
that each question's evidence occurs in its labelled file's extracted text.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h

CACHE = Path(tempfile.gettempdir()) / "llm4all-bench" / "docsets"


@dataclass(frozen=True)
class DocSet:
    """A labelled set: which packages, which of their files (globs relative to the unpacked root)."""

    name: str
    packages: tuple[str, ...]
    globs: tuple[str, ...]
    kind: str
    #: (a gzipped text of the package, the PDF to render it into with fpdf2), see :func:`render_pdf`.
    pdf: tuple[str, str] | None = None


SETS = {
    s.name: s
    for s in (
        DocSet(
            "debian-faq",
            ("debian-faq",),
            ("usr/share/doc/debian/FAQ/*.en.html",),
            "FAQ, HTML chapters",
        ),
        DocSet(
            "pam",
            ("libpam-doc",),
            ("usr/share/doc/libpam-doc/html/sag-*.html",),
            "short HTML pages, one per module",
        ),
        DocSet(
            "guides",
            ("maint-guide", "git-doc"),
            ("usr/share/doc/git-doc/howto/*.txt",),
            "a PDF manual and plain-text how-tos",
            ("usr/share/doc/maint-guide/maint-guide.en.txt.gz", "maint-guide.en.pdf"),
        ),
    )
}


def questions(name: str) -> list[dict[str, Any]]:
    """The labelled questions of a set (``manpages`` included)."""
    path = h.BENCH_DIR / "data" / f"{name}_questions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def corpus(name: str) -> Path:
    """The folder of the set's files, fetched and unpacked if missing (exits 0 when it cannot)."""
    spec = SETS[name]
    folder = CACHE / name
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            h.note(f"skipped: the {name} set needs {tool} (Debian packages {spec.packages})")
            sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            ["apt-get", "download", *spec.packages], cwd=tmp, capture_output=True, text=True
        )
        debs = sorted(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or len(debs) != len(spec.packages):
            h.note(f"skipped: apt-get download {spec.packages} failed: {got.stderr[-300:]}")
            sys.exit(0)
        root = Path(tmp, "x")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        staging = CACHE / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for pattern in spec.globs:
            for path in sorted(root.glob(pattern)):
                if path.is_file() and not path.is_symlink():
                    shutil.copy(path, staging / path.name)
        if spec.pdf is not None:
            render_pdf(
                gzip.decompress((root / spec.pdf[0]).read_bytes()).decode(), staging / spec.pdf[1]
            )
        staging.rename(folder)
    h.note(f"{name}: {sum(1 for _ in folder.iterdir())} files in {folder}")
    return folder


def render_pdf(text: str, out: Path) -> None:
    """Typeset a text as an A4 PDF with fpdf2 (DejaVu Sans when installed, else Helvetica).

    maint-guide ships its own PDF, but pypdf reads most of its pages without
    the spaces between words (``theyinstallyourpackage;theonly…``: the PDF
    places words by position, not with space characters), which would make
    this set measure text extraction rather than retrieval; the text version
    of the same manual, typeset, keeps real page breaks and a clean text layer.
    """
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if font.exists():
        pdf.add_font("dejavu", fname=str(font))
        pdf.set_font("dejavu", size=9)
    else:
        pdf.set_font("helvetica", size=9)
        text = text.encode("latin-1", "replace").decode("latin-1")
    for line in text.splitlines():
        pdf.multi_cell(0, 4.2, line or " ", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(out))


def document_of(path: str) -> str:
    """The label of a set's file: its name. Example: ``".../kernel.en.html" -> "kernel.en.html"``."""
    return Path(path).name


def check(name: str) -> list[str]:
    """Problems with a set's labels: a missing file, an evidence string not in its file's text."""
    from llm4all.localdocs.loaders import load

    folder = corpus(name)
    texts = {p.name: " ".join(" ".join(b.text for b in load(p)).split()) for p in folder.iterdir()}
    problems = []
    for q in questions(name):
        docs = [texts.get(d) for d in q["documents"]]
        if None in docs:
            problems.append(f"{q['question']!r}: no file {q['documents']}")
            continue
        for e in q["evidence"]:
            if not any(" ".join(e.split()) in t for t in docs if t):
                problems.append(f"{q['question']!r}: evidence {e!r} not in {q['documents']}")
    return problems


if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        bad = 0
        for set_name in sys.argv[2:] or list(SETS):
            found = check(set_name)
            bad += len(found)
            h.note(f"{set_name}: {len(questions(set_name))} questions, {len(found)} problems")
            for line in found:
                h.note(f"  {line}")
        sys.exit(1 if bad else 0)
    for set_name in sys.argv[1:] or list(SETS):
        print(corpus(set_name))
