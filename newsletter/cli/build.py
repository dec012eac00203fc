"""``newsletter build`` and ``newsletter lint``."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from .. import config
from ..compile import lint as lint_module
from ..compile.pipeline import build_issue, lint_build, personalizer, sample_subscriber, write_build
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
@click.argument("issue")
@inliner_option
@pass_app
def lint_command(app: App, issue: str, inliner: str | None) -> None:
    """Check ISSUE for deliverability problems; exit 1 if there are errors."""
    settings = app.settings()
    facts = provider_facts(settings)
    built = build_issue(settings, issue, inliner=inliner)
    message = personalizer(settings, built.compiled, facts=facts).message(sample_subscriber(built))
    findings = lint_build(settings, built, message, facts)
    _print_findings(app, findings, summary_only=False)
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
