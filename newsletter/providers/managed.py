"""The provider's own unsubscribe link in a body sent once for a whole batch (docs/unsubscribe.md).

With ``[unsubscribe] url = "provider"`` every reader's ``{{ unsubscribe_url }}`` is the provider's
placeholder (SendGrid's ``<%asm_group_unsubscribe_raw_url%>``, Mailgun's ``%unsubscribe_url%``),
which the provider replaces per recipient. Adapters that send the template once put each slot's
value in per-recipient merge data; the placeholder must be in the body itself instead, verbatim:
merge values are HTML-escaped (``&lt;%asm...%&gt;`` is no tag to SendGrid), and neither provider
documents that it expands its own tags inside a merge value.
"""

from __future__ import annotations

from typing import Callable

from ..compile.slots import escape_html
from .base import Batch


def link_in_bodies(batch: Batch, html: str, text: str, merge: list[dict[str, str]], link: str,
                   written: Callable[[str, int], str], key: Callable[[str, int], str]
                   ) -> tuple[str, str, list[dict[str, str]]]:
    """``html``, ``text`` and ``merge`` (from :func:`~.base.template_once`) with ``link`` written in the bodies
    where a slot's value is ``link`` for every recipient, and those slots dropped from the merge data.

    ``written(part, slot)`` is how template_once wrote the slot in the body (``-zqh3-``,
    ``%recipient.h3%``), ``key(part, slot)`` its name in the merge data. A batch without the
    template (proof copies) has the bodies as rendered: the link is there HTML-escaped.
    """
    if batch.template is None or not batch.slot_values:
        return html.replace(escape_html(link), link), text, merge
    bodies = {"html": html, "text": text}
    for part in bodies:
        for slot in sorted(set(batch.template[part].slot_ids)):
            if all(values[slot] == link for values in batch.slot_values):
                bodies[part] = bodies[part].replace(written(part, slot), link)
                for mine in merge:
                    mine.pop(key(part, slot), None)
    return bodies["html"], bodies["text"], merge
