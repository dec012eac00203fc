"""``[render] utm`` (issue 15): campaign parameters on the links to your own site, added once at compile time."""

from __future__ import annotations

import re

import pytest

from newsletter import config
from newsletter.compile.utm import Tagger, tag_text, tagger
from newsletter.errors import ConfigError

ISSUE = "2026-11-30-weekly"
PARAMS = (("utm_source", "field-notes"), ("utm_medium", "email"), ("utm_campaign", ISSUE))
TAGS = "utm_source=field-notes&utm_medium=email&utm_campaign=2026-11-30-weekly"
VIEW_ONLINE = "https://example.com/notes/2026-11-30-weekly.html"
TAGGER = Tagger(PARAMS, ("example.com",), frozenset({VIEW_ONLINE}))


@pytest.mark.parametrize("url, expected", [
    ("https://example.com/story", f"https://example.com/story?{TAGS}"),
    ("http://www.example.com/", f"http://www.example.com/?{TAGS}"),  # a subdomain is the same site
    ("https://example.com/a?page=2#comments", f"https://example.com/a?page=2&{TAGS}#comments"),
    ("https://example.com/a?#top", f"https://example.com/a?{TAGS}#top"),
    ("https://EXAMPLE.com/x", f"https://EXAMPLE.com/x?{TAGS}"),
    ("https://example.com/a?utm_source=twitter", None),  # the author's own tags win
    ("https://example.com/a?UTM_Campaign=x&b=1", None),
    ("https://notexample.com/a", None),  # another site that merely ends the same
    ("https://example.org/a", None),
    ("mailto:editor@example.com", None),
    ("ftp://example.com/file", None),
    (VIEW_ONLINE, None),
    ("zqslot3qz", None),  # a reader's own link (the unsubscribe link) is a slot at compile time
])
def test_which_links_are_tagged_and_how(url, expected):
    assert TAGGER.tag(url) == expected


def test_html_links_keep_their_escaping_and_the_text_part_gets_the_same_links():
    html = ('<a href="https://example.com/a?x=1&amp;y=2#top">A</a> <a href="https://example.org/b">B</a> '
            '<a href="https://example.com/a?x=1&amp;y=2#top">again</a>')
    tagged, links, count = TAGGER.tag_html(html)
    assert tagged == (f'<a href="https://example.com/a?x=1&amp;y=2&amp;{TAGS.replace("&", "&amp;")}#top">A</a> '
                      f'<a href="https://example.org/b">B</a> '
                      f'<a href="https://example.com/a?x=1&amp;y=2&amp;{TAGS.replace("&", "&amp;")}#top">again</a>')
    assert count == 2 and links == {"https://example.com/a?x=1&y=2#top": f"https://example.com/a?x=1&y=2&{TAGS}#top"}
    text = "Read A (https://example.com/a?x=1&y=2#top). Not https://example.com/a?x=1&y=2#topmost, nor B."
    assert tag_text(text, links) == (f"Read A (https://example.com/a?x=1&y=2&{TAGS}#top). "
                                     "Not https://example.com/a?x=1&y=2#topmost, nor B.")


def settings(**render):
    flags = {"newsletter.name": "Field Notes", "newsletter.site_url": "https://example.com/notes",
             **{f"render.{key}": value for key, value in render.items()}}
    return config.resolve({}, {}, flags, source=None)


def test_the_defaults_are_the_newsletters_slug_email_and_the_issue_id():
    made = tagger(settings(utm=True), ISSUE, VIEW_ONLINE)
    assert made.params == PARAMS and made.domains == ("example.com",)
    assert tagger(settings(), ISSUE, VIEW_ONLINE) is None  # off unless asked for


def test_templates_and_listed_domains():
    made = tagger(settings(utm=True, utm_source="letter", utm_campaign="{newsletter}-{issue}",
                           utm_domains="shop.example.net, .example.org"), ISSUE, "")
    assert made.params == (("utm_source", "letter"), ("utm_medium", "email"),
                           ("utm_campaign", f"field-notes-{ISSUE}"))
    assert made.tag("https://shop.example.net/x") and made.tag("https://www.example.org/")
    assert made.tag("https://example.com/notes/x") is None  # the listed domains replace site_url's


@pytest.mark.parametrize("render, words, hint", [
    ({"utm_campaign": "{issue_id}"}, "[render] utm_campaign = '{issue_id}' holds {issue_id}", "{newsletter}"),
    ({"utm_source": "oops {"}, "holds a lone { or }", "{issue}"),
    ({"utm_medium": " "}, "[render] utm_medium is empty", 'utm_medium = "email"'),
])
def test_a_template_it_cannot_fill_is_refused_by_name(render, words, hint):
    with pytest.raises(ConfigError) as caught:
        tagger(settings(utm=True, **render), ISSUE, "")
    assert words in caught.value.message and hint in caught.value.hint


def test_nothing_to_tag_without_a_site_says_what_to_set():
    bare = config.resolve({}, {}, {"render.utm": True}, source=None)
    with pytest.raises(ConfigError) as caught:
        tagger(bare, ISSUE, "")
    assert "site_url" in caught.value.message and "utm_domains" in caught.value.hint


# -- through the CLI ------------------------------------------------------------------------------------
def test_build_tags_the_issues_own_links_and_leaves_unsubscribe_and_view_online_alone(run, workspace):
    result = run("build", f"issues/{ISSUE}.md", "--out", "out", env={"NEWSLETTER_RENDER_UTM": "true"})
    assert result.exit_code == 0, result.output + result.stderr
    html = (workspace / "out" / f"{ISSUE}.html").read_text()
    text = (workspace / "out" / f"{ISSUE}.txt").read_text()
    plain = TAGS.replace("field-notes", "field-notes-weekly")  # the workspace's newsletter is Field Notes Weekly
    tags = plain.replace("&", "&amp;")
    for link in ("https://example.com/rotterdam-shore-power", "https://example.com/notes/reports/shore-power-2026"):
        assert f'href="{link}?{tags}"' in html
        assert f"{link}?{plain}" in text
    assert f'href="{VIEW_ONLINE}"' in html and f"View online: {VIEW_ONLINE}\n" in text
    unsubscribe = re.findall(r'href="(https://example.com/notes/unsubscribe[^"]*)"', html)
    assert unsubscribe and not any("utm_" in u for u in unsubscribe)
    assert "utm_" not in text.split("Unsubscribe: ")[1]

    lint = run("lint", ISSUE, env={"NEWSLETTER_RENDER_UTM": "true"})
    tagged = html.count(f"?{tags}")
    assert f"utm: {tagged} link(s) tagged with campaign parameters" in lint.stdout and tagged >= 2


def test_without_utm_no_link_changes(run, workspace):
    assert run("build", f"issues/{ISSUE}.md", "--out", "out").exit_code == 0
    assert "utm_" not in (workspace / "out" / f"{ISSUE}.html").read_text()
    assert "utm:" not in run("lint", ISSUE).stdout
