"""Configuration that cannot work is refused when it is loaded (docs/configuration.md, values that are
refused): through the CLI, with the file, line and key (or the env var), exit 1, and nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ISSUE = "issues/2026-11-30-weekly.md"


def set_key(workspace: Path, section: str, key: str, toml_value: str) -> int:
    """Rewrite ``key = ...`` inside ``[section]`` of the workspace's newsletter.toml; its line number."""
    path = workspace / "newsletter.toml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    current = None
    for number, line in enumerate(lines, 1):
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            current = header.group(1)
        elif current == section and re.match(rf"^{re.escape(key)}\s*=", line):
            lines[number - 1] = f"{key} = {toml_value}\n"
            path.write_text("".join(lines), encoding="utf-8")
            return number
    raise AssertionError(f"no [{section}] {key} in newsletter.toml")


def refused(run, workspace: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run the command, expect exit 1 with nothing written in the workspace, and return its stderr."""
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    result = run(*args, env=env)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before  # no ledger, no outbox
    assert not (workspace / ".newsletter").exists() and not (workspace / "outbox").exists()
    return result.stderr


API_BASE_HINT = 'write e.g. api_base = "https://api.eu.mailgun.net", or "" for the provider\'s own'


@pytest.mark.parametrize("value, problem, hint", [
    ("http://api.example.com", "may use http:// only for this machine (127.0.0.1, ::1, localhost); use https://",
     API_BASE_HINT),
    ("api.postmarkapp.com", "must be an absolute https:// URL", API_BASE_HINT),
    ("ftp://api.example.com", "must be an absolute https:// URL", API_BASE_HINT),
    ("https://", "must be an absolute https:// URL", API_BASE_HINT),
    ("https://api.example.com/v3?key=1", "must not hold a ?query or #fragment (the API's paths are appended to it)",
     API_BASE_HINT),
])
def test_an_api_base_that_cannot_work_is_refused_with_its_line(run, workspace, value, problem, hint):
    line = set_key(workspace, "provider", "api_base", f'"{value}"')
    assert refused(run, workspace, "send", ISSUE, "--dry-run") == (
        f"Error: newsletter.toml:{line}: [provider] api_base {value!r} {problem} ({hint})\n")


def test_an_api_base_from_the_environment_names_the_variable_and_masks_credentials(run, workspace):
    env = {"NEWSLETTER_PROVIDER_API_BASE": "https://pm-token-1234@api.example.com"}
    stderr = refused(run, workspace, "config", "show", env=env)
    assert stderr == ("Error: env NEWSLETTER_PROVIDER_API_BASE: [provider] api_base 'https://****@api.example.com' "
                      "must not hold credentials (user@ or user:password@) (the API key is read from the variable "
                      "named by api_key_env)\n")
    assert "pm-token" not in stderr


@pytest.mark.parametrize("value", ["https://api.eu.mailgun.net", "https://proxy.example.com/postmark/",
                                   "http://127.0.0.1:8025", "http://localhost", "http://[::1]:9000", ""])
def test_an_https_or_loopback_api_base_is_accepted(run, workspace, value):
    set_key(workspace, "provider", "api_base", f'"{value}"')
    result = run("config", "show", "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("key, toml_value, words", [
    ("timeout", "0", "must be more than 0, got 0.0 (seconds to wait for one API answer; write e.g. timeout = 30.0)"),
    ("concurrency", "0", "must be at least 1, got 0 (parallel API requests; write e.g. concurrency = 4)"),
    ("max_attempts", "0", "must be at least 1, got 0 (tries per recipient in one run; then it stays pending for "
                          "the next run; write e.g. max_attempts = 5)"),
    ("rate_limit", "-1", "must be a non-negative float, got -1"),
    ("rate_limit", "nan", "must be a non-negative float, got nan"),
    ("timeout", "inf", "must be a non-negative float, got inf"),
    ("batch_size", "-5", "must be a non-negative int, got -5"),
])
def test_a_number_that_cannot_work_is_refused_with_its_line(run, workspace, key, toml_value, words):
    line = set_key(workspace, "provider", key, toml_value)
    assert refused(run, workspace, "send", ISSUE, "--dry-run") == f"Error: newsletter.toml:{line}: [provider] {key} {words}\n"


def test_a_number_from_the_environment_names_the_variable(run, workspace):
    stderr = refused(run, workspace, "config", "show", env={"NEWSLETTER_PROVIDER_CONCURRENCY": "0"})
    assert stderr == ("Error: env NEWSLETTER_PROVIDER_CONCURRENCY: [provider] concurrency must be at least 1, got 0 "
                      "(parallel API requests; write e.g. concurrency = 4)\n")


def test_an_environment_value_that_works_overrides_a_file_value_that_would_not(run, workspace):
    set_key(workspace, "provider", "timeout", "0")
    assert run("config", "show", env={"NEWSLETTER_PROVIDER_TIMEOUT": "10"}).exit_code == 0


@pytest.mark.parametrize("name, maximum, command", [
    ("outbox", 50, ("send", ISSUE, "--dry-run")),
    ("outbox", 50, ("send", ISSUE, "--yes")),
    ("outbox", 50, ("build", ISSUE)),
    ("postmark", 500, ("send", ISSUE, "--dry-run")),
    ("resend", 100, ("send", ISSUE, "--dry-run")),
    ("postmark", 500, ("suppressions", "sync")),  # opens the provider without building an issue
])
def test_a_batch_size_above_the_providers_maximum_is_refused_not_cut_down(run, workspace, name, maximum, command):
    set_key(workspace, "provider", "name", f'"{name}"')
    line = set_key(workspace, "provider", "batch_size", str(maximum + 1))
    env = {"NEWSLETTER_API_KEY": "key-for-the-test", "NEWSLETTER_SECRET": "s" * 32}
    assert refused(run, workspace, *command, env=env) == (
        f"Error: newsletter.toml:{line}: [provider] batch_size = {maximum + 1} is more than {name} takes in one "
        f"batch ({maximum}) (write batch_size = {maximum} or less, or 0 for {name}'s maximum)\n")


def test_the_providers_maximum_itself_is_accepted(run, workspace):
    set_key(workspace, "provider", "batch_size", "50")
    result = run("send", ISSUE, "--dry-run")
    assert result.exit_code == 0, result.output


# Every character str.splitlines() splits at, as a TOML escape.
LINE_BREAKS = {"\n": r"\n", "\r": r"\r", "\v": r"\u000b", "\f": r"\f", "\x1c": r"\u001c", "\x1d": r"\u001d",
               "\x1e": r"\u001e", "\x85": r"\u0085", "\u2028": r"\u2028", "\u2029": r"\u2029"}


def test_the_line_breaks_are_exactly_what_splitlines_splits_at():
    from newsletter.text import has_line_break

    splitters = {chr(c) for c in range(0x110000) if len(f"a{chr(c)}b".splitlines()) == 2}
    assert splitters == set(LINE_BREAKS)
    assert [c for c in map(chr, range(0x3000)) if has_line_break(c)] == sorted(splitters)


@pytest.mark.parametrize("char", LINE_BREAKS)
@pytest.mark.parametrize("section, key, before", [
    ("newsletter", "from", "Field Notes <notes@example.com>"), ("newsletter", "reply_to", "editor@example.com"),
    ("newsletter", "name", "Field Notes"), ("unsubscribe", "mailto", "unsubscribe@example.com"),
    ("provider", "message_stream", "broadcast"),
])
def test_a_line_break_in_a_header_value_is_refused(run, workspace, char, section, key, before):
    line = set_key(workspace, section, key, f'"{before}{LINE_BREAKS[char]}Bcc: all@example.com"')
    assert refused(run, workspace, "send", ISSUE, "--dry-run") == (
        f"Error: newsletter.toml:{line}: [{section}] {key} must be one line, and it holds a line break "
        f"(U+{ord(char):04X}) (write it on one line)\n")


def test_a_line_break_from_the_environment_names_the_variable(run, workspace):
    stderr = refused(run, workspace, "config", "show", env={"NEWSLETTER_NEWSLETTER_FROM": "a@example.com\u2028Bcc: x"})
    assert stderr == ("Error: env NEWSLETTER_NEWSLETTER_FROM: [newsletter] from must be one line, and it holds a "
                      "line break (U+2028) (write it on one line)\n")


def test_the_postal_address_may_span_lines(run, workspace):
    set_key(workspace, "newsletter", "postal_address", r'"Field Notes\n12 Harbour Road\u2028Bristol"')
    assert run("config", "show").exit_code == 0


@pytest.mark.parametrize("section, key, toml_value, hint", [
    ("newsletter", "from", '"Field Notes notes@example.com"', 'write it as "Field Notes <notes@example.com>" or '
                                                                 '"notes@example.com"'),
    ("newsletter", "from", '"notes@@example.com"', 'write it as "Field Notes <notes@example.com>"'),
    ("newsletter", "from", '"Field Notes <notes@example>"', 'write it as "Field Notes <notes@example.com>"'),
    ("newsletter", "reply_to", '"editor@@example"', 'or "notes@example.com"'),
    ("unsubscribe", "mailto", '"unsub"', 'write it as "unsubscribe@example.com"'),
    ("unsubscribe", "mailto", '"Unsubscribe <unsubscribe@example.com>"', 'write it as "unsubscribe@example.com"'),
])
def test_an_address_that_is_not_one_is_refused_with_its_line(run, workspace, section, key, toml_value, hint):
    """A slip in an address would reach every reader's headers; a typo'd From reached `send` as "no From"."""
    line = set_key(workspace, section, key, toml_value)
    err = refused(run, workspace, "send", ISSUE, "--yes")
    assert f"Error: newsletter.toml:{line}: [{section}] {key} = {toml_value[1:-1]!r} is not an email address (" in err
    assert hint in err


@pytest.mark.parametrize("key, toml_value, special", [
    ("reply_to", "'Müller, Anna <anna@example.com>'", ","), ("from", "'Notes: Weekly <notes@example.com>'", ":"),
    ("from", "'Ann (editor) <ann@example.com>'", "("),
])
def test_a_name_with_an_unquoted_special_is_refused_with_the_quoted_form(run, workspace, key, toml_value, special):
    """Unquoted, "Müller, Anna <a@x>" is two addresses to every mail reader: replies bounced, build crashed."""
    line = set_key(workspace, "newsletter", key, toml_value)
    err = refused(run, workspace, "send", ISSUE, "--yes")
    name, address = toml_value[1:-1].rsplit(" <", 1)
    assert f"Error: newsletter.toml:{line}: [newsletter] {key} = {toml_value[1:-1]!r}: the name holds a " \
           f"{special!r}, which splits the header unless the name is quoted" in err
    assert f"""{key} = '"{name}" <{address[:-1]}>'""" in err


def test_a_site_url_without_its_scheme_is_refused(run, workspace):
    line = set_key(workspace, "newsletter", "site_url", '"example.com/notes"')
    err = refused(run, workspace, "build", ISSUE)
    assert (f"Error: newsletter.toml:{line}: [newsletter] site_url = 'example.com/notes' is not an absolute URL: every "
            'view-online link would be broken (write it with its scheme, e.g. "https://example.com/notes")') in err


@pytest.mark.parametrize("section, key, toml_value", [
    ("newsletter", "from", '"notes@example.com"'), ("newsletter", "from", '"Field Notes <notes@example.com>"'),
    ("newsletter", "from", '"\\"Notes, Weekly\\" <notes@mail.example.co.uk>"'), ("newsletter", "reply_to", '""'),
    ("newsletter", "reply_to", "'Ann \"Ed\" Lee <ann@example.com>'"),  # a quoted word inside a name is fine
    ("unsubscribe", "mailto", '""'), ("newsletter", "site_url", '""'), ("newsletter", "site_url", '"http://localhost:8000"'),
    ("newsletter", "language", '"pt-BR"'),
])
def test_addresses_urls_and_tags_that_work_are_accepted(run, workspace, section, key, toml_value):
    set_key(workspace, section, key, toml_value)
    result = run("build", ISSUE)
    assert result.exit_code == 0, result.output


def test_a_language_name_is_not_a_tag(run, workspace):
    line = set_key(workspace, "newsletter", "language", '"english"')
    assert (f"Error: newsletter.toml:{line}: [newsletter] language = 'english' is not a language tag"
            in refused(run, workspace, "build", ISSUE))


def test_an_environment_variable_with_a_typo_is_refused_with_a_guess(run, workspace):
    err = refused(run, workspace, "send", ISSUE, "--dry-run", env={"NEWSLETTER_PROVIDER_CONCURENCY": "3"})
    assert ("Error: environment variable NEWSLETTER_PROVIDER_CONCURENCY is not a setting (did you mean "
            "'NEWSLETTER_PROVIDER_CONCURRENCY'?) (fix its name, or unset it (`unset NEWSLETTER_PROVIDER_CONCURENCY`); "
            "docs/configuration.md lists the [provider] settings and their variables)") in err


def test_the_variables_a_user_names_for_secrets_and_other_names_are_not_settings_to_check(run, workspace):
    set_key(workspace, "provider", "api_key_env", '"NEWSLETTER_PROVIDER_TOKEN"')
    set_key(workspace, "unsubscribe", "secret_env", '"NEWSLETTER_RENDER_KEY"')
    env = {"NEWSLETTER_PROVIDER_TOKEN": "k", "NEWSLETTER_RENDER_KEY": "s", "NEWSLETTER_RENDER_KEY_OLD": "t",
           "NEWSLETTER_REQUIRE_POSTGRES": "1", "NEWSLETTER_PROVIDER_CONCURRENCY": "3"}
    result = run("build", ISSUE, env=env)
    assert result.exit_code == 0, result.output
