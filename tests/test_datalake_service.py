"""The datalake service on both backends: a real uvicorn on 127.0.0.1 over real SQLite and a real
PostgreSQL (started by the session fixture; skipped without its binaries, a failure under CI)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import postgres_helpers
from conftest import in_ci
from datalake_helpers import GPT4ALL_OLD, TOKEN, LiveDatalake, chat_payload, running_datalake
from llm4all.cli import cli
from llm4all.data.formats import RowProblem, read_rows
from llm4all.datalake.service import ServiceSettings
from llm4all.datalake.storage import Storage
from llm4all.errors import StoreError
from postgres_helpers import INSTALL, PostgresServer, free_port, postgres_missing, running_postgres

_names = itertools.count()


def postgres_or_skip() -> None:
    """Skip the test when PostgreSQL's binaries are missing, naming the install; fail under CI."""
    missing = postgres_missing()
    if missing:
        if in_ci():
            pytest.fail(f"the PostgreSQL tests need PostgreSQL under CI: {missing} ({INSTALL})")
        pytest.skip(f"no PostgreSQL for the datalake tests: {missing} ({INSTALL})")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    postgres_or_skip()
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "datalake.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database(f"datalake_{next(_names)}")


def service_settings(database: str, **changes: Any) -> ServiceSettings:
    base: dict[str, Any] = {"admin_token": TOKEN, "rate_per_minute": 6000, "burst": 1000}
    return ServiceSettings(database=database, **{**base, **changes})


@pytest.fixture
def service(database: str) -> Iterator[LiveDatalake]:
    with running_datalake(service_settings(database)) as live:
        yield live


def send(live: LiveDatalake, payload: Any) -> httpx.Response:
    return httpx.post(live.ingest_url, json=payload, timeout=30)


