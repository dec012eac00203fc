"""Shared fixtures: a clean environment and a fresh example workspace per test."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent

# A shell that starts a job in the background without job control (`cmd &` in a script) starts it with
# SIGINT ignored, and every process it spawns inherits that: the Ctrl-C tests' subprocesses would never
# see their Ctrl-C. Catching it here lets each child start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No NEWSLETTER_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A copy of the repository's example workspace, as the current folder."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    for folder in ("templates", "subscribers", "issues"):
        shutil.copytree(REPO / folder, root / folder)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def run(workspace):
    """Invoke the CLI in the workspace: ``run("build", "issues/x.md")`` -> click Result."""
    from newsletter.cli import cli

    runner = CliRunner()

    def invoke(*args, env=None, input=None):
        return runner.invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server for the session (tests/pgserver.py), or the reason there is none."""
    from pgserver import start_cluster

    cluster, reason = start_cluster()
    yield cluster, reason
    if cluster:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """The URL of a fresh, empty PostgreSQL database; skips (fails in CI) where no server can be started."""
    from pgserver import unavailable

    cluster, reason = pg_cluster
    if cluster is None:
        unavailable(reason)
    return cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_backend(request, monkeypatch) -> str:
    """Run the test on each ledger: the workspace's SQLite file, then a fresh PostgreSQL database.

    For ``postgresql`` it sets ``NEWSLETTER_LEDGER_URL``, which the CLI in the test reads as a user's
    environment would; ``helpers.workspace_ledger`` opens the same ledger.
    """
    if request.param == "postgresql":
        monkeypatch.setenv("NEWSLETTER_LEDGER_URL", request.getfixturevalue("pg_url"))
    return request.param
