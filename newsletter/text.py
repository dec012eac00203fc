"""What counts as a line break in a one-line value (docs/architecture.md, security).

One definition for everyone who refuses them: the config (header values in
``newsletter.toml``), the list (names and addresses), compiling and the send path.
"""

from __future__ import annotations

import re

# What str.splitlines() splits at: the email package refuses them all in a header value.
_LINE_BREAK = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


def first_line_break(value: str) -> str | None:
    """The first character of ``value`` that would break a header line, or None."""
    found = _LINE_BREAK.search(value)
    return found.group() if found else None


def has_line_break(value: str) -> bool:
    """Whether ``value`` would break a header line: CR, LF or any other line separator."""
    return _LINE_BREAK.search(value) is not None
