"""The preview's pieces in-process: LiveIssue, the watcher, the request rules, the picker."""

from __future__ import annotations

import contextlib
import threading

import pytest
from helpers import connections_taken

from newsletter import config
from newsletter.preview import has_display
from newsletter.preview.live import LiveIssue
from newsletter.preview.server import is_loopback
from newsletter.preview.watch import Watcher
from newsletter.preview.live import LOOKUPS_KEPT, NO_FIELDS_EMAIL, PICKER_SEARCH
from newsletter.preview.server import is_loopback_name, refusal, with_link_target
from newsletter.subscribers.lookup import find_subscriber

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


# --- a long list: a compile and each request read only as far as they need -----------------

LONG = 50_000


@pytest.fixture
def rows_read(monkeypatch):
    """Count the CSV records every reader of the list reads (the header included)."""
    from newsletter.subscribers import reader as subscribers

    counter = {"rows": 0}
    original = subscribers.read_records

    @contextlib.contextmanager
    def counting(path, **options):
        with original(path, **options) as (dialect, records):
            def counted():
                for record in records:
                    counter["rows"] += 1
                    yield record
            yield dialect, counted()

    monkeypatch.setattr(subscribers, "read_records", counting)

    def take() -> int:
        rows, counter["rows"] = counter["rows"], 0
        return rows

    return take


def long_list(workspace, blank_at: int | None = None) -> None:
    rows = [f"reader{i}@example.com,Reader {i},subscribed,,,Town" for i in range(LONG)]
    if blank_at is not None:
        rows[blank_at] = f"blank{blank_at}@example.com,,subscribed,,,Town"
    rows[LONG - 1] = "Last.Reader@EXAMPLE.com,Last Reader,subscribed,,,Town"
    (workspace / "subscribers" / "subscribers.csv").write_text(
        "email,name,status,tags,subscribed_at,city\n" + "\n".join(rows) + "\n", encoding="utf-8")


def test_a_compile_reads_the_list_only_as_far_as_the_picker_needs(workspace, rows_read):
    long_list(workspace, blank_at=30)
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    assert live.rebuild().error is None
    assert rows_read() <= 40  # 8 readers and the blank one are in the first 32 rows
    assert "subscribers" not in live.snapshot.build.__dict__  # Build.subscribers (the whole list) never loaded
    emails = [c["email"] for c in live.view(None)["subscribers"]]
    assert emails == [*(f"reader{i}@example.com" for i in range(8)), "blank30@example.com", NO_FIELDS_EMAIL]
    for who in (None, "reader3@example.com", "READER7@example.com", "blank30@example.com", NO_FIELDS_EMAIL):
        assert live.view(who)["error"] is None and live.email_html(who)
    assert rows_read() == 0  # the picker's readers are answered from the compile


def test_without_a_blank_reader_the_search_for_one_is_bounded(workspace, rows_read):
    long_list(workspace)
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    assert rows_read() <= PICKER_SEARCH + 2 < LONG
    assert [c["email"] for c in live.view(None)["subscribers"]][-1] == NO_FIELDS_EMAIL


def test_another_address_is_read_for_once_per_compile(workspace, rows_read):
    long_list(workspace, blank_at=30)
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    rows_read()
    state = live.view("last.reader@example.com")
    assert state["as"] == "Last.Reader@example.com" and "Hi Last Reader," in state["text"]
    assert rows_read() == LONG + 1  # one read, to its row (the last)
    assert live.view("Last.Reader@example.COM")["as"] == "Last.Reader@example.com"
    assert "Hi Last Reader," in live.email_html("last.reader@example.com")
    assert live.view("nobody@example.com")["as"] == "nobody@example.com"  # not in the list: no fields
    assert rows_read() == LONG + 1  # the one miss read the whole list once
    assert live.view("nobody@example.com")["as"] == "nobody@example.com" and rows_read() == 0
    live.rebuild()  # a new compile asks again: the list may have changed
    rows_read()
    live.view("last.reader@example.com")
    assert rows_read() == LONG + 1


def test_as_option_is_read_for_once_in_the_compile(workspace, rows_read):
    long_list(workspace, blank_at=30)
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}),
                     default_email="last.reader@example.com")
    live.rebuild()
    assert rows_read() <= 40 + LONG + 1
    state = live.view(None)
    assert state["as"] == "Last.Reader@example.com" and state["subscribers"][0]["email"] == "Last.Reader@example.com"
    assert live.snapshot.lookup.find("last.reader@example.com").name == "Last Reader"
    assert rows_read() == 0


def test_a_lookup_finds_unicode_and_idna_addresses_as_the_list_normalises_them(workspace):
    (workspace / "subscribers" / "subscribers.csv").write_text(
        "email,name\nzoe@example.com,Zoë\nkim@XN--BCHER-KVA.example,Kim\n jöhn@Bücher.example ,John\n",
        encoding="utf-8")
    path = workspace / "subscribers" / "subscribers.csv"
    assert find_subscriber(path, "kim@bücher.example").name == "Kim"
    assert find_subscriber(path, "JÖHN@bücher.EXAMPLE").name == "John"
    assert find_subscriber(path, "john@bucher.example") is None and find_subscriber(path, "not an address") is None


@pytest.mark.parametrize("as_email, warning", [
    ("last.reader@example.com", ""),
    ("nobody@example.com", "Warning: nobody@example.com is not in subscribers/subscribers.csv: previewing a reader "
                           "with no name or fields\n"),
])
def test_preview_command_warns_about_an_unknown_as_address_without_reading_the_list_again(
        run, workspace, monkeypatch, rows_read, as_email, warning):
    from newsletter.cli import preview as command
    from newsletter.preview import PreviewSession

    long_list(workspace, blank_at=30)
    monkeypatch.setattr(command, "_stop_on_sigterm", lambda: None)
    monkeypatch.setattr(PreviewSession, "serve_forever", lambda self: None)  # start, report, stop
    result = run("preview", ISSUE, "--no-open", "--as", as_email)
    assert result.exit_code == 0, result.output
    assert result.stderr == warning
    assert rows_read() <= 40 + LONG + 1  # the compile's picker and its one read for --as; nothing more


def test_lookups_kept_per_compile_are_bounded(workspace, rows_read):
    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    live.rebuild()
    for i in range(LOOKUPS_KEPT + 10):
        assert live.view(f"stranger{i}@example.com")["as"] == f"stranger{i}@example.com"
    assert len(live.snapshot.lookup._looked_up) == LOOKUPS_KEPT  # the oldest answers are forgotten
    rows_read()
    live.view(f"stranger{LOOKUPS_KEPT + 9}@example.com")
    assert rows_read() == 0
    live.view("stranger0@example.com")
    assert rows_read() > 0  # forgotten: read again


def test_the_preview_server_takes_a_burst_of_connections_before_it_accepts_any(workspace):
    """A page asks for its images at once: not socketserver's backlog of 5, past which the kernel drops
    the SYNs and the connects time out (bound and listening here, not yet accepting)."""
    from newsletter.preview.server import PreviewServer

    live = LiveIssue(ISSUE, lambda: config.load(workspace / "newsletter.toml", {}))
    server = PreviewServer(live)
    try:
        assert connections_taken(server.server_port) == 64
    finally:
        server.server_close()
        live.close()
