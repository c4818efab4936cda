"""``llm4all chat``: the terminal chat.

Answers stream and render as Markdown; Enter sends, Alt+Enter (or a line
ending in ``\\``) adds a new line, pasted text keeps its lines. Ctrl-C stops
an answer without leaving (what was said is kept); Ctrl-D leaves. Every
message is saved to the chat store as it happens, so a killed terminal loses
nothing and ``--continue`` picks the chat up again.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown

from llm4all.api import ChatSession, Model, merge_params
from llm4all.chat.template import Message
from llm4all.cli._common import err_console, load_model
from llm4all.cli.docs import docs_option, print_sources
from llm4all.cli.models import print_startup_tip
from llm4all.cli.options import (
    generation_options,
    generation_overrides,
    load_options,
    load_overrides,
)
from llm4all.errors import Llm4allError
from llm4all.params import GenerationParams
from llm4all.store import ChatStore, export_chat

HELP = """\
[bold]Commands[/bold]
  /help              this list
  /system [TEXT]     show or set the system prompt
  /reset             start a new chat (same model and system prompt)
  /model [NAME]      show the model or switch to another (the history stays)
  /params [k=v ...]  show or set sampling parameters, e.g. /params temperature=0.2 max_tokens=200
  /history           show the conversation so far
  /save [FILE]       save the chat as Markdown
  /exit              leave (or Ctrl-D)
