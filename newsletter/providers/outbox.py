"""The ``outbox`` provider: every message becomes an RFC 5322 ``.eml`` file (Django's filebased backend).

It is the embedded default, so a new workspace can run the whole send path
(plan, lease, claims, batches, rate limit, ledger) with no account, and tests
can count what was "delivered".

One file per delivery, ``outbox/<issue>/<address>--<batch id>.eml``, written
atomically (temporary file, fsync, rename): a file is either complete or
absent. Retrying a batch under the same batch id rewrites the same files, so
the outbox honours idempotency keys the way Resend does; a second delivery to
an address under another batch would show up as a second file, which is what
the exactly-once tests look for.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..compile.mime import sender_domain, to_mime
from ..errors import NoAnswer
from ..models import Outcome
from ..subscribers.csvfile import fsync_dir
from .base import Batch, Provider

if TYPE_CHECKING:  # only named: the outbox writes files, and `build` loads no HTTP library through it
    import requests

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def outbox_name(address: str, batch_id: str) -> str:
    """File name of one delivery; addresses are made filesystem-safe, never ambiguous for real addresses."""
    return f"{_UNSAFE.sub('_', address.lower())}--{batch_id}.eml"


@dataclass(frozen=True)
class Files:
    """The outbox's request: each message of a batch as the bytes of its .eml file, by file name."""

    folder: Path
    files: tuple[tuple[str, bytes], ...]


class OutboxProvider(Provider):
    """The shared send path (:meth:`Provider.send_batch`) with files for a transport: ``build_request``
    writes each message as MIME (a recipient whose headers cannot be written fails before any file is
    written), ``transmit`` writes the files, ``parse_response`` says each was sent."""

    name = "outbox"
    max_batch = 50
    default_rate = 0.0  # local files: no rate limit unless configured
    idempotent = True  # the same batch id rewrites the same files
    idempotency_window = math.inf  # files stay where they are: a batch id never expires
    needs_api_key = False
    delivers_through_session = False
    stats_note = "the outbox only writes .eml files: nothing is delivered, opened or clicked"

    def folder(self, issue_id: str) -> Path:
        return self.settings.workspace_path("outbox") / issue_id

    def build_request(self, batch: Batch) -> Files:
        domain = sender_domain(batch.messages[0].sender) if batch.messages else "localhost"
        return Files(self.folder(batch.issue_id), tuple(
            (outbox_name(message.to, batch.batch_id),
             to_mime(message, message_id=f"<{batch.batch_id}.{n}@{domain}>").as_bytes())
            for n, message in enumerate(batch.messages)))

    def transmit(self, request: Files, session: requests.Session | None) -> Files:
        try:
            request.folder.mkdir(parents=True, exist_ok=True)
            for name, data in request.files:
                _write(request.folder, name, data)
            fsync_dir(request.folder)  # the renames are durable before we report "sent"
        except OSError as err:
            # Some files may exist: in doubt, and the same batch id rewrites the same files.
            raise NoAnswer(f"outbox: cannot write to {request.folder}: {err.strerror}") from err
        return request

    def parse_response(self, batch: Batch, response: Files) -> list[Outcome]:
        return [Outcome(message.to, "sent", provider_id=name)
                for message, (name, _) in zip(batch.messages, response.files)]


def _write(folder: Path, name: str, data: bytes) -> None:
    """One file, atomically: a temporary file, fsync, rename."""
    temp = folder / f".{name}.tmp"
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, folder / name)
