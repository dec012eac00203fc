"""Section numbers as the author wrote them (issue 12): never doubled, a wrap-up left alone, the
`numbering` setting, lint on inconsistent numbers, and real heading elements in HTML and text."""

import re
from pathlib import Path

import pytest

from newsletter import config
from newsletter.compile.markdown import read_headings, render_body
from newsletter.compile.pipeline import build_issue
from newsletter.errors import IssueError

SEED = Path(__file__).parent / "fixtures" / "issues" / "seed-shaped.md"
SEED_TITLES = ["Port Of Valencia Requires Shore Power For Every Ferry Berth",
               "Ferry Operator Says Hackers Targeted Its Booking App",
               "Inspectors' Pro Tip to Terminal Managers: Let Drones Climb the Cranes",
               "Port Data Platform Eyes 20% Growth In 2027, Promotes Scheduling Tools"]


def write(workspace, name, text):
    path = workspace / "issues" / f"{name}.md"
    path.write_text(text, encoding="utf-8")
    return path


def compiled(workspace, name, env=None):
    settings = config.load(workspace / "newsletter.toml", env or {})
    result = build_issue(settings, name).compiled
    return "".join(result.html.parts), "".join(result.text.parts)


def headings(html):
    """(tag, badge number or None, title text) for each <h1>/<h2> of the email."""
    found = []
    for tag, inner in re.findall(r"<(h[12])[^>]*>(.*?)</\1>", html, re.S):
        badge = re.search(r'<span class="item-number"[^>]*>(\d+)</span>', inner)
        text = re.sub(r"<[^>]+>", "", inner[badge.end():] if badge else inner).strip()
        found.append((tag, int(badge.group(1)) if badge else None, text))
    return found


def seed_with(front_extra=""):
    text = SEED.read_text(encoding="utf-8")
    return text.replace("---\n", f"---\n{front_extra}", 1) if front_extra else text


def test_seed_pasted_as_is_keeps_its_numbers_once_and_leaves_the_wrap_up(workspace):
    write(workspace, "seed", seed_with())
    html, text = compiled(workspace, "seed")
    found = headings(html)
    assert found[0] == ("h1", None, "Harbour Tech Weekly: what moved on the waterfront this week")
    assert found[1:] == [("h2", n, title) for n, title in enumerate(SEED_TITLES, 1)] + [("h2", None, "Wrapping Up")]
    assert "<div class=\"item-title\"" not in html and html.count("<h1") == 1
    # the text part: each number once, the wrap-up unnumbered, underlines as long as the heading
    assert not re.search(r"\b(\d)\. \1\. ", text) and "5. Wrapping" not in text
    for n, title in enumerate(SEED_TITLES, 1):
        assert f"\n{n}. {title}\n{'-' * len(f'{n}. {title}')}\n" in text
    assert "\nWrapping Up\n-----------\n" in text


@pytest.mark.parametrize("heading, number, title", [
    ("1. Ports", 1, "Ports"),
    ("12) Ports", 12, "Ports"),
    ("#3 Ports", 3, "Ports"),
    ("#3: Ports", 3, "Ports"),
    ("No. 4 Ports", 4, "Ports"),
    ("No. 4: Ports", 4, "Ports"),
    ("5 - Ports", 5, "Ports"),
    ("6 \u2013 Ports", 6, "Ports"),
    ("3 ways to fix a bike", None, "3 ways to fix a bike"),
    ("2026 in review", None, "2026 in review"),
    ("1-2 punch", None, "1-2 punch"),
    ("1.5 million riders", None, "1.5 million riders"),
    ("Nothing numbered", None, "Nothing numbered"),
])
def test_written_numbers_are_recognised_and_taken_out_of_the_title(heading, number, title):
    body = render_body(f"## {heading}\n\ntext\n\n## Wrap\n\nbye\n")
    first = body.sections[0]
    if number is None:  # no written number anywhere: auto numbers every section
        assert (first.number, first.title) == (1, title)
    else:
        assert (first.number, first.title) == (number, title)
        assert body.sections[1].number is None


def test_a_mix_uses_the_written_numbers_and_lint_warns(run, workspace):
    write(workspace, "mix", "---\nsubject: Mix\npreheader: A preheader\n---\nIntro\n\n## 1. Alpha\n\nA\n\n"
                            "## Beta\n\nB\n\n## 3. Gamma\n\nC\n\n## 3. Delta\n\nD\n\n## 5) Epsilon\n\nE\n\n"
                            "## In other news\n\nF\n")
    html, text = compiled(workspace, "mix")
    assert [(n, t) for tag, n, t in headings(html) if tag == "h2"] == [
        (1, "Alpha"), (None, "Beta"), (3, "Gamma"), (3, "Delta"), (5, "Epsilon"), (None, "In other news")]
    result = run("lint", "issues/mix.md")
    assert result.exit_code == 0  # warnings only
    out = result.output
    assert "issues/mix.md:11: warning: section 'Beta' has no number but sits between numbered ones" in out
    assert "issues/mix.md:15: warning: section numbers skip 2: '3. Gamma'" in out
    assert "issues/mix.md:19: warning: section number 3 is used twice (also at line 15): '3. Delta'" in out
    assert "issues/mix.md:23: warning: section numbers skip 4: '5) Epsilon'" in out
    assert "issues/mix.md:7: warning: section numbers are written in 2 ways: '1.' (line 7), '1)' (line 23)" in out
    assert "In other news" not in out  # after the last numbered item: a wrap-up, not a mix