def stats(live: LiveDatalake) -> dict[str, Any]:
    response = httpx.get(live.url + "/v1/admin/stats", headers=live.admin, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def exported(live: LiveDatalake, tmp_path: Path, fmt: str = "jsonl", **flags: bool) -> list[Any]:
    """The admin export, read back by the reader that ``llm4all data curate`` uses."""
    params = {"format": fmt, **{k: "true" for k, v in flags.items() if v}}
    response = httpx.get(
        live.url + "/v1/admin/export", params=params, headers=live.admin, timeout=30
    )
    assert response.status_code == 200, response.text
    path = tmp_path / f"export-{next(_names)}.{fmt}"
    path.write_bytes(response.content)
    rows = list(read_rows(path))
    assert not [r for r in rows if isinstance(r, RowProblem)]
    return rows


def test_outcomes_stored_unchanged_duplicate_replaced(service: LiveDatalake) -> None:
    first = send(service, chat_payload())
    assert first.status_code == 200 and first.json()["status"] == "stored"
    assert first.json()["ingest_id"] == "chat-1"
    assert send(service, chat_payload()).json()["status"] == "unchanged"
    # the same content under another ingest id of the same submitter: stored once
    again = send(service, chat_payload(ingest_id="chat-2")).json()
    assert again == {**first.json(), "status": "duplicate"}
    # re-sent with a changed rating: replaces the row
    assert send(service, chat_payload(rating="negative")).json()["status"] == "replaced"
    # another submitter's identical chat is theirs to keep (and withdraw)
    assert send(service, chat_payload(submitter="submitter-2")).json()["status"] == "stored"
    # GPT4All's own older client, as it posted
    assert send(service, GPT4ALL_OLD).json()["status"] == "stored"
    counts = stats(service)
    assert counts["chats"] == 3 and counts["submitters"] == 3
    assert (counts["positive"], counts["negative"], counts["edited"], counts["stopped"]) == (
        1,
        2,
        1,
        1,
    )
    assert counts["since_start"] == {"stored": 3, "unchanged": 1, "duplicate": 1, "replaced": 1}


def test_export_is_what_curation_reads_with_both_flags(
    service: LiveDatalake, tmp_path: Path
) -> None:
    send(service, chat_payload(ingest_id="good"))
    send(service, chat_payload(ingest_id="bad", answer="Lyon.", rating="negative"))
    edited = {**GPT4ALL_OLD, "submitter_id": "s3"}
    send(service, edited)
    send(service, chat_payload(submitter="copycat", ingest_id="good"))  # same content: once

    rows = exported(service, tmp_path)
    assert len(rows) == 3
    assert all(r.source in ("datalake/llm4all", "datalake/gpt4all-chat") for r in rows)
    assert not any("submitter-1" in json.dumps(r.to_dict()) for r in rows)  # pseudonyms only
    haiku = next(r for r in rows if r.source == "datalake/gpt4all-chat")
    assert haiku.messages[1]["rating"] == "negative" and haiku.messages[1]["stopped"] is True
    assert haiku.meta["attribution"] == "EliteHacker#42"
    assert haiku.meta["template"] == GPT4ALL_OLD["prompt_template"]

    positive = exported(service, tmp_path, only_positive=True)
    assert [r.response for r in positive] == ["Paris is the capital of France."]

    better = exported(service, tmp_path, "parquet", only_positive=True, edited_as_better=True)
    assert len(better) == 2
    fixed = next(r for r in better if r.source == "datalake/gpt4all-chat")
    assert fixed.response.startswith("Soft rain")
    assert fixed.messages[1]["original_content"] == "Rain on the window"
    assert fixed.messages[1]["original_rating"] == "negative"


def test_refusals_are_4xx_naming_the_problem_and_store_nothing(service: LiveDatalake) -> None:
    url = service.ingest_url
    not_json = httpx.post(url, content=b"{nope", timeout=30)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]
    assert httpx.post(url, json=[1], timeout=30).status_code == 400
    bad_role = chat_payload()
    bad_role["conversation"][1]["role"] = "bot"
    refused = send(service, bad_role)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_payload"
    assert error["problems"] == [
        "conversation[1].role: must be 'system', 'user' or 'assistant', not 'bot'"
    ]
    big = json.dumps(chat_payload(answer="x" * 1_100_000)).encode()
    assert httpx.post(url, content=big, timeout=30).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap counts the bytes as they come
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    assert httpx.post(url, content=chunks(), timeout=30).status_code == 413
    assert stats(service)["chats"] == 0


def test_rate_limit_is_per_submitter_with_retry_after(database: str) -> None:
    with running_datalake(service_settings(database, rate_per_minute=1, burst=3)) as live:
        codes = [send(live, chat_payload(ingest_id=f"c{i}", answer=f"{i}")) for i in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert int(codes[3].headers["Retry-After"]) >= 1
        assert codes[3].json()["error"]["code"] == "rate_limited"
        assert send(live, chat_payload(submitter="someone-else")).status_code == 200
        # a burst of shares never blocks a withdrawal
        withdrawn = httpx.post(
            live.url + "/v1/withdraw", json={"submitter_id": "submitter-1"}, timeout=30
        )
        assert withdrawn.json() == {"deleted": 3}


def test_admin_side_needs_the_token(database: str) -> None:
    with running_datalake(service_settings(database)) as live:
        stats_url = live.url + "/v1/admin/stats"
        assert httpx.get(stats_url, timeout=30).status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(TOKEN)}
        assert httpx.get(stats_url, headers=wrong, timeout=30).status_code == 401
        assert httpx.get(stats_url, headers=live.admin, timeout=30).status_code == 200
    with running_datalake(service_settings(database, admin_token=None)) as live:
        off = httpx.get(live.url + "/v1/admin/stats", headers=live.admin, timeout=30)
        assert off.status_code == 403 and "admin API is off" in off.json()["error"]["message"]
        assert httpx.get(live.url + "/v1/health", timeout=30).json()["status"] == "ok"


