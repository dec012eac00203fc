"""Settings: ``newsletter.toml`` + ``NEWSLETTER_*`` env + flags, resolved once.

Precedence is flags > environment > toml > defaults (flags are ``resolve``'s argument, used
by tests; the CLI's one setting flag, ``--inliner``, is passed to the build directly).
:func:`resolve` is a pure function of its inputs (it is handed ``env``), so tests need no
monkeypatching.
Secrets never live in the TOML: a key that looks like one is refused.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .text import first_line_break

PROVIDERS = ("outbox", "postmark", "sendgrid", "mailgun", "resend", "ses", "brevo")
INLINERS = ("css-inline", "premailer")
NUMBERING = ("auto", "on", "off")  # docs/authoring.md#numbered-sections

# section -> key -> (default, help). The type of the default is the type of the key.
SCHEMA: dict[str, dict[str, tuple[Any, str]]] = {
    "newsletter": {
        "name": ("My Newsletter", "shown in the header and the From display name"),
        "from": ("", "From header, e.g. 'Example Digest <digest@example.com>'"),
        "reply_to": ("", "optional Reply-To address"),
        "postal_address": ("", "printed in the footer; lint requires it (CAN-SPAM)"),
        "site_url": ("", "base URL of the web archive; view-online links point here"),
        "archive_dir": ("archive", "the folder `newsletter archive` writes and site_url serves (issues' images too)"),
        "template": ("digest", "default layout: templates/<name>.mjml"),
        "language": ("en", "the issues' language (BCP 47: en, de, pt-BR, ar): <html lang>, and dir=rtl for "
                           "right-to-left scripts"),
    },
    "subscribers": {
        "file": ("subscribers/subscribers.csv", "the list, relative to the workspace"),
    },
    "provider": {
        "name": ("outbox", "outbox | postmark | sendgrid | mailgun | resend | ses | brevo"),
        "api_base": ("", "override the API origin (EU regions, tests)"),
        "api_key_env": ("NEWSLETTER_API_KEY", "the NAME of the environment variable holding the key"),
        "message_stream": ("broadcast", "Postmark message stream"),
        "domain": ("", "Mailgun sending domain"),
        "region": ("", "Amazon SES region, e.g. eu-west-1; \"\" = $AWS_REGION"),
        "configuration_set": ("", "Amazon SES configuration set (event publishing, tracking); \"\" = none"),
        "asm_group_id": (0, 'SendGrid: the unsubscribe group for [unsubscribe] url = "provider"; 0 = none'),
        "batch_size": (0, "recipients per API call; 0 = the provider's maximum"),
        "rate_limit": (0.0, "requests per second (SES: recipients per second); 0 = the provider's documented limit"),
        "concurrency": (4, "parallel API requests"),
        "timeout": (30.0, "seconds to wait for one API answer"),
        "max_attempts": (5, "tries per recipient in one run; then it stays pending for the next run"),
        "track_opens": (False, "provider open tracking"),
        "track_clicks": (False, "provider click tracking"),
        "test_mode": (False, "provider test/sandbox mode: accepted, not delivered"),
    },
    "unsubscribe": {
        "url": ("", 'unsubscribe link; {token} is replaced by a signed token; "provider": the provider\'s own'),
        "mailto": ("", "address for mailto: List-Unsubscribe"),
        "secret_env": ("NEWSLETTER_SECRET", "the NAME of the environment variable holding the signing secret"),
    },
    "render": {
        "inliner": ("css-inline", "css-inline (default) | premailer"),
        "numbering": ("auto", "section numbers: auto | on | off (an issue's `numbering:` overrides it)"),
        "utm": (False, "append utm_source, utm_medium and utm_campaign to links to your own site"),
        "utm_source": ("{newsletter}", "utm_source; {newsletter} is the newsletter's name as a slug, {issue} the issue id"),
        "utm_medium": ("email", "utm_medium"),
        "utm_campaign": ("{issue}", "utm_campaign"),
        "utm_domains": ("", "the domains whose links are tagged, comma-separated; \"\" = site_url's"),
    },
    "ledger": {
        "url": (".newsletter/ledger.sqlite3", "a SQLite file, or postgresql://user@host/db (docs/team.md)"),
    },
}

CHOICES = {("provider", "name"): PROVIDERS, ("render", "inliner"): INLINERS, ("render", "numbering"): NUMBERING}
_SECRET_KEY = re.compile(r"(^|_)(api_?key|key|secret|token|password|passwd)$", re.I)
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Settings:
    """Resolved settings; read as ``settings.provider.name``."""

    values: Mapping[str, Mapping[str, Any]]
    origins: Mapping[str, str]  # "provider.name" -> "newsletter.toml:12" | "env NEWSLETTER_..." | "flag" | "default"
    path: Path | None = None  # the config file, when one was read
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __getattr__(self, section: str) -> Any:
        try:
            return _Section(self.values[section])
        except KeyError:
            raise AttributeError(section) from None

    @property
    def root(self) -> Path:
        """The workspace folder: where newsletter.toml lives (else the current folder)."""
        return self.path.parent if self.path else Path.cwd()

    def workspace_path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    def secret(self, section: str, key_env: str) -> str | None:
        """The secret held by the env var that ``[section] key_env`` names (never printed)."""
        name = self.values[section][key_env]
        return self.env.get(name) or None


class _Section:
    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values["from" if key == "from_" else key]
        except KeyError:
            raise AttributeError(key) from None


def find_config(explicit: str | None, env: Mapping[str, str]) -> Path:
    """The config file to read: ``--config``, else ``NEWSLETTER_CONFIG``, else ./newsletter.toml."""
    return Path(explicit or env.get("NEWSLETTER_CONFIG") or "newsletter.toml")


def load(path: Path, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None,
         *, required: bool = True) -> Settings:
    """Read ``path`` and resolve it with ``env`` and ``flags`` (``{"provider.name": ...}``)."""
    env = dict(os.environ if env is None else env)
    if not path.exists():
        if required:
            raise ConfigError(
                "no configuration file here", path=str(path),
                hint="run `newsletter init DIR` to create a workspace, or pass --config PATH")
        return resolve({}, env, flags or {}, source=None)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = _toml_error_line(str(err))
        raise ConfigError(f"TOML syntax error: {err}", path=str(path), line=line,
                          hint="fix the line; strings need quotes") from err
    return resolve(data, env, flags or {}, source=path, text=text)


def resolve(data: Mapping[str, Any], env: Mapping[str, str], flags: Mapping[str, Any], *,
            source: Path | None, text: str = "") -> Settings:
    """The pure core: defaults, then toml ``data``, then ``env``, then ``flags``."""
    where = str(source) if source else "newsletter.toml"
    values: dict[str, dict[str, Any]] = {s: {k: d for k, (d, _) in keys.items()} for s, keys in SCHEMA.items()}
    origins = {f"{s}.{k}": "default" for s, keys in SCHEMA.items() for k in keys}

    for section, table in data.items():
        if section not in SCHEMA or not isinstance(table, dict):
            raise ConfigError(f"unknown section [{section}]{_suggest(section, SCHEMA)}", path=where,
                              line=_line_of(text, rf"\[\s*{re.escape(section)}\s*\]"),
                              hint=f"known sections: {', '.join(SCHEMA)}")
        for key, value in table.items():
            line = _key_line(text, section, key)
            if key not in SCHEMA[section]:
                if _SECRET_KEY.search(key):
                    raise ConfigError(
                        f"[{section}] {key} looks like a secret, and secrets never go in the config file",
                        path=where, line=line,
                        hint="delete it, rotate it if it was committed, and export it in the environment "
                             "variable named by api_key_env / secret_env instead")
                raise ConfigError(f"unknown key [{section}] {key}{_suggest(key, SCHEMA[section])}",
                                  path=where, line=line)
            values[section][key] = _coerce(section, key, value, f"{where}:{line}" if line else where)
            origins[f"{section}.{key}"] = f"{where}:{line}" if line else where

    for section, keys in SCHEMA.items():
        for key in keys:
            name = f"NEWSLETTER_{section}_{key}".upper()
            if name in env:
                values[section][key] = _coerce(section, key, env[name], f"env {name}")
                origins[f"{section}.{key}"] = f"env {name}"

    _check_env_names(env, values)

    for dotted, value in flags.items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        values[section][key] = _coerce(section, key, value, "flag")
        origins[dotted] = "flag"

    _check_urls(values, origins)
    _check_api_base(values["provider"]["api_base"], origins["provider.api_base"])
    _check_lower_bounds(values, origins)
    _check_addresses(values, origins)
    _check_site_url(values["newsletter"]["site_url"], origins["newsletter.site_url"])
    if not _LANGUAGE_TAG.match(values["newsletter"]["language"]):
        raise ConfigError(f"[newsletter] language = {values['newsletter']['language']!r} is not a language tag",
                          path=origins["newsletter.language"], hint='write a BCP 47 tag like "en", "de" or "pt-BR"')
    for section, key in (("provider", "api_key_env"), ("unsubscribe", "secret_env")):
        name = values[section][key]
        if not _ENV_NAME.match(name):
            raise ConfigError(
                f"[{section}] {key} must be the NAME of an environment variable, not {_mask(name)}",
                path=origins[f"{section}.{key}"],
                hint=f"write e.g. {key} = \"{SCHEMA[section][key][0]}\" and export the secret in that variable")

    frozen = MappingProxyType({s: MappingProxyType(v) for s, v in values.items()})
    return Settings(values=frozen, origins=MappingProxyType(origins), path=source, env=MappingProxyType(dict(env)))


_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")  # "en", "pt-BR"; not "english"
# An address as a config value: one @, no spaces or angle brackets, a dot in the domain. A shape check for
# slips ("editor@@example", "Name you@example.com" without <>), not email-validator's: every command reads
# the config, and that import would cost `status` its start-up time (benchmarks/startup.py).
_ADDRESS = re.compile(r"[^@\s<>\"]+@[^@\s<>\".]+(?:\.[^@\s<>\".]+)+")
# RFC 5322 specials a display name may hold only inside quotes (a quoted word within it, "Ann \"Ed\" Lee", is fine)
_NAME_SPECIALS = re.compile(r"[,;:@()\[\]\\]")
_NAMED_ADDRESS = re.compile(r"(?:[^<>]*?\s*<(?P<inner>[^<>]*)>|(?P<bare>[^<>]*))")


def _check_env_names(env: Mapping[str, str], values: Mapping[str, Mapping[str, Any]]) -> None:
    """``NEWSLETTER_<SECTION>_<KEY>`` with a key no section has (``NEWSLETTER_PROVIDER_CONCURENCY``) is refused,
    as the same typo in the file is: ignored, it would leave the default in force unseen. The variables that
    hold secrets (``api_key_env``, ``secret_env`` and its ``_OLD``) are names the user chose, not settings."""
    chosen = {values["provider"]["api_key_env"], values["unsubscribe"]["secret_env"],
              values["unsubscribe"]["secret_env"] + "_OLD"}
    for name in sorted(env):
        rest = name[len("NEWSLETTER_"):].lower() if name.startswith("NEWSLETTER_") else ""
        section = next((s for s in SCHEMA if rest.startswith(f"{s}_")), None)
        if section is None or name in chosen or rest[len(section) + 1:] in SCHEMA[section]:
            continue
        known = [f"NEWSLETTER_{section}_{key}".upper() for key in SCHEMA[section]]
        raise ConfigError(f"environment variable {name} is not a setting{_suggest(name, known)}",
                          hint=f"fix its name, or unset it (`unset {name}`); docs/configuration.md lists the "
                               f"[{section}] settings and their variables")


def _check_addresses(values: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str]) -> None:
    """``from`` and ``reply_to`` ("Name <you@example.com>" or a bare address) and ``[unsubscribe] mailto`` (a
    bare address) are addresses, or empty: a slip would reach every reader's headers."""
    for section, key, named in (("newsletter", "from", True), ("newsletter", "reply_to", True),
                                ("unsubscribe", "mailto", False)):
        value = values[section][key].strip()
        if not value:
            continue
        shape = _NAMED_ADDRESS.fullmatch(value) if named else None
        address = (shape.group("inner") or shape.group("bare") or "").strip() if shape else value
        if not _ADDRESS.fullmatch(address):
            example = '"Field Notes <notes@example.com>" or "notes@example.com"' if named else '"unsubscribe@example.com"'
            raise ConfigError(f"[{section}] {key} = {value!r} is not an email address", path=origins[f"{section}.{key}"],
                              hint=f"write it as {example}")
        name = value[:value.rfind("<")].strip() if shape and shape.group("inner") is not None else ""
        if name and not (name.startswith('"') and name.endswith('"')) and _NAME_SPECIALS.search(name):
            # Unquoted, "Müller, Anna <a@example.com>" is two addresses to every mail reader: replies bounce.
            raise ConfigError(f"[{section}] {key} = {value!r}: the name holds a {_NAME_SPECIALS.search(name)[0]!r}, "
                              "which splits the header unless the name is quoted", path=origins[f"{section}.{key}"],
                              hint=f"""put the name in double quotes: {key} = '"{name}" <{address}>'""")


