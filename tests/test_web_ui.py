"""The web chat in a real browser: Debian's Chromium, driven by Playwright, against a real server.

One uvicorn server with SmolLM2 serves the whole module (its chat store in a
temporary home; its model store a temporary folder holding SmolLM2, a second
name for the same file so a model can be switched, and a tiny catalog model
served over HTTP on 127.0.0.1 to pull). Each test gets a fresh browser
context. Without Chromium the tests are skipped on a developer's machine and
fail under CI. ``LLM4ALL_SCREENSHOTS=1`` also saves the screenshots of
``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import CHROMIUM, DEFAULT_MODEL, REAL_MODELS_DIR, playwright_or_skip
from llm4all.localdocs import LocalDocs
from llm4all.models import ModelStore, UrlSource, load_catalog
from llm4all.models.catalog import Catalog
from llm4all.params import GenerationParams
from llm4all.store import ChatStore
from model_helpers import make_entry, write_tiny_gguf
from server_helpers import ENDLESS, FAST, LiveServer, fast_settings, running
from servers import FileServer, serve_files

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TWIN = "smollm2-twin"  # the same file under a second name: a second chat model to switch to
HOSTILE = '<script>window.pwned=1</script> <img src=x onerror="window.pwned=1">'
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ANSWER_TIMEOUT = 180_000  # ms: two shared cores, other work running beside the tests
SLOW_RATE = 100_000  # bytes/s of the test file server: slow-test (1 MB) takes 10 s, tiny-test 0.1 s
API_KEY = "open-sesame"

pytestmark = pytest.mark.slow


# -- the server and the browser ------------------------------------------------------------------
@dataclass
class Site:
    server: LiveServer
    home: Path  # LLM4ALL_HOME of the server's chat store
    files: FileServer  # serves the catalog's test models; ``slow-test`` at ``files.rate``

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self) -> ChatStore:
        store: ChatStore = self.server.app.state.chat_store
        return store

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.url}/api{path}", timeout=60, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def site(fast_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    models = tmp_path_factory.mktemp("models")
    (models / fast_model_path.name).symlink_to(fast_model_path)
    (models / f"{TWIN}.gguf").symlink_to(fast_model_path)
    default = ModelStore(REAL_MODELS_DIR).find_installed(DEFAULT_MODEL)
    if default is not None and os.environ.get("LLM4ALL_SCREENSHOTS"):
        (models / default.path.name).symlink_to(default.path)  # better answers to show
    tiny = write_tiny_gguf(tmp_path_factory.mktemp("files") / "tiny.gguf").read_bytes()
    slow = write_tiny_gguf(tmp_path_factory.mktemp("files") / "slow.gguf", rows=16_384).read_bytes()
    home = tmp_path_factory.mktemp("home")
    # Short answers unless a chat asks for more; the stop tests set their own max_tokens.
    settings = fast_settings(
        models, parallel=2, defaults=GenerationParams(temperature=0, max_tokens=24)
    )
    served = {"/tiny-test.gguf": tiny, "/slow-test.gguf": slow}
    with serve_files(served, rate=SLOW_RATE) as files, running(settings) as server:
        entries = [
            make_entry(name, f"{name}.gguf", data, (UrlSource(files.url(f"/{name}.gguf")),))
            for name, data in (("tiny-test", tiny), ("slow-test", slow))
        ]
        server.app.state.manager.store = ModelStore(
            models, catalog=Catalog([*load_catalog().entries, *entries])
        )
        server.app.state.chat_store = ChatStore(home / "llm4all.db")
        yield Site(server, home, files)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_or_skip()() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh page on the chat; uncaught errors in the page fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.set_default_timeout(60_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    open_page(tab, site.url)
    yield tab
    context.close()
    assert not errors, errors


def open_page(tab: Any, url: str) -> None:
    tab.goto(url)
    tab.wait_for_selector("body[data-ready]")


def open_chat(tab: Any, url: str, chat_id: str) -> None:
    """Show a chat (a new page load when ``tab`` shows another page, else a hash change)."""
    tab.goto(f"{url}/#/chat/{chat_id}")
    tab.wait_for_selector(f'body[data-ready][data-chat="{chat_id}"]')


def wait_until(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def send(tab: Any, text: str) -> None:
    tab.fill("#input", text)
    tab.press("#input", "Enter")


def wait_answer(tab: Any, count: int = 1) -> Any:
    """The ``count``-th finished answer on the page."""
    answer = tab.locator(".msg.assistant:not(.streaming)").nth(count - 1)
    answer.wait_for(timeout=ANSWER_TIMEOUT)
    tab.wait_for_selector("#send:not([hidden])", timeout=ANSWER_TIMEOUT)
    return answer


def current_chat_id(tab: Any) -> str:
    chat_id: str = tab.evaluate("location.hash").removeprefix("#/chat/")
    return chat_id


# -- the tests ------------------------------------------------------------------------------------
def test_send_a_message_and_watch_the_answer_stream(page: Any, site: Site) -> None:
    page.fill("#input", "Name three colours.")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("Be brief.")
    assert page.input_value("#input") == "Name three colours.\nBe brief."
    assert page.locator(".msg").count() == 0  # Shift+Enter did not send
    # Record every text the growing answer shows, to see it arrive in pieces.
    page.evaluate(
        """() => {
        window.seen = [];
        new MutationObserver(() => {
          const s = document.querySelector('.streaming');
          if (s) window.seen.push(s.querySelector('.body').textContent);
        }).observe(document.getElementById('messages'),
                   {subtree: true, childList: true, characterData: true});
      }"""
    )
    page.press("#input", "Enter")
    answer = wait_answer(page)
    seen = page.evaluate("window.seen")
    assert len(set(seen)) >= 3, seen  # deltas and rendered snapshots, not one final paint
    assert page.input_value("#input") == ""
    stats = answer.locator(".stats").inner_text()
    assert FAST in stats and "tokens" in stats and "tok/s" in stats
    chat_id = current_chat_id(page)
    stored = site.api("GET", f"/chats/{chat_id}")
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][0]["content"] == "Name three colours.\nBe brief."
    text = answer.locator(".md").inner_text().strip()
    assert text and text.split()[0] in stored["messages"][1]["content"]
    item = page.locator(f'.chat-item[data-id="{chat_id}"]')
    assert "Name three colours. Be brief." in item.inner_text()


def test_stop_a_generation(page: Any, site: Site) -> None:
    chat = site.api("POST", "/chats", json={"params": {"grammar": ENDLESS, "max_tokens": 1000}})
    open_chat(page, site.url, chat["id"])
    send(page, "Count for me.")
    page.wait_for_function(
        "() => (document.querySelector('.streaming .body')?.textContent || '').includes('one two')",
        timeout=ANSWER_TIMEOUT,
    )
    assert page.locator("#stop").is_visible() and not page.locator("#send").is_visible()
    page.keyboard.press("Escape")
    answer = page.locator('.msg.assistant[data-finish="cancelled"]')
    answer.wait_for(timeout=ANSWER_TIMEOUT)
    assert "stopped" in answer.locator(".stats").inner_text()
    assert page.locator("#send").is_visible()
    saved = site.api("GET", f"/chats/{chat['id']}")["messages"][1]
    assert saved["finish_reason"] == "cancelled"
    assert 0 < len(saved["content"]) < len("one two three four ") * 100
    assert answer.locator(".md").inner_text().strip() == saved["content"].strip()


def test_reload_and_find_the_chat_persisted(page: Any, site: Site) -> None:
    send(page, "What is the capital of France?")
    first = wait_answer(page).locator(".md").inner_text()
    chat_id = current_chat_id(page)
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.locator(".msg.user .text").inner_text() == "What is the capital of France?"
    assert page.locator(".msg.assistant .md").inner_text() == first
    page.click("#new-chat")  # no chat open: find it in the list
    page.wait_for_selector(".welcome")
    assert page.locator("#chat-title").inner_text() == "New chat"
    assert page.evaluate("location.hash") == ""
    page.click(f'.chat-item[data-id="{chat_id}"]')
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg.assistant .md").inner_text() == first
    assert page.locator("#chat-title").inner_text() == "What is the capital of France?"


def test_switch_model(page: Any, site: Site) -> None:
    options = page.locator("#model-select option").all_inner_texts()
    assert FAST in options and TWIN in options and "all-minilm-l6-v2" not in options
    page.select_option("#model-select", TWIN)
    page.wait_for_selector(".toast:not([hidden])")
    send(page, "Hello there.")
    answer = wait_answer(page)
    assert TWIN in answer.locator(".stats").inner_text()
    chat_id = current_chat_id(page)
    assert site.api("GET", f"/chats/{chat_id}")["model"] == TWIN
    assert site.api("GET", f"/chats/{chat_id}")["messages"][1]["model"] == TWIN
    page.select_option("#model-select", FAST)  # switch the open chat back
    page.wait_for_function(
        f"() => document.querySelector('.chat-item.current').textContent.includes('{FAST}')"
    )
    assert site.api("GET", f"/chats/{chat_id}")["model"] == FAST
    assert site.api("GET", "/settings")["default_model"] == FAST


def test_a_hostile_answer_stays_inert(page: Any, site: Site) -> None:
    # The model really writes it: a grammar allows exactly this answer.
    chat = site.api(
        "POST",
        "/chats",
        json={"params": {"grammar": "root ::= " + json.dumps(HOSTILE), "max_tokens": 200}},
    )
    title = '<img src=x onerror="window.pwned=1">'
    site.api("PATCH", f"/chats/{chat['id']}", json={"title": title})
    stored = site.store.create_chat(title="<script>window.pwned=1</script>")
    site.store.add_message(stored.id, "user", "<b onmouseover=window.pwned=1>hi</b>")
    site.store.add_message(
        stored.id,
        "assistant",
        "[click](javascript:window.pwned=1) ![x](javascript:window.pwned=1)\n\n"
        '<a href="javascript:window.pwned=1">a</a> <iframe src="javascript:window.pwned=1">',
    )
    open_chat(page, site.url, chat["id"])
    send(page, "Say something.")
    answer = wait_answer(page)
    assert HOSTILE in answer.locator(".md").inner_text()  # shown as text
    assert title in page.locator("#chat-title").inner_text()
    page.click(f'.chat-item[data-id="{stored.id}"]')
    page.wait_for_selector(".msg.assistant")
    assert page.locator("#messages a").count() == 0  # rejected links are not even links
    for selector in ("#messages .msg", ".chat-item .title"):
        for element in page.locator(selector).all():
            element.hover()
    inert = page.evaluate(
        """() => ({
        pwned: window.pwned,
        scripts: document.querySelectorAll('#messages script, #chat-list script').length,
        frames: document.querySelectorAll('iframe, img:not(.brand img)').length,
        handlers: [...document.querySelectorAll('#messages *, #chat-list *')]
          .filter(el => [...el.attributes].some(a => a.name.startsWith('on'))).length,
        jsLinks: [...document.querySelectorAll('a')]
          .filter(a => (a.getAttribute('href') || '').toLowerCase().includes('javascript')).length,
      })"""
    )
    assert inert == {"pwned": None, "scripts": 0, "frames": 0, "handlers": 0, "jsLinks": 0}


def test_a_chat_started_in_the_cli_shows_up(page: Any, site: Site) -> None:
    env = {**os.environ, "LLM4ALL_HOME": str(site.home), "LLM4ALL_MODELS": str(REAL_MODELS_DIR)}
    res = subprocess.run(
        [sys.executable, "-m", "llm4all", "chat", "-m", FAST, "--temp", "0", "-n", "12"],
        input="Which planet is red?\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    page.reload()
    page.wait_for_selector("body[data-ready]")
    item = page.locator(".chat-item", has_text="Which planet is red?")
    item.click()
    page.wait_for_selector(".msg.assistant")
    assert page.locator(".msg.user .text").inner_text() == "Which planet is red?"
    assert page.locator(".msg.assistant .md").inner_text().strip()
    chat_id = current_chat_id(page)
    stored = site.api("GET", f"/chats/{chat_id}")
    assert stored["messages"][1]["content"].strip() == res.stdout.strip()  # what the CLI printed
    send(page, "And which one is blue?")  # continue it here
    wait_answer(page, 2)
    roles = [m["role"] for m in site.api("GET", f"/chats/{chat_id}")["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]


def test_rate_regenerate_and_edit(page: Any, site: Site) -> None:
    send(page, "Tell me a fact.")
    answer = wait_answer(page)
    first_id = answer.get_attribute("data-id")
    answer.hover()
    answer.get_by_role("button", name="Good answer").click()
    page.wait_for_selector('.msg.assistant button[aria-pressed="true"]')
    chat_id = current_chat_id(page)
    assert site.api("GET", f"/chats/{chat_id}")["messages"][1]["rating"] == 1
    page.locator(".msg.assistant").hover()
    page.get_by_role("button", name="Bad answer").click()
    page.wait_for_selector('.msg.assistant button[aria-label="Bad answer"][aria-pressed="true"]')
    assert page.locator('.msg.assistant button[aria-pressed="true"]').count() == 1
    assert site.api("GET", f"/chats/{chat_id}")["messages"][1]["rating"] == -1
    page.locator(".msg.assistant").hover()
    page.get_by_role("button", name="Regenerate").click()
    page.wait_for_function(
        f"() => {{ const a = document.querySelector('.msg.assistant:not(.streaming)');"
        f" return a && a.dataset.id && a.dataset.id !== '{first_id}'; }}",
        timeout=ANSWER_TIMEOUT,
    )
    wait_answer(page)
    messages = site.api("GET", f"/chats/{chat_id}")["messages"]
    assert len(messages) == 2 and messages[1]["id"] != first_id and messages[1]["rating"] is None
    page.locator(".msg.user").hover()
    page.get_by_role("button", name="Edit and resend").click()
    page.fill(".edit-area", "Tell me another fact.")
    page.get_by_role("button", name="Save & send").click()
    page.wait_for_function(
        "() => document.querySelector('.msg.user .text')?.textContent === 'Tell me another fact.'"
        " && document.querySelector('.msg.assistant:not(.streaming)')",
        timeout=ANSWER_TIMEOUT,
    )
    wait_answer(page)
    messages = site.api("GET", f"/chats/{chat_id}")["messages"]
    assert (messages[0]["role"], messages[0]["content"]) == ("user", "Tell me another fact.")
    assert len(messages) == 2


def test_chat_list_search_rename_delete(page: Any, site: Site) -> None:
    eggs = site.store.create_chat(title="Breakfast")
    site.store.add_message(eggs.id, "user", "How long do I boil a flumpet egg?")
    trip = site.store.create_chat(title="Weekend trip")
    open_page(page, site.url)
    page.fill("#search", "flumpet")
    page.wait_for_function(f"() => !document.querySelector('.chat-item[data-id=\"{trip.id}\"]')")
    assert page.locator(".chat-item").count() == 1
    page.fill("#search", "")
    item = page.locator(f'.chat-item[data-id="{trip.id}"]')
    item.wait_for()
    item.hover()
    item.get_by_role("button", name="Rename").click()
    page.fill(".chat-item input.rename", "Trip to Turin")
    page.press(".chat-item input.rename", "Enter")
    page.wait_for_function(
        f"() => document.querySelector('.chat-item[data-id=\"{trip.id}\"]')?.textContent.includes('Trip to Turin')"
    )
    assert site.api("GET", f"/chats/{trip.id}")["title"] == "Trip to Turin"
    item = page.locator(f'.chat-item[data-id="{trip.id}"]')
    item.hover()
    item.get_by_role("button", name="Delete").click()
    item.get_by_role("button", name="Click again to delete").click()
    item.wait_for(state="detached")
    assert httpx.get(f"{site.url}/api/chats/{trip.id}").status_code == 404


def test_settings_panel_sets_the_system_prompt_and_parameters(page: Any, site: Site) -> None:
    page.click("#open-settings")
    # The panel is filled once the collections have been fetched: wait for it.
    page.wait_for_selector("#settings-panel:not([hidden]) [data-param]")
    specs = site.api("GET", "/params")
    for spec in specs:  # the form is built from GenerationParams, field by field
        assert page.locator(f'[data-param="{spec["name"]}"]').count() == 1, spec["name"]
    assert page.get_attribute("#param-temperature", "placeholder") == "0"  # the server's default
    page.fill("#system-prompt", "You answer in one word.")
    page.fill("#param-max_tokens", "5")
    page.fill("#param-top_k", "20")
    page.click("#save-settings")
    page.wait_for_selector(".toast:not([hidden])")
    chat_id = current_chat_id(page)
    chat = site.api("GET", f"/chats/{chat_id}")
    assert chat["system_prompt"] == "You answer in one word."
    assert chat["params"] == {"max_tokens": 5, "top_k": 20}
    send(page, "Name a fruit.")
    wait_answer(page)
    assert site.api("GET", f"/chats/{chat_id}")["messages"][1]["completion_tokens"] <= 5
    page.click("text=Reset to defaults")
    assert page.input_value("#param-max_tokens") == ""
    page.click("#save-settings")
    wait_until(lambda: site.api("GET", f"/chats/{chat_id}")["params"] == {})


def test_pull_a_catalog_model_from_the_page(page: Any, site: Site) -> None:
    page.click("#open-models")
    card = page.locator('.model-card[data-model="tiny-test"]')
    card.wait_for()
    facts = card.locator(".facts").inner_text()
    assert "Size" in facts and "RAM" in facts and "Licence" in facts and "MIT" in facts
    installed_fast = page.locator(f'.model-card[data-model="{FAST}"]')
    assert "Apache-2.0" in installed_fast.inner_text()
    card.get_by_role("button", name="Download").click()
    page.wait_for_selector(".toast:has-text('tiny-test is ready')", timeout=60_000)
    pulls = site.api("GET", "/models/pulls")
    tiny = next(p for p in pulls if p["name"] == "tiny-test")
    assert tiny["status"] == "done" and tiny["completed"] == tiny["total"] > 0
    page.wait_for_selector('.model-card[data-model="tiny-test"] >> text=Use')
    assert "tiny-test" in page.locator("#model-select option").all_inner_texts()


def test_cancel_a_pull_and_resume_it(page: Any, site: Site) -> None:
    page.click("#open-models")
    card = page.locator('.model-card[data-model="slow-test"]')
    card.get_by_role("button", name="Download").click()
    page.wait_for_function(
        "() => document.querySelector('.model-card[data-model=\"slow-test\"] progress')?.value > 0"
    )
    assert "slow-test.gguf" in card.locator(".pull-status").inner_text()
    card.get_by_role("button", name="Cancel").click()
    card.locator('.pull[data-status="cancelled"]').wait_for()
    status = card.locator(".pull-status").inner_text()
    assert status.startswith("Cancelled at") and "%" in status and "kept" in status
    assert not card.get_by_role("button", name="Cancel").is_visible()
    page.wait_for_selector(".toast:has-text('slow-test: download cancelled')")
    job = next(p for p in site.api("GET", "/models/pulls") if p["name"] == "slow-test")
    assert job["status"] == "cancelled" and 0 < job["completed"] < job["total"]
    part = site.server.app.state.manager.store.root / "slow-test.gguf.part"
    assert part.stat().st_size == job["completed"]
    site.files.rate = None  # the rest at full speed
    try:
        card.get_by_role("button", name="Resume").click()
        page.wait_for_selector(".toast:has-text('slow-test is ready')", timeout=60_000)
    finally:
        site.files.rate = SLOW_RATE
    ranges = [r.range for r in site.files.requests if r.path == "/slow-test.gguf"]
    assert ranges == [None, f"bytes={job['completed']}-"]  # resumed, not started over
    page.wait_for_selector('.model-card[data-model="slow-test"] >> text=Use')
    assert not part.exists()


def test_a_server_with_an_api_key_asks_for_it(browser: Any, site: Site) -> None:
    settings = fast_settings(
        site.server.settings.models_dir,
        api_key=API_KEY,
        preload=False,
        defaults=GenerationParams(temperature=0, max_tokens=12),
    )
    with running(settings) as locked:
        assert httpx.get(f"{locked.url}/api/chats").status_code == 401
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(60_000)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(locked.url)
        tab.locator("#key-dialog[open]").wait_for()  # the page loaded; the API asked for the key
        assert tab.locator("#key-dialog[open]").count() == 1  # one dialog for all refused calls
        tab.fill("#api-key", "not-the-key")
        tab.click("#save-key")
        tab.locator("#key-dialog[open] >> text=The server refused that key.").wait_for()
        tab.fill("#api-key", API_KEY)
        tab.click("#save-key")
        tab.wait_for_selector("body[data-ready]")
        assert tab.locator("#key-dialog[open]").count() == 0
        assert tab.evaluate("localStorage.getItem('llm4all-api-key')") == API_KEY
        send(tab, "Hello!")  # the answer streams with the key too
        answer = wait_answer(tab)
        assert FAST in answer.locator(".stats").inner_text()
        tab.reload()
        tab.wait_for_selector("body[data-ready]")  # the key is remembered: no dialog
        assert tab.locator("#key-dialog[open]").count() == 0
        assert tab.locator(".msg.assistant").count() == 1
        context.close()
    assert not errors, errors


def test_choose_collections_and_see_the_cited_sources(
    page: Any, site: Site, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    hostile_name = "office <img src=x onerror=window.pwned=1>.md"  # file names are untrusted too
    (notes / hostile_name).write_text(
        "# Office\n\nThe code of the blue door in the Lyon office is 4711.\n", encoding="utf-8"
    )
    docs = LocalDocs(tmp_path / "localdocs.db")
    docs.add("office notes", [notes])
    docs.index("office notes")
    site.server.app.state.localdocs = docs
    try:
        page.click("#open-settings")
        box = page.locator('[data-collection="office notes"]')
        box.check()
        page.click("#save-settings")
        page.wait_for_selector("#docs-badge:not([hidden])")
        assert "office notes" in page.locator("#docs-badge").inner_text()
        chat_id = current_chat_id(page)
        assert site.api("GET", f"/chats/{chat_id}")["collections"] == ["office notes"]
        send(page, "What is the code of the blue door?")
        answer = wait_answer(page)
        sources = answer.locator("details.sources")
        assert "Sources (1)" in sources.inner_text()
        sources.locator("summary").click()
        assert hostile_name in sources.inner_text() and "4711" in sources.inner_text()
        assert sources.locator("img").count() == 0 and page.evaluate("window.pwned") is None
    finally:
        site.server.app.state.localdocs = None
        docs.close()


def test_add_a_folder_from_the_page_and_ask_it(page: Any, site: Site, tmp_path: Path) -> None:
    trip = tmp_path / "trip"
    trip.mkdir()
    (trip / "plan.md").write_text(
        "# Trip\n\nThe ferry to Suomenlinna leaves from the Market Square at 9:20.\n",
        encoding="utf-8",
    )
    docs = LocalDocs(tmp_path / "localdocs.db")
    site.server.app.state.localdocs = docs
    try:
        page.click("#open-settings")
        page.wait_for_selector("#add-folder")
        page.fill("#add-folder-name", "trip")
        page.fill("#add-folder-path", str(tmp_path / "no-such-folder"))
        page.click("#add-folder")
        page.wait_for_selector("#add-folder-note.error")
        assert "is not a folder on the server" in page.inner_text("#add-folder-note")
        page.fill("#add-folder-path", str(trip))
        page.click("#add-folder")
        row = page.locator('label.collection:has([data-collection="trip"])')
        row.wait_for()
        assert page.is_checked('[data-collection="trip"]')  # a new collection is chosen at once
        page.wait_for_selector('label.collection[data-state="done"]:has([data-collection="trip"])')
        assert "1 files" in row.inner_text()
        page.click("#save-settings")
        page.wait_for_selector("#docs-badge:not([hidden])")
        assert site.api("GET", f"/chats/{current_chat_id(page)}")["collections"] == ["trip"]
        send(page, "When does the ferry to Suomenlinna leave?")
        sources = wait_answer(page).locator("details.sources")
        sources.locator("summary").click()
        assert "plan.md" in sources.inner_text() and "9:20" in sources.inner_text()
    finally:
        site.server.app.state.indexing.wait(30)
        site.server.app.state.localdocs = None
        docs.close()


CODE_ANSWER = """Here is one way, with a **dictionary**:

