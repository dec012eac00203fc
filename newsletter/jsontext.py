"""JSON text built and weighed without a full ``json.dumps`` scan: the send loop's hot path.

A personalised body is tens of kB and a list is long. Encoding it once per
recipient only to weigh it, or re-encoding a body whose literal parts never
change, dominated the send loop; these helpers weigh strings exactly (or with a
cheap upper bound for long ones) and splice already-encoded pieces into the
text ``json.dumps`` would write, byte for byte what requests sends for ``json=``.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii  # what json.dumps does to a str
from typing import Any, Iterable, Mapping


def json_inner(value: str) -> str:
    """``value`` JSON-escaped (ASCII, as ``json.dumps``), without the quotes."""
    return encode_basestring_ascii(value)[1:-1]


_PRINTABLE_ASCII = bytes(range(0x20, 0x7f))  # json escapes DEL (0x7f) too


def json_size(text: str) -> int:
    """An upper bound of ``len(json.dumps(text))`` (ASCII-escaped, as requests sends it), and so of
    its UTF-8 size too, without encoding it: this runs per recipient, and JSON-encoding each
    body only to weigh it cost ~120 µs a recipient."""
    if text.isascii() and text.isprintable():  # the common case, exactly: only " and \ are escaped
        return len(text) + 2 + text.count('"') + text.count("\\")
    if len(text) < 4096:  # a subject, name or merge value: json's own C escaper, exactly
        return len(encode_basestring_ascii(text))
    ascii_part = text.encode("ascii", "ignore")
    controls = ascii_part.translate(None, _PRINTABLE_ASCII)  # \n, \t, ... become 2 bytes, others \u00XX
    short = sum(controls.count(c) for c in (b"\n", b"\r", b"\t", b"\b", b"\f"))
    return (len(ascii_part) + 2 + ascii_part.count(b'"') + ascii_part.count(b"\\") + short
            + 5 * (len(controls) - short) + 12 * (len(text) - len(ascii_part)))  # \uXXXX, or a surrogate pair


quoted = encode_basestring_ascii  # a str as json.dumps writes it, quotes included


def json_strings(mapping: Mapping[str, str]) -> str:
    """``json.dumps(mapping)`` for a mapping of strings to strings, without the encoder's generic walk."""
    return "{" + ", ".join([f"{quoted(key)}: {quoted(value)}" for key, value in mapping.items()]) + "}"


def _empty_member(text: str, key: str, empty: str) -> int:
    """Where the value of the member ``"key": empty`` (``[]`` or ``""``) starts in ``text``, json.dumps's
    output: its first such member (inside an encoded string every quote is escaped)."""
    at = text.find(f'"{key}": {empty}')
    if at < 0:
        raise ValueError(f"{key!r} is not a member {empty} of the item")
    return at + len(key) + 4  # past '"key": '


def json_with_array(item: Mapping[str, Any], key: str, encoded: list[str]) -> bytes:
    """The bytes requests sends for ``json=item``, with ``item[key]`` (an empty list, before any nested
    object that could hold the same key) set to the array of the already-encoded JSON values ``encoded``."""
    text = json.dumps(item)
    value_at = _empty_member(text, key, "[]")
    return "".join([text[:value_at], "[", ", ".join(encoded), "]", text[value_at + len("[]"):]]).encode("ascii")


def json_with_bodies(item: Mapping[str, Any], bodies: Mapping[str, list[str]]) -> list[str]:
    """``json.dumps(item)`` (as requests encodes ``json=``), as pieces to join, with each key of
    ``bodies``, left "" in ``item``, set to that already-encoded JSON text instead.

    Inside an encoded string every quote is escaped, so ``"key": ""`` is found only as a member (the
    first one: keep the bodies' keys before nested objects that could hold the same key). Pieces, not
    one string: a body is tens of kB, and the request joins it once.
    """
    text = json.dumps(item)
    out: list[str] = []
    start = 0
    for value_at, key, encoded in sorted((_empty_member(text, key, '""'), key, encoded)
                                         for key, encoded in bodies.items()):
        out.append(text[start:value_at])
        out += encoded
        start = value_at + len('""')  # past the empty string
    out.append(text[start:])
    return out


def json_array(items: Iterable[list[str]]) -> bytes:
    """Encoded JSON values (as pieces) as one JSON array, the bytes ``json.dumps`` and requests would send."""
    pieces = ["["]
    for n, item in enumerate(items):
        if n:
            pieces.append(", ")
        pieces += item
    pieces.append("]")
    return "".join(pieces).encode("ascii")
