"""Sharing chats with the datalake, the client side: opt-in, preview, scrubbing, the queue.

Every test sends to a real HTTP server on 127.0.0.1 (:class:`share_helpers.Recorder`,
which counts every request it gets) from a real chat store; the CLI runs through
click's runner or as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from llm4all.cli.share import share_group
from llm4all.datalake import client
from llm4all.datalake.payload import PayloadError, parse_payload
from llm4all.datalake.queue import BACKOFF_BASE_S, ShareQueue, backoff
from llm4all.datalake.scrub import Findings, document_names, scrub_text
from llm4all.errors import InvalidParameter
from llm4all.store import ChatStore
from share_helpers import (
    MODEL,
    SECRET_EMAIL,
    SECRET_PATH,
    SECRET_PHONE,
    Recorder,
    rated_chat,
    recording,
)


@pytest.fixture
def store(isolated_home: Path) -> ChatStore:
    return ChatStore()


@pytest.fixture
def recorder() -> Recorder:
    with recording() as server:
        yield server


def opt_in(store: ChatStore, endpoint: str, name: str | None = None) -> None:
    client.update_settings(store, enabled=True, endpoint=endpoint, attribution=name)


def cli(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(share_group, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_llm4all(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"LLM4ALL_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "llm4all", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- off by default: nothing leaves ------------------------------------------------------------------
def test_opted_out_nothing_is_ever_sent(store: ChatStore, recorder: Recorder) -> None:
    chat = rated_chat(store)
    assert client.load_settings(store).enabled is False
    # An endpoint alone is no consent: still off.
    client.update_settings(store, endpoint=recorder.url)
    with pytest.raises(client.SharingOff, match="sharing is off"):
        client.share_chat(store, chat.id)
    assert client.flush(store, force=True).sent == []
    with pytest.raises(client.SharingOff):
        cli("chat", chat.id)
    assert cli("flush")[0] == 0
    preview = client.build_preview(store, chat.id)  # a preview is allowed: it sends nothing
    assert json.loads(preview.body)["conversation"]

    # Queued while on, then switched off before it could go: withdrawn, never sent.
    client.update_settings(store, enabled=True, endpoint="http://127.0.0.1:9")  # nothing there
    assert client.share_chat(store, chat.id).state == "queued"
    assert cli("off")[0] == 0
    with ShareQueue(store.path) as queue:
        assert queue.counts()["withdrawn"] == 1
    client.update_settings(store, endpoint=recorder.url)
    assert client.flush(store, force=True).sent == []
    assert recorder.requests == []


def test_opted_out_cli_refuses_in_one_line(store: ChatStore, isolated_home: Path) -> None:
    chat = rated_chat(store)
    done = run_llm4all("share", "chat", chat.id, home=isolated_home)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: sharing is off (`llm4all share on` turns it on); nothing was sent"
    ]


def test_the_endpoint_starts_as_a_placeholder_that_reaches_nothing(store: ChatStore) -> None:
    chat = rated_chat(store)
    assert cli("on", "--yes")[0] == 0
    settings = client.load_settings(store)
    assert settings.enabled and not settings.configured
    assert settings.endpoint.endswith(".invalid")  # RFC 2606: resolves nowhere
    outcome = client.share_chat(store, chat.id)
    assert outcome.state == "queued" and "no datalake endpoint is set" in outcome.message
    code, out, _ = cli("status")
    assert code == 0 and "endpoint:    not set (nothing can be sent)" in out
    with pytest.raises(client.SharingOff, match="no datalake endpoint"):
        cli("withdraw", "--yes")


def test_on_shows_the_notice_and_asks(store: ChatStore, recorder: Recorder) -> None:
    code, _, err = cli("on", "--endpoint", recorder.url, input="n\n")
    assert code != 0 and "public training data" in err
    assert client.load_settings(store).enabled is False
    code, _, err = cli("on", "--endpoint", recorder.url, "--name", " Ada  L. ", input="y\n")
    assert code == 0
    settings = client.load_settings(store)
    assert (settings.enabled, settings.attribution, settings.endpoint) == (
        True,
        "Ada L.",
        recorder.url,
    )
    code, out, _ = cli("status", "--json")
    status = json.loads(out)
    assert status["settings"]["enabled"] is True
    assert status["settings"]["ingest_url"] == recorder.url + "/v1/ingest/chat"
    with pytest.raises(InvalidParameter, match="endpoint"):  # not http(s): refused
        cli("on", "--endpoint", "ftp://x", "--yes")


# -- what is sent ----------------------------------------------------------------------------------
def test_the_preview_is_exactly_the_body_sent(
    store: ChatStore, recorder: Recorder, fast_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = store.path.parent / "models"
    models.mkdir()
    (models / fast_model_path.name).symlink_to(fast_model_path)
    monkeypatch.setenv("LLM4ALL_MODELS", str(models))
    chat = rated_chat(store)
    opt_in(store, recorder.url, "Ada")
    code, previewed, _ = cli("chat", chat.id[:6], "--preview")
    assert code == 0 and recorder.requests == []
    assert cli("chat", chat.id)[0] == 0
    (request,) = recorder.requests
    assert (request.method, request.path) == ("POST", "/v1/ingest/chat")
    assert request.body.decode() == previewed.rstrip("\n")

    sent = request.json()
    settings = client.load_settings(store)
    assert sent["source"] == "llm4all" and sent["agent_id"] == MODEL
    assert sent["submitter_id"] == settings.submitter_id
    assert sent["ingest_id"] == client.ingest_id_for(settings.submitter_id or "", chat.id)
    assert sent["attribution"] == "Ada"
    assert "<|im_start|>" in sent["chat_template"]  # SmolLM2's own template, from its file
    roles = [m["role"] for m in sent["conversation"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    first, second = sent["conversation"][2], sent["conversation"][4]
    assert (first["rating"], first["stopped"], first["edited_content"]) == (
        "positive",
        False,
        "Your review says 4 % [1].",
    )
    assert (second["rating"], second["stopped"]) == ("negative", True)
    assert "edited_content" not in second and "rating" not in sent["conversation"][1]
    assert (
        parse_payload(request.body).content_hash()
        == client.build_preview(store, chat.id).content_hash
    )


def test_scrubbing_is_shown_in_the_preview_and_sent_as_shown(
    store: ChatStore, recorder: Recorder
) -> None:
    chat = rated_chat(store)
    opt_in(store, recorder.url)
    code, previewed, err = cli("chat", chat.id, "--preview", "--scrub")
    assert code == 0
    for secret in (SECRET_EMAIL, SECRET_PHONE, SECRET_PATH, "salary-review-2026"):
        assert secret not in previewed
    for placeholder in ("[email]", "[phone]", "[document]"):
        assert placeholder in previewed
    assert "scrubbed: 2 document names, 1 e-mail address, 1 phone number" in err
    unscrubbed = client.build_preview(store, chat.id).body
    assert SECRET_EMAIL in unscrubbed and SECRET_PATH in unscrubbed
    assert cli("chat", chat.id, "--scrub")[0] == 0
    assert recorder.requests[0].body.decode() == previewed.rstrip("\n")


def test_a_chat_that_is_no_training_data_is_refused_naming_why(store: ChatStore) -> None:
    chat = store.create_chat(model=MODEL)
    store.add_message(chat.id, "user", "Hello?")
    with pytest.raises(PayloadError, match="has no assistant answer"):
        client.build_preview(store, chat.id)


# -- the queue -------------------------------------------------------------------------------------
def test_an_unchanged_chat_is_never_sent_twice_and_a_changed_one_replaces_it(
    store: ChatStore, recorder: Recorder
) -> None:
    chat = rated_chat(store)
    opt_in(store, recorder.url)
    assert client.share_chat(store, chat.id).state == "sent"
    assert client.share_chat(store, chat.id).state == "unchanged"
    assert client.flush(store, force=True).sent == []
    assert len(recorder.requests) == 1
    answer = store.messages(chat.id)[1]
    store.rate_message(answer.id, -1)  # changed: sent again, under the same ingest id
    assert client.share_chat(store, chat.id).state == "sent"
    first, second = recorder.bodies()
    assert first["ingest_id"] == second["ingest_id"]
    assert second["conversation"][2]["rating"] == "negative"
    store.rate_message(answer.id, 1)  # back to what the service first got: still new to it
    assert client.share_chat(store, chat.id).state == "sent"
    assert len(recorder.requests) == 3


def test_offline_the_chat_waits_and_retries_with_backoff(store: ChatStore) -> None:
    chat = rated_chat(store)
    with recording() as down:
        port = down.port
    opt_in(store, f"http://127.0.0.1:{port}")  # nothing listens there now
    before = time.time()
    outcome = client.share_chat(store, chat.id)
    assert outcome.state == "queued" and "cannot reach" in outcome.message
    with ShareQueue(store.path) as queue:
        item = queue.get(chat.id)
        assert item is not None and item.attempts == 1 and item.state == "pending"
        assert item.next_attempt >= before + BACKOFF_BASE_S / 2
    assert client.flush(store).sent == []  # not due yet: no request at all
    with recording(answers=[503, 429], headers={"Retry-After": "600"}) as recorder:
        client.update_settings(store, endpoint=recorder.url)
        report = client.flush(store, force=True)
        assert report.failed and report.sent == []
        with ShareQueue(store.path) as queue:
            item = queue.get(chat.id)
            assert item is not None and item.attempts == 2
        report = client.flush(store, force=True)  # 429 with Retry-After: 600
        with ShareQueue(store.path) as queue:
            item = queue.get(chat.id)
            assert item is not None and item.next_attempt >= time.time() + 590
        assert client.flush(store).sent == []  # waits, as the service asked
        assert client.flush(store, force=True).sent == [chat.id]  # a user's flush does not
        assert len(recorder.requests) == 3
    with ShareQueue(store.path) as queue:
        item = queue.get(chat.id)
        assert item is not None and item.state == "sent" and item.attempts == 0


def test_a_refused_payload_is_not_retried(store: ChatStore) -> None:
    chat = rated_chat(store)
    with recording(status=422) as recorder:
        opt_in(store, recorder.url)
        outcome = client.share_chat(store, chat.id)
        assert outcome.state == "refused" and "422 scripted 422" in outcome.message
        assert client.flush(store, force=True).sent == []
        assert len(recorder.requests) == 1
        code, _, err = cli("chat", chat.id)  # sharing it again is a new try
        assert code == 1 and "refused by the datalake" in err
        assert len(recorder.requests) == 2


def test_two_senders_at_once_send_each_chat_once(store: ChatStore) -> None:
    with recording(delay=0.2) as recorder:
        opt_in(store, recorder.url)
        chats = [rated_chat(store, f"chat {i}") for i in range(4)]
        for chat in chats:
            assert client.share_chat(store, chat.id, send=False).state == "queued"
        reports: list[client.FlushReport] = []

        def sender() -> None:
            with ChatStore(store.path) as own:
                reports.append(client.flush(own, force=True))

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(c for r in reports for c in r.sent) == sorted(c.id for c in chats)
        assert len(recorder.requests) == 4


def test_backoff_doubles_and_is_capped() -> None:
    import random

    rng = random.Random(0)
    waits = [backoff(n, rng) for n in (1, 2, 3, 30)]
    assert BACKOFF_BASE_S / 2 <= waits[0] <= BACKOFF_BASE_S
    assert 2 * BACKOFF_BASE_S / 2 <= waits[1] <= 2 * BACKOFF_BASE_S
    assert waits[3] <= 6 * 3600


# -- suggested better answers ---------------------------------------------------------------------
def test_rate_and_suggest_a_better_answer_from_the_cli(store: ChatStore) -> None:
    chat = rated_chat(store)
    answer = store.messages(chat.id)[1]
    assert cli("suggest", answer.id, "-", input="A better one.\n")[0] == 0
    assert store.get_message(answer.id).edited_content == "A better one.\n"
    assert cli("suggest", answer.id, "--clear")[0] == 0
    assert store.get_message(answer.id).edited_content is None
    assert cli("suggest", answer.id)[0] != 0  # neither text nor --clear
    assert cli("rate", answer.id, "bad")[0] == 0
    assert store.get_message(answer.id).rating == -1
    assert cli("rate", answer.id, "none")[0] == 0
    assert store.get_message(answer.id).rating is None
    with pytest.raises(InvalidParameter, match="message_id"):
        cli("rate", store.messages(chat.id)[0].id, "good")  # a question is not an answer


# -- scrubbing, as pure functions ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail ada@example.org now", "Mail [email] now"),
        ("call +44 20 7946 0958 or 555-123-4567", "call [phone] or [phone]"),
        ("tel:+14155552671", "tel:[phone]"),
        ("see /home/ada/notes/pay.txt.", "see [path]."),
        ("open C:\\Users\\Ada\\pay.docx", "open [path]"),
        ("in ~/secret", "in [path]"),
        # what must stay: dates, addresses, versions, sums, URLs, fractions, code
        ("on 2026-12-02 at 12:30", "on 2026-12-02 at 12:30"),
        ("ping 192.168.1.10 v1.2.3", "ping 192.168.1.10 v1.2.3"),
        ("x = 1234567; y = 10 20 30", "x = 1234567; y = 10 20 30"),
        ("https://example.com/a/b and/or 1/2", "https://example.com/a/b and/or 1/2"),
    ],
)
def test_scrub_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_document_names_are_scrubbed_in_every_form() -> None:
    names = document_names([{"path": "/n/Pay Review.pdf", "title": "ab"}])
    assert names == ["/n/Pay Review.pdf", "Pay Review.pdf", "Pay Review"]  # "ab": too short
    findings = Findings()
    text = scrub_text("From Pay Review.pdf (/n/Pay Review.pdf): pay review says", names, findings)
    assert text == "From [document] ([document]): [document] says"
    assert findings.summary() == "3 document names"


def test_a_send_to_nowhere_is_one_result_not_an_exception() -> None:
    with httpx.Client(timeout=2) as http:
        result = client.post_payload(http, "http://127.0.0.1:9/v1/ingest/chat", "{}")
    assert not result.ok and not result.refused and "cannot reach" in result.message
