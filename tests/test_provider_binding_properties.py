"""Property: whatever the user does in whatever order (send, an interrupted send, a provider switch,
``--restart``, another segment, reconcile), no address ever gets two copies through a real provider,
and no eligible address is completed without a real send (docs/sending.md, provider binding).

The CLI runs in-process against the fake providers over real sockets; copies are counted from what
the fake accepted and from the outbox folder.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from fakeproviders import FakeProviders
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.cli import cli

REPO = Path(__file__).resolve().parent.parent
KEY = "prop-key"
ISSUE = "2026-11-30-weekly"
PROVIDERS = ("outbox", "postmark", "mailgun")

OPS = st.one_of(
    st.tuples(st.just("switch"), st.sampled_from(PROVIDERS)),
    st.tuples(st.just("send"), st.sampled_from([None, 1, 2])),
    st.tuples(st.just("interrupt"), st.sampled_from([None, 1])),  # the connection drops after the provider accepted
    st.tuples(st.just("restart"), st.sampled_from([None, "weekly", "founders"])),
    st.tuples(st.just("segment"), st.sampled_from(["weekly", "founders"])),
    st.tuples(st.just("reconcile"), st.none()),
)


class Workspace:
    def __init__(self, root: Path, fake: FakeProviders):
        self.root, self.fake = root, fake
        self.provider = "outbox"
        self.runner = CliRunner()
        for name in ("templates", "subscribers", "issues"):
            shutil.copytree(REPO / name, root / name)
        shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")

    def env(self) -> dict[str, str]:
        env = {"NEWSLETTER_SECRET": "prop-secret", "NEWSLETTER_PROVIDER_MAX_ATTEMPTS": "1"}
        if self.provider != "outbox":
            env |= {"NEWSLETTER_PROVIDER_NAME": self.provider, "NEWSLETTER_PROVIDER_API_BASE": self.fake.url,
                    "NEWSLETTER_PROVIDER_DOMAIN": self.fake.domain, "NEWSLETTER_API_KEY": KEY,
                    "NEWSLETTER_PROVIDER_RATE_LIMIT": "1000"}
        return env

    def run(self, *args: str) -> int:
        result = self.runner.invoke(cli, list(args), env=self.env(), catch_exceptions=False)
        assert result.exit_code in (0, 1, 3, 4), result.output
        return result.exit_code

    def status(self) -> dict:
        result = self.runner.invoke(cli, ["status", ISSUE, "--json"], env=self.env(), catch_exceptions=False)
        return json.loads(result.stdout) if result.exit_code == 0 else {}

    def rows(self) -> dict[str, str]:
        path = self.root / ".newsletter" / "ledger.sqlite3"
        if not path.exists():
            return {}
        db = sqlite3.connect(path)
        try:
            return dict(db.execute("SELECT email, state FROM deliveries WHERE issue_id = ?", (ISSUE,)))
        finally:
            db.close()

    def segment(self) -> str:
        db = sqlite3.connect(self.root / ".newsletter" / "ledger.sqlite3")
        try:
            return db.execute("SELECT segment FROM issues WHERE issue_id = ?", (ISSUE,)).fetchone()[0]
        finally:
            db.close()

    def eligible(self, segment: str) -> set[str]:
        with open(self.root / "subscribers" / "subscribers.csv", newline="") as fh:
            return {row["email"].lower() for row in csv.DictReader(fh)
                    if row["status"] == "subscribed" and (not segment or segment in row["tags"].split(";"))}

    def outbox_copies(self) -> Counter:
        folder = self.root / "outbox" / ISSUE
        return Counter(p.name.split("--")[0] for p in folder.glob("*.eml")) if folder.exists() else Counter()


def real_copies(fake: FakeProviders) -> Counter:
    return Counter(a.to.lower() for a in fake.delivered() if not a.test)


def check_no_second_real_copy(ws: Workspace) -> None:
    copies = real_copies(ws.fake)
    assert all(n == 1 for n in copies.values()), f"second real copies: {copies}"
    bound = ws.status().get("provider", "")
    for email, state in ws.rows().items():
        if state == "sent" and bound and not bound.startswith(("outbox", "unknown")):
            assert copies[email] == 1, f"{email} recorded sent through {bound} without a real copy"
        if state == "sent" and bound == "outbox":
            assert ws.outbox_copies()[email] >= 1, f"{email} recorded sent to the outbox without a file"


def apply(ws: Workspace, op: str, arg) -> None:
    if op == "switch":
        ws.provider = arg
    elif op == "send":
        ws.run("send", ISSUE, "--yes", *(["--limit", str(arg)] if arg else []))
    elif op == "interrupt":
        if ws.provider != "outbox":
            ws.fake.inject("drop")
        ws.run("send", ISSUE, "--yes", *(["--limit", str(arg)] if arg else []))
        ws.fake.clear_faults()
    elif op == "restart":
        ws.run("send", ISSUE, "--yes", "--restart", *(["--segment", arg] if arg else []))
    elif op == "segment":
        ws.run("send", ISSUE, "--yes", "--segment", arg)
    elif op == "reconcile":
        ws.run("reconcile", ISSUE)


def finish(ws: Workspace) -> None:
    """The user's last move: send it for real, through the plan's own provider when it has a real one."""
    bound = ws.status().get("provider", "")
    if bound in ("", "outbox"):
        ws.provider = "postmark"
        ws.run("send", ISSUE, "--yes", "--restart")
    else:
        ws.provider = bound.split(":")[0]
        ws.run("reconcile", ISSUE)
        ws.run("send", ISSUE, "--yes")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=5))
def test_no_second_real_copy_and_no_silent_completion(ops):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the ledger fsyncs every commit: tmpfs keeps it quick
    with FakeProviders(api_key=KEY) as fake, tempfile.TemporaryDirectory(dir=shm) as tmp:
        ws = Workspace(Path(tmp), fake)
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for op, arg in ops:
                apply(ws, op, arg)
                check_no_second_real_copy(ws)
            finish(ws)
            check_no_second_real_copy(ws)
            rows, copies = ws.rows(), real_copies(fake)
            for email in ws.eligible(ws.segment()):
                state = rows.get(email)
                assert state in ("sent", "unknown"), f"{email} eligible, left {state} after the real send ({ops})"
                if state == "sent":
                    assert copies[email] == 1, f"{email} completed without a real copy ({ops})"
        finally:
            os.chdir(cwd)
