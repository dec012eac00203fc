"""Recipients in doubt (``unknown``), in the words of ``send`` and ``reconcile``.

``newsletter reconcile`` and ``newsletter send`` share this: the report of a
reconciliation, the question ``send`` asks on a terminal before sending, and
the one line it prints otherwise (cron, ``--yes``) saying how many are in doubt
and the exact command to run. The look-up itself is
:func:`newsletter.sending.reconcile.reconcile_issue`, the same code for both commands.
"""

from __future__ import annotations

from typing import Callable


from ..providers.base import Provider
from ..sending.reconcile import Reconciliation


def say_reconciliation(echo: Callable[[str], None], report: Reconciliation, *, sending: bool = False) -> None:
    """What a reconciliation found; ``sending``: inside ``send``, which sends the pending ones next."""
    if not report.in_doubt:
        echo(f"{report.issue_id}: nobody is in doubt; nothing to reconcile.")
        return
    echo(f"{report.issue_id}: {report.in_doubt} recipient(s) in doubt in {report.batches} batch(es).")
    if report.cannot_answer:
        echo(f"{report.provider} cannot tell: {report.cannot_answer}.")
    resolved = report.resolved
    echo(f"Resolved: {resolved['sent']} sent, {resolved['retry']} back to pending, {resolved['failed']} failed; "
         f"{report.still_unknown} still unknown.")
    for reason in report.reasons:
        echo(f"  {reason}")
    if report.come_back_at is not None:
        when = report.come_back_at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        echo(f"{report.too_recent} recipient(s) were tried too recently for {report.provider} to tell; "
             f"run `newsletter reconcile {report.issue_id}` again after {when}.")
    if resolved["retry"] and not sending:
        echo(f"Run `newsletter send {report.issue_id}` to send the {resolved['retry']} pending recipient(s).")


def in_doubt_line(provider: Provider, issue_id: str, unknown: int) -> str:
    """One line: how many are in doubt, and the exact command that helps."""
    who = f"{unknown} recipient{'s are' if unknown != 1 else ' is'} in doubt"
    if provider.can("reconcile"):
        return f"{who}; to ask {provider.name} whether it accepted them, run: newsletter reconcile {issue_id}"
    return (f"{who}, and {provider.name} cannot tell whether it accepted them; check its dashboard, and if "
            f"they never went out, send them again (they may get a second copy): "
            f"newsletter send {issue_id} --resend-unknown")
