"""Per-model defaults on every path: the catalog's system prompt, and base models.

The catalog's system prompt for a model reaches the prompt of every answer
that brings none (``run``, ``chat``, the Python API, the compat API, the
OpenAI endpoints and the web UI); a user's own system prompt wins. Each path
is checked on the prompt the model was given: its token count equals that of
the expected messages rendered with the model's template. The catalog is the
shipped one with SmolLM2's ``system_prompt`` set, given through
``LLM4ALL_CATALOG`` (so it reaches subprocesses too).

A base model (the real Gemma 3 270M) completes text as given on ``run``, the
API, ``/v1/completions`` and the compat API's ``generate``; its chats are the
plain transcript, ending where the next turn would begin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from llm4all import GenerationParams, Model
from llm4all.answer import prepare
from llm4all.chat.template import PLAIN_TEMPLATE, Message
from llm4all.gpt4all import GPT4All
from llm4all.models.catalog import CatalogError, load_catalog, parse_catalog
from llm4all.models.gguf import read_metadata
from llm4all.models.kinds import kind_from_metadata
from llm4all.models.store import describe_metadata
from llm4all.server import ServerSettings, create_app
from llm4all.store import ChatStore
from model_helpers import write_tiny_gguf
from server_helpers import FAST, fast_settings, running

MARK = "You are Zorp, the test assistant of the catalog."
MINE = "Answer in French."
QUESTION = "Name a colour."
BASE_TEXT = "The capital of France is Paris. The capital of Italy is"
CLI = [sys.executable, "-m", "llm4all"]


def llm4all(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=180)


@pytest.fixture
def catalog_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shipped catalog with SmolLM2's default system prompt set to :data:`MARK`."""
    data = json.loads(resources.files("llm4all.models").joinpath("catalog.json").read_text())
    for entry in data["models"]:
        if entry["name"] == FAST:
            entry["system_prompt"] = MARK
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("LLM4ALL_CATALOG", str(path))
    return MARK


@pytest.fixture(scope="module")
def smol(fast_model_path: Path) -> Iterator[Model]:
    """SmolLM2, only to count the tokens of expected prompts."""
    with Model(fast_model_path, n_ctx=1024) as model:
        yield model


@pytest.fixture(scope="module")
def base(base_model_path: Path) -> Iterator[Model]:
    with Model(base_model_path, n_ctx=512, params=GenerationParams(temperature=0)) as model:
        yield model


def tokens_of(model: Model, system: str | None, question: str = QUESTION) -> int:
    """The prompt tokens of one question after ``system`` in the model's own chat format."""
    head = [Message("system", system)] if system else []
    return len(model.chat_tokens([*head, Message("user", question)]))


# -- the one place that decides -------------------------------------------------------------------
def test_the_users_system_prompt_wins_then_the_catalogs_then_the_templates(
    catalog_prompt: str, fast_model_path: Path, smol: Model
) -> None:
    with Model(fast_model_path, n_ctx=1024, params=GenerationParams(temperature=0)) as model:
        assert model.default_system_prompt == MARK
        assert model.system_prompt_for(None) == MARK
        assert model.system_prompt_for(MINE) == MINE
        assert model.system_prompt_for("") is None  # "" asks for none: the template's own
        asked = [Message("user", QUESTION)]
        assert model.with_system_prompt(asked)[0] == Message("system", MARK)
        assert model.with_system_prompt([Message("system", MINE), *asked])[0].content == MINE

        # Model.generate/stream (the path of `run`) and ChatSession (the path of `chat`)
        def prompt_tokens(response: Any) -> int:
            response.text()
            return int(response.completion.usage.prompt_tokens)

        assert prompt_tokens(model.stream(QUESTION, max_tokens=1)) == tokens_of(smol, MARK)
        mine = model.stream(QUESTION, system_prompt=MINE, max_tokens=1)
        assert prompt_tokens(mine) == tokens_of(smol, MINE)
        chat = model.chat(max_tokens=1)
        assert chat.history[0] == Message("system", MARK)
        assert prompt_tokens(chat.send(QUESTION)) == tokens_of(smol, MARK)
        assert model.chat(MINE).history[0] == Message("system", MINE)


ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def test_the_shipped_default_model_prompt_ends_with_worked_examples_kept_out_of_tool_calls() -> (
    None
):
    entry = load_catalog().default("chat")
    assert entry.system_prompt and entry.tools_system_prompt
    assert entry.system_prompt.startswith(entry.tools_system_prompt + "\n\nExamples:\n")
    assert entry.system_prompt.count("\nInstruction: ") == entry.system_prompt.count("\nResponse: ")
    assert entry.to_dict()["tools_system_prompt"] == entry.tools_system_prompt


