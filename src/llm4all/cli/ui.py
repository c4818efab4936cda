"""``llm4all ui``: open the web chat, starting the server first if it is not running.

If an llm4all server already answers on the port, the browser just opens on
it; if another program holds the port, that is an error naming it. Otherwise
the server starts here, in this process, without preloading a model (the page
opens at once; the chat's model loads with its first message), and the
browser opens as soon as the server answers. Ctrl-C stops it.
"""

from __future__ import annotations

import threading
import time
import webbrowser

import click
import httpx

from llm4all.cli._common import err_console

DEFAULT_PORT = 4891  # the server's, GPT4All's API port


def page_url(host: str, port: int) -> str:
    """The page's address. Example: ``page_url("::1", 4891) == "http://[::1]:4891/"``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/"


def probe(url: str, timeout: float = 1.0) -> str:
    """What answers at ``url``: ``"llm4all"``, ``"other"`` or ``"nothing"``."""
    try:
        response = httpx.get(url + "health", timeout=timeout)
    except httpx.HTTPError:
        return "nothing"
    try:
        ours = response.status_code == 200 and "version" in response.json()
    except ValueError:
        ours = False
    return "llm4all" if ours else "other"


def _open_when_up(url: str, open_browser: bool, deadline: float = 60.0) -> None:
    start = time.monotonic()
    while probe(url, timeout=0.5) != "llm4all":
        if time.monotonic() - start > deadline:
            err_console.print(f"[red]the server did not come up at {url}[/red]")
            return
        time.sleep(0.2)
    err_console.print(f"llm4all web chat: {url}")
    if open_browser:
        webbrowser.open(url)


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port.")
@click.option("-m", "--model", "model_name", help="Default model of chats that name none.")
@click.option(
    "--no-browser", is_flag=True, help="Start (or find) the server, do not open a browser."
)
def ui_command(host: str, port: int, model_name: str | None, no_browser: bool) -> None:
    """Open the web chat in your browser (starting the server if needed)."""
    url = page_url(host, port)
    found = probe(url)
    if found == "other":
        raise click.ClickException(
            f"another program answers on {host}:{port}; choose a free one with --port"
        )
    if found == "llm4all":
        err_console.print(f"llm4all is already running: {url}")
        if not no_browser:
            webbrowser.open(url)
        return
    from llm4all.server import ServerSettings, serve

    settings = ServerSettings(host=host, port=port, model=model_name, preload=False)
    threading.Thread(
        target=_open_when_up, args=(url, not no_browser), name="open-browser", daemon=True
    ).start()
    serve(settings, log_level="warning")
