"""Issue images that are files (docs/authoring.md#images): published by `archive`, linked by the email at
their published URL with width and height from the file, refused by `build` until published; lint's size checks."""

import os
import re
import struct
import zlib
from pathlib import Path

import pytest

from newsletter.compile.images import image_size

ISSUE = "issues/pic.md"
URL = "https://example.com/notes/images/chart.png"


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    """A real PNG (RGB, 8 bits), black or random pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = lambda: b"\x00" + (os.urandom(width * 3) if noise else bytes(width * 3))  # noqa: E731
    pixels = zlib.compress(b"".join(row() for _ in range(height)), 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def webp_extended(width: int, height: int) -> bytes:
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" \
        + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossless(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", 5) + b"\x2f" + bits.to_bytes(4, "little") + b"\x00" * 6
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int, height: int) -> bytes:
    frame = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 4
    body = b"WEBP" + b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("data, size", [
    (png(640, 360), (640, 360)), (gif(320, 200), (320, 200)), (jpeg(1600, 900), (1600, 900)),
    (webp_extended(1280, 720), (1280, 720)), (webp_lossless(300, 150), (300, 150)), (webp_lossy(500, 250), (500, 250)),
    (b"not an image at all", None), (b"\x89PNG\r\n\x1a\n", None), (b"\xff\xd8\xff\xe0\x00\x10JFIF", None),
])
def test_width_and_height_come_from_the_header(data, size):
    assert image_size(data) == size


def write_issue(workspace: Path, src: str = "images/chart.png", alt: str = "Signups by month") -> None:
    (workspace / ISSUE).write_text(f"---\nsubject: Pictures\n---\nHello.\n\n## Chart\n\n![{alt}]({src})\n\nText.\n")


@pytest.fixture
def chart(workspace) -> Path:
    (workspace / "issues/images").mkdir()
    path = workspace / "issues/images/chart.png"
    path.write_bytes(png(900, 450))
    write_issue(workspace)
    return path


def test_build_refuses_until_archive_publishes_the_image_then_links_the_copy(run, workspace, chart):
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {ISSUE}:8: image 'images/chart.png' is not published: the email would link to {URL} "
        f"(run `newsletter archive` (it copies issues' images into archive/) and upload that "
        "folder to site_url, then build again)\n")
    assert not (workspace / "out").exists()

    archived = run("archive")
    assert archived.exit_code == 0, archived.output
    assert (workspace / "archive/images/chart.png").read_bytes() == chart.read_bytes()

    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 0, result.output
    html = (workspace / "out/pic.html").read_text()
    img = re.search(r"<img [^>]*alt=\"Signups by month\"[^>]*>", html).group(0)
    assert f'src="{URL}"' in img
    assert 'width="600"' in img and 'height="300"' in img  # 900 x 450 shown at the layout's 600 px
    assert "images/chart.png\"" not in html.replace(URL, "")  # no relative path left anywhere


def test_a_changed_image_must_be_published_again(run, workspace, chart):
    assert run("archive").exit_code == 0
    chart.write_bytes(png(400, 200))
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 1
    assert "image 'images/chart.png' has changed since it was published" in result.stderr
    assert run("archive").exit_code == 0
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 0, result.output
    assert 'width="400" height="200"' in (workspace / "out/pic.html").read_text()  # smaller: its own size


def test_without_site_url_build_says_what_to_set(run, workspace, chart):
    toml = workspace / "newsletter.toml"
    toml.write_text(toml.read_text().replace('site_url = "https://example.com/notes"', 'site_url = ""'))
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {ISSUE}:8: image 'images/chart.png' is a file: it needs [newsletter] site_url to be published "
        "at (set site_url in newsletter.toml to the address the archive folder is served from, then run "
        "`newsletter archive`)\n")


@pytest.mark.parametrize("src, message", [
    ("images/missing.png", "image 'images/missing.png': there is no {issues}/images/missing.png (check the path; "
                           "it is relative to the issue's folder)"),
    ("../newsletter.toml", "image '../newsletter.toml' is outside issues/ (keep an issue's images in "
                           "issues/images/ (or next to the issue))"),
    ("notes.txt", "image 'notes.txt' is not a PNG, JPEG, GIF or WebP file (email clients show those four; "
                  "convert it)"),
    ("fake.png", "image 'fake.png': fake.png is not a readable PNG file (save it again as PNG, JPEG, GIF or WebP)"),
])
def test_a_bad_image_file_is_named_with_its_line(run, workspace, src, message):
    (workspace / "issues/notes.txt").write_text("x")
    (workspace / "issues/fake.png").write_text("not a png")
    write_issue(workspace, src)
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 1
    issues = (workspace / "issues").resolve()
    assert result.stderr == f"Error: {ISSUE}:8: {message.format(issues=issues)}\n"


def test_an_image_next_to_the_issue_is_published_at_its_path(run, workspace):
    (workspace / "issues/photo.jpg").write_bytes(jpeg(480, 320))
    write_issue(workspace, "photo.jpg", "A photo")
    assert run("archive").exit_code == 0
    assert (workspace / "archive/photo.jpg").is_file()
    assert run("build", ISSUE, "--out", "out").exit_code == 0
    html = (workspace / "out/pic.html").read_text()
    assert 'src="https://example.com/notes/photo.jpg"' in html and 'width="480" height="320"' in html


def test_archive_pages_use_the_published_url(run, workspace, chart):
    assert run("archive", "pic").exit_code == 0
    page = (workspace / "archive/pic.html").read_text()
    assert f'src="{URL}"' in page


def test_lint_flags_a_heavy_or_too_wide_image_with_its_line(run, workspace, chart):
    chart.write_bytes(png(1300, 280, noise=True))  # > 1 MB of incompressible pixels, and wider than 1200 px
    assert chart.stat().st_size > 1024 * 1024
    assert run("archive").exit_code == 0
    result = run("lint", ISSUE)
    lines = [line for line in result.output.splitlines() if "chart.png" in line]
    assert lines == [
        f"{ISSUE}:8: warning: image 'images/chart.png' is 1.0 MB: slow on mobile data (keep images under 1 MB; "
        "compress it or save it as JPEG) [image]",
        f"{ISSUE}:8: warning: image 'images/chart.png' is 1300 px wide: more than the 1200 px a 600 px email "
        "needs even on a retina screen (resize it) [image]"]
    chart.write_bytes(png(1200, 600))
    assert run("archive").exit_code == 0
    assert "chart.png" not in run("lint", ISSUE).output


def test_an_image_without_alt_is_still_flagged(run, workspace, chart):
    write_issue(workspace, alt="")
    assert run("archive").exit_code == 0
    result = run("lint", ISSUE)
    assert f"warning: image '{URL}' has no alt text (many clients block images) [image]" in result.output


def test_send_refuses_an_unpublished_image_and_sends_nothing(run, workspace, chart):
    result = run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET": "test-secret"})
    assert result.exit_code == 1
    assert f"Error: {ISSUE}:8: image 'images/chart.png' is not published" in result.stderr
    outbox = workspace / "outbox"
    assert not outbox.exists() or not any(outbox.rglob("*.eml"))