def _check_site_url(site_url: str, origin: str) -> None:
    """``[newsletter] site_url`` is "" or an absolute http(s) URL: the view-online links start with it."""
    parts = urlsplit(site_url) if site_url else None
    if parts is not None and (parts.scheme not in ("https", "http") or not parts.netloc):
        raise ConfigError(f"[newsletter] site_url = {site_url!r} is not an absolute URL: every view-online link "
                          "would be broken", path=origin, hint='write it with its scheme, e.g. "https://example.com/notes"')


# user:password@ up to the authority's last "@" (a password with an unencoded "@" is still all hidden), and
# libpq's ?password= parameter.
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def without_password(url: str) -> str:
    """``url`` with any password in it shown as ``****`` (what may be printed of a URL)."""
    return _QUERY_PASSWORD.sub(r"\1****", _URL_PASSWORD.sub(r"\1****@", url))


def _check_urls(values: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str]) -> None:
    """No passwords inside URLs in the file."""
    for section, key in (("ledger", "url"), ("provider", "api_base"), ("unsubscribe", "url")):
        origin = origins[f"{section}.{key}"]
        in_file = not origin.startswith(("env ", "flag", "default"))
        if in_file and without_password(values[section][key]) != values[section][key]:
            raise ConfigError(f"[{section}] {key} contains a password, and secrets never go in the config file",
                              path=origin, hint=f"set NEWSLETTER_{section.upper()}_{key.upper()} in the "
                                                f"environment instead, or use the service's own credential file")


