"""A multipart/form-data body (RFC 7578) built by hand: the bytes requests and urllib3 write for
``files=[(name, (None, value)), ...]``, plain form fields without file names.

Mailgun takes a batch as one form field per recipient (``to``) beside the shared ones: urllib3
builds an object and renders its headers for each field, several microseconds a recipient; a
part here is one formatted string.
"""

from __future__ import annotations

import os
from typing import Iterable

# What HTML5 (and urllib3) write for a quote or a line break inside a form field's name.
_NAME_ESCAPES = str.maketrans({'"': "%22", "\r": "%0D", "\n": "%0A"})


def multipart_form(fields: Iterable[tuple[str, str]]) -> tuple[bytes, str]:
    """The body of these (name, value) fields, in order, and its Content-Type (with the boundary)."""
    boundary = os.urandom(16).hex()  # as urllib3 draws it: no value will hold it by chance
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name.translate(_NAME_ESCAPES)}"\r\n\r\n'
             f"{value}\r\n" for name, value in fields]
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode("utf-8"), f"multipart/form-data; boundary={boundary}"
