"""The map as one HTML file that opens offline: Plotly.js, the rows and the page's code inline.

Nothing is fetched: Plotly.js comes from the installed ``plotly`` package, the
rows are a JSON block, and a Content-Security-Policy of ``default-src 'none'``
tells the browser to refuse any request the page might still try. Up to
:data:`SVG_ROWS` rows are drawn as SVG (one element per point, crisp, exact
hit-testing); above that, with WebGL, which draws 50,000 points smoothly
where SVG stalls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

SVG_ROWS = 5_000
"""The most rows drawn as SVG; larger maps use WebGL."""

PROMPT_CHARS = 600
ANSWER_CHARS = 400
"""How much of each prompt and answer the file carries (hover, details and search read these)."""

BIG_MAP_ROWS = 20_000
"""Above this many rows the file carries half as much text per row, to stay a loadable size."""

_MARKERS = ("/*CSS*/", "/*PLOTLY*/", "/*DATA*/", "/*JS*/")


@dataclass(frozen=True)
class Field:
    """A way to colour the map: category names, one colour each, and each row's category."""

    names: list[str]
    colours: list[str]
    codes: list[int]

    def to_json(self) -> dict[str, Any]:
        return {"names": self.names, "colours": self.colours, "codes": self.codes}


def palette(count: int) -> list[str]:
    """``count`` distinguishable colours: a qualitative palette, then evenly spread hues.

    Example: ``palette(2) == ["#1f77b4", "#ff7f0e"]``.
    """
    base = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
        "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
        "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#6baed6",
    ]  # fmt: skip
    if count <= len(base):
        return base[:count]
    golden = 0.618033988749895
    extra = [f"hsl({(i * golden % 1) * 360:.0f}, 65%, {45 + 10 * (i % 3)}%)" for i in range(count)]
    return base + extra[: count - len(base)]


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its ``<script>`` element early (``</script>`` in a prompt, say)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("llm4all.datamap").joinpath("assets", name).read_text("utf-8")


def plotly_js() -> str:
    """The minified Plotly.js that the installed ``plotly`` package ships."""
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs())


def render(payload: dict[str, Any]) -> str:
    """The page for a payload (see :func:`llm4all.datamap.build.payload`)."""
    template = _asset("map.html")
    values = {
        "/*CSS*/": _asset("map.css"),
        "/*PLOTLY*/": plotly_js(),
        "/*DATA*/": _json_for_script(payload),
        "/*JS*/": _asset("map.js"),
    }
    # Split first so nothing inserted (Plotly.js, a prompt) is searched for a marker.
    parts = re.split("(" + "|".join(re.escape(m) for m in _MARKERS) + ")", template)
    return "".join(values.get(part, part) for part in parts)


def write(payload: dict[str, Any], path: Path) -> int:
    """Write the page to ``path`` (through a temporary file, so a failure leaves no half page).

    Returns its size in bytes.
    """
    page = render(payload).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(page)
    partial.replace(path)
    return len(page)


def shorten(prompt: str, answer: str, rows: int = 0) -> tuple[str, str]:
    """What a file of ``rows`` rows keeps of a row's prompt and answer."""
    cut = 2 if rows > BIG_MAP_ROWS else 1
    return _short(prompt, PROMPT_CHARS // cut), _short(answer, ANSWER_CHARS // cut)
