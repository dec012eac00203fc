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
from pathlib import Path

import requests

from ..compile.mime import sender_domain, to_mime
from ..errors import ProviderError
from ..models import Outcome
from ..subscribers.csvfile import fsync_dir
from .base import Batch, Provider

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


def outbox_name(address: str, batch_id: str) -> str:
    """File name of one delivery; addresses are made filesystem-safe, never ambiguous for real addresses."""
    return f"{_UNSAFE.sub('_', address.lower())}--{batch_id}.eml"


class OutboxProvider(Provider):
    name = "outbox"
    max_batch = 50
    default_rate = 0.0  # local files: no rate limit unless configured
    idempotent = True  # the same batch id rewrites the same files
    idempotency_window = math.inf  # files stay where they are: a batch id never expires
    needs_api_key = False
    stats_note = "the outbox only writes .eml files: nothing is delivered, opened or clicked"

    def folder(self, issue_id: str) -> Path:
        return self.settings.workspace_path("outbox") / issue_id

    def send_batch(self, batch: Batch, session: requests.Session | None = None) -> list[Outcome]:
        folder = self.folder(batch.issue_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            domain = sender_domain(batch.messages[0].sender) if batch.messages else "localhost"
            outcomes = [self._write(folder, batch, n, message, domain) for n, message in enumerate(batch.messages)]
            fsync_dir(folder)  # the renames are durable before we report "sent"
        except OSError as err:
            # Some files may exist: the caller treats this as in doubt and retries the same batch id.
            raise ProviderError(f"outbox: cannot write to {folder}: {err.strerror}", retryable=True) from err
        return outcomes

    def _write(self, folder: Path, batch: Batch, n: int, message, domain: str) -> Outcome:
        name = outbox_name(message.to, batch.batch_id)
        data = to_mime(message, message_id=f"<{batch.batch_id}.{n}@{domain}>").as_bytes()
        temp = folder / f".{name}.tmp"
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, folder / name)
        return Outcome(message.to, "sent", provider_id=name)
