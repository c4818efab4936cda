"""The app factory: ``create_app(settings)`` returns a FastAPI app with all state on ``app.state``.

``app.state.settings`` is the :class:`ServerSettings`, ``app.state.manager``
the :class:`ModelManager`. The lifespan preloads the server's model, starts
the keep-alive reaper, and on shutdown unloads everything and closes what the
web UI opened (its chat store, LocalDocs). :func:`serve` runs the app with
uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

import llm4all
from llm4all.models import InstalledModel, remotes
from llm4all.models.remotes import Remote
from llm4all.server import chat, completions, embeddings, ui_api
from llm4all.server.errors import install_handlers, unknown_model
from llm4all.server.manager import ModelManager
from llm4all.server.schemas import ErrorResponse, ModelCard, ModelList
from llm4all.server.security import install_security
from llm4all.server.settings import ServerSettings

log = logging.getLogger(__name__)
router = APIRouter()


def _card(model: InstalledModel, manager: ModelManager) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.path.stat().st_mtime),
        "owned_by": "llm4all",
        "kind": model.kind,
        "loaded": manager.is_loaded(model.name),
        # vLLM's field: a client (another llm4all, as a remote) fits its chats into it
        "max_model_len": manager.settings.ctx if model.kind != "embedding" else None,
    }


def _remote_card(remote: Remote, manager: ModelManager) -> dict[str, Any]:
    """A registered remote: this server answers for it as a gateway."""
    return {
        "id": remote.name,
        "object": "model",
        "created": 0,
        "owned_by": "remote",
        "kind": remote.kind,
        "loaded": manager.is_loaded(remote.name),
    }


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> Any:
    """The installed models, and the registered remotes this server fronts."""
    manager: ModelManager = request.app.state.manager
    cards = [_card(m, manager) for m in manager.installed()]
    cards += [_remote_card(r, manager) for r in remotes.load().values()]
    listed = {c["id"] for c in cards}
    for loaded in manager.loaded():  # a model the server was started with from outside the store
        if loaded.name not in listed:
            listed.add(loaded.name)
            cards.append(
                {
                    "id": loaded.name,
                    "object": "model",
                    "created": int(loaded.loaded_at),
                    "owned_by": "llm4all",
                    "kind": loaded.kind,
                    "loaded": True,
                }
            )
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, request: Request) -> Any:
    """One installed model."""
    manager: ModelManager = request.app.state.manager
    remote = remotes.get(model_id)
    if remote is not None:
        return _remote_card(remote, manager)
    found = manager.store.find_installed(model_id)
    if found is None:
        raise unknown_model(model_id, manager.installed_names())
    return _card(found, manager)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness, and what each loaded model is doing."""
    manager: ModelManager = request.app.state.manager
    return {
        "status": "ok",
        "version": llm4all.__version__,
        "models": [m.stats() for m in manager.loaded()],
    }


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The OpenAI-compatible API as an ASGI app (see ``docs/server.md``)."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager: ModelManager = app.state.manager
        if settings.preload:
            loaded = await manager.acquire(settings.model, "chat")
            loaded.release()
        manager.start()
        app.state.share_flusher.start()  # sends shared chats while sharing is on
        try:
            yield
        finally:
            try:
                await asyncio.to_thread(app.state.share_flusher.stop)
                await manager.close()
            finally:
                await asyncio.to_thread(ui_api.close, app)  # it may wait for pulls to stop

    app = FastAPI(
        title="llm4all",
        version=llm4all.__version__,
        description="OpenAI-compatible API for local models (llama.cpp on CPU).",
        lifespan=lifespan,
        responses={"default": {"model": ErrorResponse, "description": "an OpenAI-style error"}},
    )
    app.state.settings = settings
    app.state.manager = ModelManager(settings)
    install_handlers(app)
    install_security(
        app,
        api_key=settings.api_key,
        max_body=settings.max_body,
        cors=settings.cors_origins,
        allowed_hosts=settings.allowed_hosts,
    )
    app.include_router(router)
    app.include_router(chat.router)
    app.include_router(completions.router)
    app.include_router(embeddings.router)
    ui_api.install(app)  # the web chat UI: / and /api/
    return app


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
