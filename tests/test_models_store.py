"""The model store: resolve, pull, add, remove, info and the memory check, on real files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm4all.errors import (
    ChecksumMismatch,
    DownloadError,
    InsufficientMemory,
    ModelLoadError,
    ModelNotFound,
    ModelNotInstalled,
)
from llm4all.models import sources
from llm4all.models.catalog import Catalog, UrlSource
from llm4all.models.memory import ensure_fits_in_ram, memory_needed, ram_gib
from llm4all.models.store import ModelStore
from model_helpers import make_entry, same_inode, sha256_of, write_tiny_gguf
from servers import FileServer, serve_files


@pytest.fixture
def model_bytes(tmp_path: Path) -> bytes:
    return write_tiny_gguf(tmp_path / "src.gguf").read_bytes()


@pytest.fixture
def server(model_bytes: bytes) -> Iterator[FileServer]:
    with serve_files({"/tiny.gguf": model_bytes}) as srv:
        yield srv


@pytest.fixture
def store(tmp_path: Path, server: FileServer, model_bytes: bytes) -> ModelStore:
    entries = [
        make_entry(
            "tiny-chat",
            "tiny-chat.gguf",
            model_bytes,
            (UrlSource(server.url("/tiny.gguf")),),
            default=True,
        ),
        make_entry(
            "tiny-fallback",
            "tiny-fallback.gguf",
            model_bytes,
            (UrlSource(server.url("/gone.gguf")), UrlSource(server.url("/tiny.gguf"))),
        ),
        make_entry(
            "tiny-broken", "tiny-broken.gguf", model_bytes, (UrlSource(server.url("/gone.gguf")),)
        ),
    ]
    return ModelStore(tmp_path / "models", catalog=Catalog(entries))


def test_resolve_by_name_pulls_verifies_and_caches(
    store: ModelStore, server: FileServer, model_bytes: bytes
) -> None:
    resolved = store.resolve("tiny-chat")
    assert resolved.path == store.root / "tiny-chat.gguf"
    assert resolved.entry is not None and resolved.entry.name == "tiny-chat"
    assert resolved.path.read_bytes() == model_bytes
    assert len(server.requests) == 1
    again = store.resolve("TINY-CHAT")
    assert again == resolved
    assert len(server.requests) == 1


def test_verification_is_cached_in_the_sidecar(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = store.resolve("tiny-chat").path
    monkeypatch.setattr(sources, "hash_file", lambda *a, **k: pytest.fail("re-hashed"))
    assert store.resolve("tiny-chat").path == path
    os.utime(path, ns=(0, 0))  # the file changed (as far as the cache can tell)
    monkeypatch.undo()
    assert store.resolve("tiny-chat").path == path


def test_corrupt_installed_file_is_removed(store: ModelStore, model_bytes: bytes) -> None:
    path = store.root / "tiny-chat.gguf"
    path.write_bytes(b"\0" * len(model_bytes))  # right size, wrong bytes
    with pytest.raises(ChecksumMismatch, match="removed") as info:
        store.resolve("tiny-chat", allow_download=False)
    assert info.value.actual == sha256_of(b"\0" * len(model_bytes))
    assert not path.exists()


def test_resolve_by_file_name_path_and_default(store: ModelStore, tmp_path: Path) -> None:
    by_name = store.resolve("tiny-chat")
    assert store.resolve("tiny-chat.gguf") == by_name
    # A path inside the store is the catalog model whose file it is.
    assert store.resolve(str(by_name.path)) == by_name
    assert store.resolve(None) == by_name
    (tmp_path / "elsewhere").mkdir()
    outside = write_tiny_gguf(tmp_path / "elsewhere" / "mine.gguf")
    resolved = store.resolve(outside)
    assert (resolved.path, resolved.name, resolved.entry) == (outside.resolve(), "mine", None)


def test_resolve_a_broken_path_says_why(store: ModelStore, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello" * 100)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        store.resolve(str(junk))
    with pytest.raises(ModelLoadError, match="no such file"):
        store.resolve(str(tmp_path / "absent.gguf"))


def test_unknown_name_suggests_close_names(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")  # the shipped catalog
    with pytest.raises(ModelNotFound) as info:
        store.resolve("smollm")
    assert info.value.suggestions[0] == "smollm2-135m-instruct"
    assert "did you mean 'smollm2-135m-instruct'" in str(info.value)
    with pytest.raises(ModelNotFound) as info:
        store.resolve("qwen2.5-coder-0.5b-instuct")  # a typo
    assert "qwen2.5-coder-0.5b-instruct" in info.value.suggestions
    with pytest.raises(ModelNotFound) as info:
        store.resolve("zzzzzz")
    assert info.value.suggestions == []


def test_not_installed_without_download(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelNotInstalled, match="llm4all models pull smollm2-135m-instruct"):
        store.resolve("smollm2-135m-instruct", allow_download=False)


def test_pull_falls_back_to_the_next_source(store: ModelStore, server: FileServer) -> None:
    path = store.pull("tiny-fallback")
    assert path.exists()
    assert [r.path for r in server.requests] == ["/gone.gguf", "/tiny.gguf"]


def test_pull_raises_the_first_error_when_all_sources_fail(store: ModelStore) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        store.pull("tiny-broken")
    with pytest.raises(ModelNotFound):
        store.pull("no-such-model")


def test_add_links_and_lists_a_local_model(store: ModelStore, tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "My-Model.Q8.gguf", chat_template=None)
    added = store.add(src, check=False)  # a layout test: the tiny file has no layers to load
    assert added.name == "My-Model.Q8"
    assert added.entry is None
    assert added.described["architecture"] == "llama"
    assert added.described["kind"] == "base"
    assert same_inode(src, added.path)  # same file system: a hard link, no copy
    assert [m.name for m in store.installed()] == ["My-Model.Q8"]
    resolved = store.resolve("my-model.q8")
    assert resolved.path == added.path and resolved.entry is None


def test_add_copies_with_a_name(store: ModelStore, tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "x.gguf")
    added = store.add(src, "helper", link=False, check=False)
    assert not same_inode(src, added.path)
    assert added.name == "helper" and added.described["kind"] == "chat"
    assert store.resolve("helper").path == added.path
    with pytest.raises(FileExistsError, match="already exists"):
        store.add(write_tiny_gguf(tmp_path / "y.gguf"), "helper", check=False)
    with pytest.raises(FileExistsError, match="already exists"):
        store.add(write_tiny_gguf(tmp_path / "z.gguf"), "tiny-chat", check=False)


def test_add_refuses_a_broken_file(store: ModelStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(write_tiny_gguf(tmp_path / "ok.gguf").read_bytes()[:-50])
    with pytest.raises(ModelLoadError, match="truncated"):
        store.add(bad)
    assert store.installed() == []


def test_add_a_catalog_file_checks_its_checksum(
    store: ModelStore, tmp_path: Path, model_bytes: bytes
) -> None:
    good = tmp_path / "in" / "tiny-chat.gguf"
    good.parent.mkdir()
    good.write_bytes(model_bytes)
    added = store.add(good, check=False)
    assert added.entry is not None and added.name == "tiny-chat"
    store.remove("tiny-chat")
    (tmp_path / "other").mkdir()
    wrong = write_tiny_gguf(tmp_path / "other" / "tiny-chat.gguf", context_length=512)
    with pytest.raises(ChecksumMismatch) as info:
        store.add(wrong, check=False)
    assert not info.value.removed and info.value.path == str(wrong.resolve())
    assert wrong.exists() and store.installed() == []


def test_remove(store: ModelStore, tmp_path: Path) -> None:
    path = store.resolve("tiny-chat").path
    assert store.remove("tiny-chat") == path
    assert list(p for p in store.root.iterdir() if not p.name.startswith(".")) == []
    with pytest.raises(ModelNotInstalled):
        store.remove("tiny-chat")
    with pytest.raises(ModelNotFound):
        store.remove("nothing-like-it")


def test_remove_takes_the_folder_rebuilt_for_transformers_along(store: ModelStore) -> None:
    """``llm4all models rm`` leaves no float copy behind (``.hf/``, written by llm4all.hf)."""
    from llm4all import hf

    path = store.resolve("tiny-chat").path
    other = store.root / "other.gguf"
    rebuilt = {}
    for name, gguf in (("mine", path), ("theirs", other)):
        folder = store.root / ".hf" / name
        folder.mkdir(parents=True)
        (folder / hf._SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf), "sha256": "x"}))
        rebuilt[name] = folder
    store.remove("tiny-chat")
    assert not rebuilt["mine"].exists() and rebuilt["theirs"].exists()


def test_info(store: ModelStore, tmp_path: Path) -> None:
    missing = store.info("tiny-chat")
    assert not missing.installed and missing.metadata is None and missing.entry is not None
    store.pull("tiny-chat")
    details = store.info("tiny-chat")
    assert details.installed and details.metadata is not None
    assert details.metadata.context_length == 256
    assert details.verified is not None and details.verified.sha256 == details.entry.sha256  # type: ignore[union-attr]
    data = details.to_dict()
    assert data["catalog"]["name"] == "tiny-chat" and data["metadata"]["architecture"] == "llama"
    outside = store.info(str(write_tiny_gguf(tmp_path / "loose.gguf")))
    assert outside.name == "loose" and not outside.installed and outside.metadata is not None
    with pytest.raises(ModelNotFound):
        store.info("unknown-thing")


def test_memory_check() -> None:
    gib = 2**30
    assert memory_needed(gib) == int(gib * 1.2) + 200 * 2**20
    assert ensure_fits_in_ram(gib, available=4 * gib) == memory_needed(gib)
    with pytest.raises(InsufficientMemory) as info:
        ensure_fits_in_ram(4 * gib, available=2 * gib)
    assert info.value.needed_bytes == memory_needed(4 * gib)
    assert "GiB of RAM" in str(info.value)
    assert ensure_fits_in_ram(1000) > 0  # the real machine has 201 MB free


def test_adding_a_file_again_with_a_name_keeps_both_names(
    store: ModelStore, tmp_path: Path
) -> None:
    """``add FILE`` then ``add FILE --name tiny``: two names for one file (as ``ollama cp``)."""
    src = write_tiny_gguf(tmp_path / "x.gguf")
    first = store.add(src, check=False)
    second = store.add(src, "tiny", check=False)
    assert (first.name, second.name) == ("x", "tiny") and first.path == second.path
    assert store.names_of(first.path) == ["x", "tiny"]
    listed = {m.name: m for m in store.installed()}
    assert set(listed) == {"x", "tiny"}
    assert listed["x"].ram_required_gb == listed["tiny"].ram_required_gb  # one file, one figure
    assert store.resolve("x").path == store.resolve("tiny").path == first.path
    assert store.add(src, "tiny", check=False).name == "tiny"  # the same name again: no change
    assert store.names_of(first.path) == ["x", "tiny"]
    with pytest.raises(FileExistsError, match="already exists"):
        store.add(src, "tiny-chat", check=False)  # a catalog name stays the catalog's
    # rm of one name keeps the file under the other; rm of the last name deletes it.
    assert store.remove("x") == first.path and first.path.exists()
    assert [m.name for m in store.installed()] == ["tiny"]
    store.remove("tiny")
    assert not first.path.exists() and store.installed() == []


def test_a_catalog_file_can_have_another_name(store: ModelStore, tmp_path: Path) -> None:
    path = store.pull("tiny-chat")
    alias = store.add(path, "mine", check=False)
    assert alias.entry is not None and alias.entry.name == "tiny-chat"
    assert {m.name for m in store.installed()} == {"tiny-chat", "mine"}
    assert store.resolve("mine").entry == alias.entry  # the catalog's template and prompt
    store.remove("mine")  # only the other name
    assert path.exists() and [m.name for m in store.installed()] == ["tiny-chat"]


def test_sidecars_written_before_names_still_name_their_file(
    store: ModelStore, tmp_path: Path
) -> None:
    path = store.add(write_tiny_gguf(tmp_path / "old.gguf"), "legacy", check=False).path
    sidecar = path.with_name(path.name + ".model.json")
    data = json.loads(sidecar.read_text())
    data["name"] = data.pop("names")[0]
    sidecar.write_text(json.dumps(data))
    assert [m.name for m in store.installed()] == ["legacy"]
    store.add(path, "second", check=False)
    assert store.names_of(path) == ["legacy", "second"]


def test_catalog_and_installed_ram_come_from_one_function(store: ModelStore) -> None:
    entry = store.catalog.get("tiny-chat")
    assert entry is not None
    [installed] = [m for m in store.installed() if m.entry is None] or [None]
    assert installed is None
    path = store.pull("tiny-chat")
    model = store.find_installed("tiny-chat")
    assert model is not None and model.path == path
    assert entry.ram_required_gb == model.ram_required_gb == ram_gib(entry.size)
    shipped = ModelStore(store.root.parent / "other").catalog.get("smollm2-135m-instruct")
    assert shipped is not None and shipped.ram_required_gb == ram_gib(shipped.size)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("llama3", ["llama-3.2-1b-instruct", "llama-3.2-3b-instruct"]),
        ("phi3", ["phi-3-mini-4k-instruct"]),
        ("qwen2.5:0.5b", ["qwen2.5-0.5b-instruct", "qwen2.5-coder-0.5b-instruct"]),
        ("gemma3", ["gemma-3-270m"]),
        ("qwen2.5-coder:1.5b", ["qwen2.5-coder-1.5b-instruct"]),
        ("mistral:7b", ["mistral-7b-instruct-v0.3"]),
        ("llama3.2:3b", ["llama-3.2-3b-instruct"]),
        ("nomic-embed-text", ["nomic-embed-text-v1.5"]),
    ],
)
def test_ollama_style_names_get_suggestions(
    tmp_path: Path, typed: str, expected: list[str]
) -> None:
    store = ModelStore(tmp_path / "models")  # the shipped catalog
    with pytest.raises(ModelNotFound) as info:
        store.resolve(typed)
    assert info.value.suggestions[: len(expected)] == expected
    with pytest.raises(ModelNotFound) as info:
        store.pull(typed)
    assert f"did you mean '{expected[0]}'" in str(info.value)
