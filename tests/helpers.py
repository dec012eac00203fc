"""Test scaffolding shared by several modules: canned provider answers, adapters built from flags,
one batch sent through a fresh session, a clock that moves only when the code sleeps, and the ledger's
clock moved by hand."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from newsletter import config
from newsletter.errors import ProviderError
from newsletter.ledger import open_url
from newsletter.ledger import postgres as ledger_postgres
from newsletter.ledger.base import address_key
from newsletter.ledger import sqlite as ledger_sqlite
from newsletter.providers import provider_class
from newsletter.providers.base import Provider

FIXTURES = Path(__file__).parent / "fixtures"
BOTH_LEDGERS = pytest.mark.usefixtures("ledger_backend")  # the test runs on SQLite and on PostgreSQL (conftest.py)


def canned(provider: str, name: str) -> Any:
    """A provider's documented answer kept in ``tests/fixtures/<provider>/<name>``."""
    return json.loads((FIXTURES / provider / name).read_text(encoding="utf-8"))


def make_adapter(name: str, key: str | None, *, env: dict[str, str] | None = None, **provider: Any) -> Provider:
    """The ``name`` adapter with ``[provider]`` settings given as keywords (``api_base=...``) and the
    environment ``env`` (AWS credentials for SES)."""
    flags = {"provider.name": name, **{f"provider.{k}": v for k, v in provider.items()}}
    return provider_class(name)(config.resolve({}, env or {}, flags, source=None), key)


def send(provider: Provider, batch) -> list:
    """One batch through the shared send path, in a session of its own."""
    with requests.Session() as session:
        return provider.send_batch(batch, session)


def sent_request(provider: Provider, batch) -> requests.PreparedRequest:
    """The first request sending ``batch`` made, as ``responses`` (active in the test) recorded it."""
    send(provider, batch)
    return responses.calls[0].request


def refusal(provider: Provider, batch, kind: type[Exception] = ProviderError) -> Exception:
    """The ``kind`` of error that sending ``batch`` raises (the test fails when it raises none)."""
    with pytest.raises(kind) as caught:
        send(provider, batch)
    return caught.value


class SleepClock:
    """Time that passes only when the code under test sleeps; ``waits`` records each sleep."""

    def __init__(self) -> None:
        self.now, self.waits = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class LedgerClock:
    """The ledger's time function, moved by hand: ``clock.at("2026-11-30T09:00:00")`` (UTC)."""

    def __init__(self, monkeypatch) -> None:
        self.now = "2026-11-30T09:00:00+00:00"
        for module in (ledger_sqlite, ledger_postgres):  # the same seam in both ledgers
            monkeypatch.setattr(module, "_now", lambda: self.now)

    def at(self, when: str) -> None:
        self.now = when + "+00:00"


def workspace_ledger(workspace: Path):
    """The ledger the CLI in the test uses: ``NEWSLETTER_LEDGER_URL`` (the ``ledger_backend`` fixture sets it for
    PostgreSQL), else the workspace's SQLite file."""
    return open_url(os.environ.get("NEWSLETTER_LEDGER_URL") or str(workspace / ".newsletter" / "ledger.sqlite3"))


def ledger_env() -> dict[str, str]:
    """The ledger the ``ledger_backend`` fixture chose (PostgreSQL), for a run given an environment of its own."""
    url = os.environ.get("NEWSLETTER_LEDGER_URL")
    return {"NEWSLETTER_LEDGER_URL": url} if url else {}


def ledger_tables(workspace: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the ledger the test uses (see ``workspace_ledger``), sorted: to compare
    before and after a refused run, or to look for an address anywhere in it."""
    url = os.environ.get("NEWSLETTER_LEDGER_URL")
    if url:
        import psycopg

        with psycopg.connect(url) as db:
            names = [t for (t,) in db.execute("SELECT table_name FROM information_schema.tables "
                                              "WHERE table_schema = 'public' ORDER BY table_name")]
            return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in names}
    import sqlite3

    db = sqlite3.connect(workspace / ".newsletter" / "ledger.sqlite3")
    try:
        names = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in names}
    finally:
        db.close()


def reserve_by_address(ledger, issue_id: str, holder: str, emails: list[str]) -> set[str] | None:
    """``Ledger.reserve`` as a test names the readers: their plan rows' ids looked up (every one must be in
    the plan), the reserved ones named."""
    found = ledger.lookup_rows(issue_id, emails)
    assert set(found) == {address_key(email) for email in emails}, "a reader the test names is not in the plan"
    by_id = {found[address_key(email)].id: email for email in emails}
    reserved = ledger.reserve(issue_id, holder, list(by_id))
    return None if reserved is None else {by_id[row] for row in reserved}


def write_readers(workspace: Path, count: int) -> list[str]:
    """A subscriber list of ``count`` readers (``reader000@example.com``, ``Reader 000``, ...) in the
    workspace; their addresses."""
    addresses = [f"reader{n:03d}@example.com" for n in range(count)]
    rows = ["email,name"] + [f"{a},Reader {n:03d}" for n, a in enumerate(addresses)]
    (workspace / "subscribers" / "subscribers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return addresses


def walk_commands(command, path: str = "newsletter"):
    """``(path, command)`` for the CLI and every command under it, loading lazily loaded commands
    the way click does when one is run (``list_commands`` and ``get_command``)."""
    import click

    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            yield from walk_commands(command.get_command(ctx, name), f"{path} {name}")


def issue_status(run, issue: str, env=None) -> dict:
    """``status ISSUE --json``, less the live workers a PostgreSQL ledger lists (none once its sends have ended)."""
    result = run("status", issue, "--json", env=env)
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found.pop("workers", []) == []
    return found


def connections_taken(port: int, count: int = 64, timeout: float = 1.5) -> int:
    """How many of ``count`` connections to a server on 127.0.0.1 that listens but does not accept yet
    get through: with socketserver's default backlog of 5 the kernel drops the SYNs past the sixth, and
    those connects time out."""
    burst: list[socket.socket] = []
    try:
        for _ in range(count):
            burst.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    except OSError:
        pass
    finally:
        for conn in burst:
            conn.close()
    return len(burst)
