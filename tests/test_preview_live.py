"""The preview's pieces in-process: LiveIssue, the watcher, the request rules, the picker."""

from __future__ import annotations

import threading

import pytest

from newsletter import config
from newsletter.preview import LiveIssue, Watcher, has_display, is_loopback
from newsletter.preview.live import NO_FIELDS_EMAIL
from newsletter.preview.server import is_loopback_name, refusal, with_link_target

ISSUE = "issues/2026-11-30-weekly.md"

def test_live_issue_turns_errors_into_state_and_recovers(workspace):
    settings = config.load(workspace / "newsletter.toml", {})
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}), settings=settings)
    assert live.rebuild().error is None
    issue = workspace / ISSUE
    good = issue.read_text(encoding="utf-8")
    issue.write_text(good.replace("subject:", "subjct:", 1), encoding="utf-8")
    failed = live.rebuild()
    assert failed.error.kind == "IssueError" and failed.error.path == ISSUE and "no subject" in failed.error.message
    assert live.email_html(None) is None and live.view(None)["error"]["message"] == failed.error.message
    issue.write_text(good, encoding="utf-8")
    assert live.rebuild().error is None and "Rotterdam" in live.email_html(None)
    assert live.view(None)["tag"].endswith("-3")


def test_wait_for_change_wakes_on_rebuild_and_on_close(workspace):
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    seen = live.tag
    threading.Timer(0.1, live.rebuild).start()
    assert live.wait_for_change(seen, timeout=5) is True
    threading.Timer(0.1, live.close).start()
    assert live.wait_for_change(live.tag, timeout=5) is False and live.closed


@pytest.mark.parametrize("target, refused", [
    ("/", False), ("/api/state?as=a%40b.c", False), ("/static/preview.js", False), ("/a..b", False),
    ("/..", True), ("/x/../y", True), ("/%2E%2E/y", True), ("/x/%2e", True), ("/a\\b", True), ("/a%00", True),
    ("//host/x", True), ("*", True), ("http://h/", True),
])
def test_refusal_rules(target, refused):
    assert (refusal(target) is not None) is refused


def test_loopback_checks():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("::")
    assert is_loopback_name("127.0.0.1:8000") and is_loopback_name("localhost") and is_loopback_name("[::1]:80")
    assert not is_loopback_name("example.com") and not is_loopback_name("127.0.0.1.nip.io:80")


def test_links_open_outside_the_preview_frame():
    assert with_link_target("<html><HEAD lang=x><title>t</title>") == \
        '<html><HEAD lang=x><base target="_blank"><title>t</title>'
    assert with_link_target("<p>x</p>") == '<base target="_blank"><p>x</p>'


def test_browser_opens_only_with_a_display():
    assert not has_display({}, "linux") and has_display({"DISPLAY": ":0"}, "linux")
    assert has_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux") and has_display({}, "darwin")


def test_help_names_every_option(run):
    result = run("preview", "--help")
    assert result.exit_code == 0
    for option in ("--port", "--host", "--no-open", "--as"):
        assert option in result.output


def test_a_save_before_the_watch_is_listening_is_not_lost(workspace):
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    template = workspace / "templates" / "digest.mjml"
    template.write_text(template.read_text(encoding="utf-8").replace("View this issue online", "Missed save"),
                        encoding="utf-8")  # after the compile, before any watch exists
    rebuilt = threading.Event()
    watcher = Watcher(live, on_rebuild=lambda snapshot: rebuilt.set())
    watcher.start()
    try:
        assert rebuilt.wait(5) and "Missed save" in live.email_html(None)
    finally:
        watcher.stop()
        watcher.join(5)
    assert not watcher.is_alive()


def test_picker_offers_a_few_readers_and_one_that_shows_the_fallbacks(workspace):
    rows = [f"reader{i}@example.com,Reader {i},subscribed,,,Town" for i in range(20)]
    rows[3] = "gone@example.com,Gone,unsubscribed,,,Town"
    rows[14] = "blank@example.com,,subscribed,,,Town"  # past the first eight: offered for its blank name
    (workspace / "subscribers" / "subscribers.csv").write_text(
        "email,name,status,tags,subscribed_at,city\n" + "\n".join(rows) + "\n", encoding="utf-8")
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    emails = [choice["email"] for choice in live.view("picked@example.com")["subscribers"]]
    assert emails == ["picked@example.com", *(f"reader{i}@example.com" for i in (0, 1, 2, 4, 5, 6, 7, 8)),
                      "blank@example.com", NO_FIELDS_EMAIL]
    labels = {c["email"]: c["label"] for c in live.view(None)["subscribers"]}
    assert labels["blank@example.com"] == "blank@example.com (blank: name)"
    assert labels["reader0@example.com"] == "Reader 0 <reader0@example.com>"


def test_to_header_reads_like_a_mail_client(workspace):
    (workspace / "subscribers" / "subscribers.csv").write_text(
        "email,name\nzoe@example.com,Zoë Brontë\nm@example.com,\"Hamilton, Margaret\"\n", encoding="utf-8")
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    assert dict(live.view("zoe@example.com")["headers"])["To"] == "Zoë Brontë <zoe@example.com>"
    assert dict(live.view("m@example.com")["headers"])["To"] == '"Hamilton, Margaret" <m@example.com>'
    assert dict(live.view("not an address")["headers"])["To"] == "not an address"