[bold]Keys[/bold]  Enter sends · Alt+Enter or a trailing \\ adds a line · Ctrl-C stops an answer"""


@click.command("chat")
@click.option(
    "-m",
    "--model",
    "model_name",
    help="Model name, file name or path (default: the default model).",
)
@click.option("-s", "--system", help="System prompt.")
@click.option(
    "-c", "--continue", "resume_latest", is_flag=True, help="Continue the most recent chat."
)
@click.option(
    "--chat",
    "chat_id",
    metavar="ID",
    help="Continue the chat with this id (see `llm4all chats list`).",
)
@click.option("--no-save", is_flag=True, help="Do not save this chat.")
@click.option("--plain", is_flag=True, help="Print answers as plain text (no Markdown rendering).")
@docs_option
@generation_options
@load_options
def chat_command(
    model_name: str | None,
    system: str | None,
    resume_latest: bool,
    chat_id: str | None,
    no_save: bool,
    plain: bool,
    collections: tuple[str, ...],
    **kwargs: Any,
) -> None:
    """Chat with a model in the terminal."""
    overrides = generation_overrides(kwargs)
    load = load_overrides(kwargs)
    store = None if no_save else ChatStore()
    history: list[Message] = []
    stored_params: dict[str, Any] = {}
    if store is not None and (resume_latest or chat_id):
        chat = store.get_chat(chat_id) if chat_id else store.latest_chat()
        if chat is not None:
            chat_id = chat.id
            model_name = model_name or chat.model
            system = system if system is not None else chat.system_prompt
            stored_params = {k: v for k, v in chat.params.items() if k in _GEN_FIELDS}
            history = [
                Message("user" if m.role == "user" else "assistant", m.content)
                for m in store.messages(chat.id)
                if m.role in ("user", "assistant")
            ]
    elif chat_id:
        raise click.UsageError("--chat needs the chat store (drop --no-save)")
    model = load_model(model_name, load)
    if not model.has_chat_template:  # said once; see docs/cli.md, "Base models"
        err_console.print(
            f"{model.name} is a base model (no chat template): the chat is a plain "
            "### Human: / ### Assistant: transcript; `llm4all run` completes text as given",
            style="dim",
            markup=False,
        )
    print_startup_tip(model)  # the first time the default model runs here: a better one, once
    params = merge_params(merge_params(model.params, _tuple_stops(stored_params)), overrides)
    session = ChatSession(
        model,
        system_prompt=system,
        params=params,
        messages=history,
        store=store,
        chat_id=chat_id if history or chat_id else None,
        collections=collections,
    )
    TerminalChat(session, render_markdown=not plain and sys.stdout.isatty()).loop()


_GEN_FIELDS = {f.name for f in dataclasses.fields(GenerationParams)}


def _tuple_stops(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "stop": tuple(params["stop"])} if "stop" in params else params


class TerminalChat:
    """The read-answer loop and its slash commands."""

    def __init__(self, session: ChatSession, render_markdown: bool) -> None:
        self.session = session
        self.render_markdown = render_markdown
        self.out = Console(highlight=False)
        self.read = _line_reader()
        self.commands: dict[str, Callable[[str], bool]] = {
            "help": self.cmd_help,
            "system": self.cmd_system,
            "reset": self.cmd_reset,
            "model": self.cmd_model,
            "params": self.cmd_params,
            "history": self.cmd_history,
            "save": self.cmd_save,
            "exit": lambda _: False,
            "quit": lambda _: False,
        }

    def loop(self) -> None:
        s = self.session
        resumed = f", chat {s.chat_id} ({len(s.messages)} messages)" if s.chat_id else ""
        err_console.print(
            f"[dim]{s.model.name}{resumed} · /help for commands · Ctrl-D to leave[/dim]"
        )
        while True:
            try:
                text = self.read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not text.strip():
                continue
            if text.startswith("/"):
                name, _, arg = text[1:].partition(" ")
                handler = self.commands.get(name.strip().lower())
                if handler is None:
                    err_console.print(f"unknown command /{name}; /help lists them")
                    continue
                try:
                    if not handler(arg.strip()):
                        break
                except Llm4allError as exc:
                    err_console.print(f"[red]error:[/red] {exc}")
                continue
            try:
                self.answer(text)
            except Llm4allError as exc:
                err_console.print(f"[red]error:[/red] {exc}")

    def answer(self, text: str) -> None:
        response = self.session.send(text)
        try:
            if self.render_markdown:
                shown = ""
                with Live(
                    Markdown(""),
                    console=self.out,
                    refresh_per_second=12,
                    vertical_overflow="visible",
                ) as live:
                    for piece in response:
                        shown += piece
                        live.update(Markdown(shown))
            else:
                for piece in response:
                    self.out.out(piece, end="")
                self.out.out("")
        except KeyboardInterrupt:
            response.cancel()
            err_console.print("[dim]\\[stopped][/dim]")
        print_sources(response.sources)
        if self.session.dropped:
            err_console.print(
                f"[dim]({self.session.dropped} old messages no longer fit the context)[/dim]"
            )

    # -- commands: each returns False to leave the loop ------------------------------
    def cmd_help(self, _: str) -> bool:
        err_console.print(HELP)
        return True

    def cmd_system(self, arg: str) -> bool:
        s = self.session
        if not arg:
            err_console.print(s.system_prompt or "[dim](no system prompt)[/dim]")
            return True
        s.system_prompt = arg
        if s.store is not None and s.chat_id is not None:
            s.store.set_system_prompt(s.chat_id, arg)
        err_console.print("[dim]system prompt set[/dim]")
        return True

    def cmd_reset(self, _: str) -> bool:
        self.session.reset()
        err_console.print("[dim]new chat[/dim]")
        return True

    def cmd_model(self, arg: str) -> bool:
        s = self.session
        if not arg:
            err_console.print(f"{s.model.name} ({s.model.path})")
            return True
        new: Model = load_model(arg)
        s.model.close()
        s.model = new
        if s.store is not None and s.chat_id is not None:
            s.store.set_model(s.chat_id, new.name)
        err_console.print(f"[dim]now chatting with {new.name}[/dim]")
        return True

    def cmd_params(self, arg: str) -> bool:
        s = self.session
        if arg:
            changes = dict(_parse_assignment(item) for item in shlex.split(arg))
            s.params = merge_params(s.params, changes)
            if s.store is not None and s.chat_id is not None:
                s.store.set_params(s.chat_id, dataclasses.asdict(s.params))
        for key, value in dataclasses.asdict(s.params).items():
            err_console.print(f"  {key} = {value!r}")
        return True

    def cmd_history(self, _: str) -> bool:
        for m in self.session.history:
            err_console.print(f"[bold]{m.role}[/bold]: {m.content}")
        return True

    def cmd_save(self, arg: str) -> bool:
        s = self.session
        if s.store is None or s.chat_id is None:
            err_console.print("nothing saved yet (the chat is empty or --no-save is on)")
            return True
        chat = s.store.get_chat(s.chat_id)
        path = Path(arg or f"chat-{chat.id}.md").expanduser()
        path.write_text(export_chat(chat, s.store.messages(chat.id), "md"), encoding="utf-8")
        err_console.print(f"[dim]saved to {path}[/dim]")
        return True


def _parse_assignment(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise click.UsageError(f"expected key=value, got {item!r}")
    key = key.strip().replace("-", "_")
    field = next((f for f in dataclasses.fields(GenerationParams) if f.name == key), None)
    if field is None:
        raise click.UsageError(f"unknown parameter {key!r}")
    value: Any = raw
    if raw.lower() in ("none", "null", ""):
        value = None
    elif key == "stop":
        value = (raw,)
    elif isinstance(field.default, float):
        value = float(raw)
    elif isinstance(field.default, int) or key in ("max_tokens", "seed"):
        value = int(raw)
    return key, value


def _line_reader() -> Callable[[], str]:
    """A multi-line prompt on a terminal; plain line reading when input is piped."""
    if not sys.stdin.isatty():

        def read_piped() -> str:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line.rstrip("\n")

        return read_piped

    from prompt_toolkit import PromptSession
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.key_binding.key_processor import KeyPressEvent

    keys = KeyBindings()

    @keys.add("enter")
    def _submit(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        if buf.text.endswith("\\"):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @keys.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    session: PromptSession[str] = PromptSession(multiline=True, key_bindings=keys)
    return lambda: session.prompt("> ", prompt_continuation="… ")
