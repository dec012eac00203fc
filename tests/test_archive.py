"""`newsletter archive`: public pages of sent issues, an index and an Atom feed, with no subscriber data."""

from __future__ import annotations

import base64
import csv
import os
import re
import xml.etree.ElementTree as ET

import pytest
from helpers import BOTH_LEDGERS, workspace_ledger

from newsletter import archive as archive_module
from newsletter.archive import anonymous_unsubscribe_url, atomic_write
from newsletter.unsubscribe import PREVIEW_SECRET, make_token

ISSUE = "2026-11-30-weekly"
SECRET = {"NEWSLETTER_SECRET": "test-secret"}
SITE = "https://example.com/notes"
ATOM = "{http://www.w3.org/2005/Atom}"

DRAFT = """---
subject: 'Draft for {{ subscriber.name | default("friend") }}: pipes'
title: 'Pipes <b>&</b> "valves"'
preheader: "Taps & <drains>"
date: 2026-12-07
---
Hello {{ subscriber.first_name | default("reader") }}, from {{ subscriber.city }}.
Your address is {{ subscriber.email }}. Signed, {{ subscriber.email | default("friend") | upper }}.

## Pipes
Text.
"""

BROKEN = """---
subject: Broken
---
Hello

{% if %}
"""


@pytest.fixture
def sent(run, workspace):
    """The example issue sent through the outbox, plus an unsent draft beside it."""
    (workspace / "issues" / "2026-12-07-draft.md").write_text(DRAFT, encoding="utf-8")
    result = run("send", ISSUE, "--yes", env=SECRET)
    assert result.exit_code == 0, result.output
    return workspace


