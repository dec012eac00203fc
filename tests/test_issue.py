import datetime as dt

import pytest

from newsletter.compile.issue import parse_issue
from newsletter.errors import IssueError


def test_front_matter_and_body_line():
    issue = parse_issue('---\nsubject: "Hello: world"\npreheader: Short\ndate: 2026-11-30\n'
                        "send_at: 2026-11-30T08:00:00+01:00\nsegment: weekly\n---\nBody\n", "issues/x.md")
    assert issue.subject == "Hello: world"
    assert issue.id == "x" and issue.title == "Hello: world"
    assert issue.date == "2026-11-30"
    assert issue.send_at == dt.datetime(2026, 11, 30, 7, 0, tzinfo=dt.timezone.utc)
    assert issue.body_line == 8 and issue.body == "Body\n"
    assert issue.front_matter_lines["segment"] == 6


@pytest.mark.parametrize("text, message", [
    ("Just markdown\n", "issues/x.md:1: no front matter"),
    ("---\nsubject: hi\nno closing fence\n", "issues/x.md:1: front matter is not closed"),
    ("---\nsubject: hi\npreheader: a: b: [c\n---\n", "issues/x.md:3: front matter is not valid YAML"),
    ('---\nsubject: "Hello: world\npreheader: x\ndate: 2026-12-01\n---\n',
     "issues/x.md:2: front matter is not valid YAML: a quote opened on this line is never closed"),
    ("---\nsubject: hi\npreheader: 'x\n---\n", "issues/x.md:3: front matter is not valid YAML: a quote opened"),
    ("---\npreheader: hi\n---\nbody\n", "issues/x.md:1: front matter has no subject"),
    ("---\nsubject: ''\n---\n", "issues/x.md:2: front matter has no subject"),
    ("---\n- a\n- b\n---\n", "issues/x.md:2: front matter must be 'key: value' lines"),
    ("---\nsubject: hi\nsend_at: 2026-11-30T08:00:00\n---\n", "issues/x.md:3: send_at 2026-11-30 08:00:00 has no time zone"),
    ("---\nsubject: hi\nsend_at: next tuesday\n---\n", "issues/x.md:3: send_at 'next tuesday' is not an ISO 8601 time"),
    ("---\nsubject: hi\ndate: 30/11/2026\n---\n", "issues/x.md:3: date '30/11/2026' is not a date"),
    ("---\nsubject: hi\ncta: Read more\n---\n", "issues/x.md:3: cta must have 'text' and 'url'"),
    ("---\nsubject: hi\nid: ../../etc\n---\n", "issues/x.md:3: issue id '../../etc' may use only"),
    ("---\nsubject: hi\ntemplate: ../evil\n---\n", "issues/x.md:3: template '../evil' must be a layout name"),
    ("---\nsubject: |\n  two\n  lines\n---\n", "issues/x.md:2: subject must be one line"),
    ("---\nsubject: hi\nsegment: [a, b]\n---\n", "issues/x.md:3: front matter 'segment' must be text"),
])
def test_bad_front_matter_is_refused_with_line(text, message):
    with pytest.raises(IssueError) as err:
        parse_issue(text, "issues/x.md")
    assert str(err.value).startswith(message)


def test_bom_and_crlf(tmp_path):
    from newsletter.compile.issue import load_issue
    path = tmp_path / "a.md"
    path.write_bytes("\ufeff---\r\nsubject: Caf\u00e9\r\n---\r\nHi\r\n".encode("utf-8"))
    issue = load_issue(path)
    assert issue.subject == "Café" and issue.body == "Hi\n"


def test_not_utf8_is_refused(tmp_path):
    from newsletter.compile.issue import load_issue
    path = tmp_path / "a.md"
    path.write_bytes(b"---\nsubject: ok\n---\nCaf\xe9\n")
    with pytest.raises(IssueError, match=r"a.md:4: not UTF-8"):
        load_issue(path)


@pytest.mark.parametrize("value", ["2026-13-01", "2026-02-30"])
def test_impossible_date_is_an_issue_error_with_line(value):
    with pytest.raises(IssueError) as err:
        parse_issue(f"---\nsubject: S\ndate: {value}\n---\n", "issues/x.md")
    assert str(err.value).startswith("issues/x.md:3: front matter has an impossible date")
