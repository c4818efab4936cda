"""The data map at scale: embedding rows/s, then layout, clusters, keywords and the page at
10k and 50k rows (and a sampled layout), with peak RSS, the page's size and its draw time.

Rows are the shared training data (``../shared/data/train``: GPTeacher, self-instruct, P3).
Their vectors come from llm4all's embedder through the map's own cache
(``$TMPDIR/llm4all-bench/datamap-vectors.db``, so a second run embeds nothing; ``llm4all
data map ../shared/data/train --cache …`` fills the same cache). A set larger than the rows
whose vectors are known is made synthetically: copy *k* of a row has one word dropped and
"(variant k)" appended, and its vector is the row's vector plus Gaussian noise (σ = 0.05 per
dimension), normalised again. Each size runs in its own process, so its peak RSS is its own.

- ``embed``: rows/s of ``Embedder`` (MiniLM, 2 threads) on ``--embed-rows`` rows not yet
  cached, through the cache (a fresh file);
- ``map``: ``layout_map`` (UMAP fitted on every row, or on ``--sample`` rows with the
  rest placed by their most similar fitted rows; HDBSCAN; c-TF-IDF) and the HTML written;
- ``browser``: Chromium opens the page offline; seconds until it is drawn and interactive.

Example: ``python benchmarks/bench_datamap.py --quick``;
``python benchmarks/bench_datamap.py --sizes 10000 50000 --sample 10000``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _harness as h

NAME = "datamap"
SHARED = h.REPO.parent / "shared" / "data" / "train"
CACHE = Path(tempfile.gettempdir()) / "llm4all-bench" / "datamap-vectors.db"
NOISE = 0.05


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_seconds() -> float:
    """CPU time of this process so far: on a shared machine, what the work itself cost."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def shared_rows() -> list[Any]:
    """The shared rows, shuffled with a fixed seed (any prefix is a random sample)."""
    from llm4all.data.formats import read_many
    from llm4all.data.schema import Conversation

    rows = [r for r in read_many([SHARED]) if isinstance(r, Conversation)]
    random.Random(0).shuffle(rows)
    return rows


def _embedder(threads: int) -> Any:
    from llm4all.embeddings import Embedder

    return Embedder("all-minilm-l6-v2", n_threads=threads)


def embed_rate(count: int, threads: int) -> dict[str, Any]:
    """Embed ``count`` shared rows into a fresh cache: rows/s (the cache's writes included)."""
    from llm4all.datamap import EmbeddingCache, embed_rows, model_key

    rows = shared_rows()[:count]
    with tempfile.TemporaryDirectory() as tmp, _embedder(threads) as embedder:
        cache = EmbeddingCache(Path(tmp) / "v.db", model_key(embedder))
        start, cpu = time.perf_counter(), cpu_seconds()
        embed_rows(rows, lambda t: embedder.embed_array(t, long_text_mode="truncate"), cache)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        cache.close()
    chars = sum(len(r.prompt) + len(r.response) for r in rows) / max(1, len(rows))
    return {
        "rows": len(rows),
        "seconds": round(seconds, 1),
        "rows_per_s": round(len(rows) / seconds, 1),
        "cpu_s": round(cpu, 1),
        "rows_per_cpu_s": round(len(rows) / cpu, 1),
        "mean_chars": round(chars),
        "peak_rss_mb": peak_rss_mb(),
    }


def known_vectors(threads: int, at_least: int) -> tuple[list[Any], np.ndarray]:
    """Shared rows whose vectors are cached (embedding more until ``at_least`` are)."""
    from llm4all.datamap import EmbeddingCache, model_key
    from llm4all.datamap.build import embed_text
    from llm4all.datamap.embed_cache import text_hash

    rows = shared_rows()
    with _embedder(threads) as embedder, EmbeddingCache(CACHE, model_key(embedder)) as cache:
        texts = [embed_text(r) for r in rows]
        found = cache.lookup([r.id for r in rows], [text_hash(t) for t in texts])
        have = [
            i
            for i, (r, t) in enumerate(zip(rows, texts, strict=True))
            if (r.id, text_hash(t)) in found
        ]
        if len(have) < at_least:
            h.note(f"embedding {at_least - len(have)} more rows into {CACHE}")
            have = list(range(max(at_least, len(have))))
        chosen = [rows[i] for i in sorted(have)]
        vectors = cache.vectors(
            [r.id for r in chosen],
            [embed_text(r) for r in chosen],
            lambda t: embedder.embed_array(t, long_text_mode="truncate"),
        )
    return chosen, vectors


