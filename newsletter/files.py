"""A file's identity on disk: to notice that it changed (edited, replaced) without reading it."""

from __future__ import annotations

from pathlib import Path


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's inode, size and modification time, or None when it cannot be read: an edit moves the
    size or the time, a replacement (a save through a temporary file, an export) the inode."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns
