"""``llm4all chat``: the terminal chat.

Answers stream and render as Markdown; Enter sends, Alt+Enter (or a line
ending in ``\\``) adds a new line, pasted text keeps its lines. Ctrl-C stops
an answer without leaving (what was said is kept); Ctrl-D leaves. Every
message is saved to the chat store as it happens, and an answer while it
streams (see :mod:`llm4all.store.answers`), so ``kill -9`` loses at most its
last half second, and ``--continue`` picks the chat up again, showing its
last turns.

MCP tools (see :mod:`llm4all.cli.mcp_tools`): with servers configured, their
tools are offered; each call is shown as it happens, a ``confirm`` tool is
asked about first, and the calls and results are saved with the chat (as
:mod:`llm4all.mcp.history` records) so ``--continue`` shows them and the model
sees them again. ``/tools`` lists the tools and what each may do.

Signals stop an answer cooperatively: the handler only asks the answer to
stop before its next token (no exception lands in the middle of a decode or
of a screen update), the answer is saved with its real stats, and SIGTERM or
SIGHUP (the terminal was closed) then leave with status 128 + the signal's
number. A second Ctrl-C interrupts at once (a long prompt still being read).
Text from the model or the user is never read as Rich markup.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from llm4all.api import ChatSession, Model, Response, merge_params
from llm4all.chat.template import Message
from llm4all.cli._common import err_console, load_model
from llm4all.cli.docs import docs_option, print_sources
from llm4all.cli.mcp_tools import (
    LiveText,
    ToolConsole,
    call_line,
    describe_tools,
    mcp_options,
    open_tools,
    shorten,
    tool_flags,
)
from llm4all.cli.models import print_startup_tip
from llm4all.cli.options import (
    backend_options,
    backend_overrides,
    generation_options,
    generation_overrides,
    load_options,
    load_overrides,
    lora_option,
)
from llm4all.errors import InvalidParameter, Llm4allError
from llm4all.mcp.history import restore, tool_record
from llm4all.params import GenerationParams, LoadParams
from llm4all.store import ChatStore, export_chat

if TYPE_CHECKING:
    from llm4all.mcp.client import McpTools
    from llm4all.mcp.loop import ToolCall

#: How many earlier messages ``--continue`` shows before the prompt.
RECAP_MESSAGES = 6
#: SIGTERM and SIGHUP end the chat (after saving the answer being written); Windows has no SIGHUP.
LEAVING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

log = logging.getLogger(__name__)


HELP = """\
[bold]Commands[/bold]
  /help              this list
  /system [TEXT]     show or set the system prompt
  /reset             start a new chat (same model and system prompt)
  /model [NAME]      show the model or switch to another (the history stays)
  /params \\[k=v ...]  show or set sampling parameters, e.g. /params temperature=0.2 max_tokens=200
  /history           show the conversation so far
  /tools             list the MCP tools offered and what each may do
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
@lora_option
@docs_option
@mcp_options
@generation_options
@load_options
@backend_options
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
    mcp_config, no_tools, servers, yes = tool_flags(kwargs)
    merge_params(GenerationParams(), overrides)  # a bad value fails before the model loads
    LoadParams(**load)
    backend, backend_load = backend_overrides(kwargs, load)
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
            history = restore((m.role, m.content) for m in store.messages(chat.id))
    elif chat_id:
        raise click.UsageError("--chat needs the chat store (drop --no-save)")
    model = load_model(model_name, load, backend, backend_load)
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
    tools = None if no_tools or not model.has_chat_template else open_tools(mcp_config, servers)
    try:
        markdown = not plain and sys.stdout.isatty()
        status = TerminalChat(session, render_markdown=markdown, tools=tools, yes=yes).run()
    finally:
        if tools is not None:
            tools.close()  # stdio servers end with the chat
    if status:
        sys.exit(status)  # 128 + the signal, as a shell reports a program it ended