_URL_USERINFO = re.compile(r"(://)[^/@]*@")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_API_BASE_HINT = 'write e.g. api_base = "https://api.eu.mailgun.net", or "" for the provider\'s own'


def _check_api_base(api_base: str, origin: str) -> None:
    """``[provider] api_base`` is "" or an absolute https:// URL (http:// only to this machine): a URL that
    cannot work is refused here, not discovered batch by batch as failures in the middle of a send."""
    if not api_base:
        return
    shown = _URL_USERINFO.sub(r"\1****@", api_base)  # a user name alone may be a token
    try:
        parts = urlsplit(api_base)
        parts.port  # noqa: B018 -- a port that is not a number raises here
    except ValueError as err:
        raise ConfigError(f"[provider] api_base {shown!r} is not a URL ({err})", path=origin,
                          hint=_API_BASE_HINT) from None
    problem = ""
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problem = "must be an absolute https:// URL"
    elif "@" in parts.netloc:
        problem = "must not hold credentials (user@ or user:password@)"
    elif parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        problem = f"may use http:// only for this machine ({', '.join(_LOOPBACK_HOSTS)}); use https://"
    elif parts.query or parts.fragment or api_base.endswith(("?", "#")):
        problem = "must not hold a ?query or #fragment (the API's paths are appended to it)"
    if problem:
        hint = ("the API key is read from the variable named by api_key_env" if "@" in parts.netloc
                else _API_BASE_HINT)
        raise ConfigError(f"[provider] api_base {shown!r} {problem}", path=origin, hint=hint)


