import json
import re
from pathlib import Path

import pytest

from newsletter import config
from newsletter.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "newsletter.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_flags_over_env_over_toml_over_defaults(tmp_path):
    path = write(tmp_path, '[provider]\nname = "postmark"\nconcurrency = 2\n[render]\ninliner = "premailer"\n')
    env = {"NEWSLETTER_PROVIDER_CONCURRENCY": "8", "NEWSLETTER_RENDER_INLINER": "css-inline"}
    settings = config.load(path, env, {"render.inliner": "premailer"})
    assert settings.provider.name == "postmark"
    assert settings.origins["provider.name"] == f"{path}:2"
    assert settings.provider.concurrency == 8
    assert settings.origins["provider.concurrency"] == "env NEWSLETTER_PROVIDER_CONCURRENCY"
    assert settings.render.inliner == "premailer"
    assert settings.origins["render.inliner"] == "flag"
    assert settings.provider.batch_size == 0 and settings.origins["provider.batch_size"] == "default"
    assert settings.root == tmp_path


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, '[newsletter]\nname = "ok"\nfrom = unquoted@example.com\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert str(err.value).startswith(f"{path}:3: TOML syntax error")


@pytest.mark.parametrize("key", ["api_key", "secret", "token", "postmark_token"])
def test_secret_in_toml_is_refused_without_echoing_it(tmp_path, key):
    path = write(tmp_path, f'[provider]\nname = "postmark"\n{key} = "pm-live-1234567890abcdef"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    message = str(err.value)
    assert f"{path}:3: [provider] {key} looks like a secret" in message
    assert "pm-live" not in message


def test_api_key_written_into_api_key_env_is_refused_and_masked(tmp_path):
    path = write(tmp_path, '[provider]\napi_key_env = "SG.abcdefghijklmnop.qrstuvwxyz"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert "must be the NAME of an environment variable" in str(err.value)
    assert "SG.abc" not in str(err.value)


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write(tmp_path, '[provider]\nbatchsize = 10\n')
    with pytest.raises(ConfigError, match=r":2: unknown key \[provider\] batchsize \(did you mean 'batch_size'\?\)"):
        config.load(path, {})


def test_bad_choice_and_bad_number(tmp_path):
    path = write(tmp_path, '[provider]\nname = "postmrk"\n')
    with pytest.raises(ConfigError, match="did you mean 'postmark'"):
        config.load(path, {})
    ok = write(tmp_path, "")
    with pytest.raises(ConfigError, match="env NEWSLETTER_PROVIDER_CONCURRENCY: .*must be a non-negative int"):
        config.load(ok, {"NEWSLETTER_PROVIDER_CONCURRENCY": "many"})


@pytest.mark.parametrize("key, value, words", [
    ("NEWSLETTER_PROVIDER_TRACK_OPENS", "maybe", "track_opens must be true or false, got 'maybe'"),
    ("NEWSLETTER_PROVIDER_TIMEOUT", "-1", "timeout must be a non-negative float"),
])
def test_a_bad_value_names_the_kind_it_needs(tmp_path, key, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        config.load(write(tmp_path, ""), {key: value})


def test_a_secret_env_that_is_not_a_name_suggests_the_default(tmp_path):
    with pytest.raises(ConfigError, match='write e.g. secret_env = "NEWSLETTER_SECRET"'):
        config.load(write(tmp_path, '[unsubscribe]\nsecret_env = "not a name"\n'), {})


def test_the_bundled_newsletter_toml_holds_every_key_and_no_other():
    """The README promises every key is in the file `init` writes, commented."""
    import tomllib

    bundled = tomllib.loads((Path(__file__).resolve().parent.parent / "newsletter.toml").read_text())
    assert {s: set(keys) for s, keys in bundled.items()} == {s: set(keys) for s, keys in config.SCHEMA.items()}


def test_missing_config_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="newsletter init"):
        config.load(tmp_path / "newsletter.toml", {})


def test_describe_masks_secrets_held_in_env(tmp_path):
    settings = config.load(write(tmp_path, ""), {"NEWSLETTER_API_KEY": "super-secret-key-value"})
    rows = {key: (value, origin) for key, value, origin in config.describe(settings)}
    assert rows["$NEWSLETTER_API_KEY"] == ("****", "env")
    assert rows["$NEWSLETTER_SECRET"] == ("(not set)", "-")
    assert "super-secret" not in repr(settings) and "super-secret" not in str(rows)


def test_config_show_cli(run, workspace):
    result = run("config", "show", env={"NEWSLETTER_API_KEY": "pm-secret-123456789", "NEWSLETTER_PROVIDER_NAME": "postmark"})
    assert result.exit_code == 0
    assert "pm-secret" not in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert lines["provider.name"].split()[1:] == ["'postmark'", "env", "NEWSLETTER_PROVIDER_NAME"]
    assert lines["newsletter.template"].endswith("newsletter.toml:12")
    as_json = json.loads(run("config", "show", "--json", env={"NEWSLETTER_PROVIDER_CONCURRENCY": "3"}).output)
    assert as_json["provider.concurrency"] == {"value": 3, "origin": "env NEWSLETTER_PROVIDER_CONCURRENCY"}
    assert as_json["newsletter.name"]["value"] == "Field Notes Weekly" and as_json["provider.track_opens"]["value"] is False


def test_origin_lines_are_per_section(tmp_path):
    path = write(tmp_path, '[newsletter]\nname = "A"\n\n[provider]\nname = "outbox"\n')
    settings = config.load(path, {})
    assert settings.origins["newsletter.name"].endswith(":2")
    assert settings.origins["provider.name"].endswith(":5")


def test_password_in_a_url_is_refused_in_the_file_and_masked_from_env(tmp_path):
    path = write(tmp_path, '[ledger]\nurl = "postgresql://bob:s3cretpw@db/news"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert str(err.value).startswith(f"{path}:2: [ledger] url contains a password")
    assert "s3cretpw" not in str(err.value)
    settings = config.load(write(tmp_path, ""), {"NEWSLETTER_LEDGER_URL": "postgresql://bob:s3cretpw@db/news"})
    rows = {key: value for key, value, _ in config.describe(settings)}
    assert rows["ledger.url"] == "postgresql://bob:****@db/news"


@pytest.mark.parametrize("url, shown", [
    ("postgresql://bob:s3c@retpw@db:5432/news", "postgresql://bob:****@db:5432/news"),  # an "@" not encoded
    ("postgresql://bob@db/news?sslmode=require&password=s3cretpw", "postgresql://bob@db/news?sslmode=require&password=****"),
    ("postgresql://bob@db/news?PASSWORD=s3cretpw", "postgresql://bob@db/news?PASSWORD=****"),
    ("postgresql://db:5432/news", "postgresql://db:5432/news"),
    ("https://example.com/u?token={token}", "https://example.com/u?token={token}"),
])
def test_every_form_of_a_password_in_a_url_is_masked_and_refused_in_the_file(tmp_path, url, shown):
    assert config.without_password(url) == shown
    path = write(tmp_path, f'[ledger]\nurl = "{url}"\n')
    if shown == url:
        assert config.load(path, {}).ledger.url == url
        return
    with pytest.raises(ConfigError) as err:
        config.load(path, {})
    assert "contains a password" in str(err.value) and "s3c" not in str(err.value)


