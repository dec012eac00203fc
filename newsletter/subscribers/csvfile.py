"""CSV files the way people keep them, read and rewritten without surprises.

Reading (:func:`read_records`) accepts UTF-8 with or without a BOM, CRLF or LF
line ends, quoted values with delimiters, quotes and line breaks, and a `,`,
`;` or tab delimiter found in the header row. Each :class:`Record` keeps its
exact text, so a rewrite copies untouched rows byte for byte and a diff shows
only what changed. A file that is not UTF-8 is refused with the line, column
and byte offset where decoding failed.

Writing (:class:`AtomicWriter`) goes to a temporary file in the same folder,
is fsynced and renamed over the original; :func:`locked` serialises writers
with an advisory lock so that two of them never lose an update.

Errors are :class:`~newsletter.errors.SubscriberError` (the only CSV files we keep are lists).
"""

from __future__ import annotations

import codecs
import csv
import errno
import fcntl
import io
import itertools
import os
import re
import stat
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, TextIO

from ..errors import SubscriberError

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}  # in order of preference on a tie
LOCK_TIMEOUT = 30.0  # seconds a writer waits for another one


@dataclass(frozen=True)
class Dialect:
    """How a file is written, so that rows we add or change look like the rest."""

    delimiter: str = ","
    lineterminator: str = "\n"
    bom: bool = False


class Record(NamedTuple):
    """One CSV record: its first line, its values (None when malformed) and its exact text."""

    line: int
    fields: list[str] | None
    raw: str
    error: str = ""  # why ``fields`` is None
    end: int = 0  # a malformed record's last line (a broken quote may swallow the lines after it); 0 otherwise


@contextmanager
def read_records(path: Path, *, keep_raw: bool = False) -> Iterator[tuple[Dialect, Iterator[Record]]]:
    """Open ``path`` and yield its dialect and a stream of its records (the header is the first).

    ``keep_raw``: each record keeps its exact text (to rewrite the file); else ``raw`` is "" and
    reading costs a third less (a send reads the list in full).
    """
    with open(path, "rb") as probe:
        bom = probe.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
    with open(path, encoding="utf-8-sig", newline="") as fh:
        try:
            first = fh.readline()
        except UnicodeDecodeError:
            raise decoding_error(path) from None
        dialect = Dialect(_delimiter(first, path), _line_end(first), bom)
        yield dialect, _records(path, fh, first, dialect.delimiter, keep_raw=keep_raw)


def _records(path: Path, fh: TextIO, first: str, delimiter: str, *, keep_raw: bool) -> Iterator[Record]:
    consumed: list[str] = []  # the physical lines of the record being read (only with keep_raw)

    def lines() -> Iterator[str]:
        for line in itertools.chain((first,) if first else (), fh):
            consumed.append(line)
            yield line

    source = lines() if keep_raw else itertools.chain((first,) if first else (), fh)
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise decoding_error(path) from None
        except csv.Error as err:
            end = reader.line_num
            inside = f"line {end} is" if end == start + 1 else f"lines {start + 1}-{end} are"
            spans = f"; it runs to line {end}, so {inside} inside it" if end > start else ""
            yield Record(start, None, "".join(consumed), _csv_error(str(err)) + spans, end)
        else:
            # ",,," is a row a spreadsheet left after its cells were cleared: blank, as an empty line is
            yield Record(start, fields if any(fields) else [], "".join(consumed))
        consumed.clear()
        start = reader.line_num + 1


def _csv_error(message: str) -> str:
    if message.startswith(("unexpected end of data", "field larger than field limit")):
        return ("a quoted value that starts on this line is never closed "
                f"(close the quote, or double a quote inside a value: \"\"; csv: {message})")
    return f"malformed CSV: {message} (a quote inside a quoted value must be doubled: \"\")"


