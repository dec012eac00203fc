"""``newsletter build`` and ``newsletter lint``."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from .. import config
from ..compile import lint as lint_module
from ..compile.layout_check import layout_findings, sample_issue
from ..compile.pipeline import build_issue, build_loaded, lint_build, personalizer, sample_subscriber, write_build
from ..providers import provider_facts
from . import App, cli, pass_app

inliner_option = click.option("--inliner", type=click.Choice(config.INLINERS),
                              help="CSS inliner for this run [default: [render] inliner].")
as_option = click.option("--as", "as_email", metavar="EMAIL",
                         help="Render for this subscriber instead of the first subscribed one.")


@cli.command()
@click.argument("issue")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <id>.html, <id>.txt and <id>.eml.")
@click.option("--open", "open_browser", is_flag=True, help="Open the built HTML in the default browser.")
@inliner_option
@as_option
@pass_app
def build(app: App, issue: str, out_dir: Path, open_browser: bool, inliner: str | None, as_email: str | None) -> None:
    """Compile ISSUE (path or id) and write HTML, text and a sample .eml."""
    settings = app.settings()
    facts = provider_facts(settings)
    built = build_issue(settings, issue, inliner=inliner)
    subscriber = sample_subscriber(built, as_email)
    if as_email and not subscriber.line:  # not a row of the list: merge fields fall back to their defaults
        app.warn(f"{as_email} is not in {settings.subscribers.file}: the build is personalised with the "
                 f"merge fields' fallbacks only")
    message = personalizer(settings, built.compiled, facts=facts).message(subscriber)
    paths = write_build(out_dir, message)
    for path in paths.values():
        app.info(f"wrote {path}")
    size = len(message.html.encode())
    share = size / lint_module.GMAIL_CLIP
    app.info(f"HTML size: {size / 1024:.1f} KB ({share:.0%} of Gmail's ~102 KB clip), rendered for {subscriber.email}")
    findings = lint_build(settings, built, message, facts)
    _print_findings(app, findings, summary_only=True)
    if open_browser:
        url = paths["html"].resolve().as_uri()
        if not webbrowser.open(url):
            app.warn(f"no browser found; open {url} yourself")


@cli.command("lint")
@click.argument("issue", required=False)
@click.option("--template", "layout_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Check this layout file: with ISSUE, or alone with a sample issue that uses everything a "
                   "layout receives.")
@inliner_option
@pass_app
def lint_command(app: App, issue: str | None, layout_file: Path | None, inliner: str | None) -> None:
    """Check ISSUE for deliverability problems; exit 1 if there are errors."""
    if not issue and not layout_file:
        raise click.UsageError("give an ISSUE to check, or --template FILE to check a layout")
    settings = app.settings()
    facts = provider_facts(settings)
    if issue:
        built = build_issue(settings, issue, inliner=inliner, layout=layout_file)
    else:
        built = build_loaded(settings, sample_issue(), inliner=inliner, layout=layout_file)
    message = personalizer(settings, built.compiled, facts=facts).message(sample_subscriber(built))
    findings = lint_build(settings, built, message, facts)
    if not issue:  # the sample issue: its preheader and sections must show
        findings += layout_findings(built.compiled, message.html)
    _print_findings(app, findings, summary_only=False)
    if built.compiled.utm_tagged is not None:
        app.info(f"utm: {built.compiled.utm_tagged} link(s) tagged with campaign parameters ([render] utm)")
    if any(f.level == "error" for f in findings):
        raise click.exceptions.Exit(1)


def _print_findings(app: App, findings: list[lint_module.Finding], *, summary_only: bool) -> None:
    errors = [f for f in findings if f.level == "error"]
    warnings = [f for f in findings if f.level == "warning"]
    for finding in (errors + warnings) if not summary_only or app.verbose else errors:
        click.secho(str(finding), fg="red" if finding.level == "error" else "yellow", err=finding.level == "error")
    verdict = "ok" if not findings else f"{len(errors)} error(s), {len(warnings)} warning(s)"
    hint = " (run `newsletter lint` for details)" if summary_only and warnings and not app.verbose else ""
    app.info(f"lint: {verdict}{hint}")