def files(folder) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def subscriber_values(workspace) -> list[str]:
    with open(workspace / "subscribers" / "subscribers.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    emails = [row["email"] for row in rows]
    b64 = [base64.urlsafe_b64encode(e.lower().encode()).rstrip(b"=").decode() for e in emails]  # the old token's first half
    tokens = [make_token(e, secret, issue) for e in emails for secret in (b"test-secret", PREVIEW_SECRET)
              for issue in ("", ISSUE)]
    return emails + [row["name"] for row in rows if row["name"]] + b64 + tokens


# -- which issues ---------------------------------------------------------------------------------
@BOTH_LEDGERS
def test_archive_publishes_only_sent_issues_with_an_index_and_feed(run, sent):
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert sorted(files(sent / "archive")) == [f"{ISSUE}.html", "feed.xml", "index.html"]
    assert f"wrote archive/{ISSUE}.html" in result.stdout
    assert "archive: 1 issue in archive/ (3 file(s) written)" in result.stdout
    assert "draft" not in (sent / "archive" / "index.html").read_text()


@BOTH_LEDGERS
def test_an_issue_planned_but_sent_to_nobody_is_not_published(run, sent):
    with workspace_ledger(sent) as ledger:
        ledger.create_plan("2026-12-07-draft", content_hash="x", subject="Draft", segment="",
                           emails=["ada@example.com"])
    assert run("status", "2026-12-07-draft", "--json").stdout.count('"pending": 1') == 1
    assert run("archive").exit_code == 0
    assert not (sent / "archive" / "2026-12-07-draft.html").exists()


@BOTH_LEDGERS
def test_all_publishes_every_issue_newest_first(run, sent):
    result = run("archive", "--all", "--out", "site")
    assert result.exit_code == 0, result.output
    assert sorted(files(sent / "site")) == [f"{ISSUE}.html", "2026-12-07-draft.html", "feed.xml", "index.html"]
    index = (sent / "site" / "index.html").read_text()
    assert index.index('href="2026-12-07-draft.html"') < index.index(f'href="{ISSUE}.html"')
    assert '<time datetime="2026-12-07">December 7, 2026</time>' in index


@BOTH_LEDGERS
def test_nothing_sent_writes_an_empty_index_and_says_how_to_publish_anyway(run, workspace):
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert sorted(files(workspace / "archive")) == ["feed.xml", "index.html"]
    assert "No issues yet." in (workspace / "archive" / "index.html").read_text()
    assert "newsletter archive --all" in result.stdout
    entries = ET.parse(workspace / "archive" / "feed.xml").getroot().findall(f"{ATOM}entry")
    assert entries == []


# -- no subscriber data -----------------------------------------------------------------------------
def test_no_subscriber_address_name_or_token_appears_anywhere(run, sent):
    assert run("archive", "--all").exit_code == 0
    needles = subscriber_values(sent)
    assert "Ada Lovelace" in needles and "ada@example.com" in needles
    for name, text in files(sent / "archive").items():
        lowered = text.lower()
        for needle in needles:
            assert needle.lower() not in lowered, f"{needle!r} in {name}"
        assert not re.search(r"[?&](?:amp;)?t=", text), f"an unsubscribe token parameter in {name}"
        assert "{token}" not in text and "{email}" not in text
        assert "zqslot" not in text, f"an unfilled slot in {name}"


def test_merge_fields_show_their_fallbacks_or_nothing(run, sent):
    assert run("archive", "--all").exit_code == 0
    page = (sent / "archive" / f"{ISSUE}.html").read_text()
    assert "Hi there," in page
    draft = (sent / "archive" / "2026-12-07-draft.html").read_text()
    assert "Hello reader, from ." in draft and "Your address is . Signed, FRIEND." in draft
    assert "<title>Draft for friend: pipes</title>" in draft


def test_the_unsubscribe_link_is_the_unsubscribe_page_without_a_token(run, sent):
    assert run("archive").exit_code == 0
    page = (sent / "archive" / f"{ISSUE}.html").read_text()
    assert f'href="{SITE}/unsubscribe"' in page
    assert f'href="{SITE}/{ISSUE}.html"' in page  # view online: the page itself


@pytest.mark.parametrize("template, expected", [
    ("https://example.com/notes/unsubscribe?t={token}", "https://example.com/notes/unsubscribe"),
    ("https://example.com/u?list=weekly&t={token}&e={email}#top", "https://example.com/u?list=weekly#top"),
    ("https://example.com/u/{token}", "https://example.com/u/"),
    ("https://example.com/u/{token}?list=weekly", "https://example.com/u/?list=weekly"),
    ("https://example.com/unsubscribe", "https://example.com/unsubscribe"),  # already anonymous
    ("", ""),
    ("provider", ""),
])
def test_anonymous_unsubscribe_url(template, expected):
    assert anonymous_unsubscribe_url(template) == expected


def test_without_an_unsubscribe_url_the_link_is_the_mailto_address(run, sent):
    toml = sent / "newsletter.toml"
    toml.write_text(re.sub(r'(?m)^url = "https://example.com/notes/unsubscribe\?t=\{token\}"', 'url = ""',
                           toml.read_text()))
    assert run("archive").exit_code == 0
    assert 'href="mailto:unsubscribe@example.com?subject=unsubscribe"' in (sent / "archive" / f"{ISSUE}.html").read_text()


# -- index and feed ------------------------------------------------------------------------------------
def test_index_links_each_page_and_escapes_titles_and_preheaders(run, sent):
    assert run("archive", "--all").exit_code == 0
    index = (sent / "archive" / "index.html").read_text()
    assert '<a href="2026-12-07-draft.html">Pipes &lt;b&gt;&amp;&lt;/b&gt; &quot;valves&quot;</a>' in index
    assert "<p>Taps &amp; &lt;drains&gt;</p>" in index
    assert "<b>&</b>" not in index and "<drains>" not in index
    assert f'<a href="{ISSUE}.html">Field Notes #48: ports go electric' in index
    assert '<link rel="alternate" type="application/atom+xml"' in index
    assert "http://" not in index and "https://" not in index  # self-contained: no CDN, relative links


def test_atom_feed_has_one_entry_per_page_with_absolute_links(run, sent):
    assert run("archive", "--all").exit_code == 0
    root = ET.parse(sent / "archive" / "feed.xml").getroot()
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}title") == "Field Notes Weekly"
    assert root.find(f"{ATOM}link[@rel='self']").get("href") == f"{SITE}/feed.xml"
    assert root.findtext(f"{ATOM}updated") == "2026-12-07T00:00:00Z"
    entries = root.findall(f"{ATOM}entry")
    pages = sorted(p.name for p in (sent / "archive").glob("*.html") if p.name != "index.html")
    assert len(entries) == len(pages) == 2
    links = [e.find(f"{ATOM}link").get("href") for e in entries]
    assert links == [f"{SITE}/2026-12-07-draft.html", f"{SITE}/{ISSUE}.html"]
    assert [e.findtext(f"{ATOM}id") for e in entries] == links
    assert entries[0].findtext(f"{ATOM}title") == 'Pipes <b>&</b> "valves"'  # escaped in XML, intact when parsed
    assert entries[0].findtext(f"{ATOM}summary") == "Taps & <drains>"
    assert all(e.findtext(f"{ATOM}updated") for e in entries)


