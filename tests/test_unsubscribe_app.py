"""The unsubscribe endpoint through real sockets (docs/unsubscribe.md), and the tokens it reads."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import io
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from helpers import BOTH_LEDGERS, connections_taken, ledger_env, workspace_ledger
from hypothesis import given, settings as hsettings, strategies as st

from newsletter import config
from newsletter.unsubscribe import make_token, open_token, TokenFacts
from newsletter.unsubscribe_app import Limiter, open_server

ISSUE = "2026-11-30-weekly"
SECRET = "test-secret"
ENV = {"NEWSLETTER_SECRET": SECRET}
PAGE = "/notes/unsubscribe"  # the path of the example's [unsubscribe] url
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def settings_for(workspace: Path, **env) -> config.Settings:
    return config.load(workspace / "newsletter.toml", {**ENV, **ledger_env(), **env})


@pytest.fixture
def server(workspace):
    """The app under wsgiref on a free port, in this process; yields its base URL."""
    srv = open_server(settings_for(workspace), "127.0.0.1", 0, limiter=Limiter(allowed=5, window=60))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def link(base: str, email: str, issue: str = ISSUE, secret: str = SECRET) -> str:
    return f"{base}{PAGE}?t={make_token(email, secret.encode(), issue)}"


def rows(workspace: Path) -> dict[str, dict[str, str]]:
    text = (workspace / "subscribers" / "subscribers.csv").read_text(encoding="utf-8")
    return {row["email"]: row for row in csv.DictReader(io.StringIO(text))}


def suppressions(workspace: Path):
    with workspace_ledger(workspace) as ledger:
        return {s.email: s for s in ledger.suppressions()}


def nothing_suppressed(workspace: Path) -> bool:
    """No suppression recorded (a SQLite ledger never created counts as none)."""
    if not ledger_env() and not (workspace / ".newsletter" / "ledger.sqlite3").exists():
        return True
    return suppressions(workspace) == {}


# -- the endpoint ------------------------------------------------------------------------------------
@BOTH_LEDGERS
def test_get_never_unsubscribes_and_shows_the_masked_address(workspace, server):
    page = requests.get(link(server, "ada@example.com"), timeout=10)
    assert page.status_code == 200
    assert "a***@example.com" in page.text and "ada@example.com" not in page.text
    assert re.search(r'<form method="post">.*name="List-Unsubscribe" value="One-Click"', page.text)
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"
    assert rows(workspace)["ada@example.com"]["status"] == "subscribed"
    assert nothing_suppressed(workspace)


@BOTH_LEDGERS
def test_one_click_post_records_the_suppression_and_the_row_then_a_replay_changes_nothing(workspace, server):
    answer = requests.post(link(server, "Ada@Example.com"), data=ONE_CLICK, timeout=10, allow_redirects=False)
    assert answer.status_code == 200 and "no more mail" in answer.text
    found = suppressions(workspace)["ada@example.com"]
    assert (found.reason, found.source, found.issue_id) == ("unsubscribed", "link", ISSUE)
    row = rows(workspace)["ada@example.com"]
    assert row["status"] == "unsubscribed" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["unsubscribed_at"])
    before = (workspace / "subscribers" / "subscribers.csv").read_bytes()

    again = requests.post(link(server, "ada@example.com", issue="another-issue"), data=ONE_CLICK, timeout=10)
    assert again.status_code == 200
    assert suppressions(workspace)["ada@example.com"] == found  # the first record stands, issue and time
    assert (workspace / "subscribers" / "subscribers.csv").read_bytes() == before


def test_a_post_without_the_one_click_body_changes_nothing(workspace, server):
    answer = requests.post(link(server, "ada@example.com"), data={"x": "y"}, timeout=10)
    assert answer.status_code == 400
    assert rows(workspace)["ada@example.com"]["status"] == "subscribed"


@pytest.mark.parametrize("spoil", ["flip", "other-secret", "truncate"])
@BOTH_LEDGERS
def test_a_tampered_or_foreign_token_is_400_and_changes_nothing(workspace, server, spoil):
    token = make_token("ada@example.com", SECRET.encode(), ISSUE)
    if spoil == "flip":
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw[20] ^= 1
        token = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    elif spoil == "other-secret":
        token = make_token("ada@example.com", b"another", ISSUE)
    else:
        token = token[:-3]
    answer = requests.post(f"{server}{PAGE}?t={token}", data=ONE_CLICK, timeout=10)
    assert answer.status_code == 400 and "not valid" in answer.text
    assert rows(workspace)["ada@example.com"]["status"] == "subscribed"
    assert nothing_suppressed(workspace)


def test_bad_tokens_are_rate_limited_per_client_and_good_ones_still_go_through(workspace, server):
    """Only failures are limited: a valid token cannot be guessed, and one-click POSTs come from providers'
    shared addresses, so bad tokens from one client must never block anyone's unsubscribe."""
    codes = [requests.get(f"{server}{PAGE}?t=AAAA{n}", timeout=10).status_code for n in range(7)]
    assert codes == [400] * 5 + [429] * 2
    assert requests.get(link(server, "ada@example.com"), timeout=10).status_code == 200
    assert requests.post(link(server, "ada@example.com"), data=ONE_CLICK, timeout=10).status_code == 200
    assert rows(workspace)["ada@example.com"]["status"] == "unsubscribed"
    assert requests.get(f"{server}{PAGE}?t=AAAA9", timeout=10).status_code == 429  # the bad still wait


