"""Provider adapters, one module each, looked up by ``[provider] name``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ConfigError
from ..unsubscribe import PROVIDER_MANAGED

if TYPE_CHECKING:  # both load heavy libraries; this table is read by commands that need neither (`status`)
    from ..compile.pipeline import ProviderFacts
    from .base import Provider

# name -> "module:Class"
ADAPTERS = {
    "outbox": "newsletter.providers.outbox:OutboxProvider",
    "postmark": "newsletter.providers.postmark:PostmarkProvider",
    "sendgrid": "newsletter.providers.sendgrid:SendGridProvider",
    "mailgun": "newsletter.providers.mailgun:MailgunProvider",
    "resend": "newsletter.providers.resend:ResendProvider",
    "ses": "newsletter.providers.ses:SesProvider",
    "brevo": "newsletter.providers.brevo:BrevoProvider",
}


def provider_class(name: str) -> type[Provider]:
    try:
        module_name, _, class_name = ADAPTERS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}", hint=f"use one of {', '.join(ADAPTERS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def unsubscribe_refusal(settings: Settings) -> str:
    """Why ``[unsubscribe] url = "provider"`` cannot work with the configured provider ("" when it can,
    or when the newsletter has its own unsubscribe page)."""
    if settings.unsubscribe.url != PROVIDER_MANAGED:
        return ""
    return provider_class(settings.provider.name).unsubscribe_refusal(settings)


def provider_facts(settings: Settings) -> ProviderFacts:
    """What compiling needs to know of the configured provider (compile/ asks no provider itself); a build for
    a provider that cannot take the configured batch size is refused as sending would be."""
    from ..compile.pipeline import ProviderFacts

    cls = provider_class(settings.provider.name)
    cls.refuse_batch_size(settings)
    managed = settings.unsubscribe.url == PROVIDER_MANAGED
    return ProviderFacts(unsubscribe_link=cls.unsubscribe_placeholder if managed else "",
                         unsubscribe_refusal=unsubscribe_refusal(settings))


def open_provider(settings: Settings) -> Provider:
    """The configured adapter with its key read from the environment (never from the TOML)."""
    cls = provider_class(settings.provider.name)
    refusal = unsubscribe_refusal(settings)
    if refusal:  # nobody would get a working unsubscribe link
        raise ConfigError(f'[unsubscribe] url = "provider": {refusal}', path=settings.origins.get("unsubscribe.url"),
                          hint='or give your own page: url = '
                               '"https://example.com/unsubscribe?t={token}"')
    key = settings.secret("provider", "api_key_env")
    if cls.needs_api_key and not key:
        raise ConfigError(f"provider {settings.provider.name} needs an API key, and "
                          f"${settings.provider.api_key_env} is not set",
                          hint=f"export {settings.provider.api_key_env}=... (the key never goes in newsletter.toml)")
    return cls(settings, key)

