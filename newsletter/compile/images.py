"""An issue's own images: files in ``issues/`` (docs/authoring.md, "Images").

A Markdown image whose ``src`` is a relative path (``images/chart.png``, or ``chart.png`` next to the
issue) is a file under ``issues/``. ``newsletter archive`` publishes every image there into its folder
(``[newsletter] archive_dir``), at the same path, so it is served as ``<site_url>/<path>``; the built email
uses that absolute https URL, with the width and height read from the file. Building (and sending) refuses
an image whose published copy is missing or differs from the file: run ``newsletter archive`` first and
upload the folder.

Width and height come from a few bytes of the file's header (PNG, JPEG, GIF, WebP), read here rather
than with Pillow: a 4 MB dependency for four fixed header layouts would be most of the install.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..errors import IssueError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
DISPLAY_WIDTH = 600  # the layouts' content width: a wider (retina) image is shown at this width
MAX_BYTES = 1024 * 1024  # lint: larger images are slow on mobile data
MAX_WIDTH = 1200  # lint: twice the display width is enough for any screen


@dataclass(frozen=True)
class LocalImage:
    """One image file of an issue, as the email uses it."""

    src: str  # as written in the issue
    path: Path  # the file
    rel: str  # its path under issues/, which is its path in the archive and under site_url
    url: str  # the published copy's absolute URL ("" without site_url)
    width: int
    height: int
    size: int  # bytes
    line: int | None = None  # in the issue

    @property
    def display(self) -> tuple[int, int]:
        """The width and height the email gives the <img>: the file's, scaled down to the content width."""
        if self.width <= DISPLAY_WIDTH:
            return self.width, self.height
        return DISPLAY_WIDTH, max(1, round(self.height * DISPLAY_WIDTH / self.width))


def is_local(src: str) -> bool:
    """A path to a file, not a URL (``https:``, ``cid:``, ``data:``, ``//host``) or a page anchor."""
    return bool(src) and not urlsplit(src).scheme and not src.startswith(("//", "/", "#"))


class ImageResolver:
    """Turns an issue's relative image paths into published URLs (the callback :func:`render_body` takes)."""

    def __init__(self, issue_path: str, issues_dir: Path, site_url: str, archive_dir: Path, *,
                 require_published: bool = True):
        self.issue_path = issue_path
        self.issue_dir = Path(issue_path).resolve().parent
        self.issues_dir = issues_dir.resolve()
        self.site_url = site_url.rstrip("/")
        self.archive_dir = archive_dir
        self.require_published = require_published
        self.used: list[LocalImage] = []

    def __call__(self, src: str, line: int | None) -> LocalImage | None:
        if not is_local(src):
            return None
        image = self.read(src, line)
        if not self.site_url:
            raise IssueError(f"image {src!r} is a file: it needs [newsletter] site_url to be published at",
                             path=self.issue_path, line=line,
                             hint="set site_url in newsletter.toml to the address the archive folder is served "
                                  "from, then run `newsletter archive`")
        if self.require_published:
            self._check_published(image)
        self.used.append(image)
        return image

    def read(self, src: str, line: int | None) -> LocalImage:
        """The file ``src`` names, measured; :class:`IssueError` when it is missing or not an image."""
        path = (self.issue_dir / unquote(urlsplit(src).path)).resolve()
        where = dict(path=self.issue_path, line=line)
        if not path.is_relative_to(self.issues_dir):
            raise IssueError(f"image {src!r} is outside {self.issues_dir.name}/", **where,
                             hint="keep an issue's images in issues/images/ (or next to the issue)")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise IssueError(f"image {src!r} is not a PNG, JPEG, GIF or WebP file", **where,
                             hint="email clients show those four; convert it")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IssueError(f"image {src!r}: there is no {path}", **where,
                             hint="check the path; it is relative to the issue's folder") from None
        size = image_size(data)
        if size is None:
            raise IssueError(f"image {src!r}: {path.name} is not a readable {path.suffix[1:].upper()} file", **where,
                             hint="save it again as PNG, JPEG, GIF or WebP")
        rel = path.relative_to(self.issues_dir).as_posix()
        url = f"{self.site_url}/{quote(rel)}" if self.site_url else ""
        return LocalImage(src, path, rel, url, size[0], size[1], len(data), line)

    def _check_published(self, image: LocalImage) -> None:
        copy = self.archive_dir / image.rel
        if not copy.is_file() or _digest(copy) != _digest(image.path):
            state = "is not published" if not copy.is_file() else "has changed since it was published"
            raise IssueError(f"image {image.src!r} {state}: the email would link to {image.url}",
                             path=self.issue_path, line=image.line,
                             hint=f"run `newsletter archive` (it copies issues' images into {self.archive_dir}/) "
                                  "and upload that folder to site_url, then build again")


def _digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def image_files(issues_dir: Path) -> list[Path]:
    """Every image under ``issues/`` (what ``archive`` publishes), hidden folders and files left out."""
    if not issues_dir.is_dir():
        return []
    return sorted(p for p in issues_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(issues_dir).parts))


# -- width and height from the file's header -------------------------------------------------------
def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, GIF, JPEG or WebP image, or None when the header is not one of those."""
    for reader in (_png, _gif, _jpeg, _webp):
        size = reader(data)
        if size is not None:
            return size if size[0] > 0 and size[1] > 0 else None
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def _gif(data: bytes) -> tuple[int, int] | None:
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers


def _jpeg(data: bytes) -> tuple[int, int] | None:
    """The first start-of-frame segment's size, walking the segments from the SOI marker."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if marker in _SOF and at + 9 <= len(data):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None
