"""``newsletter report --html FILE``: one self-contained page (docs/sending.md, "How an issue did").

Everything is inline: the CSS, and the charts as SVG drawn here (no JavaScript, no CDN, no
web font), so the page opens from a mail attachment or an archive folder years later.
Each bar and point carries ``data-label`` and ``data-value`` (and a point its ``data-series``) so what
it shows can be checked.
"""

from __future__ import annotations

from html import escape

from .report import ATTRIBUTED, OPENS_NOTE, RATES_NOTE, IssueReport, percent, trend_points

CHART_WIDTH, CHART_HEIGHT, GAP = 720, 180, 1


def bar_chart(title: str, points: list[tuple[str, int]], unit: str) -> str:
    """An SVG bar chart of ``points`` (label, value): one ``rect`` each, heights proportional to the largest."""
    if not points:
        return f'<p class="empty">{escape(title)}: nothing to show.</p>'
    top = max(value for _, value in points) or 1
    width = CHART_WIDTH / len(points)
    bars = []
    for n, (label, value) in enumerate(points):
        height = CHART_HEIGHT * value / top
        bars.append(f'<rect x="{n * width:.2f}" y="{CHART_HEIGHT - height:.2f}" width="{max(width - GAP, 0.5):.2f}" '
                    f'height="{height:.2f}" data-label="{escape(label)}" data-value="{value}">'
                    f'<title>{escape(label)}: {value} {escape(unit)}</title></rect>')
    first, last = escape(points[0][0]), escape(points[-1][0])
    return (f'<figure><figcaption>{escape(title)} (highest: {top} {escape(unit)})</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
            f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT + 20}" width="{CHART_WIDTH}" height="{CHART_HEIGHT + 20}">'
            f'<g class="bars">{"".join(bars)}</g>'
            f'<text x="0" y="{CHART_HEIGHT + 15}">{first}</text>'
            f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT + 15}" text-anchor="end">{last}</text></svg></figure>')


TREND_SERIES = (("open", "open %", 2), ("click", "click %", 3))  # (series, label, index in a trend point)


def trend_chart(points: list[tuple[str, int, float | None, float | None]]) -> str:
    """Issues side by side, oldest first: a bar of recipients sent each (heights proportional to the most),
    and a line each for the open and click rates (over delivered; heights proportional to the highest rate).
    An issue without the provider's figures has a bar and no points."""
    if not points:
        return '<p class="empty">The trend across issues: nothing to show.</p>'
    most = max(sent for _, sent, _, _ in points) or 1
    rates = [p[index] for p in points for _, _, index in TREND_SERIES if p[index] is not None]
    top_rate = max(rates, default=0) or 1
    slot = CHART_WIDTH / len(points)
    bars, series = [], {name: [] for name, _, _ in TREND_SERIES}
    for n, (issue_id, sent, *_) in enumerate(points):
        height = CHART_HEIGHT * sent / most
        bars.append(f'<rect x="{n * slot + slot * 0.15:.2f}" y="{CHART_HEIGHT - height:.2f}" '
                    f'width="{slot * 0.7:.2f}" height="{height:.2f}" data-label="{escape(issue_id)}" '
                    f'data-value="{sent}"><title>{escape(issue_id)}: {sent} sent</title></rect>')
        for name, label, index in TREND_SERIES:
            rate = points[n][index]
            if rate is not None:
                series[name].append((n * slot + slot / 2, CHART_HEIGHT - CHART_HEIGHT * rate / top_rate, issue_id, rate,
                                     label))
    lines = []
    for name, found in series.items():
        if len(found) > 1:
            lines.append(f'<polyline class="{name}" points="{" ".join(f"{x:.2f},{y:.2f}" for x, y, *_ in found)}"/>')
        lines.extend(f'<circle class="{name}" cx="{x:.2f}" cy="{y:.2f}" r="4" data-series="{name}" '
                     f'data-label="{escape(issue_id)}" data-value="{rate}"><title>{escape(issue_id)}: '
                     f'{percent(rate)} {label}</title></circle>' for x, y, issue_id, rate, label in found)
    first, last = escape(points[0][0]), escape(points[-1][0])
    title = "The trend across issues"
    return (f'<figure class="trend"><figcaption>{title}, oldest first: bars are recipients sent (highest: {most}); '
            f'lines are <span class="open">open %</span> and <span class="click">click %</span> over delivered '
            f'(highest: {percent(top_rate if rates else None)})</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{title}" '  # room above for a point's dot
            f'viewBox="0 -6 {CHART_WIDTH} {CHART_HEIGHT + 26}" width="{CHART_WIDTH}" height="{CHART_HEIGHT + 26}">'
            f'<g class="bars">{"".join(bars)}</g><g class="rates">{"".join(lines)}</g>'
            f'<text x="0" y="{CHART_HEIGHT + 15}">{first}</text>'
            f'<text x="{CHART_WIDTH}" y="{CHART_HEIGHT + 15}" text-anchor="end">{last}</text></svg></figure>')


