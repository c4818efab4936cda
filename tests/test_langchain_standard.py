"""LangChain's own standard test suites (``langchain-tests``) on llm4all's LangChain classes.

Real local models: SmolLM2-135M for the chat suite, all-MiniLM-L6-v2 for
embeddings and a real LocalDocs index for the retriever; the default model
(Qwen2.5-Coder-0.5B) for the tests that need a model to choose a tool's
arguments well. Models are loaded once per session (conftest's fixtures)
and passed in as ``client``, so each test's fresh LangChain object costs nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from conftest import FAST_MODEL
from llm4all.integrations.langchain import (
    ChatLlm4all,
    Llm4allEmbeddings,
    LocalDocsRetriever,
)


class TestChatLlm4allUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlm4all]:
        return ChatLlm4all

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": FAST_MODEL}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"LLM4ALL_BASE_URL": "http://127.0.0.1:4891/v1", "LLM4ALL_API_KEY": "secret"},
            {"model": FAST_MODEL},
            {"base_url": "http://127.0.0.1:4891/v1", "api_key": "secret"},
        )


class TestLlm4allEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Llm4allEmbeddings]:
        return Llm4allEmbeddings


class _ChatSuite(ChatModelIntegrationTests):
    """The chat suite on the model that ``_model`` loads (once per session)."""

    loaded: Any = None

    @property
    def chat_model_class(self) -> type[ChatLlm4all]:
        return ChatLlm4all

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": self.loaded.name, "client": self.loaded}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True


#: What SmolLM2-135M is too small for: JSON mode (only "an object" is enforced;
#: the keys come from the prompt) and choosing on its own to call a tool.
SMALL_MODEL_LIMITS = ("test_json_mode", "test_agent_loop")


@pytest.mark.slow
class TestChatLlm4allIntegration(_ChatSuite):
    """The whole chat suite on SmolLM2-135M (tool calls and structured output grammar-bound)."""

    @pytest.fixture(autouse=True)
    def _model(self, fast_model: Any) -> None:
        type(self).loaded = fast_model

    @pytest.mark.xfail(
        reason="SmolLM2-135M nests the keys the prompt asks for wrongly; JSON mode only "
        "enforces an object (passes on the default model)",
        strict=True,
    )
    def test_json_mode(self, model: Any) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason="SmolLM2-135M does not choose to call a tool by itself (tool_choice='auto'); "
        "passes on the default model",
        strict=True,
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)


@pytest.mark.slow
@pytest.mark.default_model
class TestChatLlm4allDefaultModelIntegration(_ChatSuite):
    """On the default model (Qwen2.5-Coder-0.5B): what SmolLM2 cannot do, and tool calling."""

    only = (
        *SMALL_MODEL_LIMITS,
        "test_tool_calling",
        "test_tool_calling_async",
        "test_tool_choice",
        "test_invoke_with_model_override",
        "test_ainvoke_with_model_override",
        "test_stream_with_model_override",
        "test_astream_with_model_override",
    )

    @property
    def model_override_value(self) -> str:
        """A call may name another model: SmolLM2 answers it, loaded on first use."""
        return FAST_MODEL

    @pytest.fixture(autouse=True)
    def _model(self, default_model: Any, request: pytest.FixtureRequest) -> None:
        if request.node.originalname not in self.only:
            pytest.skip("runs on SmolLM2 in TestChatLlm4allIntegration")
        type(self).loaded = default_model


@pytest.mark.slow
class TestLlm4allEmbeddingsIntegration(EmbeddingsIntegrationTests):
    loaded: Any = None

    @pytest.fixture(autouse=True)
    def _embedder(self, embedder: Any) -> None:
        type(self).loaded = embedder

    @property
    def embeddings_class(self) -> type[Llm4allEmbeddings]:
        return Llm4allEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"client": self.loaded}


@pytest.fixture(scope="session")
def indexed_notes(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """A LocalDocs collection "notes" of five small files, indexed with MiniLM."""
    from llm4all.localdocs import LocalDocs

    folder = tmp_path_factory.mktemp("notes")
    for name, text in {
        "cats.md": "# Cats\n\nThe office cat is called Biscuit. Cats sleep most of the day.",
        "dogs.md": "# Dogs\n\nThe neighbour's dog is called Rex. Dogs like long walks.",
        "birds.txt": "Parrots can live for eighty years. Our parrot is called Polly.",
        "fish.txt": "Goldfish remember things for months, not seconds.",
        "pets.md": "# Pets\n\nPets need food, water and a vet once a year.",
    }.items():
        (folder / name).write_text(text)
    docs = LocalDocs(
        tmp_path_factory.mktemp("db") / "localdocs.db", embedder_factory=lambda _: embedder
    )
    docs.add("notes", [folder])
    docs.index("notes")
    yield docs
    docs.close()


@pytest.mark.slow
class TestLocalDocsRetrieverIntegration(RetrieversIntegrationTests):
    localdocs: Any = None

    @pytest.fixture(autouse=True)
    def _docs(self, indexed_notes: Any) -> None:
        type(self).localdocs = indexed_notes

    @property
    def retriever_constructor(self) -> type[LocalDocsRetriever]:
        return LocalDocsRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"collections": ["notes"], "localdocs": self.localdocs}

    @property
    def retriever_query_example(self) -> str:
        return "What are the pets called?"
