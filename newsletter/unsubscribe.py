"""Signed unsubscribe tokens and the List-Unsubscribe headers.

A token is ``<base64url(email)>.<hmac>``: the unsubscribe endpoint can tell who
clicked without a database, and nobody can unsubscribe someone else.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from urllib.parse import quote

# ``[unsubscribe] url = "provider"``: the provider puts its own link where ``{{ unsubscribe_url }}`` is
# (its placeholder, Provider.unsubscribe_placeholder), adds the List-Unsubscribe headers and records
# who left; ``newsletter suppressions sync`` brings them back into the ledger.
PROVIDER_MANAGED = "provider"
PREVIEW_SECRET = b"newsletter-preview-only"  # proofs, previews and builds without a secret; never for send


def make_token(email: str, secret: bytes) -> str:
    address = email.lower().encode()
    return f"{_b64(address)}.{_b64(_signer(secret).sign(address)[:16])}"


def verify_token(token: str, secret: bytes) -> str | None:
    """The address a token was made for, or None if it was not signed with ``secret``."""
    try:
        encoded, sig = token.split(".", 1)
        address = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, TypeError):  # no ".", or not base64 (binascii.Error is a ValueError)
        return None
    expected = _b64(_signer(secret).sign(address)[:16])
    if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "surrogatepass")):
        return None
    try:
        return address.decode()
    except UnicodeDecodeError:
        return None


def unsubscribe_url(template: str, email: str, secret: bytes) -> str:
    """``[unsubscribe] url`` with ``{token}`` (and ``{email}``) filled for one subscriber."""
    url = template.replace("{token}", make_token(email, secret)) if "{token}" in template else template
    return url.replace("{email}", quote(email, safe="@")) if "{email}" in template else url


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


class _Signer:
    """HMAC-SHA256 (RFC 2104) with the key's two pads hashed once: the same digest as ``hmac``.

    A send signs one token per recipient; ``hmac.new``/``hmac.digest`` set the key up
    again for each one, which costs twice the signing itself.
    """

    def __init__(self, secret: bytes):
        key = (hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret).ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def sign(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=8)
def _signer(secret: bytes) -> _Signer:
    return _Signer(secret)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()
