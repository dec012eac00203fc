"""`archive --all` on a workspace fresh from `init` (issue 12): the example issue is marked
`example: true` and left out unless it was sent or is named on the command line."""

ISSUE = "2026-11-30-weekly"
OWN = "---\nsubject: My first issue\ndate: 2026-12-07\n---\nHello.\n\n## News\n\nText.\n"


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_init_marks_its_example_and_archive_all_leaves_it_out(run, workspace, tmp_path):
    fresh = tmp_path / "fresh"
    assert run("init", str(fresh)).exit_code == 0
    assert "\nexample: true" in (fresh / "issues" / f"{ISSUE}.md").read_text(encoding="utf-8")
    (workspace / "issues" / "2026-12-07-first.md").write_text(OWN, encoding="utf-8")
    result = run("archive", "--all")
    assert result.exit_code == 0, result.output
    assert names(workspace / "archive") == ["2026-12-07-first.html", "feed.xml", "index.html"]
    assert (f"left out {ISSUE}.md: it is `newsletter init`'s example (front matter example: true); name it "
            f"to publish it anyway (`newsletter archive {ISSUE}`)") in result.stderr


def test_a_named_example_or_a_sent_one_is_published(run, workspace):
    result = run("archive", ISSUE, "--out", "named")
    assert result.exit_code == 0, result.output
    assert names(workspace / "named") == [f"{ISSUE}.html", "feed.xml", "index.html"]
    assert run("archive", f"issues/{ISSUE}.md", "--out", "by-path").exit_code == 0
    assert (workspace / "by-path" / f"{ISSUE}.html").exists()
    assert run("send", ISSUE, "--yes", env={"NEWSLETTER_SECRET": "s"}).exit_code == 0
    assert run("archive", "--all", "--out", "sent").exit_code == 0
    assert (workspace / "sent" / f"{ISSUE}.html").exists()  # sent to readers: it is real now


def test_naming_an_unknown_issue_is_an_error(run, workspace):
    result = run("archive", "nope")
    assert result.exit_code == 1 and "Error: issues: no issue 'nope' (name an issue by its id" in result.stderr, result.stderr
    assert not (workspace / "archive").exists()