```python
from collections import Counter

def word_counts(path):
    with open(path, encoding="utf-8") as f:
        return Counter(f.read().split())
```

| Approach | Memory | Speed |
|----------|-------:|-------|
| `Counter` | one pass | fast |
| `dict.get` loop | one pass | a bit slower |

- `split()` with no argument splits on any whitespace.
- Use `most_common(10)` for the top ten.
"""


def _seed_sidebar(store: ChatStore) -> None:
    for title in ("Trip to Turin", "Tomato soup for four", "Fix a flaky unit test"):
        chat = store.create_chat(title=title, model=FAST)
        store.add_message(chat.id, "user", title)


def test_answers_render_markdown_with_code_copy_and_tables(page: Any, site: Site) -> None:
    chat = site.store.create_chat(model=FAST)
    site.store.add_message(chat.id, "user", "How do I count the words in a file with Python?")
    site.store.add_message(
        chat.id,
        "assistant",
        CODE_ANSWER,
        model=FAST,
        completion_tokens=97,
        tokens_per_second=41.3,
        time_to_first_token=0.12,
        finish_reason="stop",
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_chat(page, site.url, chat.id)
    block = page.locator(".code-block")
    assert block.locator(".code-head").inner_text().startswith("python")
    assert block.locator("span.kn").first.inner_text() == "from"  # highlighted by Pygments
    assert page.locator(".md table td").first.inner_text() == "Counter"
    assert page.locator(".md th.align-right, .md td.align-right").count() == 3
    block.get_by_role("button", name="Copy code").click()
    page.wait_for_selector(".copy-code:has-text('Copied')")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("from collections import Counter") and "most_common" not in copied


def test_light_and_dark_themes(page: Any, site: Site) -> None:
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark != light
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
    context = page.context.browser.new_context(color_scheme="dark")
    other = context.new_page()
    open_page(other, site.url)
    assert other.evaluate("document.documentElement.dataset.theme") == "dark"  # the system's
    context.close()


@pytest.mark.skipif(not os.environ.get("LLM4ALL_SCREENSHOTS"), reason="set LLM4ALL_SCREENSHOTS=1")
def test_screenshots_of_the_main_views(browser: Any, site: Site) -> None:
    """Saves docs/screenshots/*.png: a real answer from the best installed model."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _seed_sidebar(site.store)
    installed = {m["name"] for m in site.api("GET", "/models")["installed"]}
    model = DEFAULT_MODEL if DEFAULT_MODEL in installed else FAST
    chat_id = ""
    for theme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=theme)
        context.set_default_timeout(60_000)
        tab = context.new_page()
        if theme == "light":
            open_page(tab, site.url)
            tab.screenshot(path=SCREENSHOTS / "welcome-light.png")
            chat_id = site.api(
                "POST", "/chats", json={"model": model, "params": {"max_tokens": 400}}
            )["id"]
            open_chat(tab, site.url, chat_id)
            send(tab, "How do I count the words in a text file with Python? Keep it short.")
            wait_answer(tab)
        else:
            open_chat(tab, site.url, chat_id)
        tab.wait_for_selector(".msg.assistant")
        tab.mouse.move(0, 0)
        tab.evaluate("document.getElementById('scroller').scrollTop = 0")  # the question too
        tab.screenshot(path=SCREENSHOTS / f"chat-{theme}.png")
        if theme == "light":
            tab.click("#open-settings")
            tab.wait_for_selector("#settings-panel .settings-form")
            tab.screenshot(path=SCREENSHOTS / "settings-light.png")
        else:
            tab.click("#open-models")
            tab.wait_for_selector(".model-card")
            tab.screenshot(path=SCREENSHOTS / "models-dark.png")
        context.close()
