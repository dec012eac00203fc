"""Merge tags written for other tools (issue 12): lint names each with the equivalent to write here,
and Jinja's compile errors on `{{ first_name }}` or listmonk's `{{ .Subscriber.Name }}` say the same.
(Mailchimp's `*|FNAME|*` is checked beside these, by its own function.)"""

import pytest

from newsletter import config
from newsletter.compile.issue import load_issue
from newsletter.compile.render import compile_issue
from newsletter.errors import TemplateError


def write(workspace, body, subject="S"):
    path = workspace / "issues" / "t.md"
    path.write_text(f'---\nsubject: "{subject}"\npreheader: A preheader\n---\n{body}', encoding="utf-8")
    return path


def test_lint_names_other_tools_tags_with_their_line_and_equivalent(run, workspace):
    write(workspace, "Hi {$name},\n\nThanks [firstname,fallback=friend]!\n\nSee `{$code}` and:\n\n"
                     "```\n%recipient.first_name%\n```\n", subject="For %recipient.first%")
    result = run("lint", "issues/t.md")
    assert result.exit_code == 1
    out = result.output
    assert ('issues/t.md:2: error: %recipient.first% is a Mailgun merge tag and would reach readers as written; '
            'write {{ subscriber.first | default("...") }}') in out
    assert 'issues/t.md:5: error: {$name} is a Sendy merge tag' in out and "{{ subscriber.name |" in out
    assert ('issues/t.md:7: error: [firstname,fallback=friend] is a Campaign Monitor merge tag and would reach '
            'readers as written; write {{ subscriber.first_name | default("friend") }}') in out
    assert "{$code}" not in out and "%recipient.first_name%" not in out  # quoted as code: writing about them
    assert out.count("merge tag") == 3


def test_plain_text_with_percent_signs_and_brackets_is_fine(run, workspace):
    write(workspace, "Save 10% today, 20% tomorrow. [Read more](https://example.com) and [1] a note.\n")
    assert run("lint", "issues/t.md").output.strip() == "lint: ok"


@pytest.mark.parametrize("body, hint", [
    ("Hi {{first_name}},", "write a subscriber's field as {{ subscriber.first_name }}, a column of the list"),
    ("Hi {{ contact.firstname }},", "write a subscriber's field as {{ subscriber.first_name }}"),
    ("Hi {{ subsciber.name }},", "did you mean 'subscriber'?"),  # a typo, not another tool's name
    ("Hi {{ .Subscriber.Name }},", "listmonk's {{ .Subscriber.Name }} is written {{ subscriber.name }} here"),
    ("[Leave]({{ unsubscribe_link }})", "the reader's unsubscribe link is {{ unsubscribe_url }}"),
    ("[Leave]({{ unsub }})", "the reader's unsubscribe link is {{ unsubscribe_url }}"),
])
def test_compile_errors_on_other_tools_jinja_like_tags_say_what_to_write(workspace, body, hint):
    path = write(workspace, f"Intro\n\n{body}\n")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), config.load(workspace / "newsletter.toml", {}))
    assert str(err.value).startswith(f"{path}:7: template error") and hint in str(err.value)


@pytest.mark.parametrize("body, opening, closing", [
    ("Hi {{ subscriber.name\n\nMore text.\n", "{{", "}}"),
    ("Hi {{ subscriber.name\n\n## A heading\n", "{{", "}}"),
    ("{% if issue.title\n\nMore text.\n", "{%", "%}"),
])
def test_an_unclosed_tag_is_reported_on_its_own_line_not_where_jinja_gave_up(workspace, body, opening, closing):
    path = write(workspace, f"Intro\n\n{body}")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), config.load(workspace / "newsletter.toml", {}))
    assert str(err.value).startswith(f"{path}:7: template error: {opening} on this line is never closed with "
                                     f"{closing} (Jinja gave up 2 line(s) later: ")


def test_an_unclosed_tag_before_a_merge_field_is_named_in_one_line_not_the_text_up_to_that_field(workspace):
    # The {{ of line 7 ran to the }} of the merge field below: the error quoted every line between (1.5 KB).
    path = write(workspace, "Intro\n\n## Desalination gets {{ cheaper\n\nCosts fell.\n\n"
                            "Thanks {{ subscriber.name | default('reader') }}\n")
    with pytest.raises(TemplateError) as err:
        compile_issue(load_issue(path), config.load(workspace / "newsletter.toml", {}))
    assert str(err.value) == (f"{path}:7: template error: {{{{ on this line is never closed with }}}} before the "
                              "next {{ or the end of its paragraph (close it with }}; a literal {{ is written "
                              "{{ '{{' }})")
