"""``newsletter report``: how an issue did, in numbers and in a picture (docs/sending.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import NewsletterError
from ..ledger.base import STATES
from ..report import ATTRIBUTED, DEFAULT_LAST, OPENS_NOTE, RATES_NOTE, IssueReport, percent, read_reports, utc_text
from ..reportpage import page
from .status import issue_id_of
from . import App, cli


@cli.command()
@click.argument("issue", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object for ISSUE, a list without.")
@click.option("--html", "html_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write ISSUE's report as one self-contained HTML page with its charts (- for standard "
                   "output, the page alone).")
@click.option("--last", "last", metavar="N", type=click.IntRange(min=1), default=DEFAULT_LAST, show_default=True,
              help="Without ISSUE: how many of the latest issues the table shows; with --html: the trend chart.")
@click.option("--no-provider", is_flag=True, help="Only what the ledger knows: ask the provider nothing.")
@click.option("--refresh", is_flag=True, help="Ask the provider again even for figures read less than an hour ago.")
@click.pass_context
def report(ctx: click.Context, issue: str | None, as_json: bool, html_file: Path | None, last: int,
           no_provider: bool, refresh: bool) -> None:
    """How ISSUE (path or id) did, from the ledger and the provider; without ISSUE, a table of the latest."""
    app = ctx.find_object(App)
    settings = app.settings()
    if html_file is not None and issue is None:
        raise NewsletterError("--html needs an ISSUE", hint="run `newsletter report ISSUE --html FILE`")
    issue_id, missing = (None, None) if issue is None else issue_id_of(settings, issue)
    found = read_reports(settings, issue_id, last=last, ask_provider=not no_provider, refresh=refresh,
                         trend=html_file is not None, no_such_issue=missing)
    reports = found.shown
    if html_file is not None and str(html_file) == "-":  # the usual Unix "standard output"
        click.echo(page(reports[0], found.trend), nl=False)
        return
    if html_file is not None:
        html_file.write_text(page(reports[0], found.trend), encoding="utf-8")
        app.info(f"wrote {html_file}") if not as_json else None
    if as_json:
        obj = [r.as_json() for r in reports]
        click.echo(json.dumps(obj[0] if issue is not None else obj))
    elif issue is None:
        _table(reports)
    else:
        _detail(reports[0])
    failed = [r.provider.note for r in reports if _not_read(r.provider)]
    if failed:  # the figures could not be read (a refused key, an API down): said once, and exit 1
        click.echo(f"Error: the provider's figures could not be read: {failed[0]}", err=True)
        ctx.exit(1)


def _detail(report: IssueReport) -> None:
    figures = report.ledger
    click.echo(f"{figures.issue_id}: {figures.subject} (planned {figures.planned_at})")
    click.echo("  " + ", ".join(f"{figures.counts[s]} {s}" for s in STATES) + f" (of {figures.planned})")
    for reason, n in figures.failed_reasons.items():
        click.echo(f"  failed {n:>6}  {reason or '(no reason)'}")
    if figures.timeline:
        accepted = sum(n for _, n in figures.timeline)
        peak = max(n for _, n in figures.timeline)
        click.echo(f"  sent from {figures.timeline[0][0]} to {figures.timeline[-1][0]} UTC: {accepted} accepted in "
                   f"{len(figures.timeline)} minute(s), at most {peak} a minute")
    for (source, kind, attributed), n in figures.suppressions.items():
        click.echo(f"  suppressed: {n} {kind} (source: {source}; {ATTRIBUTED[attributed]})")
    provider = report.provider
    if provider is None:
        return
    stats = provider.stats
    if _not_read(provider):  # its error goes to stderr once, below the report
        click.echo(f"{provider.provider}: the figures could not be read (the error below says why)")
        return
    if stats is None:
        click.echo(f"{provider.provider}: {provider.note}" if not provider.note.startswith(provider.provider)
                   else provider.note)
        return
    rates = provider.rates()
    kept = " (kept from an earlier run: --refresh asks again)" if provider.cached else ""
    click.echo(f"{provider.provider} as of {utc_text(provider.fetched_at)}{kept} ({RATES_NOTE}):")
    click.echo(f"  processed {_n(stats.processed)}, delivered {_n(stats.delivered)} ({percent(rates['delivered'])} "
               f"of processed), bounced {_n(stats.bounced)} ({percent(rates['bounce'])}), complaints "
               f"{_n(stats.complained)} ({percent(rates['complaint'])}), unsubscribed {_n(stats.unsubscribed)} "
               f"({percent(rates['unsubscribe'])})")
    click.echo(f"  unique opens* {_n(stats.unique_opens)} ({percent(rates['open'])}), opens* {_n(stats.opens)}"
               + (f", by machines {stats.machine_opens}" if stats.machine_opens is not None else ""))
    click.echo(f"  unique clicks {_n(stats.unique_clicks)} ({percent(rates['click'])}), clicks {_n(stats.clicks)}")
    if stats.click_platforms:
        click.echo("  clicks by platform: " + ", ".join(f"{name} {n}" for name, n in stats.click_platforms))
    click.echo(f"  * {OPENS_NOTE}")
    if stats.top_links:
        click.echo("  most clicked links:")
        for url, n in stats.top_links:
            click.echo(f"  {n:>8}  {url}")
    for note in stats.notes:
        click.echo(f"  ({note})")


def _table(reports: list[IssueReport]) -> None:
    if not reports:
        click.echo("No issue has been sent yet.")
        return
    header = ("issue", "planned", "sent", "failed", "delivered", "open*", "click", "unsubscribed")
    rows = []
    for one in reports:
        figures, provider = one.ledger, one.provider
        rates = provider.rates() if provider else {}
        stats = provider.stats if provider else None
        unsubscribed = (stats.unsubscribed if stats and stats.unsubscribed is not None else
                        sum(n for (_, kind, _), n in figures.suppressions.items() if kind == "unsubscribed"))
        rows.append((figures.issue_id, figures.planned_at[:10], str(figures.counts["sent"]),
                     str(figures.counts["failed"]), percent(rates.get("delivered")), percent(rates.get("open")),
                     percent(rates.get("click")), str(unsubscribed)))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    notes = {one.provider.note for one in reports if one.provider and one.provider.note and not _not_read(one.provider)}
    if any(_not_read(one.provider) for one in reports):
        notes.add("the provider's figures could not be read (the error below says why)")
    for note in sorted(notes):
        click.echo(note)
    kept = sum(1 for one in reports if one.provider and one.provider.cached)
    if kept:
        click.echo(f"({kept} of these issues' figures were kept from a run less than an hour ago: --refresh "
                   "asks the provider again)")
    click.echo(f"(delivered: of processed; open and click: {RATES_NOTE}; * {OPENS_NOTE})")


def _not_read(provider) -> bool:
    """The provider was asked and could not answer (a refused key, an API down), as opposed to a provider that
    keeps no figures, whose note starts with its name."""
    return bool(provider and provider.stats is None and provider.note
                and not provider.note.startswith(f"{provider.provider}: "))


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