def test_lint_is_quiet_on_the_seed_and_catches_a_gap(run, workspace):
    write(workspace, "seed", seed_with())
    assert run("lint", "issues/seed.md").output.strip() == "lint: ok"
    write(workspace, "gap", seed_with().replace("## 3. Inspectors", "## 5. Inspectors"))
    out = run("lint", "issues/gap.md").output
    assert re.search(r"issues/gap.md:\d+: warning: section numbers skip 3-4: .5\. Inspectors", out)
    assert "section number 4 comes after 5" in out


def test_numbering_off_shows_headings_exactly_as_written(workspace):
    write(workspace, "seed", seed_with("numbering: off\n"))  # YAML reads a bare off as false
    html, text = compiled(workspace, "seed")
    found = headings(html)[1:]
    assert found == [("h2", None, f"{n}. {t}") for n, t in enumerate(SEED_TITLES, 1)] + [("h2", None, "Wrapping Up")]
    assert f"\n1. {SEED_TITLES[0]}\n" in text and "1. 1." not in text


def test_numbering_on_numbers_the_wrap_up_too(workspace):
    write(workspace, "seed", seed_with('numbering: "on"\n'))
    html, text = compiled(workspace, "seed")
    assert [n for tag, n, _ in headings(html) if tag == "h2"] == [1, 2, 3, 4, 5]
    assert "\n5. Wrapping Up\n" in text


def test_numbering_from_config_and_front_matter_wins(workspace):
    write(workspace, "plain", "---\nsubject: S\n---\n## Alpha\n\nA\n\n## Beta\n\nB\n\n## Bye {-}\n\nC\n")
    html, _ = compiled(workspace, "plain")
    assert [n for tag, n, _ in headings(html) if tag == "h2"] == [1, 2, None]  # auto, nothing written: 1, 2
    html, text = compiled(workspace, "plain", {"NEWSLETTER_RENDER_NUMBERING": "off"})
    assert [n for tag, n, _ in headings(html) if tag == "h2"] == [None, None, None] and "1. Alpha" not in text
    write(workspace, "plain", "---\nsubject: S\nnumbering: auto\n---\n## Alpha\n\nA\n")
    html, _ = compiled(workspace, "plain", {"NEWSLETTER_RENDER_NUMBERING": "off"})
    assert [n for tag, n, _ in headings(html) if tag == "h2"] == [1]


def test_bad_numbering_values_name_the_place(workspace):
    write(workspace, "bad", "---\nsubject: S\nnumbering: sometimes\n---\nx\n")
    with pytest.raises(IssueError, match=r"bad.md:3: numbering 'sometimes' is not one of auto, on, off"):
        compiled(workspace, "bad")
    (workspace / "newsletter.toml").write_text(
        (workspace / "newsletter.toml").read_text().replace('numbering = "auto"', 'numbering = "yes"'))
    with pytest.raises(config.ConfigError, match=r"\[render\] numbering = 'yes' is not one of auto, on, off"):
        config.load(workspace / "newsletter.toml", {})


def test_text_part_keeps_the_heading_hierarchy_and_long_underlines(workspace):
    title = "A very long title that goes on well past the seventy-two characters of an old underline cap"
    write(workspace, "h", f"---\nsubject: \"{title}\"\n---\nIntro\n\n## 1. Item\n\nA\n\n### Detail\n\nB\n")
    html, text = compiled(workspace, "h")
    assert text.startswith(f"{title}\n{'=' * len(title)}\n")
    assert "\n1. Item\n-------\n" in text and "\nDetail\n~~~~~~\n" in text
    assert re.search(r"<h3[^>]*style=\"[^\"]*font-size", html)  # styled inline
    assert re.search(r"<h2[^>]*style=\"[^\"]*font-size", html) and re.search(r"<h1[^>]*style=\"[^\"]*font-size", html)


def test_escaped_and_emphasised_written_numbers():
    """Editors that escape `1\\.` still give a written number; the title keeps its emphasis."""
    body = render_body("## 1\\. *Ports* go electric\n\nx\n\n## Wrap\n")
    assert (body.sections[0].number, body.sections[0].title) == (1, "<em>Ports</em> go electric")
    assert [h.written for h in read_headings("## 1\\. Ports\n\n## 2. Rivers\n")] == [1, 2]


def test_headings_pasted_as_plain_numbered_lines_get_a_lint_hint(run, workspace):
    """The draft pasted from a web page without `## `: each `1. Title` line is a one-item list."""
    plain = re.sub(r"(?m)^## ", "", seed_with())
    write(workspace, "plain", plain)
    out = run("lint", "issues/plain.md").output
    lines = [n for n, line in enumerate(plain.splitlines(), 1) if re.match(r"\d\. ", line)]
    assert len(lines) == 4
    for n in lines:
        assert f"issues/plain.md:{n}: warning: '" in out
    assert ("'1. Port Of Valencia Requires Shore Power For …' reads like a numbered heading, but Markdown makes "
            "it a one-item list; start the line with '## ' to make it a section") in out
    write(workspace, "list", "---\nsubject: S\npreheader: P\n---\nSteps:\n\n1. Open the valve\n2. Wait\n\n"
                             "Then:\n\n1. Close it\n")
    assert "reads like a numbered heading" not in run("lint", "issues/list.md").output  # real lists are lists