def test_withdraw_and_admin_delete_remove_only_that_submitter(
    service: LiveDatalake, tmp_path: Path
) -> None:
    for n in range(3):
        send(service, chat_payload(submitter="leaver", ingest_id=f"c{n}", answer=f"Answer {n}"))
    send(service, chat_payload(submitter="stayer"))
    send(service, chat_payload(submitter="admin-removed"))
    gone = httpx.post(service.url + "/v1/withdraw", json={"submitter_id": "leaver"}, timeout=30)
    assert gone.json() == {"deleted": 3}
    missing = httpx.post(service.url + "/v1/withdraw", json={}, timeout=30)
    assert missing.status_code == 422
    deleted = httpx.delete(
        service.url + "/v1/admin/submitters/admin-removed", headers=service.admin, timeout=30
    )
    assert deleted.json() == {"deleted": 1}
    assert [r.response for r in exported(service, tmp_path)] == ["Paris is the capital of France."]
    assert stats(service)["withdrawals"] == {"count": 2, "chats": 4}


def test_concurrent_resends_are_stored_exactly_once(service: LiveDatalake) -> None:
    same = [chat_payload(submitter="racer") for _ in range(20)]
    distinct = [
        chat_payload(submitter="racer", ingest_id=f"d{i}", answer=f"{i}") for i in range(20)
    ]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda p: client.post(service.ingest_url, json=p), same + distinct))
    assert {r.status_code for r in replies} == {200}
    outcomes = Counter(r.json()["status"] for r in replies)
    assert outcomes == {"stored": 21, "unchanged": 19}
    assert stats(service)["chats"] == 21


def test_cli_stats_export_delete(database: str, tmp_path: Path) -> None:
    with running_datalake(service_settings(database)) as live:
        send(live, chat_payload())
        send(live, {**GPT4ALL_OLD, "submitter_id": "other"})
    runner = CliRunner()
    counts = runner.invoke(cli, ["datalake", "stats", "--database", database])
    assert counts.exit_code == 0, counts.output
    assert json.loads(counts.output)["chats"] == 2
    out = tmp_path / "better.parquet"
    args = ["datalake", "export", "-d", database, "--format", "parquet", "-o", str(out)]
    done = runner.invoke(cli, [*args, "--edited-as-better"])
    assert done.exit_code == 0, done.output
    rows = list(read_rows(out))
    assert sorted(r.response for r in rows) == [
        "Paris is the capital of France.",
        GPT4ALL_OLD["conversation"][1]["edited_content"],  # type: ignore[index]
    ]
    jsonl = runner.invoke(cli, ["datalake", "export", "-d", database, "--only-positive"])
    assert jsonl.exit_code == 0 and len(jsonl.stdout.splitlines()) == 1
    gone = runner.invoke(cli, ["datalake", "delete", "-d", database, "--submitter", "other"])
    assert gone.exit_code == 0 and "deleted 1 chat of submitter other" in gone.output
    bad = runner.invoke(cli, ["datalake", "export", "-d", database, "--format", "parquet"])
    assert bad.exit_code == 2 and "-o FILE.parquet" in bad.output