_GEN_FIELDS = {f.name for f in dataclasses.fields(GenerationParams)}


def _tuple_stops(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "stop": tuple(params["stop"])} if "stop" in params else params


class TerminalChat:
    """The read-answer loop, its slash commands and its signal handling."""

    def __init__(
        self,
        session: ChatSession,
        render_markdown: bool,
        tools: McpTools | None = None,
        yes: bool = False,
    ) -> None:
        self.session = session
        self.render_markdown = render_markdown
        self.tools = tools
        self.yes = yes  # run 'confirm' tools without asking
        self._said = ""  # what the model wrote beside its calls, saved with the first one
        self.out = Console(highlight=False)
        self.read = _line_reader()
        self.answering = False  # between the question and the saved answer
        self.response: Response | None = None
        self.leaving: int | None = None  # the SIGTERM or SIGHUP that ends the chat
        self.commands: dict[str, Callable[[str], bool]] = {
            "help": self.cmd_help,
            "system": self.cmd_system,
            "reset": self.cmd_reset,
            "model": self.cmd_model,
            "params": self.cmd_params,
            "history": self.cmd_history,
            "tools": self.cmd_tools,
            "save": self.cmd_save,
            "exit": lambda _: False,
            "quit": lambda _: False,
        }

    def run(self) -> int:
        """Chat until Ctrl-D, /exit or a signal; the exit status (128 + signal, or 0)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in LEAVING_SIGNALS}
        try:
            self.loop()
        except BaseException:
            if self.leaving is None:
                raise
            # Told to leave while waiting for input: the terminal may be gone, so
            # restoring its mode can fail too. Nothing was being written.
            log.debug("leaving on signal %d", self.leaving, exc_info=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0 if self.leaving is None else 128 + self.leaving

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            if self.response is None or self.response.cancelled:
                raise KeyboardInterrupt  # a second Ctrl-C: stop at once
            self.response.cancel()
            return
        if signum == getattr(signal, "SIGHUP", None):
            _silence_terminal()  # it is gone: writing to it would fail
        self.leaving = signum
        if not self.answering:
            raise SystemExit(128 + signum)
        if self.response is not None:
            self.response.cancel()  # before the next token; the answer is then saved

    def loop(self) -> None:
        s = self.session
        resumed = f", chat {s.chat_id} ({len(s.messages)} messages)" if s.chat_id else ""
        _note(f"{s.model.name}{resumed} · /help for commands · Ctrl-D to leave")
        if s.messages:
            self.recap()
        while self.leaving is None:
            try:
                text = self.read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not text.strip():
                continue
            try:
                if text.startswith("/"):
                    if not self.command(text[1:]):
                        break
                else:
                    self.answer(text)
            except Llm4allError as exc:
                _error(str(exc))

    def command(self, line: str) -> bool:
        """Run a slash command; False to leave."""
        name, _, arg = line.partition(" ")
        handler = self.commands.get(name.strip().lower())
        if handler is None:
            _error(f"unknown command /{name}; /help lists them")
            return True
        try:
            return handler(arg.strip())
        except OSError as exc:  # /save to a folder that does not exist, …
            _error(f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc))
            return True

    def answer(self, text: str) -> None:
        self.answering = True
        previous = signal.signal(signal.SIGINT, self._on_signal)
        try:
            if self.tools is not None and self.tools.specs():
                self.answer_with_tools(text)
            else:
                self.response = self.session.send(text)
                if self.leaving is None:  # a signal while the question was prepared
                    with _keys_not_echoed():
                        self._stream(self.response)
        except KeyboardInterrupt:  # a second Ctrl-C: the stream is closed, the text saved
            if self.response is not None:
                self.response.cancel()
        finally:
            signal.signal(signal.SIGINT, previous)
            self.answering = False
        response, self.response = self.response, None
        if response is None:
            return
        if response.cancelled:
            _note("[stopped]")
        print_sources(response.sources)
        if self.session.dropped:
            _note(f"({self.session.dropped} old messages no longer fit the context)")

    def _stream(self, response: Response) -> None:
        if not self.render_markdown:
            for piece in response:
                self.out.out(piece, end="")
            self.out.out("")
            return
        shown = ""
        with Live(
            Markdown(""), console=self.out, refresh_per_second=12, vertical_overflow="visible"
        ) as live:
            for piece in response:
                shown += piece
                live.update(Markdown(shown))

    def answer_with_tools(self, text: str) -> None:
        """The tool loop: each call shown and saved as it happens, the answer streamed."""
        from llm4all.mcp.loop import answer_with_tools

        assert self.tools is not None
        s = self.session
        user = Message("user", text)
        history = [*s.history, user]
        s.messages.append(user)
        self._save("user", text)
        view = LiveText(self.out, self.render_markdown)
        shown = ToolConsole(ask=True, yes=self.yes, before=view.end)

        def start(call: ToolCall) -> None:
            self.response = None  # Ctrl-C while a tool is asked about or runs: stop at once
            shown.started(call)

        def set_response(response: Response) -> None:
            self.response = response

        try:
            answer_with_tools(
                s.model,
                history,
                self.tools,
                consent=shown.consent,
                on_start=start,
                on_call=self._tool_done(shown),
                on_token=view.add,
                on_message=self._added,
                on_response=set_response,
                params=s.params,
                collections=s.collections,
            )
        finally:
            view.end()

    def _tool_done(self, shown: ToolConsole) -> Callable[[ToolCall], None]:
        def done(call: ToolCall) -> None:
            shown.done(call)
            self._save("tool", tool_record(call, self._said))
            self._said = ""

        return done

    def _added(self, message: Message) -> None:
        """A message of the tool loop: kept in the history; saved unless a call (see history.py)."""
        response = self.response
        if message.role == "assistant" and not message.tool_calls:
            if response is not None and response.cancelled and not message.content:
                return  # stopped before its first word: nothing to keep
            stats = response.stats if response is not None else None
            fields = stats.store_fields() if stats is not None else {}
            reason = stats.finish_reason if stats is not None else None
            self._save("assistant", message.content, finish_reason=reason, **fields)
        elif message.tool_calls:
            self._said = message.content
        self.session.messages.append(message)

    def _save(self, role: str, content: str, **fields: Any) -> None:
        self.session.save(role, content, **fields)

    def recap(self) -> None:
        """The last turns of a continued chat, so the user sees where it stands."""
        messages = self.session.messages
        earlier = len(messages) - RECAP_MESSAGES
        if earlier > 0:
            _note(f"… {earlier} earlier messages (/history shows them all)")
        _show_messages(messages[-RECAP_MESSAGES:])

    # -- commands: each returns False to leave the loop ------------------------------
    def cmd_help(self, _: str) -> bool:
        err_console.print(HELP, highlight=False)
        return True

    def cmd_system(self, arg: str) -> bool:
        s = self.session
        if not arg:
            err_console.print(
                Text(s.system_prompt) if s.system_prompt else "[dim](no system prompt)[/dim]"
            )
            return True
        s.system_prompt = arg
        if s.store is not None and s.chat_id is not None:
            s.store.set_system_prompt(s.chat_id, arg)
        _note("system prompt set")
        return True

    def cmd_reset(self, _: str) -> bool:
        self.session.reset()
        _note("new chat")
        return True

    def cmd_model(self, arg: str) -> bool:
        s = self.session
        if not arg:
            err_console.print(Text(f"{s.model.name} ({s.model.path})"))
            return True
        new: Model = load_model(arg)
        s.model.close()
        s.model = new
        if s.store is not None and s.chat_id is not None:
            s.store.set_model(s.chat_id, new.name)
        _note(f"now chatting with {new.name}")
        return True

    def cmd_params(self, arg: str) -> bool:
        s = self.session
        try:
            items = shlex.split(arg)
        except ValueError as exc:  # an unclosed quote
            raise InvalidParameter("params", arg, f"key=value pairs ({exc})") from None
        shown = [item for item in items if "=" not in item]
        changes = dict(_parse_assignment(item) for item in items if "=" in item)
        current = dataclasses.asdict(s.params)
        for key in shown:
            if _field_name(key) not in current:
                raise InvalidParameter(key, None, "a parameter name; /params lists them")
        if changes:
            s.params = merge_params(s.params, changes)
            current = dataclasses.asdict(s.params)
            if s.store is not None and s.chat_id is not None:
                s.store.set_params(s.chat_id, current)
        names = [_field_name(key) for key in shown] or list(current)
        for key in names:
            err_console.print(Text(f"  {key} = {current[key]!r}"))
        return True

    def cmd_history(self, _: str) -> bool:
        _show_messages(self.session.history)
        return True

    def cmd_tools(self, _: str) -> bool:
        for line in describe_tools(self.tools):
            err_console.print(Text(f"  {line}"), soft_wrap=True)
        return True

    def cmd_save(self, arg: str) -> bool:
        s = self.session
        if s.store is None or s.chat_id is None:
            err_console.print("nothing saved yet (the chat is empty or --no-save is on)")
            return True
        chat = s.store.get_chat(s.chat_id)
        path = Path(arg or f"chat-{chat.id}.md").expanduser()
        path.write_text(export_chat(chat, s.store.messages(chat.id), "md"), encoding="utf-8")
        _note(f"saved to {path}")
        return True


def _note(text: str) -> None:
    """A dim line on stderr, printed exactly (never read as markup)."""
    err_console.print(Text(text, style="dim"), soft_wrap=True)


def _error(text: str) -> None:
    err_console.print(Text.assemble(("error:", "red"), " ", text), soft_wrap=True)


def _show_messages(messages: Sequence[Message]) -> None:
    for m in messages:
        if m.role == "tool":
            err_console.print(Text(f"  → {shorten(m.content)}", style="dim"), soft_wrap=True)
            continue
        if m.content or not m.tool_calls:
            err_console.print(Text.assemble((m.role, "bold"), ": ", m.content))
        for call in m.tool_calls:
            err_console.print(Text.assemble(("tool", "bold"), " ", call_line(call)))


@contextmanager
def _keys_not_echoed() -> Iterator[None]:
    """Keys pressed during an answer are not echoed; they wait for the next prompt.

    The terminal would echo Ctrl-C as ``^C`` where the cursor is: at the end of
    a full-width line of the live Markdown view, which wraps it, so the view's
    next redraw starts a line too low and its first line shows twice.
    """
    try:
        import termios
    except ImportError:  # Windows
        yield
        return
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        with suppress(termios.error):  # the terminal is gone (a hang-up)
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _silence_terminal() -> None:
    """Point stdout and stderr at /dev/null (after a hang-up, so that leaving cannot fail)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _field_name(key: str) -> str:
    return key.strip().replace("-", "_")


def _parse_assignment(item: str) -> tuple[str, Any]:
    """``"temperature=0.2"`` as ``("temperature", 0.2)``; a bad name or value is an error."""
    key, _, raw = item.partition("=")
    key = _field_name(key)
    field = next((f for f in dataclasses.fields(GenerationParams) if f.name == key), None)
    if field is None:
        raise InvalidParameter(key, raw, "a parameter name; /params lists them")
    if raw.lower() in ("none", "null", ""):
        return key, None
    if key == "stop":
        return key, (raw,)
    kind: type = float if isinstance(field.default, float) else str
    if isinstance(field.default, int) or key in ("max_tokens", "seed"):
        kind = int
    try:
        return key, kind(raw)
    except ValueError:
        raise InvalidParameter(key, raw, f"a{'n integer' if kind is int else ' number'}") from None


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
