"""Sharing from the web UI: its API (``/api/share``, per-chat preview and share, suggested
answers), the server's background flush, and the page in a real browser (Debian's Chromium).

The datalake here is :class:`share_helpers.Recorder`, a real HTTP server on 127.0.0.1
that counts every request it gets.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import CHROMIUM, playwright_or_skip
from llm4all.datalake import client as share
from llm4all.datalake.queue import ShareQueue
from llm4all.server import ServerSettings, create_app
from llm4all.store import ChatStore
from server_helpers import FAST, fast_settings, running
from share_helpers import SECRET_EMAIL, Recorder, rated_chat, recording


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with recording() as server:
        yield server


@pytest.fixture
def api(fast_model_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as c:
        yield c


@pytest.fixture
def store(api: TestClient) -> ChatStore:
    api.get("/api/chats")
    chat_store: ChatStore = api.app.state.chat_store  # type: ignore[attr-defined]
    return chat_store


def test_the_setting_starts_off_and_the_page_cannot_move_the_endpoint(
    api: TestClient, store: ChatStore, recorder: Recorder
) -> None:
    got = api.get("/api/share").json()
    assert (got["enabled"], got["configured"]) == (False, False)
    assert "public training data" in got["notice"]
    chat = rated_chat(store)
    refused = api.post(f"/api/chats/{chat.id}/share", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "sharing_off"
    moved = api.put("/api/share", json={"enabled": True, "endpoint": "http://evil.example"})
    assert moved.status_code == 400  # unknown field: the endpoint is the CLI's alone
    on = api.put("/api/share", json={"enabled": True, "attribution": "Ada"}).json()
    assert (on["enabled"], on["attribution"]) == (True, "Ada")
    foreign = api.put(
        "/api/share", json={"enabled": False}, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    assert recorder.requests == []


def test_preview_share_and_suggest_over_the_api(
    api: TestClient, store: ChatStore, recorder: Recorder
) -> None:
    chat = rated_chat(store)
    share.update_settings(store, endpoint=recorder.url)
    flusher = api.app.state.share_flusher  # type: ignore[attr-defined]
    api.put("/api/share", json={"enabled": True})  # which wakes the background flush
    wait_until(lambda: flusher.rounds > 0)  # so that it does not race the share below
    preview = api.post(f"/api/chats/{chat.id}/share/preview", json={"scrub": True}).json()
    assert SECRET_EMAIL not in preview["body"] and preview["findings"]["email"] == 1
    assert preview["state"] is None and recorder.requests == []
    answer = store.messages(chat.id)[1]
    suggested = api.put(
        f"/api/chats/{chat.id}/messages/{answer.id}/suggestion", json={"content": "Better."}
    )
    assert suggested.status_code == 200 and suggested.json()["edited_content"] == "Better."
    question = store.messages(chat.id)[0]
    assert (
        api.put(
            f"/api/chats/{chat.id}/messages/{question.id}/suggestion", json={"content": "x"}
        ).status_code
        == 400
    )
    shared = api.post(f"/api/chats/{chat.id}/share", json={"scrub": True}).json()
    assert shared["state"] == "sent", shared
    (request,) = recorder.requests
    body = request.json()
    assert body["conversation"][2]["edited_content"] == "Better." and SECRET_EMAIL not in str(body)
    again = api.post(f"/api/chats/{chat.id}/share/preview", json={"scrub": True}).json()
    assert again["state"] == "sent"
    assert api.get("/api/share").json()["queue"]["sent"] == 1
    empty = store.create_chat()
    store.add_message(empty.id, "user", "no answer yet")
    bad = api.post(f"/api/chats/{empty.id}/share/preview", json={})
    assert bad.status_code == 400 and "no assistant answer" in bad.json()["error"]["message"]
    assert api.post("/api/chats/nope/share", json={}).status_code == 404
    withdrawn = api.post("/api/share/withdraw")
    assert withdrawn.status_code == 200
    last = recorder.requests[-1]
    assert (last.path, last.json()) == ("/v1/withdraw", {"submitter_id": body["submitter_id"]})
    assert api.get("/api/share").json()["queue"]["withdrawn"] == 1
    share.update_settings(store, endpoint="http://127.0.0.1:9")  # nothing listens there
    failed = api.post("/api/share/withdraw")
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "datalake_failed"


def test_the_server_flushes_the_queue_in_the_background(
    fast_model_path: Path, isolated_home: Path
) -> None:
    with recording() as recorder:
        with ChatStore() as store:
            chat = rated_chat(store)
            share.update_settings(store, enabled=True, endpoint=f"http://127.0.0.1:{recorder.port}")
            assert share.share_chat(store, chat.id, send=False).state == "queued"
        settings = fast_settings(fast_model_path.parent, preload=False)
        with running(settings) as server:
            flusher = server.app.state.share_flusher
            flusher.wake()  # instead of waiting for the first tick
            recorder.wait_for(1)
            deadline = time.monotonic() + 30
            with ChatStore() as store, ShareQueue(store.path) as queue:
                while (item := queue.get(chat.id)) is None or item.state != "sent":
                    assert time.monotonic() < deadline, item
                    time.sleep(0.05)
                # Opted out: the next rounds send nothing, even what is queued.
                share.update_settings(store, enabled=False)
                store.rate_message(store.messages(chat.id)[1].id, -1)
                share.update_settings(store, enabled=True)
                share.share_chat(store, chat.id, send=False)
                share.update_settings(store, enabled=False)
            rounds = flusher.rounds
            flusher.wake()
            while flusher.rounds == rounds:
                time.sleep(0.05)
        assert len(recorder.requests) == 1


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- the page ----------------------------------------------------------------------------------------
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_or_skip()() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.mark.slow
def test_sharing_in_the_browser(browser: Any, fast_model_path: Path, isolated_home: Path) -> None:
    with recording() as recorder, ChatStore() as store:
        chat = rated_chat(store)
        share.update_settings(store, endpoint=recorder.url)
        answer = store.messages(chat.id)[1]
        with running(fast_settings(fast_model_path.parent, preload=False)) as server:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(30_000)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/#/chat/{chat.id}")
            page.wait_for_selector(f'body[data-ready][data-chat="{chat.id}"]')

            # Suggest a better answer for the first answer.
            article = page.locator(f'article[data-id="{answer.id}"]')
            article.get_by_role("button", name="Suggest a better answer").click()
            article.locator("textarea").fill("A better answer, from the browser.")
            article.get_by_role("button", name="Save better answer").click()
            page.locator(".suggestion-text").wait_for()
            assert (
                store.get_message(answer.id).edited_content == "A better answer, from the browser."
            )

            # Sharing is off: the preview shows, the share button is disabled.
            page.get_by_role("button", name="Share this chat").first.click()
            dialog = page.locator("#share-dialog")
            dialog.locator("#share-preview").wait_for()
            wait_until(lambda: dialog.locator("#share-preview").inner_text() != "")
            assert "public training data" in dialog.inner_text()
            assert dialog.locator("#share-send").is_disabled()
            shown = json.loads(dialog.locator("#share-preview").inner_text())
            assert SECRET_EMAIL in json.dumps(shown)

            # Turn it on in the setting, with a name.
            dialog.get_by_role("button", name="Turn it on").click()
            dialog.locator("#share-enabled").check()
            dialog.locator("#share-name").fill("Ada")
            dialog.locator("#share-save").click()
            wait_until(lambda: not dialog.is_visible())
            assert share.load_settings(store).enabled

            # Share it scrubbed: what was previewed is what arrives.
            page.get_by_role("button", name="Share this chat").first.click()
            dialog.locator("#share-scrub").check()
            wait_until(lambda: "[email]" in dialog.locator("#share-preview").inner_text())
            wait_until(lambda: dialog.locator("#share-send").is_enabled())
            previewed = dialog.locator("#share-preview").inner_text()
            if os.environ.get("LLM4ALL_SCREENSHOTS"):
                page.screenshot(path=str(SCREENSHOTS / "share-dialog.png"))
            assert "Scrubbed:" in dialog.locator("#share-summary").inner_text()
            dialog.locator("#share-send").click()
            recorder.wait_for(1)
            (request,) = recorder.requests
            assert json.loads(request.body) == json.loads(previewed)
            assert request.json()["attribution"] == "Ada"
            assert SECRET_EMAIL not in request.body.decode()
            context.close()
            assert not errors, errors
