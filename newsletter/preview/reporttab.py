"""The preview's Report tab: for an issue the ledger knows, the page ``newsletter report ISSUE --html``
writes, served as it is (docs/sending.md, "How an issue did"; docs/preview.md).

The provider's figures come as the command reads them, kept in the ledger for an hour, so opening the
tab again asks the provider nothing. A provider that cannot be opened (no API key in this shell) leaves
the ledger's part, with the reason in place of the provider's figures.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError, NewsletterError
from ..ledger import open_ledger
from ..report import ProviderFigures, read_reports
from ..reportpage import page


def is_sent(settings: Settings | None, issue_id: str) -> bool:
    """Whether the ledger has a plan for ``issue_id`` (a tab to show); False when it cannot be read."""
    if settings is None:
        return False
    try:
        with open_ledger(settings, readonly=True) as ledger:
            return ledger.issue(issue_id) is not None
    except NewsletterError:
        return False


def report_html(settings: Settings, issue_id: str) -> str:
    """The report page of ``issue_id``; :class:`NewsletterError` when the ledger does not know it."""
    try:
        found = read_reports(settings, issue_id, trend=True)
    except ConfigError as err:  # the provider cannot be opened here: the ledger's part still shows
        found = read_reports(settings, issue_id, trend=True, ask_provider=False)
        for one in found.trend or found.shown:
            one.provider = ProviderFigures(settings.provider.name, note=f"{err.message} ({err.hint})" if err.hint
                                           else err.message)
    return page(found.shown[0], found.trend)