def test_worked_examples_are_shown_in_chats_and_left_out_when_tools_are_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_model_path: Path
) -> None:
    data = json.loads(resources.files("llm4all.models").joinpath("catalog.json").read_text())
    for entry in data["models"]:
        if entry["name"] == FAST:
            entry["system_prompt"] = MARK
            entry["examples"] = [["Name a fruit.", "Apple."]]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("LLM4ALL_CATALOG", str(path))
    shown = f"{MARK}\n\nExamples:\nInstruction: Name a fruit.\nResponse: Apple."
    with Model(fast_model_path, n_ctx=1024) as model:
        assert model.system_prompt_for(None) == shown
        asked = [Message("user", QUESTION)]
        assert prepare(model, asked).messages[0] == Message("system", shown)
        with_tools = prepare(model, asked, tools=[ADD_TOOL]).messages[0]
        assert with_tools == Message("system", MARK)
        # a stored chat keeps the default it started with: it is swapped the same way
        stored = [Message("system", shown), *asked]
        assert prepare(model, stored, tools=[ADD_TOOL]).messages[0] == Message("system", MARK)
        # the user's own prompt is never changed
        mine = [Message("system", MINE), *asked]
        assert prepare(model, mine, tools=[ADD_TOOL]).messages[0] == Message("system", MINE)


def test_malformed_catalog_examples_are_one_clear_error() -> None:
    raw = json.loads(resources.files("llm4all.models").joinpath("catalog.json").read_text())
    entry = next(e for e in raw["models"] if e.get("examples"))
    entry["examples"] = [["only an instruction"]]
    with pytest.raises(CatalogError, match="bad catalog entry"):
        parse_catalog(json.dumps(raw))


def test_without_a_catalog_prompt_the_template_keeps_its_own(fast_model: Model) -> None:
    assert fast_model.default_system_prompt is None
    assert fast_model.system_prompt_for(None) is None
    rendered = fast_model.render(fast_model.with_system_prompt([Message("user", "Hi")]))
    assert "You are a helpful AI assistant named SmolLM" in rendered  # SmolLM2's template default


# -- the CLI --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_uses_the_catalog_prompt_unless_given_one(
    catalog_prompt: str, fast_model_path: Path, smol: Model
) -> None:
    common = ["run", "-m", str(fast_model_path), "--temp", "0", "-n", "1", "--json", QUESTION]
    res = llm4all(*common)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["usage"]["prompt_tokens"] == tokens_of(smol, MARK)
    res = llm4all(*common, "-s", MINE)
    assert json.loads(res.stdout)["usage"]["prompt_tokens"] == tokens_of(smol, MINE)


@pytest.mark.slow
def test_chat_uses_the_catalog_prompt(
    catalog_prompt: str, fast_model_path: Path, smol: Model, isolated_home: Path
) -> None:
    res = llm4all("chat", "-m", str(fast_model_path), "--temp", "0", "-n", "1", stdin=QUESTION)
    assert res.returncode == 0, res.stderr
    assert "base model" not in res.stderr
    store = ChatStore(isolated_home / "llm4all.db")
    [chat] = store.list_chats()
    assert chat.system_prompt == MARK
    answer = store.messages(chat.id)[-1]
    assert answer.role == "assistant" and answer.prompt_tokens == tokens_of(smol, MARK)


# -- the server -----------------------------------------------------------------------------------
def test_openai_chat_gets_the_catalog_prompt_when_the_request_has_none(
    catalog_prompt: str, fast_model_path: Path, smol: Model
) -> None:
    with running(fast_settings(fast_model_path.parent)) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")

        def prompt_tokens(messages: list[Any]) -> int:
            done = client.chat.completions.create(
                model=FAST, messages=messages, max_tokens=1, temperature=0
            )
            assert done.usage is not None
            return done.usage.prompt_tokens

        question = {"role": "user", "content": QUESTION}
        assert prompt_tokens([question]) == tokens_of(smol, MARK)
        assert prompt_tokens([{"role": "system", "content": MINE}, question]) == tokens_of(
            smol, MINE
        )