def page(report: IssueReport, trend: list[IssueReport] | None = None) -> str:
    """The page of ``report``; with ``trend`` (issues oldest first), its chart of the trend across them."""
    figures = report.ledger
    rows = "".join(f"<tr><th>{state}</th><td>{n}</td></tr>" for state, n in figures.counts.items())
    failed = "".join(f"<tr><td>{n}</td><td>{escape(reason or '(no reason)')}</td></tr>"
                     for reason, n in figures.failed_reasons.items())
    suppressed = "".join(f"<tr><td>{n}</td><td>{escape(kind)}</td><td>{escape(source)}</td>"
                         f"<td>{escape(ATTRIBUTED[attributed])}</td></tr>"
                         for (source, kind, attributed), n in figures.suppressions.items())
    parts = [f"<h1>{escape(figures.issue_id)}</h1><p class=subject>{escape(figures.subject)}</p>",
             f"<h2>Delivery (the ledger)</h2><table>{rows}<tr><th>planned</th><td>{figures.planned}</td></tr></table>"]
    if failed:
        parts.append(f"<h3>Failed, by reason</h3><table>{failed}</table>")
    parts.append(bar_chart("Recipients accepted per minute (UTC)",
                           [(minute[11:], n) for minute, n in figures.timeline], "recipients"))
    if suppressed:
        parts.append(f"<h3>Unsubscribes and complaints from this issue</h3><table>{suppressed}</table>")
    if report.provider is not None:
        parts.append(_provider_section(report))
    if trend:
        parts.append("<h2>Across issues</h2>" + trend_chart(trend_points(trend)))
    parts.append("<footer>" + "".join(f"<p>{escape(note)}</p>" for note in (RATES_NOTE, OPENS_NOTE)) + "</footer>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(figures.issue_id)}: report'
            f'</title><meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><main>{"".join(parts)}</main></body></html>\n')


def _provider_section(report: IssueReport) -> str:
    provider = report.provider
    head = f"<h2>{escape(provider.provider)}</h2>"
    stats = provider.stats
    if stats is None:
        return head + f"<p class=note>{escape(provider.note)}</p>"
    rates = provider.rates()
    lines = [("processed", stats.processed, None), ("delivered", stats.delivered, rates["delivered"]),
             ("bounced", stats.bounced, rates["bounce"]), ("complaints", stats.complained, rates["complaint"]),
             ("unsubscribed", stats.unsubscribed, rates["unsubscribe"]),
             ("unique opens*", stats.unique_opens, rates["open"]), ("opens*", stats.opens, None),
             ("unique clicks", stats.unique_clicks, rates["click"]), ("clicks", stats.clicks, None)]
    table = "".join(f"<tr><th>{name}</th><td>{'-' if value is None else value}</td>"
                    f"<td>{'' if rate is None else percent(rate)}</td></tr>" for name, value, rate in lines)
    parts = [head, f"<table>{table}</table><p class=note>* {escape(OPENS_NOTE)}</p>",
             bar_chart("Unique opens by day", list(stats.opens_by_day), "opens"),
             bar_chart("Unique clicks by day", list(stats.clicks_by_day), "clicks")]
    if stats.click_platforms:
        platforms = "".join(f"<tr><th>{escape(name)}</th><td>{n}</td></tr>" for name, n in stats.click_platforms)
        parts.append(f"<h3>Clicks by platform</h3><table>{platforms}</table>")
    if stats.top_links:
        links = "".join(f"<tr><td>{n}</td><td>{escape(url)}</td></tr>" for url, n in stats.top_links)
        parts.append(f"<h3>Most clicked links</h3><table>{links}</table>")
    parts.extend(f"<p class=note>{escape(note)}</p>" for note in stats.notes)
    return "".join(parts)


_CSS = ("body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#fafafa}"
        "main{max-width:760px;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse;margin:.5rem 0}"
        "th,td{text-align:left;padding:.15rem .8rem .15rem 0}rect{fill:#3b6fd8}svg text{font-size:11px;fill:#555}"
        "figure{margin:1rem 0}figcaption,.note,footer{color:#555;font-size:13px}.subject{font-size:1.2rem}"
        # On a phone the charts shrink with the page (their viewBox keeps the proportions) and a long link
        # wraps: nothing scrolls sideways at 375 px (tests/test_report_browser.py).
        "svg{max-width:100%;height:auto}td{overflow-wrap:anywhere}"
        ".trend rect{fill:#b9c9ee}polyline{fill:none;stroke-width:2}circle.open,polyline.open{stroke:#c2571a}"
        "circle.open{fill:#c2571a}circle.click,polyline.click{stroke:#1f7a4a}circle.click{fill:#1f7a4a}"
        "span.open{color:#c2571a}span.click{color:#1f7a4a}")
