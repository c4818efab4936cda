"""Model answers as safe HTML: Markdown rendered on the server, code highlighted by Pygments.

Model output is untrusted. markdown-it-py runs with raw HTML off, so a
``<script>`` or an ``onerror=`` in an answer comes out as escaped text; its
``validateLink`` drops ``javascript:``, ``vbscript:``, ``file:`` and most
``data:`` links. Images are rendered as links (an answer must not make the
browser fetch anything), and every link opens in a new tab without a referrer.
Code blocks are highlighted with CSS classes only (no inline styles), so the
page's Content-Security-Policy can forbid inline styles; :func:`highlight_css`
serves the colours for the light and the dark theme.

Example: ``render_markdown("**hi** <b>")`` → ``"<p><strong>hi</strong> &lt;b&gt;</p>\\n"``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

#: Pygments styles of the two themes (both ship with Pygments).
LIGHT_STYLE = "default"
DARK_STYLE = "github-dark"
_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    """Highlighted spans for a fenced block; "" lets markdown-it escape it as plain code."""
    if not lang:
        return ""
    try:
        lexer = get_lexer_by_name(lang.lower())
    except ClassNotFound:
        return ""
    return str(highlight(code, lexer, _FORMATTER))


def _image_as_link(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    src = escapeHtml(str(token.attrGet("src") or ""))
    alt = escapeHtml(self.renderInlineAsText(token.children or [], options, env) or src)
    return f'<a href="{src}" target="_blank" rel="noopener noreferrer">{alt}</a>'


def _link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return str(self.renderToken(tokens, idx, options, env))


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight, "linkify": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_link)
    md.add_render_rule("link_open", _link_open)
    return md


def render_markdown(text: str) -> str:
    """Sanitized HTML for a model's (or a user's) Markdown text."""
    html: str = _parser().render(text)
    return html


def _token_rules(style: str, scope: str) -> list[str]:
    """Pygments' colour rules for ``style`` under ``scope`` (its page-wide rules left out)."""
    style_defs: Callable[[str], str] = HtmlFormatter(style=style).get_style_defs  # untyped in stubs
    rules = style_defs(scope).splitlines()
    return [rule for rule in rules if rule.startswith(f"{scope} .")]


@lru_cache(maxsize=1)
def highlight_css() -> str:
    """Pygments colours for code blocks: light by default, dark under ``[data-theme=dark]``."""
    light = _token_rules(LIGHT_STYLE, ".md pre code")
    dark = _token_rules(DARK_STYLE, ":root[data-theme=dark] .md pre code")
    rules = "\n".join([*light, *dark])
    return f"/* Pygments {LIGHT_STYLE} (light) and {DARK_STYLE} (dark) */\n{rules}\n"
