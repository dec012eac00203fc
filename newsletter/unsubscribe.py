"""Unsubscribe tokens and the List-Unsubscribe headers (docs/unsubscribe.md).

A token is ``base64url(version | nonce | AES-256-GCM(issue id LF address))``: authenticated
encryption with keys derived from the secret (HKDF-SHA256), so a link shows nothing of the
reader, and nobody can make one for someone else or change one without it being refused.
The 96-bit nonce is synthetic (SIV-style): an HMAC of the plaintext under a second key, so
the same reader and issue always get the same token, and two different plaintexts never
share a nonce (short of a 96-bit collision). Opening one checks GCM's tag (constant time,
inside OpenSSL) and that the nonce is the one the plaintext calls for.

AES-GCM-SIV or AES-SIV would give the same determinism, but cost 5-10 µs a token in the
``cryptography`` package (a key schedule per call); this costs ~2 µs, what the HMAC of the
old readable ``base64(address).hmac`` token cost, and keeps a send's hot path at ~10 µs.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import quote


# ``[unsubscribe] url = "provider"``: the provider puts its own link where ``{{ unsubscribe_url }}`` is
# (its placeholder, Provider.unsubscribe_placeholder), adds the List-Unsubscribe headers and records
# who left; ``newsletter suppressions sync`` brings them back into the ledger.
PROVIDER_MANAGED = "provider"
PREVIEW_SECRET = b"newsletter-preview-only"  # proofs, previews and builds without a secret; never for send
OLD_SECRET_SUFFIX = "_OLD"  # $NEWSLETTER_SECRET_OLD: the previous secret, still accepted (rotation)

_VERSION = b"\x01"
_NONCE = 12
_TAG = 16
MAX_TOKEN_CHARS = 1024  # far above any real token (an address is at most 254 bytes): refuse before decoding


@dataclass(frozen=True)
class TokenFacts:
    """Who a valid token stands for: the address (lower-cased) and the issue its link was sent with
    ("" for a link not sent with an issue, such as a confirmation mail)."""

    email: str
    issue_id: str


def make_token(email: str, secret: bytes, issue_id: str = "") -> str:
    return _sealer(secret).seal(_token_text(email, issue_id))


def _token_text(email: str, issue_id: str) -> bytes:
    """What a token seals: the issue it came from and the reader's address (read back by open_token)."""
    return f"{issue_id}\n{email.lower()}".encode()


def open_token(token: str, secrets: Iterable[bytes]) -> TokenFacts | None:
    """What ``token`` stands for if one of ``secrets`` (the current one, then an old one) made it;
    None for anything else: tampered, truncated, malformed, or made with another secret."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        raw = binascii.a2b_base64(token.translate(_FROM_URLSAFE) + "=" * (-len(token) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 1 + _NONCE + _TAG + 1 or raw[:1] != _VERSION:
        return None
    for secret in secrets:
        plain = _sealer(secret).open(raw)
        if plain is not None:
            issue_id, sep, email = plain.partition("\n")
            return TokenFacts(email, issue_id) if sep and email else None
    return None


def unsubscribe_url(template: str, email: str, secret: bytes, issue_id: str = "") -> str:
    """``[unsubscribe] url`` with ``{token}`` (and ``{email}``) filled for one subscriber and issue."""
    url = template.replace("{token}", make_token(email, secret, issue_id)) if "{token}" in template else template
    return url.replace("{email}", quote(email, safe="@")) if "{email}" in template else url


def url_maker(template: str, secret: bytes, issue_id: str = "") -> Callable[[str], str]:
    """``lambda email: unsubscribe_url(template, email, secret, issue_id)``, with what does not depend on the
    reader done once: the send loop makes one URL per recipient."""
    before, token, after = template.partition("{token}")
    if not token or "{token}" in after or "{email}" in template:
        return lambda email: unsubscribe_url(template, email, secret, issue_id)
    seal = _sealer(secret).seal
    return lambda email: f"{before}{seal(_token_text(email, issue_id))}{after}"


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


class _Sealer:
    """The two keys of one secret, derived once (a send seals one token per recipient)."""

    def __init__(self, secret: bytes):
        # cryptography loads only where a token is made or read: commands that just name
        # PROVIDER_MANAGED (`status`, through the providers' table) start without it
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                    info=b"newsletter unsubscribe token v1").derive(secret)
        self._aead = AESGCM(keys[:32])
        self._nonces = _Signer(keys[32:])

    def seal(self, plain: bytes) -> str:
        nonce = self._nonces.sign(plain)[:_NONCE]
        return _b64(_VERSION + nonce + self._aead.encrypt(nonce, plain, _VERSION))

    def open(self, raw: bytes) -> str | None:
        from cryptography.exceptions import InvalidTag

        nonce, sealed = raw[1:1 + _NONCE], raw[1 + _NONCE:]
        try:
            plain = self._aead.decrypt(nonce, sealed, _VERSION)
        except InvalidTag:
            return None
        # Authentic already; a nonce other than the plaintext's own was not made by make_token.
        if self._nonces.sign(plain)[:_NONCE] != nonce:
            return None
        try:
            return plain.decode()
        except UnicodeDecodeError:
            return None


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
def _sealer(secret: bytes) -> _Sealer:
    return _Sealer(secret)


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()
