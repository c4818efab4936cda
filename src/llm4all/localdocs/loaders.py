"""Loaders: one file in, a list of structural :class:`Block` objects out.

Each loader keeps what chunking needs to cut well and to cite precisely: the
kind of block (heading, text, code, table row), the heading path it sits under,
and where it came from (a PDF page, or the line range of a text file). Text
encodings are detected (UTF-8 first, then ``charset-normalizer`` with a
confidence threshold; a doubtful decoding is reported, never silent); a file
that is binary raises :class:`NotText`, one that fails to parse
:class:`LoadFailed`, with a reason a user can read in ``llm4all docs ls``.
Files are recognised by name (``.md``, ``.py``, ``Makefile``) and, when the
name says nothing, by content: ``GPL-3`` or ``notes.2024`` is read as text. Nothing here reads anything but the one path given.

Example: ``load(Path("notes.md"))[0]`` → ``Block("heading", "Notes", "Notes", None, 1, 1)``.
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

BlockKind = Literal["heading", "text", "code", "row"]

#: Largest file read (bigger ones are reported, not indexed).
MAX_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Block:
    """A structural piece of a document: a heading, a paragraph, a code block, a table row."""

    kind: BlockKind
    text: str
    heading: str  # the heading path this block sits under ("Install › Debian")
    page: int | None = None
    line_start: int | None = None
    line_end: int | None = None


class LoadFailed(Exception):
    """A file could not be read as a document; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- text decoding ------------------------------------------------------------------

#: Bytes looked at to tell text from binary before a file of unknown type is read whole.
SNIFF_BYTES = 8192
#: Most "mess" (charset-normalizer's chaos ratio, 0–1) accepted from a detected encoding.
MAX_CHAOS = 0.2


class NotText(LoadFailed):
    """The file is not text (binary): it is skipped, not failed."""


@dataclass(frozen=True)
class Decoded:
    """Text and how it was read; ``note`` tells a user what they should know (a guess, bytes lost)."""

    text: str
    encoding: str
    note: str | None = None


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say it is binary: NUL bytes, and no UTF-16 BOM.

    Example: ``looks_binary(b"\\x89PNG\\r\\n\\x1a\\n\\x00\\x00")`` is true.
    """
    return b"\x00" in head[:SNIFF_BYTES] and not head.startswith((b"\xff\xfe", b"\xfe\xff"))


def decode(data: bytes, *, known_text: bool = True) -> Decoded:
    """Bytes to text: a BOM, UTF-8, Western (cp1252) text, else a confident detection.

    Mostly-UTF-8 bytes with a few invalid ones stay UTF-8 (the invalid bytes become
    U+FFFD, and the note says how many) rather than turning into cp1252 mojibake.
    Bytes no encoding reads confidently are binary when the file's type is not
    known to be text (:class:`NotText`), else UTF-8 with replacement and a note.

    Example: ``decode("café".encode("latin-1")).text == "café"``.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Decoded(data.decode("utf-16", "replace"), "utf-16")
    if looks_binary(data):
        raise NotText("binary")
    try:
        return Decoded(data.decode("utf-8-sig"), "utf-8")
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", "replace")
    invalid = lenient.count("\ufffd")
    valid = sum(1 for c in lenient if ord(c) > 127) - invalid
    if valid > invalid:  # UTF-8 with a few broken bytes, not a legacy encoding
        return Decoded(lenient, "utf-8", _replaced(invalid))
    detected = _western(data) or _detected(data)
    if detected is not None:
        text, encoding = detected
        return Decoded(text, encoding, f"not UTF-8: read as {encoding}")
    if not known_text:
        raise NotText("binary")
    return Decoded(lenient, "utf-8", f"unknown text encoding: {_replaced(invalid)}")


def _replaced(invalid: int) -> str:
    return f"{invalid} invalid UTF-8 byte{'s' if invalid != 1 else ''} shown as \ufffd"


def _western(data: bytes) -> tuple[str, str] | None:
    """``data`` as cp1252 when that reads like Western European text (few non-ASCII letters).

    Detectors guess badly on short Latin-1 text (``très`` → ``trčs`` as cp1250);
    text in another script decoded as cp1252 is mostly accented letters instead.
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = [c for c in text if c.isalpha()]
    foreign = sum(1 for c in letters if not c.isascii())
    return (text, "cp1252") if letters and foreign / len(letters) < 0.25 else None


def _detected(data: bytes) -> tuple[str, str] | None:
    """charset-normalizer's best guess, if it reads the bytes with little mess."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.chaos > MAX_CHAOS:
        return None
    return str(best), best.encoding


