"""A personalised :class:`Message` as an RFC 5322 multipart/alternative email."""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart

from ..errors import RecipientError
from ..models import Message
from ..text import has_line_break

# Long List-Unsubscribe URLs must be folded, never RFC 2047-encoded (clients would not parse them);
# RFC 5322 allows 998 characters a line, and non-ASCII subjects are still encoded.
_POLICY = email.policy.SMTP.clone(max_line_length=998)
# Bodies are encoded with the policy's line length: quoted-printable lines must stay within
# RFC 2045's 76 characters (spam filters score longer ones: SpamAssassin's MIME_QP_LONG_LINE).
_BODY_POLICY = email.policy.SMTP.clone(max_line_length=76)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def to_mime(message: Message, *, message_id: str | None = None, date: str | None = None) -> EmailMessage:
    """The message as MIME; :class:`RecipientError` when a header value cannot be written for this recipient.

    A line break in any header value (also in the recipient's name) is refused, never folded
    or encoded (docs/architecture.md, security), and so is any other control character in the name or address.
    """
    headers = (("Subject", message.subject), ("From", message.sender), ("To", message.to),
               ("To", message.to_name), ("Reply-To", message.reply_to), *message.headers.items())
    for name, value in headers:
        if has_line_break(value):
            raise _header_error(message, name, "contains a line break")
        if name == "To" and (control := _CONTROL.search(value)):
            raise _header_error(message, name, f"contains a control character (U+{ord(control.group()):04X})")
    try:
        return _build(message, message_id, date)
    except (ValueError, HeaderParseError) as err:  # the email package's own refusals (defects are ValueErrors)
        raise _header_error(message, "", f"cannot be written: {err}") from err


def _header_error(message: Message, name: str, problem: str) -> RecipientError:
    hint = {"To": "check that subscriber's name and address in the list",
            "Subject": "check the subject in the front matter, and this subscriber's values for its merge fields",
            "": "check that subscriber's name and address in the list"}.get(name, "check newsletter.toml")
    what = f"header {name}" if name else "the headers"
    return RecipientError(message.to, f"{what} of the message to {message.to} {problem}", hint=hint)


def _header_address(message: Message) -> str:
    """The recipient's address as a header holds it: an internationalised domain in its ASCII (IDNA) form,
    which every server reads (the email package would write an RFC 2047 word inside the address, which
    none decodes); a local part that is not ASCII needs SMTPUTF8, which a standard .eml cannot carry."""
    local, _, domain = message.to.rpartition("@")
    if not local.isascii():
        raise _header_error(message, "To", "has a part before the @ that is not ASCII: only a server that speaks "
                                           "SMTPUTF8 can take it, and a standard .eml cannot hold it")
    if domain.isascii():
        return message.to
    import idna  # email-validator's own dependency, IDNA 2008 as it checked the address with

    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as err:
        raise _header_error(message, "To", f"has a domain that has no ASCII form ({err})") from None


def _build(message: Message, message_id: str | None, date: str | None) -> EmailMessage:
    mime = EmailMessage(policy=_POLICY)
    mime["From"] = message.sender
    to = _header_address(message)
    mime["To"] = Address(display_name=message.to_name, addr_spec=to) if message.to_name else to
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    mime["Subject"] = message.subject  # the policy encodes non-ASCII as RFC 2047
    mime["Date"] = date or email.utils.formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = message_id or email.utils.make_msgid(domain=sender_domain(message.sender))
    for name, value in message.headers.items():
        mime[name] = value
    mime["X-Newsletter-Issue"] = message.issue_id
    mime["MIME-Version"] = "1.0"
    mime.make_alternative()
    for body, subtype in ((message.text, "plain"), (message.html, "html")):
        part = MIMEPart(policy=_BODY_POLICY)
        part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
        mime.attach(part)
    return mime


def sender_domain(sender: str) -> str:
    """The From address's domain, for Message-IDs ("localhost" when it has none)."""
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2]
    return domain if "@" in sender and domain else "localhost"
