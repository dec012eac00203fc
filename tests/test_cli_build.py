"""init, new, build and lint through the CLI, as a user runs them."""

import datetime as dt
import email
import email.policy

import pytest
from click.testing import CliRunner

from newsletter.cli import cli

ISSUE = "issues/2026-11-30-weekly.md"


def test_init_creates_a_workspace_that_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "mydigest"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "mydigest"
    for relative in ("newsletter.toml", "templates/digest.mjml", "subscribers/subscribers.csv", ISSUE):
        assert (root / relative).is_file(), relative
    assert ".newsletter/" in (root / ".gitignore").read_text() and "outbox/" in (root / ".gitignore").read_text()
    toml = (root / "newsletter.toml").read_text()
    assert 'name = "outbox"' in toml and 'url = ".newsletter/ledger.sqlite3"' in toml
    # every key is commented
    keys = [line for line in toml.splitlines() if "=" in line and not line.lstrip().startswith("#")]
    assert keys and all("#" in line for line in keys)
    monkeypatch.chdir(root)
    assert runner.invoke(cli, ["build", ISSUE, "--out", "out"]).exit_code == 0


def test_init_refuses_existing_workspace_unless_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "w"]).exit_code == 0
    (tmp_path / "w" / "newsletter.toml").write_text("# mine\n")
    result = runner.invoke(cli, ["init", "w"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: w/newsletter.toml: a workspace already exists here (use --force")
    assert (tmp_path / "w" / "newsletter.toml").read_text() == "# mine\n"
    my_list = "email,name\nreader@example.com,Reader\n"
    (tmp_path / "w" / "subscribers" / "subscribers.csv").write_text(my_list)
    result = runner.invoke(cli, ["init", "w", "--force"])
    assert result.exit_code == 0
    assert "[provider]" in (tmp_path / "w" / "newsletter.toml").read_text()
    assert (tmp_path / "w" / "newsletter.toml.bak").read_text() == "# mine\n"
    assert (tmp_path / "w" / "subscribers" / "subscribers.csv").read_text() == my_list  # readers are never replaced
    assert "kept: w/subscribers/subscribers.csv" in result.output


def test_init_into_a_folder_with_a_list_keeps_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w" / "subscribers").mkdir(parents=True)
    (tmp_path / "w" / "subscribers" / "subscribers.csv").write_text("email\nme@example.com\n")
    result = CliRunner().invoke(cli, ["init", "w"])
    assert result.exit_code == 0
    assert (tmp_path / "w" / "subscribers" / "subscribers.csv").read_text() == "email\nme@example.com\n"
    assert "created: w/newsletter.toml" in result.output


def test_new_writes_dated_slugged_issue(run, workspace):
    result = run("new", "AI labels on WeChat")
    assert result.exit_code == 0
    path = workspace / "issues" / f"{dt.date.today().isoformat()}-ai-labels-on-wechat.md"
    assert result.stdout.strip().endswith(str(path.relative_to(workspace))) or str(path) in result.stdout
    assert path.read_text().startswith('---\nsubject: "AI labels on WeChat"\n')
    assert run("build", str(path), "--out", "out").exit_code == 0
    assert run("new", "AI labels on WeChat").exit_code == 1


def test_build_writes_html_text_and_a_parseable_eml(run, workspace):
    result = run("build", ISSUE, "--out", "out")
    assert result.exit_code == 0, result.output
    out = workspace / "out"
    html = (out / "2026-11-30-weekly.html").read_text()
    text = (out / "2026-11-30-weekly.txt").read_text()
    assert html.lower().startswith("<!doctype html>") and "Hi Ada Lovelace," in html
    assert "Hi Ada Lovelace," in text and "Unsubscribe: https://example.com/notes/unsubscribe?t=" in text
    assert "KB (" in result.stdout and "Gmail" in result.stdout and "lint: ok" in result.stdout

    msg = email.message_from_bytes((out / "2026-11-30-weekly.eml").read_bytes(), policy=email.policy.default)
    assert msg["From"] == "Field Notes Weekly <notes@example.com>"
    assert msg["To"] == "Ada Lovelace <ada@example.com>"
    assert msg["Subject"] == "Field Notes #48: ports go electric, a river returns, and the repair café boom"
    raw_subject = (out / "2026-11-30-weekly.eml").read_bytes().split(b"\nSubject: ")[1].split(b"\n")[0]
    assert b"=?utf-8?q?" in raw_subject  # RFC 2047 for the non-ASCII word
    assert msg["Date"] and msg["Message-ID"].endswith("@example.com>")
    assert msg["List-Unsubscribe"].startswith("<https://example.com/notes/unsubscribe?t=")
    assert msg["List-Unsubscribe"].endswith("<mailto:unsubscribe@example.com?subject=unsubscribe>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == html.rstrip("\n")


def test_build_as_named_subscriber_and_with_premailer(run, workspace):
    result = run("build", "2026-11-30-weekly", "--out", "out", "--as", "linus@example.net", "--inliner", "premailer")
    assert result.exit_code == 0, result.output
    html = (workspace / "out" / "2026-11-30-weekly.html").read_text()
    assert "Hi there," in html  # blank name falls back
    assert html.lower().startswith("<!doctype html>")


def test_build_as_matches_addresses_as_the_list_does_and_warns_for_a_stranger(run, workspace):
    edit = workspace / "subscribers" / "subscribers.csv"
    edit.write_text(edit.read_text() + "kim@bücher.example,Kim,subscribed,weekly,,\n")
    known = run("build", "2026-11-30-weekly", "--out", "out", "--as", "KIM@xn--bcher-kva.example")
    assert known.exit_code == 0 and "Hi Kim," in (workspace / "out" / "2026-11-30-weekly.html").read_text()
    assert "not in" not in known.stderr
    stranger = run("build", "2026-11-30-weekly", "--out", "out", "--as", "nobody@example.com")
    assert stranger.exit_code == 0
    assert ("nobody@example.com is not in subscribers/subscribers.csv: the build is personalised with the merge "
            "fields' fallbacks only") in stranger.stderr


def lint_issue(workspace, body, front="subject: S\npreheader: A short preheader"):
    (workspace / "issues" / "l.md").write_text(f"---\n{front}\n---\n{body}", encoding="utf-8")


def test_lint_ok_on_example(run):
    result = run("lint", ISSUE)
    assert result.exit_code == 0 and result.stdout.strip() == "lint: ok"


def test_lint_reports_images_with_issue_lines(run, workspace):
    # raw HTML: a Markdown image's relative path is a file to publish (tests/test_images.py)
    lint_issue(workspace, "Intro\n\n<img src=\"images/a.png\">\n\n![Chart](http://example.com/c.png)\n")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 1
    assert "issues/l.md:7: warning: image 'images/a.png' has no alt text" in result.output
    assert "issues/l.md:7: error: image 'images/a.png' is not an absolute https:// URL" in result.output
    assert "issues/l.md:9: warning: image 'http://example.com/c.png' uses http://" in result.output


def test_lint_preheader_and_front_matter_typos(run, workspace):
    lint_issue(workspace, "x\n", front="subject: S\nsegmnet: weekly")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 0
    assert "issues/l.md:1: warning: no preheader" in result.output
    assert "issues/l.md:3: warning: unknown front matter key 'segmnet' (did you mean 'segment'?)" in result.output
    lint_issue(workspace, "x\n", front="subject: S\npreheader: " + "p" * 150)
    assert "preheader is 150 characters" in run("lint", "issues/l.md").output
    lint_issue(workspace, "x\n", front='subject: S\npreheader: ""')  # an empty one is pointed at where it is
    assert "issues/l.md:3: warning: no preheader" in run("lint", "issues/l.md").output


def test_lint_size_thresholds(run, workspace):
    lint_issue(workspace, ("word " * 17000) + "\n")  # ~85 KB of text, ~96 KB of HTML
    result = run("lint", "issues/l.md")
    assert result.exit_code == 0 and "close to Gmail's ~102 KB clip" in result.output
    lint_issue(workspace, ("word " * 22000) + "\n")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 1 and "Gmail clips messages above ~102 KB" in result.output


def test_lint_missing_unsubscribe_and_postal_address(run, workspace):
    layout = workspace / "templates" / "digest.mjml"
    layout.write_text(layout.read_text().replace('<a href="{{ unsubscribe_url }}">Unsubscribe</a>', ""))
    toml = workspace / "newsletter.toml"
    toml.write_text("\n".join(l for l in toml.read_text().splitlines() if not l.startswith("postal_address")))
    result = run("lint", ISSUE)
    assert result.exit_code == 1
    assert "error: no unsubscribe link" in result.output
    assert "error: no postal address" in result.output


def test_a_postal_address_of_only_spaces_is_no_postal_address(run, workspace):
    result = run("lint", ISSUE, env={"NEWSLETTER_NEWSLETTER_POSTAL_ADDRESS": "   "})
    assert result.exit_code == 1 and "error: no postal address" in result.output


def test_lint_blank_merge_values_without_fallback(run, workspace):
    lint_issue(workspace, "Hi {{ subscriber.name }}\n")
    result = run("lint", "issues/l.md")
    assert "issues/l.md:5: warning: merge field subscriber.name is blank for 1 subscriber(s)" in result.output


@pytest.mark.parametrize("setup, message", [
    (lambda ws: (ws / "issues" / "b.md").write_text("no front matter\n"), "issues/b.md:1: no front matter"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\ntitle: x\n---\n"), "issues/b.md:1: front matter has no subject"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\nsubject: [oops\n---\n"),
     "issues/b.md:2: front matter is not valid YAML"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\nsubject: S\ntemplate: nope\n---\n"),
     "issues/b.md:3: unknown template 'nope'"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\nsubject: S\n---\n{{ oops\n"),
     "issues/b.md:4: template error: unexpected end of template"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\nsubject: S\n---\n{% for %}\n"),
     "issues/b.md:4: template error"),
    (lambda ws: (ws / "issues" / "b.md").write_text("---\nsubject: S\n---\n{{ subscriber.shoe_size }}\n"),
     "issues/b.md:4: merge field subscriber.shoe_size: no column"),
    (lambda ws: ((ws / "issues" / "b.md").write_text("---\nsubject: S\ntemplate: x\n---\n"),
                 (ws / "templates" / "x.mjml").write_text("<mjml><mj-body><mj-sektion/></mj-body></mjml>")),
     "templates/x.mjml:1: unknown MJML tag <mj-sektion>"),
    (lambda ws: ((ws / "issues" / "b.md").write_text("---\nsubject: S\n---\n"),
                 (ws / "newsletter.toml").write_text("[provider\nname='outbox'\n")),
     "newsletter.toml:1: TOML syntax error"),
    (lambda ws: ((ws / "issues" / "b.md").write_text("---\nsubject: S\n---\n"),
                 (ws / "newsletter.toml").write_text("[provider]\napi_key = 'pm-123456'\n")),
     "newsletter.toml:2: [provider] api_key looks like a secret"),
])
def test_bad_input_is_one_error_line_exit_1(run, workspace, setup, message):
    setup(workspace)
    for command in ("build", "lint"):
        result = run(command, "issues/b.md")
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        assert message in lines[0]
        assert "Traceback" not in result.output and "pm-123456" not in result.output
    assert not (workspace / "out").exists()


def test_debug_shows_traceback(run, workspace):
    (workspace / "issues" / "b.md").write_text("nope\n")
    result = run("--debug", "build", "issues/b.md")
    assert result.exit_code == 1 and "Traceback" in result.stderr


def test_issue_by_id_and_unknown_id(run):
    assert run("lint", "2026-11-30-weekly").exit_code == 0
    result = run("lint", "no-such-issue")
    assert result.exit_code == 1 and "no such issue 'no-such-issue'" in result.stderr  # issue 10's wording


def test_unwritable_output_is_an_error_line(run, workspace):
    (workspace / "blocker").write_text("a file, not a folder")
    result = run("build", ISSUE, "--out", "blocker/out")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "blocker" in result.stderr and "Traceback" not in result.output


def test_lint_missing_from_address(run, workspace):
    result = run("lint", ISSUE, env={"NEWSLETTER_NEWSLETTER_FROM": "Field Notes"})  # a name, no address
    assert result.exit_code == 1
    assert ("Error: env NEWSLETTER_NEWSLETTER_FROM: [newsletter] from = 'Field Notes' is not an email address (write "
            'it as "Field Notes <notes@example.com>" or "notes@example.com")') in result.output
    empty = run("lint", ISSUE, env={"NEWSLETTER_NEWSLETTER_FROM": ""})
    assert empty.exit_code == 1 and "env NEWSLETTER_NEWSLETTER_FROM: error: no From address" in empty.output


def test_lint_no_unsubscribe_target_at_all(run):
    result = run("lint", ISSUE, env={"NEWSLETTER_UNSUBSCRIBE_URL": "", "NEWSLETTER_UNSUBSCRIBE_MAILTO": ""})
    assert result.exit_code == 1
    assert "env NEWSLETTER_UNSUBSCRIBE_URL: error: no unsubscribe link: set [unsubscribe] url" in result.output


def test_lint_unsubscribe_url_without_token_or_https(run):
    result = run("lint", ISSUE, env={"NEWSLETTER_UNSUBSCRIBE_URL": "http://example.com/unsubscribe"})
    assert result.exit_code == 0
    assert "warning: [unsubscribe] url has no {token}" in result.output
    assert "warning: [unsubscribe] url is not https://" in result.output


def test_lint_layout_without_postal_address(run, workspace):
    layout = workspace / "templates" / "digest.mjml"
    layout.write_text(layout.read_text().replace("{{ newsletter.postal_address }}", ""))
    result = run("lint", ISSUE)
    assert result.exit_code == 1
    assert "digest.mjml: error: the layout does not print [newsletter] postal_address" in result.output


def test_misspelled_closing_mjml_tag_is_caught(run, workspace):
    (workspace / "issues" / "b.md").write_text("---\nsubject: S\ntemplate: x\n---\n")
    (workspace / "templates" / "x.mjml").write_text("<mjml><mj-body>\n<mj-section></mj-sectoin>\n</mj-body></mjml>")
    result = run("build", "issues/b.md")
    assert result.exit_code == 1
    assert "x.mjml:2: unknown MJML tag <mj-sectoin> (did you mean <mj-section>?)" in result.stderr


def test_new_refuses_blank_title_and_slugs_any_script(run, workspace):
    result = run("new", "  ")
    assert result.exit_code == 1 and "Error: the title is empty" in result.stderr
    first, second = run("new", "微信的人工智能标签"), run("new", "抖音电商")
    assert first.exit_code == 0 and second.exit_code == 0
    # issue 12: transliterated, no longer a hash
    assert first.stdout != second.stdout and "-weixinderengongzhinengbiaoqian.md" in first.stdout
    assert run("new", "!!!").stdout.strip().endswith(".md") and "-issue-" in run("new", "???").stdout


def test_output_cut_short_by_the_reader_is_not_an_error(workspace):
    import subprocess
    import sys
    rows = "".join(f"r{n}@example.com,Reader {n}\n" for n in range(20000))
    (workspace / "subscribers" / "subscribers.csv").write_text("email,name\n" + rows)
    reader = subprocess.Popen([sys.executable, "-c", "from newsletter.cli import main; main()",
                               "subscribers", "export"], cwd=workspace, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(60) == 141
    assert reader.stderr.read() == b""


def test_lint_warns_of_a_merge_field_inside_a_links_url_and_urlencode_fixes_it(run, workspace):
    """"Ada Lovelace" in ?name= would send a raw space (an address's + becomes a space): the warning names
    the filter that encodes it; the whole URL as a field, and the unsubscribe link, are left alone."""
    lint_issue(workspace, '[p](https://example.com/p?name={{ subscriber.name | default("there") }})\n\n'
                          '[e](https://example.com/p?e={{ subscriber.email | urlencode }})\n\n'
                          '[u]({{ unsubscribe_url }})\n')
    result = run("lint", "issues/l.md")
    assert ('issues/l.md:5: warning: merge field {{ subscriber.name | default("there") }} sits inside a link\'s URL '
            'and is sent as it is: a value with a space, +, & or # breaks the link; write '
            '{{ subscriber.name | default("there") | urlencode }} [merge-field]') in result.output
    assert result.output.count("sits inside a link's URL") == 1
    build = run("build", "issues/l.md", "--out", "out")
    assert build.exit_code == 0
    assert 'href="https://example.com/p?e=ada%40example.com"' in (workspace / "out" / "l.html").read_text()


def test_lint_refuses_a_link_without_a_scheme_as_it_refuses_a_relative_image(run, workspace):
    lint_issue(workspace, "See [about](/about), [site](www.example.com), [ok](https://example.com/a?b=1&c=2), "
                          "[mail](mailto:a@example.com), [top](#top).\n")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 1
    for url in ("/about", "www.example.com"):
        assert (f"issues/l.md:5: error: link '{url}' is not an absolute URL; it will be broken in every inbox (write "
                f"it with its scheme: https://...) [link]") in result.output
    assert result.output.count("error: link") == 2
    assert ("issues/l.md:5: warning: link '#top' jumps to nothing: no element of the email has that id (headings get "
            "none, and many mail apps ignore such jumps anyway) [link]") in result.output
    refused = run("send", "issues/l.md", "--yes", env={"NEWSLETTER_SECRET": "s"})
    assert refused.exit_code == 1 and "--ignore-lint link lets" in refused.stderr


def test_lint_refuses_a_script_link_in_the_body_or_the_cta_and_warns_of_a_link_to_nowhere(run, workspace):
    # Markdown's own [x](javascript:...) is never a link (markdown-it refuses it); raw HTML and the CTA were.
    lint_issue(workspace, 'See <a href="javascript:alert(1)">this</a> and [nothing]().\n',
               front="subject: S\npreheader: A short preheader\ncta:\n  text: Go\n  url: 'vbscript:msgbox(1)'")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 1
    assert ("issues/l.md:8: error: link 'javascript:alert(1)' runs a javascript: URL: mail apps strip or block it, "
            "and spam filters score it (link to an https:// page instead) [link]") in result.output
    assert "issues/l.md:6: error: link 'vbscript:msgbox(1)' runs a vbscript: URL" in result.output
    assert ("issues/l.md:8: warning: a link has no URL ([text]() or href=\"\"): it goes nowhere [link]"
            in result.output)


def test_lint_warns_of_a_second_title_in_the_body_and_a_send_goes_on(run, workspace):
    lint_issue(workspace, "Intro.\n\n# Big title\n\nText.\n\n## A section\n\n[Leave]({{ unsubscribe_url }})\n")
    result = run("lint", "issues/l.md")
    assert result.exit_code == 0
    assert ("issues/l.md:7: warning: '# Big title' is a second title: the layout prints the subject as the email's "
            "one <h1>; write sections as '## Big title' [heading]") in result.output
    sent = run("send", "issues/l.md", "--yes", env={"NEWSLETTER_SECRET": "s"})
    assert sent.exit_code == 0 and "second title" in sent.stderr
