"""`newsletter lint --template FILE` checks a layout of your own with a sample issue, and
`newsletter init --template NAME` starts a workspace with a bundled layout (issue 12)."""

import re

import pytest

REPO_LAYOUTS = ("bulletin", "digest", "letter")


@pytest.mark.parametrize("layout", REPO_LAYOUTS)
def test_bundled_layouts_pass_the_layout_check(run, workspace, layout):
    result = run("lint", "--template", f"templates/{layout}.mjml")
    assert result.exit_code == 0 and result.output.strip() == "lint: ok", result.output


def broken(workspace, name, *edits):
    text = (workspace / "templates" / "digest.mjml").read_text(encoding="utf-8")
    for old, new in edits:
        assert re.search(old, text, re.S), old
        text = re.sub(old, new, text, flags=re.S)
    path = workspace / "mine" / f"{name}.mjml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return f"mine/{name}.mjml"


def test_a_layout_without_unsubscribe_postal_address_preheader_or_sections_is_refused(run, workspace):
    layout = broken(workspace, "bare",
                    (r'href="\{\{ unsubscribe_url \}\}"', 'href="https://example.com/"'),
                    (r"\{% if newsletter.postal_address %\}.*?\{% endif %\}", ""),
                    (r"\{% if issue.preheader %\}<mj-raw>.*?</mj-raw>\{% endif %\}", ""),
                    (r"\{% for section in sections %\}.*?\{% endfor %\}", ""),
                    (r"<h1>\{\{ issue.title \}\}</h1>", "{{ issue.title }}"))
    result = run("lint", "--template", layout)
    assert result.exit_code == 1
    out = result.output
    assert f"{layout}: error: no unsubscribe link" in out.replace(str(workspace) + "/", "")
    assert "error: the layout does not print [newsletter] postal_address" in out
    assert "error: the layout does not print the preheader" in out
    assert "error: the sections are missing (no 'First sample story')" in out
    assert "warning: no <h1>" in out


def test_a_preheader_hidden_by_colour_is_flagged(run, workspace):
    layout = broken(workspace, "preview",
                    (r"\{% if issue.preheader %\}<mj-raw>.*?</mj-raw>\{% endif %\}", ""),
                    (r"<mj-title>\{\{ issue.subject \}\}</mj-title>",
                     "<mj-title>{{ issue.subject }}</mj-title><mj-preview>{{ issue.preheader }}</mj-preview>"))
    result = run("lint", "--template", layout)
    assert result.exit_code == 0
    assert "warning: the preheader is hidden with a text colour (as <mj-preview> does)" in result.output


def test_lint_an_issue_with_another_layout_and_the_usage_error(run, workspace):
    result = run("lint", "2026-11-30-weekly", "--template", "templates/letter.mjml")
    assert result.exit_code == 0 and result.output.strip() == "lint: ok"
    layout = broken(workspace, "nounsub", (r'href="\{\{ unsubscribe_url \}\}"', 'href="https://example.com/"'))
    assert "no unsubscribe link" in run("lint", "2026-11-30-weekly", "--template", layout).output
    usage = run("lint")
    assert usage.exit_code == 2 and "give an ISSUE to check, or --template FILE to check a layout" in usage.output


def test_init_with_a_layout(run, tmp_path):
    result = run("init", str(tmp_path / "ws2"), "--template", "bulletin")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "ws2" / "newsletter.toml").read_text(encoding="utf-8")
    assert re.search(r'(?m)^template = "bulletin"', config) and "[render]" in config
    assert sorted(p.name for p in (tmp_path / "ws2" / "templates").iterdir()) == [f"{n}.mjml" for n in REPO_LAYOUTS]
    assert f"Next: cd {tmp_path / 'ws2'} && newsletter build" in result.output
    bad = run("init", str(tmp_path / "ws3"), "--template", "fancy")  # a usage slip: exit 2
    assert bad.exit_code == 2 and ("Invalid value for '--template': there is no bundled layout 'fancy'; choose one "
                                   "of bulletin, digest, letter") in bad.output
    assert not (tmp_path / "ws3").exists()


def test_init_here_says_the_next_command_without_a_cd(run, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    result = run("init", ".")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("\nNext: newsletter build issues/2026-11-30-weekly.md --out out")


def test_init_force_with_another_layout_keeps_the_old_config_as_bak_and_says_so(run, tmp_path):
    target = tmp_path / "ws4"
    assert run("init", str(target)).exit_code == 0
    result = run("init", str(target), "--force", "--template", "letter")
    assert result.exit_code == 0, result.output
    assert f"replaced (old one in .bak): {target / 'newsletter.toml'}" in result.output
    assert re.search(r'(?m)^template = "letter"', (target / "newsletter.toml").read_text(encoding="utf-8"))
    assert re.search(r'(?m)^template = "digest"', (target / "newsletter.toml.bak").read_text(encoding="utf-8"))
    again = run("init", str(target), "--force", "--template", "letter")
    assert f"unchanged: {target / 'newsletter.toml'}" in again.output