def synthetic(
    rows: list[Any], vectors: np.ndarray, size: int, seed: int = 0
) -> tuple[list[Any], np.ndarray]:
    """``size`` rows: the real ones, then perturbed copies (see the module docstring)."""
    from llm4all.data.schema import Conversation

    rng = np.random.default_rng(seed)
    out_rows: list[Any] = []
    out_vectors = np.empty((size, vectors.shape[1]), dtype=np.float32)
    for i in range(size):
        base, copy = i % len(rows), i // len(rows)
        row = rows[base]
        if copy == 0:
            out_rows.append(row)
            out_vectors[i] = vectors[base]
            continue
        words = row.prompt.split()
        if len(words) > 3:
            del words[int(rng.integers(len(words)))]
        prompt = " ".join(words) + f" (variant {copy})"
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": row.response},
        ]
        out_rows.append(Conversation(messages=messages, source=row.source))
        noisy = vectors[base] + rng.normal(scale=NOISE, size=vectors.shape[1])
        out_vectors[i] = noisy / np.linalg.norm(noisy)
    return out_rows, out_vectors


def real_map(threads: int, out: Path) -> dict[str, Any]:
    """A map of the shared rows whose vectors are cached (no synthetic rows): the screenshots."""
    from llm4all.datamap import MapOptions, layout_map, payload
    from llm4all.datamap import html as page
    from llm4all.datamap.build import MapRow
    from llm4all.datamap.labels import Labeller

    rows, vectors = known_vectors(threads, 1000)
    labeller = Labeller()
    for row in rows:
        labeller.add(row)
    short = [MapRow.of(r) for r in rows]
    title = f"shared training data ({len(rows):,} rows)"
    result = layout_map(short, vectors, labeller.verdicts(), MapOptions(title=title))
    return {"rows": len(rows), "html_mb": round(page.write(payload(result), out) / 1e6, 1)}


def screenshots(path: Path, folder: Path) -> None:
    """The map by cluster with a row hovered, and by curation rule with a duplicate group open."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        tab = browser.new_page(viewport={"width": 1400, "height": 860})
        tab.goto(path.as_uri())
        tab.wait_for_selector("body[data-ready='1']", timeout=600_000)
        box = tab.locator("#plot .nsewdrag").bounding_box()
        assert box is not None
        centre = tab.evaluate(
            """() => { const d = window.datamap.data, gd = document.getElementById('plot');
                 const L = gd._fullLayout, r = gd.querySelector('.nsewdrag').getBoundingClientRect();
                 const [x, y] = d.centres[0];
                 return [r.x + L.xaxis.d2p(x), r.y + L.yaxis.d2p(y)]; }"""
        )
        tab.mouse.move(centre[0] + 3, centre[1] + 3)
        tab.wait_for_timeout(800)
        tab.screenshot(path=str(folder / "datamap-clusters.png"))
        tab.mouse.move(box["x"] + 2, box["y"] + 2)
        tab.select_option("#colour", "rule")
        tab.wait_for_timeout(800)
        group = tab.evaluate("window.datamap.data.groups.find(g => g.length > 1)[0]")
        tab.evaluate(
            f"""() => {{ const d = window.datamap; const s = d.shown();
                 const c = s.findIndex(rows => rows.includes({group}));
                 document.getElementById('plot').emit('plotly_click',
                   {{points: [{{curveNumber: c, pointIndex: s[c].indexOf({group})}}]}}); }}"""
        )
        tab.wait_for_timeout(800)
        tab.screenshot(path=str(folder / "datamap-rules.png"))
        browser.close()


def warm_up() -> None:
    """UMAP on a little random data, so numba has compiled it."""
    from llm4all.datamap.layout import project

    vectors = np.random.default_rng(0).normal(size=(300, 384)).astype(np.float32)
    project(vectors, sample=200)


def one_map(size: int, sample: int | None, threads: int, out: Path) -> dict[str, Any]:
    """Make one map of ``size`` rows; timings of each stage and the process's peak RSS."""
    from llm4all.datamap import MapOptions, layout_map, payload
    from llm4all.datamap import html as page
    from llm4all.datamap.build import MapRow
    from llm4all.datamap.labels import Labeller

    real, real_vectors = known_vectors(threads, min(size, 1000))
    rows, vectors = synthetic(real, real_vectors, size)
    start = time.perf_counter()
    warm_up()  # numba compiles UMAP's code on its first call in a process: timed on its own
    compile_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), cpu_seconds()
    labeller = Labeller()
    map_rows = []
    for row in rows:
        labeller.add(row)
        map_rows.append(MapRow.of(row))
    verdicts = labeller.verdicts()
    label_s = time.perf_counter() - start
    options = MapOptions(sample=sample, title=f"{size:,} rows")
    result = layout_map(map_rows, vectors, verdicts, options)
    start = time.perf_counter()
    size_bytes = page.write(payload(result), out)
    html_s = time.perf_counter() - start
    total = label_s + sum(result.timings.values()) + html_s
    cpu = cpu_seconds() - cpu
    return {
        "rows": size,
        "real_rows": len(real),
        "sample": sample,
        "compile_s": round(compile_s, 1),
        "labels_s": round(label_s, 1),
        **{k: round(v, 1) for k, v in result.timings.items()},
        "html_s": round(html_s, 1),
        "total_s": round(total, 1),
        "rows_per_s": round(size / total, 1),
        "cpu_s": round(cpu, 1),
        "clusters": len(result.keywords),
        "html_mb": round(size_bytes / 1e6, 1),
        "peak_rss_mb": peak_rss_mb(),
        "page": str(out),
    }


