"""``newsletter status``: what the ledger knows of one issue, or of every issue."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click

from ..config import without_password
from ..errors import IssueError, NewsletterError
from . import App, cli, pass_app

# The ledger, the issue reader (YAML) and the providers' table load when the command runs, not for
# `status --help` (benchmarks/startup.py; tests/test_cli_help.py checks what loads).
if TYPE_CHECKING:
    from ..config import Settings
    from ..ledger.base import Lease, Ledger, Worker
    from ..sending.binding import Route


@cli.command()
@click.argument("issue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object for ISSUE, a list without.")
@click.option("--failed", is_flag=True, help="List failed and unknown recipients with the reason.")
@click.option("--skipped", is_flag=True, help="With ISSUE: list the skipped recipients with the reason (suppressed, "
                                               "unsubscribed since the plan, left the list or the segment).")
@pass_app
def status(app: App, issue: str | None, as_json: bool, failed: bool, skipped: bool) -> None:
    """Delivery counts per state for ISSUE (path or id), or a table of every issue."""
    from ..ledger import open_ledger
    from ..ledger.base import DOUBT_STATES, STATES
    from ..sending.binding import Route

    settings = app.settings()
    with open_ledger(settings, readonly=True) as ledger:
        if issue is None:
            _status_table(ledger, as_json, failed)
            return
        issue_id, missing = issue_id_of(settings, issue)
        if ledger.issue(issue_id) is None:
            if missing is not None:  # neither a file nor an issue the ledger knows: "no such issue"
                raise missing
            if not as_json:
                raise NewsletterError(f"issue {issue_id} has not been sent yet "
                                      f"(nothing in {without_password(ledger.url)})",
                                      hint=f"run `newsletter send {issue}`")
        counts = ledger.counts(issue_id)  # all zero for an issue not sent yet
        record = ledger.issue(issue_id)
        route = Route.planned(record) if record else Route("")
        rows = ledger.rows(issue_id, DOUBT_STATES) if failed else []
        left_out = ledger.rows(issue_id, ("skipped",)) if skipped else []
        if as_json:
            obj = {"issue": issue_id, "total": sum(counts.values()), **{s: counts[s] for s in STATES},
                   "provider": route.key()}
            if record and record.cancelled_at:  # only then: the object's shape is otherwise as documented
                obj["cancelled_at"] = record.cancelled_at
            if ledger.many_workers:
                now = ledger.clock()
                obj["workers"] = [_worker_fields(w, now) for w in _live_workers(ledger, issue_id)]
            if failed:
                obj["failures"] = [{"email": r.email, "state": r.state, "reason": r.reason, "attempts": r.attempts,
                                    "updated_at": r.updated_at} for r in rows]
            if skipped:
                obj["skipped_rows"] = [{"email": r.email, "reason": r.reason, "updated_at": r.updated_at}
                                       for r in left_out]
            click.echo(json.dumps(obj))
            return
        click.echo(f"{issue_id}: " + ", ".join(f"{counts[s]} {s}" for s in STATES) + f" (of {sum(counts.values())})")
        click.echo(f"provider: {_provider_line(route)}")
        if record and record.cancelled_at:
            click.echo(f"cancelled at {record.cancelled_at} (`newsletter cancel`): nobody more is sent it")
        lease = ledger.lease(issue_id)
        if lease:
            click.echo(_lease_line(lease, issue_id))
        if ledger.many_workers:
            now = ledger.clock()
            for line in _worker_lines(_live_workers(ledger, issue_id), now):
                click.echo(line)
        for row in [*rows, *left_out]:
            click.echo(f"{row.state:8} {row.email}  {row.reason}")


def _status_table(ledger: Ledger, as_json: bool, failed: bool) -> None:
    from ..ledger.base import DOUBT_STATES, STATES
    from ..sending.binding import Route

    records = ledger.issues()
    table = [{"issue": r.issue_id, "total": r.planned, **ledger.counts(r.issue_id),
              "provider": Route.planned(r).key()} for r in records]
    if as_json:
        click.echo(json.dumps(table))
        return
    for row in table:
        row["provider"] = row["provider"] or "-"  # not bound yet
    if not table:
        click.echo("No issue has been sent yet.")
        return
    columns = ("issue", "total", *STATES, "provider")
    widths = {c: max(len(c), *(len(str(row[c])) for row in table)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in table:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    if failed:
        for r in records:
            for row in ledger.rows(r.issue_id, DOUBT_STATES):
                click.echo(f"{r.issue_id}  {row.state:8} {row.email}  {row.reason}")


def _provider_line(route: Route) -> str:
    """Where the plan is bound, in words (docs/sending.md, provider binding)."""
    from ..ledger.base import UNKNOWN_PROVIDER
    from ..sending.binding import UNBOUND

    if route.provider == UNKNOWN_PROVIDER:
        return "unknown (recorded by an older newsletter; the next send asks which provider it was)"
    if route.provider == UNBOUND:
        return "not bound yet (nothing was ever sent; the next send binds it)"
    return route.label()


def _lease_line(lease: Lease, issue_id: str) -> str:
    """Who holds the issue, unless that run is gone (killed, or silent on another host)."""
    from ..sending.lease import LEASE_STALE_AFTER

    if lease.holder_alive(stale_after=LEASE_STALE_AFTER):
        return f"being sent now by pid {lease.pid} on {lease.host}"
    since = datetime.fromtimestamp(lease.heartbeat, timezone.utc).isoformat(timespec="seconds")
    return (f"the run by pid {lease.pid} on {lease.host} stopped without finishing (last heard from {since}); "
            f"`newsletter send {issue_id}` resumes it")


def _live_workers(ledger: Ledger, issue_id: str) -> list[Worker]:
    """The workers sending the issue now (docs/team.md): registered, and alive by the reaping rule."""
    from ..sending.lease import LEASE_STALE_AFTER

    return ledger.live_workers(issue_id, stale_after=LEASE_STALE_AFTER)


def _worker_fields(worker: Worker, now: float) -> dict:
    return {"holder": worker.holder, "host": worker.host, "pid": worker.pid,
            "heartbeat_age": round(max(0.0, now - worker.heartbeat), 1),
            "recipients_per_s": round(worker.rate, 1),
            "started": datetime.fromtimestamp(worker.acquired, timezone.utc).isoformat(timespec="seconds")}


def _worker_lines(workers: list[Worker], now: float) -> list[str]:
    if not workers:
        return ["workers: none sending now"]
    lines = [f"workers: {len(workers)} sending now"]
    for w in (_worker_fields(worker, now) for worker in workers):
        lines.append(f"  pid {w['pid']} on {w['host']}: heartbeat {w['heartbeat_age']:g} s ago, "
                     f"{w['recipients_per_s']:g} recipients/s, since {w['started']} ({w['holder']})")
    return lines


def issue_id_of(settings: Settings, ref: str) -> tuple[str, IssueError | None]:
    """An issue's id from its path, file name or id, and why its file could not be read (None when it
    was): an id the ledger knows works even when the file is gone."""
    from ..compile.issue import load_issue, resolve_issue_path

    try:
        return load_issue(resolve_issue_path(ref, settings.workspace_path("issues"))).id, None
    except IssueError as err:
        if "/" in ref or ref.endswith(".md"):
            raise
        return ref, err