# (section, key) -> the smallest value that can work, and whether that value itself is allowed
# (a negative number is already refused by _coerce).
_LOWER_BOUNDS = {("provider", "timeout"): (0, False), ("provider", "concurrency"): (1, True),
                 ("provider", "max_attempts"): (1, True)}


def _check_lower_bounds(values: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str]) -> None:
    for (section, key), (bound, inclusive) in _LOWER_BOUNDS.items():
        value = values[section][key]
        if value > bound or (inclusive and value == bound):
            continue
        default, meaning = SCHEMA[section][key]
        need = f"at least {bound}" if inclusive else f"more than {bound}"
        raise ConfigError(f"[{section}] {key} must be {need}, got {display(value)}", path=origins[f"{section}.{key}"],
                          hint=f"{meaning}; write e.g. {key} = {display(default)}")


def describe(settings: Settings) -> list[tuple[str, Any, str]]:
    """(key, value, origin) rows for ``config show``: values as resolved (a password in a URL masked),
    env-named secrets shown as "****" or "(not set)"."""
    rows: list[tuple[str, Any, str]] = []
    for section, keys in SCHEMA.items():
        for key in keys:
            value = settings.values[section][key]
            if isinstance(value, str):
                value = without_password(value)
            rows.append((f"{section}.{key}", value, settings.origins[f"{section}.{key}"]))
    for section, key in (("provider", "api_key_env"), ("unsubscribe", "secret_env")):
        name = settings.values[section][key]
        secret = settings.env.get(name)
        rows.append((f"${name}", _mask(secret) if secret else "(not set)", "env" if secret else "-"))
    return rows


