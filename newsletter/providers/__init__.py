"""Provider adapters, one module each, looked up by ``[provider] name``."""

from __future__ import annotations

import importlib

from ..config import Settings
from ..errors import ConfigError
from .base import Batch, Provider, Request

# name -> "module:Class"
ADAPTERS = {
    "outbox": "newsletter.providers.outbox:OutboxProvider",
    "postmark": "newsletter.providers.postmark:PostmarkProvider",
    "sendgrid": "newsletter.providers.sendgrid:SendGridProvider",
    "mailgun": "newsletter.providers.mailgun:MailgunProvider",
    "resend": "newsletter.providers.resend:ResendProvider",
}


def provider_class(name: str) -> type[Provider]:
    try:
        module_name, _, class_name = ADAPTERS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}", hint=f"use one of {', '.join(ADAPTERS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def open_provider(settings: Settings) -> Provider:
    """The configured adapter with its key read from the environment (never from the TOML)."""
    cls = provider_class(settings.provider.name)
    key = settings.secret("provider", "api_key_env")
    if cls.needs_api_key and not key:
        raise ConfigError(f"provider {settings.provider.name} needs an API key, and "
                          f"${settings.provider.api_key_env} is not set",
                          hint=f"export {settings.provider.api_key_env}=... (the key never goes in newsletter.toml)")
    return cls(settings, key)


__all__ = ["ADAPTERS", "Batch", "Provider", "Request", "open_provider", "provider_class"]
