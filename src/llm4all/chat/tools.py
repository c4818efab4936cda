"""Tool definitions in a prompt, for templates that do not take ``tools``.

Chat templates that support tool calling (Qwen, Llama 3.1+, Mistral, Hermes)
render the ``tools`` variable themselves; :meth:`llm4all.Model.render` hands
them the definitions. A template that never mentions ``tools`` would drop
them, so for those the definitions and the call format go into the system
message instead, with the widespread Hermes convention::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Earlier tool calls in the conversation are then written back in that format
too, so the model sees its own calls the way it was told to make them.

Calls come back out of an answer through :func:`parse` (that convention, and
calls written as bare JSON), whichever front end asked: the OpenAI route
(:mod:`llm4all.server.tools`) and the LangChain integration. A call that must
be made is constrained by :func:`call_schema`'s JSON schema.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm4all.chat.template import Message

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_takes_tools(template: str) -> bool:
    """Whether a chat template renders the ``tools`` variable (a cheap, conservative test)."""
    return "tools" in template


def describe_in_system(
    messages: Sequence[Message], tools: Sequence[dict[str, Any]]
) -> list[Message]:
    """The definitions and the call format in the system turn; earlier calls as Hermes text.

    Example: ``describe_in_system([Message("user", "hi")], [spec])[0].role == "system"``.
    """
    text = _INSTRUCTIONS.format(tools="\n".join(json.dumps(t) for t in tools))
    calls_as_text = [_calls_as_text(m) for m in messages]
    if calls_as_text and calls_as_text[0].role == "system":
        head = calls_as_text[0]
        return [Message("system", f"{head.content}\n\n{text}"), *calls_as_text[1:]]
    return [Message("system", text), *calls_as_text]


def _calls_as_text(m: Message) -> Message:
    if not m.tool_calls:
        return m
    blocks = [
        f"{OPEN}\n{json.dumps({'name': c['function']['name'], 'arguments': c['function']['arguments']})}\n{CLOSE}"
        for c in m.tool_calls
    ]
    return Message(m.role, "\n".join([m.content, *blocks]).strip())


# -- calls out ---------------------------------------------------------------------------------
def call_schema(tools: Sequence[dict[str, Any]]) -> str:
    """The JSON schema of exactly one call of one of ``tools`` (OpenAI-shaped definitions).

    Example: ``call_schema([spec])`` constrains an answer to ``{"name": …, "arguments": …}``.
    """
    options = [_one_call_schema(t) for t in tools]
    return json.dumps(options[0] if len(options) == 1 else {"anyOf": options})


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return function if isinstance(function, dict) else {}


def _parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params = _function(tool).get("parameters")
    return params if isinstance(params, dict) and params else {"type": "object"}


def _one_call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": _function(tool)["name"]},
            "arguments": _parameters(tool),
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def schemas_of(tools: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each declared tool's name and parameter schema: what :func:`parse` checks calls against."""
    return {str(_function(t).get("name")): _parameters(t) for t in tools}


@dataclass(frozen=True)
class Parsed:
    content: str | None
    calls: list[dict[str, Any]]


#: Where a call written as JSON may begin: an object (or a list of them) naming its function.
_START = re.compile(r'(?:\[\s*)?\{\s*"(?:name|function)"\s*:')
#: What wraps a call once it is taken out: a fence, Hermes tags, a "json" label.
_WRAP = re.compile(
    r"(?:```[ \t]*(?:json|tool_call|tool_code)?[ \t]*\n?\s*)?(?:<tool_call>\s*)?\x00"
    r"(?:\s*</tool_call>)?(?:\s*```)?"
)
_DECODER = json.JSONDecoder()