def _delimiter(header: str, path: Path) -> str:
    """The header row's delimiter: the candidate that splits it into the most columns."""
    counts = {d: len(next(csv.reader([header], delimiter=d), [])) for d in DELIMITERS}
    best = max(DELIMITERS, key=counts.__getitem__)
    if counts[best] == 1 and (other := _OTHER_SEPARATOR.search(header)):
        raise SubscriberError(
            f"the header row {header.strip()!r} seems to be separated by {other.group()!r}: expected ',' "
            "(';' and tab are recognised too)", path=str(path), line=1,
            hint="save the file as CSV with a comma delimiter")
    return best  # a single column (a list of addresses) reads the same with any delimiter


_OTHER_SEPARATOR = re.compile(r"[|:^~!#$%&*+=/\\]")


def _line_end(line: str) -> str:
    for ending in ("\r\n", "\n", "\r"):
        if line.endswith(ending):
            return ending
    return "\n"


def decoding_error(path: Path) -> SubscriberError:
    """Where ``path`` stops being UTF-8: line, column and byte offset of the first bad byte."""
    offset = line = 0
    with open(path, "rb") as fh:
        for chunk in fh:
            for part in chunk.splitlines(keepends=True):  # \n, \r\n and \r: the lines csv counts
                line += 1
                try:
                    part.decode("utf-8")
                except UnicodeDecodeError as err:
                    skip = len(codecs.BOM_UTF8) if offset == 0 and part.startswith(codecs.BOM_UTF8) else 0
                    column = len(part[skip:err.start].decode("utf-8")) + 1
                    return SubscriberError(
                        f"not UTF-8: cannot decode byte 0x{part[err.start]:02x} at column {column} "
                        f"(byte offset {offset + err.start})", path=str(path), line=line,
                        hint=f"convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > {path.stem}-utf8.csv")
                offset += len(part)
    return SubscriberError("not UTF-8", path=str(path), hint="convert the file to UTF-8")  # pragma: no cover


class RowFormatter:
    """Serialises rows in a file's dialect (minimal quoting), reusing one buffer."""

    def __init__(self, dialect: Dialect):
        self._buffer = io.StringIO()
        # csv quotes a value containing a character of ``lineterminator``: with "\n" alone a
        # value holding a bare "\r" would go out unquoted and split the row when read back.
        self._writer = csv.writer(self._buffer, delimiter=dialect.delimiter, lineterminator="\r\n")
        self._end = dialect.lineterminator

    def __call__(self, cells: Iterable[str]) -> str:
        self._writer.writerow(cells)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text[:-2] + self._end


class AtomicWriter:
    """A temporary file beside ``path``; :meth:`commit` fsyncs it and renames it over ``path``."""

    def __init__(self, path: Path, *, bom: bool = False):
        self.path = path
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.temp = Path(name)
        self._fh = os.fdopen(fd, "w", encoding="utf-8-sig" if bom else "utf-8", newline="")
        self.committed = False

    def write(self, text: str) -> None:
        self._fh.write(text)

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.chmod(self.temp, _mode_for(self.path))
        os.replace(self.temp, self.path)
        self.committed = True
        fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file (nothing to do after :meth:`commit`)."""
        if not self.committed:
            self._fh.close()
            with suppress(FileNotFoundError):
                self.temp.unlink()


def _mode_for(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where the file system cannot fsync a folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems cannot fsync a directory
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextmanager
def locked(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (a ``.NAME.lock`` file beside it) while changing it.

    The lock file is removed on release; a waiter that locked a file that was removed
    meanwhile notices (different inode) and tries again, so two writers never both
    hold it. The kernel drops the lock if the process dies.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _wait_for_lock(fd, deadline, timeout, path, lock_path)
            with suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                    break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        with suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(fd)


def _wait_for_lock(fd: int, deadline: float, timeout: float, path: Path, lock_path: Path) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise SubscriberError("another newsletter command is changing this list and did not finish in "
                                      f"{timeout:g} s", path=str(path),
                                      hint=f"wait for it and try again; it holds {lock_path}") from None
            time.sleep(0.02)