def test_an_unreachable_database_is_one_line() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    run = subprocess.run(
        [sys.executable, "-m", "llm4all", "datalake", "stats", "--database", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: database postgresql://nobody@127.0.0.1")
    assert "cannot connect" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_postgres_outage_is_503_with_retry_after_then_recovers(postgres: PostgresServer) -> None:
    database = postgres.database(f"datalake_{next(_names)}")
    with running_datalake(service_settings(database)) as live:
        assert send(live, chat_payload(ingest_id="before")).status_code == 200
        postgres.stop()
        try:
            down = send(live, chat_payload(ingest_id="during", answer="Paris."))
            assert down.status_code == 503 and int(down.headers["Retry-After"]) >= 1
            assert down.json()["error"]["code"] == "database_unavailable"
            assert str(postgres.port) not in down.text  # the database's address stays private
            assert httpx.get(live.url + "/v1/health", timeout=30).status_code == 503
        finally:
            postgres.start()
        assert send(live, chat_payload(ingest_id="during", answer="Paris.")).json()["status"] == (
            "stored"
        )
        assert stats(live)["chats"] == 2


def _serve(database: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "llm4all", "datalake", "serve", "-d", database]
    return subprocess.Popen(
        [*command, "--port", str(port), "--rate", "6000", "--burst", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LLM4ALL_DATALAKE_ADMIN_TOKEN": TOKEN},
    )


@pytest.mark.slow
def test_kill_9_mid_load_then_restart_loses_and_doubles_nothing(database: str) -> None:
    """Clients retry until acknowledged; the service dies by SIGKILL while they send."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    payloads = [chat_payload(ingest_id=f"k{i}", answer=f"Answer {i}") for i in range(60)]
    acked: list[str] = []

    def client(part: list[dict[str, Any]]) -> None:
        with httpx.Client(timeout=10) as http:
            for payload in part:
                for _ in range(600):
                    try:
                        reply = http.post(url + "/v1/ingest/chat", json=payload)
                        if reply.status_code == 200:
                            acked.append(reply.json()["status"])
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)

    server = _serve(database, port)
    try:
        threads = [threading.Thread(target=client, args=(payloads[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert 20 <= len(acked) < 60  # killed mid-load
        server = _serve(database, port)
        for thread in threads:
            thread.join(120)
    finally:
        server.kill()
        server.wait(10)
    assert len(acked) == 60 and set(acked) <= {"stored", "unchanged"}
    with running_datalake(service_settings(database)) as live:
        assert stats(live)["chats"] == 60


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_fields = st.sampled_from(["submitter_id", "agent_id", "ingest_id", "conversation", "source"])


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=_json, field=_fields, whole=st.booleans())
def test_garbage_is_always_a_4xx_never_a_5xx(
    service: LiveDatalake, garbage: Any, field: str, whole: bool
) -> None:
    payload = garbage if whole else {**chat_payload(), field: garbage}
    reply = send(service, payload)
    assert reply.status_code in (200, 400, 422), reply.text
    assert "error" in reply.json() or reply.json()["status"] in ("stored", "replaced", "unchanged")


def _columns(database: str) -> dict[str, list[str]]:
    storage = Storage.open(database)
    try:
        conn = storage._conn()
        if storage.dialect.name == "sqlite":
            return {
                t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
                for t in ("chats", "withdrawals")
            }
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_name IN ('chats', 'withdrawals') ORDER BY table_name, ordinal_position"
        ).fetchall()
        found: dict[str, list[str]] = {}
        for table, column in rows:
            found.setdefault(table, []).append(column)
        return found
    finally:
        storage.close()


def test_both_backends_get_the_same_schema(postgres: PostgresServer, tmp_path: Path) -> None:
    on_sqlite = _columns(str(tmp_path / "datalake.db"))
    assert on_sqlite == _columns(postgres.database(f"datalake_{next(_names)}"))
    assert "content_hash" in on_sqlite["chats"]


def test_a_database_from_a_newer_llm4all_is_refused(database: str) -> None:
    storage = Storage.open(database)
    conn = storage._conn()
    if storage.dialect.name == "sqlite":
        conn.execute("PRAGMA user_version = 99")
    else:
        conn.execute("UPDATE datalake_schema SET version = 99")
    storage.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Storage.open(database)


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_postgresql_its_tests_skip_or_fail_under_ci(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_helpers, "PG_BIN", Path("/nonexistent"))
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome) as stopped:
        postgres_or_skip()
    said = str(stopped.value)
    assert "/nonexistent/initdb is not installed" in said
    assert "apt-get install postgresql-15" in said
    assert ("need PostgreSQL under CI" in said) == bool(ci)


def test_a_broken_database_is_a_500_naming_no_path(database: str) -> None:
    with running_datalake(service_settings(database)) as live:
        assert send(live, chat_payload()).status_code == 200
        storage = Storage.open(database)
        storage._conn().execute("DROP TABLE chats")
        storage.close()
        broken = send(live, chat_payload(answer="Paris."))
        assert broken.status_code == 500 and broken.json()["error"]["code"] == "storage_error"
        assert database.rsplit("/", 1)[-1] not in broken.text  # neither file nor database name
