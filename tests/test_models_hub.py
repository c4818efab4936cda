"""Pulling GGUF files from a Hugging Face repository by name, against a fake hub on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_helpers import publish
from llm4all.errors import (
    ChecksumMismatch,
    DownloadError,
    DownloadIncomplete,
    ModelNotFound,
    ModelNotInstalled,
    QuantizationNotFound,
)
from llm4all.models import hub
from llm4all.models.sources import partial_path
from llm4all.models.store import ModelStore
from model_helpers import write_tiny_gguf
from servers import FileServer, serve_files

REPO = "someone/Tiny-GGUF"


@pytest.fixture
def ggufs(tmp_path: Path) -> dict[str, bytes]:
    """Three different real GGUF files, one per quantization label."""
    out = {}
    for n, quant in enumerate(("Q4_K_M", "Q8_0", "F16")):
        path = write_tiny_gguf(tmp_path / f"src-{quant}.gguf", context_length=256 << n)
        out[quant] = path.read_bytes()
    return out


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    with serve_files({}) as server:
        monkeypatch.setenv("LLM4ALL_HF_ENDPOINT", server.url(""))
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


@pytest.fixture
def repo(hub_server: FileServer, ggufs: dict[str, bytes]) -> dict[str, bytes]:
    files = {
        "README.md": b"# Tiny\n",
        "Tiny-Q4_K_M.gguf": ggufs["Q4_K_M"],
        "Tiny-Q8_0.gguf": ggufs["Q8_0"],
        "fp/Tiny-F16.gguf": ggufs["F16"],
        "mmproj-Tiny-F16.gguf": b"projector, never the model",
    }
    publish(hub_server, REPO, files)
    return files


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_parse_ref() -> None:
    assert hub.parse_ref("llama3") is None
    assert hub.parse_ref("./models/x.gguf") is None
    assert hub.parse_ref("hf.co/u/r:q4_k_m") == hub.HubRef("u/r", "Q4_K_M")
    assert hub.parse_ref("huggingface.co/u/r") == hub.HubRef("u/r")
    assert hub.parse_ref("hf.co/u/r:latest") == hub.HubRef("u/r")
    assert hub.parse_ref("hf.co/u/r/sub/f.gguf") == hub.HubRef("u/r", path="sub/f.gguf")
    page = "https://huggingface.co/u/r/blob/v2/f.gguf"
    assert hub.parse_ref(page) == hub.HubRef("u/r", path="f.gguf", revision="v2")
    with pytest.raises(ModelNotFound):
        hub.parse_ref("hf.co/just-a-user")


def test_quantization_of() -> None:
    assert hub.quantization_of("SmolLM2-135M-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert hub.quantization_of("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert hub.quantization_of("Llama-3.2-1B-Instruct-IQ4_XS.gguf") == "IQ4_XS"
    assert hub.quantization_of("gemma-3-270m-it-UD-Q4_K_XL.gguf") == "Q4_K_XL"
    assert hub.quantization_of("model.f16.gguf") == "F16"
    assert hub.quantization_of("Qwen2.5-7B.gguf") is None


def test_pull_a_quantization_by_name(
    store: ModelStore, hub_server: FileServer, repo: dict[str, bytes]
) -> None:
    path = store.pull(f"hf.co/{REPO}:q8_0")
    assert path == store.root / "Tiny-Q8_0.gguf"
    assert path.read_bytes() == repo["Tiny-Q8_0.gguf"]
    assert [r.path for r in hub_server.requests] == [
        f"/api/models/{REPO}/tree/main?recursive=True",
        f"/{REPO}/resolve/main/Tiny-Q8_0.gguf",
    ]
    [model] = store.installed()
    assert model.name == f"hf.co/{REPO}:Q8_0" and model.kind == "chat"
    assert model.described["hub"] == {"repo": REPO, "path": "Tiny-Q8_0.gguf", "revision": "main"}
    hub_server.files.clear()  # installed: found again without the hub
    resolved = store.resolve(f"HF.CO/{REPO}:Q8_0", allow_download=False)
    assert (resolved.path, resolved.name) == (path, f"hf.co/{REPO}:Q8_0")
    assert store.resolve(f"hf.co/{REPO}", allow_download=False).path == path


def test_without_a_quantization_the_default_one_is_pulled(
    store: ModelStore, repo: dict[str, bytes]
) -> None:
    resolved = store.resolve(f"hf.co/{REPO}")
    assert resolved.name == f"hf.co/{REPO}:Q4_K_M"
    assert resolved.path.read_bytes() == repo["Tiny-Q4_K_M.gguf"]


def test_default_is_the_nearest_quantization_when_q4_k_m_is_missing(
    store: ModelStore, hub_server: FileServer, ggufs: dict[str, bytes]
) -> None:
    publish(hub_server, "u/only-big", {"m-F16.gguf": ggufs["F16"], "m-Q8_0.gguf": ggufs["Q8_0"]})
    assert store.pull("hf.co/u/only-big").name == "m-Q8_0.gguf"


def test_pull_a_file_by_path(store: ModelStore, repo: dict[str, bytes]) -> None:
    path = store.pull(f"hf.co/{REPO}/fp/Tiny-F16.gguf")
    assert path.name == "Tiny-F16.gguf" and path.read_bytes() == repo["fp/Tiny-F16.gguf"]
    assert store.find_installed(f"hf.co/{REPO}:F16") is not None
    assert store.resolve(f"hf.co/{REPO}/fp/Tiny-F16.gguf", allow_download=False).path == path


def test_a_missing_quantization_lists_those_there_are(
    store: ModelStore, repo: dict[str, bytes]
) -> None:
    with pytest.raises(QuantizationNotFound) as info:
        store.pull(f"hf.co/{REPO}:Q2_K")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"hf.co/{REPO} has no Q2_K file; it has Q4_K_M, Q8_0, F16 "
        f"(e.g. `llm4all models pull hf.co/{REPO}:Q4_K_M`)"
    )
    assert isinstance(info.value, ModelNotFound)  # the HTTP layer answers 404
    with pytest.raises(ModelNotFound, match=re.escape(f"did you mean 'hf.co/{REPO}:Q4_K_M'")):
        store.pull(f"hf.co/{REPO}/Tiny-Q3.gguf")
    assert store.installed() == []


def test_a_checksum_mismatch_removes_the_download(
    store: ModelStore, hub_server: FileServer, ggufs: dict[str, bytes]
) -> None:
    publish(
        hub_server,
        "u/bad",
        {"m-Q4_K_M.gguf": ggufs["Q4_K_M"]},
        wrong_sha=frozenset({"m-Q4_K_M.gguf"}),
    )
    with pytest.raises(ChecksumMismatch, match="removed") as info:
        store.pull("hf.co/u/bad")
    assert info.value.expected == "0" * 64
    assert list(store.root.glob("m-Q4_K_M.gguf*")) == []


def test_an_interrupted_pull_resumes(
    store: ModelStore, hub_server: FileServer, repo: dict[str, bytes]
) -> None:
    data = repo["Tiny-Q4_K_M.gguf"]
    hub_server.cut_after = 3000  # longer than the file list, shorter than the file
    with pytest.raises(DownloadIncomplete) as info:
        store.pull(f"hf.co/{REPO}")
    assert "run the same command again to resume" in str(info.value)
    assert info.value.have == 3000 and info.value.total == len(data)
    assert "\n" not in str(info.value) and f"at {100 * 3000 // len(data)} %" in str(info.value)
    assert partial_path(store.root / "Tiny-Q4_K_M.gguf").stat().st_size == 3000
    hub_server.cut_after = None
    path = store.pull(f"hf.co/{REPO}")
    assert hub_server.requests[-1].range == "bytes=3000-"
    assert path.read_bytes() == data


def test_a_part_of_an_older_file_is_not_resumed(
    store: ModelStore, hub_server: FileServer, repo: dict[str, bytes], ggufs: dict[str, bytes]
) -> None:
    hub_server.cut_after = 3000
    with pytest.raises(DownloadIncomplete):
        store.pull(f"hf.co/{REPO}")
    hub_server.cut_after = None
    publish(hub_server, REPO, {"Tiny-Q4_K_M.gguf": ggufs["F16"]})  # the repository changed
    path = store.pull(f"hf.co/{REPO}")
    assert hub_server.requests[-1].range is None
    assert path.read_bytes() == ggufs["F16"]


def test_hf_token_is_sent_and_its_absence_explained(
    store: ModelStore,
    hub_server: FileServer,
    repo: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub_server.token = "hf_secret"
    with pytest.raises(DownloadError, match=r"private or gated.*HF_TOKEN") as info:
        store.pull(f"hf.co/{REPO}")
    assert "\n" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="HF_TOKEN was refused"):
        store.pull(f"hf.co/{REPO}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    store.pull(f"hf.co/{REPO}")
    assert {r.authorization for r in hub_server.requests[-2:]} == {"Bearer hf_secret"}


def test_the_tree_is_read_page_by_page(
    store: ModelStore, hub_server: FileServer, ggufs: dict[str, bytes]
) -> None:
    files = {f"m-{q}.gguf": data for q, data in ggufs.items()}
    publish(hub_server, "u/paged", files | {"README.md": b"x"}, page_size=2)
    assert store.pull("hf.co/u/paged:F16").read_bytes() == ggufs["F16"]
    assert sum("/tree/" in r.path for r in hub_server.requests) == 2


def test_unknown_repo_empty_repo_and_split_files_are_one_line_errors(
    store: ModelStore, hub_server: FileServer, ggufs: dict[str, bytes]
) -> None:
    with pytest.raises(DownloadError, match="does not exist"):
        store.pull("hf.co/nobody/nothing")
    publish(hub_server, "u/safetensors", {"model.safetensors": b"weights", "config.json": b"{}"})
    with pytest.raises(DownloadError, match="no GGUF files"):
        store.pull("hf.co/u/safetensors")
    split = {f"big-Q4_K_M-0000{i}-of-00002.gguf": ggufs["Q4_K_M"] for i in (1, 2)}
    publish(hub_server, "u/split", split)
    with pytest.raises(DownloadError, match="one of 2 parts of a split GGUF"):
        store.pull("hf.co/u/split")


def test_not_installed_without_download(store: ModelStore, repo: dict[str, bytes]) -> None:
    with pytest.raises(ModelNotInstalled, match=f"llm4all models pull hf.co/{REPO}:Q8_0"):
        store.resolve(f"hf.co/{REPO}:Q8_0", allow_download=False)


def test_remove_and_info_by_hub_name(store: ModelStore, repo: dict[str, bytes]) -> None:
    path = store.pull(f"hf.co/{REPO}:Q8_0")
    details = store.info(f"hf.co/{REPO}:Q8_0")
    assert details.installed and details.metadata is not None
    assert store.remove(f"hf.co/{REPO}") == path
    assert not path.exists() and store.installed() == []


@pytest.mark.slow
def test_a_real_model_pulled_from_the_hub_answers(
    hub_server: FileServer, fast_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``llm4all run -m hf.co/…`` as a user types it: pulled on first use, loaded, answering."""
    files = {"SmolLM2-135M-Instruct-Q4_1.gguf": fast_model_path.read_bytes()}
    publish(hub_server, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", files)
    monkeypatch.setenv("LLM4ALL_MODELS", str(tmp_path / "models"))
    name = "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    command = [sys.executable, "-m", "llm4all", "run", "-m", name, "--temp", "0", "-n", "4"]
    ran = subprocess.run(
        [*command, "The capital of France is"], capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()
    installed = ModelStore().find_installed(name)
    assert installed is not None and installed.name == f"{name}:Q4_1"
    assert installed.path.stat().st_size == fast_model_path.stat().st_size


def test_an_unknown_name_without_suggestions_points_to_hugging_face(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound) as info:
        store.resolve("zzzzzz")
    assert info.value.suggestions == []
    assert "any GGUF on Hugging Face can be pulled as hf.co/USER/REPO" in str(info.value)


@pytest.mark.slow
def test_the_server_answers_to_a_hub_name(
    hub_server: FileServer, fast_model_path: Path, tmp_path: Path
) -> None:
    """A hub model is listed by /v1/models under its hf.co name and answers to every form of it."""
    import openai

    from server_helpers import fast_settings, running

    files = {"SmolLM2-135M-Instruct-Q4_1.gguf": fast_model_path.read_bytes()}
    publish(hub_server, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", files)
    store = ModelStore(tmp_path / "models")
    repo = "hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    store.pull(repo)
    with running(fast_settings(store.root, model=f"{repo}:Q4_1")) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        assert [m.id for m in client.models.list()] == [f"{repo}:Q4_1"]
        for name in (f"{repo}:Q4_1", repo):  # the repository alone: its best quantization
            answer = client.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": "Hi"}],
                max_tokens=3,
                temperature=0,
            )
            assert answer.choices[0].message.content
