"""Recipient-level merge fields as slots that survive Markdown, MJML and CSS inlining.

Before anything is compiled, every ``{{ ... }}`` expression that mentions a
recipient-level name (``subscriber``, ``unsubscribe_url``) is replaced by an
opaque token such as ``zqslot3qz``: plain lowercase letters and digits, so that
no Markdown rule, MJML, inliner or URL-encoder changes it. The compiled output
is then split at the tokens into a :class:`SlotTemplate`; personalising a
subscriber is a join of literal parts and slot values, never a re-compile.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import jinja2
from jinja2 import meta, nodes
from markupsafe import escape

from ..jsontext import json_inner

RECIPIENT_NAMES = frozenset({"subscriber", "unsubscribe_url"})
TOKEN = re.compile(r"zqslot(\d+)qz")
_EXPRESSION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)

# Recipient slots are lenient: a blank cell renders "" or the expression's default().
# Columns that do not exist at all are caught before sending by check_columns().
_slot_env = jinja2.Environment(undefined=jinja2.Undefined, autoescape=False)


@dataclass(frozen=True)
class Slot:
    """One merge-field expression, where it was written, and how to evaluate it."""

    source: str
    path: str
    line: int
    fields: tuple[str, ...]  # subscriber.<field> names it reads
    defaulted: bool  # wrapped in default(...): absent values have a fallback
    evaluate: Callable[[Mapping[str, Any]], str]


class SlotTable:
    """Collects the slots of one issue; ``extract`` swaps expressions for tokens."""

    def __init__(self, issue_context: Mapping[str, Any]):
        self.slots: list[Slot] = []
        self._by_source: dict[str, int] = {}
        self._issue_context = issue_context

    def extract(self, text: str, path: str, first_line: int = 1) -> str:
        """``text`` with its recipient-level expressions replaced by slot tokens."""
        return replace_recipient_expressions(text, path, first_line, self.register)

    def register(self, source: str, path: str, line: int) -> str:
        """The token for one recipient-level expression (the same expression shares a slot)."""
        if source not in self._by_source:
            ast, names = _analyse(source)
            self._by_source[source] = len(self.slots)
            self.slots.append(self._compile(source, ast, names, path, line))
        return f"zqslot{self._by_source[source]}qz"

    def _compile(self, source: str, ast: nodes.Template, names: set[str], path: str, line: int) -> Slot:
        fields = tuple(sorted({n.attr for n in ast.find_all(nodes.Getattr)
                               if isinstance(n.node, nodes.Name) and n.node.name == "subscriber"}
                              | {n.arg.value for n in ast.find_all(nodes.Getitem)
                                 if isinstance(n.node, nodes.Name) and n.node.name == "subscriber"
                                 and isinstance(n.arg, nodes.Const)}))
        defaulted = any(f.name in ("default", "d") for f in ast.find_all(nodes.Filter))
        return Slot(source, path, line, fields, defaulted, _evaluator(source, ast, names, self._issue_context))


def _evaluator(source: str, ast: nodes.Template, names: set[str],
               issue_context: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], str]:
    """A fast function for the common shapes, Jinja for everything else."""
    expr = ast.body[0].nodes[0] if isinstance(ast.body[0], nodes.Output) and len(ast.body[0].nodes) == 1 else None
    fallback = None
    if isinstance(expr, nodes.Filter) and expr.name in ("default", "d") and expr.node is not None \
            and len(expr.args) == 1 and isinstance(expr.args[0], nodes.Const) and not expr.kwargs:
        fallback, expr = str(expr.args[0].value), expr.node
    if isinstance(expr, nodes.Name) and expr.name == "unsubscribe_url":
        return lambda values: values["unsubscribe_url"]
    if isinstance(expr, nodes.Getattr) and isinstance(expr.node, nodes.Name) and expr.node.name == "subscriber":
        attr = expr.attr
        if fallback is None:
            return lambda values: values["subscriber"].get(attr, "")
        return lambda values: values["subscriber"].get(attr) or fallback

    compiled = _slot_env.compile_expression(source, undefined_to_none=False)
    fixed = {n: issue_context[n] for n in names - RECIPIENT_NAMES if n in issue_context}

    def evaluate(values: Mapping[str, Any]) -> str:
        result = compiled(**fixed, **values)
        return "" if isinstance(result, jinja2.Undefined) or result is None else str(result)

    return evaluate


def replace_recipient_expressions(text: str, path: str, first_line: int,
                                  replace: Callable[[str, str, int], str]) -> str:
    """Call ``replace(source, path, line)`` for each ``{{ }}`` naming a recipient field; keep the others."""
    from ..errors import TemplateError

    if TOKEN.search(text):
        raise TemplateError("contains the reserved word 'zqslot<n>qz'", path=path,
                            hint="rephrase that text; newsletter uses it for merge fields")

    def one(match: re.Match) -> str:
        source = match.group(1)
        if not _MENTIONS_RECIPIENT.search(source):
            return match.group(0)  # issue-level: Jinja renders it once
        line = first_line + text.count("\n", 0, match.start())
        if "{{" in source or "\n\n" in source:  # this {{ runs into the next one, or past its paragraph
            raise TemplateError("template error: {{ on this line is never closed with }} before the next {{ or "
                                "the end of its paragraph", path=path, line=line,
                                hint="close it with }}; a literal {{ is written {{ '{{' }}")
        try:
            _, names = _analyse(source)
        except jinja2.TemplateSyntaxError as err:
            shown = source if len(source) <= 80 else source[:77] + "..."
            raise TemplateError(f"merge field {{{{ {shown} }}}}: {err.message}", path=path, line=line,
                                hint='write e.g. {{ subscriber.name | default("there") }}') from None
        if not names & RECIPIENT_NAMES:
            return match.group(0)  # e.g. a string that merely contains the word
        return replace(source, path, line)

    return _EXPRESSION.sub(one, text)


_MENTIONS_RECIPIENT = re.compile(r"\b(?:subscriber|unsubscribe_url)\b")


@functools.lru_cache(maxsize=1024)
def _analyse(source: str) -> tuple[nodes.Template, frozenset[str]]:
    """Parse one expression and name the variables it reads (cached: layouts repeat them)."""
    ast = _slot_env.parse("{{ " + source + " }}")
    return ast, frozenset(meta.find_undeclared_variables(ast))


_HTML_SPECIAL = re.compile(r"[&<>\"']")


def escape_html(value: str) -> str:
    """``markupsafe.escape(value)`` as a plain string; a value with nothing to escape is returned as it is.

    Most merge values (names, tokens, URLs) need no escaping, and skipping markupsafe's
    work for them is a third of the cost of filling a compiled issue's HTML.
    """
    return str(escape(value)) if _HTML_SPECIAL.search(value) else value


@dataclass(frozen=True)
class SlotTemplate:
    """Compiled text split at slots: literal, slot index, literal, ..., literal."""

    parts: tuple[str, ...]
    slot_ids: tuple[int, ...]

    @classmethod
    def split(cls, compiled: str) -> "SlotTemplate":
        pieces = TOKEN.split(compiled)
        return cls(tuple(pieces[0::2]), tuple(int(i) for i in pieces[1::2]))

    def fill(self, values: Sequence[str], *, html: bool) -> str:
        """Join literal parts with slot ``values`` (escaped for HTML when ``html``)."""
        parts = self.parts
        out = [parts[0]]
        for slot_id, part in zip(self.slot_ids, parts[1:]):
            out += (escape_html(values[slot_id]) if html else values[slot_id], part)
        return "".join(out)

    # -- the same, already JSON-encoded (body-per-message providers) --------------------
    # JSON escapes character by character, so the encoding of a filled template is the
    # literal parts' encodings (done once per issue) joined with the values' encodings:
    # a 30 kB body costs a join per recipient instead of a full json.dumps scan.
    @functools.cached_property
    def _json_parts(self) -> tuple[str, ...]:
        return tuple(json.dumps(part)[1:-1] for part in self.parts)

    @functools.cached_property
    def _json_literal_size(self) -> int:
        return sum(map(len, self._json_parts)) + 2

    def json_fill(self, values: Sequence[str], *, html: bool) -> str:
        """``json.dumps(self.fill(values, html=html))`` (ASCII, as requests sends it), built from the
        literal parts encoded once."""
        return "".join(self.json_pieces(values, html=html))

    def json_pieces(self, values: Sequence[str], *, html: bool) -> list[str]:
        """:meth:`json_fill` unjoined, for a request body that joins every message's pieces at once."""
        parts = self._json_parts
        out = ['"', parts[0]]
        for slot_id, part in zip(self.slot_ids, parts[1:]):
            out += (json_inner(escape_html(values[slot_id]) if html else values[slot_id]), part)
        out.append('"')
        return out

    def json_size(self, values: Sequence[str], *, html: bool) -> int:
        """``len(self.json_fill(values, html=html))`` without building it."""
        return self._json_literal_size + sum(
            len(json_inner(escape_html(values[i]) if html else values[i])) for i in self.slot_ids)

    def with_placeholders(self, placeholder: Callable[[int], str]) -> str:
        """The template with each slot written as the provider's placeholder (e.g. ``-slot3-``)."""
        out = [self.parts[0]]
        for i, slot_id in enumerate(self.slot_ids):
            out.append(placeholder(slot_id))
            out.append(self.parts[i + 1])
        return "".join(out)