def parse(
    text: str,
    *,
    forced: bool,
    known: Collection[str] | Mapping[str, dict[str, Any]],
    parallel: bool = True,
) -> Parsed:
    """Split an answer into content and tool calls (OpenAI's ``tool_calls`` shape).

    A call is a JSON object naming a declared tool, with its ``arguments`` (or
    ``parameters``): in Hermes ``<tool_call>`` tags (Qwen's native format), in a
    Markdown code fence (how Qwen2.5-Coder writes it), or bare — one object, a
    list of them, one per line, or after some text. The text around stays
    content. ``known`` is the declared names, or a mapping of each name to its
    parameter schema (:func:`schemas_of`): then arguments that do not follow it
    (the schema itself echoed back, a required field missing, a wrong type) make
    no call, and never reach a client.

    Example: ``parse('<tool_call>{"name": "f", "arguments": {}}</tool_call>', ...)``
    gives one call of ``f`` with arguments ``"{}"`` and no content.
    """
    if forced:
        call = _as_call(text, known)
        return Parsed(None, [call]) if call else Parsed(text, [])
    calls: list[dict[str, Any]] = []
    pieces: list[str] = []
    at = 0
    for start in _START.finditer(text):
        if start.start() < at or _a_keys_value(text, start.start()):
            continue
        found = _decode_calls(text, start.start(), known)
        if found is None:
            continue
        end, made = found
        pieces += [text[at : start.start()], "\x00"]
        calls += made
        at = end
    if not calls:
        return Parsed(text, [])
    pieces.append(text[at:])
    content = _WRAP.sub("", "".join(pieces)).strip() or None
    return Parsed(content, calls if parallel else calls[:1])


def _a_keys_value(text: str, at: int) -> bool:
    """Whether ``at`` is where a JSON key's value begins (``"function": {"name": …``).

    Such an object is part of a larger one — a tool's definition written back,
    say — not a call; the lazy grammar's trigger skips it the same way.
    """
    before = text[:at].rstrip()
    return before.endswith(":") and before[:-1].rstrip().endswith('"')


