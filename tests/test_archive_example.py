"""`archive --all` on a workspace fresh from `init` (issue 12): the example issue is marked
`example: true` and left out unless it was sent or is named on the command line."""

ISSUE = "2026-11-30-weekly"
OWN = "---\nsubject: My first issue\ndate: 2026-12-07\n---\nHello.\n\n## News\n\nText.\n"


def names(folder):
    return sorted(p.name for p in folder.iterdir())


import pytest


@pytest.fixture
def fresh(run, tmp_path, monkeypatch):
    """A workspace made by `newsletter init`, as the current folder."""
    folder = tmp_path / "fresh"
    assert run("init", str(folder)).exit_code == 0
    monkeypatch.chdir(folder)
    return folder


def test_init_marks_its_example_and_archive_all_leaves_it_out(run, fresh):
    text = (fresh / "issues" / f"{ISSUE}.md").read_text(encoding="utf-8")
    assert text.startswith("---\nexample: true   # newsletter init's example")
    assert run("lint", ISSUE).output.strip() == "lint: ok"  # a known key, the issue as it was otherwise
    (fresh / "issues" / "2026-12-07-first.md").write_text(OWN, encoding="utf-8")
    result = run("archive", "--all")
    assert result.exit_code == 0, result.output
    assert names(fresh / "archive") == ["2026-12-07-first.html", "feed.xml", "index.html"]
    assert (f"left out {ISSUE}.md: it is `newsletter init`'s example (front matter example: true); name it "
            f"to publish it anyway (`newsletter archive {ISSUE}`)") in result.stderr
    assert run("init", ".").exit_code == 1  # and `init --force` sees its example as unchanged
    assert f"unchanged: issues/{ISSUE}.md" in run("init", ".", "--force").output.replace(str(fresh) + "/", "")


def test_a_named_example_or_a_sent_one_is_published(run, fresh):
    result = run("archive", ISSUE, "--out", "named")
    assert result.exit_code == 0, result.output
    assert names(fresh / "named") == [f"{ISSUE}.html", "feed.xml", "index.html"]
    assert run("archive", f"issues/{ISSUE}.md", "--out", "by-path").exit_code == 0
    assert (fresh / "by-path" / f"{ISSUE}.html").exists()
    assert run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET": "s"}).exit_code == 0
    assert run("archive", "--all", "--out", "sent").exit_code == 0
    assert (fresh / "sent" / f"{ISSUE}.html").exists()  # sent to readers: it is real now


def test_naming_an_unknown_issue_is_an_error(run, workspace):
    result = run("archive", "nope")
    assert result.exit_code == 1 and "Error: issues: no issue 'nope' (name an issue by its id" in result.stderr, result.stderr
    assert not (workspace / "archive").exists()