def _coerce(section: str, key: str, value: Any, where: str) -> Any:
    default = SCHEMA[section][key][0]
    given = value  # as written, for the message
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                value = value.lower() in ("1", "true", "yes", "on")
            elif not isinstance(value, bool):
                raise ValueError(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            value = int(value)
            if value < 0:
                raise ValueError(value)
        elif isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            value = float(value)
            if value < 0 or not math.isfinite(value):
                raise ValueError(value)
        elif not isinstance(value, str):
            raise ValueError(value)
    except (TypeError, ValueError):
        kind = {bool: "true or false", str: "a string", int: "a non-negative int", float: "a non-negative float"}
        raise ConfigError(f"[{section}] {key} must be {kind[type(default)]}, got {given!r}", path=where) from None
    choices = CHOICES.get((section, key))
    if choices and value not in choices:
        raise ConfigError(f"[{section}] {key} = {value!r} is not one of {', '.join(choices)}"
                          f"{_suggest(value, choices)}", path=where)
    # Most strings land in a header (From, Reply-To, List-Unsubscribe, Postmark's stream) or a URL.
    if isinstance(value, str) and key != "postal_address" and (found := first_line_break(value)):
        raise ConfigError(f"[{section}] {key} must be one line, and it holds a line break (U+{ord(found):04X})",
                          path=where, hint="write it on one line")
    return value


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _line_of(text: str, pattern: str) -> int | None:
    for number, line in enumerate(text.splitlines(), 1):
        if re.search(pattern, line):
            return number
    return None


def _key_line(text: str, section: str, key: str) -> int | None:
    """Line of ``key = ...`` inside ``[section]`` (keys repeat across sections, e.g. ``name``)."""
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\s*([\w-]+)\s*\]", line)
        if header:
            current = header.group(1)
        elif current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _toml_error_line(message: str) -> int | None:
    m = re.search(r"at line (\d+)", message)
    return int(m.group(1)) if m else None


def _mask(secret: str) -> str:
    return "****"  # not even a prefix: keys are short enough that parts of them matter


def display(value: Any) -> str:
    """A setting's value as ``config show`` prints it in its table (TOML-like: true, 'text', 3)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