# -- headings --------------------------------------------------------------------------


class _Outline:
    """The current heading path as headings of different levels arrive."""

    def __init__(self, root: str = "") -> None:
        self._levels: list[tuple[int, str]] = []
        self.root = root

    def enter(self, level: int, title: str) -> str:
        self._levels = [(lv, t) for lv, t in self._levels if lv < level] + [(level, title)]
        return self.path

    @property
    def path(self) -> str:
        return " › ".join(t for _, t in self._levels)


# -- plain text, Markdown, reStructuredText ---------------------------------------------


def _paragraphs(lines: list[str], start: int, heading: str) -> Iterator[Block]:
    """Blank-line separated paragraphs of ``lines`` (numbered from ``start``)."""
    buf: list[str] = []
    first = start
    for n, line in enumerate([*lines, ""], start):
        if line.strip():
            if not buf:
                first = n
            buf.append(line.rstrip())
        elif buf:
            yield Block("text", "\n".join(buf), heading, None, first, n - 1)
            buf = []


def load_text(text: str) -> list[Block]:
    """Plain text: paragraphs with their line ranges."""
    return list(_paragraphs(text.splitlines(), 1, ""))


_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```+|~~~+)")


def load_markdown(text: str) -> list[Block]:
    """Markdown: ATX and setext headings, fenced code blocks, paragraphs."""
    lines = text.splitlines()
    outline = _Outline()
    out: list[Block] = []
    pending: list[str] = []
    pending_start = 1
    i = 0

    def flush() -> None:
        out.extend(_paragraphs(pending, pending_start, outline.path))
        pending.clear()

    while i < len(lines):
        line, n = lines[i], i + 1
        fence = _FENCE.match(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if fence:
            flush()
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[1])),
                len(lines),
            )
            body = "\n".join(lines[i + 1 : end])
            if body.strip():
                out.append(Block("code", body, outline.path, None, n + 1, end))
            i = end + 1
            pending_start = i + 1
            continue
        heading = _ATX.match(line)
        level = len(heading[1]) if heading else 0
        title = heading[2] if heading else line.strip()
        after_blank = not pending or not pending[-1].strip()
        if not heading and line.strip() and after_blank and re.fullmatch(r"(=+|-+)\s*", nxt):
            level = 1 if nxt.strip().startswith("=") else 2
        if level:
            flush()
            out.append(Block("heading", title, outline.enter(level, title), None, n, n))
            i += 1 if heading else 2
            pending_start = i + 1
            continue
        if not pending:
            pending_start = n
        pending.append(line)
        i += 1
    flush()
    return out


_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")


def load_rst(text: str) -> list[Block]:
    """reStructuredText: underlined (and overlined) section titles, ``::`` literal blocks."""
    lines = text.splitlines()
    levels: list[str] = []  # rst levels are the order in which underline styles appear
    outline = _Outline()
    out: list[Block] = []
    i, start = 0, 0

    def flush(end: int) -> None:
        out.extend(_rst_body(lines[start:end], start + 1, outline.path))

    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        under = _RST_UNDERLINE.match(nxt)
        if (
            line.strip()
            and not _RST_UNDERLINE.match(line)
            and under
            and len(nxt) >= len(line.strip())
        ):
            over = i > 0 and _RST_UNDERLINE.match(lines[i - 1]) is not None
            flush(i - 1 if over else i)
            style = ("o" if over else "") + under[1]
            if style not in levels:
                levels.append(style)
            title = line.strip()
            out.append(
                Block(
                    "heading",
                    title,
                    outline.enter(levels.index(style) + 1, title),
                    None,
                    i + 1,
                    i + 1,
                )
            )
            i += 2
            start = i
            continue
        i += 1
    flush(len(lines))
    return out


def _rst_body(lines: list[str], first: int, heading: str) -> Iterator[Block]:
    """Paragraphs; an indented block after a paragraph ending in ``::`` is code."""
    for block in _paragraphs(lines, first, heading):
        body = block.text
        is_literal = all(not ln.strip() or ln.startswith((" ", "\t")) for ln in body.splitlines())
        yield Block(
            "code" if is_literal else "text", body, heading, None, block.line_start, block.line_end
        )


# -- source code -------------------------------------------------------------------------

_DEFINITION = re.compile(
    r"^\s*(?:export\s+|public\s+|private\s+|static\s+|async\s+)*"
    r"(?:def|class|fn|func|function|struct|impl|interface|enum|module|sub|type)\s+\w+"
)


def load_code(text: str) -> list[Block]:
    """Source code: blank-line separated blocks, under the latest top-level definition."""
    out: list[Block] = []
    heading = ""
    for block in _paragraphs(text.splitlines(), 1, ""):
        first_line = block.text.splitlines()[0]
        if _DEFINITION.match(first_line) and not first_line.startswith((" ", "\t")):
            heading = first_line.strip().rstrip(":{").strip()
        out.append(Block("code", block.text, heading, None, block.line_start, block.line_end))
    return out


# -- HTML ----------------------------------------------------------------------------------

_HTML_BLOCKS = {
    "p",
    "div",
    "li",
    "td",
    "th",
    "tr",
    "dt",
    "dd",
    "blockquote",
    "section",
    "article",
    "br",
    "table",
    "ul",
    "ol",
    "form",
    "figcaption",
    "caption",
}
_HTML_SKIP = {"script", "style", "head", "noscript", "svg", "template", "nav"}


class _HtmlBlocks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.outline = _Outline()
        self.buf: list[str] = []
        self.skip = 0
        self.pre = 0
        self.heading_level = 0
        self.start_line = 1

    def _flush(self, kind: BlockKind = "text") -> None:
        raw = "".join(self.buf)
        text = raw.strip("\n") if kind == "code" else " ".join(raw.split())
        line = self.getpos()[0]
        if text.strip():
            if kind == "heading":
                path = self.outline.enter(self.heading_level, text)
                self.blocks.append(Block("heading", text, path, None, self.start_line, line))
            else:
                self.blocks.append(
                    Block(kind, text, self.outline.path, None, self.start_line, line)
                )
        self.buf = []
        self.start_line = line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading_level = int(tag[1])
        elif tag == "pre":
            self._flush()
            self.pre += 1
        elif tag in _HTML_BLOCKS and not self.pre:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading_level:
            self._flush("heading")
            self.heading_level = 0
        elif tag == "pre" and self.pre:
            self._flush("code")
            self.pre -= 1
        elif tag in _HTML_BLOCKS and not self.pre:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            if not self.buf:
                self.start_line = self.getpos()[0]
            self.buf.append(data)


def load_html(text: str) -> list[Block]:
    """HTML: h1–h6 headings, <pre> code, block elements as paragraphs; scripts/styles dropped."""
    parser = _HtmlBlocks()
    parser.feed(text)
    parser.close()
    parser._flush()
    return parser.blocks


# -- tables and data -------------------------------------------------------------------------


def load_csv(text: str, delimiter: str | None = None) -> list[Block]:
    """CSV/TSV: one row block per record, ``column: value`` pairs, with its line."""
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise LoadFailed(f"invalid CSV: {exc}") from None
    out: list[Block] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                pairs = "; ".join(
                    f"{h}: {v}" for h, v in zip(header, row, strict=False) if v.strip()
                )
                n = reader.line_num
                out.append(Block("row", pairs, "", None, n, n))
    except csv.Error as exc:
        raise LoadFailed(f"invalid CSV at line {reader.line_num}: {exc}") from None
    return out


def load_json(text: str) -> list[Block]:
    """JSON (or JSON Lines): one block per leaf group, ``a.b[2].c: value`` lines under its key path."""
    try:
        docs: list[Any] = [json.loads(text)]
    except json.JSONDecodeError as exc:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise LoadFailed(f"invalid JSON: {exc}") from None
    out: list[Block] = []
    for doc in docs:
        groups: dict[str, list[str]] = {}
        for path, value in _leaves(doc, ""):
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            groups.setdefault(parent, []).append(f"{path}: {value}")
        out.extend(Block("row", "\n".join(lines), key) for key, lines in groups.items())
    return out


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


# -- PDF and DOCX ---------------------------------------------------------------------------------


def load_pdf(path: Path) -> list[Block]:
    """PDF: the text of each page (via pypdf), as paragraphs carrying their page number."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is a dependency
        raise LoadFailed("PDF support needs pypdf") from None
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise LoadFailed("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise LoadFailed(f"unreadable PDF: {exc}") from None
    out: list[Block] = []
    for number, text in enumerate(pages, 1):
        for block in _paragraphs(text.splitlines(), 1, ""):
            out.append(Block("text", block.text, "", number, None, None))
    if not out and pages:
        raise LoadFailed("the PDF has no text layer (scanned images?)")
    return out


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def load_docx(path: Path) -> list[Block]:
    """Word .docx: paragraphs, with ``Heading N`` / ``Title`` styles as headings (stdlib only)."""
    try:
        with zipfile.ZipFile(path) as zf:
            root = ElementTree.fromstring(zf.read("word/document.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise LoadFailed(f"not a readable .docx: {exc}") from None
    outline = _Outline()
    out: list[Block] = []
    for para in root.iter(f"{_W}p"):
        text = "".join(t.text or "" for t in para.iter(f"{_W}t")).strip()
        if not text:
            continue
        style = para.find(f"{_W}pPr/{_W}pStyle")
        name = style.get(f"{_W}val", "") if style is not None else ""
        level = _docx_heading_level(name)
        if level is not None:
            out.append(Block("heading", text, outline.enter(level, text)))
        else:
            out.append(Block("text", text, outline.path))
    return out


def _docx_heading_level(style: str) -> int | None:
    """0 for the title, N for ``Heading N``, None for body text."""
    if style.lower() == "title":
        return 0
    match = re.fullmatch(r"(?i)heading\s*(\d)", style)
    return int(match[1]) if match else None


# -- dispatch -----------------------------------------------------------------------------------------

TextLoader = Callable[[str], list[Block]]
_TEXT_LOADERS: dict[str, TextLoader] = {
    **dict.fromkeys((".txt", ".text", ".log", ".org", ".tex"), load_text),
    **dict.fromkeys((".md", ".markdown", ".mdx"), load_markdown),
    ".rst": load_rst,
    **dict.fromkeys((".html", ".htm", ".xhtml"), load_html),
    ".csv": load_csv,
    ".tsv": lambda text: load_csv(text, "\t"),
    **dict.fromkeys((".json", ".jsonl", ".ndjson"), load_json),
}
# fmt: off
CODE_SUFFIXES = frozenset([
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".java", ".kt", ".scala", ".c", ".h", ".cc",
    ".cpp", ".hpp", ".cs", ".go", ".rs", ".rb", ".php", ".swift", ".m", ".sh", ".bash", ".zsh",
    ".ps1", ".sql", ".r", ".jl", ".lua", ".pl", ".hs", ".ml", ".ex", ".exs", ".erl", ".clj",
    ".dart", ".vue", ".css", ".scss", ".toml", ".yaml", ".yml", ".ini", ".cfg", ".conf",
    ".xml", ".proto", ".gradle", ".cmake", ".mk",
])
# fmt: on
_BINARY_LOADERS: dict[str, Callable[[Path], list[Block]]] = {".pdf": load_pdf, ".docx": load_docx}
SUFFIXES = frozenset(_TEXT_LOADERS) | CODE_SUFFIXES | frozenset(_BINARY_LOADERS)
_CODE_NAMES = frozenset({"makefile", "dockerfile"})
#: Media types never read: their files are skipped by name, without opening them.
_MEDIA = ("image", "audio", "video", "font")


def known_type(path: Path) -> bool:
    """Whether a loader knows files like this one by name. Example: ``known_type(Path("a.md"))``.

    Other files are read too when their bytes are text (``LICENSE-2.0``, ``GPL-3``).
    """
    return path.suffix.lower() in SUFFIXES or path.name.lower() in _CODE_NAMES


def media_type(path: Path) -> str | None:
    """``"image"``, ``"audio"``, ``"video"`` or ``"font"`` for a media file (by name), else None.

    Example: ``media_type(Path("cat.png")) == "image"``.
    """
    if known_type(path):
        return None
    guessed, _ = mimetypes.guess_type(path.name)
    major = guessed.split("/")[0] if guessed else None
    return major if major in _MEDIA else None


@dataclass(frozen=True)
class Document:
    """What loading one file gave: its blocks, and a note for the user (how it was decoded)."""

    blocks: list[Block]
    note: str | None = None


def load(path: Path, data: bytes | None = None) -> list[Block]:
    """The blocks of one file (``data``: its bytes, when the caller has read them already)."""
    return load_document(path, data).blocks


def load_document(path: Path, data: bytes | None = None) -> Document:
    """The blocks of one file and what its user should know; a file of unknown type is read
    as plain text when its bytes are text, else :class:`NotText` is raised."""
    suffix = path.suffix.lower()
    if suffix in _BINARY_LOADERS:
        return Document(_BINARY_LOADERS[suffix](path))
    if data is None:
        data = path.read_bytes()
    decoded = decode(data, known_text=known_type(path))
    if suffix in CODE_SUFFIXES or path.name.lower() in _CODE_NAMES:
        return Document(load_code(decoded.text), decoded.note)
    return Document(_TEXT_LOADERS.get(suffix, load_text)(decoded.text), decoded.note)
