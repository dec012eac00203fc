"""Amazon SES (API v2): ``POST /v2/email/outbound-bulk-emails`` (SendBulkEmail), the template once.

The compiled issue goes once in ``DefaultContent.Template.TemplateContent``;
each of up to 50 ``BulkEmailEntries`` carries one reader's merge values as
``ReplacementTemplateData`` (a JSON string of at most 262,144 characters), their
List-Unsubscribe headers as ``ReplacementHeaders`` and the issue and batch ids
as ``ReplacementTags``. SES renders templates with Handlebars: each slot is a
triple-stash ``{{{h3}}}`` (inserted as it is; the values for the html part are
HTML-escaped by us exactly as :meth:`SlotTemplate.fill` does), the subject is
``{{{subject}}}`` with each reader's own, and every ``{`` and ``\\`` of the
compiled text is written as ``{{{lb}}}`` / ``{{{bs}}}`` whose values are those
characters, so nothing of the issue is ever read as Handlebars.

Where the service model (botocore's ``sesv2/2019-09-27/service-2.json``) and the
documentation differ: the model puts no length on ``BulkEmailEntries``, the API
reference allows 50 destinations a call (we send 50); the model's
``BulkEmailStatus`` enum says ``CONFIGURATION_SET_NOT_FOUND`` and
``TEMPLATE_NOT_FOUND`` where the documentation of the same member says
``CONFIGURATION_SET_DOES_NOT_EXIST`` and ``TEMPLATE_DOES_NOT_EXIST`` (both
spellings are read as refusals of the request).

Outcomes come from ``BulkEmailEntryResults[]``, in order: ``SUCCESS`` is sent
with its ``MessageId``; a refusal of the reader (``MESSAGE_REJECTED``,
``INVALID_PARAMETER`` about their address) fails them; a refusal of the account
or the request (an unverified sender, a suspended or paused account, a missing
configuration set, the daily quota) stops the run with nobody failed, or, beside
accepted entries, sends the refused ones back to pending (see :mod:`.base`);
``ACCOUNT_THROTTLED`` and ``TRANSIENT_FAILURE`` go back to pending. SES has no
idempotency key and no log search: a batch in doubt stays ``unknown``.

Requests are signed with SigV4 (botocore's signer) using AWS's own credential
chain, limited to the environment and the shared files (``AWS_ACCESS_KEY_ID``...,
``AWS_PROFILE``); instance metadata is never asked. docs/providers.md says how
to set it up.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
from typing import Iterator, Mapping

import requests

from ..compile.slots import SlotTemplate, escape_html
from ..errors import AuthError, ConfigError, ProviderError, RecipientError
from ..jsontext import json_size
from ..models import Message, Outcome
from .answers import PAGING_HINT, json_body, names_address, provider_message
from .base import Batch, Provider, ProviderSuppression, Request, all_outcomes

MAX_DESTINATIONS = 50  # SendBulkEmail's documented limit (the model sets none)
TEMPLATE_DATA_LIMIT = 262_144  # characters of ReplacementTemplateData (EmailTemplateData's max in the model)
MAX_HEADERS = 15  # MessageHeaderList's max
_HEADER_NAME = re.compile(r"[!-9;-~]{1,126}")  # MessageHeaderName: printable ASCII but ':'
_HEADER_VALUE = re.compile(r"[ -~]{1,995}")  # MessageHeaderValue: printable ASCII
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # MessageTagName/Value: ASCII letters, digits, _ and -
# Literal characters of the issue that Handlebars would read: each becomes a variable holding it.
LITERALS = {"lb": "{", "bs": "\\"}
_LITERAL = re.compile(r"[{\\]")
# Statuses about the reader, about nothing (try again), and (the rest) about the account or the request.
RECIPIENT_STATUSES = frozenset({"MESSAGE_REJECTED", "INVALID_PARAMETER"})
AGAIN_STATUSES = frozenset({"ACCOUNT_THROTTLED", "TRANSIENT_FAILURE"})
ACCOUNT_HINTS = {
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": "verify the From address or its domain in SES (Configuration > Identities) "
                                     "in this region",
    "ACCOUNT_SUSPENDED": "SES has stopped this account from sending: see the SES console's reputation page",
    "ACCOUNT_SENDING_PAUSED": "sending is paused for this account: resume it (UpdateAccountSendingEnabled)",
    "CONFIGURATION_SET_NOT_FOUND": "check [provider] configuration_set: it must exist in this region",
    "CONFIGURATION_SET_DOES_NOT_EXIST": "check [provider] configuration_set: it must exist in this region",
    "CONFIGURATION_SET_SENDING_PAUSED": "sending is paused for the configuration set: resume it in SES",
    "INVALID_SENDING_POOL_NAME": "the configuration set names an IP pool that does not exist",
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": "the account's 24-hour sending quota is used up: run `newsletter send` "
                                    "again tomorrow, or ask AWS for a higher quota",
}
# SES's words about an address ("Illegal address", "Missing final '@domain'", "Email address is not verified").
_ABOUT_ADDRESS = re.compile(r"address|domain|@|recipient|destination", re.I)
_THROTTLED = re.compile(r"throttl|too many requests|maximum sending rate", re.I)
LOW_QUOTA = 1000  # recipients left today under which preflight warns
SUPPRESSION_PAGE = 1000  # ListSuppressedDestinations' largest PageSize
_KIND_BY_REASON = {"BOUNCE": "bounced", "COMPLAINT": "complained"}
READ_RATE = 1.0  # requests a second for GetAccount and ListSuppressedDestinations (SES's API rate for them)
DEFAULT_SEND_RATE = 1.0  # recipients a second, a sandbox account's rate, until preflight reads the account's own
# A plausible address as SES parses one: what it refuses for the whole call is attributed with this.
_PLAUSIBLE = re.compile(r"^[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+\.[^@\s<>\"(),;:.]+$")

# botocore logs the canonical request (with the session token) at DEBUG: never, whatever the root logger says.
logging.getLogger("botocore.auth").setLevel(logging.INFO)


class SesProvider(Provider):
    name = "ses"
    needs_api_key = False  # AWS credentials come from AWS's own variables and profiles
    max_batch = MAX_DESTINATIONS
    substitutes = True
    max_payload_bytes = 10 * 1000 * 1000
    envelope_bytes = 512
    reconcile_note = ("Amazon SES has no idempotency key and no log search: it cannot say whether an in-doubt "
                      "batch was accepted; check its sending events (a configuration set's event destination), "
                      "then use `newsletter send --resend-unknown` if they never went out")
    sync_key_hint = "sync reads the suppression list: the credentials need ses:ListSuppressedDestinations"
    sender_hint = "verify the From address or its domain in SES (Configuration > Identities) in this region"

    def __init__(self, settings, api_key=None):
        super().__init__(settings, api_key)
        provider = settings.provider
        env = settings.env
        self.region = provider.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        if not self.region:
            raise ConfigError("Amazon SES needs a region, and neither [provider] region nor $AWS_REGION is set",
                              path=settings.origins.get("provider.region"),
                              hint='set [provider] region = "eu-west-1" (the region of your verified identities)')
        if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", self.region):
            raise ConfigError(f"[provider] region {self.region!r} is not an AWS region name",
                              path=settings.origins.get("provider.region"), hint="e.g. us-east-1 or eu-west-1")
        for key, hint in (("track_opens", "open and click tracking are set on a configuration set in SES: name it "
                                          "in [provider] configuration_set"),
                          ("track_clicks", "open and click tracking are set on a configuration set in SES: name it "
                                           "in [provider] configuration_set"),
                          ("test_mode", "SES has no test mode: send proofs to its mailbox simulator, "
                                        "`newsletter test ISSUE --to success@simulator.amazonses.com`")):
            if getattr(provider, key):
                raise ConfigError(f"[provider] {key} = true is not supported by Amazon SES's API",
                                  path=settings.origins.get(f"provider.{key}"), hint=f"set it to false; {hint}")
        self.configuration_set = provider.configuration_set
        self.default_origin = f"https://email.{self.region}.amazonaws.com"
        self.credentials = aws_credentials(env)
        self.max_send_rate: float | None = None  # SendQuota.MaxSendRate, once preflight has read it

    @property
    def rate_limit(self) -> float:
        """Requests a second: SES's quota counts recipients, and ``[provider] rate_limit`` too for SES, so a
        call of ``batch_size`` recipients takes that many of them (a short last batch waits a little long)."""
        recipients = self.settings.provider.rate_limit or self.max_send_rate or DEFAULT_SEND_RATE
        return recipients / self.batch_size

    @property
    def read_rate(self) -> float:
        return READ_RATE

    # -- auth ------------------------------------------------------------------------
    def sign(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        """``headers`` plus SigV4's (Authorization, X-Amz-Date, the session token) for this exact request."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(self.credentials, "ses", self.region).add_auth(request)
        return dict(request.headers.items())

    def read_headers(self) -> dict[str, str]:  # GETs are signed in get_json's stead: see _get
        return {"Accept": "application/json"}

    def secrets(self) -> list[str]:
        return [s for s in (self.credentials.secret_key, self.credentials.token) if s and len(s) >= 4]

    def auth_error(self, response: requests.Response) -> AuthError:
        said = self.scrub(provider_message(response))
        error_type = _error_type(response)
        if response.status_code == 403 and ("not authorized" in said.lower() or error_type == "AccessDeniedException"):
            hint = "the credentials lack an SES permission (ses:SendBulkEmail, ses:GetAccount, ...): see docs/providers.md"
        else:
            hint = ("check the AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or "
                    "AWS_PROFILE) and the region; they are never printed")
        message = f"ses refused the credentials (HTTP {response.status_code}{' ' + error_type if error_type else ''})"
        return AuthError(f"{message}: {said}" if said else message, status=response.status_code,
                         body=self.scrub(response.text), hint=hint)

    # -- verbs -----------------------------------------------------------------------
    def build_request(self, batch: Batch) -> Request:
        first = batch.messages[0]
        subject, html, text, data = self._content(batch)
        encoded = [json.dumps(mine) for mine in data]  # each reader's ReplacementTemplateData
        _check_data_sizes(batch, encoded)
        body: dict = {
            "FromEmailAddress": _address(*email.utils.parseaddr(first.sender)),
            "DefaultContent": {"Template": {
                "TemplateContent": {"Subject": subject, "Html": html, "Text": text},
                "TemplateData": json.dumps({**{key: "" for key in data[0]}, **LITERALS}),
            }},
            "BulkEmailEntries": [self._entry(batch, m, d) for m, d in zip(batch.messages, encoded)],
        }
        if first.reply_to:
            body["ReplyToAddresses"] = [_address(*email.utils.parseaddr(first.reply_to))]
        if self.configuration_set:
            body["ConfigurationSetName"] = self.configuration_set
        url = self.url("/v2/email/outbound-bulk-emails")
        raw = json.dumps(body).encode()
        headers = self.sign("POST", url, raw, {"Content-Type": "application/json"})
        return Request("POST", url, headers, data=raw)

    def _content(self, batch: Batch) -> tuple[str, str, str, list[dict[str, str]]]:
        """The shared subject, html and text in Handlebars, and each reader's values (ReplacementTemplateData)."""
        if batch.template is None:  # proof copies: one body for all, else it cannot be sent as one
            first = batch.messages[0]
            if any(m.html != first.html or m.text != first.text for m in batch.messages):
                raise ProviderError("batches that send the body once need the compiled template and per-recipient "
                                    "values (Batch.template, Batch.slot_values)", hint="this is a bug in the send loop")
            html, text = _literal(first.html), _literal(first.text)
            data = [{"subject": m.subject} for m in batch.messages]
        else:
            html_t, text_t = batch.template["html"], batch.template["text"]
            html, text = handlebars(html_t, "h"), handlebars(text_t, "t")
            html_ids, text_ids = sorted(set(html_t.slot_ids)), sorted(set(text_t.slot_ids))
            data = []
            for message, values in zip(batch.messages, batch.slot_values):
                mine = {"subject": message.subject}
                mine.update({f"h{i}": escape_html(values[i]) for i in html_ids})
                mine.update({f"t{i}": values[i] for i in text_ids})
                data.append(mine)
        for mine in data:
            mine.update(LITERALS)
        return "{{{subject}}}", html, text, data

    def _entry(self, batch: Batch, message: Message, data: str) -> dict:
        headers = [{"Name": name, "Value": value} for name, value in message.headers.items()]
        _check_headers(message)
        entry: dict = {
            "Destination": {"ToAddresses": [_address(message.to_name, message.to)]},
            "ReplacementTags": [{"Name": "issue", "Value": _tag(batch.issue_id)},
                                {"Name": "batch", "Value": _tag(batch.batch_id)}],
            "ReplacementEmailContent": {"ReplacementTemplate": {"ReplacementTemplateData": data}},
        }
        if headers:
            entry["ReplacementHeaders"] = headers
        return entry

    def payload_size(self, message: Message) -> int:
        # Its own fields, and its merge values encoded twice (a JSON string inside the JSON body doubles
        # every quote and backslash): weighed by the send loop (body_bytes), else bounded by its bodies.
        merge = message.body_bytes if message.body_bytes >= 0 else json_size(message.html) + json_size(message.text)
        own = json_size(message.to) + json_size(message.to_name) + 2 * json_size(message.subject)
        return own + sum(len(k) + len(v) + 32 for k, v in message.headers.items()) + 2 * merge + self.envelope_bytes

    def parse_response(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        status = response.status_code
        if status == 200:
            return self._results(batch, response)
        if 400 <= status < 500:
            return self._refused(batch, response)
        return all_outcomes(batch, "unknown", reason=f"ses answered HTTP {status}, not the documented 200")

    def _results(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        body = json_body(response)
        results = body.get("BulkEmailEntryResults") if isinstance(body, dict) else None
        if not isinstance(results, list) or len(results) != len(batch.messages):
            return all_outcomes(batch, "unknown", reason="ses answered 200 without one BulkEmailEntryResult per entry")
        outcomes: list[Outcome] = []
        refusals: list[tuple[str, str]] = []  # (status, error) of the request's or the account's refusals
        for message, item in zip(batch.messages, results):
            item = item if isinstance(item, dict) else {}
            code, error = str(item.get("Status", "")), str(item.get("Error") or "")
            words = f"ses {code}: {error}".rstrip(": ")
            if code == "SUCCESS" and item.get("MessageId"):
                outcomes.append(Outcome(message.to, "sent", provider_id=str(item["MessageId"])))
            elif code == "SUCCESS" or not code:
                outcomes.append(Outcome(message.to, "unknown", reason=f"ses answered an entry we cannot read: {item}"))
            elif code in AGAIN_STATUSES:
                outcomes.append(Outcome(message.to, "retry", reason=words))
            elif code in RECIPIENT_STATUSES and _theirs(code, error, message):
                outcomes.append(Outcome(message.to, "failed", reason=words))
            else:
                refusals.append((code, error))
                outcomes.append(Outcome(message.to, "retry", reason=f"{words}; tried again without the accepted "
                                                                    "entries"))
        if refusals and not any(o.state == "sent" for o in outcomes):
            code, error = refusals[0]
            codes = sorted({c for c, _ in refusals})
            also = f" (and {', '.join(codes[1:])})" if len(codes) > 1 else ""
            retryable = all(c in AGAIN_STATUSES for c in codes)
            raise ProviderError(f"ses refused the batch ({code}{also}): {error or code}", status=200,
                                body=self.scrub(response.text), retryable=retryable,
                                hint=ACCOUNT_HINTS.get(code, "fix what SES says") + "; nothing in this batch was sent")
        if not refusals and outcomes and all(o.state == "retry" for o in outcomes):
            raise ProviderError(f"ses could not take the batch now: {outcomes[0].reason}", status=200,
                                retryable=True)
        return outcomes

    def _refused(self, batch: Batch, response: requests.Response) -> list[Outcome]:
        """A whole-call 4xx (``x-amzn-ErrorType`` and ``{"message"}``): throttling is retried, an address SES
        names (or one it cannot parse, when it names none) fails that reader, the rest stops the run."""
        error_type, said = _error_type(response), self.scrub(provider_message(response))
        if _THROTTLED.search(error_type) or _THROTTLED.search(said):
            raise ProviderError(f"ses is throttling ({error_type}): {said}", status=response.status_code,
                                retryable=True)
        first = batch.messages[0]
        ours = [email.utils.parseaddr(a)[1] for a in (first.sender, first.reply_to) if a]
        if error_type in ("BadRequestException", "MessageRejected") and _ABOUT_ADDRESS.search(said) \
                and not any(names_address(said, a) for a in ours):  # the sender's identity is the request's
            named = {m.to for m in batch.messages if names_address(said, m.to)}
            if not named:  # "Missing final '@domain'", "Illegal address": the ones SES cannot parse
                named = {m.to for m in batch.messages if not _PLAUSIBLE.match(m.to)}
            if not named and len(batch.messages) == 1 and error_type == "BadRequestException" \
                    and _PLAUSIBLE.match(ours[0] if ours else ""):
                named = {first.to}
            if named:
                return [Outcome(m.to, "failed", reason=f"ses {error_type}: {said}") if m.to in named else
                        Outcome(m.to, "retry", reason="batch refused because of another recipient; sent again")
                        for m in batch.messages]
        hint = {"MailFromDomainNotVerifiedException": self.sender_hint,
                "AccountSuspendedException": ACCOUNT_HINTS["ACCOUNT_SUSPENDED"],
                "SendingPausedException": ACCOUNT_HINTS["ACCOUNT_SENDING_PAUSED"],
                "LimitExceededException": ACCOUNT_HINTS["ACCOUNT_DAILY_QUOTA_EXCEEDED"],
                "NotFoundException": ACCOUNT_HINTS["CONFIGURATION_SET_NOT_FOUND"]}.get(error_type, "fix what SES says")
        raise ProviderError(f"ses refused the batch (HTTP {response.status_code} {error_type}): {said}",
                            status=response.status_code, body=self.scrub(response.text), retryable=False,
                            hint=f"{hint}; nothing in this batch was sent")

    # -- look-ups ----------------------------------------------------------------------
    def get_json(self, session: requests.Session, url: str, params: Mapping | None, what: str,
                 expect: type = object):
        """The shared look-up, with each GET signed (SigV4 signs the query string too)."""
        prepared = requests.Request("GET", self.url(url), params=params).prepare()
        signed = self.sign("GET", prepared.url, b"", self.read_headers())
        signing = _SignedGet(session, signed)
        return super().get_json(signing, prepared.url, None, what, expect)

    def preflight(self, session: requests.Session) -> list[str]:
        """``GetAccount``: sending must be enabled; the account's MaxSendRate is the default rate (in
        recipients a second); a sandbox account only delivers to verified addresses."""
        account = self.get_json(session, "/v2/email/account", None, "account look-up", expect=dict)
        if account.get("SendingEnabled") is False:
            raise ProviderError("Amazon SES says sending is disabled for this account in "
                                f"{self.region} (SendingEnabled: false)", retryable=False,
                                hint=ACCOUNT_HINTS["ACCOUNT_SENDING_PAUSED"] + "; nothing was sent")
        warnings = []
        quota = account.get("SendQuota") if isinstance(account.get("SendQuota"), dict) else {}
        rate = quota.get("MaxSendRate")
        if isinstance(rate, (int, float)) and rate > 0:
            self.max_send_rate = float(rate)
        left = _left_today(quota)
        if left is not None and left < LOW_QUOTA:
            warnings.append(f"Amazon SES allows {left:.0f} more recipients in the next 24 hours "
                            f"(Max24HourSend {quota['Max24HourSend']:.0f}); a longer list stops there (daily quota "
                            "exceeded) and the rest is sent by `newsletter send` the next day")
        if account.get("ProductionAccessEnabled") is False:
            warnings.append(f"Amazon SES account in {self.region} is in the sandbox: only verified addresses "
                            "receive (the others fail as MESSAGE_REJECTED); request production access in the "
                            "SES console before sending to your list")
        return warnings

    def suppression_list(self, session: requests.Session) -> Iterator[ProviderSuppression]:
        """The account-level suppression list (bounces and complaints), page by page (``NextToken``)."""
        params: dict = {"PageSize": SUPPRESSION_PAGE}
        while True:
            body = self.get_json(session, "/v2/email/suppression/addresses", params, "suppression list",
                                 expect=dict)
            items = body.get("SuppressedDestinationSummaries")
            if not isinstance(items, list):
                raise ProviderError("ses's suppression list answered something we cannot read", status=200,
                                    body=json.dumps(body)[:500], retryable=True)
            for item in items:
                item = item if isinstance(item, dict) else {}
                reason = str(item.get("Reason", ""))
                yield ProviderSuppression(str(item.get("EmailAddress", "")), _KIND_BY_REASON.get(reason, "blocked"),
                                          reason)
            token = body.get("NextToken")
            if not token:
                return
            if token == params.get("NextToken"):  # a token that does not move would loop for ever
                raise ProviderError("ses's suppression list answered the same NextToken again; cannot read it "
                                    "to the end", retryable=False, hint=PAGING_HINT)
            params = {"PageSize": SUPPRESSION_PAGE, "NextToken": token}


class _SignedGet:
    """The session, as get_json uses it, with SigV4's headers on its one GET (they are made per request)."""

    def __init__(self, session: requests.Session, headers: Mapping[str, str]):
        self._session, self._headers = session, headers

    def get(self, url: str, **kwargs):
        headers = {**(kwargs.pop("headers", None) or {}), **self._headers}
        return self._session.get(url, headers=headers, **kwargs)


def aws_credentials(env: Mapping[str, str]):
    """Frozen AWS credentials from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``) or a profile of the shared files (``AWS_PROFILE``, with assume-role, SSO or
    credential_process as configured there). Instance and container metadata are not asked."""
    from botocore.credentials import Credentials, EnvProvider

    found = EnvProvider(environ=dict(env)).load()
    if found is None:
        import botocore.session

        session = botocore.session.Session(profile=env.get("AWS_PROFILE") or None)
        resolver = session.get_component("credential_provider")
        for name in ("container-role", "iam-role"):  # metadata endpoints: never on a laptop, never here
            resolver.remove(name)
        try:
            found = session.get_credentials()
        except Exception as err:  # botocore's ProfileNotFound, SSO token expired, ...: name it, never the values
            raise ConfigError(f"could not read AWS credentials ({type(err).__name__}: {err})",
                              hint="check AWS_PROFILE and ~/.aws/config") from None
    if found is None:
        raise ConfigError("Amazon SES needs AWS credentials, and none were found in AWS_ACCESS_KEY_ID / "
                          "AWS_SECRET_ACCESS_KEY or an AWS profile",
                          hint="export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or "
                               "AWS_PROFILE=name; they never go in newsletter.toml")
    frozen = found.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def handlebars(template: SlotTemplate, prefix: str) -> str:
    """``template`` with each slot as ``{{{<prefix><slot>}}}`` and its own braces and backslashes made literal."""
    out = [_literal(template.parts[0])]
    for slot_id, part in zip(template.slot_ids, template.parts[1:]):
        out += ("{{{" + f"{prefix}{slot_id}" + "}}}", _literal(part))
    return "".join(out)


def _literal(text: str) -> str:
    return _LITERAL.sub(lambda m: "{{{lb}}}" if m.group(0) == "{" else "{{{bs}}}", text)


def _theirs(code: str, error: str, message: Message) -> bool:
    """Whether an entry's refusal is its reader's: one that names their address ("Email address is not
    verified. The following identities failed the check in region EU-WEST-1: a@b.c", the sandbox), or an
    INVALID_PARAMETER about an address that SES could not parse. Anything else (a virus found in the content,
    an unverified sender, which SES words the same way) would be refused for every reader."""
    if names_address(error, message.to):
        return True
    return code == "INVALID_PARAMETER" and bool(_ABOUT_ADDRESS.search(error)) and not _PLAUSIBLE.match(message.to)


def _check_data_sizes(batch: Batch, encoded: list[str]) -> None:
    over = [m.to for m, mine in zip(batch.messages, encoded) if len(mine) > TEMPLATE_DATA_LIMIT]
    if not over:
        return
    if len(batch.messages) > 1 and 2 * len(over) > len(batch.messages):
        raise ProviderError(f"this issue's merge fields take more than SES's {TEMPLATE_DATA_LIMIT:,}-character "
                            f"ReplacementTemplateData for {len(over)} of the {len(batch.messages)} recipients of a "
                            "batch", hint="use fewer or shorter merge fields in the issue; nothing was sent")
    raise RecipientError(over[0], f"the merge values for {over[0]} exceed SES's {TEMPLATE_DATA_LIMIT:,}-character "
                         "ReplacementTemplateData; not sent to this recipient",
                         hint="shorten that subscriber's fields in the list, then `newsletter send` again")


def _check_headers(message: Message) -> None:
    """ReplacementHeaders: at most 15, names and values of printable ASCII (RFC 2047 is not applied for us)."""
    if len(message.headers) > MAX_HEADERS:
        raise ProviderError(f"SES takes at most {MAX_HEADERS} headers a message, and this one has "
                            f"{len(message.headers)}", hint="this is a bug in the send loop; nothing was sent")
    for name, value in message.headers.items():
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise RecipientError(message.to, f"the {name!r} header for {message.to!r} is not printable ASCII of at "
                                 "most 995 characters, which SES requires; not sent to this recipient",
                                 hint="check that subscriber's unsubscribe link or values in the list")


def _left_today(quota: Mapping) -> float | None:
    limit, sent = quota.get("Max24HourSend"), quota.get("SentLast24Hours")
    if not isinstance(limit, (int, float)) or not isinstance(sent, (int, float)) or limit < 0:
        return None  # Max24HourSend -1: unlimited
    return max(0.0, limit - sent)


def _error_type(response: requests.Response) -> str:
    """The error's type: ``x-amzn-ErrorType`` ("MessageRejected:http://internal..."), else the body's ``__type``."""
    raw = response.headers.get("x-amzn-ErrorType") or ""
    if not raw:
        body = json_body(response)
        raw = str(body.get("__type") or body.get("code") or "") if isinstance(body, dict) else ""
    return raw.split(":")[0].split("#")[-1]


def _address(name: str, address: str) -> str:
    """SES wants a display name of non-ASCII characters as an RFC 2047 encoded word."""
    return email.utils.formataddr((name, address), charset="utf-8") if name else address


def _tag(value: str) -> str:
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"
