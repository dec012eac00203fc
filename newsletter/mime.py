"""A personalised :class:`Message` as an RFC 5322 multipart/alternative email."""

from __future__ import annotations

import email.policy
import email.utils
from email.headerregistry import Address
from email.message import EmailMessage

from .errors import TemplateError
from .models import Message


# Long List-Unsubscribe URLs must be folded, never RFC 2047-encoded (clients would not parse them);
# RFC 5322 allows 998 characters a line, and non-ASCII subjects are still encoded.
_POLICY = email.policy.SMTP.clone(max_line_length=998)


def to_mime(message: Message, *, message_id: str | None = None, date: str | None = None) -> EmailMessage:
    for name, value in (("Subject", message.subject), ("From", message.sender), ("To", message.to),
                        ("Reply-To", message.reply_to), *message.headers.items()):
        if "\r" in value or "\n" in value:
            raise TemplateError(f"header {name} of the message to {message.to} contains a line break")
    mime = EmailMessage(policy=_POLICY)
    mime["From"] = message.sender
    mime["To"] = Address(display_name=message.to_name, addr_spec=message.to) if message.to_name else message.to
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    mime["Subject"] = message.subject  # the policy encodes non-ASCII as RFC 2047
    mime["Date"] = date or email.utils.formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = message_id or email.utils.make_msgid(domain=_domain(message.sender))
    for name, value in message.headers.items():
        mime[name] = value
    mime["X-Newsletter-Issue"] = message.issue_id
    mime.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    mime.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return mime


def _domain(sender: str) -> str:
    address = email.utils.parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"
