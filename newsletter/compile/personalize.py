"""Fill a compiled issue's slots for one subscriber: the hot path.

Everything that does not depend on the recipient (sender, headers, URL
template, the split templates) is prepared once in :class:`Personalizer`;
``message()`` only evaluates the slot expressions, escapes them for HTML and
joins strings. No compilation, I/O or SQL happens here.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import RecipientError
from ..jsontext import json_size
from ..models import Message, Subscriber
from ..text import has_line_break
from ..unsubscribe import list_unsubscribe_headers, url_maker
from .render import CompiledIssue
from .slots import escape_html


class Personalizer:
    def __init__(self, compiled: CompiledIssue, *, sender: str, reply_to: str = "",
                 unsubscribe_template: str = "", unsubscribe_mailto: str = "", secret: bytes,
                 list_headers: bool = True):
        self.compiled = compiled
        self.sender = sender
        self.reply_to = reply_to
        self._mailto = unsubscribe_mailto
        # False when the provider manages unsubscribes: it adds List-Unsubscribe itself, for its own link.
        self._list_headers = list_headers
        self._issue_id = compiled.issue.id  # sealed into each token: the endpoint records which issue it came from
        self._slots = compiled.slots
        self._mailto_url = f"mailto:{unsubscribe_mailto}?subject=unsubscribe" if unsubscribe_mailto else ""
        self._url_of = url_maker(unsubscribe_template, secret, self._issue_id)

    def values(self, subscriber: Subscriber) -> tuple[list[str], str]:
        """Slot values for one subscriber (also used by providers that substitute server-side)."""
        url = self._url_of(subscriber.email)
        context = {"subscriber": subscriber.merge_values(), "unsubscribe_url": url or self._mailto_url}
        return [slot.evaluate(context) for slot in self._slots], url

    def message(self, subscriber: Subscriber) -> Message:
        return self.message_with_values(subscriber)[0]

    def message_with_values(self, subscriber: Subscriber, *, bodies: bool = True,
                            weigh: str = "") -> tuple[Message, list[str]]:
        """The message and its slot values (for batches of providers that substitute server-side).

        ``bodies=False`` leaves ``html`` and ``text`` empty: a provider that sends the compiled
        template once with per-recipient values never reads them, and one that fills each body
        from the template itself (JSON-encoded) does so in the worker. ``weigh`` then sets the
        message's ``body_bytes`` for cutting batches by bytes: "bodies", the JSON size of its html
        and text; "values", what its merge values add at most (:func:`values_bytes`).
        """
        values, url = self.values(subscriber)
        compiled = self.compiled
        subject = compiled.subject.fill(values, html=False)
        if has_line_break(subject):
            raise RecipientError(subscriber.email, f"the subject for {subscriber.email} would contain a line break "
                                 f"(from a merge field)", hint="remove line breaks from that subscriber's values")
        return Message(
            issue_id=compiled.issue.id,
            to=subscriber.email,
            to_name=subscriber.name,
            subject=subject,
            html=compiled.html.fill(values, html=True) if bodies else "",
            text=compiled.text.fill(values, html=False) if bodies else "",
            sender=self.sender,
            reply_to=self.reply_to,
            headers=list_unsubscribe_headers(url, self._mailto) if self._list_headers else {},
            body_bytes=-1 if bodies else self._weight(values, weigh),
        ), values

    def _weight(self, values: Sequence[str], weigh: str) -> int:
        if weigh == "bodies":
            return self.compiled.html.json_size(values, html=True) + self.compiled.text.json_size(values, html=False)
        return values_bytes(values) if weigh == "values" else -1


SLOT_KEY_BYTES = 24  # a slot's key and punctuation in a provider's merge data ("-h12-": , …), generously


def values_bytes(values: Sequence[str]) -> int:
    """An upper bound of what merge ``values`` add to a request that sends the template once: each
    slot twice (HTML-escaped for the html part, as it is for the text), JSON-encoded, with its key.

    Escaping and JSON-encoding go character by character, so the values are weighed joined, in one
    call (this runs per recipient): each one's own pair of quotes is added back."""
    if not values:
        return 0
    return 2 * (json_size(escape_html("".join(values))) + (2 + SLOT_KEY_BYTES) * len(values) - 2)