def test_only_the_configured_path_is_served_and_bodies_are_capped(workspace, server):
    assert requests.get(f"{server}/", timeout=10).status_code == 404
    assert requests.get(f"{server}/subscribers/subscribers.csv", timeout=10).status_code == 404
    assert requests.get(f"{server}{PAGE}/../newsletter.toml", timeout=10).status_code == 404
    big = requests.post(link(server, "ada@example.com"), data={"List-Unsubscribe": "One-Click", "pad": "x" * 10_000},
                        timeout=10)
    assert big.status_code == 413
    assert requests.put(link(server, "ada@example.com"), timeout=10).status_code == 405
    assert rows(workspace)["ada@example.com"]["status"] == "subscribed"


def test_the_server_takes_a_burst_of_connections_before_it_accepts_any(workspace):
    """Bound and listening, not yet accepting: with socketserver's backlog of 5 the kernel drops the
    SYNs past the sixth, so those connects time out; a burst of one-click POSTs must not."""
    srv = open_server(settings_for(workspace), "127.0.0.1", 0)
    try:
        assert connections_taken(srv.server_port) == 64
    finally:
        srv.server_close()


@BOTH_LEDGERS
def test_fifty_concurrent_unsubscribes_are_all_recorded_and_the_list_stays_whole(workspace, server):
    path = workspace / "subscribers" / "subscribers.csv"
    extra = [f"reader{n:02d}@example.com" for n in range(50)]
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(f"{email},Reader,subscribed,weekly,2026-01-01,\n" for email in extra)
    with ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(lambda e: requests.post(link(server, e), data=ONE_CLICK, timeout=60).status_code, extra))
    assert codes == [200] * 50
    assert set(extra) <= set(suppressions(workspace))
    after = rows(workspace)
    assert len(after) == 55 and all(after[e]["status"] == "unsubscribed" for e in extra)
    assert after["ada@example.com"]["status"] == "subscribed"


def test_the_token_less_page_asks_for_the_address_and_mails_a_working_link(workspace, server):
    form = requests.get(f"{server}{PAGE}", timeout=10)
    assert form.status_code == 200 and 'name="email"' in form.text
    for address in ("grace@example.org", "stranger@example.com"):
        answer = requests.post(f"{server}{PAGE}", data={"email": address}, timeout=10)
        assert answer.status_code == 200 and "on its way" in answer.text  # the same answer either way
    mails = list((workspace / "outbox" / "unsubscribe-confirmations").glob("*.eml"))
    assert [m.name.split("--")[0] for m in mails] == ["grace@example.org"]  # only a subscriber gets mail
    mail = email.message_from_bytes(mails[0].read_bytes(), policy=email.policy.default)
    token = re.search(r"unsubscribe\?t=([A-Za-z0-9_-]+)", mail.get_body(("plain",)).get_content()).group(1)
    assert open_token(token, [SECRET.encode()]) == TokenFacts("grace@example.org", "")
    assert requests.post(f"{server}{PAGE}?t={token}", data=ONE_CLICK, timeout=10).status_code == 200
    assert rows(workspace)["grace@example.org"]["status"] == "unsubscribed"


