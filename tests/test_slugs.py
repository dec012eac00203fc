"""`newsletter new` file names (issue 12): any script transliterated to an ASCII slug (the slug is the
issue's id, used in URLs, file names and headers), words never cut in half."""

import datetime as dt

import pytest

from newsletter.compile.issue import load_issue
from newsletter.scaffold import SLUG_MAX, new_issue, slugify


@pytest.mark.parametrize("title, slug", [
    ("微信 AI 内容", "weixin-ai-neirong"),
    ("Ça va, Zoë?", "ca-va-zoe"),
    ("Москва: порты", "moskva-porty"),
    ("Ελλάδα 2026", "ellada-2026"),
    ("Ports go electric, a river returns, and the repair café boom in three cities",
     "ports-go-electric-a-river-returns-and-the-repair-cafe-boom"),
    ("!!!", "issue-"),
])
def test_slugs_transliterate_and_cut_between_words(title, slug):
    got = slugify(title)
    assert got.startswith(slug) if slug == "issue-" else got == slug
    assert len(got) <= SLUG_MAX


def test_a_long_title_is_cut_at_a_word_boundary():
    title = "Harbour " * 7 + "electrification"  # the 60-character limit falls inside "electrification"
    assert slugify(title) == "-".join(["harbour"] * 7)


def test_the_issue_of_a_non_latin_title_compiles_with_its_slug_as_id(tmp_path):
    path = new_issue(tmp_path, "微信 AI 内容", today=dt.date(2026, 12, 3))
    assert path.name == "2026-12-03-weixin-ai-neirong.md"
    issue = load_issue(path)
    assert issue.id == "2026-12-03-weixin-ai-neirong" and issue.subject == "微信 AI 内容"