def test_without_site_url_the_feed_is_skipped_with_a_warning(run, sent):
    toml = sent / "newsletter.toml"
    toml.write_text(re.sub(r'(?m)^site_url = .*$', 'site_url = ""', toml.read_text()))
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert "Warning: [newsletter] site_url is empty: no feed.xml written" in result.stderr
    assert sorted(files(sent / "archive")) == [f"{ISSUE}.html", "index.html"]
    assert "feed.xml" not in (sent / "archive" / "index.html").read_text()


# -- writing ---------------------------------------------------------------------------------------------
def test_writes_leave_no_temporary_files_are_world_readable_and_skip_unchanged_files(run, sent):
    assert run("archive").exit_code == 0
    folder = sent / "archive"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.iterdir())
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}
    again = run("archive")
    assert "wrote" not in again.stdout and "3 unchanged" in again.stdout
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == before


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive_module.os, "replace", refuse)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def test_pages_of_issues_no_longer_archived_are_left_alone(run, sent):
    assert run("archive", "--all").exit_code == 0
    result = run("archive")  # the draft was never sent: no longer qualifies
    assert result.exit_code == 0, result.output
    assert (sent / "archive" / "2026-12-07-draft.html").exists()
    assert "left alone: 2026-12-07-draft.html" in result.stdout
    assert "draft" not in (sent / "archive" / "index.html").read_text()


# -- errors ------------------------------------------------------------------------------------------------
def test_an_issue_that_fails_to_compile_is_reported_and_nothing_is_written(run, sent):
    (sent / "issues" / "2026-12-14-broken.md").write_text(BROKEN, encoding="utf-8")
    result = run("archive", "--all")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: issues/2026-12-14-broken.md:6: template error:"), lines
    assert not (sent / "archive").exists()


def test_a_sent_issue_broken_later_leaves_the_published_archive_as_it_was(run, sent):
    assert run("archive").exit_code == 0
    before = files(sent / "archive")
    path = sent / "issues" / f"{ISSUE}.md"
    path.write_text(path.read_text().replace("Hi {{ subscriber.name", "Hi {{ subscriber.name }"))
    result = run("archive")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: issues/{ISSUE}.md:")
    assert files(sent / "archive") == before


def test_an_unreadable_draft_is_skipped_with_a_warning_unless_all(run, sent):
    (sent / "issues" / "notes.md").write_text("no front matter here\n", encoding="utf-8")
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert "Warning: skipped issues/notes.md:1: no front matter" in result.stderr
    assert (sent / "archive" / f"{ISSUE}.html").exists()
    strict = run("archive", "--all", "--out", "all")
    assert strict.exit_code == 1 and strict.stderr.startswith("Error: issues/notes.md:1: no front matter")
    assert not (sent / "all").exists()


def test_two_issues_with_one_id_are_refused(run, sent):
    (sent / "issues" / "copy.md").write_text(f"---\nsubject: Copy\nid: {ISSUE}\n---\nText\n", encoding="utf-8")
    result = run("archive")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: issues/copy.md:3: issue id '{ISSUE}' is also the id of")
    assert not (sent / "archive").exists()


def test_help_describes_the_command_and_options(run):
    result = run("archive", "--help")
    assert result.exit_code == 0
    assert "static web archive" in result.output and "--out" in result.output and "--all" in result.output


def test_archive_pages_are_plain_files_not_directories(run, sent):
    os.makedirs(sent / "archive" / "index.html")  # something in the way: one Error line, exit 1
    result = run("archive")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")