def _decode_calls(
    text: str, at: int, known: Collection[str] | Mapping[str, dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]] | None:
    """The calls of the JSON value at ``at`` and where it ends (None: not calls)."""
    try:
        data, end = _DECODER.raw_decode(text, at)
    except ValueError:
        return None
    items = data if isinstance(data, list) else [data]
    calls = [_as_call(item, known) for item in items]
    if not calls or not all(calls):
        return None
    return end, [c for c in calls if c is not None]


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _as_call(
    text: str | Any, known: Collection[str] | Mapping[str, dict[str, Any]]
) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("function"), dict):
        data = data["function"]  # {"function": {"name": …, "arguments": …}}
    # A model may write any JSON: a name that is a list or an object is no call (and unhashable).
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if data["name"] not in known:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(known, Mapping) and not valid_arguments(arguments, known[data["name"]]):
        return None
    return {
        "id": new_call_id(),
        "type": "function",
        "function": {
            "name": data["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def valid_arguments(arguments: Any, schema: dict[str, Any]) -> bool:
    """Whether a call's arguments follow its tool's parameter schema.

    An object; every required property there; each declared property of its
    type (and among its ``enum``); nothing undeclared where
    ``additionalProperties`` is false; and not the schema itself written back
    (``{"type": "object", "properties": {}}`` for a tool without parameters, as
    Qwen2.5-0.5B answers). ``jsonschema`` checks the rest where it is installed.
    """
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return False
    if not isinstance(arguments, dict):
        return False
    properties = schema.get("properties") or {}
    if not isinstance(properties, dict):
        return True  # a schema we cannot read: the arguments are at least an object
    if arguments == schema or (
        {"type", "properties"} <= arguments.keys()
        and not {"type", "properties"} & properties.keys()
    ):
        return False
    if any(key not in arguments for key in schema.get("required") or ()):
        return False
    if schema.get("additionalProperties") is False and any(k not in properties for k in arguments):
        return False
    for key, value in arguments.items():
        spec = properties.get(key)
        if not isinstance(spec, dict):
            continue
        kinds = spec.get("type")
        names = kinds if isinstance(kinds, list) else [kinds] if isinstance(kinds, str) else []
        allowed = tuple(t for n in names for t in _TYPES.get(n, (object,)))
        if allowed and not isinstance(value, allowed):
            return False
        if allowed and isinstance(value, bool) and bool not in allowed:
            return False  # JSON's true is no number
        if "enum" in spec and isinstance(spec["enum"], list) and value not in spec["enum"]:
            return False
    return _jsonschema_agrees(arguments, schema)


def _jsonschema_agrees(arguments: dict[str, Any], schema: dict[str, Any]) -> bool:
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return True
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError:
        return False
    except jsonschema.SchemaError:
        return True  # the tool's schema is at fault, not the call
    return True


# -- constrained arguments ---------------------------------------------------------------------
#: The first line of a lazy grammar: the regex that starts it (see ``engine/_native.py``).
LAZY_HEADER = "# llm4all-lazy-trigger: "
_SPACE = '| " " | "\\n" [ \\t]{0,20}'  # llama.cpp's own; llama-cpp-python's allows one space
#: Whitespace inside a call's head ``{ "name" : "…"``: the trigger, the grammar and the
#: free text between calls agree on it exactly (a trigger the grammar rejects aborts llama.cpp).
_HEAD_SPACE = " \t\n\r"
_HEAD_SPACE_CLASS = "[ \\t\\n\\r]"  # the same, in GBNF and in the trigger's regex


def call_grammar(tools: Sequence[dict[str, Any]], *, parallel: bool = True) -> str:
    """A lazy GBNF grammar: free text until a call of a declared tool begins, then its arguments.

    The trigger is ``{"name": "<a declared tool>"`` (whatever precedes it: a
    ``<tool_call>`` tag, a fence, some text); from there the call is generated
    under a grammar built from that tool's parameter schema, so its arguments
    always parse and validate (llama.cpp's server does the same). After the
    call the answer is free text in which every further call is constrained
    too: the text between calls is any text in which no call's head occurs
    (:func:`_free_text_rules`), so where one begins it is a call of a declared
    tool with valid arguments. ``parallel=False``: only the first call is
    constrained. A JSON object naming no declared tool never triggers it. The
    text starts with :data:`LAZY_HEADER` and the trigger.

    Example: ``call_grammar([spec]).splitlines()[0]`` is the trigger's header line.
    """
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    branches = []
    names = []
    for k, tool in enumerate(tools):
        name = str(_function(tool).get("name"))
        schema = converter.resolve_refs(_parameters(tool), "")
        converter.visit(schema, f"args{k}")  # type: ignore[no-untyped-call]
        key = '( "\\"arguments\\"" | "\\"parameters\\"" )'
        arguments = f'"," space {key} space ":" space args{k} space'
        optional = not (schema.get("required") or [])
        tail = f"( {arguments} )?" if optional else arguments
        branches.append(f'{json.dumps(json.dumps(name))} space {tail} "}}"')
        names.append(name)
    grammar = converter.format_grammar()  # type: ignore[no-untyped-call]
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    rules["space"] = _SPACE
    rules["head-space"] = f"{_HEAD_SPACE_CLASS}*"
    head = '"{" head-space "\\"name\\"" head-space ":" head-space'
    rules["call"] = f"{head} ( " + " | ".join(branches) + " )"
    if parallel:
        rules["root"] = "call more"
        rules["more"] = "free0 ( call more )?"
        rules.update(_free_text_rules(names))
    else:
        rules["root"] = "call rest"
        rules["rest"] = "[^\\x00]*"
    space = f"{_HEAD_SPACE_CLASS}*"
    trigger = (
        # Not where a JSON key's value begins ("function": {"name": …, a tool list echoed back).
        '(?:|[\\s\\S]*?(?:[^:\\s]|[^"\\s]\\s*:))\\s*(\\{'
        + f'{space}"name"{space}:{space}"(?:'
        + "|".join(_ecma_escape(n) for n in names)
        + ')")[\\s\\S]*'
    )
    body = "\n".join(f"{k} ::= {v}" for k, v in rules.items())
    return f"{LAZY_HEADER}{trigger}\n{body}\n"


def _ecma_escape(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in name)


#: One step of a call's head: a literal character, or ``None`` for any run of head space.
_Atom = str | None
_NfaState = tuple[int, int]  # (which name, how far into its head)


def _free_text_rules(names: Sequence[str]) -> dict[str, str]:
    """GBNF rules ``free0``, ``free1``, …: any text in which no call's head occurs.

    A call's head is ``{ "name" : "<declared name>"`` (any :data:`_HEAD_SPACE`
    around the colon and after the brace). The rules are the states of the
    automaton that searches for those heads, less the one that has found one:
    text the automaton would accept is free, and where a head would complete
    only the ``call`` rule can go on. Example: with ``["now"]``, ``free0``
    takes ``Done. {"a": 1}`` but not ``{"name": "now"``.
    """
    heads: list[list[_Atom]] = [["{", None, *'"name"', None, ":", None, *f'"{n}"'] for n in names]
    alphabet = sorted({a for h in heads for a in h if a is not None} | set(_HEAD_SPACE))

    def closure(states: set[_NfaState]) -> frozenset[_NfaState]:
        todo = list(states)
        while todo:
            k, i = todo.pop()
            if i < len(heads[k]) and heads[k][i] is None and (k, i + 1) not in states:
                states.add((k, i + 1))
                todo.append((k, i + 1))
        return frozenset(states)

    fresh = {(k, 0) for k in range(len(heads))}
    start = closure(set(fresh))

    def step(states: frozenset[_NfaState], c: str | None) -> frozenset[_NfaState]:
        moved = set(fresh)
        for k, i in states:
            atom = heads[k][i] if i < len(heads[k]) else ""
            if atom is None and c is not None and c in _HEAD_SPACE:
                moved.add((k, i))
            elif atom == c:
                moved.add((k, i + 1))
        return closure(moved)

    def found(states: frozenset[_NfaState]) -> bool:
        return any(i == len(heads[k]) for k, i in states)

    number = {start: 0}
    todo = [start]
    rules: dict[str, str] = {}
    while todo:
        states = todo.pop()
        by_target: dict[int, list[str]] = {}
        for c in [*alphabet, None]:  # None: any character not in the alphabet
            target = step(states, c)
            if found(target):
                continue
            if target not in number:
                number[target] = len(number)
                todo.append(target)
            by_target.setdefault(number[target], []).append(c or "")
        rules[f"free{number[states]}"] = _state_rule(by_target, alphabet)
    return rules


def _state_rule(by_target: dict[int, list[str]], alphabet: Sequence[str]) -> str:
    """One automaton state as a GBNF rule: the end of the text, or a character and the next state.

    ``""`` in a target's characters stands for every character outside ``alphabet``.
    """
    alternatives = [""]
    for number, chars in sorted(by_target.items()):
        if "" in chars:  # the other characters, and the listed ones that go there too
            excluded = "".join(_gbnf_char(c) for c in alphabet if c not in chars)
            alternatives.append(f"[^{excluded}] free{number}")
        else:
            alternatives.append(f"[{''.join(map(_gbnf_char, chars))}] free{number}")
    return " | ".join(alternatives)


def _gbnf_char(c: str) -> str:
    """A character for a GBNF character class (escaped unless a letter or digit)."""
    if c.isascii() and c.isalnum():
        return c
    if ord(c) < 0x100:
        return f"\\x{ord(c):02X}"
    return f"\\u{ord(c):04X}" if ord(c) < 0x10000 else f"\\U{ord(c):08X}"