def test_the_cli_server_never_logs_a_whole_token(workspace):
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_SECRET": SECRET, "NEWSLETTER_CONFIG": str(workspace / "newsletter.toml")}
    proc = subprocess.Popen([sys.executable, "-c", "from newsletter.cli import main; main()",
                             "unsubscribe", "serve", "--port", "0"],
                            env=env, cwd=workspace, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()
        base = re.search(r"(http://127\.0\.0\.1:\d+)", first).group(1)
        url = link(base, "ada@example.com")
        assert requests.post(url, data=ONE_CLICK, timeout=10).status_code == 200
        assert requests.get(url + "x", timeout=10).status_code == 400
        stray = url.replace("?t=", "/?t=")  # a token sent to a path that is not the page's: 404, still cut
        assert requests.get(stray, timeout=10).status_code == 404
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[1]
    token = url.split("t=")[1]
    assert token[:6] in log and token not in log and token[:12] not in log
    assert "a***@example.com" in log and "ada@example.com" not in log


# -- sending after an unsubscribe ----------------------------------------------------------------------
@BOTH_LEDGERS
def test_an_unsubscribe_between_two_runs_of_one_issue_leaves_the_reader_out(workspace, run, server):
    first = run("send", ISSUE, "--yes", "--limit", "1", env=ENV)
    assert first.exit_code == 4, first.output  # pending rows left
    sent = {p.name.split("--")[0] for p in (workspace / "outbox" / ISSUE).glob("*.eml")}
    assert len(sent) == 1
    reader = next(e for e in ("ada@example.com", "grace@example.org", "linus@example.net") if e not in sent)
    assert requests.post(link(server, reader), data=ONE_CLICK, timeout=10).status_code == 200
    second = run("send", ISSUE, "--yes", env=ENV)
    assert second.exit_code == 0, second.output
    delivered = [p.name.split("--")[0] for p in (workspace / "outbox" / ISSUE).glob("*.eml")]
    assert reader not in delivered and len(delivered) == 3  # four subscribed, one left between the runs


@BOTH_LEDGERS
def test_apply_unsubscribes_copies_link_unsubscribes_into_the_list(workspace, run):
    with workspace_ledger(workspace) as ledger:
        ledger.add_suppression("grace@example.org", "unsubscribed", "link", issue_id=ISSUE)
        ledger.add_suppression("linus@example.net", "bounced", "postmark")
        ledger.add_suppression("alan@example.com", "unsubscribed", "link")  # already unsubscribed in the list
        ledger.add_suppression("nobody@example.com", "unsubscribed", "link")  # not in the list
    before = (workspace / "subscribers" / "subscribers.csv").read_bytes()
    dry = run("subscribers", "apply-unsubscribes", "--dry-run")
    assert dry.exit_code == 0 and "would unsubscribe grace@example.org" in dry.output
    assert (workspace / "subscribers" / "subscribers.csv").read_bytes() == before
    result = run("subscribers", "apply-unsubscribes")
    assert result.exit_code == 0, result.output
    assert "1 row(s) marked unsubscribed" in result.output
    after = rows(workspace)
    assert after["grace@example.org"]["status"] == "unsubscribed" and after["grace@example.org"]["unsubscribed_at"]
    assert after["linus@example.net"]["status"] == "subscribed"
    alan = "alan@example.com,Alan Turing,unsubscribed,weekly,2026-01-09,Manchester\n"
    assert alan in before.decode() and alan in (workspace / "subscribers" / "subscribers.csv").read_text()  # as it was
    assert "nobody@example.com" not in after


# -- verify ------------------------------------------------------------------------------------------
def test_verify_prints_the_address_and_issue_of_a_token_or_link(workspace, run):
    token = make_token("ada@example.com", SECRET.encode(), ISSUE)
    for given_ in (token, f"https://example.com/notes/unsubscribe?t={token}",
                   f"<https://example.com/notes/unsubscribe?t={token}>"):  # copied whole from List-Unsubscribe
        result = run("unsubscribe", "verify", given_, env=ENV)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == ["address: ada@example.com", "newsletter: Field Notes Weekly",
                                              f"issue: {ISSUE}"]
    refused = run("unsubscribe", "verify", token[:-2], env=ENV)
    assert refused.exit_code == 1 and "not valid" in refused.output


def test_an_old_secret_keeps_its_links_working_while_it_is_set(workspace, run):
    token = make_token("ada@example.com", b"previous", ISSUE)
    assert run("unsubscribe", "verify", token, env=ENV).exit_code == 1
    result = run("unsubscribe", "verify", token, env={**ENV, "NEWSLETTER_SECRET_OLD": "previous"})
    assert result.exit_code == 0 and "address: ada@example.com" in result.output


def test_serve_on_a_port_in_use_says_so_not_a_paths_permissions(workspace, run):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("unsubscribe", "serve", "--port", str(port), env=ENV)
    assert result.exit_code == 1
    assert (f"Error: 127.0.0.1 port {port} is in use (pass another --port (0 picks a free one), or stop what "
            f"listens there)") in result.output


def test_the_app_refuses_to_start_without_a_secret_or_a_token_in_the_url(workspace, run):
    result = run("unsubscribe", "serve", "--port", "0")
    assert result.exit_code == 1 and "$NEWSLETTER_SECRET is not set" in result.output
    result = run("unsubscribe", "serve", "--port", "0", env={**ENV, "NEWSLETTER_UNSUBSCRIBE_URL": "provider"})
    assert result.exit_code == 1 and "no {token}" in result.output


# -- tokens (property) --------------------------------------------------------------------------------
addresses = st.emails().map(str.lower)
issues = st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=40)


@hsettings(max_examples=200, deadline=None)
@given(addresses, issues, st.binary(min_size=1, max_size=64))
def test_a_token_opens_to_what_it_sealed_and_reveals_nothing_of_it(email, issue, secret):
    token = make_token(email, secret, issue)
    assert open_token(token, [secret]) == TokenFacts(email, issue)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    local = email.split("@")[0].encode()
    for form in (email.encode(), local if len(local) >= 4 else b"\x00" * 99):
        assert form not in raw and form.decode() not in token
        assert base64.urlsafe_b64encode(form).rstrip(b"=")[:-1].decode() not in token


@hsettings(max_examples=200, deadline=None)
@given(addresses, issues, st.data())
def test_any_one_bit_change_is_refused(email, issue, data):
    token = make_token(email, b"s3cret", issue)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert open_token(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), [b"s3cret"]) is None
