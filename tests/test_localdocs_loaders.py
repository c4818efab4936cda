"""Loaders on real files of every supported kind, written into tmp_path."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from llm4all.localdocs.loaders import (
    LoadFailed,
    NotText,
    decode,
    known_type,
    load,
    load_document,
    media_type,
)

DOCX_TYPES = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>"""
DOCX_RELS = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Target="word/document.xml"
 Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>
</Relationships>"""


def write_docx(path: Path, paragraphs: list[tuple[str | None, str]]) -> Path:
    """A minimal, valid WordprocessingML package: (style or None, text) paragraphs."""
    body = "".join(
        "<w:p>"
        + (f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "")
        + f"<w:r><w:t>{text}</w:t></w:r></w:p>"
        for style, text in paragraphs
    )
    doc = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", DOCX_TYPES)
        zf.writestr("_rels/.rels", DOCX_RELS)
        zf.writestr("word/document.xml", doc)
    return path


def write_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def test_markdown_headings_code_and_lines(tmp_path: Path) -> None:
    md = tmp_path / "guide.md"
    md.write_text(
        "# Guide\n\nIntro text.\n\n## Install\n\n```sh\napt install foo\n```\n\nSetext\n------\n\nBody.\n"
    )
    blocks = load(md)
    assert [(b.kind, b.text, b.heading, b.line_start) for b in blocks] == [
        ("heading", "Guide", "Guide", 1),
        ("text", "Intro text.", "Guide", 3),
        ("heading", "Install", "Guide › Install", 5),
        ("code", "apt install foo", "Guide › Install", 8),
        ("heading", "Setext", "Guide › Setext", 11),
        ("text", "Body.", "Guide › Setext", 14),
    ]


def test_rst_sections_and_literal_blocks(tmp_path: Path) -> None:
    rst = tmp_path / "a.rst"
    rst.write_text("Title\n=====\n\nText::\n\n    code here\n\nSub\n---\n\nMore.\n")
    blocks = load(rst)
    assert [(b.kind, b.heading) for b in blocks] == [
        ("heading", "Title"),
        ("text", "Title"),
        ("code", "Title"),
        ("heading", "Title › Sub"),
        ("text", "Title › Sub"),
    ]


def test_html_drops_scripts_and_keeps_structure(tmp_path: Path) -> None:
    html = tmp_path / "page.html"
    html.write_text(
        "<html><head><title>t</title><style>p{}</style></head><body>"
        "<h1>Main</h1><p>First   para.</p><script>alert(1)</script>"
        "<h2>Sub</h2><pre>x = 1\ny = 2</pre><ul><li>item</li></ul></body></html>"
    )
    blocks = load(html)
    assert [(b.kind, b.text, b.heading) for b in blocks] == [
        ("heading", "Main", "Main"),
        ("text", "First para.", "Main"),
        ("heading", "Sub", "Main › Sub"),
        ("code", "x = 1\ny = 2", "Main › Sub"),
        ("text", "item", "Main › Sub"),
    ]


def test_pdf_pages(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "report.pdf", ["The reactor runs at 300 kelvin.", "Page two text."])
    blocks = load(pdf)
    assert [b.page for b in blocks] == [1, 2]
    assert "300 kelvin" in blocks[0].text


def test_docx_headings(tmp_path: Path) -> None:
    docx = write_docx(
        tmp_path / "memo.docx",
        [("Title", "Memo"), ("Heading1", "Budget"), (None, "We spend 40 euros."), (None, "")],
    )
    assert [(b.kind, b.text, b.heading) for b in load(docx)] == [
        ("heading", "Memo", "Memo"),
        ("heading", "Budget", "Memo › Budget"),
        ("text", "We spend 40 euros.", "Memo › Budget"),
    ]


def test_csv_rows_with_header_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("name,city\nAda,London\n\nAlan,Wilmslow\n")
    blocks = load(csv)
    assert [(b.text, b.line_start) for b in blocks] == [
        ("name: Ada; city: London", 2),
        ("name: Alan; city: Wilmslow", 4),
    ]


def test_json_leaves_with_paths(tmp_path: Path) -> None:
    js = tmp_path / "config.json"
    js.write_text('{"server": {"port": 8080, "hosts": ["a", "b"]}, "debug": false}')
    texts = {b.heading: b.text for b in load(js)}
    assert texts == {
        "server": "server.port: 8080\nserver.hosts[0]: a\nserver.hosts[1]: b",
        "": "debug: false",
    }


def test_source_code_blocks_under_definitions(tmp_path: Path) -> None:
    py = tmp_path / "m.py"
    py.write_text(
        "import os\n\ndef area(r):\n    return 3.14 * r * r\n\n\nclass Shape:\n    pass\n"
    )
    blocks = load(py)
    assert [(b.kind, b.heading, b.line_start) for b in blocks] == [
        ("code", "", 1),
        ("code", "def area(r)", 3),
        ("code", "class Shape", 7),
    ]


def test_encodings_are_detected(tmp_path: Path) -> None:
    latin = tmp_path / "old.txt"
    latin.write_bytes("Le café est très bon, déjà prêt à être servi.\n".encode("latin-1"))
    assert load(latin)[0].text.startswith("Le café est très bon")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffhello".encode())
    assert load(bom)[0].text == "hello"
    assert decode("naïve".encode("utf-16")).text == "naïve"
    russian = "Привет, как дела? Это текст на русском языке.".encode("cp1251")
    assert decode(russian).text.startswith("Привет")
    assert decode(russian).note == f"not UTF-8: read as {decode(russian).encoding}"
    assert load_document(latin).note == "not UTF-8: read as cp1252"
    assert load_document(bom).note is None


def test_invalid_utf8_stays_utf8_with_a_note() -> None:
    """A few broken bytes in UTF-8 text were read as cp1252: ``café`` became ``cafÃ©``."""
    data = "Grüße aus Köln, café crème.\n".encode() + b"\xff\xfe end\n"
    decoded = decode(data)
    assert decoded.text.startswith("Grüße aus Köln, café crème.")
    assert decoded.encoding == "utf-8"
    assert decoded.note == "2 invalid UTF-8 bytes shown as \ufffd"


def test_bytes_no_encoding_reads_are_binary_unless_the_type_is_text() -> None:
    noise = bytes(range(128, 256)) * 8  # no NUL, no encoding reads it with little mess
    with pytest.raises(NotText, match="binary"):
        decode(noise, known_text=False)
    lenient = decode(noise)  # a .txt: read anyway, and said so
    assert lenient.encoding == "utf-8" and lenient.note is not None
    assert lenient.note.startswith("unknown text encoding")


def test_files_are_recognised_by_content_when_the_name_says_nothing(tmp_path: Path) -> None:
    gpl = tmp_path / "GPL-3"
    gpl.write_text("GNU GENERAL PUBLIC LICENSE\n\nVersion 3, 29 June 2007\n")
    assert [b.text for b in load(gpl)] == ["GNU GENERAL PUBLIC LICENSE", "Version 3, 29 June 2007"]
    blob = tmp_path / "LGPL-2.1"
    blob.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    with pytest.raises(NotText, match="binary"):
        load(blob)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bin.txt", b"\x00\x01\x02binary", "binary"),
        ("bad.json", b"{not json", "invalid JSON"),
        ("bad.pdf", b"%PDF-1.4 garbage", "PDF"),
        ("bad.docx", b"not a zip", "docx"),
    ],
)
def test_broken_files_say_why(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(LoadFailed, match=reason):
        load(path)


def test_known_types_and_media() -> None:
    for name in (
        "a.txt",
        "a.md",
        "a.rst",
        "a.html",
        "a.pdf",
        "a.docx",
        "a.py",
        "a.csv",
        "a.json",
        "Makefile",
    ):
        assert known_type(Path(name)), name
        assert media_type(Path(name)) is None, name
    for name in ("a.png", "a.zip", "a.exe", "a.gguf", "GPL-3"):
        assert not known_type(Path(name)), name
    assert [media_type(Path(n)) for n in ("a.PNG", "b.mp3", "c.mkv", "d.woff2", "e.svg")] == [
        "image",
        "audio",
        "video",
        "font",
        "image",
    ]
