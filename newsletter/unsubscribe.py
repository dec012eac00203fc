"""Signed unsubscribe tokens and the List-Unsubscribe headers.

A token is ``<base64url(email)>.<hmac>``: the unsubscribe endpoint can tell who
clicked without a database, and nobody can unsubscribe someone else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

PREVIEW_SECRET = b"newsletter-preview-only"  # proofs, previews and builds without a secret; never for send


def make_token(email: str, secret: bytes) -> str:
    address = email.lower().encode()
    sig = hmac.new(secret, address, hashlib.sha256).digest()[:16]
    return f"{_b64(address)}.{_b64(sig)}"


def verify_token(token: str, secret: bytes) -> str | None:
    """The address a token was made for, or None if it was not signed with ``secret``."""
    try:
        encoded, sig = token.split(".", 1)
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, TypeError):
        return None
    expected = _b64(hmac.new(secret, address, hashlib.sha256).digest()[:16])
    return address.decode() if hmac.compare_digest(expected, sig) else None


def unsubscribe_url(template: str, email: str, secret: bytes) -> str:
    """``[unsubscribe] url`` with ``{token}`` (and ``{email}``) filled for one subscriber."""
    if not template:
        return ""
    return template.replace("{token}", make_token(email, secret)).replace("{email}", quote(email, safe="@"))


def list_unsubscribe_headers(url: str, mailto: str) -> dict[str, str]:
    """RFC 2369 + RFC 8058 headers; one-click needs an HTTPS URL."""
    targets = []
    if url:
        targets.append(f"<{url}>")
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    headers = {"List-Unsubscribe": ", ".join(targets)} if targets else {}
    if url.startswith("https://"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