def test_web_ui_chat_gets_the_catalog_prompt(
    catalog_prompt: str, fast_model_path: Path, smol: Model
) -> None:
    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as client:
        params = {"max_tokens": 1, "temperature": 0}
        for system, expected in ((None, MARK), (MINE, MINE)):
            chat = client.post("/api/chats", json={"system_prompt": system, "params": params})
            chat_id = chat.json()["id"]
            with client.stream(
                "POST", f"/api/chats/{chat_id}/messages", json={"content": QUESTION}
            ) as response:
                done = [e for e in _events(response) if e.get("type") == "done"]
            assert done[0]["message"]["prompt_tokens"] == tokens_of(smol, expected)


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


# -- the compat API -------------------------------------------------------------------------------
@pytest.mark.slow
def test_compat_paths_get_the_catalog_prompt(
    catalog_prompt: str, fast_model_path: Path, smol: Model, capsys: pytest.CaptureFixture[str]
) -> None:
    g4a = GPT4All(fast_model_path.name, model_path=fast_model_path.parent, allow_download=False)
    try:
        with g4a.chat_session():
            assert g4a.current_chat_session == [{"role": "system", "content": MARK}]
            g4a.generate(QUESTION, max_tokens=1, temp=0)
            assert g4a.last_usage is not None
            assert g4a.last_usage.prompt_tokens == tokens_of(smol, MARK)
        with g4a.chat_session(MINE):
            g4a.generate(QUESTION, max_tokens=1, temp=0)
            assert g4a.last_usage.prompt_tokens == tokens_of(smol, MINE)

        g4a.open()  # the nomic-era conversation
        g4a.prompt(QUESTION)
        assert g4a.last_usage.prompt_tokens == tokens_of(smol, MARK)

        capsys.readouterr()
        g4a.chat_completion([{"role": "user", "content": QUESTION}], n_predict=1, streaming=False)
        assert capsys.readouterr().out.startswith(MARK + "\n### Instruction: \n")
        own = [{"role": "system", "content": MINE}, {"role": "user", "content": QUESTION}]
        g4a.chat_completion(own, n_predict=1, streaming=False)
        assert MARK not in capsys.readouterr().out
    finally:
        g4a.close()


# -- base models ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("architecture", "template", "values", "file_name", "kind"),
    [
        ("bert", None, {}, "minilm.gguf", "embedding"),
        ("qwen2", "{{ x }}", {"qwen2.pooling_type": 1}, "gte.gguf", "embedding"),
        ("llama", None, {"general.name": "SmolLM2 Instruct"}, "smol.gguf", "base"),
        ("qwen2", "{{ x }}", {"general.name": "Qwen2.5 0.5B Base"}, "q.gguf", "base"),
        ("qwen2", "{{ x }}", {"general.finetune": "base"}, "q.gguf", "base"),
        ("qwen2", "{{ x }}", {}, "qwen2.5-0.5b-base-q4_0.gguf", "base"),
        ("qwen2", "{{ x }}", {"general.finetune": "Instruct"}, "q.gguf", "chat"),
        ("llama", "{{ x }}", {"general.name": "Database helper"}, "db.gguf", "chat"),
    ],
)
def test_the_kind_of_a_file_outside_the_catalog(
    architecture: str, template: str | None, values: dict[str, object], file_name: str, kind: str
) -> None:
    assert kind_from_metadata(architecture, template, values, file_name) == kind


def test_a_sideloaded_file_is_described_with_its_kind(tmp_path: Path) -> None:
    chat = write_tiny_gguf(tmp_path / "tiny.gguf")
    plain = write_tiny_gguf(tmp_path / "plain.gguf", chat_template=None)
    assert describe_metadata(read_metadata(chat))["kind"] == "chat"
    assert describe_metadata(read_metadata(plain))["kind"] == "base"


def test_a_base_model_completes_text_as_given(base: Model) -> None:
    assert base.kind == "base" and not base.has_chat_template
    response = base.stream(BASE_TEXT, max_tokens=4)
    text = response.text()
    assert response.completion is not None
    assert response.completion.usage.prompt_tokens == len(base.tokenize(BASE_TEXT))  # no template
    assert "Rome" in text
    # Its chats are the plain transcript, and the answer ends where the next turn begins.
    assert base.render([Message("user", "Hi")]) == "### Human:\nHi\n\n### Assistant:\n"
    chat = base.chat(max_tokens=60)
    answer = chat.send("What is the capital of France?").text()
    assert "### " not in answer
    assert base.chat_tokens(chat.history) == base.chat_tokens(chat.history, template=PLAIN_TEMPLATE)


