"""Loaded models: on demand, at most N at once (least recently used first out), idle unload.

A request names a model; :meth:`ModelManager.lease` resolves the name through
the model store, loads the model if needed (in a worker thread, once even when
many requests ask at the same moment) and hands out a :class:`Lease` that
keeps it loaded until the request is done. A chat model gets the runner its
engine offers (:meth:`Engine.runner <llm4all.engine.Engine.runner>`: llama.cpp's
continuous-batching scheduler, whose KV slots its concurrent requests share; a
pass-through runner for a remote endpoint); the manager never checks an
engine's class. An embedding model is loaded with ``embedding=True``. A name
a backend registered (a remote) resolves before the model store. When the cap is reached
the least recently used idle model is unloaded; a model idle for longer than
the keep-alive is unloaded by a background task. Loading refuses a model that
does not fit in RAM (after unloading idle ones to make room).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import psutil

from llm4all.api import Model
from llm4all.embeddings import Embedder, embedding_load_params
from llm4all.engine import ModelRef, footprint, resolve
from llm4all.engine.runner import Runner, RunnerStats
from llm4all.models import InstalledModel, ModelStore, read_metadata
from llm4all.models.store import names_a_path
from llm4all.params import LoadParams
from llm4all.server.errors import ApiError, busy, unknown_model
from llm4all.server.settings import EMBED_SEQS, ServerSettings

log = logging.getLogger(__name__)

Kind = Literal["chat", "embedding"]


@dataclass(eq=False)
class Loaded:
    """One model in memory, and who is using it."""

    name: str
    kind: Kind
    model: Model
    runner: Runner | None  # how concurrent requests reach a chat model (None: embeddings)
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    leases: int = 0
    memory: int = 0  # bytes it was estimated to take when loaded
    embedder: Embedder | None = None  # an embedding model's Embedder (prefixes, long texts)

    @property
    def scheduler(self) -> Runner | None:
        """The runner (its older name)."""
        return self.runner

    @property
    def key(self) -> tuple[str, Kind]:
        return (self.name, self.kind)

    def release(self) -> None:
        """Give back one lease (the model may unload once none is left)."""
        self.leases -= 1
        self.last_used = time.monotonic()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        self.model.close()

    def stats(self) -> dict[str, object]:
        s: RunnerStats | None = self.runner.stats() if self.runner else None
        return {
            "model": self.name,
            "kind": self.kind,
            "backend": self.model.info.backend,
            "device": self.model.info.device,  # "cpu", "CUDA (24/24 layers)", "remote http://…"
            "leases": self.leases,
            "slots": s.slots if s else 0,
            "running": s.running if s else 0,
            "waiting": s.waiting if s else 0,
            "steps": s.steps if s else 0,
        }


class ModelManager:
    """The models a server holds in memory. All methods run on the event loop."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_dir)
        self._loaded: dict[tuple[str, Kind], Loaded] = {}
        self._aliases: dict[tuple[str | None, Kind], tuple[str, Kind]] = {}
        self._loading: dict[tuple[str, Kind], asyncio.Lock] = {}
        self._evicting = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    # -- the store --------------------------------------------------------------------
    def installed(self) -> list[InstalledModel]:
        return self.store.installed()

    def installed_names(self) -> list[str]:
        return [m.name for m in self.installed()]

    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def is_loaded(self, name: str) -> bool:
        return any(key[0] == name for key in self._loaded)

    # -- leases -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lease(self, name: str | None, kind: Kind = "chat") -> AsyncIterator[Loaded]:
        """The loaded model for ``name`` (None: the server's model), kept loaded while held."""
        loaded = await self.acquire(name, kind)
        try:
            yield loaded
        finally:
            loaded.release()

    async def acquire(self, name: str | None, kind: Kind = "chat") -> Loaded:
        """Like :meth:`lease`, for holders that outlive one ``async with`` (streams)."""
        # A model loaded from outside the store is listed by its name: that name finds it too.
        key = self._aliases.get((name, kind)) or ((name, kind) if name is not None else None)
        loaded = self._loaded.get(key) if key else None
        if loaded is None:
            loaded = await self._load(name, kind)
        loaded.leases += 1
        loaded.last_used = time.monotonic()
        return loaded

    # -- loading ------------------------------------------------------------------------
    async def _load(self, name: str | None, kind: Kind) -> Loaded:
        requested = name if name is not None else self.settings.model
        if name is not None and name != self.settings.model and names_a_path(name):
            # A client names installed models; it must not make the server open its files.
            raise unknown_model(name, self.installed_names())
        ref = await asyncio.to_thread(
            resolve, requested, allow_download=False, models_dir=self.store.root
        )
        key: tuple[str, Kind] = (ref.name, kind)
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:  # one load per model, however many requests wait for it
            loaded = self._loaded.get(key)
            if loaded is None:
                self._refuse_embedding_as_chat(ref.name, kind)
                loaded = await self._load_fitting(ref, kind)
                self._loaded[key] = loaded
        self._aliases[(name, kind)] = key
        return loaded

    def _refuse_embedding_as_chat(self, name: str, kind: Kind) -> None:
        found = self.store.find_installed(name)
        if kind == "chat" and found is not None and found.kind == "embedding":
            raise ApiError(
                400,
                f"{name!r} is an embedding model; use it with /v1/embeddings",
                param="model",
                code="model_not_supported",
            )

    async def _load_fitting(self, ref: ModelRef, kind: Kind) -> Loaded:
        """Load, first making room: under the cap on models, and in RAM.

        What the load will take is estimated from the file's header first; a
        model that cannot fit even with every idle model unloaded is refused
        before anything is unloaded (an embedding request naming a chat model
        must not push the chat model out and then fail anyway).
        """
        load = self._load_params(ref, kind)
        needed = await asyncio.to_thread(self._estimate, ref, load)
        if self.settings.check_memory:
            self._refuse_unfitting(needed)
        while len(self._loaded) >= self.settings.max_loaded:
            if not await self._evict_one():
                raise busy(
                    f"{len(self._loaded)} models are loaded and busy; "
                    f"the server keeps at most {self.settings.max_loaded}",
                    5,
                    status=503,
                )
        while self.settings.check_memory and not self._fits(needed):
            if not await self._evict_one():
                self._refuse_unfitting(needed)  # what was idle is gone and it still does not fit
                break
        loaded = await asyncio.to_thread(self._load_now, ref, kind, load)
        loaded.memory = needed
        return loaded

    def _load_params(self, ref: ModelRef, kind: Kind) -> LoadParams:
        if kind == "chat":
            return self.settings.load_params(ref.name)
        if ref.path is None:  # a remote embeds on its side
            return LoadParams(embedding=True, check_memory=False)
        return embedding_load_params(
            ref.path,
            batch_tokens=self.settings.n_batch,
            max_sequences=EMBED_SEQS,
            n_threads=self.settings.n_threads,
            check_memory=self.settings.check_memory,
        )

    @staticmethod
    def _estimate(ref: ModelRef, load: LoadParams) -> int:
        if ref.path is None or not ref.path.is_file():  # a remote takes no memory here
            return 0
        return footprint.estimate(read_metadata(ref.path), load).total

    def _budget_left(self) -> int:
        """Bytes a new model may take: free RAM, and what is left of ``max_memory`` if set."""
        left: int = psutil.virtual_memory().available
        if self.settings.max_memory is not None:
            used = sum(m.memory for m in self._loaded.values())
            left = min(left, self.settings.max_memory - used)
        return left

    def _fits(self, needed: int) -> bool:
        return needed <= self._budget_left()

    def _refuse_unfitting(self, needed: int) -> None:
        """Raise :class:`InsufficientMemory` if ``needed`` does not fit even with idle models gone."""
        idle = sum(m.memory for m in self._loaded.values() if m.leases == 0)
        footprint.ensure_fits(needed, reclaimable=idle, available=self._budget_left())

    def _load_now(self, ref: ModelRef, kind: Kind, load: LoadParams) -> Loaded:
        t0 = time.perf_counter()
        # The estimate above checked RAM; Model's own check would count the file alone.
        load = dataclasses.replace(load, check_memory=False)
        backend = self.settings.backend if kind == "chat" else None
        options = self.settings.backend_options(ref.name) if backend is not None else None
        if options is not None:
            model = Model(ref, allow_download=False, backend=backend, options=options)
        else:
            model = Model(ref, allow_download=False, backend=backend, **vars(load))
        model.name = ref.name
        runner = embedder = None
        if kind == "chat":
            try:
                runner = model.engine.runner(max_queue=self.settings.max_queue)
            except BaseException:
                model.close()
                raise
        else:  # the same Embedder as in Python: task prefixes and long texts alike
            entry = model.entry
            embedder = Embedder.from_engine(
                model.engine,
                ref.name,
                dict(entry.prefixes) if entry else None,
                matryoshka=bool(entry and entry.matryoshka),
                path=ref.path,
            )
        log.info("loaded %s for %s in %.2f s", ref.name, kind, time.perf_counter() - t0)
        return Loaded(ref.name, kind, model, runner, embedder=embedder)

    async def _evict_one(self) -> bool:
        """Unload the least recently used model nobody is using; False if there is none."""
        async with self._evicting:
            idle = [m for m in self._loaded.values() if m.leases == 0]
            if not idle:
                return False
            victim = min(idle, key=lambda m: m.last_used)
            await self._unload(victim)
            return True

    async def _unload(self, loaded: Loaded) -> None:
        self._loaded.pop(loaded.key, None)
        self._aliases = {k: v for k, v in self._aliases.items() if v != loaded.key}
        await asyncio.to_thread(loaded.close)
        log.info("unloaded %s (%s)", loaded.name, loaded.kind)

    # -- keep-alive ------------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.keep_alive is not None and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(self.settings.keep_alive))

    async def _reap_forever(self, keep_alive: float) -> None:
        interval = min(max(keep_alive / 4, 0.05), 10.0)
        while True:
            await asyncio.sleep(interval)
            await self.reap(keep_alive)

    async def reap(self, keep_alive: float) -> None:
        """Unload every model idle for longer than ``keep_alive`` seconds."""
        now = time.monotonic()
        for loaded in list(self._loaded.values()):
            if loaded.leases == 0 and now - loaded.last_used > keep_alive:
                async with self._evicting:
                    if loaded.leases == 0 and loaded.key in self._loaded:
                        await self._unload(loaded)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for loaded in list(self._loaded.values()):
            await self._unload(loaded)
