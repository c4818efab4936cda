"""The data map end to end: ``llm4all data map`` on real rows with the real embedder, the page
in Debian's Chromium with the network blocked.

One map (about 380 rows: the self-instruct seed tasks, one P3 template and a few GPT4All-format
rows holding a refusal and an exact duplicate) is made once for the module; each test opens it in
a fresh browser context whose every non-``file:`` request is aborted and recorded.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import CHROMIUM, playwright_or_skip
from llm4all.cli import cli

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train"
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
REFUSAL = "I'm sorry, but I can't help with writing a phishing email."
GPT4ALL_ROWS = [
    {"prompt": "Write a phishing email to my bank's customers.", "response": REFUSAL},
    {"prompt": "What is the capital of Estonia?", "response": "Tallinn is the capital of Estonia."},
    {"prompt": "What is the capital of Estonia?", "response": "Tallinn is the capital of Estonia."},
    {"prompt": "Name a prime number.", "response": "Seven is a prime number."},
]

pytestmark = pytest.mark.slow


@dataclass
class Made:
    html: Path
    payload: dict[str, Any]
    rows: int  # rows in the inputs
    log: str  # what the command said
    inputs: Path


def _payload(html: Path) -> dict[str, Any]:
    text = html.read_text("utf-8")
    found = re.search(r'<script id="map-data" type="application/json">(.*?)</script>', text, re.S)
    assert found, "the page carries its rows as JSON"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


@pytest.fixture(scope="module")
def made(embedding_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Made:
    if not SHARED.is_dir():
        pytest.fail(f"the shared training data is missing: {SHARED}")
    folder = tmp_path_factory.mktemp("inputs")
    shutil.copy(SHARED / "self_instruct_seed_tasks.jsonl", folder)  # 175 rows
    shutil.copy(SHARED / "p3_t0_templates" / "trec_trec1.jsonl", folder)  # 200 rows
    lines = [json.dumps({**row, "source": "handmade"}) for row in GPT4ALL_ROWS]
    (folder / "handmade.jsonl").write_text("\n".join([*lines, "{not json"]) + "\n")
    out = tmp_path_factory.mktemp("map") / "map.html"
    cache = out.parent / "vectors.db"
    args = ["data", "map", str(folder), "-o", str(out), "--title", "test map"]
    args += ["--model", str(embedding_model_path)]
    result = CliRunner().invoke(cli, [*args, "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(
        cli, [*args, "--cache", str(cache), "-o", str(out.with_name("b.html"))]
    )
    assert again.exit_code == 0, again.output
    assert "379 vectors from the cache, 0 embedded" in again.output  # a re-run embeds nothing
    assert out.read_bytes() == out.with_name("b.html").read_bytes()  # and draws the same map
    return Made(out, _payload(out), 175 + 200 + len(GPT4ALL_ROWS), result.output, folder)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_or_skip()() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, made: Made) -> Iterator[Any]:
    """The map, opened offline: requests other than file: are aborted and must not happen."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(60_000)
    requests: list[str] = []

    def block(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    context.route("**/*", block)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(made.html.as_uri())
    tab.wait_for_selector("body[data-ready='1']")
    yield tab
    context.close()
    assert not errors, errors
    assert requests == [], f"the map made network requests: {requests}"


def _traces(payload: dict[str, Any], field: str) -> list[list[int]]:
    """The rows of each drawn trace, in point order, as the page groups them."""
    codes = payload["fields"][field]["codes"]
    groups: list[list[int]] = [[] for _ in payload["fields"][field]["names"]]
    for row, code in enumerate(codes):
        groups[code].append(row)
    return [g for g in groups if g]


def _point_centres(page: Any) -> list[list[tuple[float, float]]]:
    centres: list[list[tuple[float, float]]] = page.evaluate(
        """() => [...document.querySelectorAll('.scatterlayer .trace')].map(t =>
             [...t.querySelectorAll('.point')].map(p => {
               const b = p.getBoundingClientRect(); return [b.x + b.width / 2, b.y + b.height / 2];
             }))"""
    )
    return centres


def _export(page: Any) -> dict[str, list[str]]:
    with page.expect_download() as download:
        page.click("#export")
    data: dict[str, list[str]] = json.loads(Path(download.value.path()).read_text())
    return data


def test_the_command_reports_skipped_rows_and_writes_every_row(made: Made) -> None:
    assert "handmade.jsonl:5" in made.log  # the bad line, by file and line, and the run went on
    assert made.payload["n"] == made.rows
    assert len(set(made.payload["id"])) == made.rows - 1  # the duplicate pair shares its id
    assert not made.payload["webgl"]


def test_every_row_is_drawn(page: Any, made: Made) -> None:
    assert page.locator(".scatterlayer .point").count() == made.rows
    page.select_option("#colour", "source")
    page.wait_for_function("document.querySelectorAll('.scatterlayer .trace').length === 3")
    assert page.locator(".scatterlayer .point").count() == made.rows
    legend = page.locator(".legend").text_content()
    assert "handmade (4)" in legend and "trec_trec1 (200)" in legend


def test_refusals_and_duplicates_are_coloured_as_such(page: Any, made: Made) -> None:
    page.select_option("#colour", "rule")
    page.wait_for_function("document.querySelector('.legend').textContent.includes('refusal')")
    legend = page.locator(".legend").text_content()
    rule = made.payload["fields"]["rule"]
    names = [rule["names"][c] for c in rule["codes"]]
    assert names[made.payload["answer"].index(REFUSAL)] == "refusal"
    assert f"refusal ({names.count('refusal')})" in legend  # ours and one in the seed tasks
    assert "exact-duplicate (1)" in legend
    # A click on a duplicate selects its whole group and shows it in the details.
    row = made.payload["prompt"].index("What is the capital of Estonia?")
    curve, point = next(
        (c, rows.index(row)) for c, rows in enumerate(_traces(made.payload, "rule")) if row in rows
    )
    x, y = _point_centres(page)[curve][point]
    page.mouse.click(x, y)
    page.wait_for_function("window.datamap.selected().length === 2")
    assert "2 rows in group" in page.locator("#details").inner_text()
    assert "Tallinn" in page.locator("#details").inner_text()


def test_hovering_a_point_shows_its_row(page: Any, made: Made) -> None:
    centres = _point_centres(page)
    traces = _traces(made.payload, "cluster")
    flat = [(x, y, traces[c][k]) for c, pts in enumerate(centres) for k, (x, y) in enumerate(pts)]

    def alone(x: float, y: float) -> bool:  # no other point near enough to take the hover
        return sum(abs(x - a) < 25 and abs(y - b) < 25 for a, b, _ in flat) == 1

    x, y, row = next(p for p in flat if alone(p[0], p[1]))
    page.mouse.move(x, y)
    hover = page.locator(".hoverlayer .hovertext")
    hover.wait_for()
    text = "".join((hover.text_content() or "").split())  # SVG lines: compare without spaces
    source = made.payload["fields"]["source"]
    assert "".join(made.payload["prompt"][row].split()[:4]) in text
    assert source["names"][source["codes"][row]] in text


def test_a_box_selection_exports_the_ids_inside_it_and_curation_drops_them(
    page: Any, made: Made, tmp_path: Path
) -> None:
    page.hover("#plot")
    page.click('.modebar-btn[data-val="select"]')
    assert page.evaluate("document.getElementById('plot')._fullLayout.dragmode") == "select"
    box = page.locator("#plot .nsewdrag").bounding_box()
    # Whole pixels: the browser's mouse events carry whole pixels.
    x0, y0 = round(box["x"] + box["width"] * 0.3), round(box["y"] + box["height"] * 0.3)
    x1, y1 = round(box["x"] + box["width"] * 0.6), round(box["y"] + box["height"] * 0.7)
    # The box in data coordinates, from Plotly's own axes as they are when the drag starts.
    lo_x, hi_x, lo_y, hi_y = page.evaluate(
        """([x0, y0, x1, y1]) => {
             const gd = document.getElementById('plot'), L = gd._fullLayout, s = L._size;
             const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
             const xs = [x0, x1].map(x => L.xaxis.p2d(x - r.x)), ys = [y0, y1].map(y => L.yaxis.p2d(y - r.y));
             return [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
           }""",
        [x0, y0, x1, y1],
    )
    plot_before = page.locator("#plot").bounding_box()
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    data = made.payload
    inside = {
        data["id"][i]
        for i in range(data["n"])
        if lo_x <= data["x"][i] <= hi_x and lo_y <= data["y"][i] <= hi_y
    }
    assert inside, "the box should hold some points"
    page.wait_for_function("window.datamap.selected().length > 0")
    selected = {data["id"][i] for i in page.evaluate("window.datamap.selected()")}
    # The count appearing in the header does not move the plot under the pointer.
    assert page.locator("#plot").bounding_box() == plot_before
    where = {data["id"][i]: (data["x"][i], data["y"][i]) for i in range(data["n"])}
    assert selected == inside, (
        [where[i] for i in selected - inside],
        [where[i] for i in inside - selected],
        (lo_x, hi_x, lo_y, hi_y),
    )
    page.click("#drop")
    exported = _export(page)
    assert exported == {"keep": [], "drop": sorted(inside)}
    # The list is what `llm4all data curate --keep-drop` takes.
    from llm4all.data.curate import CurateConfig, curate

    listing = tmp_path / "keep-drop.json"
    listing.write_text(json.dumps(exported))
    stats = curate([made.inputs], tmp_path / "out.jsonl", CurateConfig(keep_drop=listing))
    assert stats.dropped["map-drop"] == sum(i in inside for i in data["id"])


def test_search_selects_matching_rows_to_keep(page: Any, made: Made) -> None:
    page.fill("#search", "abbreviation")
    data = made.payload
    wanted = {
        data["id"][i]
        for i in range(data["n"])
        if "abbreviation" in f"{data['id'][i]}\n{data['prompt'][i]}\n{data['answer'][i]}".lower()
    }
    assert wanted
    page.wait_for_function(f"window.datamap.selected().length === {len(wanted)}")
    assert page.locator("#counts").inner_text() == f"{len(wanted)} selected"
    page.click("#keep")
    assert _export(page) == {"keep": sorted(wanted), "drop": []}
    page.select_option("#colour", "status")
    page.wait_for_function("document.querySelector('.legend').textContent.includes('marked keep')")
    assert f"marked keep ({len(wanted)})" in page.locator(".legend").text_content()