@pytest.mark.slow
def test_run_and_chat_with_a_base_model(base_model_path: Path, base: Model) -> None:
    res = llm4all("run", "-m", "gemma-3-270m", BASE_TEXT, "--temp", "0", "-n", "4", "--json")
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)
    assert done["usage"]["prompt_tokens"] == len(base.tokenize(BASE_TEXT))
    assert "Rome" in done["text"]

    res = llm4all(
        "chat", "-m", "gemma-3-270m", "--temp", "0", "-n", "40", "--no-save",
        stdin="What is the capital of France?\n",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("is a base model") == 1
    assert "### " not in res.stdout


@pytest.mark.slow
def test_the_server_with_a_base_model(base_model_path: Path, base: Model) -> None:
    settings = fast_settings(base_model_path.parent, model="gemma-3-270m")
    with running(settings) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        done = client.completions.create(
            model="gemma-3-270m", prompt=BASE_TEXT, max_tokens=4, temperature=0
        )
        assert "Rome" in done.choices[0].text
        assert done.usage is not None
        assert done.usage.prompt_tokens == len(base.tokenize(BASE_TEXT))

        question = "What is the capital of France?"
        chat = client.chat.completions.create(
            model="gemma-3-270m",
            messages=[{"role": "user", "content": question}],
            max_tokens=60,
            temperature=0,
        )
        assert chat.usage is not None
        as_transcript = base.chat_tokens([Message("user", question)])
        assert chat.usage.prompt_tokens == len(as_transcript)
        assert "### " not in (chat.choices[0].message.content or "")


@pytest.mark.slow
def test_the_compat_api_with_a_base_model(base_model_path: Path) -> None:
    g4a = GPT4All(base_model_path.name, model_path=base_model_path.parent, allow_download=False)
    try:
        assert "Rome" in g4a.generate(BASE_TEXT, max_tokens=4, temp=0)  # raw, as 2.8.2 did
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with g4a.chat_session():  # 2.8.2: a model with no template defaults to Alpaca
                answer = g4a.generate("What is the capital of France?", max_tokens=60, temp=0)
        assert [w.category for w in caught] == [DeprecationWarning]
        assert "Alpaca" in str(caught[0].message)
        assert "### " not in answer
    finally:
        g4a.close()


# -- sampling defaults ----------------------------------------------------------------------------
#: The catalog's sampling for SmolLM2 in these tests; temperature 0 makes every answer greedy,
#: so a path that applies it answers with the greedy words whatever its seed.
SAMPLING = {"temperature": 0.0, "min_p": 0.3, "top_k": 7}
WARM: dict[str, Any] = {"temperature": 1.5, "min_p": 0.0, "top_k": 0}


@pytest.fixture
def catalog_sampling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """The shipped catalog with SmolLM2's ``sampling`` set to :data:`SAMPLING`."""
    data = json.loads(resources.files("llm4all.models").joinpath("catalog.json").read_text())
    for entry in data["models"]:
        if entry["name"] == FAST:
            entry["sampling"] = SAMPLING
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("LLM4ALL_CATALOG", str(path))
    return SAMPLING


def _knobs(params: GenerationParams) -> dict[str, float]:
    return {k: getattr(params, k) for k in SAMPLING}


def test_a_bad_sampling_knob_in_the_catalog_is_refused() -> None:
    from llm4all.models.catalog import CatalogError, parse_catalog

    data = json.loads(resources.files("llm4all.models").joinpath("catalog.json").read_text())
    data["models"][0]["sampling"] = {"temprature": 0.5}
    with pytest.raises(CatalogError, match="sampling knob 'temprature'"):
        parse_catalog(json.dumps(data))


def test_the_catalogs_sampling_is_the_models_default_and_a_users_value_wins(
    catalog_sampling: dict[str, float], fast_model_path: Path
) -> None:
    from llm4all import answer
    from llm4all.server.generation import choice_params
    from llm4all.server.ui_chat import chat_params

    with Model(fast_model_path, n_ctx=1024) as model:
        assert model.default_sampling == SAMPLING
        assert _knobs(model.params) == SAMPLING  # Model.generate/stream/chat, run and chat
        asked = [Message("user", QUESTION)]
        assert _knobs(answer.prepare(model, asked).params) == SAMPLING
        chosen = answer.prepare(model, asked, params=model.params.replace(min_p=0.1)).params
        assert chosen.min_p == 0.1 and chosen.top_k == 7
        assert model.chat(min_p=0.2).params.min_p == 0.2

        # the server: a request (or a stored web chat) that omits a knob gets the catalog's
        settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
        [p] = choice_params(settings, {}, 1, max_tokens=None, model=model)
        assert _knobs(p) == SAMPLING
        [p] = choice_params(settings, {"top_k": 3}, 1, max_tokens=None, model=model)
        assert (p.top_k, p.min_p) == (3, 0.3)
        assert _knobs(chat_params(settings, {"min_p": None}, model)) == SAMPLING
        assert chat_params(settings, {"min_p": 0.2}, model).min_p == 0.2
        # a server started with --min-p keeps it
        admin = settings.replace(defaults=GenerationParams(min_p=0.2))
        [p] = choice_params(admin, {}, 1, max_tokens=None, model=model)
        assert (p.min_p, p.top_k) == (0.2, 7)

    with Model(fast_model_path, n_ctx=256, params=GenerationParams(top_k=5)) as model:
        assert model.params.top_k == 5 and model.params.min_p == 0.05  # given whole: it wins


def test_every_path_samples_with_the_catalogs_defaults(
    catalog_sampling: dict[str, float], fast_model_path: Path
) -> None:
    """Real answers: with the catalog's temperature 0, seeds 1 and 2 give the greedy words."""
    with Model(fast_model_path, n_ctx=1024) as model:
        greedy = model.generate(QUESTION, max_tokens=8, temperature=0)
        assert model.generate(QUESTION, max_tokens=8, seed=1) == greedy
        assert model.chat(max_tokens=8, seed=2).send(QUESTION).text() == greedy
        warm = model.generate(QUESTION, max_tokens=8, seed=1, **WARM)
        assert warm != greedy  # a user's own values win

    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as client:
        question = {"role": "user", "content": QUESTION}
        for seed in (1, 2):
            body = {"model": FAST, "messages": [question], "max_tokens": 8, "seed": seed}
            reply = client.post("/v1/chat/completions", json=body).json()
            assert reply["choices"][0]["message"]["content"] == greedy
        body = {"model": FAST, "messages": [question], "max_tokens": 8, "seed": 1, **WARM}
        reply = client.post("/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"]["content"] == warm

    g4a = GPT4All(fast_model_path.name, model_path=fast_model_path.parent, allow_download=False)
    try:
        with g4a.chat_session():
            assert g4a.generate(QUESTION, max_tokens=8) == greedy  # 2.x's temp 0.7 left alone
        with g4a.chat_session():
            assert g4a.generate(QUESTION, max_tokens=8, temp=1.5, top_k=0) != greedy
    finally:
        g4a.close()


@pytest.mark.slow
def test_run_samples_with_the_catalogs_defaults(
    catalog_sampling: dict[str, float], fast_model_path: Path
) -> None:
    common = ["run", "-m", str(fast_model_path), "-n", "8", QUESTION]
    greedy = llm4all(*common, "--temp", "0")
    assert greedy.returncode == 0, greedy.stderr
    assert llm4all(*common, "--seed", "3").stdout == greedy.stdout
    assert llm4all(*common, "--seed", "3", "--temp", "1.5", "--top-k", "0").stdout != greedy.stdout


# -- the web UI's settings form -----------------------------------------------------------------
def test_the_settings_forms_defaults_are_the_chat_models(
    catalog_sampling: dict[str, float], fast_model_path: Path
) -> None:
    """The form's placeholders ("Reset to defaults") show what an answer of that model uses."""
    from llm4all.server.manager import ModelManager
    from llm4all.server.ui_models import model_param_specs

    def defaults(settings: ServerSettings, name: str | None) -> dict[str, Any]:
        specs = model_param_specs(ModelManager(settings), name)
        return {s["name"]: s["default"] for s in specs if s["name"] in SAMPLING}

    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    assert defaults(settings, FAST) == SAMPLING
    assert defaults(settings, None) == SAMPLING  # the server's model
    generic = _knobs(GenerationParams())
    assert defaults(settings, "not-in-the-catalog") == generic
    admin = settings.replace(defaults=GenerationParams(min_p=0.2))  # serve --min-p 0.2 keeps it
    assert defaults(admin, FAST) == {**SAMPLING, "min_p": 0.2}


def test_the_settings_form_asks_the_server_for_the_chat_models_defaults(
    catalog_sampling: dict[str, float], fast_model_path: Path
) -> None:
    """web/settings.js asks GET /api/params?model=NAME when the settings panel opens."""
    settings = ServerSettings(model=FAST, preload=False, models_dir=fast_model_path.parent)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:4891") as client:
        specs = client.get("/api/params", params={"model": FAST}).json()
        assert {s["name"]: s["default"] for s in specs if s["name"] in SAMPLING} == SAMPLING