def draw_time(path: Path) -> dict[str, Any]:
    """Chromium (headless, software WebGL) opens the page offline: seconds until drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1400, "height": 850})
        context.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
        )
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        start = time.perf_counter()
        tab.goto(path.as_uri())
        tab.wait_for_selector("body[data-ready='1']", timeout=600_000)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        tab.select_option("#colour", "source")
        tab.wait_for_function("document.getElementById('plot').data.length > 0")
        recolour = time.perf_counter() - start
        browser.close()
    return {"draw_s": round(seconds, 1), "recolour_s": round(recolour, 1), "errors": errors}


def child(args: argparse.Namespace) -> None:
    if args.child == "embed":
        result = embed_rate(args.embed_rows, args.threads)
    elif args.child == "real":
        result = real_map(args.threads, Path(args.out))
    elif args.child == "prepare":
        rows, _ = known_vectors(args.threads, args.embed_rows)
        result = {"cached_rows": len(rows)}
    else:
        size, sample = int(args.child), (args.sample or None)
        result = one_map(size, sample, args.threads, Path(args.out))
    print(json.dumps(result))


def spawn(*extra: str, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--threads", str(threads), *extra]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_after"] = h.load_average()
    return result


def print_embed(e: dict[str, Any], machine: dict[str, Any], threads: int) -> None:
    h.print_table(
        f"embedding ({machine['cpu']}, {threads} threads, load {e['load_after']})",
        ["rows", "rows/s", "rows per CPU-second", "mean chars", "peak RSS MB"],
        [
            [
                str(e[k])
                for k in ("rows", "rows_per_s", "rows_per_cpu_s", "mean_chars", "peak_rss_mb")
            ]
        ],
    )


MAP_COLUMNS = {
    "rows": "rows",
    "compile_s": "UMAP compile s",
    "sample": "UMAP fit on",
    "umap_s": "UMAP s",
    "cluster_s": "HDBSCAN s",
    "keywords_s": "keywords s",
    "html_s": "page s",
    "total_s": "total s",
    "cpu_s": "CPU s",
    "rows_per_s": "rows/s",
    "clusters": "clusters",
    "html_mb": "page MB",
    "peak_rss_mb": "peak RSS MB",
    "draw_s": "draw s",
    "load_after": "load",
}


def print_maps(maps: list[dict[str, Any]]) -> None:
    rows = [
        [str(m.get(k) or (m["rows"] if k == "sample" else "–")) for k in MAP_COLUMNS] for m in maps
    ]
    h.print_table("the map once embedded", list(MAP_COLUMNS.values()), rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 rows, 200 embedded: about a minute")
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000], help="(none: no maps)")
    p.add_argument(
        "--sample",
        type=int,
        default=10_000,
        help="also map each size with UMAP fitted on this many rows (0: no)",
    )
    p.add_argument("--embed-rows", type=int, default=1_000, help="(0: no embedding figure)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--screenshots",
        type=Path,
        metavar="DIR",
        help="also map the cached shared rows and save datamap-*.png here (docs/screenshots)",
    )
    p.add_argument(
        "--prepare",
        type=int,
        metavar="N",
        help="only make sure the first N shuffled shared rows are in the cache, and stop",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.prepare:
        print(spawn("--child", "prepare", "--embed-rows", str(args.prepare), threads=args.threads))
        return
    if args.quick:
        args.sizes, args.sample, args.embed_rows = [1_000], 500, 200
    machine = h.machine_info()
    results: dict[str, Any] = {"machine": machine, "load_before": h.load_average()}
    if args.embed_rows:
        h.note(f"embedding {args.embed_rows} rows (load {h.load_average()})")
        results["embed"] = spawn(
            "--child", "embed", "--embed-rows", str(args.embed_rows), threads=args.threads
        )
        print_embed(results["embed"], machine, args.threads)
    maps = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for sample in [0, args.sample] if args.sample and args.sample < size else [0]:
                h.note(f"map of {size:,} rows, sample {sample or 'none'} (load {h.load_average()})")
                out = Path(tmp) / f"map-{size}-{sample}.html"
                extra = ["--sample", str(sample), "--out", str(out)]
                row = spawn("--child", str(size), *extra, threads=args.threads)
                if args.browser:
                    row.update(draw_time(out))
                maps.append(row)
                h.note(json.dumps(row))  # as it comes: a long run that is stopped keeps its rows
        if args.screenshots:
            out = Path(tmp) / "real.html"
            results["real"] = spawn("--child", "real", "--out", str(out), threads=args.threads)
            screenshots(out, args.screenshots)
    results["maps"] = maps
    print_maps(maps)
    h.write_json(NAME, args.quick, results)


if __name__ == "__main__":
    main()
